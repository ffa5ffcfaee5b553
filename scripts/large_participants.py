"""How long an honest update trained on m participants' worth of data is, in median update norms.

The rule clips updates longer than ``max_norm_ratio`` (2) median norms and rejects, and slashes, those longer than
``reject_norm_ratio`` (4) as NORM_OUTLIER. Local training runs a fixed number of epochs (trainer.local.LocalConfig),
so the number of SGD steps, and with it the update's length, grows with the data set. This measures it: on an honest
FedAvg trajectory (digits and breast cancer, Dirichlet 0.5, n participants, seeds 0-2), at the given rounds, a
participant holding the pooled shards of m others trains from the same global model; its norm is divided by the
median norm of the n honest updates of that round.

    .venv/bin/python scripts/large_participants.py --out docs/robustness/v5/large_participants.md
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from trainer import aggregation as agg  # noqa: E402
from trainer.data import load_dataset  # noqa: E402
from trainer.local import LocalConfig, add_local_steps_argument, local_steps_type, train_local  # noqa: E402
from trainer.model import ModelSpec, init_params  # noqa: E402
from trainer.rules import RuleConfig  # noqa: E402
from trainer.simulation import local_seed, partition_indices  # noqa: E402
from redundancy_small_rounds import finish  # noqa: E402


def measure(dataset: str, n: int, seed: int, rounds: list[int], multiples: list[int], cfg: LocalConfig,
            large: LocalConfig) -> tuple[dict[int, list[float]], list[int]]:
    """multiple -> the norm ratios measured at ``rounds`` (one per round), and the n participants' step counts.

    The n participants train with ``cfg``; the identity holding m participants' data with ``large``."""
    data = load_dataset(dataset, seed=seed)
    parts, _ = partition_indices(data.y_train.numpy(), n, "dir0.5", seed)
    spec = ModelSpec(data.num_features, data.num_classes)
    shapes = spec.shapes()
    params = init_params(spec, seed)
    out: dict[int, list[float]] = {m: [] for m in multiples}

    def train(idx: np.ndarray, r: int, i: int, how: LocalConfig) -> torch.Tensor:
        t = torch.from_numpy(idx)
        return agg.flatten(train_local(spec, params, data.x_train[t], data.y_train[t], how, seed=local_seed(seed, r, i)))

    for r in range(1, max(rounds) + 1):
        ups = torch.stack([train(parts[i], r, i, cfg) for i in range(n)])
        if r in rounds:
            median = float(ups.double().norm(dim=1).median())
            for m in multiples:
                pooled = np.sort(np.concatenate(parts[:m]))
                out[m].append(float(train(pooled, r, 0, large).double().norm()) / median)
        params = agg.unflatten(agg.flatten(params) + ups.mean(0), shapes)
    return out, [cfg.num_steps(len(p)) for p in parts]


def _large_steps(value: str) -> int | str | None:
    """``same`` or a ``--local-steps`` value, checked when the command line is read (not after the first tables)."""
    return value if value == "same" else local_steps_type(value)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--participants", type=int, default=20)
    p.add_argument("--multiples", nargs="+", type=int, default=[1, 2, 3, 4, 6, 8])
    p.add_argument("--rounds", nargs="+", type=int, default=[1, 5, 10, 20])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    add_local_steps_argument(p, nargs="+")  # several: one table each
    p.add_argument("--large-steps", nargs="+", default=None, metavar="S|epochs|epochs:S|same", type=_large_steps,
                   help="how the identity with m participants' data trains, against each --local-steps (default: "
                        "same, as everyone); e.g. with --local-steps epochs, 6 = it alone trains 6 steps")
    p.add_argument("--out", type=Path)
    args = p.parse_args()
    torch.set_num_threads(1)
    rule = RuleConfig()
    t0 = time.perf_counter()
    lines = [
        "# Honest participants with more data: their update's length in median norms",
        "",
        f"`.venv/bin/python scripts/large_participants.py` (honest FedAvg trajectories, Dirichlet 0.5, "
        f"n = {args.participants}, seeds {args.seeds}, rounds {args.rounds}; a participant holding the pooled shards of "
        f"m participants trains from the round's global model as every participant does: {LocalConfig().epochs} "
        f"epochs of its data, or a fixed number of SGD steps). The rule clips beyond {rule.max_norm_ratio:g} median "
        f"norms and rejects, and slashes, beyond {rule.reject_norm_ratio:g}.",
        "",
        "| everyone trains | the large identity trains | data set (participants' median steps) | m (shards pooled) "
        "| norm ratio, median | min | max | clipped (> 2) | rejected (> 4) |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    large_modes = args.large_steps or ["same"]
    for steps, large_steps in itertools.product(args.local_steps, large_modes):
        cfg = LocalConfig.from_option(steps)
        large = cfg if large_steps == "same" else LocalConfig.from_option(large_steps)
        label, large_label = cfg.label(), large.label()
        for dataset in ("digits", "breast_cancer"):
            ratios: dict[int, list[float]] = {m: [] for m in args.multiples}
            step_counts: list[int] = []
            for seed in args.seeds:
                values, counts = measure(dataset, args.participants, seed, args.rounds, args.multiples, cfg, large)
                step_counts += counts
                for m in args.multiples:
                    ratios[m] += values[m]
            for m in args.multiples:
                v = ratios[m]
                lines.append(f"| {label} | {large_label} | {dataset} ({statistics.median(step_counts):g}) | {m} | "
                             f"{statistics.median(v):.2f} | {min(v):.2f} | "
                             f"{max(v):.2f} | {sum(x > rule.max_norm_ratio for x in v)} of {len(v)} | "
                             f"{sum(x > rule.reject_norm_ratio for x in v)} of {len(v)} |")
                print(lines[-1], flush=True)
    return finish(lines, t0, args.out)


if __name__ == "__main__":
    raise SystemExit(main())
