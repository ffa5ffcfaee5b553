"""The audit of Merkle-committed rounds on the embedded stack: an honest round verifies, and
every way a relayer or aggregator can lie that the contract cannot see is caught by the check that owns it, with
the offending participant or value named.

The contract bounds a results root only by the budget; it never sees the batches' signatures, the list behind a
root, or whether the list follows the rule. So each test builds a real round (real training on digits, a sign-flip
attacker, real EIP-712 signatures, relayed batches and direct commitments), lets an honest or a dishonest
aggregator settle it, and asks ``Auditor(deployment, store).verify()`` what it sees.

One consortium serves the module: its round 1 is open with every update trained, uploaded and signed, nothing
committed yet; every test starts from a snapshot of that chain. The blob store is shared (content addressed, so
later tests only add blobs); tests that tamper with a stored blob restore it afterwards.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from chain.deploy import Deployment
from chain.errors import ContractRevert
from chain.lists import CommitmentBatch, ListHeader, ResultEntry, ResultList, SignedCommitment
from fedledger.audit import AuditReport, Auditor, RoundAudit
from fedledger.demo import Consortium, DemoConfig
from fedledger.history import ChainHistory
from fedledger.roles import MerkleAggregator, ParticipantClient, PreparedResults, claims_for, sign_commitment
from fedledger.stack import embedded_stack
from storage import BlobRef, LocalBlobStore
from trainer.incentives import INITIAL_REPUTATION
from trainer.local import LocalConfig
from trainer.rules import Status

PARTICIPANTS = 7
# By client index (client 0 is the sign-flip attacker, x-4 its honest update): who commits how in round 1.
BATCHED = (0, 1, 2)  # in one relayed batch of EIP-712 signatures (commitBatch)
DIRECT = (3, 4)  # by their own commitUpdate transaction
RELAYED = (5,)  # one signature relayed by commitUpdateSigned (an UpdateCommitted with relayer != participant)
LATE = (6,)  # trained and signed, but committed only where a test says so
Tamper = Callable[[str], None]  # flips a byte of the stored blob at a URI
MERKLE_CHECKS = ["rule", "lineage", "base", "batches", "results", "blobs", "scores", "decisions", "aggregate",
                 "rewards", "claims", "slashes", "privacy"]


@dataclass
class World:
    consortium: Consortium
    deployment: Deployment
    store: LocalBlobStore
    aggregator_address: str
    round_id: int
    clients: list[ParticipantClient]
    refs: dict[str, BlobRef]  # participant -> its uploaded update
    signatures: dict[str, bytes]  # participant -> its EIP-712 commitment signature for round_id

    @property
    def attacker(self) -> str:
        return self.clients[0].address

    def at(self, indices: tuple[int, ...]) -> list[str]:
        return [self.clients[i].address for i in indices]

    def signed(self, participant: str) -> SignedCommitment:
        ref = self.refs[participant]
        return SignedCommitment(participant, ref.content_hash, ref.uri, self.signatures[participant])

    def client(self, participant: str) -> ParticipantClient:
        return next(c for c in self.clients if c.address == participant)

    def header(self) -> ListHeader:
        return ListHeader(self.deployment.manifest.chain_id, self.deployment.rounds.address, self.round_id)

    def aggregator(self) -> MerkleAggregator:
        return MerkleAggregator(self.deployment, self.store, self.aggregator_address)

    def commit_all(self, batch: list[SignedCommitment] | None = None) -> None:
        """Round 1's commitments (``batch`` replaces the honest batch of BATCHED), then close the round."""
        op, rid = self.consortium.operator, self.round_id
        op.post_batch(rid, batch if batch is not None else [self.signed(p) for p in self.at(BATCHED)])
        for p in self.at(DIRECT):
            self.client(p).commit(rid, self.refs[p])
        for p in self.at(RELAYED):
            op.relay(p, rid, self.refs[p], self.signatures[p])
        op.close_round(rid)

    def settle(self, alter: Callable[[PreparedResults], PreparedResults] | None = None) -> PreparedResults:
        """An aggregator settles the closed round: honestly, or committing ``alter(prepared)`` instead."""
        agg = self.aggregator()
        prepared = agg.prepare(self.round_id)
        agg.commit(alter(prepared) if alter is not None else prepared)
        return prepared

    def claim(self, *participants: str) -> None:
        """Each participant claims its unclaimed results by proof (from the public lists), in order."""
        history = ChainHistory(self.deployment)  # one index for all: reading the events is the slow part
        for p in participants:
            self.deployment.rounds.claim(p, claims_for(history, self.store, p), sender=p)

    def audit(self) -> AuditReport:
        return Auditor(self.deployment, self.store).verify()


