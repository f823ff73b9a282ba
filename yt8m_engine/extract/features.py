"""RGB frame features exactly as the dataset's: Inception-v3 (2015-12-05, `classify_image_graph_def.pb`)
pool_3 activations, the YouTube-8M PCA (1024 of 2048 dimensions, whitened), clipped to [-2, 2] and
quantized to 8 bits.

Quantization: q = floor((x + 2) * 255 / 4), clipped to [0, 255] (MediaPipe's QuantizeFloatVectorCalculator
truncates; the deprecated extractor rounded). The published data follow truncation: their dequantization
q * 4/255 + 4/512 - 2 adds half a step (4/512 ~ 2/255), the centre of a truncated bin; a rounded value
would need no such bias.

The graph runs in batches: every frame of a video has the same size, so the frames are fed together
after the graph's `Cast` (at `ExpandDims:0`, [N, H, W, 3]) and `pool_3:0` [N, 1, 1, 2048] is read; the
graph's own resize and normalisation are applied to each frame exactly as when it is fed one decoded
picture at `DecodeJpeg:0` (what the deprecated extractor did, one session.run a frame). It runs under
ONNX Runtime (convert.py: converted once and cached beside the GraphDef; CUDA where present), checked
against TensorFlow on the first conversion where TensorFlow is installed; under TensorFlow itself when
the graph holds an op the converter does not know or the check fails.
"""
from __future__ import annotations

import hashlib
import os
import sys
import tarfile
import urllib.request

import numpy as np

from ..errors import Yt8mError

INCEPTION_URL = "http://download.tensorflow.org/models/image/imagenet/inception-2015-12-05.tgz"
PCA_URL = "http://data.yt8m.org/yt8m_pca.tgz"
GRAPH_FILE = "classify_image_graph_def.pb"
PCA_FILES = ("mean.npy", "eigenvecs.npy", "eigenvals.npy")
QUANT_MIN, QUANT_MAX = -2.0, 2.0


def quantize(x: np.ndarray) -> np.ndarray:
    """float features -> uint8, truncating (see the module's note)."""
    q = np.floor((np.clip(x, QUANT_MIN, QUANT_MAX) - QUANT_MIN) * (255.0 / (QUANT_MAX - QUANT_MIN)))
    return np.clip(q, 0, 255).astype(np.uint8)


class Pca:
    """The YouTube-8M PCA as the starter loads it: mean.npy [2048, 1]; eigenvecs.npy one eigenvector a row
    [>= 1024, 2048]; eigenvals.npy [>= 1024, 1]; the first 1024 kept:
    (x - mean) @ eigenvecs[:1024].T / sqrt(eigenvals[:1024] + 1e-4)."""

    def __init__(self, model_dir: str):
        try:
            mean, vecs, vals = (np.load(os.path.join(model_dir, f)) for f in PCA_FILES)
        except (OSError, ValueError) as e:
            raise Yt8mError(f"{model_dir}: cannot read the PCA files {', '.join(PCA_FILES)} ({e})") from None
        if mean.shape != (2048, 1) or vecs.ndim != 2 or vecs.shape[1] != 2048 or vecs.shape[0] < 1024 or \
                vals.ndim != 2 or vals.shape[0] < 1024:
            raise Yt8mError(f"{model_dir}: PCA files of unexpected shapes (mean {mean.shape}, eigenvecs "
                            f"{vecs.shape}, eigenvals {vals.shape}; expected [2048, 1], [>=1024, 2048], [>=1024, 1])")
        self.mean = mean[:, 0].astype(np.float32)[None]
        self.vecs = np.ascontiguousarray(vecs.T[:, :1024], np.float32)
        self.scale = (1.0 / np.sqrt(vals[:1024, 0].astype(np.float32) + np.float32(1e-4))).astype(np.float32)

    def __call__(self, feats: np.ndarray) -> np.ndarray:
        return ((feats.reshape(-1, 2048).astype(np.float32) - self.mean) @ self.vecs) * self.scale


def ensure_model_files(model_dir: str, download: bool = True, audio: bool = False) -> None:
    """The starter's --model_dir layout: classify_image_graph_def.pb and the PCA files (and with audio,
    VGGish's vggish_model.ckpt and vggish_pca_params.npz), downloaded from the official addresses when
    missing (never when present)."""
    from .audio import VGGISH_URLS

    os.makedirs(model_dir, exist_ok=True)
    groups = [(INCEPTION_URL, (GRAPH_FILE,)), (PCA_URL, PCA_FILES)]
    groups += [(url, (name,)) for name, url in VGGISH_URLS.items()] if audio else []
    for url, needed in groups:
        if all(os.path.exists(os.path.join(model_dir, f)) for f in needed):
            continue
        if not download:
            raise Yt8mError(f"{model_dir}: missing {', '.join(needed)}; put them there or allow the download "
                            f"of {url}")
        if not url.endswith(".tgz"):
            _download(url, os.path.join(model_dir, needed[0]))
            continue
        tgz = os.path.join(model_dir, os.path.basename(url))
        if not os.path.exists(tgz):
            _download(url, tgz)
        try:
            with tarfile.open(tgz, "r:gz") as tar:
                members = [m for m in tar.getmembers() if m.isfile() and os.path.basename(m.name) in needed]
                for m in members:
                    m.name = os.path.basename(m.name)
                tar.extractall(model_dir, members=members, filter="data")
        except (tarfile.TarError, OSError, EOFError) as e:
            raise Yt8mError(f"{tgz}: damaged download ({e}); delete it and run again") from None
        missing = [f for f in needed if not os.path.exists(os.path.join(model_dir, f))]
        if missing:
            raise Yt8mError(f"{tgz}: does not hold {', '.join(missing)}")


