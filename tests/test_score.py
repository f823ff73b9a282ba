"""`yt8m-engine score` end to end on synthetic rated segments, against the reference metric."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from yt8m_engine import Yt8mError
from yt8m_engine.io.reader import read_all
from yt8m_engine.score import score

from reference import ref_segment_map


@pytest.fixture()
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("YT8M_ENGINE_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def ratings_of(synth_dir):
    b = read_all(f"{synth_dir}/3/frame/validate*", segments=True)
    ratings = {}
    for i, vid in enumerate(b.ids):
        for j in range(b.segment_offsets[i], b.segment_offsets[i + 1]):
            ratings[(f"{vid}:{b.segment_starts[j]}", int(b.segment_labels[j]))] = int(b.segment_scores[j] > 0.5)
    return ratings


def write_submission(path, sub):
    with open(path, "w") as f:
        f.write("Class,Segments\n")
        for c in sorted(sub):
            f.write(f"{c}," + " ".join(sub[c]) + "\n")


@pytest.mark.parametrize("seed", [0, 1])
def test_score_matches_reference(synth_dir, tmp_path, cache, seed):
    ratings = ratings_of(synth_dir)
    rng = np.random.default_rng(seed)
    classes = sorted({c for _, c in ratings})
    segs = sorted({s for s, _ in ratings}) + ["zzzz:0", "Q:15"]  # unrated ids too
    sub = {c: list(rng.permutation(segs)[: int(rng.integers(1, len(segs)))]) for c in classes[:40]}
    path = str(tmp_path / "sub.csv")
    write_submission(path, sub)
    for k in (5, 100000):
        res = score(path, f"{synth_dir}/3/frame/validate*", top_n=k)
        assert res["map"] == pytest.approx(ref_segment_map(sub, ratings, k), abs=1e-9)
    assert res["label_cache"] == "reused" and len(os.listdir(cache)) == 1


def test_repeated_ids_count_once(synth_dir, tmp_path, cache):
    """Every id written twice (or more) in its class's line scores as if written once, where it first stands."""
    ratings = ratings_of(synth_dir)
    rng = np.random.default_rng(3)
    classes = sorted({c for _, c in ratings})
    segs = sorted({s for s, _ in ratings})
    sub = {c: list(rng.permutation(segs)[:50]) for c in classes[:30]}
    twice = {c: [s for s in v for _ in range(2)] + v[:5] for c, v in sub.items()}
    write_submission(tmp_path / "once.csv", sub)
    write_submission(tmp_path / "twice.csv", twice)
    once = score(str(tmp_path / "once.csv"), f"{synth_dir}/3/frame/validate*")["map"]
    assert score(str(tmp_path / "twice.csv"), f"{synth_dir}/3/frame/validate*")["map"] == pytest.approx(once, abs=1e-12)
    assert once == pytest.approx(ref_segment_map(twice, ratings, 100000), abs=1e-9)
    assert 0 < once < 1


@pytest.mark.parametrize("block", [16, 97, 4096])
def test_streamed_in_small_blocks(synth_dir, tmp_path, cache, block):
    """Lines cut by block boundaries, lines longer than a block (the block grows), CRLF line ends, blank
    lines and a last line without a newline score as the whole file does."""
    ratings = ratings_of(synth_dir)
    rng = np.random.default_rng(4)
    classes = sorted({c for _, c in ratings})
    segs = sorted({s for s, _ in ratings})
    sub = {c: list(rng.permutation(segs)[: int(rng.integers(0, 80))]) for c in classes[:25]}
    text = "Class,Segments\r\n" + "".join(f"{c},{' '.join(v)}\r\n" + ("\n" if c % 3 == 0 else "")
                                           for c, v in sorted(sub.items()))
    (tmp_path / "s.csv").write_text(text.rstrip("\r\n"))
    res = score(str(tmp_path / "s.csv"), f"{synth_dir}/3/frame/validate*", block_bytes=block)
    assert res["map"] == pytest.approx(ref_segment_map(sub, ratings, 100000), abs=1e-9)
    assert res["submitted_classes"] == len(sub) and res["entries"] == sum(map(len, sub.values()))


@pytest.mark.parametrize("block", [8, 1 << 20])
def test_bad_line_named_in_any_block(synth_dir, tmp_path, cache, block):
    lines = [f"{c},a:0 b:5" for c in (3, 7, 8, 11)] + ["12,a:0 b:x"] + ["3,a:0"]
    (tmp_path / "s.csv").write_text("Class,Segments\n" + "\n".join(lines) + "\n")
    with pytest.raises(Yt8mError, match=r"line 6: malformed segment id 'b:x'"):
        score(str(tmp_path / "s.csv"), f"{synth_dir}/3/frame/validate*", block_bytes=block)


