"""Shared fixtures: a real in-process EVM with the contracts deployed, and a real devnet (Hardhat + Kubo)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import httpx
import pytest
from web3 import Web3

from chain.accounts import devnet_wallets
from chain.deploy import Deployment, deploy_all
from chain.embedded import embedded_transactor, embedded_web3
from chain.transactor import Transactor
from fedledger.devnet import Devnet, DevnetConfig, free_port, pid_alive
from fedledger.wiring import default_stake_params


@dataclass
class ChainEnv:
    w3: Web3
    transactor: Transactor
    deployment: Deployment
    admin: str
    operator: str
    aggregator: str
    participants: list[str]
    outsider: str


def new_chain_env(*, admission: bool = False) -> ChainEnv:
    """A fresh in-process EVM with the contracts deployed (module-scoped fixtures call this directly);
    ``admission``: the registry admits only wallets the operator admitted."""
    w3 = embedded_web3()
    tx = embedded_transactor(w3)
    labels = ["admin", "operator", "aggregator", "outsider"] + [f"participant/{i}" for i in range(4)]
    wallets = devnet_wallets(tx, 1234, labels)
    deployment = deploy_all(tx, admin=wallets["admin"], operator=wallets["operator"], aggregator=wallets["aggregator"],
                            stake=replace(default_stake_params(), admission_required=admission))
    return ChainEnv(
        w3=w3,
        transactor=tx,
        deployment=deployment,
        admin=wallets["admin"],
        operator=wallets["operator"],
        aggregator=wallets["aggregator"],
        participants=sorted((wallets[f"participant/{i}"] for i in range(4)), key=lambda a: int(a, 16)),
        outsider=wallets["outsider"],
    )


@pytest.fixture
def chain_env() -> ChainEnv:
    return new_chain_env()


@pytest.fixture(scope="session")
def chain_env_factory() -> Callable[[], ChainEnv]:
    """``new_chain_env`` for fixtures of a wider scope than ``chain_env``'s."""
    return new_chain_env


@contextmanager
def running_devnet(directory: Path) -> Iterator[Devnet]:
    """A real Hardhat node and a real Kubo daemon on free loopback ports, contracts deployed; stopped by pid."""
    cfg = DevnetConfig(dir=directory, rpc_port=free_port(), ipfs_api_port=free_port(), ipfs_gateway_port=free_port())
    net = Devnet(cfg)
    try:
        net.up()
        yield net
    finally:
        pids = [int(e["pid"]) for e in net._pids().values()]
        net.down()
        assert not [p for p in pids if pid_alive(p)], "devnet processes survived down()"


@pytest.fixture(scope="session")
def devnet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Devnet]:
    """The devnet most integration tests share (each leaves its rounds finalized)."""
    with running_devnet(tmp_path_factory.mktemp("devnet")) as net:
        yield net


@pytest.fixture(scope="module")
def own_devnet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Devnet]:
    """A devnet of the module's own, for tests that leave rounds in odd states or hand out the operator role."""
    with running_devnet(tmp_path_factory.mktemp("own-devnet")) as net:
        yield net


# ---------------------------------------------------------------- a real API server

API_TOKEN = "test-suite-operator-token"
PROJECT_ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Server:
    url: str
    proc: subprocess.Popen[bytes]
    log: Path
    token: str = API_TOKEN

    @property
    def operator(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

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
    full_env = {**os.environ, "FEDLEDGER_OPERATOR_TOKEN": API_TOKEN, "FEDLEDGER_PORT": str(port), **env}
    with log.open("ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "fedledger.cli", "api", "--port", str(port)], cwd=PROJECT_ROOT,
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
