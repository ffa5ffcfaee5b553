"""Sending transactions: local eth-account signing, a per-sender nonce manager, receipt waiting with a
timeout, and revert decoding into ``ContractRevert``.

One ``Transactor`` is created per Web3 connection by the composition root and shared by every gateway.
"""

from __future__ import annotations

import ast
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from eth_abi import decode as abi_decode
from eth_account.signers.local import LocalAccount
from eth_utils import function_abi_to_4byte_selector, to_checksum_address
from hexbytes import HexBytes
from requests.exceptions import ConnectionError as RequestsConnectionError
from web3 import Web3
from web3.exceptions import ContractCustomError, ContractLogicError, TimeExhausted, Web3RPCError

from chain.errors import ChainUnavailable, ContractRevert, TransactionTimeout
from chain.failpoints import failpoint

try:  # the embedded EVM raises its own exception type for reverts, carrying the raw revert bytes
    from eth_tester.exceptions import TransactionFailed as _TesterTransactionFailed
except ImportError:  # pragma: no cover - eth-tester is only needed for the embedded stack
    _TesterTransactionFailed = ()  # type: ignore[assignment,misc]

T = TypeVar("T")
REVERT_ERRORS: tuple[type[BaseException], ...] = (ContractCustomError, ContractLogicError, _TesterTransactionFailed)


def revert_data(exc: BaseException) -> bytes | None:
    """The raw revert payload of a failed call, from web3's or eth-tester's exception."""
    data = getattr(exc, "data", None)
    if isinstance(data, dict):  # Hardhat: {"message": ..., "data": "0x<selector><args>"}
        data = data.get("data")
    if isinstance(data, (str, bytes)) and data:
        return bytes(HexBytes(data))
    seen: BaseException | None = exc
    while seen is not None:
        if seen.args and isinstance(seen.args[0], bytes):
            return seen.args[0]
        if seen.args and isinstance(seen.args[0], str):
            # eth-tester's eth_call path stringifies the payload: "execution reverted: b'...'"
            text = seen.args[0]
            start = min((i for i in (text.find("b'"), text.find('b"')) if i >= 0), default=-1)
            if start >= 0:
                try:
                    value = ast.literal_eval(text[start:])
                except (ValueError, SyntaxError):
                    value = None
                if isinstance(value, bytes):
                    return value
        seen = seen.__cause__ or seen.__context__
    return None


@dataclass(frozen=True)
class TxResult:
    tx_hash: str
    block_number: int
    gas_used: int
    receipt: Any = field(repr=False)


class ErrorDecoder:
    """Maps 4-byte custom-error selectors from contract ABIs to (contract, name, decoded args)."""

    def __init__(self) -> None:
        self._errors: dict[bytes, tuple[str, dict[str, Any]]] = {}

    def add_abi(self, contract: str, abi: Iterable[dict[str, Any]]) -> None:
        for item in abi:
            if item.get("type") == "error":
                self._errors.setdefault(function_abi_to_4byte_selector(item), (contract, item))

    def decode(self, data: str | bytes | None, default_contract: str) -> ContractRevert:
        raw = HexBytes(data or b"")
        entry = self._errors.get(bytes(raw[:4]))
        if entry is None:
            if raw[:4] == bytes.fromhex("08c379a0"):
                (reason,) = abi_decode(["string"], bytes(raw[4:]))
                return ContractRevert(default_contract, "Error", {"reason": reason}, raw.hex())
            return ContractRevert(default_contract, "UnknownRevert", {"data": raw.hex()}, raw.hex())
        contract, item = entry
        types = [_abi_type(i) for i in item["inputs"]]
        values = abi_decode(types, bytes(raw[4:]))
        args = {}
        for spec, value in zip(item["inputs"], values, strict=True):
            args[spec["name"]] = to_checksum_address(value) if spec["type"] == "address" else value
        return ContractRevert(contract, item["name"], args, raw.hex())


def _abi_type(spec: dict[str, Any]) -> str:
    if spec["type"].startswith("tuple"):
        inner = ",".join(_abi_type(c) for c in spec["components"])
        return f"({inner}){spec['type'][5:]}"
    return str(spec["type"])


