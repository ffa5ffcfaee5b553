"""`fedledger bench robustness`: the --quick grid's JSON, table and plots; the engine's trainer and partitions."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from fedledger.cli import main
from trainer.aggregation import flatten
from trainer.attacks import ALL_ATTACKS
from trainer.data import load_dataset
from trainer.local import LocalConfig, train_local
from trainer.model import ModelSpec, init_params
from trainer.simulation import (
    BENCH_DEFENSES,
    layout_of,
    local_seed,
    partition_indices,
    round_schedule,
    train_batched,
)

KEYS = {"dataset", "partition", "n", "fraction", "attack", "defense", "final_accuracy"}


def test_quick_writes_per_cell_json_table_and_plots(tmp_path: Path) -> None:
    out_json, out_dir = tmp_path / "quick.json", tmp_path / "out"
    assert main(["bench", "robustness", "--quick", "--json", str(out_json), "--out", str(out_dir)]) == 0
    result = json.loads(out_json.read_text())
    cells = result["cells"]
    assert cells and all(KEYS <= set(row) for row in cells)
    assert {(r["attack"], r["defense"]) for r in cells} == {
        (a, d) for a in ("none", *ALL_ATTACKS) for d in BENCH_DEFENSES
    }
    assert all(0.0 <= r["final_accuracy"] <= 1.0 and len(r["accuracy"]) == 3 for r in cells)
    assert {(r["dataset"], r["partition"], r["n"], r["fraction"]) for r in cells} == {("digits", "dir0.5", 20, 0.2)}
    platform = [r for r in cells if r["defense"] == "platform" and r["attack"] == "signflip"]
    assert 0.0 <= platform[0]["score_auroc"] <= 1.0 and platform[0]["attacker_reward_share"] is not None
    table = (out_dir / "table.md").read_text()
    assert "| attack | fedavg | median |" in table and "backdoor ASR" in table
    pngs = sorted(p.name for p in out_dir.glob("*.png"))
    assert "score_auroc.png" in pngs and "reward_shares.png" in pngs
    assert any(p.startswith("accuracy_rounds_digits_dir0.5") for p in pngs)
    assert all((out_dir / p).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)
    # the table and plots can be rendered again from the JSON alone
    again = tmp_path / "again"
    assert main(["bench", "robustness", "--from-json", str(out_json), "--out", str(again)]) == 0
    assert (again / "table.md").read_text() == table


def test_sybils_are_measured_against_one_identity_with_the_same_data_and_slashing_is_priced(tmp_path: Path) -> None:
    """The sybil multiplier's denominator is a real counterfactual run (participant 0 alone, the other sybil
    identities absent), and the stake columns follow trainer/incentives.slashed."""
    out_json = tmp_path / "sybil.json"
    assert main(["bench", "robustness", "--datasets", "digits", "--partitions", "dir0.5", "--participants", "10",
                 "--fractions", "0.3", "--seeds", "0", "--rounds", "2", "--attacks", "none", "sybil", "signflip",
                 "--defenses", "fedavg", "platform", "--json", str(out_json)]) == 0
    result = json.loads(out_json.read_text())
    alone = result["references"][0]["sybil_alone"]
    assert set(alone) == {"platform"} and alone["platform"]["participant0_fed"] > 0
    sybil = next(r for r in result["cells"] if r["attack"] == "sybil" and r["defense"] == "platform")
    group = sum(sybil["rewards_fed"][: sybil["f"]])
    entry = next(e for e in result["summary"]["by_setting"] if e["attack"] == "sybil" and e["defense"] == "platform")
    assert entry["sybil_earnings_multiplier"] == pytest.approx(group / alone["platform"]["participant0_fed"])
    assert sybil["attacker_stake_lost"] == 0.0  # copies of an honest update are accepted, so never slashed
    flip = next(r for r in result["cells"] if r["attack"] == "signflip" and r["defense"] == "platform")
    # each rejection as poisoned burns 10 % of a minimum stake (the identity tops up to the minimum to commit again);
    # sign-flips are rejected as LOW_SCORE or NORM_OUTLIER, both slashable
    assert flip["attacker_rejection_rate"] > 0
    assert flip["attacker_stake_lost"] == pytest.approx(0.1 * flip["attacker_rejection_rate"] * 2)


def test_split_sybils_train_on_slices_of_one_data_set_and_are_paid_per_identity(tmp_path: Path) -> None:
    """sybil_split: the f attackers' data sets pooled and cut into f random slices, one per wallet; the wallets are
    honest-looking participants, so the rule accepts them and pays each one (the limit of any update-level defence,
    README "Stake against sybils"): together they earn more than one identity training on the pool."""
    out_json = tmp_path / "split.json"
    assert main(["bench", "robustness", "--datasets", "digits", "--partitions", "dir0.5", "--participants", "10",
                 "--fractions", "0.3", "--seeds", "0", "--rounds", "3", "--attacks", "sybil_split",
                 "--defenses", "platform", "--json", str(out_json)]) == 0
    result = json.loads(out_json.read_text())
    run = next(r for r in result["cells"] if r["attack"] == "sybil_split")
    assert len(result["references"][0]["shard_sizes"]) == 10  # the slices are not participants of their own
    assert run["attacker_rejection_rate"] == 0.0 and run["attacker_stake_lost"] == 0.0
    rewards = run["rewards_fed"][: run["f"]]
    assert len(set(rewards)) == run["f"]  # distinct updates, scored one by one (no group shares a score)
    entry = next(e for e in result["summary"]["by_setting"] if e["attack"] == "sybil_split")
    assert result["references"][0]["sybil_alone"] == {}  # no copy-sending sybils in this grid
    alone = result["references"][0]["split_alone"]["platform"]["participant0_fed"]
    assert entry["sybil_earnings_multiplier"] == pytest.approx(sum(rewards) / alone)
    assert entry["sybil_earnings_multiplier"] > 1.5


def test_rule_v6_pays_split_sybils_no_more_than_one_identity_with_their_data_and_stake(tmp_path: Path) -> None:
    """platform_v6 splits rewards by score x stake: its counterfactual identity trains on the pool and locks the f
    stakes the split wallets lock. With fixed steps (so the pooled identity is not rejected as a norm outlier) the
    score-only rule pays the 3 wallets 2.9 times what that identity earns, v6 1.2 times: what remains is score, the
    3 wallets pull the median reference toward their own data. platform_v7 gives the one identity the 3 votes in
    the median its stake buys, and the wallets earn less than it (README, "Rule version 7")."""
    out_json = tmp_path / "v6.json"
    assert main(["bench", "robustness", "--datasets", "digits", "--partitions", "dir0.5", "--participants", "10",
                 "--fractions", "0.3", "--seeds", "0", "--rounds", "3", "--local-steps", "6", "--attacks",
                 "sybil_split", "--defenses", "platform", "platform_v6", "platform_v7", "--json", str(out_json)]) == 0
    result = json.loads(out_json.read_text())
    alone = result["references"][0]["split_alone"]
    assert alone["platform"]["participant0_stake"] == 1.0
    assert alone["platform_v6"]["participant0_stake"] == alone["platform_v7"]["participant0_stake"] == 3.0
    runs = {r["defense"]: r for r in result["cells"] if r["attack"] == "sybil_split"}
    # the verdicts do not depend on the reward formula: the same wallets accepted, the same global model
    assert runs["platform"]["accuracy"] == runs["platform_v6"]["accuracy"]
    assert alone["platform"]["final_accuracy"] == alone["platform_v6"]["final_accuracy"]
    multiplier = {e["defense"]: e["sybil_earnings_multiplier"] for e in result["summary"]["by_setting"]
                  if e["attack"] == "sybil_split"}
    group = sum(runs["platform_v6"]["rewards_fed"][:3])
    assert multiplier["platform_v6"] == pytest.approx(group / alone["platform_v6"]["participant0_fed"])
    assert multiplier["platform_v6"] < 1.5 < 2.5 < multiplier["platform"]
    assert multiplier["platform_v7"] < 1.0 < multiplier["platform_v6"]


def test_rule_v8_accepts_the_long_update_of_one_identity_training_eight_wallets_data(tmp_path: Path) -> None:
    """With 2 epochs one identity holding 8 participants' data sends an update ~6 typical norms long: platform_v7
    rejects it as a norm outlier every round and slashes it, so the 8 split wallets out-earn it. platform_v8 allows
    it 8 typical norms for its 8 stakes: accepted, never slashed, and the wallets earn less than it. The wallets'
    own runs (equal stakes) are judged alike under both."""
    out_json = tmp_path / "v8.json"
    assert main(["bench", "robustness", "--datasets", "digits", "--partitions", "dir0.5", "--participants", "20",
                 "--fractions", "0.4", "--seeds", "0", "--rounds", "3", "--attacks", "sybil_split", "--defenses",
                 "platform_v7", "platform_v8", "--json", str(out_json)]) == 0
    result = json.loads(out_json.read_text())
    alone = result["references"][0]["split_alone"]
    assert alone["platform_v7"]["participant0_stake"] == alone["platform_v8"]["participant0_stake"] == 8.0
    assert alone["platform_v7"]["participant0_fed"] == 0 and alone["platform_v7"]["participant0_stake_lost"] > 0
    assert alone["platform_v8"]["participant0_fed"] > 0 and alone["platform_v8"]["participant0_stake_lost"] == 0
    runs = {r["defense"]: r for r in result["cells"] if r["attack"] == "sybil_split"}
    assert runs["platform_v7"]["accuracy"] == runs["platform_v8"]["accuracy"]
    multiplier = {e["defense"]: e["sybil_earnings_multiplier"] for e in result["summary"]["by_setting"]
                  if e["attack"] == "sybil_split"}
    assert multiplier["platform_v8"] < 1.0


def test_a_bad_partition_is_a_one_line_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "robustness", "--quick", "--partitions", "zipf"]) == 2
    assert "unknown partition 'zipf'" in capsys.readouterr().out


@pytest.mark.parametrize("cfg", [LocalConfig(epochs=2), LocalConfig(steps=5)], ids=["epochs", "steps"])
def test_batched_training_equals_train_local(cfg: LocalConfig) -> None:
    data = load_dataset("digits")
    spec = ModelSpec(data.num_features, data.num_classes)
    parts, _ = partition_indices(data.y_train.numpy(), 6, "dir0.5", seed=3)
    if cfg.steps is not None:  # shards both shorter and longer than the steps take
        assert min(len(p) for p in parts) < cfg.steps * cfg.batch_size < max(len(p) for p in parts)
    base = init_params(spec, 3)
    seeds = [local_seed(3, 2, i) for i in range(6)]
    rows = torch.tensor([0, 1, 2, 3, 4, 5, 2])
    variants = torch.tensor([0, 0, 0, 0, 0, 0, 1])  # the last row trains client 2 on flipped labels
    flipped = data.num_classes - 1 - data.y_train
    out = train_batched(layout_of(spec), flatten(base).expand(7, -1).clone(), rows, variants,
                        torch.stack([data.x_train, data.x_train]), torch.stack([data.y_train, flipped]),
                        round_schedule(parts, seeds, cfg), cfg)
    for r, c in enumerate(rows.tolist()):
        idx = torch.from_numpy(parts[c])
        y = (flipped if r == 6 else data.y_train)[idx]
        ref = flatten(train_local(spec, base, data.x_train[idx], y, cfg, seed=seeds[c]))
        assert torch.allclose(out[r], ref, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize(("dataset", "n", "partition"), [("digits", 20, "iid"), ("breast_cancer", 50, "dir0.1"),
                                                         ("digits", 50, "dir0.1")])
def test_partitions_cover_every_sample_once_with_a_minimum_shard(dataset: str, n: int, partition: str) -> None:
    labels = load_dataset(dataset).y_train.numpy()
    parts, method = partition_indices(labels, n, partition, seed=0)
    assert len(parts) == n
    joined = np.concatenate(parts)
    assert sorted(joined.tolist()) == list(range(len(labels)))
    sizes = [len(p) for p in parts]
    if partition == "iid":
        assert max(sizes) - min(sizes) <= 1 and method == "iid"
    else:
        assert min(sizes) >= min(10, len(labels) // (2 * n)) and method.startswith("dirichlet")


def test_local_steps_are_a_grid_setting_recorded_in_cells_command_and_table(tmp_path: Path) -> None:
    """``--local-steps S``: every participant (honest and attacker) trains S SGD steps; the runs differ from the
    default 2 epochs, and the results say which local training produced them."""
    runs = {}
    for steps in ("3", "epochs"):
        out_json = tmp_path / f"{steps}.json"
        assert main(["bench", "robustness", "--datasets", "breast_cancer", "--partitions", "dir0.5", "--participants",
                     "10", "--fractions", "0.2", "--seeds", "0", "--rounds", "2", "--attacks", "none", "--defenses",
                     "fedavg", "--local-steps", steps, "--json", str(out_json), "--out", str(tmp_path / steps)]) == 0
        runs[steps] = json.loads(out_json.read_text())
    fixed, epochs = runs["3"], runs["epochs"]
    assert fixed["references"][0]["cell"]["local_steps"] == 3 and epochs["references"][0]["cell"]["local_steps"] is None
    assert "--local-steps 3" in fixed["config"]["command"] and "--local-steps" not in epochs["config"]["command"]
    assert fixed["cells"][0]["accuracy"] != epochs["cells"][0]["accuracy"]
    assert "local training 3 steps of batch 32" in (tmp_path / "3" / "table.md").read_text()
    assert "local training 2 epochs of batch 32" in (tmp_path / "epochs" / "table.md").read_text()
