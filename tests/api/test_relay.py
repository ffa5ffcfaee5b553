"""The API as the batching relay (FEDLEDGER_RELAY_MODE=batched, FEDLEDGER_SETTLEMENT=merkle) on the embedded stack:
signed commitments queue durably (202 + receipt), flush as one root per batch, receipts prove inclusion against the
contract, a participant left out commits directly, the round settles with one results root, claims mint exactly
the listed reward once, the audit verifies; and every bad input is a clear 4xx.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from eth_account import Account
from eth_account.messages import encode_typed_data
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hexbytes import HexBytes
from pydantic import ValidationError

from api import errors
from api.app import create_app
from api.settings import Settings
from chain.accounts import derive_devnet_account, fund_from_node
from chain.embedded import advance_time
from chain.errors import ContractRevert
from chain.gateways.federated_rounds import Claim
from chain.lists import SignedCommitment
from chain.merkle import COMMITMENT_LEAF_TYPES, verify_proof
from fedledger import roles_cli
from fedledger.cli import main
from fedledger.roles import Operator, commitment_typed_data
from fedledger.service import Platform
from fedledger.stack import embedded_stack
from trainer.serialization import deserialize, serialize

OCTET = {"content-type": "application/octet-stream"}
TOKEN = "test-operator-token"
OPERATOR = {"Authorization": f"Bearer {TOKEN}"}
BATCH_SIZE = 3
MARGIN_S = 30
SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141


# ------------------------------------------------------------------------------------------------------ helpers


def sign(account: Any, typed: dict[str, Any]) -> str:
    return HexBytes(account.sign_message(encode_typed_data(full_message=typed)).signature).to_0x_hex()


def register(client: TestClient, account: Any) -> None:
    ch = client.get("/participants/challenge", params={"address": account.address}).json()
    body = {"address": account.address, "deadline": ch["deadline"], "signature": sign(account, ch["typed_data"])}
    assert client.post("/participants/register", json=body).status_code == 201


def upload(client: TestClient, seed: int) -> dict[str, Any]:
    model = client.get("/models/current").json()
    base = deserialize(client.get(f"/blobs/{model['cid']}", params={"content_hash": model["hash"]}).content)
    gen = torch.Generator().manual_seed(seed)  # distinct updates: near-copies would share one score
    update = {k: torch.full_like(v, 0.01) + 0.01 * torch.randn(v.shape, generator=gen) for k, v in base.items()}
    up = client.post("/blobs", content=serialize(update), headers=OCTET)
    assert up.status_code == 201, up.text
    return up.json()  # type: ignore[no-any-return]


def commitment(platform: Platform, account: Any, round_id: int, ref: dict[str, Any], *, signer: Any = None) -> dict[str, Any]:
    typed = commitment_typed_data(platform.chain_id, platform.d.rounds.address, round_id,
                                  bytes(HexBytes(ref["content_hash"])), ref["cid"])
    return {"participant": account.address, "content_hash": ref["content_hash"], "cid": ref["cid"],
            "signature": sign(signer or account, typed)}


def submit(client: TestClient, platform: Platform, account: Any, round_id: int, seed: int) -> Any:
    return client.post(f"/rounds/{round_id}/submissions",
                       json=commitment(platform, account, round_id, upload(client, seed)))


def relay_platform(state: Path, stack: Any = None, **overrides: Any) -> Platform:
    options: dict[str, Any] = {"max_upload_bytes": 200_000, "settlement": "merkle", "relay_mode": "batched",
                               "batch_size": BATCH_SIZE, "flush_margin_s": MARGIN_S,
                               "queue_path": state / "relay-queue.sqlite"}
    return Platform.create(stack or embedded_stack(state, seed=5), state / "index.sqlite", **(options | overrides))


def app_for(platform: Platform, state: Path) -> FastAPI:
    settings = Settings(operator_token=TOKEN, state_dir=state, settlement="merkle", relay_mode="batched",  # type: ignore[arg-type]
                        batch_size=BATCH_SIZE, flush_margin_s=MARGIN_S, flush_interval_s=0)
    return create_app(settings, platform)


@pytest.fixture
def platform(tmp_path: Path) -> Platform:
    return relay_platform(tmp_path)


@pytest.fixture
def client(platform: Platform, tmp_path: Path) -> Iterator[TestClient]:
    with TestClient(app_for(platform, tmp_path)) as c:
        yield c


@pytest.fixture
def people() -> list[Any]:
    return [derive_devnet_account(78, f"relay/{i}") for i in range(5)]


def open_round(client: TestClient, people: list[Any], duration_s: int = 600) -> int:
    assert client.post("/operator/genesis", json={"dataset": "digits"}, headers=OPERATOR).status_code == 201
    for p in people:
        register(client, p)
    opened = client.post("/operator/rounds", json={"duration_s": duration_s}, headers=OPERATOR)
    assert opened.status_code == 201, opened.text
    return int(opened.json()["round"])


def own_wallet(platform: Platform, account: Any) -> str:
    """Give a participant its own funded wallet on the embedded chain (to commit or claim by its own tx)."""
    platform.stack.transactor.add_account(account)
    fund_from_node(platform.stack.transactor.w3, [account.address])
    return str(account.address)


# --------------------------------------------------------------------------------------------------- end to end


def cli(client: TestClient, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, *argv: str) -> str:
    """Run ``fedledger participant ...`` against this test's API (its HTTP client is the TestClient)."""
    monkeypatch.setattr(roles_cli, "_http", lambda args: contextlib.nullcontext(client))
    capsys.readouterr()
    assert main(["participant", *argv, "--api", "http://testserver"]) == 0
    return capsys.readouterr().out


