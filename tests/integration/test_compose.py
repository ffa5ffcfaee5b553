"""docker-compose.yml is valid against the Compose specification and agrees with the devnet defaults.

No Docker engine runs here, so the file is checked against the spec's JSON schema (tests/data/compose-spec.json,
from github.com/compose-spec/compose-go/v2 v2.16.2 schema/compose-spec.json) rather than by `docker compose config`.
"""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import yaml

from fedledger.devnet import KUBO_VERSION, DevnetConfig

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = json.loads((ROOT / "tests" / "data" / "compose-spec.json").read_text())


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_compose_file_is_valid_against_the_compose_specification(compose: dict) -> None:
    jsonschema.Draft7Validator(SCHEMA).validate(compose)


def test_the_schema_check_is_real_it_rejects_a_broken_file(compose: dict) -> None:
    broken = json.loads(json.dumps(compose))
    broken["services"]["ipfs"]["ports"] = {"not": "a list"}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft7Validator(SCHEMA).validate(broken)


def test_ports_are_published_on_loopback_and_match_the_devnet_defaults(compose: dict) -> None:
    cfg = DevnetConfig()
    services = compose["services"]
    assert services["hardhat"]["ports"] == [f"127.0.0.1:{cfg.rpc_port}:8545"]
    assert sorted(services["ipfs"]["ports"]) == sorted(
        [f"127.0.0.1:{cfg.ipfs_api_port}:5001", f"127.0.0.1:{cfg.ipfs_gateway_port}:8080"]
    )
    for service in services.values():
        for port in service.get("ports", []):
            assert port.startswith("127.0.0.1:"), port


def test_images_are_pinned_and_match_what_the_native_devnet_runs(compose: dict) -> None:
    services = compose["services"]
    assert services["ipfs"]["image"] == f"ipfs/kubo:{KUBO_VERSION}"
    for service in services.values():
        name, _, tag = service["image"].partition(":")
        assert tag and tag != "latest", service["image"]
    assert services["hardhat"]["image"].startswith("node:20.")
    command = " ".join(services["hardhat"]["command"])
    assert "hardhat/internal/cli/cli.js node" in command and "--port 8545" in command
    assert services["ipfs"]["command"] == ["daemon", "--offline"]
    assert services["ipfs"]["environment"]["IPFS_PROFILE"] == "test"


def test_every_service_has_a_health_check_and_persistent_data_has_volumes(compose: dict) -> None:
    for name, service in compose["services"].items():
        assert service["healthcheck"]["test"], name
    assert "ipfs-data" in compose["volumes"]
    assert "ipfs-data:/data/ipfs" in compose["services"]["ipfs"]["volumes"]
