"""Rule v3 (trainer/rules.py): the reputation gate of the reference median and the trust-weighted aggregate; bit for
bit the same in memory, streamed from files and with the original (slow) definitions; v1/v2 documents unchanged."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from trainer import aggregation as agg
from trainer.aggregation import Submission, evaluate_round
from trainer.errors import RuleError
from trainer.rules import PPM, RuleConfig, Status
from trainer.serialization import serialize
from trainer.streaming import BlobSubmission, evaluate_round_streamed, stream_rule


def names(n: int) -> list[str]:
    return [f"0x{i + 1:040x}" for i in range(n)]


def federation(n: int, d: int, *, attackers: int, seed: int) -> np.ndarray:
    """Honest rows around one direction; the first ``attackers`` rows point the other way (but not so far that the
    cosine test alone rejects them: they are near-orthogonal)."""
    rng = np.random.default_rng(seed)
    direction = rng.standard_normal(d).astype(np.float32)
    rows = np.stack([direction + rng.standard_normal(d).astype(np.float32) * np.float32(1.5) for _ in range(n)])
    for i in range(attackers):
        rows[i] = rng.standard_normal(d).astype(np.float32) * np.float32(2.0) - direction * np.float32(0.05)
    return np.ascontiguousarray(rows * np.float32(0.01), dtype=np.float32)


def round_files(tmp_path: Path, stack: np.ndarray, who: list[str]) -> tuple[list[Submission], list[BlobSubmission]]:
    """Each row as a blob in memory and on disk, by participant address."""
    subs, blobs = [], []
    for i, address in enumerate(who):
        data = serialize({"w": torch.from_numpy(stack[i].copy())})
        path = tmp_path / f"{i}.safetensors"
        path.write_bytes(data)
        subs.append(Submission(address, data))
        blobs.append(BlobSubmission(address, path))
    return subs, blobs


def bits(x: np.ndarray) -> bytes:
    return np.ascontiguousarray(x, dtype=np.float32).tobytes()


def test_the_gate_keeps_poorly_reputed_updates_out_of_the_reference() -> None:
    stack = federation(9, 500, attackers=3, seed=1)
    reputation = [10_000, 20_000, 30_000, *[600_000] * 6]
    rule = RuleConfig.version3()
    verdicts = agg.assess(agg.StackSource(stack), rule, reputation=reputation)
    # median_low of the reputations is 600,000; half of it is 300,000: the three attackers are out of the gate
    assert verdicts.reference_rows == [3, 4, 5, 6, 7, 8]
    assert bits(verdicts.median) == bits(np.median(stack[3:].astype(np.float32), axis=0).astype(np.float32))
    everyone = agg.assess(agg.StackSource(stack), rule, reputation=[600_000] * 9)
    assert everyone.reference_rows == list(range(9))
    assert agg.reference_gate([0, 1, 2, 3], [0, 0, 0, 0], rule) == [0, 1, 2, 3]  # nobody has a record: all of them


def test_trust_weights_are_the_documented_integers_normalised() -> None:
    rule = RuleConfig.version3()
    scores, rep = [400_000, -10_000, 200_000, 0], [500_000, 900_000, 1_000_000, 700_000]
    w = agg.trust_weights(scores, rep, rule)
    exact = [400_000 * 500_000**2, 0, 200_000 * 1_000_000**2, 0]
    assert w == [float(np.float32(x / sum(exact))) for x in exact]
    assert w[1] == 0.0 and w[3] == 0.0 and w[2] > w[0]
    assert agg.trust_weights([0, -5], [500_000, 500_000], rule) == [0.5, 0.5]  # nothing to trust: equal weights
    square = RuleConfig(score_weight_power=2, reputation_weight_power=0)
    assert agg.trust_weights([100, 300], [1, 999_999], square) == [float(np.float32(0.1)), float(np.float32(0.9))]


def test_weights_give_an_update_with_a_poor_record_little_influence() -> None:
    stack = federation(8, 400, attackers=0, seed=2)
    stack[0] = -stack[1:].mean(axis=0) * np.float32(0.02) + stack[0] * np.float32(0.5)  # weak, poorly aligned
    base = np.zeros(400, dtype=np.float32)
    good = [900_000] * 8
    poor = [20_000, *[900_000] * 7]
    _, new_good = agg.run_rule(agg.StackSource(stack), base, RuleConfig.version3(), reputation=good)
    verdicts, new_poor = agg.run_rule(agg.StackSource(stack), base, RuleConfig.version3(), reputation=poor)
    assert verdicts.statuses[0] == Status.ACCEPTED  # not rejected: it just weighs (almost) nothing
    weight0 = next(w for r, _, w in verdicts.keep if r == 0)
    assert weight0 < 1e-3
    honest_mean = stack[1:].mean(axis=0)
    assert np.linalg.norm(new_poor - honest_mean) < np.linalg.norm(new_good - honest_mean)


@pytest.mark.parametrize("block_cols", [None, 1000])
def test_v3_in_memory_streamed_and_original_are_bit_identical(tmp_path: Path, block_cols: int | None) -> None:
    n, d = 11, 5000
    stack = federation(n, d, attackers=3, seed=3)
    stack[10] = stack[6]  # a copy: its group's representative carries the weight
    step = stack[7].copy()  # update 7 resends the previous global step (a free-rider)
    reputation = [5_000, 400_000, 15_000, 700_000, 650_000, 300_000, 800_000, 500_000, 900_000, 550_000, 100_000]
    base = np.random.default_rng(4).standard_normal(d).astype(np.float32)
    rule = RuleConfig.version3()

    def read(i: int, s: int, e: int) -> np.ndarray:
        return stack[i, s:e].copy()

    streamed = stream_rule(n, d, read, base, rule, step=step, reputation=reputation, block_cols=block_cols, workers=2)
    in_memory, new = agg.run_rule(agg.StackSource(stack), base, rule, step, reputation=reputation)
    original, original_new = agg.run_rule(agg.ReferenceSource(stack), base, rule, step, reputation=reputation)
    # representatives (not 7, a free-rider, nor 10, a copy): median_low of their reputations is 550,000, the gate
    # 275,000: rows 0 and 2 are out
    assert in_memory.reference_rows == [1, 3, 4, 5, 6, 8, 9]
    assert in_memory.statuses[7] == Status.FREE_RIDE and in_memory.group[10] == 6
    for result in (in_memory, original):
        assert bits(streamed.median) == bits(result.median)
        assert streamed.assessment.fixed == result.fixed and streamed.assessment.statuses == result.statuses
        assert streamed.assessment.keep == result.keep
    assert bits(streamed.new_flat) == bits(new) == bits(original_new)
    assert len({w for _, _, w in in_memory.keep}) > 1  # really weighted

    # the same round from blobs on disk, by participant address, with the reputation as a mapping
    who = names(n)
    shapes = {"w": (d,)}
    base_p = {"w": torch.from_numpy(base)}
    previous = {"w": torch.from_numpy(base - step)}
    subs, blobs = round_files(tmp_path, stack, who)
    by_address = dict(zip(who, reputation, strict=True))
    a = evaluate_round(base_p, subs, rule, previous, reputation=by_address)
    b = evaluate_round_streamed(base_p, blobs, rule, previous, reputation=by_address, block_cols=block_cols)
    c = evaluate_round(base_p, subs, rule, previous, reputation=by_address, source=agg.ReferenceSource)
    assert [(v.participant, v.status, v.score) for v in a.verdicts] == [
        (v.participant, v.status, v.score) for v in b.verdicts] == [(v.participant, v.status, v.score) for v in c.verdicts]
    assert serialize(a.new_params) == serialize(b.new_params) == serialize(c.new_params)
    assert shapes == {k: tuple(v.shape) for k, v in a.new_params.items()}


def test_a_participant_without_a_record_has_the_initial_reputation() -> None:
    stack = federation(6, 300, attackers=0, seed=5)
    subs = [Submission(p, serialize({"w": torch.from_numpy(stack[i].copy())})) for i, p in enumerate(names(6))]
    base = {"w": torch.zeros(300)}
    none = evaluate_round(base, subs, RuleConfig.version3())
    initial = evaluate_round(base, subs, RuleConfig.version3(), reputation={names(6)[0]: 500_000})
    assert serialize(none.new_params) == serialize(initial.new_params)
    other = evaluate_round(base, subs, RuleConfig.version3(), reputation={names(6)[0]: 5_000})
    assert serialize(other.new_params) != serialize(initial.new_params)
    with pytest.raises(RuleError, match="2 reputations for 6"):
        agg.assess(agg.StackSource(stack), RuleConfig.version3(), reputation=[1, 2])


def test_version_2_rounds_keep_equal_weights_and_their_document() -> None:
    stack = federation(7, 300, attackers=2, seed=6)
    base = np.zeros(300, dtype=np.float32)
    v2 = RuleConfig.version2()
    doc = json.loads(v2.canonical_bytes())
    assert doc["version"] == 2 and not {"reference_gate_ppm", "score_weight_power"} & doc.keys()
    assert RuleConfig.from_bytes(v2.canonical_bytes()) == v2 and not v2.weighted
    poor = [1, 1, *[900_000] * 5]
    a, new_a = agg.run_rule(agg.StackSource(stack), base, v2, reputation=poor)
    b, new_b = agg.run_rule(agg.StackSource(stack), base, v2)
    assert bits(new_a) == bits(new_b) and a.reference_rows == list(range(7))
    assert all(w == 1.0 for _, _, w in a.keep)
    v3 = json.loads(RuleConfig.version3().canonical_bytes())
    assert not {"redundancy_ratio", "redundancy_share", "redundancy_min_third_parties"} & v3.keys()
    assert v3["version"] == 3 and v3["reference_gate_ppm"] == PPM // 2 and v3["reputation_weight_power"] == 2
    doc["reference_gate_ppm"] = 1
    with pytest.raises(RuleError, match="version 2 has no"):
        RuleConfig.from_bytes(json.dumps(doc).encode())
    with pytest.raises(RuleError, match="reference_gate_ppm"):
        RuleConfig(reference_gate_ppm=PPM + 1)
