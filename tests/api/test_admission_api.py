"""A consortium's registry over HTTP: the operator admits wallets, an unadmitted one is refused with 403 and the
registry's error, and nothing is registered or staked for it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.settings import Settings
from chain.accounts import derive_devnet_account
from fedledger.service import Platform
from fedledger.stack import embedded_stack
from tests.api.test_api_flow import OPERATOR, register


@pytest.fixture
def consortium(tmp_path: Path) -> Iterator[tuple[TestClient, Platform]]:
    platform = Platform.create(embedded_stack(tmp_path, seed=5, admission=True), tmp_path / "index.sqlite",
                               max_upload_bytes=200_000)
    settings = Settings(operator_token="test-operator-token", state_dir=tmp_path)  # type: ignore[arg-type]
    with TestClient(create_app(settings, platform)) as c:
        yield c, platform


def test_only_admitted_wallets_register(consortium: tuple[TestClient, Platform]) -> None:
    client, platform = consortium
    member, stranger = derive_devnet_account(78, "member"), derive_devnet_account(78, "stranger")
    assert client.get("/health").json()["registration"] == "admission"
    refused = register(client, stranger)
    assert refused.status_code == 403, refused.text
    assert refused.json()["error"] == "RegistryNotAdmitted"
    assert refused.json()["args"]["account"] == stranger.address
    assert platform.d.registry.status_of(stranger.address) == 0 and platform.d.registry.total_staked() == 0
    assert client.get(f"/participants/{stranger.address}").json()["admitted"] is False

    assert client.post(f"/operator/participants/{member.address}/admit").status_code == 401  # no operator token
    admitted = client.post(f"/operator/participants/{member.address}/admit", headers=OPERATOR)
    assert admitted.status_code == 200, admitted.text
    assert admitted.json()["address"] == member.address
    again = client.post(f"/operator/participants/{member.address}/admit", headers=OPERATOR)
    assert again.status_code == 409 and again.json()["error"] == "RegistryAlreadyAdmitted"
    assert register(client, member).status_code == 201
    view = client.get(f"/participants/{member.address}").json()
    assert (view["status"], view["admitted"]) == ("active", True)


def test_an_open_registry_refuses_admissions_with_409(client: TestClient) -> None:
    wallet = derive_devnet_account(78, "anyone")
    assert client.get("/health").json()["registration"] == "open"
    answer = client.post(f"/operator/participants/{wallet.address}/admit", headers=OPERATOR)
    assert answer.status_code == 409 and answer.json()["error"] == "RegistryAdmissionNotRequired"
    assert client.get(f"/participants/{wallet.address}").json()["admitted"] is True

