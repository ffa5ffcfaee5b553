"""What operators, participants and the aggregator do, expressed over the gateways, a blob store and trainer/.

This is the composition root's working layer: it is the only place where chain/ (hashes, CIDs, addresses),
storage/ (bytes) and trainer/ (tensors) meet.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from eth_account.messages import encode_typed_data
from eth_account.signers.local import LocalAccount

from chain.deploy import Deployment
from chain.errors import ContractRevert
from chain.failpoints import failpoint
from chain.eip712 import commitment_typed_data, registration_typed_data  # noqa: F401 (re-exported too)
from chain.gateways.federated_rounds import Claim
from chain.lists import CommitmentBatch, ListHeader, ResultList, SignedCommitment
from chain.transactor import TxResult
from fedledger.history import ChainHistory, RoundRecord
from fedledger.privacy import commit_private, ledger_gateway
from fedledger.settlement import (
    CommittedSet,
    ReputationLedger,
    committed_set,
    derive_results,
    evaluate_committed,
    header_of,
    history_rows,
    load_results,
    stakes_at_open,
)
from storage import BlobIntegrityError, BlobNotFound, BlobRef, BlobStore
from trainer.aggregation import RoundOutcome, Submission, evaluate_round
from trainer.errors import RuleError
from trainer.model import ModelSpec, Params
from trainer.incentives import SLASHABLE
from trainer.privacy import Mechanism, epsilon_to_micro
from trainer.rules import RuleConfig, Status
from trainer.serialization import deserialize, serialize

log = logging.getLogger(__name__)


class ModelIntegrityError(Exception):
    """A global model fetched from the store does not match the chain."""


def fetch_params(store: BlobStore, uri: str, expected_hash: bytes, spec: ModelSpec | None = None) -> Params:
    """A global model by URI, checked against its on-chain hash (and the expected architecture, if given)."""
    data = store.get(uri, expected_hash)
    return deserialize(data, spec.shapes() if spec is not None else None)


def sign_commitment(account: LocalAccount, chain_id: int, rounds_address: str, round_id: int, ref: BlobRef) -> bytes:
    typed = commitment_typed_data(chain_id, rounds_address, round_id, ref.content_hash, ref.uri)
    return bytes(account.sign_message(encode_typed_data(full_message=typed)).signature)


def sign_registration(account: LocalAccount, chain_id: int, registry_address: str, deadline: int) -> bytes:
    """The EIP-712 Registration(account, deadline) an operator relays with ``registerFor``."""
    typed = registration_typed_data(chain_id, registry_address, account.address, deadline)
    return bytes(account.sign_message(encode_typed_data(full_message=typed)).signature)


@dataclass
class Operator:
    deployment: Deployment
    store: BlobStore
    address: str

    def publish_genesis(self, params: Params) -> tuple[BlobRef, TxResult]:
        ref = self.store.put(serialize(params))
        return ref, self.deployment.rounds.publish_genesis(ref.content_hash, ref.uri, sender=self.address)

    def open_round(self, rule: RuleConfig, *, duration_s: int = 3600) -> tuple[int, TxResult]:
        rule_ref = self.store.put(rule.canonical_bytes())  # its sha256 is rule.rule_hash()
        now = int(self.deployment.token.transactor.w3.eth.get_block("latest")["timestamp"])
        result = self.deployment.rounds.open_round(
            now + duration_s, rule_ref.content_hash, rule_ref.uri, rule.reward_budget, rule.reputation_decay_ppm,
            sender=self.address,
        )
        (opened,) = self.deployment.rounds.round_opened_in(result)
        return opened.round_id, result

    def close_round(self, round_id: int) -> TxResult:
        return self.deployment.rounds.close_round(round_id, sender=self.address)

    def post_batch(self, round_id: int, entries: Sequence[SignedCommitment]) -> tuple[CommitmentBatch, BlobRef, TxResult]:
        """Relay many signed commitments with one transaction: the signed list goes to the store, its root and
        hash on-chain (``commitBatch``; this operator holds RELAYER_ROLE)."""
        t = self.deployment.rounds.transactor
        batch = CommitmentBatch.build(ListHeader(t.chain_id, self.deployment.rounds.address, round_id), entries)
        list_ref = self.store.put(batch.canonical_bytes())
        tx = self.deployment.rounds.commit_batch(
            round_id, batch.root, len(batch.entries), list_ref.content_hash, list_ref.uri, sender=self.address
        )
        return batch, list_ref, tx

    def admit(self, account: str) -> TxResult:
        """Admit ``account`` to register (a consortium's registry, deployed with admission required)."""
        return self.deployment.registry.admit(account, sender=self.address)

    def set_privacy_budget(self, epsilon: float, participant: str | None = None) -> TxResult:
        """The privacy budget (epsilon, basic composition) for everyone without their own, or for ``participant``."""
        gw = ledger_gateway(self.deployment)
        micro = epsilon_to_micro(epsilon)
        if participant is None:
            return gw.set_default_budget(micro, sender=self.address)
        return gw.set_participant_budget(participant, micro, sender=self.address)

    def relay_private(self, participant: str, round_id: int, ref: BlobRef, mechanism: Mechanism,
                      signature: bytes) -> TxResult:
        """Relay a DP commitment: the spend is recorded and the update committed in one transaction."""
        return commit_private(self.deployment, participant=participant, round_id=round_id, ref=ref,
                              mechanism=mechanism, signature=signature, sender=self.address)

    def relay(self, participant: str, round_id: int, ref: BlobRef, signature: bytes) -> TxResult:
        return self.deployment.rounds.commit_update_signed(
            participant, round_id, ref.content_hash, ref.uri, signature, sender=self.address
        )


@dataclass
class ParticipantClient:
    """One participant's side: its wallet, its private data, its view of the chain."""

    deployment: Deployment
    store: BlobStore
    address: str
    spec: ModelSpec

    def register(self, stake: int | None = None) -> TxResult:
        """Register this wallet, staking ``stake`` wei of its own ether (default: the registry's minimum)."""
        registry = self.deployment.registry
        return registry.register(sender=self.address, value=registry.min_stake() if stake is None else stake)

    def deposit_stake(self, amount: int) -> TxResult:
        """Top up this identity's stake (e.g. after a slash took it below the minimum)."""
        return self.deployment.registry.deposit_stake(self.address, sender=self.address, value=amount)

    def request_withdrawal(self) -> TxResult:
        return self.deployment.registry.request_withdrawal(sender=self.address)

    def withdraw(self) -> TxResult:
        return self.deployment.registry.withdraw(sender=self.address)

    def fetch_global_model(self) -> Params:
        model = self.deployment.rounds.global_model()
        return fetch_params(self.store, model.cid, model.model_hash, self.spec)

    def upload(self, update: Params) -> BlobRef:
        return self.store.put(serialize(update))

    def commit(self, round_id: int, ref: BlobRef) -> TxResult:
        return self.deployment.rounds.commit_update(round_id, ref.content_hash, ref.uri, sender=self.address)

    def submit(self, round_id: int, update: Params) -> tuple[BlobRef, TxResult]:
        """Store the update, then commit it by own transaction. If storing fails nothing is committed: a
        commitment to bytes nobody can fetch would only cost the participant its reputation."""
        ref = self.upload(update)
        return ref, self.commit(round_id, ref)

    def upload_private(self, update: Params, mechanism: Mechanism) -> BlobRef:
        """The update with its DP mechanism in the safetensors header: the content hash commits to both."""
        return self.store.put(serialize(update, mechanism.to_metadata()))

    def submit_private(self, round_id: int, update: Params, mechanism: Mechanism) -> tuple[BlobRef, TxResult]:
        """Store a DP update and commit it with its (epsilon, delta) through the PrivacyLedger, in one transaction
        (signed by this participant, sent by it). Raises ``PrivacyBudgetExceeded`` when over the budget."""
        ref = self.upload_private(update, mechanism)
        return ref, commit_private(self.deployment, participant=self.address, round_id=round_id, ref=ref,
                                   mechanism=mechanism, signature=self.sign(round_id, ref), sender=self.address)

    def sign(self, round_id: int, ref: BlobRef) -> bytes:
        t = self.deployment.rounds.transactor
        return sign_commitment(t.account(self.address), t.chain_id, self.deployment.rounds.address, round_id, ref)


def gather_submissions(store: BlobStore, record: RoundRecord) -> list[Submission]:
    """Fetch every committed blob; unavailable or tampered ones become recorded failures, not exceptions."""
    out = []
    for c in record.commitments:
        try:
            out.append(Submission(c.participant, store.get(c.cid, c.content_hash)))
        except BlobNotFound as exc:
            out.append(Submission(c.participant, None, Status.UNAVAILABLE, str(exc)))
        except BlobIntegrityError as exc:
            out.append(Submission(c.participant, None, Status.HASH_MISMATCH, str(exc)))
    return out


def shapes_of(params: Params) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in params.items()}


