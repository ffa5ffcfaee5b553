"""Median reference, scoring, decisions and aggregation: plain functions over a stack of flat updates.

Every function takes participants in ascending address order and is deterministic bit for bit (see rules.py).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from trainer.errors import UpdateRejected
from trainer.model import Params
from trainer.rules import SCORE_SCALE, RuleConfig, Status
from trainer.serialization import deserialize


def flatten(params: Mapping[str, torch.Tensor]) -> torch.Tensor:
    return torch.cat([params[k].reshape(-1).to(torch.float32) for k in sorted(params)])


def unflatten(flat: torch.Tensor, shapes: Mapping[str, tuple[int, ...]]) -> Params:
    out: Params = {}
    offset = 0
    for name in sorted(shapes):
        n = math.prod(shapes[name])
        out[name] = flat[offset : offset + n].reshape(shapes[name]).contiguous().clone()
        offset += n
    if offset != flat.numel():
        raise ValueError(f"flat vector has {flat.numel()} values, shapes need {offset}")
    return out


def coordinate_median(stack: torch.Tensor) -> torch.Tensor:
    """Coordinate-wise median of ``stack`` [n, d]: the middle order statistic, or the midpoint of the two middle
    ones for even n (computed as lo*0.5 + hi*0.5, which cannot overflow). Exact and order-invariant."""
    n = stack.shape[0]
    if n == 0:
        raise ValueError("median of zero updates")
    if n % 2 == 1:
        return torch.kthvalue(stack, n // 2 + 1, dim=0).values
    ordered = torch.sort(stack, dim=0).values
    return ordered[n // 2 - 1] * 0.5 + ordered[n // 2] * 0.5


def exact_dot(a: torch.Tensor, b: torch.Tensor) -> float:
    """<a, b> of float32 vectors as a correctly rounded float64: each product is exact in float64 and
    ``math.fsum`` rounds the sum once, so the result does not depend on summation order, SIMD or threads."""
    return math.fsum(np.multiply(a.numpy().astype(np.float64), b.numpy().astype(np.float64)))


def exact_norm(a: torch.Tensor) -> float:
    return math.sqrt(exact_dot(a, a))


@dataclass(frozen=True)
class Scores:
    cosine: list[float]
    norm_ratio: list[float]
    clip: list[float]  # c_i in rules.py: min(1, max_norm_ratio / r_i)
    fixed: list[int]  # committed score, 1e-6 units


def score_updates(stack: torch.Tensor, reference: torch.Tensor, rule: RuleConfig) -> Scores:
    ref_norm = exact_norm(reference)
    norms = [exact_norm(u) for u in stack]
    typical = float(np.median(np.asarray(norms, dtype=np.float64))) if norms else 0.0
    cosine, ratio, clip, fixed = [], [], [], []
    for u, norm in zip(stack, norms, strict=True):
        cos = exact_dot(u, reference) / (norm * ref_norm) if norm > 0 and ref_norm > 0 else 0.0
        cos = max(-1.0, min(1.0, cos))
        r = norm / typical if typical > 0 else (0.0 if norm == 0 else math.inf)
        c = 1.0 if r <= rule.max_norm_ratio else rule.max_norm_ratio / r
        cosine.append(cos)
        ratio.append(r)
        clip.append(c)
        fixed.append(round(cos * c * SCORE_SCALE))
    return Scores(cosine, ratio, clip, fixed)


def decide(score: int, norm_ratio: float, rule: RuleConfig) -> Status:
    """The decision for a valid update with committed ``score`` and (exactly recomputable) ``norm_ratio``."""
    if rule.aggregator != "median-verified-mean":
        return Status.ACCEPTED
    if norm_ratio > rule.max_norm_ratio:
        return Status.NORM_OUTLIER
    return Status.ACCEPTED if score >= rule.min_score_fixed else Status.LOW_SCORE


def aggregate(
    base: torch.Tensor,
    stack: torch.Tensor,
    accepted: Sequence[bool],
    rule: RuleConfig,
    reference: torch.Tensor | None = None,
) -> torch.Tensor:
    """New flat global model from the valid updates ``stack`` (address order) and the accept flags.

    The mean is taken around the median reference m: ``m + (sum_i (c_i u_i - m)) / k``, accumulated one update
    at a time in address order with element-wise float32 operations. It equals the plain mean mathematically,
    is bit-reproducible on any CPU, and returns exactly u when every accepted update is u.
    """
    if stack.shape[0] == 0:
        return base.clone()
    ref = coordinate_median(stack) if reference is None else reference
    if rule.aggregator == "median":
        return base + ref
    total = torch.zeros_like(base)
    k = 0
    for u, ok in zip(stack, accepted, strict=True):
        if ok:
            total = total + (u - ref)
            k += 1
    if k == 0:
        return base.clone()
    return base + (ref + total / k)


@dataclass(frozen=True)
class Submission:
    """What the aggregator (or an auditor) holds for one committed update."""

    participant: str
    payload: bytes | None
    failure: Status | None = None  # set by the fetcher: UNAVAILABLE or HASH_MISMATCH
    detail: str = ""


@dataclass(frozen=True)
class Verdict:
    participant: str
    status: Status
    score: int
    detail: str = ""
    cosine: float | None = None
    norm_ratio: float | None = None


@dataclass(frozen=True)
class ValidSet:
    participants: list[str]
    stack: torch.Tensor  # [n_valid, d]
    invalid: list[Verdict]


def validate(submissions: Sequence[Submission], shapes: Mapping[str, tuple[int, ...]]) -> ValidSet:
    ordered = sorted(submissions, key=lambda s: s.participant.lower())
    d = sum(math.prod(s) for s in shapes.values())
    valid: list[str] = []
    rows: list[torch.Tensor] = []
    invalid: list[Verdict] = []
    for sub in ordered:
        if sub.failure is not None or sub.payload is None:
            invalid.append(Verdict(sub.participant, sub.failure or Status.UNAVAILABLE, 0, sub.detail))
            continue
        try:
            params = deserialize(sub.payload, shapes)
        except UpdateRejected as exc:
            invalid.append(Verdict(sub.participant, exc.status, 0, exc.detail))
            continue
        valid.append(sub.participant)
        rows.append(flatten(params))
    stack = torch.stack(rows) if rows else torch.zeros((0, d), dtype=torch.float32)
    return ValidSet(valid, stack, invalid)


@dataclass(frozen=True)
class RoundOutcome:
    verdicts: list[Verdict]  # one per submission, ascending address
    new_params: Params

    @property
    def accepted(self) -> list[str]:
        return [v.participant for v in self.verdicts if v.status == Status.ACCEPTED]


def evaluate_round(
    base: Params, submissions: Sequence[Submission], rule: RuleConfig
) -> RoundOutcome:
    """Validate, score against the median reference, decide, and aggregate one round."""
    shapes = {k: tuple(v.shape) for k, v in base.items()}
    vs = validate(submissions, shapes)
    verdicts = list(vs.invalid)
    base_flat = flatten(base)
    if vs.participants:
        reference = coordinate_median(vs.stack)
        scores = score_updates(vs.stack, reference, rule)
        statuses = [decide(s, r, rule) for s, r in zip(scores.fixed, scores.norm_ratio, strict=True)]
        for i, p in enumerate(vs.participants):
            verdicts.append(Verdict(p, statuses[i], scores.fixed[i], "", scores.cosine[i], scores.norm_ratio[i]))
        accepted = [s == Status.ACCEPTED for s in statuses]
        new_flat = aggregate(base_flat, vs.stack, accepted, rule, reference)
    else:
        new_flat = base_flat.clone()
    verdicts.sort(key=lambda v: v.participant.lower())
    return RoundOutcome(verdicts, unflatten(new_flat, shapes))
