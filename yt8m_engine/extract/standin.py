"""Stand-in model files for tests and benchmarks (no download possible there): a GraphDef with the real
Inception-v3 file's name, input (`DecodeJpeg:0` uint8 [H, W, 3]), the nodes the extractor feeds and reads
(`ExpandDims:0`, `pool_3:0`, `pool_3/_reshape:0` [1, 2048]) and the graph's own resize to 299 x 299 and
(x - 128) / 128 normalisation, but a small random convolution net; PCA files of the real shapes; and
VGGish's files: `vggish_model.ckpt` (a V1 checkpoint as the published one, every variable with the real
name and shape, random weights) and `vggish_pca_params.npz`."""
from __future__ import annotations

import os

import numpy as np

from .features import GRAPH_FILE


def write_standin(model_dir: str, seed: int = 0, audio: bool = True) -> str:
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
    if audio:
        write_vggish_standin(model_dir, seed)
    return model_dir


def write_vggish_standin(model_dir: str, seed: int = 0) -> None:
    """VGGish's checkpoint with its 72 M parameters (He-scaled random weights) and PCA parameters that
    bring a tone's or a noise's embeddings into the quantization range."""
    from ..train.quiet_tf import tf
    from .audio import CKPT_FILE, LAYERS, PCA_FILE

    tf1 = tf.compat.v1
    os.makedirs(model_dir, exist_ok=True)
    rng = np.random.default_rng(seed + 1)
    g = tf.Graph()
    with g.as_default():
        values = {}
        for layer in LAYERS:
            if layer[0] == "pool":
                continue
            name, _, shape = layer
            fan_in = int(np.prod(shape[:-1]))
            values[f"vggish/{name}/weights"] = rng.standard_normal(shape, np.float32) * np.float32((2 / fan_in) ** 0.5)
            values[f"vggish/{name}/biases"] = rng.uniform(-0.1, 0.1, shape[-1:]).astype(np.float32)
        variables = {k: tf1.get_variable(k, v.shape, tf.float32, tf1.zeros_initializer()) for k, v in values.items()}
        saver = tf1.train.Saver(variables, write_version=tf1.train.SaverDef.V1)
        with tf1.Session() as sess:
            for k, var in variables.items():   # fed, not a graph constant: one copy of the weights
                sess.run(var.initializer, {var.initial_value: values.pop(k)})
            saver.save(sess, os.path.join(model_dir, CKPT_FILE), write_meta_graph=False, write_state=False)
    q, _ = np.linalg.qr(rng.normal(size=(128, 128)))
    np.savez(os.path.join(model_dir, PCA_FILE), pca_eigen_vectors=(q * 0.25).astype(np.float32),
             pca_means=rng.normal(0, 0.5, (128, 1)).astype(np.float32))
