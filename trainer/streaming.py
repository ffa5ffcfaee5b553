"""Streamed aggregation: the round's rule over update blobs on disk, one block of parameters at a time.

``evaluate_round_streamed(base, submissions, rule)`` returns the same ``RoundOutcome`` as
``trainer.aggregation.evaluate_round`` bit for bit (statuses, scores, cosines, norm ratios, the new model), but
never holds more than a block of columns of the updates in memory, so memory does not grow with participants x
parameters (docs/aggregation-performance.md has the measurements: 1,000 updates x 1M parameters):

* pass 0 - validation, one blob at a time: the sha256 of the bytes (checked against the commitment when given; the
  hashes seed the round's column subset), then the same checks and reason codes as ``deserialize`` (header,
  names, dtype, shape, NaN/Inf), read in slices.
* pass 1 - for each block of columns [s, e): read rows [s, e) of every valid update (``safe_open(...).get_slice``),
  take the coordinate-wise median of the block (exact, per column) and add the block's exact partial sums
  (|u_i|^2, <u_i, m>, |m|^2; trainer/kernels.py) to ``ExactSums`` accumulators, which merge across blocks and
  threads exactly; keep the round's subset columns, on which free-riders and copies are found (rules.py).
  When there are copies or free-riders, a second median pass over the representatives. Then scores and
  decisions: ``trainer.aggregation.assess``, the same code as in memory.
* last pass - for each block: the aggregate ``base + (m + sum_accepted (c_i u_i - m) / k)`` with the same
  element-wise float32 operations in address order, reading the accepted representatives' rows.

The lower-level ``stream_rule(n, d, read, base_flat, rule)`` takes any ``read(i, start, end) -> float32 array`` (a
slice of participant i's flat update; i in ascending address order) instead of files.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import struct
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError, safe_open

from trainer.aggregation import (
    TILE,
    Assessment,
    FirstPass,
    HistoryRows,
    Kept,
    RoundOutcome,
    Verdict,
    _all_rows,
    _column_blocks,
    _median_sums_pass,
    _run_tasks,
    aggregate_block,
    flatten,
    global_step,
    median_into,
    reputation_rows,
    run_rule,
    stake_rows,
    subset_seed,
    unflatten,
    verdicts_of,
    worker_count,
)
from trainer.errors import UpdateRejected
from trainer.model import Params
from trainer.rules import RuleConfig, Status

Reader = Callable[[int, int, int], np.ndarray]

DEFAULT_BLOCK_BYTES = 128 << 20  # one block of pass 1 (n x columns float32); `workers` blocks are in memory at once
MAX_DEFAULT_WORKERS = 3  # the sums run on one thread; more readers ahead of it only cost memory
AGGREGATE_BLOCK_COLS = 1 << 18  # pass 2 holds three vectors of this many columns per worker, not a block
_MAX_HEADER = 100_000_000  # safetensors refuses larger headers
_READ_PIECE = 1 << 22  # elements per slice read while validating


@dataclass(frozen=True)
class BlobSubmission:
    """One committed update as a file (what ``Submission`` is for bytes in memory)."""

    participant: str
    path: str | os.PathLike[str] | None
    failure: Status | None = None  # set by the fetcher: UNAVAILABLE or HASH_MISMATCH
    detail: str = ""
    sha256: bytes | None = None  # when given, the file's bytes must hash to it (else HASH_MISMATCH)


@dataclass(frozen=True)
class StreamedRound:
    median: np.ndarray  # float32 [d]
    assessment: Assessment
    accepted: list[bool]
    new_flat: np.ndarray  # float32 [d]


# ----------------------------------------------------------------------------------------------------------------
# The rule over a reader


class ReaderSource:
    """The valid updates as ``read(i, start, end)`` slices, one block of columns at a time (an ``UpdateSource``)."""

    def __init__(self, n: int, d: int, read: Reader, block_cols: int, workers: int) -> None:
        self.n, self.d = n, d
        self.read = read
        self.block_cols = block_cols
        self.workers = workers

    def _block(self, rows: Sequence[int], s: int, e: int) -> np.ndarray:
        block = np.empty((len(rows), e - s), dtype=np.float32)
        for k, i in enumerate(rows):
            block[k] = _checked(self.read(i, s, e), i, s, e)
        return block

    def _median_sums(
        self, rows: Sequence[int], columns: np.ndarray | None
    ) -> tuple[np.ndarray, list[float], list[float], float, np.ndarray | None]:
        """One pass over the columns, ``workers`` blocks in memory at a time: the median of ``rows``, the exact sums
        against it, and the rows at ``columns`` (ascending)."""
        n = len(rows)
        sub = np.empty((n, columns.size), dtype=np.float32) if columns is not None else None
        local = _all_rows(n)

        def keep_subset(s: int, e: int, block: np.ndarray) -> None:
            if sub is not None and columns is not None:
                lo, hi = np.searchsorted(columns, (s, e))
                sub[:, lo:hi] = block[:, columns[lo:hi] - s]

        def read_block(s: int, e: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
            block = self._block(rows, s, e)
            return block, block, local, 0

        median, norm_sq, dots, median_sq = _median_sums_pass(
            self.d, n, self.block_cols, self.workers, read_block, keep_subset
        )
        return median, norm_sq, dots, median_sq, sub

    def first_pass(self, columns: np.ndarray) -> FirstPass:
        median, norm_sq, dots, median_sq, sub = self._median_sums(range(self.n), columns)
        assert sub is not None
        return FirstPass(median, norm_sq, dots, median_sq, sub)

    def median_pass(
        self, rows: Sequence[int], score_rows: Sequence[int] | None = None, votes: Sequence[int] | None = None
    ) -> tuple[np.ndarray, list[float], float]:
        if votes is None and (score_rows is None or list(score_rows) == list(rows)):
            median, _, dots, median_sq, _ = self._median_sums(list(rows), None)
            return median, dots, median_sq
        # rule version 3: the median of the gate (``rows``, a subset of ``score_rows``), sums over score_rows;
        # version 7: each of ``rows`` with its votes
        scored = list(rows if score_rows is None else score_rows)
        position = {r: k for k, r in enumerate(scored)}
        med = np.array([position[r] for r in rows], dtype=np.intp)
        local = _all_rows(len(scored))

        def read_block(s: int, e: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
            block = self._block(scored, s, e)
            return block[med], block, local, 0

        median, _, dots, median_sq = _median_sums_pass(self.d, len(scored), self.block_cols, self.workers, read_block,
                                                       votes=votes)
        return median, dots, median_sq

    def aggregate(self, base: np.ndarray, keep: Sequence[Kept], median: np.ndarray, rule: RuleConfig) -> np.ndarray:
        new_flat = np.empty(self.d, dtype=np.float32)
        agg_blocks = _column_blocks(self.d, max(self.block_cols, AGGREGATE_BLOCK_COLS))

        def pass2(j: int) -> None:
            s, e = agg_blocks[j]
            rows = ((_checked(self.read(i, s, e), i, s, e), c, w) for i, c, w in keep)
            aggregate_block(rows, len(keep), median[s:e], base[s:e], rule, new_flat[s:e])

        _run_tasks(pass2, len(agg_blocks), self.workers)
        return new_flat


def stream_rule(
    n: int,
    d: int,
    read: Reader,
    base_flat: np.ndarray,
    rule: RuleConfig,
    *,
    step: np.ndarray | None = None,
    seed: bytes = b"",
    reputation: Sequence[int] | None = None,
    history: HistoryRows | None = None,
    stakes: Sequence[int] | None = None,
    block_cols: int | None = None,
    block_bytes: int = DEFAULT_BLOCK_BYTES,
    workers: int | None = None,
) -> StreamedRound:
    """The rule (rules.py: free-riders, copies, median, scores, decisions, aggregate) over n valid updates of d
    parameters read through ``read(i, s, e)`` (float32, finite, participants in ascending address order); ``step``
    is the previous global step, ``seed`` the round's ``subset_seed``, ``reputation`` each update's participant's
    reputation before the round (rule version 3), ``history`` the previous rounds' accepted updates (rule version 5,
    small rounds), ``stakes`` each update's participant's stake at the open (rule version 7). ``block_cols``
    (default: what fits
    ``block_bytes``) never changes the result, nor does ``workers`` (default: torch's thread count, at most
    MAX_DEFAULT_WORKERS)."""
    if n <= 0:
        raise ValueError("stream_rule needs at least one valid update")
    base_flat = np.ascontiguousarray(base_flat, dtype=np.float32).reshape(-1)
    if base_flat.size != d:
        raise ValueError(f"base has {base_flat.size} parameters, updates have {d}")
    workers = min(worker_count(), MAX_DEFAULT_WORKERS) if workers is None else max(1, workers)
    if block_cols is None:
        block_cols = default_block_cols(n, block_bytes)
    source = ReaderSource(n, d, read, block_cols, workers)
    result, new_flat = run_rule(source, base_flat, rule, step, seed, reputation, history, stakes)
    return StreamedRound(result.median, result, result.accepted, new_flat)


def default_block_cols(n: int, block_bytes: int = DEFAULT_BLOCK_BYTES) -> int:
    """Columns per block of pass 1: n x columns float32 within ``block_bytes``, whole tiles (at least one)."""
    return max(TILE, (block_bytes // (4 * max(n, 1))) // TILE * TILE)


def _checked(row: np.ndarray, i: int, s: int, e: int) -> np.ndarray:
    row = np.asarray(row)
    if row.dtype != np.float32 or row.shape != (e - s,):
        raise ValueError(f"read({i}, {s}, {e}) returned {row.dtype} {row.shape}, expected float32 ({e - s},)")
    return row


# ----------------------------------------------------------------------------------------------------------------
# Safetensors blobs on disk


@dataclass(frozen=True)
class _Entry:
    name: str
    shape: tuple[int, ...]
    offset: int  # in the flat vector (tensors in sorted name order)
    numel: int


def _layout(shapes: Mapping[str, tuple[int, ...]]) -> list[_Entry]:
    out, offset = [], 0
    for name in sorted(shapes):
        numel = math.prod(shapes[name])
        out.append(_Entry(name, tuple(shapes[name]), offset, numel))
        offset += numel
    return out


def _rect(shape: tuple[int, ...], lo: int, hi: int) -> Iterator[tuple[slice | int, ...]]:
    """Index tuples of rectangular pieces covering flat elements [lo, hi) of a row-major tensor, in order."""
    if lo >= hi:
        return
    if len(shape) == 1:
        yield (slice(lo, hi),)
        return
    inner = math.prod(shape[1:])
    r0, c0 = divmod(lo, inner)
    r1, c1 = divmod(hi, inner)
    if r0 == r1:
        for sub in _rect(shape[1:], c0, c1):
            yield (r0, *sub)
        return
    if c0:
        for sub in _rect(shape[1:], c0, inner):
            yield (r0, *sub)
        r0 += 1
    if r1 > r0:
        yield (slice(r0, r1),)
    if c1:
        for sub in _rect(shape[1:], 0, c1):
            yield (r1, *sub)


def read_flat(path: str | os.PathLike[str], layout: Sequence[_Entry], start: int, end: int) -> np.ndarray:
    """Elements [start, end) of the flat update stored at ``path`` (tensors in sorted name order), read with
    ``safe_open(...).get_slice`` so only those bytes are touched; the file is closed (unmapped) on return."""
    out = np.empty(end - start, dtype=np.float32)
    pos = 0
    with safe_open(os.fspath(path), framework="numpy") as f:
        for ent in layout:
            lo, hi = max(start, ent.offset), min(end, ent.offset + ent.numel)
            if lo >= hi:
                continue
            if not ent.shape:
                out[pos] = np.asarray(f.get_tensor(ent.name)).reshape(-1)[0]
                pos += 1
                continue
            sl = f.get_slice(ent.name)
            for idx in _rect(ent.shape, lo - ent.offset, hi - ent.offset):
                piece = np.asarray(sl[idx]).reshape(-1)
                out[pos : pos + piece.size] = piece
                pos += piece.size
    if pos != out.size:
        raise ValueError(f"{path}: read {pos} of {out.size} values in [{start}, {end})")
    return out


def check_blob(path: str | os.PathLike[str], shapes: Mapping[str, tuple[int, ...]]) -> UpdateRejected | None:
    """What ``deserialize(bytes, shapes)`` would reject the file's bytes for (same status, same order of checks,
    the same details where they do not quote the parser), reading the file in slices. None when valid."""
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as fh:
            head = fh.read(8)
            if size < 8:
                return UpdateRejected(Status.BAD_FORMAT, f"blob of {size} bytes is too short to be safetensors")
            (header_len,) = struct.unpack("<Q", head)
            if header_len > size - 8:
                return UpdateRejected(
                    Status.BAD_FORMAT, f"safetensors header length {header_len} exceeds blob size {size}"
                )
            if header_len > _MAX_HEADER:
                return UpdateRejected(
                    Status.BAD_FORMAT, f"not a readable safetensors blob: header of {header_len} bytes"
                )
            header = fh.read(header_len)
    except OSError as exc:
        return UpdateRejected(Status.UNAVAILABLE, f"cannot read {path}: {exc}")
    try:
        json.loads(header)
    except ValueError as exc:
        return UpdateRejected(Status.BAD_FORMAT, f"safetensors header is not JSON: {exc}")
    try:
        with safe_open(os.fspath(path), framework="numpy") as f:
            names = set(f.keys())
            if names != set(shapes):
                missing = sorted(set(shapes) - names)
                extra = sorted(names - set(shapes))
                return UpdateRejected(
                    Status.BAD_FORMAT, f"tensor names differ: missing {missing}, unexpected {extra}"
                )
            for name in sorted(shapes):
                sl = f.get_slice(name)
                dtype = sl.get_dtype()
                if dtype != "F32":
                    return UpdateRejected(
                        Status.BAD_FORMAT, f"{name}: dtype {_torch_dtype(dtype)}, expected torch.float32"
                    )
                shape = tuple(sl.get_shape())
                if shape != tuple(shapes[name]):
                    return UpdateRejected(
                        Status.WRONG_SHAPE, f"{name}: shape {shape}, expected {tuple(shapes[name])}"
                    )
                bad = 0
                numel = math.prod(shape)
                if not shape:
                    bad = int(not np.isfinite(np.asarray(f.get_tensor(name))).all())
                    numel = 0
                for lo in range(0, numel, _READ_PIECE):
                    for idx in _rect(shape, lo, min(numel, lo + _READ_PIECE)):
                        bad += int(np.count_nonzero(~np.isfinite(np.asarray(sl[idx]))))
                if bad:
                    return UpdateRejected(Status.NON_FINITE, f"{name}: {bad} NaN/Inf values")
    except (SafetensorError, ValueError, RuntimeError, OSError) as exc:
        return UpdateRejected(Status.BAD_FORMAT, f"not a readable safetensors blob: {exc}")
    return None


def _torch_dtype(code: str) -> str:
    try:
        from safetensors.torch import _TYPES  # the same mapping torch's loader uses

        return str(_TYPES[code])
    except (ImportError, KeyError):
        return code


def file_sha256(path: str | os.PathLike[str]) -> bytes:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while piece := fh.read(1 << 22):
            h.update(piece)
    return h.digest()


def evaluate_round_streamed(
    base: Params,
    submissions: Sequence[BlobSubmission],
    rule: RuleConfig,
    previous_base: Params | None = None,
    *,
    reputation: Mapping[str, int] | None = None,
    history: HistoryRows | None = None,
    stakes: Mapping[str, int] | None = None,
    block_cols: int | None = None,
    block_bytes: int = DEFAULT_BLOCK_BYTES,
    workers: int | None = None,
) -> RoundOutcome:
    """``evaluate_round`` over blobs on disk, streamed: the same outcome bit for bit, memory bounded by a block."""
    shapes = {k: tuple(v.shape) for k, v in base.items()}
    layout = _layout(shapes)
    d = sum(e.numel for e in layout)
    ordered = sorted(submissions, key=lambda s: s.participant.lower())
    workers = min(worker_count(), MAX_DEFAULT_WORKERS) if workers is None else max(1, workers)
    problems: list[UpdateRejected | None] = [None] * len(ordered)
    hashes: list[bytes] = [b""] * len(ordered)  # the content hashes seed the round's column subset

    def check(j: int) -> None:
        sub = ordered[j]
        if sub.failure is not None or sub.path is None:
            return
        try:
            got = hashes[j] = file_sha256(sub.path)
        except OSError as exc:
            problems[j] = UpdateRejected(Status.UNAVAILABLE, f"cannot read {sub.path}: {exc}")
            return
        if sub.sha256 is not None:
            if got != sub.sha256:
                problems[j] = UpdateRejected(
                    Status.HASH_MISMATCH, f"blob hashes to 0x{got.hex()}, committed 0x{sub.sha256.hex()}"
                )
                return
        problems[j] = check_blob(sub.path, shapes)

    _run_tasks(check, len(ordered), workers)
    verdicts: list[Verdict] = []
    valid: list[BlobSubmission] = []
    valid_hashes: list[bytes] = []
    for sub, problem, digest in zip(ordered, problems, hashes, strict=True):
        if sub.failure is not None or sub.path is None:
            verdicts.append(Verdict(sub.participant, sub.failure or Status.UNAVAILABLE, 0, sub.detail))
        elif problem is not None:
            verdicts.append(Verdict(sub.participant, problem.status, 0, problem.detail))
        else:
            valid.append(sub)
            valid_hashes.append(digest)
    base_flat = flatten(base).numpy()
    if valid:
        paths = [Path(s.path) for s in valid if s.path is not None]
        result = stream_rule(
            len(valid), d, lambda i, s, e: read_flat(paths[i], layout, s, e), base_flat, rule,
            step=global_step(base, previous_base), seed=subset_seed(valid_hashes, d),
            reputation=reputation_rows([s.participant for s in valid], reputation, rule), history=history,
            stakes=stake_rows([s.participant for s in valid], stakes, rule),
            block_cols=block_cols,
            block_bytes=block_bytes, workers=workers,
        )
        verdicts.extend(verdicts_of([s.participant for s in valid], result.assessment))
        new_flat = torch.from_numpy(result.new_flat)
    else:
        new_flat = torch.from_numpy(base_flat.copy())
    verdicts.sort(key=lambda v: v.participant.lower())
    return RoundOutcome(verdicts, unflatten(new_flat, shapes))
