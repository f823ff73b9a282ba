"""Keras -> ONNX, written directly from the weights (no tf2onnx): ~1 s and little memory per model.

Frame-level graphs take `frames` uint8 [batch, frames, D] and `num_frames` int32 [batch]; video-level
graphs take `features` float32 [batch, D]. Dequantization, L2 normalisation and masking are in the
graph. Output `predictions` [batch, classes]. Opset 17, IR version 8 (onnxruntime-gpu 1.31 refuses
IR > 10). Metadata (`yt8m.*` keys) carries everything `eval` and `infer` need.
"""
from __future__ import annotations

import dataclasses
import json
import os

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from .. import __version__
from .. import format as fmt
from ..errors import Yt8mError
from ..io.files import AtomicWriter, check_output
from .paths import eval_classes, export_paths
from ..train.config import ModelConfig

OPSET = 17
IR_VERSION = 8
L2_EPS = 1e-12


class Graph:
    """A small ONNX graph builder."""

    def __init__(self, dtype=np.float32):
        self.nodes: list = []
        self.inits: list = []
        self.n = 0
        self.dtype = dtype  # compute dtype (float32, or float16 for --fp16)

    def name(self, base="t"):
        self.n += 1
        return f"{base}_{self.n}"

    def const(self, value, name=None, dtype=None):
        arr = np.asarray(value)
        if dtype is not None:
            arr = arr.astype(dtype)
        elif arr.dtype.kind == "f":
            arr = arr.astype(self.dtype)
        nm = name or self.name("c")
        self.inits.append(numpy_helper.from_array(arr, nm))
        return nm

    def op(self, op_type, inputs, n_out=1, **attrs):
        outs = [self.name(op_type.lower()) for _ in range(n_out)]
        self.nodes.append(helper.make_node(op_type, list(inputs), outs, **attrs))
        return outs[0] if n_out == 1 else outs

    # -- composites --------------------------------------------------------------------------
    def axes(self, *a):
        return self.const(np.array(a, np.int64), dtype=np.int64)

    def reduce_sum(self, x, axis, keepdims=1):
        return self.op("ReduceSum", [x, self.axes(axis)], keepdims=keepdims)

    def l2_normalize(self, x, axis, dtype=None):
        dtype = dtype or self.dtype
        eps = L2_EPS if dtype == np.float32 else 6e-8  # the smallest float16
        ss = self.reduce_sum(self.op("Mul", [x, x]), axis)
        inv = self.op("Reciprocal", [self.op("Sqrt", [self.op("Max", [ss, self.const(np.asarray(eps, dtype), dtype=dtype)])])])
        return self.op("Mul", [x, inv])

    def dense(self, x, kernel, bias=None, cols=None):
        k = np.asarray(kernel)
        if cols is not None:
            k = k[:, cols]
        y = self.op("MatMul", [x, self.const(k)])
        if bias is not None:
            b = np.asarray(bias)
            y = self.op("Add", [y, self.const(b[cols] if cols is not None else b)])
        return y

    def batch_norm(self, x, bn):
        a, c = _bn_affine(bn)
        return self.op("Add", [self.op("Mul", [x, self.const(a)]), self.const(c)])

    def activation(self, x, kind):
        if kind == "relu6":
            return self.op("Clip", [x, self.const(np.float32(0)), self.const(np.float32(6))])
        if kind == "relu":
            return self.op("Relu", [x])
        return self.op("Sigmoid", [x])

    def context_gating(self, x, gating_layer, cols=None):
        """x * sigmoid(x W + b); with cols, only those output columns (x keeps all its columns)."""
        g = self.op("Sigmoid", [self.dense(x, gating_layer.dense.kernel, gating_layer.dense.bias, cols)])
        if cols is not None:
            x = self.op("Gather", [x, self.const(np.asarray(cols, np.int64), dtype=np.int64)], axis=1)
        return self.op("Mul", [x, g])


def _w(v):
    return np.asarray(v)


