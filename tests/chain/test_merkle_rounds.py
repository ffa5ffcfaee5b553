"""FederatedRounds' Merkle-committed path on the in-process EVM: relayed commitment batches (``commitBatch``), results
committed as one root (``finalizeRoundWithResults``) and claimed by proof (``claim``), and the inclusion guarantee
(a participant left out of every batch still commits by its own transaction while the round is open).

Batches and result lists are real ones, built with ``chain.lists`` (real EIP-712 signatures, OpenZeppelin standard
trees from ``chain.merkle``), as ``fedledger.roles`` builds them. Errors and events are compared with their exact
arguments. One deployment serves the module: every test starts from a snapshot of it (four registered participants,
genesis published, the chain clock an hour ahead of the wall clock so every block is its parent + 1 second).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import Any

import pytest
from eth_account.messages import encode_typed_data
from eth_utils import keccak

from chain.eip712 import commitment_typed_data
from chain.embedded import advance_time
from chain.gateways.federated_rounds import (
    Claim,
    CommitmentBatchPosted,
    Results,
    RewardClaimed,
    RoundFinalized,
    RoundResultsCommitted,
    UpdateCommitted,
)
from chain.gateways.participant_registry import ReputationUpdated
from chain.lists import CommitmentBatch, ListHeader, ResultEntry, ResultList, SignedCommitment
from chain.merkle import COMMITMENT_LEAF_TYPES, RESULT_LEAF_TYPES, StandardMerkleTree, leaf_hash
from chain.transactor import TxResult

OPEN, CLOSED, FINALIZED = 1, 2, 3  # RoundState (0 is None)
ACCEPTED, REJECTED = 0, 1
PPM = 1_000_000
BUDGET = 100 * 10**18
DECAY = 800_000
INITIAL_REPUTATION = 500_000
MAX_BATCH_ENTRIES = 10_000
DAY = 86_400
ZERO_ADDRESS = "0x0000000000000000000000000000000000000000"
ZERO_HASH = b"\0" * 32
RELAYER_ROLE = keccak(text="RELAYER_ROLE")
AGGREGATOR_ROLE = keccak(text="AGGREGATOR_ROLE")
# The reference result list, by index into the participants in ascending address order:
# index -> (status, score, reward, reputation after). The numbers are those of the contract's own formulas for
# round 1 of test_rounds.py (two accepted updates of different quality, one rejected), so the list is plausible;
# the Merkle path itself trusts the aggregator for them and only bounds their total by the budget.
RESULTS = {
    0: (ACCEPTED, 800_000, 66_666_666_666_666_666_666, 560_000),
    1: (ACCEPTED, 400_000, 33_333_333_333_333_333_333, 480_000),
    2: (REJECTED, -900_000, 0, 400_000),
}


# ------------------------------------------------------------------------------------------------------- helpers


# tests/conftest.py's ChainEnv (w3, transactor, deployment, admin, operator = also the relayer, aggregator,
# participants ascending by address, outsider); conftest is not importable under --import-mode=importlib.
Env = Any


def ref(label: str) -> tuple[bytes, str]:
    """A (content hash, cid) pair named by ``label``."""
    return keccak(text=label), f"cid-{label}"


GENESIS, RULE = ref("genesis"), ref("rule")


def model(round_id: int) -> tuple[bytes, str]:
    return ref(f"model/{round_id}")


def update_ref(round_id: int, participant: str) -> tuple[bytes, str]:
    return ref(f"update/{round_id}/{participant}")


def now(env: Env) -> int:
    return int(env.w3.eth.get_block("latest")["timestamp"])


def next_block_time(env: Env) -> int:
    """The timestamp the next transaction executes at (the chain clock runs ahead of the wall clock)."""
    return now(env) + 1


def open_round(env: Env, *, deadline: int | None = None, budget: int = BUDGET) -> int:
    deadline = now(env) + DAY if deadline is None else deadline
    result = env.deployment.rounds.open_round(deadline, *RULE, budget, DECAY, sender=env.operator)
    (opened,) = env.deployment.rounds.round_opened_in(result)
    return opened.round_id


def close(env: Env, round_id: int) -> TxResult:
    return env.deployment.rounds.close_round(round_id, sender=env.operator)


def commit(env: Env, round_id: int, participant: str) -> TxResult:
    """``participant``'s own commitUpdate transaction."""
    return env.deployment.rounds.commit_update(round_id, *update_ref(round_id, participant), sender=participant)


def header(env: Env, round_id: int) -> ListHeader:
    return ListHeader(env.w3.eth.chain_id, env.deployment.rounds.address, round_id)


def signed(env: Env, round_id: int, participant: str) -> SignedCommitment:
    """``participant``'s EIP-712 Commitment to its update for ``round_id``, signed with its own key."""
    content_hash, cid = update_ref(round_id, participant)
    typed = commitment_typed_data(env.w3.eth.chain_id, env.deployment.rounds.address, round_id, content_hash, cid)
    signature = env.transactor.account(participant).sign_message(encode_typed_data(full_message=typed)).signature
    return SignedCommitment(participant, content_hash, cid, bytes(signature))


def batch_of(env: Env, round_id: int, participants: list[str]) -> CommitmentBatch:
    return CommitmentBatch.build(header(env, round_id), [signed(env, round_id, p) for p in participants])


