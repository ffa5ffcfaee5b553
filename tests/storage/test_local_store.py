from __future__ import annotations

from pathlib import Path

import pytest

from storage import BlobIntegrityError, BlobNotFound, LocalBlobStore, StorageError
from storage.base import sha256


def test_put_is_content_addressed_and_get_checks_the_hash(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path)
    ref = store.put(b"model bytes")
    assert ref.content_hash == sha256(b"model bytes")
    assert ref.uri == "fedblob:sha256:" + ref.content_hash.hex()
    assert store.put(b"model bytes") == ref
    assert store.get(ref.uri, ref.content_hash) == b"model bytes"


def test_a_flipped_byte_is_caught_on_read(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path)
    ref = store.put(b"\x00" * 64)
    path = store.path_for(ref.uri)
    data = bytearray(path.read_bytes())
    data[10] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(BlobIntegrityError) as info:
        store.get(ref.uri, ref.content_hash)
    assert info.value.expected == ref.content_hash and info.value.actual == sha256(bytes(data))


def test_bytes_at_a_uri_must_match_the_hash_the_caller_expects(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path)
    a, b = store.put(b"a"), store.put(b"b")
    with pytest.raises(BlobIntegrityError):
        store.get(a.uri, b.content_hash)


def test_missing_blobs_and_malformed_uris_are_clear_errors(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path)
    with pytest.raises(BlobNotFound, match="no blob at fedblob:sha256:" + "0" * 64):
        store.get("fedblob:sha256:" + "0" * 64, b"\x00" * 32)
    for uri in ["ipfs://x", "fedblob:sha256:../../etc/passwd", "fedblob:sha256:" + "g" * 64]:
        with pytest.raises(StorageError, match="not a local blob URI"):
            store.path_for(uri)
