"""Subcommands that need the full stack: demo and audit."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from trainer.attacks import ALL_ATTACKS
from trainer.data import DATASETS
from trainer.local import add_local_steps_argument
from trainer.rules import AGGREGATORS


def _cmd_demo(args: argparse.Namespace) -> int:
    from fedledger.demo import DemoConfig, run_demo, write_json

    cfg = DemoConfig(
        participants=args.participants,
        byzantine=args.byzantine,
        attack=args.attack,
        rounds=args.rounds,
        aggregator=args.aggregator,
        rule_version=args.rule_version,
        dataset=args.dataset,
        alpha=args.alpha,
        seed=args.seed,
        state_dir=args.state_dir,
        clean_reference=not args.no_clean_reference,
        stack=args.stack,
        devnet=_devnet_config(args),
        dp_epsilon=args.dp_epsilon,
        dp_delta=args.dp_delta,
        dp_clip=args.dp_clip,
        dp_budget=args.dp_budget,
        unpaid_rounds=args.unpaid_rounds,
        admission=args.admission,
        local_steps=args.local_steps,
        settlement=args.settlement,
    )
    result = run_demo(cfg)
    if args.json:
        write_json(args.json, result.summary)
    if args.serve:
        serve_demo(result, host=args.host, port=args.port)
    return 0 if result.audit.verified else 1


def serve_demo(result: Any, *, host: str, port: int) -> None:
    """Serve the API and the dashboard over the demo's own stack, in this process (the embedded chain lives here),
    until interrupted. The demo's final audit is the dashboard's "last audit" until someone runs another."""
    import uvicorn

    from api.app import create_app
    from api.settings import Settings
    from fedledger.service import Platform

    stack = result.stack
    settlement = result.summary["settlement"]  # the API settles the rounds it runs as the demo settled its own
    if stack.name == "devnet":
        settings = Settings(stack="devnet", devnet_dir=result.state_dir, host=host, port=port, settlement=settlement)
    else:
        settings = Settings(stack="embedded", state_dir=result.state_dir, host=host, port=port, settlement=settlement)
    platform = Platform.create(stack, result.state_dir / "index.sqlite", queue_path=settings.queue_path(),
                              settlement=settlement)
    platform.record_audit(result.audit)
    platform.synced()  # index the chain's events (pages) and read them into the audit's history, once, now:
    platform.history().refresh()  # on the in-process EVM both take long for big rounds (README, "Dashboard")
    print(f"dashboard: http://{host}:{port}/dashboard  (API: http://{host}:{port}/docs; Ctrl-C stops)", flush=True)
    uvicorn.run(create_app(settings, platform=platform), host=host, port=port, log_level="warning")


def _cmd_audit_verify(args: argparse.Namespace) -> int:
    from rich.console import Console

    from fedledger.audit import Auditor, verify_command
    from fedledger.wiring import attach, open_blob_store

    deployment = attach(args.rpc, args.manifest)
    store = open_blob_store(blobs=args.blobs, ipfs=args.ipfs or deployment.manifest.endpoints.get("ipfs_api"))
    return verify_command(Auditor(deployment, store), Console(), round_id=args.round, json_out=args.json)


def _devnet_config(args: argparse.Namespace) -> Any:
    from fedledger.devnet import DevnetConfig

    return DevnetConfig(
        dir=args.devnet_dir,
        rpc_port=args.rpc_port,
        ipfs_api_port=args.ipfs_api_port,
        ipfs_gateway_port=args.ipfs_gateway_port,
        seed=args.devnet_seed,
        node=getattr(args, "node", "hardhat"),
        state_interval=getattr(args, "state_interval", 2),
        admission=getattr(args, "admission", False),
    )


def _add_devnet_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("devnet")
    g.add_argument("--devnet-dir", type=Path, default=Path(".fedledger/devnet"), help="devnet state, logs, manifest")
    g.add_argument("--rpc-port", type=int, default=8545)
    g.add_argument("--ipfs-api-port", type=int, default=5001)
    g.add_argument("--ipfs-gateway-port", type=int, default=8080)
    g.add_argument("--devnet-seed", type=int, default=0, help="derives the devnet admin/operator/aggregator keys")


def _cmd_devnet(args: argparse.Namespace) -> int:
    from rich.console import Console

    from fedledger.devnet import Devnet, DevnetError

    console = Console()
    try:
        devnet = Devnet(_devnet_config(args))
        if args.devnet_command == "up":
            manifest = devnet.up(external=args.external)
            console.print(f"devnet up: chain {manifest.chain_id} at {manifest.endpoints['rpc']}, "
                          f"Kubo at {manifest.endpoints['ipfs_api']}")
            console.print(f"manifest: {devnet.cfg.manifest_path}; logs: {devnet.logs}")
        elif args.devnet_command == "status":
            console.print_json(data=devnet.status())
        else:
            stopped = devnet.down(wipe=args.wipe)
            console.print(f"stopped: {', '.join(stopped) or 'nothing was running'}"
                          + ("; data wiped" if args.wipe else ""))
    except DevnetError as exc:
        console.print(f"[red]devnet {args.devnet_command}: {exc}[/]")
        return 2
    return 0


def _bench_module(name: str) -> Any:
    import importlib

    return importlib.import_module(name)


def _cmd_bench_gas(args: argparse.Namespace) -> int:
    from fedledger.bench_gas import run

    return run(sorted(args.participants), args.json, batch_size=args.batch_size)


BENCHES = (  # name, module, help
    ("aggregate", "fedledger.bench_aggregate", "median speed vs numpy and streamed aggregation memory"),
    ("scale", "fedledger.bench_scale", "Merkle-committed rounds of many participants on a real Hardhat + Kubo"),
    ("dashboard", "fedledger.bench_dashboard", "render time of the dashboard's round page for a round of N participants"),
    ("load", "fedledger.bench_load", "N participants through the real API, concurrently, to one devnet round"),
    ("flower", "fedledger.flower.bench", "the example Flower app: FedAvg vs FedMedian vs FedLedger, ledger overhead"),
    ("robustness", "fedledger.bench_robustness", "attacks x defenses grid: accuracy, score AUROC, reward shares"),
    ("privacy", "fedledger.bench_privacy", "DP-SGD participants: final accuracy vs per-round epsilon (Opacus, RDP)"),
)


def register(sub: Any) -> None:
    p = sub.add_parser("demo", help="run federated rounds end to end on the embedded stack, then audit them")
    p.add_argument("--participants", type=int, default=10)
    p.add_argument("--byzantine", type=int, default=3, help="how many participants attack")
    p.add_argument("--attack", choices=ALL_ATTACKS, default="signflip",
                   help="what the Byzantine participants do (trainer/attacks.py; signflip: send -4 x update)")
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--aggregator", choices=AGGREGATORS, default="median-verified-mean")
    p.add_argument("--rule-version", type=int, choices=(2, 3, 4, 5, 6, 7, 8), default=5,
                   help="median-verified-mean version (trainer/rules.py): 8 version 7 allowing stake's multiple of "
                        "the typical norm, 7 version 6 whose reference median counts stake as votes, 6 version 5 "
                        "paying by score x stake (6 to 8 need --settlement merkle), 5 "
                        "version 4 whose small rounds take the previous rounds' accepted updates as third parties, 4 "
                        "version 3 with redundancy groups (noisy copies share one score), 3 reputation-gated and "
                        "trust-weighted, 2 equal weights")
    p.add_argument("--settlement", choices=("legacy", "merkle"), default="legacy",
                   help="legacy: finalizeRound writes every verdict and mints the rewards; merkle: one results root "
                        "per round, slashes proved, every participant claims its reward by Merkle proof")
    p.add_argument("--unpaid-rounds", type=int, default=0,
                   help="the first rounds open with reward budget 0 (the rule runs and reputation builds, nobody is "
                        "paid): rule version 5 groups a small round's perturbed sybils only once it has earlier rounds")
    p.add_argument("--admission", action="store_true",
                   help="deploy a consortium's registry: the operator admits the participants' wallets, an outsider's "
                        "registration is refused (embedded stack; a devnet's is `fedledger devnet up --admission`)")
    p.add_argument("--dataset", choices=DATASETS, default="digits")
    p.add_argument("--alpha", type=float, default=0.5, help="Dirichlet label-skew concentration")
    add_local_steps_argument(p)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--state-dir", type=Path, default=None, help="where blobs and the manifest go (default: a temp dir)")
    p.add_argument("--json", type=Path, default=None, help="write the summary as JSON here")
    p.add_argument("--no-clean-reference", action="store_true", help="skip the off-chain clean FedAvg yardstick")
    p.add_argument("--stack", choices=("embedded", "devnet"), default="embedded",
                   help="embedded: in-process EVM + blob directory; devnet: the stack `fedledger devnet up` runs")
    dp = p.add_argument_group("differential privacy (issue 13)")
    dp.add_argument("--dp-epsilon", type=float, default=None,
                    help="honest participants train with DP-SGD (Opacus) at this epsilon per round and commit it on "
                         "the PrivacyLedger")
    dp.add_argument("--dp-delta", type=float, default=1e-5, help="with --dp-epsilon: delta per round")
    dp.add_argument("--dp-clip", type=float, default=1.0, help="with --dp-epsilon: per-sample clipping norm")
    dp.add_argument("--dp-budget", type=float, default=None,
                    help="the operator's epsilon budget per participant (sums over rounds); updates past it are refused")
    g = p.add_argument_group("serve")
    g.add_argument("--serve", action="store_true",
                   help="after the rounds, keep the demo's chain and serve the API and the dashboard (/dashboard)")
    g.add_argument("--host", default="127.0.0.1", help="with --serve: the address to listen on")
    g.add_argument("--port", type=int, default=8000, help="with --serve: the port to listen on")
    _add_devnet_options(p)
    p.set_defaults(func=_cmd_demo)

    devnet = sub.add_parser("devnet", help="operators: run the Hardhat node + Kubo daemon, deploy, write the manifest")
    devnet_sub = devnet.add_subparsers(dest="devnet_command", required=True)
    for name, text in (("up", "start (or reuse) the stack and deploy"), ("status", "what runs where"),
                       ("down", "stop what up started")):
        p = devnet_sub.add_parser(name, help=text)
        _add_devnet_options(p)
        if name == "up":
            p.add_argument("--external", action="store_true",
                           help="start nothing: deploy onto a node + Kubo already on these ports (docker compose)")
            p.add_argument("--node", choices=("hardhat", "anvil"), default="hardhat",
                           help="hardhat: keeps no state; anvil: chain state in <devnet-dir>/anvil-state.json "
                                "survives down/up and a killed node")
            p.add_argument("--state-interval", type=int, default=2,
                           help="anvil: seconds between state dumps (a killed node loses at most this much)")
            p.add_argument("--admission", action="store_true",
                           help="a consortium's registry: only wallets the operator admitted may register "
                                "(POST /operator/participants/{address}/admit)")
        if name == "down":
            p.add_argument("--wipe", action="store_true", help="also delete chain/IPFS data, logs and the manifest")
        p.set_defaults(func=_cmd_devnet)

    audit = sub.add_parser("audit", help="read-only: re-derive rounds from the chain and the blob store")
    audit_sub = audit.add_subparsers(dest="audit_command", required=True)
    p = audit_sub.add_parser("verify", help="verify every finalized round (or one) and exit 1 on any failure")
    p.add_argument("--manifest", type=Path, default=Path(".fedledger/devnet/manifest.json"),
                   help="deployment manifest (chain id, addresses, endpoints)")
    p.add_argument("--rpc", default=None, help="JSON-RPC URL of a node (default: the manifest's)")
    p.add_argument("--ipfs", default=None, help="Kubo RPC multiaddr (default: the manifest's)")
    p.add_argument("--blobs", type=Path, default=None, help="a local blob directory instead of IPFS")
    p.add_argument("--round", type=int, default=None)
    p.add_argument("--json", type=Path, default=None, help="write the per-check report as JSON")
    p.set_defaults(func=_cmd_audit_verify)

    from fedledger import roles_cli

    roles_cli.register(sub, audit_sub)

    bench = sub.add_parser("bench", help="benchmarks")
    bench_sub = bench.add_subparsers(dest="bench_command", required=True)
    p = bench_sub.add_parser("gas", help="gas per operation and per round on a throw-away Hardhat node")
    p.add_argument("--participants", type=int, nargs="+", default=[10, 100, 1000])
    p.add_argument("--batch-size", type=int, default=500, help="signed commitments per relayed batch")
    p.add_argument("--json", type=Path, default=None)
    p.set_defaults(func=_cmd_bench_gas)
    for name, module, text in BENCHES:  # each bench module has add_arguments(parser) and run(args)
        p = bench_sub.add_parser(name, help=text)
        _bench_module(module).add_arguments(p)
        p.set_defaults(func=lambda a, module=module: _bench_module(module).run(a))
