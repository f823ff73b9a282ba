"""`yt8m-engine score`: the Kaggle 2019 segment metric of a submission against rated segments.

The ratings of `--eval_data_pattern` are read once into a binary label cache (keyed by the files'
paths, sizes and modification times, so it is rebuilt when they change) and reused afterwards.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass

import numpy as np
from numba import njit

from . import __version__
from . import format as fmt
from .errors import Yt8mError
from .io.proto import csr_bytes
from .io.reader import Reader, file_signature, resolve_files
from .io.tfrecord import AtomicWriter
from .kernels.metrics import segment_map
from .rank.submission import entry_key, id_hash, read_segment_submission


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


def cache_dir() -> str:
    base = os.environ.get("YT8M_ENGINE_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "yt8m-engine")
    return base


def _cache_path(files: list[str]) -> str:
    sig = [__version__] + [file_signature(f) for f in files]
    digest = hashlib.sha1(json.dumps(sig).encode()).hexdigest()[:20]
    return os.path.join(cache_dir(), f"ratings-{digest}.npz")


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
    cls_a = np.concatenate(cls) if cls else np.zeros(0, np.int64)
    start_a = np.concatenate(start) if start else np.zeros(0, np.int64)
    label_a = np.concatenate(label) if label else np.zeros(0, np.int8)
    raw = [i.encode() for i in ids]
    keys = _keys(*csr_bytes(raw), cls_a, start_a)
    order = np.argsort(keys, kind="stable")
    id_bytes, id_off = csr_bytes([raw[i] for i in order])  # ids in key order
    positives = np.bincount(cls_a[label_a == 1], minlength=fmt.NUM_CLASSES).astype(np.int64)
    if reader.corrupt:
        print(f"warning: skipped {reader.corrupt} corrupt records")
    return Ratings(keys[order], cls_a[order], start_a[order], label_a[order], id_off, id_bytes, positives)



def load_ratings(pattern: str, skip_corrupt: bool = False, use_cache: bool = True) -> tuple[Ratings, bool]:
    """Ratings of the files matching pattern, from the label cache when it is current. Returns (ratings, cached)."""
    files = resolve_files(pattern)
    path = _cache_path(files)
    if use_cache and os.path.exists(path):
        try:
            with np.load(path) as z:
                return Ratings(**{k: z[k] for k in Ratings.__dataclass_fields__}), True
        except (OSError, KeyError, ValueError):
            pass  # unreadable cache: rebuild it
    r = build_ratings(files, skip_corrupt)
    if use_cache:
        try:
            with AtomicWriter(path) as f:
                np.savez(f, **vars(r))
        except (OSError, Yt8mError):
            pass  # a read-only cache folder only costs speed
    return r, False


@njit(cache=True, nogil=True)
def match(sub_buf, e_key, e_cls, e_start, e_ida, e_idb, keys, cls, start, label, id_off, id_bytes):
    """Rating of each submission entry: 1 / 0, or -1 when (segment, class) is not rated."""
    n = e_key.shape[0]
    out = np.full(n, -1, np.int64)
    for i in range(n):
        j = np.searchsorted(keys, e_key[i])
        while j < keys.shape[0] and keys[j] == e_key[i]:
            if cls[j] == e_cls[i] and start[j] == e_start[i]:
                a = id_off[j]
                ln = id_off[j + 1] - a
                if ln == e_idb[i] - e_ida[i]:
                    same = True
                    for t in range(ln):
                        if id_bytes[a + t] != sub_buf[e_ida[i] + t]:
                            same = False
                            break
                    if same:
                        out[i] = label[j]
                        break
            j += 1
    return out


def score(submission: str, eval_data_pattern: str, top_n: int = 100000, segment_label_ids_file: str | None = None,
          skip_corrupt: bool = False, use_cache: bool = True) -> dict:
    """Kaggle 2019 MAP@top_n of a segment submission. Returns a dict with map, classes, top_n and details."""
    if top_n < 1:
        raise Yt8mError("--top_n must be at least 1")
    t0 = time.perf_counter()
    seg_ids = fmt.load_segment_label_ids(segment_label_ids_file)
    ratings, cached = load_ratings(eval_data_pattern, skip_corrupt, use_cache)
    t1 = time.perf_counter()
    sub = read_segment_submission(submission, seg_ids)
    t2 = time.perf_counter()
    lab = match(sub.buf, sub.entry_key, sub.entry_class, sub.entry_start, sub.entry_id_start, sub.entry_id_end,
                ratings.keys, ratings.cls, ratings.start, ratings.label, ratings.id_off, ratings.id_bytes)
    m, per_class = segment_map(sub.entry_class, sub.entry_rank, lab, ratings.positives, top_n, classes=sub.classes)
    t3 = time.perf_counter()
    return {
        "map": m,
        "classes": len(per_class),
        "top_n": int(top_n),
        "submitted_classes": int(sub.classes.size),
        "entries": int(sub.entry_class.size),
        "rated_entries": int((lab[sub.entry_rank < top_n] >= 0).sum()),
        "ratings": ratings.size,
        "label_cache": "reused" if cached else "built",
        "seconds": {"labels": round(t1 - t0, 3), "parse": round(t2 - t1, 3), "score": round(t3 - t2, 3)},
        "per_class": per_class,
    }