def list_ref(data: bytes) -> tuple[bytes, str]:
    """What a blob store answers for a list: its sha256 and an address (a stand-in CID here)."""
    digest = hashlib.sha256(data).digest()
    return digest, f"fedblob:sha256:{digest.hex()}"


def post(env: Env, batch: CommitmentBatch, *, sender: str | None = None, **overrides) -> TxResult:
    """Relay ``batch`` as Operator.post_batch does; ``overrides`` replace commitBatch arguments by name."""
    list_hash, list_cid = list_ref(batch.canonical_bytes())
    args = {
        "round_id": batch.header.round_id,
        "root": batch.root,
        "entries": len(batch.entries),
        "list_hash": list_hash,
        "list_cid": list_cid,
        **overrides,
    }
    return env.deployment.rounds.commit_batch(**args, sender=sender or env.operator)


def result_list(env: Env, round_id: int, results: dict[str, tuple[int, int, int, int]]) -> ResultList:
    """A round's result list: participant -> (status, score, reward, reputation after)."""
    entries = [ResultEntry(p, *values) for p, values in results.items()]
    return ResultList.build(header(env, round_id), RULE[0], model(round_id)[0], entries)


def reference_results(env: Env, round_id: int = 1) -> ResultList:
    ps = env.participants
    return result_list(env, round_id, {ps[i]: values for i, values in RESULTS.items()})


def finalize_with(env: Env, results: ResultList, *, sender: str | None = None, **overrides) -> TxResult:
    """Commit ``results`` as MerkleAggregator.commit does; ``overrides`` replace arguments by name."""
    round_id = results.header.round_id
    list_hash, list_cid = list_ref(results.canonical_bytes())
    args = {
        "round_id": round_id,
        "new_model_hash": model(round_id)[0],
        "new_model_cid": model(round_id)[1],
        "results_root": results.root,
        "list_hash": list_hash,
        "list_cid": list_cid,
        "entries": len(results.entries),
        "accepted": results.accepted,
        "total": results.total_reward,
        **overrides,
    }
    return env.deployment.rounds.finalize_round_with_results(**args, sender=sender or env.aggregator)


def claim_of(results: ResultList, participant: str) -> Claim:
    """``participant``'s leaf of ``results`` with its proof, as fedledger.roles.claims_for builds it."""
    e = results.entry(participant)
    assert e is not None, f"{participant} is not in the list"
    return Claim(results.header.round_id, e.status, e.score, e.reward, e.reputation, results.proof(participant))


def leaf_args(c: Claim, participant: str) -> tuple[int, str, int, int, int, int]:
    """The values of the result leaf ``c`` proves on behalf of ``participant`` (resultLeaf's arguments)."""
    return (c.round_id, participant, c.status, c.score, c.reward, c.reputation)


def leaf_of(claim: Claim, participant: str) -> bytes:
    """The result leaf the contract computes for ``claim`` on behalf of ``participant``, computed in Python."""
    return leaf_hash(RESULT_LEAF_TYPES, leaf_args(claim, participant))


def flip_bit(node: bytes) -> bytes:
    return bytes([node[0] ^ 1]) + node[1:]


def merkle_round(env: Env, results: dict[str, tuple[int, int, int, int]]) -> ResultList:
    """Open the next round, relay one batch with everyone in ``results``, close it and commit ``results``."""
    round_id = open_round(env)
    post(env, batch_of(env, round_id, list(results)))
    close(env, round_id)
    committed = result_list(env, round_id, results)
    finalize_with(env, committed)
    return committed


# ------------------------------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def deployed(chain_env_factory) -> Iterator[tuple[Env, int]]:
    """One deployment for the module and the snapshot every test starts from."""
    env = chain_env_factory()
    w3, deployment = env.w3, env.deployment
    for p in env.participants:
        deployment.registry.register(sender=p, value=deployment.registry.min_stake())
    deployment.rounds.publish_genesis(*GENESIS, sender=env.operator)
    advance_time(w3, 3600)
    yield env, w3.provider.ethereum_tester.take_snapshot()  # type: ignore[attr-defined]


@pytest.fixture
def env(deployed: tuple[Env, int]) -> Env:
    """The module's deployment, rewound to its starting snapshot."""
    env, snapshot = deployed
    env.w3.provider.ethereum_tester.revert_to_snapshot(snapshot)  # type: ignore[attr-defined]
    env.transactor._nonces.clear()  # the rewound chain forgot the nonces the transactor counted
    return env


@pytest.fixture
def ps(env: Env) -> list[str]:
    return env.participants


@pytest.fixture
def round1(env: Env) -> int:
    """Round 1 open for a day."""
    return open_round(env)


@pytest.fixture
def closed1(env: Env, ps: list[str], round1: int) -> CommitmentBatch:
    """Round 1 with ps[0] and ps[1] in one relayed batch and ps[2] committed directly, then closed."""
    batch = batch_of(env, 1, ps[:2])
    post(env, batch)
    commit(env, 1, ps[2])
    close(env, 1)
    return batch


@pytest.fixture
def final1(env: Env, closed1: CommitmentBatch) -> ResultList:
    """Round 1 finalized with the reference result list (ps[0], ps[1], ps[2]); nothing claimed yet."""
    results = reference_results(env)
    finalize_with(env, results)
    return results


# -------------------------------------------------------------------------------------------------- commitBatch


