"""Training: every model trains on CPU; short runs learn; checkpoints, resume and --start_new_model."""
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from yt8m_engine import Yt8mError
from yt8m_engine.train.config import MODELS, TrainConfig, load_config
from yt8m_engine.train.trainer import KerasPredictor, latest_checkpoint, train

from reference import small_config

tf = pytest.importorskip("tensorflow")


def pattern(data, frame=True):
    return f"{data}/2/{'frame' if frame else 'video'}/train*"


@pytest.mark.slow
@pytest.mark.parametrize("model", MODELS)
def test_every_model_trains_a_few_steps(synth_dir, tmp_path, model):
    cfg = small_config(model)
    r = train(cfg, TrainConfig(train_data_pattern=pattern(synth_dir, cfg.frame_features), train_dir=str(tmp_path),
                               batch_size=16, max_steps=3, log_every=1), echo=lambda s: None)
    assert r["steps"] == 3 and np.isfinite(r["loss"])
    assert latest_checkpoint(str(tmp_path)).endswith("ckpt-3")
    saved, tcfg = load_config(str(tmp_path))
    assert saved == cfg and tcfg.batch_size == 16
    assert any(f.startswith("events.out.tfevents") for f in os.listdir(tmp_path))  # TensorBoard


@pytest.mark.slow
@pytest.mark.parametrize("model, kw, epochs, lr", [
    ("FrameLevelLogisticModel", {}, 8, 0.05),
    ("DbofModel", dict(dbof_cluster_size=256, dbof_hidden_size=128, iterations=30, dbof_activation="relu6"), 8, 0.01),
])
def test_short_run_beats_untrained(learn_dir, tmp_path, model, kw, epochs, lr):
    from yt8m_engine.evaluate import evaluate

    cfg = small_config(model, **kw)
    train(cfg, TrainConfig(train_data_pattern=pattern(learn_dir), train_dir=str(tmp_path), batch_size=32,
                           num_epochs=epochs, base_learning_rate=lr, log_every=1000), echo=lambda s: None)
    val = f"{learn_dir}/2/frame/validate*"
    trained = evaluate(str(tmp_path), val)
    untrained = evaluate(str(tmp_path), val, checkpoint=f"{tmp_path}/checkpoints/ckpt-0")
    assert trained["gap"] > 0.2 and untrained["gap"] < 0.02, (trained["gap"], untrained["gap"])
    assert trained["hit_at_one"] > 0.4 > untrained["hit_at_one"] + 0.3


def test_step0_checkpoint_outlives_the_rotation(synth_dir, tmp_path):
    """The untrained reference (ckpt-0) stays after more than five periodic saves, with its ONNX export."""
    train(small_config("LogisticModel"), TrainConfig(train_data_pattern=pattern(synth_dir, False),
                                                     train_dir=str(tmp_path), batch_size=8, max_steps=7,
                                                     export_model_steps=1), echo=lambda s: None)
    files = os.listdir(tmp_path / "checkpoints")
    assert "ckpt-0.index" in files and "ckpt-1.index" not in files and latest_checkpoint(str(tmp_path)).endswith("ckpt-7")
    assert sorted(os.listdir(tmp_path / "export")) == sorted(f"ckpt-{i}.onnx" for i in (0, 3, 4, 5, 6, 7))


def test_resume_and_start_new_model(synth_dir, tmp_path):
    cfg = small_config("FrameLevelLogisticModel")
    tcfg = TrainConfig(train_data_pattern=pattern(synth_dir), train_dir=str(tmp_path), batch_size=8, max_steps=3,
                       export_model_steps=2, log_every=1)
    train(cfg, tcfg, echo=lambda s: None)
    before = KerasPredictor(str(tmp_path)).model.get_layer("head").kernel.numpy().copy()
    lines = []
    tcfg.max_steps = 5
    r = train(cfg, tcfg, echo=lines.append)
    assert r["steps"] == 5 and any("resumed from" in ln and "at step 3" in ln for ln in lines)
    after = KerasPredictor(str(tmp_path)).model.get_layer("head").kernel.numpy()
    assert not np.array_equal(before, after)
    r = train(cfg, tcfg, start_new_model=True, echo=lines.append)
    assert r["steps"] == 5 and latest_checkpoint(str(tmp_path)).endswith("ckpt-5")
    assert sorted(os.listdir(f"{tmp_path}/checkpoints"))[0].startswith("checkpoint")
    with pytest.raises(Yt8mError, match=r"other settings \(--moe_num_mixtures 2 there, 4 here\); resume with its"):
        train(small_config("FrameLevelLogisticModel", moe_num_mixtures=4), tcfg, echo=lambda s: None)


def wait_for_checkpoint(train_dir, step, timeout=240):
    """Until the checkpoint state file (what a resume reads; TensorFlow writes it after the index)
    names a checkpoint of at least `step`."""
    from yt8m_engine.export.paths import checkpoint_path

    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if int(checkpoint_path(str(train_dir)).rsplit("-", 1)[1]) >= step:
                return
        except Yt8mError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"no checkpoint {step} in {train_dir} after {timeout} s")


def test_interrupted_run_saves_and_exits_130(synth_dir, tmp_path):
    """Ctrl-C: a final checkpoint, then exit 130, so that `train && export` does not go on."""
    cmd = [sys.executable, "-m", "yt8m_engine.cli", "train", "--train_data_pattern", pattern(synth_dir),
           "--train_dir", str(tmp_path), "--model", "FrameLevelLogisticModel", "--batch_size", "4",
           "--num_epochs", "1000", "--export_model_steps", "3", "--log_every", "1000"]
    # SIGINT as a terminal delivers it: a test run started in the background inherits it ignored
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        wait_for_checkpoint(tmp_path, 3)
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=120)
    finally:
        p.kill()
    assert p.returncode == 130, (out, err)
    assert "interrupted: saving a final checkpoint" in out and "Traceback" not in err
    assert int(latest_checkpoint(str(tmp_path)).rsplit("-", 1)[1]) >= 3


def test_run_that_failed_before_its_first_step_does_not_block_the_next(synth_dir, tmp_path):
    """A frame-level model on video-level files stops before step 1; the corrected command then runs
    without --start_new_model (only the untrained ckpt-0 was there to protect)."""
    bad = small_config("FrameLevelLogisticModel")
    with pytest.raises(Yt8mError):
        train(bad, TrainConfig(train_data_pattern=pattern(synth_dir, False), train_dir=str(tmp_path), batch_size=8,
                               max_steps=2), echo=lambda s: None)
    good = small_config("LogisticModel")
    r = train(good, TrainConfig(train_data_pattern=pattern(synth_dir, False), train_dir=str(tmp_path), batch_size=8,
                                max_steps=2), echo=lambda s: None)
    assert r["steps"] == 2 and load_config(str(tmp_path))[0] == good


