"""Stand-in model files for tests and benchmarks (no download possible there): a GraphDef with the real
Inception-v3 file's name, input (`DecodeJpeg:0` uint8 [H, W, 3]), the nodes the extractor feeds and reads
(`ExpandDims:0`, `pool_3:0`, `pool_3/_reshape:0` [1, 2048]) and the graph's own resize to 299 x 299 and
(x - 128) / 128 normalisation, but a small random convolution net; and PCA files of the real shapes."""
from __future__ import annotations

import os

import numpy as np

from .features import GRAPH_FILE


def write_standin(model_dir: str, seed: int = 0) -> str:
    from ..train.quiet_tf import tf

    os.makedirs(model_dir, exist_ok=True)
    rng = np.random.default_rng(seed)
    g = tf.Graph()
    with g.as_default():
        img = tf.compat.v1.placeholder(tf.uint8, [None, None, 3], name="DecodeJpeg")
        x = tf.cast(img, tf.float32, name="Cast")
        x = tf.expand_dims(x, 0, name="ExpandDims")
        x = tf.compat.v1.image.resize_bilinear(x, [299, 299], name="ResizeBilinear")
        x = tf.multiply(tf.subtract(x, 128.0, name="Sub"), 1.0 / 128.0, name="Mul")
        for i, (cin, cout) in enumerate(((3, 16), (16, 64))):          # 299 -> 75 -> 19
            w = tf.constant(rng.normal(0, (9 * cin) ** -0.5, (3, 3, cin, cout)).astype(np.float32))
            x = tf.nn.relu(tf.nn.conv2d(x, w, strides=4, padding="VALID"), name=f"conv_{i}")
        w = tf.constant(rng.normal(0, 64 ** -0.5, (1, 1, 64, 2048)).astype(np.float32))
        x = tf.nn.relu(tf.nn.conv2d(x, w, strides=1, padding="VALID"))
        pool = tf.nn.avg_pool2d(x, ksize=19, strides=1, padding="VALID", name="pool_3")
        tf.reshape(pool, [1, 2048], name="pool_3/_reshape")
    with open(os.path.join(model_dir, GRAPH_FILE), "wb") as f:
        f.write(g.as_graph_def().SerializeToString())
    np.save(os.path.join(model_dir, "mean.npy"), rng.uniform(0, 0.5, (2048, 1)).astype(np.float32))
    q, _ = np.linalg.qr(rng.normal(size=(2048, 2048)))
    np.save(os.path.join(model_dir, "eigenvecs.npy"), q.T.astype(np.float32))      # one eigenvector a row
    np.save(os.path.join(model_dir, "eigenvals.npy"), np.sort(rng.uniform(1e-3, 0.05, (2048, 1)), axis=0)[::-1])
    return model_dir
