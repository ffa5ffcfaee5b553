"""Seeding a real API server (tests/conftest.py ``api_server``) over HTTP with a few rounds, the way participants
and the operator would."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest
import torch
from eth_account.messages import encode_typed_data
from hexbytes import HexBytes

from chain.accounts import derive_devnet_account
from fedledger.roles import commitment_typed_data
from trainer.serialization import deserialize, serialize

OCTET = {"content-type": "application/octet-stream"}


@pytest.fixture
def seed() -> Callable[..., list]:
    return seed_rounds


def sign(account: object, typed: dict) -> str:
    return HexBytes(account.sign_message(encode_typed_data(full_message=typed)).signature).to_0x_hex()  # type: ignore[attr-defined]


def ok(r: httpx.Response, *codes: int) -> dict:
    assert r.status_code in (codes or (200, 201)), f"{r.request.method} {r.request.url}: {r.status_code} {r.text}"
    return r.json()


def register(http: httpx.Client, account: object) -> None:
    ch = ok(http.get("/participants/challenge", params={"address": account.address}))  # type: ignore[attr-defined]
    ok(http.post("/participants/register", json={"address": account.address, "deadline": ch["deadline"],  # type: ignore[attr-defined]
                                                 "signature": sign(account, ch["typed_data"])}), 201)


def submit(http: httpx.Client, account: object, round_id: int, seed: int, scale: float = 0.01) -> httpx.Response:
    health = ok(http.get("/health"))
    model = ok(http.get("/models/current"))
    base = deserialize(http.get(f"/blobs/{model['cid']}", params={"content_hash": model["hash"]}).content)
    gen = torch.Generator().manual_seed(seed)
    update = {k: torch.full_like(v, scale) + 0.01 * torch.randn(v.shape, generator=gen) for k, v in base.items()}
    ref = ok(http.post("/blobs", content=serialize(update), headers=OCTET), 201)
    typed = commitment_typed_data(health["chain_id"], health["contracts"]["FederatedRounds"], round_id,
                                  bytes(HexBytes(ref["content_hash"])), ref["cid"])
    body = {"participant": account.address, "content_hash": ref["content_hash"], "cid": ref["cid"],  # type: ignore[attr-defined]
            "signature": sign(account, typed)}
    return http.post(f"/rounds/{round_id}/submissions", json=body)


def seed_rounds(server: Any, *, label: str = "security", participants: int = 4) -> list:
    """Genesis, ``participants`` registered wallets, one finalized round (one attacker), and a second round left
    open with one submission: the fuzzer then meets every state a round can be in."""
    people = [derive_devnet_account(91, f"{label}/{i}") for i in range(participants)]
    operator = server.operator
    with httpx.Client(base_url=server.url, timeout=120) as http:
        ok(http.post("/operator/genesis", json={"dataset": "digits"}, headers=operator), 201)
        for p in people:
            register(http, p)
        first = ok(http.post("/operator/rounds", json={"duration_s": 3600}, headers=operator), 201)["round"]
        for i, p in enumerate(people):
            ok(submit(http, p, first, seed=i, scale=-4.0 if i == 0 else 0.01), 201, 202)
        ok(http.post(f"/operator/rounds/{first}/close", headers=operator))
        ok(http.post(f"/operator/rounds/{first}/finalize", headers=operator))
        second = ok(http.post("/operator/rounds", json={"duration_s": 3600}, headers=operator), 201)["round"]
        ok(submit(http, people[1], second, seed=100), 201, 202)
    return people
