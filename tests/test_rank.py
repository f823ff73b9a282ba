"""Streaming top-N, segment cutting and CSV writing against plain references."""
import io

import numpy as np
import pytest

from yt8m_engine.kernels.topk import topk
from yt8m_engine.kernels.segments import cut_segments
from yt8m_engine.rank.submission import IdTable, write_segment_csv
from yt8m_engine.rank.keys import key_file, key_record, key_start, segment_keys
from yt8m_engine.rank.topn import TopN, _compact, merge_rankings


def ref_topn(scores, keys, n):
    out = []
    for j in range(scores.shape[1]):
        order = sorted(range(len(keys)), key=lambda i: (-scores[i, j], keys[i]))[:n]
        out.append(([scores[i, j] for i in order], [keys[i] for i in order]))
    return out


@pytest.mark.parametrize("n", [1, 7, 50, 10000])
@pytest.mark.parametrize("levels", [4, 0])
def test_topn_matches_sorted_reference(n, levels):
    rng = np.random.default_rng(n + levels)
    scores = rng.random((3000, 6)).astype(np.float32)
    if levels:
        scores = np.floor(scores * levels).astype(np.float32)  # heavy ties: the key decides
    keys = rng.permutation(10 ** 6)[:3000].astype(np.int64)
    t = TopN(6, n)  # small n: many compactions
    for a in range(0, 3000, 257):
        t.push(scores[a:a + 257], keys[a:a + 257])
    s, k, c = t.result()
    for j, (rs, rk) in enumerate(ref_topn(scores, keys, n)):
        assert c[j] == len(rk)
        np.testing.assert_array_equal(s[j, :c[j]], rs)
        np.testing.assert_array_equal(k[j, :c[j]], rk)
    # any split into parts merges to the same ranking
    parts = []
    for a, b in ((0, 1000), (1000, 2500), (2500, 3000)):
        p = TopN(6, n)
        p.push(scores[a:b], keys[a:b])
        parts.append(p.result())
    ms, mk, mc = merge_rankings(parts, n)
    np.testing.assert_array_equal(mc, c)
    for j in range(6):
        np.testing.assert_array_equal(mk[j, :c[j]], k[j, :c[j]])


@pytest.mark.parametrize("seed", range(6))
def test_compact_keeps_the_n_best_of_any_scores(seed):
    """The radix-select compaction against a sort, on negative, signed-zero, infinite and tied
    scores (the key decides ties)."""
    rng = np.random.default_rng(seed)
    m = int(rng.integers(2, 3000))
    pool = np.array([-np.inf, -2.5, -1e-30, -0.0, 0.0, 1e-30, 0.5, 0.5000001, 3.0, np.inf], np.float32)
    if seed % 2:
        scores = pool[rng.integers(0, pool.size, m)]  # heavy ties
    else:
        scores = (rng.standard_normal(m) * 10 ** rng.uniform(-30, 30, m)).astype(np.float32)
    keys = rng.permutation(10 ** 6)[:m].astype(np.int64)
    for n in (1, int(rng.integers(1, m)), m - 1):
        bs, bk = scores.copy(), keys.copy()
        c, thr = _compact(bs, bk, m, n)
        order = sorted(range(m), key=lambda i: (-float(scores[i]), keys[i]))[:n]
        assert c == n
        assert sorted(bk[:c].tolist()) == sorted(keys[order].tolist())
        assert thr == scores[order[-1]]
        t = TopN(1, n)  # and the finished ranking's order (a radix sort from 256 entries)
        t.push(scores[:, None], keys)
        rs, rk, rc = t.result()
        assert rc[0] == n
        np.testing.assert_array_equal(rk[0, :n], keys[order])
        np.testing.assert_array_equal(rs[0, :n], scores[order])


def test_topn_starter_mode_enters_only_top_k_classes():
    rng = np.random.default_rng(0)
    scores = rng.random((200, 10)).astype(np.float32)
    keys = np.arange(200, dtype=np.int64)
    t = TopN(10, 1000)
    t.push_top(*topk(scores, 2), keys)
    s, k, c = t.result()
    assert c.sum() == 400
    for j in range(10):
        members = set(k[j, :c[j]].tolist())
        expect = {i for i in range(200) if j in np.argsort(-scores[i])[:2]}
        assert members == expect


