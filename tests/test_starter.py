"""Drop-in for the starter (issue 16): its README's command lines run as written with `python X.py`
replaced by `yt8m-engine X`, and every flag of its scripts is accepted in absl's forms."""
import filecmp
import os
import shutil
import signal
import subprocess
import sys
import threading
import time

import pytest

from yt8m_engine.cli import cli
from yt8m_engine.starter import absl_args

pytest.importorskip("tensorflow")

# every flag the starter's scripts define (train.py, eval.py, inference.py, segment_eval_inference.py, and
# the model flags of frame_level_models.py / video_level_models.py that train.py and eval.py import), with
# the starter's defaults
MODEL_FLAGS = dict(iterations="30", dbof_add_batch_norm="True", sample_random_frames="True",
                   dbof_cluster_size="8192", dbof_hidden_size="1024", dbof_pooling_method="max",
                   dbof_activation="sigmoid", video_level_classifier_model="MoeModel", lstm_cells="1024",
                   lstm_layers="2", moe_num_mixtures="2")
STARTER_FLAGS = {
    "train": dict(train_dir="/tmp/yt8m_model/", train_data_pattern="x", feature_names="mean_rgb", feature_sizes="1024",
                  frame_features="False", segment_labels="False", model="LogisticModel", start_new_model="False",
                  num_gpu="1", batch_size="1024", label_loss="CrossEntropyLoss", regularization_penalty="1.0",
                  base_learning_rate="0.01", learning_rate_decay="0.95", learning_rate_decay_examples="4000000",
                  num_epochs="5", export_model_steps="1000", num_readers="8", optimizer="AdamOptimizer",
                  clip_gradient_norm="1.0", log_device_placement="False", **MODEL_FLAGS),
    "eval": dict(train_dir="/tmp/yt8m_model/", eval_data_pattern="x", segment_labels="False", batch_size="1024",
                 num_readers="8", run_once="False", top_k="20", frame_features="True",
                 model="FrameLevelLogisticModel", feature_names="rgb,audio", feature_sizes="1024,128", **MODEL_FLAGS),
    "inference": dict(train_dir="", input_data_pattern="x", input_model_tgz="", untar_model_dir="/tmp/yt8m-model",
                      segment_labels="False", segment_max_pred="100000", output_file="o.csv", output_model_tgz="",
                      segment_label_ids_file="https://raw.githubusercontent.com/google/youtube-8m/master/segment_label_ids.csv",
                      top_k="20", batch_size="512", num_readers="1"),
    "segment_eval_inference": dict(eval_data_pattern="x", label_cache="", submission_file="s.csv", top_n="0"),
}


def parse(args):
    args = absl_args(cli, args)
    cmd = cli.commands[args[0]]
    return cmd.make_context(args[0], args[1:]).params


@pytest.mark.parametrize("verb", sorted(STARTER_FLAGS))
def test_every_starter_flag_is_accepted_in_absl_forms(verb):
    flags = STARTER_FLAGS[verb]
    parse([verb] + [f"--{k}={v}" for k, v in flags.items()])                    # --x=v
    parse([verb] + [x for k, v in flags.items() for x in (f"--{k}", v)])        # --x v
    bools = [k for k, v in flags.items() if v in ("True", "False")]
    p = parse([verb] + [f"--{k}={v}" for k, v in flags.items() if k not in bools] + [f"--{k}" for k in bools])
    assert all(p[k] is True for k in bools if k in p)                           # bare booleans
    p = parse([verb] + [f"--{k}={v}" for k, v in flags.items() if k not in bools] + [f"--no{k}" for k in bools])
    assert all(p[k] in (False, None) for k in bools if k in p)                  # absl's --nox
    p = parse([verb] + [f"-{k}={v}" for k, v in flags.items()])                 # absl's single dash
    assert p[next(iter(flags))] is not None


def test_absl_forms_mean_what_absl_means():
    p = parse(["train", "--train_data_pattern=x", "--nostart_new_model", "--nosegment_labels", "--dbof_add_batch_norm=false"])
    assert p["start_new_model"] is False and p["segment_labels"] is False and p["dbof_add_batch_norm"] is False
    p = parse(["infer", "--model", "m.onnx", "--input_data_pattern", "x", "--output_file", "o", "--segment_labels",
               "--noskip_corrupt"])
    assert p["segment_labels"] is True and p["skip_corrupt"] is False
    p = parse(["score", "s.csv", "--eval_data_pattern", "x", "--nono_cache"])
    assert p["no_cache"] is False
    with pytest.raises(Exception, match="No such option"):
        parse(["train", "--train_data_pattern=x", "--nosuch_flag"])


