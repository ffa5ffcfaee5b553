"""Median reference, scoring, decisions and aggregation: plain functions over a stack of flat updates.

Every function takes participants in ascending address order and is deterministic bit for bit (see rules.py).

The public functions keep their original definitions (kept below as ``_reference_*``, and the tests compare with
them bit for bit); they are computed by column-chunked kernels that use every core (docs/aggregation-performance.md):

* median: each chunk of columns is transposed to [columns, n] and sorted along the contiguous axis (numpy's SIMD
  sort). A selection is exact, so any algorithm gives the same value; the only freedom is the sign of a zero median
  (-0.0 and +0.0 compare equal) and NaN, and those columns are recomputed with the original torch call.
* exact dot products: each float32 row of a chunk is split exactly into 2-4 float32 "slices" on a power-of-two grid
  derived from the row's largest magnitude (Ozaki-style error-free splitting). A product of two slices has at most
  2*beta significant bits on a common grid, so a float64 sum of up to 2**(53 - 2*beta) of them is exact in *any*
  order: BLAS / SIMD reductions compute every slice-pair sum exactly. The few low bits below the last slice go
  through the same exact path element by element. All those exact float64 partials are merged in ``ExactSums``
  (per binary exponent buckets, exact), and the final value is rounded once by ``math.fsum``: the same correctly
  rounded float64 as ``math.fsum`` of the products, independent of chunking, order and thread count.
* aggregate: the same element-wise float32 operations in the same per-coordinate order, per column chunk.
"""

from __future__ import annotations

import math
import threading
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol, TypeVar

import numpy as np
import torch

from trainer.errors import UpdateRejected
from trainer.model import Params
from trainer.rules import SCORE_SCALE, RuleConfig, Status
from trainer.serialization import deserialize

T = TypeVar("T")


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
) -> torch.Tensor:
    if stack.shape[0] == 0:
        return base.clone()
    ref = reference
    if rule.aggregator == "median":
        return base + ref
    total = torch.zeros_like(base)
    k = 0
    factors = [1.0] * stack.shape[0] if clips is None else clips
    for u, ok, c in zip(stack, accepted, factors, strict=True):
        if ok:
            total = total + ((u if c == 1.0 else u * torch.tensor(c, dtype=torch.float32)) - ref)
            k += 1
    if k == 0:
        return base.clone()
    return base + (ref + total / k)


# ----------------------------------------------------------------------------------------------------------------
# Threads and chunking

TILE = 8192  # columns per exact-sum tile: beta = 20 bits per slice (2 * 20 + 13 <= 53)
TILE_ELEMS = 1 << 17  # rows * columns of one tile: its float32 and float64 slices stay in the caches
BLOCK_ELEMS = 1 << 20  # rows * columns per in-memory task (median transposes one block at a time)
MAX_SLICES = 4
MEDIAN_ELEMS = 1 << 22  # values transposed at once by the median (16 MB)


def worker_count() -> int:
    """Threads the kernels use: torch's intra-op setting. Results never depend on it."""
    return max(1, torch.get_num_threads())


