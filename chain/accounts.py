"""Devnet wallets: keys derived from a seed and a role label, funded from the node's own unlocked account.

DEVNET ONLY. Derived keys are reproducible by anyone who knows the seed, which is what a demo wants and what a
real deployment must never use: real participants bring their own keys (an encrypted eth-account keystore).
"""

from __future__ import annotations

from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils import keccak, to_checksum_address
from web3 import Web3
from web3.exceptions import Web3RPCError

from chain.errors import ChainError
from chain.transactor import Transactor

DEVNET_FUNDING_WEI = 10 * 10**18  # 10 devnet ETH per wallet: thousands of rounds of gas at devnet prices


def derive_devnet_account(seed: int, label: str) -> LocalAccount:
    """Deterministic devnet key for (seed, label), e.g. (0, "participant/3")."""
    return Account.from_key(keccak(text=f"fedledger-devnet/{seed}/{label}"))


def fund_from_node(w3: Web3, addresses: list[str], amount: int = DEVNET_FUNDING_WEI) -> None:
    """Send devnet ether from the node's first unlocked account (eth-tester, Hardhat and anvil all have one)."""
    accounts = w3.eth.accounts
    if not accounts:
        raise ChainError("the node exposes no unlocked account to fund devnet wallets from")
    source = accounts[0]
    hashes = []
    try:
        for a in addresses:
            if w3.eth.get_balance(to_checksum_address(a)) >= amount // 2:
                continue  # already funded (a devnet deployment outlives one demo run)
            hashes.append(w3.eth.send_transaction({"from": source, "to": to_checksum_address(a), "value": amount}))
        for tx_hash in hashes:
            w3.eth.wait_for_transaction_receipt(tx_hash, timeout=60)
    except Web3RPCError as exc:
        raise ChainError(f"funding devnet wallets from {source} failed: {exc}") from exc


def devnet_wallets(transactor: Transactor, seed: int, labels: list[str], *, fund: bool = True) -> dict[str, str]:
    """Derive, register with the transactor, and (optionally) fund one wallet per label. Returns label -> address."""
    out = {}
    for label in labels:
        out[label] = transactor.add_account(derive_devnet_account(seed, label))
    if fund:
        fund_from_node(transactor.w3, list(out.values()))
    return out
