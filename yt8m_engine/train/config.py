"""Training configuration: plain data, saved in full in train_dir (and later in the ONNX metadata).

No TensorFlow here, so eval/export/infer can read a config without importing it (the architecture files
whose Options make up ModelConfig load Keras only when a model is built).
"""
from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field

from .. import format as fmt
from ..errors import Yt8mError
from . import registry

CONFIG_FILE = "config.json"
CHECKPOINT_DIR = "checkpoints"  # TRAIN_DIR/checkpoints: the checkpoints and their state file

MODELS = tuple(registry.MODELS)
FRAME_MODELS = tuple(k for k, v in registry.MODELS.items() if v.frame_level)
VIDEO_MODELS = tuple(k for k in MODELS if k not in FRAME_MODELS)
HEADS = tuple(registry.HEADS)
LOSSES = ("CrossEntropyLoss", "HingeLoss", "SoftmaxLoss")
OPTIMIZERS = {"AdamOptimizer": "adam", "GradientDescentOptimizer": "sgd", "MomentumOptimizer": "momentum",
              "AdagradOptimizer": "adagrad", "RMSPropOptimizer": "rmsprop",
              "adam": "adam", "sgd": "sgd", "momentum": "momentum", "adagrad": "adagrad", "rmsprop": "rmsprop"}


@dataclass
class CommonOptions:
    """What every model has. Each architecture's own options live in its file (an `Options` dataclass in
    train/backbones/ or train/heads/) and join these in ModelConfig (compose, below)."""

    model: str = "FrameLevelLogisticModel"
    feature_names: list = field(default_factory=lambda: ["rgb", "audio"])
    feature_sizes: list = field(default_factory=lambda: [1024, 128])
    frame_features: bool = True
    # each field with a "help" is a model option of `train` and `eval` (cli.config_options); "min": its
    # lower bound, "choices": its valid values (validate checks both)
    num_classes: int = field(default=fmt.NUM_CLASSES, metadata={"help": "", "min": 1})
    max_frames: int = fmt.MAX_FRAMES
    l2_penalty: float = field(default=1e-8, metadata={
        "help": "weights' L2 penalty, l2 * sum(w^2) / 2 as slim.l2_regularizer (the starter's 1e-8)"})
    video_level_classifier_model: str = field(default="MoeModel", metadata={
        "help": f"head of frame-level models: {', '.join(registry.HEADS)}"})

    def options(self, cls):
        """One architecture's Options (cls), with this config's values."""
        return cls(**{f.name: getattr(self, f.name) for f in dataclasses.fields(cls)})

    def parts(self) -> tuple:
        """The modules of this model's backbone and head."""
        return registry.backbone(self.model), registry.head(registry.head_name(self))

    def validate(self):
        spec = registry.MODELS.get(self.model)  # (the registry itself: models registered at run time count)
        if spec is None:
            raise Yt8mError(f"unknown --model {self.model!r}; valid models: {', '.join(registry.MODELS)}")
        if self.video_level_classifier_model not in registry.HEADS:
            raise Yt8mError(f"unknown --video_level_classifier_model {self.video_level_classifier_model!r}; "
                            f"valid: {', '.join(registry.HEADS)}")
        if self.frame_features != spec.frame_level:
            kind = "frame-level" if spec.frame_level else "video-level"
            raise Yt8mError(f"--model {self.model} is {kind}: set --frame_features="
                            f"{'true' if spec.frame_level else 'false'} (and matching --feature_names)")
        if len(self.feature_names) != len(self.feature_sizes):
            raise Yt8mError("--feature_names and --feature_sizes must have the same length")
        _check_bounds(self, CommonOptions)
        for part in self.parts():
            cls = getattr(part, "Options", None)
            if cls is not None:
                _check_bounds(self, cls)
                if hasattr(cls, "validate"):
                    self.options(cls).validate(self)
        return self

    @property
    def feature_spec(self) -> fmt.FeatureSpec:
        return fmt.FeatureSpec(tuple(self.feature_names), tuple(int(s) for s in self.feature_sizes),
                               self.frame_features)


def _check_bounds(cfg, cls) -> None:
    for f in dataclasses.fields(cls):
        v = getattr(cfg, f.name)
        if "min" in f.metadata and v < f.metadata["min"]:
            raise Yt8mError(f"--{f.name} must be at least {f.metadata['min']}")
        if "choices" in f.metadata and v not in f.metadata["choices"]:
            raise Yt8mError(f"--{f.name} must be one of {', '.join(map(str, f.metadata['choices']))} (got {v!r})")


def compose(modules) -> type:
    """ModelConfig: CommonOptions plus the fields of every module's `Options`, flat (the starter's flag
    names: one namespace for the CLI, the saved config and the ONNX metadata). An option two files
    declare alike (same type, default and help) is one option; declared differently, an error."""
    seen = {f.name: ("CommonOptions", f) for f in dataclasses.fields(CommonOptions)}
    owners: dict[str, list] = {}  # option -> the modules that declare it (the CLI's help names their models)
    for module in modules:
        opts = getattr(module, "Options", None)
        for f in dataclasses.fields(opts) if opts is not None else ():
            if f.name in seen:
                where, g = seen[f.name]
                if (g.type, g.default, dict(g.metadata)) != (f.type, f.default, dict(f.metadata)):
                    raise TypeError(f"option {f.name!r} declared differently in {where} and {module.__name__}")
            else:
                seen[f.name] = (module.__name__, f)
            owners.setdefault(f.name, []).append(module.__name__)
    fields = [(name, seen[name][1].type, field(default=seen[name][1].default,
                                               metadata={**seen[name][1].metadata, "parts": tuple(mods)}))
              for name, mods in owners.items()]
    cls = dataclasses.make_dataclass("ModelConfig", fields, bases=(CommonOptions,))
    cls.__module__ = __name__
    cls.__doc__ = "What the network is: enough to rebuild it (and to export it) without any flag."
    return cls


