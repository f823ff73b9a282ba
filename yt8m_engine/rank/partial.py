"""Partial rankings: what one shard of `infer` produces, merged into the final submission.

A segment partial is a per-class top-N (scores, keys, counts) plus the ids of the videos of its files;
a video partial is the CSV text of its files. Keys and file indices are global (the sorted list of all
input files), so merging any split of the files reproduces a single run byte for byte.
"""
from __future__ import annotations

import io
import json
import zipfile
from dataclasses import dataclass, field

import numpy as np
from numba import njit

from .. import format as fmt
from ..errors import Yt8mError
from ..io.files import AtomicWriter
from .keys import MAX_FILES, key_file, key_record
from .submission import VIDEO_HEADER, IdTable, write_segment_csv
from .topn import TopN, merge_rankings


@dataclass
class Partial:
    kind: str                      # "segment" or "video"
    num_files: int
    top_n: int = 0
    class_ids: np.ndarray | None = None
    ranking: tuple | None = None   # (scores [J, M], keys [J, M], counts [J]) for segment partials:
    #                                each row valid up to its count
    ids: IdTable | None = None
    video_text: dict = field(default_factory=dict)  # file index -> CSV lines of its videos
    fingerprint: dict = field(default_factory=dict)  # what made it: model file hash, input files, options
    shard: tuple = (0, 1)                           # (i, n) of infer --shard i/n

    @classmethod
    def from_topn(cls, topn: TopN, class_ids, ids: IdTable, num_files: int) -> "Partial":
        return cls("segment", num_files, topn.n, np.asarray(class_ids, np.int64), topn.result(), ids)

    def to_arrays(self) -> dict:
        d = {"kind": np.array(self.kind), "num_files": np.array(self.num_files), "top_n": np.array(self.top_n),
             "fingerprint": np.array(json.dumps(self.fingerprint, sort_keys=True)),
             "shard": np.array(self.shard, np.int64), **self.ids.to_arrays()}
        if self.kind == "segment":
            s, k, c = self.ranking
            if int(np.sum(c)) < s.size // 2:  # rows differ widely in length (top-k mode): each class's
                valid = np.arange(s.shape[1])[None, :] < np.asarray(c)[:, None]  # entries, concatenated
                s, k = s[valid], k[valid]
            else:  # rows nearly full (all-classes mode): as they are, with no copy (past a count: zeros)
                s, k = _zero_past_counts(s, c), _zero_past_counts(k, c)
            d.update(class_ids=self.class_ids, scores=s, keys=k, counts=c)
        else:
            files = sorted(self.video_text)
            d.update(line_files=np.array(files, np.int64),
                     line_text=np.array([self.video_text[f] for f in files], dtype=str) if files else np.zeros(0, "U1"))
        return d

    @classmethod
    def from_arrays(cls, d, name: str = "partial") -> "Partial":
        try:
            if str(d["checksum"]) != checksum({k: v for k, v in d.items() if k != "checksum"}):
                raise ValueError("its checksum does not match its content: damaged or edited")
            kind = str(d["kind"])
            num_files = int(d["num_files"])
            if kind not in ("segment", "video") or not 1 <= num_files <= MAX_FILES:
                raise ValueError(f"kind {kind!r} of {num_files} files")
            fingerprint = json.loads(str(d["fingerprint"]))
            shard = tuple(int(x) for x in np.asarray(d["shard"], np.int64).reshape(-1))
            if not isinstance(fingerprint, dict) or len(shard) != 2 or not 0 <= shard[0] < shard[1]:
                raise ValueError(f"fingerprint or shard {shard}")
            per_file = _check_id_table(d, num_files)
            ids = IdTable.from_arrays(num_files, d)
            bad = next((v for rows in ids.by_file.values() for v in rows if v and not fmt.valid_video_id(v)), None)
            if bad is not None:
                raise ValueError(f"video id {fmt.show_id(bad)} is not a valid id")
            if kind == "segment":
                if np.shape(d["counts"]) != np.shape(d["class_ids"]) or np.ndim(d["class_ids"]) != 1:
                    raise ValueError(f"counts for {np.size(d['counts'])} classes, {np.size(d['class_ids'])} class ids")
                top_n = int(d["top_n"])
                ranking = _ranking_rows(d["scores"], d["keys"], d["counts"])
                if top_n < 1 or (ranking[2] > top_n).any():
                    raise ValueError(f"a class ranks more segments than the partial's N ({top_n})")
                _check_keys(ranking, per_file)
                return cls(kind, num_files, top_n, np.asarray(d["class_ids"], np.int64), ranking, ids,
                           fingerprint=fingerprint, shard=shard)
            files = np.asarray(d["line_files"], np.int64)
            if files.shape != np.shape(d["line_text"]) or ((files < 0) | (files >= num_files)).any():
                raise ValueError("CSV lines of files outside the partial's file list")
            return cls(kind, num_files, ids=ids, fingerprint=fingerprint, shard=shard,
                       video_text={int(f): str(t) for f, t in zip(files, d["line_text"])})
        except (KeyError, ValueError, TypeError, IndexError) as e:
            raise Yt8mError(f"{name}: not a partial ranking written by 'infer --shard' ({e})") from None

    def to_bytes(self) -> bytes:
        buf = io.BytesIO()
        d = self.to_arrays()
        np.savez(buf, **d, checksum=np.array(checksum(d)))
        return buf.getvalue()

    def save(self, path: str) -> None:
        with AtomicWriter(path) as f:
            f.write(self.to_bytes())

    @classmethod
    def load(cls, src, name: str | None = None) -> "Partial":
        """From a file path or bytes (what save / to_bytes wrote)."""
        name = name or (src if isinstance(src, str) else "partial ranking")
        try:
            with np.load(io.BytesIO(src) if isinstance(src, bytes) else src, allow_pickle=False) as z:
                return cls.from_arrays({k: z[k] for k in z.files}, name)
        except FileNotFoundError:
            raise Yt8mError(f"{name}: no such file") from None
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:  # EOFError, BadZipFile: cut or empty
            raise Yt8mError(f"{name}: not a partial ranking written by 'infer --shard' "
                            f"({type(e).__name__}: {e or 'empty or cut short'})") from None

    def write_csv(self, path: str) -> None:
        if self.kind == "segment":
            _, k, c = self.ranking
            with AtomicWriter(path) as f:
                write_segment_csv(f, self.class_ids, k, c, self.ids)
        else:
            with AtomicWriter(path, "w") as f:
                f.write(VIDEO_HEADER + "\n")
                for fidx in sorted(self.video_text):
                    f.write(self.video_text[fidx])


