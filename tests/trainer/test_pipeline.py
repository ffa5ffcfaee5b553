"""Bad input inside a round is recorded as a rejection with a reason, and the round goes on."""

from __future__ import annotations

import torch

from trainer.aggregation import Submission, evaluate_round
from trainer.rules import RuleConfig, Status
from trainer.serialization import serialize

SHAPES = {"w": (4, 3), "b": (4,)}


def update(seed: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {k: torch.ones(s) + 0.1 * torch.randn(s, generator=gen) for k, s in SHAPES.items()}


def test_each_kind_of_bad_update_gets_its_reason_and_the_good_ones_are_aggregated() -> None:
    base = {k: torch.zeros(s) for k, s in SHAPES.items()}
    nan = update(1)
    nan["w"][0, 0] = float("nan")
    wrong_shape = update(2) | {"b": torch.zeros(5)}
    good = [Submission(f"0x{i:040x}", serialize(update(10 + i))) for i in range(1, 5)]
    bad = [
        Submission("0x" + "a" * 40, serialize(nan)),
        Submission("0x" + "b" * 40, serialize(wrong_shape)),
        Submission("0x" + "c" * 40, None, Status.HASH_MISMATCH, "blob hashes to 0x12, committed 0x34"),
        Submission("0x" + "d" * 40, None, Status.UNAVAILABLE, "no blob at fedblob:sha256:00"),
        Submission("0x" + "e" * 40, b"definitely not safetensors"),
    ]
    out = evaluate_round(base, good + bad, RuleConfig())
    status = {v.participant: v.status for v in out.verdicts}
    assert status["0x" + "a" * 40] == Status.NON_FINITE
    assert status["0x" + "b" * 40] == Status.WRONG_SHAPE
    assert status["0x" + "c" * 40] == Status.HASH_MISMATCH
    assert status["0x" + "d" * 40] == Status.UNAVAILABLE
    assert status["0x" + "e" * 40] == Status.BAD_FORMAT
    assert sorted(out.accepted) == sorted(s.participant for s in good)
    assert [v.participant for v in out.verdicts] == sorted(status)
    assert all(v.detail for v in out.verdicts if v.status != Status.ACCEPTED)
    assert all(v.score == 0 for v in out.verdicts if v.status.is_validity_failure)
    only_good = evaluate_round(base, good, RuleConfig())
    for k in SHAPES:
        assert torch.equal(out.new_params[k], only_good.new_params[k])


def test_a_round_with_no_valid_update_keeps_the_base_model() -> None:
    base = {k: torch.full(s, 2.0) for k, s in SHAPES.items()}
    out = evaluate_round(base, [Submission("0x" + "1" * 40, b"junk")], RuleConfig())
    assert out.accepted == []
    for k in SHAPES:
        assert torch.equal(out.new_params[k], base[k])
