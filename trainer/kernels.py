"""Compiled (numba) kernels of the aggregator: exact sums of float32 products, and the aggregate's element-wise loop.

Exact sums. For a row x and references y_1..y_K (float32, one column range), the kernel adds sum x^2 and sum x*y_k
(and sum y_k^2) to ``ExactSums`` bucket accumulators *exactly*, so that the final ``math.fsum`` of the buckets is the
correctly rounded value of the true sum: the same float64 as ``math.fsum`` of the float64 products, whatever the
chunking, the order of the columns or the number of threads.

How, per tile of TILE columns of one row (Ozaki-style error-free splitting, in integers):

* the tile's largest magnitude gives e with max|x| < 2**e (from the float32 bits: an integer max, no rounding);
* every x_j is split exactly into two integer slices on the grids 2**(e - 26) and 2**(e - 52):
  x_j = h1_j 2**(e - 26) + h2_j 2**(e - 52) with |h1|, |h2| < 2**26 (float64 scaling and truncation, both exact).
  An element the two slices do not hold (|x_j| < 2**(e - 28), with bits below 2**(e - 52)) is "uncovered": its
  slices are set to 0 and its products go to the buckets one by one (a float32 product is exact in float64);
* sum_j h_a h_b over the tile is an int64 sum of products below 2**52, of at most 2**11 terms: exact (< 2**63),
  and integer arithmetic may be vectorised and reordered freely. Each such sum S times its power of two is split
  into two exact float64 values and added to the bucket of its binary exponent (hi 27 bits / lo 26 bits, so 2**26
  additions per bucket stay exact: the ``ExactSums`` layout, see trainer/aggregation.py).

Tiles whose largest magnitude is below 2**-60 or at least 2**100 are summed element by element (every product
exact), which keeps every value the buckets see within their range. NaN/Inf are reported, never summed.

The aggregate: ``total += c*u - m`` (or ``u - m`` when c == 1) one accepted update at a time, then
``base + (m + total / k)``: the same IEEE float32 operations, in the same order, as the numpy definition; numba
compiles without fast-math, so nothing is reassociated or fused into an FMA (the tests compare bit for bit).

Compiled on first use and cached next to this file (``cache=True``); ``trainer.aggregation.warm_up`` compiles
everything ahead of a timed run. All kernels release the GIL: the caller's threads run them in parallel.
"""

from __future__ import annotations

import math

import numba
import numpy as np

TILE = 2048  # columns per tile: 2**11 products below 2**52 sum exactly in int64
BUCKET_LO = 704  # ExactSums buckets: biased float64 exponents [704, 1344)
BUCKETS = 640
_E_MIN = -60  # tiles with max|x| < 2**-60 ...
_E_MAX = 100  # ... or >= 2**100 are summed element by element
_INF_BITS = 0x7F80_0000
_ABS = 0x7FFF_FFFF

_jit = numba.njit(nogil=True, cache=True, error_model="numpy", boundscheck=False)


@_jit
def _bucket_add(hi: np.ndarray, lo: np.ndarray, count: np.ndarray, row: int, v: float) -> None:
    """Add the finite float64 ``v`` to row ``row`` of the bucket accumulator (exact)."""
    if v == 0.0:
        return
    mant, ex = math.frexp(v)  # v = mant * 2**ex, 0.5 <= |mant| < 1: biased exponent ex + 1022
    b = ex + 1022 - BUCKET_LO
    if b < 0 or b >= BUCKETS:
        raise ValueError("exact sum: value outside the accumulator's range")
    h = math.ldexp(float(np.int64(math.ldexp(mant, 27))), ex - 27)  # the top 27 significant bits (truncated)
    k = row * BUCKETS + b
    hi[k] += h
    lo[k] += v - h
    count[row] += 1