def test_commit_batch_posts_the_root_and_emits_commitment_batch_posted(env, ps, reverts, round1) -> None:
    rounds = env.deployment.rounds
    first, second = batch_of(env, 1, ps[:3]), batch_of(env, 1, ps[3:])
    assert first.signature_problems() == [] and second.signature_problems() == []
    assert rounds.batch_count(1) == 0

    posted = [post(env, first), post(env, second)]

    assert [rounds.commitment_batch_posted_in(r) for r in posted] == [
        [CommitmentBatchPosted(1, i, b.root, *list_ref(b.canonical_bytes()), len(b.entries), env.operator)]
        for i, b in enumerate((first, second))
    ]
    assert rounds.batch_count(1) == 2
    assert [rounds.batch_root(1, 0), rounds.batch_root(1, 1)] == [first.root, second.root]
    with reverts("RoundsUnknownBatch", roundId=1, batchIndex=2, batchCount=2):
        rounds.batch_root(1, 2)
    assert first.root == StandardMerkleTree.of(first.leaves(), COMMITMENT_LEAF_TYPES).root
    # A batch is not a direct commitment: no per-participant slot, no UpdateCommitted, no submission counted.
    assert [rounds.commitment_of(1, p) for p in ps] == [ZERO_HASH] * 4
    assert all(rounds.update_committed_in(r) == [] for r in posted)
    assert rounds.get_round(1).submissions == 0


def test_commit_batch_by_a_non_relayer_is_unauthorized(env, ps, reverts, round1) -> None:
    rounds, batch = env.deployment.rounds, batch_of(env, 1, ps[:2])
    assert rounds.has_role(RELAYER_ROLE, env.operator) and rounds.relayer_role() == RELAYER_ROLE
    for sender in (env.admin, env.aggregator, env.outsider, ps[0]):
        with reverts("AccessControlUnauthorizedAccount", account=sender, neededRole=RELAYER_ROLE):
            post(env, batch, sender=sender)
    assert rounds.batch_count(1) == 0
    # The role, not the operator's key, is what lets a batch through.
    rounds.grant_role(RELAYER_ROLE, env.outsider, sender=env.admin)
    (event,) = rounds.commitment_batch_posted_in(post(env, batch, sender=env.outsider))
    assert event.relayer == env.outsider and rounds.batch_count(1) == 1


def test_commit_batch_validates_root_size_and_list_reference(env, ps, reverts, round1) -> None:
    rounds, batch = env.deployment.rounds, batch_of(env, 1, ps[:2])
    assert rounds.max_batch_entries() == MAX_BATCH_ENTRIES
    with reverts("RoundsEmptyRoot"):
        post(env, batch, root=ZERO_HASH)
    for entries in (0, MAX_BATCH_ENTRIES + 1, 2**32 - 1):
        with reverts("RoundsBatchSizeOutOfRange", entries=entries, maxEntries=MAX_BATCH_ENTRIES):
            post(env, batch, entries=entries)
    with reverts("RoundsEmptyHash"):
        post(env, batch, list_hash=ZERO_HASH)
    with reverts("RoundsEmptyCid"):
        post(env, batch, list_cid="")
    assert rounds.batch_count(1) == 0
    # Both size limits are inclusive. (The contract cannot count a tree's leaves: the auditor checks the list.)
    events = [rounds.commitment_batch_posted_in(post(env, batch, entries=n))[0] for n in (1, MAX_BATCH_ENTRIES)]
    assert [(e.batch_index, e.entries) for e in events] == [(0, 1), (1, MAX_BATCH_ENTRIES)]


def test_commit_batch_to_an_unknown_round_reverts(env, ps, reverts) -> None:
    batch = batch_of(env, 1, ps[:2])
    with reverts("RoundsUnknownRound", roundId=1, roundCount=0):
        post(env, batch)
    open_round(env)
    for round_id in (0, 2):
        with reverts("RoundsUnknownRound", roundId=round_id, roundCount=1):
            post(env, batch, round_id=round_id)
    assert env.deployment.rounds.batch_count(0) == env.deployment.rounds.batch_count(2) == 0


def test_commit_batch_is_accepted_up_to_the_deadline_second_and_not_after(env, ps, reverts) -> None:
    deadline = now(env) + 2  # open_round mines at now + 1, the first batch at now + 2 == deadline
    open_round(env, deadline=deadline)
    batch = batch_of(env, 1, ps[:2])
    assert env.w3.eth.get_block(post(env, batch).block_number)["timestamp"] == deadline
    with reverts("RoundsDeadlinePassed", roundId=1, deadline=deadline, timestamp=deadline + 1):
        post(env, batch)
    assert env.deployment.rounds.get_round(1).state == OPEN  # nobody closed it: the deadline alone stops batches
    assert env.deployment.rounds.batch_count(1) == 1


def test_commit_batch_to_a_closed_or_finalized_round_reverts(env, ps, reverts, closed1) -> None:
    late = batch_of(env, 1, ps[3:])
    with reverts("RoundsRoundNotOpen", roundId=1, state=CLOSED):
        post(env, late)
    finalize_with(env, reference_results(env))
    with reverts("RoundsRoundNotOpen", roundId=1, state=FINALIZED):
        post(env, late)
    assert env.deployment.rounds.batch_count(1) == 1


