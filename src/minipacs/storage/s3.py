"""Blobs as objects in one S3 bucket (MinIO in production), through the `minio` client.

Only the plain S3 API is used (PutObject, multipart upload, GetObject with Range,
HeadObject, DeleteObject, ListObjectsV2, CreateBucket), so MinIO, AWS S3, Ceph RGW and the
test suite's moto server behave alike. S3 makes an object visible only once its PUT (or
the CompleteMultipartUpload) succeeded and after acknowledging it keeps it durably, which
is exactly the `BlobStore` contract: nothing half-written is ever visible.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO, cast
from urllib.parse import urlsplit

import urllib3
from minio import Minio
from minio.error import MinioException, S3Error

from minipacs.config import Settings
from minipacs.errors import NotFound, StorageError
from minipacs.storage.base import BlobStat
from minipacs.storage.keys import check_key

# Objects above this go up in parts of this size, S3's minimum, so a multi-frame instance
# of hundreds of MB never sits in memory whole: the client holds one part (and its
# signature hash) per upload at a time.
PART_SIZE = 5 * 1024 * 1024
_MISSING = {"NoSuchKey", "NoSuchObject", "NotFound", "ResourceNotFound"}


class _SeekableObject(io.RawIOBase):
    """An object as a seekable file: reads stream from one GetObject at the current
    position; a seek drops it and the next read opens a ranged GetObject from there. So a
    frame of a 1 GB multi-frame costs its own bytes, not the object's, and a sequential
    read is still one request."""

    def __init__(self, store: S3Store, key: str, size: int) -> None:
        self._store, self._key, self._size = store, key, size
        self._pos = 0
        self._response: Any = None

    @property
    def name(self) -> str:
        """What readers (pydicom among them) show for the file: its key."""
        return self._key

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        target = {io.SEEK_SET: offset, io.SEEK_CUR: self._pos + offset,
                  io.SEEK_END: self._size + offset}[whence]
        if target < 0:
            raise ValueError(f"negative seek position {target}")
        if target != self._pos:
            self._drop()
            self._pos = target
        return self._pos

    def readinto(self, buffer: Any) -> int:
        if self._pos >= self._size:
            return 0
        if self._response is None:
            self._response = self._store._get(self._key, offset=self._pos)
        try:
            data = self._response.read(len(buffer))
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            self._drop()
            raise self._store._fail("read", self._key, exc) from exc
        buffer[: len(data)] = data
        self._pos += len(data)
        return len(data)

    def _drop(self) -> None:
        if self._response is not None:
            self._response.close()
            self._response.release_conn()
            self._response = None

    def close(self) -> None:
        if not self.closed:
            self._drop()
        super().close()


class S3Store:
    """Each blob is one object `key` in `bucket`; the bucket is created when missing."""

    def __init__(
        self,
        endpoint: str,
        access_key: str,
        secret_key: str,
        bucket: str,
        *,
        secure: bool = False,
        region: str | None = None,
        connect_timeout: float = 5.0,
        read_timeout: float = 60.0,
        retries: int = 3,
    ) -> None:
        if "://" in endpoint:  # accept http://host:port too
            parts = urlsplit(endpoint)
            endpoint, secure = parts.netloc, parts.scheme == "https"
        self.endpoint = endpoint
        self.bucket = bucket
        http = urllib3.PoolManager(
            timeout=urllib3.Timeout(connect=connect_timeout, read=read_timeout),
            maxsize=32,
            retries=urllib3.Retry(
                total=retries, backoff_factor=0.2, status_forcelist=(500, 502, 503, 504)
            ),
        )
        self.client = Minio(endpoint, access_key=access_key, secret_key=secret_key,
                            secure=secure, region=region, http_client=http)
        self._ensure_bucket()

    @classmethod
    def from_settings(cls, settings: Settings) -> S3Store:
        missing = [name for name in ("s3_endpoint", "s3_access_key", "s3_secret_key")
                   if not getattr(settings, name)]
        if missing:
            names = ", ".join("MINIPACS_" + n.upper() for n in missing)
            raise StorageError(f"storage is 's3' but {names} is not set; set it (or use "
                               "MINIPACS_STORAGE=folder)")
        assert settings.s3_endpoint and settings.s3_access_key and settings.s3_secret_key
        return cls(settings.s3_endpoint, settings.s3_access_key, settings.s3_secret_key,
                   settings.s3_bucket, secure=settings.s3_secure, region=settings.s3_region)

    def __repr__(self) -> str:
        return f"S3Store({self.endpoint!r}, bucket={self.bucket!r})"

    def _fail(self, action: str, key: str, exc: Exception) -> StorageError:
        return StorageError(
            f"could not {action} {key} in bucket {self.bucket} at {self.endpoint}: {exc}; "
            "check that the S3 endpoint is up and MINIPACS_S3_* are right"
        )

    def _ensure_bucket(self) -> None:
        try:
            if not self.client.bucket_exists(self.bucket):
                self.client.make_bucket(self.bucket)
        except S3Error as exc:
            if exc.code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                raise self._fail("create bucket", self.bucket, exc) from exc
        except (MinioException, urllib3.exceptions.HTTPError, OSError, ValueError) as exc:
            raise self._fail("reach bucket", self.bucket, exc) from exc

    def put(self, key: str, data: bytes | Path, *, durable: bool = True,
            take: bool = False) -> None:
        # An S3 PUT is durable once answered: `durable` and `take` change nothing here.
        check_key(key)
        try:
            if isinstance(data, Path):
                # Streams the file; multipart above PART_SIZE.
                self.client.fput_object(self.bucket, key, str(data), part_size=PART_SIZE,
                                        content_type="application/dicom")
            else:
                self.client.put_object(self.bucket, key, io.BytesIO(data), len(data),
                                       part_size=PART_SIZE, content_type="application/dicom")
        except (MinioException, urllib3.exceptions.HTTPError, OSError, ValueError) as exc:
            raise self._fail("write", key, exc) from exc

    def _get(self, key: str, offset: int = 0, length: int = 0) -> Any:
        check_key(key)
        try:
            return self.client.get_object(self.bucket, key, offset=offset, length=length)
        except S3Error as exc:
            if exc.code in _MISSING:
                raise NotFound(f"blob {key} is missing from bucket {self.bucket}") from exc
            raise self._fail("read", key, exc) from exc
        except (MinioException, urllib3.exceptions.HTTPError, OSError, ValueError) as exc:
            raise self._fail("read", key, exc) from exc

    def open(self, key: str) -> BinaryIO:
        """The object as a seekable, buffered file (ranged reads after a seek)."""
        size = self.stat(key).size
        return cast(BinaryIO, io.BufferedReader(_SeekableObject(self, key, size),
                                                PART_SIZE // 4))

    def read(self, key: str) -> bytes:
        return b"".join(self.iter_chunks(key))

    def read_range(self, key: str, offset: int, length: int) -> bytes:
        """`length` bytes from `offset` (an HTTP Range GET; the object is not fetched whole)."""
        return b"".join(self._stream(self._get(key, offset, length), 1024 * 1024, key))

    def iter_chunks(self, key: str, chunk_size: int = 1024 * 1024) -> Iterator[bytes]:
        return self._stream(self._get(key), chunk_size, key)

    def _stream(self, response: Any, chunk_size: int, key: str) -> Iterator[bytes]:
        try:
            yield from response.stream(chunk_size)
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise self._fail("read", key, exc) from exc
        finally:
            response.close()
            response.release_conn()

    def stat(self, key: str) -> BlobStat:
        check_key(key)
        try:
            info = self.client.stat_object(self.bucket, key)
        except S3Error as exc:
            if exc.code in _MISSING:
                raise NotFound(f"blob {key} is missing from bucket {self.bucket}") from exc
            raise self._fail("stat", key, exc) from exc
        except (MinioException, urllib3.exceptions.HTTPError, OSError, ValueError) as exc:
            raise self._fail("stat", key, exc) from exc
        return BlobStat(key, int(info.size or 0))

    def exists(self, key: str) -> bool:
        try:
            self.stat(key)
        except NotFound:
            return False
        return True

    def delete(self, key: str) -> None:
        check_key(key)
        try:
            self.client.remove_object(self.bucket, key)  # no error when already gone
        except (MinioException, urllib3.exceptions.HTTPError, OSError, ValueError) as exc:
            raise self._fail("delete", key, exc) from exc

    def keys(self, prefix: str = "") -> Iterator[str]:
        try:
            for obj in self.client.list_objects(self.bucket, prefix=prefix or None,
                                                recursive=True):
                if obj.object_name is not None:
                    yield obj.object_name
        except (MinioException, urllib3.exceptions.HTTPError, OSError, ValueError) as exc:
            raise self._fail("list", prefix or "/", exc) from exc
