"""TFRecord framing: record scanning (Numba), CRC32C checks (hardware, `crc32c` package), writer.

A TFRecord file is a sequence of records:
    uint64 length (little endian) | uint32 masked_crc32c(length bytes) | payload | uint32 masked_crc32c(payload)
"""
from __future__ import annotations

import zlib
from typing import NamedTuple

import numpy as np
from numba import njit

from ..errors import Yt8mError
from .files import AtomicWriter, open_input, read_full
from .framing import MASK_DELTA, masked_crc, valid_header

# Framing status codes (shared with proto.py's record errors).
OK = 0
E_TRUNCATED = 1
E_LENGTH_CRC = 2
E_PAYLOAD_CRC = 3


@njit(cache=True, nogil=True)
def _scan(buf):
    """Walk the record headers. Returns header positions, payload offsets/lengths, stored CRCs, status."""
    n = buf.shape[0]
    cap = 1024
    out = np.empty((cap, 5), np.int64)  # header, offset, length, stored length crc, stored payload crc
    stat = np.zeros(cap, np.int32)
    k = 0
    pos = 0
    while pos < n:
        if k == cap:
            cap *= 2
            o2 = np.empty((cap, 5), np.int64)
            s2 = np.zeros(cap, np.int32)
            o2[:k] = out[:k]
            s2[:k] = stat[:k]
            out, stat = o2, s2
        out[k, 0] = pos
        out[k, 1] = pos
        out[k, 2] = n - pos
        out[k, 3] = -1
        out[k, 4] = -1
        if n - pos < 12:
            stat[k] = E_TRUNCATED
            k += 1
            break
        length = np.int64(0)
        for b in range(8):
            length |= np.int64(buf[pos + b]) << (8 * b)
        crc = np.int64(0)
        for b in range(4):
            crc |= np.int64(buf[pos + 8 + b]) << (8 * b)
        out[k, 3] = crc
        if length < 0 or length > n - pos - 16:
            stat[k] = E_TRUNCATED
            k += 1
            break
        start = pos + 12
        crc = np.int64(0)
        for b in range(4):
            crc |= np.int64(buf[start + length + b]) << (8 * b)
        out[k, 1] = start
        out[k, 2] = length
        out[k, 4] = crc
        k += 1
        pos = start + length + 4
    return out[:k], stat[:k]


def _crc_table() -> np.ndarray:
    t = np.zeros(256, np.uint32)
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        t[i] = c
    return t


_CRC_TABLE = _crc_table()


@njit(cache=True, nogil=True)
def _resync(buf, start, table):
    """The first position at or after start where a record header can begin: 8 length bytes whose masked
    CRC32C is the next 4 bytes (a false match in damaged data: 1 in 2^32 positions). -1: none."""
    for p in range(start, buf.shape[0] - 11):
        c = np.uint32(0xFFFFFFFF)
        for b in range(8):
            c = table[(c ^ np.uint32(buf[p + b])) & np.uint32(0xFF)] ^ (c >> np.uint32(8))
        c = c ^ np.uint32(0xFFFFFFFF)
        m = (((c >> np.uint32(15)) | (c << np.uint32(17))) + np.uint32(MASK_DELTA)) & np.uint32(0xFFFFFFFF)
        stored = np.uint32(buf[p + 8]) | (np.uint32(buf[p + 9]) << np.uint32(8)) | \
            (np.uint32(buf[p + 10]) << np.uint32(16)) | (np.uint32(buf[p + 11]) << np.uint32(24))
        if m == stored:
            return p
    return -1


def _scan_checked(buf: np.ndarray, check_crc: bool):
    rec, stat = _scan(buf)
    if check_crc:
        mv = memoryview(buf)
        for k, (hdr, off, ln, lcrc, pcrc) in enumerate(rec.tolist()):  # Python ints: a third faster
            if lcrc >= 0 and masked_crc(mv[hdr:hdr + 8]) != lcrc:
                stat[k] = E_LENGTH_CRC  # the length itself is untrustworthy: stop here
                rec, stat = rec[:k + 1], stat[:k + 1]
                rec[k, 1:3] = (hdr, buf.size - hdr)
                break
            if stat[k] == OK and masked_crc(mv[off:off + ln]) != pcrc:
                stat[k] = E_PAYLOAD_CRC
    return rec[:, 1].copy(), rec[:, 2].copy(), stat


def scan_records(buf: np.ndarray, check_crc: bool = True):
    """Find every record in a whole file's bytes.

    Returns (offsets, lengths, status): payload offset and length per record, and a status code
    (OK, E_PAYLOAD_CRC for a record whose framing is sound but whose payload is damaged, E_LENGTH_CRC for
    a damaged header: the bytes from it to the next valid header, where framing resumes (when CRCs are
    checked; to the end where none is found), or a final E_TRUNCATED entry: the file ends inside it).
    """
    parts = []
    base = 0
    while True:
        offs, lens, stat = _scan_checked(buf[base:], check_crc)
        offs += base
        parts.append((offs, lens, stat))
        if not (check_crc and stat.size and stat[-1] == E_LENGTH_CRC):
            break
        p = _resync(buf, int(offs[-1]) + 1, _CRC_TABLE)
        if p < 0:
            break
        lens[-1] = p - offs[-1]
        base = p
    if len(parts) == 1:
        return parts[0]
    return tuple(np.concatenate(x) for x in zip(*parts))


