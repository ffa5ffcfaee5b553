"""Rule v2 (trainer/rules.py): copy groups share one score, free-riders earn nothing and change nothing, long updates
are clipped then rejected; the compiled exact sums equal math.fsum however the work is split."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from trainer import aggregation as agg
from trainer.aggregation import Submission, evaluate_round
from trainer.rules import RuleConfig, Status
from trainer.serialization import serialize


def fsum_dot(a: np.ndarray, b: np.ndarray) -> float:
    return math.fsum(np.multiply(a.astype(np.float64), b.astype(np.float64)))


def wide_rows(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    """Rows the two integer slices cannot all hold (tiny elements next to large ones), tiles below 2**-60 and
    above 2**100 (the element-wise paths), zeros of both signs, subnormals."""
    x = rng.standard_normal((n, d)).astype(np.float32)
    x[0] *= np.exp2(rng.integers(-60, 20, d)).astype(np.float32)
    x[1, : d // 2] *= np.float32(2.0**-90)
    x[1, d // 2 :] *= np.float32(2.0**105)
    x[2, rng.random(d) < 0.4] = -0.0
    x[2, rng.random(d) < 0.1] = np.float32(1e-44)
    return x


@pytest.mark.parametrize("seed", [0, 1])
def test_exact_sums_equal_fsum_however_columns_and_threads_split_the_work(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n, d = 5, 7000
    x = wide_rows(rng, n, d)
    refs = np.ascontiguousarray(np.stack([wide_rows(rng, 3, d)[0], rng.standard_normal(d).astype(np.float32)]))
    expected_norms = [fsum_dot(r, r) for r in x]
    expected_dots = [[fsum_dot(r, y) for r in x] for y in refs]
    expected_refs = [fsum_dot(y, y) for y in refs]
    cuts = sorted({0, d, *rng.integers(1, d, 6).tolist()})
    sums = agg._Sums(n, 2)
    pieces = list(zip(cuts[:-1], cuts[1:], strict=True))
    agg._run_tasks(lambda j: sums.add(x, agg._all_rows(n), *pieces[j], refs, pieces[j][0]), len(pieces), 2)
    norms, dots, ref_sq = sums.totals()
    assert norms == expected_norms
    assert dots == expected_dots
    assert ref_sq == expected_refs


def test_exact_sums_stay_exact_across_calls_and_spills(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(agg, "_SUMS_CALL_COLS", 1500)  # several kernel calls per range ...
    monkeypatch.setattr(agg, "_SPILL_AT", 4000)  # ... with accumulator rows spilled between them
    rng = np.random.default_rng(5)
    x = wide_rows(rng, 3, 20_000)
    ref = np.ascontiguousarray(rng.standard_normal((1, 20_000)).astype(np.float32))
    sums = agg._Sums(3, 1)
    sums.add(x, agg._all_rows(3), 0, 20_000, ref)
    norms, dots, ref_sq = sums.totals()
    assert norms == [fsum_dot(r, r) for r in x]
    assert dots == [[fsum_dot(r, ref[0]) for r in x]]
    assert ref_sq == [fsum_dot(ref[0], ref[0])]


def test_exact_sums_name_the_row_with_nan() -> None:
    x = np.ones((3, 50), dtype=np.float32)
    x[2, 7] = np.inf
    sums = agg._Sums(2, 1)
    with pytest.raises(ValueError, match="update row 2 contains NaN/Inf"):
        sums.add(x, np.array([0, 2], dtype=np.intp), 0, 50, np.ones((1, 50), dtype=np.float32))


def subs_of(rows: list[np.ndarray]) -> list[Submission]:
    return [Submission(f"0x{i + 1:040x}", serialize({"w": torch.from_numpy(r)})) for i, r in enumerate(rows)]


def honest_rows(n: int, d: int, seed: int = 0) -> list[np.ndarray]:
    """A shared direction plus each participant's own mix of a few data directions (what real updates look like:
    honest differences lie in a span the other participants share, unlike a sybil's fresh noise; rule version 4)."""
    rng = np.random.default_rng(seed)
    direction = rng.standard_normal(d).astype(np.float32)
    data = rng.standard_normal((8, d)).astype(np.float32) * np.float32(0.35)
    return [((direction + rng.standard_normal(8).astype(np.float32) @ data
              + np.float32(0.1) * rng.standard_normal(d).astype(np.float32)) * np.float32(0.01)).astype(np.float32)
            for _ in range(n)]


