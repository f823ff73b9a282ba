"""TF-free reader of YouTube-8M TFRecords into numpy batches (Numba wire decoding, no TensorFlow)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator

import numpy as np

from .. import format as fmt
from ..errors import Yt8mError
from . import proto
from .files import resolve_files
from .tfrecord import E_LENGTH_CRC, E_PAYLOAD_CRC, E_TRUNCATED, record_blocks


@dataclass
class Batch:
    """Decoded records. Variable-length lists are CSR: values plus offsets of length n + 1."""

    ids: list[str]
    label_offsets: np.ndarray
    labels: np.ndarray
    num_frames: np.ndarray | None = None       # int32 [n] (frame level)
    frame_offsets: np.ndarray | None = None    # int64 [n + 1]: video i is frames[frame_offsets[i]:][:num_frames[i]]
    #                                            (rows up to frame_offsets[i + 1] beyond it are zero padding)
    frames: np.ndarray | None = None           # uint8 [total_frames, D] (frame level), videos back to back
    features: np.ndarray | None = None         # float32 [n, D] (video level)
    segment_offsets: np.ndarray | None = None
    segment_labels: np.ndarray | None = None
    segment_starts: np.ndarray | None = None
    segment_scores: np.ndarray | None = None
    path: str = ""
    frame_pad: int = 1                         # every video's rows start at a multiple of this (Reader.pad_frames)
    record_index: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))

    def __len__(self) -> int:
        return len(self.ids)

    def dense_labels(self, num_classes: int = fmt.NUM_CLASSES, dtype=np.float32) -> np.ndarray:
        """0/1 [n, num_classes]; class ids from num_classes up are left out (a batch read with a larger
        num_classes, as training on the first classes reads it)."""
        out = np.zeros((len(self), num_classes), dtype)
        rows = np.repeat(np.arange(len(self)), np.diff(self.label_offsets))
        keep = self.labels < num_classes
        out[rows[keep], self.labels[keep]] = 1
        return out

    def video_frames(self, i: int) -> np.ndarray:
        return self.frames[self.frame_offsets[i]:self.frame_offsets[i] + self.num_frames[i]]

    def segments(self, size: int = fmt.SEGMENT_SIZE):
        """Every video's `size`-frame segments at 0, size, 2 size, ... below its num_frames (a last
        partial segment keeps its true frame count, zero padded). Returns (frames [S, size, D] uint8,
        num_frames [S] int32, video index [S] int64, start frame [S] int64). When the batch was read
        with pad_frames=size the frames are a view of the batch's own rows: nothing is copied."""
        from ..kernels.segments import cut_segments, segment_index

        if self.frame_pad == size:
            return (self.frames.reshape(-1, size, self.frames.shape[1]),) + segment_index(self.num_frames, size)
        return cut_segments(self.frames, self.frame_offsets, self.num_frames, size)

    def padded_frames(self, rows: np.ndarray | None = None, max_frames: int | None = None):
        """(frames uint8 [n, T, D] zero padded, num_frames [n]) of the videos `rows` (default: all), in
        that order; T = the longest of them, or max_frames (longer videos are cut)."""
        from ..kernels.segments import cut_segments

        rows = np.arange(len(self)) if rows is None else np.asarray(rows, np.int64)
        nf = self.num_frames[rows]
        if max_frames is not None:
            nf = np.minimum(nf, max_frames)
        t = max(1, int(nf.max(initial=0))) if max_frames is None else max(1, int(max_frames))
        # one "segment" of length T per video: the Numba cutter pads
        frames = cut_segments(self.frames, self.frame_offsets[rows], nf, size=t)[0]
        if frames.shape[0] != nf.size:  # videos without frames: one empty row each
            out = np.zeros((nf.size, t, self.frames.shape[1]), np.uint8)
            out[nf > 0] = frames
            frames = out
        return frames, nf

    def video_labels(self, i: int) -> np.ndarray:
        return self.labels[self.label_offsets[i]:self.label_offsets[i + 1]]


_REFUSED = 99  # status of a record refused or left out after decoding (parsed again without it)

# legal but unusual: counted in Reader.notes, reported by inspect, warned about by the verbs
NOTES = {
    "over_max_frames": "videos over 300 frames (read as their first 300)",
    "no_frames": "videos without frames",
    "non_finite": "videos with NaN or Inf features",
    "nan_segment_score": "segment ratings with a NaN score (left out)",
    "odd_segment_start": "segment ratings whose start is not a multiple of 5 frames (left out)",
}


