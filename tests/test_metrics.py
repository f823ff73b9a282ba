"""Metric kernels vs plain reference implementations written from the definitions."""
import numpy as np
import pytest

from yt8m_engine.kernels.metrics import VideoMetrics, average_precision
from yt8m_engine.kernels.topk import topk, topk_serial

from reference import ref_ap, ref_metrics, ref_topk


def random_case(seed, n=60, c=25, levels=6):
    rng = np.random.default_rng(seed)
    preds = (rng.integers(0, levels, (n, c)) / levels).astype(np.float32)  # many ties
    labels = (rng.random((n, c)) < 0.12).astype(np.float32)
    labels[: n // 6] = 0                      # rows without labels
    labels[:, : c // 5] = 0                   # classes without positives
    preds[labels > 0] += 0.2                  # some signal
    return preds, labels


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("k", [1, 5, 20, 40])
def test_video_metrics_match_reference(seed, k):
    preds, labels = random_case(seed)
    m = VideoMetrics(preds.shape[1], top_k=k)
    for a in range(0, len(preds), 17):  # streamed in uneven batches
        m.add_dense(preds[a:a + 17], labels[a:a + 17])
    got = m.results()
    ref = ref_metrics(preds, labels, k)
    for key in ("hit_at_one", "perr", "gap", "map"):
        assert got[key] == pytest.approx(ref[key], abs=1e-9), key


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("levels", [3, 6, 1000])
def test_training_log_metrics_match_reference(seed, levels):
    """The trainer's NumPy batch metrics: the same values as the definitions, ties included (few levels:
    ties across each row's top-k cut)."""
    from yt8m_engine.kernels.batch_metrics import batch_metrics

    preds, labels = random_case(seed, levels=levels)
    for k in (1, 5, 20):
        got, ref = batch_metrics(preds, labels, k), ref_metrics(preds, labels, k)
        for key in ("hit_at_one", "perr", "gap"):
            assert got[key] == pytest.approx(ref[key], abs=1e-9), (key, k)
    assert batch_metrics(preds, np.zeros_like(labels))["gap"] == 0.0


def test_map_keep_empty_classes_and_class_aps():
    preds, labels = random_case(1)
    m = VideoMetrics(preds.shape[1], top_k=preds.shape[1])
    m.add_dense(preds, labels)
    aps = m.class_aps()
    empty = labels.sum(0) == 0
    assert np.isnan(aps[empty]).all() and not np.isnan(aps[~empty]).any()
    assert m.mean_ap(keep_empty_classes=True) == pytest.approx(np.nanmean(aps) * (~empty).sum() / len(aps))


@pytest.mark.parametrize("seed", range(5))
def test_average_precision_with_ties_and_cutoff(seed):
    rng = np.random.default_rng(seed)
    s = rng.integers(0, 4, 50).astype(np.float32)
    y = (rng.random(50) < 0.3).astype(int)
    for n in (None, 1, 7, 50, 80):
        for numpos in (None, int(y.sum()) + 3):
            assert average_precision(s, y, numpos, n) == pytest.approx(ref_ap(s, y, numpos, n), abs=1e-12)
    assert average_precision(s, np.zeros(50)) == 0.0
    # ties: a negative tied with a positive ranks first (never optimistic)
    assert average_precision([1.0, 1.0], [1, 0]) == pytest.approx(0.5)


def test_topk_order_and_ties():
    rng = np.random.default_rng(0)
    p = rng.integers(0, 3, (40, 30)).astype(np.float32)
    cls, sc = topk(p, 7)
    for i in range(40):
        assert cls[i].tolist() == ref_topk(p[i], 7)
        np.testing.assert_array_equal(sc[i], p[i, cls[i]])


def test_perr_skips_rows_without_labels():
    preds = np.array([[0.9, 0.1, 0.2], [0.3, 0.8, 0.1]], np.float32)
    labels = np.array([[1, 0, 0], [0, 0, 0]], np.float32)
    m = VideoMetrics(3, top_k=2)
    m.add_dense(preds, labels)
    r = m.results()
    assert r["perr"] == 1.0           # the starter would report 0.5
    assert r["hit_at_one"] == 0.5     # Hit@1 counts every video, as the starter


@pytest.mark.parametrize("width", [1000, 3862])
@pytest.mark.parametrize("levels", [3, 50, 4000, 0])
def test_topk_two_pass_path_matches_sort(levels, width):
    """Rows long enough for the group-maximum bound (>= 16 k classes), with and without ties (few
    candidates: ranked by counting; many: by insertion), and a row with NaN (the plain scan); the
    serial kernel equals the parallel one."""
    rng = np.random.default_rng(levels)
    p = rng.random((30, width)).astype(np.float32)
    if levels:
        p = np.floor(p * levels).astype(np.float32)
    p[7, 3] = np.nan
    for k in (1, 20, 50):
        cls, sc = topk(p, k)
        for i in range(30):
            if i != 7:
                assert cls[i].tolist() == ref_topk(p[i], k)
        s_cls, s_sc = topk_serial(p, k)
        np.testing.assert_array_equal(s_cls, cls)
        np.testing.assert_array_equal(s_sc, sc)