def test_is_in_batch_accepts_the_python_trees_proofs_and_nothing_else(env, ps, round1) -> None:
    rounds = env.deployment.rounds
    batch, single = batch_of(env, 1, ps[:3]), batch_of(env, 1, ps[3:])
    post(env, batch)
    post(env, single)

    for e in batch.entries:
        proof = batch.proof(e.participant)
        assert rounds.commitment_leaf(1, e.participant, e.content_hash, e.cid) == leaf_hash(
            COMMITMENT_LEAF_TYPES, (1, e.participant, e.content_hash, e.cid)
        )
        assert rounds.is_in_batch(1, 0, e.participant, e.content_hash, e.cid, proof) is True
        assert rounds.is_in_batch(1, 1, e.participant, e.content_hash, e.cid, proof) is False  # another batch
    only = single.entries[0]
    assert single.proof(only.participant) == [] and single.root == leaf_hash(COMMITMENT_LEAF_TYPES, single.leaves()[0])
    assert rounds.is_in_batch(1, 1, only.participant, only.content_hash, only.cid, []) is True

    e, proof = batch.entries[1], batch.proof(batch.entries[1].participant)
    other_proof = batch.proof(batch.entries[0].participant)
    wrong = {
        "altered cid": (1, 0, e.participant, e.content_hash, "cid-swapped", proof),
        "altered hash": (1, 0, e.participant, keccak(text="swapped"), e.cid, proof),
        "another participant": (1, 0, ps[3], e.content_hash, e.cid, proof),
        "another round": (2, 0, e.participant, e.content_hash, e.cid, proof),
        "a batch that does not exist": (1, 2, e.participant, e.content_hash, e.cid, proof),
        "another entry's proof": (1, 0, e.participant, e.content_hash, e.cid, other_proof),
        "a truncated proof": (1, 0, e.participant, e.content_hash, e.cid, proof[:-1]),
        "a left-out participant": (1, 0, ps[3], *update_ref(1, ps[3]), proof),
    }
    assert {what: rounds.is_in_batch(*args) for what, args in wrong.items()} == dict.fromkeys(wrong, False)



# ------------------------------------------------------------------------------------- finalizeRoundWithResults


def test_finalize_with_results_commits_the_root_and_mints_nothing(env, ps, closed1) -> None:
    d, results = env.deployment, reference_results(env)
    list_hash, list_cid = list_ref(results.canonical_bytes())
    total = sum(values[2] for values in RESULTS.values())
    assert (results.total_reward, results.accepted, total) == (total, 2, BUDGET - 1)
    assert d.rounds.results_of(1) == Results(ZERO_HASH, 0, 0)

    result = finalize_with(env, results)

    assert d.rounds.round_results_committed_in(result) == [
        RoundResultsCommitted(1, results.root, list_hash, list_cid, 3, total)
    ]
    assert d.rounds.round_finalized_in(result) == [RoundFinalized(1, model(1)[0], GENESIS[0], model(1)[1], 2, 0)]
    assert d.rounds.results_of(1) == Results(results.root, total, 0)
    r = d.rounds.get_round(1)
    assert (r.state, r.submissions, r.accepted, r.new_model_hash, r.minted) == (FINALIZED, 1, 2, model(1)[0], 0)
    assert d.rounds.global_model() == model(1)
    # Nothing is paid or scored until claimed: gas does not grow with the participants.
    assert d.rounds.contribution_scored_in(result) == [] and d.token.transfer_in(result) == []
    assert d.registry.reputation_updated_in(result) == []
    assert d.token.total_supply() == 0
    assert [(d.registry.reputation_of(p), d.registry.reputation_round_of(p)) for p in ps] == [
        (INITIAL_REPUTATION, 0)
    ] * 4
    assert [d.rounds.is_claimed(1, p) for p in ps] == [False] * 4
    # The next round trains on the committed model.
    assert d.rounds.get_round(open_round(env)).base_model_hash == model(1)[0]


def test_finalize_with_results_by_a_non_aggregator_is_unauthorized(env, reverts, closed1) -> None:
    results = reference_results(env)
    for sender in (env.operator, env.admin, env.outsider, env.participants[0]):
        with reverts("AccessControlUnauthorizedAccount", account=sender, neededRole=AGGREGATOR_ROLE):
            finalize_with(env, results, sender=sender)
    assert env.deployment.rounds.get_round(1).state == CLOSED
    assert env.deployment.rounds.results_of(1) == Results(ZERO_HASH, 0, 0)


def test_finalize_with_results_waits_for_the_close_or_the_deadline(env, ps, reverts) -> None:
    with reverts("RoundsUnknownRound", roundId=1, roundCount=0):
        finalize_with(env, reference_results(env))
    deadline = now(env) + 3  # open at now + 1, the batch at now + 2, the first attempt at now + 3 == deadline
    open_round(env, deadline=deadline)
    post(env, batch_of(env, 1, ps[:3]))
    results = reference_results(env)
    with reverts("RoundsSubmissionsStillOpen", roundId=1, deadline=deadline, timestamp=deadline):
        finalize_with(env, results)
    advance_time(env.w3, 60)
    assert env.deployment.rounds.get_round(1).state == OPEN  # nobody closed it

    finalize_with(env, results)

    assert env.deployment.rounds.get_round(1).state == FINALIZED


