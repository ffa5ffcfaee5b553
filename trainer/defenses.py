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

from dataclasses import dataclass

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
    """Squared Euclidean distances [n, n] in float64, each pair computed from its own difference vector."""
    x = stack.to(torch.float64)
    return torch.stack([((x - x[i]) ** 2).sum(dim=1) for i in range(x.shape[0])])


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