def merge_notes(into: dict, notes: dict) -> dict:
    for k, (count, example) in notes.items():
        if k in into:
            into[k][0] += count
        else:
            into[k] = [count, example]
    return into


def note_lines(notes: dict, left_out: str = "") -> list[str]:
    """One line per kind of oddity: count, what, an example; left_out: what happened to the videos no
    prediction can be made for (e.g. "left out of the ranking")."""
    out = []
    for k, (count, example) in sorted(notes.items(), key=lambda kv: list(NOTES).index(kv[0])):
        what = NOTES[k] + (f" ({left_out})" if left_out and k in ("no_frames", "non_finite") else "")
        out.append(f"{count} {what}; first: {example}")
    return out


def describe(code: int, aux: np.ndarray, spec: fmt.FeatureSpec, num_classes: int) -> str:
    keys = list(proto.CONTEXT_KEYS) + list(spec.names)
    a0, a1, a2 = (int(x) for x in aux)
    key = keys[a0] if 0 <= a0 < len(keys) else "?"
    if code == E_TRUNCATED:
        return "truncated record (the file ends inside it); the rest of the file cannot be read"
    if code == E_LENGTH_CRC:
        return "length CRC mismatch (corrupt record header); skipped to the next valid record header"
    if code == E_PAYLOAD_CRC:
        return "payload CRC mismatch (corrupt record data)"
    if code == proto.E_PROTO:
        what = "tf.train.SequenceExample" if spec.frame_level else "tf.train.Example"
        return f"payload is not a valid {what} protobuf"
    if code == proto.E_MISSING:
        if a0 >= proto.K_FEATURE0:
            kind = "feature list" if spec.frame_level else "feature"
            return (f"missing required {kind} '{key}' (is this a "
                    f"{'video' if spec.frame_level else 'frame'}-level file? check --frame_features / --feature_names)")
        return "missing required feature 'id' (nor legacy 'video_id')"
    if code == proto.E_TYPE:
        return f"feature '{key}' is a {proto.KIND_NAMES[a1]}, expected {_expected_kind(a0, spec)}"
    if code == proto.E_FRAME_LEN:
        return f"frame {a1} of '{spec.names[a0]}' has {a2} bytes, expected {spec.sizes[a0]}"
    if code == proto.E_FRAME_VALUES:
        return f"frame {a1} of '{spec.names[a0]}' holds {a2} byte strings, expected 1"
    if code == proto.E_VIDEO_LEN:
        return f"feature '{key}' has {a1} floats, expected {spec.sizes[a0 - proto.K_FEATURE0]}"
    if code == proto.E_CLASS:
        return f"class id {a1} in '{key}' is outside [0, {num_classes})"
    if code == proto.E_SEG_START:
        return f"segment start time {a1} is outside the video's {a2} frames"
    if code == proto.E_SEG_LISTS:
        return (f"segment lists differ in length: {a0} segment_labels, {a1} segment_start_times, "
                f"{a2} segment_scores")
    if code == proto.E_ID:
        return f"feature 'id' must hold exactly one byte string, found {a1}"
    return f"unknown error code {code}"


def _expected_kind(key_code: int, spec: fmt.FeatureSpec) -> str:
    if key_code in (proto.K_ID, proto.K_VIDEO_ID):
        return "bytes_list"
    if key_code == proto.K_SEG_SCORES:
        return "float_list"
    if key_code >= proto.K_FEATURE0:
        return "bytes_list" if spec.frame_level else "float_list"
    return "int64_list"


