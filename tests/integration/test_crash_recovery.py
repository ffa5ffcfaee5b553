"""The aggregator killed (SIGKILL, no cleanup) at each step of finalization, then restarted: the round is finalized
exactly once — one finalize transaction from the aggregator's account, one RoundFinalized event, rewards minted
once — and the audit verifies. On a devnet of its own (Hardhat + Kubo); the aggregator runs as its own process
(``fedledger aggregator run``) and kills itself at a named failpoint (chain/failpoints.py)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import torch
from hexbytes import HexBytes

from chain.accounts import devnet_wallets
from fedledger.devnet import Devnet
from fedledger.roles import Operator, ParticipantClient
from fedledger.stack import Stack, devnet_stack
from storage import BlobRef
from trainer.model import ModelSpec, init_params
from trainer.rules import RuleConfig
from trainer.serialization import serialize

ROOT = Path(__file__).resolve().parents[2]
SPEC = ModelSpec(64, 10)
ATTACKER = 0  # participant 0 sends a sign-flipped, boosted update and must be rejected and unpaid


@dataclass
class World:
    net: Devnet
    stack: Stack
    operator: Operator
    clients: list[ParticipantClient]


@pytest.fixture(scope="module")
def world(own_devnet: Devnet) -> World:
    stack = devnet_stack(own_devnet.cfg)
    operator = Operator(stack.deployment, stack.store, stack.operator)
    operator.publish_genesis(init_params(SPEC, 0))
    wallets = devnet_wallets(stack.transactor, 4242, [f"crash/{i}" for i in range(4)])
    clients = [ParticipantClient(stack.deployment, stack.store, a, SPEC) for a in wallets.values()]
    for c in clients:
        c.register()
    return World(own_devnet, stack, operator, clients)


def top_up(w: World) -> None:
    """The attacker's slash of the round before took its stake below the minimum: it stakes again to attack again."""
    registry = w.stack.deployment.registry
    for c in w.clients:
        short = registry.min_stake() - registry.stake_of(c.address).amount
        if short > 0:
            c.deposit_stake(short)


def closed_round(w: World) -> int:
    top_up(w)
    round_id, _ = w.operator.open_round(RuleConfig(), duration_s=3600)
    base = w.clients[0].fetch_global_model()
    for i, c in enumerate(w.clients):
        gen = torch.Generator().manual_seed(round_id * 100 + i)
        if i == ATTACKER:
            update = {k: -4.0 * torch.ones_like(v) for k, v in base.items()}
        else:
            update = {k: torch.full_like(v, 0.01) + 0.01 * torch.randn(v.shape, generator=gen) for k, v in base.items()}
        c.submit(round_id, update)
    w.operator.close_round(round_id)
    return round_id


def aggregator(w: World, settlement: str, *, failpoint: str | None = None, once: bool = True) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if k != "FEDLEDGER_FAILPOINT"}
    if failpoint:
        env["FEDLEDGER_FAILPOINT"] = failpoint
    cmd = [sys.executable, "-m", "fedledger.cli", "aggregator", "run", "--devnet-dir", str(w.net.cfg.dir),
           "--devnet-seed", str(w.net.cfg.seed), "--settlement", settlement, "--interval", "0.5"]
    return subprocess.Popen(cmd + (["--once"] if once else []), cwd=ROOT, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)


def finished(proc: subprocess.Popen[str], timeout: float = 240) -> tuple[int, str]:
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        pytest.fail(f"the aggregator did not finish:\n{out}")
    return proc.returncode, out


@dataclass
class Ledger:
    nonce: int
    supply: int
    balances: list[int]


def ledger(w: World) -> Ledger:
    token = w.stack.deployment.token
    return Ledger(w.stack.transactor.w3.eth.get_transaction_count(w.stack.aggregator, "latest"),
                  token.total_supply(), [token.balance_of(c.address) for c in w.clients])