def previous_base(store: BlobStore, history: ChainHistory, round_id: int) -> Params | None:
    """Round ``round_id - 1``'s base model (None for round 1): with this round's base it gives the previous global
    step, a public vector the rule treats as a free-ride when an update resends it."""
    if round_id <= 1:
        return None
    prev = history.round(round_id - 1)
    return fetch_params(store, prev.base_model_cid, prev.base_model_hash)


@dataclass
class Aggregator:
    """Finalizes rounds. It needs no model code: the committed base model defines the shapes updates must have."""

    deployment: Deployment
    store: BlobStore
    address: str

    def __post_init__(self) -> None:
        self.history = ChainHistory(self.deployment)
        self.reputation = ReputationLedger(self.history, self.store)

    def finalize(self, round_id: int) -> tuple[RoundOutcome, BlobRef, TxResult]:
        record = self.history.round(round_id)
        rule = RuleConfig.from_bytes(self.store.get(record.rule_cid, record.rule_hash))
        if rule.stake_weighted:
            raise RuleError(f"round {round_id}'s rule (version {rule.version}) splits rewards by stake; "
                            "finalizeRound pays by score alone: finalize it with Merkle settlement")
        base = fetch_params(self.store, record.base_model_cid, record.base_model_hash)
        previous = previous_base(self.store, self.history, round_id)
        outcome = evaluate_round(base, gather_submissions(self.store, record), rule, previous,
                                 reputation=self.reputation.before(round_id),
                                 history=history_rows(self.store, self.history, round_id, shapes_of(base), rule))
        failpoint("aggregator:after-fetch")
        for v in outcome.verdicts:
            if v.status != Status.ACCEPTED:
                log.info("round %d: rejected %s (%s) %s", round_id, v.participant, v.status.name, v.detail)
        new_ref = self.store.put(serialize(outcome.new_params))
        failpoint("aggregator:after-store")
        result = self.deployment.rounds.finalize_round(
            round_id,
            new_ref.content_hash,
            new_ref.uri,
            [v.participant for v in outcome.verdicts],
            [v.score for v in outcome.verdicts],
            [int(v.status) for v in outcome.verdicts],
            sender=self.address,
        )
        failpoint("aggregator:after-receipt")
        return outcome, new_ref, result


