"""Kaggle submission CSVs: segment (`Class,Segments`) and video (`VideoId,LabelConfidencePairs`).

Segment ids are `video:start_frame`. `score` matches submitted ids to ratings by a 64-bit key of the
video id, the class and the start frame (`entry_key`), then verifies them byte for byte.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from ..errors import Yt8mError
from ..io.proto import csr_bytes
from .keys import key_file, key_record, key_start

SEGMENT_HEADER = "Class,Segments"
VIDEO_HEADER = "VideoId,LabelConfidencePairs"


@njit(cache=True, nogil=True, inline="always")
def id_hash(buf, a, b):
    """FNV-1a 64 of buf[a:b]."""
    h = np.uint64(0xCBF29CE484222325)
    for i in range(a, b):
        h = (h ^ np.uint64(buf[i])) * np.uint64(0x100000001B3)
    return h


@njit(cache=True, nogil=True, inline="always")
def entry_key(h, cls, start):
    """Mix (video-id hash, class, start frame) into one 64-bit key (verified exactly on a match)."""
    k = h ^ (np.uint64(cls) * np.uint64(0x9E3779B97F4A7C15))
    k = (k ^ (k >> np.uint64(29))) * np.uint64(0xBF58476D1CE4E5B9)
    k = k ^ (np.uint64(start) * np.uint64(0x94D049BB133111EB))
    return k ^ (k >> np.uint64(32))


@njit(cache=True, nogil=True)
def _id_hashes(off, data):
    out = np.empty(off.shape[0] - 1, np.uint64)
    for i in range(out.shape[0]):
        out[i] = id_hash(data, off[i], off[i + 1])
    return out


# -- writers -------------------------------------------------------------------------------------
class IdTable:
    """Video ids of the processed files, addressable by segment key (file index, record index in file).

    A file's ids are a list indexed by record; records never added (skipped corrupt ones) hold b"".
    Batches of a file may be added in any order (several workers read one file).
    """

    def __init__(self, num_files: int):
        self.num_files = num_files
        self.by_file: dict[int, list[bytes]] = {}

    def add(self, file_index: int, records: np.ndarray, ids: list[str]) -> None:
        """The ids of records (their indices in file file_index)."""
        rows = self.by_file.setdefault(file_index, [])
        end = int(records.max(initial=-1)) + 1
        if len(rows) < end:
            rows.extend([b""] * (end - len(rows)))
        for r, i in zip(records.tolist(), ids):
            rows[r] = i.encode()

    def update(self, other: "IdTable") -> None:
        for f, ids in other.by_file.items():
            if f in self.by_file:
                raise Yt8mError(f"file index {f} appears in two partial rankings (overlapping shards?)")
            self.by_file[f] = ids

    def arrays(self):
        file_base = np.full(self.num_files, -1, np.int64)
        rows: list[bytes] = []
        for f in sorted(self.by_file):
            file_base[f] = len(rows)
            rows.extend(self.by_file[f])
        data, off = csr_bytes(rows)
        return file_base, off, data

    def to_arrays(self) -> dict:
        files = np.array(sorted(self.by_file), np.int64)
        counts = np.array([len(self.by_file[f]) for f in files], np.int64)
        data, off = csr_bytes([i for f in files for i in self.by_file[int(f)]])
        return {"id_files": files, "id_counts": counts, "id_off": off, "id_bytes": data}

    def duplicates(self) -> tuple[int, str]:
        """(records whose id an earlier record of the table already has, one such id): the same video
        in two files, or twice in one, is written twice. Hashes sorted, equal neighbours compared."""
        _, off, data = self.arrays()
        h = _id_hashes(off, data)
        order = np.argsort(h, kind="stable")
        hs = h[order]
        same = np.flatnonzero(hs[1:] == hs[:-1])
        count, example = 0, ""
        raw = data.tobytes()
        for i in same.tolist():
            a, b = int(order[i]), int(order[i + 1])
            ia, ib = raw[off[a]:off[a + 1]], raw[off[b]:off[b + 1]]
            if ia and ia == ib:
                count += 1
                example = example or ia.decode("ascii", "backslashreplace")
        return count, example

    @classmethod
    def from_arrays(cls, num_files: int, d) -> "IdTable":
        t = cls(num_files)
        raw = d["id_bytes"].tobytes()
        off = d["id_off"]
        r = 0
        for f, c in zip(d["id_files"], d["id_counts"]):
            t.by_file[int(f)] = [raw[off[i]:off[i + 1]] for i in range(r, r + int(c))]
            r += int(c)
        return t


@njit(cache=True, nogil=True)
def _ndigits(v):
    d = 1
    while v >= 10:
        v //= 10
        d += 1
    return d


@njit(cache=True, nogil=True)
def _put_int(out, p, v):
    d = _ndigits(v)
    for i in range(d - 1, -1, -1):
        out[p + i] = 48 + v % 10
        v //= 10
    return p + d


@njit(cache=True, nogil=True, inline="always")
def _entry(k, file_base, id_off):
    """(id start, id end, start frame) of segment key k in the id table."""
    row = file_base[key_file(k)] + key_record(k)
    return id_off[row], id_off[row + 1], key_start(k)


@njit(cache=True, nogil=True, parallel=True)
def _segment_lines(classes, keys, counts, file_base, id_off, id_bytes, out, line_off, write):
    """Lines 'class,vid:start vid:start ...\n' for classes in the given order, each class's line in
    parallel. write=False: line sizes into line_off[1:]; write=True: the lines at line_off into out."""
    for li in prange(classes.shape[0]):
        j = classes[li, 1]
        if not write:
            size = _ndigits(classes[li, 0]) + 2 + max(counts[j] - 1, 0)
            for i in range(counts[j]):
                a, b, start = _entry(keys[j, i], file_base, id_off)
                size += b - a + 1 + _ndigits(start)
            line_off[li + 1] = size
            continue
        p = _put_int(out, line_off[li], classes[li, 0])
        out[p] = 44
        p += 1
        for i in range(counts[j]):
            a, b, start = _entry(keys[j, i], file_base, id_off)
            if i > 0:
                out[p] = 32
                p += 1
            for t in range(a, b):
                out[p] = id_bytes[t]
                p += 1
            out[p] = 58
            p = _put_int(out, p + 1, start)
        out[p] = 10


def write_segment_csv(f, class_ids: np.ndarray, keys: np.ndarray, counts: np.ndarray, ids: IdTable,
                      group_bytes: int = 64 << 20) -> int:
    """Write the Kaggle segment submission to the binary file f: header, then one line per class in
    ascending id. The lines are formatted (classes in parallel) a group of about group_bytes at a time
    into two reused buffers, one written by a helper thread while the next is formatted: memory stays
    small (not the whole ~1 GB file) and formatting overlaps the writing. Returns the bytes written."""
    from concurrent.futures import ThreadPoolExecutor

    order = np.argsort(class_ids, kind="stable")
    classes = np.stack([np.asarray(class_ids, np.int64)[order], order.astype(np.int64)], axis=1)
    file_base, id_off, id_bytes = ids.arrays()
    sizes = np.zeros(classes.shape[0] + 1, np.int64)
    _segment_lines(classes, keys, counts, file_base, id_off, id_bytes, np.zeros(0, np.uint8), sizes, False)
    sizes = sizes[1:]
    header = (SEGMENT_HEADER + "\n").encode()
    f.write(header)
    bufs = [np.empty(0, np.uint8), np.empty(0, np.uint8)]
    pending = None
    with ThreadPoolExecutor(1) as pool:
        a = g = 0
        while a < len(sizes):
            b = a + 1  # at least one line, however long
            total = int(sizes[a])
            while b < len(sizes) and total + sizes[b] <= group_bytes:
                total += int(sizes[b])
                b += 1
            buf = bufs[g % 2]  # its last group (g - 2) was written before group g - 1 was handed over
            if buf.size < total:
                buf = bufs[g % 2] = np.empty(max(total, min(group_bytes, int(sizes.sum()))), np.uint8)
            line_off = np.zeros(b - a + 1, np.int64)
            np.cumsum(sizes[a:b], out=line_off[1:])
            _segment_lines(classes[a:b], keys, counts, file_base, id_off, id_bytes, buf, line_off, True)
            if pending is not None:
                pending.result()  # the other buffer is written: free for the next group
            pending = pool.submit(f.write, memoryview(buf)[:total])
            a, g = b, g + 1
        if pending is not None:
            pending.result()
    return len(header) + int(sizes.sum())


def video_csv_lines(ids: list[str], classes: np.ndarray, scores: np.ndarray) -> str:
    """'VideoId,LabelConfidencePairs' lines: top-k classes and scores, by descending score."""
    return "".join(f"{vid}," + " ".join(f"{int(c)} {float(s):.6f}" for c, s in zip(cr, sr)) + "\n"
                   for vid, cr, sr in zip(ids, classes, scores))
