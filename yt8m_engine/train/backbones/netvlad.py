"""NetVLAD pooling (the 2017 winner's learnable pooling) + hidden layer + context gating: its options,
its Keras layer (defined on first use, so that importing this file loads no Keras) and its ONNX lowering."""
from __future__ import annotations

import functools
import types
from dataclasses import dataclass, field

def gating_option():
    """--gating, one option that NetVLAD and NeXtVLAD both read (declared alike in both Options)."""
    return field(default=True, metadata={"help": "context gating after (Ne)XtVLAD"})


@dataclass
class Options:
    """NetVLAD's options, by the flag names of the 2017 winner's code."""

    netvlad_cluster_size: int = field(default=64, metadata={"help": "", "min": 1})
    netvlad_hidden_size: int = field(default=1024, metadata={"help": "", "min": 1})
    gating: bool = gating_option()


def build(cfg, inputs):
    from ..layers import pooled_frames

    return pooled_frames(cfg, inputs, keras_layers().NetVlad, cfg.options(Options), "netvlad")


@functools.cache
def keras_layers():
    """NetVlad, defined on first use."""
    from ..layers import ContextGating, OptionsLayer, l2_normalize, regularizer  # (first: TensorFlow loaded quietly)

    import keras
    from keras import layers, ops

    @keras.saving.register_keras_serializable("yt8m")
    class NetVlad(OptionsLayer):
        def __init__(self, options: dict, d: int, l2: float, **kw):
            super().__init__(options, d, l2, **kw)
            o = Options(**options)
            self.k = o.netvlad_cluster_size
            self.assign = layers.Dense(self.k, kernel_regularizer=regularizer(l2), name="assign")
            self.hidden = layers.Dense(o.netvlad_hidden_size, kernel_regularizer=regularizer(l2), name="hidden")
            self.gating = ContextGating(o.netvlad_hidden_size, l2=l2, name="gating") if o.gating else None

        def build(self, *args):
            self.centers = self.add_weight(name="centers", shape=(self.d, self.k),
                                           initializer=keras.initializers.RandomNormal(stddev=self.d ** -0.5))

        def call(self, x, mask, num_frames, training=None):
            a = ops.softmax(self.assign(x), axis=-1) * mask                # [B, T, K]
            a_sum = ops.sum(a, axis=1, keepdims=True)                       # [B, 1, K]
            vlad = ops.matmul(ops.transpose(x, (0, 2, 1)), a)               # [B, D, K]
            vlad = vlad - a_sum * self.centers[None]
            vlad = l2_normalize(vlad, 1)                                    # intra-normalisation
            vlad = l2_normalize(ops.reshape(vlad, (-1, self.d * self.k)), 1)
            h = self.hidden(vlad)
            return self.gating(h, training=training) if self.gating is not None else h

    return types.SimpleNamespace(NetVlad=NetVlad)


def lower(g, model, cfg, inp):
    L = model.get_layer("netvlad")
    x = inp.normalized(g)
    a = g.op("Mul", [g.op("Softmax", [g.dense(x, L.assign.kernel, L.assign.bias)], axis=-1), inp.mask])
    return vlad_tail(g, L, x, a, L.d, normalize_all=True)


def vlad_tail(g, L, x, a, dim, normalize_all):
    """Residuals to the centers weighted by the soft assignment a, intra-normalised, flattened (then
    normalised as a whole for NetVLAD), hidden layer, context gating: shared with NeXtVLAD."""
    import numpy as np

    a_sum = g.reduce_sum(a, 1)
    vlad = g.op("MatMul", [g.op("Transpose", [x], perm=[0, 2, 1]), a])
    vlad = g.op("Sub", [vlad, g.op("Mul", [a_sum, g.const(np.asarray(L.centers)[None])])])
    vlad = g.l2_normalize(vlad, 1)
    vlad = g.op("Reshape", [vlad, g.const(np.array([-1, dim * L.k], np.int64), dtype=np.int64)])
    if normalize_all:
        vlad = g.l2_normalize(vlad, 1)
    h = g.dense(vlad, L.hidden.kernel, L.hidden.bias)
    return g.context_gating(h, L.gating) if L.gating is not None else h
