"""``fedledger bench scale``: Merkle-committed rounds with many participants on the real devnet stack.

    fedledger bench scale [--participants 1000] [--rounds 2] [--batch-size 500] [--samples 64] [--epochs 3] [--json F]

Starts a throw-away Hardhat node and Kubo daemon on loopback (or uses ``--rpc``/``--ipfs`` of running ones),
deploys fresh contracts, registers N simulated participants (EIP-712 registrations relayed by the operator), then
plays rounds on digits: every participant fetches the global model, trains, uploads its update to Kubo and signs
its commitment; most are relayed in batches (``commitBatch``), every ``--direct-every``-th commits by its own
transaction, and a tenth of them are sign-flipping attackers (x4). The aggregator finalizes each round with one
results root, streamed (``MerkleAggregator``), in a child process; after the rounds a few participants claim every
round in one transaction, and the auditor (``fedledger audit verify``, a child process reading only the chain and
Kubo) re-derives every round. Wall time and peak RSS of the aggregator and the auditor are those children's own
(``wait4``), so they measure the role, not this driver.

Participants are simulated: digits has 1,437 training samples, too few to give 1,000 clients disjoint data, so each
draws ``--samples`` samples with replacement from its own Dirichlet(``--alpha``) class mix
(``trainer.data.dirichlet_resample``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.table import Table

from chain.accounts import devnet_wallets, fund_from_node
from chain.deploy import deploy_all
from chain.lists import SignedCommitment
from fedledger.devnet import ROLE_LABELS, Devnet, DevnetConfig, free_port
from fedledger.history import ChainHistory
from fedledger.roles import MerkleAggregator, Operator, ParticipantClient, claims_for, fetch_params, sign_registration
from fedledger.settlement import load_results
from fedledger.wiring import BENCH_STAKE_WEI, attach, connect_rpc, default_stake_params, open_blob_store
from storage.kubo import KuboBlobStore
from trainer.attacks import apply_attack
from trainer.data import dirichlet_resample, load_dataset
from trainer.local import LocalConfig, train_local
from trainer.model import ModelSpec, accuracy, init_params
from trainer.rules import RuleConfig, Status
from trainer.simulation import local_seed

CLAIMERS = 5  # participants who claim every round in one transaction at the end


def _child(args: list[str]) -> dict[str, Any]:
    """Run a child process to completion; its own wall time, peak RSS (wait4) and exit code."""
    started = time.perf_counter()
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert proc.stdout is not None
    output = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return {
        "seconds": round(time.perf_counter() - started, 2),
        "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),  # Linux: kilobytes
        "exit_code": proc.returncode,
        "output": output.decode(errors="replace")[-4000:],
    }


def _register(operator: Operator, clients: list[ParticipantClient]) -> int:
    d = operator.deployment
    t = d.registry.transactor
    deadline = int(t.w3.eth.get_block("latest")["timestamp"]) + 3600
    gas = 0
    stake = d.registry.min_stake()
    for c in clients:
        sig = sign_registration(t.account(c.address), t.chain_id, d.registry.address, deadline)
        gas += d.registry.register_for(c.address, deadline, sig, sender=operator.address, value=stake).gas_used
    return gas


def measure(participants: int, **kwargs: Any) -> dict[str, Any]:
    """One scale run (see ``_measure``); torch runs single-threaded meanwhile: a tiny model trained 1,000 times
    gains nothing from threads that only contend with the node, Kubo and the children."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _measure(participants, **kwargs)
    finally:
        torch.set_num_threads(threads)


