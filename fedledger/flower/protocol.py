"""What fedledger adds to Flower's messages: a round ticket (server -> SuperNode) and a signed update (back).

Both ride in a ``ConfigRecord`` beside Flower's own records, so an app's other records are untouched:

    train instruction   "arrays": the global model (ArrayRecord)      "fedledger-round": RoundTicket
    train reply         "metrics": {"num-examples": n}                "fedledger-update": SignedUpdate

The update travels as its canonical safetensors bytes (trainer.serialization), never re-encoded on the way: the
server stores exactly the bytes the participant hashed and signed. Parsing never raises on a stranger's reply
beyond ``ProtocolError`` (a typed, recorded failure).
"""

from __future__ import annotations

from dataclasses import dataclass

from eth_utils import is_address, to_checksum_address
from flwr.app import ConfigRecord, RecordDict

from storage.cids import URI_SCHEMES

TICKET_KEY = "fedledger-round"
UPDATE_KEY = "fedledger-update"
MAX_UPDATE_BYTES = 64 * 1024 * 1024  # the API's upload limit is of the same order; a bigger reply is refused


class ProtocolError(ValueError):
    """A fedledger record is missing or malformed (a reply from a stranger, or a version mismatch)."""


@dataclass(frozen=True)
class RoundTicket:
    """Everything a participant needs to sign for round ``round_id`` without a connection to the chain."""

    round_id: int
    chain_id: int
    rounds_address: str  # FederatedRounds: the EIP-712 verifying contract of commitments
    registry_address: str  # ParticipantRegistry: the verifying contract of registrations
    base_hash: bytes  # sha256 of the global model the round starts from (committed at open)
    uri_scheme: str  # how the server's store will address the update bytes (storage.cids)
    registration_deadline: int  # unix time; a Registration signature for it lets the server register the wallet

    def to_record(self) -> ConfigRecord:
        return ConfigRecord({
            "round-id": self.round_id,
            "chain-id": self.chain_id,
            "rounds-address": self.rounds_address,
            "registry-address": self.registry_address,
            "base-hash": self.base_hash,
            "uri-scheme": self.uri_scheme,
            "registration-deadline": self.registration_deadline,
        })

    @classmethod
    def from_content(cls, content: RecordDict) -> RoundTicket | None:
        """The ticket of a train instruction, or None for a plain Flower instruction (no fedledger record)."""
        if TICKET_KEY not in content.config_records:
            return None
        rec = content.config_records[TICKET_KEY]
        ticket = cls(
            round_id=_int(rec, "round-id"),
            chain_id=_int(rec, "chain-id"),
            rounds_address=_address(rec, "rounds-address"),
            registry_address=_address(rec, "registry-address"),
            base_hash=_bytes(rec, "base-hash", 32),
            uri_scheme=_str(rec, "uri-scheme"),
            registration_deadline=_int(rec, "registration-deadline"),
        )
        if ticket.uri_scheme not in URI_SCHEMES:
            raise ProtocolError(f"unknown uri-scheme {ticket.uri_scheme!r}: this fedledger knows {URI_SCHEMES}")
        return ticket


@dataclass(frozen=True)
class SignedUpdate:
    """One participant's update for one round with its EIP-712 Commitment and Registration signatures."""

    participant: str
    update: bytes  # canonical safetensors of the update (delta), as hashed and signed
    content_hash: bytes
    uri: str
    signature: bytes  # EIP-712 Commitment(roundId, contentHash, cid) by ``participant``
    registration_signature: bytes  # EIP-712 Registration(account, deadline) by ``participant``
    registration_deadline: int
    num_examples: int

    def to_record(self) -> ConfigRecord:
        return ConfigRecord({
            "participant": self.participant,
            "update": self.update,
            "content-hash": self.content_hash,
            "uri": self.uri,
            "signature": self.signature,
            "registration-signature": self.registration_signature,
            "registration-deadline": self.registration_deadline,
            "num-examples": self.num_examples,
        })

    @classmethod
    def from_content(cls, content: RecordDict) -> SignedUpdate:
        if UPDATE_KEY not in content.config_records:
            raise ProtocolError(f"the reply carries no {UPDATE_KEY!r} record (is the ClientApp fedledger's?)")
        rec = content.config_records[UPDATE_KEY]
        update = _bytes(rec, "update")
        if len(update) > MAX_UPDATE_BYTES:
            raise ProtocolError(f"update of {len(update)} bytes exceeds the {MAX_UPDATE_BYTES}-byte limit")
        return cls(
            participant=_address(rec, "participant"),
            update=update,
            content_hash=_bytes(rec, "content-hash", 32),
            uri=_str(rec, "uri"),
            signature=_bytes(rec, "signature", 65),
            registration_signature=_bytes(rec, "registration-signature", 65),
            registration_deadline=_int(rec, "registration-deadline"),
            num_examples=_int(rec, "num-examples"),
        )


def _get(rec: ConfigRecord, key: str) -> object:
    if key not in rec:
        raise ProtocolError(f"missing {key!r}")
    return rec[key]


def _int(rec: ConfigRecord, key: str) -> int:
    value = _get(rec, key)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ProtocolError(f"{key!r} must be a non-negative integer, got {value!r}")
    return value


def _str(rec: ConfigRecord, key: str) -> str:
    value = _get(rec, key)
    if not isinstance(value, str) or not value or len(value) > 256:
        raise ProtocolError(f"{key!r} must be a non-empty string of at most 256 characters")
    return value


def _bytes(rec: ConfigRecord, key: str, length: int | None = None) -> bytes:
    value = _get(rec, key)
    if not isinstance(value, bytes):
        raise ProtocolError(f"{key!r} must be bytes, got {type(value).__name__}")
    if length is not None and len(value) != length:
        raise ProtocolError(f"{key!r} must be {length} bytes, got {len(value)}")
    return value


def _address(rec: ConfigRecord, key: str) -> str:
    value = _str(rec, key)
    if not is_address(value):
        raise ProtocolError(f"{key!r} is not an address: {value!r}")
    return to_checksum_address(value)
