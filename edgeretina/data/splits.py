"""Deterministic, stratified, group-level splits (a group = a patient ∪ byte-identical images).

Algorithm (the same for every scheme): records are gathered into groups (``Record.group``); each group
gets a stratum (its most severe class, or its rarest positive label for multi-label tasks); within each
stratum the groups are sorted by id and shuffled with ``numpy.random.default_rng([seed, crc32(stratum)])``,
then dealt out by largest-remainder rounding of the requested fractions. K-fold deals the shuffled groups
of each stratum round-robin into K folds (continuing across strata so fold sizes stay balanced).
No group ever lands on two sides; the same seed always gives the same split.
"""
from __future__ import annotations

import hashlib
import re
import zlib
from collections import defaultdict
from typing import TYPE_CHECKING

import numpy as np

from edgeretina.data.labels import class_counts, stratum
from edgeretina.errors import DataError
from edgeretina.tasks import TaskKind, TaskSpec

if TYPE_CHECKING:  # annotations only: records.py (FundusDataset.split) imports this module
    from edgeretina.data.records import Record

SPLITS = ("train", "val", "test")


def parse_scheme(scheme: str) -> tuple[str, tuple]:
    s = str(scheme).strip().lower()
    if s in ("all", "predefined"):
        return s, ()
    m = re.fullmatch(r"(?:kfold|cv)[:=](\d+)[:/](\d+)(:val)?", s)
    if m:
        k, i = int(m.group(1)), int(m.group(2))
        if k < 2 or not 0 <= i < k:
            raise DataError(f"split '{scheme}': need k >= 2 and 0 <= fold < k")
        return "kfold", (k, i, bool(m.group(3)))
    parts = s.split("/")
    try:
        fr = [float(p) for p in parts]
    except ValueError:
        fr = []
    if len(fr) in (2, 3) and all(f >= 0 for f in fr) and sum(fr) > 0:
        fr = [f / sum(fr) for f in fr]
        if len(fr) == 2:
            fr = [fr[0], 0.0, fr[1]]
        return "fractions", tuple(fr)
    raise DataError(f"unknown split '{scheme}' (use e.g. 70/10/20, 90/10, kfold:5:0, predefined or all)")


def _groups(records: list[Record], spec: TaskSpec) -> dict[str, list[tuple[str, list[int]]]]:
    """stratum → [(group id, record indices)] in sorted group order."""
    by_group: dict[str, list[int]] = defaultdict(list)
    for i, r in enumerate(records):
        by_group[r.group].append(i)
    rarity = None
    if spec.kind is TaskKind.MULTILABEL:
        tot = np.zeros(spec.n_outputs)
        for r in records:
            tot += np.asarray(r.y, dtype=np.float64) > 0.5
        rarity = {i: int(c) for i, c in enumerate(tot)}
    strata: dict[str, list[tuple[str, list[int]]]] = defaultdict(list)
    for g in sorted(by_group):
        idx = by_group[g]
        strata[stratum([records[i].y for i in idx], spec, rarity)].append((g, idx))
    return strata


def _rng(seed: int, st: str) -> np.random.Generator:
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, zlib.crc32(st.encode())])


def _deal(n: int, fractions: tuple[float, ...]) -> list[int]:
    """Largest-remainder counts of n items for the fractions."""
    raw = [f * n for f in fractions]
    cnt = [int(np.floor(x)) for x in raw]
    rest = n - sum(cnt)
    order = sorted(range(len(raw)), key=lambda j: (-(raw[j] - cnt[j]), j))
    for j in order[:rest]:
        cnt[j] += 1
    return cnt


def split_records(records: list[Record], spec: TaskSpec, scheme: str = "70/10/20", seed: int = 0,
                  check: bool = True, source: str = "dataset") -> dict[str, list[Record]]:
    kind, args = parse_scheme(scheme)
    out: dict[str, list[int]] = {s: [] for s in SPLITS}
    if kind == "all":
        out["test"] = list(range(len(records)))
    elif kind == "predefined":
        for i, r in enumerate(records):
            if r.split is None:
                raise DataError(f"{source}: split 'predefined' asked for, but this dataset has no predefined split")
            name = {"valid": "val", "validation": "val"}.get(r.split, r.split)
            if name not in out:
                raise DataError(f"{source}: unknown predefined split '{r.split}' for {r.key}")
            out[name].append(i)
    else:
        strata = _groups(records, spec)
        if kind == "fractions":
            for st in sorted(strata):
                gs = strata[st]
                order = _rng(seed, st).permutation(len(gs))
                cnt = _deal(len(gs), args)
                pos = 0
                for name, c in zip(SPLITS, cnt):
                    for j in order[pos:pos + c]:
                        out[name].extend(gs[j][1])
                    pos += c
        else:
            k, fold, with_val = args
            start = 0
            for st in sorted(strata):
                gs = strata[st]
                order = _rng(seed, st).permutation(len(gs))
                for n, j in enumerate(order):
                    f = (start + n) % k
                    name = "test" if f == fold else ("val" if with_val and f == (fold + 1) % k else "train")
                    out[name].extend(gs[j][1])
                start = (start + len(gs)) % k
    result = {name: [records[i] for i in sorted(idx)] for name, idx in out.items()}
    if check:
        check_split(result, spec, source, scheme)
    return result


def check_split(splits: dict[str, list[Record]], spec: TaskSpec, source: str, scheme: str) -> None:
    """A non-empty split with a single class cannot be trained or scored (AUROC/kappa): one-line error."""
    groups: dict[str, str] = {}
    for name, recs in splits.items():
        for r in recs:
            prev = groups.setdefault(r.group, name)
            if prev != name:  # pragma: no cover - guarded by construction
                raise DataError(f"{source}: group {r.group} is on both sides of split ({prev}, {name})")
    if spec.kind is TaskKind.MULTILABEL:
        return
    for name, recs in splits.items():
        if not recs:
            continue
        counts = {k: v for k, v in class_counts(recs, spec).items() if v}
        if len(counts) < 2:
            only = ", ".join(f"{k}: {v}" for k, v in counts.items())
            raise DataError(f"{source}: split '{name}' of '{scheme}' has a single class ({only} images); "
                            "use more data or another split")


def split_counts(splits: dict[str, list[Record]], spec: TaskSpec) -> dict[str, dict[str, int]]:
    return {name: class_counts(recs, spec) for name, recs in splits.items()}


def split_fingerprints(splits: dict[str, list[Record]]) -> dict[str, str]:
    """Short SHA-1 of each split's sorted record keys: record it (e.g. in a run's config) to check later that
    an evaluation uses exactly the same test images."""
    return {name: hashlib.sha1("\n".join(sorted(r.key for r in recs)).encode()).hexdigest()[:12]
            for name, recs in splits.items()}


def groups_on_two_sides(splits: dict[str, list[Record]], attr: str = "patient") -> set:
    """Values of ``attr`` (patient/group) found in more than one split (should be empty)."""
    seen: dict = {}
    bad = set()
    for name, recs in splits.items():
        for r in recs:
            v = getattr(r, attr)
            if v is None:
                continue
            if seen.setdefault(v, name) != name:
                bad.add(v)
    return bad


__all__ = ["split_records", "parse_scheme", "check_split", "split_counts", "groups_on_two_sides", "split_fingerprints",
           "SPLITS"]
