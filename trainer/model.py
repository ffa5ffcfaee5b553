"""A small MLP and its parameters as a flat, named, float32 state.

The global model is a ``Params`` mapping (name -> float32 tensor) in sorted key order; that is what gets
serialized, hashed, committed and aggregated.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

Params = dict[str, torch.Tensor]


@dataclass(frozen=True)
class ModelSpec:
    num_features: int
    num_classes: int
    hidden: int = 64  # one hidden layer is plenty for 8x8 digits / 30 breast-cancer features

    def build(self) -> nn.Module:
        return nn.Sequential(
            nn.Linear(self.num_features, self.hidden), nn.ReLU(), nn.Linear(self.hidden, self.num_classes)
        )

    def shapes(self) -> dict[str, tuple[int, ...]]:
        return {k: tuple(v.shape) for k, v in sorted(self.build().state_dict().items())}

    def num_parameters(self) -> int:
        total = 0
        for shape in self.shapes().values():
            n = 1
            for s in shape:
                n *= s
            total += n
        return total


def init_params(spec: ModelSpec, seed: int) -> Params:
    gen_state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        module = spec.build()
    finally:
        torch.random.set_rng_state(gen_state)
    return {k: v.detach().to(torch.float32).contiguous().clone() for k, v in sorted(module.state_dict().items())}


def load_into(spec: ModelSpec, params: Params) -> nn.Module:
    module = spec.build()
    module.load_state_dict(params)
    return module


@torch.no_grad()
def accuracy(spec: ModelSpec, params: Params, x: torch.Tensor, y: torch.Tensor) -> float:
    module = load_into(spec, params).eval()
    return float((module(x).argmax(dim=1) == y).float().mean())
