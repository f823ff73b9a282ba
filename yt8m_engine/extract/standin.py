"""Stand-in model files for tests and benchmarks (no download possible there): a GraphDef with the real
Inception-v3 file's name, input (`DecodeJpeg:0` uint8 [H, W, 3]), the nodes the extractor feeds and reads
(`ExpandDims:0`, `pool_3:0`, `pool_3/_reshape:0` [1, 2048]), the graph's own resize to 299 x 299 and
(x - 128) / 128 normalisation and the 2015 graph's op types, but a small random convolution net; PCA
files of the real shapes; and VGGish's files: `vggish_model.ckpt` (a V1 checkpoint as the published one, every variable with the real
name and shape, random weights) and `vggish_pca_params.npz`."""
from __future__ import annotations

import os

import numpy as np

from .features import GRAPH_FILE


def write_standin(model_dir: str, seed: int = 0, audio: bool = True) -> str:
    os.makedirs(model_dir, exist_ok=True)
    with open(os.path.join(model_dir, GRAPH_FILE), "wb") as f:
        f.write(inception_standin_graph(seed).SerializeToString())
    rng = np.random.default_rng(seed)
    np.save(os.path.join(model_dir, "mean.npy"), rng.uniform(0, 0.5, (2048, 1)).astype(np.float32))
    q, _ = np.linalg.qr(rng.normal(size=(2048, 2048)))
    np.save(os.path.join(model_dir, "eigenvecs.npy"), q.T.astype(np.float32))      # one eigenvector a row
    np.save(os.path.join(model_dir, "eigenvals.npy"), np.sort(rng.uniform(1e-3, 0.05, (2048, 1)), axis=0)[::-1])
    if audio:
        write_vggish_standin(model_dir, seed)
    return model_dir


def inception_standin_graph(seed: int = 0):
    """A small net written with the 2015 graph's own ops and names: Conv2D on `<scope>/conv2d_params`,
    BatchNormWithGlobalNormalization on `<scope>/batchnorm/{moving_mean, moving_variance, beta, gamma}`,
    Relu `<scope>`; MaxPool; a `mixed` block of three towers (1x1; 1x1 then 3x3 SAME; AvgPool 3x3 SAME
    then 1x1) joined by the old Concat (`mixed/join/concat_dim` first); `pool_3` an 8 x 8 AvgPool and
    `pool_3/_reshape` [1, 2048]. GraphDef producer version 5 (TensorFlow runs the deprecated batch norm
    op in graphs that old, as it runs the real file)."""
    from ..train.quiet_tf import tf

    tf1 = tf.compat.v1
    rng = np.random.default_rng(seed)
    g = tf.Graph()
    bns = {}

    def conv(x, scope, cin, cout, k, stride, padding):
        w = tf.constant(rng.normal(0, (k * k * cin) ** -0.5, (k, k, cin, cout)).astype(np.float32),
                        name=f"{scope}/conv2d_params")
        y = tf.nn.conv2d(x, w, strides=[1, stride, stride, 1], padding=padding, name=f"{scope}/Conv2D")
        params = [tf.constant(v.astype(np.float32), name=f"{scope}/batchnorm/{n}") for n, v in (
            ("moving_mean", rng.normal(0, 0.1, cout)), ("moving_variance", rng.uniform(0.5, 2, cout)),
            ("beta", rng.normal(0, 0.1, cout)), ("gamma", rng.uniform(0.5, 1.5, cout)))]
        bn = tf.identity(y, name=f"{scope}/batchnorm")      # made a BatchNormWithGlobalNormalization below
        bns[bn.op.name] = [y.op.name] + [p.op.name for p in params]
        return tf.nn.relu(bn, name=scope)

    with g.as_default():
        img = tf1.placeholder(tf.uint8, [None, None, 3], name="DecodeJpeg")
        x = tf.cast(img, tf.float32, name="Cast")
        x = tf.expand_dims(x, 0, name="ExpandDims")
        x = tf1.image.resize_bilinear(x, [299, 299], name="ResizeBilinear")
        x = tf.multiply(tf.subtract(x, 128.0, name="Sub"), 1.0 / 128.0, name="Mul")
        x = conv(x, "conv", 3, 16, 3, 4, "VALID")                                  # 299 -> 75
        x = conv(x, "conv_1", 16, 32, 3, 2, "SAME")                                # -> 38
        x = tf.nn.max_pool2d(x, 3, 2, "VALID", name="pool")                        # -> 18
        a = conv(x, "mixed/conv", 32, 32, 1, 1, "SAME")
        b = conv(conv(x, "mixed/tower/conv", 32, 24, 1, 1, "SAME"), "mixed/tower/conv_1", 24, 32, 3, 1, "SAME")
        c = conv(tf.nn.avg_pool2d(x, 3, 1, "SAME", name="mixed/tower_1/pool"), "mixed/tower_1/conv", 32, 32, 1, 1,
                 "SAME")
        dim = tf.constant(3, name="mixed/join/concat_dim")
        x = tf.concat([a, b, c], 3, name="mixed/join")                             # made the old Concat below
        x = conv(x, "conv_2", 96, 96, 3, 2, "VALID")                               # -> 8
        x = conv(x, "conv_3", 96, 2048, 1, 1, "SAME")
        pool = tf.nn.avg_pool2d(x, 8, 1, "VALID", name="pool_3")
        tf.reshape(pool, [1, 2048], name="pool_3/_reshape")
    gd = g.as_graph_def()
    for n in gd.node:
        if n.name in bns:
            n.op = "BatchNormWithGlobalNormalization"
            n.input[:] = bns[n.name]
            n.attr["variance_epsilon"].f = 0.001
            n.attr["scale_after_normalization"].b = True
        elif n.name == "mixed/join":
            n.op = "Concat"
            n.input[:] = [dim.op.name, a.op.name, b.op.name, c.op.name]
            del n.attr["Tidx"]
    gd.versions.producer = 5
    return gd


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
