"""Rule v8 (trainer/rules.py, trainer/aggregation.py): version 7 whose norm test allows a redundancy group holding a
times the median stake a times the typical norm. An honest identity that trains a times the data (and so sends a
long update) is judged as a identities would be: accepted where version 7 rejects it, and clipped at
max_norm_ratio * a typical norms, so its update adds to the aggregate no more than a clipped identities add. Equal
stakes, or stakes below the median, give version 7's round exactly; the fast, reference and streamed paths agree."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from tests.trainer.test_rule_v7 import three_paths_agree
from trainer.aggregation import Submission, evaluate_round
from trainer.errors import RuleError
from trainer.rules import RuleConfig, Status
from trainer.serialization import serialize

UNIT = 10**18
N = 9


def _round(seed: int, long_scale: float) -> tuple[dict[str, torch.Tensor], list[Submission]]:
    """N updates along one direction with noise (norms ~1-2 x each other); the last is ``long_scale`` times longer
    (an identity training many participants' worth of data takes as many more steps)."""
    rng = np.random.default_rng(seed)
    base = {"w": torch.zeros(4, 30), "b": torch.zeros(4)}
    direction = rng.standard_normal(124)
    subs = []
    for i in range(N):
        flat = direction + 0.4 * rng.standard_normal(124)
        if i == N - 1:
            flat = flat * long_scale
        t = torch.from_numpy(flat.astype(np.float32))
        subs.append(Submission(f"0x{i + 1:040x}", serialize({"w": t[:120].reshape(4, 30), "b": t[120:]})))
    return base, subs


def _stakes(subs: list[Submission], last: int) -> dict[str, int]:
    return {s.participant: UNIT for s in subs} | {subs[-1].participant: last}


def test_version_8_document_round_trips_and_only_it_allows_stake_in_norm() -> None:
    v8 = RuleConfig.version8()
    assert v8.stake_allowance and v8.stake_votes and v8.stake_weighted
    assert not RuleConfig.version7().stake_allowance and not RuleConfig().stake_allowance
    assert not RuleConfig.version8(aggregator="median").stake_allowance
    doc8, doc7 = v8.to_document(), RuleConfig.version7().to_document()
    assert doc8["version"] == 8
    assert {k: v for k, v in doc8.items() if k not in ("version", "formulas")} == {
        k: v for k, v in doc7.items() if k not in ("version", "formulas")}
    assert RuleConfig.from_bytes(v8.canonical_bytes()) == v8
    with pytest.raises(RuleError, match="unknown rule version 9"):
        RuleConfig(version=9)


@pytest.mark.parametrize("last", [UNIT, UNIT // 2, 0])
def test_at_most_the_median_stake_judges_exactly_as_version_7(last: int) -> None:
    """Equal stakes, or the long update's identity holding less than the median (a slashed one): no allowance, the
    same verdicts and aggregate as version 7 (a stake below the median is not held to a tighter norm)."""
    base, subs = _round(1, 3.0)
    stakes = _stakes(subs, last)
    v7 = evaluate_round(base, subs, RuleConfig.version7(), stakes=stakes)
    v8 = evaluate_round(base, subs, RuleConfig.version8(), stakes=stakes)
    assert v8.verdicts == v7.verdicts
    assert all(torch.equal(v8.new_params[k], v7.new_params[k]) for k in base)


def test_a_long_update_from_a_times_the_median_stake_is_judged_against_a_times_the_typical_norm() -> None:
    """Seven times the others' norm with 6 units of stake (under half of all 14): version 7 rejects it as a norm
    outlier (ratio > 4); version 8 takes its ratio against 6 typical norms (< 2), so it is neither rejected nor
    clipped."""
    base, subs = _round(2, 7.0)
    stakes = _stakes(subs, 6 * UNIT)
    v7 = evaluate_round(base, subs, RuleConfig.version7(), stakes=stakes)
    v8 = evaluate_round(base, subs, RuleConfig.version8(), stakes=stakes)
    assert v7.verdicts[-1].status == Status.NORM_OUTLIER and v7.verdicts[-1].norm_ratio > 4
    long = v8.verdicts[-1]
    assert long.status == Status.ACCEPTED
    assert long.norm_ratio == pytest.approx(v7.verdicts[-1].norm_ratio / 6, rel=1e-12)
    assert long.score == round(long.cosine * 1e6)  # not clipped: the score is its cosine
    assert [v.status for v in v8.verdicts[:-1]] == [v.status for v in v7.verdicts[:-1]]


def test_the_allowance_scales_the_clip_and_the_rejection_and_no_more() -> None:
    """Twice the median stake: a 6x update is clipped to 2 x 2 typical norms (ratio 3, clip 2/3), a 10x update is
    still a norm outlier (ratio 5 > 4). The clipped update adds to the aggregate what it would add at 4 typical
    norms."""
    base, subs = _round(3, 6.0)
    two = _stakes(subs, 2 * UNIT)
    v8 = evaluate_round(base, subs, RuleConfig.version8(), stakes=two)
    clipped = v8.verdicts[-1]
    assert clipped.status == Status.ACCEPTED and 2 < clipped.norm_ratio < 4
    assert clipped.score == pytest.approx(clipped.cosine * 2 / clipped.norm_ratio * 1e6, abs=1)
    base, subs = _round(3, 10.0)
    outlier = evaluate_round(base, subs, RuleConfig.version8(), stakes=_stakes(subs, 2 * UNIT)).verdicts[-1]
    assert outlier.status == Status.NORM_OUTLIER and outlier.norm_ratio > 4


def test_fast_reference_and_streamed_paths_agree_bit_for_bit_with_the_allowance(tmp_path: Path) -> None:
    base, subs = _round(4, 5.0)
    stakes = {s.participant: (1 + i % 3) * UNIT for i, s in enumerate(subs)} | {subs[-1].participant: 6 * UNIT}
    fast = three_paths_agree(base, subs, RuleConfig.version8(), stakes, tmp_path)
    assert fast.verdicts != evaluate_round(base, subs, RuleConfig.version7(), stakes=stakes).verdicts
