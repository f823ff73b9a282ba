"""One home per architecture (issue 13): a backbone written in one file (its options, Keras layer and
ONNX lowering) plus one registry line trains, exports, infers and matches its Keras outputs; one without
a lowering fails `export` with one clear error; each built-in architecture's options come from its file
into ModelConfig, the CLI, validation, the saved config and its Keras layer."""
import dataclasses
import json
import sys
import types

import numpy as np
import pytest

from yt8m_engine import Yt8mError
from yt8m_engine.train import registry

pytest.importorskip("tensorflow")
ort = pytest.importorskip("onnxruntime")

MAXPOOL = '''
"""A backbone a user adds: the max over the valid, normalised frames, each scaled by an option."""
from dataclasses import dataclass, field


@dataclass
class Options:
    maxpool_scale: float = field(default=1.0, metadata={"help": "scale of the pooled frames", "min": 0.0})


def build(cfg, inputs):
    import keras
    from keras import layers, ops

    from yt8m_engine.train.layers import FrameInput

    class MaxFrame(layers.Layer):
        def __init__(self, scale, **kw):
            super().__init__(**kw)
            self.scale = scale

        def call(self, x, mask):
            return self.scale * ops.max(x * mask - (1.0 - mask) * 1e4, axis=1)

    x, mask = FrameInput(name="frame_input")(inputs["frames"], inputs["num_frames"])
    return MaxFrame(cfg.options(Options).maxpool_scale, name="max_frame")(x, mask)


def lower(g, model, cfg, inp):
    import numpy as np

    x = inp.normalized(g)
    pad = g.op("Mul", [g.op("Sub", [g.const(np.float32(1)), inp.mask]), g.const(np.float32(1e4))])
    pooled = g.op("ReduceMax", [g.op("Sub", [x, pad])], axes=[1], keepdims=0)
    return g.op("Mul", [pooled, g.const(np.float32(cfg.options(Options).maxpool_scale))])
'''


@pytest.fixture
def added_model(monkeypatch, tmp_path):
    """MaxPoolModel: backbones/maxpool.py (written at run time) + its registry line. ModelConfig is composed
    again as importing config.py composes it (with the registry line in registry.py, that is all)."""
    from yt8m_engine.train import config

    mod = types.ModuleType("yt8m_engine.train.backbones.maxpool")
    monkeypatch.setitem(sys.modules, mod.__name__, mod)
    exec(compile(MAXPOOL, "maxpool.py", "exec"), mod.__dict__)
    monkeypatch.setitem(registry.MODELS, "MaxPoolModel", registry.ModelSpec("maxpool", True, None, "max over frames"))
    monkeypatch.setattr(config, "ModelConfig", config.compose(registry.part_modules()))
    return "MaxPoolModel"


