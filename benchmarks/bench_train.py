"""Training throughput (steady-state examples/s) of `yt8m-engine train` vs the starter's train.py.

Baseline: the starter's way, built here on TensorFlow 2 through tf.compat.v1 in graph mode (the
original imports tf.contrib and slim, gone from TF 2): its readers (string_input_producer queues,
TFRecordReader; video level: read_up_to + parse_example over a batch; frame level:
parse_single_sequence_example a record, decode_raw, dequantized to float32 in the reader and
resized to 300 frames, batch_join), the input L2-normalised, the same model maths written in raw ops
(LogisticModel, MoeModel, FrameLevelLogisticModel, DbofModel with SampleRandomFrames after the
reader, batch norm, relu6, max pooling and an MoE head), CrossEntropyLoss, the L2 penalties,
tf.train.AdamOptimizer on the exponentially decayed rate, gradients clipped by norm, one
session.run a step fetching the loss, predictions and labels, and every 10 steps the batch's Hit@1,
PERR and GAP computed as the starter's eval_util does (a loop over the videos), as its train.py logs
them. Ours: `yt8m-engine train` as users run it (its defaults, logging every 10 steps with the same
three metrics; `--xla` is reported on its own line where given).

The machine's fp32 GEMM rate and the rate of TensorFlow's fused Adam update (ResourceApplyAdam, bytes a
second: it reads the gradient, weights and two slots and writes three, 28 bytes a weight, and is bound by
memory) are measured first and before each model (all cores; the highest so far counts, as this VM
drifts). A model's ceiling is 80% of what the machine allows a step at these rates: its matrix products
(training FLOPs) plus one Adam update of its weights, the two things every step of either side must do one
after the other (the update needs the whole gradient); it is printed beside the ratio. Where the weights
are many and the batch small (LogisticModel, MoeModel at batch 64) the update is a large part of it.
Each side runs in a process of its own (peak RSS of the process: proc.py); both log examples/s over
windows of steps, the first --warmup steps are dropped, and the median window is reported. The two
sides alternate model by model. Prints, per model and batch size:
train_examples_per_s[MODEL,batch B] ours=X baseline=Y ratio=Z (peak RSS ..., machine); the batch GAP of each side
after the warm-up (their learning curves side by side).
The LSTM runs with 128 cells (the starter's 1024 take ~30 GFLOP an example) and, at batch 1024, 15
steps logged every 5. NetVLAD and NeXtVLAD are not the starter's models: no baseline.
Usage: python benchmarks/bench_train.py [--models MoeModel,DbofModel] [--batch-sizes 64,1024] [--steps 60]
"""
import argparse
import os
import platform
import re
import shutil
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from proc import timed  # noqa: E402

VIDEO_MODELS = ("LogisticModel", "MoeModel")
FRAME_MODELS = ("FrameLevelLogisticModel", "DbofModel", "LstmModel")
DBOF = dict(dbof_cluster_size=1024, dbof_hidden_size=256, dbof_activation="relu6")  # the sizes (the starter's: 8192 / 2048); relu6 as the baseline below
LSTM = dict(lstm_cells=128, lstm_layers=2)  # the starter's default is 1024 cells: ~30 GFLOP an example to train
NUM_CLASSES, MIXTURES, PENALTY = 3862, 2, 1e-8


# -- the baseline ---------------------------------------------------------------------------------
def _dense(v1, tf, x, n_out, name, bias=True, dbof=False):
    """slim.fully_connected with its L2 regularizer; dbof: DbofModel's own get_variable (N(0, 1 / fan-in), not
    regularised)."""
    d = int(x.shape[-1])
    init = v1.random_normal_initializer(stddev=d ** -0.5) if dbof else v1.glorot_uniform_initializer()
    w = v1.get_variable(name + "/weights", [d, n_out], initializer=init)
    if not dbof:
        v1.add_to_collection("reg", PENALTY * tf.nn.l2_loss(w))
    y = tf.matmul(x, w)
    return y + v1.get_variable(name + "/biases", [n_out], initializer=v1.zeros_initializer()) if bias else y


