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


def make_optimizer(tcfg: TrainConfig, replicas: int = 1):
    """Keras' optimizer for --mixed_precision (inside its LossScaleOptimizer): clipnorm clips each
    gradient by its own norm after the loss scale is taken out, as optim.clip_by_norm does for the
    fused optimizers."""
    import keras

    # (a fraction of steps: the rate decays with the examples seen, as FusedOptimizer's)
    steps = max(1, tcfg.learning_rate_decay_examples) / (tcfg.batch_size * replicas)
    lr = keras.optimizers.schedules.ExponentialDecay(tcfg.base_learning_rate, steps, tcfg.learning_rate_decay,
                                                     staircase=True)
    kind = OPTIMIZERS[tcfg.optimizer]
    kw = dict(clipnorm=tcfg.clip_gradient_norm) if tcfg.clip_gradient_norm > 0 else {}
    if kind == "adam":
        return keras.optimizers.Adam(lr, **kw)
    if kind == "sgd":
        return keras.optimizers.SGD(lr, **kw)
    if kind == "momentum":
        return keras.optimizers.SGD(lr, momentum=0.9, **kw)
    if kind == "adagrad":
        return keras.optimizers.Adagrad(lr, **kw)
    return keras.optimizers.RMSprop(lr, **kw)


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
    run = _Run(mcfg, tcfg, workers, task_index, echo)
    run.prepare(start_new_model)
    _tf()  # (TensorFlow and Keras loaded quietly)
    import keras

    policy = keras.mixed_precision.global_policy()
    try:
        return _train(run, start_from_dir)
    finally:  # --mixed_precision sets Keras' global policy: not left behind for the caller
        keras.mixed_precision.set_global_policy(policy)


def _train(run: "_Run", start_from_dir: str | None) -> dict:
    mcfg, tcfg = run.mcfg, run.tcfg
    run.build()
    if run.manager.latest_checkpoint:
        run.ckpt.restore(run.manager.latest_checkpoint).assert_existing_objects_matched()
        run.echo(f"resumed from {run.manager.latest_checkpoint} at step {int(run.step_var.numpy())}")
    else:
        if start_from_dir:
            start_from(run.model, mcfg, start_from_dir, run.echo)
        run.save(0)  # the untrained (or the started-from) model: a reference point for eval
    start_step = int(run.step_var.numpy())
    if tcfg.max_steps is not None and start_step >= tcfg.max_steps:
        run.echo(f"already at step {start_step} >= --max_steps {tcfg.max_steps}: nothing to do")
        return {"steps": start_step, "train_dir": tcfg.train_dir, "checkpoint": run.manager.latest_checkpoint}
    return run.loop(start_step)


def _flag(value) -> str:
    """A setting as it is written on the command line (lists comma-separated)."""
    return ",".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)


