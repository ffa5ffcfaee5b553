"""The platform as a service: what the REST API (and the CLI) call. Wires a stack, the event index, the relayer
(operator wallet) and the aggregator together. Functions are keyword-only and raise domain errors; api/ maps
them to HTTP.

Two switches (docs/merkle-rounds.md; ``FEDLEDGER_SETTLEMENT`` / ``FEDLEDGER_RELAY_MODE`` in api/settings.py):

* ``settlement``: ``legacy`` finalizes with per-participant writes (``Aggregator``); ``merkle`` with one results
  root (``MerkleAggregator``), rewards then claimed by proof (``claims`` / ``claim``).
* ``relay_mode``: ``direct`` relays each signed commitment at once (``commitUpdateSigned``, one tx each);
  ``batched`` (merkle only) queues it durably (fedledger/relay.py) and posts one root per batch (``commitBatch``).

Flush policy of the batched relay: a round's pending commitments are posted (in batches of ``batch_size``) when
``batch_size`` of them are pending; when the round's deadline is within ``flush_margin_s`` (checked on every
submission and by ``flush_due``, which the API's background flusher and the aggregator service run); before the
API closes the round; and on the operator's ``flush``. A batch is refused on chain once the round is closed or past
its deadline, so what is still pending then can never be posted: it is marked ``expired`` (kept, with the reason),
and the participant's receipt says so. Participants who must be sure check their receipt and, if left out, commit
by their own transaction before the round closes.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eth_account import Account
from eth_account.messages import encode_typed_data
from eth_utils import to_checksum_address

from chain.eip712 import signature_problem
from chain.errors import ChainError, ChainUnavailable, ContractRevert, TransactionTimeout
from chain.gateways.federated_rounds import Claim
from chain.indexer import EventIndexer
from chain.lists import CommitmentBatch, ListFormatError, ResultList, SignedCommitment
from fedledger.audit import AuditReport, Auditor
from fedledger.history import ROUND_STATES, ChainHistory, UnknownRound
from fedledger.privacy import commit_private, ledger_gateway, ledger_of
from fedledger.relay import (
    DROPPED,
    EXPIRED,
    INCLUDED,
    PENDING,
    SUPERSEDED,
    DuplicateCommitment,
    Inclusion,
    QueuedCommitment,
    RelayQueue,
)
from fedledger.roles import (
    Aggregator,
    MerkleAggregator,
    Operator,
    claims_for,
    commitment_typed_data,
    fetch_params,
    registration_typed_data,
)
from fedledger.settlement import load_results
from fedledger.stack import Stack
from storage import BlobRef, StorageError, StorageUnavailable
from trainer.errors import RuleError
from trainer.rules import RuleConfig, Status
from trainer.privacy import Mechanism, epsilon_to_micro
from trainer.serialization import deserialize, read_metadata

log = logging.getLogger(__name__)

REGISTRATION_TTL_S = 3600
SPONSOR_GAS_RESERVE_WEI = 10**16  # what the operator keeps for the gas of the registration it sponsors
SETTLEMENTS = ("legacy", "merkle")
RELAY_MODES = ("direct", "batched")
MAX_BATCH_SIZE = 10_000  # FederatedRounds.MAX_BATCH_ENTRIES
REGISTRY_STATES = ["none", "active", "suspended"]
EVALUATIONS_FILE = "evaluations.jsonl"

__all__ = ["DuplicateCommitment", "Platform", "wait_loop"]


class InvalidSignature(ValueError):
    """A signature does not recover to the address it claims."""


class NotFound(LookupError):
    pass


class RoundNotOpen(Exception):
    def __init__(self, round_id: int, state: int) -> None:
        super().__init__(f"round {round_id} is {ROUND_STATES.get(state, state)}: it takes no submissions")
        self.round_id = round_id
        self.state = state


class ParticipantNotActive(Exception):
    def __init__(self, participant: str, status: int) -> None:
        state = REGISTRY_STATES[status] if 0 <= status < len(REGISTRY_STATES) else str(status)
        super().__init__(f"{participant} is not an active participant (registry status: {state}); register first")
        self.participant = participant


class StakeInsufficient(Exception):
    """A participant that cannot commit for its stake: below the registry's minimum, or a withdrawal pending."""

    def __init__(self, participant: str, stake: int, min_stake: int, withdrawal_requested_at: int) -> None:
        why = (f"a withdrawal is pending since {withdrawal_requested_at} (unix time)" if withdrawal_requested_at
               else f"its stake {stake} wei is below the minimum {min_stake} wei: top it up (depositStake)")
        super().__init__(f"{participant} cannot commit: {why}")
        self.participant = participant


class SponsorFundsExhausted(Exception):
    """The operator, which pays the stake of every identity registered through the API, cannot pay another."""

    def __init__(self, operator: str, balance: int, min_stake: int) -> None:
        super().__init__(f"the operator {operator} holds {balance} wei and cannot sponsor another stake of "
                         f"{min_stake} wei; register with your own transaction (ParticipantRegistry.register, payable)")


class RelayFailed(Exception):
    """Posting a batch failed. ``kept`` says whether the entries are still pending (retried by the next flush) or
    can never be posted (round closed or past its deadline: marked expired)."""

    def __init__(self, round_id: int, entries: int, cause: Exception, *, kept: bool) -> None:
        what = "they stay pending and the next flush retries them" if kept else \
            "they can no longer be posted and are marked expired"
        super().__init__(f"posting {entries} commitments of round {round_id} failed ({cause}); {what}")
        self.round_id = round_id
        self.cause = type(cause).__name__ if not isinstance(cause, ContractRevert) else cause.error
        self.kept = kept


class RelayNotBatched(Exception):
    """The relay queue is not in use (``relay_mode`` is direct and no queue was ever written)."""


class NothingToClaim(LookupError):
    def __init__(self, participant: str) -> None:
        super().__init__(f"{participant} has no unclaimed results in any Merkle-finalized round")


class AlreadyClaimed(Exception):
    def __init__(self, round_id: int, participant: str) -> None:
        super().__init__(f"{participant} already claimed its result of round {round_id}")


class ResultsNotCommitted(Exception):
    def __init__(self, round_id: int, state: str) -> None:
        why = "it is not finalized yet" if state != "finalized" else "it was settled per participant (legacy)"
        super().__init__(f"round {round_id} has no results root to claim from: {why}")


class DeadlinePassed(Exception):
    def __init__(self, round_id: int, deadline: int) -> None:
        super().__init__(f"round {round_id} stopped taking submissions at {deadline} (unix time)")
        self.round_id = round_id
        self.deadline = deadline


def recover_typed(typed: dict[str, Any], signature: bytes) -> str:
    try:
        return str(Account.recover_message(encode_typed_data(full_message=typed), signature=signature))
    except Exception as exc:  # noqa: BLE001 - malformed signatures raise several kinds of errors
        raise InvalidSignature(f"unreadable signature: {exc}") from exc


def check_canonical(signature: bytes) -> None:
    """A batch should hold only signatures the contract itself would accept on ``commitUpdateSigned``."""
    if (problem := signature_problem(signature)) is not None:
        raise InvalidSignature(problem)


