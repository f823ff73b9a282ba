"""Video-level input (LogisticModel, MoeModel): the mean_rgb / mean_audio floats, L2-normalised over
their concatenation (as the starter does); the head does the rest."""
from __future__ import annotations


def build(cfg, inputs):
    from ..layers import l2_normalize

    return l2_normalize(inputs["features"], -1)


def lower(g, model, cfg, features):
    import numpy as np
    from onnx import TensorProto

    x = g.l2_normalize(features, 1, np.float32)
    return g.op("Cast", [x], to=TensorProto.FLOAT16) if g.dtype != np.float32 else x