class Transactor:
    """Signs locally, manages nonces per sender (thread-safe), waits for receipts, decodes reverts."""

    def __init__(
        self,
        w3: Web3,
        *,
        receipt_timeout: float = 120.0,
        retries: int = 3,
        retry_backoff: float = 0.5,
        preflight_gas_limit: int | None = None,
    ) -> None:
        """``preflight_gas_limit``: instead of eth_estimateGas, dry-run the call (eth_call, which surfaces reverts
        the same way) and send with this fixed limit. For py-evm, whose estimate is a binary search of ~20 full
        executions; real nodes estimate natively and should leave it None. Receipts report true gas either way."""
        self.w3 = w3
        self.receipt_timeout = receipt_timeout
        self.retries = retries
        self.retry_backoff = retry_backoff
        self.preflight_gas_limit = preflight_gas_limit
        self.errors = ErrorDecoder()
        self._accounts: dict[str, LocalAccount] = {}
        self._nonces: dict[str, int] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._registry_lock = threading.Lock()
        self._chain_id: int | None = None

    @property
    def chain_id(self) -> int:
        if self._chain_id is None:
            self._chain_id = self.with_retries(lambda: int(self.w3.eth.chain_id))
        return self._chain_id

    def add_account(self, account: LocalAccount) -> str:
        address = to_checksum_address(account.address)
        with self._registry_lock:
            self._accounts[address] = account
            self._locks.setdefault(address, threading.Lock())
        return address

    def account(self, address: str) -> LocalAccount:
        try:
            return self._accounts[to_checksum_address(address)]
        except KeyError:
            raise KeyError(f"no local key for {address}: add it with Transactor.add_account") from None

    def with_retries(self, call: Callable[[], T]) -> T:
        """Run a read against the node, retrying connection failures a bounded number of times."""
        delay = self.retry_backoff
        for attempt in range(self.retries + 1):
            try:
                return call()
            except (RequestsConnectionError, ConnectionError, OSError) as exc:
                if attempt == self.retries:
                    raise ChainUnavailable(f"chain node unreachable after {self.retries + 1} attempts: {exc}") from exc
                time.sleep(delay)
                delay *= 2
        raise AssertionError("unreachable")

    def call(self, fn: Any, contract: str, block: Any = "latest") -> Any:
        try:
            return self.with_retries(lambda: fn.call(block_identifier=block))
        except REVERT_ERRORS as exc:
            raise self.errors.decode(revert_data(exc), contract) from exc

    def send(self, fn: Any, sender: str, contract: str, *, gas: int | None = None, value: int = 0) -> TxResult:
        """Build, sign, send ``fn`` from ``sender`` and wait for its receipt.

        Gas is estimated first, which also surfaces reverts (decoded) before anything is broadcast. ``value``: wei
        sent along (payable functions only).
        """
        address = to_checksum_address(sender)
        account = self.account(address)
        with self._locks[address]:
            params: dict[str, Any] = {"from": address, "chainId": self.chain_id}
            probe: dict[str, Any] = {"from": address}
            if value:
                params["value"] = probe["value"] = value
            try:
                if gas is None and self.preflight_gas_limit is not None and hasattr(fn, "call"):
                    # "pending": the dry run must see the next block's timestamp, as the transaction will
                    self.with_retries(lambda: fn.call(probe, block_identifier="pending"))
                    gas = self.preflight_gas_limit
                if gas is None:
                    estimate = self.with_retries(lambda: fn.estimate_gas(probe))
                    gas = int(estimate * 1.2) + 10_000
                params["gas"] = gas
                params["nonce"] = self._next_nonce(address)
                tx = self.with_retries(lambda: fn.build_transaction(params))
            except REVERT_ERRORS as exc:
                raise self.errors.decode(revert_data(exc), contract) from exc
            signed = account.sign_transaction(tx)
            name = getattr(fn, "fn_name", "")
            failpoint(f"tx:before-send:{name}")
            try:
                tx_hash = self.with_retries(lambda: self.w3.eth.send_raw_transaction(signed.raw_transaction))
            except Web3RPCError:
                self._nonces.pop(address, None)  # resync from the node next time
                raise
            except ChainUnavailable:
                self._nonces.pop(address, None)
                raise
            self._nonces[address] = params["nonce"] + 1
        failpoint(f"tx:after-send:{name}")
        return self._wait(tx_hash, fn, address, contract, value)

    def send_value(self, sender: str, to: str, value: int) -> TxResult:
        address = to_checksum_address(sender)
        account = self.account(address)
        with self._locks[address]:
            tx = {
                "from": address,
                "to": to_checksum_address(to),
                "value": value,
                "gas": 21_000,
                "chainId": self.chain_id,
                "nonce": self._next_nonce(address),
                **self._fees(),
            }
            signed = account.sign_transaction(tx)
            tx_hash = self.with_retries(lambda: self.w3.eth.send_raw_transaction(signed.raw_transaction))
            self._nonces[address] = tx["nonce"] + 1
        return self._wait(tx_hash, None, address, "")

    def _fees(self) -> dict[str, int]:
        block = self.with_retries(lambda: self.w3.eth.get_block("latest"))
        base = int(block.get("baseFeePerGas", 0))
        tip = 1_000_000_000
        return {"maxFeePerGas": 2 * base + tip, "maxPriorityFeePerGas": tip}

    def _next_nonce(self, address: str) -> int:
        if address not in self._nonces:
            self._nonces[address] = self.with_retries(lambda: self.w3.eth.get_transaction_count(address, "pending"))
        return self._nonces[address]

    def _wait(self, tx_hash: bytes, fn: Any, sender: str, contract: str, value: int = 0) -> TxResult:
        try:
            receipt = self.w3.eth.wait_for_transaction_receipt(tx_hash, timeout=self.receipt_timeout, poll_latency=0.05)
        except TimeExhausted as exc:
            raise TransactionTimeout(HexBytes(tx_hash).to_0x_hex(), self.receipt_timeout) from exc
        if receipt["status"] != 1:
            # Mined but reverted (state changed between estimate and inclusion): replay to get the reason.
            if fn is not None:
                try:
                    fn.call({"from": sender, "value": value}, block_identifier=receipt["blockNumber"] - 1)
                except REVERT_ERRORS as exc:
                    raise self.errors.decode(revert_data(exc), contract) from exc
            raise ContractRevert(contract, "RevertedOnChain", {"tx": HexBytes(tx_hash).to_0x_hex()})
        return TxResult(
            tx_hash=HexBytes(tx_hash).to_0x_hex(),
            block_number=int(receipt["blockNumber"]),
            gas_used=int(receipt["gasUsed"]),
            receipt=receipt,
        )
