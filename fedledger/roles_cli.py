"""Command lines for the three roles, over the REST API (participants) or straight to chain + IPFS (auditors,
operators on the devnet).

    fedledger participant new-key  --keystore me.json          # password: $FEDLEDGER_KEYSTORE_PASSWORD or prompt
    fedledger participant register --keystore me.json --api http://127.0.0.1:8000
    fedledger participant fetch-model --api URL --out global.safetensors
    fedledger participant train --model global.safetensors --dataset digits --part 3 --of 10 --out update.safetensors
    fedledger participant submit --keystore me.json --api URL --update update.safetensors [--round N]
    fedledger participant status --keystore me.json --api URL
    fedledger participant receipt --keystore me.json --api URL --round N [--rpc URL]   # inclusion, proof checked
    fedledger participant claim --keystore me.json --api URL [--round N ...] [--rpc URL]  # --rpc: own transaction
    fedledger audit rounds | round N | participant ADDR | report --out report.json [--keystore auditor.json]
    fedledger api [--host 127.0.0.1 --port 8000]                 # FEDLEDGER_STACK=embedded|devnet
    fedledger aggregator run [--interval 5] [--settlement merkle]  # flush the relay near deadlines, finalize after
"""

from __future__ import annotations

import argparse
import getpass
import hashlib
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

PASSWORD_ENV = "FEDLEDGER_KEYSTORE_PASSWORD"


# ------------------------------------------------------------------------------------------------- keys


def _password(confirm: bool = False) -> str:
    if PASSWORD_ENV in os.environ:
        return os.environ[PASSWORD_ENV]
    if not sys.stdin.isatty():
        raise ValueError(f"no keystore password: set {PASSWORD_ENV} or run in a terminal")
    first = getpass.getpass("keystore password: ")
    if confirm and getpass.getpass("again: ") != first:
        raise ValueError("passwords differ")
    return first


def load_key(path: Path) -> Any:
    from eth_account import Account

    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ValueError(f"no keystore at {path}: create one with 'fedledger participant new-key'") from None
    try:
        return Account.from_key(Account.decrypt(data, _password()))
    except ValueError as exc:
        raise ValueError(f"cannot open keystore {path}: {exc}") from exc


def _new_key(args: argparse.Namespace) -> int:
    from eth_account import Account

    if args.keystore.exists():
        raise ValueError(f"{args.keystore} exists: refusing to overwrite a key")
    account = Account.create()
    args.keystore.parent.mkdir(parents=True, exist_ok=True)
    args.keystore.write_text(json.dumps(Account.encrypt(account.key, _password(confirm=True))))
    args.keystore.chmod(0o600)
    print(f"new wallet {account.address} in {args.keystore} (encrypted; the key never leaves this machine)")
    return 0


# ----------------------------------------------------------------------------------------- participant


def _http(args: argparse.Namespace) -> Any:
    import httpx

    return httpx.Client(base_url=args.api, timeout=60)


def _ok(response: Any) -> Any:
    if response.status_code >= 400:
        try:
            detail = response.json()
        except ValueError:
            detail = response.text
        raise ValueError(f"{response.request.method} {response.request.url.path}: HTTP {response.status_code}: {detail}")
    return response.json() if response.headers.get("content-type", "").startswith("application/json") else response


def _sign_typed(account: Any, typed: dict[str, Any]) -> str:
    from eth_account.messages import encode_typed_data

    return "0x" + bytes(account.sign_message(encode_typed_data(full_message=typed)).signature).hex()


def _register(args: argparse.Namespace) -> int:
    account = load_key(args.keystore)
    with _http(args) as http:
        challenge = _ok(http.get("/participants/challenge", params={"address": account.address}))
        typed = challenge["typed_data"]
        if typed["message"]["account"] != account.address:
            raise ValueError("the server's challenge names another account: refusing to sign")
        body = {"address": account.address, "deadline": challenge["deadline"], "signature": _sign_typed(account, typed)}
        result = _ok(http.post("/participants/register", json=body))
    stake = f", stake {int(result['stake']) / 10**18:g} ETH paid by {result['stake_paid_by']}" if "stake" in result else ""
    print(f"registered {account.address} (tx {result['tx_hash']}{stake})")
    return 0


