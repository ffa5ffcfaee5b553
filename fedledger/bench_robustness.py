"""`fedledger bench robustness`: attacks x defences over data sets, partitions, participants, Byzantine fractions and
seeds; final accuracy, backdoor success, the platform rule's score AUROC, rejection rates and reward shares.

One grid cell (data set, partition, n, fraction, seed) plays every (attack, defence) trajectory in lock-step
(``trainer.simulation.run_cell``); cells run in worker processes, one torch thread each. Outputs:

* ``--json PATH``: ``{"config", "cells": [one row per cell x attack x defence: dataset, partition, n, fraction, f,
  seed, attack, defense, final_accuracy, accuracy (per round), backdoor_success, and for rule-based defences
  score_auroc, attacker_reward_share, ...], "references": [per cell: honest-only FedAvg, the sybils' one-identity counterfactual, shards], "summary"}``;
* ``--out DIR``: ``table.md`` (the tables docs/robustness.md quotes), PNG plots (accuracy per round per defence,
  score AUROC, reward shares, the platform's gap to clean FedAvg) and ``results.json``.

``--quick`` is the CI grid (digits, Dirichlet 0.5, n = 20, 20 % Byzantine, every attack and defence, one seed,
3 rounds: ~10 s). ``--from-json PATH`` re-renders the table and plots from an earlier ``--json`` without training.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import statistics
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from pathlib import Path
from typing import Any

from trainer.attacks import ALL_ATTACKS
from trainer.data import DATASETS
from trainer.local import LocalConfig, add_local_steps_argument
from trainer.simulation import (
    BENCH_DEFENSES,
    CLEAN,
    KNOWN_DEFENSES,
    PARTITIONS,
    PLATFORM_RULES,
    RULE_VARIANTS,
    SYBILS,
    partition_alpha,
)

FULL: dict[str, Any] = {
    "datasets": list(DATASETS),
    "partitions": list(PARTITIONS),
    "participants": [20, 50],
    "fractions": [0.1, 0.2, 0.3, 0.4],
    "seeds": [0, 1, 2],
    "rounds": 20,
}
QUICK: dict[str, Any] = {
    "datasets": ["digits"],
    "partitions": ["dir0.5"],
    "participants": [20],
    "fractions": [0.2],
    "seeds": [0],
    "rounds": 3,
}
RULES = (*PLATFORM_RULES, *RULE_VARIANTS)  # the defences that score, reject and pay
TARGET_GAP = 0.03  # the platform rule should stay within 3 points of clean FedAvg (<= 30 % Byzantine, Dirichlet 0.5)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true",
                        help="the CI grid: digits, dir0.5, n=20, 20%%, 1 seed, 3 rounds")
    parser.add_argument("--datasets", nargs="+", choices=DATASETS, default=None)
    parser.add_argument("--partitions", nargs="+", default=None, help="iid, dir0.5, dir0.1 (any dir<alpha>)")
    parser.add_argument("--participants", nargs="+", type=int, default=None, metavar="N")
    parser.add_argument("--fractions", nargs="+", type=float, default=None, help="Byzantine fractions")
    parser.add_argument("--seeds", nargs="+", type=int, default=None)
    parser.add_argument("--rounds", type=int, default=None)
    add_local_steps_argument(parser)
    parser.add_argument("--attacks", nargs="+", choices=(CLEAN, *ALL_ATTACKS), default=None,
                        help="default: none (the clean reference) and every attack")
    parser.add_argument("--defenses", nargs="+", choices=KNOWN_DEFENSES, default=None,
                        help=f"default: {' '.join(BENCH_DEFENSES)}")
    parser.add_argument("--workers", type=int, default=None,
                        help="worker processes (default: CPU count, 1 for --quick)")
    parser.add_argument("--out", type=Path, default=None, help="directory for table.md, PNG plots and results.json")
    parser.add_argument("--json", type=Path, default=None, help="write the per-cell results as JSON")
    parser.add_argument("--from-json", type=Path, default=None, help="re-render table and plots from a results JSON")


def _grid(args: argparse.Namespace) -> dict[str, Any]:
    preset = QUICK if args.quick else FULL
    grid = {k: getattr(args, k) if getattr(args, k) is not None else v for k, v in preset.items()}
    attacks = args.attacks or [CLEAN, *ALL_ATTACKS]
    if CLEAN not in attacks:
        attacks = [CLEAN, *attacks]  # the clean trajectories are every comparison's reference
    grid["attacks"] = attacks
    grid["defenses"] = args.defenses or list(BENCH_DEFENSES)
    for p in grid["partitions"]:
        partition_alpha(p)  # raises on a bad name before any work starts
    grid["local_steps"] = args.local_steps
    if grid["rounds"] < 1:
        raise ValueError(f"--rounds must be >= 1, got {grid['rounds']}")
    for n in grid["participants"]:
        for fr in grid["fractions"]:
            f = int(round(fr * n))
            if not 0 < f or 2 * f >= n or ("multi_krum" in grid["defenses"] and 2 * f + 2 >= n):
                raise ValueError(f"fraction {fr} of n={n} gives f={f} attackers: the grid needs 0 < f and 2f < n "
                                 f"(2f + 2 < n with multi_krum)")
    return grid


def _cells(grid: dict[str, Any]) -> list[tuple[str, str, int, float, int]]:
    cells = [
        (d, p, n, fr, s)
        for d in grid["datasets"] for p in grid["partitions"] for n in grid["participants"]
        for fr in grid["fractions"] for s in grid["seeds"]
    ]
    # the most expensive first (digits, many participants), so the last workers do not idle behind one long cell
    return sorted(cells, key=lambda c: (-(c[2] * (3 if c[0] == "digits" else 1)), c))


def _worker_init(queue: Any) -> None:
    import torch

    torch.set_num_threads(1)
    global _QUEUE
    _QUEUE = queue


_QUEUE: Any = None


def _cell_config(spec: tuple[str, str, int, float, int], grid: dict[str, Any]) -> Any:
    from trainer.simulation import CellConfig

    d, p, n, fr, s = spec
    return CellConfig(d, p, n, fr, s, grid["rounds"], tuple(grid["attacks"]), tuple(grid["defenses"]),
                      LocalConfig.from_option(grid["local_steps"]))


def _run_one(spec: tuple[str, str, int, float, int], grid: dict[str, Any]) -> dict[str, Any]:
    from trainer.simulation import run_cell

    cfg = _cell_config(spec, grid)
    queue = _QUEUE
    return run_cell(cfg, on_round=(lambda r: queue.put(1)) if queue is not None else None)


def run_grid(grid: dict[str, Any], workers: int, console: Any) -> list[dict[str, Any]]:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    cells = _cells(grid)
    total = len(cells) * grid["rounds"]
    results: list[dict[str, Any]] = []
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("cell-rounds"),
               TimeElapsedColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console) as progress:
        task = progress.add_task(f"{len(cells)} cells", total=total)
        if workers <= 1:
            import torch

            threads = torch.get_num_threads()
            torch.set_num_threads(1)
            try:
                from trainer.simulation import run_cell

                for spec in cells:
                    results.append(run_cell(_cell_config(spec, grid), on_round=lambda r: progress.advance(task)))
            finally:
                torch.set_num_threads(threads)
            return results
        ctx = multiprocessing.get_context("spawn")
        with ctx.Manager() as manager:
            queue = manager.Queue()
            with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_worker_init, initargs=(queue,)) as pool:
                pending = {pool.submit(_run_one, c, grid) for c in cells}
                while pending:
                    done, pending = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
                    while not queue.empty():
                        queue.get_nowait()
                        progress.advance(task)
                    for fut in done:
                        results.append(fut.result())
                while not queue.empty():
                    queue.get_nowait()
                    progress.advance(task)
    return results


# ------------------------------------------------------------------------------------------------------- results


def flatten_results(cells: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per cell x attack x defence."""
    rows = []
    for cell in cells:
        for run in cell["runs"]:
            row = dict(cell["cell"])
            row.update({k: v for k, v in run.items() if k != "platform"})
            for k, v in (run.get("platform") or {}).items():
                row[k] = v
            rows.append(row)
    return sorted(rows, key=lambda r: (r["dataset"], r["partition"], r["n"], r["fraction"], r["seed"], r["attack"],
                                       r["defense"]))


