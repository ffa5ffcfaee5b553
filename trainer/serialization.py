"""Canonical bytes for model states and updates: safetensors, float32, keys in sorted order, no metadata unless
given (a DP update declares its mechanism in the header, trainer/privacy.py: the content hash then commits to it).

The same tensors (and metadata) always give the same bytes, so ``content_hash(serialize(p))`` identifies a model or update.
Loading never unpickles: ``safetensors`` parses a JSON header and raw buffers only.
"""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Mapping

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from trainer.errors import UpdateRejected
from trainer.model import Params
from trainer.rules import Status


def serialize(params: Mapping[str, torch.Tensor], metadata: Mapping[str, str] | None = None) -> bytes:
    tensors = {k: params[k].detach().to(device="cpu", dtype=torch.float32).contiguous() for k in sorted(params)}
    return bytes(st_save(tensors, metadata=dict(metadata) if metadata else None))


def read_metadata(data: bytes) -> dict[str, str]:
    """The string metadata of a safetensors blob's header (``__metadata__``), empty when there is none."""
    _check_header(data)
    (header_len,) = struct.unpack("<Q", data[:8])
    meta = json.loads(data[8 : 8 + header_len]).get("__metadata__") or {}
    if not isinstance(meta, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in meta.items()):
        raise UpdateRejected(Status.BAD_FORMAT, "safetensors __metadata__ is not a string map")
    return dict(meta)


def content_hash(data: bytes) -> bytes:
    """sha256 of the canonical bytes: the 32-byte value committed on-chain."""
    return hashlib.sha256(data).digest()


def deserialize(data: bytes, shapes: Mapping[str, tuple[int, ...]] | None = None) -> Params:
    """Parse and validate an update/model blob against the expected names and shapes (or, with ``shapes=None``,
    take them from the blob itself: how a committed base model defines what its updates must look like).

    Raises ``UpdateRejected`` with a status code: BAD_FORMAT (not safetensors, wrong dtype, extra or missing
    tensors), WRONG_SHAPE, NON_FINITE (NaN or Inf anywhere).
    """
    _check_header(data)
    try:
        tensors = st_load(data)
    except (SafetensorError, ValueError, RuntimeError) as exc:
        raise UpdateRejected(Status.BAD_FORMAT, f"not a readable safetensors blob: {exc}") from exc
    if shapes is None:
        shapes = {k: tuple(v.shape) for k, v in tensors.items()}
    if set(tensors) != set(shapes):
        missing = sorted(set(shapes) - set(tensors))
        extra = sorted(set(tensors) - set(shapes))
        raise UpdateRejected(Status.BAD_FORMAT, f"tensor names differ: missing {missing}, unexpected {extra}")
    out: Params = {}
    for name in sorted(shapes):
        t = tensors[name]
        if t.dtype != torch.float32:
            raise UpdateRejected(Status.BAD_FORMAT, f"{name}: dtype {t.dtype}, expected torch.float32")
        if tuple(t.shape) != tuple(shapes[name]):
            raise UpdateRejected(Status.WRONG_SHAPE, f"{name}: shape {tuple(t.shape)}, expected {tuple(shapes[name])}")
        if not bool(torch.isfinite(t).all()):
            bad = int((~torch.isfinite(t)).sum())
            raise UpdateRejected(Status.NON_FINITE, f"{name}: {bad} NaN/Inf values")
        out[name] = t
    return out


def _check_header(data: bytes) -> None:
    """Cheap structural check before handing bytes to the parser (clear reasons for junk input)."""
    if len(data) < 8:
        raise UpdateRejected(Status.BAD_FORMAT, f"blob of {len(data)} bytes is too short to be safetensors")
    (header_len,) = struct.unpack("<Q", data[:8])
    if header_len > len(data) - 8:
        raise UpdateRejected(Status.BAD_FORMAT, f"safetensors header length {header_len} exceeds blob size {len(data)}")
    try:
        json.loads(data[8 : 8 + header_len])
    except ValueError as exc:
        raise UpdateRejected(Status.BAD_FORMAT, f"safetensors header is not JSON: {exc}") from exc