def _fetch_model(args: argparse.Namespace) -> int:
    with _http(args) as http:
        model = _ok(http.get("/models/current"))
        data = _ok(http.get(f"/blobs/{model['cid']}", params={"content_hash": model["hash"]})).content
    if "0x" + hashlib.sha256(data).hexdigest() != model["hash"]:  # do not trust the server either
        raise ValueError(f"the model bytes do not hash to the chain's {model['hash']}")
    args.out.write_bytes(data)
    print(f"global model {model['hash']} after {model['rounds']} rounds -> {args.out}")
    return 0


def _train(args: argparse.Namespace) -> int:
    import torch

    from trainer.data import dirichlet_partition, load_dataset
    from trainer.local import LocalConfig, parse_local_steps, train_local
    from trainer.model import ModelSpec
    from trainer.serialization import deserialize, serialize

    data = load_dataset(args.dataset, seed=args.seed)
    spec = ModelSpec(data.num_features, data.num_classes)
    base = deserialize(args.model.read_bytes(), spec.shapes())
    if not 0 <= args.part < args.of:
        raise ValueError(f"--part must be in [0, {args.of}), got {args.part}")
    idx = torch.from_numpy(dirichlet_partition(data.y_train.numpy(), args.of, args.alpha, seed=args.seed)[args.part])
    if hasattr(args, "local_steps"):
        local = LocalConfig.from_option(args.local_steps)
    elif args.api is not None:
        with _http(args) as http:
            local = LocalConfig.from_option(parse_local_steps(_ok(http.get("/health"))["local_training"]["local_steps"]))
    else:
        local = LocalConfig()
    update = train_local(spec, base, data.x_train[idx], data.y_train[idx], local, seed=args.seed + args.part)
    args.out.write_bytes(serialize(update))
    print(f"trained on {len(idx)} private samples ({local.num_steps(len(idx))} SGD steps: {local.label()}) -> update "
          f"{args.out}")
    return 0


def _submit(args: argparse.Namespace) -> int:
    from hexbytes import HexBytes

    from fedledger.roles import commitment_typed_data

    account = load_key(args.keystore)
    data = args.update.read_bytes()
    with _http(args) as http:
        health = _ok(http.get("/health"))
        round_id = args.round or max((r["round"] for r in _ok(http.get("/rounds")) if not r["finalized"]), default=0)
        if not round_id:
            raise ValueError("no open round to submit to")
        ref = _ok(http.post("/blobs", content=data, headers={"content-type": "application/octet-stream"}))
        if ref["content_hash"] != "0x" + hashlib.sha256(data).hexdigest():
            raise ValueError("the server stored different bytes than sent")
        typed = commitment_typed_data(health["chain_id"], health["contracts"]["FederatedRounds"], round_id,
                                      bytes(HexBytes(ref["content_hash"])), ref["cid"])
        body = {"participant": account.address, "content_hash": ref["content_hash"], "cid": ref["cid"],
                "signature": _sign_typed(account, typed)}
        result = _ok(http.post(f"/rounds/{round_id}/submissions", json=body))
    if "tx_hash" in result and "status" not in result:
        print(f"committed {ref['content_hash']} ({ref['cid']}) to round {round_id} (tx {result['tx_hash']})")
    else:  # the batching relay queued it: a receipt, not a transaction
        print(f"queued {ref['content_hash']} ({ref['cid']}) for round {round_id} with the relay: {result['status']}"
              f"; check inclusion with 'fedledger participant receipt --round {round_id}'")
    return 0


def _rounds_gateway(rpc: str, address: str, account: Any = None) -> Any:
    """The FederatedRounds contract on the participant's own node connection (not the API's word)."""
    from chain.gateways.federated_rounds import FederatedRoundsGateway
    from fedledger.wiring import connect_rpc

    transactor = connect_rpc(rpc)
    if account is not None:
        transactor.add_account(account)
    return FederatedRoundsGateway(transactor, address)


def _check_receipt(rec: dict[str, Any]) -> bool:
    """Rebuild the receipt's leaf and check its proof against the batch root it names (locally)."""
    from hexbytes import HexBytes

    from chain.merkle import COMMITMENT_LEAF_TYPES, verify_proof

    leaf = (rec["round"], rec["participant"], bytes(HexBytes(rec["content_hash"])), rec["cid"])
    return bool(verify_proof(rec["batch"]["root"], COMMITMENT_LEAF_TYPES, leaf, rec["proof"]))


