"""ONNX Runtime sessions: providers, metadata, io binding. No TensorFlow here.

With io binding, inputs are bound as uint8 host arrays (on CUDA copied once to the device, 4x fewer
bytes than float32) and the output either to the caller's host buffer (ONNX Runtime writes, or on
CUDA copies, the predictions straight into it: what `infer` does) or to a device buffer reused across
calls of the same batch size. Exports for segments carry only the needed output columns. Several
threads may call one model at once (ONNX Runtime's Run is thread-safe): each has its own binding.
"""
from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass

import numpy as np

from . import format as fmt
from .errors import Yt8mError

PROVIDER_NAMES = {"cuda": "CUDAExecutionProvider", "cpu": "CPUExecutionProvider",
                  "tensorrt": "TensorrtExecutionProvider"}


@dataclass
class ModelInfo:
    """What an exported file says about itself: its `yt8m.*` metadata, written by `to_metadata` (export)
    and read back, every field checked, by `from_metadata` (every verb that opens a model)."""

    model: str
    frame_features: bool
    spec: fmt.FeatureSpec
    class_ids: np.ndarray
    step: int
    precision: str
    config: dict
    frames: int = 0  # a fixed frame count (segment-only export), 0 for a dynamic frame axis
    classes: str = "all"

    def to_metadata(self) -> dict[str, str]:
        from . import __version__

        return {
            "yt8m.engine_version": __version__,
            "yt8m.model": self.model,
            "yt8m.config": json.dumps(self.config),
            "yt8m.feature_names": json.dumps(list(self.spec.names)),
            "yt8m.feature_sizes": json.dumps([int(s) for s in self.spec.sizes]),
            "yt8m.frame_features": json.dumps(bool(self.frame_features)),
            "yt8m.class_ids": json.dumps([int(c) for c in self.class_ids]),
            "yt8m.classes": self.classes,
            "yt8m.segment_size": str(fmt.SEGMENT_SIZE),
            "yt8m.max_frames": str(self.config.get("max_frames", fmt.MAX_FRAMES)),
            "yt8m.checkpoint_step": str(int(self.step)),
            "yt8m.precision": self.precision,
            "yt8m.frames": str(int(self.frames)),
        }

    @classmethod
    def from_metadata(cls, path: str, meta: dict) -> "ModelInfo":
        """The model's description from its metadata, every field checked (a file edited by hand or made
        by another tool is refused here, not by a traceback or an empty submission later)."""
        def bad(what: str):
            return Yt8mError(f"{path}: bad yt8m metadata ({what}); export the model again with 'yt8m-engine export'")

        try:
            frame = json.loads(meta["yt8m.frame_features"])
            names, sizes = json.loads(meta["yt8m.feature_names"]), json.loads(meta["yt8m.feature_sizes"])
            class_ids = json.loads(meta["yt8m.class_ids"])
            step, frames = int(meta.get("yt8m.checkpoint_step", 0)), int(meta.get("yt8m.frames", 0))
            config = json.loads(meta.get("yt8m.config", "{}"))
        except KeyError as e:
            raise Yt8mError(f"{path}: not a yt8m-engine ONNX export (no metadata {e}); "
                            "export it with 'yt8m-engine export'") from None
        except ValueError as e:
            raise bad(f"unreadable value: {e}") from None
        if not isinstance(frame, bool):
            raise bad("frame_features is not true or false")
        if not (isinstance(names, list) and isinstance(sizes, list) and names and len(names) == len(sizes)
                and all(isinstance(n, str) and n for n in names)
                and all(isinstance(z, int) and not isinstance(z, bool) and 0 < z <= 1 << 20 for z in sizes)):
            raise bad(f"feature_names {names!r} and feature_sizes {sizes!r} are not one name and one positive size a feature")
        if not (isinstance(class_ids, list) and class_ids
                and all(isinstance(c, int) and not isinstance(c, bool) and 0 <= c < 1 << 31 for c in class_ids)):
            raise bad("class_ids is not a non-empty list of class ids")
        ids = np.array(class_ids, np.int64)
        if np.unique(ids).size != ids.size:
            raise bad("class_ids names a class twice")
        if frames < 0 or not isinstance(config, dict):
            raise bad("frames or config")
        return cls(str(meta.get("yt8m.model", "")), frame, fmt.FeatureSpec(tuple(names), tuple(sizes), frame),
                   ids, step, meta.get("yt8m.precision", "fp32"), config, frames, meta.get("yt8m.classes", "all"))