def test_finalize_with_results_validates_references_root_budget_and_coverage(env, reverts, closed1) -> None:
    d, results = env.deployment, reference_results(env)
    with reverts("RoundsEmptyHash"):
        finalize_with(env, results, new_model_hash=ZERO_HASH)
    with reverts("RoundsEmptyCid"):
        finalize_with(env, results, new_model_cid="")
    with reverts("RoundsEmptyHash"):
        finalize_with(env, results, list_hash=ZERO_HASH)
    with reverts("RoundsEmptyCid"):
        finalize_with(env, results, list_cid="")
    with reverts("RoundsEmptyRoot"):
        finalize_with(env, results, results_root=ZERO_HASH)
    for total in (BUDGET + 1, 2**256 - 1):
        with reverts("RoundsRewardsExceedBudget", roundId=1, total=total, budget=BUDGET):
            finalize_with(env, results, total=total)
    # closed1 has one direct commitment (ps[2]): a list of none cannot cover it.
    with reverts("RoundsResultsMissDirectCommitments", roundId=1, directCommitments=1, entries=0):
        finalize_with(env, results, entries=0)
    with reverts("RoundsAcceptedExceedEntries", roundId=1, accepted=2, entries=1):
        finalize_with(env, results, entries=1, accepted=2)
    assert d.rounds.get_round(1).state == CLOSED and d.rounds.global_model() == GENESIS

    (committed,) = d.rounds.round_results_committed_in(finalize_with(env, results, total=BUDGET, entries=1, accepted=1))

    assert (committed.total, committed.entries) == (BUDGET, 1)  # both limits are inclusive
    assert d.rounds.results_of(1) == Results(results.root, BUDGET, 0)


def test_a_round_is_finalized_only_once_whichever_way(env, ps, reverts, closed1) -> None:
    d, results = env.deployment, reference_results(env)
    finalize_with(env, results)
    again = result_list(env, 1, {ps[2]: (ACCEPTED, 1, 1, 1)})
    with reverts("RoundsAlreadyFinalized", roundId=1, newModelHash=model(1)[0]):
        finalize_with(env, again, new_model_hash=ref("another model")[0])
    with reverts("RoundsAlreadyFinalized", roundId=1, newModelHash=model(1)[0]):
        d.rounds.finalize_round(1, *ref("another model"), [ps[2]], [PPM], [ACCEPTED], sender=env.aggregator)
    assert d.rounds.results_of(1) == Results(results.root, results.total_reward, 0)
    assert d.token.total_supply() == 0
    # ... and a round finalized the per-participant way cannot be finalized again with a root.
    open_round(env)
    commit(env, 2, ps[2])
    close(env, 2)
    d.rounds.finalize_round(2, *model(2), [ps[2]], [PPM], [ACCEPTED], sender=env.aggregator)
    with reverts("RoundsAlreadyFinalized", roundId=2, newModelHash=model(2)[0]):
        finalize_with(env, result_list(env, 2, {ps[2]: (ACCEPTED, PPM, BUDGET, PPM)}))
    assert d.rounds.results_of(2) == Results(ZERO_HASH, 0, 0)


# -------------------------------------------------------------------------------------------------------- claim


def test_claim_mints_the_reward_sets_the_reputation_and_emits_reward_claimed(env, ps, final1) -> None:
    d, p = env.deployment, ps[0]
    c = claim_of(final1, p)
    status, score, reward, reputation = RESULTS[0]
    assert (c.status, c.score, c.reward, c.reputation) == RESULTS[0]
    assert d.rounds.result_leaf(1, p, status, score, reward, reputation) == leaf_of(c, p)

    result = d.rounds.claim(p, [c], sender=p)

    assert d.rounds.reward_claimed_in(result) == [RewardClaimed(1, p, status, score, reward, reputation)]
    assert d.registry.reputation_updated_in(result) == [ReputationUpdated(p, 1, INITIAL_REPUTATION, reputation)]
    assert [(t.from_, t.to, t.value) for t in d.token.transfer_in(result)] == [(ZERO_ADDRESS, p, reward)]
    assert d.token.balance_of(p) == d.token.total_supply() == reward
    assert (d.registry.reputation_of(p), d.registry.reputation_round_of(p)) == (reputation, 1)
    assert d.rounds.results_of(1) == Results(final1.root, final1.total_reward, reward)
    assert d.rounds.get_round(1).minted == reward
    assert [d.rounds.is_claimed(1, q) for q in ps] == [True, False, False, False]
    assert d.rounds.is_claimed(2, p) is False  # one bit per round


def test_a_zero_reward_claim_sets_the_reputation_and_mints_nothing(env, ps, final1) -> None:
    d, p = env.deployment, ps[2]
    result = d.rounds.claim(p, [claim_of(final1, p)], sender=p)
    assert d.rounds.reward_claimed_in(result) == [RewardClaimed(1, p, REJECTED, -900_000, 0, 400_000)]
    assert d.registry.reputation_updated_in(result) == [ReputationUpdated(p, 1, INITIAL_REPUTATION, 400_000)]
    assert d.token.transfer_in(result) == [] and d.token.total_supply() == 0
    assert d.rounds.is_claimed(1, p) is True
    assert d.rounds.results_of(1).claimed == 0


def test_anyone_may_submit_a_claim_and_the_tokens_go_to_the_participant(env, ps, final1) -> None:
    d, p = env.deployment, ps[1]
    reward = RESULTS[1][2]
    result = d.rounds.claim(p, [claim_of(final1, p)], sender=env.outsider)
    assert env.w3.eth.get_transaction(result.tx_hash)["from"] == env.outsider
    assert [(t.to, t.value) for t in d.token.transfer_in(result)] == [(p, reward)]
    assert (d.token.balance_of(p), d.token.balance_of(env.outsider)) == (reward, 0)
    assert d.registry.reputation_of(p) == RESULTS[1][3]
    assert (d.rounds.is_claimed(1, p), d.rounds.is_claimed(1, env.outsider)) == (True, False)


