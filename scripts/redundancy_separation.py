"""How far apart rule version 4's pair statistic puts honest pairs and perturbed copies, on real local updates.

For each data set, partition and n: n honest participants train along a FedAvg trajectory (the simulation's local
training and seeds); at the rounds measured, f = 30 % of n perturbed copies of participant 0's update (seeded noise
of 0.25 / 1.0 / 2.0 x its norm, trainer.attacks.perturbed_copy, as the `sybil_perturbed` attack sends) join the
honest updates, and trainer.redundancy.RedundancyTest (the rule's own code, on the round's subset columns) tests
every pair. Prints, per setting, the smallest t over honest pairs, the largest t over copy pairs, the smallest t over
copy-honest pairs, and how many honest or copy-honest pairs the default rule would call redundant.

    .venv/bin/python scripts/redundancy_separation.py [--out docs/robustness/v4/redundancy.md]
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
from trainer.attacks import perturbed_copy  # noqa: E402
from trainer.data import load_dataset  # noqa: E402
from trainer.local import LocalConfig, train_local  # noqa: E402
from trainer.model import ModelSpec, init_params  # noqa: E402
from trainer.redundancy import RedundancyTest  # noqa: E402
from trainer.rules import RuleConfig  # noqa: E402
from trainer.simulation import local_seed, partition_indices  # noqa: E402

NOISE = (0.25, 1.0, 2.0)


def measure(dataset: str, partition: str, n: int, rounds: tuple[int, ...], seed: int, rule: RuleConfig) -> list[dict]:
    data = load_dataset(dataset, seed=seed)
    parts, _ = partition_indices(data.y_train.numpy(), n, partition, seed)
    spec = ModelSpec(data.num_features, data.num_classes)
    params = init_params(spec, seed)
    f = max(2, round(0.3 * n))
    out = []
    for r in range(1, max(rounds) + 1):
        ups = []
        for i in range(n):
            idx = torch.from_numpy(parts[i])
            u = train_local(spec, params, data.x_train[idx], data.y_train[idx], LocalConfig(),
                            seed=local_seed(seed, r, i))
            ups.append(agg.flatten(u))
        honest = torch.stack(ups)
        if r in rounds:
            for noise in NOISE:
                copies = torch.stack([perturbed_copy(honest[0], seed=1000 + k, ratio=noise) for k in range(f)])
                stack = torch.cat([copies, honest[1:]]).numpy()  # participant 0 is the copies' source
                cols = agg.subset_columns(stack.shape[1], agg.subset_seed(
                    [hashlib.sha256(row.tobytes()).digest() for row in stack], stack.shape[1]))
                test = RedundancyTest(np.ascontiguousarray(stack[:, cols]), ratio=rule.redundancy_ratio,
                                      share=rule.redundancy_share,
                                      min_third_parties=rule.redundancy_min_third_parties)
                m = len(stack)
                pairs = {(i, j): test.pair(i, j) for i, j in itertools.combinations(range(m), 2)}
                hon = [p for (i, j), p in pairs.items() if i >= f]
                cop = [p for (i, j), p in pairs.items() if j < f]
                mix = [p for (i, j), p in pairs.items() if i < f <= j]
                out.append({
                    "dataset": dataset, "partition": partition, "n": n, "round": r, "noise": noise, "f": f,
                    "columns": len(cols), "enabled": test.enabled,
                    "honest_min_t": min(p.t for p in hon), "copies_max_t": max(p.t for p in cop),
                    "mixed_min_t": min(p.t for p in mix),
                    "honest_grouped": sum(p.redundant for p in hon), "honest_pairs": len(hon),
                    "mixed_grouped": sum(p.redundant for p in mix), "mixed_pairs": len(mix),
                    "copies_grouped": sum(p.redundant for p in cop), "copy_pairs": len(cop),
                })
        params = agg.unflatten(agg.flatten(params) + honest.mean(0), {k: v.shape for k, v in params.items()})
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--datasets", nargs="+", default=["digits", "breast_cancer"])
    p.add_argument("--partitions", nargs="+", default=["iid", "dir0.5", "dir0.1"])
    p.add_argument("--participants", nargs="+", type=int, default=[20, 50])
    p.add_argument("--rounds", nargs="+", type=int, default=[1, 5, 10])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path)
    args = p.parse_args()
    rule = RuleConfig()
    t0 = time.perf_counter()
    rows = []
    for d, part, n in itertools.product(args.datasets, args.partitions, args.participants):
        rows += measure(d, part, n, tuple(args.rounds), args.seed, rule)
    lines = [
        "# Rule v4's pair statistic on real updates",
        "",
        f"`.venv/bin/python scripts/redundancy_separation.py` (seed {args.seed}, rounds {args.rounds} of a FedAvg "
        f"trajectory, 30 % perturbed copies of participant 0; {time.perf_counter() - t0:.0f} s). Threshold: "
        f"t <= {rule.redundancy_ratio} and share <= {rule.redundancy_share}. `grouped` counts pairs the default rule "
        "calls redundant.",
        "",
        "| data set | partition | n | noise x norm | honest min t | copies max t | copy-honest min t | honest pairs "
        "grouped | copy-honest pairs grouped | copy pairs grouped |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for (d, part, n, noise), group in itertools.groupby(
            sorted(rows, key=lambda x: (x["dataset"], x["partition"], x["n"], x["noise"])),
            key=lambda x: (x["dataset"], x["partition"], x["n"], x["noise"])):
        g = list(group)
        lines.append(
            f"| {d} | {part} | {n} | {noise} | {min(x['honest_min_t'] for x in g):.2f} | "
            f"{max(x['copies_max_t'] for x in g):.2f} | {min(x['mixed_min_t'] for x in g):.2f} | "
            f"{sum(x['honest_grouped'] for x in g)} of {sum(x['honest_pairs'] for x in g)} | "
            f"{sum(x['mixed_grouped'] for x in g)} of {sum(x['mixed_pairs'] for x in g)} | "
            f"{sum(x['copies_grouped'] for x in g)} of {sum(x['copy_pairs'] for x in g)} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
