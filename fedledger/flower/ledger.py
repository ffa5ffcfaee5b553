"""The server side of fedledger under Flower: the platform's roles (Operator, Aggregator) over one stack.

A Flower strategy only adapts formats; this is where a round touches the chain and the blob store:

    open(rule)            Operator.open_round: rule + base model committed; a RoundTicket for the SuperNodes
    relay(ticket, upd)    check the participant's signatures, register its wallet (EIP-712 registerFor, relayed),
                          store the exact bytes it signed, relay its commitment (commitUpdateSigned)
    settle(round_id)      Operator.close_round, Aggregator.finalize: the median-referenced rule, new model,
                          scores, reputation and rewards (minted) committed

Where the blob goes: the SuperNode sends its canonical update bytes through Flower; the server stores them. The
participant signs (round, sha256, URI) where the URI is the one the store will give those bytes
(``storage.cids.uri_for``): the server cannot alter the bytes (the hash is signed), nor the address, nor forge
another participant's commitment (the contract checks the signature). What the server can do is drop an update;
the participant keeps its own signed copy to show that it sent one.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from chain.eip712 import commitment_typed_data, recover_signer, registration_typed_data
from chain.errors import ChainError
from fedledger.flower.protocol import RoundTicket, SignedUpdate
from fedledger.roles import Aggregator, Operator, fetch_params
from fedledger.stack import Stack
from storage import BlobRef, StorageError
from storage.base import sha256
from trainer.aggregation import Verdict
from trainer.model import Params
from trainer.rules import RuleConfig, Status
from trainer.serialization import serialize

log = logging.getLogger(__name__)

REGISTRATION_WINDOW_S = 24 * 3600


@dataclass(frozen=True)
class RelayFailure:
    """An update the server did not commit, and why (failures are data: the round goes on without it)."""

    participant: str  # "" when the reply did not even name one
    reason: str


@dataclass
class RoundLedger:
    """What the ledger did in one round: the on-chain results and its cost (gas, wall seconds on the server)."""

    round_id: int
    ticket: RoundTicket
    committed: list[str] = field(default_factory=list)
    failures: list[RelayFailure] = field(default_factory=list)
    verdicts: list[Verdict] = field(default_factory=list)
    rewards: dict[str, int] = field(default_factory=dict)  # participant -> minted FED (wei)
    minted: int = 0
    new_model: BlobRef | None = None
    gas: dict[str, int] = field(default_factory=lambda: {"open": 0, "register": 0, "commit": 0, "close": 0,
                                                         "finalize": 0})
    seconds: dict[str, float] = field(default_factory=lambda: {"open": 0.0, "relay": 0.0, "settle": 0.0})

    @property
    def accepted(self) -> list[str]:
        return [v.participant for v in self.verdicts if v.status == Status.ACCEPTED]

    @property
    def rejected(self) -> list[str]:
        return [v.participant for v in self.verdicts if v.status != Status.ACCEPTED]

    @property
    def gas_total(self) -> int:
        return sum(self.gas.values())

    @property
    def seconds_total(self) -> float:
        return sum(self.seconds.values())


class FlowerLedger:
    """One stack's operator and aggregator, driven round by round by the Flower strategy."""

    def __init__(self, stack: Stack, rule: RuleConfig | None = None, *, round_duration_s: int = 3600) -> None:
        if not stack.operator or not stack.aggregator:
            raise ValueError("a read-only stack cannot run rounds: it needs the operator and aggregator wallets")
        self.stack = stack
        self.rule = rule or RuleConfig()
        self.round_duration_s = round_duration_s
        self.operator = Operator(stack.deployment, stack.store, stack.operator)
        self.aggregator = Aggregator(stack.deployment, stack.store, stack.aggregator)
        self.rounds: list[RoundLedger] = []

    @property
    def uri_scheme(self) -> str:
        scheme = getattr(self.stack.store, "uri_scheme", None)
        if scheme is None:
            raise ValueError(f"the blob store {self.stack.store.location} does not say how it addresses blobs")
        return str(scheme)

    # ------------------------------------------------------------------ the global model

    def ensure_genesis(self, params: Params) -> bytes:
        """Publish ``params`` as the genesis model unless the chain has one; then the chain's current global model
        must be ``params`` (a strategy resumes only from the model the chain holds). Returns its hash."""
        rounds = self.stack.deployment.rounds
        current = rounds.global_model()
        wanted = sha256(serialize(params))
        if current.model_hash == bytes(32):
            ref, _ = self.operator.publish_genesis(params)
            return ref.content_hash
        if current.model_hash != wanted:
            raise ValueError(
                f"the chain's global model is 0x{current.model_hash.hex()}, the strategy was given 0x{wanted.hex()}: "
                "start from the chain's model (FlowerLedger.global_params) or use a fresh deployment"
            )
        return wanted

    def has_global_model(self) -> bool:
        return self.stack.deployment.rounds.global_model().model_hash != bytes(32)

    def global_params(self) -> Params:
        model = self.stack.deployment.rounds.global_model()
        return fetch_params(self.stack.store, model.cid, model.model_hash)

    # ------------------------------------------------------------------ one round

    def open(self) -> RoundLedger:
        started = time.perf_counter()
        d = self.stack.deployment
        round_id, tx = self.operator.open_round(self.rule, duration_s=self.round_duration_s)
        now = int(d.rounds.transactor.w3.eth.get_block("latest")["timestamp"])
        ticket = RoundTicket(
            round_id=round_id,
            chain_id=d.rounds.transactor.chain_id,
            rounds_address=d.rounds.address,
            registry_address=d.registry.address,
            base_hash=d.rounds.get_round(round_id).base_model_hash,
            uri_scheme=self.uri_scheme,
            registration_deadline=now + REGISTRATION_WINDOW_S,
        )
        record = RoundLedger(round_id, ticket)
        record.gas["open"] = tx.gas_used
        record.seconds["open"] = time.perf_counter() - started
        self.rounds.append(record)
        return record

    def relay(self, record: RoundLedger, update: SignedUpdate) -> RelayFailure | None:
        """Commit one participant's signed update, or say why not (nothing is committed then)."""
        started = time.perf_counter()
        try:
            failure = self._relay(record, update)
        finally:
            record.seconds["relay"] += time.perf_counter() - started
        if failure is not None:
            log.warning("round %d: not relayed %s: %s", record.round_id, failure.participant, failure.reason)
            record.failures.append(failure)
        else:
            record.committed.append(update.participant)
        return failure

    def _relay(self, record: RoundLedger, u: SignedUpdate) -> RelayFailure | None:
        t = record.ticket
        d = self.stack.deployment
        if sha256(u.update) != u.content_hash:
            return RelayFailure(u.participant, "the update bytes do not hash to the signed content hash")
        typed = commitment_typed_data(t.chain_id, t.rounds_address, t.round_id, u.content_hash, u.uri)
        if recover_signer(typed, u.signature) != u.participant:
            return RelayFailure(u.participant, "the commitment is not signed by the participant it names")
        if u.participant in record.committed:
            return RelayFailure(u.participant, "a second update for this round (one commitment per participant)")
        try:
            if d.registry.status_of(u.participant) == 0:
                reg = registration_typed_data(t.chain_id, t.registry_address, u.participant, u.registration_deadline)
                if recover_signer(reg, u.registration_signature) != u.participant:
                    return RelayFailure(u.participant, "the registration is not signed by the participant")
                # The operator (the federation's sponsor) pays each identity's stake: Flower clients hold no ether.
                # It does not top up a slashed identity: below the minimum stake, its commitments are refused.
                tx = d.registry.register_for(u.participant, u.registration_deadline, u.registration_signature,
                                             sender=self.operator.address, value=d.registry.min_stake())
                record.gas["register"] += tx.gas_used
            ref = self.stack.store.put(u.update)
            if ref.uri != u.uri:
                return RelayFailure(u.participant, f"the store addresses the update as {ref.uri}, signed {u.uri}")
            tx = self.operator.relay(u.participant, t.round_id, ref, u.signature)
            record.gas["commit"] += tx.gas_used
        except (ChainError, StorageError) as exc:  # a revert (suspended, late, replay) or a store failure
            return RelayFailure(u.participant, f"{type(exc).__name__}: {exc}")
        return None

    def settle(self, record: RoundLedger) -> Params:
        """Close the round and finalize it by the committed rule; returns the new global model."""
        started = time.perf_counter()
        d = self.stack.deployment
        record.gas["close"] = self.operator.close_round(record.round_id).gas_used
        outcome, new_ref, tx = self.aggregator.finalize(record.round_id)
        record.gas["finalize"] = tx.gas_used
        record.verdicts = list(outcome.verdicts)
        record.new_model = new_ref
        record.rewards = {s.participant: s.reward for s in d.rounds.contribution_scored_in(tx)}
        (finalized,) = d.rounds.round_finalized_in(tx)
        record.minted = finalized.minted
        record.seconds["settle"] = time.perf_counter() - started
        return outcome.new_params