class _Run:
    """One training run's state: its folders, model, optimizer, checkpoints, input and log."""

    def __init__(self, mcfg: ModelConfig, tcfg: TrainConfig, workers, task_index, echo):
        from .cluster import is_chief, tf_config

        mcfg.validate()
        tcfg.validate()
        self.mcfg, self.tcfg = mcfg, tcfg
        self.cluster = tf_config(workers, task_index)
        self.chief = is_chief(self.cluster)
        if self.cluster is not None and tcfg.max_steps is None:
            raise Yt8mError("multi-worker training needs --max_steps (every worker must run the same number of steps)")
        self.echo = echo if self.chief else (lambda s: None)
        self.files = training_files(tcfg.train_data_pattern)
        self.ckpt_dir = os.path.join(tcfg.train_dir, CHECKPOINT_DIR) if self.chief else os.path.join(
            tcfg.train_dir, "workers", str(self.cluster["task"]["index"]), CHECKPOINT_DIR)

    def prepare(self, start_new_model: bool) -> None:
        """A fresh run clears its folder's checkpoints and events; a resumed one must keep its settings."""
        train_dir, mcfg = self.tcfg.train_dir, self.mcfg
        # a run that stopped before its first step (say, a model that does not fit the data) left only the
        # untrained ckpt-0: nothing to protect, so a corrected command starts over instead of being refused
        trained = [f for f in glob.glob(os.path.join(self.ckpt_dir, "*.index")) if not f.endswith("ckpt-0.index")]
        if start_new_model or not trained:
            shutil.rmtree(self.ckpt_dir, ignore_errors=True)
            for f in glob.glob(os.path.join(train_dir, "events.out.tfevents.*")) if self.chief else []:
                os.remove(f)
        elif os.path.exists(os.path.join(train_dir, CONFIG_FILE)):
            saved, _ = load_config(train_dir)
            if dataclasses.asdict(saved) != dataclasses.asdict(mcfg):
                now = dataclasses.asdict(mcfg)
                diff = [f"--{k} {_flag(v)} there, {_flag(now[k])} here" for k, v in dataclasses.asdict(saved).items()
                        if now[k] != v]
                raise Yt8mError(f"{train_dir} holds a {saved.model} trained with other settings ({'; '.join(diff)}); "
                                "resume with its values, or pass --start_new_model (or another --train_dir)")
        os.makedirs(train_dir, exist_ok=True)
        if self.chief:
            save_config(train_dir, mcfg, self.tcfg)

    def build(self) -> None:
        """Model, optimizer and checkpoint manager under the distribution strategy."""
        tf, tcfg = _tf(), self.tcfg
        import keras

        from .models import build_model, host_input

        if tcfg.mixed_precision:
            keras.mixed_precision.set_global_policy("mixed_float16")
        if tcfg.log_device_placement:
            tf.debugging.set_log_device_placement(True)
        self.strategy = _strategy(tf, self.cluster, tcfg.num_gpu, self.echo)
        with self.strategy.scope():
            self.model = build_model(self.mcfg, seed=tcfg.seed)
            # where the backbone works on the host (the input pipeline pools or samples the frames: models.host_input)
            # the model trained takes what it prepares; `model` is what is checkpointed and exported (the same variables)
            self.host = None if tcfg.segment_labels else host_input(self.model, self.mcfg)
            self.train_model = self.model if self.host is None else self.host.model
            replicas = self.strategy.num_replicas_in_sync
            if tcfg.mixed_precision:  # Keras' loss scaling (its optimizers: several ops a variable)
                self.optimizer = keras.optimizers.LossScaleOptimizer(make_optimizer(tcfg, replicas))
                self.optimizer.build(self.train_model.trainable_variables)
            else:  # one fused op a variable, as TF 1's optimizers (see optim.py)
                from .optim import FusedOptimizer

                self.optimizer = FusedOptimizer(tcfg, self.train_model.trainable_variables, replicas=replicas)
                # (where it can: the weights' L2 penalty then leaves the loss for the optimizer's fused update)
                self.optimizer.take_l2(self.train_model.trainable_variables, tcfg.regularization_penalty, self.echo)
            self.step_var = tf.Variable(0, dtype=tf.int64, name="step")
        self.ckpt = tf.train.Checkpoint(model=self.model, optimizer=self.optimizer, step=self.step_var)
        self.manager = tf.train.CheckpointManager(self.ckpt, self.ckpt_dir, max_to_keep=5)

    def save(self, number: int) -> None:
        """A checkpoint, and (chief) its ONNX exports beside it for eval, which then needs no TensorFlow."""
        if number == 0:  # outside the manager's rotation: the untrained reference is kept for good
            path = self.ckpt.write(os.path.join(self.ckpt_dir, "ckpt-0"))
        else:
            path = self.manager.save(checkpoint_number=number)
        if self.chief:
            from ..export.onnx_export import export_beside

            try:
                export_beside(self.model, self.mcfg, number, self.tcfg.train_dir, path)
            except Exception as e:  # noqa: BLE001 - eval exports it itself then; training goes on
                self.echo(f"warning: ONNX export of {path} for eval failed ({str(e).splitlines()[0][:200]})")

    def dataset(self, start_step: int, xla: bool):
        """The distributed training input; a resumed run reshuffles with a step-dependent seed instead of
        replaying the first batches. The shuffle buffer holds 5 batches of serialized records (the
        capacity of the starter's shuffle_batch_join queue, which held them as float frames padded to 300),
        at most --shuffle_buffer records and --shuffle_mb (a real frame-level record is ~270 kB: 4096 of
        them 1.1 GB). At batch 64 a buffer of 4096 synthetic frame-level records was 280 MB, which put
        FrameLevelLogistic's peak RSS 300 MB over the starter's."""
        from ..io.framing import mean_record_bytes
        from .data import make_dataset

        tcfg = self.tcfg
        self.input_errors = []  # what the input's parse found wrong (the error TensorFlow raises says less)
        batch = tcfg.batch_size * self.strategy.num_replicas_in_sync  # --batch_size a replica, as the starter's a tower
        mean = mean_record_bytes(self.files[0])
        buffer = min(tcfg.shuffle_buffer, 5 * batch)
        buffer = buffer if mean is None else int(max(1, min(buffer, tcfg.shuffle_mb * 2 ** 20 // mean)))
        ds = make_dataset(self.files, self.mcfg, batch, segments=tcfg.segment_labels, training=True,
                          num_epochs=tcfg.num_epochs, seed=tcfg.seed + start_step, shuffle_buffer=buffer,
                          segment_buffer=tcfg.shuffle_buffer, skip_corrupt=tcfg.skip_corrupt,
                          frame_multiple=60 if xla and not tcfg.segment_labels else 1, readers=tcfg.num_readers,
                          host=self.host,
                          errors=self.input_errors)
        return self.strategy.experimental_distribute_dataset(ds)

    def step_function(self, xla: bool):
        """One training step under the strategy: (mean loss, predictions, labels) of the whole batch."""
        tf, tcfg, model, optimizer, strategy = _tf(), self.tcfg, self.train_model, self.optimizer, self.strategy
        from .losses import LOSSES

        loss_fn = LOSSES[tcfg.label_loss]
        backbone, _ = self.mcfg.parts()
        if hasattr(backbone, "train_setup"):  # (the registry's optional hook: LstmModel's groups)
            backbone.train_setup(model, tcfg.batch_size, xla)

        def grad_fn(inputs, labels, weights):
            with tf.GradientTape() as tape:
                preds = model(inputs, training=True)
                loss = loss_fn(preds, labels, weights)
                # (--regularization_penalty 0: no L2 term at all, not its gradient's passes times zero)
                losses = model.losses if tcfg.regularization_penalty else []
                if getattr(optimizer, "l2_in_update", None) is not None:  # the optimizer adds the weights' L2 gradient:
                    # only what layers add_loss'ed stays (Keras lists those first, then the weights' penalties)
                    losses = losses[:len(losses) - sum(v.regularizer is not None for v in model.trainable_variables)]
                reg = tf.add_n(losses) if losses else 0.0
                # gradients are summed over replicas: scale so that they average
                total = (loss + tcfg.regularization_penalty * reg) / strategy.num_replicas_in_sync
                scaled = optimizer.scale_loss(total) if hasattr(optimizer, "scale_loss") else total
            return loss, preds, tape.gradient(scaled, model.trainable_variables)

        # XLA compiles the model, the loss and the gradients; the clipping and the optimizer's update run
        # as TensorFlow's own kernels, on every core (XLA's CPU element-wise loops over the weights were
        # the slower part: batch 64, 2 cores, Logistic 57 -> 33 ms a step, MoE 265 -> 181 ms)
        grads_of = tf.function(grad_fn, jit_compile=True, reduce_retracing=True) if xla else grad_fn

        def step_fn(inputs, labels, weights):
            loss, preds, grads = grads_of(inputs, labels, weights)
            # (the optimizer clips them: FusedOptimizer, or Keras' clipnorm under --mixed_precision)
            optimizer.apply_gradients(zip(grads, model.trainable_variables))
            return loss, preds

        @tf.function(reduce_retracing=True)
        def train_step(inputs, labels, weights):
            loss, preds = strategy.run(step_fn, args=(inputs, labels, weights))
            loss = strategy.reduce(tf.distribute.ReduceOp.MEAN, loss, axis=None)
            self.step_var.assign_add(1)  # (here, not eagerly after the step: ~0.8 ms a step on 2 cores)
            if strategy.num_replicas_in_sync > 1:  # (uint8 labels: collectives gather floats)
                labels = strategy.run(lambda y: tf.cast(y, tf.float32), args=(labels,))
            return loss, strategy.gather(preds, axis=0), strategy.gather(labels, axis=0)

        return train_step

    def loop(self, start_step: int) -> dict:
        """Steps until --max_steps or the end of the input, logging, checkpointing; a final checkpoint
        on the way out (also on Ctrl-C, then re-raised so the CLI exits 130)."""
        from . import registry

        tf, tcfg = _tf(), self.tcfg
        # XLA by default on one replica (no collectives to compile) for the models the registry marks, from their
        # batch size up; frame-level batches are then padded to a multiple of 60 frames, so at most 5 frame counts
        # compile (measured on 2 CPU cores, batch 64: MoE 1.3x, DBoF 1.4x the plain step's examples/s)
        spec = registry.MODELS[self.mcfg.model]
        default = self.strategy.num_replicas_in_sync == 1 and registry.xla_by_default(self.mcfg.model, tcfg.batch_size)
        xla = tcfg.xla if tcfg.xla is not None else default
        if xla and not spec.ynn:
            from .quiet_tf import xla_products_without_ynnpack

            xla_products_without_ynnpack()
        ds, train_step = self.dataset(start_step, xla), self.step_function(xla)
        self.log = _Log(self, start_step)
        step, saved_at, examples, last, interrupted = start_step, start_step, 0, None, False
        t_start = time.perf_counter()
        batches = iter(ds)
        try:
            for inputs, labels, weights in batches:
                loss, preds, labels_all = train_step(inputs, labels, weights)
                step += 1
                n = int(preds.shape[0])
                examples += n
                self.log.examples += n
                last = (step, loss, preds, labels_all)
                if step % tcfg.log_every == 0 or step == start_step + 1:
                    self.log(*last)
                if tcfg.export_model_steps and step % tcfg.export_model_steps == 0:
                    self.save(step)
                    saved_at = step
                if tcfg.max_steps is not None and step >= tcfg.max_steps:
                    break
        except KeyboardInterrupt:
            self.echo("interrupted: saving a final checkpoint")
            interrupted = True
        except (tf.errors.DataLossError, tf.errors.InvalidArgumentError) as e:
            msg = (self.input_errors or [str(getattr(e, "message", e)).strip().splitlines()[0]])[0][:300]
            raise Yt8mError(f"training input ({tcfg.train_data_pattern}): {msg}; check it with 'yt8m-engine "
                            "inspect', or pass --skip-corrupt to drop bad records") from None
        finally:
            # the input's iterator deleted here, not at interpreter exit, where its Python parse (data.py) in
            # flight could wait for the interpreter's lock forever
            del batches
            step = int(self.step_var.numpy())  # (an interrupt between the update and `step += 1`: the update counts)
            if last is not None and self.log.logged_at != step:  # the final step's scalars reach TensorBoard too
                self.log(*last)
            if step != saved_at or self.manager.latest_checkpoint is None:
                self.save(step)
            self.log.writer.flush()
        elapsed = time.perf_counter() - t_start
        res = {"steps": step, "loss": self.log.loss, "examples": examples,
               "examples_per_sec": examples / max(elapsed, 1e-9), "train_dir": tcfg.train_dir,
               "checkpoint": self.manager.latest_checkpoint, **self.log.metrics}
        self.echo(f"trained {step - start_step} steps ({examples} examples, {res['examples_per_sec']:.1f} ex/s); "
                  f"checkpoint {self.manager.latest_checkpoint}")
        if interrupted:  # saved; now stop as interrupted (the CLI exits 130), so `train && export` stops too
            raise KeyboardInterrupt
        return res


class _Log:
    """The progress line and TensorBoard scalars of a logged step (its batch's metrics)."""

    NAMES = ("loss", "examples_per_sec", "hit_at_one", "perr", "gap")  # the scalars, in `write`'s order

    def __init__(self, run: _Run, step: int):
        tf = _tf()
        folder = run.tcfg.train_dir if run.chief else os.path.join(run.ckpt_dir, "..", "logs")
        self.writer = tf.summary.create_file_writer(folder)
        self.run, self.logged_at, self.examples = run, step, 0
        self.loss, self.metrics = float("nan"), {}
        self.t = time.perf_counter()

        @tf.function
        def write(step, values):  # one call for the scalars (eagerly, ~0.7 ms each on 2 cores)
            with self.writer.as_default(step=step):
                tf.summary.scalar("learning_rate", run.optimizer.learning_rate)  # the schedule's current rate
                for i, name in enumerate(self.NAMES):
                    tf.summary.scalar(name, values[i])

        self.write = write

    def __call__(self, step, loss, preds, labels_all) -> None:
        tf = _tf()
        self.logged_at = step
        self.loss = float(loss)
        r = batch_metrics(preds.numpy(), labels_all.numpy(), top_k=20)
        now = time.perf_counter()
        eps = self.examples / max(now - self.t, 1e-9)
        self.metrics = {k: r[k] for k in self.NAMES[2:]}
        self.run.echo(f"step {step:>6}  loss {self.loss:8.3f}  {eps:8.1f} ex/s  hit@1 {r['hit_at_one']:.3f}  "
                      f"perr {r['perr']:.3f}  gap {r['gap']:.3f}")
        values = [self.loss, eps, *self.metrics.values()]
        self.write(tf.constant(step, tf.int64), tf.constant(values, tf.float32))
        self.t, self.examples = now, 0


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
