"""Baseline robust aggregators over a stack of flat updates [n, d] (float32), for the robustness benchmark.

The platform's own rule (median reference, score, reject, mean of the accepted set) lives in trainer/aggregation.py
and trainer/rules.py; these are the published baselines it is compared with:

* ``fedavg``: the plain mean (McMahan et al. 2017), no defence;
* ``coordinate_median``: per-coordinate median (Yin et al. 2018), the midpoint of the two middle values for even n;
* ``trimmed_mean``: per coordinate, drop the f largest and f smallest values and average the rest (Yin et al. 2018);
* ``multi_krum``: score each update by the summed squared distance to its n-f-2 nearest others, average the m best
  (Blanchard et al. 2017; m = n - f by default);
* ``centered_clipping``: v <- v + mean_i clip_tau(u_i - v), from a centre (the previous aggregate), L times
  (Karimireddy et al. 2021).

Byzantine bounds are checked, never clamped: a bound that cannot hold raises ``ValueError`` naming n and f.
Every function is invariant to the order of the rows, bit for bit: means are taken over per-coordinate sorted values
(accumulated in float64), so the summation order does not depend on which participant came first.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

DEFENSES: tuple[str, ...] = ("fedavg", "median", "trimmed_mean", "multi_krum", "centered_clipping")


def _check_stack(stack: torch.Tensor) -> int:
    if stack.ndim != 2:
        raise ValueError(f"expected a stack of flat updates [n, d], got shape {tuple(stack.shape)}")
    if stack.shape[0] == 0:
        raise ValueError("cannot aggregate zero updates")
    if stack.dtype != torch.float32:
        raise ValueError(f"expected float32 updates, got {stack.dtype}")
    return int(stack.shape[0])


def _check_f(f: int, n: int, name: str) -> None:
    if f < 0:
        raise ValueError(f"{name}: f must be >= 0, got f={f}")
    if 2 * f >= n:
        raise ValueError(f"{name} tolerates f < n/2 Byzantine updates, got n={n}, f={f} (2f = {2 * f} >= n)")


def _invariant_mean(stack: torch.Tensor) -> torch.Tensor:
    """Mean over rows, independent of row order bit for bit: sum the per-coordinate sorted values in float64."""
    ordered = torch.sort(stack, dim=0).values.to(torch.float64)
    return (ordered.sum(dim=0) / stack.shape[0]).to(torch.float32)


def fedavg(stack: torch.Tensor) -> torch.Tensor:
    """The plain mean of all updates (unweighted: every participant counts once)."""
    _check_stack(stack)
    return _invariant_mean(stack)


def coordinate_median(stack: torch.Tensor, *, f: int | None = None) -> torch.Tensor:
    """Per-coordinate median; for even n the midpoint of the two middle values (as the platform's reference).
    With ``f`` given, checks the median's breakdown bound 2f < n."""
    n = _check_stack(stack)
    if f is not None:
        _check_f(f, n, "coordinate median")
    ordered = torch.sort(stack, dim=0).values
    if n % 2 == 1:
        return ordered[n // 2].clone()
    return ordered[n // 2 - 1] * 0.5 + ordered[n // 2] * 0.5


def trimmed_mean(stack: torch.Tensor, f: int) -> torch.Tensor:
    """Per coordinate: drop the ``f`` largest and ``f`` smallest values, average the remaining n - 2f. Needs 2f < n."""
    n = _check_stack(stack)
    _check_f(f, n, "trimmed mean")
    ordered = torch.sort(stack, dim=0).values[f : n - f].to(torch.float64)
    return (ordered.sum(dim=0) / (n - 2 * f)).to(torch.float32)


def pairwise_sq_distances(stack: torch.Tensor) -> torch.Tensor:
    """Squared Euclidean distances [n, n] in float64, each pair computed from its own difference vector (not via
    the Gram matrix), so a pair's distance does not depend on where the two rows sit in the stack."""
    x = stack.to(torch.float64)
    return torch.cdist(x, x, compute_mode="donot_use_mm_for_euclid_dist") ** 2


def krum_scores(stack: torch.Tensor, f: int) -> torch.Tensor:
    """Krum score of each update: the sum of squared distances to its n - f - 2 nearest other updates.
    Needs 2f + 2 < n (Blanchard et al. 2017)."""
    n = _check_stack(stack)
    if f < 0 or 2 * f + 2 >= n:
        raise ValueError(f"Krum needs 2f + 2 < n, got n={n}, f={f} (2f + 2 = {2 * f + 2})")
    dist = pairwise_sq_distances(stack)
    dist.fill_diagonal_(float("inf"))
    nearest = torch.sort(dist, dim=1).values[:, : n - f - 2]
    return nearest.sum(dim=1)


@dataclass(frozen=True)
class KrumResult:
    aggregate: torch.Tensor
    selected: list[int]  # row indices, ascending
    scores: torch.Tensor


def multi_krum(stack: torch.Tensor, f: int, m: int | None = None) -> KrumResult:
    """Average the ``m`` updates with the lowest Krum scores (m = n - f by default; m = 1 is Krum).
    Ties in score are broken by the update's bytes, not by its position."""
    n = _check_stack(stack)
    scores = krum_scores(stack, f)
    m = n - f if m is None else m
    if not 1 <= m <= n - f:
        raise ValueError(f"Multi-Krum selects 1 <= m <= n - f updates, got m={m}, n={n}, f={f}")
    keys = sorted(range(n), key=lambda i: (float(scores[i]), stack[i].numpy().tobytes()))
    selected = sorted(keys[:m])
    return KrumResult(_invariant_mean(stack[selected]), selected, scores)


def adaptive_tau(stack: torch.Tensor, center: torch.Tensor) -> float:
    """A scale-free clipping radius: the median distance of the updates from the centre."""
    _check_stack(stack)
    dist = (stack.to(torch.float64) - center.to(torch.float64)).norm(dim=1)
    return float(torch.median(dist))


def centered_clipping(
    stack: torch.Tensor, center: torch.Tensor, *, tau: float, iterations: int = 1, f: int | None = None
) -> torch.Tensor:
    """Centered clipping: ``v <- v + mean_i (u_i - v) * min(1, tau / |u_i - v|)``, ``iterations`` times from
    ``center`` (the previous round's aggregate). With ``f`` given, checks 2f < n."""
    n = _check_stack(stack)
    if f is not None:
        _check_f(f, n, "centered clipping")
    if not tau > 0:
        raise ValueError(f"centered clipping needs tau > 0, got tau={tau}")
    if iterations < 1:
        raise ValueError(f"centered clipping needs iterations >= 1, got {iterations}")
    if center.shape != stack.shape[1:]:
        raise ValueError(f"centre shape {tuple(center.shape)} does not match updates {tuple(stack.shape[1:])}")
    v = center.to(torch.float32).clone()
    for _ in range(iterations):
        diff = stack - v
        norms = diff.to(torch.float64).norm(dim=1)
        scale = torch.clamp(tau / torch.clamp(norms, min=1e-300), max=1.0).to(torch.float32)
        v = v + _invariant_mean(diff * scale[:, None])
    return v


# ------------------------------------------------------------------------------------------ proposed rule revision

@dataclass(frozen=True)
class VerifiedRound:
    """What a median-verified rule decided for one round (rows in participant order)."""

    step: torch.Tensor  # the aggregate update
    scores: list[float]  # committed score: s_i in [-1, 1], divided among a duplicate group, 0 for free-riders
    accepted: list[bool]
    reward_weights: list[float]  # share of the round budget is weight / sum(weights)
    groups: list[int]  # the representative row of each row's duplicate group (itself if unique)
    free_rider: list[bool]  # within the duplicate tolerance of a public vector (zero, last global step)


def median_verified_mean(
    stack: torch.Tensor,
    *,
    max_norm_ratio: float = 2.0,
    min_score: float = -0.05,
    duplicate_tolerance: float | None = None,
    public: tuple[torch.Tensor, ...] = (),
    norm_mode: str = "reject",
    reject_norm_ratio: float | None = None,
    clip_ratio: float | None = None,
    weights: tuple[int, int] | None = None,
    reputation: Sequence[float] | None = None,
    reference_gate: float | None = None,
) -> VerifiedRound:
    """The platform's rule in float64 (a benchmark model of trainer/rules.py, not the audited implementation), with
    the revision proposed in docs/robustness.md switchable:

    * ``duplicate_tolerance=None, public=(), norm_mode="reject"``: the committed rule ``median-verified-mean``:
      m = median, r_i = |u_i| / median|u|, s_i = cos(u_i, m) * min(1, max_norm_ratio / r_i), reject r_i >
      max_norm_ratio or s_i < min_score, step = mean of the accepted set, reward weight max(s_i, 0) if accepted.
    * ``duplicate_tolerance=tol``: rows closer than tol * median|u| to each other form one group that counts once
      (median, norm reference, mean) and shares one score: each of g members commits s/g, so copies earn together
      what one update would; rows that close to a ``public`` vector (the zero update, the last global step) are
      free-riders: score 0, not averaged, no reward.
    * ``norm_mode="clip"``: an update longer than ``clip_ratio`` (default max_norm_ratio) * median|u| is scaled down
      to that length in the mean instead of being rejected (its score keeps the committed factor
      min(1, max_norm_ratio / r_i)); it is accepted when s_i >= min_score and, if ``reject_norm_ratio`` is set,
      r_i <= reject_norm_ratio.

    * ``reputation`` (each row's reputation before the round, in [0, 1]) with ``reference_gate=g``: the median is
      taken over the representatives whose reputation is at least g times their lower median reputation; with
      ``weights=(a, b)`` the mean becomes the weighted mean with weights max(s_i, 0) ** a * reputation_i ** b (the
      undivided score; equal weights when they are all 0).

    ``duplicate_tolerance=0.1, public=(0, last_step), norm_mode="clip", reject_norm_ratio=4`` is version 2; with
    ``reference_gate=0.5, weights=(1, 2)`` and the reputation it is version 3 (``RuleConfig()``); the defaults are
    version 1.
    """
    n = _check_stack(stack)
    if norm_mode not in ("reject", "clip"):
        raise ValueError(f"norm_mode must be 'reject' or 'clip', got {norm_mode!r}")
    x = stack.to(torch.float64)
    norms = x.norm(dim=1)
    groups = list(range(n))
    free = [False] * n
    if duplicate_tolerance is not None:
        radius = duplicate_tolerance * float(np.median(norms.numpy()))
        dist = pairwise_sq_distances(stack).sqrt().numpy()
        for i in range(n):  # union into the lowest index within the radius (single linkage, index order)
            for j in range(i):
                if dist[i, j] <= radius:
                    groups[i] = groups[j]
                    break
        for i in range(n):
            free[i] = any(float((x[i] - p.to(torch.float64)).norm()) <= radius for p in public)
    reps = [i for i in range(n) if groups[i] == i and not free[groups[i]]]
    for i in range(n):
        free[i] = free[i] or free[groups[i]]
    scores = [0.0] * n
    accepted = [False] * n
    reward_weights = [0.0] * n
    if not reps:
        return VerifiedRound(torch.zeros(stack.shape[1]), scores, accepted, reward_weights, groups, free)
    ref_rows = reps
    if reference_gate is not None:
        if reputation is None:
            raise ValueError("a reputation gate needs the reputation")
        low = sorted(reputation[i] for i in reps)[(len(reps) - 1) // 2]
        ref_rows = [i for i in reps if reputation[i] >= reference_gate * low]
    rep_stack = stack[ref_rows]
    m = coordinate_median(rep_stack).to(torch.float64)
    m_norm = float(m.norm())
    typical = float(np.median(norms[reps].numpy()))
    clip: dict[int, float] = {}
    undivided: dict[int, float] = {}
    for i in reps:
        norm = float(norms[i])
        cos = float(x[i] @ m) / (norm * m_norm) if norm > 0 and m_norm > 0 else 0.0
        r = norm / typical if typical > 0 else (0.0 if norm == 0 else float("inf"))
        c = 1.0 if r <= max_norm_ratio else max_norm_ratio / r
        s = max(-1.0, min(1.0, cos)) * c
        undivided[i] = s
        if norm_mode == "reject":
            ok = s >= min_score and r <= max_norm_ratio
        else:
            ok = s >= min_score and (reject_norm_ratio is None or r <= reject_norm_ratio)
        level = max_norm_ratio if clip_ratio is None else clip_ratio
        clip[i] = min(1.0, level / r) if norm_mode == "clip" and r > 0 else 1.0
        members = [j for j in range(n) if groups[j] == i and not free[j]]
        for j in members:
            scores[j] = s / len(members)
            accepted[j] = ok
            reward_weights[j] = max(scores[j], 0.0) if ok else 0.0
    chosen = [i for i in reps if accepted[i]]
    if not chosen:
        return VerifiedRound(torch.zeros(stack.shape[1]), scores, accepted, reward_weights, groups, free)
    w = [1.0] * len(chosen)
    if weights is not None:
        if reputation is None:
            raise ValueError("trust weights need the reputation")
        a, b = weights
        w = [max(undivided[i], 0.0) ** a * reputation[i] ** b for i in chosen]
        if sum(w) == 0:
            w = [1.0] * len(chosen)
    total = torch.zeros_like(m)
    for i, wi in zip(chosen, w, strict=True):
        total += (x[i] * clip[i] - m) * wi
    step = (m + total / sum(w)).to(torch.float32)
    return VerifiedRound(step, scores, accepted, reward_weights, groups, free)
