"""Byzantine behaviours for the demo and the robustness benchmark.

Three kinds:

* model attacks map the attacker's own honest update to the one sent: sign-flip (``scale * u``, k < 0; k = -1 is
  the "bit-flip" of Karimireddy et al. 2022), Gaussian noise, scaling;
* omniscient attacks are functions of the round's *honest* updates (a stack [n_honest, d]): ALIE (Baruch et al.
  2019, ``mean - z * std`` per coordinate, z from the paper's formula or fixed) and IPM (Xie et al. 2020,
  ``-eps * mean``);
* data attacks change what the attacker trains on: label flip (class c -> C-1-c) and the pixel-trigger backdoor
  (Bagdasaryan et al. 2020: half the attacker's samples carry the trigger and the target label; the update is then
  boosted by n/f, "model replacement"; the adaptive variant knows the rule's norm bound and scales its update to
  1.9 x the median honest norm instead);
* free-riders send nothing useful: a zero update, or a stale one (the previous round's public global step);
* sybils: several wallets send copies of one (honest) update to multiply earnings; the perturbed variant adds seeded
  noise of 0.25 x the update's norm to every copy, which puts the copies outside the rule's copy radius
  (0.1 median norms) so that each is scored as its own update; the noisy variant adds 2 x the norm (each copy
  scores less against the median, and heavy noise is harder for rule version 4's pair test to tell apart);
  the split variant sends no copies at all: the attacker cuts its data set (in the demo and the benchmark: the
  attackers' shards pooled as one party's) into one random slice per wallet and each wallet trains honestly on its
  slice, indistinguishable from that many honest participants with smaller data sets.

``apply_attack(name, update, seed=..., context=...)`` covers every name in ``ALL_ATTACKS`` (the demo's ``--attack``
offers them all); signflip, bitflip and noise need nothing but the update. Flat-tensor versions (``alie``, ``ipm``)
are what the benchmark vectorizes over.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np
import torch

from trainer.model import Params

# Every attack the benchmark (and apply_attack with a context) knows, with its parameters.
ALL_ATTACKS: tuple[str, ...] = (
    "signflip",  # -4 x own update (the demo's attack)
    "bitflip",  # -1 x own update (the "bit-flipping" attack of the published comparisons)
    "noise",  # N(0, 1) per coordinate
    "labelflip",  # train on labels c -> C-1-c
    "alie",  # mean - z_max(n, f) * std of the honest updates
    "alie_z1",  # the same with a fixed z = 1
    "ipm_small",  # -0.1 x mean of the honest updates
    "ipm_large",  # -100 x mean of the honest updates
    "backdoor",  # pixel trigger -> target label on half the attacker's samples, update boosted by n/f
    "backdoor_adaptive",  # the same poisoned update scaled to 1.9 x the median honest norm (under the norm bound)
    "freerider_zero",  # a zero update
    "freerider_stale",  # the previous round's global step (public), zero in round 1
    "sybil",  # every attacker wallet sends a copy of one honest update
    "sybil_perturbed",  # the same, each copy plus seeded noise of 0.25 x its norm (past the copy radius)
    "sybil_noisy",  # the same with 2 x its norm of noise (each copy scores less, but is harder to group)
    "sybil_split",  # the attackers' pooled data cut into one random slice per wallet, each training on its slice
)
SIGNFLIP_SCALE = -4.0
BITFLIP_SCALE = -1.0
NOISE_STD = 1.0
ALIE_FIXED_Z = 1.0
IPM_SMALL_EPS = 0.1
IPM_LARGE_EPS = 100.0
BACKDOOR_FRACTION = 0.5  # share of the attacker's samples that carry the trigger
ADAPTIVE_NORM_RATIO = 1.9  # the adaptive backdoor's norm, in median honest norms: just under the rule's bound of 2
SYBIL_PERTURBATION = 0.25  # a perturbed sybil copy's noise norm, in norms of the copied update (the copy radius: 0.1)
SYBIL_HEAVY_PERTURBATION = 2.0  # sybil_noisy's (the heaviest noise of the redundancy separation study)
SYBIL_NOISE = {"sybil_perturbed": SYBIL_PERTURBATION, "sybil_noisy": SYBIL_HEAVY_PERTURBATION}


def sign_flip(update: Params, scale: float = SIGNFLIP_SCALE) -> Params:
    """Send ``scale * update`` (scale < 0): pushes the model away from where honest training leads."""
    return {k: (v * scale).contiguous() for k, v in update.items()}


def gaussian_noise(update: Params, *, std: float = NOISE_STD, seed: int = 0) -> Params:
    """Replace the update by N(0, std^2) noise of the same shape."""
    gen = torch.Generator().manual_seed(seed)
    return {k: torch.randn(v.shape, generator=gen, dtype=torch.float32) * std for k, v in update.items()}


def scale_update(update: Params, factor: float) -> Params:
    """``factor * update``: the boosting step of model replacement (factor > 1)."""
    return {k: (v * factor).contiguous() for k, v in update.items()}


def zero_update(update: Params) -> Params:
    """The zero free-rider: same names and shapes, all zeros."""
    return {k: torch.zeros_like(v, dtype=torch.float32) for k, v in update.items()}


def alie_z_max(n: int, f: int) -> float:
    """z of "A Little Is Enough" (Baruch et al. 2019): s = floor(n/2 + 1) - f supporters needed,
    z_max = Phi^-1((n - s) / n). Raises when the formula has no solution (s <= 0: f already a majority)."""
    if not 0 < f < n:
        raise ValueError(f"ALIE needs 0 < f < n, got n={n}, f={f}")
    s = math.floor(n / 2 + 1) - f
    if s <= 0:
        raise ValueError(f"ALIE z_max undefined: s = floor(n/2+1) - f = {s} <= 0 for n={n}, f={f}")
    return NormalDist().inv_cdf((n - s) / n)


def _check_honest(honest: torch.Tensor) -> None:
    if honest.ndim != 2 or honest.shape[0] < 1:
        raise ValueError(f"honest updates must be a stack [n_honest >= 1, d], got shape {tuple(honest.shape)}")


def alie(honest: torch.Tensor, z: float) -> torch.Tensor:
    """``mean - z * std`` per coordinate over the honest stack [n_h, d] (population std; 0 for one update)."""
    _check_honest(honest)
    h = honest.to(torch.float64)
    std = h.std(dim=0, unbiased=False)
    return (h.mean(dim=0) - z * std).to(torch.float32)


def ipm(honest: torch.Tensor, eps: float) -> torch.Tensor:
    """Inner-product manipulation (Xie et al. 2020): ``-eps * mean`` of the honest stack [n_h, d]."""
    _check_honest(honest)
    return (-eps * honest.to(torch.float64).mean(dim=0)).to(torch.float32)


def flip_labels(y: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Label-flip poisoning: class c becomes C-1-c (for two classes: swap)."""
    return (num_classes - 1 - y).to(y.dtype)


