"""The starter's optimizers (tf.train.AdamOptimizer and friends) as TensorFlow's fused training ops, and
its gradient clip.

One kernel updates a variable and its slots in one pass (ResourceApplyAdam, ...), as TF 1's optimizers
did; Keras 3's optimizers run several element-wise ops a variable, each a pass over the weights:
measured on video-level MoE (22 M weights, batch 64, 2-core CPU) Keras Adam trained at 131 ex/s,
plain SGD at 226 ex/s. The learning rate follows the starter's staircase exponential decay.

Adam goes further where our own op builds (ops.clipped_adam, on float32 weights): the trainer leaves the
weights' L2 penalty out of the loss and the optimizer adds its gradient, clips and updates in one op a
variable, two passes over the weights where TensorFlow's ops take fifteen (take_l2).
"""
from __future__ import annotations

from .quiet_tf import tf

from .config import OPTIMIZERS, TrainConfig


def clip_by_norm(grads: list, clip_norm: float) -> list:
    """The starter's utils.clip_gradient_norms: each gradient clipped by its own L2 norm (tf.clip_by_norm;
    sparse gradients: their values), with fewer passes: the norm comes from L2Loss, one read (TensorFlow's
    reduce_sum(g * g) writes a gradient-sized square first: video-level MoE's peak RSS at batch 64 was
    1363-1404 MB that way, 1320-1323 MB this way), and a gradient within the norm passes as it is
    (TensorFlow rewrites it as (g * clip) / clip). When it scales, g * (clip / norm) may differ from
    TensorFlow's in the last bit. An infinite or NaN norm scales, as TensorFlow's."""
    out = []
    for g in grads:
        if isinstance(g, tf.IndexedSlices):
            g = tf.IndexedSlices(tf.clip_by_norm(g.values, clip_norm), g.indices, g.dense_shape)
        elif g is not None:
            c = tf.constant(clip_norm, g.dtype)
            norm = tf.sqrt(2 * tf.nn.l2_loss(g))
            g = tf.cond(norm <= c, lambda g=g: tf.identity(g), lambda g=g, c=c, norm=norm: g * (c / norm))
        out.append(g)
    return out


_ADAM = {"beta1": 0.9, "beta2": 0.999, "epsilon": 1e-8}  # tf.train.AdamOptimizer's defaults, as the starter's
_SLOTS = {"adam": ("m", "v"), "sgd": (), "momentum": ("momentum",), "adagrad": ("accumulator",),
          "rmsprop": ("ms", "mom")}


