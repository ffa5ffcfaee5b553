"""FederatedRounds on the in-process EVM: genesis, opening, direct and EIP-712 relayed commitments, closing and
finalization with the reputation and reward formulas of the contract header. Errors and events are compared with
their exact arguments."""

from __future__ import annotations

from typing import Any

import pytest
from eth_account import Account
from eth_account.messages import SignableMessage, encode_typed_data
from eth_utils import keccak

from chain.embedded import advance_time
from chain.gateways.federated_rounds import (
    ContributionScored,
    GenesisModelPublished,
    RoundFinalized,
    RoundOpened,
    UpdateCommitted,
)
from chain.gateways.participant_registry import ReputationUpdated
from chain.transactor import TxResult

OPEN, CLOSED, FINALIZED = 1, 2, 3  # RoundState (0 is None)
UNREGISTERED, SUSPENDED = 0, 2  # ParticipantRegistry.Status
ACCEPTED, REJECTED = 0, 1
PPM = 1_000_000
BUDGET = 100 * 10**18
DECAY = 800_000
INITIAL_REPUTATION = 500_000
DAY = 86_400
ZERO_ADDRESS = "0x0000000000000000000000000000000000000000"
ZERO_HASH = b"\0" * 32
SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
OPERATOR_ROLE = keccak(text="OPERATOR_ROLE")
AGGREGATOR_ROLE = keccak(text="AGGREGATOR_ROLE")
# The verdicts of the reference round: two accepted updates of different quality and one rejected, by index into
# the participants in ascending address order: index -> (status, score in 1e-6 units).
VERDICTS = {0: (ACCEPTED, 800_000), 1: (ACCEPTED, 400_000), 2: (REJECTED, -900_000)}


# ------------------------------------------------------------------------------------------------------- helpers


def ref(label: str) -> tuple[bytes, str]:
    """A (content hash, cid) pair named by ``label``."""
    return keccak(text=label), f"cid-{label}"


GENESIS, RULE, MODEL = ref("genesis"), ref("rule"), ref("model")


def ascending(addresses: list[str]) -> list[str]:
    """Numeric address order, the order finalizeRound requires (sorting checksummed strings is not that order)."""
    return sorted(addresses, key=lambda a: int(a, 16))


def now(env) -> int:
    return int(env.w3.eth.get_block("latest")["timestamp"])


def next_block_time(env) -> int:
    """The timestamp the next transaction executes at. py-evm stamps a block max(wall clock, parent + 1); the ``env``
    fixture runs the chain clock an hour ahead of the wall clock, so it is always parent + 1."""
    return now(env) + 1


def update_ref(round_id: int, participant: str) -> tuple[bytes, str]:
    return ref(f"update/{round_id}/{participant}")


def publish_genesis(env) -> TxResult:
    return env.deployment.rounds.publish_genesis(*GENESIS, sender=env.operator)


def open_round(env, *, deadline: int | None = None, budget: int = BUDGET, decay: int = DECAY) -> RoundOpened:
    """Open the next round (a day long unless ``deadline`` is given) and return its RoundOpened event."""
    deadline = now(env) + DAY if deadline is None else deadline
    result = env.deployment.rounds.open_round(deadline, *RULE, budget, decay, sender=env.operator)
    (opened,) = env.deployment.rounds.round_opened_in(result)
    return opened


def commit(env, round_id: int, participant: str) -> TxResult:
    return env.deployment.rounds.commit_update(round_id, *update_ref(round_id, participant), sender=participant)


def finalize_lists(
    env, round_id: int, participants: list[str], scores: list[int], statuses: list[int], *, model=MODEL
) -> TxResult:
    return env.deployment.rounds.finalize_round(round_id, *model, participants, scores, statuses, sender=env.aggregator)


def finalize(env, round_id: int, verdicts: dict[str, tuple[int, int]], *, model=MODEL) -> TxResult:
    """Finalize with ``verdicts`` (participant -> (status, score)), listed in ascending address order."""
    order = ascending(list(verdicts))
    return finalize_lists(
        env, round_id, order, [verdicts[p][1] for p in order], [verdicts[p][0] for p in order], model=model
    )