def checksum(d: dict) -> str:
    """SHA-256 over every array's name, type, shape and bytes: a damaged or edited partial is refused
    (a changed id byte would otherwise put another video in the submission)."""
    import hashlib

    h = hashlib.sha256()
    for k in sorted(d):
        a = np.ascontiguousarray(d[k])
        h.update(f"{k}|{a.dtype.str}|{a.shape}|".encode())
        h.update(a.tobytes() if a.dtype.kind != "O" else repr(a.tolist()).encode())
    return h.hexdigest()


def _zero_past_counts(a, counts):
    """a [J, M] with each row's entries past its count set to zero, in place (a file saved twice from
    the same ranking has the same bytes)."""
    for j, c in enumerate(np.asarray(counts).tolist()):
        a[j, c:] = 0
    return a


@njit(cache=True, nogil=True)
def _bad_keys(keys, counts, per_file):
    """Whether any ranked key (keys [J, M] up to counts[j]) names a file outside per_file, or a record
    at or past the ids that per_file says its file holds."""
    for j in range(counts.shape[0]):
        for i in range(counts[j]):
            k = keys[j, i]
            f = key_file(k)
            if k < 0 or f >= per_file.shape[0] or key_record(k) >= per_file[f]:
                return True
    return False


# the kinds of value each array may hold (numpy dtype kinds)
DTYPES = {"id_files": "iu", "id_counts": "iu", "id_off": "iu", "id_bytes": "u", "class_ids": "iu", "keys": "iu",
          "counts": "iu", "scores": "f", "line_files": "iu", "line_text": "U", "num_files": "iu", "top_n": "iu",
          "shard": "iu", "kind": "U", "fingerprint": "U"}


def _check_id_table(d, num_files: int) -> np.ndarray:
    """Every array a kernel will index, checked first: the id table's files, counts and offsets.
    Returns the ids each file holds (-1: a file not in this partial)."""
    for k, kinds in DTYPES.items():
        if k in d and np.asarray(d[k]).dtype.kind not in kinds:
            raise ValueError(f"'{k}' holds {np.asarray(d[k]).dtype} values")
    files = np.asarray(d["id_files"], np.int64)
    counts = np.asarray(d["id_counts"], np.int64)
    off = np.asarray(d["id_off"], np.int64)
    n_bytes = np.size(d["id_bytes"])
    if files.shape != counts.shape or files.ndim != 1 or (counts < 0).any():
        raise ValueError("the id table's files and counts do not match")
    if ((files < 0) | (files >= num_files)).any() or np.unique(files).size != files.size:
        raise ValueError(f"the id table names files outside 0..{num_files - 1} or a file twice")
    if off.ndim != 1 or off.size != int(counts.sum()) + 1 or off[0] != 0 or off[-1] != n_bytes or \
            (np.diff(off) < 0).any():
        raise ValueError("the id table's offsets do not cover its bytes in order")
    per_file = np.full(num_files, -1, np.int64)
    per_file[files] = counts
    return per_file