def _head(g: Graph, x, model, cfg: ModelConfig, cols):
    head = model.get_layer("head")
    if not hasattr(head, "num_mixtures"):  # logistic
        return g.op("Sigmoid", [g.dense(x, head.kernel, head.bias, cols)])
    m = head.num_mixtures
    c = head.num_classes
    gated = head.gated
    out_cols = None if gated else cols  # a gated MoE mixes all classes before its output gating
    k = c if out_cols is None else len(out_cols)
    gk = _w(head.gate.kernel).reshape(-1, c, m + 1)
    ek = _w(head.expert.kernel).reshape(-1, c, m)
    eb = _w(head.expert.bias).reshape(c, m)
    if out_cols is not None:
        gk, ek, eb = gk[:, out_cols], ek[:, out_cols], eb[out_cols]
    gate = g.op("MatMul", [x, g.const(gk.reshape(gk.shape[0], -1))])
    gate = g.op("Softmax", [g.op("Reshape", [gate, g.const(np.array([-1, k, m + 1], np.int64), dtype=np.int64)])],
                axis=-1)
    expert = g.op("Add", [g.op("MatMul", [x, g.const(ek.reshape(ek.shape[0], -1))]), g.const(eb.reshape(-1))])
    expert = g.op("Sigmoid", [g.op("Reshape", [expert, g.const(np.array([-1, k, m], np.int64), dtype=np.int64)])])
    gate = g.op("Slice", [gate, g.axes(0), g.axes(m), g.axes(2)])
    p = g.op("ReduceSum", [g.op("Mul", [gate, expert]), g.axes(2)], keepdims=0)
    if gated:
        p = g.context_gating(p, head.context, cols)
    return p


def _frame_input(g: Graph, frames, num_frames):
    """Dequantized frames x [B, T, D] (not normalised), inv [B, T, 1] = 1 / ||x|| per frame, mask [B, T, 1].

    The per-frame L2 normalisation is a per-frame scale, so it is applied after the first linear map
    (x @ W) * inv instead of materialising x * inv: fewer passes over the largest tensor.
    """
    x = g.op("DequantizeLinear", [frames, g.const(fmt.DEQUANT_SCALE, dtype=np.float32), g.const(np.uint8(127), dtype=np.uint8)])
    x = g.op("Add", [x, g.const(np.float32(fmt.DEQUANT_BIAS + 127 * fmt.DEQUANT_SCALE), dtype=np.float32)])
    ss = g.reduce_sum(g.op("Mul", [x, x]), 2)  # (ORT's ReduceSumSquare was 4x slower than Mul + ReduceSum)
    inv = g.op("Reciprocal", [g.op("Sqrt", [g.op("Max", [ss, g.const(np.float32(L2_EPS), dtype=np.float32)])])])
    if g.dtype != np.float32:
        x = g.op("Cast", [x], to=TensorProto.FLOAT16)
        inv = g.op("Cast", [inv], to=TensorProto.FLOAT16)
    t = g.op("Gather", [g.op("Shape", [frames]), g.const(np.array(1, np.int64), dtype=np.int64)], axis=0)
    rng = g.op("Range", [g.const(np.array(0, np.int64), dtype=np.int64), t, g.const(np.array(1, np.int64), dtype=np.int64)])
    nf = g.op("Cast", [num_frames], to=TensorProto.INT64)
    valid = g.op("Less", [g.op("Unsqueeze", [rng, g.axes(0)]), g.op("Unsqueeze", [nf, g.axes(1)])])
    mask = g.op("Unsqueeze", [g.op("Cast", [valid], to=_onnx_dtype(g.dtype)), g.axes(2)])  # [B, T, 1]
    return x, inv, mask, nf


def _onnx_dtype(dtype):
    return TensorProto.FLOAT16 if dtype == np.float16 else TensorProto.FLOAT


def _lstm_gates(w, h):
    """Keras orders LSTM gates i, f, c, o; ONNX i, o, f, c."""
    return np.concatenate([w[..., :h], w[..., 3 * h:], w[..., h:2 * h], w[..., 2 * h:3 * h]], -1)


def _bn_affine(bn):
    gamma, beta, mean, var = (np.asarray(v, np.float32) for v in (bn.gamma, bn.beta, bn.moving_mean,
                                                                     bn.moving_variance))
    a = (gamma / np.sqrt(var + np.float32(bn.epsilon))).astype(np.float32)
    return a, (beta - mean * a).astype(np.float32)


def _scaled_dense(g: Graph, x, inv, kernel, bias=None, pre_bn=None):
    """dense(bn(x * inv)) computed as (x @ W') * inv + b' (the normalisation is a per-frame scale)."""
    w = np.asarray(kernel, np.float32)
    b = np.zeros(w.shape[1], np.float32) if bias is None else np.asarray(bias, np.float32)
    if pre_bn is not None:  # bn(z) = z * a + c  =>  bn(z) @ W = z @ (a W) + c @ W
        a, c = _bn_affine(pre_bn)
        b = b + c @ w
        w = a[:, None] * w
    y = g.op("Mul", [g.op("MatMul", [x, g.const(w)]), inv])
    return g.op("Add", [y, g.const(b)]) if (bias is not None or pre_bn is not None) else y