def only_round(report: AuditReport) -> RoundAudit:
    (audit,) = report.rounds
    return audit


def failures(report: AuditReport) -> dict[str, str]:
    """check name -> problem text, over every failing check of every round."""
    return {c.name: c.detail for r in report.rounds for c in r.failures()}


def only(participant: str, **changes: int) -> Callable[[ResultEntry], ResultEntry]:
    """An entry change for ``with_entries`` that alters ``participant``'s entry and leaves the others."""
    return lambda e: dataclasses.replace(e, **changes) if e.participant == participant else e


def with_entries(results: ResultList, change: Callable[[ResultEntry], ResultEntry]) -> ResultList:
    """``results`` with every entry passed through ``change``, rebuilt (so its root and bytes are consistent)."""
    return ResultList.build(results.header, results.rule_hash, results.new_model_hash,
                            [change(e) for e in results.entries])


# ------------------------------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def started(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[World, int]]:
    cfg = DemoConfig(participants=PARTICIPANTS, byzantine=1, attack="signflip", rounds=1, seed=4,
                     clean_reference=False)
    stack = embedded_stack(tmp_path_factory.mktemp("merkle-audit"), seed=cfg.seed)
    c = Consortium(cfg, stack)
    c.local = LocalConfig(epochs=1)  # the audit needs real updates, not good ones
    c.enroll()
    round_id, _ = c.operator.open_round(c.rule)
    updates = c.round_updates([client.fetch_global_model() for client in c.clients], round_id)
    refs = {client.address: client.upload(u) for client, u in zip(c.clients, updates, strict=True)}
    signatures = {client.address: client.sign(round_id, refs[client.address]) for client in c.clients}
    assert isinstance(stack.store, LocalBlobStore)
    world = World(c, stack.deployment, stack.store, stack.aggregator, round_id, c.clients, refs, signatures)
    assert c.byzantine == {world.attacker}
    tester = stack.transactor.w3.provider.ethereum_tester
    yield world, tester.take_snapshot()


@pytest.fixture
def world(started: tuple[World, int]) -> World:
    """The module's consortium with round 1 open and nothing committed (rewound to the snapshot)."""
    world, snapshot = started
    rewind(world.deployment, snapshot)
    return world


def rewind(deployment: Deployment, snapshot: int) -> None:
    """Rewind the embedded chain to ``snapshot`` (the tester's)."""
    transactor = deployment.rounds.transactor
    transactor.w3.provider.ethereum_tester.revert_to_snapshot(snapshot)
    transactor._nonces.clear()  # the rewound chain forgot the nonces the transactor counted


