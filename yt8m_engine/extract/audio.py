"""Audio features as the dataset's: VGGish (AudioSet's `vggish_model.ckpt` and `vggish_pca_params.npz`),
one 128-byte vector per RGB frame.

The waveform: the first audio stream, decoded by PyAV (FFmpeg), resampled to 16 kHz, channels averaged
to mono. The VGGish input, as its published NumPy code computes it (vggish_input / mel_features):
magnitudes of a 512-point FFT over 25 ms periodic-Hann windows every 10 ms, 64 mel bands over 125-7500
Hz (its triangular matrix, DC row zeroed), log(mel + 0.01), 96 frames (0.96 s) an example.
Examples are cut one per RGB frame: example k starts k / fps seconds after the first audio sample (at 1
frame a second: 0.96 s windows a second apart, as MediaPipe's YouTube-8M graph frames them); audio that
ends before the video's last frame is padded with silence (zero samples), so there are exactly as many
audio vectors as RGB frames. The network: VGGish's convolutions and max-pools, fc1 (2 x 4096, ReLU) and
fc2 (128, no activation: `vggish/fc2/BiasAdd`, what MediaPipe reads). Post-processing as
vggish_postprocess: (embedding - pca_means) @ pca_eigen_vectors.T (PCA and whitening in one matrix),
clip to [-2, 2], 8 bits by truncation (its `astype(uint8)`: the rule of the RGB features too).
The network runs under ONNX Runtime once converted (see Vggish).
"""
from __future__ import annotations

import os
import sys

import numpy as np

from ..errors import Yt8mError

VGGISH_URLS = {"vggish_model.ckpt": "https://storage.googleapis.com/audioset/vggish_model.ckpt",
               "vggish_pca_params.npz": "https://storage.googleapis.com/audioset/vggish_pca_params.npz"}
CKPT_FILE, PCA_FILE = VGGISH_URLS
ONNX_FILE = "vggish_model.onnx"   # the network converted from the checkpoint (cached)
SAMPLE_RATE = 16000
WINDOW, HOP, FFT = 400, 160, 512          # 25 ms, 10 ms, the next power of two
MEL_BANDS, MEL_LOW_HZ, MEL_HIGH_HZ, LOG_OFFSET = 64, 125.0, 7500.0, 0.01
EXAMPLE_FRAMES = 96                       # 0.96 s of 10 ms frames
BATCH = 32                                # examples a network call (bounds the activations: ~50 MB)

# (scope, kind, shape): the checkpoint's variables, vggish_slim's names and shapes
LAYERS = (("conv1", "conv", (3, 3, 1, 64)), ("pool",), ("conv2", "conv", (3, 3, 64, 128)), ("pool",),
          ("conv3/conv3_1", "conv", (3, 3, 128, 256)), ("conv3/conv3_2", "conv", (3, 3, 256, 256)), ("pool",),
          ("conv4/conv4_1", "conv", (3, 3, 256, 512)), ("conv4/conv4_2", "conv", (3, 3, 512, 512)), ("pool",),
          ("fc1/fc1_1", "fc", (12288, 4096)), ("fc1/fc1_2", "fc", (4096, 4096)), ("fc2", "linear", (4096, 128)))


def decode_audio(path: str, seconds: float) -> np.ndarray | None:
    """The first `seconds` of the first audio stream as float64 mono at 16 kHz (None: no audio stream).
    Memory: those samples only (the video's length does not matter)."""
    from .video import open_media

    av, container = open_media(path)
    with container:
        if not container.streams.audio:
            return None
        stream = container.streams.audio[0]
        resampler = av.AudioResampler(format="fltp", rate=SAMPLE_RATE)   # the stream's channels kept
        need, parts, have = int(np.ceil(seconds * SAMPLE_RATE)), [], 0
        try:
            for frame in container.decode(stream):
                for out in resampler.resample(frame):
                    parts.append(out.to_ndarray().mean(0, dtype=np.float64))
                    have += parts[-1].size
                if have >= need:
                    break
            else:
                parts += [out.to_ndarray().mean(0, dtype=np.float64) for out in resampler.resample(None)]
        except av.error.FFmpegError as e:
            raise Yt8mError(f"{path}: the audio is damaged ({e})") from None
    wave = np.concatenate(parts) if parts else np.zeros(0)
    return wave[:need]


