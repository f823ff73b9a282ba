"""Hostile input and faults (issue 14): ids, oddities left out of rankings, tampered models and partials,
outputs that cannot be written. Each names the file and the problem in one line, and nothing is
half-written or silently wrong."""
import json
import os
import resource
import shutil
import subprocess
import sys

import numpy as np
import onnx
import pytest

from yt8m_engine import Yt8mError
from yt8m_engine.format import FeatureSpec
from yt8m_engine.infer import infer, merge
from yt8m_engine.io import proto
from yt8m_engine.io.inspect import inspect
from yt8m_engine.io.reader import Reader, read_all
from yt8m_engine.io.tfrecord import frame_record
from yt8m_engine.io.writer import frame_level_record, video_level_record

CLI = [sys.executable, "-m", "yt8m_engine.cli"]


def write(path, payloads):
    with open(path, "wb") as f:
        for p in payloads:
            f.write(frame_record(p))
    return str(path)


def frames(i, n):
    rng = np.random.default_rng(i)
    return dict(rgb=rng.integers(0, 256, (n, 1024), dtype=np.uint8), audio=rng.integers(0, 256, (n, 128), dtype=np.uint8))


def raw_id_record(vid: bytes, n=5):
    f = frames(0, n)
    return proto.sequence_example({"id": proto.feature_bytes([vid]), "labels": proto.feature_int64([1])},
                                  {"rgb": proto.frame_feature_list(f["rgb"]), "audio": proto.frame_feature_list(f["audio"])})


@pytest.mark.parametrize("vid", [b"a,b", b"a b", b"a\nb", b"", b"\xff\xfe", b"x" * 300, b"v:1", b'"q"'])
def test_ids_that_would_break_a_csv_are_refused_naming_the_record(tmp_path, vid):
    path = write(tmp_path / "ids.tfrecord", [frame_level_record("ok1", [1], **frames(0, 5)), raw_id_record(vid)])
    with pytest.raises(Yt8mError, match=r"ids.tfrecord: record 1: video id .* is not a valid id"):
        read_all(path)
    r = Reader(skip_corrupt=True)
    assert [i for b in r.read(path) for i in b.ids] == ["ok1"] and r.corrupt == 1
    with pytest.raises(Yt8mError, match="printable ASCII"):
        frame_level_record(vid.decode("utf-8", "replace"), [1], **frames(0, 5))


def test_oddities_reported_by_inspect_and_left_out_of_rankings(trained_flm, tmp_path):
    _, onnx_path, _ = trained_flm
    recs = [frame_level_record("good", [1], **frames(1, 12), segment_labels=[3, 5, 7], segment_start_times=[0, 5, 7],
                               segment_scores=[1.0, float("nan"), 1.0]),
            frame_level_record("none", [1], **frames(2, 0)),
            raw_id_record(b"long", 320)]  # (the writer refuses over 300 frames)
    path = write(tmp_path / "odd.tfrecord", recs)
    rep = inspect(path)
    assert rep.totals()["notes"] == {"over_max_frames": 1, "no_frames": 1, "nan_segment_score": 1,
                                     "odd_segment_start": 1}
    assert "odd.tfrecord: record 1" in "\n".join(rep.to_dict()["notes"])
    assert rep.totals()["rated_segments"] == 1 and rep.totals()["corrupt"] == 0
    # infer: the video without frames gets no CSV line (a frame-level model has nothing to average)
    out = str(tmp_path / "v.csv")
    st = infer(onnx_path, path, out, progress=False)
    lines = open(out).read().splitlines()[1:]
    assert [x.split(",")[0] for x in lines] == ["good", "long"] and st.notes["no_frames"][0] == 1
    r = subprocess.run(CLI + ["infer", "--model", onnx_path, "--input_data_pattern", path, "--output_file", out],
                       capture_output=True, text=True)
    assert r.returncode == 0 and "note: 1 videos without frames (left out of the ranking)" in r.stderr, r.stderr
    # video level: NaN / Inf features would put 'nan' in the CSV; those videos are left out
    vl = [video_level_record(f"v{i}", [1], mean_rgb=np.full(1024, x, np.float32), mean_audio=np.zeros(128))
          for i, x in enumerate([0.5, np.nan, np.inf, -0.25])]
    vpath = write(tmp_path / "video.tfrecord", vl)
    assert inspect(vpath).totals()["notes"] == {"non_finite": 2}
    r = Reader(FeatureSpec.default(False), leave_out=True)
    assert [i for bb in r.read(vpath) for i in bb.ids] == ["v0", "v3"] and r.notes["non_finite"][0] == 2


