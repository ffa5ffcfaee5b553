"""trainer/privacy.py: Opacus DP-SGD on the platform's model and the RDP accounting the auditor recomputes."""

from __future__ import annotations

import math

import pytest
import torch
from opacus.accountants import RDPAccountant
from opacus.accountants.utils import get_noise_multiplier

from trainer.data import load_dataset
from trainer.local import LocalConfig, train_local
from trainer.model import ModelSpec, init_params, load_into
from trainer.privacy import (
    Mechanism,
    PrivacyConfig,
    PrivacyError,
    check_supported,
    delta_to_atto,
    epsilon_of,
    epsilon_to_micro,
    plan,
    rdp_composed_epsilon,
    train_local_dp,
    within_tolerance,
)
from trainer.serialization import content_hash, deserialize, read_metadata, serialize


@pytest.fixture(scope="module")
def digits():
    ds = load_dataset("digits", seed=0)
    spec = ModelSpec(ds.num_features, ds.num_classes)
    return spec, init_params(spec, 0), ds.x_train[:96], ds.y_train[:96]


def _flat(update) -> torch.Tensor:
    return torch.cat([update[k].reshape(-1) for k in sorted(update)])


def test_epsilon_is_opacus_rdp_accountant_stepped_like_the_privacy_engine() -> None:
    mech = Mechanism(1.1, 0.25, 8, 1.0, 1e-5)
    accountant = RDPAccountant()
    for _ in range(8):  # what DPOptimizer's step hook does once per step
        accountant.step(noise_multiplier=1.1, sample_rate=0.25)
    assert epsilon_of(mech) == accountant.get_epsilon(1e-5)
    assert 0 < epsilon_of(mech) < epsilon_of(Mechanism(1.1, 0.25, 16, 1.0, 1e-5))  # more steps, more epsilon
    assert epsilon_of(Mechanism(2.0, 0.25, 8, 1.0, 1e-5)) < epsilon_of(mech)  # more noise, less epsilon


def test_a_target_epsilon_solves_the_noise_multiplier_with_get_noise_multiplier() -> None:
    local = LocalConfig(epochs=2, batch_size=32)
    for target in (1.0, 4.0, 8.0):
        mech = plan(PrivacyConfig(target_epsilon=target, delta=1e-5), 96, local)
        assert (mech.sample_rate, mech.steps) == (32 / 96, 2 * 3)
        assert mech.noise_multiplier == get_noise_multiplier(target_epsilon=target, target_delta=1e-5,
                                                             sample_rate=32 / 96, steps=6, accountant="rdp")
        assert target - 0.01 <= mech.epsilon <= target  # Opacus's search tolerance, never above the target


def test_fixed_local_steps_are_the_mechanism_s_steps_whatever_the_data(digits) -> None:
    spec, base, x, y = digits
    local = LocalConfig(steps=5, batch_size=32)
    for n in (40, 400):
        assert plan(PrivacyConfig(noise_multiplier=1.0), n, local).steps == 5
    _, mech = train_local_dp(spec, base, x, y, local, PrivacyConfig(noise_multiplier=1.0), seed=3)
    assert mech.steps == 5  # train_local_dp raises if it ran another number of steps
    capped = LocalConfig.from_option("epochs:4")  # 2 epochs of Poisson batches (int(1 / q) each), at most 4 steps
    assert plan(PrivacyConfig(noise_multiplier=1.0), 40, capped).steps == 2
    assert plan(PrivacyConfig(noise_multiplier=1.0), 400, capped).steps == 4
    assert train_local_dp(spec, base, x, y, capped, PrivacyConfig(noise_multiplier=1.0), seed=3)[1].steps == 4


def test_rdp_composition_over_rounds_is_tighter_than_the_sum() -> None:
    mechs = [Mechanism(1.0, 0.3, 6, 1.0, 1e-5)] * 5
    composed = rdp_composed_epsilon(mechs, 5e-5)
    assert composed < sum(m.epsilon for m in mechs)
    assert composed > mechs[0].epsilon