def _check_keys(ranking, per_file: np.ndarray) -> None:
    """Each ranked key's file is one of this partial's and its record is below that file's id count: a
    key past its table would have the CSV writer read memory out of bounds."""
    _, keys, c = ranking
    if _bad_keys(np.ascontiguousarray(keys, np.int64), np.asarray(c, np.int64), per_file):
        raise ValueError("a ranked segment's key names a file or record that its id table does not hold")


def _ranking_rows(scores, keys, counts):
    """(scores [J, M], keys [J, M], counts) from the per-class entries concatenated in class order."""
    counts = np.asarray(counts, np.int64)
    if scores.shape != keys.shape or counts.ndim != 1 or (counts < 0).any():
        raise ValueError(f"scores {scores.shape}, keys {keys.shape} and counts {counts.shape} do not match")
    if scores.ndim == 2:  # rows as they are
        if scores.shape[0] != counts.size or (counts > scores.shape[1]).any():
            raise ValueError(f"{scores.shape[0]} rows of {scores.shape[1]} entries for counts of {counts.size} classes")
        return scores, keys, counts
    if scores.ndim != 1 or scores.size != int(counts.sum()):
        raise ValueError(f"{scores.size} scores and keys for {int(counts.sum())} ranked entries")
    valid = np.arange(int(counts.max(initial=0)))[None, :] < counts[:, None]
    s = np.zeros(valid.shape, np.float32)
    k = np.zeros(valid.shape, np.int64)
    s[valid] = scores
    k[valid] = keys
    return s, k, counts


def merge_partials(parts: list[Partial], names: list[str] | None = None, top_n: int | None = None,
                   every_shard: bool = True) -> Partial:
    """One Partial from several (same kind, same file list, same fingerprint, disjoint files); every_shard:
    they must be the shards 0/n .. n-1/n of one split, each once (False: pieces of one run, e.g. Ray's)."""
    if not parts:
        raise Yt8mError("merge needs at least one partial ranking")
    names = names or [f"partial {i}" for i in range(len(parts))]
    p0 = parts[0]
    for p, name in zip(parts, names):
        if p.kind != p0.kind:
            raise Yt8mError("cannot merge segment and video partial rankings together")
        if p.num_files != p0.num_files:
            raise Yt8mError(f"{name}: made from another file list ({p.num_files} files, not {p0.num_files})")
        for key, what in (("files", "input files"), ("model", "model file"), ("options", "options")):
            if p.fingerprint.get(key) != p0.fingerprint.get(key):
                raise Yt8mError(f"{name}: made with other {what} than {names[0]} "
                                f"({p.fingerprint.get(key)} vs {p0.fingerprint.get(key)}); merge the shards of one run")
    if every_shard:
        _check_shards(parts, names)
    ids = IdTable(p0.num_files)
    for p in parts:
        ids.update(p.ids)
    if p0.kind == "video":
        text: dict = {}
        for p, name in zip(parts, names):
            if set(text) & set(p.video_text):
                raise Yt8mError(f"{name}: overlaps another partial ranking (same files twice?)")
            text.update(p.video_text)
        return Partial("video", p0.num_files, ids=ids, video_text=text, fingerprint=p0.fingerprint)
    for p, name in zip(parts, names):
        if not np.array_equal(p.class_ids, p0.class_ids):
            raise Yt8mError(f"{name}: ranks other classes than {names[0]}")
    if len({p.top_n for p in parts}) > 1:
        raise Yt8mError(f"the partial rankings keep different numbers of segments a class "
                        f"({', '.join(f'{n}: {p.top_n}' for n, p in zip(names, parts))}); make them with one --segment_max_pred")
    if top_n is not None and not 1 <= top_n <= p0.top_n:
        raise Yt8mError(f"--segment_max_pred {top_n}: the partial rankings hold {p0.top_n} segments a class; "
                        f"give 1 to {p0.top_n}")
    n = top_n or p0.top_n
    return Partial("segment", p0.num_files, n, p0.class_ids, merge_rankings([p.ranking for p in parts], n), ids,
                   fingerprint=p0.fingerprint)


def _check_shards(parts: list[Partial], names: list[str]) -> None:
    """One partial for each shard i/n of one split: none twice, none missing."""
    n = parts[0].shard[1]
    have: dict[int, str] = {}
    for p, name in zip(parts, names):
        if p.shard[1] != n:
            raise Yt8mError(f"{name}: shard {p.shard[0]}/{p.shard[1]} of another split than {names[0]} "
                            f"({parts[0].shard[0]}/{n})")
        if p.shard[0] in have:
            raise Yt8mError(f"{name}: shard {p.shard[0]}/{n} again (also {have[p.shard[0]]})")
        have[p.shard[0]] = name
    missing = [f"{i}/{n}" for i in range(n) if i not in have]
    if missing:
        raise Yt8mError(f"missing partial rankings for shard{'s' if len(missing) > 1 else ''} {', '.join(missing[:10])}"
                        f"{' ...' if len(missing) > 10 else ''} (of {n}); merge needs every shard of the run")
