"""`yt8m-engine train`: a custom Keras 3 / TF 2 training loop with checkpoints, resume and TensorBoard.

A custom loop (GradientTape + apply_gradients) rather than model.fit: it keeps gradient clipping,
label weights and the per-step metrics explicit, and it runs under MultiWorkerMirroredStrategy
where Keras 3's fit does not.
"""
from __future__ import annotations

import dataclasses
import glob
import os
import shutil
import time

import numpy as np

from ..errors import Yt8mError
from ..io.files import resolve_files
from ..kernels.batch_metrics import batch_metrics
from .config import CHECKPOINT_DIR, CONFIG_FILE, OPTIMIZERS, ModelConfig, TrainConfig, load_config, save_config


def _tf():
    from .quiet_tf import tf

    return tf


def make_optimizer(tcfg: TrainConfig):
    import keras

    steps = max(1, tcfg.learning_rate_decay_examples // tcfg.batch_size)
    lr = keras.optimizers.schedules.ExponentialDecay(tcfg.base_learning_rate, steps, tcfg.learning_rate_decay,
                                                     staircase=True)
    kind = OPTIMIZERS[tcfg.optimizer]
    if kind == "adam":
        return keras.optimizers.Adam(lr)
    if kind == "sgd":
        return keras.optimizers.SGD(lr)
    if kind == "momentum":
        return keras.optimizers.SGD(lr, momentum=0.9)
    if kind == "adagrad":
        return keras.optimizers.Adagrad(lr)
    return keras.optimizers.RMSprop(lr)


def latest_checkpoint(train_dir: str) -> str | None:
    return _tf().train.latest_checkpoint(os.path.join(train_dir, CHECKPOINT_DIR))


def load_model(train_dir: str, checkpoint: str | None = None):
    """(model, ModelConfig, step) from a train_dir, without any hyper-parameter repeated."""
    mcfg, _ = load_config(train_dir)
    from .models import build_model

    tf = _tf()
    model = build_model(mcfg)
    ckpt_path = checkpoint or latest_checkpoint(train_dir)
    if ckpt_path is None:
        raise Yt8mError(f"{train_dir}: no checkpoint found under {os.path.join(train_dir, CHECKPOINT_DIR)}")
    step = tf.Variable(0, dtype=tf.int64)
    tf.train.Checkpoint(model=model, step=step).restore(ckpt_path).expect_partial()
    return model, mcfg, int(step.numpy())


def _strategy(tf, cluster, num_gpu: int = 1, echo=print):
    """Several workers: MultiWorkerMirroredStrategy; one machine: one replica on each of the first
    --num_gpu GPUs (the starter's flag), else the default (the first GPU, or the CPU)."""
    if cluster is not None:
        return tf.distribute.MultiWorkerMirroredStrategy()
    gpus = tf.config.list_physical_devices("GPU")
    if num_gpu > len(gpus) and num_gpu != 1:
        echo(f"note: --num_gpu {num_gpu}: {len(gpus)} GPU{'s' if len(gpus) != 1 else ''} here, "
             f"training on {'the CPU' if not gpus else f'{len(gpus)}'}")
    n = min(num_gpu, len(gpus))
    if n > 1:
        return tf.distribute.MirroredStrategy(devices=[f"/gpu:{i}" for i in range(n)])
    if n == 0 and gpus:
        return tf.distribute.OneDeviceStrategy("/cpu:0")
    return tf.distribute.get_strategy()


def training_files(pattern: str) -> list[str]:
    """Training input goes through TensorFlow's own file systems (gs://, file://, local)."""
    from ..io.files import is_url

    if not any(is_url(p) for p in pattern.split(",")):
        return resolve_files(pattern)
    tf = _tf()
    files = sorted({f for p in pattern.split(",") if p.strip() for f in tf.io.gfile.glob(p.strip())})
    if not files:
        raise Yt8mError(f"no files match {pattern!r}")
    return files


def start_from(model, mcfg: ModelConfig, source: str, echo=print) -> None:
    """Fine-tuning: the weights of another run's latest checkpoint copied into a fresh model, layer by
    layer (same names) wherever the shapes agree; the rest keeps its fresh initialisation (a classifier
    head for another class count, say). The input must be the same features."""
    src, scfg, step = load_model(source)
    if scfg.feature_spec != mcfg.feature_spec:
        raise Yt8mError(f"--start_from {source}: trained on {scfg.feature_spec.describe()}, this run reads "
                        f"{mcfg.feature_spec.describe()}")
    copied = total = 0
    fresh = []
    for layer in model.layers:
        try:
            other = src.get_layer(layer.name)
        except ValueError:
            other = None
        ws = layer.weights
        total += len(ws)
        ow = {w.path.split("/", 1)[-1]: w for w in other.weights} if other is not None else {}
        for w in ws:
            o = ow.get(w.path.split("/", 1)[-1])
            if o is not None and tuple(o.shape) == tuple(w.shape):
                w.assign(o.numpy() if hasattr(o, "numpy") else o)
                copied += 1
            elif layer.name not in fresh:
                fresh.append(layer.name)
    if not copied:
        raise Yt8mError(f"--start_from {source}: a {scfg.model}; nothing of it fits this {mcfg.model}")
    echo(f"started from {source} ({scfg.model}, step {step}): {copied} of {total} weight arrays copied"
         + (f"; fresh: {', '.join(fresh)}" + (f" ({scfg.num_classes} -> {mcfg.num_classes} classes)"
                                               if scfg.num_classes != mcfg.num_classes else "") if fresh else ""))


def train(mcfg: ModelConfig, tcfg: TrainConfig, start_new_model: bool = False, echo=print,
          workers: str | None = None, task_index: int | None = None, start_from_dir: str | None = None) -> dict:
    """Train (or resume) a model. Returns a summary dict (steps, loss, examples_per_sec, train_dir).

    Multi-worker: with --workers/--task_index (or $TF_CONFIG) the same command runs on every worker
    under MultiWorkerMirroredStrategy; worker 0 (or the chief) writes the checkpoints, the others
    write theirs under TRAIN_DIR/workers/INDEX. Every worker needs the same --max_steps.
    """
    from .cluster import is_chief, tf_config

    mcfg.validate()
    tcfg.validate()
    cluster = tf_config(workers, task_index)
    chief = is_chief(cluster)
    if cluster is not None and tcfg.max_steps is None:
        raise Yt8mError("multi-worker training needs --max_steps (every worker must run the same number of steps)")
    if not chief:
        echo = (lambda s: None)
    files = training_files(tcfg.train_data_pattern)
    train_dir = tcfg.train_dir
    ckpt_dir = os.path.join(train_dir, CHECKPOINT_DIR) if chief else os.path.join(
        train_dir, "workers", str(cluster["task"]["index"]), CHECKPOINT_DIR)
    # a run that stopped before its first step (say, a model that does not fit the data) left only the
    # untrained ckpt-0: nothing to protect, so a corrected command starts over instead of being refused
    trained = [f for f in glob.glob(os.path.join(ckpt_dir, "*.index")) if not f.endswith("ckpt-0.index")]
    if start_new_model or not trained:
        shutil.rmtree(ckpt_dir, ignore_errors=True)
        for f in glob.glob(os.path.join(train_dir, "events.out.tfevents.*")) if chief else []:
            os.remove(f)
    elif os.path.exists(os.path.join(train_dir, CONFIG_FILE)):
        saved, _ = load_config(train_dir)
        if dataclasses.asdict(saved) != dataclasses.asdict(mcfg):
            diff = [k for k, v in dataclasses.asdict(saved).items() if dataclasses.asdict(mcfg)[k] != v]
            raise Yt8mError(f"{train_dir} holds a {saved.model} trained with other settings ({', '.join(diff)}); "
                            "resume without changing them, or pass --start_new_model (or another --train_dir)")
    os.makedirs(train_dir, exist_ok=True)
    if chief:
        save_config(train_dir, mcfg, tcfg)

    tf = _tf()
    import keras

    from .data import make_dataset
    from .losses import LOSSES
    from .models import build_model

    if tcfg.mixed_precision:
        keras.mixed_precision.set_global_policy("mixed_float16")
    if tcfg.log_device_placement:
        tf.debugging.set_log_device_placement(True)
    strategy = _strategy(tf, cluster, tcfg.num_gpu, echo)
    with strategy.scope():
        model = build_model(mcfg, seed=tcfg.seed)
        if tcfg.mixed_precision:  # Keras' loss scaling (its optimizers: several ops a variable)
            optimizer = keras.optimizers.LossScaleOptimizer(make_optimizer(tcfg))
            optimizer.build(model.trainable_variables)
        else:  # one fused op a variable, as TF 1's optimizers (see optim.py)
            from .optim import FusedOptimizer

            optimizer = FusedOptimizer(tcfg, model.trainable_variables)
        step_var = tf.Variable(0, dtype=tf.int64, name="step")
    ckpt = tf.train.Checkpoint(model=model, optimizer=optimizer, step=step_var)
    manager = tf.train.CheckpointManager(ckpt, ckpt_dir, max_to_keep=5)

    def save(number: int) -> None:
        """A checkpoint, and (chief) its ONNX exports beside it for eval, which then needs no TensorFlow."""
        if number == 0:  # outside the manager's rotation: the untrained reference is kept for good
            path = ckpt.write(os.path.join(ckpt_dir, "ckpt-0"))
        else:
            path = manager.save(checkpoint_number=number)
        if chief:
            from ..export.onnx_export import export_beside

            try:
                export_beside(model, mcfg, number, train_dir, path)
            except Exception as e:  # noqa: BLE001 - eval exports it itself then; training goes on
                echo(f"warning: ONNX export of {path} for eval failed ({str(e).splitlines()[0][:200]})")
    if manager.latest_checkpoint:
        ckpt.restore(manager.latest_checkpoint).assert_existing_objects_matched()
        echo(f"resumed from {manager.latest_checkpoint} at step {int(step_var.numpy())}")
    else:
        if start_from_dir:
            start_from(model, mcfg, start_from_dir, echo)
        save(0)  # the untrained (or the started-from) model: a reference point for eval
    start_step = int(step_var.numpy())
    if tcfg.max_steps is not None and start_step >= tcfg.max_steps:
        echo(f"already at step {start_step} >= --max_steps {tcfg.max_steps}: nothing to do")
        return {"steps": start_step, "train_dir": train_dir, "checkpoint": manager.latest_checkpoint}

    # XLA by default on one replica (no collectives to compile); frame-level batches are then padded to
    # a multiple of 60 frames, so at most 5 frame counts compile (measured on 2 CPU cores, batch 64:
    # MoE 1.3x, FrameLevelLogistic 1.3x, DBoF 1.4x the plain step's examples/s)
    from . import registry

    xla = tcfg.xla if tcfg.xla is not None else (strategy.num_replicas_in_sync == 1
                                                  and registry.MODELS[mcfg.model].xla)
    # a resumed run reshuffles with a step-dependent seed instead of replaying the first batches
    from .data import record_bytes

    # the shuffle buffer bounded in bytes: a real frame-level record is ~270 kB (4096 of them: 1.1 GB)
    mean = record_bytes(files[0])
    buffer = tcfg.shuffle_buffer if mean is None else int(max(1, min(tcfg.shuffle_buffer,
                                                                      tcfg.shuffle_mb * 2 ** 20 // mean)))
    ds = make_dataset(files, mcfg, tcfg.batch_size, segments=tcfg.segment_labels, training=True,
                      num_epochs=tcfg.num_epochs, seed=tcfg.seed + start_step, shuffle_buffer=buffer,
                      segment_buffer=tcfg.shuffle_buffer,
                      skip_corrupt=tcfg.skip_corrupt, frame_multiple=60 if xla and not tcfg.segment_labels else 1,
                      readers=tcfg.num_readers)
    ds = strategy.experimental_distribute_dataset(ds)
    loss_fn = LOSSES[tcfg.label_loss]

    def step_fn(inputs, labels, weights):
        with tf.GradientTape() as tape:
            preds = model(inputs, training=True)
            loss = loss_fn(preds, labels, weights)
            reg = tf.add_n(model.losses) if model.losses else 0.0
            # gradients are summed over replicas: scale so that they average
            total = (loss + tcfg.regularization_penalty * reg) / strategy.num_replicas_in_sync
            scaled = optimizer.scale_loss(total) if hasattr(optimizer, "scale_loss") else total
        grads = tape.gradient(scaled, model.trainable_variables)
        if tcfg.clip_gradient_norm > 0:
            grads, _ = tf.clip_by_global_norm(grads, tcfg.clip_gradient_norm)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return loss, preds

    @tf.function(reduce_retracing=True)
    def train_step(inputs, labels, weights):
        loss, preds = strategy.run(compiled_step if xla else step_fn, args=(inputs, labels, weights))
        loss = strategy.reduce(tf.distribute.ReduceOp.MEAN, loss, axis=None)
        return loss, strategy.gather(preds, axis=0), strategy.gather(labels, axis=0)

    compiled_step = tf.function(step_fn, jit_compile=True, reduce_retracing=True)  # --xla

    writer = tf.summary.create_file_writer(train_dir if chief else os.path.join(ckpt_dir, "..", "logs"))
    step = start_step
    examples = 0
    t_log = time.perf_counter()
    ex_log = 0
    last_loss = float("nan")
    last_metrics: dict = {}
    t_start = time.perf_counter()
    saved_at = start_step
    interrupted = False
    logged_at = start_step
    last = None

    def log(step, loss, preds, labels_all):
        """A progress line and TensorBoard scalars of one step (its batch's metrics)."""
        nonlocal last_loss, last_metrics, t_log, ex_log, logged_at
        logged_at = step
        last_loss = float(loss)
        r = batch_metrics(preds.numpy(), labels_all.numpy(), top_k=20)
        now = time.perf_counter()
        eps = ex_log / max(now - t_log, 1e-9)
        lr = float(optimizer.learning_rate)  # the schedule's current value
        last_metrics = {"hit_at_one": r["hit_at_one"], "perr": r["perr"], "gap": r["gap"]}
        echo(f"step {step:>6}  loss {last_loss:8.3f}  {eps:8.1f} ex/s  hit@1 {r['hit_at_one']:.3f}  "
             f"perr {r['perr']:.3f}  gap {r['gap']:.3f}")
        with writer.as_default(step=step):
            tf.summary.scalar("loss", last_loss)
            tf.summary.scalar("learning_rate", lr)
            tf.summary.scalar("examples_per_sec", eps)
            for k, v in last_metrics.items():
                tf.summary.scalar(k, v)
        t_log = now
        ex_log = 0

    try:
        for inputs, labels, weights in ds:
            loss, preds, labels_all = train_step(inputs, labels, weights)
            step += 1
            step_var.assign(step)
            n = int(preds.shape[0])
            examples += n
            ex_log += n
            last = (step, loss, preds, labels_all)
            if step % tcfg.log_every == 0 or step == start_step + 1:
                log(*last)
            if tcfg.export_model_steps and step % tcfg.export_model_steps == 0:
                save(step)
                saved_at = step
            if tcfg.max_steps is not None and step >= tcfg.max_steps:
                break
    except KeyboardInterrupt:
        echo("interrupted: saving a final checkpoint")
        interrupted = True
    except (tf.errors.DataLossError, tf.errors.InvalidArgumentError) as e:
        msg = str(getattr(e, "message", e)).strip().splitlines()[0][:300]
        raise Yt8mError(f"training input ({tcfg.train_data_pattern}): {msg}; check it with 'yt8m-engine inspect', "
                        "or pass --skip-corrupt to drop bad records") from None
    finally:
        if last is not None and logged_at != step:  # the final step's scalars reach TensorBoard too
            log(*last)
        if step != saved_at or manager.latest_checkpoint is None:
            save(step)
        writer.flush()
    elapsed = time.perf_counter() - t_start
    res = {"steps": step, "loss": last_loss, "examples": examples,
           "examples_per_sec": examples / max(elapsed, 1e-9), "train_dir": train_dir,
           "checkpoint": manager.latest_checkpoint, **last_metrics}
    echo(f"trained {step - start_step} steps ({examples} examples, {res['examples_per_sec']:.1f} ex/s); "
         f"checkpoint {manager.latest_checkpoint}")
    if interrupted:  # saved; now stop as interrupted (the CLI exits 130), so `train && export` stops too
        raise KeyboardInterrupt
    return res


class KerasPredictor:
    """A train_dir's latest checkpoint with the same interface as engine.OnnxModel (for eval)."""

    def __init__(self, train_dir: str, checkpoint: str | None = None):
        import dataclasses

        from ..engine import ModelInfo

        self.model, cfg, step = load_model(train_dir, checkpoint)
        self.info = ModelInfo(cfg.model, cfg.frame_features, cfg.feature_spec, np.arange(cfg.num_classes),
                              step, "fp32", dataclasses.asdict(cfg))
        tf = _tf()
        self._fn = tf.function(lambda x: self.model(x, training=False), reduce_retracing=True)

    def predict_frames(self, frames, num_frames):
        return self._fn({"frames": frames, "num_frames": np.asarray(num_frames, np.int32)}).numpy()

    def predict_features(self, features):
        return self._fn({"features": np.asarray(features, np.float32)}).numpy()
