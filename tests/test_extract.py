"""Your own videos (issue 15): frames by timestamps, features equal to a plain reference of the published
algorithm on stand-in model files, records the rest of the engine (and TensorFlow) reads, predict, and
bad videos named."""
import json
import os
import subprocess
import sys
from fractions import Fraction

import numpy as np
import pytest

from yt8m_engine import Yt8mError

av = pytest.importorskip("av")
tf = pytest.importorskip("tensorflow")

CLI = [sys.executable, "-m", "yt8m_engine.cli"]


def color(second):
    return np.array([(37 * second) % 256, (91 * second + 40) % 256, (17 * second + 200) % 256], np.uint8)


def signal(n, rate):
    """A test sound, a function of time (the same at any sample rate): a 440 Hz tone whose loudness
    changes every second, and a quieter 1500 Hz and a rising chirp."""
    t = np.arange(n) / rate
    return 0.25 * np.sin(2 * np.pi * 440 * t) * (1 + np.floor(t) % 3) / 3 + \
        0.05 * np.sin(2 * np.pi * 1500 * t) + 0.03 * np.sin(2 * np.pi * (300 + 400 * t) * t)


def write_pcm(out, a, rate, channels, seconds):
    """16-bit PCM audio into stream a: the signal alone (mono), or twice the signal left and silence right
    (their mean is the signal)."""
    n = int(rate * seconds)
    x = signal(n, rate)[None] if channels == 1 else np.stack([2 * signal(n, rate), np.zeros(n)])
    w = np.round(x * 32767).astype(np.int16)
    for i in range(0, n, 1024):
        fr = av.AudioFrame.from_ndarray(np.ascontiguousarray(w[:, i:i + 1024].T.reshape(1, -1)), format="s16",
                                        layout=a.layout.name)
        fr.sample_rate, fr.pts = rate, i
        for p in a.encode(fr):
            out.mux(p)
    for p in a.encode():
        out.mux(p)
    return w[0] / 32767 if channels == 1 else None


def write_video(path, times, codec="libx264", size=(64, 48), tone=False, rate=25, pcm=None):
    """A video whose frame at time t shows the color of second floor(t); frames at the given times (a
    variable frame rate when they are irregular); a 440 Hz tone as AAC audio when asked, or the test
    sound as PCM (pcm=(sample rate, channels)); returns the path (and the mono PCM waveform)."""
    out = av.open(str(path), "w")
    s = out.add_stream(codec, rate=rate)
    s.width, s.height = size
    s.pix_fmt = "yuv420p"
    s.time_base = Fraction(1, 1000)
    a = None
    if tone:
        a = out.add_stream("aac", rate=16000)
        a.layout = "mono"
    if pcm:
        a = out.add_stream("pcm_s16le", rate=pcm[0])
        a.layout = "mono" if pcm[1] == 1 else "stereo"
    for t in times:
        img = np.broadcast_to(color(int(t)), (size[1], size[0], 3)).copy()
        f = av.VideoFrame.from_ndarray(img, format="rgb24")
        f.pts = int(round(t * 1000))
        f.time_base = Fraction(1, 1000)
        for p in s.encode(f):
            out.mux(p)
    for p in s.encode():
        out.mux(p)
    if pcm:
        wave = write_pcm(out, a, *pcm, max(times) + 1)
        out.close()
        return str(path), wave
    if a is not None:
        n = int(16000 * (max(times) + 1))
        wave = (0.3 * np.sin(2 * np.pi * 440 * np.arange(n) / 16000)).astype(np.float32)[None]
        for i in range(0, n, 1024):
            fr = av.AudioFrame.from_ndarray(wave[:, i:i + 1024], format="fltp", layout="mono")
            fr.sample_rate = 16000
            fr.pts = i
            for p in a.encode(fr):
                out.mux(p)
        for p in a.encode():
            out.mux(p)
    out.close()
    return str(path)


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    d = tmp_path_factory.mktemp("videos")
    return {
        "mp4": write_video(d / "steady.mp4", [i / 10 for i in range(70)], tone=True),          # 10 fps, 7 s
        "vfr": write_video(d / "vfr.mkv", [0.0, 0.3, 1.2, 1.25, 2.9, 3.1, 3.2], codec="libvpx-vp9"),
        "avi": write_video(d / "noaudio.avi", [i / 4 for i in range(12)], codec="mpeg4", size=(96, 64)),
        "broken": str(_write(d / "broken.mp4", os.urandom(5000))),
        "empty": str(_write(d / "empty.mp4", b"")),
        "audio_only": _audio_only(d / "tone.m4a"),
        "pcm": write_video(d / "pcm.mkv", [i / 10 for i in range(45)], pcm=(16000, 1)),      # 16 kHz mono PCM
        "pcm48": write_video(d / "pcm48.mov", [i / 10 for i in range(45)], pcm=(48000, 2))[0],
    }