def _receipt(args: argparse.Namespace) -> int:
    """Exit 0 when the commitment is on chain (direct, or included with a proof that checks), 1 otherwise."""
    from hexbytes import HexBytes

    if not (args.address or args.keystore):
        raise ValueError("pass --keystore (or --address) to name the participant")
    address = args.address or load_key(args.keystore).address
    with _http(args) as http:
        health = _ok(http.get("/health"))
        rec = _ok(http.get(f"/rounds/{args.round}/receipts/{address}"))
    status = rec["status"]
    if status == "direct":
        print(f"round {args.round}: {address} committed directly (tx {rec['tx_hash']}); it counts")
        return 0
    if status == "included":
        b = rec["batch"]
        local = _check_receipt(rec)
        line = (f"round {args.round}: included in batch {b['index']} (root {b['root']}, {b['entries']} entries, "
                f"list {b['list_cid']}, tx {rec['tx_hash']}); proof checks locally: {local}; "
                f"the API's isInBatch: {rec['on_chain_verified']}")
        if args.rpc:
            gateway = _rounds_gateway(args.rpc, health["contracts"]["FederatedRounds"])
            own = gateway.is_in_batch(args.round, b["index"], address, bytes(HexBytes(rec["content_hash"])),
                                      rec["cid"], [bytes(HexBytes(p)) for p in rec["proof"]])
            line += f"; isInBatch on {args.rpc}: {own}"
            local = local and bool(own)
        print(line)
        return 0 if local else 1
    hint = ("commit it yourself before the round closes (commitUpdate from your own wallet)"
            if rec.get("can_commit_directly") else "the round takes no more commitments")
    print(f"round {args.round}: {status} with the relay (queued at {rec.get('queued_at')}"
          f"{'; ' + rec['detail'] if rec.get('detail') else ''}); not on chain yet: {hint}")
    return 1


def _claim(args: argparse.Namespace) -> int:
    """Claim through the API (its operator pays the gas), or with --rpc by the participant's own transaction
    after checking every proof against the results root on chain."""
    from hexbytes import HexBytes

    from chain.gateways.federated_rounds import Claim
    from chain.merkle import RESULT_LEAF_TYPES, verify_proof

    account = load_key(args.keystore)
    wanted = sorted(set(args.round)) if args.round else None
    with _http(args) as http:
        if not args.rpc:
            result = _ok(http.post(f"/participants/{account.address}/claims",
                                   json={"rounds": wanted} if wanted else None))
            print(f"claimed rounds {result['rounds']}: minted {int(result['minted']) / 10**18:.6f} FED "
                  f"({result['minted']} base units) to {account.address} (tx {result['tx_hash']})")
            return 0
        health = _ok(http.get("/health"))
        listed = _ok(http.get(f"/participants/{account.address}/claims"))["claims"]
    chosen = [c for c in listed if wanted is None or c["round"] in wanted]
    missing = sorted(set(wanted or []) - {c["round"] for c in chosen})
    if missing:
        raise ValueError(f"nothing to claim for rounds {missing} (already claimed, not finalized, or no result)")
    if not chosen:
        raise ValueError(f"{account.address} has nothing to claim")
    gateway = _rounds_gateway(args.rpc, health["contracts"]["FederatedRounds"], account)
    claims = []
    for c in chosen:
        proof = [bytes(HexBytes(p)) for p in c["proof"]]
        leaf = (c["round"], account.address, c["status_code"], c["score_units"], int(c["reward"]), c["reputation"])
        if not verify_proof(gateway.results_of(c["round"]).root, RESULT_LEAF_TYPES, leaf, proof):
            raise ValueError(f"round {c['round']}: the API's proof does not match the results root on chain")
        claims.append(Claim(c["round"], c["status_code"], c["score_units"], int(c["reward"]), c["reputation"], proof))
    tx = gateway.claim(account.address, claims, sender=account.address)
    minted = sum(e.reward for e in gateway.reward_claimed_in(tx))
    print(f"claimed rounds {[c.round_id for c in claims]} by own transaction {tx.tx_hash}: minted "
          f"{minted / 10**18:.6f} FED ({minted} base units)")
    return 0


