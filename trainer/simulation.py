"""Off-chain federated simulation with the same data, partition, training, attacks and rule as the demo.

Used for yardsticks (the clean FedAvg reference in the demo) and for studying rules across seeds quickly:

    python -m trainer.simulation --seeds 0 1 2 3 4 [--rule-version 1|2|3|4] [--max-norm-ratio 2.0 --min-score -0.05]

The second half is the engine of ``fedledger bench robustness``: ``run_cell`` plays every (attack, defence)
trajectory of one grid cell (data set, partition, n, Byzantine fraction, seed) in lock-step. Local training of all
trajectories' participants in a round is one vectorized SGD (``train_batched``: the same minibatches, seeds,
momentum and learning rate as ``train_local``, equal to it up to float rounding), so each update is trained exactly
once per round per trajectory; the platform's rule is the real one (``evaluate_round`` with ``RuleConfig()``).
"""

from __future__ import annotations

import argparse
import functools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from trainer.aggregation import AcceptedHistory, Submission, evaluate_round, flatten, unflatten
from trainer.attacks import (
    ALIE_FIXED_Z,
    ALL_ATTACKS,
    BITFLIP_SCALE,
    IPM_LARGE_EPS,
    IPM_SMALL_EPS,
    SIGNFLIP_SCALE,
    SYBIL_NOISE,
    alie,
    alie_z_max,
    apply_attack,
    backdoor_poison,
    flip_labels,
    gaussian_noise,
    ipm,
    make_trigger,
    perturbed_copy,
    scale_to_norm,
    split_shard,
)
from trainer.data import Dataset, dirichlet_partition, load_dataset
from trainer.defenses import (
    adaptive_tau,
    centered_clipping,
    coordinate_median,
    fedavg,
    median_verified_mean,
    multi_krum,
    trimmed_mean,
)
from trainer.incentives import INITIAL_REPUTATION, next_reputation, reward_split, slashed, stake_weights, weight
from trainer.local import LocalConfig, minibatches, train_local
from trainer.metrics import attack_success_rate, auroc, gini, min_max_ratio, share
from trainer.model import ModelSpec, init_params, accuracy
from trainer.rules import VERSIONS, RuleConfig, Status
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
    previous = None
    reputation = dict.fromkeys(names, INITIAL_REPUTATION)
    past = AcceptedHistory(rule.history_rounds)
    for r in range(1, cfg.rounds + 1):
        subs, rows = [], []
        for i, name in enumerate(names):
            idx = torch.from_numpy(parts[i])
            seed = local_seed(cfg.seed, r, i)
            upd = train_local(spec, params, data.x_train[idx], data.y_train[idx], local, seed=seed)
            if i < cfg.byzantine:
                upd = apply_attack(cfg.attack, upd, seed=seed)
            subs.append(Submission(name, serialize(upd)))
            rows.append(flatten(upd))
        out = evaluate_round(params, subs, rule, previous, reputation=reputation, history=past.source())
        past.record(torch.stack(rows).numpy(), [v.status == Status.ACCEPTED for v in out.verdicts])
        previous, params = params, out.new_params
        for v in out.verdicts:
            reputation[v.participant] = next_reputation(
                reputation[v.participant], weight(v.status, v.score), rule.reputation_decay_ppm)
            kind = "attacker" if names.index(v.participant) < cfg.byzantine else "honest"
            rejected[kind] += v.status != Status.ACCEPTED
    honest = cfg.rounds * (cfg.participants - cfg.byzantine)
    attackers = cfg.rounds * cfg.byzantine
    return SimulationResult(
        final_accuracy=accuracy(spec, params, data.x_test, data.y_test),
        honest_rejection_rate=rejected["honest"] / honest if honest else 0.0,
        attacker_rejection_rate=rejected["attacker"] / attackers if attackers else None,
    )


# ------------------------------------------------------------------------------------------------ benchmark engine

PARTITIONS: tuple[str, ...] = ("iid", "dir0.5", "dir0.1")
BENCH_DEFENSES: tuple[str, ...] = (
    "fedavg", "median", "trimmed_mean", "multi_krum", "centered_clipping", "platform", "platform_v4", "platform_v3",
    "platform_v2", "platform_v1",
)
# the platform's rule as the aggregator runs it (evaluate_round), by name: the committed one and version 1
PLATFORM_RULES: dict[str, RuleConfig] = {
    "platform": RuleConfig(), "platform_v4": RuleConfig.version4(), "platform_v3": RuleConfig.version3(),
    "platform_v2": RuleConfig.version2(),
    "platform_v1": RuleConfig.version1(),
    # opt-in, not in the default grid: version 5 paid by score x stake (the sybils' counterfactual stakes f units)
    "platform_v6": RuleConfig.version6(),
    # opt-in too: version 6 whose reference median counts each identity's stake as its votes
    "platform_v7": RuleConfig.version7(),
    # opt-in too: version 7 whose norm test allows each identity its stake's multiple of the median stake in norm
    "platform_v8": RuleConfig.version8(),
}
STAKE_UNIT = 10**18  # one minimum stake (1 ether in the default deployment), in wei
CLEAN = "none"  # the attack name of the no-attack trajectories
HONEST_ONLY = "honest_only"  # the reference trajectory: FedAvg over the n - f honest participants only (an oracle)
# the sybils' counterfactual, per platform rule: participant 0 sends its honest update under one identity and the
# other f - 1 sybil identities do not exist (what "one honest identity with the same data" earns)
SYBIL_ALONE = "sybil_alone"
# sybil_split's counterfactual: participant 0 sends, under one identity, the update it trains on the f attackers'
# data sets pooled (what the split wallets train on, slice by slice); the other f - 1 identities do not exist
SPLIT_ALONE = "split_alone"


