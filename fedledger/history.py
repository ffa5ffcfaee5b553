"""Read a round's public record from the chain: what was opened, committed, decided, minted.

Everything here comes from contract views and events (read in bounded block windows); nothing from any
aggregator's memory. Both the aggregator and the auditor read rounds through this module.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from chain.deploy import Deployment
from chain.errors import ChainError
from chain.gateway import EventRecord, read_logs


class UnknownRound(ChainError):
    def __init__(self, round_id: int, count: int) -> None:
        super().__init__(f"round {round_id} does not exist (rounds opened so far: {count})")
        self.round_id = round_id
        self.count = count


ZERO_ADDRESS = "0x0000000000000000000000000000000000000000"
ROUND_STATES = {0: "none", 1: "open", 2: "closed", 3: "finalized"}


@dataclass(frozen=True)
class CommittedUpdate:
    participant: str
    content_hash: bytes
    cid: str
    relayer: str
    block_number: int


@dataclass(frozen=True)
class ScoredUpdate:
    participant: str
    status: int
    score: int
    reward: int
    reputation: int


@dataclass(frozen=True)
class BatchRecord:
    """A relayer's batch of signed commitments (``CommitmentBatchPosted``): the list itself is a blob."""

    batch_index: int
    root: bytes
    list_hash: bytes
    list_cid: str
    entries: int
    relayer: str
    block_number: int


@dataclass(frozen=True)
class ResultsRecord:
    """What ``finalizeRoundWithResults`` committed: the results root, the list's blob, its size and reward total."""

    root: bytes
    list_hash: bytes
    list_cid: str
    entries: int
    total: int
    block_number: int


@dataclass(frozen=True)
class ClaimRecord:
    participant: str
    status: int
    score: int
    reward: int
    reputation: int
    block_number: int
    tx_hash: str


@dataclass
class RoundRecord:
    round_id: int
    state: str
    deadline: int
    base_model_hash: bytes
    base_model_cid: str
    rule_hash: bytes
    rule_cid: str
    reward_budget: int
    reputation_decay: int
    commitments: list[CommittedUpdate] = field(default_factory=list)
    new_model_hash: bytes = b""
    new_model_cid: str = ""
    scored: list[ScoredUpdate] = field(default_factory=list)
    minted: int = 0
    reputation_before: dict[str, int] = field(default_factory=dict)
    opened_block: int = 0
    finalized_block: int = 0
    finalize_tx: str = ""
    batches: list[BatchRecord] = field(default_factory=list)
    results: ResultsRecord | None = None  # set when the round was finalized with a Merkle root
    claims: list[ClaimRecord] = field(default_factory=list)