def _status(args: argparse.Namespace) -> int:
    address = args.address or load_key(args.keystore).address
    with _http(args) as http:
        me = _ok(http.get(f"/participants/{address}"))
    console = Console()
    console.print(f"{me['address']}: {me['status']}, reputation {me['reputation']:.3f}, "
                  f"balance {int(me['balance']) / 10**18:.4f} FED, "
                  f"unclaimed {int(me.get('unclaimed', '0')) / 10**18:.4f} FED")
    if (stake := me.get("stake")) is not None:
        console.print(f"stake {int(stake['amount']) / 10**18:g} ETH (minimum {int(stake['min_stake']) / 10**18:g}, "
                      f"slashed {int(stake['slashed']) / 10**18:g}), "
                      f"{'may commit' if stake['can_commit'] else 'cannot commit'}, withdrawal: {stake['withdrawal']}")
    table = Table("round", "status", "score", "reward (FED)", "reputation after", "path")
    for r in me["rounds"]:
        table.add_row(str(r["round"]), str(r["status"]), "-" if r["score"] is None else f"{r['score']:.3f}",
                      "-" if r["reward"] is None else f"{int(r['reward']) / 10**18:.4f}",
                      "-" if r["reputation_after"] is None else f"{r['reputation_after']:.3f}",
                      r.get("path") or ("relayed" if r["relayed"] else "own tx"))
    console.print(table)
    return 0


# ---------------------------------------------------------------------------------------------- auditor


def _readonly_platform(args: argparse.Namespace) -> Any:
    from fedledger.service import Platform
    from fedledger.stack import Stack
    from fedledger.wiring import attach, open_blob_store

    deployment = attach(args.rpc, args.manifest)
    store = open_blob_store(blobs=args.blobs, ipfs=args.ipfs or deployment.manifest.endpoints.get("ipfs_api"))
    stack = Stack("read-only", deployment, store, operator="", aggregator="")
    return Platform.create(stack, args.manifest.parent / "index.sqlite")


def _audit_rounds(args: argparse.Namespace) -> int:
    rounds = _readonly_platform(args).rounds()
    table = Table("round", "finalized", "submissions", "accepted", "FED minted", "new model")
    for r in rounds:
        table.add_row(str(r["round"]), str(r["finalized"]), str(r["submissions"]), str(r["accepted"]),
                      "-" if r["minted"] is None else f"{int(r['minted']) / 10**18:.2f}",
                      (r["new_model_hash"] or "-")[:18])
    Console().print(table)
    return 0


def _audit_round(args: argparse.Namespace) -> int:
    Console().print_json(data=_readonly_platform(args).round(round_id=args.round_id))
    return 0


def _audit_participant(args: argparse.Namespace) -> int:
    Console().print_json(data=_readonly_platform(args).participant(address=args.address))
    return 0


def _audit_report(args: argparse.Namespace) -> int:
    platform = _readonly_platform(args)
    report = platform.audit()
    body = {
        "generated_at": int(time.time()),
        "chain_id": platform.chain_id,
        "contracts": platform.d.manifest.contracts,
        "audit": report.to_json(),
        "rounds": platform.rounds(),
        "summary": {"rounds_audited": len(report.rounds), "verified": report.verified,
                    "failures": report.failure_lines()},
    }
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    out: dict[str, Any] = {"report": body, "sha256": "0x" + hashlib.sha256(canonical).hexdigest()}
    if args.keystore:
        from eth_account.messages import encode_defunct

        auditor = load_key(args.keystore)
        signed = auditor.sign_message(encode_defunct(primitive=hashlib.sha256(canonical).digest()))
        out["signer"] = auditor.address
        out["signature"] = "0x" + bytes(signed.signature).hex()
    args.out.write_text(json.dumps(out, indent=2, sort_keys=True) + "\n")
    verdict = "VERIFIED" if report.verified else "FAILED"
    print(f"{verdict}: {len(report.rounds)} finalized rounds audited -> {args.out}"
          + (f" (signed by {out['signer']})" if "signer" in out else ""))
    for line in report.failure_lines():
        print(f"  {line}")
    return 0 if report.verified else 1


