"""``fedledger bench gas`` on the real Hardhat node of the devnet: every settlement path is measured, the lists it
builds hold on chain (batch roots, the auditor's view of the batches, results roots) and every claim pays its reward."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from fedledger.bench_gas import CLAIM_ROUND_COUNTS, measure, print_report
from fedledger.devnet import Devnet

ROUND_KEYS = {"participants", "round", "open", "commits", "close", "finalize", "finalize_per_participant", "total",
              "total_per_participant"}


@pytest.fixture(scope="module")
def report(devnet: Devnet, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Participants 4 and 12, batches of 5 (12 take three), legacy only up to 4: small, but every path runs."""
    return measure([12, 4], work_dir=tmp_path_factory.mktemp("gas"), batch_size=5, legacy_max=4,
                   rpc_url=devnet.cfg.rpc_url)


def test_every_path_is_measured_for_every_participant_count(report: dict[str, Any]) -> None:
    assert set(report["paths"]) == {"4", "12"}
    for n, paths in report["paths"].items():
        for key in ("direct_merkle", "batched"):
            r = paths[key]
            assert ROUND_KEYS <= set(r) and r["participants"] == int(n)
            assert r["total"] == r["open"] + r["commits"] + r["close"] + r["finalize"]
            assert r["total_per_participant"] == r["total"] // int(n)
            assert 0 < r["rewards_total"] <= 100 * 10**18  # within the round budget (RuleConfig's default)
    assert report["paths"]["12"]["batched"]["batches"] == 3
    assert report["paths"]["12"]["batched"]["batch_size"] == 5
    assert report["paths"]["12"]["batched"]["signatures_checked"] == 12  # the auditor's committed_set saw them all
    assert report["paths"]["12"]["batched_one_batch"]["batches"] == 1
    assert "batched_one_batch" not in report["paths"]["4"]  # 4 fit one batch of 5 already


def test_legacy_path_runs_only_up_to_its_limit_and_keeps_the_old_round_table(report: dict[str, Any]) -> None:
    legacy = report["paths"]["4"]["legacy"]
    assert legacy is not None and ROUND_KEYS <= set(legacy)
    assert legacy["new_holders"] == 3  # the first legacy round pays its 3 accepted members for the first time
    assert report["paths"]["12"]["legacy"] is None
    assert set(report["rounds"]) == {"4"}
    assert report["rounds"]["4"] == {k: v for k, v in legacy.items() if k != "round"}
    assert report["operations"]["finalize_round_4"]["samples"] == 1
    assert "finalize_round_12" not in report["operations"]
    for op in ("register", "register_for_relayed", "open_round", "commit_direct", "commit_signed_relayed",
               "close_round", "commit_batch", "finalize_round_with_results_12", "mint_new_holder"):
        assert report["operations"][op]["median"] > 0


def test_batches_cost_less_per_participant_than_direct_commits(report: dict[str, Any]) -> None:
    paths = report["paths"]["12"]
    direct, batched, one = paths["direct_merkle"], paths["batched"], paths["batched_one_batch"]
    assert one["total_per_participant"] < batched["total_per_participant"] < direct["total_per_participant"]
    # the results root costs the same whatever the list's length; the legacy finalize grows with it
    legacy = report["paths"]["4"]["legacy"]
    assert report["paths"]["4"]["direct_merkle"]["finalize"] < legacy["finalize"]
    assert abs(paths["direct_merkle"]["finalize"] - report["paths"]["4"]["direct_merkle"]["finalize"]) < 1_000


def test_claims_verify_on_chain_and_pay_the_committed_reward(report: dict[str, Any]) -> None:
    claims = report["claims"]
    assert claims["tree_entries"] == 12 and len(claims["rounds"]) == max(CLAIM_ROUND_COUNTS)
    measured = {k: v for k, v in claims.items() if isinstance(v, dict)}
    assert set(measured) == {"first_claimer_of_each_round", "1_round", "2_rounds", "4_rounds", "1_round_repeat"}
    for k, name in zip(CLAIM_ROUND_COUNTS, ("1_round", "2_rounds", "4_rounds"), strict=True):
        c = measured[name]
        assert c["rounds_claimed"] == k and c["first_claim"] and not any(c["first_of_round"])
        assert len(c["proof_nodes"]) == k and all(3 <= p <= 4 for p in c["proof_nodes"])  # log2(12)
    for c in measured.values():
        assert c["verified"] and c["reward"] > 0 and c["minted"] == c["reward"]
    assert all(measured["first_claimer_of_each_round"]["first_of_round"])
    assert not measured["1_round_repeat"]["first_claim"]
    assert measured["1_round_repeat"]["gas"] < measured["1_round"]["gas"]  # an existing holder: no new balance slot
    assert measured["4_rounds"]["gas_per_round"] < measured["2_rounds"]["gas_per_round"] < measured["1_round"]["gas"]


def test_report_prints_and_round_trips_as_json(report: dict[str, Any], tmp_path: Path) -> None:
    console = Console(record=True, width=200)
    print_report(console, report)
    text = console.export_text()
    for title in ("gas per operation", "legacy path", "by settlement path", "claims by proof"):
        assert title in text
    stages = report["stage_seconds"]  # each rounded to 0.1 s, like the wall time
    assert sum(s["seconds"] for s in stages) > 0
    assert report["wall_seconds"] + 0.05 * (len(stages) + 1) >= sum(s["seconds"] for s in stages)
    out = tmp_path / "gas.json"
    out.write_text(json.dumps(report))
    assert json.loads(out.read_text()) == report
