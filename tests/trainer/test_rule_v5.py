"""Rule v5 (trainer/rules.py): a small round takes the previous rounds' accepted updates as third parties of its
pair test, so copies perturbed by fresh noise share one score below 16 representatives too, while honest updates
whose differences only their own earlier updates show stay apart; large rounds are judged exactly as by v4; the
history rows are never scored or aggregated; in memory, streamed and the original definitions agree bit for bit."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.trainer.test_rule_v3 import bits, names, round_files
from tests.trainer.test_rule_v4 import honest, perturbed
from trainer import aggregation as agg
from trainer.aggregation import AcceptedHistory, Submission, evaluate_round
from trainer.errors import RuleError
from trainer.redundancy import history_room
from trainer.rules import RuleConfig, Status
from trainer.serialization import serialize
from trainer.streaming import evaluate_round_streamed

D = 600


def own_data_rounds(n: int, seed: int, rounds: int = 2) -> list[np.ndarray]:
    """``rounds`` rounds of n participants who each hold data of their own: a shared direction plus a private
    direction per participant (the same every round) and fresh SGD noise. Within one round the others' updates
    cannot show how two participants differ (their private directions are nobody else's); their earlier updates
    can."""
    rng = np.random.default_rng(seed)
    shared = rng.standard_normal(D)
    private = rng.standard_normal((n, D)) * 0.5
    out = []
    for r in range(rounds):
        rows = shared * (1.0 - 0.1 * r) + private + 0.1 * rng.standard_normal((n, D))
        out.append(np.ascontiguousarray(rows * 0.01, dtype=np.float32))
    return out


def history_of(*stacks: np.ndarray, rounds: int = 2) -> AcceptedHistory:
    past = AcceptedHistory(rounds)
    for stack in stacks:
        past.record(stack, [True] * len(stack))
    return past


def run(stack: np.ndarray, rule: RuleConfig, past: AcceptedHistory | None = None) -> agg.Assessment:
    return agg.assess(agg.StackSource(stack), rule, history=None if past is None else past.source())


def test_a_small_round_groups_perturbed_copies_once_earlier_rounds_are_third_parties() -> None:
    earlier, now = own_data_rounds(8, seed=1)
    copies = np.stack([perturbed(now[2], seed=s) for s in range(3)])
    stack = np.concatenate([now, copies])  # 11 representatives: version 4 runs no pair test below 16
    v5 = run(stack, RuleConfig(), history_of(earlier))
    assert [v5.group[i] for i in (2, 8, 9, 10)] == [2] * 4 and [v5.group_size[i] for i in (2, 8, 9, 10)] == [4] * 4
    assert all("and 8 accepted updates of earlier rounds" in v5.details[i] for i in (8, 9, 10))
    assert [v5.group_size[i] for i in range(8) if i != 2] == [1] * 7  # honest participants stay apart
    # without history (version 4, or round 1 of version 5) each copy is paid as an update of its own
    assert run(stack, RuleConfig.version4()).group_size == [1] * 11 == run(stack, RuleConfig()).group_size
    # the four wallets earn what the one update earns alone
    alone = run(np.ascontiguousarray(now), RuleConfig(), history_of(earlier))
    group = sum(v5.fixed[i] for i in (2, 8, 9, 10))
    assert abs(group - alone.fixed[2]) <= 0.05 * alone.fixed[2]


def test_the_round_alone_would_group_honest_participants_and_history_keeps_them_apart() -> None:
    """Why version 4 needs 14 third parties, and what earlier rounds add: run with a minimum of 4, the round's own
    updates cannot tell participants with private data from noisy copies of each other."""
    earlier, now = own_data_rounds(8, seed=2)
    without = run(now, RuleConfig.version4(redundancy_min_third_parties=4))
    assert without.group_size == [8] * 8  # honest pairs grouped: a false positive the default minimum prevents
    # version 5: 6 third parties in the round are too few, so the 8 earlier updates join them (14)
    with_history = run(now, RuleConfig(), history_of(earlier))
    assert with_history.group_size == [1] * 8
    assert with_history.fixed == run(now, RuleConfig.version3()).fixed


def test_large_rounds_never_ask_for_history_and_small_ones_ask_for_the_room_left() -> None:
    asked: list[tuple[int, int]] = []

    def history(columns: np.ndarray, limit: int) -> np.ndarray:
        asked.append((len(columns), limit))
        return np.zeros((0, len(columns)), dtype=np.float32)

    large = honest(16, D, seed=3)  # 16 representatives: version 4's test runs on the round alone
    agg.assess(agg.StackSource(large), RuleConfig(), history=history)
    assert asked == []
    agg.assess(agg.StackSource(large[:10]), RuleConfig(), history=history)
    assert asked == [(D, history_room(10, D, 4.0))] == [(D, 75 - 8)]  # 600 / (2 * 4) = 75 third parties at most
    agg.assess(agg.StackSource(large[:10]), RuleConfig.version4(), history=history)
    agg.assess(agg.StackSource(large[:10]), RuleConfig(redundancy_history_rounds=0), history=history)
    assert len(asked) == 1  # version 4, or version 5 without history rounds: never asked

    def too_many(columns: np.ndarray, limit: int) -> np.ndarray:
        return np.zeros((limit + 1, len(columns)), dtype=np.float32)

    with pytest.raises(RuleError, match="expected at most 67 rows of 600 columns"):
        agg.assess(agg.StackSource(large[:10]), RuleConfig(), history=too_many)
    with pytest.raises(RuleError, match="expected at most 67 rows of 600 columns"):
        agg.assess(agg.StackSource(large[:10]), RuleConfig(), history=lambda c, n: np.zeros((1, 7), np.float32))


def test_history_rows_are_third_parties_only_never_scored_or_aggregated() -> None:
    earlier, now = own_data_rounds(8, seed=4)
    base = {"w": torch.zeros(D)}
    subs = [Submission(p, serialize({"w": torch.from_numpy(row.copy())})) for p, row in zip(names(8), now)]
    asked = []

    def history(columns: np.ndarray, limit: int) -> np.ndarray:
        asked.append(limit)
        return history_of(earlier).rows(columns, limit)

    with_history = evaluate_round(base, subs, RuleConfig(), history=history)
    v4 = evaluate_round(base, subs, RuleConfig.version4())
    assert asked and [v.participant for v in with_history.verdicts] == names(8)
    assert with_history.verdicts == v4.verdicts  # nobody grouped: the same verdicts as the round alone
    assert bits(with_history.new_params["w"].numpy()) == bits(v4.new_params["w"].numpy())
    assert all(v.status == Status.ACCEPTED for v in v4.verdicts)


def test_in_memory_streamed_and_original_definitions_agree_with_history(tmp_path: Path) -> None:
    older, earlier, now = own_data_rounds(8, seed=5, rounds=3)
    stack = np.concatenate([now, np.stack([perturbed(now[5], seed=s, ratio=1.0) for s in range(2)])])
    who = names(len(stack))
    subs, blobs = round_files(tmp_path, stack, who)
    base, previous = {"w": torch.zeros(D)}, {"w": torch.full((D,), -0.001)}
    past = history_of(older, earlier)
    fast = evaluate_round(base, subs, RuleConfig(), previous, history=past.source())
    slow = evaluate_round(base, subs, RuleConfig(), previous, history=past.source(), source=agg.ReferenceSource)
    streamed = evaluate_round_streamed(base, blobs, RuleConfig(), previous, history=past.source(), block_cols=128)
    assert fast.verdicts == slow.verdicts == streamed.verdicts
    assert bits(fast.new_params["w"].numpy()) == bits(slow.new_params["w"].numpy()) == bits(
        streamed.new_params["w"].numpy())
    assert [v.group_size for v in fast.verdicts if v.participant in (who[5], who[8], who[9])] == [3] * 3


def test_accepted_history_keeps_the_newest_rounds_accepted_rows_newest_first() -> None:
    a, b, c = (np.full((3, 4), v, dtype=np.float32) for v in (1, 2, 3))
    past = AcceptedHistory(2)
    assert past.source() is None  # round 1: no history
    past.record(a, [True, True, True])
    past.record(b, [True, False, True])
    past.record(c, [False, True, False])
    rows = past.rows(np.array([0, 3]), 10)
    assert rows.tolist() == [[3, 3], [2, 2], [2, 2]]  # round 3's accepted row, then round 2's two; round 1 gone
    assert past.rows(np.array([1]), 2).tolist() == [[3], [2]]
    assert AcceptedHistory(0).source() is None


def test_v5_documents_add_the_history_parameter_and_v4_documents_stay_as_they_were() -> None:
    v5, v4 = RuleConfig(), RuleConfig.version4()
    doc5, doc4 = json.loads(v5.canonical_bytes()), json.loads(v4.canonical_bytes())
    assert doc5["version"] == 5 and doc5["redundancy_history_rounds"] == 2
    assert "redundancy_history_rounds" not in doc4 and doc4["version"] == 4
    assert RuleConfig.from_bytes(v5.canonical_bytes()) == v5 and RuleConfig.from_bytes(v4.canonical_bytes()) == v4
    assert v5.history_rounds == 2 and v4.history_rounds == 0 and RuleConfig.version3().history_rounds == 0
    doc4["redundancy_history_rounds"] = 1
    with pytest.raises(RuleError, match="version 4 has no"):
        RuleConfig.from_bytes(json.dumps(doc4).encode())
    for bad in ({"redundancy_history_rounds": -1}, {"redundancy_history_rounds": 9}, {"version": 9}):
        with pytest.raises(RuleError):
            RuleConfig(**bad)
