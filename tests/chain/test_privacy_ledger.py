"""PrivacyLedger on the in-process EVM: a DP commitment records its (epsilon, delta) and commits the update in one
transaction; running totals are sums; the operator's budget (default and per participant) refuses the update that
would exceed it. Errors and events are compared with their exact arguments."""

from __future__ import annotations

from eth_utils import keccak

from chain.embedded import advance_time
from chain.gateways.privacy_ledger import DefaultBudgetSet, ParticipantBudgetSet, PrivacySpent, Record, Spent
from fedledger.roles import sign_commitment
from storage import BlobRef

EPS = 1_000_000  # epsilon 1.0 in micro-units
DELTA = 10_000_000_000_000  # 1e-5 in atto-units
DELTA_ONE = 10**18
UNLIMITED = 2**64 - 1
DAY = 86_400
OPERATOR_ROLE = keccak(text="OPERATOR_ROLE")
RELAYER_ROLE = keccak(text="RELAYER_ROLE")


def now(env) -> int:
    return int(env.w3.eth.get_block("latest")["timestamp"])


def start(env, *, register: bool = True) -> int:
    """Genesis, registered participants, round 1 open; returns its id."""
    d = env.deployment
    d.rounds.publish_genesis(keccak(text="genesis"), "cid-genesis", sender=env.operator)
    if register:
        for p in env.participants:
            d.registry.register(sender=p, value=d.registry.min_stake())
    return next_round(env)


def next_round(env) -> int:
    r = env.deployment.rounds.open_round(now(env) + DAY, keccak(text="rule"), "cid-rule", 0, 800_000,
                                         sender=env.operator)
    (opened,) = env.deployment.rounds.round_opened_in(r)
    return opened.round_id


def finish(env, round_id: int) -> None:
    """Close and finalize ``round_id`` (every committer accepted), so the next round can open."""
    d = env.deployment
    d.rounds.close_round(round_id, sender=env.operator)
    committers = sorted({e.args.participant for e in d.rounds.update_committed_events(from_block=0, round_id=round_id)},
                        key=lambda a: int(a, 16))
    d.rounds.finalize_round(round_id, keccak(text=f"model/{round_id}"), f"cid-model/{round_id}", committers,
                            [500_000] * len(committers), [0] * len(committers), sender=env.aggregator)


def update(round_id: int, participant: str) -> BlobRef:
    return BlobRef(keccak(text=f"update/{round_id}/{participant}"), f"cid-update/{round_id}/{participant}")


def signed(env, round_id: int, participant: str) -> tuple[BlobRef, bytes]:
    ref = update(round_id, participant)
    sig = sign_commitment(env.transactor.account(participant), env.w3.eth.chain_id, env.deployment.rounds.address,
                          round_id, ref)
    return ref, sig


def commit(env, round_id: int, participant: str, eps: int = EPS, delta: int = DELTA):
    ref, sig = signed(env, round_id, participant)
    return env.deployment.privacy.commit_update_with_privacy(round_id, ref.content_hash, ref.uri, eps, delta, sig,
                                                             sender=participant)


def test_a_private_commit_records_the_spend_and_the_commitment_in_one_transaction(chain_env) -> None:
    env, ledger = chain_env, chain_env.deployment.privacy
    rid = start(env)
    p = env.participants[0]
    result = commit(env, rid, p, 1_234_567, DELTA)
    ref = update(rid, p)
    assert ledger.privacy_spent_in(result) == [PrivacySpent(rid, p, ref.content_hash, 1_234_567, DELTA, 1_234_567,
                                                            DELTA, UNLIMITED)]
    (committed,) = env.deployment.rounds.update_committed_in(result)
    assert (committed.participant, committed.content_hash, committed.cid, committed.relayer) == (
        p, ref.content_hash, ref.uri, ledger.address)
    assert env.deployment.rounds.commitment_of(rid, p) == ref.content_hash
    assert ledger.record_of(rid, p) == Record(ref.content_hash, 1_234_567, DELTA, 1_234_567, UNLIMITED)
    assert ledger.spent_of(p) == Spent(1_234_567, DELTA, 1)


