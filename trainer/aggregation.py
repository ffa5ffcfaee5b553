"""Median reference, scoring, decisions and aggregation: plain functions over a stack of flat updates.

Every function takes participants in ascending address order and is deterministic bit for bit (see rules.py).

The public functions keep their original definitions (kept below as ``_reference_*``, and the tests compare with
them bit for bit); they are computed by column-chunked kernels that use every core (docs/aggregation-performance.md):

* median: each chunk of columns is transposed to [columns, n] and sorted along the contiguous axis (numpy's SIMD
  sort). A selection is exact, so any algorithm gives the same value; the only freedom is the sign of a zero median
  (-0.0 and +0.0 compare equal) and NaN, and those columns are recomputed with the original torch call.
* exact norms and dot products: the compiled kernels of trainer/kernels.py split every float32 value exactly into
  two integer slices per tile and sum slice products in int64 (exact in any order), then add the exact partials
  to ``ExactSums`` (per binary exponent buckets, exact); the final value is rounded once by ``math.fsum``: the same
  correctly rounded float64 as ``math.fsum`` of the products, independent of chunking, order and thread count.
  Each worker takes the median of a block of columns and then its sums while the block is in cache.
* free-riders and copies (rules.py) on the round's column subset: a float64 Gram matrix with a proven error bound
  screens the pairs; only pairs near the copy radius get an exact dot product.
* aggregate: the same element-wise float32 operations in the same per-coordinate order, per column chunk (a compiled
  loop).
"""

from __future__ import annotations

import functools
import hashlib
import math
import re
import statistics
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import torch

from trainer import kernels
from trainer.errors import RuleError, UpdateRejected
from trainer.incentives import INITIAL_REPUTATION
from trainer.kernels import TILE
from trainer.model import Params
from trainer.redundancy import history_room, redundancy_groups
from trainer.rules import PPM, SCORE_SCALE, RuleConfig, Status
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


# ----------------------------------------------------------------------------------------------------------------
# The original definitions (the contract). Used for the rare cases the fast kernels hand back, and by the tests and
# `fedledger bench aggregate` as the oracle the fast path must equal bit for bit.


