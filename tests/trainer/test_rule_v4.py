"""Rule v4 (trainer/rules.py, trainer/redundancy.py): copies perturbed by fresh noise form one redundancy group that
earns and weighs what one update does; honest updates with their own data stay apart; the pair statistic is the
projection it claims to be, computed exactly; bit for bit the same in memory, streamed and with the original
definitions; v3 documents unchanged."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from trainer import aggregation as agg
from trainer.aggregation import evaluate_round
from trainer.errors import RuleError
from trainer.redundancy import RedundancyTest, quantize, redundancy_groups, spd_inverse
from trainer.rules import RuleConfig, Status
from trainer.serialization import serialize
from tests.trainer.test_rule_v3 import bits, names, round_files
from trainer.streaming import evaluate_round_streamed, stream_rule

V4_FIELDS = {"redundancy_ratio", "redundancy_share", "redundancy_min_third_parties"}


def honest(n: int, d: int, seed: int, *, data_dirs: int = 6) -> np.ndarray:
    """A shared direction plus each participant's own mix of a few data directions and a little SGD noise."""
    rng = np.random.default_rng(seed)
    direction = rng.standard_normal(d)
    data = rng.standard_normal((data_dirs, d)) * 0.4
    rows = direction + rng.standard_normal((n, data_dirs)) @ data + 0.1 * rng.standard_normal((n, d))
    return np.ascontiguousarray(rows * 0.01, dtype=np.float32)


def perturbed(row: np.ndarray, seed: int, ratio: float = 0.25) -> np.ndarray:
    """``row`` plus isotropic noise of ``ratio`` times its norm (trainer.attacks.perturbed_copy)."""
    noise = np.random.default_rng(10_000 + seed).standard_normal(row.size)  # not the seeds of honest()
    return (row + noise * (ratio * np.linalg.norm(row) / np.linalg.norm(noise))).astype(np.float32)


def run(stack: np.ndarray, rule: RuleConfig) -> agg.Assessment:
    return agg.assess(agg.StackSource(stack), rule)


def small_rounds(**overrides: object) -> RuleConfig:
    """Version 4 with the pair test on from 6 representatives (the default needs 14; the mechanism is the same)."""
    return RuleConfig.version4(redundancy_min_third_parties=4, **overrides)


def test_perturbed_copies_form_one_group_that_earns_what_one_update_earns() -> None:
    rows = honest(10, 600, seed=1)
    alone = run(rows, RuleConfig.version4())
    copies = np.concatenate([rows, np.stack([perturbed(rows[2], seed=s) for s in range(4)])])
    v4, v3 = run(copies, small_rounds()), run(copies, RuleConfig.version3())
    group = [2, 10, 11, 12, 13]
    assert all(v4.statuses[i] == Status.ACCEPTED for i in group)
    assert [v4.group[i] for i in group] == [2] * 5 and [v4.group_size[i] for i in group] == [5] * 5
    assert all("redundant with update 2" in v4.details[i] for i in group[1:])
    # five wallets earn together what the one update earns alone; version 3 paid each copy in full (and more: the
    # copies had moved the median towards themselves)
    assert abs(sum(v4.fixed[i] for i in group) - alone.fixed[2]) <= 0.05 * alone.fixed[2]
    assert sum(v3.fixed[i] for i in group) > 4 * alone.fixed[2]
    # honest participants with their own data are nobody's copies; the reference is the median of one update per
    # group, the same as without the copies
    assert all(v4.group_size[i] == 1 for i in range(10) if i != 2)
    assert v4.statuses == v3.statuses and bits(v4.median) == bits(alone.median) != bits(v3.median)
    assert v4.reference_rows == list(range(10))
    assert [v4.fixed[i] for i in range(10) if i != 2] == [alone.fixed[i] for i in range(10) if i != 2]
    # the group weighs what one update weighs, split over its members (which average their noise)
    weight = {r: w for r, _, w in v4.keep}
    assert [r for r, _, _ in v4.keep] == sorted(weight) == [*range(14)]
    assert len({weight[i] for i in group}) == 1
    single = max(weight[i] for i in range(10) if i != 2)
    assert sum(weight[i] for i in group) < 1.5 * single  # one update's worth (it defines more of the median)
    assert sum(w for r, _, w in v3.keep if r in group) > 3 * single  # version 3: several updates' worth
    assert sum(weight.values()) == pytest.approx(1.0, rel=1e-6)