@pytest.mark.slow
def test_killed_run_resumes_from_last_checkpoint(synth_dir, tmp_path):
    cmd = [sys.executable, "-m", "yt8m_engine.cli", "train", "--train_data_pattern", pattern(synth_dir),
           "--train_dir", str(tmp_path), "--model", "FrameLevelLogisticModel", "--batch_size", "4",
           "--num_epochs", "1000", "--export_model_steps", "3", "--log_every", "1000"]
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for_checkpoint(tmp_path, 6)
    p.send_signal(signal.SIGKILL)
    p.wait()
    step = int(latest_checkpoint(str(tmp_path)).rsplit("-", 1)[1])
    assert step >= 6
    lines = []
    r = train(*load_config(str(tmp_path))[:1], TrainConfig(train_data_pattern=pattern(synth_dir),
                                                           train_dir=str(tmp_path), batch_size=4,
                                                           max_steps=step + 2), echo=lines.append)
    assert f"at step {step}" in lines[0] and r["steps"] == step + 2


def test_segment_fine_tuning_masks_unrated_classes(synth_dir, tmp_path):
    from yt8m_engine.train.data import make_dataset

    cfg = small_config("FrameLevelLogisticModel")
    ds = make_dataset([f"{synth_dir}/3/frame/validate0000.tfrecord"], cfg, 64, segments=True, training=False)
    inputs, labels, weights = next(iter(ds))
    assert inputs["frames"].shape[1:] == (5, 1152)
    assert (weights.numpy().sum(1) == 1).all()                 # one rated class per example
    assert (labels.numpy() <= weights.numpy()).all()           # positives only where rated
    r = train(cfg, TrainConfig(train_data_pattern=f"{synth_dir}/3/frame/validate*", train_dir=str(tmp_path),
                               segment_labels=True, batch_size=16, max_steps=2), echo=lambda s: None)
    assert r["steps"] == 2


def test_dbof_batch_norm_projection_gradient_equals_keras():
    """DBoF's input batch norm + cluster projection while training (bn_then_dense, whose gradient skips the
    frames' own) against Keras' BatchNormalization then Dense: outputs, the gradients of gamma, beta and
    the kernel, and the moving statistics."""
    import keras

    from yt8m_engine.train.backbones.dbof import bn_then_dense

    rng = np.random.default_rng(0)
    x = tf.constant(rng.normal(0.3, 1.5, (4, 30, 40)).astype(np.float32))
    dz = tf.constant(rng.normal(size=(4, 30, 16)).astype(np.float32))
    weights = [rng.uniform(0.5, 1.5, 40), rng.normal(0, 0.5, 40), rng.normal(0, 0.3, 40), rng.uniform(0.5, 2, 40)]
    kernel = rng.normal(0, 0.2, (40, 16)).astype(np.float32)
    results = []
    for fused in (True, False):
        bn = keras.layers.BatchNormalization(epsilon=1e-3, momentum=0.9)
        bn.build((None, None, 40))
        bn.set_weights([w.astype(np.float32) for w in weights])   # gamma, beta, moving mean, moving variance
        dense = keras.layers.Dense(16, use_bias=False)
        dense.build((None, None, 40))
        dense.kernel.assign(kernel)
        with tf.GradientTape() as tape:
            z = bn_then_dense(x, bn, dense.kernel) if fused else dense(bn(x, training=True))
            loss = tf.reduce_sum(z * dz)
        grads = tape.gradient(loss, [bn.gamma, bn.beta, dense.kernel])
        results.append([z.numpy()] + [g.numpy() for g in grads] + [v.numpy() for v in (bn.moving_mean, bn.moving_variance)])
    for got, want in zip(*results):
        np.testing.assert_allclose(got, want, rtol=2e-4, atol=2e-4 * np.abs(want).max())
    assert np.abs(results[0][2]).max() > 1 and np.abs(results[0][3]).max() > 1    # beta's and the kernel's


def test_clip_by_norm_equals_the_starters():
    """The trainer clips each gradient by its own norm as the starter's utils.clip_gradient_norms
    (tf.clip_by_norm): the same values below, at and above the norm (within it, the gradient itself),
    for sparse gradients, and for infinite and NaN norms."""
    from yt8m_engine.train.optim import clip_by_norm

    rng = np.random.default_rng(0)
    base = [rng.normal(size=(30, 7)).astype(np.float32), rng.normal(size=(7,)).astype(np.float32) * 0.1]
    norms = [float(np.sqrt((b.astype(np.float64) ** 2).sum())) for b in base]
    fn = tf.function(lambda g, c: clip_by_norm(g, c))
    clipped = set()
    for clip in (norms[0] * 2, norms[0] * 1.001, norms[1], norms[0] * 0.3, 1.0, 0.25, 0.1, 5.0):
        grads = [tf.constant(b) for b in base]
        for got, g in zip(fn(grads, clip), grads):
            want, g = tf.clip_by_norm(g, clip).numpy(), g.numpy()
            scaled = np.linalg.norm(g.astype(np.float64)) > clip
            if not scaled:
                np.testing.assert_array_equal(got.numpy(), g)
            np.testing.assert_allclose(got.numpy(), want, rtol=1e-6, atol=0)
            clipped.add(scaled)
    assert clipped == {True, False}
    sparse = tf.IndexedSlices(tf.constant(base[0][:3]), tf.constant([0, 4, 9]), tf.constant([30, 7]))
    got = clip_by_norm([sparse], 0.5)[0]
    np.testing.assert_array_equal(got.values.numpy(), tf.clip_by_norm(base[0][:3], 0.5).numpy())
    odd = [np.array([np.inf] + [0] * 6, np.float32), np.array([np.nan] + [0] * 6, np.float32),
           np.full(7, 3e38, np.float32)]  # an infinite, a NaN and an overflowing norm: as TensorFlow's
    for g, got in zip(odd, fn([tf.constant(g) for g in odd], 1.0)):
        np.testing.assert_array_equal(got.numpy(), tf.clip_by_norm(g, 1.0).numpy())
        assert not np.isfinite(got.numpy()).all() or not got.numpy().any()


