"""The logistic head: one sigmoid unit a class. No options of its own."""
from __future__ import annotations


def build(cfg, name):
    from ..layers import regularizer  # (first: TensorFlow loaded quietly before Keras)

    from keras import layers

    return layers.Dense(cfg.num_classes, activation="sigmoid", kernel_regularizer=regularizer(cfg.l2_penalty),
                        name="head")


def lower(g, model, cfg, x, cols):
    head = model.get_layer("head")
    return g.op("Sigmoid", [g.dense(x, head.kernel, head.bias, cols)])
