"""The fedledger records in Flower messages: a stranger's reply is a typed ProtocolError, never a crash."""

from __future__ import annotations

import pytest
from flwr.app import ConfigRecord, RecordDict

from fedledger.flower.protocol import TICKET_KEY, UPDATE_KEY, ProtocolError, RoundTicket, SignedUpdate

ADDRESS = "0x7BfcB50075829dC0C0b44b46244CC675E69A3ee2"


def good_update() -> SignedUpdate:
    return SignedUpdate(ADDRESS, b"blob", bytes(32), "fedblob:sha256:" + "0" * 64, bytes(65), bytes(65), 10, 3)


def test_a_signed_update_survives_the_record_round_trip() -> None:
    u = good_update()
    assert SignedUpdate.from_content(RecordDict({UPDATE_KEY: u.to_record()})) == u


def test_a_round_ticket_survives_the_record_round_trip_and_plain_instructions_have_none() -> None:
    t = RoundTicket(3, 31337, ADDRESS, ADDRESS, bytes(range(32)), "ipfs-raw", 1_700_000_000)
    assert RoundTicket.from_content(RecordDict({TICKET_KEY: t.to_record()})) == t
    assert RoundTicket.from_content(RecordDict({"config": ConfigRecord({"server-round": 1})})) is None


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"participant": "0x1234"}, "not an address"),
        ({"content-hash": b"short"}, "must be 32 bytes"),
        ({"signature": "a string"}, "must be bytes"),
        ({"num-examples": -1}, "non-negative integer"),
        ({"uri": ""}, "non-empty string"),
    ],
)
def test_malformed_fields_are_protocol_errors(change: dict[str, object], message: str) -> None:
    rec = good_update().to_record()
    for k, v in change.items():
        rec[k] = v
    with pytest.raises(ProtocolError, match=message):
        SignedUpdate.from_content(RecordDict({UPDATE_KEY: rec}))


def test_a_reply_without_the_record_or_with_a_missing_field_is_a_protocol_error() -> None:
    with pytest.raises(ProtocolError, match="carries no"):
        SignedUpdate.from_content(RecordDict({"config": ConfigRecord({"x": 1})}))
    rec = good_update().to_record()
    del rec["signature"]
    with pytest.raises(ProtocolError, match="missing 'signature'"):
        SignedUpdate.from_content(RecordDict({UPDATE_KEY: rec}))


def test_an_unknown_uri_scheme_in_a_ticket_is_refused() -> None:
    t = RoundTicket(3, 31337, ADDRESS, ADDRESS, bytes(32), "s3", 1)
    with pytest.raises(ProtocolError, match="uri-scheme"):
        RoundTicket.from_content(RecordDict({TICKET_KEY: t.to_record()}))
