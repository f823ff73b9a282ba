"""LstmModel: stacked LSTMs over the normalised frames, the output at the last valid frame. Unmasked
(a masked LSTM converts to a slow ONNX Loop); the ONNX side is the LSTM op itself.

In training batches of 256 and more each LSTM runs over the frames the batch needs only, where that saves
30% of the steps: its videos, by length, in up to 8 groups of at least 128, each group as far as its
longest video (LengthLSTM)."""
from __future__ import annotations

import functools
from dataclasses import dataclass, field


@dataclass
class Options:
    """The LSTM's options, by the starter's flag names."""

    lstm_cells: int = field(default=1024, metadata={"help": "", "min": 1})
    lstm_layers: int = field(default=2, metadata={"help": "", "min": 1})


def build(cfg, inputs):
    from ..layers import FrameInput, LastStep  # (first: TensorFlow loaded quietly before Keras)

    from keras import initializers

    o = cfg.options(Options)
    seq, _ = FrameInput(name="frame_input")(inputs["frames"], inputs["num_frames"])
    n, h = sum(cfg.feature_sizes), o.lstm_cells
    for i in range(o.lstm_layers):
        # as the starter's BasicLSTMCell: one Glorot-uniform matrix over [input; state] x 4 gates (Keras'
        # default: the input's alone, and an orthogonal recurrent matrix); its forget_bias 1.0 is Keras'
        # unit_forget_bias (a learned bias starting at 1 instead of a constant 1 added to one at 0)
        limit = (6 / (n + 5 * h)) ** 0.5  # (an initializer instance each: an unseeded one repeats its draw)
        seq = length_lstm()(h, return_sequences=True, kernel_initializer=initializers.RandomUniform(-limit, limit),
                            recurrent_initializer=initializers.RandomUniform(-limit, limit),
                            name=f"lstm_{i}")(seq, num_frames=inputs["num_frames"])
        n = h
    return LastStep(name="last_step")(seq, inputs["num_frames"])


def train_setup(model, batch_size: int, xla: bool) -> None:
    """The trainer's hook before it traces its step: each LengthLSTM's groups, batch size // 128 up to 8
    (a group's products stay large; below 256, one group would save little and its graph costs), none
    under XLA, which compiles static shapes only."""
    for layer in model.layers:
        if isinstance(layer, length_lstm()):
            layer.groups = 0 if xla else min(8, batch_size // 128)


@functools.cache
def length_lstm():
    """LengthLSTM, defined on first use: importing this file (for its Options) loads no Keras."""
    from ..quiet_tf import tf  # (TensorFlow loaded quietly before Keras loads it)

    import keras

    @keras.saving.register_keras_serializable("yt8m")
    class LengthLSTM(keras.layers.LSTM):
        """Keras' LSTM (the same weights, the same outputs where a video has frames) over the frames its
        batch needs only. The unmasked LSTM's output at a video's frame t depends on its frames up to t
        alone, and LastStep reads each video's last frame: so the videos, by length, go in `groups`
        groups (each group through Keras' own loop as far as its longest video; later steps are zeros).
        The synthetic data's videos (most under 90 frames, a few of 300) need a quarter of the steps in
        batches of 1024. Where the groups would save less than `saving` (30%) of the steps (the real
        data's videos, most of 120-300 frames), the batch runs Keras' loop as it is.

        `groups` (0: Keras' LSTM as it is) is set for training by train_setup above. A batch smaller
        than `groups` leaves groups empty."""

        groups, saving = 0, 0.3

        def call(self, sequences, num_frames=None, initial_state=None, mask=None, training=False):
            if num_frames is None or self.groups < 2 or initial_state is not None or mask is not None:
                return super().call(sequences, initial_state=initial_state, mask=mask, training=training)
            b, t = tf.shape(sequences)[0], tf.shape(sequences)[1]
            lengths = tf.minimum(tf.cast(num_frames, tf.int32), t)
            order = tf.argsort(lengths, direction="DESCENDING", stable=True)
            lengths = tf.gather(lengths, order)
            flat = tf.reshape(sequences, [-1, tf.shape(sequences)[2]])

            # each group's rows [lo, hi) of the sorted batch and its steps: its longest video's frames
            bounds = [g * b // self.groups for g in range(self.groups + 1)]
            groups = [(lo, hi, tf.maximum(lengths[tf.minimum(lo, b - 1)], 1)) for lo, hi in zip(bounds, bounds[1:])]

            def group(lo, hi, steps):
                rows = order[lo:hi, None] * t + tf.range(steps)[None, :]
                y = super(LengthLSTM, self).call(tf.gather(flat, rows), training=training)  # [rows, steps, units]
                return tf.pad(y, [[0, 0], [0, t - steps], [0, 0]])

            def grouped():
                empty = tf.zeros([0, t, self.units], self.compute_dtype)
                outs = [tf.cond(g[1] > g[0], lambda g=g: group(*g), lambda: empty) for g in groups]
                return tf.gather(tf.concat(outs, 0), tf.math.invert_permutation(order))

            # the groups' steps (rows x frames) against the plain loop's: grouped where they save `saving`
            # of them (their gathers and smaller products cost ~10% where most videos are long: real data)
            work = tf.add_n([(hi - lo) * steps for lo, hi, steps in groups])
            worth = tf.cast(work, tf.float32) < (1 - self.saving) * tf.cast(b * t, tf.float32)
            return tf.cond((b > 0) & worth, grouped, lambda: super(LengthLSTM, self).call(sequences, training=training))

        def compute_output_shape(self, sequences_shape, num_frames_shape=None, initial_state_shape=None):
            return super().compute_output_shape(sequences_shape, initial_state_shape)

    return LengthLSTM


def _gates(w, h):
    """Keras orders LSTM gates i, f, c, o; ONNX i, o, f, c."""
    import numpy as np

    return np.concatenate([w[..., :h], w[..., 3 * h:], w[..., h:2 * h], w[..., 2 * h:3 * h]], -1)


def lower(g, model, cfg, inp):
    import numpy as np

    seq = g.op("Transpose", [inp.normalized(g)], perm=[1, 0, 2])  # [T, B, I]
    o = cfg.options(Options)
    h = o.lstm_cells
    for i in range(o.lstm_layers):
        cell = model.get_layer(f"lstm_{i}").cell
        w = _gates(np.asarray(cell.kernel), h).T[None]
        r = _gates(np.asarray(cell.recurrent_kernel), h).T[None]
        b = np.concatenate([_gates(np.asarray(cell.bias), h), np.zeros(4 * h, np.float32)])[None]
        y = g.op("LSTM", [seq, g.const(w), g.const(r), g.const(b)], hidden_size=h)
        seq = g.op("Squeeze", [y, g.axes(1)])
    seq = g.op("Transpose", [seq], perm=[1, 0, 2])  # [B, T, H]
    idx = g.op("Max", [g.op("Sub", [inp.nf, g.const(np.array(1, np.int64), dtype=np.int64)]),
                       g.const(np.array(0, np.int64), dtype=np.int64)])
    idx = g.op("Unsqueeze", [idx, g.axes(1, 2)])
    shape = g.op("Concat", [g.op("Shape", [idx], start=0, end=2), g.const(np.array([h], np.int64), dtype=np.int64)],
                 axis=0)
    idx = g.op("Expand", [idx, shape])
    return g.op("Squeeze", [g.op("GatherElements", [seq, idx], axis=1), g.axes(1)])
