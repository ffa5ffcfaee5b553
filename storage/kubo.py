"""Blobs on IPFS through a Kubo daemon: add + pin, cat, and the content-hash check on every read.

Client: ipfshttpclient, the design card's choice, constructed as ``ipfshttpclient.Client(addr)``: its
``connect()`` refuses every Kubo newer than 0.8 by a version gate, but the RPC calls used here (add, cat, pin,
version) work unchanged against Kubo 0.39 (tested against the real daemon in tests/integration).

CID settings (recorded on-chain beside the sha256 content hash):
    CIDv1, raw leaves, sha2-256, chunker size-1048576, pinned on add.
With raw leaves, a blob up to one chunk gets a raw CID whose multihash *is* its sha256; larger blobs get a dag-pb
root. Either way the chain's sha256 decides which bytes are meant: the same bytes get different CIDs under
other settings, so a CID alone is never trusted.
"""

from __future__ import annotations

import io
import warnings
from typing import Any

from storage.base import BlobNotFound, BlobRef, StorageError, StorageUnavailable, check_integrity, sha256

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # ipfshttpclient warns about its own age on import
    import ipfshttpclient
    from ipfshttpclient import exceptions as ipfs_errors

CHUNKER = "size-1048576"
# ipfshttpclient passes urllib3 a `strict` argument that urllib3 2 deprecates; harmless, and not ours to fix.
warnings.filterwarnings("ignore", message="The 'strict' parameter is no longer needed", category=FutureWarning)


class KuboBlobStore:
    uri_scheme = "ipfs-raw"  # storage.cids.uri_for computes its CIDs (blobs up to one chunk) without the daemon

    def __init__(self, api_addr: str, *, timeout: float = 30.0) -> None:
        """``api_addr``: Kubo's RPC multiaddr, e.g. ``/ip4/127.0.0.1/tcp/5001/http``."""
        self.api_addr = api_addr
        self.timeout = timeout
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # urllib3 on ipfshttpclient's use of `strict`
            self._client: Any = ipfshttpclient.Client(api_addr, timeout=timeout)

    def close(self) -> None:
        self._client.close()

    def version(self) -> str:
        return str(self._call(lambda: self._client.version())["Version"])

    @property
    def location(self) -> str:
        return f"Kubo at {self.api_addr}"

    def put(self, data: bytes) -> BlobRef:
        result = self._call(
            lambda: self._client.add(
                io.BytesIO(data), cid_version=1, raw_leaves=True, chunker=CHUNKER, pin=True  # sha2-256 is the default
            )
        )
        return BlobRef(content_hash=sha256(data), uri=str(result["Hash"]))

    def get(self, uri: str, expected_hash: bytes) -> bytes:
        try:
            data = self._call(lambda: self._client.cat(uri, offline=True))
        except StorageError as exc:
            text = str(exc).lower()
            if "not found" in text or "invalid" in text or "not a valid" in text or "failed to decode" in text:
                raise BlobNotFound(uri) from exc
            raise
        return check_integrity(uri, bytes(data), expected_hash)

    def _call(self, fn: Any) -> Any:
        try:
            return fn()
        except (ipfs_errors.ConnectionError, ipfs_errors.TimeoutError) as exc:
            raise StorageUnavailable(f"Kubo at {self.api_addr} is unreachable: {exc}") from exc
        except ipfs_errors.Error as exc:
            raise StorageError(f"Kubo at {self.api_addr}: {exc}") from exc