def test_a_result_is_claimed_only_once(env, ps, reverts, final1) -> None:
    d, p, q = env.deployment, ps[0], ps[1]
    d.rounds.claim(p, [claim_of(final1, p)], sender=p)
    for sender in (p, env.outsider):
        with reverts("RoundsAlreadyClaimed", roundId=1, participant=p):
            d.rounds.claim(p, [claim_of(final1, p)], sender=sender)
    assert d.token.balance_of(p) == RESULTS[0][2]
    # Twice in one call is refused too, and the whole call with it.
    with reverts("RoundsAlreadyClaimed", roundId=1, participant=q):
        d.rounds.claim(q, [claim_of(final1, q), claim_of(final1, q)], sender=q)
    assert (d.rounds.is_claimed(1, q), d.token.balance_of(q), d.registry.reputation_round_of(q)) == (False, 0, 0)
    assert d.rounds.results_of(1).claimed == RESULTS[0][2]


# Each forgery turns a genuine claim of participant p into another: (claim, p, participants) -> (claim, claimant).
FORGERIES = {
    "more-reward": lambda c, p, ps: (c._replace(reward=c.reward + 1), p),
    "higher-score": lambda c, p, ps: (c._replace(score=c.score + 1), p),
    "another-status": lambda c, p, ps: (c._replace(status=c.status ^ 1), p),
    "higher-reputation": lambda c, p, ps: (c._replace(reputation=c.reputation + 1), p),
    "another-round": lambda c, p, ps: (c._replace(round_id=2), p),
    "no-proof": lambda c, p, ps: (c._replace(proof=[]), p),
    "truncated-proof": lambda c, p, ps: (c._replace(proof=c.proof[:1]), p),
    "swapped-proof-nodes": lambda c, p, ps: (c._replace(proof=c.proof[::-1]), p),
    "flipped-proof-bit": lambda c, p, ps: (c._replace(proof=[flip_bit(c.proof[0]), *c.proof[1:]]), p),
    "someone-elses-leaf": lambda c, p, ps: (c, ps[3]),  # ps[3] is not in the list and copies p's entry
}


@pytest.mark.parametrize("forgery", list(FORGERIES))
def test_a_claim_that_is_not_a_leaf_of_the_root_is_invalid(env, ps, reverts, final1, forgery) -> None:
    d = env.deployment
    # Three leaves: two of them have two-node proofs, which the proof forgeries above need.
    p = next(q for q in ps[:3] if len(final1.proof(q)) == 2)
    if forgery == "another-round":  # round 2 must have a root too, or the claim fails for another reason
        merkle_round(env, {p: (ACCEPTED, PPM, BUDGET, PPM)})
    forged, claimant = FORGERIES[forgery](claim_of(final1, p), p, ps)
    leaf = leaf_of(forged, claimant)
    assert d.rounds.result_leaf(*leaf_args(forged, claimant)) == leaf
    with reverts("RoundsInvalidProof", roundId=forged.round_id, participant=claimant, leaf=leaf):
        d.rounds.claim(claimant, [forged], sender=claimant)
    assert d.token.total_supply() == 0 and d.rounds.is_claimed(forged.round_id, claimant) is False
    assert d.registry.reputation_round_of(claimant) == 0
    # ... while the genuine claim still goes through.
    d.rounds.claim(p, [claim_of(final1, p)], sender=p)
    assert d.rounds.is_claimed(1, p) is True


def test_claims_need_a_committed_results_root(env, ps, reverts) -> None:
    d, p = env.deployment, ps[2]
    results = reference_results(env)  # a genuine-looking list that the chain never committed
    with reverts("RoundsUnknownRound", roundId=1, roundCount=0):
        d.rounds.claim(p, [claim_of(results, p)], sender=p)
    open_round(env)
    commit(env, 1, p)
    with reverts("RoundsResultsNotCommitted", roundId=1, state=OPEN):
        d.rounds.claim(p, [claim_of(results, p)], sender=p)
    close(env, 1)
    with reverts("RoundsResultsNotCommitted", roundId=1, state=CLOSED):
        d.rounds.claim(p, [claim_of(results, p)], sender=p)
    with reverts("RoundsUnknownRound", roundId=2, roundCount=1):
        d.rounds.claim(p, [claim_of(results, p)._replace(round_id=2)], sender=p)
    # Finalized the per-participant way: already paid, nothing to claim.
    d.rounds.finalize_round(1, *model(1), [p], [PPM], [ACCEPTED], sender=env.aggregator)
    paid = d.token.balance_of(p)
    assert paid == BUDGET
    with reverts("RoundsResultsNotCommitted", roundId=1, state=FINALIZED):
        d.rounds.claim(p, [claim_of(results, p)], sender=p)
    assert d.token.balance_of(p) == paid and d.rounds.is_claimed(1, p) is False


