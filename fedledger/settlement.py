"""Merkle-committed rounds (docs/merkle-rounds.md): who committed, what they earned, and the state claims prove.

Shared by the aggregator (which builds and commits the lists) and the auditor (which rebuilds them), so both read a
round the same way:

* ``committed_set``: the round's commitments = every direct commitment (``UpdateCommitted``) plus, for participants
  without one, the first entry for them in the relayer's batches (batch order, then list order) whose signature
  recovers to them and who was registered and active when the batch was posted. Every problem with a batch (list
  blob missing or tampered, root or size not as posted, a forged or malformed signature, an unregistered signer)
  is reported; such entries never count as commitments.
* ``ReputationLedger``: reputation before round r = the reputation after the newest earlier finalized round the
  participant took part in (its ``ContributionScored`` event, or its entry in that round's result list), else the
  registry's initial value. This is the state claims prove; a participant need not have claimed for it to hold.
* ``derive_results``: the result list of a round from the verdicts with the contract's integer formulas
  (trainer/incentives.py), exactly as ``finalizeRound`` would have computed them on-chain.
* ``evaluate_committed``: the rule over the committed blobs, streamed from files (trainer/streaming.py) so memory
  does not grow with participants x parameters.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from chain.lists import CommitmentBatch, ListFormatError, ListHeader, ResultEntry, ResultList
from fedledger.history import ChainHistory, CommittedUpdate, RoundRecord
from storage import BlobIntegrityError, BlobNotFound, BlobStore, StorageError
from trainer.aggregation import HistoryRows, RoundOutcome, flatten
from trainer.errors import UpdateRejected
from trainer.incentives import INITIAL_REPUTATION, next_reputation, reward_split, stake_weights, weight
from trainer.model import Params
from trainer.rules import RuleConfig, Status
from trainer.serialization import deserialize
from trainer.streaming import BlobSubmission, evaluate_round_streamed

log = logging.getLogger(__name__)


@dataclass
class CommittedSet:
    commitments: list[CommittedUpdate]  # ascending address
    problems: list[str] = field(default_factory=list)
    batched: int = 0  # commitments that came from batches
    superseded: int = 0  # batch entries of participants who committed directly or in an earlier batch
    signatures_checked: int = 0


def header_of(history: ChainHistory, round_id: int) -> ListHeader:
    d = history.d
    return ListHeader(d.manifest.chain_id, d.rounds.address, round_id)


def load_batch(store: BlobStore, cid: str, list_hash: bytes) -> CommitmentBatch:
    return CommitmentBatch.from_bytes(store.get(cid, list_hash))


def committed_set(history: ChainHistory, store: BlobStore, record: RoundRecord) -> CommittedSet:
    direct = {c.participant: c for c in record.commitments}
    chosen: dict[str, CommittedUpdate] = {}
    out = CommittedSet([])
    header = header_of(history, record.round_id)
    for b in record.batches:
        where = f"batch {b.batch_index}"
        try:
            batch = load_batch(store, b.list_cid, b.list_hash)
        except (StorageError, ListFormatError) as exc:
            out.problems.append(f"{where}: signed list unusable: {exc}")
            continue
        if (why := batch.header.mismatch(header)) is not None:
            out.problems.append(f"{where}: {why}")
            continue
        if batch.root != b.root:
            out.problems.append(f"{where}: the signed list's root 0x{batch.root.hex()} is not the posted 0x{b.root.hex()}")
            continue
        if len(batch.entries) != b.entries:
            out.problems.append(f"{where}: the signed list has {len(batch.entries)} entries, {b.entries} were posted")
        bad = {p.index: p for p in batch.signature_problems()}
        out.signatures_checked += len(batch.entries)
        for p in bad.values():
            out.problems.append(f"{where}: invalid signature, {p}")
        active = history.active_at(b.block_number)
        for i, e in enumerate(batch.entries):
            if i in bad:
                continue
            if e.participant not in active:
                out.problems.append(f"{where}: entry {i} ({e.participant}) was not an active participant")
                continue
            if e.participant in direct or e.participant in chosen:
                out.superseded += 1
                continue
            chosen[e.participant] = CommittedUpdate(e.participant, e.content_hash, e.cid, b.relayer, b.block_number)
    out.batched = len(chosen)
    out.commitments = sorted([*direct.values(), *chosen.values()], key=lambda c: c.participant.lower())
    return out


def load_results(store: BlobStore, record: RoundRecord) -> ResultList:
    if record.results is None:
        raise ValueError(f"round {record.round_id} was not finalized with a results root")
    return ResultList.from_bytes(store.get(record.results.list_cid, record.results.list_hash))


class ReputationLedger:
    """Reputation after each finalized round, read once per round (events or the round's result list)."""

    def __init__(self, history: ChainHistory, store: BlobStore) -> None:
        self.history = history
        self.store = store
        self._after: dict[int, dict[str, int]] = {}

    def after(self, round_id: int) -> dict[str, int]:
        if round_id not in self._after:
            rec = self.history.round(round_id)
            if rec.state != "finalized":
                raise ValueError(f"round {round_id} is {rec.state}: it has no reputation yet")
            if rec.results is not None:
                values = {e.participant: e.reputation for e in load_results(self.store, rec).entries}
            else:
                values = {s.participant: s.reputation for s in rec.scored}
            self._after[round_id] = values
        return self._after[round_id]

    def before(self, round_id: int) -> dict[str, int]:
        state: dict[str, int] = {}
        for rid in range(1, round_id):
            state.update(self.after(rid))
        return state


def derive_results(
    header: ListHeader,
    rule_hash: bytes,
    new_model_hash: bytes,
    outcome: RoundOutcome,
    prior: Mapping[str, int],
    *,
    budget: int,
    decay_ppm: int,
    stakes: Sequence[int] | None = None,
) -> ResultList:
    """The round's result list: the contract header's reward split and reputation EMA over the verdicts. With
    ``stakes`` (rule version 6, one per verdict, from ``stakes_at_open``) the budget is split by weight times stake."""
    verdicts = outcome.verdicts  # ascending address
    weights = [weight(int(v.status), v.score) for v in verdicts]
    rewards = reward_split(budget, weights if stakes is None else stake_weights(weights, stakes))
    entries = [
        ResultEntry(v.participant, int(v.status), v.score, r,
                    next_reputation(prior.get(v.participant, INITIAL_REPUTATION), w, decay_ppm))
        for v, w, r in zip(verdicts, weights, rewards, strict=True)
    ]
    return ResultList.build(header, rule_hash, new_model_hash, entries)


STAKE_EVENTS = ("StakeDeposited", "StakeSlashed", "StakeWithdrawn")  # every change of a registry stake


def stakes_at_block(history: ChainHistory, block: int, participants: Sequence[str]) -> list[int]:
    """Each identity's registry stake amount (wei) at the end of ``block``, replayed from the registry's stake events
    in chain order: ``StakeDeposited`` carries the new stake, ``StakeSlashed`` the stake before and the amount burned,
    ``StakeWithdrawn`` empties it (ParticipantRegistry changes a stake nowhere else). Logs only, read once: no past
    state, so a node that prunes state serves it too, and no call per identity. Equals ``stakeOf(p)`` at ``block``
    (tests/fedledger/test_stake_rewards.py checks every block of a run of deposits, slashes, top-ups and a
    withdrawal)."""
    events = sorted((e for name in STAKE_EVENTS for e in history.events(name) if e.block_number <= block),
                    key=lambda e: (e.block_number, e.log_index))
    stake = {p.lower(): 0 for p in participants}
    for e in events:
        account = e.args.account.lower()
        if account not in stake:
            continue
        if e.name == "StakeDeposited":
            stake[account] = e.args.stake
        elif e.name == "StakeSlashed":
            stake[account] = e.args.stake_before - e.args.amount
        else:
            stake[account] = 0
    return [stake[p.lower()] for p in participants]


def stakes_at_open(history: ChainHistory, record: RoundRecord, participants: Sequence[str]) -> list[int]:
    """Rule versions 6 and 7's stakes: each identity's registry stake amount (wei) at the block that opened the
    round, so deposits made once the verdicts can be guessed count from the next round on (``stakes_at_block``)."""
    return stakes_at_block(history, record.opened_block, participants)


class HistoryUnavailable(StorageError):
    """Rule version 5 needs an earlier round's accepted update (a third party of a small round's pair test) and
    cannot have it: its blob or the round's result list is unavailable or tampered."""


def accepted_commitments(history: ChainHistory, store: BlobStore, record: RoundRecord) -> list[CommittedUpdate]:
    """The commitments a finalized round accepted (status ACCEPTED on-chain or in its result list), ascending
    address; empty for a round that is not finalized."""
    if record.state != "finalized":
        return []
    if record.results is not None:
        accepted = {e.participant for e in load_results(store, record).entries if e.status == Status.ACCEPTED}
        commitments = committed_set(history, store, record).commitments
    else:
        accepted = {s.participant for s in record.scored if s.status == Status.ACCEPTED}
        commitments = sorted(record.commitments, key=lambda c: c.participant.lower())
    return [c for c in commitments if c.participant in accepted]


def history_rows(
    store: BlobStore, history: ChainHistory, round_id: int, shapes: Mapping[str, tuple[int, ...]], rule: RuleConfig
) -> HistoryRows | None:
    """Rule version 5's third parties for round ``round_id`` (trainer/rules.py): the accepted updates of the
    previous ``rule.history_rounds`` rounds, newest round first, fetched only when the rule asks (small rounds),
    each blob reduced to the subset columns as it arrives. A round whose updates have other shapes (another model)
    gives none. Raises ``HistoryUnavailable`` when a blob or list cannot be had."""
    if not rule.history_rounds or round_id <= 1:
        return None

    def rows(columns: np.ndarray, limit: int) -> np.ndarray:
        out: list[np.ndarray] = []
        for rid in range(round_id - 1, max(round_id - rule.history_rounds, 1) - 1, -1):
            try:
                accepted = accepted_commitments(history, store, history.round(rid))
                taken: list[np.ndarray] = []
                for c in accepted[: limit - len(out)]:
                    taken.append(flatten(deserialize(store.get(c.cid, c.content_hash), shapes)).numpy()[columns])
            except UpdateRejected:
                continue  # another model's updates: no third parties from this round
            except (StorageError, ListFormatError) as exc:
                raise HistoryUnavailable(f"round {rid}'s accepted updates are third parties of round {round_id}'s "
                                         f"redundancy test (rule version {rule.version}) and cannot be read: {exc}"
                                         ) from exc
            out.extend(taken)
            if len(out) >= limit:
                break
        return np.stack(out) if out else np.empty((0, len(columns)), dtype=np.float32)

    return rows


def fetch_to_files(store: BlobStore, commitments: Sequence[CommittedUpdate], directory: Path) -> list[BlobSubmission]:
    """Every committed blob into ``directory``, one at a time; unavailable or tampered ones become failures."""
    out = []
    for i, c in enumerate(commitments):
        try:
            data = store.get(c.cid, c.content_hash)
        except BlobNotFound as exc:
            out.append(BlobSubmission(c.participant, None, Status.UNAVAILABLE, str(exc)))
            continue
        except BlobIntegrityError as exc:
            out.append(BlobSubmission(c.participant, None, Status.HASH_MISMATCH, str(exc)))
            continue
        path = directory / f"{i:06d}.safetensors"
        path.write_bytes(data)
        out.append(BlobSubmission(c.participant, path, sha256=c.content_hash))
    return out


def evaluate_committed(
    store: BlobStore,
    base: Params,
    commitments: Sequence[CommittedUpdate],
    rule: RuleConfig,
    previous: Params | None,
    reputation: Mapping[str, int] | None = None,
    history: HistoryRows | None = None,
    stakes: Mapping[str, int] | None = None,
) -> tuple[RoundOutcome, list[BlobSubmission]]:
    """Fetch, validate and run the rule streamed from files: the outcome equals ``evaluate_round``'s bit for bit.
    ``reputation``: before the round (``ReputationLedger.before``; rule version 3 weights by it); ``history``:
    ``history_rows`` (rule version 5); ``stakes``: ``stakes_at_open`` by participant (rule version 7 votes by it)."""
    with tempfile.TemporaryDirectory(prefix="fedledger-round-") as tmp:
        submissions = fetch_to_files(store, commitments, Path(tmp))
        outcome = evaluate_round_streamed(base, submissions, rule, previous, reputation=reputation, history=history,
                                          stakes=stakes)
    return outcome, submissions
