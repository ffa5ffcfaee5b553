"""Off-chain federated simulation with the same data, partition, training, attacks and rule as the demo.

Used for yardsticks (the clean FedAvg reference in the demo) and for studying rules across seeds quickly:

    python -m trainer.simulation --seeds 0 1 2 3 4 --max-norm-ratio 2.0 --min-score -0.05

The second half is the engine of ``fedledger bench robustness``: ``run_cell`` plays every (attack, defence)
trajectory of one grid cell (data set, partition, n, Byzantine fraction, seed) in lock-step. Local training of all
trajectories' participants in a round is one vectorized SGD (``train_batched``: the same minibatches, seeds,
momentum and learning rate as ``train_local``, equal to it up to float rounding), so each update is trained exactly
once per round per trajectory; the platform's rule is the real one (``evaluate_round`` with ``RuleConfig()``).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import torch

from trainer.aggregation import Submission, evaluate_round
from trainer.attacks import apply_attack
from trainer.data import dirichlet_partition, load_dataset
from trainer.local import LocalConfig, train_local
from trainer.model import ModelSpec, init_params, accuracy
from trainer.rules import RuleConfig, Status
from trainer.serialization import serialize


@dataclass(frozen=True)
class FederationConfig:
    participants: int = 10
    byzantine: int = 3
    attack: str = "signflip"
    rounds: int = 10
    dataset: str = "digits"
    alpha: float = 0.5
    seed: int = 0


def local_seed(seed: int, round_id: int, index: int) -> int:
    """The training seed of participant ``index`` in ``round_id``: shared by the demo and the simulation."""
    return seed * 1_000_003 + round_id * 1_009 + index


@dataclass(frozen=True)
class SimulationResult:
    final_accuracy: float
    honest_rejection_rate: float
    attacker_rejection_rate: float | None


def simulate(cfg: FederationConfig, rule: RuleConfig, local: LocalConfig = LocalConfig()) -> SimulationResult:
    data = load_dataset(cfg.dataset, seed=cfg.seed)
    parts = dirichlet_partition(data.y_train.numpy(), cfg.participants, cfg.alpha, seed=cfg.seed)
    spec = ModelSpec(data.num_features, data.num_classes)
    params = init_params(spec, cfg.seed)
    names = [f"0x{i + 1:040x}" for i in range(cfg.participants)]
    rejected = {"honest": 0, "attacker": 0}
    for r in range(1, cfg.rounds + 1):
        subs = []
        for i, name in enumerate(names):
            idx = torch.from_numpy(parts[i])
            seed = local_seed(cfg.seed, r, i)
            upd = train_local(spec, params, data.x_train[idx], data.y_train[idx], local, seed=seed)
            if i < cfg.byzantine:
                upd = apply_attack(cfg.attack, upd, seed=seed)
            subs.append(Submission(name, serialize(upd)))
        out = evaluate_round(params, subs, rule)
        params = out.new_params
        for v in out.verdicts:
            kind = "attacker" if names.index(v.participant) < cfg.byzantine else "honest"
            rejected[kind] += v.status != Status.ACCEPTED
    honest = cfg.rounds * (cfg.participants - cfg.byzantine)
    attackers = cfg.rounds * cfg.byzantine
    return SimulationResult(
        final_accuracy=accuracy(spec, params, data.x_test, data.y_test),
        honest_rejection_rate=rejected["honest"] / honest if honest else 0.0,
        attacker_rejection_rate=rejected["attacker"] / attackers if attackers else None,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--aggregator", default="median-verified-mean")
    parser.add_argument("--max-norm-ratio", type=float, default=RuleConfig.max_norm_ratio)
    parser.add_argument("--min-score", type=float, default=RuleConfig.min_score)
    parser.add_argument("--participants", type=int, default=10)
    parser.add_argument("--byzantine", type=int, default=3)
    parser.add_argument("--attack", default="signflip")
    parser.add_argument("--alpha", type=float, default=0.5)
    args = parser.parse_args()
    rule = RuleConfig(aggregator=args.aggregator, max_norm_ratio=args.max_norm_ratio, min_score=args.min_score)
    print("seed  final_acc  honest_rej  attacker_rej")
    for seed in args.seeds:
        cfg = FederationConfig(args.participants, args.byzantine, args.attack, alpha=args.alpha, seed=seed)
        res = simulate(cfg, rule)
        att = "-" if res.attacker_rejection_rate is None else f"{res.attacker_rejection_rate:.3f}"
        print(f"{seed:4d}  {res.final_accuracy:9.4f}  {res.honest_rejection_rate:10.3f}  {att:>12}")


if __name__ == "__main__":
    main()
