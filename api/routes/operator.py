from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Path
from pydantic import BaseModel, Field

from api.deps import Address, OperatorDep, PlatformDep
from trainer.data import DATASETS
from trainer.errors import RuleError
from trainer.rules import AGGREGATORS, MAX_HISTORY_ROUNDS, RuleConfig

router = APIRouter(prefix="/operator", tags=["operator"], dependencies=[OperatorDep])


class GenesisRequest(BaseModel):
    dataset: str = Field(default="digits", description=f"one of {', '.join(DATASETS)}", examples=["digits"])
    seed: int = Field(default=0, ge=0, lt=2**32)


class OpenRoundRequest(BaseModel):
    duration_s: int = Field(default=3600, ge=1, le=30 * 24 * 3600, examples=[3600])
    aggregator: str = Field(default="median-verified-mean", description=f"one of {', '.join(AGGREGATORS)}")
    min_score: float = Field(default=RuleConfig.min_score, ge=-1, le=1)
    max_norm_ratio: float = Field(default=RuleConfig.max_norm_ratio, gt=0, le=1e6,
                                  description="longer updates are clipped to this many typical norms")
    reject_norm_ratio: float = Field(default=RuleConfig.reject_norm_ratio, gt=0, le=1e6,
                                     description="and rejected beyond this many (must be >= max_norm_ratio)")
    duplicate_tolerance: float | None = Field(default=RuleConfig.duplicate_tolerance, ge=0, lt=1,
                                              description="copy radius in typical norms; null: no copy tests")
    reward_budget: int = Field(default=RuleConfig.reward_budget, ge=0, lt=2**128)
    reputation_decay_ppm: int = Field(default=RuleConfig.reputation_decay_ppm, ge=0, le=1_000_000)
    rule_version: int = Field(default=RuleConfig.version, ge=2, le=8,
                              description="median-verified-mean version: 8 (version 7 + an identity holding a times "
                                          "the median stake is allowed a times the typical norm; needs "
                                          "FEDLEDGER_SETTLEMENT=merkle), 7 (version 6 + the reference median "
                                          "counts each identity's stake as its votes; needs "
                                          "FEDLEDGER_SETTLEMENT=merkle), 6 (version 5 + rewards split by score "
                                          "times the stake at the round's open; needs FEDLEDGER_SETTLEMENT=merkle), "
                                          "5 (version 4 + small rounds take the "
                                          "previous rounds' accepted updates as third parties), 4 (version 3 + "
                                          "redundancy groups: copies "
                                          "perturbed by noise share one score), 3 (reputation-gated reference, "
                                          "trust-weighted aggregate) or 2 (median of every update, equal weights)")
    reference_gate_ppm: int = Field(default=RuleConfig.reference_gate_ppm, ge=0, le=1_000_000,
                                    description="versions 3 to 5: the reference median is taken over participants whose "
                                                "reputation is at least this share (ppm) of the median reputation")
    score_weight_power: int = Field(default=RuleConfig.score_weight_power, ge=0, le=3,
                                    description="versions 3 to 5: aggregation weight = score ** this * reputation ** ...")
    reputation_weight_power: int = Field(default=RuleConfig.reputation_weight_power, ge=0, le=3,
                                         description="versions 3 to 5: ... * reputation ** this")
    redundancy_ratio: float = Field(default=RuleConfig.redundancy_ratio, gt=0, le=1e6,
                                    description="versions 4 and 5: a pair is redundant when its difference puts at most this "
                                                "many times pure noise's share of energy in the others' span")
    redundancy_share: float = Field(default=RuleConfig.redundancy_share, gt=0, le=1,
                                    description="versions 4 and 5: ... and that energy is at most this share of the smaller "
                                                "update's (trainer/redundancy.py)")
    redundancy_min_third_parties: int = Field(default=RuleConfig.redundancy_min_third_parties, ge=1, le=10**6,
                                              description="versions 4 and 5: no redundancy test with fewer other "
                                                          "updates")
    redundancy_history_rounds: int = Field(default=RuleConfig.redundancy_history_rounds, ge=0,
                                           le=MAX_HISTORY_ROUNDS,
                                           description="version 5: a round of fewer representatives than "
                                                       "redundancy_min_third_parties + 2 takes the accepted updates "
                                                       "of this many previous rounds as third parties (2 "
                                                       "measured; 3 or more reach rounds of 4, whose honest pairs "
                                                       "the test groups: docs/robustness/v5)")


