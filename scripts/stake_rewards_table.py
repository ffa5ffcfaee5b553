"""What sybils earn under rule version 5 (rewards by score), version 6 (by score x stake), version 7 (version 6
with stake as votes in the reference median) and version 8 (version 7 allowing stake's multiple of the typical
norm), from the JSON of `fedledger bench robustness ... --attacks none sybil_split sybil ... --defenses platform
platform_v6` and, for the same grid, `--defenses platform_v7` or `platform_v8` (files of one grid, told apart by their
command without the defences, are merged).

For each data set, n and fraction (means over seeds of the FED earned in 20 rounds): what the f sybil wallets earn
together (each wallet locks the minimum stake), what one identity with the same data earns (under version 5 with one
minimum stake, under versions 6 to 8 with the f stakes the wallets lock), and the ratio of the two. A ratio of 1
means identities earn nothing by themselves, below 1 that they lose, f that they multiply earnings.

    .venv/bin/python scripts/stake_rewards_table.py docs/robustness/v6/*/results.json \
        docs/robustness/v7/*/results.json docs/robustness/v8/*/results.json --out F.md
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path
from statistics import mean
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from trainer.local import LocalConfig  # noqa: E402
from trainer.rules import RuleConfig  # noqa: E402

KEYS = ("dataset", "partition", "n", "fraction", "seed")
ATTACKS = {"sybil_split": "split_alone", "sybil": "sybil_alone"}
RULES = {"platform": "v5", "platform_v6": "v6", "platform_v7": "v7", "platform_v8": "v8"}


def grid_key(result: dict[str, Any]) -> str:
    """What identifies a grid: its settings without the defences."""
    return json.dumps({k: v for k, v in result["config"]["grid"].items() if k != "defenses"}, sort_keys=True)


def merge(results: list[tuple[Path, dict[str, Any]]]) -> list[tuple[list[Path], dict[str, Any]]]:
    """The files of each grid as one result (cells and references joined; each defence from one file only)."""
    grids: dict[str, tuple[list[Path], dict[str, Any]]] = {}
    for path, result in results:
        key = grid_key(result)
        if key not in grids:
            grids[key] = ([path], {"config": result["config"], "cells": list(result["cells"]),
                                   "references": [json.loads(json.dumps(r)) for r in result["references"]],
                                   "commands": [result["config"].get("command", "")]})
            continue
        paths, merged = grids[key]
        seen = {c["defense"] for c in merged["cells"]}
        if seen & set(result["config"]["grid"]["defenses"]):
            raise SystemExit(f"{path}: defences {sorted(seen & set(result['config']['grid']['defenses']))} are "
                             f"already in {paths[0]}")
        paths.append(path)
        merged["cells"] += result["cells"]
        merged["commands"].append(result["config"].get("command", ""))
        refs = {tuple(r["cell"][k] for k in KEYS): r for r in merged["references"]}
        for r in result["references"]:
            mine = refs[tuple(r["cell"][k] for k in KEYS)]
            for name in ATTACKS.values():
                if name in r:
                    mine.setdefault(name, {}).update(r[name])
    return list(grids.values())


def rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    refs = {tuple(r["cell"][k] for k in KEYS): r for r in result["references"]}
    paid = result["config"]["grid"]["rounds"] * RuleConfig.reward_budget / 10**18
    runs: dict[tuple[Any, ...], dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for c in result["cells"]:
        if c["attack"] not in ATTACKS or c["defense"] not in RULES:
            continue
        alone = refs[tuple(c[k] for k in KEYS)][ATTACKS[c["attack"]]][c["defense"]]
        v = RULES[c["defense"]]
        r = runs[(c["attack"], c["dataset"], c["n"], c["f"])]
        r[f"together_{v}"].append(sum(c["rewards_fed"][: c["f"]]))
        r[f"alone_{v}"].append(alone["participant0_fed"])
        r[f"unpaid_{v}"].append(alone["participant0_fed"] == 0)
        # FED per stake of the one identity over that of each of the n - f others (one stake each), the whole
        # budget paid every round (it is unless every update of a round is rejected)
        others = (paid - alone["participant0_fed"]) / (c["n"] - c["f"])
        r[f"per_stake_{v}"].append(alone["participant0_fed"] / alone["participant0_stake"] / others if others else
                                   float("inf"))
    out = []
    for (attack, dataset, n, f), r in sorted(runs.items()):
        entry: dict[str, Any] = {"attack": attack, "dataset": dataset, "n": n, "f": f}
        for v in RULES.values():
            if not r[f"together_{v}"]:
                continue
            entry[f"seeds_{v}"] = len(r[f"together_{v}"])
            entry[f"together_{v}"], entry[f"alone_{v}"] = mean(r[f"together_{v}"]), mean(r[f"alone_{v}"])
            entry[f"unpaid_{v}"] = sum(r[f"unpaid_{v}"])
            entry[f"ratio_{v}"] = entry[f"together_{v}"] / entry[f"alone_{v}"] if entry[f"alone_{v}"] else None
            entry[f"per_stake_{v}"] = mean(r[f"per_stake_{v}"])
        out.append(entry)
    return out


def _ratio(e: dict[str, Any], v: str) -> str:
    if f"ratio_{v}" not in e:
        return ""
    unpaid = f" ({e[f'unpaid_{v}']} of {e[f'seeds_{v}']} runs unpaid)" if e[f"unpaid_{v}"] else ""
    return ("∞ (it earned nothing)" if e[f"ratio_{v}"] is None else f"{e[f'ratio_{v}']:.2f}") + unpaid


def _per_stake(e: dict[str, Any], v: str) -> str:
    return f"{e[f'per_stake_{v}']:.2f}" if f"per_stake_{v}" in e else ""


def _fed(e: dict[str, Any], key: str) -> str:
    return f"{e[key]:.0f}" if key in e else ""


def render(paths: list[Path], result: dict[str, Any]) -> list[str]:
    local = LocalConfig.from_option(result["config"]["grid"].get("local_steps")).describe()
    names = ", ".join(f"{p.parent.name}/{p.name}" for p in paths)
    entries = rows(result)
    versions = [v for v in RULES.values() if any(f"ratio_{v}" in e for e in entries)]
    staked = [v for v in versions if v != "v5"]  # the versions whose one identity locks the f stakes
    head = ([f"ratio {v}" for v in versions] + [f"{what} ({v})" for v in staked
                                                 for what in ("wallets together", "one identity")]
            + [f"its FED per stake / an other's ({v})" for v in staked])
    lines = [f"## {names}: local training {local}", "",
             *(f"Command: `{c}`" + "\n" for c in result["commands"]),
             "| attack | data set | n | f | " + " | ".join(head) + " |",
             "|---|---|---:|---:|" + "---:|" * len(head)]
    for e in entries:
        cells = ([_ratio(e, v) for v in versions]
                 + [_fed(e, f"{what}_{v}") for v in staked for what in ("together", "alone")]
                 + [_per_stake(e, v) for v in staked])
        lines.append(f"| {e['attack']} | {e['dataset']} | {e['n']} | {e['f']} | " + " | ".join(cells) + " |")
    return [*lines, ""]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", nargs="+", type=Path, help="JSON files of fedledger bench robustness")
    parser.add_argument("--out", type=Path, default=None, help="write the markdown here (default: print only)")
    args = parser.parse_args()
    lines = ["# Sybil earnings under rule version 5 (by score), 6 (by score x stake), 7 (and stake as votes) and 8 "
             "(and stake's multiple of the typical norm)", "",
             "Generated by `scripts/stake_rewards_table.py`. FED over 20 rounds, means over seeds; the wallets lock "
             "one minimum stake each. The one identity trains on the wallets' data (sybil_split: the pooled data "
             "sets; sybil: participant 0's own) with the other f - 1 identities absent; under v6 to v8 it locks the "
             "f stakes the wallets lock. Ratio: what the wallets earn together / what the one identity earns. "
             "With the wallets' equal stakes versions 6 to 8 judge as version 5, so their wallets earn alike under "
             "all four (up to float noise of the bench's training).", ""]
    for paths, result in merge([(path, json.loads(path.read_text())) for path in args.results]):
        lines += render(paths, result)
    text = "\n".join(lines)
    print(text)
    if args.out is not None:
        args.out.write_text(text)
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
