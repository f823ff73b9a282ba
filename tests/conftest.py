import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def synth_dir(tmp_path_factory):
    """A small synthetic dataset in the real layout, shared by the tests that only read it."""
    from yt8m_engine.io.synth import synth

    out = tmp_path_factory.mktemp("synth")
    synth(str(out), videos=48, shards=2, seed=3)
    return str(out)


@pytest.fixture(scope="session")
def learn_dir(tmp_path_factory):
    """A larger synthetic dataset on which models must learn (shared by training/eval/infer tests)."""
    from yt8m_engine.io.synth import synth

    out = tmp_path_factory.mktemp("learn")
    synth(str(out), videos=300, shards=2, seed=11, test_videos=60)
    return str(out)


@pytest.fixture(scope="session")
def trained_flm(learn_dir, tmp_path_factory):
    """A FrameLevelLogisticModel trained briefly on learn_dir: (train_dir, onnx, untrained onnx)."""
    from yt8m_engine.export.onnx_export import export
    from yt8m_engine.train.config import ModelConfig, TrainConfig
    from yt8m_engine.train.trainer import train

    root = tmp_path_factory.mktemp("flm")
    train_dir = str(root / "train")
    train(ModelConfig(model="FrameLevelLogisticModel"),
          TrainConfig(train_data_pattern=f"{learn_dir}/2/frame/train*", train_dir=train_dir, batch_size=64,
                      num_epochs=12, base_learning_rate=0.05, log_every=1000, seed=1),
          start_new_model=True, echo=lambda s: None)
    onnx_path = str(root / "model.onnx")
    export(train_dir, onnx_path, classes="segment")
    untrained = str(root / "untrained.onnx")
    export(train_dir, untrained, classes="segment", checkpoint=f"{train_dir}/checkpoints/ckpt-0")
    return train_dir, onnx_path, untrained
