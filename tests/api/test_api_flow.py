"""The REST API on the embedded stack: register -> submit -> finalize -> audit, and bad input as 4xx."""

from __future__ import annotations

import io

import pytest
import torch
from eth_account import Account
from eth_account.messages import encode_typed_data
from fastapi.testclient import TestClient
from hexbytes import HexBytes

from chain.accounts import derive_devnet_account
from chain.embedded import advance_time
from fedledger.roles import commitment_typed_data
from fedledger.service import Platform
from trainer.incentives import MIN_STAKE
from trainer.serialization import deserialize, serialize


OCTET = {"content-type": "application/octet-stream"}
OPERATOR = {"Authorization": "Bearer test-operator-token"}  # the token tests/api/conftest.py configures


def sign(account: object, typed: dict) -> str:
    return HexBytes(account.sign_message(encode_typed_data(full_message=typed)).signature).to_0x_hex()  # type: ignore[attr-defined]


def register(client: TestClient, account: object) -> dict:
    ch = client.get("/participants/challenge", params={"address": account.address}).json()  # type: ignore[attr-defined]
    body = {"address": account.address, "deadline": ch["deadline"], "signature": sign(account, ch["typed_data"])}  # type: ignore[attr-defined]
    return client.post("/participants/register", json=body)  # type: ignore[return-value]


def current_model(client: TestClient) -> dict[str, torch.Tensor]:
    model = client.get("/models/current").json()
    blob = client.get(f"/blobs/{model['cid']}", params={"content_hash": model["hash"]})
    assert blob.status_code == 200
    return deserialize(blob.content)


def upload_and_commit(client: TestClient, platform: Platform, account: object, round_id: int, scale: float) -> dict:
    base = current_model(client)
    gen = torch.Generator().manual_seed(round(scale * 1000))  # distinct updates: near-copies would share one score
    update = {k: torch.full_like(v, 0.01) + 0.01 * torch.randn(v.shape, generator=gen) for k, v in base.items()}
    up = client.post("/blobs", content=serialize(update), headers=OCTET)
    assert up.status_code == 201, up.text
    ref = up.json()
    typed = commitment_typed_data(platform.chain_id, platform.d.rounds.address, round_id,
                                  bytes(HexBytes(ref["content_hash"])), ref["cid"])
    body = {"participant": account.address, "content_hash": ref["content_hash"], "cid": ref["cid"],  # type: ignore[attr-defined]
            "signature": sign(account, typed)}
    return client.post(f"/rounds/{round_id}/submissions", json=body)  # type: ignore[return-value]


@pytest.fixture
def people() -> list:
    return [derive_devnet_account(77, f"api/{i}") for i in range(4)]


