"""Differentially private local training (DP-SGD with Opacus) and its accounting (Opacus's RDP accountant).

A participant that trains with a ``PrivacyConfig`` runs Opacus's own DP-SGD components on the platform's model:

* ``DPDataLoader`` draws Poisson batches (each sample independently with probability ``sample_rate``, the sampling
  the RDP analysis assumes), from a ``torch.Generator`` seeded by the participant's seed;
* ``GradSampleModule`` computes per-sample gradients of ``ModelSpec``'s MLP (Linear + ReLU: both supported,
  ``check_supported`` asks Opacus's ``ModuleValidator``);
* ``DPOptimizer`` clips every per-sample gradient to ``max_grad_norm`` (flat clipping), sums, adds
  N(0, (noise_multiplier * max_grad_norm)^2) noise from a second seeded generator, and divides by the expected
  batch size; the wrapped SGD (with momentum: post-processing) steps.

The mechanism of one round is ``Mechanism(noise_multiplier, sample_rate, steps, max_grad_norm, delta)``. Its epsilon
is Opacus's ``RDPAccountant`` over ``history = [(noise_multiplier, sample_rate, steps)]`` at ``delta``
(``epsilon_of``), the function the auditor calls on the mechanism a blob declares. With ``target_epsilon`` set, the
noise multiplier comes from Opacus's ``get_noise_multiplier(accountant="rdp")`` for that per-round target (a binary
search that lands at most ``epsilon_tolerance`` = 0.01 below the target).

On-chain units (contracts/PrivacyLedger.sol): epsilon in micro-units (1e-6, rounded up: never understated), delta
in atto-units (1e-18). The mechanism travels in the update's safetensors header under ``fedledger.dp`` (canonical
JSON), so the content hash committed on-chain commits to it.

    python -c "from trainer.privacy import *; print(epsilon_of(Mechanism(1.1, 0.35, 6, 1.0, 1e-5)))"
"""

from __future__ import annotations

import itertools
import json
import math
import warnings
from dataclasses import dataclass
from importlib.metadata import version

import opacus
import torch
from opacus import GradSampleModule
from opacus.accountants import RDPAccountant
from opacus.accountants.utils import get_noise_multiplier
from opacus.data_loader import DPDataLoader
from opacus.optimizers import DPOptimizer
from opacus.validators import ModuleValidator
from torch import nn
from torch.utils.data import TensorDataset

from trainer.errors import TrainerError
from trainer.local import LocalConfig
from trainer.model import ModelSpec, Params, load_into

METADATA_KEY = "fedledger.dp"
ACCOUNTANT = "rdp"
EPSILON_ONE = 1_000_000  # on-chain epsilon unit: 1e-6
DELTA_ONE = 10**18  # on-chain delta unit: 1e-18
# The auditor's tolerance between a committed epsilon and the one the declared mechanism recomputes: the committed
# value is ceil(eps * 1e6); we allow one micro-unit plus 1e-6 relative for a float difference of another libm.
EPSILON_TOLERANCE_MICRO = 1
EPSILON_TOLERANCE_REL = 1e-6


class PrivacyError(TrainerError):
    """A privacy configuration or a declared mechanism is impossible or malformed."""


def opacus_version() -> str:
    return str(getattr(opacus, "__version__", None) or version("opacus"))


@dataclass(frozen=True)
class PrivacyConfig:
    target_epsilon: float | None = None  # per round; the noise multiplier is solved for it (get_noise_multiplier)
    noise_multiplier: float | None = None  # or give sigma directly (exactly one of the two)
    delta: float = 1e-5  # per round; below 1/n for the few hundred samples a participant holds
    max_grad_norm: float = 1.0  # per-sample L2 clip C; noise std is noise_multiplier * C

    def __post_init__(self) -> None:
        if (self.target_epsilon is None) == (self.noise_multiplier is None):
            raise PrivacyError("give exactly one of target_epsilon and noise_multiplier")
        if self.target_epsilon is not None and not (math.isfinite(self.target_epsilon) and self.target_epsilon > 0):
            raise PrivacyError(f"target epsilon must be positive and finite, got {self.target_epsilon}")
        if self.noise_multiplier is not None and not (math.isfinite(self.noise_multiplier) and self.noise_multiplier > 0):
            raise PrivacyError(f"noise multiplier must be positive and finite, got {self.noise_multiplier}")
        if not 0 < self.delta < 1:
            raise PrivacyError(f"delta must be in (0, 1), got {self.delta}")
        if not (math.isfinite(self.max_grad_norm) and self.max_grad_norm > 0):
            raise PrivacyError(f"max_grad_norm must be positive, got {self.max_grad_norm}")