def _batch_norm(v1, tf, x, name, axes, decay=0.999):
    """slim.batch_norm(center=True, scale=True) while training: batch moments, moving averages updated."""
    d = x.shape[-1]
    beta = v1.get_variable(name + "/beta", [d], initializer=v1.zeros_initializer())
    gamma = v1.get_variable(name + "/gamma", [d], initializer=v1.ones_initializer())
    mm = v1.get_variable(name + "/moving_mean", [d], initializer=v1.zeros_initializer(), trainable=False)
    mv = v1.get_variable(name + "/moving_variance", [d], initializer=v1.ones_initializer(), trainable=False)
    mean, var = tf.nn.moments(x, axes)
    v1.add_to_collection(v1.GraphKeys.UPDATE_OPS, v1.assign(mm, mm * decay + mean * (1 - decay)))
    v1.add_to_collection(v1.GraphKeys.UPDATE_OPS, v1.assign(mv, mv * decay + var * (1 - decay)))
    return tf.nn.batch_normalization(x, mean, var, beta, gamma, 1e-3)


def _moe(v1, tf, x):
    gates = tf.nn.softmax(tf.reshape(_dense(v1, tf, x, NUM_CLASSES * (MIXTURES + 1), "gates", bias=False),
                                     [-1, MIXTURES + 1]))
    experts = tf.nn.sigmoid(tf.reshape(_dense(v1, tf, x, NUM_CLASSES * MIXTURES, "experts"), [-1, MIXTURES]))
    return tf.reshape(tf.reduce_sum(gates[:, :MIXTURES] * experts, 1), [-1, NUM_CLASSES])


def starter_metrics(predictions, actuals, k=20):
    """Hit@1, PERR and GAP of one batch as the starter's eval_util computes them (per-video loops,
    argpartition, the pooled top-k sorted once), written here without its code."""
    n, c = predictions.shape
    hit = float(np.average(actuals[np.arange(n), np.argmax(predictions, 1)]))
    perr = 0.0
    for row in range(n):
        nl = int(np.sum(actuals[row]))
        top = np.argpartition(predictions[row], -nl)[-nl:]
        perr += sum(actuals[row][i] for i in top if predictions[row][i] > 0) / max(top.size, 1)
    triplets = []
    for row in range(n):
        top = np.argpartition(predictions[row], -k)[-k:]
        triplets.extend((i, predictions[row][i], actuals[row][i]) for i in top)
    positives = sum(np.sum(actuals[:, i]) for i in range(c))
    scores = np.array([t[1] for t in triplets])
    labels = np.array([t[2] for t in triplets])
    ranked = labels[np.argsort(-scores)] > 0
    hits = np.cumsum(ranked)
    gap = float((hits[ranked] / (np.flatnonzero(ranked) + 1)).sum() / max(positives, 1))
    return hit, perr / n, gap


class _LstmStack:
    """The starter's MultiRNNCell of BasicLSTMCells (forget_bias 1.0) for tf.compat.v1.nn.dynamic_rnn,
    in raw ops (TF 2.21's v1 RNN cells need Keras 2): state ((c, h) a layer)."""

    def __init__(self, v1, tf, cells, layers):
        self.v1, self.tf, self.n, self.layers = v1, tf, cells, layers
        self.state_size = tuple((cells, cells) for _ in range(layers))
        self.output_size = cells

    def zero_state(self, batch, dtype):
        z = self.tf.zeros([batch, self.n], dtype)
        return tuple((z, z) for _ in range(self.layers))

    def get_initial_state(self, inputs=None, batch_size=None, dtype=None):
        return self.zero_state(batch_size, dtype)

    def __call__(self, x, state):
        tf, v1, out = self.tf, self.v1, []
        for i, (c, h) in enumerate(state):
            with v1.variable_scope(f"cell_{i}", reuse=v1.AUTO_REUSE):
                k = v1.get_variable("kernel", [x.shape[-1] + self.n, 4 * self.n],
                                    initializer=v1.glorot_uniform_initializer())
                b = v1.get_variable("bias", [4 * self.n], initializer=v1.zeros_initializer())
            gi, gj, gf, go = tf.split(tf.matmul(tf.concat([x, h], 1), k) + b, 4, axis=1)
            c = c * tf.sigmoid(gf + 1.0) + tf.sigmoid(gi) * tf.tanh(gj)
            x = tf.tanh(c) * tf.sigmoid(go)
            out.append((c, x))
        return x, tuple(out)