ModelConfig = compose(registry.part_modules())


@dataclass
class TrainConfig:
    """How it is trained."""

    # each field with a "help" is a `train` option (cli.py makes them from here: one default, one place)
    train_data_pattern: str = field(default="", metadata={"help": "training files, e.g. ~/yt8m/2/frame/train*.tfrecord"})
    train_dir: str = field(default="/tmp/yt8m_model/", metadata={"help": "checkpoints, config and TensorBoard logs"})
    segment_labels: bool = field(default=False, metadata={"help": "fine-tune on rated segments (label weights)"})
    batch_size: int = field(default=1024, metadata={
        "help": "examples a step on each replica (GPU or worker), as the starter's a tower"})
    base_learning_rate: float = field(default=0.01, metadata={"help": ""})
    learning_rate_decay: float = field(default=0.95, metadata={"help": ""})
    learning_rate_decay_examples: int = field(default=4_000_000, metadata={"help": ""})
    num_epochs: int = field(default=5, metadata={"help": ""})
    max_steps: int | None = field(default=None, metadata={"help": "", "type": int})
    label_loss: str = field(default="CrossEntropyLoss", metadata={"help": ", ".join(LOSSES)})
    regularization_penalty: float = field(default=1.0, metadata={"help": ""})
    optimizer: str = field(default="AdamOptimizer", metadata={"help": ""})
    clip_gradient_norm: float = field(default=1.0, metadata={
        "help": "clip each gradient to this L2 norm, as the starter (0: no clip)"})
    export_model_steps: int = field(default=1000, metadata={"help": "checkpoint period (steps)"})
    log_every: int = field(default=10, metadata={"help": "progress line period (steps)"})
    seed: int = field(default=0, metadata={"help": ""})
    mixed_precision: bool = field(default=False, metadata={"help": "float16 compute (GPU)"})
    xla: bool | None = field(default=None, metadata={  # None: on where one replica trains (see trainer)
        "help": "compile each training step with XLA (default: on, except across several replicas, for the "
                "LSTM, and for LogisticModel and FrameLevelLogisticModel below --batch_size 1024; frame-level "
                "batches are padded to a multiple of 60 frames)", "type": bool})
    shuffle_buffer: int = 4096   # records at most in the shuffle buffer (which holds 5 batches), and:
    shuffle_mb: int = field(default=512, metadata={
        "help": "memory for the shuffle buffer of serialized records, in MB (it holds 5 batches, as the "
                "starter's queue, and at most 4096 records)"})
    skip_corrupt: bool = field(default=False, metadata={"help": "drop corrupt records (with a warning) instead of stopping"})
    num_gpu: int = field(default=1, metadata={"help": "at most this many GPUs, one replica each (the starter's)"})
    num_readers: int = field(default=8, metadata={"help": "training files read at once"})
    log_device_placement: bool = field(default=False, metadata={"help": "log where TensorFlow places each op"})

    def validate(self) -> "TrainConfig":
        if self.label_loss not in LOSSES:
            raise Yt8mError(f"unknown --label_loss {self.label_loss!r}; valid losses: {', '.join(LOSSES)}")
        if self.optimizer not in OPTIMIZERS:
            raise Yt8mError(f"unknown --optimizer {self.optimizer!r}; valid: {', '.join(OPTIMIZERS)}")
        if self.batch_size < 1:
            raise Yt8mError("--batch_size must be at least 1")
        if self.max_steps is not None and self.max_steps < 1:
            raise Yt8mError("--max_steps must be at least 1")
        if self.num_gpu < 0 or self.num_readers < 1:
            raise Yt8mError("--num_gpu must be at least 0 and --num_readers at least 1")
        return self


def save_config(train_dir: str, model: ModelConfig, train: TrainConfig) -> None:
    from ..io.files import AtomicWriter

    with AtomicWriter(os.path.join(train_dir, CONFIG_FILE), "w") as f:
        json.dump({"model": dataclasses.asdict(model), "train": dataclasses.asdict(train)}, f, indent=2)


def load_config(train_dir: str) -> tuple[ModelConfig, TrainConfig]:
    path = os.path.join(train_dir, CONFIG_FILE)
    try:
        with open(path, encoding="utf-8") as f:
            d = json.load(f)
    except FileNotFoundError:
        raise Yt8mError(f"{path}: not found; is {train_dir!r} a train_dir written by 'yt8m-engine train'?") from None
    except (OSError, ValueError) as e:
        raise Yt8mError(f"{path}: cannot read ({e})") from None
    return model_config_from_dict(d["model"]), TrainConfig(**d["train"])


def model_config_from_dict(d: dict) -> ModelConfig:
    known = {f.name for f in dataclasses.fields(ModelConfig)}
    return ModelConfig(**{k: v for k, v in d.items() if k in known})