def mel_matrix() -> np.ndarray:
    """[257, 64]: FFT bins -> mel bands, mel_features.spectrogram_to_mel_matrix's triangles."""
    def mel(hz):
        return 1127.0 * np.log(1.0 + np.asarray(hz, np.float64) / 700.0)

    bins = mel(np.linspace(0.0, SAMPLE_RATE / 2, FFT // 2 + 1))
    edges = np.linspace(mel(MEL_LOW_HZ), mel(MEL_HIGH_HZ), MEL_BANDS + 2)
    lower = (bins[:, None] - edges[None, :-2]) / (edges[1:-1] - edges[:-2])
    upper = (edges[None, 2:] - bins[:, None]) / (edges[2:] - edges[1:-1])
    m = np.maximum(0.0, np.minimum(lower, upper))
    m[0, :] = 0.0
    return m


def log_mel_examples(wave: np.ndarray, n: int, fps: float = 1.0) -> np.ndarray:
    """float32 [n, 96, 64]: example k is the log-mel spectrogram of the 96 frames from k / fps seconds
    on (zero samples past the end of the waveform)."""
    starts = np.round(np.arange(n) * (SAMPLE_RATE / HOP) / fps).astype(np.int64)   # in 10 ms frames
    need = (int(starts[-1]) + EXAMPLE_FRAMES - 1) * HOP + WINDOW if n else 0
    if wave.size < need:
        wave = np.concatenate([wave, np.zeros(need - wave.size)])
    window = 0.5 - 0.5 * np.cos(2 * np.pi / WINDOW * np.arange(WINDOW))   # periodic Hann
    mel, out = mel_matrix(), np.empty((n, EXAMPLE_FRAMES, MEL_BANDS), np.float32)
    for lo in range(0, n, BATCH):   # a batch of examples at a time: bounded memory
        first = starts[lo:lo + BATCH, None] + np.arange(EXAMPLE_FRAMES)          # [b, 96] frame numbers
        samples = (first * HOP)[..., None] + np.arange(WINDOW)                  # [b, 96, 400]
        mag = np.abs(np.fft.rfft(wave[samples] * window, FFT))
        out[lo:lo + BATCH] = np.log(mag @ mel + LOG_OFFSET)
    return out


class Vggish:
    """VGGish's network and post-processing. The network runs under ONNX Runtime (built once from the
    checkpoint, which needs TensorFlow to read, checked against TensorFlow, and cached beside it as
    vggish_model.onnx, keyed by the checkpoint's SHA-256); under TensorFlow when that is not possible."""

    def __init__(self, model_dir: str, providers: str = "auto", echo=None):
        pca = os.path.join(model_dir, PCA_FILE)
        try:
            with np.load(pca) as z:
                vecs, means = z["pca_eigen_vectors"], z["pca_means"]
        except (OSError, ValueError, KeyError) as e:
            raise Yt8mError(f"{pca}: cannot read the VGGish PCA parameters ({e})") from None
        if vecs.shape != (128, 128) or means.size != 128:
            raise Yt8mError(f"{pca}: PCA parameters of unexpected shapes (pca_eigen_vectors {vecs.shape}, "
                            f"pca_means {means.shape}; expected [128, 128], [128, 1])")
        self.pca_t = np.ascontiguousarray(vecs.T, np.float32)
        self.pca_means = means.reshape(1, 128).astype(np.float32)
        self.net = _load_net(model_dir, providers, echo or (lambda s: print(s, file=sys.stderr)))

    def embeddings(self, examples: np.ndarray) -> np.ndarray:
        """[n, 96, 64] log-mel examples -> [n, 128] fc2 pre-activations."""
        out = [self.net(np.ascontiguousarray(examples[i:i + BATCH], np.float32))
               for i in range(0, len(examples), BATCH)]
        return np.concatenate(out) if out else np.zeros((0, 128), np.float32)

    def __call__(self, wave: np.ndarray, n: int, fps: float = 1.0) -> np.ndarray:
        """A mono 16 kHz waveform -> [n, 128] float PCA'd features (one per RGB frame), unclipped."""
        return (self.embeddings(log_mel_examples(wave, n, fps)) - self.pca_means) @ self.pca_t


def read_checkpoint(model_dir: str) -> list[np.ndarray]:
    """The checkpoint's weights and biases in LAYERS' order (TensorFlow reads it, V1 or V2)."""
    from ..train.quiet_tf import tf

    ckpt = os.path.join(model_dir, CKPT_FILE)
    try:
        reader = tf.train.load_checkpoint(ckpt)
    except Exception as e:  # noqa: BLE001 - TensorFlow's DataLossError, NotFoundError, ...
        raise Yt8mError(f"{ckpt}: not a TensorFlow checkpoint ({str(e).splitlines()[0][:200]})") from None
    shapes, out = reader.get_variable_to_shape_map(), []
    for name, _, shape in (layer for layer in LAYERS if layer[0] != "pool"):
        for var, want in ((f"vggish/{name}/weights", shape), (f"vggish/{name}/biases", shape[-1:])):
            if tuple(shapes.get(var, ())) != want:
                raise Yt8mError(f"{ckpt}: not the VGGish checkpoint ({var}: {shapes.get(var, 'missing')}, "
                                f"expected {list(want)})")
            out.append(reader.get_tensor(var).astype(np.float32))
    return out


class _TfNet:
    """The network as one TensorFlow function (the reference, and the fallback)."""

    def __init__(self, weights: list[np.ndarray]):
        from ..train.quiet_tf import tf

        self.tf, self.weights = tf, [tf.constant(w) for w in weights]
        self.fn = tf.function(self._forward, input_signature=[
            tf.TensorSpec([None, EXAMPLE_FRAMES, MEL_BANDS], tf.float32)])

    def _forward(self, x):
        tf = self.tf
        x = tf.reshape(x, [-1, EXAMPLE_FRAMES, MEL_BANDS, 1])
        w = iter(self.weights)
        for layer in LAYERS:
            if layer[0] == "pool":
                x = tf.nn.max_pool2d(x, 2, 2, "SAME")
                continue
            kernel, bias = next(w), next(w)
            if layer[1] == "conv":
                x = tf.nn.relu(tf.nn.bias_add(tf.nn.conv2d(x, kernel, 1, "SAME"), bias))
            else:
                x = tf.nn.bias_add(tf.matmul(tf.reshape(x, [tf.shape(x)[0], -1]), kernel), bias)
                x = tf.nn.relu(x) if layer[1] == "fc" else x
        return x

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.fn(x).numpy()


def to_onnx(weights: list[np.ndarray], source_sha256: str = "") -> bytes:
    """The network as ONNX: input `examples` float [N, 96, 64], output `embedding` [N, 128]. NCHW inside;
    before fc1 back to NHWC order, as TensorFlow flattens."""
    from onnx import TensorProto, helper

    from ..export.graph import Graph
    from ..export.onnx_export import IR_VERSION, OPSET
    from .convert import metadata

    g, w = Graph(), iter(weights)
    x = g.op("Reshape", ["examples", g.const(np.array([-1, 1, EXAMPLE_FRAMES, MEL_BANDS], np.int64))])
    for layer in LAYERS:
        if layer[0] == "pool":
            x = g.op("MaxPool", [x], kernel_shape=[2, 2], strides=[2, 2], auto_pad="SAME_UPPER")
            continue
        kernel, bias = next(w), next(w)
        if layer[1] == "conv":
            x = g.op("Conv", [x, g.const(np.ascontiguousarray(kernel.transpose(3, 2, 0, 1))), g.const(bias)],
                     kernel_shape=[3, 3], auto_pad="SAME_UPPER")
            x = g.op("Relu", [x])
            continue
        if layer[0] == "fc1/fc1_1":   # [N, C, H, W] -> NHWC -> [N, H * W * C]
            x = g.op("Reshape", [g.op("Transpose", [x], perm=[0, 2, 3, 1]), g.const(np.array([0, -1], np.int64))])
        x = g.op("Add", [g.op("MatMul", [x, g.const(kernel)]), g.const(bias)])
        x = g.op("Relu", [x]) if layer[1] == "fc" else x
    g.nodes[-1].output[0] = "embedding"
    graph = helper.make_graph(
        g.nodes, "vggish", [helper.make_tensor_value_info("examples", TensorProto.FLOAT, ["batch", EXAMPLE_FRAMES, MEL_BANDS])],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", 128])], g.initializers())
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="yt8m-engine")
    m.ir_version = IR_VERSION
    helper.set_model_props(m, metadata(source_sha256))
    return m.SerializeToString()


def _load_net(model_dir: str, providers: str, echo):
    from .convert import OnnxRunner, UnsupportedGraph, cached_runner, disagreement, keep, sha256_of, tensorflow_installed

    ckpt, cached = os.path.join(model_dir, CKPT_FILE), os.path.join(model_dir, ONNX_FILE)
    sha = sha256_of(ckpt)
    net = cached_runner(cached, sha, providers)
    if net is not None:
        return net
    if not tensorflow_installed():
        raise Yt8mError(f"{ckpt}: VGGish's checkpoint is read once with TensorFlow, which is not installed here: "
                        f"install it (pip install 'yt8m-engine[train]'), copy {ONNX_FILE} from a machine that "
                        "has converted it into this folder, or pass --insert_zero_audio_features")
    weights = read_checkpoint(model_dir)
    ref = _TfNet(weights)
    data = to_onnx(weights, sha)
    del weights
    try:
        net = OnnxRunner(data, providers)
    except UnsupportedGraph as e:
        echo(f"note: VGGish runs under TensorFlow: {e}")
        return ref
    x = np.random.default_rng(0).normal(0, 2, (3, EXAMPLE_FRAMES, MEL_BANDS)).astype(np.float32)
    problem = disagreement(ref, net, [x])
    if problem:
        echo(f"note: VGGish runs under TensorFlow: its ONNX model differs ({problem})")
        return ref
    keep(cached, data)
    return net