def test_honest_updates_with_their_own_data_are_never_grouped() -> None:
    for seed in range(5):
        rows = honest(20, 800, seed=seed)
        result = run(rows, RuleConfig.version4())
        assert result.group_size == [1] * 20 and result.fixed == run(rows, RuleConfig.version3()).fixed


def test_a_long_noisy_update_cannot_absorb_an_honest_one() -> None:
    rows = honest(10, 600, seed=2)
    rng = np.random.default_rng(99)
    noise = (rng.standard_normal(600) * 3.0 * np.linalg.norm(rows[4]) / np.sqrt(600)).astype(np.float32)
    stack = np.concatenate([noise[None, :], rows])  # accepted (score ~0, norm 3x: clipped), all noise
    result = run(stack, small_rounds())
    test = RedundancyTest(stack, ratio=4.0, share=0.25, min_third_parties=4)
    # against any honest update the difference is mostly noise, but the honest part is not shared by the noise
    pairs = [test.pair(0, j) for j in range(1, 11)]
    assert not any(p.redundant for p in pairs) and all(p.share > 1 for p in pairs)
    assert result.statuses[0] == Status.ACCEPTED and result.group_size == [1] * 11
    # a sybil's copy with the same much noise (ratio 3) still joins the update it copies
    sybil = np.concatenate([perturbed(rows[4], seed=9, ratio=3.0)[None, :], rows])
    assert run(sybil, small_rounds()).group_size == [2, 1, 1, 1, 1, 2, 1, 1, 1, 1, 1]


def test_rejected_copies_group_among_themselves_and_never_with_honest_updates() -> None:
    rows = honest(10, 600, seed=3)
    flipped = np.stack([-4.0 * perturbed(rows[1], seed=s) for s in range(3)]).astype(np.float32)
    result = run(np.concatenate([rows, flipped]), small_rounds())
    assert [result.statuses[i] for i in (10, 11, 12)] == [Status.NORM_OUTLIER] * 3
    assert result.group[10:] == [10] * 3 and result.group_size[10:] == [3] * 3
    assert result.group[:10] == list(range(10)) and result.statuses[:10] == [Status.ACCEPTED] * 10
    assert [r for r, _, _ in result.keep] == list(range(10))


def test_too_few_third_parties_means_no_test() -> None:
    rows = honest(15, 400, seed=4)
    copy = perturbed(rows[0], seed=1)[None, :]
    stack = np.concatenate([rows[:14], copy])  # 15 representatives: 13 third parties per pair
    # version 4's default needs 14 (small rounds group honest pairs)
    assert run(stack, RuleConfig.version4()).group_size == [1] * 15
    assert run(stack, small_rounds()).group[14] == 0
    assert run(np.concatenate([rows, copy]), RuleConfig.version4()).group[15] == 0  # 16 representatives: on
    # with 2 third parties the test would group the copy, but also honest pairs: 2 directions see too little
    assert run(stack[[0, 1, 2, 14]], RuleConfig.version4(redundancy_min_third_parties=2)).group[3] == 0


def test_the_pair_statistic_is_the_projection_onto_the_other_updates() -> None:
    stack = np.concatenate([honest(12, 700, seed=5), perturbed(honest(12, 700, seed=5)[0], seed=3)[None, :]])
    test = RedundancyTest(stack, ratio=4.0, share=0.25, min_third_parties=4)
    x = stack.astype(np.float64)
    for i, j in ((0, 12), (1, 2), (3, 11)):
        others = x[[k for k in range(len(x)) if k not in (i, j)]]
        d = x[i] - x[j]
        coef, *_ = np.linalg.lstsq(others.T, d, rcond=None)
        projected = others.T @ coef
        expected = (projected @ projected) / (d @ d) * x.shape[1] / (len(x) - 2)
        assert test.pair(i, j).t == pytest.approx(expected, rel=5e-3)  # quantized to 2^-12 of the typical peak
    assert test.pair(0, 12).redundant and not test.pair(1, 2).redundant


