"""The DP path through the REST API on the embedded stack: a DP update's blob declares its mechanism, the relay
records its epsilon on the PrivacyLedger with the commitment, GET /participants/{address}/privacy shows the ledger,
and the operator's budget refuses the update that would exceed it with a 409 carrying the numbers."""

from __future__ import annotations

import torch
from fastapi.testclient import TestClient
from hexbytes import HexBytes

from chain.accounts import derive_devnet_account
from fedledger.roles import commitment_typed_data
from fedledger.service import Platform
from tests.api.test_api_flow import OCTET, OPERATOR, current_model, register, sign
from trainer.data import load_dataset
from trainer.local import LocalConfig
from trainer.model import ModelSpec
from trainer.privacy import PrivacyConfig, train_local_dp
from trainer.serialization import serialize


def dp_blob(base: dict[str, torch.Tensor], seed: int, epsilon: float = 4.0) -> tuple[bytes, object]:
    ds = load_dataset("digits", seed=0)
    spec = ModelSpec(ds.num_features, ds.num_classes)
    x, y = ds.x_train[seed * 80 : seed * 80 + 80], ds.y_train[seed * 80 : seed * 80 + 80]
    update, mech = train_local_dp(spec, base, x, y, LocalConfig(), PrivacyConfig(target_epsilon=epsilon), seed=seed)
    return serialize(update, mech.to_metadata()), mech


def submit(client: TestClient, platform: Platform, account, round_id: int, blob: bytes):
    up = client.post("/blobs", content=blob, headers=OCTET)
    assert up.status_code == 201, up.text
    ref = up.json()
    typed = commitment_typed_data(platform.chain_id, platform.d.rounds.address, round_id,
                                  bytes(HexBytes(ref["content_hash"])), ref["cid"])
    body = {"participant": account.address, "content_hash": ref["content_hash"], "cid": ref["cid"],
            "signature": sign(account, typed)}
    return client.post(f"/rounds/{round_id}/submissions", json=body)


def test_dp_submissions_the_privacy_ledger_and_the_budget_over_http(client: TestClient, platform: Platform) -> None:
    people = [derive_devnet_account(91, f"dp/{i}") for i in range(3)]
    assert client.post("/operator/genesis", json={"dataset": "digits"}, headers=OPERATOR).status_code == 201
    for p in people:
        assert register(client, p).status_code == 201
    assert client.post("/operator/privacy/budget", json={"epsilon": 6.0}).status_code == 401
    set_budget = client.post("/operator/privacy/budget", json={"epsilon": 6.0}, headers=OPERATOR)
    assert set_budget.status_code == 200 and set_budget.json()["budget_micro"] == 6_000_000
    own = client.post("/operator/privacy/budget", json={"epsilon": 20.0, "participant": people[2].address},
                      headers=OPERATOR)
    assert own.status_code == 200

    round_id = client.post("/operator/rounds", json={"duration_s": 600}, headers=OPERATOR).json()["round"]
    base = current_model(client)
    mechs = {}
    for i, p in enumerate(people):
        blob, mechs[p.address] = dp_blob(base, seed=i)
        r = submit(client, platform, p, round_id, blob)
        assert r.status_code == 201, r.text
        assert r.json()["privacy"]["epsilon_micro"] == mechs[p.address].epsilon_micro
    ledger = client.get(f"/participants/{people[0].address}/privacy")
    assert ledger.status_code == 200
    led = ledger.json()
    m = mechs[people[0].address]
    assert [(e["round_id"], e["epsilon_micro"], e["delta_atto"]) for e in led["rounds"]] == [
        (round_id, m.epsilon_micro, m.delta_atto)]
    assert led["spent_micro"] == m.epsilon_micro and led["budget_micro"] == 6_000_000
    assert led["remaining_micro"] == 6_000_000 - m.epsilon_micro
    assert client.get(f"/participants/{people[2].address}/privacy").json()["budget_epsilon"] == 20.0
    nobody = client.get(f"/participants/{derive_devnet_account(91, 'nobody').address}/privacy").json()
    assert nobody["rounds"] == [] and nobody["spent_micro"] == 0

    assert client.post(f"/operator/rounds/{round_id}/close", headers=OPERATOR).status_code == 200
    assert client.post(f"/operator/rounds/{round_id}/finalize", headers=OPERATOR).status_code == 200
    audit = client.get(f"/audit/rounds/{round_id}").json()
    assert audit["verified"] is True, audit
    assert sorted(audit["privacy"]) == sorted(p.address for p in people)

    round2 = client.post("/operator/rounds", json={"duration_s": 600}, headers=OPERATOR).json()["round"]
    base = current_model(client)
    blob, mech2 = dp_blob(base, seed=0)
    refused = submit(client, platform, people[0], round2, blob)
    assert refused.status_code == 409, refused.text
    body = refused.json()
    assert body["error"] == "PrivacyBudgetExceeded"
    assert (body["spent_micro"], body["requested_micro"], body["budget_micro"]) == (
        m.epsilon_micro, mech2.epsilon_micro, 6_000_000)
    assert "privacy budget exceeded" in body["detail"]
    allowed = submit(client, platform, people[2], round2, dp_blob(base, seed=2)[0])  # its own budget of 20
    assert allowed.status_code == 201, allowed.text
    assert client.get(f"/participants/{people[2].address}/privacy").json()["rounds"][-1]["round_id"] == round2


def test_a_malformed_mechanism_header_is_a_422(client: TestClient) -> None:
    assert client.post("/operator/genesis", json={"dataset": "digits"}, headers=OPERATOR).status_code == 201
    base = current_model(client)
    zero = {k: torch.zeros_like(v) for k, v in base.items()}
    bad = client.post("/blobs", content=serialize(zero, {"fedledger.dp": '{"accountant": "rdp"}'}), headers=OCTET)
    assert bad.status_code == 422 and bad.json()["error"] == "BadPrivacyMechanism"
    assert "malformed" in bad.json()["detail"]
