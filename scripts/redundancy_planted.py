"""Adaptive sybils against rule version 5's small rounds: noise planted in their own earlier updates.

Version 5 lets a small round's pair test see the previous rounds' accepted updates. A sybil who knows that can put
the noise it will add next round into the update it sends this round: next round, that noise lies in the span of
its own earlier update (a third party), so it no longer looks like noise. This study measures it and one possible
answer, neither of which is the rule:

* ``planted``: k = 3 sybils copy participant 0's update, each adding a * |u| of fresh noise plus c * |u| of the noise
  it will use in the next round (a = c = 0.25 by default); reported: how many sybil pairs version 5's test groups
  and how close a copy stays to its source (the cosine, what its score is made of);
* ``own rows excluded``: the same test with each pair's *own* earlier updates removed from its third parties (the
  residual Gram of the pair off the span of the others, from the Schur complement of the pair's and its own history
  rows' block of (G + I)^-1; exact as the rule's arithmetic). Reported: honest pairs grouped (false positives),
  planted sybils grouped, simple perturbed copies grouped;
* ``cross-planted``: the answer's counter: each of the 3 sybils plants, instead of its own next noise, the difference
  of the other two's (c * |u| in all), so every pair's difference lies in a third sybil's earlier update, which
  excluding the pair's own rows leaves among its third parties;
* ``in-round cross-planted``: the same without history, as version 4 (and 5) test rounds of 16 or more: each sybil
  carries the other two's *current* noise difference (with the sign that keeps the copies apart), so every pair's
  difference lies in the third sybil's update of the same round; tested on the round alone (version 4's test, run
  only where the round has at least 16 representatives).

Honest FedAvg trajectories (digits and breast cancer; iid, Dirichlet 0.5 and 0.1; seeds 0 and 1; 10 rounds; local
lr 0.05 and 0.5); third parties: the round's updates and the previous two rounds' (sybils' included), newest first,
within ``history_room``; rounds 3-10 counted.

    .venv/bin/python scripts/redundancy_planted.py --out docs/robustness/v5/planted.md
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from trainer import aggregation as agg  # noqa: E402
from trainer.data import load_dataset  # noqa: E402
from trainer.local import LocalConfig, train_local  # noqa: E402
from trainer.model import ModelSpec, init_params  # noqa: E402
from trainer.redundancy import RedundancyTest, history_room, spd_inverse  # noqa: E402
from trainer.rules import RuleConfig  # noqa: E402
from trainer.simulation import local_seed, partition_indices  # noqa: E402
from redundancy_small_rounds import finish  # noqa: E402

HISTORY = 2  # version 5's default redundancy_history_rounds
SYBILS = 3


def unit_noise(d: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal(d).astype(np.float32)
    return x / np.linalg.norm(x)


def pair_without(test: RedundancyTest, i: int, j: int, excluded: list[int], rule: RuleConfig) -> tuple[float, bool]:
    """(t, redundant) of rows i and j with ``excluded`` rows removed from their third parties."""
    g, h = test.gram, test.inverse
    dd = g[i, i] + g[j, j] - 2.0 * g[i, j]
    if dd == 0.0:
        return 0.0, True
    block = [i, j, *excluded]
    residual = spd_inverse(h[np.ix_(block, block)])  # the block's Gram off the span of every other row (+ ridge)
    ri, rj, rij = residual[0, 0], residual[1, 1], residual[0, 1]
    proj_d = max(dd - (ri + rj - 2.0 * rij), 0.0)
    proj_min = min(g[i, i] - ri, g[j, j] - rj)
    t = proj_d / dd * test.s / (test.m - 2 - len(excluded))
    share = proj_d / proj_min if proj_min > 0 else math.inf
    return t, t <= rule.redundancy_ratio and share <= rule.redundancy_share


def measure(dataset: str, partition: str, n: int, lr: float, seed: int, rounds: int, a: float, c: float,
            rule: RuleConfig) -> dict[str, float]:
    data = load_dataset(dataset, seed=seed)
    parts, _ = partition_indices(data.y_train.numpy(), n, partition, seed)
    spec = ModelSpec(data.num_features, data.num_classes)
    params = init_params(spec, seed)
    past: list[tuple[np.ndarray, list[str]]] = []  # (rows, owners) of the earlier rounds, oldest first
    past_cross: list[tuple[np.ndarray, list[str]]] = []  # the same where the sybils cross-plant
    out = dict.fromkeys(("fp", "honest", "planted_v5", "planted_excl", "simple_excl", "cross_v5", "cross_excl",
                         "inround", "inround_pairs", "sybil_pairs"), 0.0)
    cosines: list[float] = []
    owners = [f"h{i}" for i in range(n)] + [f"s{j}" for j in range(SYBILS)]
    sybil_pairs = list(itertools.combinations(range(n, n + SYBILS), 2))
    for r in range(1, rounds + 1):
        ups = [agg.flatten(train_local(spec, params, data.x_train[torch.from_numpy(parts[i])],
                                       data.y_train[torch.from_numpy(parts[i])], LocalConfig(lr=lr),
                                       seed=local_seed(seed, r, i))).numpy() for i in range(n)]
        src, d = ups[0], ups[0].size
        scale = float(np.linalg.norm(src))
        planted = [src + scale * (a * unit_noise(d, 1_000 * r + j) + c * unit_noise(d, 1_000 * (r + 1) + j))
                   for j in range(SYBILS)]
        simple = [src + scale * a * unit_noise(d, 500_000 + 1_000 * r + j) for j in range(SYBILS)]
        others = [[q for q in range(SYBILS) if q != j] for j in range(SYBILS)]  # SYBILS = 3: the other pair
        cross = [src + scale * (a * unit_noise(d, 1_000 * r + j)
                                + c * (unit_noise(d, 1_000 * (r + 1) + p) - unit_noise(d, 1_000 * (r + 1) + q))
                                / np.float32(math.sqrt(2.0)))
                 for j, (p, q) in enumerate(others)]
        inround = [src + scale * (a * unit_noise(d, 1_000 * r + j)
                                  - c * (unit_noise(d, 1_000 * r + p) - unit_noise(d, 1_000 * r + q))
                                  / np.float32(math.sqrt(2.0)))
                   for j, (p, q) in enumerate(others)]
        if n + SYBILS >= rule.redundancy_min_third_parties + 2:  # version 4's test runs on the round alone
            rows = np.stack(ups + inround).astype(np.float32)
            cols = agg.subset_columns(d, agg.subset_seed([hashlib.sha256(x.tobytes()).digest() for x in rows], d))
            alone = RedundancyTest(np.ascontiguousarray(rows[:, cols]), ratio=rule.redundancy_ratio,
                                   share=rule.redundancy_share, min_third_parties=rule.redundancy_min_third_parties)
            out["inround"] += sum(alone.pair(i, j).redundant for i, j in sybil_pairs)
            out["inround_pairs"] += len(sybil_pairs)
        cosines += [float(p @ src) / (float(np.linalg.norm(p)) * scale) for p in planted]
        if len(past) == HISTORY:
            for kind, sybils in (("honest", []), ("planted", planted), ("simple", simple), ("cross", cross)):
                rows = np.stack(ups + sybils).astype(np.float32)
                cols = agg.subset_columns(d, agg.subset_seed([hashlib.sha256(x.tobytes()).digest() for x in rows], d))
                room = history_room(len(rows), len(cols), rule.redundancy_ratio)
                earlier = past_cross if kind == "cross" else past
                extra = np.concatenate([rows_[:, cols] for rows_, _ in reversed(earlier)])[:room]
                extra_owner = [o for _, who in reversed(earlier) for o in who][:room]
                test = RedundancyTest(np.ascontiguousarray(rows[:, cols]), ratio=rule.redundancy_ratio,
                                      share=rule.redundancy_share, min_third_parties=1, extra=extra)

                def own(i: int, j: int) -> list[int]:
                    return [len(rows) + q for q, o in enumerate(extra_owner) if o in (owners[i], owners[j])]

                if kind == "honest":
                    for i, j in itertools.combinations(range(n), 2):
                        out["fp"] += pair_without(test, i, j, own(i, j), rule)[1]
                        out["honest"] += 1
                    continue
                for i, j in sybil_pairs:
                    excl = pair_without(test, i, j, own(i, j), rule)[1]
                    if kind == "simple":
                        out["simple_excl"] += excl
                        continue
                    out[f"{kind}_v5"] += test.pair(i, j).redundant
                    out[f"{kind}_excl"] += excl
                    out["sybil_pairs"] += kind == "planted"
        past = [*past, (np.stack(ups + planted).astype(np.float32), owners)][-HISTORY:]
        past_cross = [*past_cross, (np.stack(ups + cross).astype(np.float32), owners)][-HISTORY:]
        params = agg.unflatten(agg.flatten(params) + torch.from_numpy(np.stack(ups).mean(0)),
                               {k: v.shape for k, v in params.items()})
    out["cosine_sum"], out["cosines"] = float(sum(cosines)), float(len(cosines))
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--participants", nargs="+", type=int, default=[6, 8, 10, 14, 20])
    p.add_argument("--lrs", nargs="+", type=float, default=[0.05, 0.5])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--planted", type=float, default=0.25, help="c: the next round's noise planted, in norms")
    p.add_argument("--noise", type=float, default=0.25, help="a: this round's noise, in norms")
    p.add_argument("--out", type=Path)
    args = p.parse_args()
    torch.set_num_threads(1)
    rule = RuleConfig()
    t0 = time.perf_counter()
    lines = [
        "# Adaptive sybils against rule version 5's small rounds: noise planted in their own earlier updates",
        "",
        f"`.venv/bin/python scripts/redundancy_planted.py` ({SYBILS} sybils copying participant 0, each with "
        f"{args.noise} norms of fresh noise plus {args.planted} norms of the next round's; digits and breast cancer, "
        f"iid / Dirichlet 0.5 / 0.1, seeds {args.seeds}, rounds {HISTORY + 1}-{args.rounds}; third parties: the "
        f"round's updates and the previous {HISTORY} rounds' within `history_room`; no minimum of third parties). "
        "'v5' is the rule as built; 'own rows excluded' removes each pair's own earlier updates from its third "
        "parties (a study, not the rule).",
        "",
        "| n | local lr | planted sybil pairs grouped, v5 | copy's cosine to its source | own rows excluded: honest "
        "pairs grouped | planted grouped | simple copies (0.25) grouped | cross-planted grouped, v5 / own rows "
        "excluded | in-round cross-planted grouped, round alone |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for n, lr in itertools.product(args.participants, args.lrs):
        total: dict[str, float] = {}
        for dataset, partition, seed in itertools.product(("digits", "breast_cancer"), ("iid", "dir0.5", "dir0.1"),
                                                         args.seeds):
            for k, v in measure(dataset, partition, n, lr, seed, args.rounds, args.noise, args.planted, rule).items():
                total[k] = total.get(k, 0.0) + v
        pairs = int(total["sybil_pairs"])
        lines.append(f"| {n} | {lr:g} | {int(total['planted_v5'])} of {pairs} | "
                     f"{total['cosine_sum'] / total['cosines']:.2f} | {int(total['fp'])} of {int(total['honest'])} | "
                     f"{int(total['planted_excl'])} of {pairs} | {int(total['simple_excl'])} of {pairs} | "
                     f"{int(total['cross_v5'])} / {int(total['cross_excl'])} of {pairs} | "
                     + (f"{int(total['inround'])} of {int(total['inround_pairs'])} |" if total["inround_pairs"]
                        else "- (under 16 representatives) |"))
        print(lines[-1], flush=True)
    return finish(lines, t0, args.out)


if __name__ == "__main__":
    raise SystemExit(main())
