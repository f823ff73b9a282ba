"""Fuzz (issue 14): a few hundred mutated records and partial rankings, fixed seed. Every outcome is one
of: read exactly as TensorFlow's parser decodes the record, or refused with a Yt8mError naming the file and
record. Never a traceback, a crash, or a silently different value."""
import os

import numpy as np
import pytest

from yt8m_engine import Yt8mError
from yt8m_engine import format as fmt
from yt8m_engine.infer import infer, merge
from yt8m_engine.io.reader import Reader
from yt8m_engine.io.tfrecord import frame_record
from yt8m_engine.io.writer import frame_level_record, video_level_record
from yt8m_engine.rank.partial import checksum

tf = pytest.importorskip("tensorflow")


def mutate(rng, data: bytes) -> bytes:
    b = bytearray(data)
    for _ in range(int(rng.integers(1, 4))):
        op = rng.integers(0, 4)
        at = int(rng.integers(0, len(b)))
        if op == 0:                                   # flip bits of one byte
            b[at] ^= int(rng.integers(1, 256))
        elif op == 1:                                 # set a byte to a varint-ish extreme
            b[at] = int(rng.choice([0x00, 0x7F, 0x80, 0xFF]))
        elif op == 2:                                 # delete a few bytes
            del b[at:at + int(rng.integers(1, 9))]
        else:                                         # insert a few bytes
            b[at:at] = rng.integers(0, 256, int(rng.integers(1, 9)), dtype=np.uint8).tobytes()
        if not b:
            break
    return bytes(b)


def reference(payload: bytes, frame_level: bool):
    """What TensorFlow's parser (the starter's readers) decodes, reduced to what our reader returns; None
    where TensorFlow or the dataset's schema refuses it."""
    ctx = {"id": tf.io.FixedLenFeature([], tf.string), "labels": tf.io.VarLenFeature(tf.int64)}
    try:
        if frame_level:
            c, seq = tf.io.parse_single_sequence_example(
                payload, context_features=ctx,
                sequence_features={k: tf.io.FixedLenSequenceFeature([], tf.string) for k in ("rgb", "audio")})
        else:
            c = tf.io.parse_single_example(payload, {**ctx, "mean_rgb": tf.io.FixedLenFeature([1024], tf.float32),
                                                     "mean_audio": tf.io.FixedLenFeature([128], tf.float32)})
    except (tf.errors.InvalidArgumentError, ValueError):
        return None
    out = {"id": c["id"].numpy(), "labels": c["labels"].values.numpy().tolist()}
    if frame_level:
        for name, size in (("rgb", 1024), ("audio", 128)):
            vals = seq[name].numpy().tolist()
            if any(len(v) != size for v in vals):
                return None
            out[name] = b"".join(vals[:fmt.MAX_FRAMES])
    else:
        out["mean_rgb"] = c["mean_rgb"].numpy()
    return out


def test_mutated_records_are_read_exactly_or_refused_by_name(tmp_path):
    rng = np.random.default_rng(2024)
    r = np.random.default_rng(0)
    base = [frame_level_record("Ab3d", [5, 17], rgb=r.integers(0, 256, (7, 1024), dtype=np.uint8),
                               audio=r.integers(0, 256, (7, 128), dtype=np.uint8), segment_labels=[17],
                               segment_start_times=[5], segment_scores=[1.0]),
            frame_level_record("z9", [1], rgb=r.integers(0, 256, (2, 1024), dtype=np.uint8),
                               audio=r.integers(0, 256, (2, 128), dtype=np.uint8))]
    vbase = video_level_record("Qq1w", [3, 4], mean_rgb=r.normal(size=1024), mean_audio=r.normal(size=128))
    good = frame_level_record("good", [2], rgb=np.zeros((1, 1024), np.uint8), audio=np.zeros((1, 128), np.uint8))
    outcomes = {"read": 0, "refused": 0}
    for i in range(300):
        frame_level = i % 4 != 3
        payload = mutate(rng, base[i % 2] if frame_level else vbase)
        spec = fmt.FeatureSpec.default(frame_level)
        path = str(tmp_path / f"m{i}.tfrecord")
        with open(path, "wb") as f:
            f.write(frame_record(payload))  # valid framing around hostile content
        ref = reference(payload, frame_level)
        try:
            b = next(Reader(spec, segments=frame_level).read(path))
        except Yt8mError as e:
            assert f"{path}: record 0: " in str(e), str(e)
            outcomes["refused"] += 1
        else:
            outcomes["read"] += 1
            assert ref is not None, f"case {i}: read a record protobuf refuses"
            assert [b.ids[0].encode()] == [ref["id"]] and list(b.labels) == ref["labels"], f"case {i}"
            if frame_level:
                n = int(b.num_frames[0])
                got = b.video_frames(0)
                assert got[:, :1024].tobytes() == ref["rgb"] and got[:, 1024:].tobytes() == ref["audio"], f"case {i}"
                assert n == len(ref["rgb"]) // 1024
            else:
                assert np.array_equal(b.features[0, :1024], ref["mean_rgb"], equal_nan=True), f"case {i}"
        # with --skip-corrupt the record after it is always read
        with open(path, "ab") as f:
            f.write(frame_record(good if frame_level else vbase))
        rd = Reader(spec, segments=frame_level, skip_corrupt=True)
        ids = [x for bb in rd.read(path) for x in bb.ids]
        assert ids[-1] == ("good" if frame_level else "Qq1w") and len(ids) + rd.corrupt == 2, f"case {i}"
    assert outcomes["read"] > 10 and outcomes["refused"] > 100, outcomes


