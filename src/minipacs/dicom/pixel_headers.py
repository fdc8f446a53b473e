"""A small in-process cache of where a stored instance's pixel data is.

A viewer asks for the frames of the same instances over and over (scrolling a stack,
changing the window); each frame request used to parse the Part-10 header again to find
the Pixel Data element (`frames.stored_pixels`: ~10 % of a frame request's CPU). The
header of a stored blob never changes while its content does not, so the parsed header
and the offset of its Pixel Data element are kept here, keyed by the blob key AND the
SHA-256 the index holds for it: a blob rewritten with other bytes (reconciliation,
re-ingest) has another digest, so it is never answered from an old entry.

Bounded: at most `MAX_ENTRIES` headers, least recently used dropped first, and only
headers shorter than `MAX_HEADER_BYTES` (an instance with a large header is parsed each
time, as before). Thread-safe; nothing here is shared between processes.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import BinaryIO

from minipacs.dicom.frames import StoredPixels, stored_pixels

MAX_ENTRIES = 256
MAX_HEADER_BYTES = 64 * 1024

_lock = threading.Lock()
_entries: OrderedDict[tuple[str, str], tuple[StoredPixels, int]] = OrderedDict()


def pixels_of(fh: BinaryIO, blob_key: str, sha256: str) -> tuple[StoredPixels, int]:
    """`stored_pixels(fh)` and the file offset of the Pixel Data element (where the
    header parse stopped), from the cache when this blob's header was read before.

    Leaves `fh`'s position unspecified: callers seek before reading pixels."""
    key = (blob_key, sha256)
    with _lock:
        hit = _entries.get(key)
        if hit is not None:
            _entries.move_to_end(key)
            return hit
    pixels = stored_pixels(fh)  # raises NotFound for no pixel data: not cached
    pixel_data_at = fh.tell()  # where the header parse left the file
    if sha256 and pixel_data_at <= MAX_HEADER_BYTES:
        # Shared between threads as is: pydicom converts a raw element on first access
        # and stores the result, and two threads doing so at once store equal values.
        with _lock:
            _entries[key] = (pixels, pixel_data_at)
            while len(_entries) > MAX_ENTRIES:
                _entries.popitem(last=False)
    return pixels, pixel_data_at


def forget_all() -> None:
    """Drop every entry (tests; a process that wants its memory back)."""
    with _lock:
        _entries.clear()