def _backbone(g: Graph, model, cfg: ModelConfig, x, inv, mask, nf, frames: int | None = None):
    one = lambda: g.const(np.float32(1))  # noqa: E731
    normalized = lambda: g.op("Mul", [x, g.op("Mul", [inv, mask])])  # noqa: E731
    if cfg.model == "FrameLevelLogisticModel":
        # mean_t mask_t * x_t / ||x_t||  as one batched MatMul of the per-frame weights with x (the
        # division by the frame count is folded into the [B, T, 1] weights, not done on [B, D])
        count = g.op("Max", [g.reduce_sum(mask, 1), one()])                         # [B, 1, 1]
        w = g.op("Div", [g.op("Mul", [inv, mask]), count])                          # [B, T, 1]
        w = g.op("Transpose", [w], perm=[0, 2, 1])                                  # [B, 1, T]
        return g.op("Squeeze", [g.op("MatMul", [w, x]), g.axes(1)])                 # [B, D]
    if cfg.model == "DbofModel":
        L = model.get_layer("dbof")
        a = _scaled_dense(g, x, inv, L.cluster.kernel, L.cluster.bias if L.cluster.use_bias else None,
                          pre_bn=L.input_bn)
        if L.cluster_bn is not None:
            a = g.batch_norm(a, L.cluster_bn)
        a = g.op("Mul", [g.activation(a, cfg.dbof_activation), mask])
        if cfg.dbof_pooling_method == "max":
            if frames:  # a fixed frame count: an elementwise Max over the frame slices (faster on GPUs)
                parts = g.op("Split", [a], n_out=frames, axis=1) if frames > 1 else [a]
                parts = [parts] if isinstance(parts, str) else parts
                pooled = g.op("Squeeze", [g.op("Max", parts) if frames > 1 else parts[0], g.axes(1)])
            else:
                pooled = g.op("ReduceMax", [a], axes=[1], keepdims=0)
        else:
            pooled = g.op("Div", [g.reduce_sum(a, 1, 0), g.op("Max", [g.reduce_sum(mask, 1, 0), one()])])
        h = g.dense(pooled, L.hidden.kernel, L.hidden.bias if L.hidden.use_bias else None)
        if L.hidden_bn is not None:
            h = g.batch_norm(h, L.hidden_bn)
        return g.activation(h, cfg.dbof_activation)
    if cfg.model == "LstmModel":
        seq = g.op("Transpose", [normalized()], perm=[1, 0, 2])  # [T, B, I]
        for i in range(cfg.lstm_layers):
            L = model.get_layer(f"lstm_{i}")
            cell = L.cell
            h = cfg.lstm_cells
            w = _lstm_gates(_w(cell.kernel), h).T[None]
            r = _lstm_gates(_w(cell.recurrent_kernel), h).T[None]
            b = np.concatenate([_lstm_gates(_w(cell.bias), h), np.zeros(4 * h, np.float32)])[None]
            y = g.op("LSTM", [seq, g.const(w), g.const(r), g.const(b)], hidden_size=h)
            seq = g.op("Squeeze", [y, g.axes(1)])
        seq = g.op("Transpose", [seq], perm=[1, 0, 2])  # [B, T, H]
        idx = g.op("Max", [g.op("Sub", [nf, g.const(np.array(1, np.int64), dtype=np.int64)]),
                           g.const(np.array(0, np.int64), dtype=np.int64)])
        idx = g.op("Unsqueeze", [idx, g.axes(1, 2)])
        shape = g.op("Concat", [g.op("Shape", [idx], start=0, end=2), g.const(np.array([cfg.lstm_cells], np.int64),
                                                                              dtype=np.int64)], axis=0)
        idx = g.op("Expand", [idx, shape])
        return g.op("Squeeze", [g.op("GatherElements", [seq, idx], axis=1), g.axes(1)])
    if cfg.model in ("NetVladModel", "NeXtVladModel"):
        L = model.get_layer("netvlad" if cfg.model == "NetVladModel" else "nextvlad")
        if cfg.model == "NeXtVladModel":
            x = _scaled_dense(g, x, inv, L.expand.kernel, L.expand.bias)
            att = g.op("Mul", [g.op("Sigmoid", [g.dense(x, L.attention.kernel, L.attention.bias)]), mask])
            a = g.dense(x, L.assign.kernel, L.assign.bias)
            a = g.op("Softmax", [g.op("Reshape", [a, g.const(np.array([0, 0, L.g, L.k], np.int64), dtype=np.int64)])],
                     axis=-1)
            a = g.op("Mul", [a, g.op("Unsqueeze", [att, g.axes(3)])])
            a = g.op("Reshape", [a, g.const(np.array([0, -1, L.k], np.int64), dtype=np.int64)])
            x = g.op("Reshape", [x, g.const(np.array([0, -1, L.f], np.int64), dtype=np.int64)])
            dim = L.f
        else:
            x = normalized()
            a = g.op("Mul", [g.op("Softmax", [g.dense(x, L.assign.kernel, L.assign.bias)], axis=-1), mask])
            dim = L.d
        a_sum = g.reduce_sum(a, 1)
        vlad = g.op("MatMul", [g.op("Transpose", [x], perm=[0, 2, 1]), a])
        vlad = g.op("Sub", [vlad, g.op("Mul", [a_sum, g.const(_w(L.centers)[None])])])
        vlad = g.l2_normalize(vlad, 1)
        vlad = g.op("Reshape", [vlad, g.const(np.array([-1, dim * L.k], np.int64), dtype=np.int64)])
        if cfg.model == "NetVladModel":
            vlad = g.l2_normalize(vlad, 1)
        h = g.dense(vlad, L.hidden.kernel, L.hidden.bias)
        return g.context_gating(h, L.gating) if L.gating is not None else h
    raise Yt8mError(f"export of {cfg.model} is not supported")


