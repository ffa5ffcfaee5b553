"""Why the rule rejects honest updates, by local training: the verdicts' statuses with no attack.

Runs the robustness bench's platform trajectory (rule version 5, Dirichlet 0.5, no attacker) for each
``--local-steps`` setting and counts every verdict's status over all rounds and seeds.

    .venv/bin/python scripts/rejection_reasons.py --dataset breast_cancer --participants 50 --local-steps epochs 6
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import trainer.simulation as sim  # noqa: E402
from trainer.data import DATASETS  # noqa: E402
from trainer.local import LocalConfig, add_local_steps_argument  # noqa: E402
from trainer.rules import Status  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", choices=DATASETS, default="breast_cancer")
    p.add_argument("--participants", type=int, default=50)
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    p.add_argument("--rounds", type=int, default=20)
    add_local_steps_argument(p, nargs="+")
    args = p.parse_args()
    torch.set_num_threads(1)
    tally: Counter[str] = Counter()
    evaluate = sim.evaluate_round

    def counting(*a, **k):  # the bench calls trainer.simulation.evaluate_round once per platform round
        out = evaluate(*a, **k)
        tally.update(v.status.name for v in out.verdicts)
        return out

    sim.evaluate_round = counting
    print(f"{args.dataset}, n = {args.participants}, Dirichlet 0.5, no attack, seeds {args.seeds}, {args.rounds} rounds")
    verdicts = [s for s in Status if not s.is_validity_failure]  # honest blobs are always valid
    print("| local training | " + " | ".join(s.name for s in verdicts) + " | time |")
    print("|---|" + "---:|" * (len(verdicts) + 1))
    for steps in args.local_steps:
        tally.clear()
        t0 = time.perf_counter()
        for seed in args.seeds:
            cfg = sim.CellConfig(args.dataset, "dir0.5", args.participants, 0.1, seed, args.rounds, ("none",),
                                 ("platform",), LocalConfig.from_option(steps))
            sim.run_cell(cfg)
        label = LocalConfig.from_option(steps).label()
        print(f"| {label} | " + " | ".join(str(tally[s.name]) for s in verdicts)
              + f" | {time.perf_counter() - t0:.0f} s |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