def test_duplicate_ids_are_warned_about(trained_flm, learn_dir, tmp_path):
    _, onnx_path, _ = trained_flm
    src = sorted(p for p in os.listdir(f"{learn_dir}/3/frame") if p.startswith("validate"))[0]
    for name in ("a.tfrecord", "b.tfrecord"):
        shutil.copy(f"{learn_dir}/3/frame/{src}", tmp_path / name)
    n = len(read_all(str(tmp_path / "a.tfrecord")).ids)
    st = infer(onnx_path, str(tmp_path / "*.tfrecord"), str(tmp_path / "s.csv"), segment_labels=True, progress=False,
               segment_max_pred=50)
    assert st.duplicate_ids == n and st.duplicate_example
    r = subprocess.run(CLI + ["infer", "--model", onnx_path, "--input_data_pattern", str(tmp_path / "*.tfrecord"),
                              "--output_file", str(tmp_path / "v.csv")], capture_output=True, text=True)
    assert r.returncode == 0 and f"warning: {n} records repeat a video id" in r.stderr


def _tampered(src, dst, **meta):
    m = onnx.load(src)
    props = {p.key: p for p in m.metadata_props}
    for k, v in meta.items():
        props[k].value = v
    onnx.save(m, dst)
    return dst


def test_tampered_onnx_metadata_is_refused(trained_flm, learn_dir, tmp_path):
    _, onnx_path, _ = trained_flm
    ids = json.loads({p.key: p.value for p in onnx.load(onnx_path).metadata_props}["yt8m.class_ids"])
    pattern = f"{learn_dir}/3/frame/validate*"
    for meta, msg in (({"yt8m.class_ids": json.dumps(ids[:-1])}, "the metadata names 999 class ids"),
                      ({"yt8m.class_ids": json.dumps([ids])}, "class_ids is not a non-empty list"),
                      ({"yt8m.class_ids": json.dumps(ids[:-1] + ids[:1])}, "names a class twice"),
                      ({"yt8m.feature_sizes": "[1024, 64]"}, "feature_sizes add up to 1088"),
                      ({"yt8m.feature_sizes": "[1024]"}, "one name and one positive size"),
                      ({"yt8m.frame_features": "false"}, "graph's inputs")):
        bad = _tampered(onnx_path, str(tmp_path / "bad.onnx"), **meta)
        with pytest.raises(Yt8mError, match=msg):
            infer(bad, pattern, str(tmp_path / "out.csv"), progress=False)
        assert not (tmp_path / "out.csv").exists()


def test_merge_refuses_mixtures_and_incomplete_sets(trained_flm, learn_dir, tmp_path):
    _, onnx_path, untrained = trained_flm
    pattern = f"{learn_dir}/3/frame/*"
    kw = dict(segment_labels=True, progress=False, segment_max_pred=50)
    parts = [str(tmp_path / f"p{i}.npz") for i in range(3)]
    for i, p in enumerate(parts):
        infer(onnx_path, pattern, p, shard=f"{i}/3", **kw)
    out = str(tmp_path / "m.csv")
    with pytest.raises(Yt8mError, match=r"missing partial rankings for shard 1/3 \(of 3\)"):
        merge([parts[0], parts[2]], out)
    with pytest.raises(Yt8mError, match="p0.npz: shard 0/3 again"):
        merge(parts + [parts[0]], out)
    other = str(tmp_path / "other.npz")
    infer(untrained, pattern, other, shard="1/3", **kw)
    with pytest.raises(Yt8mError, match="other.npz: made with other model file"):
        merge([parts[0], other, parts[2]], out)
    infer(onnx_path, pattern, other, shard="1/3", segment_mode="topk", **kw)
    with pytest.raises(Yt8mError, match="other.npz: made with other options"):
        merge([parts[0], other, parts[2]], out)
    renamed = tmp_path / "renamed"  # the same number of files, other files
    renamed.mkdir()
    for i, f in enumerate(sorted(os.listdir(f"{learn_dir}/3/frame"))):
        shutil.copy(f"{learn_dir}/3/frame/{f}", renamed / f"x{i}.tfrecord")
    infer(onnx_path, str(renamed / "*"), other, shard="1/3", **kw)
    with pytest.raises(Yt8mError, match="other.npz: made with other input files"):
        merge([parts[0], other, parts[2]], out)
    infer(onnx_path, pattern, other, shard="1/4", **kw)
    with pytest.raises(Yt8mError, match="other.npz: shard 1/4 of another split"):
        merge([parts[0], other, parts[2]], out)
    assert not os.path.exists(out)
    merge(parts, out)  # the right set still merges
    assert os.path.getsize(out) > 0


