"""`yt8m-engine score`: the Kaggle 2019 segment metric of a submission against rated segments.

The ratings of `--eval_data_pattern` are read once into a binary label cache (keyed by the files'
paths, sizes and modification times, so it is rebuilt when they change) and reused afterwards.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
import time
import zipfile
from dataclasses import dataclass

import numpy as np
from numba import njit, prange

from . import __version__
from . import format as fmt
from .errors import Yt8mError
from .io.proto import csr_bytes
from .io.files import AtomicWriter, cache_dir, file_signature, is_url, open_input, read_full, resolve_files
from .io.reader import Reader, note_lines
from .progress import Progress
from .results import ScoreResult
from .rank.submission import SEGMENT_HEADER, entry_key, id_hash


@dataclass
class Ratings:
    keys: np.ndarray        # uint64, sorted
    cls: np.ndarray         # int64
    start: np.ndarray       # int64
    label: np.ndarray       # int8 (1 positive, 0 negative)
    id_off: np.ndarray      # int64 [n + 1] into id_bytes, per rating
    id_bytes: np.ndarray    # uint8
    positives: np.ndarray   # int64 [num_classes]

    @property
    def size(self) -> int:
        return int(self.keys.size)


def _cache_key(files: list[str], skip_corrupt: bool) -> str:
    # --skip-corrupt is part of the key: ratings read past corrupt records never stand in for a run
    # without it (which must stop at the first corrupt record)
    sig = [__version__, bool(skip_corrupt)] + [file_signature(f) for f in files]
    return hashlib.sha1(json.dumps(sig).encode()).hexdigest()[:20]


@njit(cache=True)
def _keys(id_bytes, id_off, cls, start):
    out = np.empty(cls.shape[0], np.uint64)
    for i in range(cls.shape[0]):
        out[i] = entry_key(id_hash(id_bytes, id_off[i], id_off[i + 1]), cls[i], start[i])
    return out


def build_ratings(files: list[str], skip_corrupt: bool = False) -> Ratings:
    reader = Reader(segments=True, copy_frames=False, skip_corrupt=skip_corrupt)
    ids, cls, start, label = [], [], [], []
    for b in reader.read(files, batch_size=4096):
        counts = np.diff(b.segment_offsets)
        ids.extend(i for i, c in zip(b.ids, counts) for _ in range(c))
        cls.append(b.segment_labels)
        start.append(b.segment_starts)
        label.append((b.segment_scores > 0.5).astype(np.int8))
    if reader.corrupt:
        print(f"warning: skipped {reader.corrupt} corrupt records", file=sys.stderr)
    for line in note_lines(reader.notes):
        print(f"note: {line}", file=sys.stderr)
    return _ratings([i.encode() for i in ids], np.concatenate(cls) if cls else np.zeros(0, np.int64),
                    np.concatenate(start) if start else np.zeros(0, np.int64),
                    np.concatenate(label) if label else np.zeros(0, np.int8))


def _ratings(raw: list[bytes], cls_a, start_a, label_a) -> Ratings:
    """Ratings from one (video id, class, start frame, positive) per rated segment."""
    keys = _keys(*csr_bytes(raw), cls_a, start_a)
    order = np.argsort(keys, kind="stable")
    id_bytes, id_off = csr_bytes([raw[i] for i in order])  # ids in key order
    positives = np.bincount(cls_a[label_a == 1], minlength=fmt.NUM_CLASSES).astype(np.int64)
    return Ratings(keys[order], cls_a[order], start_a[order], label_a[order], id_off, id_bytes, positives)



def load_ratings(pattern: str, skip_corrupt: bool = False, use_cache: bool = True,
                 cache_file: str | None = None) -> tuple[Ratings, str, str]:
    """Ratings of the files matching pattern, from the label cache when it is current (it records the
    files' signatures it was built from). cache_file: the cache's path (default: one per file set in the
    cache folder); a label cache written by the starter's segment_eval_inference.py (text lines
    `video:start,class,score`) is read as the starter reads it. Returns (ratings, 'reused' / 'reused
    (starter's)' / 'built' / 'rebuilt (stale)' / 'not written' / 'off', the cache file)."""
    files = resolve_files(pattern)
    key = _cache_key(files, skip_corrupt)
    path = cache_file or os.path.join(cache_dir(), f"ratings-{key}.npz")
    state = "built"
    if use_cache and os.path.exists(path):
        try:
            with np.load(path) as z:
                if str(z["key"]) == key:
                    return Ratings(**{k: z[k] for k in Ratings.__dataclass_fields__}), "reused", path
                state = "rebuilt (stale)"
        except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile):
            starter = _starter_label_cache(path)
            if starter is not None:
                return starter, "reused (starter's)", path
            state = "rebuilt (unreadable)"
    r = build_ratings(files, skip_corrupt)
    if not use_cache:
        return r, "off", path
    try:
        with AtomicWriter(path) as f:
            np.savez(f, key=np.array(key), **vars(r))
    except (OSError, Yt8mError):
        return r, "not written", path  # a read-only cache folder only costs speed
    return r, state, path


def _starter_label_cache(path: str) -> Ratings | None:
    """The starter's text label cache (`video:start,class,score` a line), or None if the file is not one."""
    ids, cls, start, label = [], [], [], []
    try:
        with open(path, "rb") as f:
            for line in f:
                seg, c, sc = line.rstrip(b"\r\n").split(b",")
                vid, st = seg.rsplit(b":", 1)
                if vid.startswith(b"b'") and vid.endswith(b"'"):  # its Python 3 wrote ids as "b'abcd'"
                    vid = vid[2:-1]
                ids.append(vid)
                cls.append(int(c))
                start.append(int(st))
                label.append(float(sc) > 0.5)
    except (OSError, ValueError):
        return None
    if not ids or not all(0 <= c < fmt.NUM_CLASSES for c in cls):
        return None
    return _ratings(ids, np.array(cls, np.int64), np.array(start, np.int64), np.array(label, np.int8))


# -- the submission, streamed a block of whole lines at a time -------------------------------------
# line status codes
L_OK = 0
L_BLANK = 1
L_CLASS = 2          # no 'class,' prefix
L_UNKNOWN_CLASS = 3  # aux: the class
L_TOKEN = 4          # aux: byte position of the malformed id


@njit(cache=True)
def rating_table(keys):
    """Open-addressing table (power-of-two size, at most half full) of the rating index by key."""
    size = 16
    while size < 2 * keys.shape[0]:
        size *= 2
    table = np.full(size, -1, np.int64)
    mask = np.uint64(size - 1)
    for j in range(keys.shape[0]):
        h = keys[j] & mask
        while table[h] >= 0:
            h = (h + np.uint64(1)) & mask
        table[h] = j
    return table


@njit(cache=True, nogil=True, parallel=True)
def newlines(buf, n):
    """Positions of the b'\\n' bytes of buf[:n] (parts scanned in parallel, 64-byte runs without one skipped)."""
    parts = max(1, min(64, n >> 20))
    step = (n + parts - 1) // parts
    counts = np.zeros(parts + 1, np.int64)
    for p in prange(parts):
        c = 0
        for i in range(p * step, min(n, p * step + step)):
            c += buf[i] == 10
        counts[p + 1] = c
    off = np.cumsum(counts)
    out = np.empty(off[-1], np.int64)
    for p in prange(parts):
        a = p * step
        b = min(n, a + step)
        k = off[p]
        i = a
        while i < b:
            if i + 64 <= b:
                hit = False
                for j in range(64):
                    hit |= buf[i + j] == 10
                if not hit:
                    i += 64
                    continue
            if buf[i] == 10:
                out[k] = i
                k += 1
            i += 1
    return out


@njit(cache=True, nogil=True)
def _score_line(buf, a, e, allowed, top_n, table, keys, cls, start, label, id_off, id_bytes, seen, res, ap):
    """One 'class,vid:start vid:start ...' line: res = (status, class or position, ids, rated, hits), ap =
    the sum of precision@i over its positives among the rated (segment, class) pairs of its first top_n ids."""
    if e > a and buf[e - 1] == 13:
        e -= 1
    if e == a:
        res[0] = L_BLANK
        return
    c = 0
    q = a
    while q < e and 48 <= buf[q] <= 57 and c < 1 << 40:
        c = c * 10 + (buf[q] - 48)
        q += 1
    if q == a or q >= e or buf[q] != 44:
        res[0] = L_CLASS
        res[1] = q
        return
    if c >= allowed.shape[0] or not allowed[c]:
        res[0] = L_UNKNOWN_CLASS
        res[1] = c
        return
    res[1] = c
    q += 1
    mask = np.uint64(table.shape[0] - 1)
    rank = 0
    rated = 0
    hits = 0
    s_ap = 0.0
    while q < e:
        while q < e and buf[q] == 32:
            q += 1
        if q >= e:
            break
        ta = q
        while q < e and buf[q] != 32:
            q += 1
        colon = q - 1
        while colon > ta and buf[colon] != 58:
            colon -= 1
        if colon <= ta or colon == q - 1:
            res[0] = L_TOKEN
            res[1] = ta
            return
        s = 0
        for j in range(colon + 1, q):
            d = buf[j]
            if d < 48 or d > 57 or s > 1 << 40:
                res[0] = L_TOKEN
                res[1] = ta
                return
            s = s * 10 + (d - 48)
        if rank < top_n:
            k = entry_key(id_hash(buf, ta, colon), c, s)
            h = k & mask
            while table[h] >= 0:
                j = table[h]
                if keys[j] == k and cls[j] == c and start[j] == s and id_off[j + 1] - id_off[j] == colon - ta:
                    same = True
                    for t in range(colon - ta):
                        if id_bytes[id_off[j] + t] != buf[ta + t]:
                            same = False
                            break
                    if same:
                        if not seen[j]:  # a repeated id counts once, where it first stands
                            seen[j] = True
                            rated += 1
                            if label[j] == 1:
                                hits += 1
                                s_ap += hits / rated
                        break
                h = (h + np.uint64(1)) & mask
        rank += 1
    res[0] = L_OK
    res[2] = rank
    res[3] = rated
    res[4] = hits
    ap[0] = s_ap


@njit(cache=True, nogil=True, parallel=True)
def score_lines(buf, line_start, line_end, allowed, top_n, table, keys, cls, start, label, id_off, id_bytes, seen):
    """_score_line over a block's lines, in parallel. Returns (res [lines, 5], ap [lines])."""
    n = line_start.shape[0]
    res = np.zeros((n, 5), np.int64)
    ap = np.zeros(n, np.float64)
    for i in prange(n):
        _score_line(buf, line_start[i], line_end[i], allowed, top_n, table, keys, cls, start, label, id_off,
                    id_bytes, seen, res[i], ap[i:i + 1])
    return res, ap


def submission_lines(path: str, block_bytes: int = 64 << 20):
    """(buffer, line starts, line ends, number of the first line) for blocks of whole lines of a file: the
    next block is read by a helper thread while the caller works on this one. Memory: two blocks (a
    block grows only to hold a line longer than itself)."""
    from concurrent.futures import ThreadPoolExecutor

    try:
        f, _ = open_input(path)
    except OSError as e:
        raise Yt8mError(f"{path}: cannot read submission ({e.strerror or e})") from None
    bufs = [np.empty(block_bytes, np.uint8), np.empty(block_bytes, np.uint8)]
    line_no = 1
    with f, ThreadPoolExecutor(1) as pool:
        cur, carry = 0, 0
        pending = pool.submit(read_full, f, memoryview(bufs[cur]))
        while True:
            n = carry + pending.result()
            buf = bufs[cur]
            eof = n < buf.size
            nl = newlines(buf, n)
            if not eof and nl.size == 0:  # one line longer than the block: grow it
                bigger = np.empty(buf.size * 2, np.uint8)
                bigger[:n] = buf[:n]
                bufs[cur] = bigger
                carry = n
                pending = pool.submit(read_full, f, memoryview(bigger)[n:])
                continue
            ends = np.append(nl, n) if eof and n and buf[n - 1] != 10 else nl  # (a last line without \n)
            tail = 0 if eof else n - int(nl[-1]) - 1
            if not eof:  # the cut line goes first into the other buffer, which then reads on
                nxt = bufs[1 - cur]
                if nxt.size < max(block_bytes, 2 * tail):
                    nxt = bufs[1 - cur] = np.empty(max(block_bytes, 2 * tail), np.uint8)
                nxt[:tail] = buf[n - tail:n]
                pending = pool.submit(read_full, f, memoryview(nxt)[tail:])
            starts = np.empty(ends.size, np.int64)
            if ends.size:
                starts[0] = 0
                starts[1:] = ends[:-1] + 1
            yield buf, starts, ends, line_no
            line_no += ends.size
            if eof:
                return
            cur, carry = 1 - cur, tail


def _line_error(path: str, code: int, line: int, aux: int, buf, allowed) -> Yt8mError:
    where = f"{path}: line {line}"
    if code == L_CLASS:
        return Yt8mError(f"{where}: expected 'class,segment segment ...' with an integer class")
    if code == L_UNKNOWN_CLASS:
        return Yt8mError(f"{where}: class {aux} is not one of the {int(allowed.sum())} segment classes")
    tok = bytes(buf[aux:aux + 40]).split(b" ")[0].split(b"\n")[0].decode("utf-8", "replace")
    return Yt8mError(f"{where}: malformed segment id {tok!r} (expected video_id:start_frame)")


NO_CUT = 1 << 62  # top_n 0: every submitted segment counts


def score(submission: str, eval_data_pattern: str, top_n: int = 100000, segment_label_ids_file: str | None = None,
          skip_corrupt: bool = False, use_cache: bool = True, block_bytes: int = 64 << 20,
          progress: bool = False, cache_file: str | None = None) -> dict:
    """Kaggle 2019 MAP@top_n of a segment submission. Returns a dict with map, classes, top_n and details.

    The submission is streamed a block of whole lines at a time, each line (one class) parsed and matched
    against the ratings and reduced to its AP in one pass, lines in parallel: memory is the ratings plus
    two blocks, whatever the submission's size. A segment id repeated in a class's line counts once.
    """
    if top_n < 0:
        raise Yt8mError("--top_n must be at least 1 (or 0: no cut, as the starter's segment_eval_inference)")
    cut = top_n or NO_CUT
    t0 = time.perf_counter()
    seg_ids = fmt.load_segment_label_ids(segment_label_ids_file)
    ratings, cache_state, cache_path = load_ratings(eval_data_pattern, skip_corrupt, use_cache, cache_file)
    table = rating_table(ratings.keys)
    seen = np.zeros(ratings.size, np.bool_)
    allowed = np.zeros(fmt.NUM_CLASSES, np.bool_)
    allowed[np.asarray(seg_ids, np.int64)] = True
    t1 = time.perf_counter()
    submitted = np.zeros(fmt.NUM_CLASSES, np.bool_)
    ap_sum = np.zeros(fmt.NUM_CLASSES, np.float64)
    entries = rated = 0
    header = SEGMENT_HEADER.encode()
    try:
        size = os.path.getsize(submission) if not is_url(submission) else None
    except OSError:
        size = None
    prog = Progress("score", total=size, unit="B", enabled=progress)
    done = 0
    for buf, starts, ends, first in submission_lines(submission, block_bytes):
        done += int(ends[-1]) + 1 if ends.size else 0
        prog.update(min(done, size or done), lines=first + ends.size - 1)
        if first == 1:
            if starts.size == 0 or bytes(buf[starts[0]:ends[0]]).rstrip(b"\r") != header:
                raise Yt8mError(f"{submission}: line 1: the header must be '{SEGMENT_HEADER}'")
            starts, ends, first = starts[1:], ends[1:], 2
        res, ap = score_lines(buf, starts, ends, allowed, cut, table, ratings.keys, ratings.cls, ratings.start,
                              ratings.label, ratings.id_off, ratings.id_bytes, seen)
        bad = np.flatnonzero((res[:, 0] != L_OK) & (res[:, 0] != L_BLANK))
        ok = np.flatnonzero(res[:, 0] == L_OK)
        c = res[ok, 1]
        taken = submitted.copy()  # the first class line met again, in file order
        dup_at = None
        for i, cc in zip(ok.tolist(), c.tolist()):
            if taken[cc]:
                dup_at = i
                break
            taken[cc] = True
        if bad.size and (dup_at is None or bad[0] < dup_at):  # the first problem in file order
            i = int(bad[0])
            raise _line_error(submission, int(res[i, 0]), first + i, int(res[i, 1]), buf, allowed)
        if dup_at is not None:
            raise Yt8mError(f"{submission}: line {first + dup_at}: class {int(res[dup_at, 1])} "
                            "appears on more than one line")
        submitted[c] = True
        ap_sum[c] = ap[ok]
        entries += int(res[ok, 2].sum())
        rated += int(res[ok, 3].sum())
    prog.close()
    t2 = time.perf_counter()
    classes = np.flatnonzero(submitted & (ratings.positives > 0))
    aps = ap_sum[classes] / np.minimum(ratings.positives[classes], cut)
    per_class = {int(k): float(v) for k, v in zip(classes, aps)}
    return ScoreResult({
        "map": float(aps.mean()) if aps.size else 0.0,
        "classes": int(classes.size),
        "top_n": int(top_n),
        "submitted_classes": int(submitted.sum()),
        "entries": entries,
        "rated_entries": rated,
        "ratings": ratings.size,
        "label_cache": cache_state,
        "label_cache_file": cache_path,
        "seconds": {"labels": round(t1 - t0, 3), "score": round(t2 - t1, 3)},
        "per_class": per_class,
    })
