"""The ONNX graph builder the backbones and heads write their nodes with, and the lowering pieces they
share (the uint8 frame input, batch norm as an affine map, a dense layer applied before the per-frame
normalisation). Opset 17."""
from __future__ import annotations

import sys
from dataclasses import dataclass

import numpy as np
from onnx import TensorProto, helper, numpy_helper

from .. import format as fmt

L2_EPS = 1e-12


def host(weight) -> np.ndarray:
    """A weight (a Keras or TensorFlow variable, or an array) as a NumPy array, without a copy where it is
    in host memory: a read-only view of the variable's buffer (the exports beside every checkpoint copied
    each kernel: a MoE's gate kernel is 53 MB, which put the training process's peak RSS over the
    starter's). Elsewhere (a GPU) a copy."""
    tf = sys.modules.get("tensorflow")
    if tf is not None and not isinstance(weight, np.ndarray):
        t = tf.convert_to_tensor(weight)
        if t.device.endswith("CPU:0"):
            return np.from_dlpack(t)
    return np.asarray(weight)


@dataclass
class FrameInputs:
    """What a frame-level backbone's lowering starts from (see frame_input)."""

    x: str          # dequantized frames [B, T, D], not normalised
    inv: str        # 1 / ||x|| per frame [B, T, 1]
    mask: str       # valid frames [B, T, 1] (compute dtype)
    nf: str         # frame counts [B] int64
    frames: int | None = None  # a fixed frame count (export --frames), else None

    def normalized(self, g: "Graph") -> str:
        """x / ||x|| with padded frames zeroed (for backbones that need the normalised frames)."""
        return g.op("Mul", [self.x, g.op("Mul", [self.inv, self.mask])])


class Graph:
    """A small ONNX graph builder."""

    def __init__(self, dtype=np.float32):
        self.nodes: list = []
        self.arrays: list[tuple[str, np.ndarray]] = []  # the initializers, made TensorProtos only when written
        self.n = 0
        self.dtype = dtype  # compute dtype (float32, or float16 for --fp16)

    def name(self, base="t"):
        self.n += 1
        return f"{base}_{self.n}"

    def const(self, value, name=None, dtype=None):
        """An initializer. value: an array, or a function that makes it (a large weight is then made
        only when the model is written, one at a time: see onnx_export.save_onnx)."""
        def make():
            arr = np.asarray(value() if callable(value) else value)
            if dtype is not None:  # (no copy where it has the dtype: a MoE's gate kernel is 53 MB)
                return arr.astype(dtype, copy=False)
            return arr.astype(self.dtype, copy=False) if arr.dtype.kind == "f" else arr

        nm = name or self.name("c")
        self.arrays.append((nm, make))
        return nm

    def initializers(self) -> list:
        return [numpy_helper.from_array(make(), nm) for nm, make in self.arrays]

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
        y = self.op("MatMul", [x, self.const(lambda: host(kernel)[:, cols] if cols is not None else host(kernel))])
        if bias is not None:
            b = np.asarray(bias)
            y = self.op("Add", [y, self.const(b[cols] if cols is not None else b)])
        return y

    def batch_norm(self, x, bn):
        a, c = bn_affine(bn)
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


def frame_input(g: Graph, frames, num_frames, fixed_frames: int | None = None) -> "FrameInputs":
    """Dequantized frames x [B, T, D] (not normalised), inv [B, T, 1] = 1 / ||x|| per frame, mask [B, T, 1],
    the frame counts nf [B] (int64).

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
    mask = g.op("Unsqueeze", [g.op("Cast", [valid], to=onnx_dtype(g.dtype)), g.axes(2)])  # [B, T, 1]
    return FrameInputs(x, inv, mask, nf, fixed_frames)


def onnx_dtype(dtype):
    return TensorProto.FLOAT16 if dtype == np.float16 else TensorProto.FLOAT


def bn_affine(bn):
    gamma, beta, mean, var = (np.asarray(v, np.float32) for v in (bn.gamma, bn.beta, bn.moving_mean,
                                                                     bn.moving_variance))
    a = (gamma / np.sqrt(var + np.float32(bn.epsilon))).astype(np.float32)
    return a, (beta - mean * a).astype(np.float32)


def scaled_dense(g: Graph, x, inv, kernel, bias=None, pre_bn=None):
    """dense(bn(x * inv)) computed as (x @ W') * inv + b' (the normalisation is a per-frame scale)."""
    a, c = bn_affine(pre_bn) if pre_bn is not None else (None, None)

    def w():  # W' = a W, made when the model is written
        k = host(kernel)
        return k if a is None else a[:, None] * k

    b = np.zeros(np.shape(kernel)[1], np.float32) if bias is None else np.asarray(bias, np.float32)
    if c is not None:  # bn(z) = z * a + c  =>  bn(z) @ W = z @ (a W) + c @ W
        b = b + c @ np.asarray(kernel, np.float32)
    y = g.op("Mul", [g.op("MatMul", [x, g.const(w)]), inv])
    return g.op("Add", [y, g.const(b)]) if (bias is not None or pre_bn is not None) else y