def _mean(values: Iterable[float | None]) -> float | None:
    vals = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    return statistics.fmean(vals) if vals else None


def summarize(rows: Sequence[dict[str, Any]], cells: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Means over seeds per (dataset, partition, n, fraction, attack, defence), plus the clean references."""
    groups: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        groups[(r["dataset"], r["partition"], r["n"], r["fraction"], r["attack"], r["defense"])].append(r)
    clean: dict[tuple, float] = {}
    for (d, p, n, fr, a, df), rs in groups.items():
        if a == CLEAN and df == "fedavg":
            clean[(d, p, n, fr)] = _mean(r["final_accuracy"] for r in rs)  # type: ignore[assignment]
    honest_only: dict[tuple, list[float]] = defaultdict(list)
    for c in cells:
        if c.get("honest_only_fedavg"):
            k = (c["cell"]["dataset"], c["cell"]["partition"], c["cell"]["n"], c["cell"]["fraction"])
            honest_only[k].append(c["honest_only_fedavg"]["final_accuracy"])
    out = []
    for (d, p, n, fr, a, df), rs in sorted(groups.items()):
        accs = [r["final_accuracy"] for r in rs]
        entry: dict[str, Any] = {
            "dataset": d, "partition": p, "n": n, "fraction": fr, "attack": a, "defense": df, "seeds": len(rs),
            "final_accuracy": _mean(accs),
            "final_accuracy_std": statistics.pstdev(accs) if len(accs) > 1 else 0.0,
            "clean_fedavg_accuracy": clean.get((d, p, n, fr)),
            "honest_only_fedavg_accuracy": _mean(honest_only.get((d, p, n, fr), [])),
            "backdoor_success": _mean(r["backdoor_success"] for r in rs),
            "accuracy_per_round": [statistics.fmean(v) for v in zip(*(r["accuracy"] for r in rs), strict=True)],
        }
        if entry["clean_fedavg_accuracy"] is not None:
            entry["gap_to_clean_fedavg"] = entry["final_accuracy"] - entry["clean_fedavg_accuracy"]
        if df in RULES:
            for key in ("score_auroc", "reputation_auroc", "attacker_reward_share", "attacker_rejection_rate",
                        "honest_rejection_rate", "honest_reward_gini", "honest_reward_min_max",
                        "honest_starved_share", "attacker_stake_lost", "attacker_reward_per_identity",
                        "honest_stake_lost", "honest_reward_per_identity"):
                entry[key] = _mean(r.get(key) for r in rs)
            if a in SYBILS:
                entry["sybil_earnings_multiplier"] = _sybil_multiplier(rows, rs, cells)
        out.append(entry)
    return {"by_setting": out}


def _sybil_multiplier(rows: Sequence[dict[str, Any]], sybil_runs: Sequence[dict[str, Any]],
                      cells: Sequence[dict[str, Any]]) -> float | None:
    """What the sybil group (f wallets sending copies of participant 0's update, or training on slices of the f
    attackers' pooled data sets) earned, divided by what participant 0 earned as one honest identity with the same
    data: in the cell's ``sybil_alone`` run of the same rule (``split_alone`` for sybil_split: participant 0 trains on
    the pool; the other f - 1 identities do not exist), or, for results without it, participant 0 in the clean run
    (where f - 1 more honest participants compete for the budget). f means the identities multiply earnings f-fold,
    1 that they do not."""
    keys = ("dataset", "partition", "n", "fraction", "seed")
    alone_of = {tuple(c["cell"][k] for k in keys): c for c in cells}
    ratios = []
    for s in sybil_runs:
        cell = alone_of.get(tuple(s[k] for k in keys), {})
        counterfactual = cell.get("split_alone" if s["attack"] == "sybil_split" else "sybil_alone") or {}
        alone = counterfactual.get(s["defense"], {}).get("participant0_fed")
        if alone is None:
            clean = [r for r in rows if r["attack"] == CLEAN and r["defense"] == s["defense"] and
                     all(r[k] == s[k] for k in keys)]
            if not clean or not clean[0].get("rewards_fed"):
                continue
            alone = clean[0]["rewards_fed"][0]
        group = sum(s["rewards_fed"][: s["f"]])
        if alone > 0:
            ratios.append(group / alone)
    return _mean(ratios)


# ------------------------------------------------------------------------------------------------------- rendering


def _pct(x: float | None, signed: bool = False) -> str:
    if x is None:
        return "–"
    return f"{x * 100:+.1f}" if signed else f"{x * 100:.1f}"


def _num(x: float | None, digits: int = 2) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def render_markdown(result: dict[str, Any]) -> str:
    cfg = result["config"]
    summary = result["summary"]["by_setting"]
    idx = {(e["dataset"], e["partition"], e["n"], e["fraction"], e["attack"], e["defense"]): e for e in summary}
    defenses = cfg["grid"]["defenses"]
    attacks = cfg["grid"]["attacks"]
    rules = [d for d in defenses if d in RULES]
    g = cfg["grid"]
    lines = [
        "# Robustness benchmark results",
        "",
        f"Command: `{cfg['command']}`  ",
        f"Grid: data sets {', '.join(g['datasets'])}; partitions {', '.join(g['partitions'])}; n in "
        f"{g['participants']}; Byzantine fractions {g['fractions']}; seeds {g['seeds']}; {g['rounds']} rounds; "
        f"local training {LocalConfig.from_option(g.get('local_steps')).describe()}; {len(attacks) - 1} attacks + "
        f"clean; defences {', '.join(defenses)}.  ",
        f"{cfg['cells']} cells ({cfg['trajectories']} trajectories) in {cfg['wall_seconds']:.0f} s wall with "
        f"{cfg['workers']} worker(s). Accuracies are final test accuracy in %, means over seeds.",
        "",
    ]
    lines += _published_section(idx, g, defenses)
    if any(r in defenses for r in PLATFORM_RULES):
        lines += _target_section(idx, g, attacks, rules)
        lines += _incentive_section(summary, idx, g, attacks, rules)
        lines += _stake_section(summary, g, attacks, rules)
    lines += ["## Final accuracy per setting", "",
              "Rows: attacks; columns: defences; the last column is FedAvg over the honest participants only (an "
              "oracle that knows who attacks: the best any defence can do with the data left). ASR rows: the share "
              "of triggered test inputs (true class not the target) classified as the target, %; under `none` it "
              "is the trigger's natural rate, the floor for the backdoor rows.", ""]
    for d in g["datasets"]:
        for p in g["partitions"]:
            for n in g["participants"]:
                for fr in g["fractions"]:
                    if (d, p, n, fr, CLEAN, defenses[0]) not in idx:
                        continue
                    ho = idx[(d, p, n, fr, CLEAN, defenses[0])].get("honest_only_fedavg_accuracy")
                    lines += [f"### {d}, {p}, n = {n}, {int(round(fr * n))} Byzantine ({fr:.0%})", "",
                              "| attack | " + " | ".join(defenses) + " | honest-only FedAvg |",
                              "|---|" + "---:|" * (len(defenses) + 1)]
                    for a in attacks:
                        cells = [_pct(idx.get((d, p, n, fr, a, df), {}).get("final_accuracy")) for df in defenses]
                        lines.append(f"| {a} | " + " | ".join(cells) + f" | {_pct(ho) if a != CLEAN else '–'} |")
                        if a.startswith("backdoor") or a == CLEAN:
                            asr = [_pct(idx.get((d, p, n, fr, a, df), {}).get("backdoor_success")) for df in defenses]
                            lines.append(f"| {a} ASR | " + " | ".join(asr) + " | |")
                    lines.append("")
    return "\n".join(lines) + "\n"


def _avg(idx: dict, keys: Iterable[tuple], field: str) -> float | None:
    return _mean(idx[k].get(field) for k in keys if k in idx)


def _published_section(idx: dict, g: dict, defenses: Sequence[str]) -> list[str]:
    lines = ["## Beside the published relative figures", "",
             "Differences in accuracy points (ours: mean over data sets, n, fractions and seeds of the cells named; "
             "published: MNIST/CIFAR figures quoted in the issue). Compare the gaps, not absolute accuracies.", "",
             "| comparison | published | ours |", "|---|---|---|"]

    def keys(parts: Sequence[str], fr: Sequence[float] | None, attack: str, defense: str) -> list[tuple]:
        return [(d, p, n, f, attack, defense) for d in g["datasets"] for p in parts for n in g["participants"]
                for f in (fr or g["fractions"])]

    def gap(parts: Sequence[str], fr: Sequence[float] | None, attack: str, defense: str) -> float | None:
        a = _avg(idx, keys(parts, fr, attack, defense), "final_accuracy")
        c = _avg(idx, keys(parts, fr, CLEAN, "fedavg"), "final_accuracy")
        return None if a is None or c is None else a - c

    skew = [p for p in ("dir0.1",) if p in g["partitions"]] or [p for p in g["partitions"] if p != "iid"][:1]
    if "median" in defenses:
        if "iid" in g["partitions"]:
            lines.append(f"| coordinate-wise median, no attack, IID (vs clean FedAvg) | ~ -1 | "
                         f"{_pct(gap(['iid'], None, CLEAN, 'median'), True)} |")
        if skew:
            lines.append(f"| coordinate-wise median, no attack, label skew ({skew[0]}) | ~ -18 (extreme skew) | "
                         f"{_pct(gap(skew, None, CLEAN, 'median'), True)} |")
    fr20 = [f for f in g["fractions"] if abs(f - 0.2) < 1e-9]
    if skew and fr20:
        for df, pub in (("median", "~38 % absolute (i.e. ~ -60)"), ("centered_clipping", "75-98 % absolute"),
                        ("fedavg", "–"), *((r, "–") for r in PLATFORM_RULES)):
            if df in defenses:
                lines.append(f"| {df}, 20 % bit-flip, label skew ({skew[0]}), vs clean FedAvg | {pub} | "
                             f"{_pct(gap(skew, fr20, 'bitflip', df), True)} |")
    for attack in ("backdoor", "backdoor_adaptive"):
        for df in defenses:
            asr = _avg(idx, keys(g["partitions"], None, attack, df), "backdoor_success")
            if asr is None:
                continue
            base = _avg(idx, keys(g["partitions"], None, CLEAN, df), "backdoor_success")
            pub = "100 %" if df == "fedavg" and attack == "backdoor" else "–"
            lines.append(f"| {attack} success rate (ASR), {df}, all cells (no attack: {_pct(base)} %) | {pub} | "
                         f"{_pct(asr)} % |")
    return lines + [""]


def _target_section(idx: dict, g: dict, attacks: Sequence[str], rules: Sequence[str]) -> list[str]:
    parts = [p for p in g["partitions"] if p == "dir0.5"] or list(g["partitions"][:1])
    fracs = [f for f in g["fractions"] if f <= 0.3 + 1e-9]
    lines = [f"## The target: within {TARGET_GAP * 100:.0f} points of clean FedAvg at <= 30 % Byzantine ({parts[0]})",
             "",
             "Gap = rule's final accuracy - clean FedAvg's (all n participants honest), in points, per data set and "
             "n, worst fraction <= 30 % (mean over seeds). **Bold** misses the target. `oracle` is FedAvg over the "
             "honest participants only: the part of a gap no defence can close (their data is gone).", ""]
    cols = [(d, n) for d in g["datasets"] for n in g["participants"]]
    for rule in rules:
        if rule not in PLATFORM_RULES:
            continue
        lines += [f"### {rule}", "", "| attack | " + " | ".join(f"{d} n={n}" for d, n in cols) + " |",
                  "|---|" + "---:|" * len(cols)]
        for a in attacks:
            cells = []
            for d, n in cols:
                worst = None
                for fr in fracs:
                    e = idx.get((d, parts[0], n, fr, a, rule))
                    if e and e.get("gap_to_clean_fedavg") is not None:
                        worst = e["gap_to_clean_fedavg"] if worst is None else min(worst, e["gap_to_clean_fedavg"])
                txt = _pct(worst, True)
                cells.append(f"**{txt}**" if worst is not None and worst < -TARGET_GAP else txt)
            lines.append(f"| {a} | " + " | ".join(cells) + " |")
        oracle = []
        for d, n in cols:
            vals = [idx[(d, parts[0], n, fr, CLEAN, rule)].get("honest_only_fedavg_accuracy") for fr in fracs
                    if (d, parts[0], n, fr, CLEAN, rule) in idx]
            clean = [idx[(d, parts[0], n, fr, CLEAN, rule)].get("clean_fedavg_accuracy") for fr in fracs
                     if (d, parts[0], n, fr, CLEAN, rule) in idx]
            ok = [v - c for v, c in zip(vals, clean, strict=True) if v is not None and c is not None]
            oracle.append(_pct(min(ok), True) if ok else "–")
        lines += [f"| oracle (honest-only FedAvg) | " + " | ".join(oracle) + " |", ""]
    return lines


def _incentive_section(summary: Sequence[dict], idx: dict, g: dict, attacks: Sequence[str],
                       rules: Sequence[str]) -> list[str]:
    lines = ["## Scores and rewards of the rule-based defences", "",
             "Per attack, mean over every cell: AUROC of the committed scores separating honest (positive) from "
             "Byzantine participants (pooled over rounds; 1 = every honest score above every Byzantine one, "
             "0.5 = chance, 0 = inverted), the same for the final reputation, the Byzantine share of all rewards "
             "paid per fraction (their population share is the fraction itself), rejection rates, and for sybils "
             "the earnings multiplier per fraction (what the f wallets sending copies of participant 0's update "
             "earned together / what participant 0 earned as one identity with the same data, in a run where the other "
             "f - 1 identities do not exist; for sybil_split the wallets train on slices of the f attackers' pooled "
             "data sets and the one identity on the pool; platform_v6 pays by score x stake, platform_v7 also "
             "counts stake as votes in the median and platform_v8 also allows stake's multiple of the typical norm; "
             "their one identity locks the f minimum stakes the wallets "
             "lock; f = 2/4/6/8 of 20 and "
             "5/10/15/20 of 50: a multiplier near f means the identities multiply earnings, near 1 that they do not).",
             ""]
    for rule in rules:
        if rule not in PLATFORM_RULES:
            continue
        fr_label = "/".join(f"{f * 100:.0f}" for f in g["fractions"])
        lines += [f"### {rule}", "",
                  f"| attack | score AUROC | reputation AUROC | attacker reward share, % ({fr_label} %) | "
                  f"attacker rejected | honest rejected | sybil multiplier ({fr_label} %) |",
                  "|---|---:|---:|---|---:|---:|---|"]
        for a in attacks:
            es = [e for e in summary if e["attack"] == a and e["defense"] == rule]
            if not es:
                continue
            shares = []
            for fr in g["fractions"]:
                shares.append(_pct(_mean(e.get("attacker_reward_share") for e in es if e["fraction"] == fr)))
            sybil = " / ".join(_num(_mean(e.get("sybil_earnings_multiplier") for e in es if e["fraction"] == fr), 1)
                               for fr in g["fractions"]) if a in SYBILS else ""
            lines.append(
                f"| {a} | {_num(_mean(e.get('score_auroc') for e in es), 3)} | "
                f"{_num(_mean(e.get('reputation_auroc') for e in es), 3)} | {' / '.join(shares)} | "
                f"{_pct(_mean(e.get('attacker_rejection_rate') for e in es))} % | "
                f"{_pct(_mean(e.get('honest_rejection_rate') for e in es))} % | {sybil} |")
        lines += ["", f"Honest reward spread, no attack ({rule}): Gini of the honest participants' total rewards, "
                  "min/max ratio, share of honest participants paid < 10 % of the mean honest reward ('starved') "
                  "and honest rejection rate; mean over data sets, n and seeds.", "",
                  "| partition | Gini | min/max | starved | honest rejected |", "|---|---:|---:|---:|---:|"]
        for p in g["partitions"]:
            es = [e for e in summary if e["attack"] == CLEAN and e["defense"] == rule and e["partition"] == p]
            lines.append(f"| {p} | {_num(_mean(e.get('honest_reward_gini') for e in es), 3)} | "
                         f"{_num(_mean(e.get('honest_reward_min_max') for e in es), 3)} | "
                         f"{_pct(_mean(e.get('honest_starved_share') for e in es))} % | "
                         f"{_pct(_mean(e.get('honest_rejection_rate') for e in es))} % |")
        lines.append("")
    return lines


def _stake_section(summary: Sequence[dict], g: dict, attacks: Sequence[str], rules: Sequence[str]) -> list[str]:
    """Stake economics: per identity, what an attack cost in stake (trainer/incentives.slashed of a minimum stake
    per slashable rejection: the identity must top up to the minimum before it may commit again) against what it
    earned, beside an honest identity."""
    fr_label = "/".join(f"{f * 100:.0f}" for f in g["fractions"])
    lines = ["## Stake economics (attacker cost vs reward)", "",
             "Per identity, mean over cells, by Byzantine fraction: the stake an attacker burned (in minimum stakes: "
             "every identity stakes the minimum at registration; each rejection as poisoned burns 10 % of it, and "
             "an identity below the minimum must top up before it may commit again, so each costs 0.1) and the FED "
             "it earned over all rounds, beside an honest identity in the same runs. Every identity locks one "
             "minimum stake while it takes part: f sybil identities lock f stakes.", ""]
    for rule in (r for r in rules if r in PLATFORM_RULES):
        lines += [f"### {rule}", "",
                  f"| attack | attacker stake lost ({fr_label} %) | attacker FED earned ({fr_label} %) | "
                  f"honest stake lost | honest FED earned |", "|---|---|---|---:|---:|"]
        for a in attacks:
            es = [e for e in summary if e["attack"] == a and e["defense"] == rule]
            if not es or a == CLEAN:
                continue

            def by_fraction(key: str, digits: int, es: list[dict] = es) -> str:
                return " / ".join(_num(_mean(e.get(key) for e in es if e["fraction"] == fr), digits)
                                  for fr in g["fractions"])

            lines.append(f"| {a} | {by_fraction('attacker_stake_lost', 3)} | "
                         f"{by_fraction('attacker_reward_per_identity', 1)} | "
                         f"{_num(_mean(e.get('honest_stake_lost') for e in es), 3)} | "
                         f"{_num(_mean(e.get('honest_reward_per_identity') for e in es), 1)} |")
        lines.append("")
    return lines


def render_plots(result: dict[str, Any], out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary = result["summary"]["by_setting"]
    g = result["config"]["grid"]
    idx = {(e["dataset"], e["partition"], e["n"], e["fraction"], e["attack"], e["defense"]): e for e in summary}
    defenses, attacks = g["defenses"], g["attacks"]
    written: list[Path] = []
    fr = min(g["fractions"], key=lambda f: abs(f - 0.2))
    for d, p, n in ((d, p, n) for d in g["datasets"] for p in g["partitions"] for n in g["participants"]):
        cols = 4
        rows = math.ceil(len(attacks) / cols)
        fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 2.8 * rows), sharex=True, sharey=True,
                                 squeeze=False)
        for ax, a in zip(axes.flat, attacks, strict=False):
            for df in defenses:
                e = idx.get((d, p, n, fr, a, df))
                if e:
                    ax.plot(range(1, len(e["accuracy_per_round"]) + 1), e["accuracy_per_round"], label=df,
                            lw=1.4, ls="--" if df == "fedavg" else "-")
            ax.set_title(a, fontsize=10)
            ax.set_ylim(0, 1)
            ax.grid(alpha=0.3)
        for ax in axes.flat[len(attacks):]:
            ax.axis("off")
        axes.flat[0].legend(fontsize=7, loc="lower right")
        fig.supxlabel("round")
        fig.supylabel("test accuracy")
        fig.suptitle(f"{d}, {p}, n={n}, {fr:.0%} Byzantine: accuracy per round per defence (mean over seeds)")
        fig.tight_layout()
        path = out / f"accuracy_rounds_{d}_{p}_n{n}_f{int(round(fr * 100))}.png"
        fig.savefig(path, dpi=72)
        plt.close(fig)
        written.append(path)
    rules = [r for r in PLATFORM_RULES if r in defenses]
    byz = [a for a in attacks if a != CLEAN]
    if rules and byz:
        fig, axes = plt.subplots(1, len(rules), figsize=(6 * len(rules), 0.4 * len(byz) + 2), squeeze=False)
        for ax, rule in zip(axes.flat, rules, strict=True):
            grid = [[_mean(e.get("score_auroc") for e in summary if e["attack"] == a and e["defense"] == rule and
                           e["fraction"] == f) for f in g["fractions"]] for a in byz]
            vals = [[math.nan if v is None else v for v in row] for row in grid]
            im = ax.imshow(vals, vmin=0, vmax=1, cmap="RdYlGn", aspect="auto")
            ax.set_yticks(range(len(byz)), byz if ax is axes.flat[0] else [])
            ax.set_xticks(range(len(g["fractions"])), [f"{f:.0%}" for f in g["fractions"]])
            for i, row in enumerate(vals):
                for j, v in enumerate(row):
                    if not math.isnan(v):
                        ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=8)
            ax.set_title(f"{rule}: score AUROC, honest vs Byzantine")
            ax.set_xlabel("Byzantine fraction")
        fig.colorbar(im, ax=axes.ravel().tolist(), shrink=0.8)
        path = out / "score_auroc.png"
        fig.savefig(path, dpi=90, bbox_inches="tight")
        plt.close(fig)
        written.append(path)

        fig, axes = plt.subplots(1, len(rules) + 1, figsize=(6 * (len(rules) + 1), 4.5), squeeze=False)
        width = 0.8 / len(g["fractions"])
        for ax, rule in zip(axes.flat, rules, strict=False):
            for j, f in enumerate(g["fractions"]):
                vals = [_mean(e.get("attacker_reward_share") for e in summary if e["attack"] == a and
                              e["defense"] == rule and e["fraction"] == f) or 0.0 for a in byz]
                ax.bar([i + j * width for i in range(len(byz))], vals, width, label=f"{f:.0%} Byzantine")
                ax.axhline(f, color=f"C{j}", ls=":", lw=1)
            ax.set_xticks([i + 0.4 - width / 2 for i in range(len(byz))], byz, rotation=60, ha="right", fontsize=8)
            ax.set_ylim(0, 1)
            ax.set_title(f"{rule}: attackers' share of rewards (dotted: population share)")
            ax.legend(fontsize=7)
        ax = axes.flat[len(rules)]
        for k, rule in enumerate(rules):
            vals = [_mean(e.get("honest_reward_gini") for e in summary if e["attack"] == CLEAN and
                          e["defense"] == rule and e["partition"] == p) or 0.0 for p in g["partitions"]]
            ax.bar([i + k * 0.4 for i in range(len(g["partitions"]))], vals, 0.4, label=rule)
        ax.set_xticks([i + 0.2 for i in range(len(g["partitions"]))], g["partitions"])
        ax.set_title("honest reward Gini, no attack (0 = equal)")
        ax.legend(fontsize=7)
        fig.tight_layout()
        path = out / "reward_shares.png"
        fig.savefig(path, dpi=90)
        plt.close(fig)
        written.append(path)

        parts = [p for p in g["partitions"] if p == "dir0.5"] or g["partitions"][:1]
        fig, axes = plt.subplots(1, len(rules), figsize=(5 * len(rules), 0.4 * len(attacks) + 2), squeeze=False)
        for ax, rule in zip(axes.flat, rules, strict=True):
            vals = [[_mean(e.get("gap_to_clean_fedavg") for e in summary if e["attack"] == a and e["defense"] == rule
                           and e["fraction"] == f and e["partition"] == parts[0]) for f in g["fractions"]]
                    for a in attacks]
            vals = [[math.nan if v is None else v * 100 for v in row] for row in vals]
            ax.imshow(vals, vmin=-20, vmax=5, cmap="RdYlGn", aspect="auto")
            for i, row in enumerate(vals):
                for j, v in enumerate(row):
                    if not math.isnan(v):
                        ax.text(j, i, f"{v:+.1f}", ha="center", va="center", fontsize=8)
            ax.set_yticks(range(len(attacks)), attacks if ax is axes.flat[0] else [])
            ax.set_xticks(range(len(g["fractions"])), [f"{f:.0%}" for f in g["fractions"]])
            ax.set_title(f"{rule}: points vs clean FedAvg")
        fig.suptitle(f"{parts[0]}, mean over data sets, n and seeds")
        fig.tight_layout()
        path = out / "gap_to_clean_fedavg.png"
        fig.savefig(path, dpi=90)
        plt.close(fig)
        written.append(path)
    return written


def _console_table(console: Any, result: dict[str, Any]) -> None:
    from rich.table import Table

    summary = result["summary"]["by_setting"]
    g = result["config"]["grid"]
    for d in g["datasets"]:
        for p in g["partitions"]:
            for n in g["participants"]:
                for fr in g["fractions"]:
                    es = {(e["attack"], e["defense"]): e for e in summary if (e["dataset"], e["partition"], e["n"],
                                                                             e["fraction"]) == (d, p, n, fr)}
                    if not es:
                        continue
                    t = Table(title=f"final accuracy: {d}, {p}, n={n}, {fr:.0%} Byzantine")
                    t.add_column("attack")
                    for df in g["defenses"]:
                        t.add_column(df, justify="right")
                    for a in g["attacks"]:
                        t.add_row(a, *[_num(es.get((a, df), {}).get("final_accuracy"), 3) for df in g["defenses"]])
                    console.print(t)


def _write_outputs(result: dict[str, Any], args: argparse.Namespace, console: Any) -> None:
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1, sort_keys=True))
        console.print(f"wrote {args.json}")
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "results.json").write_text(json.dumps(result, indent=1, sort_keys=True))
        (args.out / "table.md").write_text(render_markdown(result))
        plots = render_plots(result, args.out)
        console.print(f"wrote {args.out / 'table.md'}, {args.out / 'results.json'} and {len(plots)} plots")


def _command(grid: dict[str, Any], quick: bool) -> str:
    """The grid as an explicit command line (what reproduces this result)."""
    parts = ["fedledger bench robustness"] + (["--quick"] if quick else [])
    for key in ("datasets", "partitions", "participants", "fractions", "seeds"):
        parts.append(f"--{key} " + " ".join(str(v) for v in grid[key]))
    parts.append(f"--rounds {grid['rounds']}")
    if grid.get("local_steps") != LocalConfig.steps:  # results from before the option: epochs
        parts.append(f"--local-steps {grid['local_steps'] or 'epochs'}")
    if grid["attacks"] != [CLEAN, *ALL_ATTACKS]:
        parts.append("--attacks " + " ".join(grid["attacks"]))
    if grid["defenses"] != list(BENCH_DEFENSES):
        parts.append("--defenses " + " ".join(grid["defenses"]))
    return " ".join(parts)


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    console = Console()
    if args.from_json:
        result = json.loads(args.from_json.read_text())
        result["summary"] = summarize(result["cells"], result["references"])
        _write_outputs(result, args, console)
        return 0
    try:
        grid = _grid(args)
    except ValueError as exc:
        console.print(f"[red]error:[/] {exc}")
        return 2
    workers = args.workers or (1 if args.quick else (os.cpu_count() or 1))
    workers = max(1, min(workers, len(_cells(grid))))
    started = time.perf_counter()
    cells = run_grid(grid, workers, console)
    wall = time.perf_counter() - started
    rows = flatten_results(cells)
    references = [{"cell": c["cell"], "honest_only_fedavg": c["honest_only_fedavg"],
                   "sybil_alone": c.get("sybil_alone", {}), "split_alone": c.get("split_alone", {}),
                   "partition_method": c["partition_method"], "shard_sizes": c["shard_sizes"], "seconds": c["seconds"],
                   "timing": c["timing"], "honest_min_pair_distance_ratio": c["honest_min_pair_distance_ratio"]}
                  for c in cells]
    result = {
        "config": {
            "command": _command(grid, args.quick),
            "grid": grid, "workers": workers, "wall_seconds": round(wall, 1), "cells": len(cells),
            "trajectories": len(rows),
        },
        "cells": rows,
        "references": references,
    }
    result["summary"] = summarize(rows, references)
    if args.quick or len(cells) <= 4:
        _console_table(console, result)
    console.print(f"{len(cells)} cells, {len(rows)} trajectories in {wall:.1f} s")
    _write_outputs(result, args, console)
    return 0