def _download(url: str, path: str) -> None:
    """url -> path (atomically), with progress; the file's SHA-256 is kept beside it (path.sha256) so a
    later damaged copy can be told from the first one."""
    from ..io.files import AtomicWriter
    from ..progress import Progress

    try:
        with urllib.request.urlopen(url, timeout=60) as r, AtomicWriter(path) as f:
            total = int(r.headers.get("Content-Length") or 0) or None
            prog = Progress(f"download {os.path.basename(url)}", total=total, unit="B")
            h, done = hashlib.sha256(), 0
            for block in iter(lambda: r.read(1 << 20), b""):
                f.write(block)
                h.update(block)
                done += len(block)
                prog.update(done)
            prog.close()
    except OSError as e:  # URLError is an OSError: offline
        raise Yt8mError(f"cannot download {url} ({getattr(e, 'reason', e)}); on a machine without network, "
                        f"copy {os.path.basename(url)} (or the files it holds) into {os.path.dirname(path)}") from None
    with open(path + ".sha256", "w") as f:
        f.write(h.hexdigest() + "\n")
    print(f"downloaded {url} ({done / 1e6:.1f} MB, sha256 {h.hexdigest()[:16]}...)", file=sys.stderr)


ONNX_FILE = "classify_image_graph_def.onnx"


def load_inception(model_dir: str, providers: str = "auto", echo=None):
    """The fastest runner of the model_dir's Inception graph: the cached ONNX conversion when it is of
    this GraphDef, else a new conversion (checked against TensorFlow where installed, then cached), else
    TensorFlow (with a note saying why)."""
    from .convert import (OnnxRunner, UnsupportedGraph, cached_runner, convert, disagreement, keep, sha256_of,
                          tensorflow_installed)

    echo = echo or (lambda s: print(s, file=sys.stderr))
    pb, cached = os.path.join(model_dir, GRAPH_FILE), os.path.join(model_dir, ONNX_FILE)
    sha = sha256_of(pb)
    model = cached_runner(cached, sha, providers)
    if model is not None:
        return model
    try:
        with open(pb, "rb") as f:
            data = convert(f.read(), sha).SerializeToString()
        model = OnnxRunner(data, providers)
    except UnsupportedGraph as e:
        if not tensorflow_installed():
            raise Yt8mError(f"{pb}: cannot be converted to ONNX ({e}), and TensorFlow, which would run it as it "
                            "is, is not installed (pip install 'yt8m-engine[train]')") from None
        echo(f"note: {pb} runs under TensorFlow: ONNX conversion not possible ({e})")
        return Inception(model_dir)
    if not tensorflow_installed():
        echo(f"note: {pb} converted to ONNX without the check against TensorFlow (not installed here)")
        keep(cached, data)
        return model
    rng = np.random.default_rng(0)   # random frames of two sizes through both runners
    frames = [rng.integers(0, 256, shape, dtype=np.uint8) for shape in ((2, 90, 160, 3), (1, 299, 299, 3))]
    problem = disagreement(Inception(model_dir), model, frames)
    if problem:
        echo(f"note: {pb} runs under TensorFlow: its ONNX conversion differs ({problem})")
        return Inception(model_dir)
    keep(cached, data)
    return model


class Inception:
    """The Inception-v3 GraphDef under TensorFlow, fed a batch of same-sized frames per call."""

    def __init__(self, model_dir: str):
        from ..train.quiet_tf import tf

        self.tf = tf
        path = os.path.join(model_dir, GRAPH_FILE)
        try:
            gd = tf.compat.v1.GraphDef.FromString(open(path, "rb").read())
        except Exception as e:  # noqa: BLE001 - protobuf's DecodeError, OSError
            raise Yt8mError(f"{path}: not a TensorFlow GraphDef ({e})") from None
        self.graph = tf.Graph()
        with self.graph.as_default():
            self.batch = tf.compat.v1.placeholder(tf.float32, [None, None, None, 3], name="yt8m_frames")
            try:
                (self.pool,) = tf.compat.v1.import_graph_def(gd, input_map={"ExpandDims:0": self.batch},
                                                             return_elements=["pool_3:0"], name="inception")
            except (KeyError, ValueError) as e:
                raise Yt8mError(f"{path}: not the Inception-v3 graph the dataset was made with ({e})") from None
        self.gd, self.one = gd, None
        self.session = tf.compat.v1.Session(graph=self.graph)

    def __call__(self, frames: np.ndarray) -> np.ndarray:
        """frames uint8 [N, H, W, 3] -> pool_3 features [N, 2048]."""
        out = self.session.run(self.pool, {self.batch: frames.astype(np.float32)})
        return out.reshape(len(frames), -1)

    def one_frame(self, frame: np.ndarray) -> np.ndarray:
        """The deprecated extractor's way: one decoded picture at DecodeJpeg:0 per run (the baseline; the
        graph as it is, imported a second time on first use)."""
        if self.one is None:
            with self.graph.as_default():
                self.one = self.tf.compat.v1.import_graph_def(self.gd, return_elements=["DecodeJpeg:0",
                                                                                          "pool_3/_reshape:0"], name="one")
        return self.session.run(self.one[1], {self.one[0]: frame})[0]