def verify_report_signature(path: Path) -> str:
    """The address that signed an audit report (raises if the report was altered or is unsigned)."""
    from eth_account import Account
    from eth_account.messages import encode_defunct

    out = json.loads(Path(path).read_text())
    canonical = json.dumps(out["report"], sort_keys=True, separators=(",", ":")).encode()
    digest = hashlib.sha256(canonical).digest()
    if "0x" + digest.hex() != out["sha256"]:
        raise ValueError("report body does not match its sha256")
    return str(Account.recover_message(encode_defunct(primitive=digest), signature=out["signature"]))


# -------------------------------------------------------------------------------------------- operator


def _api(args: argparse.Namespace) -> int:
    import uvicorn

    from api.app import create_app
    from api.settings import Settings

    settings = Settings()
    uvicorn.run(create_app(settings), host=args.host or settings.host, port=args.port or settings.port)
    return 0


def _aggregator_run(args: argparse.Namespace) -> int:
    from fedledger.devnet import DevnetConfig
    from fedledger.service import Platform, wait_loop
    from fedledger.stack import devnet_stack

    def env_int(name: str, default: int) -> int:
        raw = os.environ.get(name, str(default))
        try:
            return int(raw)
        except ValueError:
            raise ValueError(f"{name} must be an integer, got {raw!r}") from None

    stop = _stop_on_signals()  # first: a SIGTERM while the service starts (the index sync) stops it cleanly too
    args.batch_size = args.batch_size if args.batch_size is not None else env_int("FEDLEDGER_BATCH_SIZE", 500)
    args.flush_margin = args.flush_margin if args.flush_margin is not None else env_int("FEDLEDGER_FLUSH_MARGIN_S", 60)
    cfg = DevnetConfig(dir=args.devnet_dir, seed=args.devnet_seed)
    queue = args.relay_queue or cfg.dir / "relay-queue.sqlite"  # where the API's batching relay queues (devnet)
    platform = Platform.create(devnet_stack(cfg), cfg.dir / "index.sqlite", settlement=args.settlement,
                               batch_size=args.batch_size, flush_margin_s=args.flush_margin, queue_path=queue)
    relay = f", flushing {queue} {args.flush_margin}s before deadlines" if platform.queue is not None else ""
    print(f"aggregator {platform.stack.aggregator} ({args.settlement} settlement) watching "
          f"{platform.d.rounds.address} every {args.interval}s{relay}", flush=True)
    wait_loop(platform, interval_s=args.interval, iterations=1 if args.once else None, stop=stop)
    print("aggregator stopped", flush=True)
    return 0


def _stop_on_signals() -> threading.Event:
    """SIGTERM (docker stop, systemd) and SIGINT (Ctrl-C) ask the service to stop after the pass under way, whatever
    the signal dispositions it inherited (a shell's background job ignores SIGINT); a second signal stops it now."""
    stop = threading.Event()

    def request(signum: int, _frame: object) -> None:
        if stop.is_set():
            raise SystemExit(128 + signum)
        print(f"{signal.Signals(signum).name}: stopping after this pass", flush=True)
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, request)
    return stop


def _audit_source(p: argparse.ArgumentParser) -> None:
    p.add_argument("--manifest", type=Path, default=Path(".fedledger/devnet/manifest.json"))
    p.add_argument("--rpc", default=None, help="JSON-RPC URL (default: the manifest's)")
    p.add_argument("--ipfs", default=None, help="Kubo RPC multiaddr (default: the manifest's)")
    p.add_argument("--blobs", type=Path, default=None, help="a local blob directory instead of IPFS")


