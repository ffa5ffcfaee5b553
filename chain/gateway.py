"""Runtime base of the generated typed gateways (chain/gateways/*.py, written by ``fedledger codegen``).

A gateway wraps one deployed contract: typed calls, typed transactions through the shared ``Transactor``, and
typed event reads in bounded block windows. The ABI comes from the compiled artifact; the generated code carries
a hash of the ABI it was generated from and refuses to run against a different one.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Generic, TypeVar

from eth_utils import event_abi_to_log_topic, to_checksum_address
from hexbytes import HexBytes
from web3.logs import DISCARD

from chain.compiler import ARTIFACTS_DIR, Artifact, load_artifact
from chain.errors import ArtifactError, ChainError
from chain.transactor import Transactor, TxResult

A = TypeVar("A")
G = TypeVar("G", bound="ContractGateway")

DEFAULT_LOG_WINDOW = 2_000


def abi_hash(abi: list[dict[str, Any]]) -> str:
    return hashlib.sha256(json.dumps(abi, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def read_logs(
    gateways: Sequence[ContractGateway], from_block: int, to_block: int, window: int = DEFAULT_LOG_WINDOW
) -> list[EventRecord[Any]]:
    """Every event of ``gateways`` in [from_block, to_block], one eth_getLogs per window for all of them, in
    chain order. This is how histories are indexed once instead of queried per event type."""
    if not gateways:
        return []
    transactor = gateways[0].transactor
    by_address = {g.address: g for g in gateways}
    out: list[EventRecord[Any]] = []
    start = from_block
    while start <= to_block:
        end = min(start + window - 1, to_block)
        logs = transactor.with_retries(
            lambda s=start, e=end: transactor.w3.eth.get_logs(
                {"fromBlock": s, "toBlock": e, "address": list(by_address)}
            )
        )
        for log in logs:
            gateway = by_address.get(to_checksum_address(log["address"]))
            record = gateway.decode_log(log) if gateway is not None else None
            if record is not None:
                out.append(record)
        start = end + 1
    out.sort(key=lambda r: (r.block_number, r.log_index))
    return out


@dataclass(frozen=True)
class EventRecord(Generic[A]):
    """One decoded event with where it was emitted."""

    name: str
    args: A
    block_number: int
    tx_hash: str
    log_index: int
    block_hash: str


class ContractGateway:
    CONTRACT_NAME: ClassVar[str]
    ABI_HASH: ClassVar[str]
    EVENT_CONVERTERS: ClassVar[dict[str, str]]  # event name -> name of the generated converter method

    def __init__(self, transactor: Transactor, address: str, *, artifacts_dir: Path = ARTIFACTS_DIR) -> None:
        artifact = self._checked_artifact(artifacts_dir)
        self.transactor = transactor
        self.address = to_checksum_address(address)
        self.contract = transactor.w3.eth.contract(address=self.address, abi=artifact.abi)
        transactor.errors.add_abi(self.CONTRACT_NAME, artifact.abi)
        self._event_topics = {
            HexBytes(event_abi_to_log_topic(item)): item["name"] for item in artifact.abi if item["type"] == "event"
        }

    @classmethod
    def _checked_artifact(cls, artifacts_dir: Path) -> Artifact:
        artifact = load_artifact(cls.CONTRACT_NAME, artifacts_dir)
        if abi_hash(artifact.abi) != cls.ABI_HASH:
            raise ArtifactError(
                f"gateway for {cls.CONTRACT_NAME} was generated from another ABI: run 'fedledger codegen'"
            )
        return artifact

    @classmethod
    def _deploy(
        cls: type[G], transactor: Transactor, args: Sequence[Any], sender: str, artifacts_dir: Path = ARTIFACTS_DIR
    ) -> tuple[G, TxResult]:
        artifact = cls._checked_artifact(artifacts_dir)
        transactor.errors.add_abi(cls.CONTRACT_NAME, artifact.abi)
        factory = transactor.w3.eth.contract(abi=artifact.abi, bytecode=artifact.bytecode)
        result = transactor.send(factory.constructor(*args), sender, cls.CONTRACT_NAME)
        address = result.receipt["contractAddress"]
        if address is None:
            raise ChainError(f"deploying {cls.CONTRACT_NAME} produced no contract address")
        return cls(transactor, address, artifacts_dir=artifacts_dir), result

    def _call(self, name: str, args: Sequence[Any], block: Any = "latest") -> Any:
        return self.transactor.call(self.contract.functions[name](*args), self.CONTRACT_NAME, block)

    def _transact(self, name: str, args: Sequence[Any], sender: str, *, value: int = 0) -> TxResult:
        return self.transactor.send(self.contract.functions[name](*args), sender, self.CONTRACT_NAME, value=value)

    def _events(
        self,
        name: str,
        convert: Callable[[dict[str, Any]], A],
        from_block: int,
        to_block: int | str,
        filters: dict[str, Any],
        window: int,
    ) -> list[EventRecord[A]]:
        """Read events ``name`` in windows of ``window`` blocks (never one unbounded eth_getLogs)."""
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        w3 = self.transactor.w3
        last = int(self.transactor.with_retries(lambda: w3.eth.block_number)) if to_block == "latest" else int(to_block)
        event = self.contract.events[name]()
        active = {k: v for k, v in filters.items() if v is not None}
        records: list[EventRecord[A]] = []
        start = from_block
        while start <= last:
            end = min(start + window - 1, last)
            logs = self.transactor.with_retries(
                lambda s=start, e=end: event.get_logs(from_block=s, to_block=e, argument_filters=active or None)
            )
            records.extend(self._record(name, log, convert) for log in logs)
            start = end + 1
        return records

    def decode_log(self, log: Any) -> EventRecord[Any] | None:
        """Decode a raw log emitted by this contract into its typed event record (None if not ours)."""
        if to_checksum_address(log["address"]) != self.address or not log["topics"]:
            return None
        name = self._event_topics.get(HexBytes(log["topics"][0]))
        if name is None:
            return None
        decoded = self.contract.events[name]().process_log(log)
        return self._record(name, decoded, getattr(self, self.EVENT_CONVERTERS[name]))

    def _decode_receipt(self, name: str, result: TxResult, convert: Callable[[dict[str, Any]], A]) -> list[A]:
        logs = self.contract.events[name]().process_receipt(result.receipt, errors=DISCARD)
        # process_receipt matches by event signature only: another contract's RoleGranted would pass too
        return [convert(dict(log["args"])) for log in logs if to_checksum_address(log["address"]) == self.address]

    @staticmethod
    def _record(name: str, log: Any, convert: Callable[[dict[str, Any]], A]) -> EventRecord[A]:
        return EventRecord(
            name=name,
            args=convert(dict(log["args"])),
            block_number=int(log["blockNumber"]),
            tx_hash=HexBytes(log["transactionHash"]).to_0x_hex(),
            log_index=int(log["logIndex"]),
            block_hash=HexBytes(log["blockHash"]).to_0x_hex(),
        )