def assert_finalized_exactly_once(w: World, round_id: int, before: Ledger, settlement: str) -> None:
    rounds = w.stack.deployment.rounds
    info = rounds.get_round(round_id)
    assert info.state == 3, f"round {round_id} is in state {info.state}, not finalized"
    events = rounds.round_finalized_events(from_block=0, round_id=round_id)
    assert len(events) == 1
    after = ledger(w)
    slashes = w.stack.deployment.registry.stake_slashed_events(from_block=0, round_id=round_id)
    assert [e.args.account for e in slashes] == [w.clients[ATTACKER].address]  # slashed once, however it crashed
    # Legacy: the finalize slashes. Merkle: the aggregator proves the slash by its own transaction, after the root.
    sent = 1 + (len(slashes) if settlement == "merkle" else 0)
    assert after.nonce == before.nonce + sent, "the aggregator sent more than one finalize transaction"
    minted = after.supply - before.supply
    if settlement == "legacy":
        assert minted == info.minted and 0 < minted <= info.reward_budget
        gains = [a - b for a, b in zip(after.balances, before.balances)]
        assert gains[ATTACKER] == 0 and all(g > 0 for i, g in enumerate(gains) if i != ATTACKER)
        assert sum(gains) == minted
    else:
        assert minted == 0  # Merkle rounds mint at claim time, by proof (claims are once per round on-chain)


FAILPOINTS = [
    ("legacy", "aggregator:after-fetch"),
    ("legacy", "aggregator:after-store"),
    ("legacy", "tx:before-send:finalizeRound"),
    ("legacy", "tx:after-send:finalizeRound"),
    ("legacy", "aggregator:after-receipt"),
    ("merkle", "aggregator:after-store"),
    ("merkle", "tx:after-send:finalizeRoundWithResults"),
]


@pytest.mark.parametrize(("settlement", "point"), FAILPOINTS)
def test_killed_at_a_step_of_finalization_then_restarted_finalizes_exactly_once(
    world: World, settlement: str, point: str
) -> None:
    round_id = closed_round(world)
    before = ledger(world)
    code, out = finished(aggregator(world, settlement, failpoint=point))
    assert code == -signal.SIGKILL, f"the aggregator did not reach {point}:\n{out}"
    mined = world.stack.deployment.rounds.get_round(round_id).state == 3
    assert mined == (point in ("tx:after-send:finalizeRound", "tx:after-send:finalizeRoundWithResults",
                                "aggregator:after-receipt")), "the crash left the round in an unexpected state"
    code, out = finished(aggregator(world, settlement))
    assert code == 0, out
    assert_finalized_exactly_once(world, round_id, before, settlement)


def test_a_finalize_still_in_the_mempool_is_waited_for_not_sent_twice(world: World) -> None:
    """Killed after broadcasting while blocks are not being mined: the restarted aggregator sees its own pending
    transaction and waits; once a block is mined the round is final and nothing else is sent."""
    w3 = world.stack.transactor.w3
    round_id = closed_round(world)
    before = ledger(world)
    w3.provider.make_request("evm_setAutomine", [False])
    restarted = None
    try:
        code, out = finished(aggregator(world, "legacy", failpoint="tx:after-send:finalizeRound"))
        assert code == -signal.SIGKILL, out
        assert world.stack.deployment.rounds.get_round(round_id).state == 2  # closed, its finalize pending
        assert w3.eth.get_transaction_count(world.stack.aggregator, "pending") == before.nonce + 1
        restarted = aggregator(world, "legacy", once=False)
        assert restarted.stdout is not None
        started = ""  # read until the service says it has started (after its index sync), or its output ends
        while "watching" not in started and (line := restarted.stdout.readline()):
            started += line
        assert "watching" in started, started + finished(restarted)[1]
        time.sleep(8)  # several passes of the restarted service while the transaction stays pending
        assert restarted.poll() is None, finished(restarted)[1]
        assert w3.eth.get_transaction_count(world.stack.aggregator, "pending") == before.nonce + 1
        w3.provider.make_request("evm_mine", [])
        assert world.stack.deployment.rounds.get_round(round_id).state == 3
        time.sleep(2)  # passes of the service after the round became final
        assert restarted.poll() is None, finished(restarted)[1]
        os.killpg(restarted.pid, signal.SIGTERM)  # docker stop: the service ends its pass and exits cleanly
        code, out = finished(restarted, timeout=30)
        assert code == 0 and "SIGTERM: stopping after this pass" in out, out
        assert out.rstrip().endswith("aggregator stopped"), out
    finally:
        w3.provider.make_request("evm_setAutomine", [True])
        if restarted is not None and restarted.poll() is None:
            os.killpg(restarted.pid, signal.SIGINT)
            finished(restarted, timeout=30)
    assert_finalized_exactly_once(world, round_id, before, "legacy")