def baseline(model, pattern, batch_size, steps, log_every):
    import glob

    import tensorflow as tf

    v1 = tf.compat.v1
    v1.disable_eager_execution()
    files = sorted(glob.glob(pattern))
    queue = v1.train.string_input_producer(files, shuffle=True)
    if model in VIDEO_MODELS:  # YT8MAggregatedFeatureReader
        _, ser = v1.TFRecordReader().read_up_to(queue, batch_size)
        f = tf.io.parse_example(ser, {"labels": tf.io.VarLenFeature(tf.int64),
                                      "mean_rgb": tf.io.FixedLenFeature([1024], tf.float32),
                                      "mean_audio": tf.io.FixedLenFeature([128], tf.float32)})
        feats = tf.concat([f["mean_rgb"], f["mean_audio"]], 1)
        labels = tf.cast(tf.sparse.to_indicator(f["labels"], NUM_CLASSES), tf.float32)
        x, labels = v1.train.batch_join([[feats, labels]], batch_size, capacity=batch_size * 5, enqueue_many=True,
                                        allow_smaller_final_batch=True)
        x = tf.nn.l2_normalize(x, 1)
    else:  # YT8MFrameFeatureReader
        data = []
        for _ in range(4):  # num_readers
            _, ser = v1.TFRecordReader().read(queue)
            c, s = tf.io.parse_single_sequence_example(
                ser, context_features={"labels": tf.io.VarLenFeature(tf.int64)},
                sequence_features={k: tf.io.FixedLenSequenceFeature([], tf.string) for k in ("rgb", "audio")})
            fr = tf.concat([tf.reshape(tf.io.decode_raw(s[k], tf.uint8), [-1, d]) for k, d in (("rgb", 1024),
                                                                                                ("audio", 128))], 1)
            fr = tf.cast(fr, tf.float32) * (4.0 / 255) + (4.0 / 512 - 2.0)  # utils.Dequantize
            n = tf.minimum(tf.shape(fr)[0], 300)
            fr = tf.ensure_shape(tf.pad(fr[:300], [[0, 300 - n], [0, 0]]), [300, 1152])  # resize_axis
            lab = tf.cast(tf.sparse.to_indicator(tf.sparse.reshape(c["labels"], [1, -1]), NUM_CLASSES), tf.float32)
            data.append([tf.expand_dims(fr, 0), lab, tf.expand_dims(n, 0)])
        fr, labels, nf = v1.train.batch_join(data, batch_size, capacity=batch_size * 5, enqueue_many=True,
                                             allow_smaller_final_batch=True)
        fr = tf.nn.l2_normalize(fr, 2)
        if model == "FrameLevelLogisticModel":
            x = tf.reduce_sum(fr, 1) / tf.cast(tf.expand_dims(nf, 1), tf.float32)
        elif model == "LstmModel":  # dynamic_rnn over the frames, the last layer's h at each video's end
            _, state = v1.nn.dynamic_rnn(_LstmStack(v1, tf, LSTM["lstm_cells"], LSTM["lstm_layers"]), fr,
                                         sequence_length=nf, dtype=tf.float32)
            x = state[-1][1]
        else:  # DbofModel: SampleRandomFrames(30), input BN, clusters, relu6, max pool, hidden, MoE
            b = tf.shape(fr)[0]
            idx = tf.cast(tf.random.uniform([b, 30]) * tf.cast(tf.expand_dims(nf, 1), tf.float32), tf.int32)
            sel = tf.stack([tf.tile(tf.expand_dims(tf.range(b), 1), [1, 30]), idx], 2)
            x = tf.reshape(tf.gather_nd(fr, sel), [-1, 1152])
            x = _batch_norm(v1, tf, x, "input_bn", [0])
            a = tf.nn.relu6(_batch_norm(v1, tf, _dense(v1, tf, x, DBOF["dbof_cluster_size"], "cluster", False, dbof=True),
                                        "cluster_bn", [0]))
            x = tf.reduce_max(tf.reshape(a, [-1, 30, DBOF["dbof_cluster_size"]]), 1)
            x = tf.nn.relu6(_batch_norm(v1, tf, _dense(v1, tf, x, DBOF["dbof_hidden_size"], "hidden", False, dbof=True),
                                        "hidden_bn", [0]))
    preds = _moe(v1, tf, x) if model in ("MoeModel", "DbofModel", "LstmModel") else tf.nn.sigmoid(_dense(v1, tf, x, NUM_CLASSES,
                                                                                             "logistic"))
    eps = 1e-5  # losses.CrossEntropyLoss
    loss = tf.reduce_mean(tf.reduce_sum(-(labels * tf.math.log(preds + eps)
                                          + (1 - labels) * tf.math.log(1 - preds + eps)), 1))
    total = loss + tf.add_n(v1.get_collection("reg"))
    step = v1.train.get_or_create_global_step()
    lr = v1.train.exponential_decay(0.01, step * batch_size, 4000000, 0.95, staircase=True)
    opt = v1.train.AdamOptimizer(lr)
    grads = [(tf.clip_by_norm(g, 1.0), v) for g, v in opt.compute_gradients(total) if g is not None]
    with tf.control_dependencies(v1.get_collection(v1.GraphKeys.UPDATE_OPS)):
        train_op = opt.apply_gradients(grads, global_step=step)
    with v1.Session() as sess:
        sess.run([v1.global_variables_initializer(), v1.local_variables_initializer()])
        coord = v1.train.Coordinator()
        threads = v1.train.start_queue_runners(sess=sess, coord=coord)
        t, n = time.perf_counter(), 0
        for i in range(1, steps + 1):
            _, _, p, lab = sess.run([train_op, loss, preds, labels])
            n += len(p)
            if i % log_every == 0:
                hit, perr, gap = starter_metrics(p, lab)
                now = time.perf_counter()
                print(f"step {i} {n / (now - t):.1f} ex/s hit@1 {hit:.3f} perr {perr:.3f} gap {gap:.3f}", flush=True)
                t, n = now, 0
        coord.request_stop()
        coord.join(threads, stop_grace_period_secs=5)


