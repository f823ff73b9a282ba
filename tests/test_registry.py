"""One home per architecture (issue 13): a backbone written in one file (Keras layer + ONNX lowering)
plus one registry line trains, exports, infers and matches its Keras outputs; one without a lowering
fails `export` with one clear error."""
import sys
import types

import numpy as np
import pytest

from yt8m_engine import Yt8mError
from yt8m_engine.train import registry

pytest.importorskip("tensorflow")
ort = pytest.importorskip("onnxruntime")

MAXPOOL = '''
"""A backbone a user adds: the max over the valid, normalised frames."""
import keras
from keras import layers, ops

from yt8m_engine.train.layers import FrameInput


@keras.saving.register_keras_serializable("test")
class MaxFrame(layers.Layer):
    def call(self, x, mask):
        return ops.max(x * mask - (1.0 - mask) * 1e4, axis=1)


def build(cfg, inputs):
    x, mask = FrameInput(name="frame_input")(inputs["frames"], inputs["num_frames"])
    return MaxFrame(name="max_frame")(x, mask)


def lower(g, model, cfg, inp):
    import numpy as np

    x = inp.normalized(g)
    pad = g.op("Mul", [g.op("Sub", [g.const(np.float32(1)), inp.mask]), g.const(np.float32(1e4))])
    return g.op("ReduceMax", [g.op("Sub", [x, pad])], axes=[1], keepdims=0)
'''


@pytest.fixture
def added_model(monkeypatch, tmp_path):
    """MaxPoolModel: backbones/maxpool.py (written at run time) + its registry line."""
    mod = types.ModuleType("yt8m_engine.train.backbones.maxpool")
    exec(compile(MAXPOOL, "maxpool.py", "exec"), mod.__dict__)
    monkeypatch.setitem(sys.modules, mod.__name__, mod)
    monkeypatch.setitem(registry.MODELS, "MaxPoolModel", registry.ModelSpec("maxpool", True, None, "max over frames"))
    return "MaxPoolModel"


def test_a_model_added_in_one_file_trains_exports_and_infers(added_model, synth_dir, tmp_path):
    from yt8m_engine.engine import OnnxModel
    from yt8m_engine.export.onnx_export import build_onnx, export
    from yt8m_engine.infer import infer
    from yt8m_engine.train.config import ModelConfig, TrainConfig
    from yt8m_engine.train.models import build_model
    from yt8m_engine.train.trainer import train

    cfg = ModelConfig(model=added_model, video_level_classifier_model="MoeModel")
    r = train(cfg, TrainConfig(train_data_pattern=f"{synth_dir}/2/frame/train*", train_dir=str(tmp_path / "t"),
                               batch_size=16, max_steps=3), echo=lambda s: None)
    assert r["steps"] == 3
    out = str(tmp_path / "m.onnx")
    export(str(tmp_path / "t"), out)
    assert OnnxModel(out).info.model == added_model
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
    cfg = ModelConfig(model=added_model)
    with pytest.raises(Yt8mError, match="MaxPoolModel .* has no ONNX lowering"):
        build_onnx(build_model(cfg), cfg)


def test_cli_lists_the_registered_models():
    from click.testing import CliRunner

    from yt8m_engine.cli import cli

    text = CliRunner().invoke(cli, ["train", "--help"]).output
    for name in registry.MODELS:
        assert name in text
