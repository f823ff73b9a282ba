"""TFRecord framing: CRC32C, record scanning (Numba) and an atomic writer.

A TFRecord file is a sequence of records:
    uint64 length (little endian) | uint32 masked_crc32c(length bytes) | payload | uint32 masked_crc32c(payload)
"""
from __future__ import annotations

import os
import tempfile

import numpy as np
from numba import njit

from ..errors import Yt8mError


def _make_tables() -> np.ndarray:
    poly = 0x82F63B78
    t = np.zeros((8, 256), dtype=np.uint32)
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ poly if c & 1 else c >> 1
        t[0, i] = c
    for k in range(1, 8):
        for i in range(256):
            t[k, i] = (t[k - 1, i] >> 8) ^ t[0, t[k - 1, i] & 0xFF]
    return t


CRC_TABLES = _make_tables()
MASK_DELTA = 0xA282EAD8


@njit(cache=True, nogil=True)
def crc32c(buf, start, end, tables):
    """CRC32C of buf[start:end] (slice-by-8)."""
    crc = np.uint32(0xFFFFFFFF)
    i = start
    while i + 8 <= end:
        crc ^= np.uint32(buf[i]) | (np.uint32(buf[i + 1]) << 8) | (np.uint32(buf[i + 2]) << 16) | (np.uint32(buf[i + 3]) << 24)
        crc = (tables[7, crc & 0xFF] ^ tables[6, (crc >> 8) & 0xFF] ^ tables[5, (crc >> 16) & 0xFF]
               ^ tables[4, crc >> 24] ^ tables[3, buf[i + 4]] ^ tables[2, buf[i + 5]]
               ^ tables[1, buf[i + 6]] ^ tables[0, buf[i + 7]])
        i += 8
    while i < end:
        crc = tables[0, (crc ^ buf[i]) & 0xFF] ^ (crc >> 8)
        i += 1
    return crc ^ np.uint32(0xFFFFFFFF)


@njit(cache=True, nogil=True)
def masked_crc32c(buf, start, end, tables):
    c = crc32c(buf, start, end, tables)
    return np.uint32(((c >> np.uint32(15)) | (c << np.uint32(17))) + np.uint32(0xA282EAD8))


@njit(cache=True, nogil=True)
def _read_u32(buf, p):
    return np.uint32(buf[p]) | (np.uint32(buf[p + 1]) << 8) | (np.uint32(buf[p + 2]) << 16) | (np.uint32(buf[p + 3]) << 24)


# Framing status codes (shared with proto.py's record errors).
OK = 0
E_TRUNCATED = 1
E_LENGTH_CRC = 2
E_PAYLOAD_CRC = 3


@njit(cache=True, nogil=True)
def scan_records(buf, check_crc, tables):
    """Find every record in a whole file's bytes.

    Returns (offsets, lengths, status): payload offset and length per record, and a status code
    (OK, E_PAYLOAD_CRC for a record whose framing is sound but whose payload is damaged, or a final
    E_TRUNCATED / E_LENGTH_CRC entry after which the rest of the file cannot be framed).
    """
    n = buf.shape[0]
    cap = 1024
    offs = np.empty(cap, np.int64)
    lens = np.empty(cap, np.int64)
    stat = np.empty(cap, np.int32)
    k = 0
    pos = 0
    while pos < n:
        if k == cap:
            cap *= 2
            o2 = np.empty(cap, np.int64)
            l2 = np.empty(cap, np.int64)
            s2 = np.empty(cap, np.int32)
            o2[:k] = offs[:k]
            l2[:k] = lens[:k]
            s2[:k] = stat[:k]
            offs, lens, stat = o2, l2, s2
        offs[k] = pos
        lens[k] = n - pos
        if n - pos < 12:
            stat[k] = E_TRUNCATED
            k += 1
            break
        length = np.int64(0)
        for b in range(8):
            length |= np.int64(buf[pos + b]) << (8 * b)
        if check_crc and masked_crc32c(buf, pos, pos + 8, tables) != _read_u32(buf, pos + 8):
            stat[k] = E_LENGTH_CRC
            k += 1
            break
        if length < 0 or length > n - pos - 16:
            stat[k] = E_TRUNCATED
            k += 1
            break
        start = pos + 12
        offs[k] = start
        lens[k] = length
        if check_crc and masked_crc32c(buf, start, start + length, tables) != _read_u32(buf, start + length):
            stat[k] = E_PAYLOAD_CRC
        else:
            stat[k] = OK
        k += 1
        pos = start + length + 4
    return offs[:k], lens[:k], stat[:k]


def read_file_bytes(path: str) -> np.ndarray:
    try:
        return np.fromfile(path, dtype=np.uint8)
    except OSError as e:
        raise Yt8mError(f"{path}: cannot read ({e.strerror or e})") from None


def frame_record(payload: bytes) -> bytes:
    """One TFRecord frame around payload."""
    n = len(payload)
    head = np.frombuffer(n.to_bytes(8, "little"), np.uint8)
    body = np.frombuffer(payload, np.uint8)
    hcrc = int(masked_crc32c(head, 0, 8, CRC_TABLES))
    pcrc = int(masked_crc32c(body, 0, n, CRC_TABLES))
    return b"".join((head.tobytes(), hcrc.to_bytes(4, "little"), payload, pcrc.to_bytes(4, "little")))


class AtomicWriter:
    """Write a file under a temporary name in the target folder; rename into place on success only."""

    def __init__(self, path: str, mode: str = "wb"):
        self.path = path
        self.mode = mode
        self._f = None
        self._tmp = None

    def __enter__(self):
        folder = os.path.dirname(os.path.abspath(self.path))
        try:
            os.makedirs(folder, exist_ok=True)
            fd, self._tmp = tempfile.mkstemp(prefix="." + os.path.basename(self.path) + ".", suffix=".tmp", dir=folder)
        except OSError as e:
            raise Yt8mError(f"{self.path}: cannot write ({e.strerror or e})") from None
        self._f = os.fdopen(fd, self.mode, **({} if "b" in self.mode else {"encoding": "utf-8", "newline": ""}))
        return self._f

    def __exit__(self, exc_type, exc, tb):
        self._f.close()
        if exc_type is None:
            os.replace(self._tmp, self.path)
        else:
            try:
                os.unlink(self._tmp)
            except OSError:
                pass
        return False


class TFRecordWriter:
    """Writes framed records to a file atomically (the file appears only when closed without error)."""

    def __init__(self, path: str):
        self._atomic = AtomicWriter(path)
        self._f = self._atomic.__enter__()

    def write(self, payload: bytes) -> None:
        self._f.write(frame_record(payload))

    def close(self) -> None:
        self._atomic.__exit__(None, None, None)

    def abort(self) -> None:
        self._atomic.__exit__(RuntimeError, None, None)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.close()
        else:
            self.abort()
        return False
