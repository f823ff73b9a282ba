"""Inception-v3's GraphDef (`classify_image_graph_def.pb`) as an ONNX model, converted once and cached
beside it (`classify_image_graph_def.onnx`, keyed by the GraphDef's SHA-256), so that ONNX Runtime runs
it (on CUDA where present) without TensorFlow.

The GraphDef is read by a small protobuf wire-format reader (no TensorFlow needed). The converted part
runs from the frames the extractor feeds after the graph's `Cast` and `ExpandDims` (uint8 [N, H, W, 3])
to `pool_3` ([N, 2048]): the graph's own ResizeBilinear and (x - 128) / 128, then its convolutions.
Ops: Const, Identity, Conv2D, BatchNormWithGlobalNormalization and FusedBatchNorm (the 2015 graph and
newer ones), BiasAdd, Relu, Relu6, MaxPool, AvgPool, Concat / ConcatV2, Mean, Reshape / Squeeze to
[N, C], element-wise Add / Sub / Mul / RealDiv with a constant, and element-wise ops of constants only
(folded here: a batch norm written out as Rsqrt, Mul, Sub). Any other op raises
UnsupportedGraph, and the extractor runs the graph under TensorFlow instead. TensorFlow's NHWC tensors
become NCHW (ONNX's layout); SAME padding is ONNX's SAME_UPPER (TensorFlow pads the extra row and
column at the end); average pooling leaves the padding out of the count, as TensorFlow's.
"""
from __future__ import annotations

import hashlib
import os
import struct
from dataclasses import dataclass, field

import numpy as np

from ..errors import Yt8mError

CONVERTER_VERSION = "1"
INPUT_NODE, OUTPUT_NODE = "ExpandDims", "pool_3"
_DTYPES = {1: np.float32, 2: np.float64, 3: np.int32, 4: np.uint8, 5: np.int16, 6: np.int8, 9: np.int64,
           10: np.bool_, 19: np.float16}
_NHWC_TO_NCHW = {0: 0, 1: 2, 2: 3, 3: 1, -1: 1, -2: 3, -3: 2, -4: 0}


_FOLD = {"Add": np.add, "AddV2": np.add, "BiasAdd": np.add, "Sub": np.subtract, "Mul": np.multiply,
         "RealDiv": np.divide, "Rsqrt": lambda x: 1 / np.sqrt(x), "Sqrt": np.sqrt, "Reciprocal": np.reciprocal,
         "Neg": np.negative, "Reshape": lambda x, shape: np.reshape(x, shape)}
# ops of constants only (a batch norm written out, a reshaped weight): computed here


class UnsupportedGraph(Yt8mError):
    pass


# -- the protobuf wire format ---------------------------------------------------------------------------
def _varint(buf, i):
    shift = result = 0
    while True:
        b = buf[i]
        i += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, i
        shift += 7


def _fields(buf):
    """(field number, value) of one message: value an int (varint), or a memoryview (length-delimited,
    and the fixed 32/64-bit values as their bytes)."""
    i, end = 0, len(buf)
    while i < end:
        key, i = _varint(buf, i)
        wt = key & 7
        if wt == 0:
            v, i = _varint(buf, i)
        elif wt == 2:
            n, i = _varint(buf, i)
            v, i = buf[i:i + n], i + n
        elif wt in (1, 5):
            n = 8 if wt == 1 else 4
            v, i = buf[i:i + n], i + n
        else:
            raise ValueError(f"wire type {wt}")
        yield key >> 3, v


def _signed(v: int) -> int:
    return v - (1 << 64) if v >= 1 << 63 else v


def _packed_ints(v) -> list[int]:
    if isinstance(v, int):
        return [_signed(v)]
    out, i = [], 0
    while i < len(v):
        x, i = _varint(v, i)
        out.append(_signed(x))
    return out


@dataclass
class Node:
    name: str
    op: str
    inputs: list = field(default_factory=list)
    attrs: dict = field(default_factory=dict)


def _tensor(buf) -> np.ndarray:
    dtype, shape, content, values = 1, [], None, []
    for f, v in _fields(buf):
        if f == 1:
            dtype = v
        elif f == 2:
            shape = [next((_signed(x) for g, x in _fields(d) if g == 1), 0) for h, d in _fields(v) if h == 2]
        elif f == 4:
            content = bytes(v)
        elif f == 5:   # float_val: packed, or one value
            values += list(np.frombuffer(bytes(v), "<f4"))
        elif f in (7, 10):   # int_val, int64_val
            values += _packed_ints(v)
    if dtype not in _DTYPES:
        raise UnsupportedGraph(f"a constant of TensorFlow dtype {dtype}")
    dt = np.dtype(_DTYPES[dtype])
    if content is not None:
        return np.frombuffer(content, dt.newbyteorder("<")).astype(dt).reshape(shape)
    n = int(np.prod(shape)) if shape else 1
    arr = np.asarray(values or [0], dt)
    return np.full(n, arr[-1], dt).reshape(shape) if arr.size == 1 else arr.reshape(shape)


