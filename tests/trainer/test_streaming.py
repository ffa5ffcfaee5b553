"""The fast and streamed aggregator equal the original definitions bit for bit.

The oracle is the pre-optimisation implementation, kept in trainer.aggregation as ``_reference_*`` (torch kthvalue /
sort median, ``math.fsum`` of exact products, one-update-at-a-time float32 aggregate). Speed is measured by
``fedledger bench aggregate``, never asserted here.
"""

from __future__ import annotations

import hashlib
import math
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.numpy import save as np_save
from safetensors.torch import save as torch_save

from trainer import aggregation as agg
from trainer.aggregation import ExactSums, Submission, evaluate_round
from trainer.rules import RuleConfig, Status
from trainer.serialization import serialize
from trainer.streaming import BlobSubmission, _layout, check_blob, evaluate_round_streamed, read_flat, stream_rule


def bits(t: torch.Tensor | np.ndarray) -> bytes:
    return np.asarray(t.numpy() if isinstance(t, torch.Tensor) else t).tobytes()


def fsum_dot(a: np.ndarray, b: np.ndarray) -> float:
    return math.fsum(np.multiply(a.astype(np.float64), b.astype(np.float64)))


def nasty_stack(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    """Rows of very different magnitudes and dynamic ranges, exact zeros of both signs, subnormals, huge values."""
    stack = rng.standard_normal((n, d)).astype(np.float32)
    stack *= np.exp2(rng.integers(-30, 30, (n, 1))).astype(np.float32)
    for i in range(n):
        kind = i % 6
        if kind == 1:  # a wide dynamic range inside the row
            stack[i] *= np.exp2(rng.integers(-70, 10, d)).astype(np.float32)
        elif kind == 2:  # zeros, -0.0 (a sign-flipped zero update) and subnormals
            stack[i, rng.random(d) < 0.3] = 0.0
            stack[i, rng.random(d) < 0.3] = -0.0
            stack[i, rng.random(d) < 0.05] = np.float32(3e-42)
        elif kind == 3:  # huge values: the element-wise exact path
            stack[i, :: max(1, d // 7)] = np.float32(3e37)
        elif kind == 4:
            stack[i] = np.round(stack[i])  # integers, many zeros
    return stack


# ----------------------------------------------------------------------------------------------------------------
# Fast median, exact dots, exact sums


@pytest.mark.parametrize("n", [1, 2, 3, 4, 7, 8, 49, 50, 51])
def test_fast_median_equals_numpy_and_the_original_bit_for_bit(n: int) -> None:
    rng = np.random.default_rng(n)
    plain = rng.standard_normal((n, 9000)).astype(np.float32) * np.float32(0.01)
    fast = agg.coordinate_median(torch.from_numpy(plain))
    assert bits(fast) == bits(np.median(plain, axis=0))  # np.median's even-n (lo+hi)/2 == lo*0.5 + hi*0.5 here
    nasty = nasty_stack(rng, n, 5000)
    nasty[:, ::3] = rng.choice(np.array([0.0, -0.0, 1.0], dtype=np.float32), (n, len(range(0, 5000, 3))))
    t = torch.from_numpy(nasty)
    assert bits(agg.coordinate_median(t)) == bits(agg._reference_median(t))  # signs of zero included


def test_median_leaves_its_block_alone_even_one_column_wide() -> None:
    block = np.array([[3.0], [1.0], [2.0], [-1.0]], dtype=np.float32)  # block.T is already C-contiguous
    before = block.copy()
    out = np.empty(1, dtype=np.float32)
    agg.median_into(block, out)
    assert bits(block) == bits(before) and out.tolist() == [1.5]


def test_median_of_columns_with_nan_is_the_original_one() -> None:
    rng = np.random.default_rng(1)
    for n in (3, 4):
        stack = rng.standard_normal((n, 100)).astype(np.float32)
        stack[0, ::7] = np.nan
        t = torch.from_numpy(stack)
        assert bits(agg.coordinate_median(t)) == bits(agg._reference_median(t))


def test_even_n_midpoint_where_numpy_differs() -> None:
    # lo*0.5 + hi*0.5 (the committed definition) cannot overflow; numpy's (lo + hi) / 2 can. They agree whenever
    # lo + hi is finite and the halves are exact (every test above); here they must not.
    t = torch.tensor([[3e38, 1.0], [3e38, 3.0]], dtype=torch.float32)
    assert agg.coordinate_median(t).tolist() == pytest.approx([3e38, 2.0], rel=1e-6)
    with np.errstate(over="ignore"):
        assert np.isinf(np.median(t.numpy(), axis=0)[0])


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10**6), d=st.integers(1, 9000), scale=st.integers(-100, 2))
def test_exact_dot_equals_fsum_in_any_order(seed: int, d: int, scale: int) -> None:
    rng = np.random.default_rng(seed)
    a = nasty_stack(rng, 6, d)[seed % 6] * np.float32(2.0**scale)
    b = nasty_stack(rng, 6, d)[(seed + 1) % 6]
    ta, tb = torch.from_numpy(a), torch.from_numpy(b)
    assert agg.exact_dot(ta, tb) == fsum_dot(a, b)
    assert agg.exact_norm(ta) == math.sqrt(fsum_dot(a, a))
    perm = torch.from_numpy(rng.permutation(d))
    assert agg.exact_dot(ta[perm].contiguous(), tb[perm].contiguous()) == agg.exact_dot(ta, tb)


def test_exact_dot_handles_the_cases_fsum_defines() -> None:
    a = torch.tensor([1.0, float("inf"), 2.0])
    b = torch.tensor([1.0, 1.0, 1.0])
    assert agg.exact_dot(a, b) == math.inf
    assert math.isnan(agg.exact_dot(torch.tensor([1.0, float("nan")]), torch.tensor([1.0, 1.0])))
    assert agg.exact_dot(torch.zeros(5), torch.ones(5)) == 0.0
    assert math.copysign(1.0, agg.exact_dot(torch.zeros(5), -torch.ones(5))) == 1.0  # fsum: an exact zero is +0.0
    f64 = torch.randn(100, dtype=torch.float64)
    assert agg.exact_dot(f64, f64) == math.fsum(np.multiply(f64.numpy(), f64.numpy()))


def test_exact_sums_split_and_merged_any_way_give_the_fsum(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(agg, "_SPILL_AT", 64)  # exercise the spill path too
    rng = np.random.default_rng(4)
    values = (rng.standard_normal(5000) * np.exp2(rng.integers(-300, 300, 5000))).astype(np.float64)
    rows = rng.integers(0, 3, 5000)
    expected = [math.fsum(values[rows == r].tolist()) for r in range(3)]
    whole = ExactSums(3)
    whole.add(rows, values)
    assert whole.totals() == expected
    parts = [ExactSums(3) for _ in range(4)]
    for k, idx in enumerate(np.array_split(rng.permutation(5000), 4)):
        for piece in np.array_split(idx, 7):
            parts[k].add(rows[piece], values[piece])
    merged = parts[3]
    for p in parts[:3]:
        merged.merge(p)
    assert merged.totals() == expected


@pytest.mark.parametrize("threads", [1, 2])
def test_scores_and_aggregate_equal_the_original_whatever_the_threads(threads: int) -> None:
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        rng = np.random.default_rng(7 + threads)
        for n, d in [(1, 5), (2, 4097), (3, 1), (7, 20000), (12, 9000)]:
            stack = torch.from_numpy(nasty_stack(rng, n, d))
            base = torch.from_numpy(rng.standard_normal(d).astype(np.float32))
            for aggregator in ("median-verified-mean", "fedavg", "median"):
                rule = RuleConfig(aggregator=aggregator)
                reference, scores = agg.median_and_scores(stack, rule)
                original = agg._reference_median(stack)
                assert bits(reference) == bits(original)
                assert scores == agg._reference_score_updates(stack, original, rule)
                assert agg.score_updates(stack, original, rule) == scores
                accepted = [bool(x) for x in rng.integers(0, 2, n)]
                new = agg.aggregate(base, stack, accepted, rule, reference)
                assert bits(new) == bits(agg._reference_aggregate(base, stack, accepted, rule, original))
    finally:
        torch.set_num_threads(before)


# ----------------------------------------------------------------------------------------------------------------
# Streaming


def make_round(
    tmp: Path, shapes: dict[str, tuple[int, ...]], n: int, seed: int, with_invalid: bool = True
) -> tuple[dict[str, torch.Tensor], list[Submission], list[BlobSubmission]]:
    gen = torch.Generator().manual_seed(seed)
    base = {k: torch.randn(s, generator=gen) for k, s in shapes.items()}
    direction = {k: torch.randn(s, generator=gen) for k, s in shapes.items()}
    payloads: list[tuple[str, bytes | None, Status | None, bytes | None]] = []
    for i in range(n):
        upd = {k: direction[k] + 0.7 * torch.randn(s, generator=gen) for k, s in shapes.items()}
        if i % 4 == 1:
            upd = {k: -4.0 * v for k, v in upd.items()}  # sign-flipper: rejected, and -0.0 where direction was 0
        payloads.append((f"0x{(i * 7919 + seed) % 10**6:040x}", serialize(upd), None, None))
    if with_invalid:
        names = sorted(shapes)
        nan = {k: torch.randn(s, generator=gen) for k, s in shapes.items()}
        nan[names[-1]] = nan[names[-1]].clone().reshape(-1).index_fill(0, torch.tensor([0]), float("inf")).reshape(
            shapes[names[-1]]
        )
        wrong = dict(nan) | {names[0]: torch.zeros(3)}
        extra = {k: torch.zeros(s) for k, s in shapes.items()} | {"zz.extra": torch.zeros(2)}
        f64 = {k: torch.zeros(s, dtype=torch.float64) for k, s in shapes.items()}
        good = serialize({k: torch.zeros(s) for k, s in shapes.items()})
        payloads += [
            ("0x" + "a" * 40, serialize(nan), None, None),
            ("0x" + "b" * 40, serialize(wrong), None, None),
            ("0x" + "c" * 40, serialize(extra), None, None),
            ("0x" + "d" * 40, torch_save(f64), None, None),
            ("0x" + "e" * 40, b"definitely not safetensors", None, None),
            ("0x" + "f" * 40, good[:-3], None, None),  # truncated
            ("0x" + "1" * 40, b"\x05\x00\x00\x00\x00\x00\x00\x00{oops", None, None),
            ("0x" + "2" * 40, None, Status.UNAVAILABLE, None),
            ("0x" + "3" * 40, good, Status.HASH_MISMATCH, None),
        ]
    subs, blobs = [], []
    for j, (p, data, failure, _) in enumerate(payloads):
        path = None
        if data is not None and failure is None:
            path = tmp / f"{j}.safetensors"
            path.write_bytes(data)
        subs.append(Submission(p, data if failure is None else None, failure, "fetcher said so" if failure else ""))
        blobs.append(BlobSubmission(p, path, failure, "fetcher said so" if failure else ""))
    order = random.Random(seed).sample(range(len(subs)), len(subs))
    return base, [subs[i] for i in order], [blobs[i] for i in order]


def outcome_key(out: agg.RoundOutcome) -> tuple[list, bytes]:
    verdicts = []
    for v in out.verdicts:
        # a parser's own error text may be worded differently by safe_open than by load(bytes): compare its prefix
        detail = v.detail.split(":")[0] if "not a readable safetensors blob" in v.detail else v.detail
        verdicts.append((v.participant, v.status, v.score, detail, v.cosine, v.norm_ratio))
    return verdicts, serialize(out.new_params)


@pytest.mark.parametrize(
    ("shapes", "n", "block_cols"),
    [
        ({"w": (30, 7), "b": (7,), "s": ()}, 5, 7),
        ({"w": (30, 7), "b": (7,), "s": ()}, 6, None),
        ({"a": (5000,)}, 8, 1000),
        ({"x.w": (64, 100), "x.b": (64,), "y": (3, 4, 5)}, 11, 4096),
        ({"x.w": (64, 100), "x.b": (64,), "y": (3, 4, 5)}, 12, 333),
        ({"w": (9001,)}, 1, None),
        ({"w": (9001,)}, 2, 4096),
    ],
)
@pytest.mark.parametrize("aggregator", ["median-verified-mean", "fedavg", "median"])
def test_streamed_round_equals_in_memory_bit_for_bit(
    tmp_path: Path, shapes: dict[str, tuple[int, ...]], n: int, block_cols: int | None, aggregator: str
) -> None:
    base, subs, blobs = make_round(tmp_path, shapes, n, seed=n + len(shapes))
    rule = RuleConfig(aggregator=aggregator)
    in_memory = evaluate_round(base, subs, rule)
    streamed = evaluate_round_streamed(base, blobs, rule, block_cols=block_cols, workers=2)
    assert outcome_key(streamed) == outcome_key(in_memory)
    statuses = {v.status for v in streamed.verdicts}
    assert {Status.NON_FINITE, Status.WRONG_SHAPE, Status.BAD_FORMAT, Status.UNAVAILABLE} <= statuses


def test_streamed_round_checks_the_committed_hash(tmp_path: Path) -> None:
    base, _, blobs = make_round(tmp_path, {"w": (50,)}, 3, seed=1, with_invalid=False)
    path = Path(blobs[0].path)
    right = hashlib.sha256(path.read_bytes()).digest()
    blobs = [BlobSubmission(blobs[0].participant, path, sha256=right),
             BlobSubmission(blobs[1].participant, blobs[1].path, sha256=b"\0" * 32), blobs[2]]
    out = evaluate_round_streamed(base, blobs, RuleConfig())
    status = {v.participant: v.status for v in out.verdicts}
    assert status[blobs[1].participant] == Status.HASH_MISMATCH
    assert status[blobs[0].participant] != Status.HASH_MISMATCH


@pytest.mark.parametrize("with_step", [False, True])
def test_stream_rule_reads_through_any_callable_one_block_at_a_time(with_step: bool) -> None:
    rng = np.random.default_rng(3)
    n, d = 9, 10_000
    stack = nasty_stack(rng, n, d)
    norms = np.linalg.norm(stack[:8].astype(np.float64), axis=1)
    typical = int(np.argsort(norms)[3])
    stack[8] = stack[typical]  # a copy of a typical update
    base = rng.standard_normal(d).astype(np.float32)
    stale = int(np.argsort(norms)[5])
    step = stack[stale].copy() if with_step else None  # update ``stale`` resends the previous global step
    widths: list[int] = []

    def read(i: int, s: int, e: int) -> np.ndarray:
        widths.append(e - s)
        return stack[i, s:e].copy()

    rule = RuleConfig()
    streamed = stream_rule(n, d, read, base, rule, step=step, block_cols=1234, workers=2)
    assert max(widths) <= max(1234, 1 << 18) and 1234 in widths
    in_memory, new = agg.run_rule(agg.StackSource(stack), base, rule, step)
    original, original_new = agg.run_rule(agg.ReferenceSource(stack), base, rule, step)
    for result in (in_memory, original):
        assert bits(streamed.median) == bits(result.median)
        assert streamed.assessment.statuses == result.statuses and streamed.assessment.fixed == result.fixed
        assert streamed.assessment.cosine == result.cosine and streamed.assessment.norm_ratio == result.norm_ratio
        assert streamed.assessment.group == result.group
    assert in_memory.group[8] == typical and in_memory.fixed[8] == in_memory.fixed[typical]
    assert (in_memory.statuses[stale] == Status.FREE_RIDE) == with_step
    assert bits(streamed.new_flat) == bits(new) == bits(original_new)


def test_stream_rule_refuses_updates_with_nan() -> None:
    stack = np.ones((3, 100), dtype=np.float32)
    stack[1, 5] = np.nan
    with pytest.raises(ValueError, match="NaN/Inf"):
        stream_rule(3, 100, lambda i, s, e: stack[i, s:e], np.zeros(100, np.float32), RuleConfig())


@pytest.mark.parametrize("shape", [(7,), (3, 4, 5), (2, 1, 6), (5, 3), ()])
def test_read_flat_reads_any_range_of_any_tensor(tmp_path: Path, shape: tuple[int, ...]) -> None:
    rng = np.random.default_rng(len(shape))
    tensors = {"a": rng.standard_normal(shape).astype(np.float32), "b": rng.standard_normal((4,)).astype(np.float32)}
    path = tmp_path / "t.safetensors"
    path.write_bytes(np_save(tensors))
    flat = np.concatenate([tensors[k].reshape(-1) for k in sorted(tensors)])
    layout = _layout({k: v.shape for k, v in tensors.items()})
    for start in range(flat.size):
        for end in range(start + 1, flat.size + 1):
            assert bits(read_flat(path, layout, start, end)) == bits(flat[start:end])


def test_check_blob_reports_what_deserialize_reports(tmp_path: Path) -> None:
    base, subs, blobs = make_round(tmp_path, {"w": (4, 3), "b": (4,)}, 2, seed=5)
    shapes = {k: tuple(v.shape) for k, v in base.items()}
    by_name = {s.participant: s for s in subs}
    for blob in blobs:
        if blob.path is None:
            continue
        problem = check_blob(blob.path, shapes)
        expected = agg.validate([by_name[blob.participant]], shapes).invalid
        if not expected:
            assert problem is None
        else:
            assert problem is not None and problem.status == expected[0].status
