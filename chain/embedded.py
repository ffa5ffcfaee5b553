"""The embedded chain: an in-process EVM (py-evm through web3's EthereumTesterProvider). Nothing to start."""

from __future__ import annotations

from web3 import EthereumTesterProvider, Web3

from chain.transactor import Transactor

# Per-transaction limit used with dry-run preflight on py-evm (its block gas limit is 30M).
EMBEDDED_TX_GAS_LIMIT = 15_000_000


def embedded_web3() -> Web3:
    """A fresh in-process chain. Its chain id (131277322940537) is what EIP-712 domains must use."""
    return Web3(EthereumTesterProvider())


def advance_time(w3: Web3, seconds: int) -> None:
    """Move the embedded chain's clock forward and mine a block (deadline tests)."""
    tester = w3.provider.ethereum_tester  # type: ignore[attr-defined]
    latest = w3.eth.get_block("latest")
    tester.time_travel(int(latest["timestamp"]) + seconds)
    tester.mine_blocks(1)


def embedded_transactor(w3: Web3) -> Transactor:
    """A Transactor tuned for py-evm: dry-run preflight instead of its slow binary-search gas estimate."""
    return Transactor(w3, preflight_gas_limit=EMBEDDED_TX_GAS_LIMIT)
