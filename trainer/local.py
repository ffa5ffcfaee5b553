"""Local training on a participant's private data; the output is an update (delta), never the data."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from trainer.model import ModelSpec, Params, load_into


@dataclass(frozen=True)
class LocalConfig:
    epochs: int = 2  # few local epochs limit client drift under label skew
    batch_size: int = 32
    lr: float = 0.05
    momentum: float = 0.9


def train_local(spec: ModelSpec, base: Params, x: torch.Tensor, y: torch.Tensor, cfg: LocalConfig, *, seed: int) -> Params:
    """SGD on (x, y) starting from ``base``; returns ``trained - base`` as float32 tensors in key order."""
    module = load_into(spec, base).train()
    opt = torch.optim.SGD(module.parameters(), lr=cfg.lr, momentum=cfg.momentum)
    loss_fn = nn.CrossEntropyLoss()
    gen = torch.Generator().manual_seed(seed)
    n = x.shape[0]
    for _ in range(cfg.epochs):
        order = torch.randperm(n, generator=gen)
        for start in range(0, n, cfg.batch_size):
            idx = order[start : start + cfg.batch_size]
            opt.zero_grad()
            loss_fn(module(x[idx]), y[idx]).backward()
            opt.step()
    trained = module.state_dict()
    return {k: (trained[k].detach().to(torch.float32) - base[k]).contiguous() for k in sorted(base)}