class FusedOptimizer(tf.Module):
    """apply_gradients with one fused op a variable; checkpointed with its slots and step count."""

    def __init__(self, tcfg: TrainConfig, variables, name: str = "optimizer", replicas: int = 1):
        super().__init__(name=name)
        self.kind = OPTIMIZERS[tcfg.optimizer]
        self.base_lr = float(tcfg.base_learning_rate)
        self.decay = float(tcfg.learning_rate_decay)
        # examples a step: --batch_size on each replica (the starter's global_step * batch_size * num_towers)
        self.batch_size = int(tcfg.batch_size) * int(replicas)
        self.decay_examples = max(1, int(tcfg.learning_rate_decay_examples))
        self.clip_norm = float(tcfg.clip_gradient_norm)
        self.iterations = tf.Variable(0, dtype=tf.int64, trainable=False, name="iterations",
                                      aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)
        init = {"accumulator": 0.1, "ms": 1.0}  # tf.train's initial values; the other slots start at 0
        self.l2_in_update = None  # per variable, the L2 gradient's coefficient where the update adds it (take_l2)
        self.slots = {s: [tf.Variable(tf.fill(v.shape, tf.constant(init.get(s, 0.0), v.dtype)), trainable=False,
                                      name=f"{s}_{i}") for i, v in enumerate(variables)]
                      for s in _SLOTS[self.kind]}

    def take_l2(self, variables, penalty: float, echo=print) -> bool:
        """Whether this optimizer takes the weights' L2 penalty over (then the loss leaves it out): Adam on
        float32 weights whose regularizers are all the starter's l2 (layers.L2Loss) or none, on the CPU
        (no GPU visible), where the fused op builds. The penalty's gradient, --regularization_penalty x l2
        x w, is then added in the update."""
        from .layers import L2Loss

        if tf.config.list_logical_devices("GPU"):  # (a CPU kernel only: the weights live on the GPU there)
            return False
        regs = [getattr(v, "regularizer", None) for v in variables]
        if self.kind != "adam" or any(r is not None and type(r) is not L2Loss for r in regs) or any(
                v.dtype != tf.float32 for v in variables):
            return False
        from .ops import clipped_adam

        self._op = clipped_adam(echo)
        if self._op is None:
            return False
        # (a tuple: a list would be tracked into the checkpoint)
        self.l2_in_update = tuple(float(penalty) * r.l2 if r is not None else 0.0 for r in regs)
        return True

    @property
    def learning_rate(self):
        """The current rate: base * decay ^ floor(examples seen / decay examples), as the starter's
        tf.train.exponential_decay(staircase) over global_step * batch_size (in integers: exact at the step
        where the examples seen pass a multiple, 3907 at batch 1024, not 4 000 000 // 1024 = 3906)."""
        k = tf.math.floordiv(self.iterations * self.batch_size, self.decay_examples)
        return self.base_lr * tf.pow(self.decay, tf.cast(k, tf.float32))

    def apply_gradients(self, grads_and_vars) -> None:
        """Called in the training step (in replica context under a distribution strategy: the gradients,
        each replica's share of the mean, are summed across replicas first, so every replica applies
        the same update to its copy of the variables); then clipped by --clip_gradient_norm, as the
        starter clips its towers' merged gradients."""
        grads_and_vars = list(grads_and_vars)
        ctx = tf.distribute.get_replica_context()
        if ctx is not None and ctx.num_replicas_in_sync > 1:
            summed = ctx.all_reduce(tf.distribute.ReduceOp.SUM, [g for g, _ in grads_and_vars])
            grads_and_vars = list(zip(summed, [v for _, v in grads_and_vars]))
        fused = self.l2_in_update is not None  # (our op: the penalty's gradient, the clip and Adam in two passes)
        if self.clip_norm > 0 and not fused:
            grads_and_vars = list(zip(clip_by_norm([g for g, _ in grads_and_vars], self.clip_norm),
                                      [v for _, v in grads_and_vars]))
        lr = self.learning_rate
        t = tf.cast(self.iterations + 1, tf.float32)
        if self.kind == "adam":
            powers = tf.pow(_ADAM["beta1"], t), tf.pow(_ADAM["beta2"], t)
        for i, (g, v) in enumerate(grads_and_vars):
            var = v.value if hasattr(v, "value") and hasattr(v.value, "handle") else v  # a Keras 3 variable
            lr_v = tf.cast(lr, var.dtype)
            if fused:
                self._op.yt8m_clipped_adam(var.handle, self.slots["m"][i].handle, self.slots["v"][i].handle,
                                           tf.convert_to_tensor(g), lr_v, *powers, self.l2_in_update[i],
                                           self.clip_norm, **_ADAM)
            elif self.kind == "adam":
                tf.raw_ops.ResourceApplyAdam(var=var.handle, m=self.slots["m"][i].handle, v=self.slots["v"][i].handle,
                                             beta1_power=powers[0], beta2_power=powers[1], lr=lr_v, grad=g, **_ADAM)
            elif self.kind == "sgd":
                tf.raw_ops.ResourceApplyGradientDescent(var=var.handle, alpha=lr_v, delta=g)
            elif self.kind == "momentum":
                tf.raw_ops.ResourceApplyMomentum(var=var.handle, accum=self.slots["momentum"][i].handle, lr=lr_v,
                                                 grad=g, momentum=tf.constant(0.9, var.dtype))
            elif self.kind == "adagrad":
                tf.raw_ops.ResourceApplyAdagrad(var=var.handle, accum=self.slots["accumulator"][i].handle, lr=lr_v,
                                                grad=g)
            else:
                tf.raw_ops.ResourceApplyRMSProp(var=var.handle, ms=self.slots["ms"][i].handle,
                                                mom=self.slots["mom"][i].handle, lr=lr_v,
                                                rho=tf.constant(0.9, var.dtype), momentum=tf.constant(0.0, var.dtype),
                                                epsilon=tf.constant(1e-10, var.dtype), grad=g)
        self.iterations.assign_add(1)