def gemm_gflops(seconds: float = 3.0) -> float:
    """This machine's fp32 matrix-multiply rate through TensorFlow (all cores), GFLOP/s: a [1024, 1152] x
    [1152, 3862] product (the classifier layers' shape), repeated for about `seconds`."""
    import tensorflow as tf

    a = tf.random.uniform([1024, 1152])
    b = tf.random.uniform([1152, 3862])
    f = tf.function(lambda: tf.reduce_sum(tf.matmul(a, b)))
    f()
    n, t = 0, time.perf_counter()
    while time.perf_counter() - t < seconds:
        f().numpy()
        n += 1
    return 2 * 1024 * 1152 * 3862 * n / (time.perf_counter() - t) / 1e9


def update_rate(weights: int = 1 << 24, seconds: float = 2.0) -> float:
    """Bytes a second of TensorFlow's fused Adam update over a 16 M-weight variable, counting 28 bytes a
    weight (gradient, weight, m and v read; weight, m and v written)."""
    import tensorflow as tf

    w, m, v = (tf.Variable(tf.zeros([weights])) for _ in range(3))
    g = tf.random.uniform([weights])

    @tf.function
    def step():
        tf.raw_ops.ResourceApplyAdam(var=w.handle, m=m.handle, v=v.handle, beta1_power=0.9, beta2_power=0.999,
                                     lr=1e-3, beta1=0.9, beta2=0.999, epsilon=1e-8, grad=g)
        return w[0]

    step()
    n, t = 0, time.perf_counter()
    while time.perf_counter() - t < seconds:
        step().numpy()
        n += 1
    return 28 * weights * n / (time.perf_counter() - t)


def train_weights(model: str) -> int:
    """The model's trained weight count at the bench's sizes (kernels; biases and batch-norm parameters,
    under 1%, left out)."""
    c, h = DBOF["dbof_cluster_size"], DBOF["dbof_hidden_size"]
    head = NUM_CLASSES * (2 * MIXTURES + 1)
    if model == "LstmModel":
        cells, n, w = LSTM["lstm_cells"], 1152, 0
        for _ in range(LSTM["lstm_layers"]):
            w += 4 * cells * (n + cells)
            n = cells
        return w + cells * head
    return {"LogisticModel": 1152 * NUM_CLASSES, "FrameLevelLogisticModel": 1152 * NUM_CLASSES,
            "MoeModel": 1152 * head, "DbofModel": 1152 * c + c * h + h * head}[model]


