"""The starter code's losses on probabilities, with optional per-class weights (segment fine-tuning).

A weight of 0 takes a class out of the loss: with segment labels only the rated class of a segment
counts (the starter's open issue #99).
"""
from __future__ import annotations

from .quiet_tf import tf


def cross_entropy_loss(predictions, labels, weights=None, epsilon=1e-5):
    """-[y log(p + eps) + (1 - y) log(1 - p + eps)], summed over classes, mean over the batch."""
    labels = tf.cast(labels, tf.float32)
    predictions = tf.cast(predictions, tf.float32)
    loss = -(labels * tf.math.log(predictions + epsilon) + (1 - labels) * tf.math.log(1 - predictions + epsilon))
    if weights is not None:
        loss *= weights
    return tf.reduce_mean(tf.reduce_sum(loss, 1))


def hinge_loss(predictions, labels, weights=None, b=1.0):
    labels = tf.cast(labels, tf.float32)
    predictions = tf.cast(predictions, tf.float32)
    sign = 2 * labels - 1
    loss = tf.maximum(0.0, b - sign * predictions)
    if weights is not None:
        loss *= weights
    return tf.reduce_mean(tf.reduce_sum(loss, 1))


def softmax_loss(predictions, labels, weights=None, epsilon=1e-8):
    labels = tf.cast(labels, tf.float32)
    if weights is not None:
        labels *= weights
    predictions = tf.cast(predictions, tf.float32)
    norm = labels / tf.maximum(tf.reduce_sum(labels, 1, keepdims=True), epsilon)
    return tf.reduce_mean(-tf.reduce_sum(norm * tf.nn.log_softmax(predictions), 1))


LOSSES = {"CrossEntropyLoss": cross_entropy_loss, "HingeLoss": hinge_loss, "SoftmaxLoss": softmax_loss}
