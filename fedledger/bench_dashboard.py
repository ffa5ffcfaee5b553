"""``fedledger bench dashboard``: how long the dashboard's round page takes for a round of N participants.

    fedledger bench dashboard --participants 200 [--rounds 1] [--repeats 5] [--json docs/dashboard-bench.json]

Plays rounds on the embedded stack with N participants (digits; each participant draws ``--samples`` samples with
replacement from its own Dirichlet(0.5) class mix, as ``fedledger bench scale`` does, since digits is too small to
split disjointly among 200; a tenth are x4 sign-flippers; every participant commits by its own transaction; the
round is finalized with ``--settlement legacy`` or ``merkle``). Then it serves the API and the dashboard over the
same in-process chain with uvicorn on a free loopback port and times the round page of the last round: the server's
answer over HTTP (which includes re-auditing the round), the two views it is made of (``Platform.round`` and
``Platform.audit``) on their own, and the page in headless chromium (navigation start to the load event, script
included). Needs /usr/bin/chromium (scripts/bootstrap installs it).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

CHROMIUM = "/usr/bin/chromium"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--participants", type=int, default=200)
    p.add_argument("--rounds", type=int, default=1, help="rounds played before timing the last one")
    p.add_argument("--samples", type=int, default=32, help="training samples each participant draws")
    p.add_argument("--settlement", choices=("legacy", "merkle"), default="legacy")
    p.add_argument("--stack", choices=("devnet", "embedded"), default="devnet",
                   help="devnet: a throw-away Hardhat node + Kubo daemon on free loopback ports (stopped after); "
                        "embedded: the in-process EVM, whose first read of a round's events is slow (see README)")
    p.add_argument("--repeats", type=int, default=3, help="timed loads of each kind (after one warm-up)")
    p.add_argument("--json", type=Path, default=None)


def play(platform: Any, participants: int, rounds: int, *, samples: int, seed: int = 0) -> int:
    """Register ``participants`` funded embedded wallets, publish genesis, play ``rounds`` rounds through the
    platform's operator calls; returns the last round's id."""
    import torch

    from chain.accounts import devnet_wallets
    from fedledger.roles import ParticipantClient
    from trainer.attacks import apply_attack
    from trainer.data import dirichlet_resample, load_dataset
    from trainer.local import LocalConfig, train_local
    from trainer.model import ModelSpec
    from trainer.rules import RuleConfig
    from trainer.simulation import local_seed

    stack = platform.stack
    labels = [f"participant/{i}" for i in range(participants)]
    wallets = devnet_wallets(stack.transactor, seed, labels)
    data = load_dataset("digits", seed=seed)
    spec = ModelSpec(data.num_features, data.num_classes)
    clients = [ParticipantClient(stack.deployment, stack.store, wallets[lab], spec) for lab in labels]
    attackers = {c.address for c in clients[: max(1, participants // 10)]}
    parts = dirichlet_resample(data.y_train.numpy(), participants, 0.5, size=samples, seed=seed)
    for c in clients:
        c.register()
    platform.publish_genesis(dataset="digits", seed=seed)
    round_id = 0
    for _ in range(rounds):
        round_id = platform.open_round(duration_s=24 * 3600, rule=RuleConfig())["round"]
        base = clients[0].fetch_global_model()
        for i, c in enumerate(clients):
            idx = torch.from_numpy(parts[i])
            update = train_local(spec, base, data.x_train[idx], data.y_train[idx], LocalConfig(),
                                 seed=local_seed(seed, round_id, i))
            if c.address in attackers:
                update = apply_attack("signflip", update, seed=local_seed(seed, round_id, i))
            c.submit(round_id, update)
        platform.close_round(round_id=round_id)
        platform.finalize_round(round_id=round_id)
    return round_id


def _timed(fn: Any, repeats: int, what: str = "") -> tuple[list[float], Any]:
    t = time.perf_counter()
    result = fn()  # warm-up (index sync, imports, numba kernels)
    if what:
        print(f"{what}: warm-up {time.perf_counter() - t:.2f} s", flush=True)
    samples = []
    for _ in range(repeats):
        t = time.perf_counter()
        result = fn()
        samples.append(time.perf_counter() - t)
    if what:
        print(f"{what}: {', '.join(f'{x:.2f}' for x in samples)} s", flush=True)
    return samples, result


def _summary(samples: list[float]) -> dict[str, float]:
    return {"median_s": round(statistics.median(samples), 4), "min_s": round(min(samples), 4),
            "max_s": round(max(samples), 4)}


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from fedledger.devnet import Devnet, DevnetConfig, free_port
    from fedledger.stack import devnet_stack, embedded_stack

    console = Console()
    state = Path(tempfile.mkdtemp(prefix="fedledger-bench-dashboard-"))
    devnet = None
    if args.stack == "devnet":
        cfg = DevnetConfig(dir=state / "devnet", rpc_port=free_port(), ipfs_api_port=free_port(),
                           ipfs_gateway_port=free_port())
        devnet = Devnet(cfg)
        devnet.up()
        stack = devnet_stack(cfg)
        state = cfg.dir
    else:
        stack = embedded_stack(state, seed=0)
    try:
        return _bench(args, console, stack, state)
    finally:
        if devnet is not None:
            devnet.down(wipe=True)


def _bench(args: argparse.Namespace, console: Any, stack: Any, state: Path) -> int:
    import os

    import httpx
    import uvicorn

    from api.app import create_app
    from api.settings import Settings
    from fedledger.devnet import free_port
    from fedledger.service import Platform

    started = time.perf_counter()
    platform = Platform.create(stack, state / "index.sqlite", settlement=args.settlement)
    with console.status(f"playing {args.rounds} round(s) of {args.participants} participants"):
        round_id = play(platform, args.participants, args.rounds, samples=args.samples)
    demo_s = time.perf_counter() - started
    print(f"played {args.rounds} round(s) of {args.participants} participants in {demo_s:.1f} s", flush=True)
    rounds_s, view = _timed(lambda: platform.round(round_id=round_id), args.repeats, "Platform.round")
    audit_s, report = _timed(lambda: platform.audit(round_id=round_id), args.repeats, "Platform.audit")

    port = free_port()
    settings = Settings(stack=stack.name, state_dir=state, devnet_dir=state)
    server = uvicorn.Server(uvicorn.Config(create_app(settings, platform=platform),
                                           host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    url = f"http://127.0.0.1:{port}/dashboard/rounds/{round_id}"
    try:
        with httpx.Client(timeout=600) as http:
            http_s, page = _timed(lambda: http.get(url), args.repeats, "GET round page")
            if page.status_code != 200:
                raise RuntimeError(f"{url} answered {page.status_code}")
        os.environ.setdefault("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
        from playwright.sync_api import sync_playwright

        browser_s: list[float] = []
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM,
                                        args=["--no-sandbox"] if os.geteuid() == 0 else [])
            page_ = browser.new_page()
            for i in range(args.repeats + 1):
                page_.goto(url, wait_until="load")
                rows = page_.locator("#committers-table tbody tr").count()
                if rows != len(view["submissions"]):
                    raise RuntimeError(f"the page shows {rows} committers, the round has {len(view['submissions'])}")
                timing = page_.evaluate("() => { const n = performance.getEntriesByType('navigation')[0];"
                                        " return n.loadEventEnd - n.startTime; }")
                if i:
                    browser_s.append(timing / 1000)
            browser.close()
    finally:
        server.should_exit = True
        thread.join(timeout=30)

    out = {
        "participants": args.participants,
        "committers_in_round": len(view["submissions"]),
        "round": round_id,
        "audit_verified": report.verified,
        "page_bytes": len(page.content),
        "stack": args.stack,
        "settlement": args.settlement,
        "rounds_played_s": round(demo_s, 1),
        "http_round_page": _summary(http_s),
        "platform_round_view": _summary(rounds_s),
        "platform_audit_round": _summary(audit_s),
        "browser_load": _summary(browser_s),
        "repeats": args.repeats,
    }
    console.print_json(data=out)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=2) + "\n")
    return 0 if report.verified else 1