def test_mutated_partials_are_merged_validly_or_refused(trained_flm, learn_dir, tmp_path):
    _, onnx_path, _ = trained_flm
    pattern = f"{learn_dir}/3/frame/*"
    parts = [str(tmp_path / f"p{i}.npz") for i in range(2)]
    for i, p in enumerate(parts):
        infer(onnx_path, pattern, p, segment_labels=True, progress=False, segment_max_pred=40, shard=f"{i}/2")
    with np.load(parts[0]) as z:
        d = {k: z[k] for k in z.files}
    known = set()
    for p in parts:
        with np.load(p) as z:
            known |= {bytes(z["id_bytes"][a:b]) for a, b in zip(z["id_off"][:-1], z["id_off"][1:])}
    rng = np.random.default_rng(7)
    out = str(tmp_path / "m.csv")
    merged = refused = 0
    for i in range(120):
        m = dict(d)
        key = str(rng.choice(sorted(m)))
        a = np.asarray(m[key])
        how = i % 5
        if how == 0:
            del m[key]
        elif how == 1 and a.size and a.dtype.kind in "iuf":   # values shifted
            flat = a.reshape(-1).copy()
            j = int(rng.integers(0, flat.size))
            flat[j] = flat[j] + rng.choice([-1, 1, 1 << 20, -(1 << 40)]) if a.dtype.kind != "f" else np.nan
            m[key] = flat.reshape(a.shape)
        elif how == 2:                                       # cut short
            m[key] = a.reshape(-1)[: max(0, a.size - 1)]
        elif how == 3:                                       # another dtype
            m[key] = a.astype(np.float64) if a.dtype.kind in "iub" else (
                a.astype(np.int64) if a.dtype.kind == "f" else np.array(str(a)[::-1]))
        else:                                                # random bytes of another shape
            m[key] = rng.integers(-5, 5, int(rng.integers(0, 6)))
        bad = str(tmp_path / "bad.npz")
        forged = i % 2 == 1  # checksum made for the mutated content: the arrays' own checks must hold
        if forged:
            m = {k: v for k, v in m.items() if k != "checksum"}
            m["checksum"] = np.array(checksum(m))
        np.savez(bad, **m)
        if os.path.exists(out):
            os.remove(out)
        try:
            merge([bad, parts[1]], out)
        except Yt8mError as e:
            assert "bad.npz" in str(e) or "shard" in str(e) or "segment_max_pred" in str(e), str(e)
            assert not os.path.exists(out)
            refused += 1
            continue
        merged += 1
        lines = open(out).read().splitlines()
        assert lines[0] == "Class,Segments"
        for line in lines[1:]:
            cls, segs = line.split(",")
            assert int(cls) >= 0
            for s in segs.split():
                vid, start = s.rsplit(":", 1)
                assert (fmt.valid_video_id(vid.encode()) if forged else vid.encode() in known), (i, key, s)
                assert int(start) % 5 == 0, (i, key, s)
    assert refused > 40, (merged, refused)