def _reference_median(stack: torch.Tensor) -> torch.Tensor:
    n = stack.shape[0]
    if n % 2 == 1:
        return torch.kthvalue(stack, n // 2 + 1, dim=0).values
    ordered = torch.sort(stack, dim=0).values
    return ordered[n // 2 - 1] * 0.5 + ordered[n // 2] * 0.5


def _reference_weighted_median(stack: torch.Tensor, votes: Sequence[int]) -> torch.Tensor:
    """Rule version 7's median: of the multiset in which row i appears votes[i] times (ties in row order)."""
    order = torch.sort(stack, dim=0, stable=True).indices
    cum = torch.cumsum(torch.tensor(list(votes), dtype=torch.int64)[order], dim=0)
    total = sum(votes)
    ordered = torch.gather(stack, 0, order)
    lo = torch.gather(ordered, 0, (cum < (total + 1) // 2).sum(dim=0, keepdim=True))[0]
    if total % 2 == 1:
        return lo
    hi = torch.gather(ordered, 0, (cum < total // 2 + 1).sum(dim=0, keepdim=True))[0]
    return lo * 0.5 + hi * 0.5


def _reference_dot(a: torch.Tensor, b: torch.Tensor) -> float:
    return math.fsum(np.multiply(a.numpy().astype(np.float64), b.numpy().astype(np.float64)))


def _reference_score_updates(stack: torch.Tensor, reference: torch.Tensor, rule: RuleConfig) -> Scores:
    ref_norm = math.sqrt(_reference_dot(reference, reference))
    norms = [math.sqrt(_reference_dot(u, u)) for u in stack]
    dots = [_reference_dot(u, reference) for u in stack]
    return _scores(norms, dots, ref_norm, rule)


def _reference_aggregate(
    base: torch.Tensor,
    stack: torch.Tensor,
    accepted: Sequence[bool],
    rule: RuleConfig,
    reference: torch.Tensor,
    clips: Sequence[float] | None = None,
    weights: Sequence[float] | None = None,
) -> torch.Tensor:
    if stack.shape[0] == 0:
        return base.clone()
    ref = reference
    if rule.aggregator == "median":
        return base + ref
    total = torch.zeros_like(base)
    k = 0
    factors = [1.0] * stack.shape[0] if clips is None else clips
    ws = [1.0] * stack.shape[0] if weights is None else weights
    for u, ok, c, w in zip(stack, accepted, factors, ws, strict=True):
        if ok:
            dev = (u if c == 1.0 else u * torch.tensor(c, dtype=torch.float32)) - ref
            total = total + (dev if not rule.weighted else dev * torch.tensor(w, dtype=torch.float32))
            k += 1
    if k == 0:
        return base.clone()
    return base + (ref + (total if rule.weighted else total / k))


# ----------------------------------------------------------------------------------------------------------------
# Threads and chunking

BLOCK_ELEMS = 1 << 20  # rows * columns per in-memory task: median, then exact sums, of one block in cache
MEDIAN_ELEMS = 1 << 22  # values transposed at once by the median (16 MB)
VOTE_SCALE = 1 << 32  # rule version 7: the votes of the reference median add up to at most this


def worker_count() -> int:
    """Threads the kernels use: torch's intra-op setting. Results never depend on it."""
    return max(1, torch.get_num_threads())


def _run_tasks(fn: Callable[[int], None], count: int, workers: int) -> None:
    """Run fn(0..count-1) on ``workers`` threads (numpy releases the GIL inside its loops). Exceptions propagate."""
    if count == 0:
        return
    if workers <= 1 or count == 1:
        for i in range(count):
            fn(i)
        return
    pool = _executor(workers)
    futures = [pool.submit(fn, i) for i in range(count)]
    try:
        for fut in futures:
            fut.result()
    finally:
        for fut in futures:
            fut.cancel()


@functools.lru_cache(maxsize=None)
def _executor(workers: int) -> ThreadPoolExecutor:
    """One pool per thread count, kept for the process (starting threads for every pass costs milliseconds).
    Tasks never submit to a pool themselves, so a shared pool cannot deadlock."""
    return ThreadPoolExecutor(max_workers=workers, thread_name_prefix="fedledger-agg")


def _column_blocks(d: int, cols: int) -> list[tuple[int, int]]:
    cols = max(1, cols)
    return [(s, min(d, s + cols)) for s in range(0, d, cols)]


def _block_cols(n: int) -> int:
    """Columns per in-memory block: about BLOCK_ELEMS values, whole tiles (at least one)."""
    return max(TILE, (BLOCK_ELEMS // max(n, 1)) // TILE * TILE)


# ----------------------------------------------------------------------------------------------------------------
# Median


def median_into(block: np.ndarray, out: np.ndarray) -> None:
    """Coordinate-wise median of ``block`` [n, c] (float32, rows may be strided) into ``out`` [c]: bit-identical to
    the original torch definition (odd n: the middle order statistic; even n: lo*0.5 + hi*0.5)."""
    n, c = block.shape
    step = max(1, min(c, MEDIAN_ELEMS // max(n, 1)))
    for s in range(0, c, step):
        _median_cols(block[:, s : s + step], out[s : s + step])


def _transposed(block: np.ndarray) -> np.ndarray:
    """A new C-contiguous [c, n] copy of ``block`` [n, c], 32 rows at a time (a plain strided copy of many rows
    thrashes the caches and the TLB: 7 ns per value for n = 1000 against under 1 ns)."""
    n, c = block.shape
    t = np.empty((c, n), dtype=block.dtype)
    for r in range(0, n, 32):
        t[:, r : r + 32] = block[r : r + 32].T
    return t


def _median_cols(block: np.ndarray, out: np.ndarray) -> None:
    n = block.shape[0]
    t = _transposed(block)  # [c, n], always a copy: the sort runs in place along the contiguous axis
    t.sort(axis=1)
    k = n // 2
    if n % 2:
        out[...] = t[:, k]
    else:
        np.multiply(t[:, k - 1], np.float32(0.5), out=out)
        out += t[:, k] * np.float32(0.5)
    del t
    # -0.0 == +0.0 and NaN: which one a sort puts in the middle is the algorithm's choice. Recompute those columns
    # exactly as the original did (per column, torch's result depends only on that column's values).
    fix = np.flatnonzero(~(np.abs(out) > 0))
    if fix.size:
        cols = fix if fix.size > 1 else np.repeat(fix, 2)  # keep a strided [n, >=2] layout, like the original
        sub = torch.from_numpy(np.ascontiguousarray(block[:, cols]))
        out[fix] = _reference_median(sub).numpy()[: fix.size]


def weighted_median_into(block: np.ndarray, votes: np.ndarray, out: np.ndarray) -> None:
    """Rule version 7's coordinate-wise median of ``block`` [n, c] with ``votes`` [n] (positive int64) into ``out``
    [c]: bit-identical to ``_reference_weighted_median`` (a stable sort puts equal values, the two zeros among them,
    in row order in both)."""
    n, c = block.shape
    total = int(votes.sum())
    lo_at, hi_at = (total + 1) // 2, total // 2 + 1
    step = max(1, min(c, (MEDIAN_ELEMS // 4) // max(n, 1)))  # the order and the running votes are int64 each
    for s in range(0, c, step):
        t = _transposed(block[:, s : s + step])  # [c, n]
        order = np.argsort(t, axis=1, kind="stable")
        cum = np.cumsum(votes[order], axis=1)
        cols = np.arange(t.shape[0])
        lo = t[cols, order[cols, np.count_nonzero(cum < lo_at, axis=1)]]
        if total % 2:
            out[s : s + step] = lo
        else:
            hi = t[cols, order[cols, np.count_nonzero(cum < hi_at, axis=1)]]
            np.multiply(lo, np.float32(0.5), out=out[s : s + step])
            out[s : s + step] += hi * np.float32(0.5)


def median_votes(stakes: Sequence[int]) -> list[int] | None:
    """Rule version 7: each voter's votes from its stake, ``stake * 2**32 // sum(stakes)`` divided by their greatest
    common divisor (exact integers, at most 2**32 in all); None when they are all equal (one vote each: the
    unweighted median) or nobody has a stake."""
    total = sum(stakes)
    if any(v < 0 for v in stakes):
        raise RuleError(f"stakes cannot be negative: {list(stakes)}")
    if total == 0:
        return None
    votes = [v * VOTE_SCALE // total for v in stakes]
    g = math.gcd(*votes)
    votes = [v // g for v in votes]
    return None if all(v == votes[0] for v in votes) else votes


def weighted_median_f64(values: Sequence[float], votes: Sequence[int] | None) -> float:
    """The median of ``values`` (float64) with each counted ``votes[i]`` times (None: once each, ``np.median``):
    the middle one, or the mean of the two middle ones."""
    if votes is None:
        return float(np.median(np.asarray(values, dtype=np.float64))) if len(values) else 0.0
    pairs = sorted((v, w) for v, w in zip(values, votes, strict=True) if w > 0)
    total = sum(w for _, w in pairs)
    picked = []
    for at in ((total + 1) // 2, total // 2 + 1):
        cum = 0
        for v, w in pairs:
            cum += w
            if cum >= at:
                picked.append(v)
                break
    return float(np.mean(np.asarray(picked, dtype=np.float64)))


def coordinate_median(stack: torch.Tensor) -> torch.Tensor:
    """Coordinate-wise median of ``stack`` [n, d]: the middle order statistic, or the midpoint of the two middle
    ones for even n (computed as lo*0.5 + hi*0.5, which cannot overflow). Exact and order-invariant."""
    n = stack.shape[0]
    if n == 0:
        raise ValueError("median of zero updates")
    if stack.dtype != torch.float32 or stack.ndim != 2 or stack.requires_grad:
        return _reference_median(stack)
    u = stack.detach().contiguous().numpy()
    d = u.shape[1]
    out = np.empty(d, dtype=np.float32)
    blocks = _column_blocks(d, _block_cols(n))

    def task(i: int) -> None:
        s, e = blocks[i]
        median_into(u[:, s:e], out[s:e])

    _run_tasks(task, len(blocks), worker_count())
    return torch.from_numpy(out)


# ----------------------------------------------------------------------------------------------------------------
# Exact sums

_HI_MASK = np.uint64(0xFFFF_FFFF_FFFF_FFFF ^ ((1 << 26) - 1))  # sign, exponent and the top 26 fraction bits
_BUCKET_LO = kernels.BUCKET_LO  # buckets cover biased float64 exponents [704, 1344): |v| in [2**-319, 2**321), which
_BUCKETS = kernels.BUCKETS  # holds every product of float32 values and every slice-pair sum (others: the spill list)
_SPILL_AT = 1 << 25  # values a row may take between spills; a bucket stays exact up to 2**26
_SUMS_CALL_COLS = 1 << 22  # columns per kernel call, so one call cannot add more than 2**23 + 8 values to a row
_MAX_VALUE = 2.0**990  # 2**26 addends of a bucket below this cannot overflow
_FSUM_ZERO_IS_POSITIVE = math.copysign(1.0, math.fsum([-0.0, -0.0])) > 0  # CPython: an exact zero sum is +0.0


class ExactSums:
    """Exact running sums of finite float64 values, one per row; ``totals()`` rounds each once (== math.fsum).

    Each value is split into a high part (its top 27 significant bits) and a low part (the other 26) and both are
    added to the bucket of the value's binary exponent (640 buckets per row, 10 KB): the addends of a bucket are integer multiples of the
    bucket's grid below 2**27 of it, so 2**26 of them sum exactly in float64, in any order. Before a row's count
    passes that bound its bucket sums move to a list of exact floats. ``merge`` adds two accumulators (chunks or
    threads) bucket by bucket: exact as well. The final rounding is ``math.fsum`` of the exact parts.
    """

    def __init__(self, rows: int) -> None:
        self.rows = rows
        self._hi = np.zeros(rows * _BUCKETS)
        self._lo = np.zeros(rows * _BUCKETS)
        self._count = np.zeros(rows, dtype=np.int64)
        self._spilled: dict[int, list[float]] = {}

    def add(self, rows: np.ndarray | int, values: np.ndarray) -> None:
        values = np.asarray(values, dtype=np.float64)
        rows_b, values_b = np.broadcast_arrays(np.asarray(rows, dtype=np.intp), values)
        v = np.ascontiguousarray(values_b).reshape(-1)
        r = np.ascontiguousarray(rows_b).reshape(-1)
        if v.size == 0:
            return
        if v.size > _SPILL_AT:
            half = v.size // 2
            self.add(r[:half], v[:half])
            self.add(r[half:], v[half:])
            return
        if not (np.abs(v) < _MAX_VALUE).all():
            raise ValueError("ExactSums takes finite values below 2**990 only")
        bits = v.view(np.uint64)
        expo = ((bits >> np.uint64(52)) & np.uint64(0x7FF)).astype(np.intp) - _BUCKET_LO
        inside = (expo >= 0) & (expo < _BUCKETS)
        if not inside.all():  # zeros add nothing; values outside the buckets' range are kept as they are (exact)
            for i in np.flatnonzero(~inside & (v != 0)):
                self._spilled.setdefault(int(r[i]), []).append(float(v[i]))
            keep = np.flatnonzero(inside)
            r, v, bits, expo = r[keep], v[keep], bits[keep], expo[keep]
        counts = np.bincount(r, minlength=self.rows)
        over = np.flatnonzero(self._count + counts > _SPILL_AT)
        if over.size:
            self._spill(over)
        self._count += counts
        key = r * _BUCKETS + expo
        hi = (bits & _HI_MASK).view(np.float64)
        np.add.at(self._hi, key, hi)
        np.add.at(self._lo, key, v - hi)

    def _spill(self, rows: Iterable[int]) -> None:
        hi = self._hi.reshape(self.rows, _BUCKETS)
        lo = self._lo.reshape(self.rows, _BUCKETS)
        for row in rows:
            row = int(row)
            parts = self._spilled.setdefault(row, [])
            parts.extend(hi[row][hi[row] != 0].tolist())
            parts.extend(lo[row][lo[row] != 0].tolist())
            hi[row] = 0.0
            lo[row] = 0.0
            self._count[row] = 0

    def merge(self, other: ExactSums) -> None:
        if other.rows != self.rows:
            raise ValueError(f"cannot merge sums of {other.rows} rows into {self.rows}")
        over = np.flatnonzero(self._count + other._count > _SPILL_AT)
        if over.size:
            self._spill(over)
            other._spill(over)
        self._hi += other._hi
        self._lo += other._lo
        self._count += other._count
        for row, parts in other._spilled.items():
            self._spilled.setdefault(row, []).extend(parts)

    def totals(self) -> list[float]:
        hi = self._hi.reshape(self.rows, _BUCKETS)
        lo = self._lo.reshape(self.rows, _BUCKETS)
        out = []
        for row in range(self.rows):
            parts = hi[row][hi[row] != 0].tolist() + lo[row][lo[row] != 0].tolist() + self._spilled.get(row, [])
            out.append(math.fsum(parts))
        return out


class _Sums:
    """Exact sums of one pass, computed by ``kernels.exact_sums`` into one ``ExactSums`` per thread, merged exactly.

    For ``r`` rows and K references: |u_t|^2 (if ``norms``), <u_t, y_k>, |y_k|^2 (if ``ref_squares``)."""

    def __init__(self, r: int, k: int, *, norms: bool = True, ref_squares: bool = True) -> None:
        self.r, self.k = r, k
        self.norms, self.ref_squares = norms, ref_squares
        self._local = threading.local()
        self._all: list[ExactSums] = []
        self._lock = threading.Lock()

    def _acc(self) -> ExactSums:
        acc = getattr(self._local, "acc", None)
        if acc is None:
            acc = ExactSums(self.r + self.k * self.r + self.k)
            self._local.acc = acc
            with self._lock:
                self._all.append(acc)
        return acc

    def add(self, x: np.ndarray, rows: np.ndarray, c0: int, c1: int, refs: np.ndarray, r0: int = 0) -> None:
        """Columns [c0, c1) of the ``rows`` of x [*, D] (float32, C-contiguous) against refs [K, *] at columns
        [r0, r0 + c1 - c0). Raises ValueError on NaN/Inf (validate updates first)."""
        acc = self._acc()
        xbits, refbits = x.view(np.uint32), refs.view(np.uint32)
        for s in range(c0, c1, _SUMS_CALL_COLS):
            e = min(c1, s + _SUMS_CALL_COLS)
            # a call adds at most 2 (e - s) + 8 values to an accumulator row: spill rows that could pass 2**25
            over = np.flatnonzero(acc._count > _SPILL_AT - (2 * (e - s) + 8))
            if over.size:
                acc._spill(over)
            bad = kernels.exact_sums(
                x, xbits, rows, s, e, refs, refbits, r0 + (s - c0),
                acc._hi, acc._lo, acc._count, self.norms, self.ref_squares,
            )
            if bad >= 0:
                raise ValueError(f"update row {int(rows[bad])} contains NaN/Inf: validate updates first")
            if bad < -1:
                raise ValueError(f"reference {-2 - bad} contains NaN/Inf")

    def totals(self) -> tuple[list[float], list[list[float]], list[float]]:
        """(|u_t|^2, <u_t, y_k> per k, |y_k|^2), each rounded once (== math.fsum of the float64 products)."""
        if not self._all:
            t = [0.0] * (self.r + self.k * self.r + self.k)
        else:
            first = self._all[0]
            for acc in self._all[1:]:
                first.merge(acc)
            self._all = [first]
            t = first.totals()
        r, k = self.r, self.k
        return t[:r], [t[r + j * r : r + (j + 1) * r] for j in range(k)], t[r + k * r :]


def _row_dot(x: np.ndarray, i: int, y: np.ndarray) -> float:
    """Exactly rounded <x[i], y[0]> for x [*, d], y [1, d] (float32, C-contiguous); ValueError on NaN/Inf."""
    sums = _Sums(1, 1, norms=False, ref_squares=False)
    sums.add(x, np.array([i], dtype=np.intp), 0, x.shape[1], y)
    return sums.totals()[1][0][0]


def _median_sums_pass(
    d: int,
    n: int,
    block_cols: int,
    workers: int,
    block: Callable[[int, int], tuple[np.ndarray, np.ndarray, np.ndarray, int]],
    on_block: Callable[[int, int, np.ndarray], None] | None = None,
    votes: Sequence[int] | None = None,
) -> tuple[np.ndarray, list[float], list[float], float]:
    """One pass over the columns of n updates, a block per task on ``workers`` threads: the block's coordinate-wise
    median and, while the block is in cache, its exact sums against it. ``block(s, e)`` gives (the [n, e - s]
    values the median reads, x, rows, c0) with x[rows, c0 : c0 + e - s] the same values for the sums;
    ``on_block(s, e, values)`` sees every block; ``votes``: each median row's votes (rule version 7; None: one
    each). Returns (median, |u_i|^2, <u_i, median>, |median|^2)."""
    weights = None if votes is None else np.asarray(votes, dtype=np.int64)
    median = np.empty((1, d), dtype=np.float32)
    sums = _Sums(n, 1)
    blocks = _column_blocks(d, block_cols)

    def task(j: int) -> None:
        s, e = blocks[j]
        values, x, rows, c0 = block(s, e)
        if weights is None:
            median_into(values, median[0, s:e])
        else:
            weighted_median_into(values, weights, median[0, s:e])
        sums.add(x, rows, c0, c0 + (e - s), median, s)
        if on_block is not None:
            on_block(s, e, values)

    _run_tasks(task, len(blocks), workers)
    norm_sq, dots, ref_sq = sums.totals()
    return median[0], norm_sq, dots[0], ref_sq[0]


def _as_rows(*vectors: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.stack(vectors), dtype=np.float32)


def _all_rows(n: int) -> np.ndarray:
    return np.arange(n, dtype=np.intp)


# ----------------------------------------------------------------------------------------------------------------
# Exact dot products and scores


def exact_dot(a: torch.Tensor, b: torch.Tensor) -> float:
    """<a, b> of float32 vectors as a correctly rounded float64: each product is exact in float64 and
    ``math.fsum`` rounds the sum once, so the result does not depend on summation order, SIMD or threads."""
    if not _fast_vectors(a, b):
        return _reference_dot(a, b)
    try:
        value = _row_dot(_as_rows(a.detach().numpy()), 0, _as_rows(b.detach().numpy()))
    except ValueError:  # NaN/Inf: math.fsum's own answer (inf, nan or an error)
        return _reference_dot(a, b)
    return value if value != 0.0 or _FSUM_ZERO_IS_POSITIVE else _reference_dot(a, b)


def exact_norm(a: torch.Tensor) -> float:
    return math.sqrt(exact_dot(a, a))


def _fast_vectors(a: torch.Tensor, b: torch.Tensor) -> bool:
    return all(
        v.dtype == torch.float32 and v.ndim == 1 and v.device.type == "cpu" for v in (a, b)
    ) and a.shape == b.shape


@dataclass(frozen=True)
class Scores:
    cosine: list[float]
    norm_ratio: list[float]
    clip: list[float]  # c_i in rules.py: min(1, max_norm_ratio / r_i)
    fixed: list[int]  # committed score, 1e-6 units


def _scores(
    norms: Sequence[float], dots: Sequence[float], ref_norm: float, rule: RuleConfig, typical: float | None = None
) -> Scores:
    """Scores from the exact norms |u_i|, dot products <u_i, m> and |m| (the rule's arithmetic, in float64);
    ``typical`` (default: the median of ``norms``) is the norm the ratios are taken against."""
    if typical is None:
        typical = float(np.median(np.asarray(norms, dtype=np.float64))) if len(norms) else 0.0
    cosine, ratio, clip, fixed = [], [], [], []
    for dot, norm in zip(dots, norms, strict=True):
        cos = dot / (norm * ref_norm) if norm > 0 and ref_norm > 0 else 0.0
        cos = max(-1.0, min(1.0, cos))
        r = norm / typical if typical > 0 else (0.0 if norm == 0 else math.inf)
        c = 1.0 if r <= rule.max_norm_ratio else rule.max_norm_ratio / r
        cosine.append(cos)
        ratio.append(r)
        clip.append(c)
        fixed.append(round(cos * c * SCORE_SCALE))
    return Scores(cosine, ratio, clip, fixed)


def _fast_stack(stack: torch.Tensor, reference: torch.Tensor | None = None) -> bool:
    ok = stack.dtype == torch.float32 and stack.ndim == 2 and stack.device.type == "cpu" and not stack.requires_grad
    if reference is not None:
        ok = ok and reference.dtype == torch.float32 and reference.ndim == 1 and reference.shape[0] == stack.shape[1]
        ok = ok and not reference.requires_grad and reference.device.type == "cpu"
    return ok


def score_updates(stack: torch.Tensor, reference: torch.Tensor, rule: RuleConfig) -> Scores:
    """Scores of every update against ``reference`` (rules.py, every update its own group)."""
    if not _fast_stack(stack, reference) or stack.shape[0] == 0:
        return _reference_score_updates(stack, reference, rule)
    u = stack.detach().contiguous().numpy()
    try:
        norm_sq, dots, ref_sq = _stack_sums(u, _as_rows(reference.detach().numpy()))
    except ValueError:  # NaN/Inf: the original definition decides
        return _reference_score_updates(stack, reference, rule)
    if not _FSUM_ZERO_IS_POSITIVE and 0.0 in (*norm_sq, *dots[0], ref_sq[0]):
        return _reference_score_updates(stack, reference, rule)
    return _scores([math.sqrt(v) for v in norm_sq], dots[0], math.sqrt(ref_sq[0]), rule)


def median_and_scores(stack: torch.Tensor, rule: RuleConfig) -> tuple[torch.Tensor, Scores]:
    """``coordinate_median(stack)`` and ``score_updates(stack, median, rule)``."""
    reference = coordinate_median(stack)
    return reference, score_updates(stack, reference, rule)


def _stack_sums(u: np.ndarray, refs: np.ndarray) -> tuple[list[float], list[list[float]], list[float]]:
    """Exact (|u_i|^2, <u_i, y_k>, |y_k|^2) of an in-memory [n, d] array against refs [K, d], block by block on
    every worker thread."""
    n, d = u.shape
    sums = _Sums(n, refs.shape[0])
    rows = _all_rows(n)
    blocks = _column_blocks(d, _block_cols(n))
    _run_tasks(lambda j: sums.add(u, rows, *blocks[j], refs, blocks[j][0]), len(blocks), worker_count())
    return sums.totals()


def decide(score: int, norm_ratio: float, rule: RuleConfig) -> Status:
    """The decision for a valid representative update with undivided score ``round(s_i * 1e6)`` and (exactly
    recomputable) ``norm_ratio`` (rules.py)."""
    if rule.aggregator != "median-verified-mean":
        return Status.ACCEPTED
    if norm_ratio > rule.reject_norm_ratio:
        return Status.NORM_OUTLIER
    return Status.ACCEPTED if score >= rule.min_score_fixed else Status.LOW_SCORE


# ----------------------------------------------------------------------------------------------------------------
# Aggregation


def aggregate_block(
    rows: Iterable[np.ndarray | tuple[np.ndarray, float] | tuple[np.ndarray, float, float]],
    k: int,
    ref: np.ndarray,
    base: np.ndarray,
    rule: RuleConfig,
    out: np.ndarray,
) -> None:
    """``out = base + (ref + (sum over rows, in order, of (c*u - ref)) / k)`` for one column block (float32, the same
    element-wise operations as the original), or ``base + ref`` for the "median" rule, or ``base`` when k == 0.
    A row is an array (c = 1) or ``(array, c)`` or ``(array, c, w)``; c = 1 skips the multiplication (u * 1 == u
    exactly). Rule version 3 (``rule.weighted``): ``base + (ref + sum of (c*u - ref) * w)``, no division."""
    total = np.zeros_like(ref) if rule.aggregator != "median" and k else None
    if total is not None:
        zero = np.zeros(1, dtype=np.intp)
        for row in rows:
            u, c, w = (row + (1.0,))[:3] if isinstance(row, tuple) else (row, 1.0, 1.0)
            factor = np.array([c], dtype=np.float32)
            if rule.weighted:
                kernels.accumulate_weighted(u[None, :], zero, factor, np.array([w], dtype=np.float32), 0, ref.size,
                                            ref, total)
            else:
                kernels.accumulate_rows(u[None, :], zero, factor, 0, ref.size, ref, total)
    _finish(total, k, ref, base, rule, out)


def _finish(total: np.ndarray | None, k: int, ref: np.ndarray, base: np.ndarray, rule: RuleConfig,
            out: np.ndarray) -> None:
    """out = base + (ref + total / k) (version 3: base + (ref + total)); base + ref ("median"); base (nothing
    accepted)."""
    if rule.aggregator == "median":
        np.add(base, ref, out=out)
    elif k == 0 or total is None:
        out[...] = base
    else:
        if not rule.weighted:
            total /= np.float32(k)
        total += ref  # ref + total/k: addition commutes bit for bit
        np.add(base, total, out=out)


def aggregate(
    base: torch.Tensor,
    stack: torch.Tensor,
    accepted: Sequence[bool],
    rule: RuleConfig,
    reference: torch.Tensor | None = None,
    clips: Sequence[float] | None = None,
    weights: Sequence[float] | None = None,
) -> torch.Tensor:
    """New flat global model from the valid updates ``stack`` (address order), the accept flags, the clip
    factors c_i (default 1) and, for rule version 3, the weights f_i (float32 values; rules.py).

    The mean is taken around the median reference m: ``m + (sum_i (c_i u_i - m)) / k``, accumulated one update
    at a time in address order with element-wise float32 operations. It equals the plain mean mathematically,
    is bit-reproducible on any CPU, and returns exactly u when every accepted update is u.
    """
    if stack.shape[0] == 0:
        return base.clone()
    ref = coordinate_median(stack) if reference is None else reference
    flags = list(accepted)
    factors = [1.0] * len(flags) if clips is None else list(clips)
    ws = [1.0] * len(flags) if weights is None else list(weights)
    if len(flags) != stack.shape[0] or len(factors) != stack.shape[0] or len(ws) != stack.shape[0]:
        raise ValueError(f"{len(flags)} accept flags, {len(factors)} clip factors and {len(ws)} weights for "
                         f"{stack.shape[0]} updates")
    if not (_fast_stack(stack, ref) and base.dtype == torch.float32 and base.shape == ref.shape):
        return _reference_aggregate(base, stack, flags, rule, ref, factors, ws)
    u = stack.detach().contiguous().numpy()
    keep = [(i, factors[i], ws[i]) for i, ok in enumerate(flags) if ok]
    out = _aggregate_np(base.detach().contiguous().numpy(), u, keep, rule, ref.detach().contiguous().numpy())
    return torch.from_numpy(out)


def _aggregate_np(
    base: np.ndarray, u: np.ndarray, keep: Sequence[Kept], rule: RuleConfig, ref: np.ndarray
) -> np.ndarray:
    """``aggregate`` over an in-memory [n, d] array; ``keep``: (row, clip factor, weight) of the accepted rows, in
    order (the weight is used by rule version 3 only)."""
    out = np.empty_like(base)
    blocks = _column_blocks(base.size, 1 << 16)
    idx = np.array([k[0] for k in keep], dtype=np.intp)
    factors = np.array([k[1] for k in keep], dtype=np.float32)
    weights = np.array([k[2] for k in keep], dtype=np.float32)

    def task(j: int) -> None:
        s, e = blocks[j]
        total = None
        if rule.aggregator != "median" and keep:
            total = np.zeros(e - s, dtype=np.float32)
            if rule.weighted:
                kernels.accumulate_weighted(u, idx, factors, weights, s, e, ref[s:e], total)
            else:
                kernels.accumulate_rows(u, idx, factors, s, e, ref[s:e], total)
        _finish(total, len(keep), ref[s:e], base[s:e], rule, out[s:e])

    _run_tasks(task, len(blocks), worker_count())
    return out


# ----------------------------------------------------------------------------------------------------------------
# The rule over a source of updates (in memory here, streamed from files in trainer/streaming.py)

SUBSET_COLUMNS = 4096  # the copy / free-rider tests compare updates on this many columns (all of a smaller model)
_EPS = 2.0**-53


def subset_seed(content_hashes: Sequence[bytes], d: int) -> bytes:
    """The seed of the round's column subset: the sha256 of the valid updates' content hashes in address order
    (known only once every update is committed, so no one can aim an update at the subset)."""
    h = hashlib.sha256(b"fedledger rule v2 subset\x00" + d.to_bytes(8, "big"))
    for c in content_hashes:
        h.update(c)
    return h.digest()


def subset_columns(d: int, seed: bytes) -> np.ndarray:
    """The round's column subset, ascending: all d columns when d <= SUBSET_COLUMNS, otherwise the first
    SUBSET_COLUMNS distinct values of int.from_bytes(sha256(seed || counter)[8k:8k+8], "big") % d for counter =
    0, 1, ... (8-byte big-endian) and k = 0..3."""
    if d <= SUBSET_COLUMNS:
        return np.arange(d, dtype=np.intp)
    chosen: dict[int, None] = {}
    counter = 0
    while len(chosen) < SUBSET_COLUMNS:
        digest = hashlib.sha256(seed + counter.to_bytes(8, "big")).digest()
        for k in range(4):
            if len(chosen) < SUBSET_COLUMNS:
                chosen.setdefault(int.from_bytes(digest[8 * k : 8 * k + 8], "big") % d)
        counter += 1
    return np.array(sorted(chosen), dtype=np.intp)


@dataclass(frozen=True)
class FirstPass:
    """What one pass over all n valid updates gives (exact sums; see rules.py)."""

    median: np.ndarray  # float32 [d]: median of all n updates
    norm_sq: list[float]  # |u_i|^2
    dot_median: list[float]  # <u_i, median>
    median_sq: float
    subset: np.ndarray  # float32 [n, s]: the updates at the round's subset columns


Kept = tuple[int, float, float]  # (row, clip factor c_i, weight f_i) of an accepted representative


class UpdateSource(Protocol):
    """The valid updates of a round (finite float32, ascending address order) as the rule needs to read them."""

    n: int
    d: int

    def first_pass(self, columns: np.ndarray) -> FirstPass: ...

    def median_pass(
        self, rows: Sequence[int], score_rows: Sequence[int] | None = None, votes: Sequence[int] | None = None
    ) -> tuple[np.ndarray, list[float], float]:
        """(median of ``rows``, each with ``votes`` (rule version 7; None: one each), <u_i, that median> for i in
        ``score_rows`` (default: rows, which it must contain), |median|^2)."""
        ...

    def aggregate(self, base: np.ndarray, keep: Sequence[Kept], median: np.ndarray, rule: RuleConfig) -> np.ndarray:
        ...


@dataclass(frozen=True)
class Assessment:
    """The rule's verdicts for the valid updates of a round (address order; rules.py has the formulas)."""

    statuses: list[Status]
    fixed: list[int]  # committed scores (1e-6 units), split across a copy group
    cosine: list[float]  # of the row's representative
    norm_ratio: list[float]
    clip: list[float]
    group: list[int]  # the row of each update's representative (itself for a representative; -1 for free-riders)
    group_size: list[int]
    details: list[str]
    median: np.ndarray  # float32 [d]: the reference the aggregate is centred on
    keep: list[Kept]  # (row, clip factor, weight) of the accepted representatives, in address order
    reference_rows: list[int]  # the rows whose coordinate-wise median is the reference (version 3: the gate)

    @property
    def accepted(self) -> list[bool]:
        return [s == Status.ACCEPTED for s in self.statuses]


HistoryRows = Callable[[np.ndarray, int], np.ndarray]
"""Rule version 5's third parties from the past: (the round's subset columns, at most how many rows) -> the accepted
updates of the previous rounds at those columns [h, s] float32, newest round first, ascending address within a round
(rules.py). Called only by small rounds, so the caller may fetch lazily."""


def assess(
    source: UpdateSource,
    rule: RuleConfig,
    step: np.ndarray | None = None,
    seed: bytes = b"",
    reputation: Sequence[int] | None = None,
    history: HistoryRows | None = None,
    stakes: Sequence[int] | None = None,
) -> Assessment:
    """Free-riders, copy groups, median, scores and decisions (rules.py) from a source of n >= 1 valid updates;
    ``step``: the previous global step (None in round 1), ``seed``: ``subset_seed`` of the round, ``reputation``:
    each row's on-chain reputation before the round (ppm, used by rule version 3; None: INITIAL_REPUTATION each),
    ``history``: the previous rounds' accepted updates (rule version 5; None: there are none, as in round 1),
    ``stakes``: each row's stake when the round opened (rule version 7 votes by it; required there)."""
    n = source.n
    if rule.stake_votes and (stakes is None or len(stakes) != n):
        raise RuleError(f"rule version {rule.version} weighs the median by stake: "
                        f"{'no' if stakes is None else len(stakes)} stakes for {n} valid updates")
    if rule.weighted and reputation is None:
        reputation = [INITIAL_REPUTATION] * n
    if rule.weighted and reputation is not None and len(reputation) != n:
        raise RuleError(f"rule versions 3 and 4 weight updates by reputation: {len(reputation)} reputations for {n} "
                        "valid updates")
    verified = rule.aggregator == "median-verified-mean"
    columns = subset_columns(source.d, seed)
    first = source.first_pass(columns)
    norms = [math.sqrt(v) for v in first.norm_sq]
    group = list(range(n))
    details = [""] * n
    if verified and rule.duplicate_tolerance is not None:
        step_s = None if step is None else np.ascontiguousarray(step[columns], dtype=np.float32)
        _copies_and_free_riders(first.subset, step_s, rule.duplicate_tolerance, group, details)
    reps = [i for i in range(n) if group[i] == i]
    members = {r: [r] for r in reps}  # leader -> the representatives in its redundancy group (version 4)
    if rule.groups_redundant:
        extra = _history_rows(rule, history, columns, len(reps))
        joined, why = redundancy_groups(
            first.subset[reps], reps, reps, ratio=rule.redundancy_ratio, share=rule.redundancy_share,
            min_third_parties=rule.redundancy_min_third_parties, extra=extra,
        )
        seen = "" if extra is None else f" and {len(extra)} accepted updates of earlier rounds"
        for r, leader in joined.items():
            members[leader].append(r)
            del members[r]
            details[r] = (f"redundant with update {leader} (address order): their difference is noise the others' "
                          f"updates{seen} do not see (t={why[r].t:.3g}, share {why[r].share:.3g})")
    verdict = _judge(source, first, rule, members, group, norms, reputation, n, details, stakes)
    statuses, fixed, cosine, ratio, clip, sizes = (verdict.statuses, verdict.fixed, verdict.cosine, verdict.ratio,
                                                   verdict.clip, verdict.sizes)
    carriers = {}  # leader -> the accepted representatives of its group
    for leader, reps_in in members.items():
        alive = [r for r in reps_in if statuses[r] == Status.ACCEPTED]
        if alive:
            carriers[leader] = alive
    leaders = sorted(carriers)
    if rule.weighted and reputation is not None:
        first_of = [carriers[r][0] for r in leaders]  # the group's first accepted update carries its weight
        undivided = [round(cosine[r] * clip[r] * SCORE_SCALE) for r in first_of]
        shares = group_weights(undivided, [reputation[r] for r in first_of], [len(carriers[r]) for r in leaders],
                               rule)
        weight_of = {r: w for leader, w in zip(leaders, shares, strict=True) for r in carriers[leader]}
    else:
        weight_of = {r: 1.0 for leader in leaders for r in carriers[leader]}
    keep = [(r, clip[r] if verified else 1.0, weight_of[r]) for r in sorted(weight_of)]
    return Assessment(statuses, fixed, cosine, ratio, clip, group, sizes, details, verdict.median, keep,
                      verdict.ref_rows)


@dataclass
class AcceptedHistory:
    """``HistoryRows`` from memory, for simulations that run many rounds in one process: each round's accepted
    updates (address order) as it ends, the newest ``rounds`` kept."""

    rounds: int
    past: list[np.ndarray] = field(default_factory=list)  # [h, d] float32 per round, oldest first

    def record(self, stack: np.ndarray, accepted: Sequence[bool]) -> None:
        kept = np.ascontiguousarray(np.asarray(stack, dtype=np.float32)[np.asarray(accepted, dtype=bool)])
        self.past = [*self.past, kept][-self.rounds:] if self.rounds > 0 else []

    def rows(self, columns: np.ndarray, limit: int) -> np.ndarray:
        taken = [stack[:, columns] for stack in reversed(self.past) if len(stack)]
        if not taken:
            return np.empty((0, len(columns)), dtype=np.float32)
        return np.concatenate(taken)[:limit]

    def source(self) -> HistoryRows | None:
        """What ``evaluate_round`` takes: None before any round has ended."""
        return self.rows if self.past else None


def _history_rows(rule: RuleConfig, history: HistoryRows | None, columns: np.ndarray, reps: int) -> np.ndarray | None:
    """Version 5: the earlier rounds' rows that join a small round's third parties (None when there are none)."""
    if not rule.history_rounds or history is None or reps - 2 >= rule.redundancy_min_third_parties:
        return None
    room = history_room(reps, len(columns), rule.redundancy_ratio)
    rows = history(columns, room) if room > 0 else None
    if rows is None or len(rows) == 0:
        return None
    if rows.ndim != 2 or rows.shape[1] != len(columns) or len(rows) > room:
        raise RuleError(f"history rows of shape {tuple(rows.shape)}: expected at most {room} rows of "
                        f"{len(columns)} columns")
    return np.ascontiguousarray(rows, dtype=np.float32)


@dataclass
class _Judgement:
    statuses: list[Status]
    fixed: list[int]
    cosine: list[float]
    ratio: list[float]
    clip: list[float]
    sizes: list[int]
    median: np.ndarray
    ref_rows: list[int]


def _judge(
    source: UpdateSource, first: FirstPass, rule: RuleConfig, members: dict[int, list[int]], group: list[int],
    norms: list[float], reputation: Sequence[int] | None, n: int, details: list[str],
    stakes: Sequence[int] | None = None,
) -> _Judgement:
    """The reference median over the (gate of the) redundancy groups' leaders, one vote per group (version 7: the
    group's stake in votes; version 8: and its stake's multiple of the median stake in norm allowance), and the scores
    and statuses of every representative against it; each update of a group (exact copies and redundant members)
    gets its own representative's status and cosine, and its share of the score (rules.py). ``members``: leader ->
    the representatives of its redundancy group (one each before version 4). In place: ``group`` (every update's
    pointer becomes its leader) and ``details``."""
    leaders = sorted(members)
    reps = sorted(r for reps_in in members.values() for r in reps_in)
    leader_of = {r: leader for leader, reps_in in members.items() for r in reps_in}
    rows_of: dict[int, list[int]] = {leader: [] for leader in leaders}  # every update of the group, in order
    for i in range(n):
        if group[i] >= 0:
            rows_of[leader_of[group[i]]].append(i)
    ref_rows = reference_gate(leaders, reputation, rule) if rule.weighted and reputation is not None else leaders
    votes = norm_votes = None
    allowance = dict.fromkeys(leaders, 1.0)
    if rule.stake_votes and stakes is not None and leaders:
        # a group votes its largest stake: copies add no votes (one vote per distinct update, as in version 4)
        group_stake = {leader: max(int(stakes[i]) for i in rows_of[leader]) for leader in leaders}
        votes = median_votes([group_stake[r] for r in ref_rows]) if ref_rows else None
        if votes is not None:  # a leader without votes does not vote
            ref_rows, votes = [r for r, v in zip(ref_rows, votes) if v], [v for v in votes if v]
        norm_votes = median_votes([group_stake[r] for r in leaders])
        if rule.stake_allowance:  # version 8: a times the median stake, a times the norm
            typical_stake = statistics.median_low(group_stake.values())
            if typical_stake > 0:
                allowance = {r: max(1.0, group_stake[r] / typical_stake) for r in leaders}
    median, dots, median_sq = first.median, first.dot_median, first.median_sq
    if ref_rows and (len(ref_rows) < n or votes is not None):
        median, rep_dots, median_sq = source.median_pass(ref_rows, reps, votes)
        dots = [0.0] * n
        for r, v in zip(reps, rep_dots, strict=True):
            dots[r] = v
    typical = weighted_median_f64([norms[r] for r in leaders], norm_votes)
    ref_norm = math.sqrt(median_sq)
    statuses = [Status.FREE_RIDE] * n
    fixed, cosine, ratio, clip, sizes = [0] * n, [0.0] * n, [0.0] * n, [1.0] * n, [1] * n
    for r in reps:
        leader = leader_of[r]
        size = len(rows_of[leader])
        sc = _scores([norms[r]], [dots[r]], ref_norm, rule, typical * allowance[leader])
        status = decide(sc.fixed[0], sc.norm_ratio[0], rule)
        share = round(sc.cosine[0] * sc.clip[0] * SCORE_SCALE / size)
        for i in (i for i in range(n) if group[i] == r):
            statuses[i], fixed[i], sizes[i] = status, share, size
            cosine[i], ratio[i], clip[i] = sc.cosine[0], sc.norm_ratio[0], sc.clip[0]
            if i != r:
                where = "" if leader == r else f", in the redundancy group of update {leader}"
                details[i] = f"copy of update {r} (address order){where}, group of {size}: the group shares one score"
    for i in range(n):
        if group[i] >= 0:
            group[i] = leader_of[group[i]]
    return _Judgement(statuses, fixed, cosine, ratio, clip, sizes, median, list(ref_rows))


def reference_gate(reps: Sequence[int], reputation: Sequence[int], rule: RuleConfig) -> list[int]:
    """Rule version 3: the representatives whose reputation is at least ``reference_gate_ppm`` (ppm) of the
    lower median reputation of all representatives (exact integers; always at least half of them)."""
    if not reps:
        return []
    floor = statistics.median_low([reputation[r] for r in reps]) * rule.reference_gate_ppm
    return [r for r in reps if reputation[r] * PPM >= floor]


def trust_weights(scores: Sequence[int], reputation: Sequence[int], rule: RuleConfig) -> list[float]:
    """Rule version 3: f_i = float32(W_i / sum W) with W_i = max(S_i, 0) ** a * R_i ** b (exact integers; S_i the
    undivided fixed-point score, R_i the reputation in ppm), or float32(1 / k) each when every W_i is 0."""
    return group_weights(scores, reputation, [1] * len(scores), rule)


def group_weights(scores: Sequence[int], reputation: Sequence[int], sizes: Sequence[int], rule: RuleConfig) -> list[
        float]:
    """Rule version 4: each redundancy group (leader's undivided score S, reputation R, k members) weighs what one
    update weighs in version 3, W = max(S, 0) ** a * R ** b, and each member carries float32(W / (k * sum W)) (exact
    integers; float32(1 / (K k)) each when every W is 0, K the number of groups). With k = 1: trust_weights."""
    w = [max(s, 0) ** rule.score_weight_power * r**rule.reputation_weight_power
         for s, r in zip(scores, reputation, strict=True)]
    total = sum(w)
    if total == 0:
        return [float(np.float32(1 / (len(w) * k))) for k in sizes]
    return [float(np.float32(x / (k * total))) for x, k in zip(w, sizes, strict=True)]


def _copies_and_free_riders(
    sub: np.ndarray, step: np.ndarray | None, tolerance: float, group: list[int], details: list[str]
) -> None:
    """On the subset columns ``sub`` [n, s] (rules.py): free-riders (within R of 0 or of the previous step) get
    group -1; every other update joins the group of the first earlier representative within R.

    Every distance is D^2 = (|a|^2 + |b|^2) - 2 <a, b> from exactly rounded sums. Pairs are screened with a float64
    Gram matrix whose error is bounded (|fl(<a, b>) - <a, b>| <= gamma_s |a| |b| in any order); only a pair whose
    estimate falls within that bound of R^2 gets its exact <a, b>, so the screening never changes a decision."""
    n, s = sub.shape
    rows = _all_rows(n)
    refs = step[None, :] if step is not None else np.zeros((1, s), dtype=np.float32)
    sums = _Sums(n, 1)
    sums.add(sub, rows, 0, s, refs)
    norm_sq, dots, ref_sq = sums.totals()
    radius = tolerance * float(np.median(np.sqrt(np.asarray(norm_sq, dtype=np.float64))))
    radius_sq = radius * radius
    for i in range(n):
        if norm_sq[i] <= radius_sq:
            group[i], details[i] = -1, f"within {radius:.4g} (the copy radius, subset columns) of the zero update"
        elif step is not None and (norm_sq[i] + ref_sq[0]) - 2.0 * dots[0][i] <= radius_sq:
            group[i], details[i] = -1, f"within {radius:.4g} (the copy radius, subset columns) of the previous step"
    live = [i for i in range(n) if group[i] >= 0]
    if len(live) < 2:
        return
    x64 = sub[live].astype(np.float64)
    gram = x64 @ x64.T
    gamma = s * _EPS / (1 - s * _EPS)
    reps: list[int] = []  # positions in ``live``
    for a, i in enumerate(live):
        for b in reps:
            j = live[b]
            total = norm_sq[i] + norm_sq[j]
            margin = (2 * gamma + 8 * _EPS) * total + 1e-300
            est = total - 2.0 * float(gram[a, b])
            if est > radius_sq + margin:
                continue
            if est < radius_sq - margin or total - 2.0 * _row_dot(sub, i, sub[j : j + 1]) <= radius_sq:
                group[i] = j
                break
        else:
            reps.append(a)


class StackSource:
    """The valid updates in memory: a C-contiguous float32 [n, d] array."""

    def __init__(self, u: np.ndarray) -> None:
        self.u = np.ascontiguousarray(u, dtype=np.float32)
        self.n, self.d = u.shape

    def _median_sums(self, rows: np.ndarray) -> tuple[np.ndarray, list[float], list[float], float]:
        """(median of ``rows``, |u_i|^2, <u_i, median>, |median|^2) in one pass (the sums read the stack itself)."""
        whole = rows.size == self.n
        return _median_sums_pass(
            self.d, rows.size, _block_cols(rows.size), worker_count(),
            lambda s, e: (self.u[:, s:e] if whole else self.u[rows, s:e], self.u, rows, s),
        )

    def first_pass(self, columns: np.ndarray) -> FirstPass:
        median, norm_sq, dots, median_sq = self._median_sums(_all_rows(self.n))
        return FirstPass(median, norm_sq, dots, median_sq, np.ascontiguousarray(self.u[:, columns]))

    def median_pass(
        self, rows: Sequence[int], score_rows: Sequence[int] | None = None, votes: Sequence[int] | None = None
    ) -> tuple[np.ndarray, list[float], float]:
        if votes is None and (score_rows is None or list(score_rows) == list(rows)):
            median, _, dots, median_sq = self._median_sums(np.asarray(rows, dtype=np.intp))
            return median, dots, median_sq
        med_rows = np.asarray(rows, dtype=np.intp)
        sum_rows = med_rows if score_rows is None else np.asarray(score_rows, dtype=np.intp)
        median, _, dots, median_sq = _median_sums_pass(
            self.d, sum_rows.size, _block_cols(sum_rows.size), worker_count(),
            lambda s, e: (self.u[med_rows, s:e], self.u, sum_rows, s), votes=votes,
        )
        return median, dots, median_sq

    def aggregate(self, base: np.ndarray, keep: Sequence[Kept], median: np.ndarray, rule: RuleConfig) -> np.ndarray:
        return _aggregate_np(base, self.u, keep, rule, median)


class ReferenceSource(StackSource):
    """The same source computed with the original definitions (``_reference_*``): the oracle of the tests and of
    ``fedledger bench aggregate``. Slow (``math.fsum`` over numpy scalars)."""

    def first_pass(self, columns: np.ndarray) -> FirstPass:
        t = torch.from_numpy(self.u)
        median = _reference_median(t)
        norm_sq = [_reference_dot(r, r) for r in t]
        dots = [_reference_dot(r, median) for r in t]
        subset = np.ascontiguousarray(self.u[:, columns])
        return FirstPass(median.numpy(), norm_sq, dots, _reference_dot(median, median), subset)

    def median_pass(
        self, rows: Sequence[int], score_rows: Sequence[int] | None = None, votes: Sequence[int] | None = None
    ) -> tuple[np.ndarray, list[float], float]:
        voters = torch.from_numpy(np.ascontiguousarray(self.u[list(rows)]))
        median = _reference_median(voters) if votes is None else _reference_weighted_median(voters, votes)
        scored = torch.from_numpy(np.ascontiguousarray(self.u[list(rows if score_rows is None else score_rows)]))
        return median.numpy(), [_reference_dot(r, median) for r in scored], _reference_dot(median, median)

    def aggregate(self, base: np.ndarray, keep: Sequence[Kept], median: np.ndarray, rule: RuleConfig) -> np.ndarray:
        flags = [False] * self.n
        clips = [1.0] * self.n
        weights = [1.0] * self.n
        for i, c, w in keep:
            flags[i], clips[i], weights[i] = True, c, w
        t = torch.from_numpy(self.u)
        return _reference_aggregate(
            torch.from_numpy(base), t, flags, rule, torch.from_numpy(median), clips, weights
        ).numpy()


def run_rule(
    source: UpdateSource,
    base: np.ndarray,
    rule: RuleConfig,
    step: np.ndarray | None = None,
    seed: bytes = b"",
    reputation: Sequence[int] | None = None,
    history: HistoryRows | None = None,
    stakes: Sequence[int] | None = None,
) -> tuple[Assessment, np.ndarray]:
    """The whole rule: (verdicts of the valid updates, the new flat global model)."""
    verdicts = assess(source, rule, step, seed, reputation, history, stakes)
    return verdicts, source.aggregate(base, verdicts.keep, verdicts.median, rule)


def warm_up() -> None:
    """Run every kernel once on a tiny round (compiled kernels load from their cache or compile here)."""
    rng = np.random.default_rng(0)
    u = rng.standard_normal((5, SUBSET_COLUMNS + 3 * TILE + 5), dtype=np.float32)
    u[4] = u[3]
    u[2, :7] = np.float32(1e-30)  # elements the two slices do not hold
    for rule in (RuleConfig.version2(), RuleConfig()):
        run_rule(StackSource(u), np.zeros(u.shape[1], dtype=np.float32), rule, u[0] * np.float32(0.5),
                 reputation=[500_000, 100_000, 900_000, 500_000, 500_000])


# ----------------------------------------------------------------------------------------------------------------
# Rounds


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
    group_size: int = 1  # the updates sharing this verdict's score (copies and, version 4, redundant updates)


@dataclass(frozen=True)
class ValidSet:
    participants: list[str]
    stack: torch.Tensor  # [n_valid, d]
    invalid: list[Verdict]
    hashes: list[bytes]  # sha256 of each valid update's bytes (its committed content hash)


def validate(submissions: Sequence[Submission], shapes: Mapping[str, tuple[int, ...]]) -> ValidSet:
    ordered = sorted(submissions, key=lambda s: s.participant.lower())
    d = sum(math.prod(s) for s in shapes.values())
    valid: list[str] = []
    fetched = sum(1 for s in ordered if s.failure is None and s.payload is not None)
    stack = torch.empty((fetched, d), dtype=torch.float32)
    invalid: list[Verdict] = []
    hashes: list[bytes] = []
    for sub in ordered:
        if sub.failure is not None or sub.payload is None:
            invalid.append(Verdict(sub.participant, sub.failure or Status.UNAVAILABLE, 0, sub.detail))
            continue
        try:
            params = deserialize(sub.payload, shapes)
        except UpdateRejected as exc:
            invalid.append(Verdict(sub.participant, exc.status, 0, exc.detail))
            continue
        row, offset = stack[len(valid)].numpy(), 0
        for name in sorted(params):  # flatten(params), copied straight into the stack
            values = params[name].numpy().reshape(-1)
            row[offset : offset + values.size] = values
            offset += values.size
        valid.append(sub.participant)
        hashes.append(hashlib.sha256(sub.payload).digest())
    return ValidSet(valid, stack[: len(valid)], invalid, hashes)


@dataclass(frozen=True)
class RoundOutcome:
    verdicts: list[Verdict]  # one per submission, ascending address
    new_params: Params

    @property
    def accepted(self) -> list[str]:
        return [v.participant for v in self.verdicts if v.status == Status.ACCEPTED]


_UPDATE_ROW = re.compile(r"\bupdate (\d+)\b")  # how details name another row (by its participant in verdicts)


def verdicts_of(participants: Sequence[str], result: Assessment) -> list[Verdict]:
    """The verdicts of the valid updates (address order)."""
    out = []
    for i, p in enumerate(participants):
        detail = _UPDATE_ROW.sub(lambda m: participants[int(m.group(1))], result.details[i])
        free = result.statuses[i] == Status.FREE_RIDE
        out.append(
            Verdict(
                p, result.statuses[i], result.fixed[i], detail,
                None if free else result.cosine[i], None if free else result.norm_ratio[i], result.group_size[i],
            )
        )
    return out


def reputation_rows(
    participants: Sequence[str], reputation: Mapping[str, int] | None, rule: RuleConfig
) -> list[int] | None:
    """Each valid update's participant's reputation before the round (INITIAL_REPUTATION for a participant not in
    ``reputation``; ``None``: nobody has a record yet, as in a first round), for rule version 3; None for the rules
    that do not use it."""
    if not rule.weighted:
        return None
    known = reputation or {}
    return [int(known.get(p, INITIAL_REPUTATION)) for p in participants]


def stake_rows(participants: Sequence[str], stakes: Mapping[str, int] | None, rule: RuleConfig) -> list[int] | None:
    """Each valid update's participant's stake when the round opened (0 for one not in ``stakes``), for rule version
    7; None for the rules that do not vote by stake."""
    if not rule.stake_votes:
        return None
    if stakes is None:
        raise RuleError(f"rule version {rule.version} weighs the median by stake: the round's stakes are missing")
    known = {p.lower(): int(v) for p, v in stakes.items()}
    return [known.get(p.lower(), 0) for p in participants]


def global_step(base: Params, previous_base: Params | None) -> np.ndarray | None:
    """The previous round's global step g = base_r - base_{r-1} (float32, flat), public on-chain; None in round 1."""
    if previous_base is None:
        return None
    return (flatten(base) - flatten(previous_base)).numpy()


def evaluate_round(
    base: Params,
    submissions: Sequence[Submission],
    rule: RuleConfig,
    previous_base: Params | None = None,
    *,
    reputation: Mapping[str, int] | None = None,
    source: type[StackSource] = StackSource,
    history: HistoryRows | None = None,
    stakes: Mapping[str, int] | None = None,
) -> RoundOutcome:
    """Validate, detect free-riders and copies, score against the median reference, decide, and aggregate one
    round. ``previous_base``: the previous round's base model (None in round 1); ``reputation``: participant ->
    on-chain reputation before the round (ppm), INITIAL_REPUTATION for one not in it (rule version 3 needs it);
    ``history``: the previous rounds' accepted updates (rule version 5, small rounds); ``stakes``: participant ->
    stake when the round opened (rule version 7; 0 for one not in it). ``source=ReferenceSource`` runs the original
    (slow) definitions."""
    shapes = {k: tuple(v.shape) for k, v in base.items()}
    vs = validate(submissions, shapes)
    verdicts = list(vs.invalid)
    base_flat = flatten(base).numpy()
    if vs.participants:
        result, new_flat = run_rule(
            source(vs.stack.numpy()), base_flat, rule, global_step(base, previous_base),
            subset_seed(vs.hashes, base_flat.size), reputation_rows(vs.participants, reputation, rule), history,
            stake_rows(vs.participants, stakes, rule),
        )
        verdicts.extend(verdicts_of(vs.participants, result))
    else:
        new_flat = base_flat.copy()
    verdicts.sort(key=lambda v: v.participant.lower())
    return RoundOutcome(verdicts, unflatten(torch.from_numpy(new_flat), shapes))
