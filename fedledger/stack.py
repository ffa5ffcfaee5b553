"""The two stacks the platform runs on, behind one shape: a connected deployment, a blob store, and the operator
and aggregator wallets (with local keys in the transactor).

    embedded: in-process EVM (py-evm) + a content-addressed directory; contracts deployed fresh.
    devnet:   the Hardhat node + Kubo daemon that ``fedledger devnet up`` started; addresses from its manifest.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from chain.accounts import devnet_wallets
from chain.deploy import Deployment, deploy_all
from chain.embedded import embedded_transactor, embedded_web3
from chain.errors import ManifestError
from fedledger.devnet import ROLE_LABELS, Devnet, DevnetConfig
from fedledger.wiring import default_stake_params
from storage import BlobStore, LocalBlobStore


@dataclass
class Stack:
    name: str
    deployment: Deployment
    store: BlobStore
    operator: str  # "" for a read-only stack (auditors)
    aggregator: str

    @property
    def transactor(self):  # type: ignore[no-untyped-def]
        return self.deployment.rounds.transactor


def embedded_stack(state_dir: Path, *, seed: int, admission: bool = False) -> Stack:
    """The in-process EVM with the contracts deployed (``admission``: a consortium's registry, see
    ParticipantRegistry) and a local blob store under ``state_dir``."""
    transactor = embedded_transactor(embedded_web3())
    wallets = devnet_wallets(transactor, seed, list(ROLE_LABELS))
    deployment = deploy_all(
        transactor,
        admin=wallets["admin"],
        operator=wallets["operator"],
        aggregator=wallets["aggregator"],
        stake=replace(default_stake_params(), admission_required=admission),
    )
    deployment.manifest.write(state_dir / "manifest.json")
    return Stack("embedded", deployment, LocalBlobStore(state_dir / "blobs"), wallets["operator"], wallets["aggregator"])


def devnet_stack(cfg: DevnetConfig) -> Stack:
    """Attach to a running devnet. Its operator/aggregator keys are derived from the devnet seed (devnet only)."""
    deployment, store = Devnet(cfg).attach()
    wallets = devnet_wallets(deployment.rounds.transactor, cfg.seed, list(ROLE_LABELS), fund=False)
    roles = deployment.manifest.roles
    for role in ("operator", "aggregator"):
        if roles.get(role) != wallets[role]:
            raise ManifestError(
                f"the manifest's {role} {roles.get(role)} is not the wallet derived from devnet seed {cfg.seed}"
            )
    return Stack("devnet", deployment, store, wallets["operator"], wallets["aggregator"])