@_jit
def _add_scaled(hi: np.ndarray, lo: np.ndarray, count: np.ndarray, row: int, s: np.int64, scale: int) -> None:
    """Add the integer ``s`` times 2**scale: split into s = a + b, a with its low 11 bits clear (<= 52 significant
    bits) and 0 <= b < 2**11, each exact in float64."""
    if s == 0:
        return
    a = (s >> 11) << 11
    _bucket_add(hi, lo, count, row, math.ldexp(float(a), scale))
    _bucket_add(hi, lo, count, row, math.ldexp(float(s - a), scale))


@_jit
def _tile_exponent(bits: np.ndarray) -> tuple[int, int]:
    """(e, max |x| bits) for a tile given as float32 bits: max|x| < 2**e. (Every kernel below takes views and
    indexes them from 0: a loop index numba cannot prove non-negative compiles to gathers, not vector loads.)"""
    mx = np.uint32(0)
    for j in range(bits.shape[0]):
        mx = max(mx, bits[j] & np.uint32(_ABS))
    m = np.int64(mx)
    return max(m >> 23, 1) - 126, m


@_jit
def _split(x: np.ndarray, e: int, h1: np.ndarray, h2: np.ndarray) -> int:
    """Slices of x[j0:j1] on the grids 2**(e-26), 2**(e-52) into h1, h2 [0:j1-j0]; uncovered elements get 0 in both.
    Returns how many are uncovered (``_is_uncovered`` finds them again)."""
    scale = math.ldexp(1.0, 26 - e)
    uncovered = 0
    for j in range(x.shape[0]):
        v = np.float64(x[j]) * scale
        a = np.int32(v)
        r = (v - np.float64(a)) * 67108864.0  # 2**26
        b = np.int32(r)
        ok = r == np.float64(b)
        h1[j] = a if ok else 0
        h2[j] = b if ok else 0
        uncovered += 0 if ok else 1
    return uncovered


@_jit
def _is_uncovered(v32: np.float32, e: int) -> bool:
    v = np.float64(v32) * math.ldexp(1.0, 26 - e)
    r = (v - np.float64(np.int32(v))) * 67108864.0
    return r != np.float64(np.int32(r))


@_jit
def _pair_sums(a1: np.ndarray, a2: np.ndarray, b1: np.ndarray, b2: np.ndarray) -> tuple:
    s11 = np.int64(0)
    s12 = np.int64(0)
    s21 = np.int64(0)
    s22 = np.int64(0)
    for j in range(a1.shape[0]):
        s11 += np.int64(a1[j]) * np.int64(b1[j])
        s12 += np.int64(a1[j]) * np.int64(b2[j])
        s21 += np.int64(a2[j]) * np.int64(b1[j])
        s22 += np.int64(a2[j]) * np.int64(b2[j])
    return s11, s12, s21, s22


@_jit
def _fused1(x: np.ndarray, e: int, g1: np.ndarray, g2: np.ndarray) -> tuple:
    """The fast path of one row tile against one reference tile (slices g1, g2), in one vectorised loop: the
    uncovered count, then the slice sums of x.x and x.y. Only valid when the count is 0 (else ``_split`` and the
    general path redo the tile)."""
    scale = math.ldexp(1.0, 26 - e)
    unc = np.int64(0)
    s11 = np.int64(0)
    s12 = np.int64(0)
    s22 = np.int64(0)
    d11 = np.int64(0)
    d12 = np.int64(0)
    d21 = np.int64(0)
    d22 = np.int64(0)
    for j in range(x.shape[0]):
        v = np.float64(x[j]) * scale
        a32 = np.int32(v)
        r = (v - np.float64(a32)) * 67108864.0
        b32 = np.int32(r)
        unc += np.int64(r != np.float64(b32))
        a = np.int64(a32)
        b = np.int64(b32)
        s11 += a * a
        s12 += a * b
        s22 += b * b
        p = np.int64(g1[j])
        q = np.int64(g2[j])
        d11 += a * p
        d12 += a * q
        d21 += b * p
        d22 += b * q
    return unc, s11, s12, s22, d11, d12, d21, d22


