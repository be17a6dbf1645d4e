"""Label arrays and class statistics of records (anything with a ``.y``; labels as in ``Record.y``)."""
from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any, Iterable, Mapping

import numpy as np

from edgeretina.tasks import TaskKind, TaskSpec

if TYPE_CHECKING:  # annotations only: records.py imports this module
    from edgeretina.data.records import Record


def as_label_array(ys: Iterable[Any], kind: TaskKind | str, n_outputs: int | None = None) -> np.ndarray:
    """Labels as in ``Record.y`` → the array training, fine-tuning and the bench use: ``(N,)`` int64
    (BINARY, MULTICLASS) or ``(N, L)`` float32 (MULTILABEL; ``L`` = ``n_outputs``, else the labels' length)."""
    ys = list(ys)
    if TaskKind(kind) is TaskKind.MULTILABEL:
        width = n_outputs if n_outputs is not None else (len(ys[0]) if ys else 0)
        return np.asarray([list(v) for v in ys], dtype=np.float32).reshape(len(ys), width)
    return np.asarray([int(v) for v in ys], dtype=np.int64)


def labels_array(records: Iterable[Record], spec: TaskSpec) -> np.ndarray:
    """The records' labels (:func:`as_label_array` of their ``.y``)."""
    return as_label_array([r.y for r in records], spec.kind, spec.n_outputs)


def class_counts(records: Iterable[Record], spec: TaskSpec) -> dict[str, int]:
    """Images per class (MULTILABEL: images positive for each label)."""
    recs = list(records)
    if spec.kind is TaskKind.MULTILABEL:
        tot = np.zeros(spec.n_outputs, np.int64)
        for r in recs:
            tot += np.asarray(r.y, dtype=np.float32) > 0.5
        return {name: int(c) for name, c in zip(spec.labels, tot)}
    c = Counter(int(r.y) for r in recs)
    return {name: int(c.get(i, 0)) for i, name in enumerate(spec.labels)}


def is_minority(record: Record, spec: TaskSpec) -> bool:
    """Positive / unhealthy: BINARY y == positive; MULTICLASS y != 0; MULTILABEL any positive label other
    than a healthy 'N'."""
    if spec.kind is TaskKind.MULTILABEL:
        return any(v > 0.5 for name, v in zip(spec.labels, record.y) if name != "N")
    if spec.kind is TaskKind.BINARY:
        return int(record.y) == (spec.positive_index if spec.positive_index is not None else 1)
    return int(record.y) != 0


def stratum(record_ys: list[Any], spec: TaskSpec, rarity: Mapping[int, int] | None = None) -> str:
    """Stratification key of a group of records: its most severe class (single-label) or its rarest
    positive label (multi-label; 'none' when all zero)."""
    if spec.kind is TaskKind.MULTILABEL:
        pos = {i for y in record_ys for i, v in enumerate(y) if v > 0.5}
        if not pos:
            return "none"
        return str(min(pos, key=lambda i: ((rarity or {}).get(i, 0), i)))
    return str(max(int(y) for y in record_ys))
