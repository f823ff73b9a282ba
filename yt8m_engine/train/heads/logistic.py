"""The logistic head: one sigmoid unit a class."""
from __future__ import annotations

from keras import layers

from ..layers import regularizer


def build(cfg, name):
    return layers.Dense(cfg.num_classes, activation="sigmoid", kernel_regularizer=regularizer(cfg), name="head")


def lower(g, model, cfg, x, cols):
    head = model.get_layer("head")
    return g.op("Sigmoid", [g.dense(x, head.kernel, head.bias, cols)])