def test_the_quantized_gram_is_exact_and_the_inverse_deterministic() -> None:
    rng = np.random.default_rng(6)
    sub = (rng.standard_normal((9, 4096)) * np.exp(rng.standard_normal((9, 1)))).astype(np.float32)
    sub[3, 7] = 1e30  # saturates instead of overflowing the exact range
    q = quantize(sub)
    assert np.all(q == np.rint(q)) and np.abs(q).max() == 2**15
    exact = [[sum(int(a) * int(b) for a, b in zip(q[i], q[j], strict=True)) for j in range(9)] for i in range(9)]
    assert (q @ q.T == np.array(exact, dtype=np.float64)).all() and max(map(max, exact)) < 2**53
    a = q @ q.T + np.eye(9)
    inv = spd_inverse(a)
    assert np.allclose(inv @ a, np.eye(9), atol=1e-8)
    assert spd_inverse(a).tobytes() == inv.tobytes()
    with pytest.raises(ValueError, match="at most 4096 columns"):
        quantize(np.zeros((2, 4097), dtype=np.float32))
    with pytest.raises(ValueError, match="not positive definite"):
        spd_inverse(np.zeros((2, 2)))


def test_groups_follow_address_order_and_eligibility() -> None:
    rows = honest(8, 500, seed=7)
    stack = np.concatenate([rows, perturbed(rows[5], seed=1)[None, :], perturbed(rows[5], seed=2)[None, :]])
    kwargs = {"ratio": 4.0, "share": 0.25, "min_third_parties": 4}
    joined, why = redundancy_groups(stack, list(range(10)), list(range(10)), **kwargs)
    assert joined == {8: 5, 9: 5} and all(w.redundant for w in why.values())
    joined, _ = redundancy_groups(stack, list(range(10)), [0, 1, 2, 3, 4, 6, 7, 8, 9], **kwargs)
    assert joined == {9: 8}  # update 5 not eligible (rejected): the first copy leads


@pytest.mark.parametrize("block_cols", [None, 1000])
def test_v4_in_memory_streamed_and_original_are_bit_identical(tmp_path: Path, block_cols: int | None) -> None:
    n, d = 13, 5000
    stack = np.concatenate([honest(10, d, seed=8), np.stack([perturbed(honest(10, d, seed=8)[3], seed=s)
                                                             for s in range(3)])])
    stack[9] = stack[6]  # an exact copy too
    reputation = [500_000, 400_000, 650_000, 700_000, 650_000, 300_000, 800_000, 500_000, 900_000, 550_000,
                  600_000, 600_000, 600_000]
    base = np.random.default_rng(4).standard_normal(d).astype(np.float32)
    rule = small_rounds()

    def read(i: int, s: int, e: int) -> np.ndarray:
        return stack[i, s:e].copy()

    streamed = stream_rule(n, d, read, base, rule, reputation=reputation, block_cols=block_cols, workers=2)
    in_memory, new = agg.run_rule(agg.StackSource(stack), base, rule, reputation=reputation)
    original, original_new = agg.run_rule(agg.ReferenceSource(stack), base, rule, reputation=reputation)
    assert in_memory.group[9] == 6 and [in_memory.group[i] for i in (3, 10, 11, 12)] == [3] * 4
    for result in (in_memory, original):
        assert bits(streamed.median) == bits(result.median)
        assert streamed.assessment.fixed == result.fixed and streamed.assessment.statuses == result.statuses
        assert streamed.assessment.keep == result.keep and streamed.assessment.group == result.group
    assert bits(streamed.new_flat) == bits(new) == bits(original_new)

    who = names(n)
    base_p = {"w": torch.from_numpy(base)}
    subs, blobs = round_files(tmp_path, stack, who)
    by_address = dict(zip(who, reputation, strict=True))
    a = evaluate_round(base_p, subs, rule, reputation=by_address)
    b = evaluate_round_streamed(base_p, blobs, rule, reputation=by_address, block_cols=block_cols)
    assert [(v.participant, v.status, v.score, v.detail) for v in a.verdicts] == [
        (v.participant, v.status, v.score, v.detail) for v in b.verdicts]
    assert serialize(a.new_params) == serialize(b.new_params)
    assert who[3] in a.verdicts[10].detail  # the detail names the leader by address


