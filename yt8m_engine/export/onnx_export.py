"""Keras -> ONNX, written directly from the weights (no tf2onnx): ~1 s and little memory per model. Each
registered backbone and head writes its own nodes (its `lower`, beside its Keras layer); this module
puts the input, the backbone, the head and the metadata together.

Frame-level graphs take `frames` uint8 [batch, frames, D] and `num_frames` int32 [batch]; video-level
graphs take `features` float32 [batch, D]. Dequantization, L2 normalisation and masking are in the
graph. Output `predictions` [batch, classes]. Opset 17, IR version 8 (onnxruntime-gpu 1.31 refuses
IR > 10). Metadata (`yt8m.*` keys) carries everything `eval` and `infer` need.
"""
from __future__ import annotations

import dataclasses
import os

import numpy as np
import onnx
from onnx import TensorProto, helper

from .. import __version__
from .. import format as fmt
from ..engine import ModelInfo
from ..errors import Yt8mError
from ..io.files import AtomicWriter, check_output
from ..results import ExportResult
from ..train import registry
from ..train.config import ModelConfig
from .graph import Graph, frame_input
from .paths import eval_classes, export_paths

OPSET = 17
IR_VERSION = 8


def build_onnx(model, cfg: ModelConfig, **options) -> onnx.ModelProto:
    """The ONNX model of a built Keras model, in memory (options: see assemble)."""
    m, g = assemble(model, cfg, **options)
    m.graph.initializer.extend(g.initializers())
    return m


def save_onnx(model, cfg: ModelConfig, f, **options) -> None:
    """The ONNX model of a built Keras model written to the binary file f, one weight at a time: the
    file is the model without its weights, then one `graph` field a weight holding that initializer
    (protobuf merges repeated occurrences of a message field, so every reader sees one graph). Peak
    memory: the weights once (a MoE's 89 MB were held five times over by the in-memory model and its
    serialization: +250 MB in the training process at each checkpoint)."""
    m, g = assemble(model, cfg, **options)
    f.write(m.SerializeToString())
    for name, make in g.arrays:
        arr = make()
        arr = np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<")).reshape(arr.shape)  # (keeps 0-d)
        head = TensorProto(name=name, dims=arr.shape, data_type=helper.np_dtype_to_tensor_dtype(arr.dtype))
        head = head.SerializeToString() + _field(_RAW_DATA, arr.nbytes)
        tensor = _field(_INITIALIZER, len(head) + arr.nbytes)
        f.write(_field(_GRAPH, len(tensor) + len(head) + arr.nbytes) + tensor + head)
        f.write(memoryview(arr).cast("B") if arr.size else b"")


def _tag(message, field: str) -> int:
    return message.DESCRIPTOR.fields_by_name[field].number << 3 | 2  # wire type 2: length-delimited


_GRAPH, _INITIALIZER, _RAW_DATA = (_tag(onnx.ModelProto, "graph"), _tag(onnx.GraphProto, "initializer"),
                                   _tag(TensorProto, "raw_data"))


def _field(tag: int, length: int) -> bytes:
    """A length-delimited field's key and length, as protobuf varints."""
    out = bytearray()
    for n in (tag, length):
        while n >= 0x80:
            out.append(n & 0x7F | 0x80)
            n >>= 7
        out.append(n)
    return bytes(out)


