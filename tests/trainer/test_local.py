"""Local training's minibatch plan: epochs of the participant's data, or a fixed number of SGD steps."""

from __future__ import annotations

import argparse

import pytest
import torch

from trainer.aggregation import flatten
from trainer.data import load_dataset
from trainer.errors import TrainerError
from trainer.local import LocalConfig, add_local_steps_argument, minibatches, train_local
from trainer.model import ModelSpec, init_params


def _plan(n: int, cfg: LocalConfig, seed: int = 0) -> list[list[int]]:
    return [b.tolist() for b in minibatches(n, cfg, torch.Generator().manual_seed(seed))]


def test_epochs_mode_is_epochs_permutations_cut_into_batches() -> None:
    plan = _plan(70, LocalConfig(epochs=2, batch_size=32))
    assert [len(b) for b in plan] == [32, 32, 6, 32, 32, 6]
    gen = torch.Generator().manual_seed(0)
    expected = [torch.randperm(70, generator=gen).tolist() for _ in range(2)]
    assert [i for b in plan[:3] for i in b] == expected[0]
    assert [i for b in plan[3:] for i in b] == expected[1]


@pytest.mark.parametrize(("n", "steps"), [(7, 5), (70, 5), (70, 3), (1000, 6)])
def test_steps_mode_takes_exactly_that_many_steps_whatever_the_data(n: int, steps: int) -> None:
    cfg = LocalConfig(steps=steps, batch_size=32)
    plan = _plan(n, cfg)
    assert len(plan) == steps == cfg.num_steps(n)
    # the same permutations as epochs mode, cut off after `steps` batches (a small shard wraps into new epochs)
    epochs = -(-steps * 32 // n) + 1
    assert plan == _plan(n, LocalConfig(epochs=epochs, batch_size=32))[:steps]
    if n < 32:
        assert all(sorted(b) == list(range(n)) for b in plan)  # each step is a full pass over a tiny shard


def test_a_large_participant_trains_as_long_as_a_small_one() -> None:
    """Why steps mode exists: with epochs the update of 8 times the data is several times longer; with fixed steps
    it is not (scripts/large_participants.py measures this over trajectories)."""
    data = load_dataset("digits")
    spec = ModelSpec(data.num_features, data.num_classes)
    base = init_params(spec, 0)
    small, large = torch.arange(60), torch.arange(480)

    def norm(idx: torch.Tensor, cfg: LocalConfig) -> float:
        return float(flatten(train_local(spec, base, data.x_train[idx], data.y_train[idx], cfg, seed=1)).norm())

    epochs, steps = LocalConfig(), LocalConfig(steps=6)
    assert norm(large, epochs) > 2.5 * norm(small, epochs)
    assert norm(large, steps) < 1.5 * norm(small, steps)


def test_a_step_cap_cuts_only_the_large_data_sets_epochs_short() -> None:
    cfg = LocalConfig.from_option("epochs:6")
    assert (cfg.steps, cfg.max_steps, cfg.label()) == (None, 6, "2 epochs, at most 6 steps")
    assert [cfg.num_steps(n) for n in (7, 64, 65, 96, 97, 1000)] == [2, 4, 6, 6, 6, 6]
    assert _plan(1000, cfg) == _plan(1000, LocalConfig())[:6]  # the same batches, cut short
    assert _plan(40, cfg) == _plan(40, LocalConfig())  # a small data set keeps its 2 epochs


def test_no_data_is_no_step_and_bad_settings_are_typed_errors() -> None:
    assert _plan(0, LocalConfig(steps=4)) == []
    with pytest.raises(TrainerError, match="at least 1, got 0"):
        LocalConfig(steps=0)
    with pytest.raises(TrainerError, match="at least 1"):
        LocalConfig(batch_size=0)
    with pytest.raises(TrainerError, match="max_steps caps epochs mode"):
        LocalConfig(steps=4, max_steps=6)


def test_the_command_line_option_reads_steps_or_epochs() -> None:
    p = argparse.ArgumentParser()
    add_local_steps_argument(p)
    assert p.parse_args([]).local_steps == LocalConfig.steps
    assert p.parse_args(["--local-steps", "8"]).local_steps == 8
    assert p.parse_args(["--local-steps", "epochs"]).local_steps is None
    assert p.parse_args(["--local-steps", "epochs:6"]).local_steps == "epochs:6"
    for bad in ("0", "six", "epochs:0", "epochs:"):
        with pytest.raises(SystemExit):
            p.parse_args(["--local-steps", bad])