def _write(p, data):
    p.write_bytes(data)
    return p


def _audio_only(path):
    out = av.open(str(path), "w")
    a = out.add_stream("aac", rate=16000)
    a.layout = "mono"
    fr = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
    fr.sample_rate = 16000
    fr.pts = 0
    for p in list(a.encode(fr)) + list(a.encode()):
        out.mux(p)
    out.close()
    return str(path)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    from yt8m_engine.extract.standin import write_standin

    return write_standin(str(tmp_path_factory.mktemp("yt8m")))


def test_frames_are_taken_by_timestamp(videos):
    from yt8m_engine.extract.video import sample_frames

    def seconds(path, **kw):
        out = []
        for f in sample_frames(path, **kw):
            px = f[f.shape[0] // 2, f.shape[1] // 2].astype(int)
            out.append(int(np.argmin([np.abs(px - color(s)).sum() for s in range(10)])))
        return out

    assert seconds(videos["mp4"]) == [0, 1, 2, 3, 4, 5, 6]                # one a second, not one per 25 frames
    assert seconds(videos["mp4"], fps=2) == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6]
    assert seconds(videos["mp4"], max_frames=3) == [0, 1, 2]
    assert seconds(videos["vfr"]) == [0, 1, 2, 3]                         # at 0, 1.2, 2.9, 3.1 s
    assert seconds(videos["avi"]) == [0, 1, 2]


def test_bad_videos_are_named(videos):
    from yt8m_engine.extract.video import sample_frames

    for key, msg in (("broken", "cannot open the video"), ("empty", "cannot open the video"),
                     ("audio_only", "has no video stream")):
        with pytest.raises(Yt8mError, match=msg) as e:
            list(sample_frames(videos[key]))
        assert videos[key] in str(e.value)


def reference_features(model_dir, frames):
    """The published algorithm, plainly: each frame through the graph as the deprecated extractor fed it,
    the starter's PCA from the .npy files, clip, truncating 8-bit quantization."""
    from yt8m_engine.extract.features import Inception

    inc = Inception(model_dir)
    pool = np.stack([inc.one_frame(f) for f in frames]).astype(np.float64)
    mean = np.load(f"{model_dir}/mean.npy")[:, 0]
    vecs = np.load(f"{model_dir}/eigenvecs.npy").T[:, :1024]
    vals = np.load(f"{model_dir}/eigenvals.npy")[:1024, 0]
    x = (pool - mean) @ vecs / np.sqrt(vals + 1e-4)
    q = np.floor((np.clip(x, -2, 2) + 2) * 255 / 4)
    return np.clip(q, 0, 255).astype(np.uint8), x