@pytest.fixture
def tamper(world: World) -> Iterator[Tamper]:
    """``tamper(uri)`` flips one byte of a stored blob in place; every tampered blob is restored afterwards."""
    saved: dict[Path, bytes] = {}

    def flip(uri: str) -> None:
        path = world.store.path_for(uri)
        data = saved.setdefault(path, path.read_bytes())
        altered = bytearray(data)
        altered[len(altered) // 2] ^= 0x01
        path.write_bytes(bytes(altered))

    yield flip
    for path, data in saved.items():
        path.write_bytes(data)


# ---------------------------------------------------------------------------------------------------- happy path


def test_an_honest_merkle_round_verifies_and_claims_pay_exactly_the_listed_rewards(world: World) -> None:
    world.commit_all()
    prepared = world.settle()
    results, attacker = prepared.results, world.attacker

    assert prepared.committed.problems == []
    assert prepared.committed.batched == len(BATCHED)
    assert [e.participant for e in results.entries] == sorted(world.at(BATCHED + DIRECT + RELAYED), key=str.lower)
    listed = {e.participant: e for e in results.entries}
    assert listed[attacker].status != Status.ACCEPTED and listed[attacker].reward == 0
    honest = [p for p in listed if p != attacker]
    assert all(listed[p].status == Status.ACCEPTED and listed[p].reward > 0 for p in honest)
    assert world.clients[6].address not in listed  # it never committed

    claimers = [attacker, *honest[:3]]
    world.claim(*claimers)
    token = world.deployment.token
    assert {p: token.balance_of(p) for p in listed} == {
        p: (listed[p].reward if p in claimers else 0) for p in listed
    }
    assert token.balance_of(attacker) == 0

    registry = world.deployment.registry
    assert registry.stake_slashed_events(from_block=0) != []  # the aggregator proved the attacker's verdict
    assert [e.args.account for e in registry.stake_slashed_events(from_block=0)] == [attacker]
    assert registry.stake_of(attacker).slashed == registry.min_stake() // 10
    assert all(registry.stake_of(p).slashed == 0 for p in honest)

    report = world.audit()
    assert report.verified, report.failure_lines()
    audit = only_round(report)
    assert [c.name for c in audit.checks] == MERKLE_CHECKS
    assert all(c.ok for c in audit.checks)
    details = {c.name: c.detail for c in audit.checks}
    assert details["batches"] == (
        f"1 batches, {len(BATCHED)} signatures verified, {len(BATCHED)} batched + "
        f"{len(DIRECT) + len(RELAYED)} direct commitments"
    )
    assert details["claims"] == f"{len(claimers)} claims, {sum(listed[p].reward for p in claimers)} minted"


# ------------------------------------------------------------------------------- a root that is not the list's


def finalize_raw(world: World, prepared: PreparedResults, stored: ResultList, **overrides: object) -> None:
    """finalizeRoundWithResults as MerkleAggregator.commit calls it for ``stored`` (its blob goes to the store),
    with ``overrides`` replacing arguments by name: what a dishonest aggregator can commit that commit() would not."""
    list_ref = world.store.put(stored.canonical_bytes())
    args = {
        "round_id": prepared.round_id,
        "new_model_hash": prepared.new_ref.content_hash,
        "new_model_cid": prepared.new_ref.uri,
        "results_root": stored.root,
        "list_hash": list_ref.content_hash,
        "list_cid": list_ref.uri,
        "entries": len(stored.entries),
        "accepted": stored.accepted,
        "total": stored.total_reward,
        **overrides,
    }
    world.deployment.rounds.finalize_round_with_results(**args, sender=world.aggregator_address)


def test_a_root_that_is_not_the_stored_lists_root_fails_the_results_check(world: World) -> None:
    world.commit_all()
    prepared = world.aggregator().prepare(world.round_id)
    honest, attacker = prepared.results, world.attacker
    # The root committed is that of a list paying the attacker one token of an honest participant's reward; the
    # list published is the honest one.
    bribe, victim = 10**18, world.at(DIRECT)[0]
    a, v = honest.entry(attacker), honest.entry(victim)
    assert a is not None and v is not None and a.reward == 0
    paid = with_entries(with_entries(honest, only(attacker, reward=bribe)), only(victim, reward=v.reward - bribe))
    assert paid.total_reward == honest.total_reward
    finalize_raw(world, prepared, honest, results_root=paid.root)

    # The published list cannot be claimed against that root; the hidden one can.
    with pytest.raises(ContractRevert) as info:
        world.claim(world.at(DIRECT)[0])
    assert info.value.error == "RoundsInvalidProof"
    assert failures(world.audit()) == {
        "results": f"the result list's root 0x{honest.root.hex()} is not the committed 0x{paid.root.hex()}",
    }


@pytest.mark.parametrize("argument", ["entries", "accepted"])
def test_a_committed_count_that_is_not_the_lists_fails_the_results_check(world: World, argument: str) -> None:
    world.commit_all()
    prepared = world.aggregator().prepare(world.round_id)
    honest = prepared.results
    listed = {"entries": len(honest.entries), "accepted": honest.accepted}[argument]
    finalize_raw(world, prepared, honest, **{argument: listed + 1})
    assert failures(world.audit()) == {
        "results": f"the result list has {listed} {'entries' if argument == 'entries' else 'accepted'}, "
                   f"{listed + 1} were committed",
    }


# ------------------------------------------------------------------- a consistent list that breaks the rule


def accept_the_attacker(world: World, honest: ResultList) -> tuple[ResultList, dict[str, list[str]]]:
    """The attacker is listed ACCEPTED and paid a tenth of the budget, taken from the others pro rata."""
    attacker, budget = world.attacker, world.consortium.rule.reward_budget
    bribe = budget // 10
    a = honest.entry(attacker)
    assert a is not None and a.status != Status.ACCEPTED

    def change(e: ResultEntry) -> ResultEntry:
        if e.participant == attacker:
            return dataclasses.replace(e, status=int(Status.ACCEPTED), reward=bribe)
        return dataclasses.replace(e, reward=e.reward * 9 // 10)

    altered = with_entries(honest, change)
    assert altered.total_reward <= budget
    return altered, {
        "decisions": [f"{attacker}: committed ACCEPTED with score {a.score}, rule says {Status(a.status).name} ("],
        "rewards": [f"{attacker}: listed reward {bribe}, rule gives 0"],
    }


def raise_a_score(world: World, honest: ResultList) -> tuple[ResultList, dict[str, list[str]]]:
    """One honest participant's score raised by 0.05 (its reward left as it was)."""
    p = world.at(DIRECT)[0]
    e = honest.entry(p)
    assert e is not None and e.status == Status.ACCEPTED
    altered = with_entries(honest, only(p, score=e.score + 50_000))
    return altered, {
        "scores": [f"{p}: committed score {e.score + 50_000}, recomputed {e.score}"],
        "rewards": [f"{p}: listed reward {e.reward}, rule gives "],  # the rule pays by the listed scores
    }


def move_a_reward(world: World, honest: ResultList) -> tuple[ResultList, dict[str, list[str]]]:
    """One token moved from one honest participant to another: same total, scores and decisions."""
    giver, taker = world.at(DIRECT)[0], world.at(RELAYED)[0]
    g, t = honest.entry(giver), honest.entry(taker)
    assert g is not None and t is not None
    unit = 10**18

    def change(e: ResultEntry) -> ResultEntry:
        delta = {giver: -unit, taker: unit}.get(e.participant, 0)
        return dataclasses.replace(e, reward=e.reward + delta)

    return with_entries(honest, change), {
        "rewards": [f"{giver}: listed reward {g.reward - unit}, rule gives {g.reward}",
                    f"{taker}: listed reward {t.reward + unit}, rule gives {t.reward}"],
    }


def spare_the_attackers_reputation(world: World, honest: ResultList) -> tuple[ResultList, dict[str, list[str]]]:
    """The attacker keeps its reputation: the rejection otherwise listed honestly."""
    a = honest.entry(world.attacker)
    assert a is not None and a.reputation < INITIAL_REPUTATION
    altered = with_entries(honest, only(world.attacker, reputation=INITIAL_REPUTATION))
    return altered, {
        "rewards": [f"{world.attacker}: listed reputation {INITIAL_REPUTATION}, rule gives {a.reputation}"],
    }


def an_unknown_status(world: World, honest: ResultList) -> tuple[ResultList, dict[str, list[str]]]:
    """The attacker listed with status 42, a code the rule does not define (the contract never sees a list's
    statuses; finalizeRound would refuse it with RoundsStatusOutOfRange)."""
    altered = with_entries(honest, only(world.attacker, status=42))
    return altered, {"decisions": [f"{world.attacker}: committed status 42, which the rule does not define"]}


@pytest.mark.parametrize("lie", [accept_the_attacker, raise_a_score, move_a_reward, spare_the_attackers_reputation,
                                 an_unknown_status])
def test_a_consistent_list_that_does_not_follow_the_rule_fails_the_check_it_breaks(
    world: World, lie: Callable[[World, ResultList], tuple[ResultList, dict[str, list[str]]]]
) -> None:
    world.commit_all()
    altered: dict[str, ResultList] = {}

    def dishonest(prepared: PreparedResults) -> PreparedResults:
        altered["list"], altered["expect"] = lie(world, prepared.results)  # type: ignore[assignment]
        return dataclasses.replace(prepared, results=altered["list"])

    world.settle(dishonest)
    # Root, blob, size and total all agree with the chain: only re-deriving the round shows the lie.
    found = failures(world.audit())
    expected: dict[str, list[str]] = altered["expect"]  # type: ignore[assignment]
    assert sorted(found) == sorted(expected), found
    for check, fragments in expected.items():
        for fragment in fragments:
            assert fragment in found[check], (check, fragment, found[check])


# ----------------------------------------------------------------------------- batches with bad signatures


def test_forged_and_missing_signatures_in_a_batch_are_reported_and_never_counted(world: World) -> None:
    """The relayer forges the late participant's commitment (signed with another participant's key) and strips one
    honest participant's signature. ``Operator.post_batch`` does not check signatures (the contract cannot: it
    sees only the root), so the batch goes on-chain; the honest aggregator and the auditor both refuse the entries."""
    forged_for, forger = world.at(LATE)[0], world.at(DIRECT)[0]
    stripped = world.at(BATCHED)[1]
    t = world.deployment.rounds.transactor
    forged = sign_commitment(t.account(forger), t.chain_id, world.deployment.rounds.address, world.round_id,
                             world.refs[forged_for])
    entries = [world.signed(p) for p in world.at(BATCHED) if p != stripped]
    entries.append(dataclasses.replace(world.signed(stripped), signature=b""))
    entries.append(dataclasses.replace(world.signed(forged_for), signature=forged))
    world.commit_all(batch=entries)

    prepared = world.settle()
    batch = CommitmentBatch.build(world.header(), entries)
    index = {e.participant: i for i, e in enumerate(batch.entries)}
    forged_problem = f"batch 0: invalid signature, entry {index[forged_for]} ({forged_for}): signer {forger}"
    stripped_problem = (
        f"batch 0: invalid signature, entry {index[stripped]} ({stripped}): no signer (malformed signature)"
    )
    assert sorted(prepared.committed.problems) == sorted([forged_problem, stripped_problem])
    counted = {c.participant for c in prepared.committed.commitments}
    assert forged_for not in counted and stripped not in counted
    assert {e.participant for e in prepared.results.entries} == counted == set(world.at(BATCHED + DIRECT + RELAYED)) - {
        stripped
    }

    found = failures(world.audit())
    assert sorted(found) == ["batches"], found
    assert forged_problem in found["batches"] and stripped_problem in found["batches"]


def test_an_aggregator_that_counts_a_forged_entry_fails_the_results_check(world: World) -> None:
    forged_for, forger = world.at(LATE)[0], world.at(DIRECT)[0]
    t = world.deployment.rounds.transactor
    forged = sign_commitment(t.account(forger), t.chain_id, world.deployment.rounds.address, world.round_id,
                             world.refs[forged_for])
    world.commit_all(batch=[*map(world.signed, world.at(BATCHED)),
                            dataclasses.replace(world.signed(forged_for), signature=forged)])

    def count_it(prepared: PreparedResults) -> PreparedResults:
        # Listed as an accepted participant that earns nothing: the total and every other entry stay honest.
        extra = ResultEntry(forged_for, int(Status.ACCEPTED), 0, 0, 400_000)
        results = prepared.results
        return dataclasses.replace(prepared, results=ResultList.build(
            results.header, results.rule_hash, results.new_model_hash, [*results.entries, extra]))

    world.settle(count_it)
    found = failures(world.audit())
    assert f"({forged_for}): signer {forger}" in found["batches"]
    assert f"not committers ['{forged_for}']" in found["results"]
    assert "the scored set differs from the set of commitments" in found["blobs"]


# ------------------------------------------------------------------------ totals the contract cannot check


def test_a_list_summing_to_more_than_the_committed_total_fails_the_results_check(world: World) -> None:
    """The contract bounds claims by the committed total, never by the list: with a total one wei short, every
    leaf still proves, and the last claim is refused."""
    world.commit_all()
    prepared = world.aggregator().prepare(world.round_id)
    honest = prepared.results
    finalize_raw(world, prepared, honest, total=honest.total_reward - 1)

    paid = [e for e in honest.entries if e.reward > 0]
    world.claim(*(e.participant for e in paid[:-1]))
    with pytest.raises(ContractRevert) as info:
        world.claim(paid[-1].participant)
    assert info.value.error == "RoundsClaimsExceedTotal"

    found = failures(world.audit())
    assert found == {
        "results": f"the result list's rewards sum to {honest.total_reward}, the committed total is "
                   f"{honest.total_reward - 1}",
    }


def test_a_list_over_the_budget_under_a_total_within_it_fails_results_and_rewards(world: World) -> None:
    world.commit_all()
    prepared = world.aggregator().prepare(world.round_id)
    honest, budget = prepared.results, world.consortium.rule.reward_budget
    doubled = with_entries(honest, lambda e: dataclasses.replace(e, reward=2 * e.reward))
    assert doubled.total_reward > budget
    finalize_raw(world, prepared, doubled, total=budget)  # what the contract checks is within the budget

    found = failures(world.audit())
    assert sorted(found) == ["results", "rewards"], found
    assert f"the result list's rewards sum to {doubled.total_reward}, over the budget {budget}" in found["results"]
    assert f"the committed total is {budget}" in found["results"]
    e = next(e for e in honest.entries if e.reward > 0)
    assert f"{e.participant}: listed reward {2 * e.reward}, rule gives {e.reward}" in found["rewards"]


# ------------------------------------------------------------------------------------ tampered stored bytes


def test_a_tampered_result_list_blob_fails_with_its_content_hash(world: World, tamper: Tamper) -> None:
    world.commit_all()
    world.settle()
    results = ChainHistory(world.deployment).round(world.round_id).results
    assert results is not None
    tamper(results.list_cid)
    found = failures(world.audit())
    assert sorted(found) == ["results"], found
    assert found["results"].startswith(f"result list unusable: blob {results.list_cid} hashes to 0x")
    assert found["results"].endswith(f"committed hash is 0x{results.list_hash.hex()}")


def test_a_tampered_update_blob_fails_the_blobs_check_naming_its_participant(world: World, tamper: Tamper) -> None:
    world.commit_all()
    world.settle()
    victim = world.at(BATCHED)[1]  # a batched (relayed) commitment: its blob is named only in the signed list
    tamper(world.refs[victim].uri)
    found = failures(world.audit())
    assert sorted(found) == ["blobs"], found
    assert found["blobs"].startswith(
        f"{victim}: hash mismatch (committed status ACCEPTED): blob {world.refs[victim].uri} hashes to 0x"
    )


def test_a_tampered_batch_blob_fails_the_batches_check_and_its_entries_do_not_count(
    world: World, tamper: Tamper
) -> None:
    world.commit_all()
    world.settle()
    (batch,) = ChainHistory(world.deployment).round(world.round_id).batches
    tamper(batch.list_cid)
    found = failures(world.audit())
    assert found["batches"].startswith(f"batch 0: signed list unusable: blob {batch.list_cid} hashes to 0x")
    assert "not committers" in found["results"] and all(p in found["results"] for p in world.at(BATCHED))


def test_a_tampered_earlier_result_list_fails_the_later_rounds_rewards_check(world: World, tamper: Tamper) -> None:
    """Round 2's reputation starts from the state round 1's list proves, and rule version 3 weighs round 2's
    updates by it: with that list tampered, round 2's scores cannot be re-derived, and the audit says so (naming
    the blob) instead of raising."""
    world.commit_all()
    world.settle()
    c, rid = world.consortium, world.round_id
    round2, _ = c.operator.open_round(c.rule)
    c.top_up()  # round 1's slash took the attacker's stake below the minimum: it stakes again to commit
    # Round 2 resends round 1's updates by direct commitment: the audit needs committed blobs, not progress.
    for p in world.at(BATCHED + DIRECT):
        world.client(p).commit(round2, world.refs[p])
    c.operator.close_round(round2)
    world.aggregator().finalize(round2)
    assert world.audit().verified

    results = ChainHistory(world.deployment).round(rid).results
    assert results is not None
    tamper(results.list_cid)
    report = world.audit()
    assert [r.round_id for r in report.rounds if not r.ok] == [rid, round2]
    (r1, r2) = report.rounds
    assert [c.name for c in r1.failures()] == ["results"]
    assert [c.name for c in r2.failures()] == ["scores"]
    assert "reputation earlier rounds proved is unusable" in r2.failures()[0].detail
    assert f"blob {results.list_cid} hashes to 0x" in r2.failures()[0].detail
