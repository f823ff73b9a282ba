"""Write YouTube-8M records from your own features (replaces the starter code's feature extractor output).

    with FrameLevelWriter("out/train0000.tfrecord") as w:
        w.write("vid1", labels=[3, 7], rgb=rgb_float_T_by_1024, audio=audio_float_T_by_128)

Float features are quantized exactly as the released data was; uint8 arrays are written as they are.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from .. import format as fmt
from ..errors import Yt8mError
from . import proto
from .tfrecord import TFRecordWriter


def _as_quantized(name: str, x: np.ndarray, size: int) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim != 2 or x.shape[1] != size:
        raise Yt8mError(f"feature '{name}' must have shape [frames, {size}], got {list(x.shape)}")
    if x.shape[0] > fmt.MAX_FRAMES:
        raise Yt8mError(f"feature '{name}' has {x.shape[0]} frames; YouTube-8M videos have at most {fmt.MAX_FRAMES}")
    return x if x.dtype == np.uint8 else fmt.quantize(x)


def _check_labels(labels: Sequence[int], what: str) -> list[int]:
    out = [int(v) for v in labels]
    for v in out:
        if not 0 <= v < fmt.NUM_CLASSES:
            raise Yt8mError(f"{what}: class id {v} is outside [0, {fmt.NUM_CLASSES})")
    return out


def _id(video_id: str) -> bytes:
    v = video_id.encode("utf-8")
    if not fmt.valid_video_id(v):
        raise Yt8mError(f"video id {fmt.show_id(v)}: {fmt.VIDEO_ID_RULE}")
    return v


def frame_level_record(video_id: str, labels: Sequence[int] | None = None, *, rgb, audio,
                       segment_labels=None, segment_start_times=None, segment_scores=None) -> bytes:
    """A serialized tf.train.SequenceExample in the layout of the real frame-level data."""
    rgb_q = _as_quantized("rgb", rgb, 1024)
    audio_q = _as_quantized("audio", audio, 128)
    if rgb_q.shape[0] != audio_q.shape[0]:
        raise Yt8mError(f"video {video_id}: rgb has {rgb_q.shape[0]} frames but audio has {audio_q.shape[0]}")
    ctx = {fmt.ID_KEY: proto.feature_bytes([_id(video_id)])}
    if labels is not None:
        ctx[fmt.LABELS_KEY] = proto.feature_int64(_check_labels(labels, f"video {video_id}"))
    if segment_labels is not None:
        seg_l = _check_labels(segment_labels, f"video {video_id} segment_labels")
        starts = [int(s) for s in segment_start_times]
        scores = np.asarray(segment_scores, np.float32)
        if not len(seg_l) == len(starts) == scores.size:
            raise Yt8mError(f"video {video_id}: segment labels, start times and scores differ in length")
        for s in starts:
            if not 0 <= s < rgb_q.shape[0]:
                raise Yt8mError(f"video {video_id}: segment start {s} is outside its {rgb_q.shape[0]} frames")
        ctx[fmt.SEGMENT_LABELS_KEY] = proto.feature_int64(seg_l)
        ctx[fmt.SEGMENT_START_KEY] = proto.feature_int64(starts)
        ctx[fmt.SEGMENT_END_KEY] = proto.feature_int64([s + fmt.SEGMENT_SIZE for s in starts])
        ctx[fmt.SEGMENT_SCORES_KEY] = proto.feature_float(scores)
    return proto.sequence_example(ctx, {"rgb": proto.frame_feature_list(rgb_q),
                                        "audio": proto.frame_feature_list(audio_q)})


def video_level_record(video_id: str, labels: Sequence[int] | None = None, *, mean_rgb, mean_audio) -> bytes:
    """A serialized tf.train.Example in the layout of the real video-level data."""
    mean_rgb = np.asarray(mean_rgb, np.float32).reshape(-1)
    mean_audio = np.asarray(mean_audio, np.float32).reshape(-1)
    if mean_rgb.size != 1024 or mean_audio.size != 128:
        raise Yt8mError(f"video {video_id}: mean_rgb must have 1024 values and mean_audio 128")
    feats = {fmt.ID_KEY: proto.feature_bytes([_id(video_id)]),
             "mean_rgb": proto.feature_float(mean_rgb), "mean_audio": proto.feature_float(mean_audio)}
    if labels is not None:
        feats[fmt.LABELS_KEY] = proto.feature_int64(_check_labels(labels, f"video {video_id}"))
    return proto.example(feats)


class FrameLevelWriter(TFRecordWriter):
    """Writes frame-level SequenceExamples; the file appears atomically on close."""

    def write_video(self, video_id: str, labels=None, **kw) -> None:
        self.write(frame_level_record(video_id, labels, **kw))


class VideoLevelWriter(TFRecordWriter):
    """Writes video-level Examples; the file appears atomically on close."""

    def write_video(self, video_id: str, labels=None, **kw) -> None:
        self.write(video_level_record(video_id, labels, **kw))
