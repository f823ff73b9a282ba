"""Synthetic YouTube-8M data in the exact real format, with a learnable signal.

Each class c has a fixed prototype direction P[c] in the 1152-d feature space. A video shows each of
its labels on a contiguous run of frames: those frames carry P[c] on top of a per-video style vector
and per-frame noise; the features are then quantized as the released data was. So a class is
visible only in the frames where it is shown: video-level models can learn it from the mean, and
segment-level scores are high exactly on the segments rated positive.

Layout (as the real download):
    OUT/2/frame/{train,validate}NNNN.tfrecord   SequenceExample: id, labels; rgb, audio
    OUT/2/video/{train,validate}NNNN.tfrecord   Example: id, labels, mean_rgb, mean_audio
    OUT/3/frame/validateNNNN.tfrecord           + segment_labels/start/end_times/scores (rated segments)
    OUT/3/frame/testNNNN.tfrecord               id only
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from .. import format as fmt
from ..errors import Yt8mError
from .writer import FrameLevelWriter, VideoLevelWriter

SIGNAL = 0.6        # per-dimension std of a class prototype
STYLE = 0.25        # per-video style vector std
NOISE = 0.6         # per-frame noise std
ZIPF = 1.1          # class popularity ~ 1 / (rank + 5) ** ZIPF
_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_SPLIT_CODE = {"train": 1, "validate": 2, "segval": 3, "test": 4}


@dataclass
class SynthVideo:
    id: str
    labels: np.ndarray          # int64
    frames: np.ndarray          # uint8 [T, 1152]
    segment_labels: np.ndarray  # int64 (rated segments; empty unless the split is rated)
    segment_starts: np.ndarray  # int64
    segment_scores: np.ndarray  # float32


class World:
    """The fixed class prototypes and popularity shared by every split of one seed."""

    def __init__(self, seed: int):
        rng = np.random.default_rng([seed, 0])
        self.prototypes = rng.normal(0.0, SIGNAL, (fmt.NUM_CLASSES, fmt.FEATURE_SIZE)).astype(np.float32)
        # popularity rank: the segment classes first (as in the real data, where they were chosen
        # among well-represented classes), each group in random order
        seg = np.asarray(fmt.segment_class_ids())
        others = np.setdiff1d(np.arange(fmt.NUM_CLASSES), seg)
        order = np.concatenate([rng.permutation(seg), rng.permutation(others)])
        rank = np.empty(fmt.NUM_CLASSES, np.int64)
        rank[order] = np.arange(fmt.NUM_CLASSES)
        p = 1.0 / (rank + 5.0) ** ZIPF
        self.class_p = p / p.sum()
        ps = p[seg]
        self.segment_classes = seg
        self.segment_p = ps / ps.sum()
        self.segment_set = frozenset(seg.tolist())


def video_id(split: str, index: int) -> str:
    """A deterministic, distinct 4-character id (real ids are 4 characters)."""
    n = (_SPLIT_CODE[split] * 2_000_003 + index * 7_368_787) % (62 ** 4)
    return "".join(_ALPHABET[(n // 62 ** k) % 62] for k in (3, 2, 1, 0))


def _length(rng) -> int:
    u = rng.random()
    if u < 0.06:
        return int(rng.integers(1, 5))        # shorter than one segment
    if u < 0.12:
        return fmt.MAX_FRAMES                 # the longest
    return int(rng.integers(5, 90))


def make_video(world: World, rng, split: str, index: int, rated: bool) -> SynthVideo:
    t = _length(rng)
    n_labels = 1 + min(int(rng.poisson(1.5)), 5)
    labels: list[int] = []
    if rated:
        k = 1 + int(rng.random() < 0.3)
        labels.extend(int(c) for c in rng.choice(world.segment_classes, size=k, replace=False, p=world.segment_p))
    while len(labels) < n_labels:
        c = int(rng.choice(fmt.NUM_CLASSES, p=world.class_p))
        if c not in labels:
            labels.append(c)
    x = rng.normal(0.0, NOISE, (t, fmt.FEATURE_SIZE)).astype(np.float32)
    x += rng.normal(0.0, STYLE, fmt.FEATURE_SIZE).astype(np.float32)
    shown = np.zeros((len(labels), t), bool)
    for j, c in enumerate(labels):
        run = max(1, int(round(t * rng.uniform(0.25, 0.7))))
        start = int(rng.integers(0, t - run + 1))
        shown[j, start:start + run] = True
        x[start:start + run] += world.prototypes[c]
    seg_l: list[int] = []
    seg_s: list[int] = []
    seg_v: list[float] = []
    if rated:
        starts = np.arange(0, t, fmt.SEGMENT_SIZE)
        for j, c in enumerate(labels):
            if c not in world.segment_set:
                continue
            frac = np.array([shown[j, s:s + fmt.SEGMENT_SIZE].mean() for s in starts])
            pos = starts[frac >= 0.6]
            neg = starts[frac == 0.0]
            pick_pos = rng.permutation(pos)[:int(rng.integers(1, 4))]
            pick_neg = rng.permutation(neg)[:int(rng.integers(2, 8))]
            for s, v in sorted([(int(s), 1.0) for s in pick_pos] + [(int(s), 0.0) for s in pick_neg]):
                seg_l.append(c)
                seg_s.append(s)
                seg_v.append(v)
    return SynthVideo(video_id(split, index), np.array(labels, np.int64), fmt.quantize(x),
                      np.array(seg_l, np.int64), np.array(seg_s, np.int64), np.array(seg_v, np.float32))


def _shard_path(out_dir: str, sub: str, split: str, shard: int) -> str:
    return os.path.join(out_dir, sub, f"{split}{shard:04d}.tfrecord")


def synth(out_dir: str, videos: int = 1000, shards: int = 4, seed: int = 0, test_videos: int | None = None,
          progress=None) -> dict:
    """Write the synthetic dataset. Returns {files, videos, bytes}. Same seed: byte-identical files."""
    if videos < 1 or shards < 1:
        raise Yt8mError("--videos and --shards must be at least 1")
    if shards > videos:
        raise Yt8mError(f"--shards ({shards}) cannot exceed --videos ({videos})")
    test_videos = videos if test_videos is None else test_videos
    if test_videos < shards:
        raise Yt8mError(f"--shards ({shards}) cannot exceed the number of test videos ({test_videos})")
    world = World(seed)
    plan = [("train", "train", videos, False), ("validate", "validate", videos, False),
            ("segval", "validate", videos, True), ("test", "test", test_videos, True)]
    files = 0
    total = 0
    for code, split, count, rated in plan:
        for shard in range(shards):
            rng = np.random.default_rng([seed, _SPLIT_CODE[code], shard])
            idx = range(shard, count, shards)
            if code in ("train", "validate"):
                fpath = _shard_path(out_dir, "2/frame", split, shard)
                vpath = _shard_path(out_dir, "2/video", split, shard)
                with FrameLevelWriter(fpath) as fw, VideoLevelWriter(vpath) as vw:
                    for i in idx:
                        v = make_video(world, rng, code, i, rated)
                        fw.write_video(v.id, v.labels, rgb=v.frames[:, :1024], audio=v.frames[:, 1024:])
                        mean = fmt.dequantize_reference(v.frames).mean(axis=0)
                        vw.write_video(v.id, v.labels, mean_rgb=mean[:1024], mean_audio=mean[1024:])
                paths = [fpath, vpath]
            else:
                fpath = _shard_path(out_dir, "3/frame", split, shard)
                with FrameLevelWriter(fpath) as fw:
                    for i in idx:
                        v = make_video(world, rng, code, i, rated)
                        if code == "test":
                            fw.write_video(v.id, None, rgb=v.frames[:, :1024], audio=v.frames[:, 1024:])
                        else:
                            fw.write_video(v.id, v.labels, rgb=v.frames[:, :1024], audio=v.frames[:, 1024:],
                                           segment_labels=v.segment_labels, segment_start_times=v.segment_starts,
                                           segment_scores=v.segment_scores)
                paths = [fpath]
            files += len(paths)
            total += sum(os.path.getsize(p) for p in paths)
            if progress:
                progress(code, shard)
    return {"files": files, "videos_per_split": videos, "bytes": total, "out_dir": out_dir}
