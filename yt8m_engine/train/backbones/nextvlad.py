"""NeXtVLAD pooling (the 2018 winner): expansion, grouped soft assignment with attention. Its options, its
Keras layer (defined on first use, so that importing this file loads no Keras) and its ONNX lowering."""
from __future__ import annotations

import functools
import types
from dataclasses import dataclass, field

from .netvlad import gating_option


@dataclass
class Options:
    """NeXtVLAD's options, by the flag names of the 2018 winner's code."""

    nextvlad_cluster_size: int = field(default=64, metadata={"help": "", "min": 1})
    nextvlad_hidden_size: int = field(default=1024, metadata={"help": "", "min": 1})
    nextvlad_groups: int = field(default=8, metadata={"help": "", "min": 1})
    nextvlad_expansion: int = field(default=2, metadata={"help": "", "min": 1})
    gating: bool = gating_option()

    def validate(self, cfg):
        from ...errors import Yt8mError

        d = sum(cfg.feature_sizes) * self.nextvlad_expansion
        if d % self.nextvlad_groups:
            raise Yt8mError(f"--nextvlad_groups ({self.nextvlad_groups}) must divide the expanded feature size ({d})")


def build(cfg, inputs):
    from ..layers import pooled_frames

    return pooled_frames(cfg, inputs, keras_layers().NeXtVlad, cfg.options(Options), "nextvlad")


@functools.cache
def keras_layers():
    """NeXtVlad, defined on first use."""
    from ..layers import ContextGating, OptionsLayer, l2_normalize, regularizer  # (first: TensorFlow loaded quietly)

    import keras
    from keras import layers, ops

    @keras.saving.register_keras_serializable("yt8m")
    class NeXtVlad(OptionsLayer):
        def __init__(self, options: dict, d: int, l2: float, **kw):
            super().__init__(options, d, l2, **kw)
            o = Options(**options)
            self.k, self.g = o.nextvlad_cluster_size, o.nextvlad_groups
            self.dx = d * o.nextvlad_expansion
            self.f = self.dx // self.g
            reg = regularizer(l2)
            self.expand = layers.Dense(self.dx, kernel_regularizer=reg, name="expand")
            self.attention = layers.Dense(self.g, kernel_regularizer=reg, name="attention")
            self.assign = layers.Dense(self.g * self.k, kernel_regularizer=reg, name="assign")
            self.hidden = layers.Dense(o.nextvlad_hidden_size, kernel_regularizer=reg, name="hidden")
            self.gating = ContextGating(o.nextvlad_hidden_size, l2=l2, name="gating") if o.gating else None

        def build(self, *args):
            self.centers = self.add_weight(name="centers", shape=(self.f, self.k),
                                           initializer=keras.initializers.RandomNormal(stddev=self.f ** -0.5))

        def call(self, x, mask, num_frames, training=None):
            x = self.expand(x)                                              # [B, T, λD]
            att = ops.sigmoid(self.attention(x)) * mask                     # [B, T, G]
            a = ops.softmax(ops.reshape(self.assign(x), (ops.shape(x)[0], -1, self.g, self.k)), axis=-1)
            a = a * att[:, :, :, None]                                      # [B, T, G, K]
            a = ops.reshape(a, (ops.shape(x)[0], -1, self.k))               # [B, T*G, K]
            xg = ops.reshape(x, (ops.shape(x)[0], -1, self.f))              # [B, T*G, F]
            a_sum = ops.sum(a, axis=1, keepdims=True)
            vlad = ops.matmul(ops.transpose(xg, (0, 2, 1)), a)              # [B, F, K]
            vlad = vlad - a_sum * self.centers[None]
            vlad = l2_normalize(vlad, 1)
            vlad = ops.reshape(vlad, (-1, self.f * self.k))
            h = self.hidden(vlad)
            return self.gating(h, training=training) if self.gating is not None else h

    return types.SimpleNamespace(NeXtVlad=NeXtVlad)


def lower(g, model, cfg, inp):
    import numpy as np

    from ...export.graph import scaled_dense
    from .netvlad import vlad_tail

    L = model.get_layer("nextvlad")
    x = scaled_dense(g, inp.x, inp.inv, L.expand.kernel, L.expand.bias)
    att = g.op("Mul", [g.op("Sigmoid", [g.dense(x, L.attention.kernel, L.attention.bias)]), inp.mask])
    a = g.dense(x, L.assign.kernel, L.assign.bias)
    a = g.op("Softmax", [g.op("Reshape", [a, g.const(np.array([0, 0, L.g, L.k], np.int64), dtype=np.int64)])], axis=-1)
    a = g.op("Mul", [a, g.op("Unsqueeze", [att, g.axes(3)])])
    a = g.op("Reshape", [a, g.const(np.array([0, -1, L.k], np.int64), dtype=np.int64)])
    x = g.op("Reshape", [x, g.const(np.array([0, -1, L.f], np.int64), dtype=np.int64)])
    return vlad_tail(g, L, x, a, L.f, normalize_all=False)
