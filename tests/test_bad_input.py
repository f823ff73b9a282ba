"""Every kind of bad input gives one clear error naming the file, the record and the problem."""
import os
import subprocess
import sys

import numpy as np
import pytest

from yt8m_engine import Yt8mError
from yt8m_engine import format as fmt
from yt8m_engine.io import proto
from yt8m_engine.io.reader import Reader, read_all
from yt8m_engine.io.tfrecord import frame_record
from yt8m_engine.io.writer import frame_level_record


def good(i=0, frames=7, labels=(1, 2)):
    rng = np.random.default_rng(i)
    return frame_level_record(f"v{i}", list(labels), rgb=rng.integers(0, 256, (frames, 1024), dtype=np.uint8),
                              audio=rng.integers(0, 256, (frames, 128), dtype=np.uint8))


def seq_record(ctx, frames=4, rgb_bytes=1024, audio=True):
    """A SequenceExample with zero frames of the given sizes (audio=False leaves the list out)."""
    lists = {"rgb": proto.frame_feature_list(np.zeros((frames, rgb_bytes), np.uint8))}
    if audio:
        lists["audio"] = proto.frame_feature_list(np.zeros((frames, 128), np.uint8))
    return proto.sequence_example(ctx, lists)


def write(path, payloads, raw_tail=b""):
    with open(path, "wb") as f:
        for p in payloads:
            f.write(frame_record(p))
        f.write(raw_tail)
    return str(path)


def expect_error(path, pattern, **kw):
    with pytest.raises(Yt8mError) as e:
        read_all(path, **kw)
    msg = str(e.value)
    assert path in msg
    assert pattern in msg, msg
    return msg


def test_skip_corrupt_counts(tmp_path):
    bad = bytearray(frame_record(good(1)))
    bad[20] ^= 0xFF
    path = str(tmp_path / "f.tfrecord")
    with open(path, "wb") as f:
        f.write(frame_record(good(0)) + bytes(bad) + frame_record(good(2)))
    expect_error(path, "record 1: payload CRC mismatch")
    r = Reader(skip_corrupt=True)
    b = list(r.read(path))[0]
    assert b.ids == ["v0", "v2"] and r.corrupt == 1 and "record 1" in r.problems[0]


def test_truncated_file(tmp_path):
    data = frame_record(good(0)) + frame_record(good(1))
    path = str(tmp_path / "t.tfrecord")
    with open(path, "wb") as f:
        f.write(data[:-30])
    expect_error(path, "record 1: truncated record")
    r = Reader(skip_corrupt=True)
    assert [x for b in r.read(path) for x in b.ids] == ["v0"] and r.corrupt == 1


def test_length_crc_mismatch(tmp_path):
    data = bytearray(frame_record(good(0)))
    data[9] ^= 1
    path = str(tmp_path / "l.tfrecord")
    open(path, "wb").write(bytes(data) + frame_record(good(1)))
    expect_error(path, "record 0: length CRC mismatch")
    r = Reader(skip_corrupt=True)  # the next record's header is found again
    assert [x for b in r.read(path) for x in b.ids] == ["v1"] and r.corrupt == 1


def test_not_a_proto(tmp_path):
    path = write(tmp_path / "p.tfrecord", [good(0), b"\xff\xff\xff\xff garbage"])
    expect_error(path, "record 1: payload is not a valid tf.train.SequenceExample")


def test_frame_of_wrong_length(tmp_path):
    ctx = {"id": proto.feature_bytes([b"x"]), "labels": proto.feature_int64([1])}
    rec = seq_record(ctx, rgb_bytes=1000)
    path = write(tmp_path / "w.tfrecord", [rec])
    expect_error(path, "record 0: frame 0 of 'rgb' has 1000 bytes, expected 1024")


def test_missing_feature(tmp_path):
    ctx = {"id": proto.feature_bytes([b"x"]), "labels": proto.feature_int64([1])}
    rec = seq_record(ctx, audio=False)
    path = write(tmp_path / "m.tfrecord", [rec])
    expect_error(path, "missing required feature list 'audio'")
    no_id = seq_record({"labels": proto.feature_int64([1])})
    path = write(tmp_path / "m2.tfrecord", [no_id])
    expect_error(path, "missing required feature 'id'")


def test_video_level_file_read_as_frame_level(synth_dir):
    import glob
    path = sorted(glob.glob(f"{synth_dir}/2/video/train*"))[0]
    expect_error(path, "missing required feature list 'rgb'")


def test_class_id_out_of_range(tmp_path):
    ctx = {"id": proto.feature_bytes([b"x"]), "labels": proto.feature_int64([1, 3862])}
    rec = seq_record(ctx)
    path = write(tmp_path / "c.tfrecord", [rec])
    expect_error(path, "class id 3862 in 'labels' is outside [0, 3862)")


def test_segment_past_frames(tmp_path):
    ctx = {"id": proto.feature_bytes([b"x"]), "labels": proto.feature_int64([3]),
           "segment_labels": proto.feature_int64([3]), "segment_start_times": proto.feature_int64([10]),
           "segment_scores": proto.feature_float([1.0])}
    rec = seq_record(ctx, frames=8)
    path = write(tmp_path / "s.tfrecord", [rec])
    expect_error(path, "segment start time 10 is outside the video's 8 frames", segments=True)