def test_running_totals_are_sums_over_rounds(chain_env) -> None:
    env, ledger = chain_env, chain_env.deployment.privacy
    p = env.participants[1]
    rid = start(env)
    commit(env, rid, p, 2 * EPS, DELTA)
    finish(env, rid)
    rid2 = next_round(env)
    result = commit(env, rid2, p, 3 * EPS + 7, 2 * DELTA)
    (spent,) = ledger.privacy_spent_in(result)
    assert (spent.total_epsilon, spent.total_delta) == (5 * EPS + 7, 3 * DELTA)
    assert ledger.spent_of(p) == Spent(5 * EPS + 7, 3 * DELTA, 2)
    assert ledger.record_of(rid2, p).total_epsilon == 5 * EPS + 7


def test_an_update_over_the_default_budget_is_refused_with_the_numbers(chain_env, reverts) -> None:
    env, ledger = chain_env, chain_env.deployment.privacy
    p = env.participants[0]
    result = ledger.set_default_budget(5 * EPS, sender=env.operator)
    assert ledger.default_budget_set_in(result) == [DefaultBudgetSet(UNLIMITED, 5 * EPS, env.operator)]
    rid = start(env)
    commit(env, rid, p, 4 * EPS)
    finish(env, rid)
    rid2 = next_round(env)
    with reverts("PrivacyBudgetExceeded", participant=p, spent=4 * EPS, requested=EPS + 1, budget=5 * EPS):
        commit(env, rid2, p, EPS + 1)
    # nothing was committed or recorded: the refusal is atomic
    assert env.deployment.rounds.commitment_of(rid2, p) == b"\0" * 32
    assert ledger.spent_of(p) == Spent(4 * EPS, DELTA, 1)
    assert ledger.remaining_of(p) == EPS
    commit(env, rid2, p, EPS)  # exactly the budget is allowed
    assert ledger.remaining_of(p) == 0


def test_a_participant_budget_overrides_the_default_and_can_be_cleared(chain_env, reverts) -> None:
    env, ledger = chain_env, chain_env.deployment.privacy
    p, q = env.participants[:2]
    ledger.set_default_budget(10 * EPS, sender=env.operator)
    result = ledger.set_participant_budget(p, EPS, sender=env.operator)
    assert ledger.participant_budget_set_in(result) == [ParticipantBudgetSet(p, True, EPS, env.operator)]
    assert (ledger.budget_of(p), ledger.budget_of(q)) == (EPS, 10 * EPS)
    rid = start(env)
    with reverts("PrivacyBudgetExceeded", participant=p, spent=0, requested=2 * EPS, budget=EPS):
        commit(env, rid, p, 2 * EPS)
    commit(env, rid, q, 2 * EPS)
    result = ledger.clear_participant_budget(p, sender=env.operator)
    assert ledger.participant_budget_set_in(result) == [ParticipantBudgetSet(p, False, 10 * EPS, env.operator)]
    commit(env, rid, p, 2 * EPS)
    assert ledger.record_of(rid, p).budget == 10 * EPS


def test_only_the_operator_sets_budgets(chain_env, reverts) -> None:
    env, ledger = chain_env, chain_env.deployment.privacy
    for who in (env.outsider, env.participants[0], env.aggregator):
        with reverts("AccessControlUnauthorizedAccount", account=who, neededRole=OPERATOR_ROLE):
            ledger.set_default_budget(EPS, sender=who)
        with reverts("AccessControlUnauthorizedAccount", account=who, neededRole=OPERATOR_ROLE):
            ledger.set_participant_budget(env.participants[1], EPS, sender=who)
        with reverts("AccessControlUnauthorizedAccount", account=who, neededRole=OPERATOR_ROLE):
            ledger.clear_participant_budget(env.participants[1], sender=who)
    assert ledger.default_budget() == UNLIMITED


def test_a_second_record_for_the_same_round_is_refused(chain_env, reverts) -> None:
    env = chain_env
    p = env.participants[2]
    rid = start(env)
    commit(env, rid, p)
    with reverts("PrivacyDuplicateRecord", roundId=rid, participant=p, contentHash=update(rid, p).content_hash):
        commit(env, rid, p)


