"""The example app's ServerApp body: one strategy (FedLedger, or Flower's FedAvg / FedMedian for comparison) over
the app's run config, centralized test accuracy per round, and a JSON report.

    run config ([tool.flwr.app.config], or `flwr run ... --run-config "k=v ..."`):
        strategy          fedledger | fedavg | fedmedian
        num-server-rounds, min-nodes, dataset, alpha, data-seed, model-seed, local-steps, local-epochs, lr (the clients')
        stack             embedded (in-process EVM + local blobs in state-dir) | devnet (the running
                          `fedledger devnet up` stack: devnet-dir holds its manifest; keys from devnet-seed)
        report            where to write the JSON report ("" for none)

The embedded chain lives in the ServerApp's process, so on that stack the auditor runs here, at the end, and its
verdict goes into the report; on the devnet, anyone runs `fedledger audit verify --manifest <devnet-dir>/manifest.json`.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from flwr.app import ArrayRecord, Context, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg, FedMedian

from fedledger.audit import Auditor
from fedledger.devnet import DevnetConfig
from fedledger.flower.arrays import arrays_of, params_of
from fedledger.flower.ledger import FlowerLedger
from fedledger.flower.strategy import FedLedger
from fedledger.stack import Stack, devnet_stack, embedded_stack
from trainer.data import load_dataset
from trainer.model import ModelSpec, accuracy, init_params

log = logging.getLogger(__name__)
STRATEGIES = ("fedledger", "fedavg", "fedmedian")


def stack_from_config(cfg: dict[str, Any]) -> Stack:
    kind = str(cfg.get("stack", "embedded"))
    if kind == "devnet":
        return devnet_stack(DevnetConfig(dir=Path(str(cfg["devnet-dir"])), seed=int(cfg.get("devnet-seed", 0))))
    if kind == "embedded":
        state = Path(str(cfg.get("state-dir") or ".fedledger/flower"))
        state.mkdir(parents=True, exist_ok=True)
        return embedded_stack(state, seed=int(cfg.get("devnet-seed", 0)))
    raise ValueError(f"run config stack={kind!r}: choose embedded or devnet")


def run_server(grid: Grid, context: Context) -> dict[str, Any]:
    cfg = dict(context.run_config)
    name = str(cfg.get("strategy", "fedledger"))
    if name not in STRATEGIES:
        raise ValueError(f"run config strategy={name!r}: choose one of {', '.join(STRATEGIES)}")
    rounds = int(cfg.get("num-server-rounds", 3))
    nodes = int(cfg.get("min-nodes", 2))
    data = load_dataset(str(cfg.get("dataset", "digits")), seed=int(cfg.get("data-seed", 0)))
    spec = ModelSpec(data.num_features, data.num_classes)
    sampling = {"fraction_evaluate": 0.0, "min_train_nodes": nodes, "min_available_nodes": nodes}

    ledger: FlowerLedger | None = None
    if name == "fedledger":
        ledger = FlowerLedger(stack_from_config(cfg))
        strategy: FedAvg = FedLedger(ledger, **sampling)
    else:
        strategy = FedAvg(**sampling) if name == "fedavg" else FedMedian(**sampling)

    accuracies: dict[int, float] = {}
    round_seconds: dict[int, float] = {}
    clock = {"t": time.perf_counter()}

    def evaluate(server_round: int, arrays: ArrayRecord) -> MetricRecord:
        acc = accuracy(spec, params_of(arrays), data.x_test, data.y_test)
        accuracies[server_round] = acc
        now = time.perf_counter()
        if server_round > 0:
            round_seconds[server_round] = now - clock["t"]
        clock["t"] = now
        return MetricRecord({"accuracy": acc})

    initial = init_params(spec, int(cfg.get("model-seed", 0)))
    if ledger is not None and ledger.has_global_model():  # a deployment that already ran rounds: continue from them
        initial = ledger.global_params()
        if {k: tuple(v.shape) for k, v in initial.items()} != spec.shapes():
            raise ValueError("the deployment's global model does not fit this app's model: use a fresh deployment")
    started = time.perf_counter()
    result = strategy.start(grid=grid, initial_arrays=arrays_of(initial),
                            num_rounds=rounds, evaluate_fn=evaluate)
    report: dict[str, Any] = {
        "strategy": name,
        "rounds": rounds,
        "accuracy": [accuracies[r] for r in sorted(accuracies)],
        "final_accuracy": accuracies.get(rounds),
        "round_seconds": [round_seconds[r] for r in sorted(round_seconds)],
        "wall_seconds": time.perf_counter() - started,
        "final_arrays": result.arrays is not None,
    }
    if ledger is not None:
        report.update(_ledger_report(ledger))
    path = str(cfg.get("report", ""))
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    return report


def _ledger_report(ledger: FlowerLedger) -> dict[str, Any]:
    d = ledger.stack.deployment
    out: dict[str, Any] = {
        "stack": ledger.stack.name,
        "chain_id": d.manifest.chain_id,
        "rounds_address": d.rounds.address,
        "ledger_rounds": [
            {
                "round_id": r.round_id,
                "committed": r.committed,
                "accepted": r.accepted,
                "rejected": r.rejected,
                "not_relayed": [{"participant": f.participant, "reason": f.reason} for f in r.failures],
                "rewards": {a: str(v) for a, v in r.rewards.items()},
                "minted": str(r.minted),
                "gas": r.gas,
                "gas_total": r.gas_total,
                "seconds": r.seconds,
                "seconds_total": r.seconds_total,
            }
            for r in ledger.rounds
        ],
    }
    if ledger.stack.name == "embedded":  # the chain ends with this process: audit it here, from chain + blobs only
        audit = Auditor(d, ledger.stack.store).verify()
        out["audit_verified"] = audit.verified
        out["audited_rounds"] = len(audit.rounds)
    return out