def test_losses_match_numpy():
    from yt8m_engine.train.losses import cross_entropy_loss, hinge_loss, softmax_loss

    rng = np.random.default_rng(0)
    p = rng.uniform(0.01, 0.99, (6, 9)).astype(np.float32)
    y = (rng.random((6, 9)) < 0.3).astype(np.float32)
    w = (rng.random((6, 9)) < 0.5).astype(np.float32)
    ce = -(y * np.log(p + 1e-5) + (1 - y) * np.log(1 - p + 1e-5))
    assert float(cross_entropy_loss(p, y)) == pytest.approx(ce.sum(1).mean(), rel=1e-5)
    assert float(cross_entropy_loss(p, y, w)) == pytest.approx((ce * w).sum(1).mean(), rel=1e-5)
    assert float(hinge_loss(p, y)) == pytest.approx(np.maximum(0, 1 - (2 * y - 1) * p).sum(1).mean(), rel=1e-5)
    norm = y / np.maximum(y.sum(1, keepdims=True), 1e-8)
    logsm = p - np.log(np.exp(p).sum(1, keepdims=True))
    assert float(softmax_loss(p, y)) == pytest.approx(-(norm * logsm).sum(1).mean(), rel=1e-5)


def test_regularisation_and_initialisation_are_the_starters():
    """--l2_penalty means what the starter's slim.l2_regularizer means: l2 * sum(w^2) / 2 over each
    regularised kernel (Keras' own L2 is twice that); DBoF regularises only its MoE head and draws its
    cluster and hidden weights from N(0, 1 / fan-in); its batch norms decay as slim's, 0.999."""
    from yt8m_engine.train.models import build_model

    def penalty(model):
        return float(sum(float(x) for x in model.losses))

    def half_sum_sq(*ws):
        return sum(float(np.sum(np.square(w.numpy().astype(np.float64)))) for w in ws) / 2

    l2 = 1e-3
    m = build_model(small_config("LogisticModel", l2_penalty=l2), seed=0)
    assert penalty(m) == pytest.approx(l2 * half_sum_sq(m.get_layer("head").kernel), rel=1e-5)
    m = build_model(small_config("MoeModel", l2_penalty=l2), seed=0)
    head = m.get_layer("head")
    assert penalty(m) == pytest.approx(l2 * half_sum_sq(head.gate.kernel, head.expert.kernel), rel=1e-5)

    cfg = small_config("DbofModel", l2_penalty=l2, dbof_cluster_size=512, dbof_hidden_size=256)
    cfg.batch_norm_momentum = type(cfg)().batch_norm_momentum  # the default (the tests' small models: 0.9)
    m = build_model(cfg, seed=0)
    head, dbof = m.get_layer("head"), m.get_layer("dbof")
    assert penalty(m) == pytest.approx(l2 * half_sum_sq(head.gate.kernel, head.expert.kernel), rel=1e-5)
    for dense, fan_in in ((dbof.cluster, 1152), (dbof.hidden, 512)):
        w = dense.kernel.numpy()
        assert w.std() == pytest.approx(fan_in ** -0.5, rel=0.03) and abs(w.mean()) < 0.05 * fan_in ** -0.5
        assert np.mean(np.abs(w) > 2 * fan_in ** -0.5) == pytest.approx(0.0455, abs=0.01)  # normal, not uniform
    assert dbof.input_bn.momentum == dbof.cluster_bn.momentum == dbof.hidden_bn.momentum == 0.999

    # the LSTM: each layer's input and recurrent matrices as one Glorot-uniform [n + h, 4h] (BasicLSTMCell)
    m = build_model(small_config("LstmModel", lstm_cells=64), seed=0)
    for name, n in (("lstm_0", 1152), ("lstm_1", 64)):
        cell, limit = m.get_layer(name).cell, (6 / (n + 64 + 4 * 64)) ** 0.5
        w = np.concatenate([cell.kernel.numpy(), cell.recurrent_kernel.numpy()])
        assert -limit <= w.min() < -0.98 * limit and 0.98 * limit < w.max() <= limit
        assert w.std() == pytest.approx(limit / 3 ** 0.5, rel=0.03)
        assert not np.array_equal(w[:64], w[-64:])


@pytest.mark.parametrize("args, message", [
    (["--model", "BogusModel"], "unknown --model 'BogusModel'; valid models: LogisticModel"),
    (["--label_loss", "L1"], "unknown --label_loss 'L1'; valid losses: CrossEntropyLoss"),
])
def test_cli_rejects_unknown_names(synth_dir, tmp_path, args, message):
    r = subprocess.run([sys.executable, "-m", "yt8m_engine.cli", "train", "--train_data_pattern", pattern(synth_dir),
                        "--train_dir", str(tmp_path)] + args, capture_output=True, text=True)
    assert r.returncode == 2 and message in r.stderr and "Traceback" not in r.stderr


