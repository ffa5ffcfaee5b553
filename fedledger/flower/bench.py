"""``fedledger bench flower``: the example Flower app under one attack with Flower's FedAvg, Flower's FedMedian and
FedLedger — same nodes, partitions, seeds and attackers — and what the ledger adds per round (seconds, gas).

    fedledger bench flower --nodes 10 --byzantine 3 --rounds 5 --json docs/flower-bench.json

The app's ServerApp and ClientApp run in this process through ``LocalGrid`` (Flower's simulation minus Ray); the
FedLedger run uses the embedded stack (in-process EVM + local blobs), so gas is the EVM's and seconds are this
machine's. Accuracy is centralized, on the held-out digits test set, after the last round.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import tempfile
from pathlib import Path
from statistics import mean
from typing import Any

from fedledger.flower.client import flower_wallet_address
from fedledger.flower.simulation import run_local

APP_DIR = Path(__file__).resolve().parents[2] / "examples" / "flower-app"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--nodes", type=int, default=10)
    parser.add_argument("--byzantine", type=int, default=3, help="nodes 0..k-1 attack")
    parser.add_argument("--attack", default="signflip")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--alpha", type=float, default=0.5)
    parser.add_argument("--seed", type=int, default=0, help="data, partition, model and training seeds")
    parser.add_argument("--json", type=Path, default=None)


def _load_apps() -> tuple[Any, Any]:
    apps = []
    for name in ("server_app", "client_app"):
        spec = importlib.util.spec_from_file_location(f"fedledger_app_bench_{name}", APP_DIR / "fedledger_app" /
                                                      f"{name}.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
        apps.append(module.app)
    return apps[0], apps[1]


def measure(*, nodes: int, byzantine: int, attack: str, rounds: int, alpha: float, seed: int) -> dict[str, Any]:
    if not 0 <= byzantine < nodes:
        raise ValueError(f"--byzantine must be in [0, {nodes}), got {byzantine}")
    server_app, client_app = _load_apps()
    node_configs = [{"partition-id": i, "num-partitions": nodes, "wallet-seed": seed, "wallet-index": i,
                     "attack": attack if i < byzantine else "none"} for i in range(nodes)]
    out: dict[str, Any] = {"nodes": nodes, "byzantine": byzantine, "attack": attack, "rounds": rounds,
                           "alpha": alpha, "seed": seed, "dataset": "digits", "runs": {}}
    for strategy in ("fedavg", "fedmedian", "fedledger"):
        with tempfile.TemporaryDirectory(prefix=f"fedledger-bench-flower-{strategy}-") as tmp:
            work = Path(tmp)
            run_config = {"strategy": strategy, "num-server-rounds": rounds, "min-nodes": nodes, "dataset": "digits",
                          "alpha": alpha, "data-seed": seed, "model-seed": seed, "stack": "embedded",
                          "state-dir": str(work / "state"), "devnet-seed": seed, "report": str(work / "report.json")}
            wall = run_local(server_app, client_app, node_configs, run_config)
            report = json.loads((work / "report.json").read_text())
        report["run_wall_seconds"] = wall
        out["runs"][strategy] = report
    ledger = out["runs"]["fedledger"]
    attackers = {flower_wallet_address(seed, i) for i in range(byzantine)}
    rows = ledger["ledger_rounds"]
    out["fedledger"] = {
        "audit_verified": ledger["audit_verified"],
        "attackers_rejected": sum(len(attackers & set(r["rejected"])) for r in rows),
        "attacker_rounds": len(attackers) * len(rows),
        "honest_rejected": sum(len(set(r["rejected"]) - attackers) for r in rows),
        "attacker_rewards_wei": sum(int(v) for r in rows for a, v in r["rewards"].items() if a in attackers),
        "ledger_seconds_per_round": mean(r["seconds_total"] for r in rows),
        "ledger_seconds_per_round_after_first": mean(r["seconds_total"] for r in rows[1:]) if len(rows) > 1 else None,
        "gas_per_round": [r["gas_total"] for r in rows],
        "gas_breakdown_round_2": rows[1]["gas"] if len(rows) > 1 else rows[0]["gas"],
    }
    out["round_seconds_mean"] = {s: mean(r["round_seconds"]) for s, r in out["runs"].items()}
    return out


def run(args: argparse.Namespace) -> int:
    result = measure(nodes=args.nodes, byzantine=args.byzantine, attack=args.attack, rounds=args.rounds,
                     alpha=args.alpha, seed=args.seed)
    for strategy, report in result["runs"].items():
        accs = ", ".join(f"{a:.3f}" for a in report["accuracy"][1:])
        print(f"{strategy:9s} final accuracy {report['final_accuracy']:.4f}  per round: {accs}  "
              f"mean round {result['round_seconds_mean'][strategy]:.2f} s")
    f = result["fedledger"]
    print(f"fedledger: audit verified {f['audit_verified']}, attackers rejected {f['attackers_rejected']}/"
          f"{f['attacker_rounds']}, honest rejected {f['honest_rejected']}, "
          f"attacker rewards {f['attacker_rewards_wei']} wei; ledger {f['ledger_seconds_per_round']:.2f} s/round "
          f"(after round 1: {f['ledger_seconds_per_round_after_first']:.2f} s); gas per round {f['gas_per_round']}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    return 0 if f["audit_verified"] else 1
