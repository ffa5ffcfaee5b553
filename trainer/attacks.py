"""Byzantine behaviours for the demo and benchmarks. Each maps an honest update to the one actually sent."""

from __future__ import annotations

from typing import Literal

import torch

from trainer.model import Params

AttackName = Literal["signflip", "noise"]
ATTACKS: tuple[AttackName, ...] = ("signflip", "noise")


def sign_flip(update: Params, scale: float = -4.0) -> Params:
    """Send ``scale * update`` (scale < 0): pushes the model away from where honest training leads."""
    return {k: (v * scale).contiguous() for k, v in update.items()}


def gaussian_noise(update: Params, *, std: float = 1.0, seed: int = 0) -> Params:
    """Replace the update by N(0, std^2) noise of the same shape."""
    gen = torch.Generator().manual_seed(seed)
    return {k: torch.randn(v.shape, generator=gen, dtype=torch.float32) * std for k, v in update.items()}


def apply_attack(name: str, update: Params, *, seed: int) -> Params:
    if name == "signflip":
        return sign_flip(update)
    if name == "noise":
        return gaussian_noise(update, seed=seed)
    raise ValueError(f"unknown attack {name!r}: choose one of {', '.join(ATTACKS)}")