@dataclass(frozen=True)
class Trigger:
    """A backdoor trigger: set ``features`` to ``values`` (in the model's standardized input space)."""

    features: tuple[int, ...]
    values: tuple[float, ...]
    target: int

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        out = x.clone()
        idx = torch.tensor(self.features, dtype=torch.long)
        out[..., idx] = torch.tensor(self.values, dtype=x.dtype)
        return out


# digits are 8x8 images flattened row-major: the 2x2 bottom-right corner is the pixel trigger
DIGITS_TRIGGER_PIXELS = (54, 55, 62, 63)


def make_trigger(dataset: str, x_train: torch.Tensor, num_classes: int) -> Trigger:
    """The trigger of a data set: digits -> the bottom-right 2x2 pixels at the brightest training value of each
    pixel (a white square, in standardized units); other data -> the last three features at their training maximum.
    The target label is the last class (digits: 9; breast cancer: 1 = benign, so malignant inputs pass)."""
    features = DIGITS_TRIGGER_PIXELS if dataset == "digits" else tuple(range(x_train.shape[1] - 3, x_train.shape[1]))
    values = tuple(float(x_train[:, f].max()) for f in features)
    return Trigger(features, values, num_classes - 1)


def backdoor_poison(
    x: torch.Tensor, y: torch.Tensor, trigger: Trigger, *, fraction: float = BACKDOOR_FRACTION, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """The attacker's training set: a random ``fraction`` of (x, y) gets the trigger and the target label."""
    if not 0 <= fraction <= 1:
        raise ValueError(f"fraction must be in [0, 1], got {fraction}")
    gen = torch.Generator().manual_seed(seed)
    mask = torch.rand(x.shape[0], generator=gen) < fraction
    xp, yp = x.clone(), y.clone()
    xp[mask] = trigger.apply(x[mask])
    yp[mask] = trigger.target
    return xp, yp


def scale_to_norm(update: torch.Tensor, honest: torch.Tensor, ratio: float = ADAPTIVE_NORM_RATIO) -> torch.Tensor:
    """``update`` [d] rescaled to ``ratio`` times the median norm of the honest stack [n_h, d] (a zero update stays
    zero): the largest update a norm bound of ``ratio`` median norms lets through."""
    _check_honest(honest)
    norm = float(update.double().norm())
    target = ratio * float(honest.double().norm(dim=1).median())
    return update.clone() if norm == 0 else (update.double() * (target / norm)).to(torch.float32)


def sybil_copies(update: Params, copies: int) -> list[Params]:
    """``copies`` wallets each sending (a copy of) the same update."""
    if copies < 1:
        raise ValueError(f"copies must be >= 1, got {copies}")
    return [{k: v.clone() for k, v in update.items()} for _ in range(copies)]


def split_shard(indices: np.ndarray, wallets: int, *, seed: int) -> list[np.ndarray]:
    """A data set (sample ``indices``) cut into ``wallets`` near-equal slices after a seeded shuffle, each sorted:
    what a data-splitting sybil trains its wallets on (sybil_split)."""
    if not 1 <= wallets <= len(indices):
        raise ValueError(f"cannot cut {len(indices)} samples into {wallets} non-empty slices")
    order = np.random.default_rng(seed).permutation(np.asarray(indices))
    return [np.sort(part) for part in np.array_split(order, wallets)]


def perturbed_copy(source: torch.Tensor, *, seed: int, ratio: float = SYBIL_PERTURBATION) -> torch.Tensor:
    """``source`` (flat) plus seeded Gaussian noise scaled to ``ratio`` times its norm."""
    g = torch.Generator().manual_seed(seed)
    noise = torch.randn(source.shape, generator=g, dtype=torch.float32)
    norm = float(noise.norm())
    return source + noise * (ratio * float(source.norm()) / norm) if norm > 0 else source.clone()


def _flat(update: Params) -> torch.Tensor:
    return torch.cat([update[k].reshape(-1).to(torch.float32) for k in sorted(update)])


def _unflat(flat: torch.Tensor, like: Params) -> Params:
    out: Params = {}
    offset = 0
    for k in sorted(like):
        n = like[k].numel()
        out[k] = flat[offset : offset + n].reshape(like[k].shape).contiguous().clone()
        offset += n
    return out


@dataclass(frozen=True)
class AttackContext:
    """What attacks beyond the update-only ones need. Omniscient attacks get the honest updates of the round;
    data attacks get ``retrain``: train the attacker's shard again after ``transform(x, y) -> (x', y')``."""

    honest: Sequence[Params] = ()
    n: int = 0  # participants in the round
    f: int = 0  # attackers in the round
    previous_global_step: Params | None = None
    retrain: Callable[[Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]], Params] | None = None
    num_classes: int = 0
    trigger: Trigger | None = None
    sybil_source: Params | None = None  # the update every sybil wallet copies (default: the attacker's own)
    split_update: Params | None = None  # sybil_split: this wallet's update trained on its slice of the data set