def test_a_model_added_in_one_file_trains_exports_and_infers(added_model, synth_dir, tmp_path):
    from yt8m_engine.engine import OnnxModel
    from yt8m_engine.export.onnx_export import build_onnx, export
    from yt8m_engine.infer import infer
    from yt8m_engine.train.config import ModelConfig, TrainConfig
    from yt8m_engine.train.models import build_model
    from yt8m_engine.train.trainer import train

    cfg = ModelConfig(model=added_model, video_level_classifier_model="MoeModel", maxpool_scale=0.5)
    with pytest.raises(Yt8mError, match="--maxpool_scale must be at least 0"):
        ModelConfig(model=added_model, maxpool_scale=-1.0).validate()
    r = train(cfg, TrainConfig(train_data_pattern=f"{synth_dir}/2/frame/train*", train_dir=str(tmp_path / "t"),
                               batch_size=16, max_steps=3), echo=lambda s: None)
    assert r["steps"] == 3
    out = str(tmp_path / "m.onnx")
    export(str(tmp_path / "t"), out)
    info = OnnxModel(out).info
    assert info.model == added_model and info.config["maxpool_scale"] == 0.5      # its option, saved and exported
    st = infer(out, f"{synth_dir}/3/frame/test*", str(tmp_path / "s.csv"), segment_labels=True, progress=False,
               segment_max_pred=20)
    assert st.segments > 0
    # parity with Keras, fp32 and fp16, at several frame counts
    km = build_model(cfg, seed=0)
    rng = np.random.default_rng(0)
    for fp16, tol in ((False, 1e-5), (True, 2e-2)):
        sess = ort.InferenceSession(build_onnx(km, cfg, fp16=fp16).SerializeToString(),
                                    providers=["CPUExecutionProvider"])
        for frames in (1, 5, 40):
            fr = rng.integers(0, 256, (3, frames, 1152), dtype=np.uint8)
            nf = np.array([frames, max(1, frames // 2), 1], np.int32)
            ref = np.asarray(km({"frames": fr, "num_frames": nf}, training=False))
            got = sess.run(None, {"frames": fr, "num_frames": nf})[0]
            assert np.abs(ref - got).max() <= tol, (fp16, frames)


def test_a_model_without_a_lowering_fails_export_clearly(added_model, monkeypatch):
    from yt8m_engine.export.onnx_export import build_onnx
    from yt8m_engine.train.config import ModelConfig
    from yt8m_engine.train.models import build_model

    monkeypatch.delattr(sys.modules["yt8m_engine.train.backbones.maxpool"], "lower")
    cfg = ModelConfig(model=added_model, video_level_classifier_model="LogisticModel")
    with pytest.raises(Yt8mError, match="MaxPoolModel .* has no ONNX lowering"):
        build_onnx(build_model(cfg), cfg)


def test_cli_lists_the_registered_models():
    from click.testing import CliRunner

    from yt8m_engine.cli import cli

    text = CliRunner().invoke(cli, ["train", "--help"]).output
    for name in registry.MODELS:
        assert name in text


def test_each_architecture_file_holds_its_options():
    """The Options of every registered backbone and head file are ModelConfig's fields, `train` and `eval`
    options, checked only for the model that uses them, saved in the config, and what its Keras layer
    keeps (not the whole config); files import no Keras until a model is built (the subprocess test of
    test_hardening checks the CLI's imports)."""
    from click.testing import CliRunner

    from yt8m_engine.cli import cli
    from yt8m_engine.train import config

    fields = {f.name for f in dataclasses.fields(config.ModelConfig)}
    common = {f.name for f in dataclasses.fields(config.CommonOptions)}
    helps = {c: CliRunner().invoke(cli, [c, "--help"], terminal_width=200).output for c in ("train", "eval")}
    owned = []
    for module in (m for m in registry.part_modules() if hasattr(m, "Options")):
        for f in dataclasses.fields(module.Options):
            owned.append(f.name)
            assert f.name in fields and f.name not in common
            for text in helps.values():
                assert "--" + f.name.replace("_", "-") in text, (module.__name__, f.name)
    assert {"dbof_cluster_size", "lstm_cells", "netvlad_hidden_size", "nextvlad_groups", "moe_num_mixtures",
            "gating"} <= set(owned)
    flat = " ".join(helps["train"].split())  # the help names the models that read each option
    assert "--dbof-cluster-size, --dbof_cluster_size INTEGER [DbofModel]" in flat
    assert "--gating BOOLEAN [NetVladModel, NeXtVladModel] context gating" in flat
    assert "--moe-num-mixtures, --moe_num_mixtures INTEGER [MoeModel, GatedMoeModel]" in flat
    assert fields == set(owned) | common

    config.ModelConfig(dbof_cluster_size=0, nextvlad_groups=7).validate()  # FrameLevelLogistic: not its parts
    with pytest.raises(Yt8mError, match="--dbof_cluster_size must be at least 1"):
        config.ModelConfig(model="DbofModel", dbof_cluster_size=0).validate()
    with pytest.raises(Yt8mError, match="--moe_num_mixtures must be at least 1"):
        config.ModelConfig(model="DbofModel", moe_num_mixtures=0).validate()
    with pytest.raises(Yt8mError, match="--dbof_pooling_method must be one of max, average"):
        config.ModelConfig(model="DbofModel", dbof_pooling_method="min").validate()


def test_a_layer_keeps_its_own_options_and_the_config_round_trips(tmp_path):
    from yt8m_engine.train import config
    from yt8m_engine.train.backbones import dbof, nextvlad
    from yt8m_engine.train.models import build_model

    for name, module, layer in (("DbofModel", dbof, "dbof"), ("NeXtVladModel", nextvlad, "nextvlad")):
        cfg = config.ModelConfig(model=name, num_classes=10, dbof_cluster_size=32, dbof_hidden_size=16,
                                 nextvlad_cluster_size=4, nextvlad_hidden_size=16, moe_num_mixtures=3)
        got = build_model(cfg).get_layer(layer).get_config()["options"]
        assert got == dataclasses.asdict(cfg.options(module.Options))
        assert "lstm_cells" not in got and "moe_num_mixtures" not in got
        config.save_config(str(tmp_path), cfg, config.TrainConfig())
        assert config.load_config(str(tmp_path))[0] == cfg
        with open(tmp_path / config.CONFIG_FILE) as f:
            assert json.load(f)["model"]["moe_num_mixtures"] == 3


def test_options_declared_alike_are_one_and_differently_an_error():
    from yt8m_engine.train import config

    def part(name, **defaults):
        mod = types.ModuleType(name)
        mod.Options = dataclasses.make_dataclass(
            "Options", [(k, type(v), dataclasses.field(default=v, metadata={"help": ""})) for k, v in defaults.items()])
        return mod

    cls = config.compose([part("a", shared=1, only_a=2.0), part("b", shared=1, only_b="x")])
    assert cls().shared == 1 and cls(only_b="y").only_b == "y" and cls().model == "FrameLevelLogisticModel"
    with pytest.raises(TypeError, match="'shared' declared differently in a and b"):
        config.compose([part("a", shared=1), part("b", shared=2)])
