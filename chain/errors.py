"""Errors raised by the ledger layer. Everything below chain/ maps web3 failures onto these."""

from __future__ import annotations

from typing import Any


class ChainError(Exception):
    """Root of every error the ledger layer raises."""


class ArtifactError(ChainError):
    """Compiled artifacts are missing, stale, or the compiler failed."""


class ManifestError(ChainError):
    """A deployment manifest is missing, malformed, or does not match the connected chain."""


class ChainUnavailable(ChainError):
    """The node did not answer (after bounded retries)."""


class TransactionTimeout(ChainError):
    """A sent transaction was not mined within the wait limit."""

    def __init__(self, tx_hash: str, timeout: float) -> None:
        super().__init__(f"transaction {tx_hash} not mined within {timeout:.0f}s")
        self.tx_hash = tx_hash
        self.timeout = timeout


class ContractRevert(ChainError):
    """A contract call reverted. ``error`` is the custom error's name, ``args`` its decoded arguments."""

    def __init__(self, contract: str, error: str, args: dict[str, Any], raw: str = "") -> None:
        shown = ", ".join(f"{k}={_show(v)}" for k, v in args.items())
        super().__init__(f"{contract} reverted with {error}({shown})")
        self.contract = contract
        self.error = error
        self.args_by_name = args
        self.raw = raw


def _show(value: Any) -> str:
    if isinstance(value, bytes):
        return "0x" + value.hex()
    return str(value)