@_jit
def _add_dot(hi, lo, count, row, s11, s12, s21, s22, e, ge):  # type: ignore[no-untyped-def]
    _add_scaled(hi, lo, count, row, s11, (e - 26) + (ge - 26))
    _add_scaled(hi, lo, count, row, s12, (e - 26) + (ge - 52))
    _add_scaled(hi, lo, count, row, s21, (e - 52) + (ge - 26))
    _add_scaled(hi, lo, count, row, s22, (e - 52) + (ge - 52))


@_jit
def _add_square(hi, lo, count, row, s11, s12, s22, e):  # type: ignore[no-untyped-def]
    _add_scaled(hi, lo, count, row, s11, 2 * (e - 26))
    _add_scaled(hi, lo, count, row, s12, (e - 26) + (e - 52) + 1)  # 2 h1 h2
    _add_scaled(hi, lo, count, row, s22, 2 * (e - 52))


@_jit
def exact_sums(
    x: np.ndarray,
    xbits: np.ndarray,
    rows: np.ndarray,
    c0: int,
    c1: int,
    refs: np.ndarray,
    refbits: np.ndarray,
    r0: int,
    hi: np.ndarray,
    lo: np.ndarray,
    count: np.ndarray,
    norms: bool,
    ref_squares: bool,
) -> int:
    """Exact partial sums over columns [c0, c1) of x [*, D] (float32, C-contiguous; ``xbits`` the same memory as
    uint32) for the rows ``rows``, against refs [K, *] at columns [r0, r0 + c1 - c0) (``refbits`` likewise).

    Accumulator rows (``hi``/``lo`` [R * BUCKETS], ``count`` [R], R = r + K*r + K for r = len(rows)):
    t: sum x_t^2 (if ``norms``); r + k*r + t: sum x_t * y_k; r + K*r + k: sum y_k^2 (if ``ref_squares``).
    Returns -1, or the position in ``rows`` of a row with NaN/Inf (-2 - k for reference k); nothing of that row
    (reference) is summed after the first NaN/Inf tile, and the caller must not use its sums."""
    r = rows.shape[0]
    kk = refs.shape[0]
    h1 = np.empty(TILE, dtype=np.int32)
    h2 = np.empty(TILE, dtype=np.int32)
    g1 = np.empty((kk, TILE), dtype=np.int32)
    g2 = np.empty((kk, TILE), dtype=np.int32)
    ge = np.empty(kk, dtype=np.int64)
    gdense = np.zeros(kk, dtype=np.bool_)  # reference tile summed element by element
    gunc = np.zeros(kk, dtype=np.int64)  # uncovered elements in the reference tile
    for t0 in range(c0, c1, TILE):
        t1 = min(c1, t0 + TILE)
        m = t1 - t0
        q0 = r0 + (t0 - c0)
        for k in range(kk):
            y = refs[k, q0 : q0 + m]
            e, mx = _tile_exponent(refbits[k, q0 : q0 + m])
            if mx >= _INF_BITS:
                return -2 - k
            ge[k] = e
            gdense[k] = mx != 0 and (e < _E_MIN or e > _E_MAX)
            gunc[k] = 0
            sq = r + kk * r + k
            if mx == 0:
                g1[k, :m] = 0
                g2[k, :m] = 0
            elif gdense[k]:
                if ref_squares:
                    for j in range(m):
                        _bucket_add(hi, lo, count, sq, np.float64(y[j]) * np.float64(y[j]))
            else:
                gunc[k] = _split(y, e, g1[k, :m], g2[k, :m])
                if ref_squares:
                    s11, s12, _, s22 = _pair_sums(g1[k, :m], g2[k, :m], g1[k, :m], g2[k, :m])
                    _add_square(hi, lo, count, sq, s11, s12, s22, e)
                    if gunc[k]:
                        for j in range(m):
                            if _is_uncovered(y[j], e):
                                _bucket_add(hi, lo, count, sq, np.float64(y[j]) * np.float64(y[j]))
        simple_refs = not gdense.any() and not gunc.any()
        for t in range(r):
            i = rows[t]
            xt = x[i, t0:t1]
            e, mx = _tile_exponent(xbits[i, t0:t1])
            if mx >= _INF_BITS:
                return t
            if mx == 0:
                continue
            dense = e < _E_MIN or e > _E_MAX
            if simple_refs and not dense and kk == 1:
                res = _fused1(xt, e, g1[0, :m], g2[0, :m])
                if res[0] == 0:
                    if norms:
                        _add_square(hi, lo, count, t, res[1], res[2], res[3], e)
                    _add_dot(hi, lo, count, r + t, res[4], res[5], res[6], res[7], e, ge[0])
                    continue
            if dense:  # element by element: every product of two float32 is exact in float64
                for j in range(m):
                    v = np.float64(xt[j])
                    if norms:
                        _bucket_add(hi, lo, count, t, v * v)
                    for k in range(kk):
                        _bucket_add(hi, lo, count, r + k * r + t, v * np.float64(refs[k, q0 + j]))
                continue
            unc = _split(xt, e, h1[:m], h2[:m])
            if norms:
                s11, s12, _, s22 = _pair_sums(h1[:m], h2[:m], h1[:m], h2[:m])
                _add_square(hi, lo, count, t, s11, s12, s22, e)
            for k in range(kk):
                row = r + k * r + t
                if gdense[k]:
                    for j in range(m):
                        _bucket_add(hi, lo, count, row, np.float64(xt[j]) * np.float64(refs[k, q0 + j]))
                    continue
                s11, s12, s21, s22 = _pair_sums(h1[:m], h2[:m], g1[k, :m], g2[k, :m])
                _add_dot(hi, lo, count, row, s11, s12, s21, s22, e, ge[k])
            if unc or gunc.any():
                # the products the slices left out: x_j uncovered, or y_kj uncovered (once per column)
                for j in range(m):
                    xu = unc != 0 and _is_uncovered(xt[j], e)
                    v = np.float64(xt[j])
                    if xu and norms:
                        _bucket_add(hi, lo, count, t, v * v)
                    for k in range(kk):
                        if gdense[k]:
                            continue
                        if xu or (gunc[k] != 0 and _is_uncovered(refs[k, q0 + j], ge[k])):
                            _bucket_add(hi, lo, count, r + k * r + t, v * np.float64(refs[k, q0 + j]))
    return -1