def _measure(
    participants: int,
    *,
    rpc_url: str,
    ipfs_api: str,
    work_dir: Path,
    rounds: int = 2,
    batch_size: int = 500,
    direct_every: int = 50,
    byzantine_fraction: float = 0.1,
    samples: int = 64,
    epochs: int = 3,
    alpha: float = 0.5,
    seed: int = 0,
    on_stage: Any = lambda _: None,
) -> dict[str, Any]:
    started = time.perf_counter()
    tx = connect_rpc(rpc_url)
    store = KuboBlobStore(ipfs_api)
    wallets = devnet_wallets(tx, seed, list(ROLE_LABELS))
    # The operator sponsors every participant's stake: a token stake keeps 1,000 of them within its devnet funds
    # (the stake's size does not change gas).
    d = deploy_all(tx, admin=wallets["admin"], operator=wallets["operator"], aggregator=wallets["aggregator"],
                   stake=replace(default_stake_params(), min_stake=BENCH_STAKE_WEI),
                   network="devnet", endpoints={"rpc": rpc_url, "ipfs_api": ipfs_api})
    manifest_path = work_dir / "manifest.json"
    d.manifest.write(manifest_path)
    labels = [f"participant/{i}" for i in range(participants)]
    people = devnet_wallets(tx, seed, labels, fund=False)
    direct = {people[lab] for i, lab in enumerate(labels) if i % direct_every == 0}
    fund_from_node(tx.w3, sorted(direct))  # only direct committers (and claimers) need ether
    data = load_dataset("digits", seed=seed)
    spec = ModelSpec(data.num_features, data.num_classes)
    clients = [ParticipantClient(d, store, people[lab], spec) for lab in labels]
    attackers = {c.address for c in clients[: int(participants * byzantine_fraction)]}
    parts = dirichlet_resample(data.y_train.numpy(), participants, alpha, size=samples, seed=seed)
    operator = Operator(d, store, wallets["operator"])
    history = ChainHistory(d)

    on_stage(f"registering {participants} participants")
    t0 = time.perf_counter()
    register_gas = _register(operator, clients)
    register_s = time.perf_counter() - t0
    operator.publish_genesis(init_params(spec, seed))
    local = LocalConfig(epochs=epochs)
    rule = RuleConfig()
    per_round = []
    for _ in range(rounds):
        round_id, open_tx = operator.open_round(rule, duration_s=24 * 3600)
        gas = {"open": open_tx.gas_used, "direct_commits": 0, "batches": 0, "close": 0, "finalize": 0}
        on_stage(f"round {round_id}: {participants} participants train, upload to Kubo and sign")
        t0 = time.perf_counter()
        base = clients[0].fetch_global_model()  # each participant would fetch it; the bytes are the same
        pending: list[SignedCommitment] = []
        batch_count = 0
        for i, c in enumerate(clients):
            idx = torch.from_numpy(parts[i])
            update = train_local(spec, base, data.x_train[idx], data.y_train[idx], local,
                                 seed=local_seed(seed, round_id, i))
            if c.address in attackers:
                update = apply_attack("signflip", update, seed=local_seed(seed, round_id, i))
            if c.address in direct:
                gas["direct_commits"] += c.submit(round_id, update)[1].gas_used
                continue
            ref = c.upload(update)
            pending.append(SignedCommitment(c.address, ref.content_hash, ref.uri, c.sign(round_id, ref)))
            if len(pending) == batch_size:
                gas["batches"] += operator.post_batch(round_id, pending)[2].gas_used
                batch_count += 1
                pending = []
        if pending:
            gas["batches"] += operator.post_batch(round_id, pending)[2].gas_used
            batch_count += 1
        participants_s = time.perf_counter() - t0
        gas["close"] = operator.close_round(round_id).gas_used

        on_stage(f"round {round_id}: aggregator (streamed, Merkle results)")
        agg = _child([sys.executable, "-m", "fedledger.bench_scale", "aggregate", "--manifest", str(manifest_path),
                      "--round", str(round_id), "--seed", str(seed)])
        if agg["exit_code"] != 0:
            raise RuntimeError(f"aggregator failed on round {round_id}:\n{agg['output']}")
        info = d.rounds.get_round(round_id)
        gas["finalize"] = json.loads(agg["output"].strip().splitlines()[-1])["gas_used"]
        rejected = {e.participant for e in load_results(store, history.round(round_id)).entries
                    if e.status != Status.ACCEPTED}
        model = d.rounds.global_model()
        params = fetch_params(store, model.cid, model.model_hash, spec)
        onchain = sum(gas.values())
        per_round.append({
            "round": round_id,
            "participants": participants,
            "batches": batch_count,
            "direct_committers": len(direct),
            "accepted": info.accepted,
            "attackers": len(attackers),
            "attackers_rejected": len(rejected & attackers),
            "honest_rejected": len(rejected - attackers),
            "accuracy": round(accuracy(spec, params, data.x_test, data.y_test), 4),
            "gas": gas,
            "gas_total": onchain,
            "gas_per_participant": round(onchain / participants),
            "gas_per_participant_relayed_only": round((onchain - gas["direct_commits"]) / participants),
            "participants_seconds": round(participants_s, 1),
            "aggregator": {k: agg[k] for k in ("seconds", "peak_rss_mb")},
        })

    on_stage(f"{CLAIMERS} participants claim every round in one transaction")
    claimers = sorted(direct)[:CLAIMERS]
    claim_gas, claims_paid = [], True
    for p in claimers:
        claims = claims_for(history, store, p)
        before = d.token.balance_of(p)
        claim_gas.append(d.rounds.claim(p, claims, sender=p).gas_used)
        claims_paid &= d.token.balance_of(p) - before == sum(c.reward for c in claims) and all(
            d.rounds.is_claimed(c.round_id, p) for c in claims)

    on_stage("auditor: fedledger audit verify (chain + Kubo only)")
    report_path = work_dir / "audit.json"
    aud = _child([sys.executable, "-m", "fedledger.cli", "audit", "verify", "--manifest", str(manifest_path),
                  "--json", str(report_path)])  # the auditor's own command line, nothing of this process
    verified = aud["exit_code"] == 0 and json.loads(report_path.read_text())["verified"]
    # What the roles' processes hold before any round: the interpreter, torch, numba and web3 imported.
    imports = _child([sys.executable, "-c", "import fedledger.audit, fedledger.roles, fedledger.cli"])
    return {
        "stack": "devnet (Hardhat + Kubo)",
        "participants": participants,
        "rounds": per_round,
        "claims": {"claimers": len(claimers), "rounds_each": rounds, "gas": claim_gas, "paid_exactly": claims_paid},
        "registration": {"gas_each": register_gas // participants, "seconds": round(register_s, 1)},
        "auditor": {k: aud[k] for k in ("seconds", "peak_rss_mb")},
        "imports_only_peak_rss_mb": imports["peak_rss_mb"],
        "audit_verified": verified,
        "audit_output": aud["output"][-1500:] if not verified else "",
        "wall_seconds": round(time.perf_counter() - started, 1),
        "model_parameters": sum(v.numel() for v in base.values()),
    }


def print_report(console: Console, report: dict[str, Any]) -> None:
    t = Table(title=f"{report['participants']} participants per round on {report['stack']}", title_justify="left")
    for col in ("round", "batches", "accepted", "attackers rejected", "honest rejected", "accuracy", "gas / round",
                "gas / participant", "aggregator s", "aggregator MB"):
        t.add_column(col, justify="right")
    for r in report["rounds"]:
        t.add_row(str(r["round"]), str(r["batches"]), str(r["accepted"]), f"{r['attackers_rejected']}/{r['attackers']}",
                  str(r["honest_rejected"]), f"{r['accuracy']:.4f}", f"{r['gas_total']:,}",
                  f"{r['gas_per_participant']:,}", f"{r['aggregator']['seconds']}",
                  f"{r['aggregator']['peak_rss_mb']}")
    console.print(t)
    a = report["auditor"]
    console.print(f"auditor (all rounds): {a['seconds']} s, peak RSS {a['peak_rss_mb']} MB (a process that only "
                  f"imports the roles' modules: {report['imports_only_peak_rss_mb']} MB); "
                  f"audit {'verified' if report['audit_verified'] else 'FAILED'}; claims of every round in one tx: "
                  f"{report['claims']['gas']} gas; wall {report['wall_seconds']} s")
    if not report["audit_verified"]:
        console.print(report["audit_output"])


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--participants", type=int, default=1000)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=500)
    p.add_argument("--direct-every", type=int, default=50, help="every k-th participant commits by own transaction")
    p.add_argument("--samples", type=int, default=64, help="training samples each participant draws")
    p.add_argument("--epochs", type=int, default=3, help="local epochs per round")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--rpc", default=None, help="a running node (default: start a throw-away Hardhat node)")
    p.add_argument("--ipfs", default=None, help="a running Kubo API multiaddr (default: start a throw-away Kubo)")
    p.add_argument("--json", type=Path, default=None)


def run(args: argparse.Namespace) -> int:
    console = Console(width=None if sys.stdout.isatty() else 140)  # a log or a pipe gets whole tables
    with tempfile.TemporaryDirectory(prefix="fedledger-scale-") as tmp:
        work = Path(tmp)
        net = None
        if args.rpc is None or args.ipfs is None:
            cfg = DevnetConfig(dir=work / "devnet", rpc_port=free_port(), ipfs_api_port=free_port(),
                               ipfs_gateway_port=free_port())
            net = Devnet(cfg)
            net.up()
        try:
            rpc = args.rpc or net.cfg.rpc_url  # type: ignore[union-attr]
            ipfs = args.ipfs or net.cfg.ipfs_api  # type: ignore[union-attr]
            with console.status("scale run") as status:
                report = measure(args.participants, rpc_url=rpc, ipfs_api=ipfs, work_dir=work, rounds=args.rounds,
                                 batch_size=args.batch_size, direct_every=args.direct_every, seed=args.seed,
                                 samples=args.samples, epochs=args.epochs,
                                 on_stage=status.update)
        finally:
            if net is not None:
                net.down()
    print_report(console, report)
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0 if report["audit_verified"] else 1


def _aggregate_main(argv: list[str]) -> int:
    """The aggregator child: finalize one closed round with a results root; print one JSON line."""
    p = argparse.ArgumentParser(prog="fedledger.bench_scale aggregate")
    p.add_argument("--manifest", type=Path, required=True)
    p.add_argument("--round", type=int, required=True)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    d = attach(None, a.manifest)
    store = open_blob_store(blobs=None, ipfs=d.manifest.endpoints["ipfs_api"])
    wallets = devnet_wallets(d.rounds.transactor, a.seed, list(ROLE_LABELS), fund=False)
    agg = MerkleAggregator(d, store, wallets["aggregator"])
    _, _, tx = agg.finalize(a.round)
    print(json.dumps({"gas_used": tx.gas_used}))
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["aggregate"]:
        raise SystemExit(_aggregate_main(sys.argv[2:]))
    raise SystemExit("usage: python -m fedledger.bench_scale aggregate --manifest M --round N")
