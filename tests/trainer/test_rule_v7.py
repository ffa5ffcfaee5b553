"""Rule v7 (trainer/rules.py, trainer/aggregation.py): version 6 whose reference median and typical norm count each
redundancy group's stake as its votes. The weighted median is the median of the multiset in which each update
appears as many times as it has votes, bit for bit in the fast, reference and streamed paths; equal stakes give
version 6's round exactly; one identity's stake votes as much as the same stake split across identities."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from tests.trainer.test_streaming import nasty_stack
from trainer import aggregation as agg
from trainer.aggregation import ReferenceSource, RoundOutcome, StackSource, Submission, evaluate_round
from trainer.errors import RuleError
from trainer.rules import RuleConfig
from trainer.serialization import serialize
from trainer.streaming import BlobSubmission, evaluate_round_streamed

UNIT = 10**18


def test_version_7_document_round_trips_and_only_it_votes_by_stake() -> None:
    v7 = RuleConfig.version7()
    assert v7.stake_votes and v7.stake_weighted and v7.groups_redundant
    assert not RuleConfig.version6().stake_votes and not RuleConfig().stake_votes
    assert not RuleConfig.version7(aggregator="fedavg").stake_votes
    doc7, doc6 = v7.to_document(), RuleConfig.version6().to_document()
    assert {k: v for k, v in doc7.items() if k not in ("version", "formulas")} == {
        k: v for k, v in doc6.items() if k not in ("version", "formulas")}
    assert RuleConfig.from_bytes(v7.canonical_bytes()) == v7
    with pytest.raises(RuleError, match="unknown rule version 9"):
        RuleConfig(version=9)


@pytest.mark.parametrize("n", [1, 2, 3, 4, 7, 12])
def test_the_weighted_median_is_the_median_of_the_repeated_rows_bit_for_bit(n: int) -> None:
    rng = np.random.default_rng(n)
    for trial in range(6):
        stack = nasty_stack(rng, n, 333)
        stack[:, 40:60] = np.round(stack[:, 40:60])  # many ties, zeros of both signs among them
        votes = rng.integers(1, 6, n) if trial else np.ones(n, dtype=np.int64) * 3
        fast = np.empty(stack.shape[1], dtype=np.float32)
        agg.weighted_median_into(stack, votes.astype(np.int64), fast)
        reference = agg._reference_weighted_median(torch.from_numpy(stack), votes.tolist()).numpy()
        assert fast.tobytes() == reference.tobytes()
        repeated = agg._reference_median(torch.from_numpy(np.repeat(stack, votes, axis=0))).numpy()
        assert np.array_equal(fast, repeated)  # the same values (a zero's sign is the sort's choice there)


def test_votes_are_stakes_in_lowest_terms_and_none_when_all_equal() -> None:
    assert agg.median_votes([UNIT] * 4) is None
    assert agg.median_votes([0, 0, 0]) is None
    assert agg.median_votes([UNIT, 3 * UNIT, UNIT]) == [1, 3, 1]
    assert agg.median_votes([2 * UNIT, 6 * UNIT, 0]) == [1, 3, 0]
    huge = agg.median_votes([1, 10**40, 10**40 + 7])
    assert huge is not None and huge[0] == 0 and sum(huge) <= agg.VOTE_SCALE
    with pytest.raises(RuleError, match="stakes cannot be negative"):
        agg.median_votes([1, -1])
    assert agg.weighted_median_f64([1.0, 2.0, 3.0, 10.0], [1, 1, 1, 4]) == 10.0
    assert agg.weighted_median_f64([1.0, 2.0, 3.0, 10.0], [1, 1, 1, 3]) == 6.5
    assert agg.weighted_median_f64([1.0, 2.0, 3.0, 10.0], None) == 2.5


def _round(seed: int, n: int = 9) -> tuple[dict[str, torch.Tensor], list[Submission]]:
    rng = np.random.default_rng(seed)
    base = {"w": torch.zeros(4, 30), "b": torch.zeros(4)}
    direction = rng.standard_normal(124)
    subs = []
    for i in range(n):
        flat = direction + (0.3 + 0.2 * i) * rng.standard_normal(124)
        t = torch.from_numpy(flat.astype(np.float32))
        subs.append(Submission(f"0x{i + 1:040x}", serialize({"w": t[:120].reshape(4, 30), "b": t[120:]})))
    return base, subs


def test_equal_stakes_judge_and_aggregate_exactly_as_version_6_and_unequal_ones_move_the_reference() -> None:
    base, subs = _round(7)
    equal = {s.participant: UNIT for s in subs}
    out6 = evaluate_round(base, subs, RuleConfig.version6())
    out7 = evaluate_round(base, subs, RuleConfig.version7(), stakes=equal)
    assert out7.verdicts == out6.verdicts
    assert all(torch.equal(out7.new_params[k], out6.new_params[k]) for k in base)
    # the noisiest update (the last) holds most of the stake: the reference moves toward it, so it scores higher
    whale = {**equal, subs[-1].participant: 20 * UNIT}
    heavy = evaluate_round(base, subs, RuleConfig.version7(), stakes=whale)
    assert heavy.verdicts[-1].score > out6.verdicts[-1].score
    assert not all(torch.equal(heavy.new_params[k], out6.new_params[k]) for k in base)
    with pytest.raises(RuleError, match="weighs the median by stake: the round's stakes are missing"):
        evaluate_round(base, subs, RuleConfig.version7())


def three_paths_agree(base: dict[str, torch.Tensor], subs: list[Submission], rule: RuleConfig,
                      stakes: dict[str, int], tmp_path: Path) -> RoundOutcome:
    """The round in memory (fast path), by the torch reference definitions and streamed from files in column blocks:
    the same verdicts and the same new model bit for bit. Returns the fast path's outcome."""
    fast = evaluate_round(base, subs, rule, stakes=stakes)
    ref = evaluate_round(base, subs, rule, stakes=stakes, source=ReferenceSource)
    blobs = []
    for s in subs:
        path = tmp_path / f"{s.participant}.safetensors"
        path.write_bytes(s.payload or b"")
        blobs.append(BlobSubmission(s.participant, path))
    streamed = evaluate_round_streamed(base, blobs, rule, stakes=stakes, block_cols=17, workers=2)
    for other in (ref, streamed):
        assert other.verdicts == fast.verdicts
        assert all(torch.equal(other.new_params[k], fast.new_params[k]) for k in base)
    return fast


