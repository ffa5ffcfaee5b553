"""The batching relay's durable queue of EIP-712 signed commitments (the API with ``FEDLEDGER_RELAY_MODE=batched``).

    queue = RelayQueue(path, chain_id=..., rounds_contract=...)
    entry = queue.add(round_id, SignedCommitment(...), queued_at=int(time.time()))   # on disk before it returns
    with queue.flushing():                                                          # one flusher at a time
        rows = queue.pending(round_id, limit=500)
        ...post the batch (Operator.post_batch)...
        queue.mark_included(round_id, rows, batch_index=..., ...)

An accepted submission is one row of a SQLite database (WAL journal, ``synchronous=FULL``: the commit is fsync'd
before ``add`` returns, so the API answers 202 only for what survives a crash or restart). Rows are never deleted.
A row starts ``pending`` and ends in one of:

* ``included``: posted in a batch (batch index, root, list blob sha256 + CID, the entry's Merkle proof, tx hash);
* ``superseded``: the participant committed directly (own transaction) before the relay posted it; that counts;
* ``dropped``: the participant was no longer active in the registry when the batch was posted (the auditor would
  not count the entry, so the relay does not post it);
* ``expired``: the round was closed or its deadline passed before the relay posted it (the contract refuses
  batches then), with the reason.

A failed post leaves its rows pending with the error and an attempt count. Rows are scoped to one deployment (chain
id + rounds contract), so one database outlives redeployments without mixing them. One flusher at a time across
threads (a lock) and processes (``flock`` on a sibling ``.lock`` file): the API and the aggregator service may
share the queue.
"""

from __future__ import annotations

import fcntl
import json
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chain.lists import SignedCommitment

SCHEMA_VERSION = 1
PENDING, INCLUDED, SUPERSEDED, DROPPED, EXPIRED = "pending", "included", "superseded", "dropped", "expired"
STATUSES = (PENDING, INCLUDED, SUPERSEDED, DROPPED, EXPIRED)

SCHEMA = """
CREATE TABLE IF NOT EXISTS commitments (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    chain_id INTEGER NOT NULL,
    rounds_contract TEXT NOT NULL,          -- lower-case 0x address
    round_id INTEGER NOT NULL,
    participant TEXT NOT NULL,              -- checksummed
    participant_key TEXT NOT NULL,          -- lower-case, for uniqueness
    content_hash TEXT NOT NULL,             -- 0x-hex
    cid TEXT NOT NULL,
    signature TEXT NOT NULL,                -- 0x-hex, 65 bytes
    queued_at INTEGER NOT NULL,             -- unix time (wall clock) the relay accepted it
    status TEXT NOT NULL,
    detail TEXT,                            -- why expired / dropped / superseded, or the last post error
    attempts INTEGER NOT NULL DEFAULT 0,    -- failed posts
    updated_at INTEGER NOT NULL,
    batch_index INTEGER,
    batch_root TEXT,
    list_hash TEXT,
    list_cid TEXT,
    batch_entries INTEGER,
    tx_hash TEXT,
    block_number INTEGER,
    proof TEXT,                             -- JSON list of 0x-hex sibling hashes
    UNIQUE (chain_id, rounds_contract, round_id, participant_key)
);
CREATE INDEX IF NOT EXISTS commitments_by_status ON commitments (chain_id, rounds_contract, status, round_id, seq);
"""


class DuplicateCommitment(Exception):
    """The participant already has a commitment for this round (pending with the relay or on chain)."""

    def __init__(self, round_id: int, participant: str, where: str) -> None:
        super().__init__(f"{participant} already has a commitment for round {round_id} ({where})")
        self.round_id = round_id
        self.participant = participant
        self.where = where


@dataclass(frozen=True)
class QueuedCommitment:
    seq: int
    round_id: int
    participant: str
    content_hash: bytes
    cid: str
    signature: bytes
    queued_at: int
    status: str
    detail: str | None = None
    attempts: int = 0
    updated_at: int = 0
    batch_index: int | None = None
    batch_root: bytes | None = None
    list_hash: bytes | None = None
    list_cid: str | None = None
    batch_entries: int | None = None
    tx_hash: str | None = None
    block_number: int | None = None
    proof: list[bytes] = field(default_factory=list)

    def signed(self) -> SignedCommitment:
        return SignedCommitment(self.participant, self.content_hash, self.cid, self.signature)


