"""Scale-out: Ray Data inference and two-worker training, inside a loopback-only network namespace;
object-storage paths through a local fsspec filesystem."""
import filecmp
import glob
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from yt8m_engine.infer import infer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
pytestmark = pytest.mark.slow


def netns_ok() -> bool:
    """Ray binds every interface: its tests run only where a loopback-only namespace can be made."""
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        return False
    r = subprocess.run(["unshare", "-n", "sh", "-c", "ip link set lo up"], capture_output=True)
    return r.returncode == 0


needs_netns = pytest.mark.skipif(not netns_ok(), reason="needs root and 'unshare -n' (loopback-only network "
                                                        "namespace) so that no traffic leaves this machine")


def in_netns(script: str, timeout: int):
    return subprocess.run(["unshare", "-n", "bash", "-c", "ip link set lo up\n" + script], capture_output=True,
                          text=True, timeout=timeout, cwd=ROOT)


@needs_netns
def test_ray_engine_writes_the_single_process_bytes(trained_flm, learn_dir, tmp_path):
    pytest.importorskip("ray")
    _, onnx_path, _ = trained_flm
    pattern = f"{learn_dir}/3/frame/*"
    infer(onnx_path, pattern, str(tmp_path / "single.csv"), segment_labels=True, progress=False,
          segment_max_pred=500)
    token = os.path.expanduser("~/.ray/auth_token")
    had_token = os.path.exists(token)
    r = in_netns(f"exec {sys.executable} -m yt8m_engine.cli infer --model {onnx_path} "
                 f"--input_data_pattern '{pattern}' --segment_labels true --segment_max_pred 500 "
                 f"--output_file {tmp_path / 'ray.csv'} --engine ray", timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "ray:" in r.stdout
    assert filecmp.cmp(tmp_path / "single.csv", tmp_path / "ray.csv", shallow=False)
    assert had_token or not os.path.exists(token)  # nothing of Ray's left in the user's home


@needs_netns
def test_two_workers_train_to_the_same_weights(synth_dir, tmp_path):
    from yt8m_engine.train.trainer import load_model

    cmd = (f"{sys.executable} -m yt8m_engine.cli train --train_data_pattern '{synth_dir}/2/frame/train*' "
           f"--train_dir {tmp_path} --model FrameLevelLogisticModel --batch_size 8 --max_steps 4 "
           f"--workers 127.0.0.1:23456,127.0.0.1:23457")
    r = in_netns(f"{cmd} --task_index 0 > {tmp_path}/w0.log 2>&1 & p0=$!\n"
                 f"{cmd} --task_index 1 > {tmp_path}/w1.log 2>&1 & p1=$!\n"
                 "wait $p0 && wait $p1", timeout=300)
    assert r.returncode == 0, open(f"{tmp_path}/w0.log").read()[-2000:] + open(f"{tmp_path}/w1.log").read()[-2000:]
    assert "trained 4 steps (64 examples" in open(f"{tmp_path}/w0.log").read()  # --batch_size 8 on each worker
    chief = load_model(str(tmp_path), f"{tmp_path}/checkpoints/ckpt-4")[0]
    worker = load_model(str(tmp_path), f"{tmp_path}/workers/1/checkpoints/ckpt-4")[0]
    start = load_model(str(tmp_path), f"{tmp_path}/checkpoints/ckpt-0")[0]
    for a, b, c in zip(chief.weights, worker.weights, start.weights):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert any(not np.array_equal(np.asarray(a), np.asarray(c)) for a, c in zip(chief.weights, start.weights))


def test_object_storage_paths_through_fsspec(trained_flm, learn_dir, tmp_path, monkeypatch):
    """gs://-style URLs for inspect, infer, score and eval, against fsspec's in-memory filesystem."""
    fsspec = pytest.importorskip("fsspec")
    from yt8m_engine.evaluate import evaluate
    from yt8m_engine.io.inspect import inspect
    from yt8m_engine.score import score

    monkeypatch.setenv("YT8M_ENGINE_CACHE", str(tmp_path / "cache"))
    _, onnx_path, _ = trained_flm
    fs = fsspec.filesystem("memory")
    for f in glob.glob(f"{learn_dir}/3/frame/validate*"):
        fs.pipe(f"/bucket/3/frame/{os.path.basename(f)}", open(f, "rb").read())
    url = "memory://bucket/3/frame/validate*.tfrecord"
    local = f"{learn_dir}/3/frame/validate*"
    assert inspect(url).totals()["records"] == inspect(local).totals()["records"]
    infer(onnx_path, url, str(tmp_path / "u.csv"), segment_labels=True, progress=False)
    infer(onnx_path, local, str(tmp_path / "l.csv"), segment_labels=True, progress=False)
    assert filecmp.cmp(tmp_path / "u.csv", tmp_path / "l.csv", shallow=False)
    assert score(str(tmp_path / "u.csv"), url)["map"] == score(str(tmp_path / "l.csv"), local)["map"]
    assert evaluate(onnx_path, url)["gap"] == evaluate(onnx_path, local)["gap"]


def test_training_input_through_tensorflow_file_systems(synth_dir, tmp_path):
    pytest.importorskip("tensorflow")
    from yt8m_engine.train.config import ModelConfig, TrainConfig
    from yt8m_engine.train.trainer import train

    r = train(ModelConfig(model="FrameLevelLogisticModel"),
              TrainConfig(train_data_pattern=f"file://{synth_dir}/2/frame/train*", train_dir=str(tmp_path),
                          batch_size=8, max_steps=2), echo=lambda s: None)
    assert r["steps"] == 2
