"""Shared fixtures: a real in-process EVM with the contracts deployed (no mocks)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from web3 import Web3

from chain.accounts import devnet_wallets
from chain.deploy import Deployment, deploy_all
from chain.embedded import embedded_web3
from chain.transactor import Transactor


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


@pytest.fixture
def chain_env() -> ChainEnv:
    w3 = embedded_web3()
    tx = Transactor(w3)
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
        participants=sorted(wallets[f"participant/{i}"] for i in range(4)),
        outsider=wallets["outsider"],
    )
