"""The privacy ledger where chain/ and trainer/ meet: committing a DP update with its (epsilon, delta), reading a
participant's ledger back from the chain, and the typed errors of both.

    commit: PrivacyLedger.commitUpdateWithPrivacy(round, hash, cid, epsilon_micro, delta_atto, signature) records
            the spend and commits the update (FederatedRounds.commitUpdateSigned) in one transaction.
    read:   PrivacySpent events (one per round and participant) + budget views; ``ledger_of`` below.

Units on-chain: epsilon in 1e-6 (``EPSILON_ONE``), delta in 1e-18 (``DELTA_ONE``); running totals are sums (basic
composition, what the contract enforces against the budget).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from eth_utils import to_checksum_address

from chain.deploy import Deployment
from chain.errors import ContractRevert
from chain.transactor import TxResult
from fedledger.history import ChainHistory
from storage import BlobRef
from trainer.privacy import DELTA_ONE, EPSILON_ONE, Mechanism

UNLIMITED = 2**64 - 1


class PrivacyLedgerUnavailable(LookupError):
    """The deployment has no PrivacyLedger (a manifest from before issue 13)."""

    def __init__(self) -> None:
        super().__init__("this deployment has no PrivacyLedger contract: redeploy to use differential privacy")


class PrivacyBudgetExceeded(Exception):
    """A DP update would take its participant's running epsilon over the operator's budget (nothing committed)."""

    def __init__(self, participant: str, spent_micro: int, requested_micro: int, budget_micro: int) -> None:
        super().__init__(
            f"privacy budget exceeded for {participant}: spent epsilon {spent_micro / EPSILON_ONE:.6f} + this "
            f"update's {requested_micro / EPSILON_ONE:.6f} > budget {budget_micro / EPSILON_ONE:.6f}"
        )
        self.participant = participant
        self.spent_micro = spent_micro
        self.requested_micro = requested_micro
        self.budget_micro = budget_micro

    def to_json(self) -> dict[str, Any]:
        return {
            "participant": self.participant,
            "spent_epsilon": self.spent_micro / EPSILON_ONE,
            "requested_epsilon": self.requested_micro / EPSILON_ONE,
            "budget_epsilon": self.budget_micro / EPSILON_ONE,
            "spent_micro": self.spent_micro,
            "requested_micro": self.requested_micro,
            "budget_micro": self.budget_micro,
        }


def ledger_gateway(d: Deployment):  # type: ignore[no-untyped-def]
    if d.privacy is None:
        raise PrivacyLedgerUnavailable()
    return d.privacy


def translate(exc: ContractRevert) -> Exception:
    """The ledger's budget revert as the typed Python error; any other revert unchanged."""
    if exc.error == "PrivacyBudgetExceeded":
        a = exc.args_by_name
        return PrivacyBudgetExceeded(a["participant"], a["spent"], a["requested"], a["budget"])
    return exc


def commit_private(
    d: Deployment, *, participant: str, round_id: int, ref: BlobRef, mechanism: Mechanism, signature: bytes,
    sender: str,
) -> TxResult:
    """Record ``mechanism``'s (epsilon, delta) for ``participant`` and commit ``ref`` in one transaction: by the
    participant itself (``sender == participant``) or relayed (``sender`` holds the ledger's RELAYER_ROLE)."""
    gw = ledger_gateway(d)
    eps, delta = mechanism.epsilon_micro, mechanism.delta_atto
    try:
        if sender.lower() == participant.lower():
            return gw.commit_update_with_privacy(round_id, ref.content_hash, ref.uri, eps, delta, signature,
                                                 sender=sender)
        return gw.commit_update_with_privacy_signed(participant, round_id, ref.content_hash, ref.uri, eps, delta,
                                                    signature, sender=sender)
    except ContractRevert as exc:
        raise translate(exc) from exc


@dataclass(frozen=True)
class LedgerEntry:
    round_id: int
    content_hash: str
    epsilon_micro: int
    delta_atto: int
    total_epsilon_micro: int
    total_delta_atto: int
    budget_micro: int
    block_number: int

    @property
    def epsilon(self) -> float:
        return self.epsilon_micro / EPSILON_ONE

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out.update(
            epsilon=self.epsilon_micro / EPSILON_ONE,
            delta=self.delta_atto / DELTA_ONE,
            total_epsilon=self.total_epsilon_micro / EPSILON_ONE,
            total_delta=self.total_delta_atto / DELTA_ONE,
            budget_epsilon=None if self.budget_micro == UNLIMITED else self.budget_micro / EPSILON_ONE,
        )
        return out


@dataclass
class ParticipantLedger:
    participant: str
    entries: list[LedgerEntry] = field(default_factory=list)
    spent_micro: int = 0
    spent_delta_atto: int = 0
    budget_micro: int = UNLIMITED

    @property
    def remaining_micro(self) -> int | None:
        if self.budget_micro == UNLIMITED:
            return None
        return max(0, self.budget_micro - self.spent_micro)

    def to_json(self) -> dict[str, Any]:
        remaining = self.remaining_micro
        return {
            "participant": self.participant,
            "composition": "basic (sums of per-round epsilon and delta), enforced on-chain",
            "epsilon_unit": "1e-6 (micro)",
            "delta_unit": "1e-18 (atto)",
            "rounds": [e.to_json() for e in self.entries],
            "spent_epsilon": self.spent_micro / EPSILON_ONE,
            "spent_delta": self.spent_delta_atto / DELTA_ONE,
            "spent_micro": self.spent_micro,
            "budget_epsilon": None if self.budget_micro == UNLIMITED else self.budget_micro / EPSILON_ONE,
            "budget_micro": None if self.budget_micro == UNLIMITED else self.budget_micro,
            "remaining_epsilon": None if remaining is None else remaining / EPSILON_ONE,
            "remaining_micro": remaining,
        }


def ledger_of(history: ChainHistory, participant: str) -> ParticipantLedger:
    """``participant``'s ledger from the chain: every PrivacySpent record, the running totals and the budget now."""
    gw = ledger_gateway(history.d)
    participant = to_checksum_address(participant)
    out = ParticipantLedger(participant)
    for ev in history.events("PrivacySpent", participant=participant):
        a = ev.args
        out.entries.append(LedgerEntry(a.round_id, "0x" + a.content_hash.hex(), a.epsilon, a.delta, a.total_epsilon,
                                       a.total_delta, a.budget, ev.block_number))
    spent = gw.spent_of(participant)
    out.spent_micro, out.spent_delta_atto = spent.epsilon, spent.delta
    out.budget_micro = gw.budget_of(participant)
    return out