def check_graph(path: str, session, info: ModelInfo) -> None:
    """The graph's inputs and output agree with the metadata: the input the reader will feed, with the
    metadata's feature width, and one prediction column per class id."""
    inputs = {i.name: i.shape for i in session.get_inputs()}
    want = "frames" if info.frame_features else "features"
    width = info.spec.total_size
    shape = inputs.get(want)
    if shape is None or (info.frame_features and "num_frames" not in inputs):
        raise Yt8mError(f"{path}: the graph's inputs {sorted(inputs)} are not what a "
                        f"{'frame' if info.frame_features else 'video'}-level yt8m-engine export takes")
    if isinstance(shape[-1], int) and shape[-1] != width:
        raise Yt8mError(f"{path}: the graph takes {shape[-1]} features a {'frame' if info.frame_features else 'video'}, "
                        f"the metadata's feature_sizes add up to {width}")
    out = {o.name: o.shape for o in session.get_outputs()}.get("predictions")
    if out is None:
        raise Yt8mError(f"{path}: the graph has no 'predictions' output")
    if isinstance(out[-1], int) and out[-1] != info.class_ids.size:
        raise Yt8mError(f"{path}: the graph predicts {out[-1]} classes, the metadata names {info.class_ids.size} class ids")


def _gpu_usable(ort) -> bool:
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return False
    try:  # a GPU driver at all? (the CUDA provider is listed by onnxruntime-gpu on any machine)
        import ctypes

        ctypes.CDLL("libcuda.so.1")
    except OSError:
        return False
    if hasattr(ort, "preload_dlls"):  # CUDA / cuDNN from the nvidia-* wheels, when installed
        try:
            ort.preload_dlls()
        except Exception:  # noqa: BLE001 - no CUDA libraries: fall back to the CPU
            return False
    return True