def register(sub: Any, audit_sub: Any) -> None:
    from trainer.local import add_local_steps_argument

    part = sub.add_parser("participant", help="participant: wallet, model, training, submission, status")
    ps = part.add_subparsers(dest="participant_command", required=True)
    p = ps.add_parser("new-key", help="create an encrypted keystore")
    p.add_argument("--keystore", type=Path, required=True)
    p.set_defaults(func=_new_key)
    for name, func, helptext in (("register", _register, "register the wallet through the API"),
                                 ("submit", _submit, "upload an update and relay its signed commitment"),
                                 ("status", _status, "reputation, rewards and per-round history"),
                                 ("fetch-model", _fetch_model, "download the global model, hash-checked")):
        p = ps.add_parser(name, help=helptext)
        p.add_argument("--api", default="http://127.0.0.1:8000")
        if name != "fetch-model":
            p.add_argument("--keystore", type=Path, required=name != "status")
        if name == "status":
            p.add_argument("--address", default=None)
        if name == "submit":
            p.add_argument("--update", type=Path, required=True)
            p.add_argument("--round", type=int, default=None)
        if name == "fetch-model":
            p.add_argument("--out", type=Path, default=Path("global.safetensors"))
        p.set_defaults(func=func)
    p = ps.add_parser("receipt", help="where this wallet's commitment stands: direct, included (proof checked), pending")
    p.add_argument("--api", default="http://127.0.0.1:8000")
    p.add_argument("--keystore", type=Path, default=None)
    p.add_argument("--address", default=None, help="instead of --keystore (a receipt needs no key)")
    p.add_argument("--round", type=int, required=True)
    p.add_argument("--rpc", default=None, help="also ask the contract's isInBatch on this node, not only the API")
    p.set_defaults(func=_receipt)
    p = ps.add_parser("claim", help="claim rewards of Merkle-settled rounds (via the API, or --rpc: own transaction)")
    p.add_argument("--api", default="http://127.0.0.1:8000")
    p.add_argument("--keystore", type=Path, required=True)
    p.add_argument("--round", type=int, action="append", default=None, help="a round to claim (repeat; default: all)")
    p.add_argument("--rpc", default=None,
                   help="send the claim from this wallet through this node (needs ether), proofs checked on chain")
    p.set_defaults(func=_claim)
    p = ps.add_parser("train", help="train locally on this participant's (simulated private) data")
    p.add_argument("--model", type=Path, required=True)
    p.add_argument("--dataset", default="digits")
    p.add_argument("--part", type=int, required=True, help="which client of the Dirichlet split this machine is")
    p.add_argument("--of", type=int, default=10)
    p.add_argument("--alpha", type=float, default=0.5)
    p.add_argument("--seed", type=int, default=0)
    add_local_steps_argument(p, default=argparse.SUPPRESS)
    p.add_argument("--api", default=None,
                   help="follow the local training this server announces (GET /health) unless --local-steps is given")
    p.add_argument("--out", type=Path, default=Path("update.safetensors"))
    p.set_defaults(func=_train)

    for name, func, helptext in (("rounds", _audit_rounds, "every round, from the event index"),
                                 ("round", _audit_round, "one round in full"),
                                 ("participant", _audit_participant, "one participant's history"),
                                 ("report", _audit_report, "audit every round into a JSON report (optionally signed)")):
        p = audit_sub.add_parser(name, help=helptext)
        _audit_source(p)
        if name == "round":
            p.add_argument("round_id", type=int)
        if name == "participant":
            p.add_argument("address")
        if name == "report":
            p.add_argument("--out", type=Path, required=True)
            p.add_argument("--keystore", type=Path, default=None, help="sign the report with this auditor key")
        p.set_defaults(func=func)

    p = sub.add_parser("api", help="serve the REST API (settings from FEDLEDGER_* environment variables)")
    p.add_argument("--host", default=None)
    p.add_argument("--port", type=int, default=None)
    p.set_defaults(func=_api)
    agg = sub.add_parser("aggregator", help="operator: the aggregator service")
    ags = agg.add_subparsers(dest="aggregator_command", required=True)
    p = ags.add_parser("run", help="finalize each devnet round once it is closed or past its deadline")
    p.add_argument("--devnet-dir", type=Path, default=Path(".fedledger/devnet"))
    p.add_argument("--devnet-seed", type=int, default=0)
    p.add_argument("--interval", type=float, default=5.0)
    p.add_argument("--once", action="store_true", help="one pass, then exit")
    p.add_argument("--settlement", choices=("legacy", "merkle"), default=os.environ.get("FEDLEDGER_SETTLEMENT", "legacy"),
                   help="finalize per participant or with one results root (default: $FEDLEDGER_SETTLEMENT or legacy)")
    p.add_argument("--relay-queue", type=Path, default=None,
                   help="the API's batching-relay queue to flush before deadlines (default: beside the manifest)")
    p.add_argument("--batch-size", type=int, default=None, help="default: $FEDLEDGER_BATCH_SIZE or 500")
    p.add_argument("--flush-margin", type=int, default=None,
                   help="post pending commitments once a deadline is this many seconds away (keep it > --interval; "
                        "default: $FEDLEDGER_FLUSH_MARGIN_S or 60)")
    p.set_defaults(func=_aggregator_run)