README = """
python train.py --frame_features --model=FrameLevelLogisticModel \\
--feature_names='rgb,audio' --feature_sizes='1024,128' \\
--train_data_pattern=${HOME}/yt8m/2/frame/train/train*.tfrecord \\
--train_dir ~/yt8m/models/frame/sample_model --start_new_model
python eval.py \\
--eval_data_pattern=${HOME}/yt8m/3/frame/validate/validate*.tfrecord \\
--train_dir ~/yt8m/models/frame/sample_model --segment_labels
python \\
inference.py --train_dir ~/yt8m/models/frame/sample_model \\
--output_file=$HOME/tmp/kaggle_solution.csv \\
--input_data_pattern=${HOME}/yt8m/3/frame/test/test*.tfrecord --segment_labels
python inference.py --train_dir ~/yt8m/models/frame/sample_model \\
--output_file=$HOME/tmp/kaggle_solution_validation.csv \\
--input_data_pattern=${HOME}/yt8m/3/frame/validate/validate*.tfrecord \\
--segment_labels
python segment_eval_inference.py \\
--eval_data_pattern=${HOME}/yt8m/3/frame/validate/validate*.tfrecord \\
--label_cache=$HOME/tmp/validate.label_cache \\
--submission_file=$HOME/tmp/kaggle_solution_validation.csv --top_n=100000
"""
# the cloud variants, after gcloud's `--`: 'gs://youtube8m-ml/' becomes DATA/ and $BUCKET_NAME a local folder
CLOUD = """
python train.py --train_data_pattern='DATA/2/frame/train/train*.tfrecord' \\
--train_dir=$BUCKET_NAME/yt8m_train_frame_level_logistic_model --frame_features --model=FrameLevelLogisticModel \\
--feature_names='rgb,audio' --feature_sizes='1024,128' --start_new_model
python eval.py --eval_data_pattern='DATA/3/frame/validate/validate*.tfrecord' \\
--frame_features --model=FrameLevelLogisticModel --feature_names='rgb,audio' \\
--feature_sizes='1024,128' --train_dir=$BUCKET_NAME/${JOB_TO_EVAL} \\
--segment_labels --run_once=True
python inference.py --input_data_pattern='DATA/3/frame/test/test*.tfrecord' \\
--train_dir=$BUCKET_NAME/${JOB_TO_EVAL} --segment_labels \\
--output_file=$BUCKET_NAME/${JOB_TO_EVAL}/predictions.csv
"""


def commands(text):
    """The command lines of a README block, `python X.py` as `yt8m-engine X`."""
    exe = f"{sys.executable} -m yt8m_engine.cli"
    joined = text.replace("\\\n", " ").replace("python  inference.py", "python inference.py")
    out = []
    for line in joined.strip().splitlines():
        line = " ".join(line.split())
        for script in ("train", "eval", "inference", "segment_eval_inference"):
            line = line.replace(f"python {script}.py", f"{exe} {script}")
        out.append(line)
    return out


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    """A home folder with ~/yt8m laid out as the starter's README expects (a folder per split)."""
    from yt8m_engine.io.synth import synth

    home = tmp_path_factory.mktemp("home")
    src = home / "src"
    synth(str(src), videos=160, shards=2, seed=5, test_videos=40)
    for part, split in (("2", "train"), ("3", "validate"), ("3", "test")):
        d = home / "yt8m" / part / "frame" / split
        d.mkdir(parents=True)
        for f in sorted(os.listdir(src / part / "frame")):
            if f.startswith(split):
                shutil.copy(src / part / "frame" / f, d / f)
    (home / "tmp").mkdir()
    return home


def run_lines(lines, env, cwd):
    for line in lines:
        r = subprocess.run(["bash", "-c", line], env=env, cwd=cwd, capture_output=True, text=True)
        assert r.returncode == 0, (line, r.stderr[-3000:])
        assert "Traceback" not in r.stderr