@_jit
def accumulate_rows(x: np.ndarray, idx: np.ndarray, factors: np.ndarray, c0: int, c1: int, ref: np.ndarray,
                    total: np.ndarray) -> None:
    """total[j] += c_t x[idx_t, c0 + j] - ref[j] for t in order (c_t = factors[t], float32; c_t == 1 skips the
    multiplication, u * 1 == u exactly): element-wise float32, the numpy definition's operations and order."""
    m = c1 - c0
    for t in range(idx.shape[0]):
        u = x[idx[t], c0:c1]
        c = factors[t]
        if c == np.float32(1.0):
            for j in range(m):
                total[j] += u[j] - ref[j]
        else:
            for j in range(m):
                total[j] += u[j] * c - ref[j]


@_jit
def accumulate_weighted(x: np.ndarray, idx: np.ndarray, factors: np.ndarray, weights: np.ndarray, c0: int, c1: int,
                        ref: np.ndarray, total: np.ndarray) -> None:
    """Rule version 3: total[j] += (c_t x[idx_t, c0 + j] - ref[j]) * w_t for t in order (c_t = factors[t],
    w_t = weights[t], float32; c_t == 1 skips the multiplication): element-wise float32, in this order."""
    m = c1 - c0
    for t in range(idx.shape[0]):
        u = x[idx[t], c0:c1]
        c = factors[t]
        w = weights[t]
        if c == np.float32(1.0):
            for j in range(m):
                total[j] += (u[j] - ref[j]) * w
        else:
            for j in range(m):
                total[j] += (u[j] * c - ref[j]) * w