def _attr(buf):
    for f, v in _fields(buf):
        if f == 1:   # list: the ints (strides, ksize)
            return [x for g, w in _fields(v) if g == 3 for x in _packed_ints(w)]
        if f == 2:
            return bytes(v).decode("utf-8", "replace")
        if f == 3:
            return _signed(v)
        if f == 4:
            return struct.unpack("<f", bytes(v))[0]
        if f == 5:
            return bool(v)
        if f == 8:
            return _tensor(v)
    return None


def read_graphdef(data: bytes) -> dict[str, Node]:
    nodes = {}
    for f, v in _fields(memoryview(data)):
        if f != 1:
            continue
        n = Node("", "")
        for g, w in _fields(v):
            if g == 1:
                n.name = bytes(w).decode()
            elif g == 2:
                n.op = bytes(w).decode()
            elif g == 3:
                n.inputs.append(bytes(w).decode())
            elif g == 5:
                entry = dict(_fields(w))
                n.attrs[bytes(entry[1]).decode()] = _attr(entry[2]) if 2 in entry else None
        nodes[n.name] = n
    return nodes


# -- the conversion --------------------------------------------------------------------------------------
class _Converter:
    def __init__(self, nodes: dict[str, Node]):
        from ..export.graph import Graph

        self.nodes, self.g, self.done = nodes, Graph(), {}

    def value(self, ref: str):
        """A TensorFlow tensor ("node" or "node:k") -> (ONNX name or a constant array, layout)."""
        name, _, k = ref.partition(":")
        if k not in ("", "0"):
            raise UnsupportedGraph(f"output {k} of {name}")
        if name not in self.done:
            if name not in self.nodes:
                raise UnsupportedGraph(f"no node {name!r}")
            self.done[name] = self.convert(self.nodes[name])
        return self.done[name]

    def const(self, ref: str) -> np.ndarray:
        v, layout = self.value(ref)
        if layout != "const":
            raise UnsupportedGraph(f"{ref} is not a constant")
        return v

    def onnx(self, v, layout, other_layout):
        """An input as an ONNX name (a constant: an initializer; beside an NCHW tensor, a per-channel
        vector as [C, 1, 1] and a 4-D NHWC constant transposed)."""
        if layout != "const":
            return v
        if other_layout == "nchw" and v.ndim in (1, 4):   # NHWC broadcasting -> NCHW
            v = v.reshape(-1, 1, 1) if v.ndim == 1 else v.transpose(0, 3, 1, 2)
        return self.g.const(v)

    def convert(self, n: Node):
        g, a = self.g, n.attrs
        data = [i for i in n.inputs if not i.startswith("^")]
        if n.name == INPUT_NODE:   # uint8 [N, H, W, 3] -> float NCHW
            return g.op("Transpose", [g.op("Cast", ["frames"], to=1)], perm=[0, 3, 1, 2]), "nchw"
        if n.op == "Const":
            return a["value"], "const"
        if n.op in ("Identity", "CheckNumerics", "StopGradient"):
            return self.value(data[0])
        if n.op in ("Conv2D", "MaxPool", "AvgPool"):
            return self.conv_or_pool(n, data)
        if n.op == "BatchNormWithGlobalNormalization" or n.op.startswith("FusedBatchNorm"):
            return self.batch_norm(n, data)
        if n.op in ("Concat", "ConcatV2"):
            axis = int(self.const(data[0] if n.op == "Concat" else data[-1]))
            parts = [self.value(i) for i in (data[1:] if n.op == "Concat" else data[:-1])]
            if any(p[1] != "nchw" for p in parts):
                raise UnsupportedGraph(f"{n.op} {n.name} of other than 4-D tensors")
            return g.op("Concat", [p[0] for p in parts], axis=_NHWC_TO_NCHW[axis]), "nchw"
        return self.other(n, data)

    def conv_or_pool(self, n: Node, data):
        g, a = self.g, n.attrs
        if a.get("data_format", "NHWC") != "NHWC" or any(d != 1 for d in a.get("dilations") or [1]):
            raise UnsupportedGraph(f"{n.op} {n.name}: only NHWC without dilation")
        x, layout = self.value(data[0])
        if layout != "nchw":
            raise UnsupportedGraph(f"{n.op} {n.name} of a {layout} tensor")
        strides = list(a.get("strides") or [1, 1, 1, 1])[1:3]
        pad = {"SAME": "SAME_UPPER", "VALID": "VALID"}[a.get("padding", "VALID")]
        if n.op == "Conv2D":
            w = self.const(data[1]).transpose(3, 2, 0, 1)   # HWIO -> OIHW
            return g.op("Conv", [x, g.const(np.ascontiguousarray(w))], strides=strides, auto_pad=pad,
                        kernel_shape=list(w.shape[2:])), "nchw"
        k = list(a["ksize"])[1:3]
        if n.op == "MaxPool":
            return g.op("MaxPool", [x], kernel_shape=k, strides=strides, auto_pad=pad), "nchw"
        return g.op("AveragePool", [x], kernel_shape=k, strides=strides, auto_pad=pad, count_include_pad=0), "nchw"

    def batch_norm(self, n: Node, data):
        g, a = self.g, n.attrs
        x, layout = self.value(data[0])
        if layout != "nchw":
            raise UnsupportedGraph(f"{n.op} {n.name} of a {layout} tensor")
        if n.op == "BatchNormWithGlobalNormalization":   # t, mean, variance, beta, gamma
            mean, var, beta, gamma = (self.const(i) for i in data[1:5])
            if not a.get("scale_after_normalization", False):
                gamma = np.ones_like(gamma)
            eps = a.get("variance_epsilon", 0.0)
        else:                                             # x, scale, offset, mean, variance
            if a.get("is_training", True) or a.get("data_format", "NHWC") != "NHWC":
                raise UnsupportedGraph(f"{n.op} {n.name}: only inference, NHWC")
            gamma, beta, mean, var = (self.const(i) for i in data[1:5])
            eps = a.get("epsilon", 1e-4)
        c = [g.const(v.astype(np.float32)) for v in (gamma, beta, mean, var)]
        return g.op("BatchNormalization", [x, *c], epsilon=float(eps)), "nchw"

    def other(self, n: Node, data):
        g = self.g
        if n.op in ("Relu", "Relu6"):
            x, layout = self.value(data[0])
            y = g.op("Relu", [x]) if n.op == "Relu" else g.op("Clip", [x, g.const(np.float32(0)), g.const(np.float32(6))])
            return y, layout
        if n.op in _FOLD and all(self.value(i)[1] == "const" for i in data):   # constants only: folded
            with np.errstate(all="ignore"):
                return np.asarray(_FOLD[n.op](*(self.const(i) for i in data))), "const"
        if n.op in ("Add", "AddV2", "Sub", "Mul", "RealDiv", "BiasAdd"):
            (x, lx), (y, ly) = self.value(data[0]), self.value(data[1])
            onnx_op = {"AddV2": "Add", "BiasAdd": "Add", "RealDiv": "Div"}.get(n.op, n.op)
            return g.op(onnx_op, [self.onnx(x, lx, ly), self.onnx(y, ly, lx)]), lx if lx != "const" else ly
        if n.op == "ResizeBilinear":
            x, layout = self.value(data[0])
            size = self.const(data[1]).astype(np.int64)
            a = n.attrs
            mode = "align_corners" if a.get("align_corners") else \
                "half_pixel" if a.get("half_pixel_centers") else "asymmetric"
            nc = g.op("Slice", [g.op("Shape", [x]), g.axes(0), g.axes(2)])
            sizes = g.op("Concat", [nc, g.const(size)], axis=0)
            return g.op("Resize", [x, "", "", sizes], mode="linear", coordinate_transformation_mode=mode), layout
        if n.op in ("Mean", "Reshape", "Squeeze"):
            return self.to_vector(n, data)
        raise UnsupportedGraph(f"op {n.op} ({n.name})")

    def to_vector(self, n: Node, data):
        """The pooling's end: a global mean over H and W, or a reshape / squeeze of [N, C, 1, 1] (or
        [N, C]) to [N, C] (or to [N, 1, 1, C] / [1, C], which the output flattens the same)."""
        g = self.g
        x, layout = self.value(data[0])
        if n.op == "Mean":
            axes = sorted(_NHWC_TO_NCHW[int(v)] for v in np.ravel(self.const(data[1])))
            if layout != "nchw" or axes != [2, 3]:
                raise UnsupportedGraph(f"Mean {n.name} over other than H and W")
            keep = bool(n.attrs.get("keep_dims", False))
            return g.op("ReduceMean", [x], axes=[2, 3], keepdims=int(keep)), "nchw" if keep else "flat"
        if n.op == "Reshape":
            shape = [int(v) for v in self.const(data[1])]
            if sum(1 for v in shape if v not in (1, -1)) != 1 or shape[-1] in (1, -1):
                raise UnsupportedGraph(f"Reshape {n.name} to {shape}")
        return g.op("Flatten", [x], axis=1), "flat"