def test_perfect_and_reversed_submission(synth_dir, tmp_path, cache):
    ratings = ratings_of(synth_dir)
    classes = sorted({c for _, c in ratings})
    best = {c: [s for (s, cc), v in ratings.items() if cc == c and v == 1] for c in classes}
    write_submission(tmp_path / "best.csv", best)
    assert score(str(tmp_path / "best.csv"), f"{synth_dir}/3/frame/validate*")["map"] == pytest.approx(1.0)
    worst = {c: [s for (s, cc), v in ratings.items() if cc == c and v == 0] + best[c] for c in classes}
    write_submission(tmp_path / "worst.csv", worst)
    assert score(str(tmp_path / "worst.csv"), f"{synth_dir}/3/frame/validate*")["map"] < 0.9


@pytest.mark.parametrize("text, message", [
    ("Class,Segs\n3,a:0\n", "line 1: the header must be 'Class,Segments'"),
    ("Class,Segments\n5,a:0\n", "line 2: class 5 is not one of the 1000 segment classes"),
    ("Class,Segments\n3,a:0\n3,b:5\n", "line 3: class 3 appears on more than one line"),
    ("Class,Segments\n3,a:0 b5\n", "line 2: malformed segment id 'b5'"),
    ("Class,Segments\n3,a:x\n", "malformed segment id 'a:x'"),
    ("Class,Segments\nthree,a:0\n", "line 2: expected 'class,segment"),
    ("", "line 1: the header must be"),
    ("Class,Segments\n3,a:0\n\n7,b:5\n7,c:0\n", "line 5: class 7 appears on more than one line"),
])
def test_bad_submissions(synth_dir, tmp_path, cache, text, message):
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(Yt8mError) as e:
        score(str(path), f"{synth_dir}/3/frame/validate*")
    assert message in str(e.value) and str(path) in str(e.value)


def test_label_cache_rebuilt_when_files_change(tmp_path, cache):
    from yt8m_engine.io.synth import synth

    synth(str(tmp_path / "d"), videos=8, shards=2, seed=1)
    (tmp_path / "s.csv").write_text("Class,Segments\n3,\n")
    pattern = str(tmp_path / "d/3/frame/validate*")
    assert score(str(tmp_path / "s.csv"), pattern)["label_cache"] == "built"
    assert score(str(tmp_path / "s.csv"), pattern)["label_cache"] == "reused"
    synth(str(tmp_path / "d"), videos=8, shards=2, seed=2)  # same paths, new content
    assert score(str(tmp_path / "s.csv"), pattern)["label_cache"] == "built"


def test_score_cli_json(synth_dir, tmp_path, cache):
    (tmp_path / "s.csv").write_text("Class,Segments\n3,\n")
    r = subprocess.run([sys.executable, "-m", "yt8m_engine.cli", "score", str(tmp_path / "s.csv"),
                        "--eval_data_pattern", f"{synth_dir}/3/frame/validate*", "--json"],
                       capture_output=True, text=True, env={**os.environ})
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert {"map", "classes", "top_n"} <= set(out) and out["top_n"] == 100000


def test_label_cache_built_past_corrupt_records_is_not_used_without_skip_corrupt(tmp_path, cache):
    from yt8m_engine.io.synth import synth

    synth(str(tmp_path / "d"), videos=8, shards=2, seed=1)
    shard = tmp_path / "d/3/frame/validate0000.tfrecord"
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF  # a payload CRC mismatch in some record
    shard.write_bytes(bytes(data))
    (tmp_path / "s.csv").write_text("Class,Segments\n3,\n")
    pattern = str(tmp_path / "d/3/frame/validate*")
    assert score(str(tmp_path / "s.csv"), pattern, skip_corrupt=True)["label_cache"] == "built"
    assert score(str(tmp_path / "s.csv"), pattern, skip_corrupt=True)["label_cache"] == "reused"
    with pytest.raises(Yt8mError, match="validate0000"):
        score(str(tmp_path / "s.csv"), pattern)


def test_score_cli_prints_a_table_with_the_cache_file(synth_dir, tmp_path, cache):
    (tmp_path / "s.csv").write_text("Class,Segments\n3,\n")
    r = subprocess.run([sys.executable, "-m", "yt8m_engine.cli", "score", str(tmp_path / "s.csv"),
                        "--eval_data_pattern", f"{synth_dir}/3/frame/validate*"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    rows = dict(line.split(None, 1) if not line.startswith("label cache") else ("label cache", line[14:])
                for line in r.stdout.splitlines())
    assert rows["MAP@100000"].strip() == "0.000000" and str(cache) in rows["label cache"] and "{" not in r.stdout