def build_onnx(model, cfg: ModelConfig, *, classes: str = "all", fp16: bool = False, step: int = 0,
               frames: int | None = None, extra_metadata: dict | None = None) -> onnx.ModelProto:
    """The ONNX model of a built Keras model. classes: 'all' or 'segment' (the 1000 segment classes);
    frames: a fixed frame count (e.g. 5 for segment inference) instead of a dynamic frame axis."""
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
    if cfg.frame_features:
        inputs = [helper.make_tensor_value_info("frames", TensorProto.UINT8, ["batch", frames or "frames", d]),
                  helper.make_tensor_value_info("num_frames", TensorProto.INT32, ["batch"])]
        x, inv, mask, nf = _frame_input(g, "frames", "num_frames")
        pooled = _backbone(g, model, cfg, x, inv, mask, nf, frames)
    else:
        inputs = [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", d])]
        pooled = g.l2_normalize("features", 1, np.float32)
        if fp16:
            pooled = g.op("Cast", [pooled], to=TensorProto.FLOAT16)
    p = _head(g, pooled, model, cfg, cols)
    if fp16:
        g.nodes.append(helper.make_node("Cast", [p], ["predictions"], to=TensorProto.FLOAT))
    else:  # the last node writes the output itself (no copy)
        g.nodes[-1].output[0] = "predictions"
    outputs = [helper.make_tensor_value_info("predictions", TensorProto.FLOAT, ["batch", int(out_ids.size)])]
    graph = helper.make_graph(g.nodes, f"yt8m_{cfg.model}", inputs, outputs, initializer=g.inits)
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="yt8m-engine",
                          producer_version=__version__)
    m.ir_version = IR_VERSION
    meta = {
        "yt8m.engine_version": __version__,
        "yt8m.model": cfg.model,
        "yt8m.config": json.dumps(dataclasses.asdict(cfg)),
        "yt8m.feature_names": json.dumps(list(cfg.feature_names)),
        "yt8m.feature_sizes": json.dumps([int(s) for s in cfg.feature_sizes]),
        "yt8m.frame_features": json.dumps(bool(cfg.frame_features)),
        "yt8m.class_ids": json.dumps([int(c) for c in out_ids]),
        "yt8m.classes": classes,
        "yt8m.segment_size": str(fmt.SEGMENT_SIZE),
        "yt8m.max_frames": str(cfg.max_frames),
        "yt8m.checkpoint_step": str(int(step)),
        "yt8m.precision": "fp16" if fp16 else "fp32",
        "yt8m.frames": str(frames or 0),
        **(extra_metadata or {}),
    }
    helper.set_model_props(m, meta)
    return m


def export(train_dir: str, output: str, *, classes: str = "all", fp16: bool = False,
           checkpoint: str | None = None, frames: int | None = None) -> dict:
    """Export the latest (or a given) checkpoint of train_dir to an ONNX file, written atomically."""
    from ..train.trainer import load_model

    check_output(output)
    model, cfg, step = load_model(train_dir, checkpoint)
    # the run's folder name only: no absolute path of the exporting machine travels with the model
    m = build_onnx(model, cfg, classes=classes, fp16=fp16, step=step, frames=frames,
                   extra_metadata={"yt8m.train_dir": os.path.basename(os.path.normpath(train_dir))})
    onnx.checker.check_model(m)
    with AtomicWriter(output) as f:
        f.write(m.SerializeToString())
    return {"output": output, "model": cfg.model, "step": step, "classes": classes, "fp16": fp16, "frames": frames,
            "bytes": os.path.getsize(output)}


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
        m = build_onnx(model, cfg, classes=classes, step=step)
        with AtomicWriter(path) as f:
            f.write(m.SerializeToString())


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
