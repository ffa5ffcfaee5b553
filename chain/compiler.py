"""Compile contracts/ into artifacts with py-solc-x, offline.

    fedledger compile            # writes chain/artifacts/<Contract>.json

The compiler is a native ``solc`` on PATH when its version matches ``SOLC_VERSION``; otherwise the npm ``solc``
package (solcjs, installed in hardhat/node_modules) through ``hardhat/scripts/solc-standard-json.js``, a small
node front that speaks the two calls py-solc-x makes. Nothing is downloaded.

Each artifact records the ABI, creation and runtime bytecode, the compiler version, the exact settings, and a
hash of all Solidity sources it was built from, so a stale artifact is detected rather than deployed.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import solcx
from solcx.exceptions import SolcError

from chain.errors import ArtifactError

PROJECT_ROOT = Path(__file__).resolve().parents[1]
CONTRACTS_DIR = PROJECT_ROOT / "contracts"
ARTIFACTS_DIR = Path(__file__).resolve().parent / "artifacts"
SOLCJS_FRONT = PROJECT_ROOT / "hardhat" / "scripts" / "solc-standard-json.js"
SOLC_VERSION = "0.8.28"
CONTRACT_NAMES = ("FedToken", "ParticipantRegistry", "FederatedRounds", "PrivacyLedger")

COMPILER_SETTINGS: dict[str, Any] = {
    "optimizer": {"enabled": True, "runs": 200},
    "viaIR": True,
    "evmVersion": "cancun",
    "outputSelection": {"*": {"*": ["abi", "evm.bytecode.object", "evm.deployedBytecode.object"]}},
}


@dataclass(frozen=True)
class Artifact:
    contract_name: str
    abi: list[dict[str, Any]]
    bytecode: str
    deployed_bytecode: str
    compiler_version: str
    settings: dict[str, Any]
    sources_hash: str

    def to_json(self) -> dict[str, Any]:
        return {
            "contractName": self.contract_name,
            "abi": self.abi,
            "bytecode": self.bytecode,
            "deployedBytecode": self.deployed_bytecode,
            "compiler": {"version": self.compiler_version, "settings": self.settings},
            "sourcesHash": self.sources_hash,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Artifact:
        return cls(
            contract_name=data["contractName"],
            abi=data["abi"],
            bytecode=data["bytecode"],
            deployed_bytecode=data["deployedBytecode"],
            compiler_version=data["compiler"]["version"],
            settings=data["compiler"]["settings"],
            sources_hash=data["sourcesHash"],
        )


def sources_hash(contracts_dir: Path = CONTRACTS_DIR) -> str:
    """sha256 over (relative path, content) of every .sol file, in path order."""
    digest = hashlib.sha256()
    for path in sorted(contracts_dir.rglob("*.sol")):
        digest.update(path.relative_to(contracts_dir).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()


def find_solc() -> Path:
    """A native solc of the pinned version if on PATH, else the solcjs front."""
    native = shutil.which("solc")
    if native is not None:
        try:
            if str(solcx.wrapper.get_solc_version(native)) == SOLC_VERSION:
                return Path(native)
        except (SolcError, OSError, ValueError):
            pass
    if not (SOLCJS_FRONT.parent.parent / "node_modules" / "solc").is_dir():
        raise ArtifactError(
            "no Solidity compiler: npm 'solc' is not installed in hardhat/node_modules "
            "(run scripts/bootstrap, which runs 'npm ci' there)"
        )
    if shutil.which("node") is None:
        raise ArtifactError("no Solidity compiler: 'node' is not on PATH (needed for the npm solc package)")
    return SOLCJS_FRONT


def compile_contracts(contracts_dir: Path = CONTRACTS_DIR) -> dict[str, Artifact]:
    solc = find_solc()
    sources = {
        f"contracts/{p.relative_to(contracts_dir).as_posix()}": {"content": p.read_text()}
        for p in sorted(contracts_dir.rglob("*.sol"))
    }
    standard_input = {"language": "Solidity", "sources": sources, "settings": COMPILER_SETTINGS}
    try:
        output = solcx.compile_standard(
            standard_input, solc_binary=solc, allow_paths=[str(PROJECT_ROOT / "hardhat" / "node_modules")]
        )
    except SolcError as exc:
        raise ArtifactError(f"solc failed:\n{_solc_messages(exc.stdout_data) or exc.message}") from exc
    version = str(solcx.wrapper.get_solc_version(solc, with_commit_hash=True))
    digest = sources_hash(contracts_dir)
    artifacts: dict[str, Artifact] = {}
    for name in CONTRACT_NAMES:
        compiled = output["contracts"][f"contracts/{name}.sol"][name]
        artifacts[name] = Artifact(
            contract_name=name,
            abi=compiled["abi"],
            bytecode="0x" + compiled["evm"]["bytecode"]["object"],
            deployed_bytecode="0x" + compiled["evm"]["deployedBytecode"]["object"],
            compiler_version=version,
            settings=COMPILER_SETTINGS,
            sources_hash=digest,
        )
    return artifacts


def _solc_messages(stdout: str) -> str:
    """Only the compiler's error messages out of its JSON output (not the whole ABI dump)."""
    try:
        errors = json.loads(stdout).get("errors", [])
    except (ValueError, AttributeError):
        return ""
    return "\n".join(e.get("formattedMessage", "") for e in errors if e.get("severity") == "error")


def write_artifacts(artifacts: dict[str, Artifact], out_dir: Path = ARTIFACTS_DIR) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, artifact in artifacts.items():
        path = out_dir / f"{name}.json"
        path.write_text(json.dumps(artifact.to_json(), indent=1, sort_keys=True) + "\n")
        paths.append(path)
    return paths


def load_artifact(name: str, artifacts_dir: Path = ARTIFACTS_DIR, *, check_fresh: bool = True) -> Artifact:
    path = artifacts_dir / f"{name}.json"
    if not path.is_file():
        raise ArtifactError(f"artifact {path} is missing: run 'fedledger compile'")
    artifact = Artifact.from_json(json.loads(path.read_text()))
    if check_fresh and CONTRACTS_DIR.is_dir() and artifact.sources_hash != sources_hash():
        raise ArtifactError(f"artifact {path} is stale (contracts/ changed since): run 'fedledger compile'")
    return artifact
