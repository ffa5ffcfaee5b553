"""Canonical serialization and the validation every update goes through (no pickle, ever)."""

from __future__ import annotations

import io
import json
import struct

import pytest
import torch
from safetensors.torch import save

from trainer.errors import UpdateRejected
from trainer.rules import Status
from trainer.serialization import content_hash, deserialize, serialize

SHAPES = {"layer.bias": (3,), "layer.weight": (3, 2)}


def good() -> dict[str, torch.Tensor]:
    return {"layer.weight": torch.arange(6, dtype=torch.float32).reshape(3, 2), "layer.bias": torch.ones(3)}


def test_serialization_is_canonical_whatever_the_insertion_order_or_memory_layout() -> None:
    strided = torch.arange(6, dtype=torch.float32).reshape(2, 3).t()  # (3, 2), not contiguous
    assert not strided.is_contiguous()
    a = {"layer.weight": strided.contiguous(), "layer.bias": torch.ones(3)}
    b = {"layer.bias": torch.ones(3), "layer.weight": strided}
    assert serialize(a) == serialize(b)
    assert content_hash(serialize(a)) == content_hash(serialize(b))


def test_round_trip_preserves_every_bit() -> None:
    params = good()
    params["layer.weight"][0, 0] = -0.0
    out = deserialize(serialize(params), SHAPES)
    for k in SHAPES:
        assert torch.equal(out[k], params[k])
        assert out[k].view(torch.int32).tolist() == params[k].view(torch.int32).tolist()


def rejected(data: bytes) -> UpdateRejected:
    with pytest.raises(UpdateRejected) as info:
        deserialize(data, SHAPES)
    return info.value


def test_wrong_shape_is_rejected_with_the_offending_tensor() -> None:
    bad = good()
    bad["layer.weight"] = torch.zeros(2, 3)
    err = rejected(serialize(bad))
    assert err.status == Status.WRONG_SHAPE
    assert "layer.weight" in err.detail and "(2, 3)" in err.detail


def test_wrong_dtype_is_rejected() -> None:
    bad = {k: v.to(torch.float64) for k, v in good().items()}
    err = rejected(bytes(save(bad)))
    assert err.status == Status.BAD_FORMAT
    assert "float64" in err.detail


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_values_are_rejected(value: float) -> None:
    bad = good()
    bad["layer.bias"][1] = value
    assert rejected(serialize(bad)).status == Status.NON_FINITE


def test_missing_and_extra_tensors_are_rejected() -> None:
    extra = good() | {"evil": torch.zeros(1)}
    assert "unexpected ['evil']" in rejected(serialize(extra)).detail
    missing = {"layer.weight": good()["layer.weight"]}
    assert "missing ['layer.bias']" in rejected(serialize(missing)).detail


def test_pickled_tensors_are_refused_not_loaded() -> None:
    buf = io.BytesIO()
    torch.save(good(), buf)
    assert rejected(buf.getvalue()).status == Status.BAD_FORMAT


@pytest.mark.parametrize(
    "data",
    [b"", b"\x00" * 4, struct.pack("<Q", 10**9) + b"{}", struct.pack("<Q", 2) + b"no", b"\xff" * 64],
)
def test_junk_bytes_are_rejected_as_bad_format(data: bytes) -> None:
    assert rejected(data).status == Status.BAD_FORMAT


def test_a_header_lying_about_offsets_is_rejected() -> None:
    header = json.dumps({"layer.bias": {"dtype": "F32", "shape": [3], "data_offsets": [0, 400]}}).encode()
    data = struct.pack("<Q", len(header)) + header + b"\x00" * 12
    assert rejected(data).status == Status.BAD_FORMAT
