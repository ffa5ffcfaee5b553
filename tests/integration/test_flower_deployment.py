"""The example Flower app on Flower's deployment runtime against the devnet (Hardhat + Kubo).

One SuperLink and four SuperNodes, each its own process (`flower-superlink`, `flower-supernode`, insecure, on free
loopback ports, FLWR_HOME in a temp directory); `flwr run` submits examples/flower-app with the FedLedger strategy
on the devnet stack. SuperNode 0 sign-flips its updates. Each SuperNode signs with its own wallet; the ServerApp
registers them by relayed EIP-712 signatures, stores their updates on Kubo and relays their signed commitments.
Then `fedledger audit verify` (another process) re-derives every round from the node and Kubo alone.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from fedledger.devnet import Devnet, DevnetConfig, pid_alive
from fedledger.flower.client import flower_wallet_address
from fedledger.flower.deployment import LoopbackFlower
from fedledger.wiring import attach

ROOT = Path(__file__).resolve().parents[2]
NODES, ROUNDS, WALLET_SEED, ATTACKER = 4, 2, 11, 0


@pytest.fixture(scope="module")
def flower_devnet(devnet: Devnet, tmp_path_factory: pytest.TempPathFactory) -> Devnet:
    """The session's Hardhat node and Kubo daemon with contracts of this module's own: other tests' rounds on the
    shared deployment would change the model this run starts from, and so its verdicts."""
    c = devnet.cfg
    own = Devnet(DevnetConfig(dir=tmp_path_factory.mktemp("flower-devnet"), rpc_port=c.rpc_port,
                              ipfs_api_port=c.ipfs_api_port, ipfs_gateway_port=c.ipfs_gateway_port, seed=c.seed))
    manifest = own.up(external=True)  # deploys onto the running node and daemon; starts nothing
    assert manifest.endpoints["rpc"] == c.rpc_url
    assert manifest.contracts != attach(None, c.manifest_path).manifest.contracts
    return own


@pytest.fixture(scope="module")
def deployment_run(flower_devnet: Devnet, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    devnet = flower_devnet
    work = tmp_path_factory.mktemp("flower-deployment")
    flower = LoopbackFlower(work)
    report_path = work / "report.json"
    rounds_before = attach(None, devnet.cfg.manifest_path).rounds.round_count()
    try:
        flower.start_superlink()
        for i in range(NODES):
            flower.start_supernode(f"supernode-{i}", {
                "partition-id": i, "num-partitions": NODES, "wallet-seed": WALLET_SEED, "wallet-index": i,
                "attack": "signflip" if i == ATTACKER else "none",
            })
        assert len(flower.pids()) == NODES + 1 and not set(flower.pids()) - set(flower.alive())
        output = flower.run(ROOT / "examples" / "flower-app", {
            "strategy": "fedledger", "num-server-rounds": ROUNDS, "min-nodes": NODES, "stack": "devnet",
            "devnet-dir": str(devnet.cfg.dir), "devnet-seed": devnet.cfg.seed, "report": str(report_path),
        }, timeout=400)
    finally:
        pids = flower.pids()
        flower.stop()
    assert not [p for p in pids if pid_alive(p)], "Flower processes survived stop()"
    assert flower.alive() == [], "processes Flower started for this deployment survived stop()"
    assert report_path.exists(), output
    audit = subprocess.run(
        [sys.executable, "-m", "fedledger.cli", "audit", "verify", "--manifest", str(devnet.cfg.manifest_path),
         "--json", str(work / "audit.json")],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
    )
    return {"report": json.loads(report_path.read_text()), "audit": audit, "audit_json": work / "audit.json",
            "rounds_before": rounds_before, "output": output}


def test_the_supernodes_rounds_are_committed_on_the_devnet_and_the_auditor_process_verifies_them(
    deployment_run: dict[str, Any], flower_devnet: Devnet
) -> None:
    devnet = flower_devnet
    audit = deployment_run["audit"]
    assert audit.returncode == 0, audit.stdout + audit.stderr
    assert json.loads(deployment_run["audit_json"].read_text())["verified"] is True
    report = deployment_run["report"]
    assert report["stack"] == "devnet" and len(report["ledger_rounds"]) == ROUNDS
    ids = [r["round_id"] for r in report["ledger_rounds"]]
    assert ids == list(range(deployment_run["rounds_before"] + 1, deployment_run["rounds_before"] + ROUNDS + 1))
    assert attach(None, devnet.cfg.manifest_path).rounds.round_count() == ids[-1]


def test_every_supernode_commits_with_its_own_wallet_and_kubo_holds_the_updates(
    deployment_run: dict[str, Any], flower_devnet: Devnet
) -> None:
    devnet = flower_devnet
    wallets = {flower_wallet_address(WALLET_SEED, i) for i in range(NODES)}
    d = attach(None, devnet.cfg.manifest_path)
    attacker = flower_wallet_address(WALLET_SEED, ATTACKER)
    for r in deployment_run["report"]["ledger_rounds"]:
        # After round 1's slash the attacker's stake is below the minimum: its later commitments are refused.
        expected = wallets if r["round_id"] == 1 else wallets - {attacker}
        refused = [] if r["round_id"] == 1 else [attacker]
        assert set(r["committed"]) == expected and [f["participant"] for f in r["not_relayed"]] == refused
        assert all("RegistryStakeTooLow" in f["reason"] for f in r["not_relayed"])
        commitments = d.rounds.update_committed_events(from_block=0, round_id=r["round_id"])
        assert {c.args.participant for c in commitments} == expected
        # the raw CIDv1 each SuperNode computed and signed is the one Kubo gave the bytes
        assert all(c.args.cid.startswith("bafkrei") for c in commitments)
    assert all(d.registry.status_of(w) != 0 for w in wallets)


def test_the_byzantine_supernode_is_rejected_and_unpaid(
    deployment_run: dict[str, Any], flower_devnet: Devnet
) -> None:
    devnet = flower_devnet
    attacker = flower_wallet_address(WALLET_SEED, ATTACKER)
    honest = [flower_wallet_address(WALLET_SEED, i) for i in range(NODES) if i != ATTACKER]
    first, *later = deployment_run["report"]["ledger_rounds"]
    assert attacker in first["rejected"] and sorted(first["accepted"]) == sorted(honest)
    assert int(first["rewards"][attacker]) == 0
    for r in later:  # slashed below the minimum stake in round 1: shut out, the honest ones carry on
        assert attacker not in r["rejected"] and sorted(r["accepted"]) == sorted(honest)
        assert attacker not in r["rewards"] or int(r["rewards"][attacker]) == 0
    d = attach(None, devnet.cfg.manifest_path)
    assert d.token.balance_of(attacker) == 0
    assert d.registry.stake_of(attacker).slashed == d.registry.min_stake() // 10
    assert all(d.token.balance_of(w) > 0 for w in honest)
    assert deployment_run["report"]["final_accuracy"] > 0.7