def test_corrupt_training_input(synth_dir, tmp_path):
    import glob

    src = sorted(glob.glob(f"{synth_dir}/2/frame/train*"))[0]
    data = bytearray(open(src, "rb").read())
    data[len(data) // 2] ^= 0xFF  # damage a record in the middle
    bad = tmp_path / "train0000.tfrecord"
    bad.write_bytes(bytes(data))
    cfg = small_config("FrameLevelLogisticModel")
    tcfg = TrainConfig(train_data_pattern=str(bad), train_dir=str(tmp_path / "run"), batch_size=4, num_epochs=1,
                       log_every=1000)
    with pytest.raises(Yt8mError, match="--skip-corrupt"):
        train(cfg, tcfg, echo=lambda s: None)
    tcfg.skip_corrupt = True
    r = train(cfg, tcfg, start_new_model=True, echo=lambda s: None)
    assert r["steps"] >= 1 and r["examples"] < 24  # the damaged record (and what follows it in the file) dropped


def test_frame_input_is_tensorflows_parse_and_the_host_input_is_the_layers(synth_dir):
    """Frame-level batches: frames, frame counts and labels equal TensorFlow's own parse of the same records
    (class ids from --num_classes up left out). FrameLevelLogistic's batches (the Numba reader's parse,
    pooled by mean_frames, fed to the head): the same labels, and features equal to the model's MeanFrame
    layer on those frames, which export and eval run, and to a plain float64 mean of the normalised frames
    (a video without frames: zeros). DBoF's training batches: each video's sample drawn from its own
    frames, passed through by the model's sampling layer (host_sample's draws:
    test_dbof_host_sample_draws_as_the_layer)."""
    import glob

    from yt8m_engine.kernels.dequant import mean_frames
    from yt8m_engine.train.backbones.dbof import Options as dbof_options
    from yt8m_engine.train.backbones.mean import keras_layers
    from yt8m_engine.train.data import make_dataset
    from yt8m_engine.train.models import build_model, host_input

    f = sorted(glob.glob(pattern(synth_dir)))[0]
    cfg = small_config("DbofModel", num_classes=40)
    (inputs, labels, weights), = make_dataset([f], cfg, 12, training=False, frame_multiple=60).take(1)
    frames, nf = inputs["frames"].numpy(), inputs["num_frames"].numpy()
    assert frames.shape[0] == 12 and frames.shape[1] % 60 == 0 and weights.shape == (12, 1)
    seq = {n: tf.io.FixedLenSequenceFeature([], tf.string) for n in ("rgb", "audio")}
    ctx = {"labels": tf.io.VarLenFeature(tf.int64)}
    for i, rec in enumerate(tf.data.TFRecordDataset(f).take(12)):
        c, sq = tf.io.parse_single_sequence_example(rec, context_features=ctx, sequence_features=seq)
        want = np.concatenate([tf.io.decode_raw(sq[n], tf.uint8).numpy() for n in ("rgb", "audio")], axis=1)
        assert nf[i] == len(want)
        np.testing.assert_array_equal(frames[i, :nf[i]], want)
        assert not frames[i, nf[i]:].any()
        ids = c["labels"].values.numpy()
        assert sorted(np.flatnonzero(labels[i].numpy())) == sorted(set(ids[ids < 40]))

    flm = small_config("FrameLevelLogisticModel", num_classes=40)
    host = host_input(build_model(flm), flm)
    (pooled, plabels, _), = make_dataset([f], flm, 12, training=False, host=host).take(1)
    layer = keras_layers().MeanFrame()(tf.constant(frames), tf.constant(nf)).numpy()
    np.testing.assert_allclose(pooled["features"].numpy(), layer, rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(plabels.numpy(), labels.numpy())
    assert host.model.predict(pooled, verbose=0).shape == (12, 40)

    # DBoF: the input samples `iterations` of each video's own frames; the model passes them through
    dbof = cfg
    model = build_model(dbof)
    host = host_input(model, dbof)
    (sampled, slabels, _), = make_dataset([f], dbof, 12, training=False, host=host, seed=3).take(1)
    np.testing.assert_array_equal(slabels.numpy(), labels.numpy())
    sf, snf = sampled["frames"].numpy(), sampled["num_frames"].numpy()
    k = dbof.options(dbof_options).iterations
    assert sf.shape == (12, k, 1152) and (snf == k).all()
    for i in range(12):
        own = {r.tobytes() for r in frames[i, :nf[i]]}
        assert all(r.tobytes() in own for r in sf[i])
    layer = model.get_layer("sample")
    out, _ = layer(sampled["frames"], sampled["num_frames"], training=True)
    np.testing.assert_array_equal(out.numpy(), sf)
    layer.on_host = False  # (the layer's own draw, as before)
    assert layer(tf.constant(frames), tf.constant(nf), training=True)[0].shape == (12, k, 1152)

    rng = np.random.default_rng(1)
    counts = np.array([3, 0, 300, 1])
    offs = np.concatenate([[0], np.cumsum(counts)])
    q = rng.integers(0, 256, (offs[-1], 1152), dtype=np.uint8)
    x = q * (4 / 255) + (4 / 512 - 2)
    x /= np.sqrt((x * x).sum(1, keepdims=True))
    want = np.stack([x[offs[i]:offs[i + 1]].mean(0) if counts[i] else np.zeros(1152) for i in range(4)])
    np.testing.assert_allclose(mean_frames(q, offs, counts), want, rtol=1e-5, atol=1e-8)


def test_dbof_host_sample_draws_as_the_layer():
    """DBoF's sample on the host (backbones/dbof.host_sample), as SampleFrames draws it: `iterations`
    frames uniform over each video's valid ones with replacement, or a contiguous run from a uniform
    start (a video shorter than the run: its last frame repeated); a video without frames: zeros; every
    video counted as `iterations` frames. Rows carry their own index, so each drawn frame is identified."""
    from yt8m_engine.train.backbones.dbof import host_sample

    counts = np.array([3, 0, 300, 1, 7])
    offs = np.concatenate([[0], np.cumsum(counts)])
    rows = np.arange(offs[-1])
    frames = np.zeros((offs[-1], 1152), np.uint8)
    frames[:, 0], frames[:, 1], frames[:, 2] = rows % 256, rows // 256, 1

    def drawn(out, i):  # frame indices within video i
        return out["frames"][i, :, 0].astype(int) + 256 * out["frames"][i, :, 1].astype(int) - offs[i]

    k = 3000
    out = host_sample(small_config("DbofModel", iterations=k))(frames, offs, counts, np.random.default_rng(0))
    assert out["frames"].shape == (5, k, 1152) and (out["num_frames"] == k).all()
    assert not out["frames"][1].any() and (drawn(out, 3) == 0).all()
    for i in (0, 4):
        n = np.bincount(drawn(out, i), minlength=counts[i])
        assert len(n) == counts[i] and (np.abs(n - k / counts[i]) < 6 * np.sqrt(k / counts[i])).all(), n
    d = drawn(out, 2)
    assert d.min() >= 0 and d.max() < 300 and abs(d.mean() - 149.5) < 6 * 86.6 / np.sqrt(k)
    assert len(set(d)) > 250  # with replacement: most of the 300 frames among 3000 draws

    run = host_sample(small_config("DbofModel", iterations=5, sample_random_frames=False))
    starts = set()
    for seed in range(200):
        out = run(frames, offs, counts, np.random.default_rng(seed))
        assert list(drawn(out, 0)) == [0, 1, 2, 2, 2] and list(drawn(out, 3)) == [0] * 5
        assert not out["frames"][1].any()
        d = drawn(out, 2)
        assert (np.diff(d) == 1).all() and 0 <= d[0] <= 295
        starts.add(d[0])
        e = drawn(out, 4)
        assert (np.diff(e) == 1).all() and 0 <= e[0] <= 2
    assert len(starts) > 100


@pytest.mark.parametrize("batch, groups", [(300, 2), (21, 8), (5, 8)])
def test_lstm_by_length_equals_keras_lstm(batch, groups):
    """LengthLSTM (videos by length in groups, each group as far as its longest video) gives Keras' LSTM's
    predictions and gradients: 2 groups of 150; 8 groups of 2-3 rows; 5 groups of one and 3 empty ones.
    Lengths 0, 1 and all 40 frames among them."""
    from yt8m_engine.train.backbones.lstm import length_lstm
    from yt8m_engine.train.models import build_model

    model = build_model(small_config("LstmModel"))
    lstms = [la for la in model.layers if isinstance(la, length_lstm())]
    assert [la.name for la in lstms] == ["lstm_0", "lstm_1"]
    rng = np.random.default_rng(batch)
    frames = tf.constant(rng.integers(0, 256, (batch, 40, 1152), dtype=np.uint8))
    nf = rng.integers(0, 41, batch).astype(np.int32)
    nf[:3] = [0, 1, 40]
    labels = tf.constant(rng.random((batch, 3862)) < 0.01, tf.float32)
    out = {}
    for on in (True, False):
        for la in lstms:
            la.groups, la.saving = (groups if on else 0), 0.0  # (grouped wherever it saves a step)
        with tf.GradientTape() as tape:
            preds = model({"frames": frames, "num_frames": tf.constant(nf)}, training=True)
            loss = tf.reduce_sum(tf.keras.losses.binary_crossentropy(labels, preds))
        out[on] = [preds.numpy()] + [g.numpy() for g in tape.gradient(loss, model.trainable_variables)]
    assert len(out[True]) == len(model.trainable_variables) + 1
    for a, b in zip(out[True], out[False]):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    assert np.abs(out[True][1]).max() > 0  # (the LSTM's kernel has a gradient)


def test_lstm_groups_only_where_they_save_steps():
    """LengthLSTM groups a batch where that saves 30% of the steps (the gathers cost ~10% where most
    videos are long), else runs Keras' loop over the whole batch: Keras' loop counted, by rows."""
    import keras

    from yt8m_engine.train.backbones.lstm import length_lstm

    layer = length_lstm()(4, return_sequences=True)
    layer.groups = 4  # of 2 videos each
    x = tf.zeros([8, 10, 3])
    calls, original = [], keras.layers.LSTM.call

    def counting(self, seq, **kw):
        calls.append(int(seq.shape[0]))
        return original(self, seq, **kw)

    keras.layers.LSTM.call = counting
    try:
        # groups as far as 10, 2, 1, 1 frames: 28 of 80 steps; as far as 10, 9, 9, 8: 72 of 80
        for lengths, want in (([1, 10, 2, 1, 1, 2, 10, 1], [2, 2, 2, 2]), ([10, 10, 9, 9, 9, 9, 8, 8], [8])):
            calls.clear()
            layer(x, num_frames=tf.constant(lengths))
            assert calls == want, lengths
    finally:
        keras.layers.LSTM.call = original


def test_lstm_trains_under_xla(synth_dir, tmp_path):
    """--xla compiles the LSTM's step: LengthLSTM's groups (shapes that follow the data) are off there;
    the trainer sets them from the batch size otherwise."""
    lines = []
    train(small_config("LstmModel"), TrainConfig(train_data_pattern=pattern(synth_dir), train_dir=str(tmp_path / "x"),
                                                 batch_size=256, max_steps=1, log_every=1, xla=True), echo=lines.append)
    assert len([ln for ln in lines if ln.startswith("step")]) == 1


@pytest.mark.parametrize("kind", ["AdamOptimizer", "GradientDescentOptimizer", "MomentumOptimizer",
                                  "AdagradOptimizer", "RMSPropOptimizer"])
def test_fused_optimizers_match_numpy(kind):
    """Four steps of each fused optimizer, gradients clipped, against the tf.train update rules and the
    starter's clip written in NumPy."""
    from yt8m_engine.train.optim import FusedOptimizer

    rng = np.random.default_rng(0)
    w0 = rng.normal(size=(4, 3)).astype(np.float32)
    grads = [rng.normal(size=(4, 3)).astype(np.float32) for _ in range(4)]
    var = tf.Variable(w0)
    opt = FusedOptimizer(TrainConfig(optimizer=kind, base_learning_rate=0.1, batch_size=8, clip_gradient_norm=3.0,
                                     learning_rate_decay_examples=20, learning_rate_decay=0.5), [var])
    w = w0.astype(np.float64)
    m = np.zeros_like(w)
    v = np.zeros_like(w)
    acc = np.full_like(w, 0.1)
    ms = np.ones_like(w)
    clipped = 0
    for t, g in enumerate(grads, 1):
        norm = np.sqrt((g.astype(np.float64) ** 2).sum())
        clipped += norm > 3.0
        opt.apply_gradients([(tf.constant(g), var)])
        g = g * 3.0 / max(norm, 3.0)
        lr = 0.1 * 0.5 ** ((t - 1) * 8 // 20)  # staircase over examples seen: at step 3 (24 > 20), not 2
        if kind == "AdamOptimizer":
            m = 0.9 * m + 0.1 * g
            v = 0.999 * v + 0.001 * g * g
            w = w - lr * np.sqrt(1 - 0.999 ** t) / (1 - 0.9 ** t) * m / (np.sqrt(v) + 1e-8)
        elif kind == "GradientDescentOptimizer":
            w = w - lr * g
        elif kind == "MomentumOptimizer":
            m = 0.9 * m + g
            w = w - lr * m
        elif kind == "AdagradOptimizer":
            acc = acc + g * g
            w = w - lr * g / np.sqrt(acc)
        else:
            ms = 0.9 * ms + 0.1 * g * g
            m = 0.0 * m + lr * g / np.sqrt(ms + 1e-10)
            w = w - m
    np.testing.assert_allclose(var.numpy(), w, rtol=1e-5, atol=1e-6)
    assert int(opt.iterations.numpy()) == 4 and 0 < clipped < 4  # (the clip mattered, and not always)


def native_ops(monkeypatch, on: bool):
    """The fused Adam op on (built where a compiler is found: else the test skips) or off, for this test."""
    from yt8m_engine.train import ops

    monkeypatch.setattr(ops, "_loaded", {})
    monkeypatch.setenv("YT8M_ENGINE_NATIVE_OPS", "1" if on else "0")
    if on and ops.clipped_adam() is None:
        if ops._compiler() is None:
            pytest.skip("no C++ compiler here: the fused Adam op cannot be built")
        pytest.fail(f"the fused Adam op did not build: {ops._loaded['clipped_adam'][1]}")
    return ops.clipped_adam() if on else None


@pytest.mark.parametrize("l2, clip", [(0.0, 0.0), (0.3, 0.0), (0.3, 1e9), (0.3, 40.0), (0.0, 40.0), (0.3, 0.05)])
@pytest.mark.parametrize("size", [(5, 3), (3 * 32768 + 17,)])
def test_clipped_adam_op_equals_the_starters_update(monkeypatch, l2, clip, size):
    """Yt8mClippedAdam (train/ops/clipped_adam.cc) against NumPy in float64, three steps: the gradient plus
    l2 * w, clipped by its own norm where that passes `clip` (0: no clip), tf.train.AdamOptimizer's update.
    The large variable spans several of the norm's blocks with a remainder (and the update's shards); the
    clips hit on some steps or all or none. A tensor read before an update keeps its values (copy on write)."""
    lib = native_ops(monkeypatch, True)
    rng = np.random.default_rng(1)
    w = rng.normal(size=size)
    m, v = np.zeros(size), np.zeros(size)
    var, mv, vv = tf.Variable(w.astype(np.float32)), tf.Variable(tf.zeros(size)), tf.Variable(tf.zeros(size))
    hits = []
    for t in range(1, 4):
        g = rng.normal(size=size).astype(np.float32) * 0.1 * t
        lr, b1p, b2p = 0.01 * t, 0.9 ** t, 0.999 ** t
        before = var.read_value()
        lib.yt8m_clipped_adam(var.handle, mv.handle, vv.handle, g, lr, b1p, b2p, l2, clip)
        np.testing.assert_array_equal(before.numpy(), w.astype(np.float32))  # (not updated in place)
        total = g + l2 * w
        norm = np.sqrt((total ** 2).sum())
        hits.append(bool(clip > 0 and norm > clip))
        total = total * (clip / norm if hits[-1] else 1.0)
        m = 0.9 * m + 0.1 * total
        v = 0.999 * v + 0.001 * total ** 2
        w = w - lr * np.sqrt(1 - b2p) / (1 - b1p) * m / (np.sqrt(v) + 1e-8)
        # (1 - beta2 in float32, as ResourceApplyAdam: 1.0000050e-3, so v is ~1e-5 off float64's)
        np.testing.assert_allclose(mv.numpy(), m, rtol=3e-5, atol=1e-7)
        np.testing.assert_allclose(vv.numpy(), v, rtol=3e-5, atol=1e-9)
        np.testing.assert_allclose(var.numpy(), w, rtol=1e-5, atol=1e-6)
        w = var.numpy().astype(np.float64)  # (the next step from where float32 is; the error does not build up)
    if clip in (0.0, 1e9):
        assert not any(hits)
    if clip == 0.05:
        assert all(hits)
    if clip == 40.0 and l2 == 0 and size[0] > 5:  # (norms ~31, 63, 94)
        assert hits == [False, True, True]


def test_without_the_fused_op_training_says_why_and_a_failed_build_is_not_retried(monkeypatch, tmp_path):
    """A compiler that fails: one line while it builds, one saying TensorFlow's ops train instead, the
    compiler's output kept (in the next place where the first cannot be written); the next process neither
    builds again nor says more. No compiler: said."""
    from yt8m_engine.train import ops

    (tmp_path / "a-file").write_text("")  # (no folder can be made there)
    monkeypatch.setattr(ops, "_cache_dirs", lambda: [str(tmp_path / "a-file" / "ops"), str(tmp_path / "ops")])
    monkeypatch.delenv("YT8M_ENGINE_NATIVE_OPS", raising=False)
    monkeypatch.setenv("CXX", "false")  # (found, and exits 1)
    said = []
    for _ in range(2):
        monkeypatch.setattr(ops, "_loaded", {})
        assert ops.clipped_adam(said.append) is None
    assert len(said) == 2 and "building" in said[0] and "uses TensorFlow's Adam ops" in said[1], said
    failed = list((tmp_path / "ops").glob("clipped_adam-*.failed"))
    assert len(failed) == 1 and str(failed[0]) in said[1] and "false" in failed[0].read_text()
    monkeypatch.setattr(ops, "_loaded", {})
    monkeypatch.setenv("CXX", "no-such-compiler")
    assert ops.clipped_adam(said.append) is None and "no C++ compiler" in said[-1]
    from yt8m_engine.train.optim import FusedOptimizer

    var = tf.Variable(tf.zeros([3]))
    assert not FusedOptimizer(TrainConfig(), [var]).take_l2([var], 1.0, said.append)  # (TensorFlow's ops then)


def test_clipped_adam_op_checks_its_inputs(monkeypatch):
    lib = native_ops(monkeypatch, True)
    a, b = tf.Variable(tf.zeros([4])), tf.Variable(tf.zeros([4]))
    with pytest.raises(tf.errors.InvalidArgumentError, match="three variables"):
        lib.yt8m_clipped_adam(a.handle, a.handle, b.handle, tf.zeros([4]), 0.1, 0.9, 0.999, 0.0, 0.0)
    with pytest.raises(tf.errors.InvalidArgumentError, match="does not match the gradient"):
        lib.yt8m_clipped_adam(a.handle, b.handle, tf.Variable(tf.zeros([4])).handle, tf.zeros([5]), 0.1, 0.9,
                              0.999, 0.0, 0.0)


@pytest.mark.parametrize("xla", [True, False])
@pytest.mark.parametrize("native", [True, False])
def test_training_steps_are_the_starters_maths(synth_dir, tmp_path, monkeypatch, xla, native):
    """Three of the trainer's steps on a LogisticModel against the starter's train.py written out in
    NumPy (float64): inputs L2-normalised, CrossEntropyLoss (eps 1e-5) + l2 * sum(W^2) / 2, each gradient
    clipped by its own norm, tf.train.AdamOptimizer on the staircase rate over examples seen. The L2
    penalty is large enough to matter, the batch clips the kernel's gradient and not the bias's, and the
    rate decays after the second step. With the fused Adam op (the penalty's gradient added in the
    optimizer's update, the loss without it) and with TensorFlow's ops."""
    from yt8m_engine.train.trainer import _Run

    native_ops(monkeypatch, native)

    classes, batch, l2, lr, clip = 40, 8, 0.5, 0.05, 3.0
    cfg = small_config("LogisticModel", num_classes=classes, l2_penalty=l2)
    tcfg = TrainConfig(train_data_pattern=pattern(synth_dir, False), train_dir=str(tmp_path), batch_size=batch,
                       base_learning_rate=lr, learning_rate_decay_examples=20, learning_rate_decay=0.5,
                       clip_gradient_norm=clip, xla=xla)
    run = _Run(cfg, tcfg, None, None, lambda s: None)
    run.prepare(True)
    run.build()
    assert (run.optimizer.l2_in_update is not None) == native
    step = run.step_function(xla)
    head = run.model.get_layer("head")
    params = {"w": head.kernel.numpy().astype(np.float64), "b": head.bias.numpy().astype(np.float64)}
    m = {k: np.zeros_like(x) for k, x in params.items()}
    v = {k: np.zeros_like(x) for k, x in params.items()}
    rng = np.random.default_rng(5)
    clipped = []
    for t in range(1, 4):
        x = rng.normal(size=(batch, 1152)).astype(np.float32)
        y = (rng.random((batch, classes)) < 0.1).astype(np.uint8)
        loss, _, _ = step({"features": tf.constant(x)}, tf.constant(y), tf.ones([batch, 1]))
        xn, y = x.astype(np.float64), y.astype(np.float64)
        xn = xn / np.sqrt(np.maximum((xn ** 2).sum(1, keepdims=True), 1e-12))
        p = 1 / (1 + np.exp(-(xn @ params["w"] + params["b"])))
        want_loss = -(y * np.log(p + 1e-5) + (1 - y) * np.log(1 - p + 1e-5)).sum(1).mean()
        assert float(loss) == pytest.approx(want_loss, rel=1e-4)
        dz = (-y / (p + 1e-5) + (1 - y) / (1 - p + 1e-5)) * p * (1 - p) / batch
        grads = {"w": xn.T @ dz + l2 * params["w"], "b": dz.sum(0)}
        step_size = lr * 0.5 ** ((t - 1) * batch // 20) * np.sqrt(1 - 0.999 ** t) / (1 - 0.9 ** t)
        for k, g in grads.items():
            norm = np.sqrt((g ** 2).sum())
            clipped.append((k, norm > clip))
            g = g * clip / max(norm, clip)
            m[k] = 0.9 * m[k] + 0.1 * g
            v[k] = 0.999 * v[k] + 0.001 * g * g
            params[k] = params[k] - step_size * m[k] / (np.sqrt(v[k]) + 1e-8)
        # (float32 against float64: Adam's m / sqrt(v) magnifies the rounding where a gradient is ~0)
        np.testing.assert_allclose(head.kernel.numpy(), params["w"], rtol=0, atol=2e-3 * lr)
        np.testing.assert_allclose(head.bias.numpy(), params["b"], rtol=0, atol=2e-3 * lr)
    assert ("w", True) in clipped and ("b", False) in clipped


def test_learning_rate_counts_the_examples_of_every_replica():
    """--batch_size is per replica (the starter's per tower): with 2 replicas of 4, a step is 8 examples,
    and the staircase decays once 20 examples have passed (step 3), for the fused and Keras optimizers."""
    from yt8m_engine.train.optim import FusedOptimizer
    from yt8m_engine.train.trainer import make_optimizer

    tcfg = TrainConfig(batch_size=4, learning_rate_decay_examples=20, learning_rate_decay=0.5, base_learning_rate=1.0)
    fused, keras_opt = FusedOptimizer(tcfg, [tf.Variable([1.0])], replicas=2), make_optimizer(tcfg, replicas=2)
    rates = []
    for step in range(6):
        fused.iterations.assign(step)
        keras_opt.iterations.assign(step)
        rates.append((float(fused.learning_rate), float(keras_opt.learning_rate)))
    assert rates == [(r, r) for r in (1, 1, 1, 0.5, 0.5, 0.25)]


def test_which_models_xla_compiles_by_default():
    """XLA by default: not the LSTM; LogisticModel and FrameLevelLogistic only from batch 1024 (as fast
    uncompiled below it, in less memory); the others at any batch size."""
    from yt8m_engine.train.registry import MODELS, xla_by_default

    assert not any(xla_by_default("LstmModel", b) for b in (64, 1024, 4096))
    for m in ("LogisticModel", "FrameLevelLogisticModel"):
        assert [xla_by_default(m, b) for b in (64, 256, 1023, 1024, 2048)] == [False] * 3 + [True] * 2
    for m in set(MODELS) - {"LstmModel", "LogisticModel", "FrameLevelLogisticModel"}:
        assert xla_by_default(m, 1) and xla_by_default(m, 1024)


@pytest.mark.parametrize("xla", [True, False])
def test_xla_option_trains_the_same(synth_dir, tmp_path, xla):
    """--xla (default on for video-level models) compiles the step; the losses equal the plain step's."""
    cfg = small_config("MoeModel")
    losses = {}
    for flag in (xla, None):
        lines = []
        train(cfg, TrainConfig(train_data_pattern=pattern(synth_dir, False), train_dir=str(tmp_path / str(flag)),
                               batch_size=16, max_steps=4, log_every=1, xla=flag), echo=lines.append)
        losses[flag] = [float(ln.split()[3]) for ln in lines if ln.startswith("step")]
    assert len(losses[xla]) == 4
    np.testing.assert_allclose(losses[xla], losses[None], rtol=1e-4)


@pytest.mark.slow
def test_mixed_precision_trains_on_the_cpu(synth_dir, tmp_path):
    """--mixed_precision (float16 compute, Keras' loss scaling) with XLA, on the CPU: finite losses, a
    checkpoint whose ONNX export (float32 weights) predicts as the Keras model does, and the caller's
    Keras policy left as it was."""
    import keras

    from yt8m_engine.engine import OnnxModel

    cfg = small_config("DbofModel")
    lines = []
    train(cfg, TrainConfig(train_data_pattern=pattern(synth_dir), train_dir=str(tmp_path), batch_size=8,
                           max_steps=3, log_every=1, mixed_precision=True, xla=True), echo=lines.append)
    assert keras.mixed_precision.global_policy().name == "float32"
    losses = [float(ln.split()[3]) for ln in lines if ln.startswith("step")]
    assert len(losses) == 3 and np.isfinite(losses).all(), lines
    kp = KerasPredictor(str(tmp_path))
    onnx_file = sorted((tmp_path / "export").glob("ckpt-3*.onnx"))[0]
    om = OnnxModel(str(onnx_file))
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (4, 20, 1152), dtype=np.uint8)
    n = np.array([20, 7, 1, 13], np.int32)
    ref = kp.predict_frames(frames, n)
    cols = np.asarray(om.info.class_ids)
    np.testing.assert_allclose(om.predict_frames(frames, n), ref[:, cols], atol=1e-5)


def test_mixed_precision_clips_the_unscaled_gradients():
    """Under loss scaling the gradients reach the optimizer multiplied by the scale (32768 at first): the
    clip must act after the scale is taken out, each gradient by its own norm (clipping the scaled ones to
    1 made every step 1/32768 of the starter's)."""
    import keras

    from yt8m_engine.train.trainer import make_optimizer

    rng = np.random.default_rng(0)
    w0 = [rng.normal(size=(5, 3)).astype(np.float32), rng.normal(size=(3,)).astype(np.float32)]
    grads = [rng.normal(size=(5, 3)).astype(np.float32) * 4, np.full(3, 0.1, np.float32)]  # norms ~12 and 0.17
    var = [tf.Variable(w) for w in w0]
    opt = keras.optimizers.LossScaleOptimizer(make_optimizer(TrainConfig(optimizer="sgd", base_learning_rate=0.5,
                                                                         clip_gradient_norm=1.0)))
    opt.build(var)
    scale = float(opt.dynamic_scale.numpy())
    assert scale > 1
    opt.apply([tf.constant(g * scale) for g in grads], var)
    for v, w, g in zip(var, w0, grads):
        want = w - 0.5 * g / max(1.0, float(np.linalg.norm(g)))
        np.testing.assert_allclose(v.numpy(), want, rtol=1e-5, atol=1e-6)


def test_train_and_export_print_no_tensorflow_start_up_noise(synth_dir, tmp_path):
    """TensorFlow's native start-up lines (absl, CUDA stub, oneDNN) never reach the user's terminal."""
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    runs = [["train", "--train_data_pattern", pattern(synth_dir, False), "--train_dir", str(tmp_path),
             "--model", "LogisticModel", "--batch_size", "8", "--max_steps", "1"],
            ["export", "--train_dir", str(tmp_path), "--output", str(tmp_path / "m.onnx")]]
    for args in runs:
        r = subprocess.run([sys.executable, "-m", "yt8m_engine.cli", *args], capture_output=True, text=True, env=env)
        assert r.returncode == 0, r.stderr
        for noise in ("absl::InitializeLog", "cudart_stub", "oneDNN custom operations"):
            assert noise not in r.stderr + r.stdout, (args[0], r.stderr)


def test_training_process_stays_lean(synth_dir, tmp_path):
    """Video-level training loads neither Numba (its log's batch metrics are NumPy, the record size is read
    from the headers, tf.io.parse_example parses its batches; FrameLevelLogistic's training does load it, for
    the reader's parse) nor matplotlib's pyplot (Keras imports it where installed): ~110 MB of peak RSS;
    the shuffle buffer's record size equals the reader's."""
    import glob

    from yt8m_engine.io.tfrecord import record_blocks
    from yt8m_engine.io.framing import mean_record_bytes as record_bytes

    code = ("import sys; from yt8m_engine.cli import main; sys.argv = ['yt8m-engine'] + sys.argv[1:]\n"
            "try:\n    main()\nexcept SystemExit:\n    pass\n"
            "print('LOADED', sorted(m for m in ('numba', 'llvmlite', 'matplotlib.pyplot') if m in sys.modules))")
    r = subprocess.run([sys.executable, "-c", code, "train", "--train_data_pattern", pattern(synth_dir, False),
                        "--train_dir", str(tmp_path), "--model", "LogisticModel", "--batch_size", "8",
                        "--max_steps", "2", "--log_every", "1"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "LOADED []" in r.stdout, r.stdout[-500:]
    assert "hit@1" in r.stdout  # the batch metrics were computed
    f = sorted(glob.glob(pattern(synth_dir, True)))[0]
    blk = next(record_blocks(f, lambda n: np.empty(n, np.uint8)))
    assert record_bytes(f) == pytest.approx(blk.lengths[:256].mean() + 16)
    (tmp_path / "text").write_text("not a record file" * 10)
    assert record_bytes(str(tmp_path / "text")) is None


def event_scalars(folder):
    """{tag: {step: value}} of the TensorBoard event files in folder (read with our TFRecord framing)."""
    from tensorboard.compat.proto import event_pb2
    from tensorboard.util import tensor_util

    from yt8m_engine.io.tfrecord import scan_records

    out: dict = {}
    for f in os.listdir(folder):
        if not f.startswith("events.out.tfevents"):
            continue
        buf = np.fromfile(os.path.join(folder, f), np.uint8)
        for off, ln, st in zip(*scan_records(buf)):
            assert st == 0
            e = event_pb2.Event.FromString(buf[off:off + ln].tobytes())
            for v in e.summary.value:
                val = v.simple_value if v.HasField("simple_value") else float(tensor_util.make_ndarray(v.tensor))
                out.setdefault(v.tag, {})[e.step] = val
    return out


def test_tensorboard_final_step_and_one_tag_per_quantity(learn_dir, tmp_path):
    """The last step is logged even off the --log_every grid; eval's event file (TRAIN_DIR/eval) uses
    training's tags, so TensorBoard overlays train and eval per quantity."""
    from yt8m_engine.evaluate import evaluate, tensorboard_summaries

    cfg = small_config("FrameLevelLogisticModel")
    train(cfg, TrainConfig(train_data_pattern=pattern(learn_dir), train_dir=str(tmp_path), batch_size=16,
                           max_steps=7, log_every=5), echo=lambda s: None)
    tr = event_scalars(str(tmp_path))
    assert sorted(tr["gap"]) == [1, 5, 7] and sorted(tr["loss"]) == [1, 5, 7]
    res = evaluate(str(tmp_path), f"{learn_dir}/2/frame/validate*")
    assert tensorboard_summaries(res, str(tmp_path))
    ev = event_scalars(str(tmp_path / "eval"))
    for tag in ("hit_at_one", "perr", "gap"):
        assert tag in tr and ev[tag] == {7: pytest.approx(res[tag])}
    res = evaluate(str(tmp_path), f"{learn_dir}/3/frame/validate*", segment_labels=True)
    tensorboard_summaries(res, str(tmp_path))
    ev = event_scalars(str(tmp_path / "eval"))
    assert ev["segments/kaggle_map"] == {7: pytest.approx(res["segment_map"])} and "segments/gap" in ev


def test_fine_tune_from_another_run_with_another_class_count(synth_dir, tmp_path):
    """--start_from: the backbone's weights carried over, the head for another class count fresh."""
    from yt8m_engine.train.trainer import load_model

    src = str(tmp_path / "src")
    train(small_config("DbofModel"), TrainConfig(train_data_pattern=pattern(synth_dir), train_dir=src, batch_size=16,
                                                 max_steps=2), echo=lambda s: None)
    lines = []
    cfg = small_config("DbofModel", num_classes=10)
    dst = str(tmp_path / "dst")
    r = train(cfg, TrainConfig(train_data_pattern=pattern(synth_dir), train_dir=dst, batch_size=16, max_steps=1,
                               base_learning_rate=0.0), echo=lines.append, start_from_dir=src)
    assert r["steps"] == 1
    msg = next(x for x in lines if x.startswith("started from"))
    assert "fresh: head (3862 -> 10 classes)" in msg
    a, _, _ = load_model(src)
    b, _, _ = load_model(dst, f"{dst}/checkpoints/ckpt-0")
    for name in ("dbof",):
        for wa, wb in zip(a.get_layer(name).weights, b.get_layer(name).weights):
            assert np.array_equal(np.asarray(wa), np.asarray(wb)), wa.path
    assert b.get_layer("head").weights[0].shape[-1] != a.get_layer("head").weights[0].shape[-1]
    with pytest.raises(Yt8mError, match="trained on frame-level"):
        train(small_config("LogisticModel"), TrainConfig(train_data_pattern=pattern(synth_dir, False),
                                                          train_dir=str(tmp_path / "v"), max_steps=1),
              echo=lambda s: None, start_from_dir=src)
