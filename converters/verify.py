"""Verification after export: load the bytes with ai-edge-litert, check interface dtypes, list ops left in
float in full-integer models, and compare scores/decisions with the source Keras model."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from edgeretina.errors import ExportError
from edgeretina.tasks import TaskKind, TaskSpec, activate, scores_from_output

from .variants import IO, VariantInfo

_BOUNDARY_OPS = {"QUANTIZE", "DEQUANTIZE"}


def interpreter(tflite: bytes, num_threads: int = 2):
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_content=tflite, num_threads=num_threads)
    it.allocate_tensors()
    return it


def run(tflite: bytes, X: np.ndarray, num_threads: int = 2, it=None) -> np.ndarray:
    """Raw model outputs (dequantized to float64) for a float32 batch of model inputs, one image at a time."""
    it = it or interpreter(tflite, num_threads)
    i = it.get_input_details()[0]
    o = it.get_output_details()[0]
    out = []
    for x in np.asarray(X, dtype=np.float32):
        x = x[None]
        if i["dtype"] == np.int8:
            s, z = i["quantization"]
            x = np.clip(np.round(x / s + z), -128, 127).astype(np.int8)
        it.set_tensor(i["index"], x)
        it.invoke()
        r = it.get_tensor(o["index"]).astype(np.float64)
        if o["dtype"] == np.int8:
            s, z = o["quantization"]
            r = (r - z) * s
        out.append(r.reshape(-1))
    return np.stack(out)


def probabilities(raw: np.ndarray, output: dict) -> np.ndarray:
    if output.get("kind") == "logits":
        return activate(raw, output.get("activation"))
    return raw


def float_ops(it) -> list[str]:
    """Names of ops (other than interface QUANTIZE/DEQUANTIZE) that compute in float32."""
    out = []
    for op in it._get_ops_details():  # noqa: SLF001 - the only op listing LiteRT exposes
        name = op["op_name"]
        if name in _BOUNDARY_OPS or name.startswith("DELEGATE"):
            continue
        types = list(op["operand_types"]) + list(op["result_types"])
        if any(t == np.float32 for t in types):
            out.append(name)
    return out


def io_details(it) -> dict:
    def one(d):
        s, z = d["quantization"]
        return {"shape": [int(v) for v in d["shape"]], "dtype": np.dtype(d["dtype"]).name,
                "scale": float(s), "zero_point": int(z)}

    return {"input": one(it.get_input_details()[0]), "output": one(it.get_output_details()[0])}


def decisions(spec: TaskSpec, scores: np.ndarray, threshold: float | None) -> np.ndarray:
    if spec.kind is TaskKind.BINARY:
        return scores >= (0.5 if threshold is None else threshold)
    if spec.kind is TaskKind.MULTICLASS:
        return scores.argmax(axis=1)
    thr = 0.5 if threshold is None or np.ndim(threshold) else threshold
    return scores >= np.asarray(thr)


@dataclass(frozen=True)
class Verification:
    loads: bool
    input_dtype: str
    output_dtype: str
    dtypes_ok: bool
    float_ops: tuple[str, ...]
    n: int
    max_abs_diff: float | None
    mean_abs_diff: float | None
    agreement: float | None
    score_tol: float
    min_agreement: float
    within_tolerance: bool | None
    sample: str = ""
    reference: str = "source Keras model"
    vs_source: dict | None = None   # for fine-tuned variants: drift from the source model (informational)
    scores: np.ndarray | None = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict:
        d = {k: v for k, v in asdict(self).items() if k != "scores"}
        d["float_ops"] = list(self.float_ops)
        return d


def expected_io_dtype(info: VariantInfo, io: IO) -> str:
    return "int8" if info.full_integer and not info.mixed and io is IO.INT8 else "float32"


def verify(tflite: bytes, info: VariantInfo, io: IO, spec: TaskSpec, output: dict, threshold,
           X: np.ndarray | None, ref_scores: np.ndarray | None, allow_float_fallback: bool = False,
           sample: str = "", num_threads: int = 2, reference: str = "source Keras model") -> Verification:
    """Verify converted bytes. Raises ``ExportError`` for a broken file, wrong interface dtypes, or float ops
    left in a full-integer model without ``allow_float_fallback``; score drift is recorded, not raised."""
    try:
        it = interpreter(tflite, num_threads)
    except (RuntimeError, ValueError) as e:
        raise ExportError(f"{info.variant.value}: LiteRT cannot load the converted model ({e})") from None
    d = io_details(it)
    want = expected_io_dtype(info, io)
    dtypes_ok = d["input"]["dtype"] == want and d["output"]["dtype"] == want
    if not dtypes_ok:
        raise ExportError(f"{info.variant.value}: interface is {d['input']['dtype']}/{d['output']['dtype']}, "
                          f"expected {want}")
    fops = tuple(float_ops(it)) if info.full_integer else ()
    if fops and not allow_float_fallback and not info.mixed:
        raise ExportError(f"{info.variant.value}: ops left in float: {', '.join(sorted(set(fops)))} "
                          "(pass --allow-float-fallback to accept them)")
    maxd = meand = agree = None
    ok = None
    scores = None
    if X is not None and ref_scores is not None and len(X):
        raw = run(tflite, X, it=it)
        scores = scores_from_output(spec, probabilities(raw, output))
        diff = np.abs(scores - ref_scores)
        maxd, meand = float(diff.max()), float(diff.mean())
        agree = float(np.mean(decisions(spec, scores, threshold) == decisions(spec, ref_scores, threshold)))
        ok = bool(maxd <= info.score_tol and agree >= info.min_agreement)
    return Verification(True, d["input"]["dtype"], d["output"]["dtype"], dtypes_ok, fops,
                        0 if X is None else int(len(X)), maxd, meand, agree, info.score_tol, info.min_agreement,
                        ok, sample, reference, None, scores)


def drift(spec: TaskSpec, scores: np.ndarray, thr, ref_scores: np.ndarray, ref_thr) -> dict:
    """Score / decision drift of a fine-tuned variant from the source model, each at its own threshold."""
    diff = np.abs(scores - ref_scores)
    agree = np.mean(decisions(spec, scores, thr) == decisions(spec, ref_scores, ref_thr))
    return {"max_abs_diff": float(diff.max()), "mean_abs_diff": float(diff.mean()), "agreement": float(agree)}