def run(rows: list[np.ndarray], rule: RuleConfig = RuleConfig(), previous: np.ndarray | None = None):  # noqa: ANN201
    base = {"w": torch.zeros(rows[0].size)}
    prev = None if previous is None else {"w": torch.from_numpy(-previous)}  # base - previous == the step
    return evaluate_round(base, subs_of(rows), rule, prev)


def test_copies_share_one_score_and_change_nothing_else() -> None:
    honest = honest_rows(7, 300)
    alone = run(honest)
    with_copies = run([*honest, honest[2].copy(), honest[2].copy()])
    lone = alone.verdicts[2]
    group = [with_copies.verdicts[i] for i in (2, 7, 8)]
    assert all(v.status == Status.ACCEPTED for v in group)
    assert all(v.score == round(lone.score / 3) for v in group)
    assert abs(sum(v.score for v in group) - lone.score) <= 2  # three wallets earn what one update earns
    assert "group of 3" in group[1].detail and group[1].participant != group[0].participant
    assert [v.score for v in with_copies.verdicts[:7] if v is not with_copies.verdicts[2]] == [
        v.score for v in alone.verdicts if v is not lone
    ]
    assert serialize(with_copies.new_params) == serialize(alone.new_params)


def test_zero_and_stale_updates_are_free_riders_that_change_nothing() -> None:
    honest = honest_rows(6, 300, seed=1)
    step = honest_rows(1, 300, seed=9)[0]
    alone = run(honest, previous=step)
    free = run([*honest, np.zeros(300, np.float32), step + np.float32(1e-6)], previous=step)
    by_status = [v.status for v in free.verdicts]
    assert by_status[6:] == [Status.FREE_RIDE, Status.FREE_RIDE]
    assert [v.score for v in free.verdicts[6:]] == [0, 0]
    assert "zero update" in free.verdicts[6].detail and "previous step" in free.verdicts[7].detail
    assert serialize(free.new_params) == serialize(alone.new_params)
    # round 1 has no previous step: resending some vector is not free-riding there
    assert run([*honest, step + np.float32(1e-6)]).verdicts[6].status != Status.FREE_RIDE


def test_long_updates_are_clipped_then_rejected() -> None:
    honest = honest_rows(7, 300, seed=2)
    out = run([*honest, honest[0] * np.float32(3.0), honest[1] * np.float32(5.0)])
    long3, long5 = out.verdicts[7], out.verdicts[8]
    assert long3.status == Status.ACCEPTED and 2.5 < long3.norm_ratio < 3.5
    assert long3.score == round(long3.cosine * (2.0 / long3.norm_ratio) * 1e6)  # clipped to 2x a typical norm
    assert long5.status == Status.NORM_OUTLIER and long5.norm_ratio > 4.0


@pytest.mark.parametrize(("noise", "grouped"), [(0.05, True), (0.2, False)])
def test_near_copies_group_within_the_tolerance_only(noise: float, grouped: bool) -> None:
    honest = honest_rows(7, 400, seed=3)
    typical = float(np.median([np.linalg.norm(r) for r in honest]))
    jitter = np.random.default_rng(4).standard_normal(400).astype(np.float32)
    near = honest[4] + jitter * np.float32(noise * typical / np.linalg.norm(jitter))
    out = run([*honest, near])
    assert (out.verdicts[7].score == out.verdicts[4].score and "copy of" in out.verdicts[7].detail) == grouped