class _ZlibReader:
    """readinto over a ZLIB stream (TensorFlow's TFRecordOptions "ZLIB"), decompressed as it is read."""

    def __init__(self, f, chunk: int = 1 << 20):
        self.f, self.chunk, self.z, self.pending = f, chunk, zlib.decompressobj(), b""

    def readinto(self, view) -> int:
        while len(self.pending) < len(view) and not self.z.eof:
            raw = self.f.read(self.chunk)
            self.pending += self.z.decompress(raw) if raw else self.z.flush()
            if not raw:
                break
        n = min(len(view), len(self.pending))
        view[:n] = self.pending[:n]
        self.pending = self.pending[n:]
        return n

    def close(self) -> None:
        self.f.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _uncompressed(f, path: str):
    """(file, compressed) — a GZIP or ZLIB file (TensorFlow's TFRecordOptions; the framing inside is the
    same) is read through its decompressor. A file counts as compressed only when it does not open with
    a valid TFRecord header and does open with the GZIP or ZLIB magic."""
    head = f.read(12)
    f.seek(0)
    if valid_header(head):
        return f, False
    if head[:2] == b"\x1f\x8b":
        import gzip

        return gzip.GzipFile(fileobj=f, mode="rb"), True
    if len(head) >= 2 and head[0] == 0x78 and ((head[0] << 8) | head[1]) % 31 == 0:
        return _ZlibReader(f), True
    return f, False


class Block(NamedTuple):
    """Whole records of a file, as scan_records reports them over buf."""

    buf: np.ndarray       # the block's bytes (a view of the caller's buffer)
    offsets: np.ndarray   # payload offset of each record in buf
    lengths: np.ndarray
    status: np.ndarray    # framing status of each record
    first: int            # index in the file of the block's first record
    fresh: int            # bytes of the file read for this block (buf also holds the record carried over)


def record_blocks(path: str, take_buffer, block_bytes: int = 16 << 20, check_crc: bool = True):
    """A file's records in Blocks of whole records, read into buffers the caller recycles: memory stays
    bounded whatever the file size, and a reused buffer costs the OS no fresh zeroed pages.

    take_buffer(n) returns a uint8 array of at least n bytes. A record cut by the end of a block is
    carried to the next one (a record larger than a block gets a larger buffer); after a header whose
    length cannot be trusted (a length CRC mismatch) reading resumes at the next valid header.
    """
    try:
        f, size = open_input(path)
        f, compressed = _uncompressed(f, path)
    except OSError as e:
        raise Yt8mError(f"{path}: cannot read ({getattr(e, 'strerror', None) or e})") from None
    with f:
        tail = np.zeros(0, np.uint8)
        # bytes not read yet; unknown in a compressed stream, where a carried record's (unchecked) length
        # may ask for at most 256 MB more (a YouTube-8M record is under 1 MB): no absurd allocation
        left = (256 << 20) if compressed else size
        first = 0
        resync = False  # the tail is the end of a damaged region, not a record: look for a header in it
        while True:
            need = min(max(block_bytes, tail.size), tail.size + left)
            if tail.size >= 8 and not resync:  # a carried record that needs a larger buffer
                need = min(max(need, int.from_bytes(tail[:8].tobytes(), "little") + 16), tail.size + left)
            buf = take_buffer(max(need, 1))[:need]
            buf[:tail.size] = tail
            try:
                got = read_full(f, memoryview(buf)[tail.size:])
            except (OSError, EOFError, zlib.error) as e:  # EOFError / zlib.error: a damaged compressed stream
                what = "damaged compressed stream" if compressed and not isinstance(e, OSError) else "cannot read"
                raise Yt8mError(f"{path}: {what} ({getattr(e, 'strerror', None) or e})") from None
            if not compressed:
                left -= got
            n = tail.size + got
            at_end = got < need - tail.size or (not compressed and left <= 0)
            buf = buf[:n]
            offs, lens, status = scan_records(buf, check_crc)
            # damaged to the block's end: the next valid header may begin in its last 11 bytes
            damaged = int(offs[-1]) if check_crc and len(status) and status[-1] == E_LENGTH_CRC \
                and offs[-1] + lens[-1] == n else -1
            if resync and len(status) and status[0] == E_LENGTH_CRC and offs[0] == 0:
                offs, lens, status = offs[1:], lens[1:], status[1:]  # the same damaged region (counted once)
            tail = np.zeros(0, np.uint8)
            resync = False
            if not at_end and len(status) and status[-1] == E_TRUNCATED:  # cut by the block's end
                tail = buf[offs[-1]:].copy()
                offs, lens, status = offs[:-1], lens[:-1], status[:-1]
            elif not at_end and damaged >= 0:
                tail = buf[max(damaged + 1, n - 11):].copy()
                resync = True
            yield Block(buf, offs, lens, status, first, got)
            first += len(offs)
            if at_end or (not check_crc and len(status) and status[-1] == E_LENGTH_CRC):
                return


def frame_record(payload: bytes) -> bytes:
    """One TFRecord frame around payload."""
    head = len(payload).to_bytes(8, "little")
    return b"".join((head, masked_crc(head).to_bytes(4, "little"), payload, masked_crc(payload).to_bytes(4, "little")))


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