def test_a_direct_commitment_first_makes_the_private_one_a_duplicate_commitment(chain_env, reverts) -> None:
    env = chain_env
    p = env.participants[2]
    rid = start(env)
    other = BlobRef(keccak(text="other"), "cid-other")
    env.deployment.rounds.commit_update(rid, other.content_hash, other.uri, sender=p)
    with reverts("RoundsDuplicateCommitment", roundId=rid, participant=p, committedHash=other.content_hash):
        commit(env, rid, p)
    assert env.deployment.privacy.spent_of(p) == Spent(0, 0, 0)


def test_unknown_rounds_are_refused(chain_env, reverts) -> None:
    env = chain_env
    p = env.participants[0]
    with reverts("PrivacyUnknownRound", roundId=1, roundCount=0):
        commit(env, 1, p)
    rid = start(env)
    with reverts("PrivacyUnknownRound", roundId=rid + 1, roundCount=rid):
        commit(env, rid + 1, p)
    with reverts("PrivacyUnknownRound", roundId=0, roundCount=rid):
        commit(env, 0, p)


def test_bad_values_are_refused(chain_env, reverts) -> None:
    env = chain_env
    p = env.participants[0]
    rid = start(env)
    with reverts("PrivacyEpsilonOutOfRange", epsilon=0):
        commit(env, rid, p, 0)
    with reverts("PrivacyDeltaOutOfRange", delta=0):
        commit(env, rid, p, EPS, 0)
    with reverts("PrivacyDeltaOutOfRange", delta=DELTA_ONE):
        commit(env, rid, p, EPS, DELTA_ONE)


def test_the_deltas_must_stay_below_one(chain_env, reverts) -> None:
    env = chain_env
    p = env.participants[0]
    rid = start(env)
    commit(env, rid, p, EPS, DELTA_ONE - 10)
    finish(env, rid)
    rid2 = next_round(env)
    with reverts("PrivacyDeltaExhausted", participant=p, spent=DELTA_ONE - 10, requested=10):
        commit(env, rid2, p, EPS, 10)


def test_the_rounds_contract_still_decides_the_commitment(chain_env, reverts) -> None:
    """Not registered, a bad signature, a closed round: FederatedRounds' own errors, and nothing recorded."""
    env, ledger = chain_env, chain_env.deployment.privacy
    rid = start(env, register=False)
    p, q = env.participants[:2]
    with reverts("RoundsParticipantNotActive", participant=p, status=0):
        commit(env, rid, p)
    env.deployment.registry.register(sender=p, value=env.deployment.registry.min_stake())
    ref, sig_of_q = signed(env, rid, q)  # q's signature over q's update, sent by p as its own
    with reverts("RoundsInvalidSignature", participant=p, recovered=q):
        ledger.commit_update_with_privacy(rid, ref.content_hash, ref.uri, EPS, DELTA, sig_of_q, sender=p)
    advance_time(env.w3, DAY + 1)
    deadline = env.deployment.rounds.get_round(rid).deadline
    ts = now(env) + 1
    with reverts("RoundsDeadlinePassed", roundId=rid, deadline=deadline, timestamp=ts):
        commit(env, rid, p)
    assert ledger.spent_of(p) == Spent(0, 0, 0)
    assert env.deployment.rounds.commitment_of(rid, p) == b"\0" * 32


def test_only_relayers_relay_private_commitments(chain_env, reverts) -> None:
    env, ledger = chain_env, chain_env.deployment.privacy
    rid = start(env)
    p = env.participants[3]
    ref, sig = signed(env, rid, p)
    with reverts("AccessControlUnauthorizedAccount", account=env.outsider, neededRole=RELAYER_ROLE):
        ledger.commit_update_with_privacy_signed(p, rid, ref.content_hash, ref.uri, EPS, DELTA, sig,
                                                 sender=env.outsider)
    result = ledger.commit_update_with_privacy_signed(p, rid, ref.content_hash, ref.uri, EPS, DELTA, sig,
                                                      sender=env.operator)
    assert ledger.privacy_spent_in(result) == [PrivacySpent(rid, p, ref.content_hash, EPS, DELTA, EPS, DELTA,
                                                            UNLIMITED)]
    assert env.deployment.rounds.commitment_of(rid, p) == ref.content_hash