@dataclass(frozen=True)
class Mechanism:
    """What one participant's round of DP-SGD was: the parameters the accountant needs, and the clip."""

    noise_multiplier: float
    sample_rate: float
    steps: int
    max_grad_norm: float
    delta: float
    accountant: str = ACCOUNTANT
    opacus: str = ""

    @property
    def epsilon(self) -> float:
        return epsilon_of(self)

    @property
    def epsilon_micro(self) -> int:
        return epsilon_to_micro(self.epsilon)

    @property
    def delta_atto(self) -> int:
        return delta_to_atto(self.delta)

    def to_metadata(self) -> dict[str, str]:
        doc = {
            "accountant": self.accountant,
            "delta": repr(float(self.delta)),
            "max_grad_norm": repr(float(self.max_grad_norm)),
            "noise_multiplier": repr(float(self.noise_multiplier)),
            "opacus": self.opacus or opacus_version(),
            "sample_rate": repr(float(self.sample_rate)),
            "steps": int(self.steps),
        }
        return {METADATA_KEY: json.dumps(doc, sort_keys=True, separators=(",", ":"))}

    @classmethod
    def from_metadata(cls, metadata: dict[str, str] | None) -> Mechanism | None:
        """The mechanism a blob declares, or None for a non-private update. Raises PrivacyError when malformed."""
        if not metadata or METADATA_KEY not in metadata:
            return None
        try:
            doc = json.loads(metadata[METADATA_KEY])
            mech = cls(
                noise_multiplier=float(doc["noise_multiplier"]),
                sample_rate=float(doc["sample_rate"]),
                steps=int(doc["steps"]),
                max_grad_norm=float(doc["max_grad_norm"]),
                delta=float(doc["delta"]),
                accountant=str(doc["accountant"]),
                opacus=str(doc["opacus"]),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise PrivacyError(f"malformed {METADATA_KEY} metadata: {exc}") from exc
        mech.validate()
        return mech

    def validate(self) -> None:
        if self.accountant != ACCOUNTANT:
            raise PrivacyError(f"accountant {self.accountant!r} is not supported (only {ACCOUNTANT!r})")
        if not (math.isfinite(self.noise_multiplier) and self.noise_multiplier > 0):
            raise PrivacyError(f"noise multiplier must be positive, got {self.noise_multiplier}")
        if not 0 < self.sample_rate <= 1:
            raise PrivacyError(f"sample rate must be in (0, 1], got {self.sample_rate}")
        if self.steps < 1:
            raise PrivacyError(f"steps must be at least 1, got {self.steps}")
        if not 0 < self.delta < 1:
            raise PrivacyError(f"delta must be in (0, 1), got {self.delta}")
        if not (math.isfinite(self.max_grad_norm) and self.max_grad_norm > 0):
            raise PrivacyError(f"max_grad_norm must be positive, got {self.max_grad_norm}")


def epsilon_to_micro(epsilon: float) -> int:
    return int(math.ceil(epsilon * EPSILON_ONE - 1e-9))  # up: a committed epsilon never understates the mechanism


def delta_to_atto(delta: float) -> int:
    return int(round(delta * DELTA_ONE))


def epsilon_of(mech: Mechanism) -> float:
    """Opacus's RDP accountant on one round: ``steps`` compositions of the sampled Gaussian mechanism at ``delta``."""
    mech.validate()
    return rdp_epsilon([(mech.noise_multiplier, mech.sample_rate, mech.steps)], mech.delta)


def rdp_epsilon(history: list[tuple[float, float, int]], delta: float) -> float:
    """Epsilon of a composition of (noise_multiplier, sample_rate, steps) segments, RDP-composed (Opacus)."""
    accountant = RDPAccountant()
    accountant.history = list(history)
    with warnings.catch_warnings():  # "optimal order is the largest alpha": the bound is valid, only not tightest
        warnings.simplefilter("ignore", UserWarning)
        return float(accountant.get_epsilon(delta))


def rdp_composed_epsilon(mechanisms: list[Mechanism], delta: float) -> float:
    """The tighter total of several rounds: all rounds' steps composed in RDP, converted once at ``delta``
    (the auditor reports it beside the on-chain basic-composition sum)."""
    return rdp_epsilon([(m.noise_multiplier, m.sample_rate, m.steps) for m in mechanisms], delta)


def within_tolerance(committed_micro: int, mech: Mechanism) -> tuple[bool, float]:
    """Whether a committed epsilon (micro-units) is the one ``mech`` recomputes; returns (ok, recomputed epsilon)."""
    eps = epsilon_of(mech)
    slack = EPSILON_TOLERANCE_MICRO + EPSILON_TOLERANCE_REL * eps * EPSILON_ONE
    return abs(committed_micro - eps * EPSILON_ONE) <= slack, eps


def check_supported(spec: ModelSpec) -> None:
    """Raise PrivacyError if Opacus cannot compute per-sample gradients of the model's layers."""
    errors = ModuleValidator.validate(spec.build(), strict=False)
    if errors:
        raise PrivacyError(f"Opacus cannot privatize this model: {errors}")


def plan(cfg: PrivacyConfig, n: int, local: LocalConfig) -> Mechanism:
    """The mechanism a round of ``local`` training on ``n`` samples runs under ``cfg``: Poisson sample rate
    batch_size / n; ``local.steps`` steps when set, else ``epochs * int(1 / sample_rate)`` (Opacus's DPDataLoader
    length per epoch) capped at ``local.max_steps``; sigma given or solved."""
    if n < 1:
        raise PrivacyError("no training samples")
    sample_rate = min(1.0, local.batch_size / n)
    steps = local.steps if local.steps is not None else local.cap(local.epochs * int(1 / sample_rate))
    if cfg.noise_multiplier is not None:
        sigma = float(cfg.noise_multiplier)
    else:
        assert cfg.target_epsilon is not None  # __post_init__ guarantees one of the two
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            sigma = float(get_noise_multiplier(
                target_epsilon=cfg.target_epsilon, target_delta=cfg.delta, sample_rate=sample_rate, steps=steps,
                accountant=ACCOUNTANT,
            ))
    return Mechanism(sigma, sample_rate, steps, cfg.max_grad_norm, cfg.delta, ACCOUNTANT, opacus_version())


def train_local_dp(
    spec: ModelSpec, base: Params, x: torch.Tensor, y: torch.Tensor, local: LocalConfig, privacy: PrivacyConfig,
    *, seed: int,
) -> tuple[Params, Mechanism]:
    """DP-SGD on (x, y) from ``base``; returns ``trained - base`` (float32, key order) and the mechanism it ran.

    Deterministic given ``seed``: the Poisson sampler and the noise draw from two generators seeded from it."""
    check_supported(spec)
    mech = plan(privacy, int(x.shape[0]), local)
    module = GradSampleModule(load_into(spec, base).train())
    opt = DPOptimizer(
        torch.optim.SGD(module.parameters(), lr=local.lr, momentum=local.momentum),
        noise_multiplier=mech.noise_multiplier,
        max_grad_norm=mech.max_grad_norm,
        expected_batch_size=max(1, round(mech.sample_rate * x.shape[0])),
        generator=torch.Generator().manual_seed(seed * 2 + 1),
    )
    loader = DPDataLoader(
        TensorDataset(x, y), sample_rate=mech.sample_rate, generator=torch.Generator().manual_seed(seed * 2)
    )
    loss_fn = nn.CrossEntropyLoss()
    steps = 0
    while steps < mech.steps:  # passes over the Poisson loader until the declared number of steps
        for xb, yb in itertools.islice(loader, mech.steps - steps):
            opt.zero_grad()
            if len(xb) > 0:
                with warnings.catch_warnings():  # Opacus's hooks on a model whose inputs need no gradient: harmless
                    warnings.filterwarnings("ignore", message="Full backward hook is firing")
                    loss_fn(module(xb), yb).backward()
            else:  # an empty Poisson batch: no gradient, but the step still adds noise (as the analysis assumes)
                for p in module.parameters():
                    p.grad_sample = torch.zeros((0, *p.shape))
            opt.step()
            steps += 1
    if steps != mech.steps:
        raise PrivacyError(f"ran {steps} DP-SGD steps, the mechanism declares {mech.steps}")
    trained = module._module.state_dict()
    return {k: (trained[k].detach().to(torch.float32) - base[k]).contiguous() for k in sorted(base)}, mech
