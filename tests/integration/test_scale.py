"""``fedledger bench scale`` at 200 participants on the real devnet (Hardhat + Kubo): one Merkle-committed round,
mostly relayed in signed batches, some direct commitments, 10% sign-flip attackers, finalized by the streamed
aggregator in its own process and re-derived by ``fedledger audit verify`` in another."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from fedledger.bench_scale import CLAIMERS, measure
from fedledger.devnet import Devnet

PARTICIPANTS = 200


@pytest.fixture(scope="module")
def report(devnet: Devnet, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    work: Path = tmp_path_factory.mktemp("scale")
    return measure(PARTICIPANTS, rpc_url=devnet.cfg.rpc_url, ipfs_api=devnet.cfg.ipfs_api, work_dir=work, rounds=1,
                   batch_size=80, direct_every=20, samples=32, epochs=2, seed=11)


def test_the_auditor_process_verifies_the_round_from_chain_and_kubo(report: dict[str, Any]) -> None:
    assert report["audit_verified"], report["audit_output"]
    assert report["auditor"]["peak_rss_mb"] > 0 and report["auditor"]["seconds"] > 0


def test_every_participant_is_settled_and_every_attacker_rejected(report: dict[str, Any]) -> None:
    (r,) = report["rounds"]
    assert (r["participants"], r["batches"], r["direct_committers"]) == (PARTICIPANTS, 3, PARTICIPANTS // 20)
    assert r["attackers"] == PARTICIPANTS // 10 and r["attackers_rejected"] == r["attackers"]
    assert r["accepted"] == PARTICIPANTS - r["attackers"] - r["honest_rejected"]
    assert r["honest_rejected"] <= PARTICIPANTS // 20  # a few honest outliers may fail the rule; most must pass
    assert r["aggregator"]["peak_rss_mb"] > 0


def test_the_round_costs_a_fraction_of_per_participant_settlement(report: dict[str, Any]) -> None:
    (r,) = report["rounds"]
    gas = r["gas"]
    assert r["gas_total"] == sum(gas.values())
    # Relayed participants cost their share of three batches and one results root; direct ones ~63k each.
    assert gas["finalize"] < 200_000 and gas["batches"] < 3 * 100_000
    assert r["gas_per_participant_relayed_only"] < 5_000


def test_claims_of_the_round_pay_the_claimers(report: dict[str, Any]) -> None:
    claims = report["claims"]
    assert claims["claimers"] == CLAIMERS and len(claims["gas"]) == CLAIMERS
    assert all(60_000 < g < 300_000 for g in claims["gas"])
    assert claims["paid_exactly"]  # each balance rose by exactly the claimed rewards, each round marked claimed
