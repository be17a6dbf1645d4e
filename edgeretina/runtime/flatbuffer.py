"""The only reader/writer of the ``.tflite`` flatbuffer (schema shipped by ai-edge-litert; no TensorFlow).

- :func:`op_names` — builtin operator code → name (``CONV_2D``), built once.
- :func:`get_metadata` / :func:`set_metadata` / :func:`remove_metadata` — raw bytes of a named metadata entry.
- :func:`shift_output_bias` — add a per-channel delta to the bias of the op producing the model output.
- :func:`conv_sparsity` — exact zeros in the weights of given ops; :func:`param_counts` — depth / params /
  non-zero params of the main subgraph.
- :func:`weight_ops` — the constant-weight conv / depthwise / fully-connected ops with their weights, scales and
  conv options; :func:`replace_weights` — rewrite constant tensors (GPTQ re-rounded int8 weights).
- :func:`float32_small_constants` — an fp16 file's small float16 constants back to float32 (from the float32 file).
- :func:`float_constants` — the float32 constant inputs of the ops (benchmarks/fp16_noise.py rounds them).
"""
from __future__ import annotations

import hashlib
from functools import lru_cache

import numpy as np
from ai_edge_litert import schema_py_generated as schema
from ai_edge_litert.tools import flatbuffer_utils as fu

from edgeretina.errors import ModelError

# LiteRT builtin operators that carry a weight kernel (one "layer" of depth each).
WEIGHT_OPS = frozenset({"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV", "CONV_3D"})
BIAS_OPS = frozenset({"FULLY_CONNECTED", "CONV_2D"})
PASS_OPS = frozenset({"QUANTIZE", "DEQUANTIZE", "RESHAPE"})

NP_TYPES = {
    schema.TensorType.FLOAT32: np.float32, schema.TensorType.FLOAT16: np.float16,
    schema.TensorType.INT8: np.int8, schema.TensorType.UINT8: np.uint8,
    schema.TensorType.INT16: np.int16, schema.TensorType.INT32: np.int32,
    schema.TensorType.FLOAT64: np.float64,
}