def test_v4_documents_carry_the_redundancy_parameters_and_v3_documents_do_not() -> None:
    v4, v3 = RuleConfig.version4(), RuleConfig.version3()
    doc4, doc3 = json.loads(v4.canonical_bytes()), json.loads(v3.canonical_bytes())
    assert doc4["version"] == 4 and V4_FIELDS <= doc4.keys() and not V4_FIELDS & doc3.keys()
    assert RuleConfig.from_bytes(v4.canonical_bytes()) == v4 and RuleConfig.from_bytes(v3.canonical_bytes()) == v3
    assert v4.rule_hash() != v3.rule_hash() and v4.groups_redundant and not v3.groups_redundant
    doc3["redundancy_ratio"] = 4.0
    with pytest.raises(RuleError, match="version 3 has no"):
        RuleConfig.from_bytes(json.dumps(doc3).encode())
    for bad in ({"redundancy_ratio": 0.0}, {"redundancy_share": 1.5}, {"redundancy_min_third_parties": 0},
                {"version": 9}):
        with pytest.raises(RuleError):
            RuleConfig(**bad)
    assert not RuleConfig(duplicate_tolerance=None).groups_redundant  # extends copy detection, off with it


def test_copies_that_outnumber_the_honest_updates_get_one_vote_in_the_median() -> None:
    rows = honest(8, 800, seed=12)
    evil = -rows.mean(axis=0)  # an honest-looking norm, pointing away from the honest consensus
    copies = [perturbed(evil, seed=s) for s in range(10)]
    stack = np.ascontiguousarray(np.concatenate([np.stack(copies), rows]), dtype=np.float32)
    v3 = run(stack, RuleConfig.version3())
    assert v3.statuses[10:].count(Status.ACCEPTED) == 0  # ten identities outvote eight: the copies own the median
    result = run(stack, RuleConfig.version4())
    assert result.group[:10] == [0] * 10 and result.group_size[:10] == [10] * 10
    assert result.reference_rows == [0, *range(10, 18)]  # one vote for the copies' group, one per honest update
    assert result.statuses[:10] == [Status.LOW_SCORE] * 10 and result.statuses[10:] == [Status.ACCEPTED] * 8
    honest_alone = run(np.ascontiguousarray(np.concatenate([stack[:1], rows])), RuleConfig.version4())
    assert bits(result.median) == bits(honest_alone.median)  # ten copies weigh what one does
    assert [r for r, _, _ in result.keep] == list(range(10, 18))


def test_no_test_when_the_columns_leave_no_room_to_tell_honest_from_noise() -> None:
    # t is at most s / k; with s < 2 * ratio * k an honest pair could look like noise, so nothing is grouped
    rows = honest(12, 90, seed=8)
    stack = np.concatenate([rows, perturbed(rows[0], seed=2)[None, :]])  # 13 rows: k = 11, room needs s >= 88
    assert RedundancyTest(stack, ratio=4.0, share=0.25, min_third_parties=4).enabled
    assert not RedundancyTest(stack[:, :87], ratio=4.0, share=0.25, min_third_parties=4).enabled
    assert run(stack, small_rounds()).group[12] == 0
    assert run(stack[:, :87], small_rounds()).group_size == [1] * 13
    assert RedundancyTest(stack[:, :87], ratio=2.0, share=0.25, min_third_parties=4).enabled


def test_verdicts_name_the_other_updates_by_address_and_carry_the_group_size() -> None:
    rows = honest(13, 600, seed=6)
    copy = perturbed(rows[1], seed=4)
    stack = np.concatenate([rows, copy[None, :], copy[None, :]])  # 13 redundant with 1; 14 an exact copy of 13
    who = names(15)
    subs = [agg.Submission(p, serialize({"w": torch.from_numpy(stack[i].copy())})) for i, p in enumerate(who)]
    out = evaluate_round({"w": torch.zeros(600)}, subs, small_rounds())
    assert [v.group_size for v in out.verdicts] == [1, 3, *[1] * 11, 3, 3]
    # "update 13" is not "update 1" followed by a 3: every row number becomes that row's address
    assert out.verdicts[13].detail.startswith(f"redundant with {who[1]} ")
    assert out.verdicts[14].detail.startswith(f"copy of {who[13]} (address order), in the redundancy group of {who[1]},")
    assert not any(re.search(r"update \d", v.detail) for v in out.verdicts)