def test_fixed_point_units_never_understate() -> None:
    assert epsilon_to_micro(1.0) == 1_000_000
    assert epsilon_to_micro(1.0000001) == 1_000_001
    assert delta_to_atto(1e-5) == 10**13
    mech = Mechanism(1.3, 0.3, 6, 1.0, 1e-5)
    assert mech.epsilon_micro >= mech.epsilon * 1e6
    assert within_tolerance(mech.epsilon_micro, mech)[0]
    assert not within_tolerance(mech.epsilon_micro - 10, mech)[0]  # understated by 1e-5
    assert not within_tolerance(mech.epsilon_micro // 2, mech)[0]


def test_noise_is_applied_with_the_declared_standard_deviation(digits) -> None:
    """One full-batch step (sample rate 1), no momentum: update = -lr (sum of clipped grads + N(0, (sigma C)^2)) / n,
    so update * n / lr has per-coordinate std sigma*C up to the clipped sum (norm <= n C, tiny against the noise)."""
    spec, base, x, y = digits
    n = x.shape[0]
    local = LocalConfig(epochs=1, batch_size=n, lr=1.0, momentum=0.0)
    update, mech = train_local_dp(spec, base, x, y, local, PrivacyConfig(noise_multiplier=100.0, max_grad_norm=1.0),
                                  seed=5)
    assert (mech.sample_rate, mech.steps) == (1.0, 1)
    scaled = _flat(update) * n / local.lr
    assert float(scaled.std()) == pytest.approx(100.0, rel=0.05)
    assert abs(float(scaled.mean())) < 5.0


def test_per_sample_clipping_bounds_the_step(digits) -> None:
    """With (almost) no noise one full-batch step is exactly -lr * mean of the per-sample gradients each clipped to
    norm C (recomputed here sample by sample), so it moves at most lr * C; plain SGD on the same batch moves much
    further, so the bound is the clipping's doing."""
    spec, base, x, y = digits
    n = x.shape[0]
    local = LocalConfig(epochs=1, batch_size=n, lr=1.0, momentum=0.0)
    clip = 0.01
    update, _ = train_local_dp(spec, base, x, y, local, PrivacyConfig(noise_multiplier=1e-9, max_grad_norm=clip),
                               seed=1)
    module = load_into(spec, base)
    total = torch.zeros(spec.num_parameters())
    norms = []
    for i in range(n):
        module.zero_grad()
        torch.nn.functional.cross_entropy(module(x[i : i + 1]), y[i : i + 1]).backward()
        g = torch.cat([p.grad.reshape(-1) for _, p in sorted(module.named_parameters())])
        norms.append(float(g.norm()))
        total += g * min(1.0, clip / (float(g.norm()) + 1e-6))  # Opacus's flat clipping factor
    assert min(norms) > clip  # every sample's gradient was actually clipped
    expected = -local.lr * total / n
    assert torch.allclose(_flat(update), expected, atol=1e-7)
    assert float(_flat(update).norm()) <= local.lr * clip * (1 + 1e-4)
    plain = train_local(spec, base, x, y, local, seed=1)
    assert float(_flat(plain).norm()) > 10 * float(_flat(update).norm())


def test_dp_training_is_deterministic_given_the_seed(digits) -> None:
    spec, base, x, y = digits
    cfg = PrivacyConfig(target_epsilon=4.0)
    a, ma = train_local_dp(spec, base, x, y, LocalConfig(), cfg, seed=7)
    b, mb = train_local_dp(spec, base, x, y, LocalConfig(), cfg, seed=7)
    c, _ = train_local_dp(spec, base, x, y, LocalConfig(), cfg, seed=8)
    assert ma == mb
    assert serialize(a, ma.to_metadata()) == serialize(b, mb.to_metadata())
    assert not torch.equal(_flat(a), _flat(c))


def test_the_mechanism_travels_in_the_blob_header_and_the_hash_commits_to_it(digits) -> None:
    spec, base, x, y = digits
    update, mech = train_local_dp(spec, base, x, y, LocalConfig(), PrivacyConfig(target_epsilon=8.0), seed=3)
    blob = serialize(update, mech.to_metadata())
    assert Mechanism.from_metadata(read_metadata(blob)) == mech
    assert mech.opacus == "1.6.0" and mech.accountant == "rdp"
    assert set(deserialize(blob, spec.shapes())) == set(update)  # tensors unchanged by the header
    louder = Mechanism(mech.noise_multiplier * 2, mech.sample_rate, mech.steps, mech.max_grad_norm, mech.delta)
    assert content_hash(serialize(update, louder.to_metadata())) != content_hash(blob)
    assert Mechanism.from_metadata(read_metadata(serialize(update))) is None


def test_malformed_or_impossible_mechanisms_are_typed_errors() -> None:
    with pytest.raises(PrivacyError, match="malformed"):
        Mechanism.from_metadata({"fedledger.dp": "{not json"})
    with pytest.raises(PrivacyError, match="accountant"):
        Mechanism(1.0, 0.5, 2, 1.0, 1e-5, accountant="prv").validate()
    with pytest.raises(PrivacyError, match="sample rate"):
        epsilon_of(Mechanism(1.0, 1.5, 2, 1.0, 1e-5))
    with pytest.raises(PrivacyError, match="exactly one"):
        PrivacyConfig()
    with pytest.raises(PrivacyError, match="delta"):
        PrivacyConfig(target_epsilon=1.0, delta=1.0)
    with pytest.raises(PrivacyError, match="positive"):
        PrivacyConfig(noise_multiplier=-1.0)
    assert math.isfinite(epsilon_of(Mechanism(1.0, 0.5, 2, 1.0, 1e-5)))


def test_the_platform_model_is_supported_by_opacus(digits) -> None:
    spec, *_ = digits
    check_supported(spec)
