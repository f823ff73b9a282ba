"""`yt8m-engine extract` (videos -> YouTube-8M TFRecords) and `predict` (videos -> labels).

Per video: frames at --frames_per_second by timestamps (a decoding thread, overlapped with the model),
batches of same-sized frames through Inception-v3, the YouTube-8M PCA, quantization; audio: VGGish
features, one per frame (audio.py; the decoding thread reads the audio after the frames), or 128 zero
bytes a frame with --insert_zero_audio_features (the starter extractor's way) and for a video without an
audio stream. Memory: one batch of decoded frames, the first max_frames seconds of audio and one video's
features, whatever the video's length.
"""
from __future__ import annotations

import csv
import glob
import os
import queue
import re
import threading
from dataclasses import dataclass, field

import numpy as np

from .. import format as fmt
from ..errors import Yt8mError
from .audio import Vggish, decode_audio
from .features import Pca, ensure_model_files, load_inception, quantize
from .video import sample_frames

BATCH = 8  # frames a model call (same-sized frames of one video; 8: as fast a frame as 32 here, less memory)


@dataclass
class VideoFeatures:
    path: str
    rgb: np.ndarray                    # uint8 [frames, 1024]
    rgb_float: np.ndarray              # float32 [frames, 1024] (before quantization)
    labels: list = field(default_factory=list)
    audio: np.ndarray | None = None    # uint8 [frames, 128] (None: no audio asked for)
    audio_float: np.ndarray | None = None
    audio_stream: bool = True          # False: the video has none (zero audio written)


AUDIO_MODES = ("vggish", "zeros", "none")
NO_AUDIO_STREAM = "no audio stream: zeros"   # predict's audio entry for a video without one


class _Wave:
    def __init__(self, wave):
        self.wave = wave


class Extractor:
    """audio: "vggish" (features as the dataset's), "zeros" (128 zero bytes a frame) or "none"."""

    def __init__(self, model_dir: str = "~/yt8m", frames_per_second: float = 1.0, max_frames: int = fmt.MAX_FRAMES,
                 download: bool = True, audio: str = "vggish", providers: str = "auto", echo=None):
        model_dir = os.path.expanduser(model_dir)
        if frames_per_second <= 0 or max_frames < 1:
            raise Yt8mError("--frames_per_second must be positive and --max_frames at least 1")
        if audio not in AUDIO_MODES:
            raise ValueError(f"audio must be one of {AUDIO_MODES}")
        from ..engine import choose_providers

        choose_providers(providers)   # a provider asked for but not usable: said now, not worked around
        ensure_model_files(model_dir, download, audio=audio == "vggish")
        self.inception = load_inception(model_dir, providers, echo)
        self.pca = Pca(model_dir)
        self.vggish = Vggish(model_dir, providers, echo) if audio == "vggish" else None
        self.fps, self.max_frames, self.audio = frames_per_second, max_frames, audio

    def features(self, path: str, labels=()) -> VideoFeatures:
        """One video's features; decoding runs on a thread of its own while the model runs."""
        q: queue.Queue = queue.Queue(maxsize=2)
        done = object()

        def decode():
            n = 0

            def emit(batch):
                nonlocal n
                q.put(np.stack(batch))
                n += len(batch)

            try:
                batch = []
                for frame in sample_frames(path, self.fps, self.max_frames):
                    if batch and frame.shape != batch[0].shape:  # a size change mid-video: a batch of its own
                        emit(batch)
                        batch = []
                    batch.append(frame)
                    if len(batch) == BATCH:
                        emit(batch)
                        batch = []
                if batch:
                    emit(batch)
                if self.vggish is not None and n:   # the audio the frames cover (0.96 s past the last)
                    q.put(_Wave(decode_audio(path, n / self.fps + 1.0)))
                q.put(done)
            except BaseException as e:  # noqa: BLE001 - handed to the caller
                q.put(e)

        t = threading.Thread(target=decode, daemon=True)
        t.start()
        feats, wave = [], None
        while True:
            item = q.get()
            if item is done:
                break
            if isinstance(item, BaseException):
                raise item
            if isinstance(item, _Wave):
                wave = item
                continue
            feats.append(self.pca(self.inception(item)))
        t.join()
        if not feats:
            raise Yt8mError(f"{path}: no frames could be decoded (an empty or zero-length video)")
        x = np.concatenate(feats).astype(np.float32)
        vf = VideoFeatures(path, quantize(x), x, list(labels))
        if self.audio == "none":
            return vf
        vf.audio_stream = wave is None or wave.wave is not None
        if wave is None or wave.wave is None:   # zeros asked for, or no audio stream
            vf.audio_float = np.zeros((len(x), 128), np.float32)
            vf.audio = np.zeros((len(x), 128), np.uint8)
        else:
            vf.audio_float = self.vggish(wave.wave, len(x), self.fps).astype(np.float32)
            vf.audio = quantize(vf.audio_float)
        return vf