@pytest.mark.slow
def test_the_starter_readme_runs_as_written(home):
    env = {**os.environ, "HOME": str(home), "YT8M_ENGINE_CACHE": str(home / "cache"), "TF_CPP_MIN_LOG_LEVEL": "3"}
    train, ev, infer_test, infer_val, seg_eval = commands(README)
    run_lines([train], env, home)
    model_dir = home / "yt8m" / "models" / "frame" / "sample_model"
    assert (model_dir / "config.json").exists()
    # eval as written has no --run_once: it evaluates, then waits for the next checkpoint (as the starter)
    # SIGINT as a terminal delivers it (a test run started in the background inherits it ignored, and the
    # eval would then never stop). One clean-clone run timed out here, cause not found: should it not stop,
    # SIGABRT under PYTHONFAULTHANDLER prints where each of its threads is.
    p = subprocess.Popen(["bash", "-c", "exec " + ev], env={**env, "PYTHONFAULTHANDLER": "1"}, cwd=home,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    watchdog = threading.Timer(300, p.kill)
    watchdog.start()
    out = []
    for line in p.stdout:  # until its report is out
        out.append(line)
        if line.startswith("reports in"):
            break
    watchdog.cancel()
    time.sleep(1)
    assert p.poll() is None, p.communicate()[1][-3000:]  # still waiting for a new checkpoint
    p.send_signal(signal.SIGINT)
    try:
        rest, err = p.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        p.send_signal(signal.SIGABRT)
        pytest.fail("eval did not stop within 60 s of SIGINT; where it was:\n" + p.communicate(timeout=60)[1][-6000:])
    out = "".join(out) + rest
    assert p.returncode == 130 and "MAP@100000" in out and "Traceback" not in err, (out, err[-2000:])
    assert (model_dir / "eval" / "metrics.json").exists()
    run_lines([infer_test, infer_val, seg_eval, seg_eval], env, home)  # the second reuses the label cache
    lines = open(home / "tmp" / "kaggle_solution.csv").read().splitlines()
    assert lines[0] == "Class,Segments" and len(lines) == 1001
    assert os.path.getsize(home / "tmp" / "validate.label_cache") > 0
    # the cloud variants (without the gcloud wrapper)
    env.update(BUCKET_NAME=str(home / "bucket"), JOB_TO_EVAL="yt8m_train_frame_level_logistic_model")
    run_lines(commands(CLOUD.replace("DATA", str(home / "yt8m"))), env, home)
    assert (home / "bucket" / "yt8m_train_frame_level_logistic_model" / "predictions.csv").exists()


@pytest.mark.slow
def test_inference_on_a_train_dir_equals_export_then_infer(trained_flm, learn_dir, tmp_path):
    train_dir, _, _ = trained_flm
    val = f"{learn_dir}/3/frame/validate*"
    cli_ = [sys.executable, "-m", "yt8m_engine.cli"]

    def run(*args):
        r = subprocess.run(cli_ + list(args), capture_output=True, text=True)
        assert r.returncode == 0, r.stderr[-2000:]
        return r

    run("inference", "--train_dir", train_dir, "--input_data_pattern", val, "--segment_labels",
        "--output_file", str(tmp_path / "a.csv"), "--output_model_tgz", str(tmp_path / "m.tgz"))
    run("export_model", "--train_dir", train_dir, "--output", str(tmp_path / "m.onnx"), "--classes", "segment")
    run("infer", "--model", str(tmp_path / "m.onnx"), "--input_data_pattern", val, "--segment_labels",
        "--output_file", str(tmp_path / "b.csv"))
    assert filecmp.cmp(tmp_path / "a.csv", tmp_path / "b.csv", shallow=False)
    run("inference", "--input_model_tgz", str(tmp_path / "m.tgz"), "--untar_model_dir", str(tmp_path / "untar"),
        "--input_data_pattern", val, "--segment_labels", "--output_file", str(tmp_path / "c.csv"))
    assert filecmp.cmp(tmp_path / "a.csv", tmp_path / "c.csv", shallow=False)
    # video level through the train_dir: all classes
    run("inference", "--train_dir", train_dir, "--input_data_pattern", val, "--output_file", str(tmp_path / "v.csv"))
    assert open(tmp_path / "v.csv").readline().strip() == "VideoId,LabelConfidencePairs"
    # model flags given to eval with a --train_dir: equal is fine, different is one clear error
    ok = ["eval", "--train_dir", train_dir, "--eval_data_pattern", val, "--run_once", "--frame_features",
          "--model=FrameLevelLogisticModel", "--feature_names=rgb,audio", "--feature_sizes=1024,128",
          "--output_dir", str(tmp_path / "e")]
    run(*ok)
    r = subprocess.run(cli_ + ok + ["--model=DbofModel", "--dbof_cluster_size=4096"], capture_output=True, text=True)
    assert r.returncode == 2 and "--model DbofModel (trained: FrameLevelLogisticModel)" in r.stderr
    assert "--dbof_cluster_size 4096 (trained: 8192)" in r.stderr and "Traceback" not in r.stderr


def test_segment_eval_inference_reads_the_starters_label_cache(trained_flm, learn_dir, tmp_path):
    """A label cache the starter wrote (Python 3: ids as b'...') is read as the starter reads it: the
    same MAP as from the records."""
    import numpy as np

    from yt8m_engine.io.reader import read_all
    from yt8m_engine.score import score

    _, onnx_path, _ = trained_flm
    val = f"{learn_dir}/3/frame/validate*"
    from yt8m_engine.infer import infer

    infer(onnx_path, val, str(tmp_path / "s.csv"), segment_labels=True, progress=False, segment_max_pred=200)
    b = read_all(val, segments=True)
    cache = tmp_path / "validate.label_cache"
    with open(cache, "w") as f:
        for i, vid in enumerate(b.ids):
            for j in range(b.segment_offsets[i], b.segment_offsets[i + 1]):
                f.write("%s:%d,%s,%s\n" % (vid.encode(), b.segment_starts[j], b.segment_labels[j],
                                           float(b.segment_scores[j])))
    direct = score(str(tmp_path / "s.csv"), val, top_n=0, use_cache=False)
    cached = score(str(tmp_path / "s.csv"), val, top_n=0, cache_file=str(cache))
    assert cached["label_cache"] == "reused (starter's)" and cached["map"] == direct["map"] > 0.3
    assert np.isfinite(direct["map"])