def _beta(cols: int) -> int:
    """Bits per slice for sums of ``cols`` slice products: 2*beta + log2(cols) <= 53 keeps every partial sum exact,
    and beta <= 22 keeps the float32 rounding trick valid (|x| <= 2**(E - beta + 22))."""
    return min(20, (53 - max(1, math.ceil(math.log2(max(cols, 2))))) // 2)


def _run_tasks(fn: Callable[[int], None], count: int, workers: int) -> None:
    """Run fn(0..count-1) on ``workers`` threads (numpy releases the GIL inside its loops). Exceptions propagate."""
    if count == 0:
        return
    if workers <= 1 or count == 1:
        for i in range(count):
            fn(i)
        return
    with ThreadPoolExecutor(max_workers=min(workers, count), thread_name_prefix="fedledger-agg") as pool:
        for fut in [pool.submit(fn, i) for i in range(count)]:
            fut.result()


def _pipelined(prepare: Callable[[int], T], consume: Callable[[int, T], None], count: int, workers: int) -> None:
    """consume(j, prepare(j)) for j = 0..count-1, consume in this thread and in order, prepare up to ``workers - 1``
    blocks ahead on background threads. The exact sums (many short numpy calls) stay on one thread: two threads
    making short calls mostly trade the GIL; the median's long sorts release it and overlap them."""
    if workers <= 1 or count <= 1:
        for j in range(count):
            consume(j, prepare(j))
        return
    with ThreadPoolExecutor(max_workers=workers - 1, thread_name_prefix="fedledger-agg") as pool:
        pending: deque[Future[T]] = deque()
        submitted = 0
        for j in range(count):
            while submitted < count and submitted <= j + workers - 1:
                pending.append(pool.submit(prepare, submitted))
                submitted += 1
            consume(j, pending.popleft().result())


def _column_blocks(d: int, cols: int) -> list[tuple[int, int]]:
    cols = max(1, cols)
    return [(s, min(d, s + cols)) for s in range(0, d, cols)]


def _block_cols(n: int) -> int:
    """Columns per in-memory block: about BLOCK_ELEMS values, a multiple of TILE (at least one tile)."""
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
_BUCKET_LO = 704  # buckets cover biased float64 exponents [704, 1344): |v| in [2**-319, 2**321), which holds every
_BUCKETS = 640  # product of float32 values and every slice-pair sum; others go straight to the exact spill list
_SPILL_AT = 1 << 25  # values a row may take between spills; a bucket stays exact up to 2**26
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


class _Pending:
    """Batches (row, exact partial) pairs of many tiles into one ExactSums.add call."""

    def __init__(self, acc: ExactSums) -> None:
        self.acc = acc
        self._rows: list[np.ndarray] = []
        self._vals: list[np.ndarray] = []
        self._size = 0

    def add(self, rows: np.ndarray | int, values: np.ndarray) -> None:
        """``rows`` broadcasts against ``values``."""
        self._rows.append(rows)
        self._vals.append(values)
        self._size += np.size(values)
        if self._size >= 1 << 16:
            self.flush()

    def flush(self) -> None:
        if self._rows:
            pairs = [np.broadcast_arrays(np.asarray(r, dtype=np.intp), np.asarray(v, dtype=np.float64))
                     for r, v in zip(self._rows, self._vals, strict=True)]
            self.acc.add(np.concatenate([r.reshape(-1) for r, _ in pairs]),
                         np.concatenate([v.reshape(-1) for _, v in pairs]))
        self._rows, self._vals, self._size = [], [], 0


class _Scratch(threading.local):
    """Per-thread buffers reused from tile to tile (fresh large arrays would page-fault on every tile)."""

    def __init__(self) -> None:
        self.arrays: dict[str, np.ndarray] = {}

    def get(self, name: str, shape: tuple[int, ...], dtype: type) -> np.ndarray:
        size = math.prod(shape)
        a = self.arrays.get(name)
        if a is None or a.size < size:
            a = np.empty(size, dtype=dtype)
            self.arrays[name] = a
        return a[:size].reshape(shape)


_scratch = _Scratch()
_ABS_MASK = np.uint32(0x7FFF_FFFF)
_INF_BITS = 0x7F80_0000  # float32 bits of inf: |x| bits at or above it are NaN/Inf
_BIG_BITS = 0x7180_0000  # float32 bits of 2**100: larger rows are summed element-wise (sigma would overflow)


def _abs_bits(x: np.ndarray, sc: _Scratch | None) -> tuple[np.ndarray, np.ndarray]:
    """(|x| as float32 bits [r, L], their max per row)."""
    bits = sc.get("bits", x.shape, np.uint32) if sc is not None else np.empty(x.shape, dtype=np.uint32)
    np.bitwise_and(x.view(np.uint32), _ABS_MASK, out=bits)
    return bits, bits.max(axis=1)


def _split(
    x: np.ndarray, bits: np.ndarray, amax_bits: np.ndarray, beta: int, sc: _Scratch | None
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None, np.ndarray | None]:
    """Split the float32 rows of ``x`` (finite, |x| < 2**100) exactly into s float64 slices plus a few low bits:
    x = sum(slices) + low. Slice k of row i is a multiple of 2**(E_i - k*beta) with |slice| <= 2**(E_i - (k-1)*beta)
    (max|x_i| < 2**E_i), so a product of two slices is an integer of at most 2*beta bits on a common grid.

    Returns (slices [s, r, L], li, lc, low): the low bits ``low`` at [li, lc] are what lies below the grid of the
    last slice (elements smaller than 2**(E - s*beta + 23)); s is 2, or 3-4 when such elements are many.
    ``bits`` (|x| bits, from ``_abs_bits``) is overwritten."""
    rows, cols = x.shape
    bits -= np.uint32(1)  # |x| bits - 1: 0 wraps to the largest value, so the min finds the smallest non-zero
    amin_bits = bits.min(axis=1) + np.uint32(1)  # 0 for an all-zero row
    e = (amax_bits >> 23).astype(np.int64) - 126  # max|x| < 2**e, from the biased exponent
    ulp = np.maximum(amin_bits >> 23, 1).astype(np.int64) - 150  # the smallest non-zero |x| is a multiple of 2**ulp
    need = -((ulp - e) // beta)  # slices that hold every bit: ceil((e - ulp) / beta)
    li = lc = None
    s = 2
    if need.max() > 2:
        for s in range(2, MAX_SLICES + 1):
            if need.max() <= s:
                li = lc = None
                break
            # the elements 0 < |x| < 2**(E - s*beta + 23) of the rows that have some (bits holds |x| bits - 1)
            thr = np.ldexp(np.float32(1.0), (e - s * beta + 23).astype(np.int32)).view(np.uint32)  # >= 2**-126
            thr = np.where(need > s, thr - np.uint32(1), np.uint32(0))
            li, lc = np.divmod(np.flatnonzero(bits < thr[:, None]), cols)
            if li.size * 64 <= rows * cols or s == MAX_SLICES:
                break
    get = sc.get if sc is not None else (lambda _name, shape, dtype: np.empty(shape, dtype=dtype))
    xf = get("xf", (s, rows, cols), np.float64)
    q = get("q", (rows, cols), np.float32)
    rest = get("rest", (rows, cols), np.float32)
    pe = (e + 23).astype(np.int32)
    src = x
    for k in range(1, s):
        sigma = np.ldexp(np.float32(1.5), pe - k * beta)[:, None]
        np.add(src, sigma, out=q)
        q -= sigma  # src rounded to the grid 2**(E - k*beta), exactly (Rump's ExtractScalar)
        xf[k - 1] = q
        np.subtract(src, q, out=rest)
        src = rest
    low = None
    if li is not None and li.size:
        low = rest[li, lc].astype(np.float64)
        rest[li, lc] = 0.0
    else:
        li = lc = None
    xf[s - 1] = rest  # on the grid 2**(E - s*beta) once the low bits are out
    return xf, li, lc, low


def _slice_pair_sums(xf: np.ndarray) -> np.ndarray:
    """[pairs, r]: sum_j xf[k, i, j] * xf[l, i, j] for k <= l (doubled for k < l): exact, see ``_split``."""
    s = xf.shape[0]
    vals = np.empty((s * (s + 1) // 2, xf.shape[1]))
    c = 0
    for k in range(s):
        for j in range(k, s):
            np.vecdot(xf[k], xf[j], out=vals[c])
            if k != j:
                vals[c] *= 2.0
            c += 1
    return vals


@dataclass
class _RefChunk:
    """The reference chunk m of one tile, sliced once for all its row groups."""

    m: np.ndarray | None  # float32 [L]; None when there is no reference or it has NaN/Inf
    bad: bool = False  # NaN/Inf in m
    big: bool = False  # |m| >= 2**100: dot products go element-wise
    mf: np.ndarray | None = None  # float64 slices [sm, L]
    mq: np.ndarray | None = None  # float32 [L]: m without its low bits (= sum of the slices)
    mc: np.ndarray | None = None  # columns where m has low bits below its last slice
    mr: np.ndarray | None = None  # those low bits (float64)


def _ref_chunk(m: np.ndarray | None, sink: _Pending, ref_row: int | None) -> _RefChunk:
    """Slice the reference chunk and add sum m^2 (into ``ref_row``, if given)."""
    if m is None:
        return _RefChunk(None)
    m2 = m[None, :]
    bits, amax_bits = _abs_bits(m2, None)
    if amax_bits[0] >= _INF_BITS:
        return _RefChunk(None, bad=True)
    if amax_bits[0] >= _BIG_BITS:
        if ref_row is not None:
            m64 = m.astype(np.float64)
            sink.add(ref_row, m64 * m64)
        return _RefChunk(m, big=True)
    mf, _, lc, low = _split(m2, bits, amax_bits, _beta(m.shape[0]), None)
    ref = _RefChunk(m, mf=mf[:, 0, :], mq=m)
    if low is not None:
        ref.mc, ref.mr = lc, low
        ref.mq = m.copy()
        ref.mq[lc] -= low.astype(np.float32)  # exact: the sliced part of m
    if ref_row is not None:
        sink.add(ref_row, _slice_pair_sums(mf)[:, 0])
        if low is not None:
            sink.add(ref_row, low * (2.0 * m[lc].astype(np.float64) - low))  # m^2 - q^2 = low * (2m - low)
    return ref


def _dense_sums(
    x: np.ndarray, m: np.ndarray | None, sink: _Pending, norm_rows: np.ndarray | None, dot_rows: np.ndarray | None
) -> None:
    """Element-wise: every product of two float32 values is exact in float64, so ExactSums takes them as they are
    (for rows or references too large for the slices, |x| >= 2**100)."""
    x64 = x.astype(np.float64)
    if norm_rows is not None:
        sink.add(norm_rows[:, None], x64 * x64)
    if dot_rows is not None and m is not None:
        sink.add(dot_rows[:, None], x64 * m.astype(np.float64))


def _tile_sums(
    x: np.ndarray,
    ref: _RefChunk,
    sink: _Pending,
    norm_rows: np.ndarray | None,
    dot_rows: np.ndarray | None,
) -> np.ndarray | None:
    """Add the exact partial sums of one tile to ``sink``: sum x_i^2 (into norm_rows[i]) and sum x_i*m (into
    dot_rows[i]) for ``x`` [r, L] float32 and the reference chunk ``ref``. Returns a mask of the rows with NaN/Inf
    (None if there is none): their sums are left out and the caller computes them with the original definition."""
    r, cols = x.shape
    if ref.m is None:
        dot_rows = None
    if (norm_rows is None and dot_rows is None) or r == 0:
        return None
    sc = _scratch
    bits, amax_bits = _abs_bits(x, sc)
    bad = None
    if amax_bits.max() >= _BIG_BITS:  # rare: NaN/Inf rows are reported, huge rows go element-wise
        over = amax_bits >= _BIG_BITS
        nonfinite = amax_bits >= _INF_BITS
        huge = over & ~nonfinite
        if huge.any():
            _dense_sums(
                x[huge], ref.m, sink,
                norm_rows[huge] if norm_rows is not None else None,
                dot_rows[huge] if dot_rows is not None else None,
            )
        if nonfinite.any():
            bad = nonfinite
        keep = np.flatnonzero(~over)
        if not keep.size:
            return bad
        x, bits, amax_bits = x[keep], bits[keep], amax_bits[keep]
        norm_rows = norm_rows[keep] if norm_rows is not None else None
        dot_rows = dot_rows[keep] if dot_rows is not None else None
    if ref.big and dot_rows is not None:
        _dense_sums(x, ref.m, sink, None, dot_rows)
        dot_rows = None
        if norm_rows is None:
            return bad
    xf, li, lc, low = _split(x, bits, amax_bits, _beta(cols), sc)
    if norm_rows is not None:
        sink.add(norm_rows[None, :], _slice_pair_sums(xf))
        if low is not None:
            sink.add(norm_rows[li], low * (2.0 * x[li, lc].astype(np.float64) - low))  # x^2 - q^2 = low (2x - low)
    if dot_rows is not None:
        # x.m = q_x.q_m + low_x.q_m + x.low_m (q: the sliced parts), every product exact
        t = xf.reshape(-1, cols) @ ref.mf.T  # [s*rows, sm]: slice-pair sums, each exact
        sink.add(np.tile(dot_rows, xf.shape[0])[:, None], t)
        if low is not None:
            sink.add(dot_rows[li], low * ref.mq[lc].astype(np.float64))
        if ref.mr is not None:
            sink.add(dot_rows[:, None], x[:, ref.mc].astype(np.float64) * ref.mr)
    return bad


class _SumsWork:
    """Per-thread accumulators of one pass; merged exactly at the end."""

    def __init__(self, rows: int) -> None:
        self.rows = rows
        self._local = threading.local()
        self._all: list[tuple[ExactSums, _Pending]] = []
        self._lock = threading.Lock()
        self.bad_rows: set[int] = set()
        self.ref_bad = False

    def sink(self) -> _Pending:
        p = getattr(self._local, "pending", None)
        if p is None:
            acc = ExactSums(self.rows)
            p = _Pending(acc)
            self._local.pending = p
            with self._lock:
                self._all.append((acc, p))
        return p

    def note(self, bad: np.ndarray | None, row_ids: np.ndarray, m_bad: bool) -> None:
        """Record rows (of ``row_ids``) with NaN/Inf, and a reference with NaN/Inf."""
        with self._lock:
            if bad is not None:
                self.bad_rows.update(int(i) for i in row_ids[bad])
            self.ref_bad = self.ref_bad or m_bad

    def totals(self) -> list[float]:
        if not self._all:
            return [0.0] * self.rows
        first, pending = self._all[0]
        pending.flush()
        for acc, p in self._all[1:]:
            p.flush()
            first.merge(acc)
        return first.totals()


def block_sums(block: np.ndarray, ref: np.ndarray, work: _SumsWork, row_ids: np.ndarray) -> None:
    """Exact partial sums of a column block [n, c] against the reference chunk [c], into ``work``'s accumulators:
    rows 0..n-1: |u_i|^2, n..2n-1: <u_i, m>, 2n: |m|^2 (``row_ids`` selects which of the n updates these rows are)."""
    n_all = (work.rows - 1) // 2
    n, c = block.shape
    groups = max(1, -(-n * min(c, TILE) // TILE_ELEMS))
    tile_rows = -(-n // groups)
    sink = work.sink()
    for c0 in range(0, c, TILE):
        c1 = min(c, c0 + TILE)
        chunk = _ref_chunk(ref[c0:c1], sink, 2 * n_all)
        for r0 in range(0, n, tile_rows):
            ids = row_ids[r0 : r0 + tile_rows]
            bad = _tile_sums(block[r0 : r0 + tile_rows, c0:c1], chunk, sink, ids, ids + n_all)
            if bad is not None or chunk.bad:
                work.note(bad, ids, chunk.bad)


# ----------------------------------------------------------------------------------------------------------------
# Exact dot products and scores


def exact_dot(a: torch.Tensor, b: torch.Tensor) -> float:
    """<a, b> of float32 vectors as a correctly rounded float64: each product is exact in float64 and
    ``math.fsum`` rounds the sum once, so the result does not depend on summation order, SIMD or threads."""
    value = _vector_sum(a, b) if _fast_vectors(a, b) else None
    return _reference_dot(a, b) if value is None else value


def exact_norm(a: torch.Tensor) -> float:
    value = _vector_sum(a, None) if _fast_vectors(a, a) else None
    return math.sqrt(_reference_dot(a, a) if value is None else value)


def _vector_sum(a: torch.Tensor, b: torch.Tensor | None) -> float | None:
    """sum a*b (sum a^2 when b is None) by the exact kernels; None when the original definition must decide (NaN/Inf,
    or an exact zero on a Python whose fsum would give -0.0)."""
    x = a.detach().numpy()
    y = b.detach().numpy() if b is not None else None
    work = _SumsWork(3)
    sink = work.sink()
    ids = np.zeros(1, dtype=np.intp)
    for c0 in range(0, x.size, TILE):
        c1 = min(x.size, c0 + TILE)
        chunk = _ref_chunk(y[c0:c1], sink, None) if y is not None else _RefChunk(None)
        rows = (None, ids + 1) if y is not None else (ids, None)
        if _tile_sums(x[None, c0:c1], chunk, sink, *rows) is not None or chunk.bad:
            return None
    value = work.totals()[1 if y is not None else 0]
    return value if value != 0.0 or _FSUM_ZERO_IS_POSITIVE else None


def _fast_vectors(a: torch.Tensor, b: torch.Tensor) -> bool:
    return (
        a.dtype == torch.float32
        and b.dtype == torch.float32
        and a.ndim == 1
        and b.ndim == 1
        and a.shape == b.shape
        and a.is_contiguous()
        and b.is_contiguous()
        and a.device.type == "cpu"
        and b.device.type == "cpu"
    )


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


def scores_from_sums(
    totals: Sequence[float],
    n: int,
    rule: RuleConfig,
    fallback: Callable[[str, int], float] | None = None,
    bad_rows: Iterable[int] = (),
    ref_bad: bool = False,
) -> Scores:
    """Scores from the exact sums of a pass (rows 0..n-1: |u_i|^2, n..2n-1: <u_i, m>, 2n: |m|^2). Sums the kernels
    could not take (NaN/Inf rows, or an exact zero on a Python whose fsum returns -0.0) come from
    ``fallback(kind, i)`` with kind "norm_sq" | "dot" | "ref_sq"."""
    sums = list(totals)
    redo: set[tuple[str, int]] = set()
    for i in bad_rows:
        redo.update({("norm_sq", i), ("dot", i)})
    if ref_bad:
        redo.update({("dot", i) for i in range(n)} | {("ref_sq", 0)})
    if not _FSUM_ZERO_IS_POSITIVE:
        redo.update(("norm_sq", i) for i in range(n) if sums[i] == 0)
        redo.update(("dot", i) for i in range(n) if sums[n + i] == 0)
        if sums[2 * n] == 0:
            redo.add(("ref_sq", 0))
    if redo:
        if fallback is None:
            raise ValueError("updates with NaN/Inf cannot be scored here: validate them first")
        for kind, i in redo:
            index = {"norm_sq": i, "dot": n + i, "ref_sq": 2 * n}[kind]
            sums[index] = fallback(kind, i)
    norms = [math.sqrt(v) for v in sums[:n]]
    return _scores(norms, sums[n : 2 * n], math.sqrt(sums[2 * n]), rule)


def _stack_fallback(stack: torch.Tensor, reference: torch.Tensor) -> Callable[[str, int], float]:
    def fallback(kind: str, i: int) -> float:
        if kind == "norm_sq":
            return _reference_dot(stack[i], stack[i])
        if kind == "dot":
            return _reference_dot(stack[i], reference)
        return _reference_dot(reference, reference)

    return fallback


def _fast_stack(stack: torch.Tensor, reference: torch.Tensor | None = None) -> bool:
    ok = stack.dtype == torch.float32 and stack.ndim == 2 and stack.device.type == "cpu" and not stack.requires_grad
    if reference is not None:
        ok = ok and reference.dtype == torch.float32 and reference.ndim == 1 and reference.shape[0] == stack.shape[1]
        ok = ok and not reference.requires_grad and reference.device.type == "cpu"
    return ok


def _stack_pass(u: np.ndarray, reference: np.ndarray | None) -> tuple[np.ndarray, _SumsWork]:
    """One pass over the columns of an in-memory stack [n, d], block by block: the exact sums against ``reference``,
    or, when it is None, the median (on the other worker threads, a block ahead) and the exact sums against it."""
    n, d = u.shape
    median = np.empty(d, dtype=np.float32) if reference is None else reference
    work = _SumsWork(2 * n + 1)
    ids = np.arange(n, dtype=np.intp)
    blocks = _column_blocks(d, _block_cols(n))

    def prepare(j: int) -> None:
        if reference is None:
            s, e = blocks[j]
            median_into(u[:, s:e], median[s:e])

    def consume(j: int, _: None) -> None:
        s, e = blocks[j]
        block_sums(u[:, s:e], median[s:e], work, ids)

    _pipelined(prepare, consume, len(blocks), worker_count() if reference is None else 1)
    return median, work


def score_updates(stack: torch.Tensor, reference: torch.Tensor, rule: RuleConfig) -> Scores:
    if not _fast_stack(stack, reference) or stack.shape[0] == 0:
        return _reference_score_updates(stack, reference, rule)
    u = stack.detach().contiguous().numpy()
    _, work = _stack_pass(u, reference.detach().contiguous().numpy())
    return scores_from_sums(
        work.totals(), u.shape[0], rule, _stack_fallback(stack, reference), work.bad_rows, work.ref_bad
    )


def median_and_scores(stack: torch.Tensor, rule: RuleConfig) -> tuple[torch.Tensor, Scores]:
    """``coordinate_median(stack)`` and ``score_updates(stack, median, rule)`` in one pass over the columns (every
    update scored on its own: no copy groups)."""
    if stack.shape[0] == 0 or not _fast_stack(stack):
        reference = coordinate_median(stack)
        return reference, score_updates(stack, reference, rule)
    u = stack.detach().contiguous().numpy()
    median, work = _stack_pass(u, None)
    reference = torch.from_numpy(median)
    scores = scores_from_sums(
        work.totals(), u.shape[0], rule, _stack_fallback(stack, reference), work.bad_rows, work.ref_bad
    )
    return reference, scores


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
    rows: Iterable[np.ndarray | tuple[np.ndarray, float]],
    k: int,
    ref: np.ndarray,
    base: np.ndarray,
    rule: RuleConfig,
    out: np.ndarray,
) -> None:
    """``out = base + (ref + (sum over rows, in order, of (c*u - ref)) / k)`` for one column block (float32, the same
    element-wise operations as the original), or ``base + ref`` for the "median" rule, or ``base`` when k == 0.
    A row is an array (c = 1) or ``(array, c)``; c = 1 skips the multiplication (u * 1 == u exactly)."""
    if rule.aggregator == "median":
        np.add(base, ref, out=out)
        return
    if k == 0:
        out[...] = base
        return
    total = np.zeros_like(ref)
    diff = np.empty_like(ref)
    for row in rows:
        u, c = row if isinstance(row, tuple) else (row, 1.0)
        if c == 1.0:
            np.subtract(u, ref, out=diff)
        else:
            np.multiply(u, np.float32(c), out=diff)
            diff -= ref
        total += diff
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
) -> torch.Tensor:
    """New flat global model from the valid updates ``stack`` (address order), the accept flags and the clip
    factors c_i (default 1).

    The mean is taken around the median reference m: ``m + (sum_i (c_i u_i - m)) / k``, accumulated one update
    at a time in address order with element-wise float32 operations. It equals the plain mean mathematically,
    is bit-reproducible on any CPU, and returns exactly u when every accepted update is u.
    """
    if stack.shape[0] == 0:
        return base.clone()
    ref = coordinate_median(stack) if reference is None else reference
    flags = list(accepted)
    factors = [1.0] * len(flags) if clips is None else list(clips)
    if len(flags) != stack.shape[0] or len(factors) != stack.shape[0]:
        raise ValueError(f"{len(flags)} accept flags and {len(factors)} clip factors for {stack.shape[0]} updates")
    if not (_fast_stack(stack, ref) and base.dtype == torch.float32 and base.shape == ref.shape):
        return _reference_aggregate(base, stack, flags, rule, ref, factors)
    u = stack.detach().contiguous().numpy()
    keep = [(i, factors[i]) for i, ok in enumerate(flags) if ok]
    out = _aggregate_np(base.detach().contiguous().numpy(), u, keep, rule, ref.detach().contiguous().numpy())
    return torch.from_numpy(out)


def _aggregate_np(
    base: np.ndarray, u: np.ndarray, keep: Sequence[tuple[int, float]], rule: RuleConfig, ref: np.ndarray
) -> np.ndarray:
    """``aggregate`` over an in-memory [n, d] array; ``keep``: (row, clip factor) of the accepted rows, in order."""
    out = np.empty_like(base)
    blocks = _column_blocks(base.size, 1 << 16)

    def task(i: int) -> None:
        s, e = blocks[i]
        aggregate_block(((u[j, s:e], c) for j, c in keep), len(keep), ref[s:e], base[s:e], rule, out[s:e])

    _run_tasks(task, len(blocks), worker_count())
    return out


# ----------------------------------------------------------------------------------------------------------------
# The rule over a source of updates (in memory here, streamed from files in trainer/streaming.py)

SUBSET_COLUMNS = 16_384  # columns of the public subset used to rule out far-apart pairs before an exact distance
_EPS = 2.0**-53


@dataclass(frozen=True)
class FirstPass:
    """What one pass over all n valid updates gives (exact sums; see rules.py)."""

    median: np.ndarray  # float32 [d]: median of all n updates
    norm_sq: list[float]  # |u_i|^2
    dot_median: list[float]  # <u_i, median>
    median_sq: float
    dot_step: list[float] | None  # <u_i, g> for the previous global step g, None when there is none
    step_sq: float | None
    subset: np.ndarray  # float64 [n, s]: the updates at the columns of ``subset_columns(d)``


class UpdateSource(Protocol):
    """The valid updates of a round (finite float32, ascending address order) as the rule needs to read them."""

    n: int
    d: int

    def first_pass(self, step: np.ndarray | None) -> FirstPass: ...

    def median_pass(self, rows: Sequence[int]) -> tuple[np.ndarray, list[float], float]:
        """(median of ``rows``, <u_i, that median> for i in rows, |median|^2)."""
        ...

    def dot(self, i: int, j: int) -> float:
        """Exactly rounded <u_i, u_j>."""
        ...

    def aggregate(self, base: np.ndarray, keep: Sequence[tuple[int, float]], median: np.ndarray, rule: RuleConfig) -> np.ndarray:
        ...


def subset_columns(d: int) -> np.ndarray:
    """The public subset: every ceil(d / SUBSET_COLUMNS)-th column (all columns of a small model)."""
    return np.arange(0, d, max(1, -(-d // SUBSET_COLUMNS)), dtype=np.intp)


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
    keep: list[tuple[int, float]]  # (row, clip factor) of the accepted representatives, in address order

    @property
    def accepted(self) -> list[bool]:
        return [s == Status.ACCEPTED for s in self.statuses]


def assess(source: UpdateSource, rule: RuleConfig, step: np.ndarray | None = None) -> Assessment:
    """Free-riders, copy groups, median, scores and decisions (rules.py) from a source of n >= 1 valid updates."""
    n = source.n
    verified = rule.aggregator == "median-verified-mean"
    detect = verified and rule.duplicate_tolerance is not None
    first = source.first_pass(step if detect else None)
    norms = [math.sqrt(v) for v in first.norm_sq]
    group = list(range(n))
    details = [""] * n
    if detect:
        radius = rule.duplicate_tolerance * float(np.median(np.asarray(norms, dtype=np.float64)))
        radius_sq = radius * radius
        for i in range(n):
            if first.norm_sq[i] <= radius_sq:
                group[i], details[i] = -1, f"within {radius:.4g} (the copy radius) of the zero update"
            elif first.dot_step is not None and first.step_sq is not None and (
                (first.norm_sq[i] + first.step_sq) - 2.0 * first.dot_step[i] <= radius_sq
            ):
                group[i], details[i] = -1, f"within {radius:.4g} (the copy radius) of the previous global step"
        _group_copies(source, first, norms, radius, group)
    reps = [i for i in range(n) if group[i] == i]
    size = {r: sum(1 for g in group if g == r) for r in reps}
    if reps == list(range(n)):
        median, dots, median_sq = first.median, first.dot_median, first.median_sq
    elif reps:
        median, rep_dots, median_sq = source.median_pass(reps)
        dots = [0.0] * n
        for r, v in zip(reps, rep_dots, strict=True):
            dots[r] = v
    else:
        median, dots, median_sq = first.median, first.dot_median, first.median_sq
    typical = float(np.median(np.asarray([norms[r] for r in reps], dtype=np.float64))) if reps else 0.0
    ref_norm = math.sqrt(median_sq)
    statuses = [Status.FREE_RIDE] * n
    fixed, cosine, ratio, clip, sizes = [0] * n, [0.0] * n, [0.0] * n, [1.0] * n, [1] * n
    for r in reps:
        sc = _scores([norms[r]], [dots[r]], ref_norm, rule, typical)
        status = decide(sc.fixed[0], sc.norm_ratio[0], rule)
        share = round(sc.cosine[0] * sc.clip[0] * SCORE_SCALE / size[r])
        for i in (i for i in range(n) if group[i] == r):
            statuses[i], fixed[i], sizes[i] = status, share, size[r]
            cosine[i], ratio[i], clip[i] = sc.cosine[0], sc.norm_ratio[0], sc.clip[0]
            if i != r:
                details[i] = f"copy of update {r} (address order), group of {size[r]}: the group shares one score"
    keep = [(r, clip[r] if verified else 1.0) for r in reps if statuses[r] == Status.ACCEPTED]
    return Assessment(statuses, fixed, cosine, ratio, clip, group, sizes, details, median, keep)


def _group_copies(source: UpdateSource, first: FirstPass, norms: Sequence[float], radius: float, group: list[int]) -> None:
    """Each update (not a free-rider) joins the group of the first earlier representative within ``radius``.

    D(i, j)^2 = (|u_i|^2 + |u_j|^2) - 2 <u_i, u_j> from exact sums decides; the exact <u_i, u_j> (a pass over two
    rows) is only computed for pairs two necessary conditions cannot rule out, each with a margin that covers its
    rounding: | |u_i| - |u_j| | <= D, and the distance over the public subset of columns <= D."""
    radius_sq = radius * radius
    sub = first.subset
    sub_sq = np.einsum("ij,ij->i", sub, sub)
    gram = sub @ sub.T
    gamma = sub.shape[1] * _EPS / (1 - sub.shape[1] * _EPS)  # |fl(<a, b>) - <a, b>| <= gamma |a| |b|, any order
    reps: list[int] = []
    for i in range(len(group)):
        if group[i] < 0:
            continue
        for j in reps:
            slack = 8 * _EPS * (first.norm_sq[i] + first.norm_sq[j])
            gap = abs(norms[i] - norms[j]) * (1 - 1e-12)
            if gap > radius and gap * gap > radius_sq + slack:
                continue
            est = (sub_sq[i] + sub_sq[j]) - 2.0 * gram[i, j]
            if est - 4 * gamma * (sub_sq[i] + sub_sq[j]) > radius_sq * (1 + 1e-9) + slack:
                continue
            if (first.norm_sq[i] + first.norm_sq[j]) - 2.0 * source.dot(i, j) <= radius_sq:
                group[i] = j
                break
        else:
            reps.append(i)


class StackSource:
    """The valid updates in memory: a C-contiguous float32 [n, d] array."""

    def __init__(self, u: np.ndarray) -> None:
        self.u = u
        self.n, self.d = u.shape

    def first_pass(self, step: np.ndarray | None) -> FirstPass:
        median, norm_sq, dots, median_sq = _median_sums(self.u)
        dot_step = step_sq = None
        if step is not None:
            _, dot_step, step_sq = _sums_against(self.u, step)
        subset = self.u[:, subset_columns(self.d)].astype(np.float64)
        return FirstPass(median, norm_sq, dots, median_sq, dot_step, step_sq, subset)

    def median_pass(self, rows: Sequence[int]) -> tuple[np.ndarray, list[float], float]:
        median, _, dots, median_sq = _median_sums(np.ascontiguousarray(self.u[list(rows)]))
        return median, dots, median_sq

    def dot(self, i: int, j: int) -> float:
        return exact_dot(torch.from_numpy(self.u[i]), torch.from_numpy(self.u[j]))

    def aggregate(self, base: np.ndarray, keep: Sequence[tuple[int, float]], median: np.ndarray, rule: RuleConfig) -> np.ndarray:
        return _aggregate_np(base, self.u, keep, rule, median)


class ReferenceSource(StackSource):
    """The same source computed with the original definitions (``_reference_*``): the oracle of the tests and of
    ``fedledger bench aggregate``. Slow (``math.fsum`` over numpy scalars)."""

    def first_pass(self, step: np.ndarray | None) -> FirstPass:
        t = torch.from_numpy(self.u)
        median = _reference_median(t)
        norm_sq = [_reference_dot(r, r) for r in t]
        dots = [_reference_dot(r, median) for r in t]
        dot_step = step_sq = None
        if step is not None:
            g = torch.from_numpy(step)
            dot_step, step_sq = [_reference_dot(r, g) for r in t], _reference_dot(g, g)
        subset = self.u[:, subset_columns(self.d)].astype(np.float64)
        return FirstPass(median.numpy(), norm_sq, dots, _reference_dot(median, median), dot_step, step_sq, subset)

    def median_pass(self, rows: Sequence[int]) -> tuple[np.ndarray, list[float], float]:
        t = torch.from_numpy(np.ascontiguousarray(self.u[list(rows)]))
        median = _reference_median(t)
        return median.numpy(), [_reference_dot(r, median) for r in t], _reference_dot(median, median)

    def dot(self, i: int, j: int) -> float:
        return _reference_dot(torch.from_numpy(self.u[i]), torch.from_numpy(self.u[j]))

    def aggregate(self, base: np.ndarray, keep: Sequence[tuple[int, float]], median: np.ndarray, rule: RuleConfig) -> np.ndarray:
        flags = [False] * self.n
        clips = [1.0] * self.n
        for i, c in keep:
            flags[i], clips[i] = True, c
        t = torch.from_numpy(self.u)
        return _reference_aggregate(torch.from_numpy(base), t, flags, rule, torch.from_numpy(median), clips).numpy()


def _totals(work: _SumsWork) -> list[float]:
    if work.bad_rows or work.ref_bad:
        raise ValueError(f"updates {sorted(work.bad_rows)} contain NaN/Inf: validate them first")
    return work.totals()


def _median_sums(u: np.ndarray) -> tuple[np.ndarray, list[float], list[float], float]:
    """(median, |u_i|^2, <u_i, median>, |median|^2) of an [n, d] array in one pass."""
    n = u.shape[0]
    median, work = _stack_pass(u, None)
    sums = _totals(work)
    return median, sums[:n], sums[n : 2 * n], sums[2 * n]


def _sums_against(u: np.ndarray, ref: np.ndarray) -> tuple[list[float], list[float], float]:
    """(|u_i|^2, <u_i, ref>, |ref|^2)."""
    n = u.shape[0]
    _, work = _stack_pass(u, np.ascontiguousarray(ref, dtype=np.float32))
    sums = _totals(work)
    return sums[:n], sums[n : 2 * n], sums[2 * n]


def run_rule(
    source: UpdateSource, base: np.ndarray, rule: RuleConfig, step: np.ndarray | None = None
) -> tuple[Assessment, np.ndarray]:
    """The whole rule: (verdicts of the valid updates, the new flat global model)."""
    verdicts = assess(source, rule, step)
    return verdicts, source.aggregate(base, verdicts.keep, verdicts.median, rule)


def warm_up() -> None:
    """Run every kernel once on a tiny round (compiled kernels load from their cache or compile here)."""
    rng = np.random.default_rng(0)
    u = rng.standard_normal((5, 3 * TILE + 5), dtype=np.float32)
    u[4] = u[3]
    run_rule(StackSource(u), np.zeros(u.shape[1], dtype=np.float32), RuleConfig(), u[0] * np.float32(0.5))


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


@dataclass(frozen=True)
class ValidSet:
    participants: list[str]
    stack: torch.Tensor  # [n_valid, d]
    invalid: list[Verdict]


def validate(submissions: Sequence[Submission], shapes: Mapping[str, tuple[int, ...]]) -> ValidSet:
    ordered = sorted(submissions, key=lambda s: s.participant.lower())
    d = sum(math.prod(s) for s in shapes.values())
    valid: list[str] = []
    fetched = sum(1 for s in ordered if s.failure is None and s.payload is not None)
    stack = torch.empty((fetched, d), dtype=torch.float32)
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
        row, offset = stack[len(valid)].numpy(), 0
        for name in sorted(params):  # flatten(params), copied straight into the stack
            values = params[name].numpy().reshape(-1)
            row[offset : offset + values.size] = values
            offset += values.size
        valid.append(sub.participant)
    return ValidSet(valid, stack[: len(valid)], invalid)


@dataclass(frozen=True)
class RoundOutcome:
    verdicts: list[Verdict]  # one per submission, ascending address
    new_params: Params

    @property
    def accepted(self) -> list[str]:
        return [v.participant for v in self.verdicts if v.status == Status.ACCEPTED]


def verdicts_of(participants: Sequence[str], result: Assessment) -> list[Verdict]:
    """The verdicts of the valid updates (address order)."""
    out = []
    for i, p in enumerate(participants):
        detail = result.details[i]
        if result.group[i] >= 0 and result.group[i] != i:
            detail = detail.replace(f"update {result.group[i]}", participants[result.group[i]])
        free = result.statuses[i] == Status.FREE_RIDE
        out.append(
            Verdict(
                p, result.statuses[i], result.fixed[i], detail,
                None if free else result.cosine[i], None if free else result.norm_ratio[i],
            )
        )
    return out


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
    source: type[StackSource] = StackSource,
) -> RoundOutcome:
    """Validate, detect free-riders and copies, score against the median reference, decide, and aggregate one
    round. ``previous_base``: the previous round's base model (None in round 1). ``source=ReferenceSource`` runs
    the original (slow) definitions."""
    shapes = {k: tuple(v.shape) for k, v in base.items()}
    vs = validate(submissions, shapes)
    verdicts = list(vs.invalid)
    base_flat = flatten(base).numpy()
    if vs.participants:
        result, new_flat = run_rule(
            source(vs.stack.numpy()), base_flat, rule, global_step(base, previous_base)
        )
        verdicts.extend(verdicts_of(vs.participants, result))
    else:
        new_flat = base_flat.copy()
    verdicts.sort(key=lambda v: v.participant.lower())
    return RoundOutcome(verdicts, unflatten(torch.from_numpy(new_flat), shapes))
