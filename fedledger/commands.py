"""Subcommands that need the full stack: demo and audit."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from trainer.attacks import ATTACKS
from trainer.data import DATASETS
from trainer.rules import AGGREGATORS


def _cmd_demo(args: argparse.Namespace) -> int:
    from fedledger.demo import DemoConfig, run_demo, write_json

    cfg = DemoConfig(
        participants=args.participants,
        byzantine=args.byzantine,
        attack=args.attack,
        rounds=args.rounds,
        aggregator=args.aggregator,
        dataset=args.dataset,
        alpha=args.alpha,
        seed=args.seed,
        state_dir=args.state_dir,
        clean_reference=not args.no_clean_reference,
    )
    result = run_demo(cfg)
    if args.json:
        write_json(args.json, result.summary)
    return 0 if result.audit.verified else 1


def _cmd_audit_verify(args: argparse.Namespace) -> int:
    from rich.console import Console

    from fedledger.audit import Auditor, verify_command
    from fedledger.wiring import attach, open_blob_store

    deployment = attach(args.rpc, args.manifest)
    return verify_command(
        Auditor(deployment, open_blob_store(args.blobs)), Console(), round_id=args.round, json_out=args.json
    )


def register(sub: Any) -> None:
    p = sub.add_parser("demo", help="run federated rounds end to end on the embedded stack, then audit them")
    p.add_argument("--participants", type=int, default=10)
    p.add_argument("--byzantine", type=int, default=3, help="how many participants attack")
    p.add_argument("--attack", choices=ATTACKS, default="signflip", help="signflip: send -4 x update")
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--aggregator", choices=AGGREGATORS, default="median-verified-mean")
    p.add_argument("--dataset", choices=DATASETS, default="digits")
    p.add_argument("--alpha", type=float, default=0.5, help="Dirichlet label-skew concentration")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--state-dir", type=Path, default=None, help="where blobs and the manifest go (default: a temp dir)")
    p.add_argument("--json", type=Path, default=None, help="write the summary as JSON here")
    p.add_argument("--no-clean-reference", action="store_true", help="skip the off-chain clean FedAvg yardstick")
    p.set_defaults(func=_cmd_demo)

    audit = sub.add_parser("audit", help="read-only: re-derive rounds from the chain and the blob store")
    audit_sub = audit.add_subparsers(dest="audit_command", required=True)
    p = audit_sub.add_parser("verify", help="verify every finalized round (or one) and exit 1 on any failure")
    p.add_argument("--rpc", default="http://127.0.0.1:8545", help="JSON-RPC URL of the chain node")
    p.add_argument("--manifest", type=Path, required=True, help="deployment manifest (addresses, chain id)")
    p.add_argument("--blobs", type=Path, required=True, help="blob store directory")
    p.add_argument("--round", type=int, default=None)
    p.add_argument("--json", type=Path, default=None, help="write the per-check report as JSON")
    p.set_defaults(func=_cmd_audit_verify)
