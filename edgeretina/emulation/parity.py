"""ARM-vs-x86 parity of one file's raw outputs (issue 17): the comparison ``export --verify-arm`` records per
variant and an ``arm64-emu`` bench row keeps in its ``device_info["vs_x86"]`` — the share of images whose task
decision differs from the same file on x86 (each at the model's own threshold), the largest |Δ| of a raw
output (logit or probability, as the model emits it) and whether every output is bit-identical;
:func:`kernel_tier` names the ISA tier the emulated CPU offers XNNPACK. For DR grading the task decision is the
predicted grade (the expected grade, rounded: ``tasks.predicted_classes``), and the referable screen (predicted
grade >= 2) is counted as well."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Sequence

import numpy as np

from edgeretina.runtime.decisions import (REFERABLE_GRADE, decision_flip_rate, disagreement, task_decisions,
                                          to_probabilities)
from edgeretina.tasks import Task, TaskKind, TaskSpec, predicted_classes, scores_from_output

LATENCY_NOTE = "latency under emulation is not a speed (not measured)"


@dataclass(frozen=True)
class Parity:
    """One file on emulated aarch64 vs the same file on x86, on the same inputs."""

    n: int
    flips: int  # images whose task decision differs (DR grading: the predicted grade)
    flip_rate: float
    max_abs_diff: float  # largest |Δ| of any raw output
    identical: bool  # every raw output bit-identical
    output: str  # "logits" or "probabilities": what max_abs_diff is measured in
    referable_flips: int | None = None  # DR grading: images whose referable decision (grade >= 2) differs
    referable_flip_rate: float | None = None
    flipped: tuple[int, ...] = ()  # positions (in the inputs' order) of the images whose task decision differs

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def compare_outputs(spec: TaskSpec, threshold, raw_arm: np.ndarray, raw_x86: np.ndarray, logits: bool,
                    activation: str | None) -> Parity:
    """:class:`Parity` of raw outputs (N, outputs) of one file on arm vs x86, decisions at ``threshold``."""
    a, b = np.asarray(raw_arm, np.float64), np.asarray(raw_x86, np.float64)
    if a.shape != b.shape:
        raise ValueError(f"arm and x86 outputs differ in shape: {a.shape} vs {b.shape}")
    sa = scores_from_output(spec, to_probabilities(a, logits, activation))
    sb = scores_from_output(spec, to_probabilities(b, logits, activation))
    rate = decision_flip_rate(spec, sa, sb, threshold) if len(a) else float("nan")
    flips = int(round(rate * len(a))) if len(a) else 0
    flipped = tuple(int(i) for i in np.flatnonzero(_differs(spec, threshold, sa, sb))) if len(a) else ()
    diff = float(np.max(np.abs(a - b))) if a.size else 0.0
    ref = _referable(spec, sa, sb) if len(a) else {}
    return Parity(n=int(len(a)), flips=flips, flip_rate=float(rate), max_abs_diff=diff,
                  identical=bool(a.size == 0 or np.array_equal(a, b)),
                  output="logits" if logits else "probabilities", flipped=flipped, **ref)


def _differs(spec: TaskSpec, threshold, sa: np.ndarray, sb: np.ndarray) -> np.ndarray:
    """(N,) True where the task decision of scores ``sa`` differs from that of ``sb``."""
    d = task_decisions(spec, sa, threshold) != task_decisions(spec, sb, threshold)
    return d.reshape(len(d), -1).any(axis=1)


def _referable(spec: TaskSpec, probs_a: np.ndarray, probs_b: np.ndarray) -> dict[str, Any]:
    """DR grading: how many images' referable decision (predicted grade >= 2) differs; {} for other tasks."""
    if spec.kind is not TaskKind.MULTICLASS or spec.task is not Task.DR:
        return {}
    ra = predicted_classes(spec, probs_a) >= REFERABLE_GRADE
    rb = predicted_classes(spec, probs_b) >= REFERABLE_GRADE
    rate = disagreement(ra, rb)
    return {"referable_flips": int(round(rate * len(ra))), "referable_flip_rate": float(rate)}


def kernel_tier(isa: Sequence[str] | None) -> str:
    """The arm64 kernel tier a CPU offers (from :func:`edgeretina.env.isa_flags` names)."""
    isa = set(isa or ())
    if not isa:
        return "?"
    parts = ["NEON"] + [n for f, n in (("fp16", "fp16"), ("dotprod", "dot product"), ("i8mm", "i8mm"),
                                       ("sve2", "SVE2"), ("sme", "SME"), ("sme2", "SME2")) if f in isa]
    return " + ".join(parts)