@lru_cache(maxsize=1)
def op_names() -> dict[int, str]:
    """Builtin operator code → name."""
    return {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_") and isinstance(v, int)}


# --------------------------------------------------------------------------------------- read / write


def is_tflite(data: bytes) -> bool:
    return len(data) >= 8 and bytes(data[4:8]) == b"TFL3"


def root(data: bytes):
    """Read-only flatbuffer view (``schema.Model``); ``ModelError`` when ``data`` is not a .tflite."""
    try:
        if not schema.Model.ModelBufferHasIdentifier(data, 0):
            raise ValueError("missing TFL3 identifier")
        return schema.Model.GetRootAs(data, 0)
    except Exception as e:  # noqa: BLE001 - any parse failure means "not a tflite"
        raise ModelError(f"not a valid .tflite flatbuffer ({e})") from None


def read_model(data: bytes):
    """Mutable object tree (``schema.ModelT``) of a .tflite."""
    return fu.read_model_from_bytearray(bytearray(data))


def write_model(model) -> bytes:
    return bytes(fu.convert_object_to_bytearray(model))


def op_name(model, op) -> str | None:
    """Name of the builtin op of an ``OperatorT`` in ``ModelT`` ``model``."""
    return op_names().get(fu.get_builtin_code_from_operator_code(model.operatorCodes[op.opcodeIndex]))


def _buffer_array(model, tensor, dtype) -> np.ndarray | None:
    data = model.buffers[tensor.buffer].data
    if data is None:
        return None
    return np.frombuffer(bytes(np.asarray(data, dtype=np.uint8)), dtype=dtype)


def _new_buffer(model, raw: bytes) -> int:
    buf = schema.BufferT()
    buf.data = np.frombuffer(raw, dtype=np.uint8)
    model.buffers.append(buf)
    return len(model.buffers) - 1


# --------------------------------------------------------------------------------------- metadata


def _md_name(md) -> str:
    n = md.name
    return n.decode("utf-8") if isinstance(n, bytes) else str(n)


def get_metadata(data: bytes, name: str) -> bytes | None:
    """Raw bytes of the metadata entry ``name`` (None when absent). ``ValueError`` when ``data`` is not a
    .tflite."""
    if not is_tflite(data):
        raise ValueError("no TFL3 identifier")
    model = schema.Model.GetRootAs(data, 0)
    for i in range(model.MetadataLength()):
        md = model.Metadata(i)
        if (md.Name() or b"").decode("utf-8") != name:
            continue
        b = model.Buffers(md.Buffer())
        if b.Offset():  # large models keep buffers after the flatbuffer
            return bytes(data[b.Offset(): b.Offset() + b.Size()])
        return b.DataAsNumpy().tobytes() if b.DataLength() else b""
    return None


def set_metadata(data: bytes, name: str, value: bytes) -> bytes:
    """``data`` with ``value`` in its metadata entry ``name``. An existing entry of that name gets the new
    value in its own buffer, so re-embedding leaves no orphaned buffer behind."""
    m = read_model(data)
    old = [x for x in (m.metadata or []) if _md_name(x) == name]
    if old:
        m.buffers[old[0].buffer].data = np.frombuffer(value, dtype=np.uint8)
        return write_model(m)
    md = schema.MetadataT()
    md.name = name
    md.buffer = _new_buffer(m, value)
    m.metadata = list(m.metadata or []) + [md]
    return write_model(m)


def remove_metadata(data: bytes, name: str) -> bytes:
    """``data`` without its metadata entry ``name``."""
    m = read_model(data)
    m.metadata = [x for x in (m.metadata or []) if _md_name(x) != name]
    return write_model(m)


def graph_sha256(data: bytes, name: str) -> str:
    """sha256 of a .tflite without its ``name`` metadata entry: equal for two files that differ only in that
    metadata (e.g. a model and its calibrated copy). Buffers no tensor or remaining metadata entry uses are
    blanked and trailing blank ones dropped, so it does not matter whether re-embedding the metadata
    reused the entry's buffer or appended a new one."""
    m = read_model(data)
    m.metadata = [md for md in (m.metadata or []) if _md_name(md) != name] or None
    used = {t.buffer for sg in (m.subgraphs or []) for t in (sg.tensors or [])}
    used |= {md.buffer for md in (m.metadata or [])}
    for i, b in enumerate(m.buffers or []):
        if i not in used:
            b.data = None
    while m.buffers and len(m.buffers) - 1 not in used and m.buffers[-1].data is None:
        m.buffers.pop()
    return hashlib.sha256(write_model(m)).hexdigest()


# --------------------------------------------------------------------------------------- output bias


def _output_bias(m):
    """(subgraph, op name, bias tensor, input tensor, weight tensor) of the op producing the model output,
    looking through QUANTIZE/DEQUANTIZE/RESHAPE; None if it is not a biased integer FC/conv."""
    sg = m.subgraphs[0]
    producer = {o: op for op in sg.operators for o in op.outputs}
    t = sg.outputs[0]
    for _ in range(4):
        op = producer.get(t)
        if op is None:
            return None
        name = op_name(m, op)
        if name in PASS_OPS:
            t = op.inputs[0]
            continue
        if name not in BIAS_OPS or len(op.inputs) < 3 or op.inputs[2] < 0:
            return None
        bias = sg.tensors[op.inputs[2]]
        if (bias.type not in (schema.TensorType.INT32, schema.TensorType.FLOAT32)
                or m.buffers[bias.buffer].data is None):
            return None
        return sg, name, bias, sg.tensors[op.inputs[0]], sg.tensors[op.inputs[1]]
    return None


def _shifted_bias(m, bias, x, w, delta: np.ndarray) -> np.ndarray | None:
    if bias.type == schema.TensorType.FLOAT32:
        b = _buffer_array(m, bias, np.float32)
        return None if delta.size != b.size else (b + delta).astype(np.float32)
    b = _buffer_array(m, bias, np.int32).astype(np.int64)
    q_in, q_w = x.quantization, w.quantization
    if q_in is None or q_w is None or q_in.scale is None or q_w.scale is None:
        return None
    s_in = np.asarray(q_in.scale, dtype=np.float64)
    s_w = np.asarray(q_w.scale, dtype=np.float64)
    if delta.size != b.size or s_in.size != 1 or s_w.size not in (1, b.size):
        return None
    step = s_in[0] * np.broadcast_to(s_w, b.shape)  # bias step = input scale × per-channel weight scale
    info = np.iinfo(np.int32)
    return np.clip(b + np.round(delta / step), info.min, info.max).astype(np.int32)


def shift_output_bias(data: bytes, delta) -> tuple[bytes, str] | None:
    """Add ``delta`` (float, one value per output channel, in output units) to the bias of the output op
    (int32 bias of an integer op, or float32 bias of a float op in a selectively quantized graph). Returns
    (new bytes, op name) or None when the graph's output is not produced by a biased FC/conv."""
    m = read_model(data)
    found = _output_bias(m)
    if found is None:
        return None
    _, name, bias, x, w = found
    nb = _shifted_bias(m, bias, x, w, np.asarray(delta, dtype=np.float64).reshape(-1))
    if nb is None:
        return None
    bias.buffer = _new_buffer(m, nb.tobytes())  # a fresh buffer: converters may share constant buffers
    return write_model(m), name


# --------------------------------------------------------------------------------------- int32 biases

BIAS_LIMIT = 2 ** 30  # the largest int32 bias magnitude a refitted channel gets (half the range: headroom)


def _tensor_name(t) -> str:
    return t.name.decode("utf-8", "replace") if isinstance(t.name, bytes) else str(t.name)


def float_biases(data: bytes) -> dict[str, np.ndarray]:
    """Output tensor name → float32 bias of every biased weight op (CONV_2D, DEPTHWISE_CONV_2D,
    FULLY_CONNECTED) of a float .tflite's main subgraph."""
    m = read_model(data)
    sg, out = m.subgraphs[0], {}
    for op in sg.operators:
        if op_name(m, op) in WEIGHT_OPS and len(op.inputs) >= 3 and op.inputs[2] >= 0:
            t = sg.tensors[op.inputs[2]]
            b = _buffer_array(m, t, np.float32) if t.type == schema.TensorType.FLOAT32 else None
            if b is not None:
                out[_tensor_name(sg.tensors[op.outputs[0]])] = b
    return out


def _set_values(m, t, arr: np.ndarray, users: dict[int, int]) -> None:
    """``t``'s constant values replaced (a fresh buffer when other tensors share its buffer)."""
    raw = np.ascontiguousarray(arr).tobytes()
    if users.get(t.buffer, 0) == 1:
        m.buffers[t.buffer].data = np.frombuffer(raw, dtype=np.uint8)
    else:
        users[t.buffer] -= 1
        t.buffer = _new_buffer(m, raw)


def _bias_users(m, sg, float_bias: dict[str, np.ndarray]) -> dict[int, list]:
    """Per-channel int8 weight tensor → [(op, input scale, float bias)] of the int8 ops using it."""
    users: dict[int, list] = {}
    for op in sg.operators:
        if op_name(m, op) not in WEIGHT_OPS or len(op.inputs) < 3 or op.inputs[2] < 0:
            continue
        ti, tw, tb = (sg.tensors[i] for i in op.inputs[:3])
        qi, qw = ti.quantization, tw.quantization
        b = float_bias.get(_tensor_name(sg.tensors[op.outputs[0]]))
        if (tw.type != schema.TensorType.INT8 or tb.type != schema.TensorType.INT32 or b is None
                or qi is None or qi.scale is None or len(qi.scale) != 1 or qw is None or qw.scale is None
                or len(qw.scale) != b.size):
            continue
        users.setdefault(op.inputs[1], []).append((op, float(qi.scale[0]), b.astype(np.float64)))
    return users


def fit_int32_biases(data: bytes, float_bias: dict[str, np.ndarray]) -> tuple[bytes, int]:
    """A per-channel int8 file whose int32 biases (step = input scale × the channel's weight scale) cannot
    hold the float biases ``float_bias`` (output tensor name → values, :func:`float_biases` of the float file
    it was quantized from): a channel with (near-)zero weights and a bias, whose tiny weight scale puts the
    bias past int32 — the integer bias is clamped and the channel's output is wrong. Such a channel's weight
    scale grows to ``|b| / (input scale · 2³⁰)`` (its tiny weights re-quantized on it: mostly 0), and every
    op using the weights gets its bias re-quantized. The TF converter does the same when it quantizes
    (ai-edge-quantizer does not). Returns the file and the number of channels changed."""
    m = read_model(data)
    sg = m.subgraphs[0]
    users = {}
    for g in m.subgraphs:
        for t in g.tensors or []:
            users[t.buffer] = users.get(t.buffer, 0) + 1
    n = 0
    for wi, ops in _bias_users(m, sg, float_bias).items():
        tw = sg.tensors[wi]
        s = np.asarray(tw.quantization.scale, np.float64)
        need = np.max([np.abs(b) / (s_in * BIAS_LIMIT) for _, s_in, b in ops], axis=0)
        if not np.any(need > s):
            continue
        new = np.maximum(s, need)
        shape = [1] * len(tw.shape)
        shape[tw.quantization.quantizedDimension] = -1
        q = _buffer_array(m, tw, np.int8).reshape([int(d) for d in tw.shape]).astype(np.float64)
        q = np.clip(np.round(q * (s / new).reshape(shape)), -127, 127).astype(np.int8)
        _set_values(m, tw, q, users)
        tw.quantization.scale = [float(x) for x in new.astype(np.float32)]
        for op, s_in, b in ops:
            tb = sg.tensors[op.inputs[2]]
            info = np.iinfo(np.int32)
            _set_values(m, tb, np.clip(np.round(b / (s_in * new)), info.min, info.max).astype(np.int32), users)
            tb.quantization.scale = [float(x) for x in (s_in * new).astype(np.float32)]
        n += int(np.sum(need > s))
    return (write_model(m) if n else data), n


# --------------------------------------------------------------------------------------- statistics


def conv_sparsity(data: bytes, ops=frozenset({"CONV_2D"})) -> float:
    """Fraction of exact zeros in the weight tensors (input 1) of the ``ops`` of a .tflite, whatever their
    dtype; NaN if those weights are not constants."""
    m = read_model(data)
    dtypes = {k: NP_TYPES[k] for k in (schema.TensorType.FLOAT32, schema.TensorType.FLOAT16,
                                         schema.TensorType.INT8)}
    zeros = total = 0
    seen = set()
    for sg in m.subgraphs:
        for op in sg.operators:
            if op_name(m, op) not in ops or len(op.inputs) < 2:
                continue
            t = sg.tensors[op.inputs[1]]
            if t.buffer in seen:
                continue
            seen.add(t.buffer)
            a = _buffer_array(m, t, dtypes[t.type]) if t.type in dtypes else None
            if a is None:
                continue
            zeros += int((a == 0).sum())
            total += a.size
    return zeros / total if total else float("nan")


def _weight_layers(model, sg) -> tuple[int, set[int]]:
    """(number of weight ops, indices of their bias tensors) of subgraph ``sg`` (reader API)."""
    names = op_names()
    codes = []
    for i in range(model.OperatorCodesLength()):
        oc = model.OperatorCodes(i)
        codes.append(max(int(oc.BuiltinCode()), int(oc.DeprecatedBuiltinCode())))
    depth = 0
    bias_inputs: set[int] = set()
    for i in range(sg.OperatorsLength()):
        op = sg.Operators(i)
        if names.get(codes[op.OpcodeIndex()], "") in WEIGHT_OPS:
            depth += 1
            ins = op.InputsAsNumpy()
            if not isinstance(ins, int) and len(ins) > 2 and ins[2] >= 0:
                bias_inputs.add(int(ins[2]))
    return depth, bias_inputs


def _nonzero(ten, vals: np.ndarray) -> int:
    """Values not equal to their zero point (per-channel zero points broadcast along the quantized axis)."""
    zp = 0
    q = ten.Quantization()
    if q is not None and q.ZeroPointLength() > 0:
        zps = q.ZeroPointAsNumpy()
        if zps.size == 1:
            zp = int(zps[0])
        elif np.any(zps != 0):
            arr = vals.reshape(ten.ShapeAsNumpy())
            bshape = [1] * arr.ndim
            bshape[q.QuantizedDimension()] = -1
            return int(np.count_nonzero(arr != zps.reshape(bshape)))
    return int(np.count_nonzero(vals != zp))


def param_counts(data: bytes) -> tuple[int, int, int]:
    """(depth, params, nonzero params) of a .tflite flatbuffer (main subgraph). ``ModelError`` when the
    bytes are not a .tflite."""
    model = root(data)
    sg = model.Subgraphs(0)
    depth, bias_inputs = _weight_layers(model, sg)
    params = nonzero = 0
    for t in range(sg.TensorsLength()):
        ten = sg.Tensors(t)
        buf = model.Buffers(ten.Buffer())
        raw = buf.DataAsNumpy() if buf is not None else 0
        if isinstance(raw, int) or raw.size == 0:
            continue  # not a constant
        ttype = ten.Type()
        if ttype not in NP_TYPES:
            continue
        if ttype == schema.TensorType.INT32 and t not in bias_inputs:
            continue  # shapes, axes, paddings: not weights
        vals = np.frombuffer(raw.tobytes(), dtype=NP_TYPES[ttype])
        params += int(vals.size)
        nonzero += _nonzero(ten, vals)
    return depth, params, nonzero


def io_shapes(data: bytes) -> tuple[list[list[int]], list[list[int]]]:
    """(input shapes, output shapes) of the main subgraph, read from the flatbuffer without an interpreter."""
    sg = root(data).Subgraphs(0)

    def shapes(idx) -> list[list[int]]:
        return [[int(d) for d in sg.Tensors(int(i)).ShapeAsNumpy()] for i in idx]

    ins = sg.InputsAsNumpy() if sg.InputsLength() else []
    outs = sg.OutputsAsNumpy() if sg.OutputsLength() else []
    return shapes(ins), shapes(outs)


# --------------------------------------------------------------------------------------- weight ops


def _options(op) -> dict:
    """Stride / padding / dilation / depth multiplier of a conv op (empty for a fully-connected op)."""
    o = op.builtinOptions
    if o is None or not hasattr(o, "strideH"):
        return {}
    return {"stride": (int(o.strideH), int(o.strideW)), "same": int(o.padding) == schema.Padding.SAME,
            "dilation": (int(o.dilationHFactor or 1), int(o.dilationWFactor or 1)),
            "depth_multiplier": int(getattr(o, "depthMultiplier", 1) or 1)}


def _weight_op(m, sg, k: int, op) -> dict | None:
    """One weight op's record for :func:`weight_ops`, or None when its weight is not a constant."""
    t_in, t_w, t_out = (sg.tensors[i] for i in (op.inputs[0], op.inputs[1], op.outputs[0]))
    if t_w.type not in NP_TYPES:
        return None
    w = _buffer_array(m, t_w, NP_TYPES[t_w.type])
    if w is None:
        return None
    q = t_w.quantization
    has_q = q is not None and q.scale is not None and len(q.scale) > 0
    qi = t_in.quantization
    in_q = (float(qi.scale[0]), int(qi.zeroPoint[0])) if qi is not None and qi.scale is not None \
        and len(qi.scale) == 1 else None
    return {"op_index": k, "op": op_name(m, op), "input": int(op.inputs[0]), "weight": int(op.inputs[1]),
            "output_name": t_out.name.decode("utf-8", "replace") if isinstance(t_out.name, bytes) else str(t_out.name),
            "input_shape": [int(d) for d in t_in.shape], "input_quant": in_q,
            "weights": w.reshape([int(d) for d in t_w.shape]),
            "scales": np.asarray(q.scale, np.float64) if has_q else None,
            "zero_points": np.asarray(q.zeroPoint, np.int64) if has_q and q.zeroPoint is not None else None,
            "axis": int(q.quantizedDimension) if has_q else None, **_options(op)}


def weight_ops(data: bytes, ops=frozenset({"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"})) -> list[dict]:
    """The constant-weight ``ops`` of the main subgraph, in graph order: op index and name, input / weight
    tensor indices (the interpreter's indices), the output tensor's name, the input tensor's shape and
    (scale, zero point) if per-tensor quantized, the weights as stored (dtype and shape of the tensor, e.g.
    (Cout, kh, kw, Cin) for CONV_2D), their per-channel ``scales`` / ``zero_points`` / quantized ``axis`` (None
    for float weights) and, for convolutions, ``stride``, ``same`` padding, ``dilation`` and
    ``depth_multiplier``."""
    m = read_model(data)
    sg = m.subgraphs[0]
    out = []
    for k, op in enumerate(sg.operators):
        if op_name(m, op) in ops and len(op.inputs) >= 2 and op.inputs[1] >= 0:
            rec = _weight_op(m, sg, k, op)
            if rec is not None:
                out.append(rec)
    return out


def replace_weights(data: bytes, new: dict[int, np.ndarray]) -> bytes:
    """``data`` with the constant tensors ``{tensor index: values}`` of the main subgraph replaced (same
    dtype and number of values as stored; quantization parameters kept). A buffer only that tensor uses is
    rewritten in place; a shared one (converters share identical constants) stays with its other users and
    the tensor gets a fresh buffer (the last user replaced rewrites it in place: no orphaned buffer)."""
    m = read_model(data)
    sg = m.subgraphs[0]
    users: dict[int, int] = {}
    for g in m.subgraphs:
        for t in g.tensors or []:
            users[t.buffer] = users.get(t.buffer, 0) + 1
    for i, values in new.items():
        t = sg.tensors[int(i)]
        old = _buffer_array(m, t, NP_TYPES[t.type])
        arr = np.ascontiguousarray(np.asarray(values).astype(NP_TYPES[t.type], copy=False))
        if old is None or arr.size != old.size:
            raise ValueError(f"tensor {i}: {arr.size} values do not replace {None if old is None else old.size}")
        if users.get(t.buffer, 0) == 1:  # the last user of the buffer
            m.buffers[t.buffer].data = np.frombuffer(arr.tobytes(), dtype=np.uint8)
        else:
            users[t.buffer] -= 1
            t.buffer = _new_buffer(m, arr.tobytes())
    return write_model(m)


# --------------------------------------------------------------------------------------- fp16 files


def _float16_index(m) -> dict[tuple, np.ndarray | None]:
    """(shape, float16 bytes) → the float32 constant of ``m``'s main subgraph that rounds to them (None when
    two different float32 constants round to the same values: ambiguous, left alone)."""
    sg, out = m.subgraphs[0], {}
    for t in sg.tensors:
        if t.type != schema.TensorType.FLOAT32 or t.buffer >= len(m.buffers):
            continue
        a = _buffer_array(m, t, np.float32)
        if a is None or a.size == 0:
            continue
        key = (tuple(int(d) for d in t.shape), a.astype(np.float16).tobytes())
        prev = out.get(key, a)
        out[key] = a if prev is not None and np.array_equal(prev, a) else None
    return out


def _float16_sizes(m, sg) -> list[int]:
    """Sizes of the float16 constants read through a DEQUANTIZE op in ``sg``."""
    out = []
    for op in sg.operators:
        if op_name(m, op) == "DEQUANTIZE" and len(op.inputs) == 1:
            t = sg.tensors[op.inputs[0]]
            if t.type == schema.TensorType.FLOAT16:
                out.append(int(np.prod([int(d) for d in t.shape])) if len(t.shape) else 1)
    return out


def _size_cap(sizes: list[int], max_elements: int, max_share: float) -> int:
    """The largest constant size ≤ ``max_elements`` such that every float16 constant of that size or smaller holds
    at most ``max_share`` of all float16 values (smallest first; a tiny model keeps its fp16 file ~half size)."""
    budget, cum, cap = max_share * sum(sizes), 0, 0
    for size in sorted({x for x in sizes if x <= max_elements}):
        cum += size * sizes.count(size)
        if cum > budget:
            break
        cap = size
    return cap


def float32_small_constants(data16: bytes, data32: bytes, max_elements: int,
                            max_share: float = 1.0) -> tuple[bytes, int, int, int]:
    """An fp16 .tflite (float16 constants each read through a DEQUANTIZE op) with every such constant of at most
    ``max_elements`` values put back to float32: the DEQUANTIZE op is removed and its output becomes a float32
    constant holding the values of ``data32`` — the float32 file of the same graph — that round to the stored
    float16 ones (found by shape and rounded values, so tensor names need not match; a constant found nowhere,
    or ambiguously, stays float16); smallest first, the restored constants hold at most ``max_share`` of the file's
    float16 values. Returns (file, constants restored, values restored, the size cap that share allowed);
    ``data16`` itself when none was."""
    m, m32 = read_model(data16), read_model(data32)
    index = _float16_index(m32)
    sg = m.subgraphs[0]
    max_elements = _size_cap(_float16_sizes(m, sg), max_elements, max_share)
    users: dict[int, int] = {}
    for op in sg.operators:
        for i in op.inputs:
            users[i] = users.get(i, 0) + 1
    keep, n, values = [], 0, 0
    for op in sg.operators:
        t_in = sg.tensors[op.inputs[0]] if op_name(m, op) == "DEQUANTIZE" and len(op.inputs) == 1 else None
        a = (_buffer_array(m, t_in, np.float16)
             if t_in is not None and t_in.type == schema.TensorType.FLOAT16 else None)
        f32 = index.get((tuple(int(d) for d in t_in.shape), a.tobytes())) if a is not None else None
        t_out = sg.tensors[op.outputs[0]]
        if f32 is None or a.size > max_elements or t_out.type != schema.TensorType.FLOAT32:
            keep.append(op)
            continue
        t_out.buffer = _new_buffer(m, np.ascontiguousarray(f32).tobytes())
        users[op.inputs[0]] -= 1
        if users[op.inputs[0]] == 0:  # the float16 constant is read no more: an empty tensor (buffer 0)
            t_in.buffer = 0
        n, values = n + 1, values + int(a.size)
    if not n:
        return data16, 0, 0, max_elements
    sg.operators = keep
    held = {t.buffer for g in m.subgraphs for t in (g.tensors or [])} | {md.buffer for md in (m.metadata or [])}
    for i, buf in enumerate(m.buffers):
        if i and i not in held:  # float16 values no tensor holds any more
            buf.data = None
    return write_model(m), n, values, max_elements


def float_constants(data: bytes) -> list[dict]:
    """The float32 constant inputs of the main subgraph's ops, each once, in graph order: ``tensor`` (index),
    ``values`` (flat float32), ``op`` / ``op_index`` (the first op reading it)."""
    m = read_model(data)
    sg, out, seen = m.subgraphs[0], [], set()
    for k, op in enumerate(sg.operators):
        for i in op.inputs:
            t = sg.tensors[i] if i >= 0 else None
            if t is None or i in seen or t.type != schema.TensorType.FLOAT32:
                continue
            a = _buffer_array(m, t, np.float32)
            if a is not None and a.size:
                seen.add(i)
                out.append({"tensor": int(i), "values": a, "op": op_name(m, op), "op_index": k})
    return out