def assemble(model, cfg: ModelConfig, *, classes: str = "all", fp16: bool = False, step: int = 0,
             frames: int | None = None, extra_metadata: dict | None = None) -> tuple[onnx.ModelProto, Graph]:
    """The ONNX model of a built Keras model without its weights, and the Graph that holds them.
    classes: 'all' or 'segment' (the 1000 segment classes); frames: a fixed frame count (e.g. 5 for
    segment inference) instead of a dynamic frame axis."""
    if frames is not None and (not cfg.frame_features or not 1 <= frames <= cfg.max_frames):
        raise Yt8mError(f"--frames needs a frame-level model and a count in [1, {cfg.max_frames}]")
    if classes not in ("all", "segment"):
        raise Yt8mError("--classes must be 'all' or 'segment'")
    if classes == "segment" and cfg.num_classes != fmt.NUM_CLASSES:
        raise Yt8mError(f"--classes segment needs a {fmt.NUM_CLASSES}-class model (this one has {cfg.num_classes})")
    cols = np.asarray(fmt.segment_class_ids(), np.int64) if classes == "segment" else None
    out_ids = cols if cols is not None else np.arange(cfg.num_classes)
    g = Graph(np.float16 if fp16 else np.float32)
    d = sum(cfg.feature_sizes)
    backbone, head = registry.backbone(cfg.model), registry.head(registry.head_name(cfg))
    for part, name in ((backbone, cfg.model), (head, registry.head_name(cfg))):
        if not hasattr(part, "lower"):
            raise Yt8mError(f"export of {cfg.model}: {name} ({part.__name__}) has no ONNX lowering; "
                            "write its `lower` beside its Keras layer")
    if cfg.frame_features:
        inputs = [helper.make_tensor_value_info("frames", TensorProto.UINT8, ["batch", frames or "frames", d]),
                  helper.make_tensor_value_info("num_frames", TensorProto.INT32, ["batch"])]
        pooled = backbone.lower(g, model, cfg, frame_input(g, "frames", "num_frames", frames))
    else:
        inputs = [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", d])]
        pooled = backbone.lower(g, model, cfg, "features")
    p = head.lower(g, model, cfg, pooled, cols)
    if fp16:
        g.nodes.append(helper.make_node("Cast", [p], ["predictions"], to=TensorProto.FLOAT))
    else:  # the last node writes the output itself (no copy)
        g.nodes[-1].output[0] = "predictions"
    outputs = [helper.make_tensor_value_info("predictions", TensorProto.FLOAT, ["batch", int(out_ids.size)])]
    graph = helper.make_graph(g.nodes, f"yt8m_{cfg.model}", inputs, outputs)
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="yt8m-engine",
                          producer_version=__version__)
    m.ir_version = IR_VERSION
    info = ModelInfo(cfg.model, cfg.frame_features, cfg.feature_spec, np.asarray(out_ids, np.int64), int(step),
                     "fp16" if fp16 else "fp32", dataclasses.asdict(cfg), frames or 0, classes)
    helper.set_model_props(m, {**info.to_metadata(), **(extra_metadata or {})})
    return m, g


def export(train_dir: str, output: str, *, classes: str = "all", fp16: bool = False,
           checkpoint: str | None = None, frames: int | None = None) -> dict:
    """Export the latest (or a given) checkpoint of train_dir to an ONNX file, written atomically."""
    from ..train.trainer import load_model

    check_output(output)
    model, cfg, step = load_model(train_dir, checkpoint)
    # the run's folder name only: no absolute path of the exporting machine travels with the model
    writer = AtomicWriter(output)
    with writer as f:
        save_onnx(model, cfg, f, classes=classes, fp16=fp16, step=step, frames=frames,
                  extra_metadata={"yt8m.train_dir": os.path.basename(os.path.normpath(train_dir))})
        f.flush()
        onnx.checker.check_model(writer.temp_path)
    return ExportResult(output=output, model=cfg.model, step=step, classes=classes, fp16=fp16, frames=frames,
                        bytes=os.path.getsize(output))


def export_beside(model, cfg: ModelConfig, step: int, train_dir: str, checkpoint: str) -> None:
    """Export a live (just saved) model for eval beside its checkpoint, and remove the exports of
    checkpoints that are gone (rotated out). The trainer calls this: eval then needs no TensorFlow."""
    write_exports(model, cfg, step, export_paths(train_dir, checkpoint, eval_classes(cfg)))
    folder = os.path.join(train_dir, "export")
    for f in os.listdir(folder):
        ckpt = os.path.join(os.path.dirname(checkpoint), f.split(".")[0])
        if f.endswith(".onnx") and not os.path.exists(ckpt + ".index"):
            os.remove(os.path.join(folder, f))


def write_exports(model, cfg: ModelConfig, step: int, outputs: dict[str, str]) -> None:
    """A built model's ONNX files ({classes: path}), each written atomically."""
    for classes, path in outputs.items():
        with AtomicWriter(path) as f:
            save_onnx(model, cfg, f, classes=classes, step=step)


def export_checkpoint(train_dir: str, checkpoint: str, outputs: dict[str, str]) -> None:
    """Export one checkpoint to several files ({classes: path}) with one load of the model."""
    from ..train.trainer import load_model

    model, cfg, step = load_model(train_dir, checkpoint)
    write_exports(model, cfg, step, outputs)


if __name__ == "__main__":  # python -m yt8m_engine.export.onnx_export TRAIN_DIR CHECKPOINT CLASSES=PATH ...
    import sys

    try:
        export_checkpoint(sys.argv[1], sys.argv[2], dict(a.split("=", 1) for a in sys.argv[3:]))
    except Yt8mError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
