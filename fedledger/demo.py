"""``fedledger demo``: federated rounds end to end on the embedded stack, then an independent audit.

    fedledger demo                                   # digits, 10 participants, 3 sign-flippers (x-4), 10 rounds
    fedledger demo --aggregator fedavg               # the undefended baseline (collapses)
    fedledger demo --json out.json                   # machine-readable summary
    fedledger demo --dp-epsilon 4                    # honest participants train with DP-SGD, epsilon 4 per round
    fedledger demo --dp-epsilon 4 --dp-budget 10     # ... and the operator refuses updates past epsilon 10 in total
    fedledger demo --settlement merkle --rule-version 8   # one results root per round; rewards claimed by proof

Participants with even index commit by their own transaction; odd ones sign an EIP-712 commitment that the
operator relays (the contract checks the signature). The audit at the end reads only the chain and the blob store.

Settlement ``legacy`` (the default) finalizes each round with every verdict, score and reward written on chain;
``merkle`` commits one root of the round's result list (``finalizeRoundWithResults``), proves the slashable verdicts,
and then every participant claims its entry by Merkle proof, which mints its reward. Rule versions 6 to 8 (rewards
by score x stake, from 7 stake as votes in the reference median, from 8 stake in the norm test) need ``merkle``.

Every participant stakes the registry's minimum (1 devnet ether) at registration. A slashable rejection burns 10 %
of its stake, which leaves it below the minimum: before its next commitment it tops the stake up again (an attacker
that wants to keep attacking pays; so would an honest participant wrongly rejected). The summary reports the stake
burned per attacker and per honest identity and what each earned.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from chain.accounts import devnet_wallets
from chain.deploy import Deployment
from chain.errors import ContractRevert
from fedledger.devnet import DevnetConfig
from fedledger.stack import Stack, devnet_stack, embedded_stack
from fedledger.audit import AuditReport, Auditor, print_audit
from fedledger.privacy import PrivacyBudgetExceeded
from fedledger.roles import Aggregator, MerkleAggregator, Operator, ParticipantClient, claims_for, fetch_params
from fedledger.service import EVALUATIONS_FILE, record_evaluation
from storage import BlobRef, BlobStore
from trainer.aggregation import RoundOutcome, Verdict
from trainer.attacks import ALL_ATTACKS, AttackContext, Trigger, apply_attack, make_trigger, split_shard
from trainer.data import Dataset, dirichlet_partition, load_dataset
from trainer.local import LocalConfig, train_local
from trainer.metrics import attack_success_rate
from trainer.model import ModelSpec, Params, accuracy, init_params, load_into
from trainer.privacy import Mechanism, PrivacyConfig, train_local_dp
from trainer.rules import RuleConfig, Status
from trainer.simulation import FederationConfig, local_seed, simulate

TOKEN_UNIT = 10**18
ETHER = 10**18
SETTLEMENTS = ("legacy", "merkle")
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DemoConfig:
    participants: int = 10
    byzantine: int = 3
    attack: str = "signflip"
    rounds: int = 10
    aggregator: str = "median-verified-mean"
    rule_version: int = RuleConfig.version  # of median-verified-mean (trainer/rules.py): 4 no history third parties,
    # 3 no redundancy groups, 2 equal weights
    dataset: str = "digits"
    alpha: float = 0.5
    seed: int = 0
    state_dir: Path | None = None
    clean_reference: bool = True
    stack: str = "embedded"  # or "devnet": the running `fedledger devnet up` stack
    devnet: DevnetConfig = field(default_factory=DevnetConfig)
    dp_epsilon: float | None = None  # per round, for every honest participant (attackers do not bother with DP)
    dp_delta: float = 1e-5
    dp_clip: float = 1.0
    dp_budget: float | None = None  # the operator's default epsilon budget on the PrivacyLedger (None: unlimited)
    # the first rounds open with reward_budget 0: the rule runs, reputation builds, nobody is paid (rule version 5's
    # small rounds need earlier rounds before perturbed copies can be told from honest updates)
    unpaid_rounds: int = 0
    # a consortium's registry (embedded stack): the operator admits the demo's wallets, an outsider's is refused; a
    # devnet deployment has the kind `fedledger devnet up [--admission]` gave it
    admission: bool = False
    # SGD steps per round for every participant: S, None (2 epochs of its data) or "epochs:S" (2 epochs, at most S)
    local_steps: int | str | None = LocalConfig.steps
    # "legacy": finalizeRound writes every verdict and mints on chain; "merkle": one results root, claims by proof
    settlement: str = "legacy"

    def __post_init__(self) -> None:
        if self.participants < 1:
            raise ValueError(f"--participants must be >= 1, got {self.participants}")
        if not 0 <= self.byzantine <= self.participants:
            raise ValueError(f"--byzantine must be in [0, {self.participants}], got {self.byzantine}")
        if self.stack not in ("embedded", "devnet"):
            raise ValueError(f"--stack must be embedded or devnet, got {self.stack!r}")
        if self.rounds < 1:
            raise ValueError(f"--rounds must be >= 1, got {self.rounds}")
        if not 0 <= self.unpaid_rounds < self.rounds:
            raise ValueError(f"--unpaid-rounds must be in [0, {self.rounds - 1}] (--rounds {self.rounds}), got "
                             f"{self.unpaid_rounds}")
        if self.dp_epsilon is not None and not self.dp_epsilon > 0:
            raise ValueError(f"--dp-epsilon must be positive, got {self.dp_epsilon}")
        if self.dp_budget is not None and self.dp_budget < 0:
            raise ValueError(f"--dp-budget must be >= 0, got {self.dp_budget}")
        if self.attack not in ALL_ATTACKS:
            raise ValueError(f"unknown --attack {self.attack!r}: choose one of {', '.join(ALL_ATTACKS)}")
        if self.settlement not in SETTLEMENTS:
            raise ValueError(f"--settlement must be one of {', '.join(SETTLEMENTS)}, got {self.settlement!r}")
        if self.aggregator == "median-verified-mean":
            rule = RuleConfig(aggregator=self.aggregator, version=self.rule_version)  # RuleError names a bad version
            if rule.stake_weighted and self.settlement != "merkle":
                raise ValueError(f"--rule-version {self.rule_version} splits rewards by stake, which only Merkle "
                                 "settlement pays: add --settlement merkle")
        if self.admission and self.stack == "devnet":
            raise ValueError("--admission deploys the embedded stack's registry; a devnet's registry is deployed by "
                             "`fedledger devnet up --admission`")


@dataclass
class RoundRow:
    round_id: int
    accuracy: float
    accepted: int
    rejected: int
    minted: int
    gas: int
    attacker_rewards: int
    attacker_slashed: int = 0  # wei of attackers' stake this round's verdicts burned
    honest_slashed: int = 0
    model_hash: bytes = b""  # the new global model's sha256 (what the accuracy was measured on)


@dataclass
class DemoResult:
    summary: dict[str, Any]
    rows: list[RoundRow]
    audit: AuditReport
    deployment: Deployment = field(repr=False)
    store: BlobStore = field(repr=False)
    spec: ModelSpec = field(repr=False)
    stack: Stack | None = field(default=None, repr=False)  # what `fedledger demo --serve` serves
    state_dir: Path | None = None  # where the event index (and evaluations.jsonl) of a served demo go


class Consortium:
    """The simulated consortium: one chain, one blob store, an operator, an aggregator, N participants."""

    def __init__(self, cfg: DemoConfig, stack: Stack) -> None:
        self.cfg = cfg
        self.stack = stack
        self.deployment = stack.deployment
        self.store = stack.store
        labels = [f"participant/{i}" for i in range(cfg.participants)]
        wallets = devnet_wallets(stack.transactor, cfg.seed, labels)
        self.data: Dataset = load_dataset(cfg.dataset, seed=cfg.seed)
        self.spec = ModelSpec(self.data.num_features, self.data.num_classes)
        self.parts = dirichlet_partition(self.data.y_train.numpy(), cfg.participants, cfg.alpha, seed=cfg.seed)
        self.operator = Operator(self.deployment, self.store, stack.operator)
        settles = MerkleAggregator if cfg.settlement == "merkle" else Aggregator
        self.aggregator = settles(self.deployment, self.store, stack.aggregator)
        self.clients = [
            ParticipantClient(self.deployment, self.store, wallets[f"participant/{i}"], self.spec)
            for i in range(cfg.participants)
        ]
        # The first `byzantine` participants by index attack; which addresses those are is arbitrary.
        self.byzantine = {c.address for c in self.clients[: cfg.byzantine]}
        self.rule = RuleConfig(aggregator=cfg.aggregator, version=cfg.rule_version)
        self.rounds_opened = 0
        self.local = LocalConfig.from_option(cfg.local_steps)
        self.trigger: Trigger = make_trigger(cfg.dataset, self.data.x_train, self.data.num_classes)
        self._last_base: Params | None = None  # the previous round's base: the stale free-rider resends base - it
        self.latest_params: Params | None = None  # the global model after the last round played
        self.privacy = (PrivacyConfig(target_epsilon=cfg.dp_epsilon, delta=cfg.dp_delta, max_grad_norm=cfg.dp_clip)
                        if cfg.dp_epsilon is not None else None)
        self.mechanisms: dict[tuple[int, int], Mechanism] = {}  # (round, participant index) -> its DP mechanism
        self.dp_refused: list[tuple[int, str]] = []  # (round, participant) updates the budget refused
        self.topped_up: dict[str, int] = {c.address: 0 for c in self.clients}  # wei added after slashes
        self.admission_refused: list[ContractRevert] = []  # what an admission registry answered an outsider

    def top_up(self) -> int:
        """Participants whose stake a slash took below the minimum stake it up again. Returns the gas used."""
        registry, gas = self.deployment.registry, 0
        minimum = registry.min_stake()
        for c in self.clients:
            s = registry.stake_of(c.address)
            if s.withdrawal_requested_at == 0 and s.amount < minimum:
                gas += c.deposit_stake(minimum - s.amount).gas_used
                self.topped_up[c.address] += minimum - s.amount
        return gas

    def enroll(self) -> int:
        """Participants register their wallets (unless already registered: a devnet deployment outlives a demo);
        the operator publishes the genesis model unless the deployment has one, which must fit this model.
        Returns the gas used."""
        registry = self.deployment.registry
        self._finish_interrupted_round()
        gas = 0
        if registry.admission_required():  # a consortium's registry: the operator admits its members' wallets first
            gas += sum(self.operator.admit(c.address).gas_used for c in self.clients
                       if not registry.is_admitted(c.address))
            outsider = devnet_wallets(self.stack.transactor, self.cfg.seed, ["outsider"])["outsider"]  # not admitted
            if registry.status_of(outsider) == 0 and not registry.is_admitted(outsider):
                try:
                    registry.register(sender=outsider, value=registry.min_stake())
                except ContractRevert as refused:
                    self.admission_refused.append(refused)
        gas += sum(c.register().gas_used for c in self.clients if registry.status_of(c.address) == 0)
        current = self.deployment.rounds.global_model()
        if self.cfg.dp_budget is not None:
            gas += self.operator.set_privacy_budget(self.cfg.dp_budget).gas_used
        if current.model_hash == bytes(32):
            _, genesis_tx = self.operator.publish_genesis(init_params(self.spec, self.cfg.seed))
            return gas + genesis_tx.gas_used
        existing = fetch_params(self.store, current.cid, current.model_hash)
        if {k: tuple(v.shape) for k, v in existing.items()} != self.spec.shapes():
            raise ValueError(
                f"this deployment's global model does not fit the {self.cfg.dataset} model: "
                "use a fresh deployment (fedledger devnet down --wipe; fedledger devnet up)"
            )
        return gas

    def _finish_interrupted_round(self) -> None:
        """A devnet deployment may hold a round an earlier run left open: close and finalize it first."""
        rounds = self.deployment.rounds
        count = rounds.round_count()
        if count == 0:
            return
        state = rounds.get_round(count).state
        if state == 1:
            self.operator.close_round(count)
        if state in (1, 2):
            self.aggregator.finalize(count)

    def _train(self, i: int, base: Params, round_id: int, transform: Any = None,
               indices: np.ndarray | None = None) -> Params:
        idx = torch.from_numpy(self.parts[i] if indices is None else indices)
        x, y = self.data.x_train[idx], self.data.y_train[idx]
        if transform is not None:
            x, y = transform(x, y)
        seed = local_seed(self.cfg.seed, round_id, i)
        if self.privacy is not None and transform is None and self.clients[i].address not in self.byzantine:
            update, self.mechanisms[(round_id, i)] = train_local_dp(self.spec, base, x, y, self.local, self.privacy,
                                                                    seed=seed)
            return update
        return train_local(self.spec, base, x, y, self.local, seed=seed)

    def round_updates(self, bases: list[Params], round_id: int) -> list[Params]:
        """Every participant's update for this round (participant i trained from ``bases[i]``, the model it fetched):
        honest participants train; attackers train too, then apply ``cfg.attack`` with what it needs (the round's
        honest updates for ALIE / IPM / the adaptive backdoor, a retraining hook for label flip and backdoors, the
        previous global step for the stale free-rider; sybils copy the first attacker's update, or train on slices of
        the attackers' pooled data)."""
        attackers = [i for i, c in enumerate(self.clients) if c.address in self.byzantine]
        slices = None  # sybil_split: the attackers' data sets pooled as one party's, cut into one slice per wallet
        if attackers and self.cfg.attack == "sybil_split":
            pooled = np.sort(np.concatenate([self.parts[i] for i in attackers]))
            slices = dict(zip(attackers, split_shard(pooled, len(attackers), seed=self.cfg.seed), strict=True))
        # a split wallet trains only on its slice (never on the shard it was dealt)
        updates = [self._train(i, bases[i], round_id, indices=None if slices is None else slices.get(i))
                   for i in range(len(self.clients))]
        if not attackers:
            return updates
        honest = [u for i, u in enumerate(updates) if i not in attackers]
        base = bases[attackers[0]]
        step = None
        if self._last_base is not None:
            step = {k: (base[k] - self._last_base[k]).contiguous() for k in base}
        self._last_base = base
        sent = list(updates)
        for i in attackers:
            context = AttackContext(
                honest=honest, n=len(self.clients), f=len(attackers), previous_global_step=step,
                retrain=lambda transform, i=i: self._train(i, bases[i], round_id, transform),
                num_classes=self.data.num_classes, trigger=self.trigger, sybil_source=updates[attackers[0]],
                split_update=None if slices is None else updates[i],
            )
            sent[i] = apply_attack(self.cfg.attack, updates[i], seed=local_seed(self.cfg.seed, round_id, i),
                                   context=context)
        return sent

    @torch.no_grad()
    def backdoor_success(self, params: Params) -> float:
        """Share of triggered test inputs (true class not the target) the model classifies as the target."""
        module = load_into(self.spec, params).eval()
        predictions = module(self.trigger.apply(self.data.x_test)).argmax(dim=1)
        return attack_success_rate(predictions, self.data.y_test, self.trigger.target)


def run_demo(cfg: DemoConfig, console: Console | None = None) -> DemoResult:
    console = console or Console()
    started = time.perf_counter()
    state_dir = cfg.state_dir or Path(tempfile.mkdtemp(prefix="fedledger-demo-"))
    state_dir.mkdir(parents=True, exist_ok=True)
    with console.status(f"connecting the {cfg.stack} stack"):
        stack = devnet_stack(cfg.devnet) if cfg.stack == "devnet" else embedded_stack(state_dir, seed=cfg.seed,
                                                                                       admission=cfg.admission)
        world = Consortium(cfg, stack)
    d = world.deployment
    gas_total = d.gas_used
    console.print(
        f"[bold]fedledger demo[/] on the {stack.name} stack: chain id {d.manifest.chain_id}, "
        f"FederatedRounds at {d.rounds.address}, blobs in {stack.store.location}"
    )
    gas_total += world.enroll()
    admission = d.registry.admission_required()
    if admission:
        console.print(f"registration by admission: the operator admitted {len(world.clients)} wallets; "
                      + "; ".join(f"an outsider's registration was refused ({r})" for r in world.admission_refused))
    eval_dir = cfg.devnet.dir if cfg.stack == "devnet" else state_dir
    if cfg.stack == "embedded":  # a fresh chain: evaluations of an earlier run in this directory are void
        (eval_dir / EVALUATIONS_FILE).unlink(missing_ok=True)

    rows: list[RoundRow] = []
    counts = {"att": 0, "att_rej": 0, "hon": 0, "hon_rej": 0}
    progress = Progress(
        TextColumn("[progress.description]{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(), console=console, transient=True,
    )
    with progress:
        task = progress.add_task("rounds", total=cfg.rounds)
        for _ in range(cfg.rounds):
            row, verdicts = play_round(world, lambda stage: progress.update(task, description=stage))
            for v in verdicts:
                kind = "att" if v.participant in world.byzantine else "hon"
                counts[kind] += 1
                counts[kind + "_rej"] += v.status != Status.ACCEPTED
            rows.append(row)
            record_evaluation(eval_dir, round_id=row.round_id, model_hash=row.model_hash, dataset=cfg.dataset,
                              accuracy=row.accuracy, samples=len(world.data.y_test))
            gas_total += row.gas
            progress.advance(task)

    _print_rounds(console, rows)
    with console.status("auditing every round from the chain and the blob store"):
        report = Auditor(d, world.store).verify()
    print_audit(console, report)

    minted = sum(r.minted for r in rows)
    attacker_minted = sum(r.attacker_rewards for r in rows)
    n_att, n_hon = cfg.byzantine, cfg.participants - cfg.byzantine
    summary: dict[str, Any] = {
        "final_accuracy": rows[-1].accuracy,
        "attacker_reward_share": attacker_minted / minted if minted else 0.0,
        "attacker_rejection_rate": counts["att_rej"] / counts["att"] if counts["att"] else None,
        "honest_rejection_rate": counts["hon_rej"] / counts["hon"] if counts["hon"] else None,
        "audit_verified": report.verified,
        "rounds": cfg.rounds,
        "unpaid_rounds": cfg.unpaid_rounds,
        "local_training": world.local.describe(),
        "registration": "admission" if admission else "open",
        "admission_refused": [r.error for r in world.admission_refused],
        "participants": cfg.participants,
        "byzantine": cfg.byzantine,
        "attack": cfg.attack,
        # under a backdoor attack its success; under any other, the trigger's natural rate (the floor)
        "backdoor_success": round(world.backdoor_success(world.latest_params), 4) if world.latest_params else None,
        "aggregator": cfg.aggregator,
        "rule_version": cfg.rule_version,
        "settlement": cfg.settlement,
        "dataset": cfg.dataset,
        "alpha": cfg.alpha,
        "seed": cfg.seed,
        "tokens_minted": minted / TOKEN_UNIT,
        # Stake (native devnet ether): every identity locks min_stake; sybils lock one each.
        "min_stake_eth": d.registry.min_stake() / ETHER,
        "slash_ppm": d.registry.slash_ppm(),
        "stake_locked_by_attackers_eth": n_att * d.registry.min_stake() / ETHER,
        "attacker_stake_lost_eth": sum(r.attacker_slashed for r in rows) / ETHER,
        "honest_stake_lost_eth": sum(r.honest_slashed for r in rows) / ETHER,
        "attacker_stake_lost_per_identity_eth": sum(r.attacker_slashed for r in rows) / n_att / ETHER if n_att else None,
        "honest_stake_lost_per_identity_eth": sum(r.honest_slashed for r in rows) / n_hon / ETHER if n_hon else None,
        "attacker_reward_per_identity_fed": attacker_minted / n_att / TOKEN_UNIT if n_att else None,
        "honest_reward_per_identity_fed": (minted - attacker_minted) / n_hon / TOKEN_UNIT if n_hon else None,
        "gas_used_total": gas_total,
        "stack": stack.name,
        "manifest": str(cfg.devnet.manifest_path if cfg.stack == "devnet" else state_dir / "manifest.json"),
    }
    if cfg.dp_epsilon is not None:
        summary["dp_epsilon_per_round"] = cfg.dp_epsilon
        summary["dp_delta_per_round"] = cfg.dp_delta
        summary["dp_budget"] = cfg.dp_budget
        summary["dp_participants"] = len({i for _, i in world.mechanisms})
        summary["dp_refused_updates"] = len(world.dp_refused)
        summary["dp_max_epsilon_basic"] = max((v["epsilon_basic"] for v in report.privacy.values()), default=0.0)
        summary["dp_max_epsilon_rdp"] = max((v["epsilon_rdp"] for v in report.privacy.values()), default=0.0)
    if cfg.clean_reference:
        summary["clean_reference_accuracy"] = clean_reference_accuracy(cfg)
    summary["wall_seconds"] = round(time.perf_counter() - started, 2)
    _print_summary(console, summary)
    return DemoResult(summary, rows, report, d, world.store, world.spec, stack, eval_dir)


def submit_updates(world: Consortium, round_id: int, on_stage: Callable[[str], None] = lambda _: None) -> int:
    """Every participant fetches the global model (hash-checked against the chain), trains, uploads its update
    and commits it: even indices by their own transaction, odd ones by an EIP-712 signature the operator relays.
    Returns the gas used."""
    gas = world.top_up()
    on_stage(f"round {round_id}: training")
    updates = world.round_updates([client.fetch_global_model() for client in world.clients], round_id)
    for i, (client, update) in enumerate(zip(world.clients, updates, strict=True)):
        mechanism = world.mechanisms.get((round_id, i))
        if mechanism is not None:  # DP: the spend is recorded with the commitment, or both are refused
            try:
                if i % 2 == 0:
                    gas += client.submit_private(round_id, update, mechanism)[1].gas_used
                else:
                    ref = client.upload_private(update, mechanism)
                    gas += world.operator.relay_private(client.address, round_id, ref, mechanism,
                                                        client.sign(round_id, ref)).gas_used
            except PrivacyBudgetExceeded as exc:
                log.info("round %d: %s", round_id, exc)
                world.dp_refused.append((round_id, client.address))
            continue
        if i % 2 == 0:
            gas += client.submit(round_id, update)[1].gas_used
        else:
            ref = client.upload(update)
            gas += world.operator.relay(client.address, round_id, ref, client.sign(round_id, ref)).gas_used
    return gas


def play_round(world: Consortium, on_stage: Callable[[str], None] = lambda _: None) -> tuple[RoundRow, list[Verdict]]:
    """One full round: open, submit, close, finalize; the row for the table and the verdicts."""
    d = world.deployment
    world.rounds_opened += 1
    unpaid = world.rounds_opened <= world.cfg.unpaid_rounds
    round_id, open_tx = world.operator.open_round(replace(world.rule, reward_budget=0) if unpaid else world.rule)
    gas = open_tx.gas_used + submit_updates(world, round_id, on_stage)
    gas += world.operator.close_round(round_id).gas_used
    on_stage(f"round {round_id}: aggregating")
    if isinstance(world.aggregator, MerkleAggregator):
        outcome, new_ref, settle_gas, rewards, slashed = settle_merkle(world, round_id)
        minted = sum(rewards.values())  # each claim mints its entry's reward
    else:
        outcome, new_ref, fin_tx = world.aggregator.finalize(round_id)
        settle_gas = fin_tx.gas_used
        rewards = {s.participant: s.reward for s in d.rounds.contribution_scored_in(fin_tx)}
        slashed = {s.account: s.amount for s in d.registry.stake_slashed_in(fin_tx)}
        (finalized,) = d.rounds.round_finalized_in(fin_tx)
        minted = finalized.minted
    world.latest_params = outcome.new_params
    row = RoundRow(
        round_id=round_id,
        accuracy=accuracy(world.spec, outcome.new_params, world.data.x_test, world.data.y_test),
        accepted=len(outcome.accepted),
        rejected=len(outcome.verdicts) - len(outcome.accepted),
        minted=minted,
        gas=gas + settle_gas,
        attacker_rewards=sum(v for a, v in rewards.items() if a in world.byzantine),
        attacker_slashed=sum(v for a, v in slashed.items() if a in world.byzantine),
        honest_slashed=sum(v for a, v in slashed.items() if a not in world.byzantine),
        model_hash=new_ref.content_hash,
    )
    return row, outcome.verdicts


def settle_merkle(world: Consortium,
                  round_id: int) -> tuple[RoundOutcome, BlobRef, int, dict[str, int], dict[str, int]]:
    """Merkle settlement of a closed round: the aggregator commits the result list's root and proves the slashable
    verdicts; then every participant claims its entry by proof (the claim mints its reward). Returns the outcome, the
    new model's reference, the gas used, the wei each participant was minted and the stake each lost."""
    d = world.deployment
    prepared = world.aggregator.prepare(round_id)
    _, tx, slash_txs = world.aggregator.commit(prepared)
    gas = tx.gas_used + sum(r.gas_used for r in slash_txs)
    slashed = {e.account: e.amount for r in slash_txs for e in d.registry.stake_slashed_in(r)}
    rewards: dict[str, int] = {}
    for c in world.clients:
        claims = claims_for(world.aggregator.history, world.store, c.address, [round_id])
        if claims:
            claim_tx = d.rounds.claim(c.address, claims, sender=c.address)
            gas += claim_tx.gas_used
            rewards.update({e.participant: e.reward for e in d.rounds.reward_claimed_in(claim_tx)})
    return prepared.outcome, prepared.new_ref, gas, rewards, slashed


def clean_reference_accuracy(cfg: DemoConfig) -> float:
    """Same data, partition, model and seeds with no attackers and plain FedAvg, off-chain: the yardstick."""
    fed = FederationConfig(cfg.participants, 0, cfg.attack, cfg.rounds, cfg.dataset, cfg.alpha, cfg.seed)
    return simulate(fed, RuleConfig(aggregator="fedavg"), LocalConfig.from_option(cfg.local_steps)).final_accuracy


def _print_rounds(console: Console, rows: list[RoundRow]) -> None:
    table = Table(title="rounds", title_justify="left")
    for col in ("round", "test acc", "accepted", "rejected", "FED minted", "to attackers", "ETH slashed att/hon",
                "gas used"):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(
            str(r.round_id), f"{r.accuracy:.4f}", str(r.accepted), str(r.rejected), f"{r.minted / TOKEN_UNIT:.2f}",
            f"{r.attacker_rewards / TOKEN_UNIT:.2f}", f"{r.attacker_slashed / ETHER:.2f}/{r.honest_slashed / ETHER:.2f}",
            f"{r.gas:,}",
        )
    console.print(table)


def _print_summary(console: Console, summary: dict[str, Any]) -> None:
    table = Table(title="summary", title_justify="left", show_header=False)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in summary.items():
        table.add_row(key, f"{value:.4f}" if isinstance(value, float) else str(value))
    console.print(table)


def write_json(path: Path, summary: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
