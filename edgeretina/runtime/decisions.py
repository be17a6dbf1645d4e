"""Model outputs → probabilities → screening decisions, and how often two models' decisions differ.

One computation for every place that compares a variant with its reference: the export's verification
(``agreement`` in manifest.json = 1 − :func:`decision_flip_rate`) and the benchmark's ``flip_rate``
(:func:`flip_rate` on the screening scores) use the functions below.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from edgeretina.tasks import Task, TaskKind, TaskSpec, activate, predicted_classes

REFERABLE_GRADE = 2  # DR grading decides "refer" on p(grade >= 2): moderate NPDR or worse


# ------------------------------------------------------------------------------------------ probabilities


def outputs_logits(output: dict[str, Any] | None) -> bool:
    """True when a model's metadata ``output`` block says the graph outputs logits."""
    return isinstance(output, dict) and str(output.get("kind", "probabilities")).lower() == "logits"


def to_probabilities(raw: np.ndarray, logits: bool, activation: str | None) -> np.ndarray:
    """Raw model output → probabilities (N, outputs); logits get the metadata's activation."""
    out = np.asarray(raw, dtype=np.float64)
    out = out.reshape(len(out), -1)
    return activate(out, activation) if logits else out


def probabilities(raw: np.ndarray, output: dict[str, Any] | None) -> np.ndarray:
    """:func:`to_probabilities` driven by a metadata ``output`` block (``{"kind", "activation"}``)."""
    return to_probabilities(raw, outputs_logits(output), (output or {}).get("activation"))


# ------------------------------------------------------------------------------------------ decisions


def decisions(scores, threshold) -> np.ndarray:
    """Screening decisions: ``score >= threshold`` (per label for a (N, L) score matrix)."""
    s = np.asarray(scores, dtype=np.float64)
    return s >= np.asarray(threshold, dtype=np.float64)


def screening_threshold(spec: TaskSpec, threshold) -> float | list[float] | None:
    """A model's threshold (metadata / config.json ``threshold``) as its screening score is decided at and
    as reports show it — the one reading of it: a float for BINARY and for DR grading (on p(referable));
    for MULTILABEL a list of one value per label (from ``{label: value}`` or a list of L values) or one
    shared float; None for other MULTICLASS tasks (argmax). A missing or malformed value reads as 0.5."""
    if spec.kind is TaskKind.MULTICLASS and spec.task is not Task.DR:
        return None
    if isinstance(threshold, (bool, np.bool_)) or threshold is None:
        return 0.5
    if isinstance(threshold, (int, float, np.number)):
        return float(threshold)
    if spec.kind is not TaskKind.MULTILABEL:
        return 0.5
    if isinstance(threshold, dict):
        return [float(threshold.get(lb, 0.5)) for lb in spec.labels]
    if isinstance(threshold, (list, tuple, np.ndarray)) and np.ndim(threshold) == 1:
        if len(threshold) == spec.n_outputs:
            return [float(t) for t in threshold]
        if len(threshold) == 1:
            return float(threshold[0])
    return 0.5


def label_thresholds(spec: TaskSpec, threshold) -> Any:
    """The threshold(s) a task decides at (:func:`screening_threshold`, per-label values as an array):
    a float for BINARY, a float or an (L,) array for MULTILABEL, None for MULTICLASS (argmax)."""
    if spec.kind is TaskKind.MULTICLASS:
        return None
    t = screening_threshold(spec, threshold)
    return np.asarray(t, dtype=np.float64) if isinstance(t, list) else t


def task_decisions(spec: TaskSpec, scores, threshold=None) -> np.ndarray:
    """A task's decisions on its scores (``tasks.scores_from_output``): BINARY p(positive) >= threshold,
    MULTICLASS argmax class, MULTILABEL per-label score >= its threshold."""
    if spec.kind is TaskKind.MULTICLASS:
        return predicted_classes(spec, scores)
    return decisions(scores, label_thresholds(spec, threshold))


def disagreement(a: np.ndarray, b: np.ndarray) -> float:
    """Share of images whose decisions differ (an image of a (N, L) decision matrix counts once when any
    of its labels differs); NaN for no images."""
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        raise ValueError(f"flip rate needs the same cases: shapes {a.shape} vs {b.shape}")
    if a.size == 0:
        return float("nan")
    diff = a != b
    if diff.ndim > 1:
        diff = diff.reshape(len(diff), -1).any(axis=1)
    return float(diff.mean())


def flip_rate(ref_scores, var_scores, threshold=0.5) -> float:
    """Share of images whose decision at ``threshold`` differs between reference and variant.

    For (N, L) multi-label scores an image counts as flipped when any of its label decisions differs.
    ``threshold`` may be a scalar or one value per label.
    """
    return disagreement(decisions(ref_scores, threshold), decisions(var_scores, threshold))


def label_flip_rate(ref_labels, var_labels) -> float:
    """Share of images whose predicted class (e.g. argmax grade) differs."""
    return disagreement(ref_labels, var_labels)


def decision_flip_rate(spec: TaskSpec, scores, ref_scores, threshold=None, ref_threshold=Ellipsis) -> float:
    """Share of images whose task decision differs between a model and its reference, each at its own
    threshold (``ref_threshold`` defaults to ``threshold``). For BINARY and MULTILABEL scores at one
    threshold this is :func:`flip_rate`; for MULTICLASS it is :func:`label_flip_rate` of the argmax."""
    ref_threshold = threshold if ref_threshold is Ellipsis else ref_threshold
    return disagreement(task_decisions(spec, scores, threshold), task_decisions(spec, ref_scores, ref_threshold))