def video_list(videos: list[str], input_videos_csv: str | None) -> list[tuple[str, list[int]]]:
    """(path, labels) from the starter's CSV (`<video_file>,<label;label;...>`, labels optional) and/or
    paths and globs."""
    out: list[tuple[str, list[int]]] = []
    if input_videos_csv:
        try:
            with open(input_videos_csv, newline="") as f:
                for n, row in enumerate(csv.reader(f), 1):
                    if not row or not row[0].strip():
                        continue
                    labels = []
                    if len(row) > 1 and row[1].strip():
                        try:
                            labels = [int(x) for x in re.split(r"[;\s]+", row[1].strip()) if x]
                        except ValueError:
                            raise Yt8mError(f"{input_videos_csv}: line {n}: labels must be integers separated by ';'") from None
                    out.append((row[0].strip(), labels))
        except OSError as e:
            raise Yt8mError(f"{input_videos_csv}: cannot read ({e.strerror or e})") from None
    for v in videos:
        found = sorted(glob.glob(os.path.expanduser(v))) if glob.has_magic(v) else [v]
        if not found:
            raise Yt8mError(f"no videos match {v!r}")
        out += [(p, []) for p in found]
    if not out:
        raise Yt8mError("give videos (paths or globs) or --input_videos_csv")
    return out


def video_id(path: str) -> str:
    """The record id: the path as given (the starter's), with characters a CSV cannot hold replaced."""
    v = re.sub(r'[^\x21-\x7e]|[,:"]', "_", path)[-fmt.MAX_ID_BYTES:]
    return v or "_"


def extract(videos: list[str], output: str, *, input_videos_csv: str | None = None, model_dir: str = "~/yt8m",
            frames_per_second: float = 1.0, max_frames: int = fmt.MAX_FRAMES, skip_frame_level_features: bool = False,
            labels_feature_key: str = "labels", image_feature_key: str = "rgb", video_file_feature_key: str = "id",
            insert_zero_audio_features: bool | None = None, skip_corrupt: bool = False, shards: int = 1,
            providers: str = "auto", echo=print) -> dict:
    """Write the videos' records (frame-level SequenceExamples, or video-level Examples) to output (with
    shards > 1: OUTPUT-00000-of-0000N..., video i in file i % N), atomically. Audio: VGGish features
    (insert_zero_audio_features None, the default), zeros (True: the starter extractor's records) or none
    (False). A video that cannot be read stops the run (nothing written), or with skip_corrupt is left out
    and counted."""
    import contextlib

    from ..io import proto
    from ..io.files import check_output
    from ..io.tfrecord import TFRecordWriter
    from ..progress import Progress

    items = video_list(videos, input_videos_csv)
    if shards < 1:
        raise Yt8mError("--shards must be at least 1")
    stem, ext = os.path.splitext(output)
    outputs = [output] if shards == 1 else [f"{stem}-{i:05d}-of-{shards:05d}{ext}" for i in range(shards)]
    for o in outputs:
        check_output(o, [p for p, _ in items])
    audio = {None: "vggish", True: "zeros", False: "none"}[insert_zero_audio_features]
    ex = Extractor(model_dir, frames_per_second, max_frames, audio=audio, providers=providers, echo=echo)
    written, failed, frames, silent = 0, [], 0, 0
    prog = Progress("extract", total=len(items), unit="videos")
    with contextlib.ExitStack() as stack:  # every file appears only when all are complete
        writers = [stack.enter_context(TFRecordWriter(o)) for o in outputs]
        for i, (path, labels) in enumerate(items):
            w = writers[i % shards]
            try:
                vf = ex.features(path, labels)
            except Yt8mError as e:
                if not skip_corrupt:
                    raise
                failed.append(str(e))
                echo(f"warning: skipped {e}")
                continue
            w.write(_record(vf, proto, skip_frame_level_features, labels_feature_key, image_feature_key,
                            video_file_feature_key))
            silent += not vf.audio_stream
            written += 1
            frames += len(vf.rgb)
            prog.update(i + 1, frames=frames)
    prog.close()
    return {"output": ", ".join(outputs) if shards <= 3 else f"{outputs[0]} ... ({shards} files)",
            "videos": written, "frames": frames, "failed": len(failed), "audio": audio,
            "without_audio_stream": silent}