def _hex(b: bytes | None) -> str | None:
    return None if b is None else "0x" + b.hex()


def _unhex(s: str) -> bytes:
    return bytes.fromhex(s[2:] if s.startswith("0x") else s)


@dataclass(frozen=True)
class AuditRun:
    at: float  # unix time the audit finished
    round_id: int | None  # None: every finalized round
    report: AuditReport


def record_evaluation(dir: Path, *, round_id: int, model_hash: bytes, dataset: str, accuracy: float,
                      samples: int) -> None:
    """Append one test-set evaluation of a round's global model to ``dir/evaluations.jsonl`` (see
    ``Platform.evaluations``)."""
    line = {"round": round_id, "model_hash": "0x" + model_hash.hex(), "dataset": dataset, "split": "test",
            "samples": samples, "accuracy": accuracy}
    with open(Path(dir) / EVALUATIONS_FILE, "a") as fh:
        fh.write(json.dumps(line, sort_keys=True) + "\n")


@dataclass
class Platform:
    stack: Stack
    indexer: EventIndexer
    max_upload_bytes: int = 16 * 1024 * 1024
    settlement: str = "legacy"
    relay_mode: str = "direct"
    batch_size: int = 500
    flush_margin_s: int = 60
    queue: RelayQueue | None = None
    _history: ChainHistory | None = field(default=None, init=False, repr=False)
    _history_lock: threading.RLock = field(default_factory=threading.RLock, init=False, repr=False)
    _lists: OrderedDict[tuple[str, str], Any] = field(default_factory=OrderedDict, init=False, repr=False)
    _lists_lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)
    _reconciled: dict[int, int] = field(default_factory=dict, init=False, repr=False)
    _slashes_done: set[int] = field(default_factory=set, init=False, repr=False)  # Merkle rounds whose proofs are in
    last_audit: AuditRun | None = field(default=None, init=False, repr=False)

    LIST_CACHE = 256  # parsed batch / result lists kept (immutable: keyed by their sha256)

    def __post_init__(self) -> None:
        if self.settlement not in SETTLEMENTS:
            raise ValueError(f"settlement must be one of {', '.join(SETTLEMENTS)}, got {self.settlement!r}")
        if self.relay_mode not in RELAY_MODES:
            raise ValueError(f"relay mode must be one of {', '.join(RELAY_MODES)}, got {self.relay_mode!r}")
        if self.relay_mode == "batched" and self.settlement != "merkle":
            raise ValueError("the batched relay needs Merkle settlement (settlement='merkle'): legacy finalization "
                             "only counts direct commitments and would ignore every batch")
        if self.relay_mode == "batched" and self.queue is None:
            raise ValueError("the batched relay needs a durable queue (queue_path)")
        if not 1 <= self.batch_size <= MAX_BATCH_SIZE:
            raise ValueError(f"batch size must be in [1, {MAX_BATCH_SIZE}], got {self.batch_size}")
        if self.flush_margin_s < 0:
            raise ValueError(f"flush margin must be >= 0 seconds, got {self.flush_margin_s}")

    @classmethod
    def create(
        cls,
        stack: Stack,
        index_path: Path,
        *,
        confirmations: int = 0,
        max_upload_bytes: int = 16 << 20,
        settlement: str = "legacy",
        relay_mode: str = "direct",
        batch_size: int = 500,
        flush_margin_s: int = 60,
        queue_path: Path | None = None,
    ) -> Platform:
        """``queue_path`` (default: ``relay-queue.sqlite`` beside the index) is opened in batched mode, or when it
        already exists (receipts of an earlier batched run stay readable)."""
        queue_path = queue_path if queue_path is not None else Path(index_path).with_name("relay-queue.sqlite")
        queue = None
        if relay_mode == "batched" or queue_path.exists():
            queue = RelayQueue(queue_path, chain_id=stack.deployment.manifest.chain_id,
                               rounds_contract=stack.deployment.rounds.address)
        return cls(stack, EventIndexer(stack.deployment, index_path, confirmations=confirmations), max_upload_bytes,
                   settlement=settlement, relay_mode=relay_mode, batch_size=batch_size, flush_margin_s=flush_margin_s,
                   queue=queue)

    # ----------------------------------------------------------------- helpers

    @property
    def d(self):  # type: ignore[no-untyped-def]
        return self.stack.deployment

    @property
    def chain_id(self) -> int:
        return self.stack.transactor.chain_id

    def now(self) -> int:
        return int(self.stack.transactor.w3.eth.get_block("latest")["timestamp"])

    def next_block_time(self) -> int:
        """The earliest timestamp the next block can have: a node stamps new blocks with at least its clock, which
        an idle devnet's latest block may trail by minutes."""
        return max(self.now() + 1, int(time.time()))

    def synced(self) -> EventIndexer:
        self.indexer.sync()
        return self.indexer

    def history(self) -> ChainHistory:
        """One in-memory event history for claims and the relay (extended incrementally; guard with the lock)."""
        with self._history_lock:
            if self._history is None:
                self._history = ChainHistory(self.d)
            return self._history

    def _cached(self, kind: str, cid: str, list_hash: str) -> Any:
        key = (kind, list_hash.lower())
        with self._lists_lock:
            if key in self._lists:
                self._lists.move_to_end(key)
                return self._lists[key]
        data = self.stack.store.get(cid, _unhex(list_hash))
        parsed: Any = CommitmentBatch.from_bytes(data) if kind == "batch" else ResultList.from_bytes(data)
        with self._lists_lock:
            self._lists[key] = parsed
            while len(self._lists) > self.LIST_CACHE:
                self._lists.popitem(last=False)
        return parsed

    def batch_list(self, cid: str, list_hash: str) -> CommitmentBatch:
        return self._cached("batch", cid, list_hash)  # type: ignore[no-any-return]

    def result_list(self, cid: str, list_hash: str) -> ResultList:
        return self._cached("results", cid, list_hash)  # type: ignore[no-any-return]

    def _try_batch(self, args: dict[str, Any]) -> CommitmentBatch | None:
        try:
            return self.batch_list(args["list_cid"], args["list_hash"])
        except (StorageError, ListFormatError) as exc:
            log.warning("batch %s of round %s: signed list unusable: %s", args["batch_index"], args["round_id"], exc)
            return None

    def _try_results(self, args: dict[str, Any]) -> ResultList | None:
        try:
            return self.result_list(args["list_cid"], args["list_hash"])
        except (StorageError, ListFormatError) as exc:
            log.warning("results of round %s: list unusable: %s", args["round_id"], exc)
            return None

    def health(self) -> dict[str, Any]:
        block = int(self.stack.transactor.w3.eth.block_number)
        return {
            "status": "ok",
            "stack": self.stack.name,
            "chain_id": self.chain_id,
            "block": block,
            "indexed_block": self.indexer.cursor,
            "blob_store": self.stack.store.location,
            "contracts": self.d.manifest.contracts,
            "settlement": self.settlement,
            # "admission": only wallets the operator admitted may register (a consortium's registry)
            "registration": "admission" if self.d.registry.admission_required() else "open",
            "relay": {"mode": self.relay_mode, "batch_size": self.batch_size, "flush_margin_s": self.flush_margin_s,
                      "pending": sum(len(self.queue.pending(r)) for r in self.queue.pending_rounds())
                      if self.queue else 0},
        }

    # ------------------------------------------------------------ participants

    def registration_challenge(self, *, address: str) -> dict[str, Any]:
        deadline = self.now() + REGISTRATION_TTL_S
        typed = registration_typed_data(self.chain_id, self.d.registry.address, to_checksum_address(address), deadline)
        return {"typed_data": typed, "deadline": deadline}

    def register(self, *, address: str, deadline: int, signature: bytes) -> dict[str, Any]:
        address = to_checksum_address(address)
        typed = registration_typed_data(self.chain_id, self.d.registry.address, address, deadline)
        recovered = recover_typed(typed, signature)
        if recovered != address:
            raise InvalidSignature(f"signature recovers to {recovered}, not {address}")
        # The operator sponsors the stake of API registrations (the participant needs no ether); the stake is still
        # locked per identity and slashed like any other, so the sponsor, not the platform, pays for sybils it lets in.
        registry, operator = self.d.registry, self.stack.operator
        stake = registry.min_stake()
        funds = int(self.stack.transactor.w3.eth.get_balance(operator))
        if funds < stake + SPONSOR_GAS_RESERVE_WEI:
            raise SponsorFundsExhausted(operator, funds, stake)
        result = registry.register_for(address, deadline, signature, sender=operator, value=stake)
        return {"address": address, "tx_hash": result.tx_hash, "block": result.block_number, "stake": str(stake),
                "stake_paid_by": operator}

    def participant(self, *, address: str) -> dict[str, Any]:
        """Status, reputation, balance and every round joined: directly, through a batch, or still queued with the
        relay; with the verdict (per-participant events or the round's result list) and, for Merkle rounds,
        whether it was claimed."""
        address = to_checksum_address(address)
        info = self.d.registry.participant_of(address)
        index = self.synced()
        rows: dict[int, dict[str, Any]] = {}
        for c in index.events("UpdateCommitted", account=address):
            a = c["args"]
            rows[a["round_id"]] = {"round": a["round_id"], "content_hash": a["content_hash"], "cid": a["cid"],
                                   "relayed": a["relayer"] != address,
                                   "path": "relayed" if a["relayer"] != address else "own tx", "batch": None}
        for e in index.events("CommitmentBatchPosted"):
            a = e["args"]
            if a["round_id"] in rows:
                continue
            batch = self._try_batch(a)
            entry = next((x for x in batch.entries if x.participant == address), None) if batch else None
            if entry is not None:
                rows[a["round_id"]] = {"round": a["round_id"], "content_hash": _hex(entry.content_hash),
                                       "cid": entry.cid, "relayed": True, "path": "batch", "batch": a["batch_index"]}
        for q in self.queue.of_participant(address) if self.queue else []:
            if q.round_id not in rows and q.status != INCLUDED:
                rows[q.round_id] = {"round": q.round_id, "content_hash": _hex(q.content_hash), "cid": q.cid,
                                    "relayed": True, "path": f"relay {q.status}", "batch": None}
        verdicts = {e["args"]["round_id"]: e["args"] for e in index.events("ContributionScored", account=address)}
        claimed = {e["args"]["round_id"] for e in index.events("RewardClaimed", account=address)}
        merkle: dict[int, Any] = {}
        for e in index.events("RoundResultsCommitted"):
            results = self._try_results(e["args"])
            hit = results.entry(address) if results else None
            if hit is not None:
                merkle[e["args"]["round_id"]] = hit
        slashes = {e["args"]["round_id"]: e["args"] for e in index.events("StakeSlashed", account=address)}
        unclaimed = 0
        history = []
        for rid in sorted(rows):
            row = rows[rid]
            v = verdicts.get(rid)
            m = merkle.get(rid)
            if v is not None:
                verdict = {"status": Status(v["status"]).name, "score": v["score"] / 1e6, "reward": str(v["reward"]),
                           "reputation_after": v["reputation"] / 1e6, "claimed": None}
            elif m is not None:
                verdict = {"status": _status_name(m.status), "score": m.score / 1e6, "reward": str(m.reward),
                           "reputation_after": m.reputation / 1e6, "claimed": rid in claimed}
                if rid not in claimed:
                    unclaimed += m.reward
            else:
                verdict = {"status": None, "score": None, "reward": None, "reputation_after": None, "claimed": None}
            slash = slashes.get(rid)
            history.append({**row, **verdict, "slashed": str(slash["amount"]) if slash else None})
        return {
            "address": address,
            "status": REGISTRY_STATES[info.status],
            "reputation": info.reputation / 1e6,
            "registered_at": info.registered_at,
            "admitted": self.d.registry.is_admitted(address),  # may register (always, on an open registry)
            "balance": str(self.d.token.balance_of(address)),
            "unclaimed": str(unclaimed),
            "stake": self.stake_view(address),
            "rounds": history,
        }

    def stake_view(self, address: str) -> dict[str, Any]:
        """An identity's stake (wei, as strings), what slashing burned of it, and its withdrawal state."""
        registry = self.d.registry
        s = registry.stake_of(address)
        unlock = registry.withdrawal_unlock_time(address)
        if not s.withdrawal_requested_at:
            withdrawal = "none"
        elif unlock == 0:
            withdrawal = f"waiting for round {s.last_commit_round} to be finalized"
        else:
            withdrawal = "withdrawable" if self.now() >= unlock else "pending"
        return {"amount": str(s.amount), "slashed": str(s.slashed), "min_stake": str(registry.min_stake()),
                "can_commit": registry.can_commit(address), "withdrawal": withdrawal,
                "withdrawal_requested_at": s.withdrawal_requested_at or None, "withdrawal_unlocks_at": unlock or None,
                "last_commit_round": s.last_commit_round}

    def privacy(self, *, address: str) -> dict[str, Any]:
        """The participant's privacy ledger: per-round (epsilon, delta) as committed on the PrivacyLedger, running
        totals (basic composition), the budget in force and what remains. 404 on a deployment without the ledger."""
        address = to_checksum_address(address)
        with self._history_lock:
            return ledger_of(self.history(), address).to_json()

    # ------------------------------------------------------------------ blobs

    def current_shapes(self) -> dict[str, tuple[int, ...]]:
        model = self.d.rounds.global_model()
        if model.model_hash == bytes(32):
            raise NotFound("no global model has been published yet")
        return {k: tuple(v.shape) for k, v in fetch_params(self.stack.store, model.cid, model.model_hash).items()}

    def upload_update(self, *, data: bytes) -> BlobRef:
        """Validate an update against the current global model's shapes (UpdateRejected if not), then store it."""
        if len(data) > self.max_upload_bytes:
            raise ValueError(f"upload of {len(data)} bytes exceeds the limit of {self.max_upload_bytes} bytes")
        deserialize(data, self.current_shapes())
        Mechanism.from_metadata(read_metadata(data))  # a declared DP mechanism must be well formed (PrivacyError)
        return self.stack.store.put(data)

    def blob(self, *, uri: str, content_hash: bytes) -> bytes:
        return self.stack.store.get(uri, content_hash)

    # ------------------------------------------------------------------ rounds

    @property
    def batched(self) -> bool:
        return self.relay_mode == "batched"

    def submit(self, *, round_id: int, participant: str, content_hash: bytes, cid: str, signature: bytes) -> dict[str, Any]:
        """Relay a participant's EIP-712 commitment after checking it here (the contract checks it again).

        Direct mode: one ``commitUpdateSigned`` transaction now. Batched mode: every check the contract would make
        (round open and before its deadline, signature, blob present, participant active, no commitment yet, on
        chain or queued), then the commitment is queued durably and the answer is its receipt (``pending``, or
        ``included`` when this submission filled a batch or the deadline is within the flush margin)."""
        participant = to_checksum_address(participant)
        rounds = self.d.rounds
        info = rounds.get_round(round_id)  # UnknownRound reverts as RoundsUnknownRound -> 404
        if self.batched and info.state != 1:
            raise RoundNotOpen(round_id, info.state)
        if info.state == 1 and self.now() + 1 > info.deadline:
            raise DeadlinePassed(round_id, info.deadline)
        typed = commitment_typed_data(self.chain_id, rounds.address, round_id, content_hash, cid)
        recovered = recover_typed(typed, signature)
        if recovered != participant:
            raise InvalidSignature(f"commitment signature recovers to {recovered}, not {participant}")
        try:
            data = self.stack.store.get(cid, content_hash)
        except Exception as exc:
            raise NotFound(f"upload the blob first (POST /blobs): {exc}") from exc
        mechanism = Mechanism.from_metadata(read_metadata(data))
        if mechanism is not None:
            # A DP update: its (epsilon, delta) is what the declared mechanism gives under Opacus's accountant
            # (computed here, as the auditor will), recorded on the PrivacyLedger with the commitment in one
            # transaction, never batched. Over the budget: PrivacyBudgetExceeded (409, with the numbers).
            result = commit_private(self.d, participant=participant, round_id=round_id,
                                    ref=BlobRef(content_hash, cid), mechanism=mechanism, signature=signature,
                                    sender=self.stack.operator)
            return {"round": round_id, "participant": participant, "tx_hash": result.tx_hash,
                    "block": result.block_number, "privacy": {
                        "epsilon": mechanism.epsilon_micro / 1e6, "epsilon_micro": mechanism.epsilon_micro,
                        "delta": mechanism.delta, "delta_atto": mechanism.delta_atto}}
        if not self.batched:
            result = rounds.commit_update_signed(participant, round_id, content_hash, cid, signature,
                                                 sender=self.stack.operator)
            return {"round": round_id, "participant": participant, "tx_hash": result.tx_hash,
                    "block": result.block_number}

        check_canonical(signature)
        status = self.d.registry.status_of(participant)
        if status != 1:
            raise ParticipantNotActive(participant, status)
        if not self.d.registry.can_commit(participant):  # what commitUpdate checks; batches are not checked on chain
            s = self.d.registry.stake_of(participant)
            raise StakeInsufficient(participant, s.amount, self.d.registry.min_stake(), s.withdrawal_requested_at)
        if rounds.commitment_of(round_id, participant) != bytes(32):
            raise DuplicateCommitment(round_id, participant, "committed on chain")
        queue = self._require_queue()
        queue.add(round_id, SignedCommitment(participant, content_hash, cid, signature), queued_at=int(time.time()))
        pending = len(queue.pending(round_id))
        near_deadline = self.next_block_time() + self.flush_margin_s >= info.deadline
        if pending >= self.batch_size or near_deadline:
            try:
                # A full batch is posted by whichever submission finds the flush free; the others do not queue up
                # behind its transaction (that flusher keeps posting while full batches are pending, and the
                # background flusher and the close route post the rest). Near the deadline everything goes now.
                self.flush(round_id=round_id, full_only=not near_deadline, wait=near_deadline)
            except (RelayFailed, RoundNotOpen, DeadlinePassed, ChainError, StorageError) as exc:
                log.warning("round %d: flush after a submission failed (entries kept): %s", round_id, exc)
        return self.receipt(round_id=round_id, address=participant)

    # ------------------------------------------------------------------- relay

    def _require_queue(self) -> RelayQueue:
        if self.queue is None:
            raise RelayNotBatched("the relay is in direct mode (FEDLEDGER_RELAY_MODE=direct): nothing is queued; "
                                  "every submission was sent on chain as it came")
        return self.queue

    def flush(self, *, round_id: int, full_only: bool = False, wait: bool = True) -> dict[str, Any]:
        """Post every pending commitment of ``round_id`` now, in batches of ``batch_size``. RelayFailed if a post
        fails (nothing is lost: see RelayFailed.kept). ``full_only``: post full batches only, leave the rest
        pending. ``wait=False``: if another flush is posting, return at once (``busy``) instead of waiting for it."""
        queue = self._require_queue()
        self.d.rounds.get_round(round_id)  # 404 for an unknown round
        posted: list[dict[str, Any]] = []
        with queue.flushing(wait=wait) as held:
            if held:
                self._reconcile(round_id)
                while rows := queue.pending(round_id, limit=self.batch_size):
                    if full_only and len(rows) < self.batch_size:
                        break
                    batch = self._post(round_id, rows)
                    if batch is not None:
                        posted.append(batch)
        counts = queue.counts(round_id)
        return {"round": round_id, "batches": posted, "flushed": sum(b["entries"] for b in posted),
                "pending": counts[PENDING], "counts": counts, "busy": not held}

    def _post(self, round_id: int, rows: list[QueuedCommitment]) -> dict[str, Any] | None:
        """One batch: settle rows that must not be posted, post the rest, record where each went."""
        queue = self._require_queue()
        rounds = self.d.rounds
        now = int(time.time())
        info = rounds.get_round(round_id)
        if info.state != 1:
            queue.mark(rows, EXPIRED, f"round {round_id} was {ROUND_STATES[info.state]} before the relay posted it",
                       now=now)
            raise RelayFailed(round_id, len(rows), RoundNotOpen(round_id, info.state), kept=False)
        if self.now() >= info.deadline:  # the next block is past the deadline: commitBatch would revert
            queue.mark(rows, EXPIRED, f"round {round_id}'s deadline {info.deadline} passed before the relay posted it",
                       now=now)
            raise RelayFailed(round_id, len(rows), DeadlinePassed(round_id, info.deadline), kept=False)
        with self._history_lock:
            history = self.history()
            direct = {e.args.participant for e in history.events("UpdateCommitted", round_id=round_id)}
            head = int(rounds.transactor.w3.eth.block_number)
            active = history.active_at(head)
        superseded = [r for r in rows if r.participant in direct]
        dropped = [r for r in rows if r.participant not in direct and r.participant not in active]
        if superseded:
            queue.mark(superseded, SUPERSEDED, "the participant committed directly; the direct commitment counts",
                       now=now)
        if dropped:
            queue.mark(dropped, DROPPED, "the participant was not active in the registry when the batch was posted",
                       now=now)
        post = [r for r in rows if r.participant not in direct and r.participant in active]
        if not post:
            return None
        try:
            batch, list_ref, tx = Operator(self.d, self.stack.store, self.stack.operator).post_batch(
                round_id, [r.signed() for r in post])
        except ContractRevert as exc:
            if exc.error in ("RoundsDeadlinePassed", "RoundsRoundNotOpen"):
                queue.mark(post, EXPIRED, f"the chain refused the batch: {exc}", now=now)
                raise RelayFailed(round_id, len(post), exc, kept=False) from exc
            queue.mark_failed(post, str(exc), now=now)
            raise RelayFailed(round_id, len(post), exc, kept=True) from exc
        except (ChainError, StorageError, ListFormatError) as exc:
            queue.mark_failed(post, str(exc), now=now)
            raise RelayFailed(round_id, len(post), exc, kept=True) from exc
        (event,) = rounds.commitment_batch_posted_in(tx)
        at = Inclusion(event.batch_index, event.root, event.list_hash, event.list_cid, event.entries, tx.tx_hash,
                       tx.block_number)
        proofs = {e.participant: batch.tree.proof(i) for i, e in enumerate(batch.entries)}
        queue.mark_included(post, at, proofs, now=now)
        self._reconciled[round_id] = rounds.batch_count(round_id)
        log.info("round %d: batch %d of %d commitments posted (tx %s)", round_id, at.batch_index, at.entries, tx.tx_hash)
        return {"batch_index": at.batch_index, "root": _hex(at.root), "list_hash": _hex(at.list_hash),
                "list_cid": at.list_cid, "entries": at.entries, "tx_hash": at.tx_hash, "block": at.block_number}

    def _reconcile(self, round_id: int) -> None:
        """Crash recovery: a batch posted on chain whose rows were not marked (the process died between the
        transaction and the queue update) marks its pending rows included instead of posting them twice."""
        queue = self._require_queue()
        rounds = self.d.rounds
        count = rounds.batch_count(round_id)
        if self._reconciled.get(round_id) == count:
            return
        pending = {r.participant: r for r in queue.pending(round_id)}
        known = queue.included_batches(round_id)
        if pending and count > len(known):
            events = rounds.commitment_batch_posted_events(from_block=self.d.manifest.deployment_block,
                                                           round_id=round_id)
            for ev in events:
                a = ev.args
                if a.batch_index in known or a.relayer != self.stack.operator:
                    continue
                try:
                    batch = self.batch_list(a.list_cid, _hex(a.list_hash) or "")
                except (StorageError, ListFormatError):
                    continue
                at = Inclusion(a.batch_index, a.root, a.list_hash, a.list_cid, a.entries, ev.tx_hash, ev.block_number)
                hits = []
                proofs: dict[str, list[bytes]] = {}
                for i, e in enumerate(batch.entries):
                    r = pending.get(e.participant)
                    if r is not None and (r.content_hash, r.cid) == (e.content_hash, e.cid):
                        hits.append(r)
                        proofs[r.participant] = batch.tree.proof(i)
                if hits:
                    queue.mark_included(hits, at, proofs, now=int(time.time()))
                    log.warning("round %d: %d queued commitments were already in batch %d (recovered)",
                                round_id, len(hits), a.batch_index)
        self._reconciled[round_id] = count

    def _expire_unpostable(self, round_id: int) -> int:
        """Mark what can never be posted (round closed or past its deadline) expired; how many were."""
        if self.queue is None:
            return 0
        with self.queue.flushing():
            rows = self.queue.pending(round_id)
            if not rows:
                return 0
            info = self.d.rounds.get_round(round_id)
            if info.state == 1 and self.now() < info.deadline:
                return 0
            why = f"round {round_id}'s deadline passed" if info.state == 1 else \
                f"round {round_id} was {ROUND_STATES[info.state]}"
            self.queue.mark(rows, EXPIRED, f"{why} before the relay posted it", now=int(time.time()))
            log.warning("round %d: %d queued commitments expired unposted", round_id, len(rows))
            return len(rows)

    def flush_due(self) -> list[int]:
        """The flush policy's clock: post the pending commitments of every round whose deadline is within the flush
        margin (or that has a full batch); mark expired what can no longer be posted. Errors are logged, not
        raised: the entries stay queued and the next pass retries. Returns the rounds flushed."""
        if self.queue is None:
            return []
        flushed = []
        for rid in self.queue.pending_rounds():
            try:
                info = self.d.rounds.get_round(rid)
                if info.state != 1 or self.now() >= info.deadline:
                    self._expire_unpostable(rid)
                elif (near := self.next_block_time() + self.flush_margin_s >= info.deadline) \
                        or len(self.queue.pending(rid)) >= self.batch_size:
                    self.flush(round_id=rid, full_only=not near)
                    flushed.append(rid)
            except (RelayFailed, ChainError, StorageError) as exc:
                log.warning("round %d: flush failed, entries kept: %s", rid, exc)
        return flushed

    def receipt(self, *, round_id: int, address: str) -> dict[str, Any]:
        """Where ``address``'s commitment for ``round_id`` stands: committed directly; included in a batch (index,
        root, list blob, Merkle proof, tx, and the contract's own ``isInBatch`` answer); pending with the relay;
        or expired/dropped with the reason. NotFound if there is none."""
        address = to_checksum_address(address)
        rounds = self.d.rounds
        info = rounds.get_round(round_id)  # 404 for an unknown round
        now = self.now()
        base = {"round": round_id, "participant": address, "round_state": ROUND_STATES[info.state],
                "deadline": info.deadline,
                "can_commit_directly": info.state == 1 and now + 1 <= info.deadline}
        row = self.queue.get(round_id, address) if self.queue else None
        queued = None if row is None else {"status": row.status, "queued_at": row.queued_at, "detail": row.detail}
        direct_hash = rounds.commitment_of(round_id, address)
        if direct_hash != bytes(32):
            ev = next(iter(self.synced().events("UpdateCommitted", round_id=round_id, account=address)), None)
            return {**base, "status": "direct", "path": "direct", "content_hash": _hex(direct_hash),
                    "cid": ev["args"]["cid"] if ev else None, "tx_hash": ev["tx_hash"] if ev else None,
                    "relayer": ev["args"]["relayer"] if ev else None, "block": ev["block_number"] if ev else None,
                    "on_chain_verified": True, "queued": queued,
                    "detail": "committed on chain by a direct commitment; it takes precedence over any batch entry"}
        if row is not None and row.status == INCLUDED and row.batch_index is not None:
            verified = rounds.is_in_batch(round_id, row.batch_index, address, row.content_hash, row.cid, row.proof)
            return {**base, "status": "included", "path": "batch", "content_hash": _hex(row.content_hash),
                    "cid": row.cid, "queued_at": row.queued_at, "tx_hash": row.tx_hash, "block": row.block_number,
                    "batch": {"index": row.batch_index, "root": _hex(row.batch_root), "list_hash": _hex(row.list_hash),
                              "list_cid": row.list_cid, "entries": row.batch_entries},
                    "proof": [_hex(p) for p in row.proof], "on_chain_verified": bool(verified)}
        if row is not None:
            return {**base, "status": row.status, "path": "batch", "content_hash": _hex(row.content_hash),
                    "cid": row.cid, "queued_at": row.queued_at, "attempts": row.attempts, "detail": row.detail,
                    "on_chain_verified": False}
        found = self._find_in_batches(round_id, address)
        if found is not None:
            return {**base, **found}
        raise NotFound(f"{address} has no commitment for round {round_id}: none on chain, none with this relay")

    def _find_in_batches(self, round_id: int, address: str) -> dict[str, Any] | None:
        """The first batch on chain (any relayer) with an entry for ``address``, from the public lists."""
        for e in self.synced().events("CommitmentBatchPosted", round_id=round_id):
            a = e["args"]
            batch = self._try_batch(a)
            if batch is None:
                continue
            for i, entry in enumerate(batch.entries):
                if entry.participant == address:
                    proof = batch.tree.proof(i)
                    verified = self.d.rounds.is_in_batch(round_id, a["batch_index"], address, entry.content_hash,
                                                         entry.cid, proof)
                    return {"status": "included", "path": "batch", "content_hash": _hex(entry.content_hash),
                            "cid": entry.cid, "tx_hash": e["tx_hash"], "block": e["block_number"],
                            "batch": {"index": a["batch_index"], "root": a["root"], "list_hash": a["list_hash"],
                                      "list_cid": a["list_cid"], "entries": a["entries"]},
                            "proof": [_hex(p) for p in proof], "on_chain_verified": bool(verified)}
        return None

    # ------------------------------------------------------------------ claims

    @staticmethod
    def _claim_json(c: Claim) -> dict[str, Any]:
        return {"round": c.round_id, "status": _status_name(c.status), "status_code": c.status,
                "score": c.score / 1e6, "score_units": c.score, "reward": str(c.reward),
                "reputation": c.reputation, "proof": [_hex(p) for p in c.proof]}

    def _claims(self, address: str, round_ids: Sequence[int] | None) -> list[Claim]:
        with self._history_lock:
            history = self.history()
            if round_ids is None:
                return claims_for(history, self.stack.store, address)
            for rid in round_ids:
                record = history.round(rid)  # UnknownRound -> 404
                if record.results is None:
                    raise ResultsNotCommitted(rid, record.state)
                if self.d.rounds.is_claimed(rid, address):
                    raise AlreadyClaimed(rid, address)
                if load_results(self.stack.store, record).entry(address) is None:
                    raise NotFound(f"{address} has no result in round {rid} (it did not commit to it)")
            return claims_for(history, self.stack.store, address, round_ids)

    def claims(self, *, address: str) -> dict[str, Any]:
        """``address``'s unclaimed Merkle results with their proofs: the arguments of ``FederatedRounds.claim``."""
        address = to_checksum_address(address)
        claims = self._claims(address, None)
        return {"participant": address, "rounds_contract": self.d.rounds.address,
                "claims": [self._claim_json(c) for c in claims], "total_reward": str(sum(c.reward for c in claims))}

    def claim(self, *, address: str, round_ids: Sequence[int] | None = None) -> dict[str, Any]:
        """Send ``claim(address, ...)`` from the operator's account (anyone may; the tokens go to ``address``)."""
        address = to_checksum_address(address)
        ids = sorted(set(round_ids)) if round_ids else None
        claims = self._claims(address, ids)
        if not claims:
            raise NothingToClaim(address)
        tx = self.d.rounds.claim(address, claims, sender=self.stack.operator)
        paid = self.d.rounds.reward_claimed_in(tx)
        return {"participant": address, "tx_hash": tx.tx_hash, "block": tx.block_number,
                "rounds": [e.round_id for e in paid], "minted": str(sum(e.reward for e in paid)),
                "balance": str(self.d.token.balance_of(address))}

    # ------------------------------------------------------------------ history

    def rounds(self) -> list[dict[str, Any]]:
        index = self.synced()
        finalized = {e["args"]["round_id"]: e for e in index.events("RoundFinalized")}
        results = {e["args"]["round_id"]: e["args"] for e in index.events("RoundResultsCommitted")}
        batched: dict[int, int] = {}
        for e in index.events("CommitmentBatchPosted"):
            batched[e["args"]["round_id"]] = batched.get(e["args"]["round_id"], 0) + int(e["args"]["entries"])
        claimed: dict[int, int] = {}
        for e in index.events("RewardClaimed"):
            claimed[e["args"]["round_id"]] = claimed.get(e["args"]["round_id"], 0) + int(e["args"]["reward"])
        out = []
        for e in index.events("RoundOpened"):
            rid = e["args"]["round_id"]
            fin = finalized.get(rid)
            res = results.get(rid)
            direct = len(index.events("UpdateCommitted", round_id=rid))
            out.append({
                "round": rid,
                "base_model_hash": e["args"]["base_model_hash"],
                "rule_hash": e["args"]["rule_hash"],
                "rule_cid": e["args"]["rule_cid"],
                "deadline": e["args"]["deadline"],
                "reward_budget": str(e["args"]["reward_budget"]),
                "submissions": int(res["entries"]) if res else direct + batched.get(rid, 0),
                "direct": direct,
                "batched": batched.get(rid, 0),
                "finalized": fin is not None,
                "settlement": None if fin is None else ("merkle" if res else "legacy"),
                "new_model_hash": None if fin is None else fin["args"]["new_model_hash"],
                "accepted": None if fin is None else fin["args"]["accepted"],
                "minted": None if fin is None else str(claimed.get(rid, 0) if res else fin["args"]["minted"]),
            })
        return out

    def round(self, *, round_id: int) -> dict[str, Any]:
        """One round from the event index (not the chain): models, rule, submissions (direct and batched) and
        verdicts; for Merkle rounds the results root, its list and who has claimed; the relay's queue counts."""
        index = self.synced()
        opened = index.events("RoundOpened", round_id=round_id)
        if not opened:
            raise UnknownRound(round_id, len(index.events("RoundOpened")))
        o = opened[0]["args"]
        rule = RuleConfig.from_bytes(self.stack.store.get(o["rule_cid"], bytes.fromhex(o["rule_hash"][2:])))
        finalized = index.events("RoundFinalized", round_id=round_id)
        closed = index.events("RoundClosed", round_id=round_id)
        base_cid = next((m["cid"] for m in self.lineage() if m["model_hash"] == o["base_model_hash"]), None)
        f = finalized[0]["args"] if finalized else None
        res_ev = index.events("RoundResultsCommitted", round_id=round_id)
        res = res_ev[0]["args"] if res_ev else None
        claims = {e["args"]["participant"]: e for e in index.events("RewardClaimed", round_id=round_id)}

        verdicts: dict[str, dict[str, Any]] = {}
        for e in index.events("ContributionScored", round_id=round_id):
            a = e["args"]
            verdicts[a["participant"]] = {"status": Status(a["status"]).name, "score": a["score"] / 1e6,
                                          "reward": str(a["reward"]), "reputation_after": a["reputation"] / 1e6}
        results = self._try_results(res) if res else None
        for r in results.entries if results else []:
            verdicts[r.participant] = {"status": _status_name(r.status), "score": r.score / 1e6,
                                       "reward": str(r.reward), "reputation_after": r.reputation / 1e6,
                                       "claimed": r.participant in claims}

        submissions: dict[str, dict[str, Any]] = {}
        for e in index.events("UpdateCommitted", round_id=round_id):
            c = e["args"]
            submissions[c["participant"]] = {"participant": c["participant"], "content_hash": c["content_hash"],
                                             "cid": c["cid"], "relayer": c["relayer"], "path": "direct", "batch": None}
        batches = []
        for e in index.events("CommitmentBatchPosted", round_id=round_id):
            a = e["args"]
            batch = self._try_batch(a)
            batches.append({"index": a["batch_index"], "root": a["root"], "list_hash": a["list_hash"],
                            "list_cid": a["list_cid"], "entries": a["entries"], "relayer": a["relayer"],
                            "tx_hash": e["tx_hash"], "block": e["block_number"], "list_readable": batch is not None})
            for entry in batch.entries if batch else ():
                submissions.setdefault(entry.participant, {
                    "participant": entry.participant, "content_hash": _hex(entry.content_hash), "cid": entry.cid,
                    "relayer": a["relayer"], "path": "batch", "batch": a["batch_index"]})
        empty = {"status": None, "score": None, "reward": None, "reputation_after": None}
        spends: dict[str, dict[str, Any]] = {}
        if self.d.privacy is not None:  # the PrivacyLedger's records of this round (not in the event index)
            with self._history_lock:
                for e in self.history().events("PrivacySpent", round_id=round_id):
                    a = e.args
                    spends[a.participant] = {"epsilon": a.epsilon / 1e6, "delta": a.delta / 1e18,
                                             "total_epsilon": a.total_epsilon / 1e6}
        return {
            "round": round_id,
            "state": "finalized" if f else ("closed" if closed else "open"),
            "deadline": o["deadline"],
            "settlement": None if f is None else ("merkle" if res else "legacy"),
            "base_model": {"hash": o["base_model_hash"], "cid": base_cid},
            "new_model": {"hash": f["new_model_hash"], "cid": f["new_model_cid"]} if f else None,
            "rule": {"hash": o["rule_hash"], "cid": o["rule_cid"], **rule.to_document()},
            "minted": str(sum(int(c["args"]["reward"]) for c in claims.values())) if res else
            (str(f["minted"]) if f else "0"),
            "results": None if res is None else {
                "root": res["root"], "list_hash": res["list_hash"], "list_cid": res["list_cid"],
                "entries": res["entries"], "total": str(res["total"]), "claims": len(claims),
                "claimed": str(sum(int(c["args"]["reward"]) for c in claims.values())),
                "list_readable": results is not None},
            "batches": batches,
            "relay": self.queue.counts(round_id) if self.queue else None,
            "submissions": [{**s, **verdicts.get(p, empty), "privacy": spends.get(p)}
                            for p, s in sorted(submissions.items(), key=lambda kv: kv[0].lower())],
        }

    def lineage(self) -> list[dict[str, Any]]:
        index = self.synced()
        out = [{"round": 0, "model_hash": e["args"]["model_hash"], "cid": e["args"]["cid"], "base_model_hash": None}
               for e in index.events("GenesisModelPublished")]
        for e in index.events("RoundFinalized"):
            out.append({"round": e["args"]["round_id"], "model_hash": e["args"]["new_model_hash"],
                        "cid": e["args"]["new_model_cid"], "base_model_hash": e["args"]["base_model_hash"]})
        return out

    def current_model(self) -> dict[str, Any]:
        model = self.d.rounds.global_model()
        if model.model_hash == bytes(32):
            raise NotFound("no global model has been published yet")
        return {"hash": "0x" + model.model_hash.hex(), "cid": model.cid, "rounds": self.d.rounds.round_count()}

    def audit(self, *, round_id: int | None = None) -> AuditReport:
        count = self.d.rounds.round_count()
        if round_id is not None and not 1 <= round_id <= count:
            raise UnknownRound(round_id, count)
        with self._history_lock:  # the one event history, extended rather than read again per audit
            report = Auditor(self.d, self.stack.store, history=self.history()).verify(round_id)
        self.record_audit(report, round_id=round_id)
        return report

    def record_audit(self, report: AuditReport, *, round_id: int | None = None) -> None:
        """Remember the latest audit this process ran (the dashboard's overview shows it)."""
        self.last_audit = AuditRun(time.time(), round_id, report)

    def evaluations(self) -> dict[int, dict[str, Any]]:
        """Test-set evaluations of the global models, by round: what the demo measured, read from
        ``evaluations.jsonl`` beside the event index. Off-chain and unaudited; an entry counts only while its
        ``model_hash`` is the model the chain recorded for that round (a file left by another deployment is
        ignored)."""
        path = Path(self.indexer.path).with_name(EVALUATIONS_FILE)
        if not path.exists():
            return {}
        models = {m["round"]: m["model_hash"].lower() for m in self.lineage() if m["round"] > 0}
        out: dict[int, dict[str, Any]] = {}
        for line in path.read_text().splitlines():
            try:
                e = json.loads(line)
                rid, model_hash, acc = int(e["round"]), str(e["model_hash"]).lower(), float(e["accuracy"])
            except (ValueError, KeyError, TypeError):
                log.warning("%s: skipping an unreadable line", path)
                continue
            if models.get(rid) == model_hash and math.isfinite(acc):
                out[rid] = {**e, "round": rid, "accuracy": acc}
        return out

    # --------------------------------------------------------------- operator

    def publish_genesis(self, *, dataset: str, seed: int) -> dict[str, Any]:
        from trainer.data import load_dataset
        from trainer.model import ModelSpec, init_params

        data = load_dataset(dataset, seed=seed)
        spec = ModelSpec(data.num_features, data.num_classes)
        ref, result = Operator(self.d, self.stack.store, self.stack.operator).publish_genesis(init_params(spec, seed))
        return {"hash": "0x" + ref.content_hash.hex(), "cid": ref.uri, "tx_hash": result.tx_hash}

    def open_round(self, *, duration_s: int, rule: RuleConfig) -> dict[str, Any]:
        if duration_s < 1:
            raise ValueError(f"duration_s must be >= 1, got {duration_s}")
        if rule.stake_weighted and self.settlement != "merkle":
            raise RuleError(f"rule version {rule.version} splits rewards by stake, which only Merkle settlement "
                            f"pays; this service settles {self.settlement} (FEDLEDGER_SETTLEMENT=merkle)")
        round_id, result = Operator(self.d, self.stack.store, self.stack.operator).open_round(rule, duration_s=duration_s)
        return {"round": round_id, "tx_hash": result.tx_hash}

    def close_round(self, *, round_id: int) -> dict[str, Any]:
        """Close the round; the relay's pending commitments are posted first (a failed post keeps the round open,
        so no accepted submission is shut out)."""
        flushed = None
        if self.queue is not None and self.queue.pending(round_id):
            flushed = self.flush(round_id=round_id)
        result = Operator(self.d, self.stack.store, self.stack.operator).close_round(round_id)
        return {"round": round_id, "tx_hash": result.tx_hash, "flushed": flushed}

    def finalize_round(self, *, round_id: int) -> dict[str, Any]:
        expired = self._expire_unpostable(round_id)
        if self.settlement == "merkle":
            return {**self._finalize_merkle(round_id), "expired": expired}
        outcome, ref, result = Aggregator(self.d, self.stack.store, self.stack.aggregator).finalize(round_id)
        return {**self._outcome_json(round_id, outcome, ref, result.tx_hash), "settlement": "legacy",
                "expired": expired}

    @staticmethod
    def _outcome_json(round_id: int, outcome: Any, ref: BlobRef, tx_hash: str) -> dict[str, Any]:
        return {
            "round": round_id,
            "new_model": {"hash": "0x" + ref.content_hash.hex(), "cid": ref.uri},
            "accepted": outcome.accepted,
            "verdicts": [{"participant": v.participant, "status": v.status.name, "score": v.score / 1e6,
                          "group_size": v.group_size, "detail": v.detail} for v in outcome.verdicts],
            "tx_hash": tx_hash,
        }

    def _finalize_merkle(self, round_id: int) -> dict[str, Any]:
        """One results root (``finalizeRoundWithResults``). A round nobody committed to has no result list (a
        Merkle tree needs a leaf): it is finalized per participant with no participants, which carries the global
        model forward just the same."""
        aggregator = MerkleAggregator(self.d, self.stack.store, self.stack.aggregator)
        record = aggregator.history.round(round_id)
        if not record.commitments and not record.batches:
            outcome, ref, result = Aggregator(self.d, self.stack.store, self.stack.aggregator).finalize(round_id)
            return {**self._outcome_json(round_id, outcome, ref, result.tx_hash), "settlement": "legacy",
                    "results": None, "problems": []}
        prepared = aggregator.prepare(round_id)
        list_ref, tx, _ = aggregator.commit(prepared)
        r = prepared.results
        slashes = aggregator.history.events("StakeSlashed", round_id=round_id)  # commit() proved them
        return {
            **self._outcome_json(round_id, prepared.outcome, prepared.new_ref, tx.tx_hash),
            "settlement": "merkle",
            "results": {"root": _hex(r.root), "list_hash": "0x" + list_ref.content_hash.hex(), "list_cid": list_ref.uri,
                        "entries": len(r.entries), "accepted": r.accepted, "total": str(r.total_reward),
                        "rewards": {e.participant: str(e.reward) for e in r.entries}},
            "batched": prepared.committed.batched,
            "problems": prepared.committed.problems,
            "slashes": [{"participant": e.args.account, "status": _status_name(e.args.status),
                         "amount": str(e.args.amount), "tx_hash": e.tx_hash} for e in slashes],
        }

    def set_privacy_budget(self, *, epsilon: float, participant: str | None = None) -> dict[str, Any]:
        gw = ledger_gateway(self.d)
        micro = epsilon_to_micro(epsilon)
        if participant is None:
            result = gw.set_default_budget(micro, sender=self.stack.operator)
        else:
            participant = to_checksum_address(participant)
            result = gw.set_participant_budget(participant, micro, sender=self.stack.operator)
        return {"participant": participant, "budget_epsilon": micro / 1e6, "budget_micro": micro,
                "tx_hash": result.tx_hash}

    def admit(self, *, address: str) -> dict[str, Any]:
        """Admit ``address`` to register (a registry deployed with admission required; otherwise 409)."""
        address = to_checksum_address(address)
        result = self.d.registry.admit(address, sender=self.stack.operator)
        return {"address": address, "tx_hash": result.tx_hash, "block": result.block_number}

    def suspend(self, *, address: str, reason: str) -> dict[str, Any]:
        code = reason.encode()[:32].ljust(32, b"\0")
        result = self.d.registry.suspend(to_checksum_address(address), code, sender=self.stack.operator)
        return {"address": to_checksum_address(address), "tx_hash": result.tx_hash}

    def finalize_due(self) -> list[int]:
        """The aggregator service's step: flush what the relay must post before a deadline (``flush_due``), then
        finalize the latest round if its deadline passed or it was closed."""
        self.flush_due()
        count = self.d.rounds.round_count()
        if count == 0:
            return []
        info = self.d.rounds.get_round(count)
        if info.state == 3 and self.settlement == "merkle" and count not in self._slashes_done:
            self._slash_missing(count)  # a crash between the results root and its slash proofs
        if not (info.state == 2 or (info.state == 1 and self.now() > info.deadline)):
            return []
        in_flight = self.in_flight(self.stack.aggregator)
        if in_flight:
            # An earlier run (killed after broadcasting) may have a finalize transaction in the mempool: wait for
            # it to be mined rather than send a second one. The next pass re-reads the round's state.
            log.info("round %d: waiting for %d in-flight transaction(s) of %s", count, in_flight, self.stack.aggregator)
            return []
        try:
            self.finalize_round(round_id=count)
        except ContractRevert as exc:
            if exc.error != "RoundsAlreadyFinalized":
                raise
            log.info("round %d was finalized by another transaction: %s", count, exc)  # another aggregator won
            return []
        return [count]

    def _slash_missing(self, round_id: int) -> None:
        """Send the slash proofs of a Merkle-finalized round that are not on chain yet (MerkleAggregator.slash)."""
        aggregator = MerkleAggregator(self.d, self.stack.store, self.stack.aggregator)
        record = aggregator.history.round(round_id)
        if self.in_flight(self.stack.aggregator):
            return  # a slash proof of an earlier pass may still be in the mempool: look again next pass
        if record.results is not None:
            sent = aggregator.slash(round_id, load_results(self.stack.store, record))
            if sent:
                log.info("round %d: sent %d missing slash proof(s)", round_id, len(sent))
        self._slashes_done.add(round_id)

    def in_flight(self, address: str) -> int:
        """How many of ``address``'s transactions the node has accepted but not mined."""
        eth = self.stack.transactor.w3.eth
        return int(eth.get_transaction_count(address, "pending")) - int(eth.get_transaction_count(address, "latest"))


def _status_name(code: int) -> str:
    try:
        return Status(code).name
    except ValueError:
        return f"status {code}"


def wait_loop(platform: Platform, *, interval_s: float, iterations: int | None = None,
              stop: threading.Event | None = None) -> None:
    """Run the aggregator service: every ``interval_s`` seconds, flush the relay's queue where a deadline is within
    the flush margin (keep the margin above the interval), then finalize due rounds. Once ``stop`` is set it returns
    after the pass under way (a pass killed midway is recovered on restart, but need not be)."""
    stop = stop if stop is not None else threading.Event()
    n = 0
    while (iterations is None or n < iterations) and not stop.is_set():
        try:
            platform.finalize_due()
        except (ChainUnavailable, TransactionTimeout, StorageUnavailable) as exc:
            if iterations is not None:
                raise
            log.warning("aggregator pass failed, retrying in %ss: %s", interval_s, exc)  # an outage, not a bug
        n += 1
        if iterations is None or n < iterations:
            stop.wait(interval_s)