def test_claims_never_mint_more_than_the_committed_total(env, ps, reverts, closed1) -> None:
    """The contract knows a list only by its root and the total the aggregator declared: a list whose rewards sum
    over that total is committable, but claims stop at the total."""
    d = env.deployment
    over = result_list(env, 1, {ps[0]: (ACCEPTED, 1, 60, 1), ps[1]: (ACCEPTED, 1, 50, 1), ps[2]: (ACCEPTED, 1, 40, 1)})
    assert over.total_reward == 150
    finalize_with(env, over, total=100)
    d.rounds.claim(ps[0], [claim_of(over, ps[0])], sender=ps[0])
    d.rounds.claim(ps[2], [claim_of(over, ps[2])], sender=ps[2])  # exactly the total: still allowed
    assert d.rounds.results_of(1) == Results(over.root, 100, 100)

    with reverts("RoundsClaimsExceedTotal", roundId=1, claimed=150, total=100):
        d.rounds.claim(ps[1], [claim_of(over, ps[1])], sender=ps[1])

    assert d.token.total_supply() == d.rounds.get_round(1).minted == 100
    assert (d.rounds.is_claimed(1, ps[1]), d.token.balance_of(ps[1]), d.registry.reputation_round_of(ps[1])) == (
        False, 0, 0
    )


def test_a_claim_of_nothing_reverts(env, ps, reverts, final1) -> None:
    for sender in (ps[0], env.outsider):
        with reverts("RoundsNoClaims"):
            env.deployment.rounds.claim(ps[0], [], sender=sender)


def test_several_rounds_are_claimed_in_one_transaction_with_one_mint(env, ps) -> None:
    d, p, q = env.deployment, ps[0], ps[1]
    # round -> (status, score, reward, reputation) for p; q takes the rest of each round's rewards
    mine = {1: (ACCEPTED, 700_000, 7 * 10**18, 540_000), 2: (REJECTED, -50_000, 0, 432_000),
            3: (ACCEPTED, 900_000, 9 * 10**18, 525_600)}
    lists = [merkle_round(env, {p: mine[r], q: (ACCEPTED, 1, 10**18, 1)}) for r in (1, 2, 3)]
    claims = [claim_of(lists[r - 1], p) for r in (3, 1, 2)]  # any order: the newest round's reputation wins

    result = d.rounds.claim(p, claims, sender=p)

    assert d.rounds.reward_claimed_in(result) == [RewardClaimed(r, p, *mine[r]) for r in (3, 1, 2)]
    total = sum(values[2] for values in mine.values())
    assert [(t.from_, t.to, t.value) for t in d.token.transfer_in(result)] == [(ZERO_ADDRESS, p, total)]
    assert d.registry.reputation_updated_in(result) == [ReputationUpdated(p, 3, INITIAL_REPUTATION, mine[3][3])]
    assert (d.registry.reputation_of(p), d.registry.reputation_round_of(p)) == (mine[3][3], 3)
    assert d.token.balance_of(p) == total
    assert [d.rounds.results_of(r).claimed for r in (1, 2, 3)] == [mine[r][2] for r in (1, 2, 3)]
    assert [d.rounds.get_round(r).minted for r in (1, 2, 3)] == [mine[r][2] for r in (1, 2, 3)]
    assert [d.rounds.is_claimed(r, p) for r in (1, 2, 3)] == [True] * 3
    assert [d.rounds.is_claimed(r, q) for r in (1, 2, 3)] == [False] * 3


def test_a_late_claim_of_an_older_round_keeps_the_newer_reputation(env, ps, reverts) -> None:
    d, p, q = env.deployment, ps[0], ps[1]
    r1 = merkle_round(env, {p: (ACCEPTED, 1, 11, 610_000), q: (ACCEPTED, 1, 12, 620_000)})
    r2 = merkle_round(env, {p: (ACCEPTED, 1, 21, 710_000), q: (ACCEPTED, 1, 22, 720_000)})

    newest_first = [d.rounds.claim(p, [claim_of(r, p)], sender=p) for r in (r2, r1)]
    oldest_first = [d.rounds.claim(q, [claim_of(r, q)], sender=q) for r in (r1, r2)]

    # p: round 2 sets its reputation; round 1, claimed late, pays but writes nothing (and does not revert with the
    # registry's RegistryStaleReputation: the claim only writes a newer round).
    assert [d.registry.reputation_updated_in(r) for r in newest_first] == [
        [ReputationUpdated(p, 2, INITIAL_REPUTATION, 710_000)], []
    ]
    assert (d.registry.reputation_of(p), d.registry.reputation_round_of(p), d.token.balance_of(p)) == (710_000, 2, 32)
    # q: each claim is newer than the last, so each one writes.
    assert [d.registry.reputation_updated_in(r) for r in oldest_first] == [
        [ReputationUpdated(q, 1, INITIAL_REPUTATION, 620_000)], [ReputationUpdated(q, 2, 620_000, 720_000)]
    ]
    assert (d.registry.reputation_of(q), d.registry.reputation_round_of(q), d.token.balance_of(q)) == (720_000, 2, 34)
    # The registry itself refuses the stale write the claim avoided.
    d.registry.grant_role(d.registry.reputation_writer_role(), env.outsider, sender=env.admin)
    with reverts("RegistryStaleReputation", account=p, roundId=1, latestRoundId=2):
        d.registry.set_reputation(p, 1, 610_000, sender=env.outsider)


