"""How often rule version 4's pair test groups two honest updates in small rounds (few third parties).

Honest participants only (no copies): n participants train along a FedAvg trajectory (the simulation's local training
and seeds, at local learning rates 0.05, the platform's default, and 0.5, the DP table's), and
trainer.redundancy.RedundancyTest, with no minimum of third parties, tests every pair of every round on the round's
subset columns. Every pair it calls redundant is a false positive. The rule's ``redundancy_min_third_parties`` is
chosen from this table: the test runs only when a round has at least that many third parties per pair.

With ``--history R`` it measures rule version 5's small rounds: the accepted updates of the previous R rounds (on
IPFS, their CIDs and verdicts on-chain, so an auditor takes the same rows; here every honest update, as all were
accepted) join the third parties, newest round first, at most trainer.redundancy.history_room of them. The same
round is then tested again with two copies of participant 0's update perturbed by 0.25 and by 1 norm of fresh noise
(trainer.attacks.perturbed_copy, as the sybil_perturbed attack makes them), and the table reports how often each copy
is grouped with its source (it should be always). Version 5's default, redundancy_history_rounds, is chosen from it.

    .venv/bin/python scripts/redundancy_small_rounds.py [--out docs/robustness/v4/small_rounds.md]
    .venv/bin/python scripts/redundancy_small_rounds.py --history 2 --participants 4 6 8 10 12 14 \\
        --out docs/robustness/v5/small_rounds_history.md
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
from trainer.aggregation import AcceptedHistory  # noqa: E402
from trainer.attacks import perturbed_copy  # noqa: E402
from trainer.data import load_dataset  # noqa: E402
from trainer.local import LocalConfig, train_local  # noqa: E402
from trainer.model import ModelSpec, init_params  # noqa: E402
from trainer.redundancy import RedundancyTest, history_room  # noqa: E402
from trainer.rules import RuleConfig  # noqa: E402
from trainer.simulation import local_seed, partition_indices  # noqa: E402


COPY_NOISE = (0.25, 1.0)  # --history: the two perturbed copies of participant 0 in each round


def measure(dataset: str, partition: str, n: int, lr: float, seed: int, rounds: int, rule: RuleConfig,
            history: int = 0, newcomers: int = 0) -> tuple[int, int, float, list[int], int, int, int]:
    """(honest pairs grouped, pairs tested, smallest honest t, copies grouped with their source per COPY_NOISE,
    rounds with copies, newcomer pairs grouped, newcomer pairs tested) over the rounds of one honest FedAvg
    trajectory. With ``history``, as rule version 5 takes them: the previous rounds' updates, newest round first, at
    most ``history_room`` of them, are third parties, and only rounds after ``history`` earlier ones are counted.
    ``newcomers``: participants 0 .. newcomers - 1 have no earlier updates (they join in every measured round: none of
    theirs is in the history); pairs of two of them are counted apart."""
    data = load_dataset(dataset, seed=seed)
    parts, _ = partition_indices(data.y_train.numpy(), n, partition, seed)
    spec = ModelSpec(data.num_features, data.num_classes)
    params = init_params(spec, seed)
    grouped, tested, smallest, new_grouped, new_tested = 0, 0, float("inf"), 0, 0
    copies_grouped, copy_rounds = [0] * len(COPY_NOISE), 0
    past = AcceptedHistory(history)  # every honest update of the earlier rounds (all of them accepted, as measured)
    for r in range(1, rounds + 1):
        ups = []
        for i in range(n):
            idx = torch.from_numpy(parts[i])
            ups.append(agg.flatten(train_local(spec, params, data.x_train[idx], data.y_train[idx], LocalConfig(lr=lr),
                                               seed=local_seed(seed, r, i))))
        stack = torch.stack(ups).numpy()
        if len(past.past) == history:  # every round without history
            test = pair_test(stack, past if history else None, rule)
            for i, j in itertools.combinations(range(n), 2):
                p = test.pair(i, j)
                if j < newcomers:
                    new_grouped += p.redundant
                    new_tested += 1
                    continue
                grouped += p.redundant
                tested += 1
                smallest = min(smallest, p.t)
            if history:  # the same round with two perturbed copies of participant 0 (a sybil's)
                copies = [perturbed_copy(ups[0], seed=1_000 * r + c, ratio=ratio).numpy()
                          for c, ratio in enumerate(COPY_NOISE)]
                with_copies = pair_test(np.concatenate([stack, np.stack(copies)]), past, rule)
                copy_rounds += 1
                for c in range(len(COPY_NOISE)):
                    copies_grouped[c] += with_copies.pair(0, n + c).redundant
        if history:
            past.record(stack, [i >= newcomers for i in range(n)])
        params = agg.unflatten(agg.flatten(params) + torch.from_numpy(stack.mean(0)),
                               {k: v.shape for k, v in params.items()})
    return grouped, tested, smallest, copies_grouped, copy_rounds, new_grouped, new_tested


def pair_test(rows: np.ndarray, past: AcceptedHistory | None, rule: RuleConfig) -> RedundancyTest:
    """The round's pair test on its subset columns (no minimum of third parties), with version 5's history rows."""
    cols = agg.subset_columns(rows.shape[1], agg.subset_seed(
        [hashlib.sha256(row.tobytes()).digest() for row in rows], rows.shape[1]))
    extra = None
    if past is not None:
        extra = past.rows(cols, history_room(len(rows), len(cols), rule.redundancy_ratio))
    return RedundancyTest(np.ascontiguousarray(rows[:, cols]), ratio=rule.redundancy_ratio,
                          share=rule.redundancy_share, min_third_parties=1, extra=extra)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--datasets", nargs="+", default=["digits", "breast_cancer"])
    p.add_argument("--partitions", nargs="+", default=["iid", "dir0.5", "dir0.1"])
    p.add_argument("--participants", nargs="+", type=int, default=[6, 8, 10, 12, 14, 16, 20, 30])
    p.add_argument("--lrs", nargs="+", type=float, default=[0.05, 0.5])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--history", type=int, default=0,
                   help="previous rounds whose updates join the third parties (a study, not the rule)")
    p.add_argument("--newcomers", type=int, default=0,
                   help="with --history: this many participants have no earlier updates (pairs of them apart)")
    p.add_argument("--out", type=Path)
    args = p.parse_args()
    torch.set_num_threads(1)
    rule = RuleConfig()
    t0 = time.perf_counter()
    if args.history:
        return study_history(args, rule, t0)
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
            g, t, s, *_ = measure(d, part, n, lr, seed, args.rounds, rule)
            grouped, tested, smallest = grouped + g, tested + t, min(smallest, s)
            if g > worst_count:
                worst, worst_count = f"{d} {part} seed {seed}: {g}", g
        lines.append(f"| {n} ({n - 2}) | {lr:g} | {grouped} of {tested} | {100 * grouped / tested:.2f} % | "
                     f"{smallest:.2f} | {worst or '-'} |")
        print(lines[-1], flush=True)
    return finish(lines, t0, args.out)


def study_history(args: argparse.Namespace, rule: RuleConfig, t0: float) -> int:
    lines = [
        "# Rule version 5's small rounds: the previous rounds' accepted updates as extra third parties",
        "",
        f"`.venv/bin/python scripts/redundancy_small_rounds.py --history {args.history} "
        f"{f'--newcomers {args.newcomers} ' if args.newcomers else ''}--participants "
        f"{' '.join(map(str, args.participants))}` (data sets {', '.join(args.datasets)}; partitions "
        f"{', '.join(args.partitions)}; seeds {args.seeds}; rounds {args.history + 1}-{args.rounds} of an honest "
        f"FedAvg trajectory; threshold t <= {rule.redundancy_ratio}, share <= {rule.redundancy_share}, no minimum). "
        f"Third parties of a pair: the round's other updates and the updates of the previous {args.history} "
        "round(s), as version 5 takes them (newest round first, within `history_room`); the copy columns test the "
        "same round again with two perturbed copies of participant 0 (0.25 and 1 norm of fresh noise). The rule "
        f"runs the test when the third parties number at least {rule.redundancy_min_third_parties}; version 4 ran "
        f"it only from {rule.redundancy_min_third_parties + 2} representatives."
        + (f" Participants 0-{args.newcomers - 1} are newcomers: none of their updates is in the history (they "
           "join in every measured round); the newcomer column counts the pairs of two of them, the other columns "
           "every other pair." if args.newcomers else ""),
        "",
        "| n (third parties) | local lr | honest pairs grouped | share | smallest t | copy 0.25 grouped | "
        "copy 1.0 grouped |" + (" newcomer pairs grouped |" if args.newcomers else ""),
        "|---|---:|---:|---:|---:|---:|---:|" + ("---:|" if args.newcomers else ""),
    ]
    for n, lr in itertools.product(args.participants, args.lrs):
        grouped = tested = rounds = new_grouped = new_tested = 0
        smallest, copies = float("inf"), [0] * len(COPY_NOISE)
        for d, part, seed in itertools.product(args.datasets, args.partitions, args.seeds):
            g, t, s, c, k, ng, nt = measure(d, part, n, lr, seed, args.rounds, rule, args.history, args.newcomers)
            grouped, tested, smallest, rounds = grouped + g, tested + t, min(smallest, s), rounds + k
            new_grouped, new_tested = new_grouped + ng, new_tested + nt
            copies = [a + b for a, b in zip(copies, c)]
        third = n - 2 + args.history * (n - args.newcomers)  # the honest pairs' (the copies' rounds have two more)
        lines.append(f"| {n} ({third}) | {lr:g} | {grouped} of {tested} | {100 * grouped / tested:.2f} % | "
                     f"{smallest:.2f} | " + " | ".join(f"{c} of {rounds}" for c in copies) + " |"
                     + (f" {new_grouped} of {new_tested} |" if args.newcomers else ""))
        print(lines[-1], flush=True)
    return finish(lines, t0, args.out)


def finish(lines: list[str], t0: float, out: Path | None) -> int:
    lines.insert(3, f"{time.perf_counter() - t0:.0f} s.")
    text = "\n".join(lines) + "\n"
    print(text)
    if out:
        out.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
