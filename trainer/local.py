"""Local training on a participant's private data; the output is an update (delta), never the data."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn

from trainer.errors import TrainerError
from trainer.model import ModelSpec, Params, load_into


@dataclass(frozen=True)
class LocalConfig:
    """How a participant trains each round.

    With ``steps`` set, a round is exactly that many SGD steps, however much data the participant holds: minibatches
    are cut from successive random permutations of its samples (an epoch ends with a short batch, as in ``epochs``
    mode) until ``steps`` batches are drawn. The update's length then does not grow with the data set, so a
    participant with much more data than the median is neither clipped nor rejected for it (the rule's norm bounds
    compare updates with each other). With ``steps=None`` a round is ``epochs`` passes, ``epochs * ceil(n / batch)``
    steps, or at most ``max_steps`` of them when that is set (a large data set is cut short, a small one keeps its
    passes)."""

    epochs: int = 2  # few local epochs limit client drift under label skew
    batch_size: int = 32
    lr: float = 0.05
    momentum: float = 0.9
    steps: int | None = None
    max_steps: int | None = None

    def __post_init__(self) -> None:
        if self.steps is not None and self.steps < 1:
            raise TrainerError(f"local steps must be at least 1, got {self.steps}")
        if self.max_steps is not None and (self.max_steps < 1 or self.steps is not None):
            raise TrainerError(f"max_steps caps epochs mode and must be at least 1, got {self.max_steps} "
                               f"(steps {self.steps})")
        if self.epochs < 1 or self.batch_size < 1:
            raise TrainerError(f"local epochs and batch size must be at least 1, got {self.epochs}, {self.batch_size}")

    @classmethod
    def from_option(cls, value: int | str | None) -> LocalConfig:
        """The ``--local-steps`` value: S (int), None (epochs) or ``"epochs:S"`` (epochs, at most S steps)."""
        if value is None or isinstance(value, int):
            return cls(steps=value)
        return cls(max_steps=int(str(value).removeprefix("epochs:")))

    def label(self) -> str:
        """``2 epochs``, ``6 steps`` or ``2 epochs, at most 6 steps``."""
        if self.steps is not None:
            return f"{self.steps} steps"
        return f"{self.epochs} epochs" + (f", at most {self.max_steps} steps" if self.max_steps is not None else "")

    def describe(self) -> str:
        """One line, as a summary or table shows it."""
        return f"{self.label()} of batch {self.batch_size}, SGD lr {self.lr:g} momentum {self.momentum:g}"

    def cap(self, steps: int) -> int:
        """An epochs-mode step count after ``max_steps``."""
        return steps if self.max_steps is None else min(steps, self.max_steps)

    def num_steps(self, n: int) -> int:
        """SGD steps a round takes on ``n`` samples."""
        return self.steps if self.steps is not None else self.cap(self.epochs * -(-n // self.batch_size))


def parse_local_steps(value: str) -> int | str | None:
    """``S`` -> S, ``epochs`` -> None, ``epochs:S`` -> ``"epochs:S"`` (see ``LocalConfig.from_option``)."""
    if value == "epochs":
        return None
    capped = value.startswith("epochs:")
    try:
        steps = int(value.removeprefix("epochs:"))
    except ValueError:
        raise ValueError(f"expected a number of steps, 'epochs' or 'epochs:S', got {value!r}") from None
    if steps < 1:
        raise ValueError(f"local steps must be at least 1, got {steps}")
    return f"epochs:{steps}" if capped else steps


def local_steps_type(value: str) -> int | str | None:
    """``parse_local_steps`` as an argparse ``type`` (a bad value is a usage error)."""
    try:
        return parse_local_steps(value)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def add_local_steps_argument(parser: argparse.ArgumentParser, *, nargs: str | None = None,
                             default: object = None) -> None:
    """``--local-steps S|epochs|epochs:S``: every participant trains S SGD steps a round, or (``epochs``) 2 epochs of
    its data, or (``epochs:S``) 2 epochs but at most S steps. ``default`` replaces the platform's default (e.g.
    ``argparse.SUPPRESS``: absent when not given)."""
    if default is None:
        default = LocalConfig.steps if nargs is None else [LocalConfig.steps]
    parser.add_argument("--local-steps", type=local_steps_type, nargs=nargs, default=default,
                        metavar="S|epochs|epochs:S",
                        help=f"SGD steps every participant trains a round; 'epochs' for {LocalConfig.epochs} epochs of "
                             f"its own data (the default); 'epochs:S' for {LocalConfig.epochs} epochs but at most S "
                             "steps")


def minibatches(n: int, cfg: LocalConfig, gen: torch.Generator) -> Iterator[torch.Tensor]:
    """The sample indices of each SGD step of a round on ``n`` samples (``cfg.num_steps(n)`` batches)."""
    if n < 1:  # no data, no steps: the update is zero
        return
    left = cfg.num_steps(n)
    while left:
        order = torch.randperm(n, generator=gen)
        for start in range(0, n, cfg.batch_size):
            yield order[start : start + cfg.batch_size]
            left -= 1
            if not left:
                return


def train_local(spec: ModelSpec, base: Params, x: torch.Tensor, y: torch.Tensor, cfg: LocalConfig, *, seed: int) -> Params:
    """SGD on (x, y) starting from ``base``; returns ``trained - base`` as float32 tensors in key order."""
    module = load_into(spec, base).train()
    opt = torch.optim.SGD(module.parameters(), lr=cfg.lr, momentum=cfg.momentum)
    loss_fn = nn.CrossEntropyLoss()
    gen = torch.Generator().manual_seed(seed)
    for idx in minibatches(x.shape[0], cfg, gen):
        opt.zero_grad()
        loss_fn(module(x[idx]), y[idx]).backward()
        opt.step()
    trained = module.state_dict()
    return {k: (trained[k].detach().to(torch.float32) - base[k]).contiguous() for k in sorted(base)}
