"""`yt8m-engine extract` frames/s against the deprecated extractor's way, on the same videos.

Model: an Inception-sized stand-in (no download possible here): Keras' InceptionV3 architecture with
random weights (23.8 M parameters, ~5.7 GFLOP a 299 x 299 frame, the real graph's arithmetic), frozen
into a GraphDef with the real file's names (`DecodeJpeg:0` -> Cast -> ExpandDims -> ResizeBilinear ->
Sub -> Mul -> ... -> `pool_3:0`, `pool_3/_reshape:0` [1, 2048]) and PCA files of the real shapes.
Videos: synthetic 640 x 360 H.264 at 25 fps (moving content), --seconds long.

Baseline (feature_extractor/extract_tfrecords_main.py): every frame decoded in the main thread and the
1 fps frames picked by timestamp (its frame_iterator), each picked frame fed alone at DecodeJpeg:0 in one
session.run for pool_3/_reshape, the PCA per frame in NumPy, rounding quantization.
Ours: the `yt8m-engine extract` command (decoding on a thread of its own, frames batched through the
graph converted to ONNX, cached from a first use timed apart, under ONNX Runtime; PCA on the batch), RGB only (`--insert_zero_audio_features`, as the baseline) for the ratio; a
third run adds VGGish audio features (stand-in checkpoint of the real shapes: 72 M parameters), whose
cost is printed beside it (the baseline has no audio to compare with).
The videos carry a 44.1 kHz stereo AAC track.

Each side runs as a process of its own (wall time, peak RSS: proc.py), alternated --repeat times; the
median is reported. Prints: NAME ours=X baseline=Y ratio=Z (peak RSS, machine).
Usage: python benchmarks/bench_extract.py [--videos 2] [--seconds 60] [--repeat 1]
"""
import argparse
import os
import platform
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from proc import timed  # noqa: E402

BASELINE = r"""
import sys, time, numpy as np
from yt8m_engine.extract.features import Inception, Pca
import av
model_dir, videos = sys.argv[1], sys.argv[2:]
inc = Inception(model_dir)
mean = np.load(model_dir + "/mean.npy")[:, 0]
vecs = np.load(model_dir + "/eigenvecs.npy").T[:, :1024]
vals = np.load(model_dir + "/eigenvals.npy")[:1024, 0]
n = 0
for path in videos:
    c = av.open(path)
    last = -1e9
    for f in c.decode(c.streams.video[0]):          # every frame decoded (cv2's read())
        t = float(f.time)
        if t < last + 1.0:
            continue
        last = t
        x = inc.one_frame(f.to_ndarray(format="rgb24"))          # one session.run a frame
        x = ((x - mean).reshape(1, 2048) @ vecs).reshape(1024) / np.sqrt(vals + 1e-4)
        q = [int(round(v)) for v in (np.clip(x, -2, 2) + 2) * (255 / 4)]
        n += 1
        if n % 300 == 0:
            pass
    c.close()
print(n)
"""


def realistic_standin(model_dir):
    """Keras' InceptionV3 (random weights) frozen into a GraphDef with the real file's names."""
    from yt8m_engine.train.quiet_tf import tf
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    import keras

    base = keras.applications.InceptionV3(weights=None, include_top=False, pooling="avg", input_shape=(299, 299, 3))

    @tf.function(input_signature=[tf.TensorSpec([None, None, 3], tf.uint8)])
    def graph(DecodeJpeg):  # noqa: N803 - the real graph's input name
        x = tf.cast(DecodeJpeg, tf.float32, name="Cast")
        x = tf.expand_dims(x, 0, name="ExpandDims")
        x = tf.compat.v1.image.resize_bilinear(x, [299, 299], name="ResizeBilinear")
        x = tf.multiply(tf.subtract(x, 128.0, name="Sub"), 1.0 / 128.0, name="Mul")
        pool = tf.reshape(base(x, training=False), [-1, 1, 1, 2048], name="pool_3")
        return tf.reshape(pool, [1, 2048], name="pool_3/_reshape")

    gd = convert_variables_to_constants_v2(graph.get_concrete_function()).graph.as_graph_def()
    for node in gd.node:  # the input placeholder under the real graph's name
        if node.op == "Placeholder":
            node.name = "DecodeJpeg"
    for node in gd.node:
        node.input[:] = ["DecodeJpeg" if i == "DecodeJpeg_1" or i.split(":")[0] == "DecodeJpeg" else i for i in node.input]
    os.makedirs(model_dir, exist_ok=True)
    with open(os.path.join(model_dir, "classify_image_graph_def.pb"), "wb") as f:
        f.write(gd.SerializeToString())
    rng = np.random.default_rng(0)
    np.save(os.path.join(model_dir, "mean.npy"), rng.uniform(0, 0.5, (2048, 1)).astype(np.float32))
    q, _ = np.linalg.qr(rng.normal(size=(2048, 2048)))
    np.save(os.path.join(model_dir, "eigenvecs.npy"), q.T.astype(np.float32))
    np.save(os.path.join(model_dir, "eigenvals.npy"), np.sort(rng.uniform(1e-3, 0.05, (2048, 1)), axis=0)[::-1])