def partition_alpha(partition: str) -> float | None:
    """``iid`` -> None, ``dir0.5`` -> 0.5, ..."""
    if partition == "iid":
        return None
    if partition.startswith("dir"):
        try:
            return float(partition[3:])
        except ValueError:
            pass
    raise ValueError(f"unknown partition {partition!r}: use iid or dir<alpha> (e.g. dir0.5)")


def partition_indices(labels: np.ndarray, n: int, partition: str, seed: int) -> tuple[list[np.ndarray], str]:
    """Client shards and how they were drawn.

    ``iid``: a random permutation cut into n near-equal shards. ``dir<alpha>``: the platform's partitioner
    (``trainer.data.dirichlet_partition``) with ``min_size = min(10, N // (2n))``; when its rejection sampling cannot
    meet that minimum (many clients on a small data set: breast cancer with 50 clients, digits with 50 at alpha 0.1),
    the capped variant of NIID-Bench (Li et al. 2022: a client already holding N/n samples gets no more), redrawn up to
    100 times, and as a last resort the smallest shards are topped up with random samples of the largest one. The
    method used is returned and recorded with the results.
    """
    alpha = partition_alpha(partition)
    if alpha is None:
        order = np.random.default_rng(seed).permutation(len(labels))
        return [np.sort(part) for part in np.array_split(order, n)], "iid"
    min_size = max(1, min(10, len(labels) // (2 * n)))
    try:
        return dirichlet_partition(labels, n, alpha, seed=seed, min_size=min_size), "dirichlet"
    except ValueError:
        pass
    rng = np.random.default_rng(seed)
    classes = np.unique(labels)
    total = len(labels)
    parts: list[list[int]] = []
    for _ in range(100):
        parts = [[] for _ in range(n)]
        for c in classes:
            idx = np.flatnonzero(labels == c)
            rng.shuffle(idx)
            shares = rng.dirichlet(np.full(n, alpha))
            shares = shares * np.asarray([len(p) < total / n for p in parts])
            shares = shares / shares.sum() if shares.sum() > 0 else np.full(n, 1.0 / n)
            cuts = (np.cumsum(shares) * len(idx)).astype(int)[:-1]
            for k, chunk in enumerate(np.split(idx, cuts)):
                parts[k].extend(chunk.tolist())
        if min(len(p) for p in parts) >= min_size:
            return [np.sort(np.asarray(p, dtype=np.int64)) for p in parts], "dirichlet-capped"
    for k in range(n):
        while len(parts[k]) < min_size:
            donor = max(range(n), key=lambda j: len(parts[j]))
            parts[k].append(parts[donor].pop(int(rng.integers(len(parts[donor])))))
    return [np.sort(np.asarray(p, dtype=np.int64)) for p in parts], "dirichlet-capped-topped-up"


@dataclass(frozen=True)
class MLPLayout:
    """Where each tensor of ``ModelSpec``'s MLP sits in the flat vector (keys sorted: 0.bias, 0.weight, 2.bias,
    2.weight), so a batch of models is one [R, d] tensor and training works on views of it."""

    features: int
    hidden: int
    classes: int

    @property
    def size(self) -> int:
        f, h, c = self.features, self.hidden, self.classes
        return h + h * f + c + c * h

    def views(self, flat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        f, h, c = self.features, self.hidden, self.classes
        r = flat.shape[0]
        b1 = flat[:, :h]
        w1 = flat[:, h : h + h * f].view(r, h, f)
        o = h + h * f
        b2 = flat[:, o : o + c]
        w2 = flat[:, o + c : o + c + c * h].view(r, c, h)
        return b1, w1, b2, w2


def layout_of(spec: ModelSpec) -> MLPLayout:
    layout = MLPLayout(spec.num_features, spec.hidden, spec.num_classes)
    assert layout.size == spec.num_parameters()
    return layout


@dataclass(frozen=True)
class Schedule:
    """Every client's minibatches of one round: global sample indices [C, S, B] (padded), per-sample loss weights
    [C, S, B] (1/batch size, 0 for padding) and the number of SGD steps per client [C]."""

    index: torch.Tensor
    weight: torch.Tensor
    steps: torch.Tensor


def round_schedule(parts: list[np.ndarray], seeds: list[int], cfg: LocalConfig) -> Schedule:
    """The minibatches ``train_local`` would draw (``trainer.local.minibatches``), per client from a generator
    seeded with the client's ``local_seed``, as global sample indices."""
    batches: list[list[torch.Tensor]] = []
    for part, seed in zip(parts, seeds, strict=True):
        shard = torch.from_numpy(part)
        batches.append([shard[idx] for idx in minibatches(len(part), cfg, torch.Generator().manual_seed(seed))])
    steps = max(len(b) for b in batches)
    index = torch.zeros((len(parts), steps, cfg.batch_size), dtype=torch.long)
    weight = torch.zeros((len(parts), steps, cfg.batch_size), dtype=torch.float32)
    for c, mine in enumerate(batches):
        for s, idx in enumerate(mine):
            index[c, s, : len(idx)] = idx
            weight[c, s, : len(idx)] = 1.0 / len(idx)
    return Schedule(index, weight, torch.tensor([len(b) for b in batches], dtype=torch.long))


def train_batched(
    layout: MLPLayout,
    base: torch.Tensor,
    row_client: torch.Tensor,
    row_variant: torch.Tensor,
    xs: torch.Tensor,
    ys: torch.Tensor,
    schedule: Schedule,
    cfg: LocalConfig,
) -> torch.Tensor:
    """Local SGD (momentum, mean cross-entropy) for R models at once; returns the updates [R, d].

    Row r starts from ``base[r]`` and trains on client ``row_client[r]``'s minibatches of ``schedule``, reading
    inputs/labels from data variant ``row_variant[r]`` (``xs`` [V, N, f], ``ys`` [V, N]: honest, label-flipped,
    backdoored ...). Rows are processed longest schedule first, so the rows still training at step s are a prefix
    and finished ones are left untouched. Gradients are written out by hand (two linear layers, ReLU, softmax
    cross-entropy), the same arithmetic autograd does for ``train_local``."""
    order = torch.argsort(schedule.steps[row_client], descending=True, stable=True)
    clients = row_client[order]
    variants = row_variant[order]
    row_steps = schedule.steps[clients]
    params = base[order].clone()
    start = params.clone()
    buf = torch.zeros_like(params)
    grad = torch.zeros_like(params)
    for s in range(int(row_steps.max()) if len(row_steps) else 0):
        k = int((row_steps > s).sum())
        b1, w1, b2, w2 = layout.views(params[:k])
        gb1, gw1, gb2, gw2 = layout.views(grad[:k])
        idx = schedule.index[clients[:k], s]
        wt = schedule.weight[clients[:k], s]
        x = xs[variants[:k, None], idx]
        y = ys[variants[:k, None], idx]
        z1 = torch.baddbmm(b1.unsqueeze(1), x, w1.transpose(1, 2))
        a1 = z1.clamp_min(0)
        z2 = torch.baddbmm(b2.unsqueeze(1), a1, w2.transpose(1, 2))
        g2 = torch.softmax(z2, dim=2)
        g2.scatter_add_(2, y.unsqueeze(2), torch.full(y.shape + (1,), -1.0))
        g2.mul_(wt.unsqueeze(2))
        torch.bmm(g2.transpose(1, 2), a1, out=gw2)
        torch.sum(g2, dim=1, out=gb2)
        ga1 = torch.bmm(g2, w2)
        ga1.mul_(z1 > 0)
        torch.bmm(ga1.transpose(1, 2), x, out=gw1)
        torch.sum(ga1, dim=1, out=gb1)
        buf[:k].mul_(cfg.momentum).add_(grad[:k])
        params[:k].sub_(buf[:k], alpha=cfg.lr)
    updates = torch.empty_like(params)
    updates[order] = params - start
    return updates


@torch.no_grad()
def predict_batched(layout: MLPLayout, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Class predictions [T, N] of T flat models on inputs x [N, f]."""
    b1, w1, b2, w2 = layout.views(params)
    a1 = torch.baddbmm(b1.unsqueeze(1), x.expand(params.shape[0], -1, -1), w1.transpose(1, 2)).clamp_min(0)
    return torch.baddbmm(b2.unsqueeze(1), a1, w2.transpose(1, 2)).argmax(dim=2)


@dataclass(frozen=True)
class CellConfig:
    """One cell of the robustness grid: every attack x defence trajectory for these settings and seed."""

    dataset: str
    partition: str
    n: int
    fraction: float
    seed: int
    rounds: int
    attacks: tuple[str, ...] = (CLEAN, *ALL_ATTACKS)
    defenses: tuple[str, ...] = BENCH_DEFENSES
    local: LocalConfig = LocalConfig()

    @property
    def f(self) -> int:
        return int(round(self.fraction * self.n))


# which data variant an attacker row trains on: 0 honest, 1 flipped labels, 2 backdoored
_TRAINS: dict[str, int] = {
    "signflip": 0, "bitflip": 0, "labelflip": 1, "backdoor": 2, "backdoor_adaptive": 2, "sybil": 0,
    "sybil_perturbed": 0, "sybil_noisy": 0, "sybil_split": 0,
}
# the attackers send (copies of) participant 0's update, trained only once; or (sybil_split) the f attackers' data
# sets, pooled as one party's, are cut into f random slices and attacker i trains on slice i
SYBILS = ("sybil", "sybil_perturbed", "sybil_noisy", "sybil_split")
_SCALE: dict[str, float] = {"signflip": SIGNFLIP_SCALE, "bitflip": BITFLIP_SCALE}


def _participant(i: int) -> str:
    return f"0x{i + 1:040x}"


class _Trajectory:
    """One (attack, defence) run inside a cell: its global model and what the platform's rule committed."""

    def __init__(self, attack: str, defense: str, params: torch.Tensor, n: int) -> None:
        self.attack = attack
        self.defense = defense
        self.params = params.clone()
        self.prev_params: torch.Tensor | None = None  # the previous round's base (the rule's public step)
        self.prev_step = torch.zeros_like(params)  # the last global step (CC's centre; what a stale rider resends)
        self.accuracy: list[float] = []
        self.backdoor: list[float] = []
        self.scores: list[tuple[int, int, int]] = []  # (round, participant index, committed score)
        self.rejected = [0] * n
        self.rewards = [0] * n
        self.reputation = [INITIAL_REPUTATION] * n
        # stake each identity burned: it stakes the minimum at registration, a slash burns SLASH_PPM of it, and an
        # identity below the minimum may not commit (ParticipantRegistry), so it tops up before its next update
        self.burned = [0] * n
        # each identity's stake, which rule version 6 pays by: the minimum (run_cell gives the sybils' one identity f)
        self.stakes = [STAKE_UNIT] * n
        self.history: AcceptedHistory | None = None  # the platform rule's earlier accepted updates (version 5)


# Revisions of the platform rule, modelled by trainer.defenses.median_verified_mean and benchmarked beside the
# committed rule (docs/robustness.md): "proposed" and its two halves, for the ablation.
_DEDUP = {"duplicate_tolerance": 0.1, "public": True}
_CLIP = {"norm_mode": "clip", "reject_norm_ratio": 4.0}  # clip to 2 median norms, reject beyond 4
RULE_VARIANTS: dict[str, dict[str, Any]] = {
    "platform_model": {},  # version 1 in float64 (the model the first revision was chosen with)
    "proposed_dedup_only": dict(_DEDUP),
    "proposed_clip_only": dict(_CLIP),
    "proposed": {**_DEDUP, **_CLIP},
    "proposed_clip1": {**_DEDUP, **_CLIP, "clip_ratio": 1.0},  # tighter clipping, tried against backdoors
    "proposed_clip1.5": {**_DEDUP, **_CLIP, "clip_ratio": 1.5},
    # rule version 3 and its parts (the ablation in docs/robustness.md): reputation gate of the reference, trust
    # weights max(s, 0) * rep ** 2, both; and FLTrust-like weights by score alone
    "v3_model": {**_DEDUP, **_CLIP, "reference_gate": 0.5, "weights": (1, 2)},
    "v3_gate_only": {**_DEDUP, **_CLIP, "reference_gate": 0.5},
    "v3_weights_only": {**_DEDUP, **_CLIP, "weights": (1, 2)},
    "v3_score_weights": {**_DEDUP, **_CLIP, "weights": (1, 0)},
    "v3_gate_score_weights": {**_DEDUP, **_CLIP, "reference_gate": 0.5, "weights": (1, 0)},
    "v3_gate_w11": {**_DEDUP, **_CLIP, "reference_gate": 0.5, "weights": (1, 1)},
}


def _variant_round(traj: _Trajectory, stack: torch.Tensor, r: int, budget: int, decay_ppm: int) -> torch.Tensor:
    opts = dict(RULE_VARIANTS[traj.defense])
    public = (torch.zeros(stack.shape[1]), traj.prev_step) if opts.pop("public", False) else ()
    out = median_verified_mean(stack, public=public, reputation=[v / 1e6 for v in traj.reputation], **opts)
    total = sum(out.reward_weights)
    for i in range(stack.shape[0]):
        traj.scores.append((r, i, round(out.scores[i] * 1e6)))
        traj.rejected[i] += not out.accepted[i]
        traj.rewards[i] += int(budget * out.reward_weights[i] / total) if total else 0
        traj.reputation[i] = next_reputation(traj.reputation[i], round(out.reward_weights[i] * 1e6), decay_ppm)
    return traj.params + out.step


def _aggregate_step(defense: str, stack: torch.Tensor, f: int, center: torch.Tensor) -> torch.Tensor:
    if defense == "fedavg":
        return fedavg(stack)
    if defense == "median":
        return coordinate_median(stack, f=f)
    if defense == "trimmed_mean":
        return trimmed_mean(stack, f)
    if defense == "multi_krum":
        return multi_krum(stack, f).aggregate
    if defense == "centered_clipping":
        return centered_clipping(stack, center, tau=adaptive_tau(stack, center), iterations=1, f=f)
    raise ValueError(f"unknown defence {defense!r}: choose one of {', '.join(KNOWN_DEFENSES)}")


KNOWN_DEFENSES: tuple[str, ...] = (*BENCH_DEFENSES, *(d for d in (*PLATFORM_RULES, *RULE_VARIANTS)
                                                      if d not in BENCH_DEFENSES))


def _platform_round(traj: _Trajectory, stack: torch.Tensor, shapes: dict[str, tuple[int, ...]], r: int,
                    rule: RuleConfig, members: Sequence[int] | None = None) -> torch.Tensor:
    """The committed rule, exactly as the aggregator runs it: serialize, evaluate_round, rewards, reputation.
    ``members``: the participants (ascending) whose updates are the rows of ``stack`` (default: all of them)."""
    members = list(range(stack.shape[0])) if members is None else list(members)
    base = unflatten(traj.params, shapes)
    previous = unflatten(traj.prev_params, shapes) if traj.prev_params is not None else None
    subs = [Submission(_participant(i), serialize(unflatten(u, shapes))) for i, u in zip(members, stack, strict=True)]
    prior = {_participant(i): traj.reputation[i] for i in members}
    if traj.history is None:
        traj.history = AcceptedHistory(rule.history_rounds)
    stakes = {_participant(i): traj.stakes[i] for i in members}
    out = evaluate_round(base, subs, rule, previous, reputation=prior, history=traj.history.source(), stakes=stakes)
    traj.history.record(stack.numpy(), [v.status == Status.ACCEPTED for v in out.verdicts])
    weights = []
    for i, v in zip(members, out.verdicts, strict=True):  # sorted by address == index order
        assert v.participant == _participant(i)
        traj.scores.append((r, i, v.score))
        traj.rejected[i] += v.status != Status.ACCEPTED
        traj.burned[i] += slashed(traj.stakes[i], v.status)
        weights.append(weight(v.status, v.score))
    paid = stake_weights(weights, [traj.stakes[i] for i in members]) if rule.stake_weighted else weights
    for i, w, amount in zip(members, weights, reward_split(rule.reward_budget, paid), strict=True):
        traj.rewards[i] += amount
        traj.reputation[i] = next_reputation(traj.reputation[i], w, rule.reputation_decay_ppm)
    return flatten(out.new_params)


def run_cell(cfg: CellConfig, on_round: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Play every (attack, defence) trajectory of a cell for ``cfg.rounds`` rounds; return JSON-ready results."""
    started = time.perf_counter()
    unknown = [a for a in cfg.attacks if a != CLEAN and a not in ALL_ATTACKS]
    if unknown:
        raise ValueError(f"unknown attacks {unknown}: choose from {', '.join(ALL_ATTACKS)}")
    unknown = [d for d in cfg.defenses if d not in KNOWN_DEFENSES]
    if unknown:
        raise ValueError(f"unknown defences {unknown}: choose from {', '.join(KNOWN_DEFENSES)}")
    n, f = cfg.n, cfg.f
    if cfg.attacks != (CLEAN,) and not 0 < f < n:
        raise ValueError(f"fraction {cfg.fraction} of n={n} gives f={f} attackers: need 0 < f < n")
    data = _cached_dataset(cfg.dataset, cfg.seed)
    parts, method = _cached_partition(cfg.dataset, cfg.partition, n, cfg.seed)
    spec = ModelSpec(data.num_features, data.num_classes)
    layout = layout_of(spec)
    shapes = spec.shapes()
    rule = RuleConfig()
    trigger = make_trigger(cfg.dataset, data.x_train, data.num_classes)
    x_bd, y_bd = backdoor_poison(data.x_train, data.y_train, trigger, seed=cfg.seed)
    xs = torch.stack([data.x_train, data.x_train, x_bd])
    ys = torch.stack([data.y_train, flip_labels(data.y_train, data.num_classes), y_bd])
    x_test_trig = trigger.apply(data.x_test)

    init = flatten(init_params(spec, cfg.seed))
    trajs = [_Trajectory(a, d, init, n) for a in cfg.attacks for d in cfg.defenses]
    if 0 < f < n:
        trajs.append(_Trajectory(HONEST_ONLY, "fedavg", init, n))
    if f > 1 and any(a in SYBILS for a in cfg.attacks):
        trajs += [_Trajectory(SYBIL_ALONE, d, init, n) for d in cfg.defenses
                  if d in PLATFORM_RULES and any(a in SYBILS and a != "sybil_split" for a in cfg.attacks)]
        trajs += [_Trajectory(SPLIT_ALONE, d, init, n) for d in cfg.defenses
                  if d in PLATFORM_RULES and "sybil_split" in cfg.attacks]
    alone = [0, *range(f, n)]  # who submits in a SYBIL_ALONE or SPLIT_ALONE trajectory
    for tr in trajs:
        if tr.attack in (SYBIL_ALONE, SPLIT_ALONE) and PLATFORM_RULES[tr.defense].stake_weighted:
            # a rule that pays by stake is compared at equal capital: the one identity locks the f stakes the sybil
            # identities lock (each stake the minimum), so the multiplier prices identities, not capital
            tr.stakes[0] = f * STAKE_UNIT
    # sybil_split's data: the slices of the attackers' pooled data sets train as extra clients n .. n + f - 1, the
    # pool itself as client n + f (SPLIT_ALONE's participant 0)
    if "sybil_split" in cfg.attacks and 0 < f < n:
        pooled = np.sort(np.concatenate(parts[:f]))
        parts = [*parts, *split_shard(pooled, f, seed=cfg.seed), pooled]
    # rows trained each round: (trajectory, participant, data variant, client whose data it trains on)
    rows: list[tuple[int, int, int, int]] = []
    for t, tr in enumerate(trajs):
        for i in range(n):
            if tr.attack in (CLEAN, HONEST_ONLY, SYBIL_ALONE, SPLIT_ALONE) or i >= f:
                if not (tr.attack == HONEST_ONLY and i < f) and not (
                        tr.attack in (SYBIL_ALONE, SPLIT_ALONE) and i not in alone):
                    rows.append((t, i, 0, n + f if tr.attack == SPLIT_ALONE and i == 0 else i))
            elif tr.attack == "sybil_split":
                rows.append((t, i, 0, n + i))
            elif tr.attack in _TRAINS and not (tr.attack in SYBILS and i > 0):
                rows.append((t, i, _TRAINS[tr.attack], i))
    row_traj = torch.tensor([r[0] for r in rows], dtype=torch.long)
    row_client = torch.tensor([r[3] for r in rows], dtype=torch.long)
    row_variant = torch.tensor([r[2] for r in rows], dtype=torch.long)
    row_of = {(t, i): k for k, (t, i, _, _) in enumerate(rows)}
    honest_idx = list(range(f, n))
    timing = {"train": 0.0, "aggregate": 0.0, "evaluate": 0.0}
    # how far apart independent honest updates are, relative to the median norm (for duplicate tolerances)
    pair_ratio: list[float] = []
    probe = next((t for t, tr in enumerate(trajs) if tr.attack == CLEAN), None)

    for r in range(1, cfg.rounds + 1):
        t0 = time.perf_counter()
        seeds = [local_seed(cfg.seed, r, i) for i in range(n)]
        split = [*seeds[:f], seeds[0]] if len(parts) > n else []  # a slice: its wallet's seed; the pool: 0's
        schedule = round_schedule(parts, [*seeds, *split], cfg.local)
        base = torch.stack([tr.params for tr in trajs])[row_traj]
        trained = train_batched(layout, base, row_client, row_variant, xs, ys, schedule, cfg.local)
        t1 = time.perf_counter()
        for t, tr in enumerate(trajs):
            if tr.attack == HONEST_ONLY:
                new = tr.params + fedavg(torch.stack([trained[row_of[(t, i)]] for i in honest_idx]))
                tr.prev_step, tr.params = new - tr.params, new
                continue
            if tr.attack in (SYBIL_ALONE, SPLIT_ALONE):
                stack = torch.stack([trained[row_of[(t, i)]] for i in alone])
                new = _platform_round(tr, stack, shapes, r, PLATFORM_RULES[tr.defense], members=alone)
                tr.prev_step = new - tr.params
                tr.prev_params, tr.params = tr.params, new
                continue
            stack = torch.empty((n, layout.size), dtype=torch.float32)
            for i in range(n):
                if (t, i) in row_of and (tr.attack == CLEAN or i >= f or tr.attack in ("labelflip", *SYBILS)):
                    stack[i] = trained[row_of[(t, i)]]
            if t == probe:
                dist = torch.cdist(stack.double(), stack.double(), compute_mode="donot_use_mm_for_euclid_dist")
                dist.fill_diagonal_(float("inf"))
                pair_ratio.append(round(float(dist.min() / stack.double().norm(dim=1).median()), 6))
            if tr.attack != CLEAN and f:
                stack[:f] = _byzantine_rows(tr, stack, trained, row_of, t, cfg, seeds, shapes, honest_idx)
            if tr.defense in PLATFORM_RULES:
                new = _platform_round(tr, stack, shapes, r, PLATFORM_RULES[tr.defense])
            elif tr.defense in RULE_VARIANTS:
                new = _variant_round(tr, stack, r, rule.reward_budget, rule.reputation_decay_ppm)
            else:
                new = tr.params + _aggregate_step(tr.defense, stack, f, tr.prev_step)
            tr.prev_step = new - tr.params
            tr.prev_params, tr.params = tr.params, new
        t2 = time.perf_counter()
        all_params = torch.stack([tr.params for tr in trajs])
        acc = (predict_batched(layout, all_params, data.x_test) == data.y_test).float().mean(dim=1)
        trig_pred = predict_batched(layout, all_params, x_test_trig)
        for t, tr in enumerate(trajs):
            tr.accuracy.append(round(float(acc[t]), 6))
            tr.backdoor.append(round(attack_success_rate(trig_pred[t], data.y_test, trigger.target), 6))
        timing["train"] += t1 - t0
        timing["aggregate"] += t2 - t1
        timing["evaluate"] += time.perf_counter() - t2
        if on_round is not None:
            on_round(r)
    result = _cell_result(cfg, trajs, parts[:n], method, timing, time.perf_counter() - started)
    result["honest_min_pair_distance_ratio"] = pair_ratio
    return result


def _byzantine_rows(tr: _Trajectory, stack: torch.Tensor, trained: torch.Tensor, row_of: dict[tuple[int, int], int],
                    t: int, cfg: CellConfig, seeds: list[int], shapes: dict[str, tuple[int, ...]],
                    honest_idx: list[int]) -> torch.Tensor:
    """What the f attackers (participants 0..f-1) send in this round of trajectory ``tr``."""
    n, f, a = cfg.n, cfg.f, tr.attack
    d = stack.shape[1]
    if a in _SCALE:
        return torch.stack([trained[row_of[(t, i)]] * _SCALE[a] for i in range(f)])
    if a == "labelflip":
        return stack[:f].clone()
    if a == "backdoor":
        return torch.stack([trained[row_of[(t, i)]] * (n / f) for i in range(f)])
    if a == "noise":
        template = unflatten(torch.zeros(d), shapes)
        return torch.stack([flatten(gaussian_noise(template, seed=seeds[i])) for i in range(f)])
    honest = stack[honest_idx]
    if a == "backdoor_adaptive":
        return torch.stack([scale_to_norm(trained[row_of[(t, i)]], honest) for i in range(f)])
    if a == "alie":
        return alie(honest, alie_z_max(n, f)).expand(f, d).clone()
    if a == "alie_z1":
        return alie(honest, ALIE_FIXED_Z).expand(f, d).clone()
    if a == "ipm_small":
        return ipm(honest, IPM_SMALL_EPS).expand(f, d).clone()
    if a == "ipm_large":
        return ipm(honest, IPM_LARGE_EPS).expand(f, d).clone()
    if a == "freerider_zero":
        return torch.zeros((f, d), dtype=torch.float32)
    if a == "freerider_stale":
        return tr.prev_step.expand(f, d).clone()
    if a == "sybil":
        return trained[row_of[(t, 0)]].expand(f, d).clone()
    if a == "sybil_split":
        return torch.stack([trained[row_of[(t, i)]] for i in range(f)])
    if a in SYBIL_NOISE:
        return torch.stack([perturbed_copy(trained[row_of[(t, 0)]], seed=seeds[i], ratio=SYBIL_NOISE[a])
                            for i in range(f)])
    raise ValueError(f"unknown attack {a!r}")


def _cell_result(cfg: CellConfig, trajs: list[_Trajectory], parts: list[np.ndarray], method: str,
                 timing: dict[str, float], seconds: float) -> dict[str, Any]:
    f = cfg.f
    unit = 10**18
    runs = []
    reference = None
    sybil_alone: dict[str, dict[str, Any]] = {}
    split_alone: dict[str, dict[str, Any]] = {}
    for tr in trajs:
        if tr.attack == HONEST_ONLY:
            reference = {"final_accuracy": tr.accuracy[-1], "accuracy": tr.accuracy}
            continue
        if tr.attack in (SYBIL_ALONE, SPLIT_ALONE):
            counterfactual = sybil_alone if tr.attack == SYBIL_ALONE else split_alone
            counterfactual[tr.defense] = {"final_accuracy": tr.accuracy[-1], "participant0_fed": tr.rewards[0] / unit,
                                          "participant0_stake_lost": tr.burned[0] / STAKE_UNIT,
                                          "participant0_stake": tr.stakes[0] / STAKE_UNIT}
            continue
        run: dict[str, Any] = {
            "attack": tr.attack,
            "defense": tr.defense,
            "final_accuracy": tr.accuracy[-1],
            "accuracy": tr.accuracy,
            "backdoor_success": tr.backdoor[-1],
            "backdoor_success_per_round": tr.backdoor,
        }
        if tr.defense in PLATFORM_RULES or tr.defense in RULE_VARIANTS:
            byz = set(range(f)) if tr.attack != CLEAN else set()
            total = sum(tr.rewards)
            honest_rewards = [tr.rewards[i] / unit for i in range(cfg.n) if i not in byz]
            mean_honest = sum(honest_rewards) / len(honest_rewards)
            run["platform"] = {
                "score_auroc": auroc([s / 1e6 for _, i, s in tr.scores if i not in byz],
                                     [s / 1e6 for _, i, s in tr.scores if i in byz]) if byz else None,
                "attacker_reward_share": share(sum(tr.rewards[i] for i in byz), total) if byz else None,
                "attacker_rejection_rate": (sum(tr.rejected[i] for i in byz) / (len(byz) * cfg.rounds)) if byz
                else None,
                "honest_rejection_rate": sum(tr.rejected[i] for i in range(cfg.n) if i not in byz)
                / ((cfg.n - len(byz)) * cfg.rounds),
                "rewards_fed": [x / unit for x in tr.rewards],
                "honest_reward_gini": gini(honest_rewards),
                "honest_reward_min_max": min_max_ratio(honest_rewards),
                # honest participants paid less than a tenth of the mean honest reward
                "honest_starved_share": sum(r < 0.1 * mean_honest for r in honest_rewards) / len(honest_rewards),
                # stake economics (in minimum stakes and FED per identity): what an attacker paid and earned
                "attacker_stake_lost": (sum(tr.burned[i] for i in byz) / len(byz) / STAKE_UNIT)
                if byz and tr.defense in PLATFORM_RULES else None,
                "attacker_reward_per_identity": (sum(tr.rewards[i] for i in byz) / len(byz) / unit) if byz else None,
                "honest_stake_lost": sum(tr.burned[i] for i in range(cfg.n) if i not in byz)
                / (cfg.n - len(byz)) / STAKE_UNIT if tr.defense in PLATFORM_RULES else None,
                "honest_reward_per_identity": mean_honest,
                "reputation_auroc": auroc([tr.reputation[i] for i in range(cfg.n) if i not in byz],
                                          [tr.reputation[i] for i in byz]) if byz else None,
                "reputation_ppm": tr.reputation,
                "scores_last_round": [s for rr, _, s in tr.scores if rr == cfg.rounds],
            }
        runs.append(run)
    return {
        "cell": {
            "dataset": cfg.dataset, "partition": cfg.partition, "n": cfg.n, "fraction": cfg.fraction, "f": f,
            "seed": cfg.seed, "rounds": cfg.rounds, "local_steps": cfg.local.steps,
        },
        "honest_only_fedavg": reference,
        "sybil_alone": sybil_alone,
        "split_alone": split_alone,
        "partition_method": method,
        "shard_sizes": [len(p) for p in parts],
        "seconds": round(seconds, 3),
        "timing": {k: round(v, 3) for k, v in timing.items()},
        "runs": runs,
    }


@functools.lru_cache(maxsize=8)
def _cached_dataset(name: str, seed: int) -> Dataset:
    return load_dataset(name, seed=seed)


@functools.lru_cache(maxsize=64)
def _cached_partition(dataset: str, partition: str, n: int, seed: int) -> tuple[list[np.ndarray], str]:
    return partition_indices(_cached_dataset(dataset, seed).y_train.numpy(), n, partition, seed)


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
    parser.add_argument("--rule-version", type=int, choices=VERSIONS, default=RuleConfig.version)
    args = parser.parse_args()
    fields = {"aggregator": args.aggregator, "max_norm_ratio": args.max_norm_ratio, "min_score": args.min_score}
    make = {1: RuleConfig.version1, 2: RuleConfig.version2, 3: RuleConfig.version3, 4: RuleConfig.version4,
            5: RuleConfig}[args.rule_version]
    rule = make(**fields)
    print("seed  final_acc  honest_rej  attacker_rej")
    for seed in args.seeds:
        cfg = FederationConfig(args.participants, args.byzantine, args.attack, alpha=args.alpha, seed=seed)
        res = simulate(cfg, rule)
        att = "-" if res.attacker_rejection_rate is None else f"{res.attacker_rejection_rate:.3f}"
        print(f"{seed:4d}  {res.final_accuracy:9.4f}  {res.honest_rejection_rate:10.3f}  {att:>12}")


if __name__ == "__main__":
    main()
