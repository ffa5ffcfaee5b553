"""Shared fixtures: a real in-process EVM with the contracts deployed, and a real devnet (Hardhat + Kubo)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from web3 import Web3

from chain.accounts import devnet_wallets
from chain.deploy import Deployment, deploy_all
from chain.embedded import embedded_transactor, embedded_web3
from chain.transactor import Transactor
from fedledger.devnet import Devnet, DevnetConfig, free_port, pid_alive


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


def new_chain_env() -> ChainEnv:
    """A fresh in-process EVM with the contracts deployed (module-scoped fixtures call this directly)."""
    w3 = embedded_web3()
    tx = embedded_transactor(w3)
    labels = ["admin", "operator", "aggregator", "outsider"] + [f"participant/{i}" for i in range(4)]
    wallets = devnet_wallets(tx, 1234, labels)
    deployment = deploy_all(tx, admin=wallets["admin"], operator=wallets["operator"], aggregator=wallets["aggregator"])
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
