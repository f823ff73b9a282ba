import filecmp
import glob
import os

import numpy as np

from yt8m_engine import format as fmt
from yt8m_engine.io.inspect import inspect
from yt8m_engine.io.reader import read_all
from yt8m_engine.io.synth import synth


def test_layout_and_content(synth_dir):
    for sub, split in [("2/frame", "train"), ("2/frame", "validate"), ("2/video", "train"),
                       ("2/video", "validate"), ("3/frame", "validate"), ("3/frame", "test")]:
        assert len(glob.glob(os.path.join(synth_dir, sub, f"{split}*.tfrecord"))) == 2
    train = read_all(f"{synth_dir}/2/frame/train*")
    assert train.num_frames.min() < fmt.SEGMENT_SIZE and train.num_frames.max() == fmt.MAX_FRAMES
    assert len(set(train.ids)) == len(train) == 48
    seg = read_all(f"{synth_dir}/3/frame/validate*", segments=True)
    assert set(seg.segment_labels.tolist()) <= set(fmt.segment_class_ids().tolist())
    assert 0 < (seg.segment_scores == 1).sum() < seg.segment_scores.size  # positives and negatives
    test = read_all(f"{synth_dir}/3/frame/test*")
    assert test.labels.size == 0
    assert not set(test.ids) & set(train.ids)
    video = read_all(f"{synth_dir}/2/video/train*", fmt.FeatureSpec.default(False))
    assert video.ids == train.ids
    np.testing.assert_array_equal(video.labels, train.labels)


def test_same_seed_same_bytes(tmp_path):
    synth(str(tmp_path / "a"), videos=8, shards=2, seed=5)
    synth(str(tmp_path / "b"), videos=8, shards=2, seed=5)
    synth(str(tmp_path / "c"), videos=8, shards=2, seed=6)
    files = sorted(glob.glob(str(tmp_path / "a/*/*/*.tfrecord")))
    assert len(files) == 12
    for f in files:
        assert filecmp.cmp(f, f.replace("/a/", "/b/"), shallow=False)
    assert not filecmp.cmp(files[0], files[0].replace("/a/", "/c/"), shallow=False)


def test_signal_is_in_the_shown_frames(synth_dir):
    """Positive rated segments carry their class prototype; negative ones do not."""
    from yt8m_engine.io.synth import World
    from yt8m_engine.kernels.dequant import dequantize

    world = World(3)
    b = read_all(f"{synth_dir}/3/frame/validate*", segments=True)
    pos, neg = [], []
    for i in range(len(b)):
        x = dequantize(b.video_frames(i))
        x = x - x.mean(0)
        for j in range(b.segment_offsets[i], b.segment_offsets[i + 1]):
            s = b.segment_starts[j]
            score = float(x[s:s + 5].mean(0) @ world.prototypes[b.segment_labels[j]])
            (pos if b.segment_scores[j] > 0.5 else neg).append(score)
    assert np.mean(pos) > np.mean(neg) + 3 * np.std(neg) / np.sqrt(len(neg))


def test_inspect_totals_match_reader(synth_dir):
    rep = inspect(f"{synth_dir}/3/frame/validate*")
    t = rep.totals()
    b = read_all(f"{synth_dir}/3/frame/validate*", segments=True)
    assert t["records"] == len(b) and t["corrupt"] == 0
    assert t["rated_segments"] == b.segment_labels.size
    assert t["positive_segments"] == int((b.segment_scores > 0.5).sum())
    assert t["frames"]["max"] == b.num_frames.max() and t["frames"]["total"] == b.num_frames.sum()
    assert t["labels"] == b.labels.size
