"""How often rule version 4's pair test groups two honest updates in small rounds (few third parties).

Honest participants only (no copies): n participants train along a FedAvg trajectory (the simulation's local training
and seeds, at local learning rates 0.05, the platform's default, and 0.5, the DP table's), and
trainer.redundancy.RedundancyTest, with no minimum of third parties, tests every pair of every round on the round's
subset columns. Every pair it calls redundant is a false positive. The rule's ``redundancy_min_third_parties`` is
chosen from this table: the test runs only when a round has at least that many third parties per pair.

    .venv/bin/python scripts/redundancy_small_rounds.py [--out docs/robustness/v4/small_rounds.md]
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from trainer import aggregation as agg  # noqa: E402
from trainer.data import load_dataset  # noqa: E402
from trainer.local import LocalConfig, train_local  # noqa: E402
from trainer.model import ModelSpec, init_params  # noqa: E402
from trainer.redundancy import RedundancyTest  # noqa: E402
from trainer.rules import RuleConfig  # noqa: E402
from trainer.simulation import local_seed, partition_indices  # noqa: E402


def measure(dataset: str, partition: str, n: int, lr: float, seed: int, rounds: int, rule: RuleConfig) -> tuple[
        int, int, float]:
    """(pairs grouped, pairs tested, smallest t) over the rounds of one honest FedAvg trajectory."""
    data = load_dataset(dataset, seed=seed)
    parts, _ = partition_indices(data.y_train.numpy(), n, partition, seed)
    spec = ModelSpec(data.num_features, data.num_classes)
    params = init_params(spec, seed)
    grouped, tested, smallest = 0, 0, float("inf")
    for r in range(1, rounds + 1):
        ups = []
        for i in range(n):
            idx = torch.from_numpy(parts[i])
            ups.append(agg.flatten(train_local(spec, params, data.x_train[idx], data.y_train[idx], LocalConfig(lr=lr),
                                               seed=local_seed(seed, r, i))))
        stack = torch.stack(ups).numpy()
        cols = agg.subset_columns(stack.shape[1], agg.subset_seed(
            [hashlib.sha256(row.tobytes()).digest() for row in stack], stack.shape[1]))
        test = RedundancyTest(np.ascontiguousarray(stack[:, cols]), ratio=rule.redundancy_ratio,
                              share=rule.redundancy_share, min_third_parties=1)
        for i, j in itertools.combinations(range(n), 2):
            p = test.pair(i, j)
            grouped += p.redundant
            tested += 1
            smallest = min(smallest, p.t)
        mean = stack.mean(0)
        offset, new = 0, {}
        for k in sorted(params):
            size = params[k].numel()
            new[k] = params[k] + torch.from_numpy(mean[offset:offset + size]).reshape(params[k].shape)
            offset += size
        params = new
    return grouped, tested, smallest


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--datasets", nargs="+", default=["digits", "breast_cancer"])
    p.add_argument("--partitions", nargs="+", default=["iid", "dir0.5", "dir0.1"])
    p.add_argument("--participants", nargs="+", type=int, default=[6, 8, 10, 12, 14, 16, 20, 30])
    p.add_argument("--lrs", nargs="+", type=float, default=[0.05, 0.5])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--out", type=Path)
    args = p.parse_args()
    torch.set_num_threads(1)
    rule = RuleConfig()
    t0 = time.perf_counter()
    lines = [
        "# Rule v4's pair test on honest updates of small rounds",
        "",
        f"`.venv/bin/python scripts/redundancy_small_rounds.py` (data sets {', '.join(args.datasets)}; partitions "
        f"{', '.join(args.partitions)}; seeds {args.seeds}; rounds 1-{args.rounds} of an honest FedAvg trajectory; "
        f"threshold t <= {rule.redundancy_ratio}, share <= {rule.redundancy_share}, no minimum of third parties). "
        "Every grouped pair is a false positive. The rule runs the test only with at least "
        f"`redundancy_min_third_parties` = {rule.redundancy_min_third_parties} third parties, i.e. from "
        f"{rule.redundancy_min_third_parties + 2} representatives.",
        "",
        "| n (third parties) | local lr | honest pairs grouped | share | smallest t | worst setting |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for n, lr in itertools.product(args.participants, args.lrs):
        grouped = tested = 0
        smallest, worst, worst_count = float("inf"), "", 0
        for d, part, seed in itertools.product(args.datasets, args.partitions, args.seeds):
            g, t, s = measure(d, part, n, lr, seed, args.rounds, rule)
            grouped, tested, smallest = grouped + g, tested + t, min(smallest, s)
            if g > worst_count:
                worst, worst_count = f"{d} {part} seed {seed}: {g}", g
        lines.append(f"| {n} ({n - 2}) | {lr:g} | {grouped} of {tested} | {100 * grouped / tested:.2f} % | "
                     f"{smallest:.2f} | {worst or '-'} |")
        print(lines[-1], flush=True)
    lines.insert(3, f"{time.perf_counter() - t0:.0f} s.")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
