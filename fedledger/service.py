"""The platform as a service: what the REST API (and the CLI) call. Wires a stack, the event index, the relayer
(operator wallet) and the aggregator together. Functions are keyword-only and raise domain errors; api/ maps
them to HTTP.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eth_account import Account
from eth_account.messages import encode_typed_data
from eth_utils import to_checksum_address

from chain.indexer import EventIndexer
from fedledger.audit import AuditReport, Auditor
from fedledger.history import UnknownRound
from fedledger.roles import Aggregator, Operator, commitment_typed_data, fetch_params, registration_typed_data
from fedledger.stack import Stack
from storage import BlobRef
from trainer.rules import RuleConfig, Status
from trainer.serialization import deserialize

REGISTRATION_TTL_S = 3600


class InvalidSignature(ValueError):
    """A signature does not recover to the address it claims."""


class NotFound(LookupError):
    pass


def recover_typed(typed: dict[str, Any], signature: bytes) -> str:
    try:
        return str(Account.recover_message(encode_typed_data(full_message=typed), signature=signature))
    except Exception as exc:  # noqa: BLE001 - malformed signatures raise several kinds of errors
        raise InvalidSignature(f"unreadable signature: {exc}") from exc


@dataclass
class Platform:
    stack: Stack
    indexer: EventIndexer
    max_upload_bytes: int = 16 * 1024 * 1024

    @classmethod
    def create(cls, stack: Stack, index_path: Path, *, confirmations: int = 0, max_upload_bytes: int = 16 << 20) -> Platform:
        return cls(stack, EventIndexer(stack.deployment, index_path, confirmations=confirmations), max_upload_bytes)

    # ----------------------------------------------------------------- helpers

    @property
    def d(self):  # type: ignore[no-untyped-def]
        return self.stack.deployment

    @property
    def chain_id(self) -> int:
        return self.stack.transactor.chain_id

    def now(self) -> int:
        return int(self.stack.transactor.w3.eth.get_block("latest")["timestamp"])

    def synced(self) -> EventIndexer:
        self.indexer.sync()
        return self.indexer

    def health(self) -> dict[str, Any]:
        block = int(self.stack.transactor.w3.eth.block_number)
        return {
            "status": "ok",
            "stack": self.stack.name,
            "chain_id": self.chain_id,
            "block": block,
            "indexed_block": self.indexer.cursor,
            "blob_store": self.stack.store.location,
            "contracts": self.d.manifest.contracts,
        }

    # ------------------------------------------------------------ participants

    def registration_challenge(self, *, address: str) -> dict[str, Any]:
        deadline = self.now() + REGISTRATION_TTL_S
        typed = registration_typed_data(self.chain_id, self.d.registry.address, to_checksum_address(address), deadline)
        return {"typed_data": typed, "deadline": deadline}

    def register(self, *, address: str, deadline: int, signature: bytes) -> dict[str, Any]:
        address = to_checksum_address(address)
        typed = registration_typed_data(self.chain_id, self.d.registry.address, address, deadline)
        recovered = recover_typed(typed, signature)
        if recovered != address:
            raise InvalidSignature(f"signature recovers to {recovered}, not {address}")
        result = self.d.registry.register_for(address, deadline, signature, sender=self.stack.operator)
        return {"address": address, "tx_hash": result.tx_hash, "block": result.block_number}

    def participant(self, *, address: str) -> dict[str, Any]:
        address = to_checksum_address(address)
        info = self.d.registry.participant_of(address)
        index = self.synced()
        verdicts = {e["args"]["round_id"]: e for e in index.events("ContributionScored", account=address)}
        commits = index.events("UpdateCommitted", account=address)
        history = []
        for c in commits:
            rid = c["args"]["round_id"]
            v = verdicts.get(rid)
            history.append({
                "round": rid,
                "content_hash": c["args"]["content_hash"],
                "cid": c["args"]["cid"],
                "relayed": c["args"]["relayer"] != address,
                "status": None if v is None else Status(v["args"]["status"]).name,
                "score": None if v is None else v["args"]["score"] / 1e6,
                "reward": None if v is None else str(v["args"]["reward"]),
                "reputation_after": None if v is None else v["args"]["reputation"] / 1e6,
            })
        return {
            "address": address,
            "status": ["none", "active", "suspended"][info.status],
            "reputation": info.reputation / 1e6,
            "registered_at": info.registered_at,
            "balance": str(self.d.token.balance_of(address)),
            "rounds": history,
        }

    # ------------------------------------------------------------------ blobs

    def current_shapes(self) -> dict[str, tuple[int, ...]]:
        model = self.d.rounds.global_model()
        if model.model_hash == bytes(32):
            raise NotFound("no global model has been published yet")
        return {k: tuple(v.shape) for k, v in fetch_params(self.stack.store, model.cid, model.model_hash).items()}

    def upload_update(self, *, data: bytes) -> BlobRef:
        """Validate an update against the current global model's shapes (UpdateRejected if not), then store it."""
        if len(data) > self.max_upload_bytes:
            raise ValueError(f"upload of {len(data)} bytes exceeds the limit of {self.max_upload_bytes} bytes")
        deserialize(data, self.current_shapes())
        return self.stack.store.put(data)

    def blob(self, *, uri: str, content_hash: bytes) -> bytes:
        return self.stack.store.get(uri, content_hash)

    # ------------------------------------------------------------------ rounds

    def submit(self, *, round_id: int, participant: str, content_hash: bytes, cid: str, signature: bytes) -> dict[str, Any]:
        """Relay a participant's EIP-712 commitment after checking it here (the contract checks it again)."""
        participant = to_checksum_address(participant)
        rounds = self.d.rounds
        info = rounds.get_round(round_id)  # UnknownRound reverts as RoundsUnknownRound -> 404
        if info.state == 1 and self.now() + 1 > info.deadline:
            raise DeadlinePassed(round_id, info.deadline)
        typed = commitment_typed_data(self.chain_id, rounds.address, round_id, content_hash, cid)
        recovered = recover_typed(typed, signature)
        if recovered != participant:
            raise InvalidSignature(f"commitment signature recovers to {recovered}, not {participant}")
        try:
            self.stack.store.get(cid, content_hash)
        except Exception as exc:
            raise NotFound(f"upload the blob first (POST /blobs): {exc}") from exc
        result = rounds.commit_update_signed(participant, round_id, content_hash, cid, signature, sender=self.stack.operator)
        return {"round": round_id, "participant": participant, "tx_hash": result.tx_hash, "block": result.block_number}

    def rounds(self) -> list[dict[str, Any]]:
        index = self.synced()
        finalized = {e["args"]["round_id"]: e for e in index.events("RoundFinalized")}
        out = []
        for e in index.events("RoundOpened"):
            rid = e["args"]["round_id"]
            fin = finalized.get(rid)
            out.append({
                "round": rid,
                "base_model_hash": e["args"]["base_model_hash"],
                "rule_hash": e["args"]["rule_hash"],
                "rule_cid": e["args"]["rule_cid"],
                "deadline": e["args"]["deadline"],
                "reward_budget": str(e["args"]["reward_budget"]),
                "submissions": len(index.events("UpdateCommitted", round_id=rid)),
                "finalized": fin is not None,
                "new_model_hash": None if fin is None else fin["args"]["new_model_hash"],
                "accepted": None if fin is None else fin["args"]["accepted"],
                "minted": None if fin is None else str(fin["args"]["minted"]),
            })
        return out

    def round(self, *, round_id: int) -> dict[str, Any]:
        """One round from the event index (not the chain): models, rule, submissions and verdicts."""
        index = self.synced()
        opened = index.events("RoundOpened", round_id=round_id)
        if not opened:
            raise UnknownRound(round_id, len(index.events("RoundOpened")))
        o = opened[0]["args"]
        rule = RuleConfig.from_bytes(self.stack.store.get(o["rule_cid"], bytes.fromhex(o["rule_hash"][2:])))
        finalized = index.events("RoundFinalized", round_id=round_id)
        closed = index.events("RoundClosed", round_id=round_id)
        scored = {e["args"]["participant"]: e["args"] for e in index.events("ContributionScored", round_id=round_id)}
        base_cid = next((m["cid"] for m in self.lineage() if m["model_hash"] == o["base_model_hash"]), None)
        f = finalized[0]["args"] if finalized else None
        return {
            "round": round_id,
            "state": "finalized" if f else ("closed" if closed else "open"),
            "deadline": o["deadline"],
            "base_model": {"hash": o["base_model_hash"], "cid": base_cid},
            "new_model": {"hash": f["new_model_hash"], "cid": f["new_model_cid"]} if f else None,
            "rule": {"hash": o["rule_hash"], "cid": o["rule_cid"], **rule.to_document()},
            "minted": str(f["minted"]) if f else "0",
            "submissions": [
                {
                    "participant": c["participant"],
                    "content_hash": c["content_hash"],
                    "cid": c["cid"],
                    "relayer": c["relayer"],
                    "status": Status(scored[c["participant"]]["status"]).name if c["participant"] in scored else None,
                    "score": scored[c["participant"]]["score"] / 1e6 if c["participant"] in scored else None,
                    "reward": str(scored[c["participant"]]["reward"]) if c["participant"] in scored else None,
                }
                for c in sorted((e["args"] for e in index.events("UpdateCommitted", round_id=round_id)),
                                key=lambda a: a["participant"].lower())
            ],
        }

    def lineage(self) -> list[dict[str, Any]]:
        index = self.synced()
        out = [{"round": 0, "model_hash": e["args"]["model_hash"], "cid": e["args"]["cid"], "base_model_hash": None}
               for e in index.events("GenesisModelPublished")]
        for e in index.events("RoundFinalized"):
            out.append({"round": e["args"]["round_id"], "model_hash": e["args"]["new_model_hash"],
                        "cid": e["args"]["new_model_cid"], "base_model_hash": e["args"]["base_model_hash"]})
        return out

    def current_model(self) -> dict[str, Any]:
        model = self.d.rounds.global_model()
        if model.model_hash == bytes(32):
            raise NotFound("no global model has been published yet")
        return {"hash": "0x" + model.model_hash.hex(), "cid": model.cid, "rounds": self.d.rounds.round_count()}

    def audit(self, *, round_id: int | None = None) -> AuditReport:
        count = self.d.rounds.round_count()
        if round_id is not None and not 1 <= round_id <= count:
            raise UnknownRound(round_id, count)
        return Auditor(self.d, self.stack.store).verify(round_id)

    # --------------------------------------------------------------- operator

    def publish_genesis(self, *, dataset: str, seed: int) -> dict[str, Any]:
        from trainer.data import load_dataset
        from trainer.model import ModelSpec, init_params

        data = load_dataset(dataset, seed=seed)
        spec = ModelSpec(data.num_features, data.num_classes)
        ref, result = Operator(self.d, self.stack.store, self.stack.operator).publish_genesis(init_params(spec, seed))
        return {"hash": "0x" + ref.content_hash.hex(), "cid": ref.uri, "tx_hash": result.tx_hash}

    def open_round(self, *, duration_s: int, rule: RuleConfig) -> dict[str, Any]:
        if duration_s < 1:
            raise ValueError(f"duration_s must be >= 1, got {duration_s}")
        round_id, result = Operator(self.d, self.stack.store, self.stack.operator).open_round(rule, duration_s=duration_s)
        return {"round": round_id, "tx_hash": result.tx_hash}

    def close_round(self, *, round_id: int) -> dict[str, Any]:
        result = Operator(self.d, self.stack.store, self.stack.operator).close_round(round_id)
        return {"round": round_id, "tx_hash": result.tx_hash}

    def finalize_round(self, *, round_id: int) -> dict[str, Any]:
        outcome, ref, result = Aggregator(self.d, self.stack.store, self.stack.aggregator).finalize(round_id)
        return {
            "round": round_id,
            "new_model": {"hash": "0x" + ref.content_hash.hex(), "cid": ref.uri},
            "accepted": outcome.accepted,
            "verdicts": [{"participant": v.participant, "status": v.status.name, "score": v.score / 1e6,
                          "detail": v.detail} for v in outcome.verdicts],
            "tx_hash": result.tx_hash,
        }

    def suspend(self, *, address: str, reason: str) -> dict[str, Any]:
        code = reason.encode()[:32].ljust(32, b"\0")
        result = self.d.registry.suspend(to_checksum_address(address), code, sender=self.stack.operator)
        return {"address": to_checksum_address(address), "tx_hash": result.tx_hash}

    def finalize_due(self) -> list[int]:
        """The aggregator service's step: finalize the latest round if its deadline passed or it was closed."""
        count = self.d.rounds.round_count()
        if count == 0:
            return []
        info = self.d.rounds.get_round(count)
        if info.state == 2 or (info.state == 1 and self.now() > info.deadline):
            self.finalize_round(round_id=count)
            return [count]
        return []


class DeadlinePassed(Exception):
    def __init__(self, round_id: int, deadline: int) -> None:
        super().__init__(f"round {round_id} stopped taking submissions at {deadline} (unix time)")
        self.round_id = round_id
        self.deadline = deadline


def wait_loop(platform: Platform, *, interval_s: float, iterations: int | None = None) -> None:
    """Run the aggregator service: finalize due rounds every ``interval_s`` seconds."""
    n = 0
    while iterations is None or n < iterations:
        platform.finalize_due()
        n += 1
        if iterations is None or n < iterations:
            time.sleep(interval_s)
