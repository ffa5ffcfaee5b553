"""``fedledger bench gas``: gas per operation and per round on a real Hardhat node.

    fedledger bench gas [--participants 10 50 100] [--json gas.json]

Starts a throw-away Hardhat node on a free loopback port, deploys, and measures receipts' gasUsed for each
operation and for whole rounds of N participants (each commits by its own transaction; the signed-commit path is
measured separately). Scores and blobs are synthetic: gas does not depend on what the model learned.
"""

from __future__ import annotations

import json
import statistics
import tempfile
from pathlib import Path
from typing import Any

from eth_utils import keccak
from rich.console import Console
from rich.table import Table

from chain.accounts import devnet_wallets
from chain.deploy import deploy_all
from fedledger.devnet import Devnet, DevnetConfig, free_port
from fedledger.roles import Operator, sign_commitment
from fedledger.wiring import connect_rpc
from storage import BlobRef, LocalBlobStore
from trainer.rules import RuleConfig

CID_EXAMPLE = "bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy"  # a CIDv1 raw: realistic length


def _ref(label: str) -> BlobRef:
    return BlobRef(content_hash=keccak(text=label), uri=CID_EXAMPLE)


def measure(participant_counts: list[int], *, work_dir: Path) -> dict[str, Any]:
    cfg = DevnetConfig(dir=work_dir / "devnet", rpc_port=free_port())
    node = Devnet(cfg)
    try:
        node.start_hardhat()
        tx = connect_rpc(cfg.rpc_url)
        most = max(participant_counts)
        labels = ["admin", "operator", "aggregator"] + [f"participant/{i}" for i in range(most)]
        wallets = devnet_wallets(tx, 7, labels)
        d = deploy_all(tx, admin=wallets["admin"], operator=wallets["operator"], aggregator=wallets["aggregator"])
        store = LocalBlobStore(work_dir / "blobs")
        operator = Operator(d, store, wallets["operator"])
        people = sorted((wallets[f"participant/{i}"] for i in range(most)), key=str.lower)  # numeric order
        register = [d.registry.register(sender=p).gas_used for p in people]
        genesis = d.rounds.publish_genesis(keccak(text="genesis"), CID_EXAMPLE, sender=wallets["operator"]).gas_used

        ops: dict[str, list[int]] = {"register": register, "publish_genesis": [genesis]}
        per_round: dict[str, dict[str, int]] = {}
        for n in participant_counts:
            round_id, open_tx = operator.open_round(RuleConfig())
            ops.setdefault("open_round", []).append(open_tx.gas_used)
            members = people[:n]
            commits = []
            for i, p in enumerate(members):
                ref = _ref(f"{round_id}/{p}")
                if i == 0:  # one signed commitment per round, relayed by the operator
                    sig = sign_commitment(tx.account(p), tx.chain_id, d.rounds.address, round_id, ref)
                    gas = operator.relay(p, round_id, ref, sig).gas_used
                    ops.setdefault("commit_signed_relayed", []).append(gas)
                else:
                    gas = d.rounds.commit_update(round_id, ref.content_hash, ref.uri, sender=p).gas_used
                    ops.setdefault("commit_direct", []).append(gas)
                commits.append(gas)
            close = operator.close_round(round_id).gas_used
            ops.setdefault("close_round", []).append(close)
            scores = [400_000 + (i * 7919) % 500_000 for i in range(n)]
            statuses = [0 if i % 10 else 1 for i in range(n)]  # one in ten rejected
            fin = d.rounds.finalize_round(
                round_id, keccak(text=f"model/{round_id}"), CID_EXAMPLE, members, scores, statuses,
                sender=wallets["aggregator"],
            ).gas_used
            ops.setdefault(f"finalize_round_{n}", []).append(fin)
            per_round[str(n)] = {
                "participants": n,
                "open": open_tx.gas_used,
                "commits": sum(commits),
                "close": close,
                "finalize": fin,
                "finalize_per_participant": fin // n,
                "total": open_tx.gas_used + sum(commits) + close + fin,
                "total_per_participant": (open_tx.gas_used + sum(commits) + close + fin) // n,
            }
        # A standalone mint to a new holder, as the finalize loop does once per rewarded participant.
        d.token.grant_role(d.token.minter_role(), wallets["admin"], sender=wallets["admin"])
        ops["mint_new_holder"] = [d.token.mint("0x000000000000000000000000000000000000bEEF", 1, sender=wallets["admin"]).gas_used]
        return {
            "node": "hardhat",
            "solc": d.manifest.compiler["version"],
            "operations": {k: {"median": int(statistics.median(v)), "samples": len(v)} for k, v in ops.items()},
            "rounds": per_round,
        }
    finally:
        node.down()


def print_report(console: Console, report: dict[str, Any]) -> None:
    ops = Table(title=f"gas per operation (Hardhat, solc {report['solc']})", title_justify="left")
    ops.add_column("operation")
    ops.add_column("gas (median)", justify="right")
    ops.add_column("samples", justify="right")
    for name, v in report["operations"].items():
        ops.add_row(name, f"{v['median']:,}", str(v["samples"]))
    console.print(ops)
    rounds = Table(title="gas per round", title_justify="left")
    for col in ("participants", "open", "commits", "close", "finalize", "finalize / participant", "total",
                "total / participant"):
        rounds.add_column(col, justify="right")
    for r in report["rounds"].values():
        rounds.add_row(*(f"{r[k]:,}" for k in ("participants", "open", "commits", "close", "finalize",
                                                "finalize_per_participant", "total", "total_per_participant")))
    console.print(rounds)


def run(participant_counts: list[int], json_out: Path | None) -> int:
    console = Console()
    with tempfile.TemporaryDirectory(prefix="fedledger-gas-") as tmp, console.status("measuring gas on Hardhat"):
        report = measure(participant_counts, work_dir=Path(tmp))
    print_report(console, report)
    if json_out is not None:
        json_out.write_text(json.dumps(report, indent=2) + "\n")
    return 0
