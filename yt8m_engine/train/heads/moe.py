"""Mixture of experts per class (MoeModel), and with context gating on its output (GatedMoeModel, the
2017 winner's): its option, its Keras layer (defined on first use, so that importing this file loads no
Keras) and its ONNX lowering."""
from __future__ import annotations

import functools
import types
from dataclasses import dataclass, field


@dataclass
class Options:
    """The mixture's option, by the starter's flag name."""

    moe_num_mixtures: int = field(default=2, metadata={"help": "", "min": 1})


def build(cfg, name):
    o = cfg.options(Options)
    return keras_layers().MoeHead(cfg.num_classes, o.moe_num_mixtures, cfg.l2_penalty, gated=name == "GatedMoeModel",
                                  name="head")


@functools.cache
def keras_layers():
    """MoeHead, defined on first use."""
    from ..layers import ContextGating, regularizer  # (first: TensorFlow loaded quietly before Keras)

    import keras
    from keras import layers, ops

    @keras.saving.register_keras_serializable("yt8m")
    class MoeHead(layers.Layer):
        """Softmax gate over M experts + a dummy expert, sigmoid experts."""

        def __init__(self, num_classes, num_mixtures, l2=0.0, gated=False, **kw):
            super().__init__(**kw)
            self.num_classes = num_classes
            self.num_mixtures = num_mixtures
            self.gated = gated
            reg = regularizer(l2)
            self.gate = layers.Dense(num_classes * (num_mixtures + 1), use_bias=False, kernel_regularizer=reg, name="gate")
            self.expert = layers.Dense(num_classes * num_mixtures, kernel_regularizer=reg, name="expert")
            if gated:
                self.context = ContextGating(num_classes, l2=l2, name="output_gating")

        def call(self, x, training=None):
            m = self.num_mixtures
            g = ops.softmax(ops.reshape(self.gate(x), (-1, self.num_classes, m + 1)), axis=-1)
            e = ops.sigmoid(ops.reshape(self.expert(x), (-1, self.num_classes, m)))
            p = ops.sum(g[:, :, :m] * e, axis=-1)
            if self.gated:
                p = self.context(p, training=training)
            return p

    return types.SimpleNamespace(MoeHead=MoeHead)


def lower(g, model, cfg, x, cols):
    """Only the output columns `cols` when given (segment exports), except under output gating, which
    mixes all classes first."""
    import numpy as np

    from ...export.graph import host

    head = model.get_layer("head")
    m, c, gated = head.num_mixtures, head.num_classes, head.gated
    out_cols = None if gated else cols
    k = c if out_cols is None else len(out_cols)

    def kernel(w, n):  # [D, C * n], only the columns of out_cols' classes; made when the model is written
        w = host(w).reshape(-1, c, n)
        return (w if out_cols is None else w[:, out_cols]).reshape(w.shape[0], -1)

    eb = np.asarray(head.expert.bias).reshape(c, m)
    if out_cols is not None:
        eb = eb[out_cols]
    gate = g.op("MatMul", [x, g.const(lambda: kernel(head.gate.kernel, m + 1))])
    gate = g.op("Softmax", [g.op("Reshape", [gate, g.const(np.array([-1, k, m + 1], np.int64), dtype=np.int64)])],
                axis=-1)
    expert = g.op("Add", [g.op("MatMul", [x, g.const(lambda: kernel(head.expert.kernel, m))]), g.const(eb.reshape(-1))])
    expert = g.op("Sigmoid", [g.op("Reshape", [expert, g.const(np.array([-1, k, m], np.int64), dtype=np.int64)])])
    gate = g.op("Slice", [gate, g.axes(0), g.axes(m), g.axes(2)])
    p = g.op("ReduceSum", [g.op("Mul", [gate, expert]), g.axes(2)], keepdims=0)
    if gated:
        p = g.context_gating(p, head.context, cols)
    return p