def test_fast_reference_and_streamed_paths_agree_bit_for_bit_with_stakes(tmp_path: Path) -> None:
    base, subs = _round(8, n=11)
    stakes = {s.participant: (i % 4) * UNIT for i, s in enumerate(subs)}  # three identities without stake
    fast = three_paths_agree(base, subs, RuleConfig.version7(), stakes, tmp_path)
    assert fast.verdicts != evaluate_round(base, subs, RuleConfig.version6()).verdicts


def test_one_identity_votes_what_the_same_stake_split_across_identical_voters_votes() -> None:
    """A leader with 3 units of stake moves the reference exactly as three leaders with its update and one unit each
    would (the multiset definition), and a leader without stake does not vote at all."""
    rng = np.random.default_rng(3)
    u = rng.standard_normal((5, 64)).astype(np.float32)
    src = StackSource(u)
    one, _, _ = src.median_pass([0, 1, 2, 3, 4], votes=[3, 1, 1, 1, 1])
    split, _, _ = StackSource(np.concatenate([u[:1], u[:1], u])).median_pass(list(range(7)))
    assert one.tobytes() == split.tobytes()
    silent, _, _ = src.median_pass([1, 2, 3, 4], [0, 1, 2, 3, 4], votes=[1, 1, 1, 1])
    assert silent.tobytes() == StackSource(u[1:]).median_pass([0, 1, 2, 3])[0].tobytes()


def test_copies_add_no_votes_a_group_votes_its_largest_stake() -> None:
    """Three wallets resending update 0 (one unit each) join its group; the group votes update 0's 5 units, so
    everyone else is judged exactly as without the copies (summing the group's stakes would give it 8 votes)."""
    base, subs = _round(9)
    whale = {s.participant: UNIT for s in subs} | {subs[0].participant: 5 * UNIT}
    alone = evaluate_round(base, subs, RuleConfig.version7(), stakes=whale)
    copies = [Submission(f"0x{0xf0 + k:040x}", subs[0].payload) for k in range(3)]
    with_copies = evaluate_round(base, [*subs, *copies], RuleConfig.version7(),
                                 stakes=whale | {c.participant: UNIT for c in copies})
    by_name = {v.participant: v for v in with_copies.verdicts}
    assert all(by_name[v.participant] == v for v in alone.verdicts[1:])
    assert [by_name[c.participant].status for c in copies] == [alone.verdicts[0].status] * 3
    assert by_name[subs[0].participant].score * 4 == pytest.approx(alone.verdicts[0].score, abs=4)  # shared by 4
    summed = whale | {subs[0].participant: 8 * UNIT}
    assert evaluate_round(base, subs, RuleConfig.version7(), stakes=summed).verdicts[1:] != alone.verdicts[1:]
