"""Connecting to an existing deployment: a node by RPC URL, the manifest, a blob store."""

from __future__ import annotations

from pathlib import Path

from web3 import HTTPProvider, Web3

from chain.deploy import Deployment, Manifest
from chain.errors import ChainUnavailable
from chain.transactor import Transactor
from storage import LocalBlobStore


def connect_rpc(rpc_url: str, *, timeout: float = 30.0) -> Transactor:
    w3 = Web3(HTTPProvider(rpc_url, request_kwargs={"timeout": timeout}))
    transactor = Transactor(w3)
    try:
        transactor.chain_id  # noqa: B018 - first contact, with bounded retries
    except ChainUnavailable as exc:
        raise ChainUnavailable(f"no Ethereum node answers at {rpc_url}: {exc}") from exc
    return transactor


def attach(rpc_url: str, manifest_path: Path) -> Deployment:
    return Deployment.attach(connect_rpc(rpc_url), Manifest.read(manifest_path))


def open_blob_store(path: Path) -> LocalBlobStore:
    return LocalBlobStore(path)
