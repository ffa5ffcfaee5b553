"""Each attack's defining property, through the flat functions and through apply_attack."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from trainer.attacks import (
    ADAPTIVE_NORM_RATIO,
    ALIE_FIXED_Z,
    ALL_ATTACKS,
    SYBIL_HEAVY_PERTURBATION,
    SYBIL_PERTURBATION,
    DIGITS_TRIGGER_PIXELS,
    IPM_LARGE_EPS,
    IPM_SMALL_EPS,
    AttackContext,
    Trigger,
    alie,
    alie_z_max,
    apply_attack,
    backdoor_poison,
    flip_labels,
    gaussian_noise,
    ipm,
    make_trigger,
    scale_to_norm,
    sign_flip,
    split_shard,
    sybil_copies,
)
from trainer.data import load_dataset

SHAPES = {"a.weight": (3, 4), "b.bias": (5,)}


def params(seed: int, scale: float = 1.0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {k: torch.randn(s, generator=gen) * scale for k, s in SHAPES.items()}


def flat(p: dict[str, torch.Tensor]) -> torch.Tensor:
    return torch.cat([p[k].reshape(-1) for k in sorted(p)])


def honest_stack(n: int = 8) -> tuple[list[dict[str, torch.Tensor]], torch.Tensor]:
    ups = [params(100 + i) for i in range(n)]
    return ups, torch.stack([flat(u) for u in ups])


def test_update_only_attacks_need_no_context() -> None:
    u = params(1)
    sent = apply_attack("signflip", u, seed=3)
    assert all(torch.equal(sent[k], u[k] * -4.0) for k in u)
    noise = apply_attack("noise", u, seed=3)
    assert all(torch.equal(noise[k], gaussian_noise(u, seed=3)[k]) for k in u)


@pytest.mark.parametrize(("name", "k"), [("signflip", -4.0), ("bitflip", -1.0)])
def test_sign_flip_sends_k_times_the_honest_update(name: str, k: float) -> None:
    u = params(2)
    sent = apply_attack(name, u, seed=0)
    for key in u:
        assert torch.equal(sent[key], u[key] * k)
    assert torch.equal(flat(sign_flip(u, scale=-7.0)), flat(u) * -7.0)


def test_gaussian_noise_ignores_the_update_and_is_reproducible_per_seed() -> None:
    a = gaussian_noise(params(1), seed=5)
    b = gaussian_noise(params(2, scale=100.0), seed=5)
    c = gaussian_noise(params(1), seed=6)
    assert torch.equal(flat(a), flat(b))
    assert not torch.equal(flat(a), flat(c))
    big = gaussian_noise({"w": torch.zeros(20_000)}, std=2.0, seed=0)["w"]
    assert abs(float(big.std()) - 2.0) < 0.05 and abs(float(big.mean())) < 0.05


def test_alie_z_max_follows_the_papers_formula_and_refuses_a_majority() -> None:
    # n = 20, f = 4: s = floor(20/2 + 1) - 4 = 7, z = Phi^-1((20 - 7) / 20) = Phi^-1(0.65)
    assert alie_z_max(20, 4) == pytest.approx(0.38532, abs=1e-4)
    assert alie_z_max(50, 20) == pytest.approx(1.17499, abs=1e-4)  # s = 6, Phi^-1(44/50)
    with pytest.raises(ValueError, match="n=10, f=6"):
        alie_z_max(10, 6)  # s = 0
    with pytest.raises(ValueError, match="0 < f < n"):
        alie_z_max(10, 0)


def test_alie_is_mean_minus_z_std_of_the_honest_stack() -> None:
    _, stack = honest_stack()
    out = alie(stack, 1.5)
    expected = stack.double().mean(0) - 1.5 * stack.double().std(0, unbiased=False)
    assert torch.allclose(out.double(), expected, atol=1e-6)
    # each coordinate sits exactly z standard deviations below the honest mean
    z = (stack.double().mean(0) - out.double()) / stack.double().std(0, unbiased=False)
    assert torch.allclose(z, torch.full_like(z, 1.5), atol=1e-4)
    with pytest.raises(ValueError, match="stack"):
        alie(stack[0], 1.0)


def test_ipm_points_against_the_honest_mean() -> None:
    _, stack = honest_stack()
    mean = stack.double().mean(0)
    for eps in (IPM_SMALL_EPS, IPM_LARGE_EPS):
        out = ipm(stack, eps).double()
        assert torch.allclose(out, -eps * mean, rtol=1e-5, atol=1e-6)
        assert float(out @ mean) < 0


def test_apply_attack_runs_the_omniscient_attacks_on_the_honest_updates() -> None:
    ups, stack = honest_stack()
    ctx = AttackContext(honest=ups, n=10, f=2)
    u = params(1)
    assert torch.allclose(flat(apply_attack("alie", u, seed=0, context=ctx)), alie(stack, alie_z_max(10, 2)))
    assert torch.allclose(flat(apply_attack("alie_z1", u, seed=0, context=ctx)), alie(stack, ALIE_FIXED_Z))
    assert torch.allclose(flat(apply_attack("ipm_large", u, seed=0, context=ctx)), ipm(stack, IPM_LARGE_EPS))
    with pytest.raises(ValueError, match="honest"):
        apply_attack("ipm_small", u, seed=0)


def test_label_flip_maps_c_to_last_minus_c_and_is_an_involution() -> None:
    y = torch.arange(10)
    assert flip_labels(y, 10).tolist() == list(range(9, -1, -1))
    assert torch.equal(flip_labels(flip_labels(y, 10), 10), y)
    assert flip_labels(torch.tensor([0, 1, 1]), 2).tolist() == [1, 0, 0]


def test_label_flip_retrains_the_attackers_shard_on_flipped_labels() -> None:
    seen: list[torch.Tensor] = []
    x, y = torch.zeros(4, 2), torch.tensor([0, 1, 2, 2])

    def retrain(transform):  # type: ignore[no-untyped-def]
        _, y2 = transform(x, y)
        seen.append(y2)
        return params(9)

    out = apply_attack("labelflip", params(1), seed=0, context=AttackContext(retrain=retrain, num_classes=3))
    assert seen[0].tolist() == [2, 1, 0, 0]
    assert torch.equal(flat(out), flat(params(9)))


def test_the_digits_trigger_is_a_white_bottom_right_square() -> None:
    data = load_dataset("digits")
    trig = make_trigger("digits", data.x_train, data.num_classes)
    assert trig.features == DIGITS_TRIGGER_PIXELS == (54, 55, 62, 63)
    assert trig.target == 9
    x = data.x_test[:5]
    xt = trig.apply(x)
    others = [i for i in range(64) if i not in trig.features]
    assert torch.equal(xt[:, others], x[:, others])
    assert torch.equal(xt[:, list(trig.features)], torch.tensor(trig.values).expand(5, 4))
    assert all(v == float(data.x_train[:, f].max()) for f, v in zip(trig.features, trig.values, strict=True))


def test_backdoor_poison_triggers_and_relabels_a_fraction_and_leaves_the_rest() -> None:
    trig = Trigger((0, 1), (9.0, 9.0), target=3)
    x, y = torch.randn(2000, 4), torch.randint(0, 3, (2000,))
    xp, yp = backdoor_poison(x, y, trig, fraction=0.5, seed=1)
    poisoned = (xp[:, 0] == 9.0) & (xp[:, 1] == 9.0)
    assert 0.45 < float(poisoned.float().mean()) < 0.55
    assert bool((yp[poisoned] == 3).all())
    assert torch.equal(xp[~poisoned], x[~poisoned]) and torch.equal(yp[~poisoned], y[~poisoned])


def test_backdoor_through_apply_attack_is_boosted_by_n_over_f() -> None:
    trig = Trigger((0,), (5.0,), target=1)
    ctx = AttackContext(retrain=lambda transform: params(4), trigger=trig, n=20, f=4)
    out = apply_attack("backdoor", params(1), seed=0, context=ctx)
    assert torch.allclose(flat(out), flat(params(4)) * 5.0)


def test_the_adaptive_backdoor_sits_just_under_the_norm_bound() -> None:
    ups, stack = honest_stack()
    median_norm = float(stack.double().norm(dim=1).median())
    out = scale_to_norm(torch.ones(stack.shape[1]), stack)
    assert float(out.double().norm()) == pytest.approx(ADAPTIVE_NORM_RATIO * median_norm, rel=1e-6)
    trig = Trigger((0,), (5.0,), target=1)
    poisoned = params(4)
    ctx = AttackContext(retrain=lambda transform: poisoned, trigger=trig, honest=ups)
    sent = flat(apply_attack("backdoor_adaptive", params(1), seed=0, context=ctx))
    assert float(sent.double().norm()) == pytest.approx(ADAPTIVE_NORM_RATIO * median_norm, rel=1e-6)
    cos = torch.nn.functional.cosine_similarity(sent, flat(poisoned), dim=0)
    assert float(cos) == pytest.approx(1.0, abs=1e-6)  # same direction, only the length changes


def test_free_riders_send_zero_or_the_last_public_global_step() -> None:
    u = params(1)
    assert float(flat(apply_attack("freerider_zero", u, seed=0)).abs().sum()) == 0.0
    assert float(flat(apply_attack("freerider_stale", u, seed=0)).abs().sum()) == 0.0  # round 1: nothing to resend
    last = params(7)
    stale = apply_attack("freerider_stale", u, seed=0, context=AttackContext(previous_global_step=last))
    assert torch.equal(flat(stale), flat(last))


def test_sybils_send_identical_copies_of_one_update() -> None:
    src = params(3)
    copies = sybil_copies(src, 4)
    assert len(copies) == 4 and all(torch.equal(flat(c), flat(src)) for c in copies)
    copies[0]["b.bias"] += 1  # copies are independent tensors
    assert torch.equal(flat(copies[1]), flat(src))
    sent = apply_attack("sybil", params(1), seed=0, context=AttackContext(sybil_source=src))
    assert torch.equal(flat(sent), flat(src))
    with pytest.raises(ValueError):
        sybil_copies(src, 0)


def test_perturbed_sybils_send_distinct_noisy_copies_outside_the_copy_radius() -> None:
    src = params(3)
    ctx = AttackContext(sybil_source=src)
    a = flat(apply_attack("sybil_perturbed", params(1), seed=1, context=ctx))
    b = flat(apply_attack("sybil_perturbed", params(2), seed=2, context=ctx))
    again = flat(apply_attack("sybil_perturbed", params(9), seed=1, context=ctx))
    s = flat(src)
    assert torch.equal(a, again)  # seeded; the attacker's own update plays no part
    for copy in (a, b):  # the noise is SYBIL_PERTURBATION of the source's norm: past the rule's 0.1 copy radius
        assert float((copy - s).norm()) == pytest.approx(SYBIL_PERTURBATION * float(s.norm()), rel=1e-5)
    assert float((a - b).norm()) > 0.1 * float(s.norm())
    assert float(torch.nn.functional.cosine_similarity(a, s, dim=0)) > 0.95  # still the same update, in direction
    noisy = flat(apply_attack("sybil_noisy", params(1), seed=1, context=ctx))
    assert float((noisy - s).norm()) == pytest.approx(SYBIL_HEAVY_PERTURBATION * float(s.norm()), rel=1e-5)
    assert float(torch.nn.functional.cosine_similarity(noisy, s, dim=0)) < 0.6  # 1 / sqrt(1 + 2^2) = 0.45


def test_a_split_sybil_cuts_its_data_set_into_disjoint_slices_and_sends_each_wallets_own_update() -> None:
    shard = np.arange(100, 137)
    slices = split_shard(shard, 3, seed=4)
    assert [len(s) for s in slices] == [13, 12, 12]
    assert sorted(np.concatenate(slices).tolist()) == shard.tolist()  # every sample in exactly one slice
    assert all((np.diff(s) > 0).all() for s in slices)
    assert all(np.array_equal(a, b) for a, b in zip(slices, split_shard(shard, 3, seed=4), strict=True))
    assert not np.array_equal(slices[0], split_shard(shard, 3, seed=5)[0])  # seeded shuffle, not a cut in order
    for bad in (0, 38):
        with pytest.raises(ValueError, match="slices"):
            split_shard(shard, bad, seed=0)
    own = params(5)
    sent = apply_attack("sybil_split", params(1), seed=0, context=AttackContext(split_update=own))
    assert torch.equal(flat(sent), flat(own))
    with pytest.raises(ValueError, match="split_update"):
        apply_attack("sybil_split", params(1), seed=0, context=AttackContext())


def test_unknown_attack_names_the_choices() -> None:
    with pytest.raises(ValueError, match="signflip") as err:
        apply_attack("teleport", params(1), seed=0)
    assert all(name in str(err.value) for name in ALL_ATTACKS)
