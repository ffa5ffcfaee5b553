"""storage.cids: the URI a store gives some bytes, computed without the store (what a Flower SuperNode signs)."""

from __future__ import annotations

from pathlib import Path

import pytest

from storage import LocalBlobStore, StorageError
from storage.cids import CHUNK_BYTES, uri_for


def test_the_local_uri_is_the_one_the_local_store_gives(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path)
    data = b"\x00safetensors-ish bytes" * 100
    assert uri_for(store.uri_scheme, data) == store.put(data).uri


def test_a_one_chunk_blob_gets_the_raw_cidv1_of_its_sha256() -> None:
    # The CID Kubo gives b"hello" under `ipfs add --cid-version 1 --raw-leaves` (the well-known raw CIDv1).
    assert uri_for("ipfs-raw", b"hello") == "bafkreibm6jg3ux5qumhcn2b3flc3tyu6dmlb4xa7u5bf44yegnrjhc4yeq"


def test_a_blob_of_several_chunks_and_an_unknown_scheme_are_refused() -> None:
    with pytest.raises(StorageError, match="several"):
        uri_for("ipfs-raw", bytes(CHUNK_BYTES + 1))
    assert uri_for("ipfs-raw", bytes(CHUNK_BYTES)).startswith("bafkrei")
    with pytest.raises(StorageError, match="unknown URI scheme"):
        uri_for("s3", b"x")
