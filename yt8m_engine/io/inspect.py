"""`yt8m-engine inspect`: check every record of a download and summarise it."""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

import numpy as np

from .. import format as fmt
from ..errors import Yt8mError
from . import proto
from ..progress import Progress
from .files import file_signature, resolve_files
from .reader import Reader, merge_notes, note_lines
from .tfrecord import record_blocks


@dataclass
class FileStats:
    path: str
    records: int = 0
    corrupt: int = 0
    frames_min: int = 0
    frames_max: int = 0
    frames_sum: int = 0
    labels: int = 0
    rated_segments: int = 0
    positive_segments: int = 0
    bytes: int = 0


@dataclass
class InspectReport:
    files: list[FileStats] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    notes: dict = field(default_factory=dict)  # Reader.notes over every file: oddities, not errors
    kind: str = ""
    seconds: float = 0.0

    def totals(self) -> dict:
        recs = sum(f.records for f in self.files)
        with_frames = [f for f in self.files if f.records]
        return {
            "kind": self.kind,
            "files": len(self.files),
            "records": recs,
            "frames": {
                "total": sum(f.frames_sum for f in self.files),
                "min": min((f.frames_min for f in with_frames), default=0),
                "mean": (sum(f.frames_sum for f in self.files) / recs) if recs else 0.0,
                "max": max((f.frames_max for f in self.files), default=0),
            },
            "labels": sum(f.labels for f in self.files),
            "labels_per_video": (sum(f.labels for f in self.files) / recs) if recs else 0.0,
            "rated_segments": sum(f.rated_segments for f in self.files),
            "positive_segments": sum(f.positive_segments for f in self.files),
            "corrupt": sum(f.corrupt for f in self.files),
            "notes": {k: v[0] for k, v in self.notes.items()},
            "bytes": sum(f.bytes for f in self.files),
            "seconds": round(self.seconds, 3),
        }

    def to_dict(self) -> dict:
        return {"totals": self.totals(), "files": [vars(f) for f in self.files], "problems": self.problems,
                "notes": note_lines(self.notes)}

    def table(self) -> str:
        t = self.totals()
        total = f"TOTAL ({t['files']} files, {t['kind']})"
        w = max([len(total)] + [len(os.path.basename(f.path)) for f in self.files])  # the longest label
        lines = [f"{'file':<{w}} {'records':>8} {'frames min/mean/max':>20} {'labels/video':>12} "
                 f"{'rated seg':>9} {'positive':>8} {'corrupt':>7}"]
        for f in self.files:
            mean = f.frames_sum / f.records if f.records else 0.0
            lpv = f.labels / f.records if f.records else 0.0
            name = os.path.basename(f.path)
            lines.append(f"{name:<{w}} {f.records:>8} {f'{f.frames_min}/{mean:.1f}/{f.frames_max}':>20} {lpv:>12.2f} "
                         f"{f.rated_segments:>9} {f.positive_segments:>8} {f.corrupt:>7}")
        fr = t["frames"]
        frames = f"{fr['min']}/{fr['mean']:.1f}/{fr['max']}"
        lines.append(f"{total:<{w}} {t['records']:>8} {frames:>20} {t['labels_per_video']:>12.2f} "
                     f"{t['rated_segments']:>9} {t['positive_segments']:>8} {t['corrupt']:>7}")
        mb = t["bytes"] / 1e6
        lines.append(f"{mb:.1f} MB checked in {self.seconds:.2f} s ({mb / max(self.seconds, 1e-9):.0f} MB/s)")
        lines += [f"  note: {x}" for x in note_lines(self.notes)]
        return "\n".join(lines)


def detect_kind(path: str) -> bool:
    """True for frame-level (SequenceExample) files, False for video-level (Example) ones: decided by
    the first record whose framing is sound (a file without one reads as frame level)."""
    ktab, koff = proto.key_table(proto.CONTEXT_KEYS)
    ftab, foff = proto.key_table(("rgb",))
    for buf, offs, lens, status, _, _ in record_blocks(path, lambda n: np.empty(n, np.uint8), 1 << 20):
        ok = np.flatnonzero(status == 0)
        if ok.size:
            i = ok[:1]
            err, *_ = proto.locate_and_count(buf, offs[i], lens[i], status[i], True, ktab, koff, ftab, foff,
                                             np.array([1024], np.int64), fmt.NUM_CLASSES, False)
            return not (err[0] == proto.E_MISSING)
    return True


def inspect(pattern: str, frame_level: bool | None = None, spec: fmt.FeatureSpec | None = None,
            batch_size: int = 1024, progress: bool = False) -> InspectReport:
    """Check framing, CRCs and schema of every record; never raises for bad records (it counts them)."""
    files = resolve_files(pattern)
    report = InspectReport()
    t0 = time.perf_counter()
    kinds = set()
    sizes = [int(file_signature(p)[1]) for p in files]
    prog = Progress("inspect", total=sum(sizes), unit="B", enabled=progress)
    done = 0
    for path, size in zip(files, sizes):
        st = FileStats(path)
        st.bytes = size
        fl = frame_level if frame_level is not None else detect_kind(path)
        kinds.add("frame" if fl else "video")
        file_spec = spec if spec is not None and spec.frame_level == fl else fmt.FeatureSpec.default(fl)
        reader = Reader(file_spec, segments=True, skip_corrupt=True, copy_frames=False)
        mins = []
        for b in reader.read_file(path, batch_size):
            st.records += len(b)
            st.labels += int(b.labels.size)
            st.rated_segments += int(b.segment_labels.size)
            st.positive_segments += int((b.segment_scores > 0.5).sum())
            if b.num_frames is not None and len(b):
                mins.append(int(b.num_frames.min()))
                st.frames_max = max(st.frames_max, int(b.num_frames.max()))
                st.frames_sum += int(b.num_frames.sum())
        st.frames_min = min(mins) if mins else 0
        st.corrupt = reader.corrupt
        merge_notes(report.notes, reader.notes)
        report.problems.extend(reader.problems[: max(0, 100 - len(report.problems))])
        report.files.append(st)
        done += size
        prog.update(done, records=sum(f.records for f in report.files),
                    corrupt=sum(f.corrupt for f in report.files))
    prog.close()
    report.kind = "/".join(sorted(kinds)) if kinds else ""
    report.seconds = time.perf_counter() - t0
    if not files:
        raise Yt8mError(f"no files match {pattern!r}")
    return report
