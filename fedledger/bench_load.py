"""``fedledger bench load``: many participants through the REST API, concurrently, to one round on the devnet.

    fedledger bench load [--participants 200] [--concurrency 32] [--mode direct batched] [--json docs/load-bench.json]

Starts a throw-away Hardhat node and Kubo daemon on loopback (or uses ``--rpc``/``--ipfs`` of running ones). Per
relay mode it deploys fresh contracts (a manifest of their own, so each mode's API has its own event index and
relay queue), starts a real API server (``fedledger api``: uvicorn in its own process, on a free loopback port,
``FEDLEDGER_STACK=devnet``, ``FEDLEDGER_SETTLEMENT=merkle``, ``FEDLEDGER_RELAY_MODE=direct|batched``), and then
does over HTTP only what participants and the operator do:

1. the operator publishes the genesis model; N participant wallets (devnet-only keys derived from ``--seed``,
   chain/accounts.py) register concurrently (challenge, EIP-712 signature, ``POST /participants/register``);
2. the operator opens a round; the N participants upload their update (``POST /blobs``) and submit their
   EIP-712-signed commitment (``POST /rounds/{id}/submissions``) concurrently, from a fixed pool of
   ``--concurrency`` threads, each request with a timeout and at most ``RETRIES`` retries, only when the request
   never reached the server (connection refused/reset before an answer) or the answer is 429/503;
3. the operator closes the round (the batched relay posts what is pending first) and finalizes it (one results
   root); ``fedledger audit verify`` re-derives it in its own process from the chain and Kubo.

Then it checks, reading the chain itself (not the API's word): every accepted submission (201 direct, 202 batched)
is on chain exactly once and nothing else is (direct: one ``UpdateCommitted`` per accepted participant; batched:
every accepted participant in exactly one posted batch list, fetched from Kubo and hashed), the round's submission
count equals the accepted count, and its receipts say so. It reports the count of 4xx/5xx per endpoint, p50/p95/p99
latency per endpoint and throughput (accepted submissions per second of the submission phase). Timings are reported,
never asserted.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import torch
from eth_account.messages import encode_typed_data
from hexbytes import HexBytes
from rich.console import Console
from rich.table import Table

from chain.accounts import derive_devnet_account, devnet_wallets
from chain.deploy import deploy_all
from chain.lists import CommitmentBatch
from fedledger.devnet import ROLE_LABELS, Devnet, DevnetConfig, _terminate, free_port
from fedledger.roles import sign_commitment
from fedledger.wiring import BENCH_STAKE_WEI, attach, connect_rpc, default_stake_params
from storage import BlobRef
from storage.kubo import KuboBlobStore
from trainer.model import ModelSpec, init_params
from trainer.serialization import serialize

MODES = ("direct", "batched")
RETRIES = 3  # per request, only for answers that are clearly retryable (see _retryable)
REQUEST_TIMEOUT_S = 120.0
RETRYABLE_STATUS = (429, 503)
OPERATOR_TOKEN = "bench-load-operator-token"  # a throw-away API process on loopback; never a real credential
SPEC = ModelSpec(64, 10)  # digits, what POST /operator/genesis {"dataset": "digits"} publishes


class LoadError(RuntimeError):
    """The load run could not be set up (the API did not start, the operator's calls failed)."""


@dataclass
class Calls:
    """Every HTTP call made: endpoint, status (or the transport error's name), seconds; thread-safe."""

    rows: list[tuple[str, str, float]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    retries: Counter[str] = field(default_factory=Counter)
    errors: dict[str, str] = field(default_factory=dict)  # endpoint -> the last transport error, for messages

    def add(self, endpoint: str, status: str, seconds: float) -> None:
        with self.lock:
            self.rows.append((endpoint, status, seconds))

    def retried(self, endpoint: str) -> None:
        with self.lock:
            self.retries[endpoint] += 1

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for endpoint in sorted({e for e, _, _ in self.rows}):
            rows = [(s, t) for e, s, t in self.rows if e == endpoint]
            times = np.array([t for _, t in rows]) * 1000
            statuses = Counter(s for s, _ in rows)
            out[endpoint] = {
                "requests": len(rows),
                "statuses": dict(sorted(statuses.items())),
                "4xx": sum(n for s, n in statuses.items() if s.startswith("4")),
                "5xx": sum(n for s, n in statuses.items() if s.startswith("5")),
                "transport_errors": sum(n for s, n in statuses.items() if not s[:1].isdigit()),
                "retries": self.retries[endpoint],
                "p50_ms": round(float(np.percentile(times, 50)), 1),
                "p95_ms": round(float(np.percentile(times, 95)), 1),
                "p99_ms": round(float(np.percentile(times, 99)), 1),
                "max_ms": round(float(times.max()), 1),
            }
        return out


def _retryable(exc: httpx.HTTPError) -> bool:
    """Only failures where the server cannot have acted: no connection was made."""
    return isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout)


def call(http: httpx.Client, calls: Calls, endpoint: str, method: str, url: str, **kwargs: Any) -> httpx.Response | None:
    """One request with at most RETRIES retries on a refused connection or a 429/503; None after a transport error.
    Each attempt is recorded (latency per attempt)."""
    for attempt in range(RETRIES + 1):
        started = time.perf_counter()
        try:
            response = http.request(method, url, **kwargs)
        except httpx.HTTPError as exc:
            calls.add(endpoint, type(exc).__name__, time.perf_counter() - started)
            calls.errors[endpoint] = f"{type(exc).__name__}: {exc}"
            if _retryable(exc) and attempt < RETRIES:
                calls.retried(endpoint)
                time.sleep(0.2 * 2**attempt)
                continue
            return None
        calls.add(endpoint, str(response.status_code), time.perf_counter() - started)
        if response.status_code in RETRYABLE_STATUS and attempt < RETRIES:
            calls.retried(endpoint)
            time.sleep(0.2 * 2**attempt)
            continue
        return response
    return None  # unreachable: the last attempt returns above


def _sign_typed(account: Any, typed: dict[str, Any]) -> str:
    return "0x" + bytes(account.sign_message(encode_typed_data(full_message=typed)).signature).hex()


@contextmanager
def api_server(devnet_dir: Path, mode: str, *, batch_size: int, log_path: Path, devnet_seed: int,
               start_timeout: float = 90.0) -> Iterator[str]:
    """``fedledger api`` as its own process on a free loopback port; stopped by pid."""
    port = free_port()
    env = {**os.environ, "FEDLEDGER_STACK": "devnet", "FEDLEDGER_DEVNET_DIR": str(devnet_dir),
           "FEDLEDGER_OPERATOR_TOKEN": OPERATOR_TOKEN, "FEDLEDGER_ENVIRONMENT": "production",
           "FEDLEDGER_SETTLEMENT": "merkle", "FEDLEDGER_RELAY_MODE": mode, "FEDLEDGER_BATCH_SIZE": str(batch_size),
           "FEDLEDGER_DEVNET_SEED": str(devnet_seed)}
    log = open(log_path, "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen([sys.executable, "-m", "fedledger.cli", "api", "--host", "127.0.0.1", "--port", str(port)],
                            env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + start_timeout
        while True:
            if proc.poll() is not None:
                raise LoadError(f"the API exited during start-up: {log_path.read_text()[-2000:]}")
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise LoadError(f"the API did not answer /health in {start_timeout:.0f}s: {log_path}")
            time.sleep(0.3)
        yield url
    finally:
        _terminate(proc.pid)
        log.close()


def _updates(participants: int, seed: int) -> list[bytes]:
    """One distinct, plausible update per participant (a shared direction plus a little noise), serialized
    canonically: the load is the platform's, not training's."""
    g = torch.Generator().manual_seed(seed)
    direction = init_params(SPEC, seed + 1)
    out = []
    for _ in range(participants):
        out.append(serialize({k: v + 0.05 * torch.randn(v.shape, generator=g) for k, v in direction.items()}))
    return out


def _ok(response: httpx.Response | None, what: str, calls: Calls, endpoint: str) -> Any:
    if response is None or response.status_code >= 300:
        detail = (f"no answer ({calls.errors.get(endpoint)})" if response is None
                  else f"{response.status_code} {response.text[:500]}")
        raise LoadError(f"{what} failed: {detail}")
    return response.json()


def measure(
    participants: int,
    *,
    mode: str,
    rpc_url: str,
    ipfs_api: str,
    work_dir: Path,
    concurrency: int = 32,
    batch_size: int = 50,
    seed: int = 0,
    on_stage: Callable[[str], None] = lambda _: None,
) -> dict[str, Any]:
    """One load run in one relay mode on fresh contracts; the report (see the module docstring)."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    started = time.perf_counter()
    devnet_dir = work_dir / f"api-{mode}"
    devnet_dir.mkdir(parents=True, exist_ok=True)
    tx = connect_rpc(rpc_url)
    wallets = devnet_wallets(tx, seed, list(ROLE_LABELS))
    # The API's operator sponsors every registration's stake: a token stake keeps hundreds within its devnet funds.
    d = deploy_all(tx, admin=wallets["admin"], operator=wallets["operator"], aggregator=wallets["aggregator"],
                   stake=replace(default_stake_params(), min_stake=BENCH_STAKE_WEI),
                   network="devnet", endpoints={"rpc": rpc_url, "ipfs_api": ipfs_api})
    d.manifest.write(devnet_dir / "manifest.json")
    accounts = [derive_devnet_account(seed, f"participant/load/{i}") for i in range(participants)]
    updates = _updates(participants, seed)
    calls = Calls()
    op = {"Authorization": f"Bearer {OPERATOR_TOKEN}"}
    # Idle connections are dropped by the client before uvicorn drops them (its keep-alive timeout is 5 s), so a
    # request never goes out on a connection the server is closing at that moment.
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency, keepalive_expiry=2.0)

    with api_server(devnet_dir, mode, batch_size=batch_size, log_path=work_dir / f"api-{mode}.log",
                    devnet_seed=seed) as url, \
            httpx.Client(base_url=url, timeout=REQUEST_TIMEOUT_S, limits=limits) as http, \
            ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="participant") as pool:
        health = _ok(call(http, calls, "GET /health", "GET", "/health"), "GET /health", calls, "GET /health")
        chain_id, rounds_address = int(health["chain_id"]), health["contracts"]["FederatedRounds"]
        _ok(call(http, calls, "POST /operator/genesis", "POST", "/operator/genesis", json={"dataset": "digits"},
                 headers=op), "publishing the genesis model", calls, "POST /operator/genesis")

        on_stage(f"{mode}: {participants} participants register concurrently")

        def register(account: Any) -> bool:
            r = call(http, calls, "GET /participants/challenge", "GET", "/participants/challenge",
                     params={"address": account.address})
            if r is None or r.status_code != 200:
                return False
            challenge = r.json()
            body = {"address": account.address, "deadline": challenge["deadline"],
                    "signature": _sign_typed(account, challenge["typed_data"])}
            r = call(http, calls, "POST /participants/register", "POST", "/participants/register", json=body)
            return r is not None and r.status_code == 201

        t0 = time.perf_counter()
        registered = list(pool.map(register, accounts))
        register_s = time.perf_counter() - t0
        if not all(registered):
            raise LoadError(f"{registered.count(False)} of {participants} registrations failed: {calls.summary()}")

        round_id = _ok(call(http, calls, "POST /operator/rounds", "POST", "/operator/rounds",
                            json={"duration_s": 3600}, headers=op), "opening the round", calls, "POST /operator/rounds")["round"]

        on_stage(f"{mode}: {participants} participants upload and submit concurrently to round {round_id}")

        def submit(i: int) -> dict[str, Any]:
            account, data = accounts[i], updates[i]
            out: dict[str, Any] = {"participant": account.address, "accepted": False}
            r = call(http, calls, "POST /blobs", "POST", "/blobs", content=data,
                     headers={"content-type": "application/octet-stream"})
            if r is None or r.status_code != 201:
                out["failed_at"] = "POST /blobs"
                return out
            ref = r.json()
            if ref["content_hash"] != "0x" + hashlib.sha256(data).hexdigest():
                out["failed_at"] = "POST /blobs: the server stored different bytes"
                return out
            sig = sign_commitment(account, chain_id, rounds_address, round_id,
                                  BlobRef(bytes(HexBytes(ref["content_hash"])), ref["cid"]))
            body = {"participant": account.address, "content_hash": ref["content_hash"], "cid": ref["cid"],
                    "signature": "0x" + sig.hex()}
            r = call(http, calls, "POST /rounds/{id}/submissions", "POST", f"/rounds/{round_id}/submissions",
                     json=body)
            if r is None or r.status_code not in (201, 202):
                out["failed_at"] = "POST /rounds/{id}/submissions"
                return out
            out.update(accepted=True, content_hash=ref["content_hash"], cid=ref["cid"], answer=r.json())
            return out

        t0 = time.perf_counter()
        outcomes = list(pool.map(submit, range(participants)))
        submit_s = time.perf_counter() - t0
        accepted = {r["participant"]: r for r in outcomes if r["accepted"]}

        on_stage(f"{mode}: close (the relay posts what is pending) and finalize round {round_id}")
        closed = _ok(call(http, calls, "POST /operator/rounds/{id}/close", "POST",
                          f"/operator/rounds/{round_id}/close", headers=op), "closing the round", calls, "POST /operator/rounds/{id}/close")
        receipts = {}
        for address in accepted:
            r = call(http, calls, "GET /rounds/{id}/receipts/{address}", "GET",
                     f"/rounds/{round_id}/receipts/{address}")
            receipts[address] = r.json() if r is not None and r.status_code == 200 else None
        t0 = time.perf_counter()
        finalized = _ok(call(http, calls, "POST /operator/rounds/{id}/finalize", "POST",
                             f"/operator/rounds/{round_id}/finalize", headers=op), "finalizing the round", calls, "POST /operator/rounds/{id}/finalize")
        finalize_s = time.perf_counter() - t0

    on_stage(f"{mode}: check the chain, then fedledger audit verify")
    results = finalized.get("results") or {}
    chain = check_on_chain(devnet_dir, ipfs_api, mode, round_id, accepted, receipts,
                           result_entries=int(results.get("entries", -1)))
    audit = subprocess.run([sys.executable, "-m", "fedledger.cli", "audit", "verify", "--manifest",
                            str(devnet_dir / "manifest.json"), "--round", str(round_id)],
                           capture_output=True, text=True, check=False)
    summary = calls.summary()
    sub = summary.get("POST /rounds/{id}/submissions", {})
    return {
        "mode": mode,
        "stack": "devnet (Hardhat + Kubo), API: uvicorn in its own process, settlement merkle",
        "participants": participants,
        "concurrency": concurrency,
        "batch_size": batch_size if mode == "batched" else None,
        "round": round_id,
        "accepted": len(accepted),
        "not_accepted": {r["participant"]: r.get("failed_at") for r in outcomes if not r["accepted"]},
        "http_4xx": sum(e["4xx"] for e in summary.values()),
        "http_5xx": sum(e["5xx"] for e in summary.values()),
        "transport_errors": sum(e["transport_errors"] for e in summary.values()),
        "endpoints": summary,
        "seconds": {"register": round(register_s, 2), "upload_and_submit": round(submit_s, 2),
                    "finalize": round(finalize_s, 2), "wall": round(time.perf_counter() - started, 1)},
        "throughput": {"registrations_per_s": round(participants / register_s, 2),
                       "submissions_per_s": round(len(accepted) / submit_s, 2)},
        "submission_p50_p95_p99_ms": [sub.get("p50_ms"), sub.get("p95_ms"), sub.get("p99_ms")],
        "close_flushed": (closed.get("flushed") or {}).get("flushed", 0),
        "finalize": {k: results.get(k) for k in ("entries", "accepted", "root")},
        "chain": chain,
        "audit_verified": audit.returncode == 0,
        "audit_output": "" if audit.returncode == 0 else (audit.stdout + audit.stderr)[-2000:],
    }


def check_on_chain(devnet_dir: Path, ipfs_api: str, mode: str, round_id: int, accepted: dict[str, dict[str, Any]],
                   receipts: dict[str, Any], *, result_entries: int) -> dict[str, Any]:
    """What the chain (and the batch lists on Kubo) hold for the round, against what the API accepted.
    ``result_entries``: how many commitments the finalized round's result list settled."""
    d = attach(None, devnet_dir / "manifest.json")
    rounds, start = d.rounds, d.manifest.deployment_block
    info = rounds.get_round(round_id)
    on_chain: Counter[str] = Counter()
    mismatched = []  # on chain, but not the hash / CID the participant uploaded
    batches = []
    if mode == "direct":
        for ev in rounds.update_committed_events(from_block=start, round_id=round_id):
            a = ev.args
            on_chain[a.participant] += 1
            mine = accepted.get(a.participant)
            if mine is not None and (("0x" + a.content_hash.hex(), a.cid) != (mine["content_hash"], mine["cid"])
                                     or mine["answer"].get("tx_hash") != ev.tx_hash):
                mismatched.append(a.participant)
    else:
        store = KuboBlobStore(ipfs_api)
        for ev in rounds.commitment_batch_posted_events(from_block=start, round_id=round_id):
            a = ev.args
            batch = CommitmentBatch.from_bytes(store.get(a.list_cid, a.list_hash))  # hash-checked
            if batch.root != a.root or len(batch.entries) != a.entries:
                mismatched.append(f"batch {a.batch_index}")
            batches.append({"index": a.batch_index, "entries": a.entries, "tx": ev.tx_hash})
            for e in batch.entries:
                on_chain[e.participant] += 1
                mine = accepted.get(e.participant)
                if mine is not None and ("0x" + e.content_hash.hex(), e.cid) != (mine["content_hash"], mine["cid"]):
                    mismatched.append(e.participant)
    expected_status = "direct" if mode == "direct" else "included"
    bad_receipts = sorted(a for a, r in receipts.items()
                          if r is None or r.get("status") != expected_status or not r.get("on_chain_verified"))
    return {
        "events": "UpdateCommitted" if mode == "direct" else "CommitmentBatchPosted",
        "batches": batches,
        "on_chain_participants": len(on_chain),
        "lost": sorted(set(accepted) - set(on_chain)),  # accepted by the API, not on chain
        "duplicated": sorted(p for p, n in on_chain.items() if n > 1),
        "unexpected": sorted(set(on_chain) - set(accepted)),  # on chain, never accepted
        "mismatched": mismatched,
        "round_submissions": info.submissions,  # the contract counts direct commitments here
        "batched_entries": sum(b["entries"] for b in batches),
        "result_entries": result_entries,
        "round_state": info.state,
        "bad_receipts": bad_receipts,
        "exactly_once": (set(on_chain) == set(accepted) and all(n == 1 for n in on_chain.values())
                         and not mismatched and result_entries == len(accepted)
                         and (info.submissions, sum(b["entries"] for b in batches)) ==
                         ((len(accepted), 0) if mode == "direct" else (0, len(accepted)))),
    }


def print_report(console: Console, reports: list[dict[str, Any]]) -> None:
    for rep in reports:
        t = Table(title=f"{rep['participants']} participants, concurrency {rep['concurrency']}, relay {rep['mode']}"
                        f" ({rep['stack']})", title_justify="left")
        for col in ("endpoint", "requests", "statuses", "retries", "p50 ms", "p95 ms", "p99 ms", "max ms"):
            t.add_column(col, justify="right" if col != "endpoint" else "left")
        for name, e in rep["endpoints"].items():
            t.add_row(name, str(e["requests"]), " ".join(f"{k}:{v}" for k, v in e["statuses"].items()),
                      str(e["retries"]), f"{e['p50_ms']}", f"{e['p95_ms']}", f"{e['p99_ms']}", f"{e['max_ms']}")
        console.print(t)
        c = rep["chain"]
        console.print(
            f"accepted {rep['accepted']}/{rep['participants']}; on chain ({c['events']}) {c['on_chain_participants']}"
            f", lost {len(c['lost'])}, duplicated {len(c['duplicated'])}, unexpected {len(c['unexpected'])}, "
            f"mismatched {len(c['mismatched'])}, direct commitments {c['round_submissions']}, batched entries "
            f"{c['batched_entries']} in {len(c['batches'])} batches, settled in the results {c['result_entries']}"
            + f"; exactly once: {c['exactly_once']}; 4xx {rep['http_4xx']}, 5xx {rep['http_5xx']}, transport errors "
            f"{rep['transport_errors']}; {rep['throughput']['submissions_per_s']} submissions/s "
            f"({rep['seconds']['upload_and_submit']} s), {rep['throughput']['registrations_per_s']} registrations/s;"
            f" finalize {rep['seconds']['finalize']} s; audit {'verified' if rep['audit_verified'] else 'FAILED'}")
        if not rep["audit_verified"]:
            console.print(rep["audit_output"])


def healthy(report: dict[str, Any]) -> bool:
    """What a load run must show: exactly once on chain, everyone accepted, no 5xx, receipts and audit agree."""
    return bool(report["chain"]["exactly_once"] and report["accepted"] == report["participants"]
                and report["http_5xx"] == 0 and not report["chain"]["bad_receipts"] and report["audit_verified"])


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--participants", type=int, default=200)
    p.add_argument("--concurrency", type=int, default=32, help="participants' requests in flight at once (threads)")
    p.add_argument("--mode", choices=MODES, nargs="+", default=list(MODES), help="relay modes to run, in order")
    p.add_argument("--batch-size", type=int, default=50, help="batched relay: FEDLEDGER_BATCH_SIZE")
    p.add_argument("--seed", type=int, default=0, help="derives the devnet participant keys")
    p.add_argument("--rpc", default=None, help="a running node (default: start a throw-away Hardhat node)")
    p.add_argument("--ipfs", default=None, help="a running Kubo API multiaddr (default: start a throw-away Kubo)")
    p.add_argument("--work-dir", type=Path, default=None,
                   help="keep the devnet data, manifests and API logs here (default: a temporary directory)")
    p.add_argument("--json", type=Path, default=None)


def run(args: argparse.Namespace) -> int:
    if args.participants < 1 or args.concurrency < 1:
        raise SystemExit("--participants and --concurrency must be at least 1")
    console = Console(width=None if sys.stdout.isatty() else 160)
    reports = []
    with tempfile.TemporaryDirectory(prefix="fedledger-load-") as tmp:
        work = Path(tmp) if args.work_dir is None else args.work_dir
        work.mkdir(parents=True, exist_ok=True)
        net = None
        if args.rpc is None or args.ipfs is None:
            net = Devnet(DevnetConfig(dir=work / "devnet", rpc_port=free_port(), ipfs_api_port=free_port(),
                                      ipfs_gateway_port=free_port()))
            net.up()
        try:
            rpc = args.rpc or net.cfg.rpc_url  # type: ignore[union-attr]
            ipfs = args.ipfs or net.cfg.ipfs_api  # type: ignore[union-attr]
            with console.status("load run") as status:
                for mode in args.mode:
                    reports.append(measure(args.participants, mode=mode, rpc_url=rpc, ipfs_api=ipfs, work_dir=work,
                                           concurrency=args.concurrency, batch_size=args.batch_size,
                                           seed=args.seed, on_stage=status.update))
        finally:
            if net is not None:
                net.down()
    print_report(console, reports)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"runs": reports}, indent=2) + "\n")
    return 0 if all(healthy(r) for r in reports) else 1
