"""Where results live: a local folder, or an S3-compatible bucket. One interface
(`Storage`); `build_storage` picks by the settings."""

from __future__ import annotations

from datetime import timedelta

from imagine.config import Settings
from imagine.storage.base import FileInfo, Storage, StorageError
from imagine.storage.local import LocalStorage
from imagine.storage.names import CONTENT_TYPES, FILES_PREFIX
from imagine.storage.s3 import S3Storage

__all__ = [
    "CONTENT_TYPES",
    "FILES_PREFIX",
    "FileInfo",
    "LocalStorage",
    "S3Storage",
    "Storage",
    "StorageError",
    "build_storage",
]


def build_storage(settings: Settings, public_url: str) -> Storage:
    """The configured storage; `public_url` is the base of this server's `/files/` URLs."""
    location = settings.s3_location
    if location is None:
        return LocalStorage(settings.files_dir, public_url)
    bucket, prefix = location
    seconds = settings.storage_presign_seconds
    return S3Storage.connect(
        bucket,
        prefix,
        endpoint_url=settings.s3_endpoint_url,
        region=settings.s3_region,
        files_url=public_url,
        public_url=settings.storage_public_url,
        presign=None if seconds is None else timedelta(seconds=seconds),
    )