def _record(vf: VideoFeatures, proto, video_level: bool, labels_key: str, image_key: str, id_key: str) -> bytes:
    """The dataset's record: context id, sorted labels, mean_<image> and mean_audio (the means of the
    unquantized features), feature lists <image> and audio (uint8 a frame); video level: a
    tf.train.Example with the context only (the dataset's video-level layout)."""
    ctx = {id_key: proto.feature_bytes([video_id(vf.path).encode()]),
           labels_key: proto.feature_int64(sorted(int(x) for x in vf.labels)),
           "mean_" + image_key: proto.feature_float(vf.rgb_float.mean(0))}
    if vf.audio is not None:
        ctx["mean_audio"] = proto.feature_float(vf.audio_float.mean(0))
    if video_level:
        return proto.example(ctx)
    lists = {image_key: proto.frame_feature_list(vf.rgb)}
    if vf.audio is not None:
        lists["audio"] = proto.frame_feature_list(vf.audio)
    return proto.sequence_example(ctx, lists)


def predict(videos: list[str], model_path: str, *, input_videos_csv: str | None = None, model_dir: str = "~/yt8m",
            frames_per_second: float = 1.0, max_frames: int = fmt.MAX_FRAMES, vocabulary: str | None = None,
            top_k: int = 20, providers: str = "auto", skip_corrupt: bool = False, echo=print) -> list[dict]:
    """Per video: its top_k classes (id, name from vocabulary.csv, score) and, for a frame-level model,
    each of those classes' best 5-frame segment (start in seconds) — the features extracted in memory
    exactly as `extract` writes them, then the model as `infer` runs it."""
    from ..engine import OnnxModel, predict_segments
    from ..kernels.segments import cut_segments

    items = video_list(videos, input_videos_csv)
    model = OnnxModel(model_path, providers)
    info = model.info
    names = fmt.load_vocabulary(vocabulary) if vocabulary else {}
    if list(info.spec.names) not in (["rgb", "audio"], ["rgb"], ["mean_rgb", "mean_audio"], ["mean_rgb"]):
        raise Yt8mError(f"{model_path}: takes features {list(info.spec.names)}; extract makes rgb and audio")
    with_audio = len(info.spec.names) == 2
    ex = Extractor(model_dir, frames_per_second, max_frames, audio="vggish" if with_audio else "none",
                   providers=providers, echo=echo)
    out = []
    for path, _ in items:
        try:
            vf = ex.features(path)
        except Yt8mError as e:
            if not skip_corrupt:
                raise
            echo(f"warning: skipped {e}")
            continue
        n = len(vf.rgb)
        if info.frame_features:
            frames = np.concatenate([vf.rgb, vf.audio], 1) if with_audio else vf.rgb
            p = model.predict_frames(frames[None], np.array([n], np.int32))[0]
        else:
            feats = np.concatenate([vf.rgb_float.mean(0), vf.audio_float.mean(0)]) if with_audio else vf.rgb_float.mean(0)
            p = model.predict_features(feats[None].astype(np.float32))[0]
        order = np.argsort(-p, kind="stable")[:top_k]
        classes = [{"class": int(info.class_ids[c]), "name": names.get(int(info.class_ids[c]), ""),
                    "score": float(p[c])} for c in order]
        if info.frame_features:  # each top class's best 5-frame segment
            seg, nf, _, start = cut_segments(frames, np.array([0], np.int64), np.array([n], np.int32),
                                             fmt.SEGMENT_SIZE)
            sp = predict_segments(model, seg, nf, 256)
            for c, item in zip(order, classes):
                best = int(np.argmax(sp[:, c]))
                item["best_segment"] = {"start_seconds": float(start[best] / frames_per_second),
                                        "end_seconds": float((start[best] + nf[best]) / frames_per_second),
                                        "score": float(sp[best, c])}
        out.append({"video": path, "frames": n, "audio": ("vggish" if vf.audio_stream else NO_AUDIO_STREAM)
                    if with_audio else "not used", "classes": classes})
    return out


def predictions_table(results: list[dict]) -> str:
    lines = []
    for r in results:
        note = "; no audio stream: zero audio" if r.get("audio") == NO_AUDIO_STREAM else ""
        lines.append(f"{r['video']} ({r['frames']} frames{note})")
        w = max([len(c["name"]) for c in r["classes"]] + [4])
        for c in r["classes"]:
            seg = c.get("best_segment")
            where = f"  best 5 s at {seg['start_seconds']:.0f}-{seg['end_seconds']:.0f} s ({seg['score']:.3f})" if seg else ""
            lines.append(f"  {c['class']:>5}  {c['name']:<{w}}  {c['score']:.4f}{where}")
    return "\n".join(lines)