def make_video(path, seconds, w=640, h=360, rate=25):
    import av

    out = av.open(path, "w")
    s = out.add_stream("libx264", rate=rate)
    s.width, s.height, s.pix_fmt = w, h, "yuv420p"
    a = out.add_stream("aac", rate=44100)
    a.layout = "stereo"
    yy, xx = np.mgrid[0:h, 0:w]
    for i in range(seconds * rate):
        img = np.stack([(xx + 3 * i) % 256, (yy + i) % 256, (xx + yy + 7 * i) % 256], -1).astype(np.uint8)
        for p in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
            out.mux(p)
    for p in s.encode():
        out.mux(p)
    t = np.arange(seconds * 44100) / 44100
    wave = np.stack([np.sin(2 * np.pi * (200 + 30 * t) * t), np.sin(2 * np.pi * 660 * t)]).astype(np.float32) * 0.3
    for i in range(0, wave.shape[1], 1024):
        fr = av.AudioFrame.from_ndarray(np.ascontiguousarray(wave[:, i:i + 1024]), format="fltp", layout="stereo")
        fr.sample_rate, fr.pts = 44100, i
        for p in a.encode(fr):
            out.mux(p)
    for p in a.encode():
        out.mux(p)
    out.close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--videos", type=int, default=2)
    ap.add_argument("--seconds", type=int, default=60)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--model-dir", default=None, help="real or stand-in model files (default: build a stand-in)")
    a = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="bench_extract_")
    model_dir = a.model_dir or os.path.join(tmp, "yt8m")
    if not a.model_dir:
        from yt8m_engine.extract.standin import write_vggish_standin

        t = time.perf_counter()
        realistic_standin(model_dir)
        write_vggish_standin(model_dir)
        print(f"stand-in Inception-v3 graph and VGGish checkpoint written in {time.perf_counter() - t:.0f} s",
              file=sys.stderr)
    videos = [os.path.join(tmp, f"v{i}.mp4") for i in range(a.videos)]
    for v in videos:
        make_video(v, a.seconds)
    frames = a.videos * a.seconds
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    # first use of a model folder: the graphs are converted to ONNX (checked against TensorFlow) and
    # cached; timed here, once, and not in the runs below
    t = time.perf_counter()
    timed([sys.executable, "-c", "import sys; from yt8m_engine.extract.features import load_inception; "
           "from yt8m_engine.extract.audio import Vggish; load_inception(sys.argv[1]); Vggish(sys.argv[1])",
           model_dir], env)
    print(f"first use (ONNX conversion of both graphs, checked against TensorFlow): "
          f"{time.perf_counter() - t:.0f} s", file=sys.stderr)
    audio_cmd = [sys.executable, "-m", "yt8m_engine.cli", "extract", *videos, "--output_tfrecords_file",
                 os.path.join(tmp, "out.tfrecord"), "--model_dir", model_dir, "-q"]
    ours_cmd = audio_cmd + ["--insert_zero_audio_features"]
    base_cmd = [sys.executable, "-c", BASELINE, model_dir, *videos]
    ours, base, audio = [], [], []
    for _ in range(a.repeat):
        ours.append(timed(ours_cmd, env)[:2])
        s, rss, out = timed(base_cmd, env)
        assert int(out.split()[-1]) == frames, out
        base.append((s, rss))
        audio.append(timed(audio_cmd, env)[:2])
    o = sorted(ours)[len(ours) // 2]
    b = sorted(base)[len(base) // 2]
    w = sorted(audio)[len(audio) // 2]
    machine = f"{os.cpu_count()} CPUs, {platform.processor() or platform.machine()}"
    print(f"extract frames/s ({a.videos} videos x {a.seconds} s, 640x360 25 fps H.264, Inception-sized stand-in): "
          f"ours={frames / o[0]:.2f} ({o[0]:.1f} s, peak RSS {o[1]:.0f} MB) "
          f"baseline={frames / b[0]:.2f} ({b[0]:.1f} s, peak RSS {b[1]:.0f} MB) ratio={b[0] / o[0]:.2f}x ({machine})")
    print(f"extract with VGGish audio: {frames / w[0]:.2f} frames/s ({w[0]:.1f} s, peak RSS {w[1]:.0f} MB): "
          f"the audio costs {100 * (w[0] / o[0] - 1):.0f}% over RGB only")


if __name__ == "__main__":
    main()
