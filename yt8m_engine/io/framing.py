"""TFRecord's record header without Numba: the masked CRC32C of the length, and a file's mean record
size read from its first headers (the training process uses it and never loads Numba).

A record is: uint64 length (little endian) | uint32 masked_crc32c(length bytes) | payload |
uint32 masked_crc32c(payload). tfrecord.py scans and writes whole files.
"""
from __future__ import annotations

from crc32c import crc32c as _crc32c

MASK_DELTA = 0xA282EAD8


def masked_crc(data) -> int:
    """TFRecord's masked CRC32C of a bytes-like object (hardware CRC32C from the `crc32c` package)."""
    c = _crc32c(data)
    return (((c >> 15) | (c << 17)) + MASK_DELTA) & 0xFFFFFFFF


def valid_header(head: bytes) -> bool:
    """Whether 12 bytes are a record header: a length and its masked CRC."""
    return len(head) == 12 and masked_crc(head[:8]) == int.from_bytes(head[8:12], "little")


def mean_record_bytes(path: str, records: int = 256) -> float | None:
    """The mean size of a file's first records (headers and CRCs included), from their headers; None
    where it cannot be read here (a URL without fsspec, a compressed or damaged file)."""
    from .files import open_input

    sizes = []
    try:
        f, _ = open_input(path)
        with f:
            while len(sizes) < records:
                head = f.read(12)
                if len(head) < 12:
                    break
                if not valid_header(head):
                    return None
                n = int.from_bytes(head[:8], "little")
                f.seek(n + 4, 1)
                sizes.append(n + 16)
    except Exception:  # noqa: BLE001 - the caller's default stands
        return None
    return sum(sizes) / len(sizes) if sizes else None