_V3_ONLY = ("reference_gate_ppm", "score_weight_power", "reputation_weight_power")
_V4_ONLY = ("redundancy_ratio", "redundancy_share", "redundancy_min_third_parties")
_V5_ONLY = ("redundancy_history_rounds",)


class PrivacyBudgetRequest(BaseModel):
    epsilon: float = Field(strict=True, ge=0, le=1.8e13, description="the epsilon budget (sum over rounds; 1e-6 resolution)",
                           examples=[10.0])
    participant: Address | None = Field(default=None, description="one participant's own budget; omit for the "
                                        "default of everyone without one", examples=[None])


class SuspendRequest(BaseModel):
    reason: str = Field(default="operator", min_length=1, max_length=32, examples=["spam"])


@router.post("/genesis", status_code=201, summary="Publish the genesis global model (once)")
def genesis(body: GenesisRequest, platform: PlatformDep) -> dict[str, Any]:
    return platform.publish_genesis(dataset=body.dataset, seed=body.seed)


@router.post("/rounds", status_code=201, summary="Open the next round on the current global model")
def open_round(body: OpenRoundRequest, platform: PlatformDep) -> dict[str, Any]:
    v3 = {k: getattr(body, k) for k in (*_V3_ONLY, *_V4_ONLY, *_V5_ONLY)}
    for version, names in ((3, _V3_ONLY), (4, _V4_ONLY), (5, _V5_ONLY)):
        if body.rule_version < version and any(v3[k] != getattr(RuleConfig, k) for k in names):
            given = ", ".join(k for k in names if k in body.model_fields_set)
            raise RuleError(f"rule version {body.rule_version} has no {given}: those are version {version} "
                            "parameters")
    rule = RuleConfig(aggregator=body.aggregator, min_score=body.min_score, max_norm_ratio=body.max_norm_ratio,
                      reject_norm_ratio=body.reject_norm_ratio, duplicate_tolerance=body.duplicate_tolerance,
                      reward_budget=body.reward_budget, reputation_decay_ppm=body.reputation_decay_ppm,
                      version=body.rule_version, **v3)
    return platform.open_round(duration_s=body.duration_s, rule=rule)


@router.post("/rounds/{round_id}/flush", summary="Post the batching relay's pending commitments of a round now",
             description="One commitBatch per FEDLEDGER_BATCH_SIZE entries. A failed post answers 409 RelayFailed "
                         "and loses nothing: the entries stay pending (or, once the round is closed or past its "
                         "deadline, are marked expired with the reason).")
def flush_round(platform: PlatformDep, round_id: int = Path(ge=1, lt=2**63)) -> dict[str, Any]:
    return platform.flush(round_id=round_id)


@router.post("/rounds/{round_id}/close", summary="Stop taking submissions (the relay's pending ones are posted first)")
def close_round(platform: PlatformDep, round_id: int = Path(ge=1, lt=2**63)) -> dict[str, Any]:
    return platform.close_round(round_id=round_id)


@router.post("/rounds/{round_id}/finalize", summary="Run the aggregator on a closed or expired round")
def finalize_round(platform: PlatformDep, round_id: int = Path(ge=1, lt=2**63)) -> dict[str, Any]:
    return platform.finalize_round(round_id=round_id)


@router.post("/participants/{address}/admit", summary="Admit a wallet to register (a consortium's registry)",
             description="Only on a registry deployed with admission required (`fedledger devnet up --admission`): "
                         "registration of an account no operator admitted fails with 403 RegistryNotAdmitted. "
                         "Once per account (409 RegistryAlreadyAdmitted); 409 RegistryAdmissionNotRequired on an "
                         "open registry.")
def admit(address: Address, platform: PlatformDep) -> dict[str, Any]:
    return platform.admit(address=address)


@router.post("/participants/{address}/suspend", summary="Suspend a participant")
def suspend(address: Address, body: SuspendRequest, platform: PlatformDep) -> dict[str, Any]:
    return platform.suspend(address=address, reason=body.reason)


@router.post("/privacy/budget", summary="Set the privacy budget (default, or one participant's)",
             description="On the PrivacyLedger: once a participant's running epsilon (basic composition) would "
                         "exceed it, its DP updates are refused (409 PrivacyBudgetExceeded).")
def privacy_budget(body: PrivacyBudgetRequest, platform: PlatformDep) -> dict[str, Any]:
    return platform.set_privacy_budget(epsilon=body.epsilon, participant=body.participant)
