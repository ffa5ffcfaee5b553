"""Blob stores: where model and update bytes live. The one home of IPFS client code (a Kubo store joins here)."""

from storage.base import BlobIntegrityError, BlobNotFound, BlobRef, BlobStore, StorageError, StorageUnavailable
from storage.local import LocalBlobStore

__all__ = [
    "BlobIntegrityError",
    "BlobNotFound",
    "BlobRef",
    "BlobStore",
    "LocalBlobStore",
    "StorageError",
    "StorageUnavailable",
]