def test_cut_segments_reference():
    rng = np.random.default_rng(1)
    nf = np.array([1, 5, 6, 12, 0, 300], np.int32)
    off = np.concatenate([[0], np.cumsum(nf)]).astype(np.int64)
    frames = rng.integers(0, 256, (off[-1], 8), dtype=np.uint8)
    seg, snf, sv, ss = cut_segments(frames, off, nf)
    ref = [(i, s) for i, n in enumerate(nf) for s in range(0, n, 5)]
    assert list(zip(sv.tolist(), ss.tolist())) == ref
    for j, (i, s) in enumerate(ref):
        m = min(5, nf[i] - s)
        assert snf[j] == m
        np.testing.assert_array_equal(seg[j, :m], frames[off[i] + s:off[i] + s + m])
        assert not seg[j, m:].any()


@pytest.mark.parametrize("group_bytes", [1, 12, 1 << 20])
def test_write_segment_csv(group_bytes):
    ids = IdTable(3)
    ids.add(0, np.array([1]), ["bb"])  # any order, as workers finish
    ids.add(2, np.array([0]), ["cc"])
    ids.add(0, np.array([0]), ["aa"])
    keys = np.array([[segment_keys(0, np.array([1]), np.array([5]))[0], segment_keys(2, np.array([0]), np.array([0]))[0]],
                     [segment_keys(0, np.array([0]), np.array([295]))[0], 0], [0, 0]], np.int64)
    f = io.BytesIO()  # groups of one line (each longer than the group), of two lines, of all
    n = write_segment_csv(f, np.array([7, 3, 5]), keys, np.array([2, 1, 0]), ids, group_bytes=group_bytes)
    assert f.getvalue().decode() == "Class,Segments\n3,aa:295\n5,\n7,bb:5 cc:0\n"
    assert n == len(f.getvalue())


@pytest.mark.parametrize("starter_mode", [False, True])
def test_topn_pushes_from_several_threads_equal_one_thread(starter_mode):
    import threading

    rng = np.random.default_rng(4)
    scores = np.floor(rng.random((4000, 50)) * 20).astype(np.float32)  # ties: the key decides
    keys = rng.permutation(10 ** 6)[:4000].astype(np.int64)
    top_cls, top_sc = topk(scores, 3)

    def push(t, a, b):
        if starter_mode:
            t.push_top(top_cls[a:b], top_sc[a:b], keys[a:b])
        else:
            t.push(scores[a:b], keys[a:b])

    one = TopN(50, 120, stripes=4)
    for a in range(0, 4000, 100):
        push(one, a, a + 100)
    many = TopN(50, 120, stripes=4)
    threads = [threading.Thread(target=lambda t=t: [push(many, a, a + 100) for a in range(t * 100, 4000, 400)])
               for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    (s1, k1, c1), (s2, k2, c2) = one.result(), many.result()
    np.testing.assert_array_equal(c1, c2)
    for j in range(50):
        np.testing.assert_array_equal(s1[j, :c1[j]], s2[j, :c2[j]])
        np.testing.assert_array_equal(k1[j, :c1[j]], k2[j, :c2[j]])


def test_segment_keys_round_trip_in_data_order():
    rng = np.random.default_rng(4)
    f = rng.integers(0, 1 << 23, 1000)
    r = rng.integers(0, 1 << 24, 1000)
    s = rng.integers(0, 300, 1000)
    k = np.array([segment_keys(int(a), np.array([b]), np.array([c]))[0] for a, b, c in zip(f, r, s)])
    assert (k >= 0).all()
    assert [(key_file(x), key_record(x), key_start(x)) for x in k] == list(zip(f, r, s))
    assert (np.argsort(k, kind="stable") == np.lexsort((s, r, f))).all()  # key order is (file, record, start)