def expected_outcome(
    budget: int, decay: int, previous: dict[str, int], verdicts: dict[str, tuple[int, int]]
) -> tuple[dict[str, int], dict[str, int]]:
    """Rewards and reputations by the integer formulas of the FederatedRounds header comment."""
    weights = {p: max(score, 0) if status == ACCEPTED else 0 for p, (status, score) in verdicts.items()}
    total = sum(weights.values())
    rewards = {p: 0 if total == 0 else budget * w // total for p, w in weights.items()}
    reputations = {p: (previous[p] * decay + w * (PPM - decay)) // PPM for p, w in weights.items()}
    return rewards, reputations


def typed_commitment(
    env, round_id: int, content_hash: bytes, cid: str, *, chain_id: int | None = None, contract: str | None = None
) -> SignableMessage:
    """The EIP-712 ``Commitment`` message, for the deployed round manager on this chain unless overridden."""
    return encode_typed_data(
        full_message={
            "types": {
                "EIP712Domain": [
                    {"name": "name", "type": "string"},
                    {"name": "version", "type": "string"},
                    {"name": "chainId", "type": "uint256"},
                    {"name": "verifyingContract", "type": "address"},
                ],
                "Commitment": [
                    {"name": "roundId", "type": "uint256"},
                    {"name": "contentHash", "type": "bytes32"},
                    {"name": "cid", "type": "string"},
                ],
            },
            "primaryType": "Commitment",
            "domain": {
                "name": "FedLedger",
                "version": "1",
                "chainId": env.w3.eth.chain_id if chain_id is None else chain_id,
                "verifyingContract": contract or env.deployment.rounds.address,
            },
            "message": {"roundId": round_id, "contentHash": content_hash, "cid": cid},
        }
    )


def sign(env, signer: str, round_id: int, content_hash: bytes, cid: str, **domain: Any) -> bytes:
    """``signer``'s signature of the Commitment, with its local key."""
    message = typed_commitment(env, round_id, content_hash, cid, **domain)
    return bytes(env.transactor.account(signer).sign_message(message).signature)


def recovered_by_contract(env, round_id: int, content_hash: bytes, cid: str, signature: bytes) -> str:
    """Who ``signature`` recovers to over the digest the contract builds for these relayed values."""
    return Account.recover_message(typed_commitment(env, round_id, content_hash, cid), signature=signature)


def relay(env, participant: str, round_id: int, content_hash: bytes, cid: str, signature: bytes) -> TxResult:
    """Submit a signed commitment from the outsider wallet, which is not a participant."""
    return env.deployment.rounds.commit_update_signed(
        participant, round_id, content_hash, cid, signature, sender=env.outsider
    )


# ------------------------------------------------------------------------------------------------------ fixtures


@pytest.fixture
def env(chain_env):
    """All four participants registered; the chain clock moved an hour past the wall clock (see next_block_time)."""
    for p in chain_env.participants:
        chain_env.deployment.registry.register(sender=p, value=chain_env.deployment.registry.min_stake())
    advance_time(chain_env.w3, 3600)
    return chain_env


@pytest.fixture
def ps(env) -> list[str]:
    """The participants in ascending address order."""
    return ascending(env.participants)


@pytest.fixture
def round1(env) -> RoundOpened:
    """Genesis published and round 1 open for a day."""
    publish_genesis(env)
    return open_round(env)


@pytest.fixture
def closed1(env, ps, round1) -> dict[str, tuple[int, int]]:
    """Round 1 with the first three participants committed, then closed; returns the reference verdicts for them."""
    for i in VERDICTS:
        commit(env, 1, ps[i])
    env.deployment.rounds.close_round(1, sender=env.operator)
    return {ps[i]: verdict for i, verdict in VERDICTS.items()}


# ------------------------------------------------------------------------------------------- genesis and opening


def test_genesis_is_published_once_and_rounds_need_it(env, reverts) -> None:
    rounds = env.deployment.rounds
    assert rounds.global_model() == (ZERO_HASH, "")
    with reverts("RoundsNoGenesisModel"):
        open_round(env)
    assert rounds.genesis_model_published_in(publish_genesis(env)) == [GenesisModelPublished(*GENESIS)]
    assert rounds.global_model() == GENESIS
    with reverts("RoundsGenesisAlreadyPublished", modelHash=GENESIS[0]):
        rounds.publish_genesis(*ref("another genesis"), sender=env.operator)
    assert rounds.global_model() == GENESIS
    assert rounds.round_count() == 0


def test_open_round_by_a_non_operator_is_unauthorized(env, reverts) -> None:
    publish_genesis(env)
    for sender in (env.admin, env.aggregator, env.outsider):
        with reverts("AccessControlUnauthorizedAccount", account=sender, neededRole=OPERATOR_ROLE):
            env.deployment.rounds.open_round(now(env) + DAY, *RULE, BUDGET, DECAY, sender=sender)
    assert env.deployment.rounds.round_count() == 0


def test_open_round_validates_deadline_decay_and_rule(env, reverts) -> None:
    publish_genesis(env)
    for deadline in (now(env) - 100, now(env), next_block_time(env)):  # past, the latest block's time, this block's
        with reverts("RoundsDeadlineNotInFuture", deadline=deadline, timestamp=next_block_time(env)):
            open_round(env, deadline=deadline)
    with reverts("RoundsDecayOutOfRange", decay=PPM + 1):
        open_round(env, decay=PPM + 1)
    rounds, deadline = env.deployment.rounds, now(env) + DAY
    with reverts("RoundsEmptyHash"):
        rounds.open_round(deadline, ZERO_HASH, RULE[1], BUDGET, DECAY, sender=env.operator)
    with reverts("RoundsEmptyCid"):
        rounds.open_round(deadline, RULE[0], "", BUDGET, DECAY, sender=env.operator)
    assert rounds.round_count() == 0
    assert open_round(env, deadline=next_block_time(env) + 1, decay=PPM).round_id == 1  # both limits are inclusive


def test_round_opened_event_and_state(env) -> None:
    publish_genesis(env)
    deadline = now(env) + 2  # the nearest deadline that is still in the future
    opened_at = next_block_time(env)

    opened = open_round(env, deadline=deadline, budget=123, decay=700_000)

    assert opened == RoundOpened(1, GENESIS[0], RULE[0], deadline, 123, 700_000, RULE[1])
    r = env.deployment.rounds.get_round(1)
    assert (r.state, r.opened_at, r.deadline, r.submissions, r.accepted, r.reputation_decay) == (
        OPEN, opened_at, deadline, 0, 0, 700_000
    )
    assert (r.base_model_hash, r.rule_hash, r.new_model_hash, r.reward_budget, r.minted) == (
        GENESIS[0], RULE[0], ZERO_HASH, 123, 0
    )
    assert env.deployment.rounds.round_count() == 1


def test_a_round_cannot_open_before_the_previous_one_is_finalized(env, reverts, round1) -> None:
    with reverts("RoundsPreviousRoundNotFinalized", roundId=1, state=OPEN):
        open_round(env)
    env.deployment.rounds.close_round(1, sender=env.operator)
    with reverts("RoundsPreviousRoundNotFinalized", roundId=1, state=CLOSED):
        open_round(env)
    assert env.deployment.rounds.round_count() == 1


# ---------------------------------------------------------------------------------------------- direct commits


def test_direct_commit_emits_update_committed_with_the_participant_as_relayer(env, ps, round1) -> None:
    p = ps[0]
    content_hash, cid = update_ref(1, p)
    assert env.deployment.rounds.commitment_of(1, p) == ZERO_HASH

    result = commit(env, 1, p)

    assert env.deployment.rounds.update_committed_in(result) == [UpdateCommitted(1, p, content_hash, cid, p)]
    assert env.deployment.rounds.commitment_of(1, p) == content_hash
    assert env.deployment.rounds.get_round(1).submissions == 1


def test_a_second_commitment_in_the_same_round_reverts(env, ps, reverts, round1) -> None:
    p = ps[0]
    commit(env, 1, p)
    first_hash = update_ref(1, p)[0]
    with reverts("RoundsDuplicateCommitment", roundId=1, participant=p, committedHash=first_hash):
        env.deployment.rounds.commit_update(1, *ref("a better update"), sender=p)
    assert env.deployment.rounds.commitment_of(1, p) == first_hash
    assert env.deployment.rounds.get_round(1).submissions == 1


def test_commit_to_an_unknown_round_reverts(env, ps, reverts, round1) -> None:
    for round_id in (0, 2):
        with reverts("RoundsUnknownRound", roundId=round_id, roundCount=1):
            commit(env, round_id, ps[0])


def test_commit_to_a_closed_round_reverts(env, ps, reverts, closed1) -> None:
    with reverts("RoundsRoundNotOpen", roundId=1, state=CLOSED):
        commit(env, 1, ps[3])


def test_commits_are_accepted_up_to_the_deadline_second_and_not_after(env, ps, reverts) -> None:
    publish_genesis(env)
    deadline = now(env) + 2  # open_round mines at now + 1, the first commit at now + 2 == deadline
    open_round(env, deadline=deadline)
    assert env.w3.eth.get_block(commit(env, 1, ps[0]).block_number)["timestamp"] == deadline
    with reverts("RoundsDeadlinePassed", roundId=1, deadline=deadline, timestamp=deadline + 1):
        commit(env, 1, ps[1])
    advance_time(env.w3, DAY)
    with reverts("RoundsDeadlinePassed", roundId=1, deadline=deadline, timestamp=next_block_time(env)):
        commit(env, 1, ps[1])
    assert env.deployment.rounds.get_round(1).submissions == 1


def test_only_active_participants_commit(env, ps, reverts, round1) -> None:
    with reverts("RoundsParticipantNotActive", participant=env.outsider, status=UNREGISTERED):
        commit(env, 1, env.outsider)
    env.deployment.registry.suspend(ps[0], b"\x01" * 32, sender=env.operator)
    with reverts("RoundsParticipantNotActive", participant=ps[0], status=SUSPENDED):
        commit(env, 1, ps[0])
    assert env.deployment.rounds.get_round(1).submissions == 0


def test_commit_requires_a_hash_and_a_cid(env, ps, reverts, round1) -> None:
    with reverts("RoundsEmptyHash"):
        env.deployment.rounds.commit_update(1, ZERO_HASH, "cid-x", sender=ps[0])
    with reverts("RoundsEmptyCid"):
        env.deployment.rounds.commit_update(1, keccak(text="x"), "", sender=ps[0])
    assert env.deployment.rounds.commitment_of(1, ps[0]) == ZERO_HASH


# ---------------------------------------------------------------------------------------- EIP-712 commitments


def test_signed_commitment_relayed_by_an_outsider_counts_once(env, ps, reverts, round1) -> None:
    rounds, p = env.deployment.rounds, ps[1]
    content_hash, cid = update_ref(1, p)
    signed = env.transactor.account(p).sign_message(typed_commitment(env, 1, content_hash, cid))

    assert bytes(signed.message_hash) == rounds.commitment_digest(1, content_hash, cid)
    assert rounds.commitment_typehash() == keccak(text="Commitment(uint256 roundId,bytes32 contentHash,string cid)")
    result = relay(env, p, 1, content_hash, cid, bytes(signed.signature))

    assert rounds.update_committed_in(result) == [UpdateCommitted(1, p, content_hash, cid, env.outsider)]
    assert env.w3.eth.get_transaction(result.tx_hash)["from"] == env.outsider
    assert rounds.commitment_of(1, p) == content_hash
    with reverts("RoundsDuplicateCommitment", roundId=1, participant=p, committedHash=content_hash):
        relay(env, p, 1, content_hash, cid, bytes(signed.signature))
    assert rounds.get_round(1).submissions == 1


def test_a_signature_replayed_in_the_next_round_is_invalid(env, ps, reverts, round1) -> None:
    p = ps[1]
    content_hash, cid = update_ref(1, p)
    signature = sign(env, p, 1, content_hash, cid)
    relay(env, p, 1, content_hash, cid, signature)
    env.deployment.rounds.close_round(1, sender=env.operator)
    finalize(env, 1, {p: (ACCEPTED, 500_000)})
    open_round(env)

    recovered = recovered_by_contract(env, 2, content_hash, cid, signature)
    assert recovered not in (p, ZERO_ADDRESS)
    with reverts("RoundsInvalidSignature", participant=p, recovered=recovered):
        relay(env, p, 2, content_hash, cid, signature)
    assert env.deployment.rounds.get_round(2).submissions == 0


# Each forgery: (signing overrides, relayed-value overrides), from the participants in ascending order.
FORGERIES = {
    "another-chain": lambda env, ps: ({"chain_id": env.w3.eth.chain_id + 1}, {}),
    "another-contract": lambda env, ps: ({"contract": env.deployment.registry.address}, {}),
    "another-key": lambda env, ps: ({"signer": ps[2]}, {}),
    "altered-cid": lambda env, ps: ({}, {"cid": "cid-swapped"}),
    "altered-hash": lambda env, ps: ({}, {"content_hash": keccak(text="swapped")}),
}


@pytest.mark.parametrize("forgery", list(FORGERIES))
def test_a_forged_commitment_signature_is_invalid(env, ps, reverts, round1, forgery) -> None:
    p = ps[1]
    signed_hash, signed_cid = update_ref(1, p)
    sign_overrides, relay_overrides = FORGERIES[forgery](env, ps)
    signer = sign_overrides.pop("signer", p)
    signature = sign(env, signer, 1, signed_hash, signed_cid, **sign_overrides)
    relayed = {"content_hash": signed_hash, "cid": signed_cid, **relay_overrides}

    recovered = recovered_by_contract(env, 1, relayed["content_hash"], relayed["cid"], signature)
    assert recovered not in (p, ZERO_ADDRESS)
    if forgery == "another-key":
        assert recovered == ps[2]
    with reverts("RoundsInvalidSignature", participant=p, recovered=recovered):
        relay(env, p, 1, relayed["content_hash"], relayed["cid"], signature)
    assert env.deployment.rounds.commitment_of(1, p) == ZERO_HASH


def high_s(signature: bytes) -> bytes:
    """The malleable twin of a valid signature: s -> n - s with the parity flipped (ecrecover still accepts it)."""
    r, s, v = signature[:32], int.from_bytes(signature[32:64], "big"), signature[64]
    return r + (SECP256K1_N - s).to_bytes(32, "big") + bytes([55 - v])


def test_a_malformed_signature_recovers_no_one(env, ps, reverts, round1) -> None:
    p = ps[1]
    content_hash, cid = update_ref(1, p)
    valid = sign(env, p, 1, content_hash, cid)
    # The high-s twin is a valid ECDSA signature by p: only the contract's low-s rule rejects it.
    assert recovered_by_contract(env, 1, content_hash, cid, high_s(valid)) == p
    for signature in (high_s(valid), valid[:64], b"\0" * 65):
        with reverts("RoundsInvalidSignature", participant=p, recovered=ZERO_ADDRESS):
            relay(env, p, 1, content_hash, cid, signature)
    # ... and a signature that recovers no one does not commit for the zero address either.
    with reverts("RoundsInvalidSignature", participant=ZERO_ADDRESS, recovered=ZERO_ADDRESS):
        relay(env, ZERO_ADDRESS, 1, *update_ref(1, ZERO_ADDRESS), b"\0" * 65)
    assert env.deployment.rounds.get_round(1).submissions == 0


# -------------------------------------------------------------------------------------------------- finalizing


def test_finalize_by_a_non_aggregator_is_unauthorized(env, reverts, closed1) -> None:
    for sender in (env.operator, env.admin, env.outsider):
        with reverts("AccessControlUnauthorizedAccount", account=sender, neededRole=AGGREGATOR_ROLE):
            env.deployment.rounds.finalize_round(1, *MODEL, [], [], [], sender=sender)
    assert env.deployment.rounds.get_round(1).state == CLOSED


def test_finalize_without_close_waits_until_after_the_deadline(env, ps, reverts) -> None:
    publish_genesis(env)
    deadline = now(env) + 4  # open at now + 1, one commit per block from now + 2; every block is one second
    open_round(env, deadline=deadline)
    verdicts = {}
    for p in ps[:2]:
        commit(env, 1, p)
        verdicts[p] = (ACCEPTED, PPM // 2)
        with reverts("RoundsSubmissionsStillOpen", roundId=1, deadline=deadline, timestamp=next_block_time(env)):
            finalize(env, 1, verdicts)
    assert next_block_time(env) == deadline  # so the second attempt above was at the deadline second itself
    advance_time(env.w3, 60)
    assert env.deployment.rounds.get_round(1).state == OPEN  # nobody closed it

    result = finalize(env, 1, verdicts)

    assert env.deployment.rounds.round_finalized_in(result)[0].minted == BUDGET
    assert env.deployment.rounds.get_round(1).state == FINALIZED


def test_finalize_requires_the_exact_committers_in_strictly_ascending_order(env, ps, reverts, closed1) -> None:
    a, b, c, idle = ps  # idle is registered but did not commit
    zeros = [0, 0, 0]
    with reverts("RoundsSubmissionCountMismatch", roundId=1, committed=3, given=2):
        finalize_lists(env, 1, [a, b], [0, 0], [0, 0])
    with reverts("RoundsParticipantsNotSorted", index=1, previous=b, current=a):
        finalize_lists(env, 1, [b, a, c], zeros, zeros)
    with reverts("RoundsParticipantsNotSorted", index=1, previous=a, current=a):
        finalize_lists(env, 1, [a, a, c], zeros, zeros)
    with reverts("RoundsNotCommitted", roundId=1, participant=idle):
        finalize_lists(env, 1, [a, b, idle], zeros, zeros)
    for scores, statuses in ((2, 3), (3, 2), (4, 3)):
        with reverts("RoundsLengthMismatch", participants=3, scores=scores, statuses=statuses):
            finalize_lists(env, 1, [a, b, c], [0] * scores, [0] * statuses)
    assert env.deployment.rounds.get_round(1).state == CLOSED


def test_finalize_rejects_scores_and_statuses_out_of_range(env, ps, reverts, closed1) -> None:
    a, b, c = ps[:3]
    for score in (PPM + 1, -PPM - 1):
        with reverts("RoundsScoreOutOfRange", participant=b, score=score):
            finalize_lists(env, 1, [a, b, c], [0, score, 0], [0, 0, 0])
    with reverts("RoundsStatusOutOfRange", participant=c, status=16):
        finalize_lists(env, 1, [a, b, c], [0, 0, 0], [0, 0, 16])


def test_finalize_requires_a_new_model_reference(env, reverts, closed1) -> None:
    with reverts("RoundsEmptyHash"):
        finalize(env, 1, closed1, model=(ZERO_HASH, "cid-m"))
    with reverts("RoundsEmptyCid"):
        finalize(env, 1, closed1, model=(b"\1" * 32, ""))
    assert env.deployment.rounds.global_model() == GENESIS


def test_finalize_scores_rewards_and_reputation_by_the_published_formulas(env, ps, closed1) -> None:
    d = env.deployment
    rewards, reputations = expected_outcome(BUDGET, DECAY, dict.fromkeys(closed1, INITIAL_REPUTATION), closed1)
    # The same numbers worked by hand, so that a shared mistake in the formulas above cannot hide.
    assert [rewards[p] for p in ps[:3]] == [66_666_666_666_666_666_666, 33_333_333_333_333_333_333, 0]
    assert [reputations[p] for p in ps[:3]] == [560_000, 480_000, 400_000]
    minted = sum(rewards.values())

    result = finalize(env, 1, closed1)

    assert d.rounds.round_finalized_in(result) == [RoundFinalized(1, MODEL[0], GENESIS[0], MODEL[1], 2, minted)]
    assert d.rounds.contribution_scored_in(result) == [
        ContributionScored(1, p, *closed1[p], rewards[p], reputations[p]) for p in ps[:3]
    ]
    assert d.registry.reputation_updated_in(result) == [
        ReputationUpdated(p, 1, INITIAL_REPUTATION, reputations[p]) for p in ps[:3]
    ]
    assert [d.registry.reputation_of(p) for p in ps] == [*(reputations[p] for p in ps[:3]), INITIAL_REPUTATION]
    assert [d.token.balance_of(p) for p in ps] == [*(rewards[p] for p in ps[:3]), 0]
    assert d.token.total_supply() == minted == BUDGET - 1  # integer division leaves one wei unminted
    assert [(t.from_, t.to, t.value) for t in d.token.transfer_in(result)] == [
        (ZERO_ADDRESS, p, rewards[p]) for p in ps[:2]  # nothing is minted for a zero reward
    ]
    r = d.rounds.get_round(1)
    assert (r.state, r.submissions, r.accepted, r.new_model_hash, r.minted) == (FINALIZED, 3, 2, MODEL[0], minted)
    assert d.rounds.global_model() == MODEL


def test_a_round_is_finalized_only_once(env, ps, reverts, closed1) -> None:
    finalize(env, 1, closed1)
    with reverts("RoundsAlreadyFinalized", roundId=1, newModelHash=MODEL[0]):
        finalize(env, 1, closed1, model=ref("another model"))
    with reverts("RoundsRoundNotOpen", roundId=1, state=FINALIZED):
        commit(env, 1, ps[3])
    assert env.deployment.rounds.global_model() == MODEL


def test_the_next_round_trains_on_the_previous_output(env, ps, closed1) -> None:
    d = env.deployment
    finalize(env, 1, closed1)
    opened = open_round(env, decay=500_000)
    assert opened.round_id == 2 and opened.base_model_hash == MODEL[0]
    assert d.rounds.get_round(2).base_model_hash == MODEL[0]

    commit(env, 2, ps[0])
    d.rounds.close_round(2, sender=env.operator)
    verdicts = {ps[0]: (ACCEPTED, PPM)}
    previous = {ps[0]: d.registry.reputation_of(ps[0])}
    rewards, reputations = expected_outcome(BUDGET, 500_000, previous, verdicts)
    assert (rewards[ps[0]], reputations[ps[0]]) == (BUDGET, 780_000)  # (560000 * 0.5 + 1e6 * 0.5)
    balance_before = d.token.balance_of(ps[0])

    result = finalize(env, 2, verdicts, model=ref("model-2"))

    (finalized,) = d.rounds.round_finalized_in(result)
    assert (finalized.base_model_hash, finalized.new_model_hash) == (MODEL[0], ref("model-2")[0])
    assert d.registry.reputation_of(ps[0]) == reputations[ps[0]]
    assert d.token.balance_of(ps[0]) - balance_before == rewards[ps[0]]
    assert d.rounds.global_model() == ref("model-2")


def test_boundary_scores_and_statuses_are_accepted(env, ps, closed1) -> None:
    verdicts = {ps[0]: (ACCEPTED, PPM), ps[1]: (ACCEPTED, -PPM), ps[2]: (15, PPM)}
    result = finalize(env, 1, verdicts)
    rewards, reputations = expected_outcome(BUDGET, DECAY, dict.fromkeys(verdicts, INITIAL_REPUTATION), verdicts)
    assert env.deployment.rounds.contribution_scored_in(result) == [
        ContributionScored(1, p, *verdicts[p], rewards[p], reputations[p]) for p in ps[:3]
    ]
    assert env.deployment.rounds.round_finalized_in(result)[0].accepted == 2
    assert [env.deployment.token.balance_of(p) for p in ps[:3]] == [BUDGET, 0, 0]
