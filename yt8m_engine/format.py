"""The one truth about the YouTube-8M format: keys, sizes, constants and class ids.

Everything that reads, writes, trains on or scores YouTube-8M data takes its constants from here.
"""
from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

import numpy as np

from .errors import Yt8mError

NUM_CLASSES = 3862
NUM_SEGMENT_CLASSES = 1000
MAX_FRAMES = 300
SEGMENT_SIZE = 5

# Context / Example keys.
ID_KEY = "id"
LEGACY_ID_KEY = "video_id"
LABELS_KEY = "labels"
SEGMENT_LABELS_KEY = "segment_labels"
SEGMENT_START_KEY = "segment_start_times"
SEGMENT_END_KEY = "segment_end_times"
SEGMENT_SCORES_KEY = "segment_scores"

# Frame-level feature lists (one uint8 bytes string per frame) and video-level float features.
FRAME_FEATURES = (("rgb", 1024), ("audio", 128))
VIDEO_FEATURES = (("mean_rgb", 1024), ("mean_audio", 128))
FEATURE_SIZE = 1152

# Quantization of the released data: q = round((clip(x, -2, 2) + 2) * 255 / 4), and the starter
# code's Dequantize: x = q * 4/255 + (4/512 - 2). Note 255 maps to 2.0078125, not to 2.
QUANT_MIN = -2.0
QUANT_MAX = 2.0
DEQUANT_SCALE = np.float32((QUANT_MAX - QUANT_MIN) / 255.0)
DEQUANT_BIAS = np.float32((QUANT_MAX - QUANT_MIN) / 512.0 + QUANT_MIN)


@dataclass(frozen=True)
class FeatureSpec:
    """Which features are read and how wide each one is (the starter's --feature_names/--feature_sizes)."""

    names: tuple[str, ...]
    sizes: tuple[int, ...]
    frame_level: bool

    @property
    def total_size(self) -> int:
        return int(sum(self.sizes))

    def describe(self) -> str:
        kind = "frame-level" if self.frame_level else "video-level"
        return f"{kind} {','.join(self.names)} ({','.join(map(str, self.sizes))})"

    @classmethod
    def default(cls, frame_level: bool = True) -> "FeatureSpec":
        feats = FRAME_FEATURES if frame_level else VIDEO_FEATURES
        return cls(tuple(n for n, _ in feats), tuple(s for _, s in feats), frame_level)

    @classmethod
    def parse(cls, names: str | None, sizes: str | None, frame_level: bool) -> "FeatureSpec":
        """Parse comma-separated names and sizes; missing ones default to the real dataset's."""
        if not names and not sizes:
            return cls.default(frame_level)
        default = cls.default(frame_level)
        name_list = tuple(n.strip() for n in (names or ",".join(default.names)).split(",") if n.strip())
        try:
            size_list = tuple(int(s) for s in (sizes or ",".join(map(str, default.sizes))).split(",") if s.strip())
        except ValueError:
            raise Yt8mError(f"--feature_sizes must be comma-separated integers, got {sizes!r}") from None
        if len(name_list) != len(size_list) or not name_list:
            raise Yt8mError(
                f"--feature_names ({len(name_list)} names) and --feature_sizes ({len(size_list)} sizes) must match"
            )
        if any(s <= 0 for s in size_list):
            raise Yt8mError(f"--feature_sizes must be positive, got {sizes!r}")
        return cls(name_list, size_list, frame_level)

    def to_dict(self) -> dict:
        return {"names": list(self.names), "sizes": list(self.sizes), "frame_level": self.frame_level}

    @classmethod
    def from_dict(cls, d: dict) -> "FeatureSpec":
        return cls(tuple(d["names"]), tuple(int(s) for s in d["sizes"]), bool(d["frame_level"]))


@lru_cache(maxsize=None)
def segment_class_ids() -> np.ndarray:
    """The 1000 segment class ids of the 2019 challenge, in the original file's order."""
    text = resources.files("yt8m_engine").joinpath("data/segment_label_ids.csv").read_text()
    return read_segment_label_ids_text(text, "segment_label_ids.csv (packaged)")


def read_segment_label_ids_text(text: str, name: str) -> np.ndarray:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    if not lines or lines[0] != "Index":
        raise Yt8mError(f"{name}: expected a header line 'Index', got {lines[0]!r}" if lines else f"{name}: empty file")
    try:
        ids = np.array([int(x) for x in lines[1:]], dtype=np.int64)
    except ValueError as e:
        raise Yt8mError(f"{name}: every line after the header must be a class id ({e})") from None
    if ids.size == 0 or ids.min() < 0 or ids.max() >= NUM_CLASSES or np.unique(ids).size != ids.size:
        raise Yt8mError(f"{name}: class ids must be distinct integers in [0, {NUM_CLASSES})")
    ids.setflags(write=False)
    return ids


def load_segment_label_ids(path: str | None) -> np.ndarray:
    """Segment class ids from a user's file, or the packaged 2019 list when path is None."""
    if path is None:
        return segment_class_ids()
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise Yt8mError(f"{path}: cannot read segment label ids ({e.strerror})") from None
    return read_segment_label_ids_text(text, path)


def load_vocabulary(path: str) -> dict[int, str]:
    """Class names from a YouTube-8M vocabulary.csv (columns Index, ..., Name, ...)."""
    try:
        with open(path, encoding="utf-8", newline="") as f:
            rows = list(csv.DictReader(f))
    except OSError as e:
        raise Yt8mError(f"{path}: cannot read vocabulary ({e.strerror})") from None
    if not rows or "Index" not in rows[0] or "Name" not in rows[0]:
        raise Yt8mError(f"{path}: a vocabulary needs the columns 'Index' and 'Name'")
    try:
        return {int(r["Index"]): r["Name"] for r in rows}
    except ValueError as e:
        raise Yt8mError(f"{path}: bad Index value ({e})") from None


def dequantize_reference(q: np.ndarray) -> np.ndarray:
    """NumPy form of the starter's Dequantize, in float32 as TensorFlow computes it."""
    return q.astype(np.float32) * DEQUANT_SCALE + DEQUANT_BIAS


def quantize(x: np.ndarray) -> np.ndarray:
    """Quantize float features the way the released data was made."""
    return np.round((np.clip(x, QUANT_MIN, QUANT_MAX) - QUANT_MIN) * (255.0 / (QUANT_MAX - QUANT_MIN))).astype(np.uint8)


def expand_path(path: str) -> str:
    return os.path.expanduser(path)


# -- video ids ------------------------------------------------------------------------------------
# The dataset's ids are 4 characters ("Xy2z"). An id is written raw into the submission CSVs, where a
# comma, a space, a colon (segment ids are `video:start`), a quote or a line break would change the
# file's structure, so an id is refused (with its file and record named) unless it is 1 to 256
# printable ASCII characters other than those.
MAX_ID_BYTES = 256
VIDEO_ID_RULE = (f"an id is 1 to {MAX_ID_BYTES} printable ASCII characters without spaces, commas, "
                 "colons or quotes")
_ID_OK = bytes(c for c in range(0x21, 0x7F) if chr(c) not in ',:"')


def valid_video_id(v: bytes) -> bool:
    return 0 < len(v) <= MAX_ID_BYTES and not v.translate(None, _ID_OK)


def show_id(v: bytes) -> str:
    """An id as the user can read it in one line (escaped, cut at 40 bytes)."""
    return repr(v[:40])[1:] + ("..." if len(v) > 40 else "")