def test_register_submit_finalize_audit_over_http(client: TestClient, platform: Platform, people: list) -> None:
    assert client.get("/health").json()["status"] == "ok"
    assert client.post("/operator/genesis", json={"dataset": "digits"}).status_code == 401
    assert client.post("/operator/genesis", json={"dataset": "digits"}, headers=OPERATOR).status_code == 201
    operator_funds = platform.stack.transactor.w3.eth.get_balance(platform.stack.operator)
    for p in people:
        registered = register(client, p)
        assert registered.status_code == 201
        assert registered.json()["stake"] == str(MIN_STAKE)
        assert registered.json()["stake_paid_by"] == platform.stack.operator
    assert operator_funds - platform.stack.transactor.w3.eth.get_balance(platform.stack.operator) > 4 * MIN_STAKE
    joined = client.get(f"/participants/{people[0].address}").json()
    assert joined["status"] == "active"
    assert joined["stake"] == {"amount": str(MIN_STAKE), "slashed": "0", "min_stake": str(MIN_STAKE),
                               "can_commit": True, "withdrawal": "none", "withdrawal_requested_at": None,
                               "withdrawal_unlocks_at": None, "last_commit_round": 0}
    again = register(client, people[0])
    assert again.status_code == 409 and again.json()["error"] == "RegistryAlreadyRegistered"

    opened = client.post("/operator/rounds", json={"duration_s": 600}, headers=OPERATOR)
    assert opened.status_code == 201
    round_id = opened.json()["round"]
    for i, p in enumerate(people[:3]):
        r = upload_and_commit(client, platform, p, round_id, scale=1.0 + 0.1 * i)
        assert r.status_code == 201, r.text
    # one participant commits by its own transaction instead of through the relay
    own = people[3]
    platform.stack.transactor.add_account(own)
    from chain.accounts import fund_from_node

    fund_from_node(platform.stack.transactor.w3, [own.address])
    base = current_model(client)
    up = client.post("/blobs", content=serialize({k: -4.0 * torch.ones_like(v) for k, v in base.items()}), headers=OCTET).json()
    platform.d.rounds.commit_update(round_id, bytes(HexBytes(up["content_hash"])), up["cid"], sender=own.address)

    dup = upload_and_commit(client, platform, people[0], round_id, scale=1.0)
    assert dup.status_code == 409 and dup.json()["error"] == "RoundsDuplicateCommitment"

    assert client.post(f"/operator/rounds/{round_id}/close", headers=OPERATOR).status_code == 200
    fin = client.post(f"/operator/rounds/{round_id}/finalize", headers=OPERATOR)
    assert fin.status_code == 200, fin.text
    statuses = {v["participant"]: v["status"] for v in fin.json()["verdicts"]}
    assert [v["group_size"] for v in fin.json()["verdicts"]] == [1] * 4  # four distinct updates: no shared score
    assert statuses[own.address] != "ACCEPTED" and sum(s == "ACCEPTED" for s in statuses.values()) == 3

    audit = client.get(f"/audit/rounds/{round_id}").json()
    assert audit["verified"] is True
    assert [c["name"] for c in audit["rounds"][0]["checks"]] == [
        "rule", "lineage", "base", "blobs", "scores", "decisions", "aggregate", "rewards", "slashes", "privacy"]
    rounds = client.get("/rounds").json()
    assert rounds[0]["finalized"] and rounds[0]["submissions"] == 4 and rounds[0]["accepted"] == 3
    detail = client.get(f"/rounds/{round_id}").json()
    assert {s["participant"] for s in detail["submissions"]} == {p.address for p in people}
    assert detail["rule"]["aggregator"] == "median-verified-mean"
    lineage = client.get("/models/lineage").json()
    assert lineage[1]["base_model_hash"] == lineage[0]["model_hash"]
    me = client.get(f"/participants/{people[0].address}").json()
    assert me["rounds"][0]["status"] == "ACCEPTED" and me["rounds"][0]["relayed"] is True and int(me["balance"]) > 0
    attacker = client.get(f"/participants/{own.address}").json()
    assert attacker["rounds"][0]["relayed"] is False and attacker["balance"] == "0"
    assert attacker["reputation"] < me["reputation"]
    # the rejected poisoner lost SLASH_PPM of its stake (it cannot commit until topped up); the others nothing
    assert attacker["rounds"][0]["slashed"] == str(MIN_STAKE // 10) and me["rounds"][0]["slashed"] is None
    assert attacker["stake"]["amount"] == str(MIN_STAKE - MIN_STAKE // 10)
    assert attacker["stake"]["slashed"] == str(MIN_STAKE // 10) and attacker["stake"]["can_commit"] is False
    assert me["stake"]["amount"] == str(MIN_STAKE) and me["stake"]["last_commit_round"] == round_id


def test_stake_gates_answer_4xx_or_503_with_the_reason(client: TestClient, platform: Platform, people: list) -> None:
    """A withdrawing identity's relayed commitment is refused (403, the registry's error with its values); once
    the operator cannot pay another sponsored stake, registration answers 503 and says how to register instead."""
    client.post("/operator/genesis", json={"dataset": "digits"}, headers=OPERATOR)
    leaving = people[0]
    assert register(client, leaving).status_code == 201
    t = platform.stack.transactor
    t.add_account(leaving)
    from chain.accounts import fund_from_node

    fund_from_node(t.w3, [leaving.address])
    platform.d.registry.request_withdrawal(sender=leaving.address)
    round_id = client.post("/operator/rounds", json={"duration_s": 600}, headers=OPERATOR).json()["round"]
    refused = upload_and_commit(client, platform, leaving, round_id, scale=1.0)
    assert refused.status_code == 403 and refused.json()["error"] == "RegistryWithdrawalPending"
    assert refused.json()["args"]["account"] == leaving.address
    view = client.get(f"/participants/{leaving.address}").json()["stake"]
    assert (view["withdrawal"], view["can_commit"], view["amount"]) == ("pending", False, str(MIN_STAKE))
    assert view["withdrawal_unlocks_at"] == view["withdrawal_requested_at"] + platform.d.registry.withdrawal_delay()

    operator = platform.stack.operator
    t.send_value(operator, people[3].address, int(t.w3.eth.get_balance(operator)) - MIN_STAKE // 2)
    exhausted = register(client, people[1])
    assert exhausted.status_code == 503 and exhausted.json()["error"] == "SponsorFundsExhausted"
    assert "register with your own transaction" in exhausted.json()["detail"]
    assert platform.d.registry.status_of(people[1].address) == 0


def test_bad_input_gets_a_clear_4xx(client: TestClient, platform: Platform, people: list) -> None:
    client.post("/operator/genesis", json={"dataset": "digits"}, headers=OPERATOR)
    register(client, people[0])
    round_id = client.post("/operator/rounds", json={"duration_s": 600}, headers=OPERATOR).json()["round"]
    base = current_model(client)

    bad_addr = client.get("/participants/0x1234")
    assert bad_addr.status_code == 422 and "not an Ethereum address" in bad_addr.text
    bad_rule = client.post("/operator/rounds", json={"max_norm_ratio": 5.0}, headers=OPERATOR)
    assert bad_rule.status_code == 400 and "reject_norm_ratio (4.0) must be >= max_norm_ratio (5.0)" in bad_rule.text
    v2_with_gate = client.post("/operator/rounds", json={"rule_version": 2, "reference_gate_ppm": 1}, headers=OPERATOR)
    assert v2_with_gate.status_code == 400 and "rule version 2 has no reference_gate_ppm" in v2_with_gate.text
    assert client.post("/operator/rounds", json={"rule_version": 9}, headers=OPERATOR).status_code == 422
    v4_with_history = client.post("/operator/rounds", json={"rule_version": 4, "redundancy_history_rounds": 1},
                                  headers=OPERATOR)
    assert v4_with_history.status_code == 400
    assert "rule version 4 has no redundancy_history_rounds: those are version 5 parameters" in v4_with_history.text
    v3_with_redundancy = client.post("/operator/rounds", json={"rule_version": 3, "redundancy_ratio": 2.0},
                                     headers=OPERATOR)
    assert v3_with_redundancy.status_code == 400
    assert "rule version 3 has no redundancy_ratio: those are version 4 parameters" in v3_with_redundancy.text
    assert client.get("/rounds/99").status_code == 404
    assert client.get("/audit/rounds/99").status_code == 404
    wrong_type = client.post("/blobs", content=b"x", headers={"content-type": "text/plain"})
    assert wrong_type.status_code == 415
    junk = client.post("/blobs", content=b"not safetensors at all", headers=OCTET)
    assert junk.status_code == 422 and junk.json()["error"] == "BAD_FORMAT"
    shape = client.post("/blobs", content=serialize({k: torch.zeros(3) for k in base}), headers=OCTET)
    assert shape.status_code == 422 and shape.json()["error"] == "WRONG_SHAPE"
    nan = {k: torch.zeros_like(v) for k, v in base.items()}
    next(iter(nan.values())).view(-1)[0] = float("nan")
    assert client.post("/blobs", content=serialize(nan), headers=OCTET).json()["error"] == "NON_FINITE"
    big = client.post("/blobs", content=b"\0" * 300_000, headers=OCTET)
    assert big.status_code == 413
    tampered = client.post("/blobs", content=serialize(base), headers=OCTET).json()
    buf = io.BytesIO()
    assert client.get(f"/blobs/{tampered['cid']}", params={"content_hash": "0x" + "00" * 32}).status_code == 422
    del buf

    # a signature by someone else, a replayed one from another round, an unknown round, an unregistered wallet
    stranger = Account.create()
    r = upload_and_commit(client, platform, stranger, round_id, 1.0)
    assert r.status_code == 403 and r.json()["error"] == "RoundsParticipantNotActive"
    ref = tampered
    typed = commitment_typed_data(platform.chain_id, platform.d.rounds.address, round_id + 1,
                                  bytes(HexBytes(ref["content_hash"])), ref["cid"])
    body = {"participant": people[0].address, "content_hash": ref["content_hash"], "cid": ref["cid"],
            "signature": sign(people[0], typed)}
    wrong_round = client.post(f"/rounds/{round_id}/submissions", json=body)
    assert wrong_round.status_code == 400 and wrong_round.json()["error"] == "InvalidSignature"
    assert client.post(f"/rounds/{round_id + 5}/submissions", json=body).status_code == 404
    bad_challenge = client.get("/participants/challenge", params={"address": people[1].address}).json()
    forged = {"address": people[1].address, "deadline": bad_challenge["deadline"],
              "signature": sign(people[2], bad_challenge["typed_data"])}
    assert client.post("/participants/register", json=forged).status_code == 400

    # after the deadline
    advance_time(platform.stack.transactor.w3, 601)
    late = upload_and_commit(client, platform, people[0], round_id, 1.0)
    assert late.status_code == 409 and late.json()["error"] == "DeadlinePassed"
    # operator credential
    assert client.post(f"/operator/rounds/{round_id}/close", headers={"Authorization": "Bearer wrong"}).status_code == 401