def reference_log_mel(wave, n, fps=1.0):
    """VGGish's input (vggish_input / mel_features), plainly: per example k and 10 ms frame j, 400 samples
    from (round(k * 100 / fps) + j) * 160 (zeros past the end), periodic Hann, |512-point FFT|, the mel
    triangles built bin by bin, log(mel + 0.01)."""
    def mel(hz):
        return 1127.0 * np.log(1.0 + hz / 700.0)

    bins = mel(np.linspace(0, 8000, 257))
    edges = np.linspace(mel(125.0), mel(7500.0), 66)
    m = np.zeros((257, 64))
    for i in range(64):
        lo, c, hi = edges[i:i + 3]
        for b in range(1, 257):                    # the DC bin's row stays zero
            m[b, i] = max(0.0, min((bins[b] - lo) / (c - lo), (hi - bins[b]) / (hi - c)))
    hann = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(400) / 400)
    out = np.zeros((n, 96, 64))
    for k in range(n):
        for j in range(96):
            a = (int(round(k * 100 / fps)) + j) * 160
            seg = np.zeros(400)
            part = wave[a:a + 400]
            seg[:len(part)] = part
            out[k, j] = np.log(np.abs(np.fft.rfft(seg * hann, 512)) @ m + 0.01)
    return out


def reference_vggish(model_dir, examples):
    """VGGish (vggish_slim) in float64 NumPy from the checkpoint, then vggish_postprocess: the PCA, clip,
    (x + 2) * 255 / 4 truncated to uint8. Returns (embeddings, PCA'd features, quantized)."""
    reader = tf.train.load_checkpoint(f"{model_dir}/vggish_model.ckpt")

    def get(name):
        return reader.get_tensor(f"vggish/{name}/weights"), reader.get_tensor(f"vggish/{name}/biases")

    def conv(x, name):                             # 3 x 3, stride 1, SAME, ReLU
        w, b = get(name)
        h, wd = x.shape[1:3]
        p = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
        return np.maximum(sum(p[:, i:i + h, j:j + wd] @ w[i, j] for i in range(3) for j in range(3)) + b, 0)

    def pool(x):                                   # 2 x 2, stride 2 (the sizes here are even)
        n, h, w, c = x.shape
        return x.reshape(n, h // 2, 2, w // 2, 2, c).max((2, 4))

    x = np.asarray(examples, np.float64)[..., None]
    x = pool(conv(x, "conv1"))
    x = pool(conv(x, "conv2"))
    x = pool(conv(conv(x, "conv3/conv3_1"), "conv3/conv3_2"))
    x = pool(conv(conv(x, "conv4/conv4_1"), "conv4/conv4_2")).reshape(len(x), -1)
    for name in ("fc1/fc1_1", "fc1/fc1_2"):
        w, b = get(name)
        x = np.maximum(x @ w + b, 0)
    w, b = get("fc2")
    emb = x @ w + b                                # no activation
    pca = np.load(f"{model_dir}/vggish_pca_params.npz")
    feats = (pca["pca_eigen_vectors"] @ (emb.T - pca["pca_means"])).T
    return emb, feats, ((np.clip(feats, -2, 2) + 2) * (255 / 4)).astype(np.uint8)


def close_in_bins(got, ref):
    """float32 against a float64 reference moves a value across a bin edge now and then, by one step."""
    diff = np.abs(got.astype(int) - ref.astype(int))
    assert diff.max() <= 1 and (diff == 0).mean() > 0.99, ((diff > 0).mean(), diff.max())


def test_audio_features_match_plain_references(model_dir):
    from yt8m_engine.extract.audio import Vggish, log_mel_examples
    from yt8m_engine.extract.features import quantize

    wave = signal(3 * 16000 + 123, 16000)
    for n, fps in ((4, 1.0), (7, 2.0)):            # the last examples run past the end: silence
        ours = log_mel_examples(wave, n, fps)
        assert ours.shape == (n, 96, 64) and ours.dtype == np.float32
        np.testing.assert_allclose(ours, reference_log_mel(wave, n, fps), atol=2e-5)
    ex = reference_log_mel(wave, 4)
    emb, feats, q = reference_vggish(model_dir, ex)
    v = Vggish(model_dir)
    got = v.embeddings(ex.astype(np.float32))
    np.testing.assert_allclose(got, emb, rtol=1e-4, atol=1e-4 * np.abs(emb).max())
    f = v(wave, 4)
    np.testing.assert_allclose(f, feats, atol=1e-3 * np.abs(feats).max())
    close_in_bins(quantize(f), q)
    assert 10 < q.std() and len(np.unique(q)) > 100     # the stand-in's features use the 8 bits
    assert not np.array_equal(q[0], q[1])               # louder each second: different features


def test_extract_writes_the_dataset_layout_with_reference_features(videos, model_dir, tmp_path):
    from yt8m_engine.extract.video import sample_frames
    from yt8m_engine.io.inspect import inspect
    from yt8m_engine.io.reader import read_all

    csv = tmp_path / "videos.csv"
    csv.write_text(f"{videos['mp4']},5;2\n{videos['avi']},7\n{videos['vfr']},\n")
    out = str(tmp_path / "mine.tfrecord")
    r = subprocess.run(CLI + ["extract", "--input_videos_csv", str(csv), "--output_tfrecords_file", out,
                              "--model_dir", model_dir], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "3 videos" in r.stdout and "audio: VGGish; 2 videos without an audio stream: zero audio" in r.stdout
    b = read_all(out)
    assert [list(b.video_labels(i)) for i in range(3)] == [[2, 5], [7], []]
    assert list(b.num_frames) == [7, 3, 4] and b.ids[0] == videos["mp4"]
    ref, x = reference_features(model_dir, list(sample_frames(videos["mp4"])))
    got = b.video_frames(0)
    # the features: float32 arithmetic against this float64 reference moves a value across a bin edge
    # now and then (by one step), nothing more
    diff = np.abs(got[:, :1024].astype(int) - ref)
    assert diff.max() <= 1 and (diff == 0).mean() > 0.995, ((diff > 0).mean(), diff.max())
    assert got[:, 1024:].std() > 5                            # VGGish audio from the AAC tone
    assert not b.video_frames(1)[:, 1024:].any()              # no audio stream: zero audio
    assert inspect(out).totals()["corrupt"] == 0
    # TensorFlow's parser reads it as the dataset
    rec = next(iter(tf.data.TFRecordDataset(out)))
    ctx, seq = tf.io.parse_single_sequence_example(
        rec, context_features={"id": tf.io.FixedLenFeature([], tf.string), "labels": tf.io.VarLenFeature(tf.int64),
                               "mean_rgb": tf.io.FixedLenFeature([1024], tf.float32)},
        sequence_features={k: tf.io.FixedLenSequenceFeature([], tf.string) for k in ("rgb", "audio")})
    assert seq["rgb"].shape[0] == 7 and np.allclose(ctx["mean_rgb"].numpy(), x.mean(0), atol=1e-4)
    # video level: Examples with mean_rgb / mean_audio
    vout = str(tmp_path / "video.tfrecord")
    r = subprocess.run(CLI + ["extract", videos["avi"], "--output_tfrecords_file", vout, "--model_dir", model_dir,
                              "--skip_frame_level_features"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    from yt8m_engine.format import FeatureSpec

    vb = read_all(vout, FeatureSpec.default(False))
    assert vb.features.shape == (1, 1152) and not vb.features[0, 1024:].any()
    # --shards: video i in file i % N
    r = subprocess.run(CLI + ["extract", "--input_videos_csv", str(csv), "--output_tfrecords_file",
                              str(tmp_path / "s.tfrecord"), "--model_dir", model_dir, "--shards", "2"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    parts = [read_all(str(tmp_path / f"s-0000{i}-of-00002.tfrecord")) for i in range(2)]
    assert [p.ids for p in parts] == [[b.ids[0], b.ids[2]], [b.ids[1]]]


def test_extract_audio_equals_the_reference_on_the_decoded_waveform(videos, model_dir, tmp_path):
    """16 kHz mono PCM: the records' audio is the reference pipeline on the exact samples; 48 kHz stereo
    PCM of the same sound (twice it left, silence right) resamples and averages to nearly the same."""
    from yt8m_engine.io.reader import read_all

    path, wave = videos["pcm"]
    out = str(tmp_path / "a.tfrecord")
    r = subprocess.run(CLI + ["extract", path, videos["pcm48"], "--output_tfrecords_file", out, "--model_dir",
                              model_dir], capture_output=True, text=True)
    assert r.returncode == 0 and "audio: VGGish" in r.stdout and "without" not in r.stdout, r.stderr[-2000:]
    b = read_all(out)
    assert list(b.num_frames) == [5, 5]
    _, feats, q = reference_vggish(model_dir, reference_log_mel(wave, 5))
    close_in_bins(b.video_frames(0)[:, 1024:], q)
    ctx = tf.io.parse_single_sequence_example(next(iter(tf.data.TFRecordDataset(out))), context_features={
        "mean_audio": tf.io.FixedLenFeature([128], tf.float32)})[0]
    np.testing.assert_allclose(ctx["mean_audio"].numpy(), feats.mean(0), atol=1e-3 * np.abs(feats).max())
    d = np.abs(b.video_frames(1)[:, 1024:].astype(int) - q.astype(int))
    assert d.mean() < 1.0 and np.percentile(d, 99) <= 3, (d.mean(), d.max())
    # the starter extractor's records: zero audio; or none at all
    for flag, lists in (("--insert_zero_audio_features", ["audio", "rgb"]), ("--insert_zero_audio_features=false", ["rgb"])):
        r = subprocess.run(CLI + ["extract", path, "--output_tfrecords_file", out, "--model_dir", model_dir, flag],
                           capture_output=True, text=True)
        assert r.returncode == 0, r.stderr[-2000:]
        seq = tf.train.SequenceExample.FromString(next(iter(tf.data.TFRecordDataset(out))).numpy())
        assert sorted(seq.feature_lists.feature_list) == lists
        if "audio" in lists:
            assert not b"".join(f.bytes_list.value[0] for f in seq.feature_lists.feature_list["audio"].feature).strip(b"\0")


def test_graphdef_reader_equals_tensorflows_parse(model_dir):
    from yt8m_engine.extract.convert import read_graphdef

    data = open(f"{model_dir}/classify_image_graph_def.pb", "rb").read()
    ours = read_graphdef(data)
    gd = tf.compat.v1.GraphDef.FromString(data)
    assert list(ours) == [n.name for n in gd.node]
    for n in gd.node:
        o = ours[n.name]
        assert (o.op, o.inputs) == (n.op, list(n.input))
        if n.op == "Const":
            np.testing.assert_array_equal(o.attrs["value"], tf.make_ndarray(n.attr["value"].tensor))
        for k in ("strides", "ksize"):
            if k in n.attr:
                assert o.attrs[k] == list(n.attr[k].list.i)
    bn = ours["conv/batchnorm"]
    assert bn.op == "BatchNormWithGlobalNormalization" and bn.attrs["scale_after_normalization"] is True
    assert bn.attrs["variance_epsilon"] == pytest.approx(0.001)


def test_inception_converts_once_and_falls_back_to_tensorflow(tmp_path):
    """The ONNX conversion equals TensorFlow on the graph, is cached and rebuilt when the GraphDef changes;
    a graph with an op the converter does not know runs under TensorFlow, with a note saying so."""
    from yt8m_engine.extract.convert import OnnxRunner
    from yt8m_engine.extract.features import Inception, load_inception
    from yt8m_engine.extract.standin import inception_standin_graph, write_standin

    d = write_standin(str(tmp_path / "m"), audio=False)
    notes = []
    frames = np.random.default_rng(3).integers(0, 256, (3, 40, 70, 3), dtype=np.uint8)
    m = load_inception(d, echo=notes.append)
    assert isinstance(m, OnnxRunner) and not notes and os.path.exists(f"{d}/classify_image_graph_def.onnx")
    np.testing.assert_allclose(m(frames), Inception(d)(frames), atol=1e-5)
    stamp = os.stat(f"{d}/classify_image_graph_def.onnx").st_mtime_ns
    assert isinstance(load_inception(d), OnnxRunner)                 # the cache, as it was
    assert os.stat(f"{d}/classify_image_graph_def.onnx").st_mtime_ns == stamp
    (tmp_path / "m" / "classify_image_graph_def.pb").write_bytes(inception_standin_graph(seed=5).SerializeToString())
    m2 = load_inception(d, echo=notes.append)                            # another graph: converted again
    assert isinstance(m2, OnnxRunner) and not notes
    np.testing.assert_allclose(m2(frames), Inception(d)(frames), atol=1e-5)
    assert not np.allclose(m2(frames), m(frames))
    gd = inception_standin_graph()
    next(n for n in gd.node if n.name == "conv_1").op = "Elu"           # TensorFlow runs it; the converter cannot
    (tmp_path / "m" / "classify_image_graph_def.pb").write_bytes(gd.SerializeToString())
    m3 = load_inception(d, echo=notes.append)
    assert isinstance(m3, Inception) and len(notes) == 1 and "op Elu (conv_1)" in notes[0], notes


def test_extract_runs_without_tensorflow_once_converted(videos, model_dir, tmp_path):
    """A machine without TensorFlow (a GPU box with ONNX Runtime only) extracts with the converted models:
    the same records as with TensorFlow installed."""
    from yt8m_engine.extract.audio import Vggish
    from yt8m_engine.extract.convert import OnnxRunner
    from yt8m_engine.extract.features import load_inception
    from yt8m_engine.io.reader import read_all

    assert isinstance(load_inception(model_dir), OnnxRunner)         # converted (and cached) here
    assert isinstance(Vggish(model_dir).net, OnnxRunner)
    args = ["extract", videos["mp4"], videos["avi"], "--model_dir", model_dir, "--output_tfrecords_file"]
    r = subprocess.run(CLI + args + [str(tmp_path / "tf.tfrecord")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    no_tf = [sys.executable, "-c", "import sys, runpy; sys.modules['tensorflow'] = None; "
             "runpy.run_module('yt8m_engine.cli', run_name='__main__')"]
    r = subprocess.run(no_tf + args + [str(tmp_path / "notf.tfrecord")], capture_output=True, text=True)
    assert r.returncode == 0 and "audio: VGGish" in r.stdout, r.stderr[-2000:]
    a, b = read_all(str(tmp_path / "tf.tfrecord")), read_all(str(tmp_path / "notf.tfrecord"))
    assert a.ids == b.ids and np.array_equal(a.num_frames, b.num_frames)
    assert all(np.array_equal(a.video_frames(i), b.video_frames(i)) for i in range(2))
    # a first use there: the Inception graph converts without TensorFlow (said), VGGish's checkpoint
    # cannot be read (one line naming the file and the ways out); zero audio needs no VGGish
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    for f in os.listdir(model_dir):
        if not f.endswith(".onnx"):
            os.link(os.path.join(model_dir, f), fresh / f)
    args[args.index(model_dir)] = str(fresh)
    r = subprocess.run(no_tf + args + [str(tmp_path / "x.tfrecord")], capture_output=True, text=True)
    assert r.returncode == 2 and "vggish_model.ckpt" in r.stderr and "--insert_zero_audio_features" in r.stderr \
        and "Traceback" not in r.stderr and "without the check against TensorFlow" in r.stderr, r.stderr[-2000:]
    r = subprocess.run(no_tf + args + [str(tmp_path / "z.tfrecord"), "--insert_zero_audio_features"],
                       capture_output=True, text=True)
    assert r.returncode == 0 and "without the check" not in r.stderr, r.stderr[-2000:]    # converted: cached
    z = read_all(str(tmp_path / "z.tfrecord"))
    assert all(np.array_equal(z.video_frames(i)[:, :1024], a.video_frames(i)[:, :1024]) for i in range(2))


def test_bad_videos_stop_the_run_or_are_skipped_and_counted(videos, model_dir, tmp_path):
    out = tmp_path / "x.tfrecord"
    args = CLI + ["extract", videos["mp4"], videos["broken"], videos["audio_only"], "--output_tfrecords_file",
                  str(out), "--model_dir", model_dir]
    r = subprocess.run(args, capture_output=True, text=True)
    assert r.returncode == 2 and videos["broken"] in r.stderr and "Traceback" not in r.stderr
    assert not out.exists() and not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]
    r = subprocess.run(args + ["--skip-corrupt", "--providers", "cpu"], capture_output=True, text=True)
    assert r.returncode == 0 and "1 videos, 7 frames; 2 videos skipped" in r.stdout, r.stdout + r.stderr
    assert "has no video stream" in r.stderr
    r = subprocess.run(args + ["--providers", "tensorrt"], capture_output=True, text=True)
    assert r.returncode == 2 and "--providers tensorrt" in r.stderr and "not usable here" in r.stderr, r.stderr
    # missing model files, offline: one line naming the folder and the fix
    r = subprocess.run(CLI + ["extract", videos["mp4"], "--output_tfrecords_file", str(out), "--model_dir",
                              str(tmp_path / "nothing")], capture_output=True, text=True,
                       env={**os.environ, "http_proxy": "http://127.0.0.1:9", "HTTP_PROXY": "http://127.0.0.1:9"})
    assert r.returncode == 2 and "cannot download" in r.stderr and "copy" in r.stderr, r.stderr[-1000:]


@pytest.mark.slow
def test_extract_train_export_predict_round_trip(videos, model_dir, tmp_path):
    """extract -> inspect -> train -> export -> predict, as the README's workflow."""
    out = str(tmp_path / "mine.tfrecord")
    csv = tmp_path / "videos.csv"
    csv.write_text("".join(f"{videos[k]},{c}\n" for k, c in (("mp4", 3), ("avi", 9), ("vfr", 3))))
    run = lambda *a: subprocess.run(CLI + list(a), capture_output=True, text=True)  # noqa: E731
    for args in (["extract", "--input_videos_csv", str(csv), "--output_tfrecords_file", out, "--model_dir", model_dir],
                 ["inspect", out],
                 ["train", "--train_data_pattern", out, "--train_dir", str(tmp_path / "t"), "--frame_features",
                  "--model", "FrameLevelLogisticModel", "--feature_names", "rgb,audio", "--feature_sizes", "1024,128",
                  "--batch_size", "2", "--max_steps", "3", "--num_classes", "3862"],
                 ["export", "--train_dir", str(tmp_path / "t"), "--output", str(tmp_path / "m.onnx")]):
        r = run(*args)
        assert r.returncode == 0, (args[0], r.stderr[-2000:])
    vocab = tmp_path / "vocabulary.csv"
    vocab.write_text("Index,TrainVideoCount,KnowledgeGraphId,Name\n3,1,/m/x,Trains\n9,1,/m/y,Cats\n")
    r = run("predict", videos["mp4"], videos["avi"], "--model", str(tmp_path / "m.onnx"), "--model_dir", model_dir,
            "--vocabulary", str(vocab), "--top_k", "5", "--json")
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads(r.stdout)
    assert [x["video"] for x in res] == [videos["mp4"], videos["avi"]] and res[0]["frames"] == 7
    top = res[0]["classes"]
    assert len(top) == 5 and top[0]["score"] >= top[-1]["score"]
    assert all(0 <= c["best_segment"]["start_seconds"] <= 5 for c in top)
    r = run("predict", videos["mp4"], "--model", str(tmp_path / "m.onnx"), "--model_dir", model_dir,
            "--vocabulary", str(vocab))
    assert r.returncode == 0 and "best 5 s at" in r.stdout and videos["mp4"] in r.stdout
