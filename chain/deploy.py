"""Deploy the contracts (token, registry, rounds, privacy ledger), wire their roles, and describe the deployment in a manifest file.

The manifest is the only place addresses live: chain id, contract addresses, deployment block, compiler version
and settings, and the role holders. Everything else reads it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from web3 import Web3

from chain.compiler import ARTIFACTS_DIR, load_artifact
from chain.errors import ManifestError
from chain.gateways.fed_token import FedTokenGateway
from chain.gateways.federated_rounds import FederatedRoundsGateway
from chain.gateways.participant_registry import ParticipantRegistryGateway
from chain.gateways.privacy_ledger import PrivacyLedgerGateway
from chain.transactor import Transactor

MANIFEST_VERSION = 1


@dataclass(frozen=True)
class Manifest:
    chain_id: int
    contracts: dict[str, str]
    deployment_block: int
    compiler: dict[str, Any]
    roles: dict[str, str]
    network: str = "embedded"
    endpoints: dict[str, str] = field(default_factory=dict)
    version: int = MANIFEST_VERSION
    stake: dict[str, int] = field(default_factory=dict)  # StakeParams.to_manifest()

    def write(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(asdict(self), indent=2, sort_keys=True) + "\n")

    @classmethod
    def read(cls, path: Path) -> Manifest:
        try:
            data = json.loads(Path(path).read_text())
            manifest = cls(**data)
        except FileNotFoundError:
            raise ManifestError(f"no deployment manifest at {path}") from None
        except (ValueError, TypeError) as exc:
            raise ManifestError(f"malformed deployment manifest {path}: {exc}") from exc
        if manifest.version != MANIFEST_VERSION:
            raise ManifestError(f"manifest {path} has version {manifest.version}, expected {MANIFEST_VERSION}")
        missing = {"FedToken", "ParticipantRegistry", "FederatedRounds"} - set(manifest.contracts)
        if missing:
            raise ManifestError(f"manifest {path} lacks addresses for {sorted(missing)}")
        return manifest

    def check_chain(self, w3: Web3) -> None:
        actual = int(w3.eth.chain_id)
        if actual != self.chain_id:
            raise ManifestError(f"manifest is for chain {self.chain_id} but the node reports chain {actual}")


@dataclass(frozen=True)
class StakeParams:
    """The registry's stake and admission parameters (constructor arguments, so fixed per deployment; recorded in the
    manifest)."""

    min_stake: int  # wei an identity locks to register and keeps to commit
    slash_ppm: int  # share of the current stake one slashable verdict burns, 1e-6 units
    withdrawal_delay: int  # seconds after the request and after the last committed round's finalization
    admission_required: bool = False  # only accounts the operator admitted may register (a consortium's registry)

    def to_manifest(self) -> dict[str, int]:
        return {"minStake": self.min_stake, "slashPpm": self.slash_ppm, "withdrawalDelay": self.withdrawal_delay,
                "admissionRequired": int(self.admission_required)}


@dataclass
class Deployment:
    """Connected gateways of one deployment."""

    manifest: Manifest
    token: FedTokenGateway
    registry: ParticipantRegistryGateway
    rounds: FederatedRoundsGateway
    gas_used: int = 0
    privacy: PrivacyLedgerGateway | None = None  # None for a manifest from before the privacy ledger (issue 13)

    @classmethod
    def attach(cls, transactor: Transactor, manifest: Manifest, artifacts_dir: Path = ARTIFACTS_DIR) -> Deployment:
        manifest.check_chain(transactor.w3)
        c = manifest.contracts
        return cls(
            manifest=manifest,
            token=FedTokenGateway(transactor, c["FedToken"], artifacts_dir=artifacts_dir),
            registry=ParticipantRegistryGateway(transactor, c["ParticipantRegistry"], artifacts_dir=artifacts_dir),
            rounds=FederatedRoundsGateway(transactor, c["FederatedRounds"], artifacts_dir=artifacts_dir),
            privacy=PrivacyLedgerGateway(transactor, c["PrivacyLedger"], artifacts_dir=artifacts_dir)
            if "PrivacyLedger" in c else None,
        )


def deploy_all(
    transactor: Transactor,
    *,
    admin: str,
    operator: str,
    aggregator: str,
    stake: StakeParams,
    network: str = "embedded",
    endpoints: dict[str, str] | None = None,
    artifacts_dir: Path = ARTIFACTS_DIR,
) -> Deployment:
    """Deploy token, registry and round manager from ``admin`` and grant the roles each needs."""
    token, r1 = FedTokenGateway.deploy(transactor, admin, sender=admin, artifacts_dir=artifacts_dir)
    registry, r2 = ParticipantRegistryGateway.deploy(
        transactor, admin, stake.min_stake, stake.slash_ppm, stake.withdrawal_delay, stake.admission_required,
        sender=admin,
        artifacts_dir=artifacts_dir,
    )
    rounds, r3 = FederatedRoundsGateway.deploy(
        transactor, admin, registry.address, token.address, sender=admin, artifacts_dir=artifacts_dir
    )
    privacy, r4 = PrivacyLedgerGateway.deploy(transactor, admin, rounds.address, sender=admin, artifacts_dir=artifacts_dir)
    grants = [
        token.grant_role(token.minter_role(), rounds.address, sender=admin),
        registry.grant_role(registry.reputation_writer_role(), rounds.address, sender=admin),
        registry.grant_role(registry.slasher_role(), rounds.address, sender=admin),  # slashes, commit locks
        registry.grant_role(registry.operator_role(), operator, sender=admin),
        rounds.grant_role(rounds.operator_role(), operator, sender=admin),
        rounds.grant_role(rounds.aggregator_role(), aggregator, sender=admin),
        rounds.grant_role(rounds.relayer_role(), operator, sender=admin),  # the API relays batches with the operator key
        privacy.grant_role(privacy.operator_role(), operator, sender=admin),  # sets privacy budgets
        privacy.grant_role(privacy.relayer_role(), operator, sender=admin),  # relays DP commitments (the API)
    ]
    compiled = load_artifact("FederatedRounds", artifacts_dir)
    manifest = Manifest(
        chain_id=transactor.chain_id,
        contracts={"FedToken": token.address, "ParticipantRegistry": registry.address, "FederatedRounds": rounds.address,
                   "PrivacyLedger": privacy.address},
        deployment_block=r1.block_number,
        compiler={"version": compiled.compiler_version, "settings": compiled.settings, "sourcesHash": compiled.sources_hash},
        roles={"admin": admin, "operator": operator, "aggregator": aggregator, "relayer": operator},
        network=network,
        endpoints=endpoints or {},
        stake=stake.to_manifest(),
    )
    gas = sum(r.gas_used for r in (r1, r2, r3, r4, *grants))
    return Deployment(manifest=manifest, token=token, registry=registry, rounds=rounds, gas_used=gas, privacy=privacy)
