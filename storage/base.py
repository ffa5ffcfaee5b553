"""The blob store protocol and its errors.

Every read is checked against the content hash committed on-chain (sha256 of the canonical bytes), whatever the
URI or CID says: the URI says where bytes are, the hash says which bytes are meant.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Protocol


class StorageError(Exception):
    """Root of blob store errors."""


class BlobNotFound(StorageError):
    def __init__(self, uri: str) -> None:
        super().__init__(f"no blob at {uri}")
        self.uri = uri


class StorageUnavailable(StorageError):
    """The store itself cannot be reached (daemon down, disk gone)."""


class BlobIntegrityError(StorageError):
    def __init__(self, uri: str, expected: bytes, actual: bytes) -> None:
        super().__init__(f"blob {uri} hashes to 0x{actual.hex()}, committed hash is 0x{expected.hex()}")
        self.uri = uri
        self.expected = expected
        self.actual = actual


@dataclass(frozen=True)
class BlobRef:
    content_hash: bytes  # sha256 of the bytes, 32 bytes
    uri: str  # store-specific address: "fedblob:sha256:<hex>" locally, an IPFS CID on Kubo


class BlobStore(Protocol):
    @property
    def location(self) -> str:
        """Where blobs live, for people (a directory, a Kubo API address)."""
        ...

    def put(self, data: bytes) -> BlobRef: ...

    def get(self, uri: str, expected_hash: bytes) -> bytes:
        """Bytes at ``uri``; raises BlobIntegrityError unless they hash to ``expected_hash``."""
        ...


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def check_integrity(uri: str, data: bytes, expected_hash: bytes) -> bytes:
    actual = sha256(data)
    if actual != expected_hash:
        raise BlobIntegrityError(uri, expected_hash, actual)
    return data
