"""Baseline defences: what each computes, the Byzantine bounds they refuse, and row-order invariance."""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest
import torch

from trainer.aggregation import Submission, evaluate_round, flatten, unflatten
from trainer.aggregation import coordinate_median as platform_median
from trainer.defenses import (
    adaptive_tau,
    centered_clipping,
    coordinate_median,
    fedavg,
    krum_scores,
    median_verified_mean,
    multi_krum,
    trimmed_mean,
)
from trainer.rules import RuleConfig, Status
from trainer.serialization import serialize


def honest_with_outliers(n: int, f: int, d: int = 30, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    direction = torch.randn(d, generator=gen)
    stack = direction + 0.2 * torch.randn(n, d, generator=gen)
    stack[:f] = -50.0 * direction  # f far-away Byzantine rows first
    return stack.to(torch.float32)


def test_fedavg_is_the_mean() -> None:
    stack = torch.randn(7, 11)
    assert torch.allclose(fedavg(stack), stack.mean(0), atol=1e-6)


@pytest.mark.parametrize("n", [5, 6])
def test_median_matches_the_platform_reference(n: int) -> None:
    stack = torch.randn(n, 40)
    assert torch.equal(coordinate_median(stack), platform_median(stack))


def test_trimmed_mean_drops_f_extremes_per_coordinate() -> None:
    stack = honest_with_outliers(10, 2)
    honest = stack[2:]
    out = trimmed_mean(stack, 2)
    ordered = torch.sort(stack, 0).values[2:8]
    assert torch.allclose(out, ordered.mean(0), atol=1e-6)
    assert float((out - honest.mean(0)).norm()) < 1.0  # the -50x rows are gone
    assert torch.allclose(trimmed_mean(stack, 0), stack.mean(0), atol=1e-5)


def test_multi_krum_selects_the_honest_cluster() -> None:
    stack = honest_with_outliers(11, 3)
    res = multi_krum(stack, 3)
    assert res.selected == list(range(3, 11))  # m = n - f = 8 honest rows
    assert torch.allclose(res.aggregate, stack[3:].mean(0), atol=1e-6)
    krum = multi_krum(stack, 3, m=1)
    assert len(krum.selected) == 1 and krum.selected[0] >= 3
    scores = krum_scores(stack, 3)
    assert float(scores[:3].min()) > float(scores[3:].max())


def test_centered_clipping_bounds_each_updates_pull() -> None:
    stack = honest_with_outliers(10, 1)
    center = torch.zeros(30)
    out = centered_clipping(stack, center, tau=1.0)
    assert float(out.norm()) <= 1.0 + 1e-5  # the mean of vectors of norm <= tau
    # when nothing is longer than tau from the centre, one iteration is the plain mean
    small = 0.01 * torch.randn(6, 30)
    assert torch.allclose(centered_clipping(small, center, tau=10.0), small.mean(0), atol=1e-6)
    tau = adaptive_tau(stack, center)
    assert tau == pytest.approx(float(torch.median(stack.double().norm(dim=1))), rel=1e-9)
    clipped = centered_clipping(stack, center, tau=tau, iterations=3)
    assert float(torch.nn.functional.cosine_similarity(clipped, stack[1:].mean(0), dim=0)) > 0.9


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda s: krum_scores(s, 2), r"Krum needs 2f \+ 2 < n, got n=6, f=2"),
        (lambda s: multi_krum(s, 3), r"Krum needs 2f \+ 2 < n, got n=6, f=3"),
        (lambda s: multi_krum(s, 1, m=6), r"1 <= m <= n - f .* m=6, n=6, f=1"),
        (lambda s: trimmed_mean(s, 3), r"trimmed mean tolerates f < n/2 .* n=6, f=3"),
        (lambda s: coordinate_median(s, f=3), r"coordinate median tolerates f < n/2 .* n=6, f=3"),
        (lambda s: centered_clipping(s, torch.zeros(4), tau=1.0, f=3), r"n=6, f=3"),
        (lambda s: centered_clipping(s, torch.zeros(4), tau=0.0), r"tau > 0"),
        (lambda s: centered_clipping(s, torch.zeros(4), tau=1.0, iterations=0), r"iterations >= 1"),
        (lambda s: centered_clipping(s, torch.zeros(5), tau=1.0), r"centre shape"),
        (lambda s: trimmed_mean(s, -1), r"f must be >= 0"),
    ],
)
def test_byzantine_bounds_that_cannot_hold_raise_with_the_values(call: Callable[[torch.Tensor], object],
                                                                 message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call(torch.randn(6, 4))


def test_bad_stacks_are_refused() -> None:
    with pytest.raises(ValueError, match=r"\[n, d\]"):
        fedavg(torch.randn(4))
    with pytest.raises(ValueError, match="zero updates"):
        coordinate_median(torch.zeros(0, 3))
    with pytest.raises(ValueError, match="float32"):
        fedavg(torch.randn(3, 3, dtype=torch.float64))


@pytest.mark.parametrize("seed", range(5))
def test_every_defence_is_invariant_to_row_order_bit_for_bit(seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    stack = torch.randn(9, 50, generator=gen) * torch.rand(9, 1, generator=gen) * 3
    perm = list(range(9))
    random.Random(seed).shuffle(perm)
    shuffled = stack[perm]
    center = torch.randn(50, generator=gen) * 0.1
    for fn in (
        fedavg,
        coordinate_median,
        lambda s: trimmed_mean(s, 2),
        lambda s: multi_krum(s, 2).aggregate,
        lambda s: centered_clipping(s, center, tau=adaptive_tau(s, center), iterations=2),
    ):
        assert torch.equal(fn(stack), fn(shuffled))


def _platform(
    stack: torch.Tensor, rule: RuleConfig, reputation: dict[str, int] | None = None
) -> tuple[list[Status], list[int], torch.Tensor]:
    shapes = {"w": (stack.shape[1],)}
    base = {"w": torch.zeros(stack.shape[1])}
    subs = [Submission(f"0x{i + 1:040x}", serialize(unflatten(u, shapes))) for i, u in enumerate(stack)]
    out = evaluate_round(base, subs, rule, reputation=reputation)
    return [v.status for v in out.verdicts], [v.score for v in out.verdicts], flatten(out.new_params)


@pytest.mark.parametrize("version", [1, 2, 3])
@pytest.mark.parametrize("seed", range(4))
def test_the_float64_model_of_the_committed_rule_matches_evaluate_round(seed: int, version: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    direction = torch.randn(60, generator=gen)
    stack = direction + torch.randn(12, 60, generator=gen) * torch.rand(12, 1, generator=gen) * 2
    stack[:3] *= -4.0
    stack[3] *= 5.0
    stack[4] *= 3.0  # clipped (version 2), rejected (version 1)
    stack[5] = stack[6]  # a copy
    stack[7] = 0.0  # a free-rider
    if version == 1:
        statuses, scores, new = _platform(stack, RuleConfig.version1())
        model = median_verified_mean(stack)
    else:
        # version 3 weighs by reputation: attackers 0-2 and one honest participant have a poor record
        ppm = [50_000, 20_000, 0, 500_000, 600_000, 700_000, 700_000, 500_000, 300_000, 900_000, 100_000, 800_000]
        reputation = {f"0x{i + 1:040x}": r for i, r in enumerate(ppm)}
        rule = RuleConfig.version2() if version == 2 else RuleConfig.version3()
        statuses, scores, new = _platform(stack, rule, reputation)
        v3 = {"reference_gate": 0.5, "weights": (1, 2)} if version == 3 else {}
        model = median_verified_mean(
            stack, duplicate_tolerance=0.1, public=(torch.zeros(60),), norm_mode="clip", reject_norm_ratio=4.0,
            reputation=[r / 1e6 for r in ppm], **v3,
        )
        assert statuses[7] == Status.FREE_RIDE and scores[5] == scores[6]
    assert model.accepted == [s == Status.ACCEPTED for s in statuses]
    assert [round(s * 1e6) for s in model.scores] == pytest.approx(scores, abs=1)
    assert torch.allclose(model.step, new, atol=1e-5)


def test_proposed_revision_groups_copies_and_flags_free_riders() -> None:
    gen = torch.Generator().manual_seed(1)
    direction = torch.randn(40, generator=gen)
    stack = direction + 0.5 * torch.randn(10, 40, generator=gen)
    stack[1] = stack[0]
    stack[2] = stack[0]  # three wallets, one update
    stack[3] = 0.0  # zero free-rider
    last_step = stack[4:].mean(0)
    stack[4] = last_step  # resends the public last global step
    out = median_verified_mean(stack, duplicate_tolerance=0.1, public=(torch.zeros(40), last_step))
    assert out.groups[:3] == [0, 0, 0]
    assert out.scores[0] == out.scores[1] == out.scores[2]
    alone = median_verified_mean(torch.cat([stack[:1], stack[5:]]), duplicate_tolerance=0.1)
    assert sum(out.scores[:3]) == pytest.approx(alone.scores[0], rel=1e-6)  # copies share one score
    assert out.free_rider[3] and out.free_rider[4]
    assert out.scores[3] == out.scores[4] == 0.0 and out.reward_weights[3] == out.reward_weights[4] == 0.0
    assert torch.allclose(out.step, alone.step, atol=1e-6)  # copies and riders do not move the aggregate


def test_clipping_keeps_a_long_agreeing_update_that_rejection_drops() -> None:
    gen = torch.Generator().manual_seed(2)
    direction = torch.randn(40, generator=gen)
    stack = direction + 0.3 * torch.randn(9, 40, generator=gen)
    stack[0] = 3.0 * direction  # a large honest shard: r ~ 3, points with the median
    rejected = median_verified_mean(stack)
    clipped = median_verified_mean(stack, norm_mode="clip", reject_norm_ratio=4.0)
    assert not rejected.accepted[0] and clipped.accepted[0]
    far = median_verified_mean(stack * torch.tensor([6.0] + [1.0] * 8)[:, None], norm_mode="clip",
                               reject_norm_ratio=4.0)
    assert not far.accepted[0]  # r > 4 is still rejected