class ChainHistory:
    """An in-memory index of the deployment's events, read once and extended incrementally (one windowed
    eth_getLogs pass over all three contracts), plus contract views for current state."""

    def __init__(self, deployment: Deployment) -> None:
        self.d = deployment
        self.start = deployment.manifest.deployment_block
        self._cursor = self.start - 1
        self._events: list[EventRecord[Any]] = []

    def refresh(self) -> None:
        t = self.d.rounds.transactor
        head = int(t.with_retries(lambda: t.w3.eth.block_number))
        if head > self._cursor:
            gateways = [self.d.rounds, self.d.registry, self.d.token]
            if self.d.privacy is not None:
                gateways.append(self.d.privacy)  # type: ignore[arg-type]
            self._events.extend(read_logs(gateways, self._cursor + 1, head))
            self._cursor = head

    def events(self, name: str, **match: Any) -> list[EventRecord[Any]]:
        """Events called ``name`` whose args equal every keyword given (after a refresh)."""
        self.refresh()
        return [
            e for e in self._events if e.name == name and all(getattr(e.args, k) == v for k, v in match.items())
        ]

    def round_count(self) -> int:
        return self.d.rounds.round_count()

    def genesis_hash(self) -> bytes:
        events = self.events("GenesisModelPublished")
        if not events:
            raise ChainError("no genesis model has been published")
        return events[0].args.model_hash

    def model_cid(self, model_hash: bytes) -> str:
        """The CID under which a global model with ``model_hash`` was published (genesis or a finalized round)."""
        for ev in self.events("GenesisModelPublished", model_hash=model_hash):
            return ev.args.cid
        for fin in self.events("RoundFinalized", new_model_hash=model_hash):
            return fin.args.new_model_cid
        raise ChainError(f"no published model with hash 0x{model_hash.hex()}")

    def round(self, round_id: int) -> RoundRecord:
        count = self.round_count()
        if not 1 <= round_id <= count:
            raise UnknownRound(round_id, count)
        info = self.d.rounds.get_round(round_id)
        (opened,) = self.events("RoundOpened", round_id=round_id)
        rec = RoundRecord(
            round_id=round_id,
            state=ROUND_STATES[info.state],
            deadline=info.deadline,
            base_model_hash=info.base_model_hash,
            base_model_cid=self.model_cid(info.base_model_hash),
            rule_hash=info.rule_hash,
            rule_cid=opened.args.rule_cid,
            reward_budget=info.reward_budget,
            reputation_decay=info.reputation_decay,
            opened_block=opened.block_number,
        )
        for ev in self.events("UpdateCommitted", round_id=round_id):
            a = ev.args
            rec.commitments.append(CommittedUpdate(a.participant, a.content_hash, a.cid, a.relayer, ev.block_number))
        rec.commitments.sort(key=lambda c: c.participant.lower())
        for ev in self.events("CommitmentBatchPosted", round_id=round_id):
            a = ev.args
            rec.batches.append(BatchRecord(a.batch_index, a.root, a.list_hash, a.list_cid, a.entries, a.relayer,
                                           ev.block_number))
        rec.batches.sort(key=lambda b: b.batch_index)
        if info.state == 3:
            (fin,) = self.events("RoundFinalized", round_id=round_id)
            rec.new_model_hash = fin.args.new_model_hash
            rec.new_model_cid = fin.args.new_model_cid
            rec.minted = fin.args.minted
            rec.finalized_block = fin.block_number
            rec.finalize_tx = fin.tx_hash
            for ev in self.events("RoundResultsCommitted", round_id=round_id):
                a = ev.args
                rec.results = ResultsRecord(a.root, a.list_hash, a.list_cid, a.entries, a.total, ev.block_number)
                rec.minted = info.minted  # minted by claims, counted by the contract
            for ev in self.events("RewardClaimed", round_id=round_id):
                a = ev.args
                rec.claims.append(ClaimRecord(a.participant, a.status, a.score, a.reward, a.reputation,
                                              ev.block_number, ev.tx_hash))
            for ev in self.events("ContributionScored", round_id=round_id):
                a = ev.args
                rec.scored.append(ScoredUpdate(a.participant, a.status, a.score, a.reward, a.reputation))
            for rep in self.events("ReputationUpdated", round_id=round_id):
                rec.reputation_before[rep.args.account] = rep.args.previous
        return rec

    def active_at(self, block: int) -> set[str]:
        """The accounts registered and not suspended after ``block`` (from the registry's events; what
        ``commitUpdate`` checks on-chain, re-derived for batched commitments the contract never saw)."""
        self.refresh()
        active: set[str] = set()
        for e in self._events:
            if e.block_number > block:
                break
            if e.name in ("ParticipantRegistered", "ParticipantReinstated"):
                active.add(e.args.account)
            elif e.name == "ParticipantSuspended":
                active.discard(e.args.account)
        return active

    def minted_to(self, account: str, *, block: int) -> int:
        """FED minted to ``account`` in ``block`` (Transfer events from the zero address)."""
        return sum(
            e.args.value
            for e in self.events("Transfer", from_=ZERO_ADDRESS, to=account)
            if e.block_number == block
        )
