"""The TF-free reader against TensorFlow's own parser, on files written by us and by TensorFlow."""
import glob

import numpy as np
import pytest

from yt8m_engine import format as fmt
from yt8m_engine.io import proto
from yt8m_engine.io.reader import Reader, read_all
from yt8m_engine.io.tfrecord import frame_record, masked_crc
from yt8m_engine.io.writer import FrameLevelWriter, frame_level_record
from yt8m_engine.kernels.dequant import dequantize

tf = pytest.importorskip("tensorflow")


def starter_dequantize(feat_vector, max_quantized_value=2, min_quantized_value=-2):
    """The starter code's Dequantize (utils.py), run in TensorFlow."""
    quantized_range = max_quantized_value - min_quantized_value
    scalar = quantized_range / 255.0
    bias = (quantized_range / 512.0) + min_quantized_value
    return feat_vector * scalar + bias


def tf_parse_frame_file(path, segments=False):
    ctx_spec = {"id": tf.io.FixedLenFeature([], tf.string), "labels": tf.io.VarLenFeature(tf.int64)}
    if segments:
        ctx_spec.update({"segment_labels": tf.io.VarLenFeature(tf.int64),
                         "segment_start_times": tf.io.VarLenFeature(tf.int64),
                         "segment_scores": tf.io.VarLenFeature(tf.float32)})
    seq_spec = {"rgb": tf.io.FixedLenSequenceFeature([], tf.string),
                "audio": tf.io.FixedLenSequenceFeature([], tf.string)}
    out = []
    for rec in tf.data.TFRecordDataset(path):
        ctx, seq = tf.io.parse_single_sequence_example(rec, context_features=ctx_spec, sequence_features=seq_spec)
        rgb = tf.cast(tf.io.decode_raw(seq["rgb"], tf.uint8), tf.float32)
        audio = tf.cast(tf.io.decode_raw(seq["audio"], tf.uint8), tf.float32)
        feats = tf.concat([starter_dequantize(rgb), starter_dequantize(audio)], axis=1).numpy()
        item = {"id": ctx["id"].numpy().decode(), "labels": ctx["labels"].values.numpy(), "frames": feats}
        if segments:
            for k in ("segment_labels", "segment_start_times", "segment_scores"):
                item[k] = ctx[k].values.numpy()
        out.append(item)
    return out


def assert_same_as_tf(path, segments=False):
    ref = tf_parse_frame_file(path, segments)
    b = read_all(path, segments=segments)
    assert len(b) == len(ref)
    deq = dequantize(b.frames)
    for i, r in enumerate(ref):
        assert b.ids[i] == r["id"]
        np.testing.assert_array_equal(b.video_labels(i), r["labels"])
        n = b.num_frames[i]
        assert n == r["frames"].shape[0]
        # value for value, bit for bit
        np.testing.assert_array_equal(deq[b.frame_offsets[i]:b.frame_offsets[i + 1]], r["frames"])
        if segments:
            s = slice(b.segment_offsets[i], b.segment_offsets[i + 1])
            np.testing.assert_array_equal(b.segment_labels[s], r["segment_labels"])
            np.testing.assert_array_equal(b.segment_starts[s], r["segment_start_times"])
            np.testing.assert_array_equal(b.segment_scores[s], r["segment_scores"])


def test_reader_equals_tensorflow_on_our_files(synth_dir):
    assert_same_as_tf(sorted(glob.glob(f"{synth_dir}/2/frame/train*"))[0])
    assert_same_as_tf(sorted(glob.glob(f"{synth_dir}/3/frame/validate*"))[0], segments=True)