@dataclass
class PreparedResults:
    """A Merkle-settled round, computed but not yet committed: the outcome, the new model and the result list."""

    round_id: int
    outcome: RoundOutcome
    new_ref: BlobRef
    results: ResultList
    committed: CommittedSet


@dataclass
class MerkleAggregator(Aggregator):
    """Finalizes rounds with one results root (``finalizeRoundWithResults``): gas does not grow with participants;
    rewards and reputation are claimed by proof. The rule runs streamed from files, so memory does not grow with
    participants x parameters either."""

    def prepare(self, round_id: int) -> PreparedResults:
        record = self.history.round(round_id)
        rule = RuleConfig.from_bytes(self.store.get(record.rule_cid, record.rule_hash))
        base = fetch_params(self.store, record.base_model_cid, record.base_model_hash)
        previous = previous_base(self.store, self.history, round_id)
        committed = committed_set(self.history, self.store, record)
        for problem in committed.problems:
            log.warning("round %d: %s (entry not counted)", round_id, problem)
        if not committed.commitments:
            raise ValueError(f"round {round_id} has no commitments to settle")
        prior = self.reputation.before(round_id)
        stakes = None
        if rule.stake_weighted:  # versions 6 to 8: rewards (from 7 the median's votes, from 8 the norm) by stake
            who = [c.participant for c in committed.commitments]
            stakes = dict(zip(who, stakes_at_open(self.history, record, who), strict=True))
        outcome, _ = evaluate_committed(self.store, base, committed.commitments, rule, previous, prior,
                                        history_rows(self.store, self.history, round_id, shapes_of(base), rule),
                                        stakes)
        failpoint("aggregator:after-fetch")
        new_ref = self.store.put(serialize(outcome.new_params))
        results = derive_results(
            header_of(self.history, round_id), record.rule_hash, new_ref.content_hash, outcome, prior,
            budget=record.reward_budget, decay_ppm=record.reputation_decay,
            stakes=None if stakes is None else [stakes[v.participant] for v in outcome.verdicts],
        )
        return PreparedResults(round_id, outcome, new_ref, results, committed)

    def commit(self, prepared: PreparedResults) -> tuple[BlobRef, TxResult, list[TxResult]]:
        """Store the result list, commit its root, then prove its slashable verdicts (``slash``). Returns the list's
        reference, the finalizing transaction and the slash transactions. (Tests pass altered lists here to exercise
        the audit.)"""
        results = prepared.results
        list_ref = self.store.put(results.canonical_bytes())
        failpoint("aggregator:after-store")
        tx = self.deployment.rounds.finalize_round_with_results(
            prepared.round_id, prepared.new_ref.content_hash, prepared.new_ref.uri, results.root,
            list_ref.content_hash, list_ref.uri, len(results.entries), results.accepted, results.total_reward,
            sender=self.address,
        )
        failpoint("aggregator:after-receipt")
        return list_ref, tx, self.slash(prepared.round_id, results)

    def slash(self, round_id: int, results: ResultList) -> list[TxResult]:
        """Prove every slashable verdict of a committed result list to ``FederatedRounds.slash`` (anyone may; the
        aggregator does it right after committing, well within the registry's withdrawal delay). Verdicts already
        slashed are skipped, so a retry after a crash sends only what is missing."""
        d = self.deployment
        sent = []
        for e in results.entries:
            if e.status in SLASHABLE and not d.registry.is_slashed(e.participant, round_id):
                try:
                    sent.append(d.rounds.slash(round_id, e.participant, e.status, e.score, e.reward, e.reputation,
                                               results.proof(e.participant), sender=self.address))
                except ContractRevert as exc:  # e.g. someone else's proof landed first: the round is settled anyway
                    log.warning("round %d: slash of %s not sent: %s", round_id, e.participant, exc)
        return sent

    def finalize(self, round_id: int) -> tuple[RoundOutcome, BlobRef, TxResult]:
        prepared = self.prepare(round_id)
        _, tx, _ = self.commit(prepared)
        return prepared.outcome, prepared.new_ref, tx


def claims_for(
    history: ChainHistory, store: BlobStore, participant: str, round_ids: Sequence[int] | None = None
) -> list[Claim]:
    """``participant``'s unclaimed results of Merkle-finalized rounds with their proofs (from the public lists)."""
    rounds = history.d.rounds
    ids = round_ids if round_ids is not None else range(1, history.round_count() + 1)
    out = []
    for rid in ids:
        record = history.round(rid)
        if record.results is None or rounds.is_claimed(rid, participant):
            continue
        results = load_results(store, record)
        entry = results.entry(participant)
        if entry is None:
            continue
        out.append(Claim(rid, entry.status, entry.score, entry.reward, entry.reputation, results.proof(participant)))
    return out