def test_batched_round_end_to_end_receipts_prove_inclusion_claims_pay_once_and_the_audit_verifies(
    client: TestClient, platform: Platform, people: list[Any], tmp_path: Path,
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    rid = open_round(client, people)
    assert client.get("/health").json()["relay"] == {"mode": "batched", "batch_size": BATCH_SIZE,
                                                     "flush_margin_s": MARGIN_S, "pending": 0}

    # two submissions wait in the queue: 202 and a pending receipt, nothing on chain yet
    for i, p in enumerate(people[:2]):
        r = submit(client, platform, p, rid, seed=i)
        assert r.status_code == 202, r.text
        receipt = r.json()
        assert receipt["status"] == "pending" and receipt["round"] == rid and receipt["participant"] == p.address
        assert {"content_hash", "cid", "queued_at"} <= set(receipt) and receipt["on_chain_verified"] is False
    assert platform.d.rounds.batch_count(rid) == 0
    assert client.get(f"/rounds/{rid}/receipts/{people[0].address}").json()["status"] == "pending"

    # the third fills a batch: one commitBatch, every entry's receipt proves inclusion on chain
    third = submit(client, platform, people[2], rid, seed=2)
    assert third.status_code == 202 and third.json()["status"] == "included"
    assert platform.d.rounds.batch_count(rid) == 1
    for p in people[:3]:
        rec = client.get(f"/rounds/{rid}/receipts/{p.address}").json()
        assert rec["status"] == "included" and rec["on_chain_verified"] is True and rec["batch"]["index"] == 0
        assert rec["batch"]["root"] == "0x" + platform.d.rounds.batch_root(rid, 0).hex()
        leaf = (rid, p.address, bytes(HexBytes(rec["content_hash"])), rec["cid"])
        assert verify_proof(rec["batch"]["root"], COMMITMENT_LEAF_TYPES, leaf, rec["proof"])
        assert rec["tx_hash"] and rec["batch"]["list_cid"] and rec["batch"]["entries"] == 3

    # a duplicate, queued or included, is refused before it reaches the chain
    dup = submit(client, platform, people[0], rid, seed=9)
    assert dup.status_code == 409 and dup.json()["error"] == "DuplicateCommitment"

    # the fourth is flushed by the operator (a non-operator may not)
    assert submit(client, platform, people[3], rid, seed=3).json()["status"] == "pending"
    assert client.post(f"/operator/rounds/{rid}/flush").status_code == 401
    assert client.post(f"/operator/rounds/{rid}/flush", headers={"Authorization": "Bearer nope"}).status_code == 401
    flushed = client.post(f"/operator/rounds/{rid}/flush", headers=OPERATOR)
    assert flushed.status_code == 200, flushed.text
    assert flushed.json()["flushed"] == 1 and flushed.json()["batches"][0]["batch_index"] == 1
    assert client.get(f"/rounds/{rid}/receipts/{people[3].address}").json()["on_chain_verified"] is True

    # the fifth is left pending by the relay; its receipt says so, and it commits by its own transaction
    left_out = people[4]
    ref = upload(client, seed=4)
    assert client.post(f"/rounds/{rid}/submissions", json=commitment(platform, left_out, rid, ref)).status_code == 202
    rec = client.get(f"/rounds/{rid}/receipts/{left_out.address}").json()
    assert rec["status"] == "pending" and rec["can_commit_directly"] is True
    platform.d.rounds.commit_update(rid, bytes(HexBytes(ref["content_hash"])), ref["cid"],
                                    sender=own_wallet(platform, left_out))
    rec = client.get(f"/rounds/{rid}/receipts/{left_out.address}").json()
    assert rec["status"] == "direct" and rec["relayer"] == left_out.address and rec["queued"]["status"] == "pending"

    # closing flushes first: the directly committed entry is superseded, not posted
    closed = client.post(f"/operator/rounds/{rid}/close", headers=OPERATOR)
    assert closed.status_code == 200, closed.text
    assert closed.json()["flushed"]["counts"] == {"pending": 0, "included": 4, "superseded": 1, "dropped": 0,
                                                  "expired": 0}
    assert platform.d.rounds.batch_count(rid) == 2
    late = submit(client, platform, people[0], rid, seed=11)
    assert late.status_code == 409 and late.json()["error"] == "RoundNotOpen"

    fin = client.post(f"/operator/rounds/{rid}/finalize", headers=OPERATOR)
    assert fin.status_code == 200, fin.text
    fin_body = fin.json()
    assert fin_body["settlement"] == "merkle" and fin_body["problems"] == [] and fin_body["batched"] == 4
    rewards = {p: int(v) for p, v in fin_body["results"]["rewards"].items()}
    assert set(rewards) == {p.address for p in people} and all(v > 0 for v in rewards.values())

    detail = client.get(f"/rounds/{rid}").json()
    assert detail["settlement"] == "merkle" and detail["results"]["root"] == fin_body["results"]["root"]
    assert [b["index"] for b in detail["batches"]] == [0, 1]
    paths = {s["participant"]: s["path"] for s in detail["submissions"]}
    assert paths == {**{p.address: "batch" for p in people[:4]}, left_out.address: "direct"}
    assert all(s["status"] == "ACCEPTED" and s["claimed"] is False for s in detail["submissions"])

    # claims: ready-to-send proofs; the relayed claim mints exactly the listed reward, once
    winner = people[1].address
    listed = client.get(f"/participants/{winner}/claims").json()
    assert [c["round"] for c in listed["claims"]] == [rid] and int(listed["total_reward"]) == rewards[winner]
    paid = client.post(f"/participants/{winner}/claims", json={"rounds": [rid]})
    assert paid.status_code == 200, paid.text
    assert int(paid.json()["minted"]) == rewards[winner] == platform.d.token.balance_of(winner)
    again = client.post(f"/participants/{winner}/claims", json={"rounds": [rid]})
    assert again.status_code == 409 and again.json()["error"] == "AlreadyClaimed"
    nothing = client.post(f"/participants/{winner}/claims")
    assert nothing.status_code == 404 and nothing.json()["error"] == "NothingToClaim"
    assert client.get(f"/participants/{winner}/claims").json()["claims"] == []
    # replaying the spent proof straight at the contract is refused there too, and answers 409 through the API
    c = listed["claims"][0]
    stale = Claim(rid, c["status_code"], c["score_units"], int(c["reward"]), c["reputation"],
                  [bytes(HexBytes(x)) for x in c["proof"]])
    with pytest.raises(ContractRevert) as revert:
        platform.d.rounds.claim(winner, [stale], sender=platform.stack.operator)
    assert revert.value.error == "RoundsAlreadyClaimed"

    # the participant that committed directly claims with its own key: the proof from the API is all it needs
    own = client.get(f"/participants/{left_out.address}/claims").json()["claims"]
    proofs = [Claim(x["round"], x["status_code"], x["score_units"], int(x["reward"]), x["reputation"],
                    [bytes(HexBytes(p)) for p in x["proof"]]) for x in own]
    platform.d.rounds.claim(left_out.address, proofs, sender=left_out.address)
    assert platform.d.token.balance_of(left_out.address) == rewards[left_out.address]

    me = client.get(f"/participants/{winner}").json()
    assert me["rounds"][0]["path"] == "batch" and me["rounds"][0]["claimed"] is True and me["unclaimed"] == "0"
    other = client.get(f"/participants/{people[0].address}").json()
    assert other["unclaimed"] == str(rewards[people[0].address]) and other["rounds"][0]["claimed"] is False
    summary = client.get("/rounds").json()[0]
    assert summary["settlement"] == "merkle" and summary["submissions"] == 5 and summary["batched"] == 4
    assert int(summary["minted"]) == rewards[winner] + rewards[left_out.address]

    # the participant command line: a receipt checked locally, a claim through the API with its keystore
    out = cli(client, capsys, monkeypatch, "receipt", "--address", people[2].address, "--round", str(rid))
    assert "included in batch 0" in out and "proof checks locally: True" in out
    keystore = tmp_path / "p0.json"
    keystore.write_text(json.dumps(Account.encrypt(people[0].key, "pw", kdf="pbkdf2", iterations=2)))
    monkeypatch.setenv("FEDLEDGER_KEYSTORE_PASSWORD", "pw")
    out = cli(client, capsys, monkeypatch, "claim", "--keystore", str(keystore), "--round", str(rid))
    assert f"({rewards[people[0].address]} base units)" in out
    assert platform.d.token.balance_of(people[0].address) == rewards[people[0].address]

    audit = client.get(f"/audit/rounds/{rid}").json()
    assert audit["verified"] is True, audit


# ---------------------------------------------------------------------------------------------------- durability


def test_accepted_submissions_survive_a_restart_and_a_crash_between_post_and_record(
    client: TestClient, platform: Platform, people: list[Any], tmp_path: Path
) -> None:
    rid = open_round(client, people[:3])
    before = [submit(client, platform, p, rid, seed=i).json() for i, p in enumerate(people[:2])]
    assert [b["status"] for b in before] == ["pending", "pending"]
    # on disk, committed, readable by another connection (what a restarted process sees)
    with sqlite3.connect(tmp_path / "relay-queue.sqlite") as db:
        assert db.execute("SELECT COUNT(*) FROM commitments WHERE status = 'pending'").fetchone()[0] == 2
    platform.queue.close()  # type: ignore[union-attr]

    # a new API process over the same state dir (the same chain: on the devnet the node outlives the API)
    restarted = relay_platform(tmp_path, stack=platform.stack)
    with TestClient(app_for(restarted, tmp_path)) as again:
        receipts = [again.get(f"/rounds/{rid}/receipts/{p.address}").json() for p in people[:2]]
        assert [(r["status"], r["queued_at"], r["content_hash"]) for r in receipts] == \
            [(b["status"], b["queued_at"], b["content_hash"]) for b in before]
        assert again.get("/health").json()["relay"]["pending"] == 2
        dup = again.post(f"/rounds/{rid}/submissions",
                         json=commitment(platform, people[0], rid, upload(again, seed=7)))
        assert dup.status_code == 409

        # the relay dies after its commitBatch was mined but before it recorded it: the next flush finds the
        # batch on chain and marks the entries included instead of posting them twice
        pending = restarted.queue.pending(rid)  # type: ignore[union-attr]
        Operator(restarted.d, restarted.stack.store, restarted.stack.operator).post_batch(
            rid, [SignedCommitment(e.participant, e.content_hash, e.cid, e.signature) for e in pending])
        flushed = again.post(f"/operator/rounds/{rid}/flush", headers=OPERATOR).json()
        assert flushed["batches"] == [] and flushed["counts"]["included"] == 2
        assert restarted.d.rounds.batch_count(rid) == 1
        assert all(again.get(f"/rounds/{rid}/receipts/{p.address}").json()["on_chain_verified"] for p in people[:2])


# ------------------------------------------------------------------------------------------------- flush policy


def test_the_flusher_posts_pending_entries_within_the_margin_and_expires_what_the_deadline_shut_out(
    client: TestClient, platform: Platform, people: list[Any]
) -> None:
    rid = open_round(client, people[:3], duration_s=600)
    assert submit(client, platform, people[0], rid, seed=0).json()["status"] == "pending"
    assert platform.flush_due() == []  # the deadline is far
    advance_time(platform.stack.transactor.w3, 600 - MARGIN_S // 2)
    assert platform.flush_due() == [rid]
    assert client.get(f"/rounds/{rid}/receipts/{people[0].address}").json()["on_chain_verified"] is True
    # inside the margin a submission is posted at once
    assert submit(client, platform, people[1], rid, seed=1).json()["status"] == "included"

    # one the relay could not post before the deadline: kept, marked expired, and said so
    entry = commitment(platform, people[2], rid, upload(client, seed=2))
    platform.flush_margin_s = 0  # as if the flusher were late
    assert client.post(f"/rounds/{rid}/submissions", json=entry).json()["status"] == "pending"
    advance_time(platform.stack.transactor.w3, MARGIN_S)
    failed = client.post(f"/operator/rounds/{rid}/flush", headers=OPERATOR)
    assert failed.status_code == 409 and failed.json()["error"] == "RelayFailed"
    assert failed.json()["kept_pending"] is False
    rec = client.get(f"/rounds/{rid}/receipts/{people[2].address}").json()
    assert rec["status"] == "expired" and "deadline" in rec["detail"] and rec["can_commit_directly"] is False

    # the aggregator service finalizes the expired round with one results root over what was posted
    assert platform.finalize_due() == [rid]
    detail = client.get(f"/rounds/{rid}").json()
    assert detail["settlement"] == "merkle" and detail["results"]["entries"] == 2
    assert detail["relay"] == {"pending": 0, "included": 2, "superseded": 0, "dropped": 0, "expired": 1}


def test_submissions_do_not_wait_behind_a_posting_flush_and_the_flusher_posts_only_full_batches(
    client: TestClient, platform: Platform, people: list[Any]
) -> None:
    """Regression (bench load, 200 participants, batch size 50): every submission that saw a full batch waited for
    the flush lock and then posted whatever was pending, so the round got 22 batches (mostly partial) and
    submissions waited up to 23 s behind other participants' transactions."""
    rid = open_round(client, people[:4], duration_s=3600)
    bodies = [commitment(platform, p, rid, upload(client, seed=i)) for i, p in enumerate(people[:4])]
    answers: list[Any] = []
    queue = platform.queue
    assert queue is not None
    with queue.flushing():  # another flush is posting meanwhile
        for body in bodies:  # the 3rd and 4th fill a batch; they must answer without the lock
            worker = threading.Thread(target=lambda b=body: answers.append(
                client.post(f"/rounds/{rid}/submissions", json=b)))
            worker.start()
            worker.join(timeout=60)
            assert not worker.is_alive(), "a submission waited for another flush to finish"
    assert [(a.status_code, a.json()["status"]) for a in answers] == [(202, "pending")] * 4
    assert platform.flush_due() == [rid]  # a full batch is pending; the deadline is far
    counts = queue.counts(rid)
    assert (counts["included"], counts["pending"]) == (BATCH_SIZE, 4 - BATCH_SIZE)  # the partial one waits
    assert platform.d.rounds.batch_count(rid) == 1
    closed = client.post(f"/operator/rounds/{rid}/close", headers=OPERATOR)
    assert closed.status_code == 200 and closed.json()["flushed"]["flushed"] == 4 - BATCH_SIZE
    assert platform.d.rounds.batch_count(rid) == 2 and queue.counts(rid)["included"] == 4


# ---------------------------------------------------------------------------------------------------- bad input


def test_bad_relay_input_gets_a_clear_4xx(client: TestClient, platform: Platform, people: list[Any]) -> None:
    rid = open_round(client, people[:3])
    ref = upload(client, seed=0)
    p = people[0]

    forged = client.post(f"/rounds/{rid}/submissions", json=commitment(platform, p, rid, ref, signer=people[1]))
    assert forged.status_code == 400 and forged.json()["error"] == "InvalidSignature"
    body = commitment(platform, p, rid, ref)
    sig = bytes(HexBytes(body["signature"]))
    high_s = sig[:32] + (SECP256K1_N - int.from_bytes(sig[32:64], "big")).to_bytes(32, "big") + bytes([55 - sig[64]])  # v 27 <-> 28
    malleable = client.post(f"/rounds/{rid}/submissions", json={**body, "signature": "0x" + high_s.hex()})
    assert malleable.status_code == 400 and "high s" in malleable.json()["detail"]
    assert client.post(f"/rounds/{rid}/submissions", json={**body, "signature": "0x1234"}).status_code == 422
    assert client.post(f"/rounds/{rid + 1}/submissions", json=body).status_code == 404
    no_blob = client.post(f"/rounds/{rid}/submissions",
                          json=commitment(platform, p, rid, {**ref, "content_hash": "0x" + "11" * 32}))
    assert no_blob.status_code == 404 and "upload the blob first" in no_blob.json()["detail"]
    stranger = Account.create()
    outsider = client.post(f"/rounds/{rid}/submissions", json=commitment(platform, stranger, rid, ref))
    assert outsider.status_code == 403 and outsider.json()["error"] == "ParticipantNotActive"
    leaving = people[1]  # a withdrawal pending: batches are not checked on chain, so the relay checks the stake
    own_wallet(platform, leaving)
    platform.d.registry.request_withdrawal(sender=leaving.address)
    refused = client.post(f"/rounds/{rid}/submissions", json=commitment(platform, leaving, rid, ref))
    assert refused.status_code == 403 and refused.json()["error"] == "StakeInsufficient"
    assert "a withdrawal is pending since" in refused.json()["detail"]
    assert platform.queue is not None and platform.queue.pending(rid) == []

    assert client.post(f"/rounds/{rid}/submissions", json=body).status_code == 202
    dup = client.post(f"/rounds/{rid}/submissions", json=body)
    assert dup.status_code == 409 and dup.json()["error"] == "DuplicateCommitment"

    assert client.get(f"/rounds/{rid}/receipts/{people[1].address}").status_code == 404
    assert client.get(f"/rounds/{rid + 3}/receipts/{p.address}").status_code == 404
    assert client.get(f"/rounds/{rid}/receipts/0x1234").status_code == 422
    assert client.post(f"/operator/rounds/{rid + 3}/flush", headers=OPERATOR).status_code == 404

    assert client.get(f"/participants/{stranger.address}/claims").json()["claims"] == []
    assert client.post(f"/participants/{stranger.address}/claims").status_code == 404
    open_claim = client.post(f"/participants/{p.address}/claims", json={"rounds": [rid]})
    assert open_claim.status_code == 409 and open_claim.json()["error"] == "ResultsNotCommitted"
    assert client.post(f"/participants/{p.address}/claims", json={"rounds": [rid + 9]}).status_code == 404
    assert client.post(f"/participants/{p.address}/claims", json={"rounds": []}).status_code == 422
    assert client.post(f"/participants/{p.address}/claims", json={"rounds": [0]}).status_code == 422

    advance_time(platform.stack.transactor.w3, 601)
    late = client.post(f"/rounds/{rid}/submissions", json=commitment(platform, people[2], rid, ref))
    assert late.status_code == 409 and late.json()["error"] == "DeadlinePassed"


def test_contract_claim_errors_map_to_4xx() -> None:
    app = FastAPI()
    errors.install(app)
    cases = {"RoundsInvalidProof": 422, "RoundsAlreadyClaimed": 409, "RoundsResultsNotCommitted": 409,
             "RoundsNoClaims": 404, "RoundsUnknownBatch": 404, "RoundsDeadlinePassed": 409, "RoundsRoundNotOpen": 409}
    for name in cases:
        @app.get(f"/{name}")
        def _raise(name: str = name) -> None:
            raise ContractRevert("FederatedRounds", name, {"roundId": 1, "leaf": b"\x01" * 32})
    with TestClient(app) as c:
        assert {name: c.get(f"/{name}").status_code for name in cases} == cases
        assert c.get("/RoundsInvalidProof").json()["args"]["leaf"] == "0x" + "01" * 32


def test_relay_settings_refuse_inconsistent_modes(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="RELAY_MODE=batched needs FEDLEDGER_SETTLEMENT=merkle"):
        Settings(relay_mode="batched")
    with pytest.raises(ValidationError, match="less than or equal to 10000"):
        Settings(batch_size=10_001)
    with pytest.raises(ValidationError, match="must exceed FEDLEDGER_FLUSH_INTERVAL_S"):
        Settings(relay_mode="batched", settlement="merkle", flush_margin_s=5, flush_interval_s=5)
    s = Settings(relay_mode="batched", settlement="merkle", state_dir=tmp_path)
    assert (s.batch_size, s.flush_margin_s, s.queue_path()) == (500, 60, tmp_path / "relay-queue.sqlite")
    assert Settings().settlement == "legacy" and Settings().relay_mode == "direct"
    with pytest.raises(ValueError, match="batched relay needs Merkle settlement"):
        relay_platform(tmp_path, settlement="legacy")