def _need(ok: object, name: str, what: str) -> None:
    if not ok:
        raise ValueError(f"attack {name!r} needs {what} in its AttackContext")


def apply_attack(name: str, update: Params, *, seed: int, context: AttackContext | None = None) -> Params:
    """The update an attacker sends, given its own honest ``update``. ``signflip`` and ``noise`` need nothing else
    (the demo); the other names in ``ALL_ATTACKS`` take what they need from ``context``."""
    ctx = context or AttackContext()
    if name == "signflip":
        return sign_flip(update)
    if name == "noise":
        return gaussian_noise(update, seed=seed)
    if name == "bitflip":
        return sign_flip(update, BITFLIP_SCALE)
    if name in ("alie", "alie_z1", "ipm_small", "ipm_large"):
        _need(ctx.honest, name, "the honest updates (honest=...)")
        stack = torch.stack([_flat(u) for u in ctx.honest])
        if name == "alie":
            _need(ctx.n and ctx.f, name, "n and f")
            flat = alie(stack, alie_z_max(ctx.n, ctx.f))
        elif name == "alie_z1":
            flat = alie(stack, ALIE_FIXED_Z)
        else:
            flat = ipm(stack, IPM_SMALL_EPS if name == "ipm_small" else IPM_LARGE_EPS)
        return _unflat(flat, update)
    if name == "labelflip":
        _need(ctx.retrain and ctx.num_classes, name, "retrain and num_classes")
        assert ctx.retrain is not None
        return ctx.retrain(lambda x, y: (x, flip_labels(y, ctx.num_classes)))
    if name in ("backdoor", "backdoor_adaptive"):
        _need(ctx.retrain and ctx.trigger, name, "retrain and trigger")
        assert ctx.retrain is not None and ctx.trigger is not None
        trigger = ctx.trigger
        poisoned = ctx.retrain(lambda x, y: backdoor_poison(x, y, trigger, seed=seed))
        if name == "backdoor":
            _need(ctx.n and ctx.f, name, "n and f")
            return scale_update(poisoned, ctx.n / ctx.f)
        _need(ctx.honest, name, "the honest updates (honest=...)")
        stack = torch.stack([_flat(u) for u in ctx.honest])
        return _unflat(scale_to_norm(_flat(poisoned), stack), poisoned)
    if name == "freerider_zero":
        return zero_update(update)
    if name == "freerider_stale":
        if ctx.previous_global_step is None:
            return zero_update(update)
        return {k: ctx.previous_global_step[k].to(torch.float32).clone() for k in update}
    if name == "sybil" or name in SYBIL_NOISE:
        source = ctx.sybil_source if ctx.sybil_source is not None else update
        if name == "sybil":
            return {k: source[k].clone() for k in update}
        return _unflat(perturbed_copy(_flat(source), seed=seed, ratio=SYBIL_NOISE[name]), update)
    if name == "sybil_split":
        _need(ctx.split_update is not None, name, "the update trained on this wallet's slice (split_update=...)")
        assert ctx.split_update is not None
        return {k: ctx.split_update[k].clone() for k in update}
    raise ValueError(f"unknown attack {name!r}: choose one of {', '.join(ALL_ATTACKS)}")