def signed_submission(http: httpx.Client, client: ParticipantClient, round_id: int, seed: int) -> dict:
    base = client.fetch_global_model()
    gen = torch.Generator().manual_seed(seed)
    update = {k: torch.full_like(v, 0.01) + 0.01 * torch.randn(v.shape, generator=gen) for k, v in base.items()}
    up = http.post("/blobs", content=serialize(update), headers={"content-type": "application/octet-stream"})
    assert up.status_code == 201, up.text
    ref = BlobRef(bytes(HexBytes(up.json()["content_hash"])), up.json()["cid"])
    return {"participant": client.address, "content_hash": up.json()["content_hash"], "cid": ref.uri,
            "signature": HexBytes(client.sign(round_id, ref)).to_0x_hex()}


def test_the_api_killed_mid_upload_loses_no_accepted_submission(world: World, api_server: Callable) -> None:
    """The batching relay answers 202 only after the submission is in its SQLite queue (fsync'd). Killed while a
    large upload is half sent, then restarted: every 202'd submission is still queued, is posted in a batch when
    the round closes, and settles."""
    env = {"FEDLEDGER_STACK": "devnet", "FEDLEDGER_DEVNET_DIR": str(world.net.cfg.dir),
           "FEDLEDGER_DEVNET_SEED": str(world.net.cfg.seed), "FEDLEDGER_SETTLEMENT": "merkle",
           "FEDLEDGER_RELAY_MODE": "batched", "FEDLEDGER_FLUSH_INTERVAL_S": "0"}  # no flusher: only close posts
    server = api_server(env)
    top_up(world)
    round_id, _ = world.operator.open_round(RuleConfig(), duration_s=3600)
    accepted = world.clients[:3]
    with httpx.Client(base_url=server.url, timeout=60) as http:
        for i, c in enumerate(accepted):
            r = http.post(f"/rounds/{round_id}/submissions", json=signed_submission(http, c, round_id, 500 + i))
            assert r.status_code == 202 and r.json()["status"] == "pending", r.text
    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(b"POST /blobs HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\n"
                     b"Content-Length: 8000000\r\n\r\n" + b"\0" * 1_000_000)
        time.sleep(1)
        server.proc.send_signal(signal.SIGKILL)  # mid-upload: 1 of 8 MB received
        server.proc.wait(timeout=30)

    server = api_server(env)
    with httpx.Client(base_url=server.url, timeout=120) as http:
        for c in accepted:
            assert http.get(f"/rounds/{round_id}/receipts/{c.address}").json()["status"] == "pending"
        late = world.clients[3]  # one more participant, after the restart
        r = http.post(f"/rounds/{round_id}/submissions", json=signed_submission(http, late, round_id, 600))
        assert r.status_code == 202, r.text
        closed = http.post(f"/operator/rounds/{round_id}/close", headers=server.operator)
        assert closed.status_code == 200, closed.text
        for c in [*accepted, late]:
            receipt = http.get(f"/rounds/{round_id}/receipts/{c.address}").json()
            assert receipt["status"] == "included" and receipt["on_chain_verified"] is True, receipt
        batches = world.stack.deployment.rounds.commitment_batch_posted_events(from_block=0, round_id=round_id)
        assert sum(b.args.entries for b in batches) == 4  # each accepted submission in exactly one batch entry
        fin = http.post(f"/operator/rounds/{round_id}/finalize", headers=server.operator)
        assert fin.status_code == 200, fin.text
        assert set(fin.json()["results"]["rewards"]) == {c.address for c in [*accepted, late]}


def test_the_audit_verifies_every_round_after_the_crashes(world: World) -> None:
    rounds = world.stack.deployment.rounds
    if rounds.round_count() == 0:  # run alone: give the auditor a round the aggregator finalized
        closed_round(world)
        assert finished(aggregator(world, "legacy"))[0] == 0
    proc = subprocess.run([sys.executable, "-m", "fedledger.cli", "audit", "verify", "--manifest",
                           str(world.net.cfg.manifest_path)], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "verified" in proc.stdout
