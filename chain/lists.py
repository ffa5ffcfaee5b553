"""The public lists behind a round's Merkle roots: signed commitment batches and round result lists.

Both are blobs of canonical JSON (sorted keys, no whitespace, entries sorted by address) in the blob store; the
chain holds their sha256 and CID beside the root of an OpenZeppelin standard Merkle tree over their entries
(``chain.merkle``), so anyone can fetch a list, check its bytes against the chain and rebuild the root, and a
participant can prove its own entry with a short proof instead of the whole list.

* ``CommitmentBatch`` (posted by a relayer with ``FederatedRounds.commitBatch``): per entry the participant, the
  content hash and CID it committed to, and its EIP-712 ``Commitment`` signature. Leaves:
  ``(roundId, participant, contentHash, cid)``. The contract never sees the signatures; auditors check each one.
* ``ResultList`` (committed by the aggregator with ``finalizeRoundWithResults``): per committer its status, score
  (1e-6 units), reward and reputation after the round. Leaves: ``(roundId, participant, status, score, reward,
  reputation)``, exactly what ``FederatedRounds.claim`` proves.

Nothing here knows about tensors; these are hashes, addresses and integers.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from eth_utils import is_address, to_checksum_address

from chain.eip712 import commitment_typed_data, recover_signer
from chain.errors import ChainError
from chain.merkle import COMMITMENT_LEAF_TYPES, RESULT_LEAF_TYPES, StandardMerkleTree

LIST_VERSION = 1
BATCH_KIND = "fedledger/commitment-batch"
RESULTS_KIND = "fedledger/round-results"
MAX_LIST_BYTES = 64 << 20  # 10,000 entries are ~2.5 MB; a larger "list" is refused before parsing


class ListFormatError(ChainError):
    """A batch or result list blob is not what the chain says it is (malformed, wrong round, unsorted...)."""


def _canonical(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def _hex(b: bytes) -> str:
    return "0x" + b.hex()


def _bytes(value: Any, length: int | None, what: str) -> bytes:
    if not isinstance(value, str) or not value.startswith("0x"):
        raise ListFormatError(f"{what}: expected 0x-hex, got {value!r:.80}")
    try:
        out = bytes.fromhex(value[2:])
    except ValueError:
        raise ListFormatError(f"{what}: not hex: {value!r:.80}") from None
    if length is not None and len(out) != length:
        raise ListFormatError(f"{what}: expected {length} bytes, got {len(out)}")
    return out


def _address(value: Any, what: str) -> str:
    if not isinstance(value, str) or not is_address(value):
        raise ListFormatError(f"{what}: not an address: {value!r:.80}")
    return to_checksum_address(value)


def _int(value: Any, what: str, lo: int, hi: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise ListFormatError(f"{what}: expected an integer in [{lo}, {hi}], got {value!r:.80}")
    return value


def _parse(data: bytes, kind: str) -> dict[str, Any]:
    if len(data) > MAX_LIST_BYTES:
        raise ListFormatError(f"{kind} blob is {len(data)} bytes, more than {MAX_LIST_BYTES}")
    try:
        doc = json.loads(data)
    except (UnicodeDecodeError, ValueError) as exc:
        raise ListFormatError(f"{kind} blob is not JSON: {exc}") from None
    if not isinstance(doc, dict) or doc.get("kind") != kind:
        raise ListFormatError(f"blob is not a {kind} document")
    if doc.get("version") != LIST_VERSION:
        raise ListFormatError(f"{kind} version {doc.get('version')!r}, expected {LIST_VERSION}")
    if not isinstance(doc.get("entries"), list) or not doc["entries"]:
        raise ListFormatError(f"{kind} has no entries")
    return doc


def _check_sorted(addresses: Sequence[str], kind: str) -> None:
    for i in range(1, len(addresses)):
        if addresses[i].lower() <= addresses[i - 1].lower():
            raise ListFormatError(
                f"{kind} entries must be strictly ascending by address: entry {i} {addresses[i]} after {addresses[i - 1]}"
            )


@dataclass(frozen=True)
class ListHeader:
    """Which deployment and round a list belongs to: a list is only valid where the chain committed it."""

    chain_id: int
    rounds_contract: str
    round_id: int

    def to_json(self) -> dict[str, Any]:
        return {"chainId": self.chain_id, "roundsContract": self.rounds_contract, "roundId": self.round_id}

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> ListHeader:
        return cls(
            _int(doc.get("chainId"), "chainId", 1, 2**256 - 1),
            _address(doc.get("roundsContract"), "roundsContract"),
            _int(doc.get("roundId"), "roundId", 1, 2**256 - 1),
        )

    def mismatch(self, other: ListHeader) -> str | None:
        """Why this header is not ``other`` (None when equal)."""
        if self == other:
            return None
        return f"list is for chain {self.chain_id} {self.rounds_contract} round {self.round_id}, expected chain " \
               f"{other.chain_id} {other.rounds_contract} round {other.round_id}"


# ------------------------------------------------------------------------------------------ commitment batches


@dataclass(frozen=True)
class SignedCommitment:
    participant: str
    content_hash: bytes
    cid: str
    signature: bytes


@dataclass(frozen=True)
class SignatureProblem:
    index: int
    participant: str
    recovered: str | None

    def __str__(self) -> str:
        who = "no signer (malformed signature)" if self.recovered is None else f"signer {self.recovered}"
        return f"entry {self.index} ({self.participant}): {who}"


@dataclass(frozen=True)
class CommitmentBatch:
    header: ListHeader
    entries: tuple[SignedCommitment, ...]

    @classmethod
    def build(cls, header: ListHeader, entries: Iterable[SignedCommitment]) -> CommitmentBatch:
        """Sort by address; one entry per participant (a relayer keeps the first commitment it got)."""
        seen: dict[str, SignedCommitment] = {}
        for e in entries:
            seen.setdefault(to_checksum_address(e.participant), e)
        ordered = sorted(seen.items(), key=lambda kv: kv[0].lower())
        out = tuple(SignedCommitment(p, e.content_hash, e.cid, e.signature) for p, e in ordered)
        if not out:
            raise ListFormatError("a batch needs at least one commitment")
        return cls(header, out)

    def canonical_bytes(self) -> bytes:
        return _canonical({
            "kind": BATCH_KIND,
            "version": LIST_VERSION,
            **self.header.to_json(),
            "entries": [
                {"participant": e.participant, "contentHash": _hex(e.content_hash), "cid": e.cid,
                 "signature": _hex(e.signature)}
                for e in self.entries
            ],
        })

    @classmethod
    def from_bytes(cls, data: bytes) -> CommitmentBatch:
        doc = _parse(data, BATCH_KIND)
        entries = []
        for i, e in enumerate(doc["entries"]):
            if not isinstance(e, dict):
                raise ListFormatError(f"entry {i} is not an object")
            cid = e.get("cid")
            if not isinstance(cid, str) or not cid or len(cid) > 512:
                raise ListFormatError(f"entry {i}: cid must be a non-empty string of at most 512 characters")
            entries.append(SignedCommitment(
                _address(e.get("participant"), f"entry {i} participant"),
                _bytes(e.get("contentHash"), 32, f"entry {i} contentHash"),
                cid,
                _bytes(e.get("signature"), None, f"entry {i} signature"),
            ))
        _check_sorted([e.participant for e in entries], BATCH_KIND)
        return cls(ListHeader.from_json(doc), tuple(entries))

    def leaves(self) -> list[tuple[Any, ...]]:
        r = self.header.round_id
        return [(r, e.participant, e.content_hash, e.cid) for e in self.entries]

    @cached_property
    def tree(self) -> StandardMerkleTree:
        return StandardMerkleTree.of(self.leaves(), COMMITMENT_LEAF_TYPES)

    @property
    def root(self) -> bytes:
        return self.tree.root

    def proof(self, participant: str) -> list[bytes]:
        return self.tree.proof(self.index_of(participant))

    def index_of(self, participant: str) -> int:
        want = participant.lower()
        for i, e in enumerate(self.entries):
            if e.participant.lower() == want:
                return i
        raise KeyError(participant)

    def signature_problems(self) -> list[SignatureProblem]:
        """Every entry whose signature does not recover to its participant under this batch's chain, contract
        and round (what ``commitUpdateSigned`` would have checked on-chain)."""
        h = self.header
        out = []
        for i, e in enumerate(self.entries):
            typed = commitment_typed_data(h.chain_id, h.rounds_contract, h.round_id, e.content_hash, e.cid)
            signer = recover_signer(typed, e.signature)
            if signer != e.participant:
                out.append(SignatureProblem(i, e.participant, signer))
        return out


# ----------------------------------------------------------------------------------------------- result lists


@dataclass(frozen=True)
class ResultEntry:
    participant: str
    status: int
    score: int  # 1e-6 units, [-1e6, 1e6]
    reward: int  # token base units
    reputation: int  # after this round, 1e-6 units

    def leaf(self, round_id: int) -> tuple[Any, ...]:
        return (round_id, self.participant, self.status, self.score, self.reward, self.reputation)


@dataclass(frozen=True)
class ResultList:
    header: ListHeader
    rule_hash: bytes
    new_model_hash: bytes
    entries: tuple[ResultEntry, ...]

    @classmethod
    def build(cls, header: ListHeader, rule_hash: bytes, new_model_hash: bytes, entries: Iterable[ResultEntry]) -> ResultList:
        ordered = tuple(sorted(entries, key=lambda e: e.participant.lower()))
        _check_sorted([e.participant for e in ordered], RESULTS_KIND)
        if not ordered:
            raise ListFormatError("a result list needs at least one entry")
        return cls(header, rule_hash, new_model_hash, ordered)

    @property
    def total_reward(self) -> int:
        return sum(e.reward for e in self.entries)

    @property
    def accepted(self) -> int:
        return sum(1 for e in self.entries if e.status == 0)

    def canonical_bytes(self) -> bytes:
        return _canonical({
            "kind": RESULTS_KIND,
            "version": LIST_VERSION,
            **self.header.to_json(),
            "ruleHash": _hex(self.rule_hash),
            "newModelHash": _hex(self.new_model_hash),
            "entries": [
                {"participant": e.participant, "status": e.status, "score": e.score, "reward": e.reward,
                 "reputation": e.reputation}
                for e in self.entries
            ],
        })

    @classmethod
    def from_bytes(cls, data: bytes) -> ResultList:
        doc = _parse(data, RESULTS_KIND)
        entries = []
        for i, e in enumerate(doc["entries"]):
            if not isinstance(e, dict):
                raise ListFormatError(f"entry {i} is not an object")
            entries.append(ResultEntry(
                _address(e.get("participant"), f"entry {i} participant"),
                _int(e.get("status"), f"entry {i} status", 0, 255),
                _int(e.get("score"), f"entry {i} score", -(2**31), 2**31 - 1),
                _int(e.get("reward"), f"entry {i} reward", 0, 2**256 - 1),
                _int(e.get("reputation"), f"entry {i} reputation", 0, 2**32 - 1),
            ))
        _check_sorted([e.participant for e in entries], RESULTS_KIND)
        return cls(
            ListHeader.from_json(doc),
            _bytes(doc.get("ruleHash"), 32, "ruleHash"),
            _bytes(doc.get("newModelHash"), 32, "newModelHash"),
            tuple(entries),
        )

    @cached_property
    def tree(self) -> StandardMerkleTree:
        r = self.header.round_id
        return StandardMerkleTree.of([e.leaf(r) for e in self.entries], RESULT_LEAF_TYPES)

    @property
    def root(self) -> bytes:
        return self.tree.root

    def entry(self, participant: str) -> ResultEntry | None:
        want = participant.lower()
        return next((e for e in self.entries if e.participant.lower() == want), None)

    def proof(self, participant: str) -> list[bytes]:
        want = participant.lower()
        for i, e in enumerate(self.entries):
            if e.participant.lower() == want:
                return self.tree.proof(i)
        raise KeyError(participant)