def convert(graphdef: bytes, source_sha256: str = ""):
    """The GraphDef -> an ONNX ModelProto: input `frames` uint8 [N, H, W, 3], output `pool_3` [N, 2048]."""
    import onnx
    from onnx import TensorProto, helper

    from ..export.onnx_export import IR_VERSION, OPSET

    try:
        nodes = read_graphdef(graphdef)
    except (ValueError, IndexError, KeyError, struct.error) as e:
        raise UnsupportedGraph(f"not a readable GraphDef ({e})") from None
    if INPUT_NODE not in nodes or OUTPUT_NODE not in nodes:
        raise UnsupportedGraph(f"no {INPUT_NODE} or {OUTPUT_NODE} node")
    c = _Converter(nodes)
    out, layout = c.value(OUTPUT_NODE)
    c.g.nodes.append(helper.make_node("Flatten" if layout == "nchw" else "Identity", [out], ["pool_3"],
                                      **({"axis": 1} if layout == "nchw" else {})))
    graph = helper.make_graph(
        c.g.nodes, "inception_v3_pool3",
        [helper.make_tensor_value_info("frames", TensorProto.UINT8, ["batch", "height", "width", 3])],
        [helper.make_tensor_value_info("pool_3", TensorProto.FLOAT, ["batch", 2048])], c.g.initializers())
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="yt8m-engine")
    m.ir_version = IR_VERSION
    helper.set_model_props(m, metadata(source_sha256))
    try:
        onnx.checker.check_model(m)
    except onnx.checker.ValidationError as e:
        raise UnsupportedGraph(f"the converted model is not valid ONNX ({str(e).splitlines()[0]})") from None
    return m