def test_a_claim_after_a_newer_round_finalized_per_participant_keeps_that_reputation(env, ps) -> None:
    d, p = env.deployment, ps[0]
    r1 = merkle_round(env, {p: (ACCEPTED, PPM, 5, 900_000)})
    open_round(env)
    commit(env, 2, p)
    close(env, 2)
    d.rounds.finalize_round(2, *model(2), [p], [0], [REJECTED], sender=env.aggregator)
    after2 = d.registry.reputation_of(p)
    assert (after2, d.registry.reputation_round_of(p)) == (INITIAL_REPUTATION * DECAY // PPM, 2)

    result = d.rounds.claim(p, [claim_of(r1, p)], sender=p)

    assert d.rounds.reward_claimed_in(result) == [RewardClaimed(1, p, ACCEPTED, PPM, 5, 900_000)]
    assert d.registry.reputation_updated_in(result) == []
    assert (d.registry.reputation_of(p), d.registry.reputation_round_of(p), d.token.balance_of(p)) == (after2, 2, 5)


# -------------------------------------------------------------------------------------------- inclusion guarantee


def test_a_participant_left_out_of_the_batch_commits_directly_and_the_results_must_count_it(env, ps, reverts) -> None:
    """The relay collected four signed commitments but batched only ps[0]'s. The other three commit by their own
    transactions while the round is open; the result list must then hold at least those direct commitments.
    (The contract counts entries, it cannot name them: the auditor checks the list covers every committer.)"""
    d = env.deployment
    open_round(env)
    batch = batch_of(env, 1, ps)
    censored = batch_of(env, 1, ps[:1])
    post(env, censored)
    left_out = ps[1:]
    for p in left_out:
        e = batch.entries[batch.index_of(p)]
        assert d.rounds.is_in_batch(1, 0, p, e.content_hash, e.cid, batch.proof(p)) is False  # no receipt
    committed = [commit(env, 1, p) for p in left_out]
    assert [d.rounds.update_committed_in(r) for r in committed] == [
        [UpdateCommitted(1, p, *update_ref(1, p), p)] for p in left_out
    ]
    assert [d.rounds.commitment_of(1, p) for p in ps] == [ZERO_HASH, *(update_ref(1, p)[0] for p in left_out)]
    close(env, 1)
    assert d.rounds.get_round(1).submissions == 3

    batched_only = result_list(env, 1, {ps[0]: (ACCEPTED, PPM, BUDGET, PPM)})
    with reverts("RoundsResultsMissDirectCommitments", roundId=1, directCommitments=3, entries=1):
        finalize_with(env, batched_only)
    assert d.rounds.get_round(1).state == CLOSED

    everyone = result_list(env, 1, {p: (ACCEPTED, PPM // 2, BUDGET // 4, 600_000) for p in ps})
    (committed_results,) = d.rounds.round_results_committed_in(finalize_with(env, everyone))
    assert committed_results.entries == 4
    d.rounds.claim(ps[3], [claim_of(everyone, ps[3])], sender=ps[3])
    assert d.token.balance_of(ps[3]) == BUDGET // 4


def test_a_direct_commitment_after_the_close_or_the_deadline_is_late(env, ps, reverts) -> None:
    d = env.deployment
    open_round(env)
    post(env, batch_of(env, 1, ps[:1]))
    close(env, 1)
    with reverts("RoundsRoundNotOpen", roundId=1, state=CLOSED):
        commit(env, 1, ps[1])
    late = signed(env, 1, ps[1])
    with reverts("RoundsRoundNotOpen", roundId=1, state=CLOSED):
        d.rounds.commit_update_signed(ps[1], 1, late.content_hash, late.cid, late.signature, sender=env.outsider)
    finalize_with(env, result_list(env, 1, {ps[0]: (ACCEPTED, PPM, BUDGET, PPM)}))

    # Unclosed, the deadline alone ends direct commitments too.
    deadline = now(env) + 2
    open_round(env, deadline=deadline)
    commit(env, 2, ps[2])  # at the deadline second
    with reverts("RoundsDeadlinePassed", roundId=2, deadline=deadline, timestamp=deadline + 1):
        commit(env, 2, ps[1])
    assert d.rounds.get_round(2).state == OPEN
    assert (d.rounds.get_round(1).submissions, d.rounds.get_round(2).submissions) == (0, 1)
    assert d.rounds.commitment_of(1, ps[1]) == d.rounds.commitment_of(2, ps[1]) == ZERO_HASH


def test_the_batch_check_refuses_what_the_contract_refuses_on_a_signed_commit(env, ps, reverts, round1) -> None:
    """A malleable (high-s) twin of a valid signature: ecrecover accepts it, ECDSA.tryRecover does not, and so the
    auditor's batch check (chain.eip712.recover_signer) must not count it either."""
    from eth_keys.constants import SECPK1_N

    good = signed(env, 1, ps[0])
    sig = good.signature
    twin = sig[:32] + (SECPK1_N - int.from_bytes(sig[32:64], "big")).to_bytes(32, "big") + bytes([55 - sig[64]])
    bad = SignedCommitment(good.participant, good.content_hash, good.cid, twin)
    batch = CommitmentBatch.build(header(env, 1), [bad, signed(env, 1, ps[1])])
    assert [(p.participant, p.recovered) for p in batch.signature_problems()] == [(ps[0], None)]
    with reverts("RoundsInvalidSignature", participant=ps[0], recovered="0x" + "00" * 20):
        env.deployment.rounds.commit_update_signed(ps[0], 1, good.content_hash, good.cid, twin, sender=env.operator)
