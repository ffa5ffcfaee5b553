"""``fedledger bench privacy``: final accuracy vs per-round epsilon of DP-SGD participants (issue 13).

    fedledger bench privacy                        # digits, Dirichlet 0.5, n = 20, 10 rounds, epsilon 1 4 8 none, 3 seeds
    fedledger bench privacy --quick                # the CI size: n = 6, 2 rounds, epsilon 4 and none, 1 seed
    fedledger bench privacy --out bench-privacy/   # table.md and results.json there
    fedledger bench privacy --aggregators platform # only the platform's rule (half the time)

Every participant is honest and trains locally with the platform's LocalConfig (2 epochs, batch 32, SGD lr 0.05,
momentum 0.9); with an epsilon, through trainer/privacy.py (Opacus DP-SGD: Poisson sampling, per-sample clipping
at C = 1, Gaussian noise with the multiplier Opacus's get_noise_multiplier solves for that epsilon per round at
delta 1e-5, RDP accountant). Each round is aggregated two ways from the same updates' starting model: the platform's
committed rule (trainer.aggregation.evaluate_round with RuleConfig(), the median-referenced verification the
aggregator runs) and plain FedAvg (mean of the updates), as two separate trajectories. The epsilon column is per
round; the table also gives the total over all rounds by basic composition (what the PrivacyLedger sums) and by
RDP composition (what the auditor reports), for the median participant; "honest grouped" is the share of verdicts
that rule version 4's redundancy test put in a group (DP noise is the kind of noise it looks for, and every participant
here is honest, so each would be a false positive). Off-chain: the chain adds nothing here.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

CLIP_ONLY = "clip"  # an epsilon entry: per-sample clipping and Poisson sampling, noise multiplier 1e-9 (no privacy)
FULL = {"dataset": "digits", "alpha": 0.5, "participants": 20, "rounds": 10, "epsilons": ["1", "4", "8", "none"],
        "seeds": [0, 1, 2]}
QUICK = {"dataset": "digits", "alpha": 0.5, "participants": 6, "rounds": 2, "epsilons": ["4", "none"], "seeds": [0]}
AGGREGATORS = ("platform", "fedavg")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true", help="the CI size: n=6, 2 rounds, epsilon 4 and none, 1 seed")
    parser.add_argument("--epsilons", nargs="+", default=None,
                        help="per-round epsilons; 'none' trains without DP; 'clip' clips per sample without noise")
    parser.add_argument("--seeds", nargs="+", type=int, default=None)
    parser.add_argument("--participants", type=int, default=None)
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--alpha", type=float, default=None, help="Dirichlet label-skew concentration")
    parser.add_argument("--delta", type=float, default=1e-5, help="delta per round")
    parser.add_argument("--clip", type=float, default=1.0, help="per-sample clipping norm C")
    parser.add_argument("--lr", type=float, default=None,
                        help="local SGD learning rate of every participant (default: the platform's LocalConfig.lr)")
    parser.add_argument("--aggregators", nargs="+", choices=AGGREGATORS, default=list(AGGREGATORS),
                        help="platform: the committed rule (evaluate_round); fedavg: the plain mean")
    parser.add_argument("--out", type=Path, default=None, help="directory for table.md and results.json")


def run_cell(*, dataset: str, alpha: float, participants: int, rounds: int, epsilon: float | None, seed: int,
             delta: float, clip: float, aggregators: tuple[str, ...] = AGGREGATORS, lr: float | None = None,
             clip_only: bool = False) -> dict[str, Any]:
    """One (epsilon, seed) trajectory per aggregator; final test accuracy, honest rejections, privacy spent."""
    import torch

    from trainer.aggregation import AcceptedHistory, Submission, evaluate_round, flatten
    from trainer.data import dirichlet_partition, load_dataset
    from trainer.incentives import INITIAL_REPUTATION, next_reputation, weight
    from trainer.local import LocalConfig, train_local
    from trainer.model import ModelSpec, accuracy, init_params
    from trainer.privacy import PrivacyConfig, plan, rdp_composed_epsilon, train_local_dp
    from trainer.rules import RuleConfig, Status
    from trainer.serialization import serialize
    from trainer.simulation import local_seed

    data = load_dataset(dataset, seed=seed)
    parts = dirichlet_partition(data.y_train.numpy(), participants, alpha, seed=seed)
    spec = ModelSpec(data.num_features, data.num_classes)
    local = LocalConfig() if lr is None else LocalConfig(lr=lr)
    rule = RuleConfig()
    # sigma is solved once per participant (its data size fixes sample rate and steps); every round reuses it
    mechs = []
    if clip_only:
        mechs = [plan(PrivacyConfig(noise_multiplier=1e-9, delta=delta, max_grad_norm=clip), len(p), local) for p in parts]
    elif epsilon is not None:
        for p in parts:
            mechs.append(plan(PrivacyConfig(target_epsilon=epsilon, delta=delta, max_grad_norm=clip), len(p), local))
    names = [f"0x{i + 1:040x}" for i in range(participants)]
    out: dict[str, Any] = {"epsilon": CLIP_ONLY if clip_only else epsilon, "seed": seed}
    for agg in aggregators:
        params = init_params(spec, seed)
        previous = None
        reputation = dict.fromkeys(names, INITIAL_REPUTATION)
        past = AcceptedHistory(rule.history_rounds)
        rejected = grouped = 0
        for r in range(1, rounds + 1):
            updates = []
            for i in range(participants):
                idx = torch.from_numpy(parts[i])
                x, y = data.x_train[idx], data.y_train[idx]
                s = local_seed(seed, r, i)
                if not mechs:
                    updates.append(train_local(spec, params, x, y, local, seed=s))
                else:
                    cfg = PrivacyConfig(noise_multiplier=mechs[i].noise_multiplier, delta=delta, max_grad_norm=clip)
                    updates.append(train_local_dp(spec, params, x, y, local, cfg, seed=s)[0])
            if agg == "fedavg":
                params = {k: params[k] + torch.stack([u[k] for u in updates]).mean(dim=0) for k in params}
                continue
            result = evaluate_round(params, [Submission(n, serialize(u)) for n, u in zip(names, updates, strict=True)],
                                    rule, previous, reputation=reputation, history=past.source())
            past.record(torch.stack([flatten(u) for u in updates]).numpy(),
                        [v.status == Status.ACCEPTED for v in result.verdicts])
            previous, params = params, result.new_params
            for v in result.verdicts:
                reputation[v.participant] = next_reputation(reputation[v.participant], weight(v.status, v.score),
                                                            rule.reputation_decay_ppm)
                rejected += v.status != Status.ACCEPTED
                grouped += v.group_size > 1  # every participant is honest: any group is a false positive
        out[f"accuracy_{agg}"] = accuracy(spec, params, data.x_test, data.y_test)
        if agg == "platform":
            out["honest_rejection_rate"] = rejected / (rounds * participants)
            out["honest_grouped_rate"] = grouped / (rounds * participants)
    if mechs and not clip_only:
        per_round = sorted(m.epsilon for m in mechs)
        median = mechs[sorted(range(participants), key=lambda i: mechs[i].epsilon)[participants // 2]]
        out["epsilon_per_round_max"] = per_round[-1]
        out["epsilon_total_basic"] = rounds * median.epsilon_micro / 1e6
        out["epsilon_total_rdp"] = rdp_composed_epsilon([median] * rounds, rounds * delta)
        out["noise_multiplier_median"] = median.noise_multiplier
    return out


def summarize(cells: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for eps in sorted({c["epsilon"] for c in cells}, key=lambda e: (e is None, e == CLIP_ONLY, e if isinstance(e, float) else 0)):
        group = [c for c in cells if c["epsilon"] == eps]
        row: dict[str, Any] = {"epsilon": eps, "seeds": len(group)}
        for key in ("accuracy_platform", "accuracy_fedavg", "honest_rejection_rate", "honest_grouped_rate"):
            if any(key not in c for c in group):
                continue
            vals = [c[key] for c in group]
            row[key] = statistics.mean(vals)
            row[key + "_sd"] = statistics.stdev(vals) if len(vals) > 1 else 0.0
        for key in ("epsilon_total_basic", "epsilon_total_rdp", "noise_multiplier_median"):
            if isinstance(eps, float):
                row[key] = statistics.mean(c[key] for c in group)
        rows.append(row)
    return rows


def table_markdown(rows: list[dict[str, Any]], grid: dict[str, Any]) -> str:
    lines = [
        f"accuracy vs epsilon: {grid['dataset']}, Dirichlet {grid['alpha']}, n = {grid['participants']}, "
        f"{grid['rounds']} rounds, {len(grid['seeds'])} seeds (mean ± sd), delta {grid['delta']:g} per round, "
        f"clip {grid['clip']:g}, local lr {grid['lr']:g}",
        "",
        "| epsilon / round | sigma (median) | total epsilon, basic | total epsilon, RDP | accuracy, platform rule "
        "| accuracy, FedAvg | honest rejected | honest grouped |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        private = isinstance(r["epsilon"], float)
        eps = f"{r['epsilon']:g}" if private else ("none" if r["epsilon"] is None else "clip only (no noise)")
        sigma = f"{r['noise_multiplier_median']:.3f}" if private else "-"
        basic = f"{r['epsilon_total_basic']:.2f}" if private else "-"
        rdp = f"{r['epsilon_total_rdp']:.2f}" if private else "-"
        def acc(key: str) -> str:
            return f"{r[key]:.3f} ± {r[key + '_sd']:.3f}" if key in r else "-"

        rate = {k: f"{r[k]:.3f}" if k in r else "-" for k in ("honest_rejection_rate", "honest_grouped_rate")}
        lines.append(f"| {eps} | {sigma} | {basic} | {rdp} | {acc('accuracy_platform')} | {acc('accuracy_fedavg')} "
                     f"| {rate['honest_rejection_rate']} | {rate['honest_grouped_rate']} |")
    return "\n".join(lines) + "\n"


def _default_lr() -> float:
    from trainer.local import LocalConfig

    return LocalConfig.lr


def run(args: argparse.Namespace) -> int:
    import torch
    from rich.console import Console

    console = Console()
    preset = QUICK if args.quick else FULL
    grid = {
        "dataset": preset["dataset"],
        "alpha": args.alpha if args.alpha is not None else preset["alpha"],
        "participants": args.participants or preset["participants"],
        "rounds": args.rounds or preset["rounds"],
        "epsilons": args.epsilons or preset["epsilons"],
        "seeds": args.seeds if args.seeds is not None else preset["seeds"],
        "delta": args.delta,
        "clip": args.clip,
        "aggregators": list(args.aggregators),
        "lr": args.lr if args.lr is not None else _default_lr(),
    }
    epsilons: list[float | str | None] = []
    for e in grid["epsilons"]:
        if e.lower() == "none":
            epsilons.append(None)
            continue
        if e.lower() == CLIP_ONLY:
            epsilons.append(CLIP_ONLY)
            continue
        value = float(e)
        if not value > 0:
            raise ValueError(f"epsilons must be positive or 'none', got {e}")
        epsilons.append(value)
    torch.set_num_threads(1)
    started = time.perf_counter()
    cells = []
    with console.status("training") as status:
        for eps in epsilons:
            for seed in grid["seeds"]:
                status.update(f"epsilon {eps}, seed {seed}")
                cells.append(run_cell(dataset=grid["dataset"], alpha=grid["alpha"], participants=grid["participants"],
                                      rounds=grid["rounds"], epsilon=None if eps == CLIP_ONLY else eps, seed=seed,
                                      delta=grid["delta"], clip=grid["clip"], aggregators=tuple(args.aggregators),
                                      lr=grid["lr"], clip_only=eps == CLIP_ONLY))
                console.log(f"epsilon {eps}, seed {seed}: " + ", ".join(
                    f"{k} {v:.4f}" for k, v in cells[-1].items() if k.startswith("accuracy")))
    rows = summarize(cells)
    text = table_markdown(rows, grid)
    console.print(text, soft_wrap=True, markup=False, highlight=False)
    console.print(f"wall time {time.perf_counter() - started:.0f} s")
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "table.md").write_text(text)
        (args.out / "results.json").write_text(json.dumps({"grid": grid, "cells": cells, "rows": rows}, indent=2) + "\n")
        console.print(f"wrote {args.out / 'table.md'} and {args.out / 'results.json'}")
    return 0
