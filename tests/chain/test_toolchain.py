"""The offline compiler, the artifacts, the generated gateways and the manifest."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from chain.codegen import GATEWAYS_DIR, module_name, render_gateway, snake
from chain.compiler import ARTIFACTS_DIR, CONTRACT_NAMES, compile_contracts, load_artifact, sources_hash
from chain.deploy import Deployment, Manifest
from chain.errors import ArtifactError, ManifestError
from chain.gateways.federated_rounds import FederatedRoundsGateway


def test_committed_gateways_are_exactly_what_the_current_artifacts_generate() -> None:
    for name in CONTRACT_NAMES:
        expected = render_gateway(load_artifact(name))
        actual = (GATEWAYS_DIR / f"{module_name(name)}.py").read_text()
        assert actual == expected, f"chain/gateways/{module_name(name)}.py is stale: run 'make codegen'"


def test_artifacts_record_compiler_settings_and_match_the_sources() -> None:
    artifact = load_artifact("FederatedRounds")
    assert artifact.compiler_version.startswith("0.8.28")
    assert artifact.settings["optimizer"] == {"enabled": True, "runs": 200}
    assert artifact.sources_hash == sources_hash()
    assert artifact.bytecode.startswith("0x") and len(artifact.bytecode) > 1000
    int(artifact.bytecode, 16)


@pytest.mark.slow
def test_the_offline_compiler_reproduces_the_artifacts_bytecode() -> None:
    compiled = compile_contracts()
    for name in CONTRACT_NAMES:
        assert compiled[name].bytecode == load_artifact(name).bytecode
        assert compiled[name].abi == load_artifact(name).abi


def test_a_stale_or_missing_artifact_is_refused_with_the_command_that_fixes_it(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="run 'fedledger compile'"):
        load_artifact("FederatedRounds", tmp_path)
    data = json.loads((ARTIFACTS_DIR / "FederatedRounds.json").read_text())
    data["sourcesHash"] = "0" * 64
    (tmp_path / "FederatedRounds.json").write_text(json.dumps(data))
    with pytest.raises(ArtifactError, match="is stale"):
        load_artifact("FederatedRounds", tmp_path)


def test_a_gateway_refuses_an_abi_it_was_not_generated_from(tmp_path: Path, chain_env) -> None:  # type: ignore[no-untyped-def]
    data = load_artifact("FederatedRounds").to_json()
    data["abi"] = [item for item in data["abi"] if item.get("name") != "closeRound"]
    (tmp_path / "FederatedRounds.json").write_text(json.dumps(data))
    with pytest.raises(ArtifactError, match="run 'fedledger codegen'"):
        FederatedRoundsGateway(chain_env.transactor, chain_env.deployment.rounds.address, artifacts_dir=tmp_path)


@pytest.mark.parametrize(
    ("name", "expected"),
    [("openRound", "open_round"), ("DEFAULT_ADMIN_ROLE", "default_admin_role"), ("eip712Domain", "eip712_domain"),
     ("EIP712DomainChanged", "eip712_domain_changed"), ("from", "from_"), ("getRound", "get_round")],
)
def test_snake_case_names(name: str, expected: str) -> None:
    assert snake(name) == expected


def test_manifest_round_trips_and_attaches_to_the_same_chain(tmp_path: Path, chain_env) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "manifest.json"
    chain_env.deployment.manifest.write(path)
    manifest = Manifest.read(path)
    assert manifest == chain_env.deployment.manifest
    attached = Deployment.attach(chain_env.transactor, manifest)
    assert attached.rounds.round_count() == 0
    assert attached.rounds.has_role(attached.rounds.aggregator_role(), chain_env.aggregator)


def test_manifest_errors_are_clear(tmp_path: Path, chain_env) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ManifestError, match="no deployment manifest at"):
        Manifest.read(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ManifestError, match="malformed deployment manifest"):
        Manifest.read(tmp_path / "bad.json")
    wrong_chain = Manifest(**{**chain_env.deployment.manifest.__dict__, "chain_id": 1})
    with pytest.raises(ManifestError, match="manifest is for chain 1 but the node reports chain 131277322940537"):
        Deployment.attach(chain_env.transactor, wrong_chain)
