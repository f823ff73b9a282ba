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
"""
from __future__ import annotations

import os

import numpy as np

from ..errors import Yt8mError

VGGISH_URLS = {"vggish_model.ckpt": "https://storage.googleapis.com/audioset/vggish_model.ckpt",
               "vggish_pca_params.npz": "https://storage.googleapis.com/audioset/vggish_pca_params.npz"}
CKPT_FILE, PCA_FILE = VGGISH_URLS
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
    import av

    try:
        container = av.open(path)
    except (av.error.FFmpegError, OSError) as e:
        raise Yt8mError(f"{path}: cannot open the video ({e})") from None
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
    """VGGish from its checkpoint (TensorFlow reads it, V1 or V2), run as one compiled TensorFlow function
    over batches of examples; then the PCA post-processing."""

    def __init__(self, model_dir: str):
        from ..train.quiet_tf import tf

        ckpt, pca = os.path.join(model_dir, CKPT_FILE), os.path.join(model_dir, PCA_FILE)
        try:
            reader = tf.train.load_checkpoint(ckpt)
        except Exception as e:  # noqa: BLE001 - TensorFlow's DataLossError, NotFoundError, ...
            raise Yt8mError(f"{ckpt}: not a TensorFlow checkpoint ({str(e).splitlines()[0][:200]})") from None
        shapes = reader.get_variable_to_shape_map()
        self.weights = []
        for layer in LAYERS:
            if layer[0] == "pool":
                continue
            name, _, shape = layer
            for var, want in ((f"vggish/{name}/weights", shape), (f"vggish/{name}/biases", shape[-1:])):
                if tuple(shapes.get(var, ())) != want:
                    raise Yt8mError(f"{ckpt}: not the VGGish checkpoint ({var}: {shapes.get(var, 'missing')}, "
                                    f"expected {list(want)})")
                self.weights.append(tf.constant(reader.get_tensor(var).astype(np.float32)))
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
        self.tf = tf
        self.net = tf.function(self._forward, input_signature=[
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

    def embeddings(self, examples: np.ndarray) -> np.ndarray:
        """[n, 96, 64] log-mel examples -> [n, 128] fc2 pre-activations."""
        out = [self.net(examples[i:i + BATCH]).numpy() for i in range(0, len(examples), BATCH)]
        return np.concatenate(out) if out else np.zeros((0, 128), np.float32)

    def __call__(self, wave: np.ndarray, n: int, fps: float = 1.0) -> np.ndarray:
        """A mono 16 kHz waveform -> [n, 128] float PCA'd features (one per RGB frame), unclipped."""
        return (self.embeddings(log_mel_examples(wave, n, fps)) - self.pca_means) @ self.pca_t