def train_flops(model: str) -> float:
    """fp32 operations an example for one training step, matrix products only (DBoF: its 30 sampled
    frames; the LSTM: 300 steps, the frames both sides run): 2 a multiply-add, forward and weight
    gradient for every layer, and the input gradient for layers that read another layer's output (a
    layer reading the data needs none; an LSTM's recurrent product always does)."""
    c, h = DBOF["dbof_cluster_size"], DBOF["dbof_hidden_size"]
    head = NUM_CLASSES * (2 * MIXTURES + 1)  # MoE: gates (M + 1) and experts (M) a class, per input unit
    if model == "LstmModel":
        cells, macs, n = LSTM["lstm_cells"], 0, 1152
        for layer in range(LSTM["lstm_layers"]):
            g = 4 * cells  # the four gates
            macs += 2 * g * (n + cells) + g * cells + (g * n if layer else 0)
            n = cells
        return 2.0 * (300 * macs + 3 * cells * head)
    first, inner = {"LogisticModel": (1152 * NUM_CLASSES, 0), "FrameLevelLogisticModel": (1152 * NUM_CLASSES, 0),
                    "MoeModel": (1152 * head, 0),
                    "DbofModel": (30 * 1152 * c, c * h + h * head)}[model]
    return 2.0 * (2 * first + 3 * inner)


def steady_rate(out: str, warmup: int) -> float:
    """The median examples/s of the windows logged after the first `warmup` steps."""
    rates = [float(r) for s, r in re.findall(r"^step\s+(\d+)\s.*?([\d.]+) ex/s", out, re.M) if int(s) > warmup]
    if not rates:
        sys.exit(f"no rates after step {warmup} in:\n{out[-2000:]}")
    return float(np.median(rates))