def test_reader_equals_tensorflow_on_files_written_by_tensorflow(tmp_path):
    rng = np.random.default_rng(7)
    path = str(tmp_path / "tf_written.tfrecord")
    with tf.io.TFRecordWriter(path) as w:
        for i in range(12):
            t = int(rng.integers(1, 40))
            ctx = tf.train.Features(feature={
                "id": tf.train.Feature(bytes_list=tf.train.BytesList(value=[f"vid{i}".encode()])),
                "labels": tf.train.Feature(int64_list=tf.train.Int64List(value=rng.integers(0, 3862, 3).tolist())),
                "segment_labels": tf.train.Feature(int64_list=tf.train.Int64List(value=[3, 7])),
                "segment_start_times": tf.train.Feature(int64_list=tf.train.Int64List(value=[0, 5 * ((t - 1) // 5)])),
                "segment_scores": tf.train.Feature(float_list=tf.train.FloatList(value=[1.0, 0.0])),
            })
            rgb = rng.integers(0, 256, (t, 1024), dtype=np.uint8)
            audio = rng.integers(0, 256, (t, 128), dtype=np.uint8)
            rgb[0, :4] = [0, 255, 128, 1]
            fl = tf.train.FeatureLists(feature_list={
                "rgb": tf.train.FeatureList(feature=[tf.train.Feature(bytes_list=tf.train.BytesList(value=[r.tobytes()])) for r in rgb]),
                "audio": tf.train.FeatureList(feature=[tf.train.Feature(bytes_list=tf.train.BytesList(value=[a.tobytes()])) for a in audio]),
            })
            w.write(tf.train.SequenceExample(context=ctx, feature_lists=fl).SerializeToString())
    assert_same_as_tf(path, segments=True)


def test_video_level_equals_tensorflow(synth_dir):
    path = sorted(glob.glob(f"{synth_dir}/2/video/train*"))[0]
    spec = {"id": tf.io.FixedLenFeature([], tf.string), "labels": tf.io.VarLenFeature(tf.int64),
            "mean_rgb": tf.io.FixedLenFeature([1024], tf.float32), "mean_audio": tf.io.FixedLenFeature([128], tf.float32)}
    recs = list(tf.data.TFRecordDataset(path).batch(1000))[0]
    ref = tf.io.parse_example(recs, spec)
    b = read_all(path, fmt.FeatureSpec.default(False))
    assert b.ids == [x.decode() for x in ref["id"].numpy()]
    np.testing.assert_array_equal(b.features, np.concatenate([ref["mean_rgb"].numpy(), ref["mean_audio"].numpy()], 1))
    np.testing.assert_array_equal(b.labels, ref["labels"].values.numpy())


def test_legacy_video_id_and_unpacked_lists(tmp_path):
    """Old files use 'video_id'; protobuf writers may emit unpacked repeated scalars."""
    frames = np.arange(3 * 1152, dtype=np.int64).reshape(3, 1152).astype(np.uint8)
    unpacked_labels = proto._ld(3, b"".join(proto._enc_varint(1 << 3) + proto._enc_varint(v) for v in (5, 3861)))
    ctx = {"video_id": proto.feature_bytes([b"abc"]), "labels": unpacked_labels}
    rec = proto.sequence_example(ctx, {"rgb": proto.frame_feature_list(frames[:, :1024]),
                                       "audio": proto.frame_feature_list(frames[:, 1024:])})
    with FrameLevelWriter(str(tmp_path / "x.tfrecord")) as w:
        w.write(rec)
    b = read_all(str(tmp_path / "x.tfrecord"))
    assert b.ids == ["abc"]
    assert b.labels.tolist() == [5, 3861]
    np.testing.assert_array_equal(b.video_frames(0), frames)
    padded, nf = b.padded_frames(max_frames=5)
    assert padded.shape == (1, 5, 1152) and nf.tolist() == [3]
    np.testing.assert_array_equal(padded[0, :3], frames)
    assert not padded[0, 3:].any()


def test_dequantize_matches_reference_exactly():
    q = np.arange(256, dtype=np.uint8).repeat(7).reshape(-1, 8)
    out = dequantize(q)
    ref = q.astype(np.float32) * np.float32(4 / 255) + np.float32(4 / 512 - 2)
    np.testing.assert_array_equal(out, ref)
    assert out.dtype == np.float32
    assert dequantize(np.array([255], np.uint8))[0] == np.float32(2.0078125)
    assert dequantize(np.array([0], np.uint8))[0] == np.float32(-1.9921875)
    np.testing.assert_array_equal(out, starter_dequantize(tf.constant(q.astype(np.float32))).numpy())


def test_masked_crc_known_vectors():
    assert masked_crc(b"123456789") == (((0xE3069283 >> 15) | (0xE3069283 << 17)) + 0xA282EAD8) & 0xFFFFFFFF
    # the framing TensorFlow writes is the framing we write
    path_bytes = frame_record(b"hello")
    assert path_bytes[:8] == (5).to_bytes(8, "little")
    assert int.from_bytes(path_bytes[8:12], "little") == masked_crc(path_bytes[:8])


def test_frames_truncated_at_max_frames(tmp_path):
    rec = frame_level_record("v", [1], rgb=np.zeros((20, 1024), np.uint8), audio=np.zeros((20, 128), np.uint8))
    with FrameLevelWriter(str(tmp_path / "x.tfrecord")) as w:
        w.write(rec)
    b = list(Reader(max_frames=8).read(str(tmp_path / "x.tfrecord")))[0]
    assert b.num_frames.tolist() == [8] and b.frames.shape == (8, 1152)


def _odd_frame(data: bytes, variant: int) -> bytes:
    """One FeatureList entry holding `data`, encoded the way protobuf allows but our writer never
    writes (so the decoder's general path, not its canonical-prefix fast path, reads it)."""
    def long_varint(n):  # a length in one byte more than needed
        out = bytearray(proto._enc_varint(n))
        out[-1] |= 0x80
        return bytes(out) + b"\x00"

    if variant == 0:  # the value's length as a non-minimal varint
        return proto._ld(1, proto._ld(1, b"\x0a" + long_varint(len(data)) + data))
    feature = proto._ld(1, proto._ld(1, data))  # the entry's length as a non-minimal varint
    return b"\x0a" + long_varint(len(feature)) + feature


def test_non_canonical_frames_read_like_tensorflow_and_segment_layout(tmp_path):
    """Every frame encoding protobuf accepts decodes as TensorFlow decodes it; and reading straight
    into the 5-frame segment layout (pad_frames=5) gives the same segments as cutting them out."""
    rng = np.random.default_rng(5)
    path = str(tmp_path / "odd.tfrecord")
    with FrameLevelWriter(path) as w:
        for i, t in enumerate([1, 4, 5, 6, 12, 2, 9]):
            rgb = rng.integers(0, 256, (t, 1024), dtype=np.uint8)
            audio = rng.integers(0, 256, (t, 128), dtype=np.uint8)
            if i % 2:  # canonical
                lists = {"rgb": proto.frame_feature_list(rgb), "audio": proto.frame_feature_list(audio)}
            else:  # each frame in one of the odd encodings, mixed with canonical ones
                enc = [lambda d, k: _odd_frame(d, k % 2), lambda d, k: proto.frame_feature_list(
                    np.frombuffer(d, np.uint8)[None])]
                lists = {"rgb": b"".join(enc[k % 3 == 2](r.tobytes(), k) for k, r in enumerate(rgb)),
                         "audio": b"".join(enc[k % 3 == 0](a.tobytes(), k) for k, a in enumerate(audio))}
            w.write(proto.sequence_example({"id": proto.feature_bytes([f"v{i}".encode()]),
                                            "labels": proto.feature_int64([i])}, lists))
    assert_same_as_tf(path)
    plain = read_all(path)
    padded = read_all(path, pad_frames=5)
    assert padded.frame_pad == 5 and (padded.frame_offsets % 5 == 0).all()
    for i in range(len(plain)):
        np.testing.assert_array_equal(padded.video_frames(i), plain.video_frames(i))
    for a, b in zip(plain.segments(), padded.segments()):
        np.testing.assert_array_equal(a, b)
    frames, nf, video, start = padded.segments()
    assert np.shares_memory(frames, padded.frames)  # a view: nothing copied
    assert nf.tolist() == [1, 4, 5, 5, 1, 5, 5, 2, 2, 5, 4] and start.tolist() == [0, 0, 0, 0, 5, 0, 5, 10, 0, 0, 5]
    for j in range(len(nf)):
        assert not frames[j, nf[j]:].any()  # padding rows are zero


def test_reused_frame_buffer_gives_the_same_batches(synth_dir):
    """infer's workers parse chunk after chunk into one frame buffer (store): the same batches."""
    from yt8m_engine.io.tfrecord import scan_records

    path = sorted(glob.glob(f"{synth_dir}/3/frame/validate*"))[0]
    r = Reader(pad_frames=5)
    buf = np.fromfile(path, np.uint8)
    offs, lens, status = scan_records(buf)
    store: list = []
    chunks = [slice(a, a + 5) for a in range(0, len(offs), 5)]
    fresh = [r.parse_records(buf, offs[c], lens[c], status[c], path, c.start) for c in chunks]
    assert len(fresh) > 2
    for c, f in zip(chunks, fresh):
        b = r.parse_records(buf, offs[c], lens[c], status[c], path, c.start, store)
        assert b.ids == f.ids and np.shares_memory(b.frames, store[0])
        np.testing.assert_array_equal(b.frames, f.frames)
        np.testing.assert_array_equal(b.record_index, f.record_index)


@pytest.mark.parametrize("kind", ["GZIP", "ZLIB"])
def test_compressed_tfrecords_written_by_tensorflow(synth_dir, tmp_path, kind):
    """TFRecordOptions GZIP / ZLIB files read as the uncompressed file does (small blocks: records cut by
    block ends, carried across the stream); a damaged stream is one error naming the file."""
    import gzip
    import zlib

    from yt8m_engine import Yt8mError
    from yt8m_engine.io.tfrecord import record_blocks

    src = sorted(glob.glob(f"{synth_dir}/3/frame/validate*"))[0]
    path = str(tmp_path / f"c.{kind}.tfrecord")
    with tf.io.TFRecordWriter(path, options=kind) as w:
        for rec in tf.data.TFRecordDataset(src):
            w.write(rec.numpy())
    raw = open(src, "rb").read()
    packed = open(path, "rb").read()
    assert packed != raw and (gzip.decompress(packed) if kind == "GZIP" else zlib.decompress(packed)) == raw
    a, b = read_all(src, segments=True), read_all(path, segments=True)
    assert b.ids == a.ids and np.array_equal(b.frames, a.frames) and np.array_equal(b.segment_starts, a.segment_starts)
    blocks = list(record_blocks(path, lambda n: np.empty(n, np.uint8), block_bytes=1000))
    assert sum(len(blk.offsets) for blk in blocks) == len(a) and len(blocks) > 2
    (tmp_path / "cut.tfrecord").write_bytes(packed[: len(packed) // 2])
    with pytest.raises(Yt8mError, match="cut.tfrecord"):
        read_all(str(tmp_path / "cut.tfrecord"))
