"""Connecting to an existing deployment: a node by RPC URL, the manifest, a blob store."""

from __future__ import annotations

from pathlib import Path

from web3 import HTTPProvider, Web3

from chain.deploy import Deployment, Manifest, StakeParams
from chain.errors import ChainUnavailable, ManifestError
from chain.transactor import Transactor
from storage import BlobStore, LocalBlobStore
from storage.kubo import KuboBlobStore
from trainer.incentives import MIN_STAKE, SLASH_PPM, WITHDRAWAL_DELAY_S


# Benches whose operator sponsors hundreds of registrations deploy with this token stake (gas does not depend on it).
BENCH_STAKE_WEI = 10**12


def default_stake_params() -> StakeParams:
    """The stake parameters every deployment this project makes uses unless told otherwise (trainer/incentives.py)."""
    return StakeParams(min_stake=MIN_STAKE, slash_ppm=SLASH_PPM, withdrawal_delay=WITHDRAWAL_DELAY_S)


def connect_rpc(rpc_url: str, *, timeout: float = 30.0, retries: int = 3) -> Transactor:
    """A Transactor on the node at ``rpc_url``; fails with ChainUnavailable after ``retries`` bounded retries."""
    provider = HTTPProvider(rpc_url, request_kwargs={"timeout": timeout}, exception_retry_configuration=None)
    transactor = Transactor(Web3(provider), retries=retries)
    try:
        transactor.chain_id  # noqa: B018 - first contact, with bounded retries
    except ChainUnavailable as exc:
        raise ChainUnavailable(f"no Ethereum node answers at {rpc_url}: {exc}") from exc
    return transactor


def attach(rpc_url: str | None, manifest_path: Path) -> Deployment:
    """The deployment a manifest describes, on ``rpc_url`` or the manifest's own RPC endpoint."""
    manifest = Manifest.read(manifest_path)
    url = rpc_url or manifest.endpoints.get("rpc")
    if not url:
        raise ManifestError(f"{manifest_path} names no RPC endpoint (an embedded deployment?): pass --rpc")
    return Deployment.attach(connect_rpc(url), manifest)


def open_blob_store(*, blobs: Path | None, ipfs: str | None) -> BlobStore:
    if blobs is not None:
        return LocalBlobStore(blobs)
    if ipfs:
        return KuboBlobStore(ipfs)
    raise ManifestError("no blob store: pass --blobs DIR or --ipfs ADDR (or use a manifest with an ipfs_api endpoint)")
