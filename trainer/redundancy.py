"""Redundant updates (rule version 4): pairs whose difference is noise the rest of the round cannot see.

Exact copies fall within the copy radius (rules.py). A sybil that adds fresh noise to each copy escapes any radius a
rule can afford: two honest participants with similar data are as close as two copies perturbed by 0.25 norms
(docs/robustness.md). What the noise cannot fake is *structure*. An honest participant's update differs from another
honest one because their data differ, and that difference shows in the directions the other participants' updates
span (they train on related data). Two noisy copies differ only by the noise, and isotropic noise puts a fraction
of only about k / s of its energy into any k-dimensional span of an s-dimensional space. So, on the round's column
subset (s columns) of the representatives of a round (k = their number - 2 third parties for each pair):

    P_ij   = the orthogonal projection onto the span of the other representatives' updates (not u_i, u_j)
    d      = u_i - u_j
    t_ij   = (|P_ij d|^2 / |d|^2) * s / k                 (about 1 for pure noise, whatever its size)
    redundant(i, j) iff  k >= redundancy_min_third_parties
                    and  t_ij <= redundancy_ratio                                   (the difference is noise)
                    and  |P_ij d|^2 <= redundancy_share * min(|P_ij u_i|^2, |P_ij u_j|^2)
                                                      (and the two agree on what the others can see: a noisy update
                                                       far longer than an honest one cannot absorb it)

The test needs room: t is at most s / k (a difference wholly inside the others' span), so it runs only when
s >= 2 * redundancy_ratio * k, i.e. for at most 514 representatives on 4,096 subset columns at the default ratio 4
(266 on breast cancer's 2,114 parameters). Larger rounds get version 3's treatment of perturbed copies (each pays
its stake and is scored alone).

It also needs third parties: with few of them their span cannot show how two honest updates differ. Without a minimum
the test grouped 0.6-1.4 % of honest pairs at n = 6 and up to 0.04 % at n = 14, none from n = 16 on
(scripts/redundancy_small_rounds.py, docs/robustness/v4/small_rounds.md): the default minimum is 14 third parties,
16 representatives. Smaller rounds, too, get version 3's treatment of perturbed copies.

Version 5 gives small rounds those third parties from the past: when a round has fewer than 16 representatives, the
updates the previous rounds accepted (on IPFS, their CIDs and verdicts on-chain, so an auditor takes the same rows)
join every pair's third parties, up to the room s >= 2 * ratio * k leaves (``history_room``). They are third parties
only: never tested, grouped or scored. An honest participant's previous update carries much of what its data make
its update differ by, so honest pairs stand far apart again; a copy's fresh noise is not in anyone's past
(scripts/redundancy_small_rounds.py --history, docs/robustness/v5/small_rounds_history.md).

Measured on digits and breast cancer, Dirichlet 0.5 / 0.1 and iid, n = 20 and 50, rounds 1, 5 and 10
(scripts/redundancy_separation.py, docs/robustness/v4/redundancy.md): copies perturbed by 0.25 to 2 norms give
t <= 2.2; honest pairs t >= 10.7, except digits Dirichlet 0.1 with 50 participants (near-duplicate shards): t >= 4.7.
No honest pair was grouped; an honest update and a heavily perturbed copy sometimes were (README, version 4).

Arithmetic, reproducible bit for bit on any IEEE-754 machine:
* the subset is quantized to integers, q = clip(rint(x * 2^e), -2^15, 2^15) with one scale 2^e for the round: the
  median over rows of max|x| maps into [2^11, 2^12). Every Gram entry is then an integer below 2^42, so the float64
  Gram matrix G = q q^T is exact whatever order BLAS sums in;
* H = (G + I)^-1 by Gauss-Jordan elimination without pivoting (G + I is symmetric positive definite) written as
  element-wise float64 operations in a fixed order (no BLAS, no LAPACK);
* for a pair, the Schur complement of H's 2x2 block is the Gram of u_i and u_j's residuals off the others' span:
  with a = H_ii, b = H_ij, c = H_jj and D = ac - b^2, residual |u_i|^2 = c/D, |u_j|^2 = a/D, <., .> = -b/D.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

QUANT_BITS = 12  # the typical row's largest |value| maps into [2^(QUANT_BITS-1), 2^QUANT_BITS)
QUANT_LIMIT = 2**15  # saturation: |q| <= 2^15, so |G_ij| <= 4096 * 2^30 = 2^42 < 2^53 (exact in float64)
MIN_SPAN_MARGIN = 2  # the test runs only if s >= MIN_SPAN_MARGIN * ratio * k (t can reach twice the threshold)
MAX_COLUMNS = 4096  # the Gram bound above holds for at most this many columns (aggregation.SUBSET_COLUMNS)


@dataclass(frozen=True)
class PairTest:
    """The statistics of one pair (rules.py: t_ij and the shares of the projected energies)."""

    t: float  # |P d|^2 / |d|^2 * s / k
    share: float  # |P d|^2 / min(|P u_i|^2, |P u_j|^2)
    redundant: bool


def quantize(sub: np.ndarray) -> np.ndarray:
    """The subset [m, s] (float32) as float64 integers with one power-of-two scale (module docstring)."""
    if sub.shape[1] > MAX_COLUMNS:
        raise ValueError(f"at most {MAX_COLUMNS} columns keep the Gram matrix exact, got {sub.shape[1]}")
    x = np.asarray(sub, dtype=np.float64)
    if x.size == 0:
        return x.copy()
    typical = float(np.median(np.abs(x).max(axis=1)))
    if not typical > 0:
        return np.zeros_like(x)
    exponent = QUANT_BITS - math.frexp(typical)[1]
    q = np.rint(np.ldexp(x, exponent))
    return np.clip(q, -QUANT_LIMIT, QUANT_LIMIT, out=q)


def spd_inverse(a: np.ndarray) -> np.ndarray:
    """Inverse of a symmetric positive definite float64 matrix by Gauss-Jordan elimination without pivoting, in
    element-wise IEEE operations only (the same bits on every machine, unlike LAPACK)."""
    m = a.shape[0]
    work = np.concatenate([np.array(a, dtype=np.float64), np.eye(m)], axis=1)
    for k in range(m):
        pivot = work[k, k]
        if not pivot > 0:
            raise ValueError(f"not positive definite: pivot {k} is {pivot}")
        work[k] = work[k] / pivot
        factors = work[:, k].copy()
        factors[k] = 0.0
        work -= np.multiply.outer(factors, work[k])
    return np.ascontiguousarray(work[:, m:])


def history_room(representatives: int, columns: int, ratio: float) -> int:
    """How many rows of earlier rounds can join the third parties of a round of ``representatives`` rows on
    ``columns`` subset columns and still leave the test room (s >= MIN_SPAN_MARGIN * ratio * k)."""
    return max(0, math.floor(columns / (MIN_SPAN_MARGIN * ratio)) - max(representatives - 2, 0))


class RedundancyTest:
    """Pair tests among the rows of one round's subset [m, s] (module docstring); ``extra`` [h, s]: rows that are
    third parties of every pair and never tested themselves (version 5: earlier rounds' accepted updates)."""

    def __init__(self, sub: np.ndarray, *, ratio: float, share: float, min_third_parties: int,
                 extra: np.ndarray | None = None) -> None:
        if extra is not None and len(extra):
            if extra.shape[1] != sub.shape[1]:
                raise ValueError(f"third-party rows have {extra.shape[1]} columns, the round's {sub.shape[1]}")
            sub = np.concatenate([np.asarray(sub, dtype=np.float32), np.asarray(extra, dtype=np.float32)])
        self.m, self.s = sub.shape
        self.third = self.m - 2
        self.ratio, self.max_share = ratio, share
        # the largest t a pair can reach is s / k (its whole difference in the others' span): below twice the
        # threshold an honest pair could no longer be told from noise, so the test stays off (rules.py)
        self.enabled = self.third >= min_third_parties and self.s >= MIN_SPAN_MARGIN * ratio * self.third
        if not self.enabled:
            return
        q = quantize(sub)
        self.gram = q @ q.T  # exact: integers below 2^42 (any summation order)
        self.inverse = spd_inverse(self.gram + np.eye(self.m))

    def pair(self, i: int, j: int) -> PairTest:
        if not self.enabled or i == j:
            return PairTest(math.inf, math.inf, False)
        g, h = self.gram, self.inverse
        dd = g[i, i] + g[j, j] - 2.0 * g[i, j]  # exact integers
        if dd == 0.0:
            return PairTest(0.0, 0.0, True)
        a, b, c = h[i, i], h[i, j], h[j, j]
        det = a * c - b * b
        if not det > 0:
            return PairTest(math.inf, math.inf, False)
        ri, rj, rij = c / det, a / det, -b / det  # the residuals' Gram (off the others' span, with the ridge)
        proj_d = max(dd - (ri + rj - 2.0 * rij), 0.0)
        proj_min = min(g[i, i] - ri, g[j, j] - rj)
        t = proj_d / dd * self.s / self.third
        share = proj_d / proj_min if proj_min > 0 else math.inf
        return PairTest(t, share, t <= self.ratio and share <= self.max_share)


def redundancy_groups(
    sub: np.ndarray, rows: Sequence[int], eligible: Sequence[int], *, ratio: float, share: float,
    min_third_parties: int, extra: np.ndarray | None = None,
) -> tuple[dict[int, int], dict[int, PairTest]]:
    """Groups of redundant updates among ``eligible`` (a subset of ``rows``, both ascending; ``sub`` holds the
    subset of every row in ``rows`` order, all of them the third parties, with ``extra``'s rows): each eligible
    row, in order, joins the first earlier eligible leader it is redundant with (rules.py). Returns (row -> leader
    row for those that joined, row -> the test that put it there)."""
    test = RedundancyTest(sub, ratio=ratio, share=share, min_third_parties=min_third_parties, extra=extra)
    joined: dict[int, int] = {}
    why: dict[int, PairTest] = {}
    if not test.enabled:
        return joined, why
    position = {r: p for p, r in enumerate(rows)}
    leaders: list[int] = []
    for r in eligible:
        for leader in leaders:
            result = test.pair(position[r], position[leader])
            if result.redundant:
                joined[r], why[r] = leader, result
                break
        else:
            leaders.append(r)
    return joined, why
