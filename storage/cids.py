"""The address a store will give some bytes, computed without the store: what a participant signs before its
update reaches the store (e.g. a Flower SuperNode that sends its update through the SuperLink, not to IPFS).

    fedblob   the local content-addressed directory: ``fedblob:sha256:<hex>``
    ipfs-raw  Kubo with this project's settings (CIDv1, raw leaves, sha2-256, 1 MiB chunks): a blob of at most one
              chunk is a single raw block, so its CID is the raw-codec CIDv1 of its sha256 (base32). Larger blobs get
              a dag-pb root that only the chunker can give; they are refused here rather than guessed.
"""

from __future__ import annotations

import cid
import multihash

from storage.base import StorageError, sha256
from storage.local import URI_PREFIX

CHUNK_BYTES = 1_048_576  # storage.kubo.CHUNKER = "size-1048576"
URI_SCHEMES = ("fedblob", "ipfs-raw")


def uri_for(scheme: str, data: bytes) -> str:
    """The URI the store of ``scheme`` returns for ``data``."""
    if scheme == "fedblob":
        return URI_PREFIX + sha256(data).hex()
    if scheme == "ipfs-raw":
        if len(data) > CHUNK_BYTES:
            raise StorageError(
                f"a blob of {len(data)} bytes spans several {CHUNK_BYTES}-byte chunks: its CID is a dag-pb root "
                "only Kubo can compute; upload it to Kubo instead"
            )
        return cid.make_cid(1, "raw", multihash.encode(sha256(data), "sha2-256")).encode("base32").decode("ascii")
    raise StorageError(f"unknown URI scheme {scheme!r}: choose one of {', '.join(URI_SCHEMES)}")
