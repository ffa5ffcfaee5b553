"""Flower's ArrayRecord <-> the platform's float32 parameters in key order (what gets serialized and hashed)."""

from __future__ import annotations

import torch
from flwr.app import ArrayRecord

from trainer.model import Params


def params_of(arrays: ArrayRecord) -> Params:
    state = arrays.to_torch_state_dict()
    return {k: state[k].detach().to(torch.float32).contiguous() for k in sorted(state)}


def arrays_of(params: Params) -> ArrayRecord:
    return ArrayRecord({k: params[k] for k in sorted(params)})