def test_the_column_subset_is_seeded_by_the_commitments() -> None:
    a = agg.subset_columns(1_000_000, agg.subset_seed([b"\1" * 32, b"\2" * 32], 1_000_000))
    b = agg.subset_columns(1_000_000, agg.subset_seed([b"\1" * 32, b"\3" * 32], 1_000_000))
    assert a.size == agg.SUBSET_COLUMNS and np.all(np.diff(a) > 0) and a[-1] < 1_000_000
    assert not np.array_equal(a, b)
    assert np.array_equal(a, agg.subset_columns(1_000_000, agg.subset_seed([b"\1" * 32, b"\2" * 32], 1_000_000)))
    assert np.array_equal(agg.subset_columns(4096, b"any"), np.arange(4096))


def brute_force_groups(sub: np.ndarray, step: np.ndarray | None, tolerance: float) -> list[int]:
    """The definition in rules.py, with math.fsum and no screening."""
    n = sub.shape[0]
    norm_sq = [fsum_dot(r, r) for r in sub]
    radius = tolerance * float(np.median(np.sqrt(np.asarray(norm_sq))))
    group, reps = list(range(n)), []
    for i in range(n):
        if norm_sq[i] <= radius * radius or (
            step is not None and (norm_sq[i] + fsum_dot(step, step)) - 2.0 * fsum_dot(sub[i], step) <= radius * radius
        ):
            group[i] = -1
            continue
        for j in reps:
            if (norm_sq[i] + norm_sq[j]) - 2.0 * fsum_dot(sub[i], sub[j]) <= radius * radius:
                group[i] = j
                break
        else:
            reps.append(i)
    return group


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_screened_copy_search_equals_the_definition(seed: int) -> None:
    rng = np.random.default_rng(seed)
    d = 5000
    base = [rng.standard_normal(d) for _ in range(6)]
    jitters = [(k % 6, u / np.linalg.norm(u), rng.choice([-1, 1]) * 10.0 ** -rng.integers(1, 7))
               for k, u in enumerate(rng.standard_normal((18, d)))]
    radius = 0.0
    for _ in range(6):  # near-copies at radius * (1 +- 1e-1..1e-6) from their source, the radius they define
        rows = [b.astype(np.float32) for b in base]
        rows += [(base[src] + u * radius * (1 + rel)).astype(np.float32) for src, u, rel in jitters]
        rows.append(np.zeros(d, np.float32))
        radius = 0.1 * float(np.median([math.sqrt(fsum_dot(r, r)) for r in rows]))
    sub = np.ascontiguousarray(np.stack(rows))
    step = rows[3] + np.float32(1e-3)
    group, details = list(range(len(rows))), [""] * len(rows)
    agg._copies_and_free_riders(sub, step, 0.1, group, details)
    assert group == brute_force_groups(sub, step, 0.1)
    inside = [k for k, (_, _, rel) in enumerate(jitters) if rel < 0]
    assert {group[6 + k] for k in inside} - {-1} and -1 in group  # copies found, free-riders found
    assert any(group[6 + k] == 6 + k for k, (_, _, rel) in enumerate(jitters) if rel > 0)  # just outside: alone


def test_version_1_documents_keep_version_1_semantics() -> None:
    doc = json.loads(RuleConfig.version2().canonical_bytes())
    for key in ("reject_norm_ratio", "duplicate_tolerance"):
        doc.pop(key)
    doc["version"] = 1
    v1 = RuleConfig.from_bytes(json.dumps(doc).encode())
    assert v1 == RuleConfig.version1()
    assert v1.reject_norm_ratio == v1.max_norm_ratio and v1.duplicate_tolerance is None
    honest = honest_rows(5, 200, seed=5)
    out = run([*honest, np.zeros(200, np.float32), honest[0].copy(), honest[1] * np.float32(3.0)], v1)
    assert Status.FREE_RIDE not in {v.status for v in out.verdicts}
    assert out.verdicts[6].score == out.verdicts[0].score  # no copy groups in version 1: both earn in full
    assert out.verdicts[7].status == Status.NORM_OUTLIER  # version 1 rejects beyond max_norm_ratio
