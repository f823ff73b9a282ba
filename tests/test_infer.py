"""infer end to end: train -> export -> infer -> score; determinism; shards + merge; eval on ONNX alone."""
import csv
import filecmp
import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from yt8m_engine import Yt8mError
from yt8m_engine.infer import infer, merge
from yt8m_engine.io.reader import read_all
from yt8m_engine.score import score

pytest.importorskip("onnxruntime")


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("YT8M_ENGINE_CACHE", str(tmp_path / "cache"))


def test_segment_submission_beats_untrained(trained_flm, learn_dir, tmp_path):
    _, onnx_path, untrained = trained_flm
    rated = f"{learn_dir}/3/frame/validate*"
    infer(onnx_path, rated, str(tmp_path / "a.csv"), segment_labels=True, progress=False)
    infer(untrained, rated, str(tmp_path / "u.csv"), segment_labels=True, progress=False)
    trained_map = score(str(tmp_path / "a.csv"), rated)["map"]
    untrained_map = score(str(tmp_path / "u.csv"), rated)["map"]
    assert trained_map > untrained_map + 0.1, (trained_map, untrained_map)


def test_segment_csv_format_and_determinism(trained_flm, learn_dir, tmp_path):
    _, onnx_path, _ = trained_flm
    pattern = f"{learn_dir}/3/frame/test*"
    st = infer(onnx_path, pattern, str(tmp_path / "a.csv"), segment_labels=True, progress=False,
               segment_max_pred=50)
    infer(onnx_path, pattern, str(tmp_path / "b.csv"), segment_labels=True, progress=False, segment_max_pred=50,
          batch_size=7)  # other model batches: same bytes
    assert filecmp.cmp(tmp_path / "a.csv", tmp_path / "b.csv", shallow=False)
    for threads, chunk in ((1, 1000), (3, 2)):  # one worker; three racing over tiny chunks: same bytes
        infer(onnx_path, pattern, str(tmp_path / "c.csv"), segment_labels=True, progress=False, segment_max_pred=50,
              threads=threads, chunk=chunk)
        assert filecmp.cmp(tmp_path / "a.csv", tmp_path / "c.csv", shallow=False)
    b = read_all(pattern)
    expected = sum((n + 4) // 5 for n in b.num_frames)
    assert st.segments == expected and st.videos == len(b)
    lines = (tmp_path / "a.csv").read_text().splitlines()
    assert lines[0] == "Class,Segments" and len(lines) == 1001
    classes = [int(ln.split(",")[0]) for ln in lines[1:]]
    assert classes == sorted(classes)
    valid = {f"{v}:{s}" for v, n in zip(b.ids, b.num_frames) for s in range(0, n, 5)}
    for ln in lines[1:]:
        segs = ln.split(",")[1].split()
        assert len(segs) == min(50, expected) and set(segs) <= valid and len(set(segs)) == len(segs)


def signed(d):
    """Arrays of a partial with the checksum made for their content (what a forger would do): the
    arrays' own validation must then catch what is wrong."""
    from yt8m_engine.rank.partial import checksum

    d = {k: v for k, v in d.items() if k != "checksum"}
    return {**d, "checksum": np.array(checksum(d))}


def test_shards_merged_equal_single_run(trained_flm, learn_dir, tmp_path):
    _, onnx_path, _ = trained_flm
    pattern = f"{learn_dir}/3/frame/*"
    infer(onnx_path, pattern, str(tmp_path / "single.csv"), segment_labels=True, progress=False, segment_max_pred=300)
    parts = []
    for i in range(3):
        parts.append(str(tmp_path / f"part{i}.npz"))
        infer(onnx_path, pattern, parts[-1], segment_labels=True, progress=False, segment_max_pred=300, shard=f"{i}/3")
    merge(parts, str(tmp_path / "merged.csv"))
    assert filecmp.cmp(tmp_path / "single.csv", tmp_path / "merged.csv", shallow=False)
    # the starter's mode: classes hold very different counts, so partials store each class's entries only
    kw = dict(segment_labels=True, progress=False, segment_mode="topk", top_k=3)
    infer(onnx_path, pattern, str(tmp_path / "k_single.csv"), **kw)
    k_parts = [str(tmp_path / f"k{i}.npz") for i in range(3)]
    for i, p in enumerate(k_parts):
        infer(onnx_path, pattern, p, shard=f"{i}/3", **kw)
    merge(k_parts, str(tmp_path / "k_merged.csv"))
    assert filecmp.cmp(tmp_path / "k_single.csv", tmp_path / "k_merged.csv", shallow=False)
    # a partial whose entries do not add up to its counts is refused, naming the file (both layouts:
    # full rows as they are, all classes; each class's entries concatenated, the starter's mode)
    for part, ndim in ((parts[0], 2), (k_parts[0], 1)):
        with np.load(part) as z:
            d = {k: z[k] for k in z.files}
        assert d["scores"].ndim == ndim
        for field in ("keys", "counts"):
            bad = tmp_path / "bad.npz"
            np.savez(bad, **signed({**d, field: d[field][:-1]}))
            with pytest.raises(Yt8mError, match="bad.npz: not a partial ranking"):
                merge([str(bad)] + parts[1:], str(tmp_path / "never.csv"))
            assert not (tmp_path / "never.csv").exists()
    # keys past the id table (a file of another shard, a record past its file's ids) and id offsets past
    # the id bytes are refused before any kernel reads them (they read out of bounds: one segfaulted)
    with np.load(parts[0]) as z:
        d = {k: z[k] for k in z.files}
    other_file = int(np.setdiff1d(np.arange(int(d["num_files"])), d["id_files"])[0])
    for field, value in (("keys", np.where(d["keys"] != 0, d["keys"] | (other_file << 40), 0)),
                         ("keys", d["keys"] + (1 << 39)), ("keys", d["keys"] + (int(d["id_counts"].max()) << 16)),
                         ("id_off", d["id_off"] + 3)):
        np.savez(tmp_path / "bad.npz", **signed({**d, field: value}))
        with pytest.raises(Yt8mError, match="bad.npz: not a partial ranking"):
            merge([str(tmp_path / "bad.npz")] + parts[1:], str(tmp_path / "never.csv"))
        assert not (tmp_path / "never.csv").exists()
    # another N in one partial, or merge asked for more than the partials hold
    infer(onnx_path, pattern, str(tmp_path / "n.npz"), segment_labels=True, progress=False, segment_max_pred=200,
          shard="0/3")
    with pytest.raises(Yt8mError, match="different numbers of segments a class"):
        merge([str(tmp_path / "n.npz")] + parts[1:], str(tmp_path / "never.csv"))
    for n in (0, 301):
        with pytest.raises(Yt8mError, match="--segment_max_pred"):
            merge(parts, str(tmp_path / "never.csv"), n)
    assert not (tmp_path / "never.csv").exists()


def test_starter_topk_mode(trained_flm, learn_dir, tmp_path):
    _, onnx_path, _ = trained_flm
    rated = f"{learn_dir}/3/frame/validate*"
    infer(onnx_path, rated, str(tmp_path / "k.csv"), segment_labels=True, progress=False, segment_mode="topk",
          top_k=3)
    lines = (tmp_path / "k.csv").read_text().splitlines()[1:]
    total = sum(len(ln.split(",")[1].split()) for ln in lines)
    st = read_all(rated)
    assert total == 3 * sum((n + 4) // 5 for n in st.num_frames)  # each segment in exactly its top-3 classes
    assert score(str(tmp_path / "k.csv"), rated)["map"] > 0.3


def test_video_level_submission(trained_flm, learn_dir, tmp_path):
    train_dir, _, _ = trained_flm
    from yt8m_engine.export.onnx_export import export

    full = str(tmp_path / "full.onnx")
    export(train_dir, full)
    pattern = f"{learn_dir}/2/frame/validate*"
    infer(full, pattern, str(tmp_path / "v.csv"), top_k=5, progress=False)
    lines = (tmp_path / "v.csv").read_text().splitlines()
    b = read_all(pattern)
    assert lines[0] == "VideoId,LabelConfidencePairs" and [ln.split(",")[0] for ln in lines[1:]] == b.ids
    hits = 0
    for i, ln in enumerate(lines[1:]):
        toks = ln.split(",")[1].split()
        cls, sc = [int(x) for x in toks[::2]], [float(x) for x in toks[1::2]]
        assert len(cls) == 5 and sc == sorted(sc, reverse=True)
        hits += cls[0] in set(b.video_labels(i).tolist())
    assert hits / len(b) > 0.4  # Hit@1 of the trained model
    parts = [str(tmp_path / f"v{i}.npz") for i in range(2)]
    for i, p in enumerate(parts):
        infer(full, pattern, p, top_k=5, progress=False, shard=f"{i}/2")
    merge(parts, str(tmp_path / "vm.csv"))
    assert filecmp.cmp(tmp_path / "v.csv", tmp_path / "vm.csv", shallow=False)


def test_infer_on_a_train_dir_says_export_it(trained_flm, learn_dir, tmp_path):
    train_dir, _, _ = trained_flm
    r = subprocess.run([sys.executable, "-m", "yt8m_engine.cli", "infer", "--model", train_dir,
                        "--input_data_pattern", f"{learn_dir}/3/frame/test*", "--output_file", str(tmp_path / "s.csv")],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "yt8m-engine export --train_dir" in r.stderr and "Traceback" not in r.stderr


def test_eval_on_onnx_alone_matches_train_dir(trained_flm, learn_dir, tmp_path):
    from yt8m_engine.evaluate import evaluate
    from yt8m_engine.export.onnx_export import export

    train_dir, _, _ = trained_flm
    full = str(tmp_path / "full.onnx")
    export(train_dir, full)
    val = f"{learn_dir}/2/frame/validate*"
    a = evaluate(train_dir, val)
    b = evaluate(full, val)
    for k in ("hit_at_one", "perr", "gap", "map"):
        assert a[k] == pytest.approx(b[k], abs=1e-4)


def test_command_line_freezes_start_up_once_and_the_library_never(trained_flm, learn_dir, tmp_path):
    """The command line takes what start-up loaded out of the cyclic collector (gc.freeze after Numba's
    warm-up: 0.1-0.2 s of an eval of 2000 videos), once (a polling eval's later models leave it be); a
    library caller's collector is left as it is."""
    _, onnx_path, _ = trained_flm
    val = f"{learn_dir}/2/frame/validate*"
    code = f"""
import gc
from yt8m_engine import kernels
from yt8m_engine.evaluate import evaluate
from yt8m_engine.kernels.warm import warm_up
evaluate({onnx_path!r}, {val!r})
print('library', gc.get_freeze_count())
from yt8m_engine.cli import main
try:
    main(['eval', '--model', {onnx_path!r}, '--eval_data_pattern', {val!r}, '--output_dir', {str(tmp_path)!r}, '-q'])
except SystemExit as e:
    assert not e.code, e.code
print('cli', gc.get_freeze_count())
garbage = [[] for _ in range(1000)]
warm_up()
print('again', gc.get_freeze_count())
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    counts = dict(line.split() for line in r.stdout.splitlines() if line.split()[0] in ("library", "cli", "again"))
    assert counts["library"] == "0" and int(counts["cli"]) > 100_000 and counts["again"] == counts["cli"], counts


@pytest.mark.parametrize("n", [7, 40])
def test_eval_segment_map_past_its_buffer(trained_flm, learn_dir, tmp_path, n):
    """With fewer than N segments eval keeps their score rows as they come; with more it moves them into a
    per-class top-N: either way its Kaggle MAP@N equals infer's N-per-class submission scored at N."""
    from yt8m_engine.evaluate import evaluate

    _, onnx_path, _ = trained_flm
    rated = f"{learn_dir}/3/frame/validate*"
    res = evaluate(onnx_path, rated, segment_labels=True, top_n=n, threads=2)
    assert res["segments"] > n
    infer(onnx_path, rated, str(tmp_path / "s.csv"), segment_labels=True, segment_max_pred=n, progress=False)
    assert res["segment_map"] == pytest.approx(score(str(tmp_path / "s.csv"), rated, top_n=n)["map"], abs=1e-9)


def test_eval_cli_segment_metrics_and_reports(trained_flm, learn_dir, tmp_path):
    _, onnx_path, _ = trained_flm
    rated = f"{learn_dir}/3/frame/validate*"
    vocab = tmp_path / "vocabulary.csv"
    vocab.write_text("Index,TrainVideoCount,Name\n3,10,Cat\n7,5,Dog\n")
    r = subprocess.run([sys.executable, "-m", "yt8m_engine.cli", "eval", "--model", onnx_path,
                        "--eval_data_pattern", rated, "--segment_labels", "true", "--json",
                        "--vocabulary", str(vocab), "--output_dir", str(tmp_path / "rep")],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    # the starter's segment eval: rated segments only, no PERR (~1 for any model with its masking)
    assert {"hit_at_one", "gap", "map", "rated_segments", "segment_map"} <= set(res) and "perr" not in set(res)
    assert 0 < res["rated_segments"] < res["segments"]
    # the same Kaggle metric as infer + score
    infer(onnx_path, rated, str(tmp_path / "s.csv"), segment_labels=True, progress=False)
    assert res["segment_map"] == pytest.approx(score(str(tmp_path / "s.csv"), rated)["map"], abs=1e-9)
    assert set(os.listdir(tmp_path / "rep")) == {"metrics.json", "class_ap.csv", "metrics.svg"}
    # the plot: per-class AP by rank (from class_ap.csv's APs, the best first) and the PR curve
    svg = ET.parse(tmp_path / "rep/metrics.svg").getroot()
    lines = [[tuple(map(float, p.split(","))) for p in e.get("points").split()]
             for e in svg.iter("{http://www.w3.org/2000/svg}polyline")]
    assert len(lines) == 2
    with open(tmp_path / "rep/class_ap.csv") as f:
        aps = sorted((float(r["ap"]) for r in csv.DictReader(f)), reverse=True)
    ph = 270  # the panels' height: y = ph - value * ph / 1.02
    assert len(lines[0]) == len(aps)
    assert [round((ph - y) * 1.02 / ph, 2) for _, y in lines[0]] == pytest.approx([round(a, 2) for a in aps], abs=0.011)
    prec, rec = zip(*[(round((ph - y) * 1.02 / ph, 3), x / 380) for x, y in lines[1]])
    assert all(0 <= v <= 1 for v in prec + rec) and list(rec) == sorted(rec) and rec[-1] > 0


def test_infer_errors(trained_flm, learn_dir, tmp_path):
    train_dir, onnx_path, _ = trained_flm
    with pytest.raises(Yt8mError, match="no such model file"):
        infer(str(tmp_path / "nope.onnx"), f"{learn_dir}/3/frame/test*", str(tmp_path / "x.csv"))
    with pytest.raises(Yt8mError, match="no files match"):
        infer(onnx_path, str(tmp_path / "nothing*"), str(tmp_path / "x.csv"))
    with pytest.raises(Yt8mError, match="--shard"):
        infer(onnx_path, f"{learn_dir}/3/frame/test*", str(tmp_path / "x.csv"), shard="3/2")
    assert not (tmp_path / "x.csv").exists()
    r = subprocess.run([sys.executable, "-m", "yt8m_engine.cli", "infer", "--model", onnx_path,
                        "--input_data_pattern", f"{learn_dir}/3/frame/test*", "--segment_labels", "true",
                        "--benchmark", "--json"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    st = json.loads(r.stdout)
    assert st["segments"] > 0 and set(st["stage_seconds"]) == {"read", "parse", "infer", "rank", "write"}


def test_providers_on_a_machine_without_gpu(trained_flm):
    from yt8m_engine.engine import OnnxModel, choose_providers

    _, onnx_path, _ = trained_flm
    if "CUDAExecutionProvider" in choose_providers("auto"):
        pytest.skip("a GPU is usable here")
    assert choose_providers("auto") == ["CPUExecutionProvider"]
    assert choose_providers("cpu") == ["CPUExecutionProvider"]
    with pytest.raises(Yt8mError, match="not usable here"):
        choose_providers("cuda")
    with pytest.raises(Yt8mError, match="unknown provider"):
        choose_providers("opencl")
    m = OnnxModel(onnx_path, "auto")
    assert m.provider == "CPUExecutionProvider" and not m.on_gpu


def test_io_binding_path_gives_the_same_predictions(trained_flm):
    """The io-binding calls used on CUDA, run here on the CPU device: same outputs, buffers reused."""
    from yt8m_engine.engine import OnnxModel

    _, onnx_path, _ = trained_flm
    plain = OnnxModel(onnx_path, "cpu", io_binding=False)
    bound = OnnxModel(onnx_path, "cpu", io_binding=True)
    rng = np.random.default_rng(0)
    outs = []
    for n in (7, 7, 3):
        fr = rng.integers(0, 256, (n, 5, 1152), dtype=np.uint8)
        nf = rng.integers(1, 6, n).astype(np.int32)
        a, b = plain.predict_frames(fr, nf), bound.predict_frames(fr, nf)
        np.testing.assert_array_equal(a, b)
        outs.append(b)
    assert not np.array_equal(outs[0], outs[1])  # a reused output buffer does not alias earlier results


def test_starter_style_boolean_flags(trained_flm, learn_dir, tmp_path):
    """absl-style booleans: bare (--segment_labels) or with a value (--segment_labels=False)."""
    _, onnx_path, _ = trained_flm
    base = [sys.executable, "-m", "yt8m_engine.cli", "infer", "--model", onnx_path,
            "--input_data_pattern", f"{learn_dir}/3/frame/test*"]
    r = subprocess.run(base + ["--segment_labels", "--output_file", str(tmp_path / "s.csv")], capture_output=True,
                       text=True)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "s.csv").read_text().startswith("Class,Segments\n")
    r = subprocess.run(base + ["--segment_labels=False", "--output_file", str(tmp_path / "v.csv")],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "v.csv").read_text().startswith("VideoId,LabelConfidencePairs\n")


def test_corrupt_record_named_or_skipped(trained_flm, tmp_path):
    """A damaged record stops infer with one error naming file and record; with skip_corrupt it is
    counted and every other video still gets its own segment ids (keys follow record indices)."""
    from yt8m_engine.io.tfrecord import frame_record
    from yt8m_engine.io.writer import frame_level_record

    _, onnx_path, _ = trained_flm
    rng = np.random.default_rng(0)
    recs = [bytearray(frame_record(frame_level_record(f"v{i}", None, rgb=rng.integers(0, 256, (n, 1024), np.uint8),
                                                      audio=rng.integers(0, 256, (n, 128), np.uint8))))
            for i, n in enumerate([12, 7, 3, 11])]
    recs[1][40] ^= 0xFF
    path = tmp_path / "test0000.tfrecord"
    path.write_bytes(b"".join(recs))
    with pytest.raises(Yt8mError, match=r"test0000.tfrecord: record 1: payload CRC mismatch"):
        infer(onnx_path, str(path), str(tmp_path / "x.csv"), segment_labels=True, progress=False)
    assert not (tmp_path / "x.csv").exists()
    st = infer(onnx_path, str(path), str(tmp_path / "x.csv"), segment_labels=True, progress=False, skip_corrupt=True,
               chunk=1, threads=2)
    assert st.corrupt == 1 and st.videos == 3 and st.segments == 3 + 1 + 3
    lines = (tmp_path / "x.csv").read_text().splitlines()[1:]
    ids = {s for ln in lines for s in ln.split(",")[1].split()}
    assert ids == {"v0:0", "v0:5", "v0:10", "v2:0", "v3:0", "v3:5", "v3:10"}


def test_cli_infer_threads_benchmark_and_file_permissions(trained_flm, learn_dir, tmp_path):
    """The CLI with the starter's --num_readers spelling; the CSV gets a plain file's permissions and
    no temporary file is left beside it."""
    _, onnx_path, _ = trained_flm
    out = tmp_path / "sub.csv"
    r = subprocess.run([sys.executable, "-m", "yt8m_engine.cli", "infer", "--model", onnx_path,
                        "--input_data_pattern", f"{learn_dir}/3/frame/test*", "--segment_labels",
                        "--num_readers", "2", "--benchmark", "--output_file", str(out)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "segments/s" in r.stdout and "CPUExecutionProvider" in r.stdout and "infer" in r.stdout
    umask = os.umask(0)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o666 & ~umask
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sub.csv"]


def test_video_batches_by_length_keep_each_video_its_own_prediction(trained_flm, learn_dir, tmp_path):
    """Frame-level videos are batched by length: every video still gets the prediction it gets alone."""
    from yt8m_engine.engine import OnnxModel, predict_videos
    from yt8m_engine.export.onnx_export import export

    train_dir, _, _ = trained_flm
    full = str(tmp_path / "full.onnx")
    export(train_dir, full)
    model = OnnxModel(full, "cpu")
    b = read_all(f"{learn_dir}/2/frame/validate*")
    batched = predict_videos(model, b, 7)
    for i in range(0, len(b), 37):
        alone = model.predict_frames(*b.padded_frames(np.array([i])))
        np.testing.assert_allclose(batched[i], alone[0], rtol=1e-5, atol=1e-6)
    assert len(set(b.num_frames[:50].tolist())) > 5  # lengths really differ