def late_gap(out: str, warmup: int) -> float:
    """The mean batch GAP of the windows logged after the first `warmup` steps: both sides log it as the
    starter's train.py does, so the two learning curves can be set side by side (same maths, other
    initial draws and shuffles: close, not equal)."""
    gaps = [float(g) for s, g in re.findall(r"^step\s+(\d+)\s.*?gap ([\d.]+)", out, re.M) if int(s) > warmup]
    return float(np.mean(gaps)) if gaps else float("nan")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="LogisticModel,MoeModel,FrameLevelLogisticModel,DbofModel,LstmModel")
    ap.add_argument("--batch-sizes", default="64,1024")
    ap.add_argument("--steps", type=int, default=60, help="steps a run")
    ap.add_argument("--warmup", type=int, default=20, help="steps left out of the rates")
    ap.add_argument("--videos", type=int, default=3000)
    ap.add_argument("--repeat", type=int, default=3, help="pairs of runs a model, sides alternated; the median "
                    "pair's ratio is reported")
    ap.add_argument("--xla", action="store_true", help="also time ours with --xla")
    ap.add_argument("--side", choices=["baseline"], help=argparse.SUPPRESS)
    ap.add_argument("--model", help=argparse.SUPPRESS)
    ap.add_argument("--pattern", help=argparse.SUPPRESS)
    ap.add_argument("--batch", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--log-every", type=int, default=10, help="steps a logged window (both sides; the starter's 10)")
    args = ap.parse_args()
    if args.side == "baseline":
        baseline(args.model, args.pattern, args.batch, args.steps, args.log_every)
        return 0
    from yt8m_engine.io.synth import synth

    tmp = tempfile.mkdtemp(prefix="bench_train_")
    exe = os.path.join(os.path.dirname(sys.executable), "yt8m-engine")
    machine = f"{platform.machine()}, {os.cpu_count()} cores"
    try:
        synth(tmp, videos=args.videos, shards=4, seed=0, test_videos=4)
        def rates() -> tuple:  # in a process of its own (TensorFlow stays out of this one)
            _, _, out = timed([sys.executable, "-c", "import sys; sys.path.insert(0, %r); import bench_train; "
                               "print(bench_train.gemm_gflops(), bench_train.update_rate())"
                               % os.path.dirname(os.path.abspath(__file__))])
            return float(out.split()[-2]), float(out.split()[-1]) / 1e9

        gflops, gbs = rates()
        print(f"# this machine (TensorFlow, all cores): fp32 GEMM {gflops:.0f} GFLOP/s, Adam update {gbs:.1f} GB/s; "
              "both measured again before each model (the highest so far counts: this VM drifts 2x); a model's "
              "ceiling below is 80% of the examples/s these rates allow its matrix products and its Adam update",
              flush=True)
        for bs in (int(b) for b in args.batch_sizes.split(",")):
            for model in args.models.split(","):
                if model == "LstmModel" and bs >= 256:  # ~25 s a step at 1024 on 2 cores: fewer, shorter windows
                    steps, warm, every = 15, 5, 5
                else:
                    steps, warm, every = args.steps, args.warmup, args.log_every
                g, u = rates()
                gflops, gbs = max(gflops, g), max(gbs, u)
                frame = model in FRAME_MODELS
                pattern = os.path.join(tmp, "2/frame/train*" if frame else "2/video/train*")
                ours_cmd = [exe, "train", "--train_data_pattern", pattern, "--train_dir", os.path.join(tmp, "run"),
                            "--model", model, "--batch_size", str(bs), "--max_steps", str(steps), "--log_every",
                            str(every), "--start_new_model", "--export_model_steps", "0", "--num_epochs", "1000"]
                sizes = {"DbofModel": DBOF, "LstmModel": LSTM}.get(model, {})
                ours_cmd += [a for k, v in sizes.items() for a in ("--" + k, str(v))]
                base_cmd = [sys.executable, __file__, "--side", "baseline", "--model", model, "--pattern", pattern,
                            "--batch", str(bs), "--steps", str(steps), "--log-every", str(every)]
                pairs = []  # (ours, baseline, rss ours, rss baseline): the sides alternate, pair after pair
                gaps = []  # (ours, baseline): the batch GAP after the warm-up, each run
                for i in range(args.repeat):
                    first, second = (ours_cmd, base_cmd) if i % 2 == 0 else (base_cmd, ours_cmd)
                    a, b = timed(first), timed(second)
                    o, bl = (a, b) if i % 2 == 0 else (b, a)
                    pairs.append((steady_rate(o[2], warm), steady_rate(bl[2], warm), o[1], bl[1]))
                    gaps.append((late_gap(o[2], warm), late_gap(bl[2], warm)))
                ratios = [o / bl for o, bl, _, _ in pairs]
                k = int(np.argsort(ratios)[len(ratios) // 2])  # the pair with the median ratio
                ours, base = pairs[k][0], pairs[k][1]
                rss_o, rss_b = max(p[2] for p in pairs), max(p[3] for p in pairs)
                step_s = bs * train_flops(model) / (gflops * 1e9) + 28 * train_weights(model) / (gbs * 1e9)
                top = 0.8 * bs / step_s
                ceiling = (f"ceiling={top:.0f} at {gflops:.0f} GFLOP/s and {gbs:.1f} GB/s (ours at {ours / top:.0%} of it; ")
                each = f"pairs {' '.join(f'{r:.2f}x' for r in ratios)}; " if len(ratios) > 1 else ""
                print(f"train_examples_per_s[{model},batch {bs}] ours={ours:.0f} baseline={base:.0f} "
                      f"ratio={ours / base:.2f}x {ceiling}{each}peak RSS ours={rss_o:.0f} MB baseline={rss_b:.0f} MB; "
                      f"{machine}); batch GAP after step {warm}, mean of the runs: ours={np.mean([g[0] for g in gaps]):.3f} "
                      f"baseline={np.mean([g[1] for g in gaps]):.3f}", flush=True)
                if args.xla:
                    t_x, rss_x, out_x = timed(ours_cmd + ["--xla"])
                    xla = steady_rate(out_x, warm)
                    print(f"train_examples_per_s[{model},batch {bs},--xla] ours={xla:.0f} baseline={base:.0f} "
                          f"ratio={xla / base:.2f}x (peak RSS ours={rss_x:.0f} MB; {machine})", flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