def test_wrong_feature_type(tmp_path):
    ctx = {"id": proto.feature_bytes([b"x"]), "labels": proto.feature_float([1.0])}
    rec = seq_record(ctx, frames=1)
    path = write(tmp_path / "ty.tfrecord", [rec])
    expect_error(path, "feature 'labels' is a float_list, expected int64_list")


def test_empty_file_and_no_match(tmp_path):
    path = str(tmp_path / "empty.tfrecord")
    open(path, "wb").close()
    expect_error(path, "file is empty")
    with pytest.raises(Yt8mError, match="no files match"):
        read_all(str(tmp_path / "nothing*.tfrecord"))


def test_cli_reports_one_line_without_traceback(tmp_path):
    path = write(tmp_path / "p.tfrecord", [good(0), b"\xff\xff\xff\xff garbage"])
    r = subprocess.run([sys.executable, "-m", "yt8m_engine.cli", "inspect", path, "--json"],
                       capture_output=True, text=True)
    assert r.returncode == 1  # inspect reports every bad record, then exits 1: a download check can be scripted
    import json
    totals = json.loads(r.stdout)["totals"]
    assert totals["records"] == 1 and totals["corrupt"] == 1
    for key in ("files", "records", "frames", "labels", "rated_segments", "positive_segments", "corrupt"):
        assert key in totals
    r = subprocess.run([sys.executable, "-m", "yt8m_engine.cli", "inspect", str(tmp_path / "zzz*")],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "Traceback" not in r.stderr and "no files match" in r.stderr
    clean = write(tmp_path / "ok.tfrecord", [good(0)])
    r = subprocess.run([sys.executable, "-m", "yt8m_engine.cli", "inspect", clean], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_writer_rejects_bad_values(tmp_path):
    with pytest.raises(Yt8mError, match="class id 4000"):
        frame_level_record("v", [4000], rgb=np.zeros((2, 1024)), audio=np.zeros((2, 128)))
    with pytest.raises(Yt8mError, match="shape"):
        frame_level_record("v", [1], rgb=np.zeros((2, 1000)), audio=np.zeros((2, 128)))
    assert fmt.quantize(np.array([-3.0, 2.0, 0.0])).tolist() == [0, 255, 128]


def framing(path, block=None):
    """(record index, status, payload bytes or None for broken framing) of a whole file, or of the
    blocks `record_blocks` reads it in (one reused buffer, as infer reuses its buffers)."""
    from yt8m_engine.io.tfrecord import E_PAYLOAD_CRC, OK, record_blocks, scan_records

    def entry(buf, off, ln, st):
        return (int(st), bytes(buf[off:off + ln]) if st in (OK, E_PAYLOAD_CRC) else None)

    if block is None:
        buf = np.fromfile(path, np.uint8)
        return [(i,) + entry(buf, o, n, s) for i, (o, n, s) in enumerate(zip(*scan_records(buf)))]
    store = [np.zeros(0, np.uint8)]

    def take(n):
        if store[0].size < n:
            store[0] = np.empty(n, np.uint8)
        return store[0]

    out = []
    read = 0
    for buf, offs, lens, status, first, fresh in record_blocks(path, take, block):
        out += [(first + i,) + entry(buf, o, n, s) for i, (o, n, s) in enumerate(zip(offs, lens, status))]
        read += fresh
    # every byte read once, whatever is carried between blocks (past a damaged header too)
    assert read == os.path.getsize(path)
    return out


@pytest.mark.parametrize("block", [16, 5000, 30000, 1 << 20])
def test_record_blocks_frame_files_as_a_whole_file_scan(tmp_path, block):
    """infer reads files in blocks of whole records: a record cut by a block's end is carried over, a
    record larger than a block gets a larger buffer, and every framing problem reads as before."""
    recs = [frame_record(good(i, frames=f)) for i, f in enumerate([1, 9, 30, 2, 17, 5])]
    ok = b"".join(recs)
    bad_payload = bytearray(ok)
    bad_payload[len(recs[0]) + len(recs[1]) + 40] ^= 0xFF  # record 2's payload
    bad_length = bytearray(ok)
    bad_length[sum(len(r) for r in recs[:3]) + 2] ^= 1    # record 3's length: framing resumes at record 4
    two = bytearray(bad_length)
    two[len(recs[0]) + 9] ^= 4                            # and record 1's length CRC
    last = bytearray(ok)
    last[sum(len(r) for r in recs[:5]) + 1] ^= 8          # the last record's length
    cases = {"ok": ok, "truncated": ok[:-30], "payload": bytes(bad_payload), "length": bytes(bad_length),
             "two": bytes(two), "last": bytes(last), "empty": b""}
    for name, data in cases.items():
        path = str(tmp_path / f"{name}.tfrecord")
        open(path, "wb").write(data)
        assert framing(path, block) == framing(path), name
    assert [s for _, s, _ in framing(str(tmp_path / "length.tfrecord"), block)] == [0, 0, 0, 2, 0, 0]
    assert [s for _, s, _ in framing(str(tmp_path / "two.tfrecord"), block)] == [0, 2, 0, 2, 0, 0]
    assert [s for _, s, _ in framing(str(tmp_path / "last.tfrecord"), block)] == [0, 0, 0, 0, 0, 2]
    # what --skip-corrupt loses is what is damaged: one record a damaged header
    r = Reader(skip_corrupt=True)
    assert [x for b in r.read(str(tmp_path / "two.tfrecord")) for x in b.ids] == ["v0", "v2", "v4", "v5"]
    assert r.corrupt == 2 and "record 1: length CRC mismatch" in r.problems[0]
