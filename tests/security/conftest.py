"""A real API server (``fedledger api``: uvicorn in its own process, on a free loopback port), seeded over HTTP
with a few rounds the way participants and the operator would, and stopped by pid."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import torch
from eth_account.messages import encode_typed_data
from hexbytes import HexBytes

from chain.accounts import derive_devnet_account
from fedledger.devnet import free_port
from fedledger.roles import commitment_typed_data
from trainer.serialization import deserialize, serialize

TOKEN = "security-suite-operator-token"
OPERATOR = {"Authorization": f"Bearer {TOKEN}"}
OCTET = {"content-type": "application/octet-stream"}
ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Server:
    url: str
    proc: subprocess.Popen[bytes]
    log: Path

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


def start_api(env: dict[str, str], log: Path, *, timeout_s: float = 120) -> Server:
    port = free_port()
    full_env = {**os.environ, "FEDLEDGER_OPERATOR_TOKEN": TOKEN, "FEDLEDGER_PORT": str(port), **env}
    with log.open("ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "fedledger.cli", "api", "--port", str(port)], cwd=ROOT,
                                env=full_env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    server = Server(f"http://127.0.0.1:{port}", proc, log)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the API exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(server.url + "/health", timeout=2).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    server.stop()
    raise RuntimeError(f"the API did not answer /health within {timeout_s}s:\n{log.read_text()[-3000:]}")


@pytest.fixture
def api_server(tmp_path: Path) -> Iterator[Callable[[dict[str, str]], Server]]:
    """``api_server(env)`` starts ``fedledger api`` with ``env``; every server started is stopped (by pid)
    however the test ends."""
    servers: list[Server] = []

    def start(env: dict[str, str]) -> Server:
        servers.append(start_api(env, tmp_path / f"api-{len(servers)}.log"))
        return servers[-1]

    yield start
    for s in servers:
        s.stop()
    assert all(s.proc.poll() is not None for s in servers)


@pytest.fixture
def seed() -> Callable[..., list]:
    return seed_rounds


def sign(account: object, typed: dict) -> str:
    return HexBytes(account.sign_message(encode_typed_data(full_message=typed)).signature).to_0x_hex()  # type: ignore[attr-defined]


def ok(r: httpx.Response, *codes: int) -> dict:
    assert r.status_code in (codes or (200, 201)), f"{r.request.method} {r.request.url}: {r.status_code} {r.text}"
    return r.json()


def register(http: httpx.Client, account: object) -> None:
    ch = ok(http.get("/participants/challenge", params={"address": account.address}))  # type: ignore[attr-defined]
    ok(http.post("/participants/register", json={"address": account.address, "deadline": ch["deadline"],  # type: ignore[attr-defined]
                                                 "signature": sign(account, ch["typed_data"])}), 201)


def submit(http: httpx.Client, account: object, round_id: int, seed: int, scale: float = 0.01) -> httpx.Response:
    health = ok(http.get("/health"))
    model = ok(http.get("/models/current"))
    base = deserialize(http.get(f"/blobs/{model['cid']}", params={"content_hash": model["hash"]}).content)
    gen = torch.Generator().manual_seed(seed)
    update = {k: torch.full_like(v, scale) + 0.01 * torch.randn(v.shape, generator=gen) for k, v in base.items()}
    ref = ok(http.post("/blobs", content=serialize(update), headers=OCTET), 201)
    typed = commitment_typed_data(health["chain_id"], health["contracts"]["FederatedRounds"], round_id,
                                  bytes(HexBytes(ref["content_hash"])), ref["cid"])
    body = {"participant": account.address, "content_hash": ref["content_hash"], "cid": ref["cid"],  # type: ignore[attr-defined]
            "signature": sign(account, typed)}
    return http.post(f"/rounds/{round_id}/submissions", json=body)


def seed_rounds(url: str, *, label: str = "security", participants: int = 4) -> list:
    """Genesis, ``participants`` registered wallets, one finalized round (one attacker), and a second round left
    open with one submission: the fuzzer then meets every state a round can be in."""
    people = [derive_devnet_account(91, f"{label}/{i}") for i in range(participants)]
    with httpx.Client(base_url=url, timeout=120) as http:
        ok(http.post("/operator/genesis", json={"dataset": "digits"}, headers=OPERATOR), 201)
        for p in people:
            register(http, p)
        first = ok(http.post("/operator/rounds", json={"duration_s": 3600}, headers=OPERATOR), 201)["round"]
        for i, p in enumerate(people):
            ok(submit(http, p, first, seed=i, scale=-4.0 if i == 0 else 0.01), 201, 202)
        ok(http.post(f"/operator/rounds/{first}/close", headers=OPERATOR))
        ok(http.post(f"/operator/rounds/{first}/finalize", headers=OPERATOR))
        second = ok(http.post("/operator/rounds", json={"duration_s": 3600}, headers=OPERATOR), 201)["round"]
        ok(submit(http, people[1], second, seed=100), 201, 202)
    return people