def choose_providers(requested: str = "auto") -> list[str]:
    """'auto': CUDA when usable, else CPU; or a comma-separated list of cuda, tensorrt, cpu."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    if requested == "auto":
        return ["CUDAExecutionProvider", "CPUExecutionProvider"] if _gpu_usable(ort) else ["CPUExecutionProvider"]
    out = []
    for name in [p.strip().lower() for p in requested.split(",") if p.strip()]:
        if name not in PROVIDER_NAMES:
            raise Yt8mError(f"unknown provider {name!r}; use auto or a list of {', '.join(PROVIDER_NAMES)}")
        full = PROVIDER_NAMES[name]
        if full not in available or (name in ("cuda", "tensorrt") and not _gpu_usable(ort)):
            raise Yt8mError(f"--providers {name}: {full} is not usable here (available: {', '.join(available)})")
        out.append(full)
    if "TensorrtExecutionProvider" in out and "CUDAExecutionProvider" not in out:
        out.insert(out.index("TensorrtExecutionProvider") + 1, "CUDAExecutionProvider")  # for ops TensorRT lacks
    if "CPUExecutionProvider" not in out:
        out.append("CPUExecutionProvider")
    return out


class OnnxModel:
    """An exported model under ONNX Runtime."""

    def __init__(self, path: str, providers: str = "auto", threads: int | None = None,
                 io_binding: bool | None = None, spin: bool = True):
        """threads: ONNX Runtime's intra-op threads (1: each call runs on its caller's thread only);
        spin=False: idle pool threads sleep instead of spinning (when other threads need the cores)."""
        import onnxruntime as ort

        if os.path.isdir(path):
            raise Yt8mError(f"{path} is a folder, not an ONNX file; for a train_dir, give --train_dir {path} "
                            f"instead (or export it: yt8m-engine export --train_dir {path} --output model.onnx)")
        if not os.path.isfile(path):
            raise Yt8mError(f"{path}: no such model file")
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            opts.intra_op_num_threads = threads
            opts.inter_op_num_threads = 1
        if not spin:
            opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        opts.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(path, sess_options=opts, providers=choose_providers(providers))
        except Yt8mError:
            raise
        except Exception as e:  # noqa: BLE001 - ORT raises its own types for bad files
            raise Yt8mError(f"{path}: ONNX Runtime cannot load it ({str(e).splitlines()[0][:200]})") from None
        self.path = path
        self.info = ModelInfo.from_metadata(path, self.session.get_modelmeta().custom_metadata_map)
        check_graph(path, self.session, self.info)
        self.provider = self.session.get_providers()[0]
        self.on_gpu = self.provider in ("CUDAExecutionProvider", "TensorrtExecutionProvider")
        # io binding: None = on the GPU, and wherever the caller gives an output buffer (ONNX Runtime
        # then writes the predictions there itself); True forces it (on the CPU it exercises the GPU's
        # calls), False never (plain run() on host arrays: the GPU benchmark's baseline)
        self.io_binding = io_binding
        self._device = "cuda" if self.on_gpu else "cpu"
        self._local = threading.local()  # per calling thread: (binding, device output buffer)

    @property
    def class_ids(self) -> np.ndarray:
        return self.info.class_ids

    def columns_for(self, class_ids: np.ndarray) -> np.ndarray | None:
        """Output columns of the given classes (None when they are all the columns, in order)."""
        pos = {int(c): i for i, c in enumerate(self.info.class_ids)}
        missing = [int(c) for c in class_ids if int(c) not in pos]
        if missing:
            raise Yt8mError(f"{self.path}: the model has no output for classes {missing[:5]}"
                            f"{' ...' if len(missing) > 5 else ''}")
        cols = np.array([pos[int(c)] for c in class_ids], np.int64)
        return None if cols.size == self.info.class_ids.size and (cols == np.arange(cols.size)).all() else cols

    def run(self, feeds: dict, out: np.ndarray | None = None) -> np.ndarray:
        """predictions [batch, columns] as a float32 host array; written into `out` (C-contiguous,
        [batch, columns]) when given: with io binding ONNX Runtime writes there itself, no copy."""
        binding = self.io_binding if self.io_binding is not None else (self.on_gpu or out is not None)
        if not binding:
            res = self.session.run(["predictions"], feeds)[0]
            if out is None:
                return res
            out[...] = res
            return out
        loc = self._local
        if getattr(loc, "binding", None) is None:
            loc.binding, loc.dev_out = self.session.io_binding(), None
        b = loc.binding
        for name, arr in feeds.items():
            b.bind_cpu_input(name, np.ascontiguousarray(arr))
        n = next(iter(feeds.values())).shape[0]
        shape = (n, self.info.class_ids.size)
        if out is not None:
            assert out.shape == shape and out.dtype == np.float32 and out.flags.c_contiguous
            b.bind_output("predictions", "cpu", 0, np.float32, list(shape), out.ctypes.data)
            self.session.run_with_iobinding(b)
            return out
        import onnxruntime as ort

        if loc.dev_out is None or loc.dev_out.shape()[0] != n:  # a device buffer reused across calls
            loc.dev_out = ort.OrtValue.ortvalue_from_shape_and_type(shape, np.float32, self._device, 0)
        b.bind_ortvalue_output("predictions", loc.dev_out)
        self.session.run_with_iobinding(b)
        return loc.dev_out.numpy().copy()

    def predict_frames(self, frames: np.ndarray, num_frames: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        if self.info.frames and frames.shape[1] != self.info.frames:
            raise Yt8mError(f"{self.path} was exported for {self.info.frames}-frame inputs (segments), not "
                            f"{frames.shape[1]}-frame videos; export without --frames for video-level use")
        return self.run({"frames": frames, "num_frames": np.ascontiguousarray(num_frames, np.int32)}, out)

    def predict_features(self, features: np.ndarray) -> np.ndarray:
        return self.run({"features": np.ascontiguousarray(features, np.float32)})


def video_batch(model) -> int:
    """Videos a model call by default (infer, eval): 256 on a GPU. On a CPU, 16 frame-level videos of
    similar length (taken from a chunk of 256: 2.9x faster than 256 at once), but 256 video-level ones:
    there a call's arithmetic is small and it reads every weight (MoeModel's 89 MB for 16 videos made
    eval of 2000 videos 0.93-1.29 s; 256 a call, 0.64-0.67 s)."""
    return 256 if model.on_gpu or not model.info.frame_features else 16


def predict_videos(model, b, batch_size: int) -> np.ndarray:
    """Predictions for the videos of a reader Batch, batch_size at a time (an OnnxModel, or any
    object with the same predict_frames / predict_features / info). Frame-level batches take videos
    of similar length together (by num_frames), so little of a batch is padding."""
    out = np.zeros((len(b), model.info.class_ids.size), np.float32)
    order = np.argsort(b.num_frames, kind="stable") if model.info.frame_features else np.arange(len(b))
    for a in range(0, len(b), batch_size):
        rows = order[a:a + batch_size]
        if model.info.frame_features:
            out[rows] = model.predict_frames(*b.padded_frames(rows))
        else:
            out[rows] = model.predict_features(b.features[rows])
    return out


def predict_segments(model, frames: np.ndarray, num_frames: np.ndarray, batch_size: int,
                     cols: np.ndarray | None = None, out: np.ndarray | None = None) -> np.ndarray:
    """Predictions for cut segments (frames [S, 5, D]), batch_size at a time; only `cols` when given.
    out: a [>= S, width] float32 buffer to write into (reused by the caller); the result is out[:S]."""
    s = frames.shape[0]
    width = model.info.class_ids.size if cols is None else len(cols)
    if out is None or out.shape[0] < s or out.shape[1] != width:
        out = np.empty((s, width), np.float32)
    res = out[:s]
    direct = cols is None and isinstance(model, OnnxModel)
    for a in range(0, s, batch_size):
        e = min(s, a + batch_size)
        if direct:
            model.predict_frames(frames[a:e], num_frames[a:e], out=res[a:e])
        else:
            p = model.predict_frames(frames[a:e], num_frames[a:e])
            res[a:e] = p if cols is None else p[:, cols]
    return res
