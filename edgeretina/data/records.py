"""Records and datasets: what every adapter returns and every consumer (split, tf.data, summary) reads."""
from __future__ import annotations

import hashlib
import os
from collections import defaultdict
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import Any, Iterable, Mapping

import numpy as np

from edgeretina.data.labels import class_counts, is_minority, labels_array, stratum
from edgeretina.data.splits import split_records
from edgeretina.errors import DataError
from edgeretina.tasks import TaskSpec

__all__ = ["OnBadImage", "Record", "FundusDataset", "labels_array", "class_counts", "is_minority", "stratum",
           "content_duplicates", "merge_groups", "duplicate_report", "bad_image"]


class OnBadImage(str, Enum):
    FAIL = "fail"   # the first bad image/row is a one-line DataError
    SKIP = "skip"   # drop it and list it in ``dataset.problems``


@dataclass(frozen=True, eq=False)
class Record:
    """One labelled image.

    ``key``: unique id (``"15_left"``, an APTOS ``id_code``, ``"train/12"``); ``source``: file path (or a
    ``"<file>#<split>/<i>"`` / ``"synthetic:...#i"`` reference when the pixels are held in ``image``);
    ``patient``: patient id or None; ``y``: label (see ``edgeretina.tasks``); ``group``: split unit —
    records of one group never straddle a split (patient ∪ byte-identical content); ``split``: predefined
    split of the dataset (RetinaMNIST) or None; ``image``: RGB uint8 pixels for in-memory datasets.
    """

    key: str
    source: str
    patient: str | None
    y: Any
    group: str = ""
    split: str | None = None
    meta: Mapping[str, Any] = field(default_factory=dict, repr=False)
    image: np.ndarray | None = field(default=None, repr=False)

    def __post_init__(self):
        if not self.group:
            object.__setattr__(self, "group", f"p:{self.patient}" if self.patient is not None else f"k:{self.key}")


@dataclass(eq=False)
class FundusDataset:
    """Records of one dataset for one task, plus what the adapter found wrong (``problems``)."""

    path: str
    format: str
    spec: TaskSpec
    records: list[Record]
    problems: list[str] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def has_predefined_splits(self) -> bool:
        return bool(self.records) and all(r.split is not None for r in self.records)

    @property
    def n_patients(self) -> int | None:
        pats = {r.patient for r in self.records}
        return None if None in pats else len(pats)

    def split(self, scheme: str | None = None, seed: int = 0, check: bool = True) -> dict[str, list[Record]]:
        """Deterministic, stratified, group-level split → ``{"train", "val", "test"}`` (lists of Records).

        ``scheme``: ``"70/10/20"`` (default, or the dataset's own split when it has one), any
        ``"a/b/c"``, ``"90/10"`` (train/test, val empty), ``"kfold:K:I"`` (fold I of K as test, no val),
        ``"kfold:K:I:val"`` (fold I as test, fold I+1 as val), ``"predefined"``, ``"all"`` (every record
        in test, e.g. an external evaluation set).
        """
        if scheme is None:
            scheme = "predefined" if self.has_predefined_splits else "70/10/20"
        return split_records(self.records, self.spec, scheme, seed, check=check, source=self.path)

    def kfold(self, k: int = 5, seed: int = 0, val: bool = False) -> list[dict[str, list[Record]]]:
        """K patient-level stratified folds: the i-th dict has fold i as test and the rest as train."""
        return [self.split(f"kfold:{k}:{i}" + (":val" if val else ""), seed) for i in range(k)]

    def labels(self, records: Iterable[Record] | None = None) -> np.ndarray:
        return labels_array(self.records if records is None else records, self.spec)

    def class_counts(self, records: Iterable[Record] | None = None) -> dict[str, int]:
        return class_counts(self.records if records is None else records, self.spec)

    def __len__(self) -> int:
        return len(self.records)

    def __repr__(self) -> str:
        return (f"FundusDataset(format={self.format!r}, task={self.spec.task.value!r}, n={len(self.records)}, "
                f"path={self.path!r})")


# ------------------------------------------------------------------------------------- duplicate grouping
def content_duplicates(paths: list[str], sizes: list[int] | None = None) -> dict[str, str]:
    """Byte-identical files: ``{path: sha256}`` for every file that has at least one identical twin.

    Only files sharing a byte size are hashed, so this costs a stat per file plus reading the few
    same-size candidates."""
    if sizes is None:
        sizes = [os.path.getsize(p) for p in paths]
    by_size: dict[int, list[str]] = defaultdict(list)
    for p, s in zip(paths, sizes):
        by_size[s].append(p)
    out: dict[str, str] = {}
    for s, ps in by_size.items():
        if len(ps) < 2 or s == 0:
            continue
        by_hash: dict[str, list[str]] = defaultdict(list)
        for p in ps:
            try:
                with open(p, "rb") as f:
                    by_hash[hashlib.sha256(f.read()).hexdigest()].append(p)
            except OSError:
                continue
        for h, same in by_hash.items():
            if len(same) > 1:
                for p in same:
                    out[p] = h
    return out


def merge_groups(records: list[Record], extra_keys: Mapping[str, str]) -> list[Record]:
    """Union-find over each record's group and ``extra_keys[source]`` (e.g. a content hash): records linked
    through a shared patient or identical content end up in one group."""
    parent: dict[str, str] = {}

    def find(a: str) -> str:
        parent.setdefault(a, a)
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    def union(a: str, b: str):
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)

    for r in records:
        find(r.group)
        h = extra_keys.get(r.source)
        if h:
            union(r.group, "h:" + h)
    out = []
    for r in records:
        g = find(r.group)
        out.append(r if g == r.group else _replace(r, group=g))
    return out


def _replace(r: Record, **changes) -> Record:
    return replace(r, **changes)


def duplicate_report(records: list[Record], dup: Mapping[str, str], spec: TaskSpec,
                     rel: Any = os.path.basename) -> tuple[int, list[str]]:
    """(number of duplicate groups, problem lines for the groups whose labels conflict)."""
    groups: dict[str, list[Record]] = defaultdict(list)
    for r in records:
        if r.source in dup:
            groups[dup[r.source]].append(r)
    conflicts = []
    for h, rs in sorted(groups.items(), key=lambda kv: sorted(r.key for r in kv[1])[0]):
        if len(rs) < 2:
            continue
        ys = {tuple(r.y) if isinstance(r.y, (tuple, list)) else r.y for r in rs}
        if len(ys) > 1:
            items = ", ".join(f"{rel(r.source)} ({_label_name(r.y, spec)})" for r in sorted(rs, key=lambda r: r.key))
            conflicts.append(f"label conflict: byte-identical images with different labels: {items}")
    return sum(1 for rs in groups.values() if len(rs) > 1), conflicts


def _label_name(y: Any, spec: TaskSpec) -> str:
    if isinstance(y, (tuple, list)):
        return "+".join(n for n, v in zip(spec.labels, y) if v > 0.5) or "none"
    return spec.labels[int(y)]


def bad_image(problem: str, on_bad_image: OnBadImage, problems: list[str]) -> None:
    """Apply the bad-input policy: raise (fail) or record 'skipped ...' (skip)."""
    if on_bad_image is OnBadImage.FAIL:
        raise DataError(problem)
    problems.append(f"skipped {problem}")