@dataclass(frozen=True)
class Inclusion:
    """Where a batch put its entries: what ``mark_included`` records for each."""

    batch_index: int
    root: bytes
    list_hash: bytes
    list_cid: str
    entries: int
    tx_hash: str
    block_number: int


def _hex(b: bytes | None) -> str | None:
    return None if b is None else "0x" + b.hex()


def _unhex(s: str | None) -> bytes | None:
    return None if s is None else bytes.fromhex(s[2:])


class RelayQueue:
    def __init__(self, path: Path, *, chain_id: int, rounds_contract: str, busy_timeout_s: float = 30.0) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.scope = (int(chain_id), rounds_contract.lower())
        self._lock = threading.RLock()  # the connection, and one flusher per process
        self._flush_lock = threading.Lock()
        self.db = sqlite3.connect(self.path, check_same_thread=False, timeout=busy_timeout_s, isolation_level=None)
        self.db.row_factory = sqlite3.Row
        with self._lock:
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=FULL")  # every commit fsync'd: an accepted submission is on disk
            version = int(self.db.execute("PRAGMA user_version").fetchone()[0])
            if version not in (0, SCHEMA_VERSION):
                raise ValueError(f"{self.path} has relay queue schema {version}, this version reads {SCHEMA_VERSION}")
            self.db.executescript(SCHEMA)
            self.db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    def close(self) -> None:
        with self._lock:
            self.db.close()

    # ------------------------------------------------------------------------------------------------- writes

    def add(self, round_id: int, c: SignedCommitment, *, queued_at: int) -> QueuedCommitment:
        """Queue ``c`` for ``round_id``, durably; DuplicateCommitment if the participant already has a row."""
        chain_id, contract = self.scope
        with self._lock:
            try:
                self.db.execute("BEGIN IMMEDIATE")
                self.db.execute(
                    "INSERT INTO commitments (chain_id, rounds_contract, round_id, participant, participant_key,"
                    " content_hash, cid, signature, queued_at, status, updated_at)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (chain_id, contract, round_id, c.participant, c.participant.lower(), _hex(c.content_hash), c.cid,
                     _hex(c.signature), queued_at, PENDING, queued_at),
                )
                self.db.execute("COMMIT")
            except sqlite3.IntegrityError:
                self.db.execute("ROLLBACK")
                existing = self.get(round_id, c.participant)
                where = f"{existing.status} with the relay" if existing else "with the relay"
                raise DuplicateCommitment(round_id, c.participant, where) from None
            except BaseException:
                if self.db.in_transaction:
                    self.db.execute("ROLLBACK")
                raise
        entry = self.get(round_id, c.participant)
        if entry is None:  # only if another process rewrote the row in between
            raise sqlite3.DatabaseError(f"queued commitment of {c.participant} for round {round_id} vanished")
        return entry

    def _update(self, sql: str, rows: Sequence[tuple[Any, ...]]) -> None:
        with self._lock:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                self.db.executemany(sql, rows)
                self.db.execute("COMMIT")
            except BaseException:
                self.db.execute("ROLLBACK")
                raise

    def mark_included(self, entries: Sequence[QueuedCommitment], at: Inclusion, proofs: dict[str, list[bytes]],
                      *, now: int) -> None:
        self._update(
            "UPDATE commitments SET status = ?, detail = NULL, updated_at = ?, batch_index = ?, batch_root = ?,"
            " list_hash = ?, list_cid = ?, batch_entries = ?, tx_hash = ?, block_number = ?, proof = ? WHERE seq = ?",
            [(INCLUDED, now, at.batch_index, _hex(at.root), _hex(at.list_hash), at.list_cid, at.entries, at.tx_hash,
              at.block_number, json.dumps([_hex(p) for p in proofs[e.participant]]), e.seq) for e in entries],
        )

    def mark(self, entries: Sequence[QueuedCommitment], status: str, detail: str, *, now: int) -> None:
        """Move pending ``entries`` to a final ``status`` (superseded / dropped / expired) with the reason."""
        if status not in (SUPERSEDED, DROPPED, EXPIRED):
            raise ValueError(f"not a final status for a row that was never posted: {status!r}")
        self._update("UPDATE commitments SET status = ?, detail = ?, updated_at = ? WHERE seq = ? AND status = ?",
                     [(status, detail, now, e.seq, PENDING) for e in entries])

    def mark_failed(self, entries: Sequence[QueuedCommitment], detail: str, *, now: int) -> None:
        """A post failed: the rows stay pending, with the error and one more attempt counted."""
        self._update("UPDATE commitments SET detail = ?, attempts = attempts + 1, updated_at = ? WHERE seq = ?",
                     [(detail, now, e.seq) for e in entries])

    @contextmanager
    def flushing(self, *, wait: bool = True) -> Iterator[bool]:
        """Exclusive right to post batches: one thread of this process, one process on this machine. Yields True
        once held; with ``wait=False`` it yields False at once instead of waiting while another flusher holds it."""
        if not self._flush_lock.acquire(blocking=wait):
            yield False
            return
        try:
            with open(self.path.with_name(self.path.name + ".lock"), "a+") as f:
                try:
                    fcntl.flock(f.fileno(), fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    held = False
                else:
                    held = True
                try:
                    yield held
                finally:
                    if held:
                        fcntl.flock(f.fileno(), fcntl.LOCK_UN)
        finally:
            self._flush_lock.release()

    # -------------------------------------------------------------------------------------------------- reads

    def _select(self, where: str, params: Sequence[Any], tail: str = "") -> list[QueuedCommitment]:
        chain_id, contract = self.scope
        sql = f"SELECT * FROM commitments WHERE chain_id = ? AND rounds_contract = ? AND {where} ORDER BY seq {tail}"
        with self._lock:
            rows = self.db.execute(sql, (chain_id, contract, *params)).fetchall()
        return [self._row(r) for r in rows]

    @staticmethod
    def _row(r: sqlite3.Row) -> QueuedCommitment:
        return QueuedCommitment(
            seq=r["seq"], round_id=r["round_id"], participant=r["participant"],
            content_hash=_unhex(r["content_hash"]) or b"", cid=r["cid"], signature=_unhex(r["signature"]) or b"",
            queued_at=r["queued_at"], status=r["status"], detail=r["detail"], attempts=r["attempts"],
            updated_at=r["updated_at"], batch_index=r["batch_index"], batch_root=_unhex(r["batch_root"]),
            list_hash=_unhex(r["list_hash"]), list_cid=r["list_cid"], batch_entries=r["batch_entries"],
            tx_hash=r["tx_hash"], block_number=r["block_number"],
            proof=[bytes.fromhex(p[2:]) for p in json.loads(r["proof"] or "[]")],
        )

    def get(self, round_id: int, participant: str) -> QueuedCommitment | None:
        rows = self._select("round_id = ? AND participant_key = ?", (round_id, participant.lower()))
        return rows[0] if rows else None

    def pending(self, round_id: int, *, limit: int | None = None) -> list[QueuedCommitment]:
        tail = "" if limit is None else f"LIMIT {int(limit)}"
        return self._select("round_id = ? AND status = ?", (round_id, PENDING), tail)

    def entries(self, round_id: int) -> list[QueuedCommitment]:
        return self._select("round_id = ?", (round_id,))

    def of_participant(self, participant: str) -> list[QueuedCommitment]:
        return self._select("participant_key = ?", (participant.lower(),))

    def pending_rounds(self) -> list[int]:
        chain_id, contract = self.scope
        with self._lock:
            rows = self.db.execute(
                "SELECT DISTINCT round_id FROM commitments WHERE chain_id = ? AND rounds_contract = ? AND status = ?"
                " ORDER BY round_id", (chain_id, contract, PENDING)).fetchall()
        return [int(r[0]) for r in rows]

    def counts(self, round_id: int) -> dict[str, int]:
        chain_id, contract = self.scope
        with self._lock:
            rows = self.db.execute(
                "SELECT status, COUNT(*) FROM commitments WHERE chain_id = ? AND rounds_contract = ? AND round_id = ?"
                " GROUP BY status", (chain_id, contract, round_id)).fetchall()
        return {s: 0 for s in STATUSES} | {str(r[0]): int(r[1]) for r in rows}

    def included_batches(self, round_id: int) -> set[int]:
        chain_id, contract = self.scope
        with self._lock:
            rows = self.db.execute(
                "SELECT DISTINCT batch_index FROM commitments WHERE chain_id = ? AND rounds_contract = ?"
                " AND round_id = ? AND status = ?", (chain_id, contract, round_id, INCLUDED)).fetchall()
        return {int(r[0]) for r in rows}
