"""LstmModel: stacked LSTMs over the normalised frames, the output at the last valid frame. Unmasked
(a masked LSTM converts to a slow ONNX Loop); the ONNX side is the LSTM op itself."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Options:
    """The LSTM's options, by the starter's flag names."""

    lstm_cells: int = field(default=1024, metadata={"help": "", "min": 1})
    lstm_layers: int = field(default=2, metadata={"help": "", "min": 1})


def build(cfg, inputs):
    from ..layers import FrameInput, LastStep  # (first: TensorFlow loaded quietly before Keras)

    from keras import initializers, layers

    o = cfg.options(Options)
    seq, _ = FrameInput(name="frame_input")(inputs["frames"], inputs["num_frames"])
    n, h = sum(cfg.feature_sizes), o.lstm_cells
    for i in range(o.lstm_layers):
        # as the starter's BasicLSTMCell: one Glorot-uniform matrix over [input; state] x 4 gates (Keras'
        # default: the input's alone, and an orthogonal recurrent matrix); its forget_bias 1.0 is Keras'
        # unit_forget_bias (a learned bias starting at 1 instead of a constant 1 added to one at 0)
        limit = (6 / (n + 5 * h)) ** 0.5  # (an initializer instance each: an unseeded one repeats its draw)
        seq = layers.LSTM(h, return_sequences=True, kernel_initializer=initializers.RandomUniform(-limit, limit),
                          recurrent_initializer=initializers.RandomUniform(-limit, limit), name=f"lstm_{i}")(seq)
        n = h
    return LastStep(name="last_step")(seq, inputs["num_frames"])


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