def tensorflow_installed() -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec("tensorflow") is not None
    except (ValueError, ImportError):   # a module entry of None: blocked
        return False


def disagreement(reference, runner, inputs) -> str | None:
    """A conversion checked against the original: None when runner(x) equals reference(x) for every x of
    inputs within 1e-3 of the larger of 1 and the largest value, else how far apart they are."""
    for x in inputs:
        want, got = reference(x), runner(x)
        err = float(np.abs(want - got).max())
        if not err <= 1e-3 * max(1.0, float(np.abs(want).max())):
            return f"largest difference {err:.3g} on inputs of shape {list(x.shape)}"
    return None


def metadata(source_sha256: str) -> dict[str, str]:
    return {"source_sha256": source_sha256, "converter": CONVERTER_VERSION}


def sha256_of(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


class OnnxRunner:
    """A converted model under ONNX Runtime: one input array in, the first output out; `meta` its
    metadata (source_sha256, converter). (engine.OnnxModel is for exported yt8m models: it requires
    their metadata and a file.)"""

    def __init__(self, model, providers: str = "auto"):
        import onnxruntime as ort

        from ..engine import choose_providers

        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        chosen = choose_providers(providers)
        try:
            self.session = ort.InferenceSession(model, sess_options=opts, providers=chosen)
        except Exception as e:  # noqa: BLE001 - ORT's own exception types
            raise UnsupportedGraph(f"{model if isinstance(model, str) else 'the converted model'}: ONNX Runtime "
                                   f"cannot load it ({str(e)[:300]})") from None
        self.meta = self.session.get_modelmeta().custom_metadata_map
        self.input = self.session.get_inputs()[0].name

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input: np.ascontiguousarray(x)})[0]


def cached_runner(path: str, source_sha256: str, providers: str) -> OnnxRunner | None:
    """The conversion cached at path when it was made from that source by this converter, else None."""
    if not os.path.exists(path):
        return None
    try:
        r = OnnxRunner(path, providers)
    except UnsupportedGraph:
        return None   # damaged: converted again
    ok = r.meta.get("source_sha256") == source_sha256 and r.meta.get("converter") == CONVERTER_VERSION
    return r if ok else None


def keep(path: str, data: bytes) -> None:
    """Cache a conversion (atomically); a read-only model folder just means converting again next time."""
    from ..io.files import AtomicWriter

    try:
        with AtomicWriter(path) as f:
            f.write(data)
    except OSError:
        pass