class Reader:
    """Reads YouTube-8M TFRecord files into `Batch`es without TensorFlow.

    spec: which features (frame-level SequenceExample feature lists, or video-level Example floats).
    segments: also decode and validate segment_labels / segment_start_times / segment_scores.
    skip_corrupt: skip bad records (counted in `corrupt`, described in `problems`) instead of raising.
    leave_out: leave out videos no prediction can be made for (no frames; NaN or Inf features), as the
    rankings do; they are counted in `notes` either way, with the other oddities of NOTES.
    copy_frames: False validates every frame but does not copy it (inspect).
    pad_frames: each video's frames start at a multiple of this many rows, zero padded after the
    video's last frame (SEGMENT_SIZE: the frames are then already the video's 5-frame segments,
    see `Batch.segments`).
    """

    def __init__(self, spec: fmt.FeatureSpec | None = None, *, segments: bool = False,
                 max_frames: int = fmt.MAX_FRAMES, num_classes: int = fmt.NUM_CLASSES,
                 skip_corrupt: bool = False, copy_frames: bool = True, check_crc: bool = True,
                 pad_frames: int = 1, leave_out: bool = False):
        self.spec = spec or fmt.FeatureSpec.default(True)
        self.segments = segments
        self.max_frames = int(max_frames)
        self.num_classes = int(num_classes)
        self.skip_corrupt = skip_corrupt
        self.copy_frames = copy_frames
        self.check_crc = check_crc
        self.pad_frames = max(1, int(pad_frames))
        self.corrupt = 0
        self.problems: list[str] = []
        self.leave_out = leave_out
        self.notes: dict[str, list] = {}  # kind (NOTES) -> [count, first instance]
        self._ktab, self._koff = proto.key_table(proto.CONTEXT_KEYS)
        self._ftab, self._foff = proto.key_table(self.spec.names)
        self._sizes = np.array(self.spec.sizes, np.int64)

    # -- files -------------------------------------------------------------------------------
    def read(self, pattern_or_files, batch_size: int = 256) -> Iterator[Batch]:
        files = resolve_files(pattern_or_files) if isinstance(pattern_or_files, str) else list(pattern_or_files)
        for path in files:
            yield from self.read_file(path, batch_size)

    def read_file(self, path: str, batch_size: int = 256) -> Iterator[Batch]:
        """Batches of a file's records, read in blocks of whole records into one reused buffer (memory
        bounded whatever the file size; each batch owns its data)."""
        held = [np.zeros(0, np.uint8)]

        def take(n: int) -> np.ndarray:
            if held[0].size < n:
                held[0] = np.empty(n, np.uint8)
            return held[0]

        for buf, offs, lens, status, first, _ in self.blocks(path, take):
            for a in range(0, len(offs), batch_size):
                sl = slice(a, a + batch_size)
                yield self.parse_records(buf, offs[sl], lens[sl], status[sl], path, first + a)

    def blocks(self, path: str, take_buffer, block_bytes: int = 16 << 20):
        """`record_blocks` of a file (CRCs checked as this reader says); an empty file is a problem
        (raised, or counted with skip_corrupt)."""
        for block in record_blocks(path, take_buffer, block_bytes, self.check_crc):
            if block.first == 0 and block.buf.size == 0:
                self._problem(path, None, "file is empty (0 bytes), not a TFRecord file")
            yield block

    # -- records -----------------------------------------------------------------------------
    def _problem(self, path: str, record: int | None, message: str) -> None:
        where = f"{path}" if record is None else f"{path}: record {record}"
        if not self.skip_corrupt:
            raise Yt8mError(f"{where}: {message}")
        self.corrupt += 1
        if len(self.problems) < 100:
            self.problems.append(f"{where}: {message}")

    def _note(self, kind: str, path: str, record: int, count: int = 1) -> None:
        """Something legal but unusual (NOTES): counted, the first instance kept as an example."""
        if kind not in self.notes:
            self.notes[kind] = [0, f"{path}: record {record}"]
        self.notes[kind][0] += count

    def _usable_ratings(self, seg_off, labels, starts, scores, path, records):
        """Ratings that can be scored: a NaN score is neither positive nor negative, and a start that is
        not a multiple of the segment size matches no predicted segment; both are left out (noted)."""
        nan = ~np.isfinite(scores)
        odd = (starts % fmt.SEGMENT_SIZE) != 0
        keep = ~(nan | odd)
        if keep.all():
            return seg_off, labels, starts, scores
        video = np.repeat(np.arange(seg_off.size - 1), np.diff(seg_off))
        for kind, mask in (("nan_segment_score", nan), ("odd_segment_start", odd & ~nan)):
            if mask.any():
                self._note(kind, path, int(records[video[np.argmax(mask)]]), int(mask.sum()))
        new_off = np.zeros_like(seg_off)
        np.cumsum(np.bincount(video[keep], minlength=seg_off.size - 1), out=new_off[1:])
        return new_off, labels[keep], starts[keep], scores[keep]

    def _outputs(self, nfr, good, store):
        """The arrays the decoded rows go to: (num_frames, frame_offsets, frames, video features, the
        features' bytes); frames in `store`'s buffer where given (replaced when too small)."""
        spec, n = self.spec, int(good.sum())
        if not spec.frame_level:
            video = np.zeros((n, spec.total_size), np.float32)
            return None, np.zeros(1, np.int64), None, video, video.view(np.uint8)
        num_frames = np.minimum(nfr[good, 0], self.max_frames).astype(np.int32)
        frame_off = np.zeros(n + 1, np.int64)
        pad = self.pad_frames
        np.cumsum((num_frames.astype(np.int64) + pad - 1) // pad * pad, out=frame_off[1:])
        rows_needed = int(frame_off[-1]) if self.copy_frames else 0
        if store is None:
            frames = np.empty((rows_needed, spec.total_size), np.uint8)
        else:
            if not store or store[0].shape[0] < rows_needed:
                store[:] = [np.empty((rows_needed + rows_needed // 4, spec.total_size), np.uint8)]
            frames = store[0][:rows_needed]
        if n and (nfr[good].min(axis=1) < nfr[good, 0]).any():
            frames[:] = 0  # a feature with fewer frames than the first: zero padded, as the starter
        return num_frames, frame_off, frames, None, np.zeros((1, 1), np.uint8)

    def _refused_rows(self, ids, frame_counts, video, path, records) -> list:
        """Rows (of the decoded ones) to parse again as refused: an invalid id (reported: a refused id
        never reaches a CSV), and, where leave_out, rows no prediction can be made for (no frames,
        NaN/Inf features). With none refused, the notes of what is kept are taken here."""
        seq = self.spec.frame_level
        bad_ids = [i for i, v in enumerate(ids) if not fmt.valid_video_id(v)]
        for i in bad_ids:
            self._problem(path, int(records[i]), f"video id {fmt.show_id(ids[i])} is not a valid id: "
                                                 f"{fmt.VIDEO_ID_RULE}")
        unusable = np.flatnonzero((frame_counts == 0) if seq else ~np.isfinite(video).all(axis=1)).tolist()
        left = [i for i in unusable if i not in set(bad_ids)] if self.leave_out else []
        for i in left:  # (noted here: the second parse no longer sees them)
            self._note("no_frames" if seq else "non_finite", path, int(records[i]))
        if bad_ids or left:
            return bad_ids + left
        for i in unusable:  # (kept: leave_out is off)
            self._note("no_frames" if seq else "non_finite", path, int(records[i]))
        for i in (np.flatnonzero(frame_counts > self.max_frames) if seq else []):
            self._note("over_max_frames", path, int(records[i]))
        return []

    def parse_records(self, buf, offs, lens, status, path: str, first_index: int,
                      store: list | None = None) -> Batch:
        """Decode records; store: a list holding a frame buffer to reuse (and replace when too small)."""
        spec = self.spec
        seq = spec.frame_level
        err, aux, vs, ve, cnt, fs, fe, nfr = proto.locate_and_count(
            buf, offs, lens, status, seq, self._ktab, self._koff, self._ftab, self._foff, self._sizes,
            self.num_classes, self.segments)
        lab_tmp = np.empty(max(1, int(cnt[:, proto.K_LABELS].max(initial=0)),
                               int(cnt[:, proto.K_SEG_LABELS].max(initial=0))), np.int64)
        seg_tmp = np.empty(max(1, int(cnt[:, proto.K_SEG_START].max(initial=0))), np.int64)
        proto.check_values(buf, err, aux, vs, ve, cnt, nfr, self.num_classes, self.segments, lab_tmp, seg_tmp)
        bad = np.flatnonzero(err)
        for r in bad:
            if err[r] != _REFUSED:  # (already reported)
                self._problem(path, first_index + int(r), describe(int(err[r]), aux[r], spec, self.num_classes))
        good = err == 0
        rows = np.full(len(err), -1, np.int64)
        rows[good] = np.arange(int(good.sum()))
        n = int(good.sum())

        def csr(counts):
            off = np.zeros(n + 1, np.int64)
            np.cumsum(counts[good], out=off[1:])
            return off

        lab_off = csr(cnt[:, proto.K_LABELS])
        labels = np.empty(lab_off[-1], np.int64)
        if self.segments:
            seg_off = csr(cnt[:, proto.K_SEG_LABELS])
        else:
            seg_off = np.zeros(n + 1, np.int64)
        m = int(seg_off[-1])
        seg_labels = np.empty(m, np.int64)
        seg_starts = np.empty(m, np.int64)
        seg_scores = np.empty(m, np.float32)
        id_off = np.zeros(n + 1, np.int64)
        id_lens = (ve[:, proto.K_ID] - vs[:, proto.K_ID])[good]  # upper bound: the BytesList span
        np.cumsum(id_lens, out=id_off[1:])
        id_bytes = np.zeros(max(1, int(id_off[-1])), np.uint8)
        id_len = np.zeros(n, np.int64)
        num_frames, frame_off, frames, video, video_u8 = self._outputs(nfr, good, store)
        proto.fill(buf, err, vs, ve, fs, fe, seq, self._sizes, self.max_frames, rows,
                   lab_off, labels, seg_off, seg_labels, seg_starts, seg_scores.view(np.uint8), id_off, id_bytes, id_len,
                   frame_off, num_frames if seq else np.zeros(1, np.int32),
                   frames if frames is not None else np.zeros((1, 1), np.uint8), video_u8,
                   self.segments, self.copy_frames)
        raw = id_bytes.tobytes()
        ids = [raw[id_off[i]:id_off[i] + id_len[i]] for i in range(n)]
        grows = np.flatnonzero(good)  # record (in this call) of each decoded row
        refused = self._refused_rows(ids, nfr[good, 0], video, path, first_index + grows)
        if refused:  # parsed again without them (rare: a bad file); notes are taken there
            st = status.copy()
            st[grows[refused]] = _REFUSED
            return self.parse_records(buf, offs, lens, st, path, first_index, store)
        if self.segments and m:
            seg_off, seg_labels, seg_starts, seg_scores = self._usable_ratings(
                seg_off, seg_labels, seg_starts, seg_scores, path, first_index + grows)
        ids = [v.decode("ascii") for v in ids]
        return Batch(ids=ids, label_offsets=lab_off, labels=labels, num_frames=num_frames,
                     frame_offsets=frame_off if seq else None,
                     frames=frames if (seq and self.copy_frames) else None, features=video,
                     segment_offsets=seg_off if self.segments else None,
                     segment_labels=seg_labels if self.segments else None,
                     segment_starts=seg_starts if self.segments else None,
                     segment_scores=seg_scores if self.segments else None,
                     path=path, frame_pad=self.pad_frames, record_index=first_index + np.flatnonzero(good))


def read_all(pattern: str, spec: fmt.FeatureSpec | None = None, **kw) -> Batch:
    """Read every record of the matching files into one Batch (small data, tests)."""
    reader = Reader(spec, **kw)
    return concat(list(reader.read(pattern, batch_size=1 << 30)))


def concat(batches: list[Batch]) -> Batch:
    if not batches:
        raise Yt8mError("no records")
    if len(batches) == 1:
        return batches[0]

    def cat_csr(offs, vals):
        out_off = [np.zeros(1, np.int64)]
        base = 0
        for o in offs:
            out_off.append(o[1:] + base)
            base += o[-1]
        return np.concatenate(out_off), np.concatenate(vals)

    b0 = batches[0]
    lab_off, labels = cat_csr([b.label_offsets for b in batches], [b.labels for b in batches])
    kw = {}
    if b0.frames is not None:
        kw["frames"] = np.concatenate([b.frames for b in batches])
    if b0.num_frames is not None:
        kw["num_frames"] = np.concatenate([b.num_frames for b in batches])
        kw["frame_offsets"], _ = cat_csr([b.frame_offsets for b in batches], [b.num_frames for b in batches])
    if b0.features is not None:
        kw["features"] = np.concatenate([b.features for b in batches])
    if b0.segment_offsets is not None:
        so, sl = cat_csr([b.segment_offsets for b in batches], [b.segment_labels for b in batches])
        kw.update(segment_offsets=so, segment_labels=sl,
                  segment_starts=np.concatenate([b.segment_starts for b in batches]),
                  segment_scores=np.concatenate([b.segment_scores for b in batches]))
    pads = {b.frame_pad for b in batches}
    return Batch(ids=[i for b in batches for i in b.ids], label_offsets=lab_off, labels=labels,
                 frame_pad=pads.pop() if len(pads) == 1 else 1, **kw)
