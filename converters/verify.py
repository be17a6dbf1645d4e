"""Verification after export: load the bytes in LiteRT (``edgeretina.runtime``), check interface dtypes,
list ops left in float in full-integer models, and compare scores/decisions with the source Keras model.

``agreement`` = 1 − ``runtime.decision_flip_rate``: the same computation as the benchmark's flip rate."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from edgeretina.errors import ExportError, ModelError
from edgeretina.runtime import LiteRTModel, decision_flip_rate, probabilities, task_decisions
from edgeretina.tasks import TaskSpec, scores_from_output

from .variants import IO, VariantInfo

__all__ = ["Comparison", "Verification", "decisions", "drift", "expected_io_dtype", "float_ops", "interpreter", "io_details",
           "probabilities", "run", "verify"]


def interpreter(tflite: bytes, num_threads: int = 2) -> LiteRTModel:
    """The converted bytes loaded in LiteRT (``edgeretina.runtime.LiteRTModel``)."""
    return LiteRTModel(tflite, threads=num_threads, name="converted model")


def run(tflite: bytes, X: np.ndarray, num_threads: int = 2, it: LiteRTModel | None = None) -> np.ndarray:
    """Raw model outputs (dequantized to float64) for a float32 batch of model inputs, one image at a time."""
    return (it or interpreter(tflite, num_threads)).raw(X)


def float_ops(it: LiteRTModel) -> list[str]:
    """Names of ops (other than interface QUANTIZE/DEQUANTIZE) that compute in float32."""
    return it.float_ops()


def io_details(it: LiteRTModel) -> dict:
    return it.io_details()


def decisions(spec: TaskSpec, scores: np.ndarray, threshold) -> np.ndarray:
    """The task's decisions (``edgeretina.runtime.task_decisions``)."""
    return task_decisions(spec, scores, threshold)


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
    return "int8" if info.integer_io and io is IO.INT8 else "float32"


@dataclass(frozen=True)
class Comparison:
    """What a converted model's scores are checked against: the task, the file's metadata ``output`` block
    and ``threshold``, the check images ``X`` (model inputs) and the reference's scores on them (either None:
    no score check), and where the images (``sample``) and the scores (``reference``) come from."""

    spec: TaskSpec
    output: dict
    threshold: Any
    X: np.ndarray | None
    ref_scores: np.ndarray | None
    sample: str = ""
    reference: str = "source Keras model"


def verify(tflite: bytes, info: VariantInfo, io: IO, against: Comparison, allow_float_fallback: bool = False,
           num_threads: int = 2) -> Verification:
    """Verify converted bytes. Raises ``ExportError`` for a broken file, wrong interface dtypes, or float ops
    left in a full-integer model without ``allow_float_fallback``; score drift is recorded, not raised."""
    c = against
    try:
        it = LiteRTModel(tflite, threads=num_threads, name=f"{info.variant.value}: the converted model")
    except ModelError as e:
        raise ExportError(str(e)) from None
    d = it.io_details()
    want = expected_io_dtype(info, io)
    dtypes_ok = d["input"]["dtype"] == want and d["output"]["dtype"] == want
    if not dtypes_ok:
        raise ExportError(f"{info.variant.value}: interface is {d['input']['dtype']}/{d['output']['dtype']}, "
                          f"expected {want}")
    fops = tuple(it.float_ops()) if info.full_integer else ()
    if fops and not allow_float_fallback and not info.mixed:
        raise ExportError(f"{info.variant.value}: ops left in float: {', '.join(sorted(set(fops)))} "
                          "(pass --allow-float-fallback to accept them)")
    maxd = meand = agree = None
    ok = None
    scores = None
    if c.X is not None and c.ref_scores is not None and len(c.X):
        scores = scores_from_output(c.spec, it.probabilities(c.X, c.output))
        diff = np.abs(scores - c.ref_scores)
        maxd, meand = float(diff.max()), float(diff.mean())
        agree = 1.0 - decision_flip_rate(c.spec, scores, c.ref_scores, c.threshold)
        ok = bool(maxd <= info.score_tol and agree >= info.min_agreement)
    return Verification(True, d["input"]["dtype"], d["output"]["dtype"], dtypes_ok, fops,
                        0 if c.X is None else int(len(c.X)), maxd, meand, agree, info.score_tol,
                        info.min_agreement, ok, c.sample, c.reference, None, scores)


def drift(spec: TaskSpec, scores: np.ndarray, thr, ref_scores: np.ndarray, ref_thr) -> dict:
    """Score / decision drift of a fine-tuned variant from the source model, each at its own threshold."""
    diff = np.abs(scores - ref_scores)
    agree = 1.0 - decision_flip_rate(spec, scores, ref_scores, thr, ref_thr)
    return {"max_abs_diff": float(diff.max()), "mean_abs_diff": float(diff.mean()), "agreement": float(agree)}