def test_outputs_that_cannot_be_written_fail_before_work_in_one_line(trained_flm, learn_dir, tmp_path):
    _, onnx_path, _ = trained_flm
    pattern = f"{learn_dir}/3/frame/validate*"
    infer_cmd = CLI + ["infer", "--model", onnx_path, "--input_data_pattern", pattern, "--segment_labels",
                       "--segment_max_pred", "50", "--output_file"]

    def run(cmd, **kw):
        r = subprocess.run(cmd, capture_output=True, text=True, **kw)
        assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-1500:]
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr
        return r.stderr

    (tmp_path / "folder").mkdir()
    assert "is a directory" in run(infer_cmd + [str(tmp_path / "folder")])
    ro = tmp_path / "ro.csv"
    ro.write_text("keep me\n")
    ro.chmod(0o444)
    assert "exists and is read-only" in run(infer_cmd + [str(ro)])
    assert ro.read_text() == "keep me\n"
    victim = tmp_path / "in.tfrecord"
    shutil.copy(sorted(__import__("glob").glob(pattern))[0], victim)
    before = victim.read_bytes()
    err = run(CLI + ["infer", "--model", onnx_path, "--input_data_pattern", str(victim), "--output_file", str(victim)])
    assert "is also an input file" in err and victim.read_bytes() == before
    # a full disk (here a file-size limit: the same EFBIG/ENOSPC path): one line, no temporary file left
    out_dir = tmp_path / "full"
    out_dir.mkdir()

    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (20000, 20000))

    err = run(infer_cmd + [str(out_dir / "s.csv")], preexec_fn=limit)
    assert "s.csv: cannot write" in err and os.listdir(out_dir) == []
    # partials: empty, cut short, not a zip
    part = tmp_path / "p.npz"
    infer(onnx_path, pattern, str(part), segment_labels=True, progress=False, segment_max_pred=50, shard="0/1")
    data = part.read_bytes()
    for name, content in (("empty.npz", b""), ("cut.npz", data[: len(data) // 2]), ("text.npz", b"hello")):
        (tmp_path / name).write_bytes(content)
        err = run(CLI + ["merge", str(tmp_path / name), "--output_file", str(tmp_path / "m.csv")])
        assert f"{name}: not a partial ranking" in err
    assert not (tmp_path / "m.csv").exists()
    # eval --output_dir naming a file: refused before evaluating
    (tmp_path / "afile").write_text("x")
    err = run(CLI + ["eval", "--model", onnx_path, "--eval_data_pattern", pattern, "--output_dir", str(tmp_path / "afile")])
    assert "is a file, not a folder" in err
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]


def test_base_install_reads_infers_scores_and_evaluates_without_the_training_extra(trained_flm, learn_dir, tmp_path):
    """`pip install yt8m-engine` (no [train]) on a GPU host: TensorFlow, Keras, TensorBoard, onnx and
    matplotlib absent. Every verb but train/export works; those say which extra to install."""
    _, onnx_path, _ = trained_flm
    rated = f"{learn_dir}/3/frame/validate*"
    code = f"""
import sys
class Absent:
    def find_spec(self, name, path=None, target=None):
        top = name.split('.')[0]
        if top in {{'tensorflow', 'keras', 'tensorboard', 'onnx', 'matplotlib'}}:
            raise ModuleNotFoundError(f"No module named {{top!r}}", name=top)
sys.meta_path.insert(0, Absent())
from yt8m_engine.cli import main
def run(*args):
    try:
        main(list(args))
    except SystemExit as e:
        return e.code
    return 0
d = {str(tmp_path)!r}
assert run('synth', d + '/d', '--videos', '8', '--shards', '1') == 0
assert run('inspect', {rated!r}) == 0
assert run('infer', '--model', {onnx_path!r}, '--input_data_pattern', {rated!r}, '--segment_labels',
           '--output_file', d + '/s.csv') == 0
assert run('infer', '--model', {onnx_path!r}, '--input_data_pattern', {rated!r}, '--shard', '0/1',
           '--segment_labels', '--output_file', d + '/p.npz') == 0
assert run('merge', d + '/p.npz', '--output_file', d + '/m.csv') == 0
assert run('score', d + '/s.csv', '--eval_data_pattern', {rated!r}) == 0
assert run('eval', '--model', {onnx_path!r}, '--eval_data_pattern', {rated!r}, '--output_dir', d + '/e') == 0
assert run('train', '--train_data_pattern', {rated!r}, '--train_dir', d + '/t') == 2
assert run('export', '--train_dir', d + '/t', '--output', d + '/x.onnx') == 2
assert not any(m.split('.')[0] in ('tensorflow', 'keras', 'onnx') for m in sys.modules)
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       env={**os.environ, "YT8M_ENGINE_CACHE": str(tmp_path / "cache")})
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    assert r.stderr.count("pip install 'yt8m-engine[train]'") == 2 and "Traceback" not in r.stderr
    assert os.path.exists(tmp_path / "m.csv")
    assert set(os.listdir(tmp_path / "e")) == {"metrics.json", "class_ap.csv", "metrics.svg"}


def test_progress_lines_quiet_and_verbose(trained_flm, learn_dir, tmp_path):
    """A log (stderr not a terminal) gets plain progress lines at the period set; --quiet keeps results,
    warnings and errors only (anywhere on the line); --verbose adds the stage table and every problem;
    tables fit their longest label; eval of a segment-class export says what its video metrics cover."""
    _, onnx_path, _ = trained_flm
    pattern = f"{learn_dir}/3/frame/validate*"
    env = {**os.environ, "YT8M_PROGRESS_SECONDS": "0"}
    run = lambda *a: subprocess.run(CLI + list(a), capture_output=True, text=True, env=env)  # noqa: E731
    r = run("inspect", pattern)
    assert r.returncode == 0 and "inspect: " in r.stderr and "MB/s" in r.stderr and "%" in r.stderr
    r = run("inspect", pattern, "--quiet")
    assert r.returncode == 0 and r.stderr == "" and "TOTAL" in r.stdout
    out = str(tmp_path / "s.csv")
    r = run("infer", "--model", onnx_path, "--input_data_pattern", pattern, "--segment_labels", "--output_file", out)
    assert "infer: " in r.stderr and "videos" in r.stderr
    r = run("-q", "infer", "--model", onnx_path, "--input_data_pattern", pattern, "--segment_labels",
            "--output_file", out)
    assert r.returncode == 0 and r.stderr == ""
    r = run("infer", "--model", onnx_path, "--input_data_pattern", pattern, "--segment_labels", "--output_file", out,
            "--verbose")
    assert "segments/s" in r.stdout and "busy" in r.stdout
    # many problems: 20 shown, --verbose all of them
    bad = tmp_path / "bad.tfrecord"
    with open(bad, "wb") as f:
        for i in range(25):
            f.write(frame_record(b"\xff\xff garbage %d" % i))
    r = run("inspect", str(bad))
    assert r.returncode == 1 and r.stdout.count("problem:") == 20 and "--verbose lists them" in r.stdout
    r = run("inspect", str(bad), "-v")
    assert r.stdout.count("problem:") == 25
    # column widths: a long file name widens the column
    long = tmp_path / ("a_rather_long_file_name_for_a_column_" * 2 + ".tfrecord")
    shutil.copy(sorted(__import__("glob").glob(pattern))[0], long)
    lines = run("inspect", str(long), "-q").stdout.splitlines()
    assert lines[1].startswith(long.name + " ") and lines[0].index("records") > len(long.name)
    r = run("eval", "--model", onnx_path, "--eval_data_pattern", pattern, "--output_dir", str(tmp_path / "e"), "-q")
    assert "the video metrics cover these classes only" in r.stdout and r.returncode == 0
