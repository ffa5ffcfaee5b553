"""A content-addressed directory: the embedded stack's blob store.

Layout: ``<root>/sha256/<first two hex>/<hex>``; URIs are ``fedblob:sha256:<hex>``. Writes go to a temporary
file and are renamed into place, so a crash never leaves a partial blob under a valid name.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

from storage.base import BlobNotFound, BlobRef, StorageError, check_integrity, sha256

URI_PREFIX = "fedblob:sha256:"
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


class LocalBlobStore:
    uri_scheme = "fedblob"  # storage.cids.uri_for computes its URIs without the store

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        (self.root / "sha256").mkdir(parents=True, exist_ok=True)

    def path_for(self, uri: str) -> Path:
        if not uri.startswith(URI_PREFIX) or not _HEX64.match(uri[len(URI_PREFIX) :]):
            raise StorageError(f"not a local blob URI: {uri!r} (expected {URI_PREFIX}<64 hex digits>)")
        digest = uri[len(URI_PREFIX) :]
        return self.root / "sha256" / digest[:2] / digest

    @property
    def location(self) -> str:
        return str(self.root)

    def put(self, data: bytes) -> BlobRef:
        digest = sha256(data)
        uri = URI_PREFIX + digest.hex()
        path = self.path_for(uri)
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".incoming-")
            try:
                with os.fdopen(fd, "wb") as fh:
                    fh.write(data)
                os.replace(tmp, path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        return BlobRef(content_hash=digest, uri=uri)

    def get(self, uri: str, expected_hash: bytes) -> bytes:
        path = self.path_for(uri)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise BlobNotFound(uri) from None
        return check_integrity(uri, data, expected_hash)
