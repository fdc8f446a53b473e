"""Blob stores: where the bytes of every instance live, exactly as received."""

from __future__ import annotations

from minipacs.config import Settings
from minipacs.storage.base import BlobStat, BlobStore
from minipacs.storage.filesystem import FilesystemStore
from minipacs.storage.keys import instance_key

__all__ = ["BlobStat", "BlobStore", "FilesystemStore", "instance_key", "create_store"]


def create_store(settings: Settings) -> BlobStore:
    """The blob store the settings ask for."""
    if settings.storage == "s3":
        from minipacs.storage.s3 import S3Store  # imported lazily: only S3 deployments need it

        store: BlobStore = S3Store.from_settings(settings)
        if settings.s3_spool:
            from minipacs.storage.spool import SpooledStore

            spool = FilesystemStore(settings.data_dir / "spool")
            return SpooledStore(spool, store, workers=settings.s3_upload_workers)
        return store
    return FilesystemStore(settings.blob_dir)
