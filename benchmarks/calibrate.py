"""Site calibration of the operating point: re-fit an exported model's decision threshold on a labelled
local set (``edgeretina calibrate``, issue 12 part 4; docs/calibrate.md).

A screening model's threshold is chosen on its development data; on another camera or population its
scores shift and the shipped operating point can miss most positives. :func:`calibrate`

1. opens the model (a ``.tflite`` with edgeretina metadata, :func:`~edgeretina.inference.modelfile.open_model`)
   and refuses what it cannot calibrate (no metadata, a task without a binary screening score);
2. opens the local set *for the model's task* (``open_dataset`` refuses a set of another task) — all its
   images by default — and refuses a set with one class or fewer than ``MIN_PER_CLASS`` images per class;
3. scores the images on LiteRT through the benchmark's own ``cpu`` runner (the same code ``predict`` and
   ``bench`` use), derives the new threshold (``--sensitivity S``: the metric's highest threshold with
   sensitivity ≥ S; ``--youden``: Youden's J) and reports AUROC, sensitivity and specificity with
   bootstrap 95 % CIs at the old (metadata) and the new threshold, plus how stable the re-derived threshold
   is (bootstrap range, and out-of-bag sensitivity/specificity when it is re-derived on each resample);
4. writes a copy of the model whose metadata carries the new ``threshold``, a ``threshold_source`` line and a
   ``calibration`` record (graph bytes unchanged, checked by :func:`graph_sha256` and by running both
   files in LiteRT), atomically, never over the input, plus a sha256 record: when the output folder holds a
   ``manifest.json`` (an export folder) the file gets an entry in its ``results`` (variant
   ``<variant>-calibrated``, so ``predict``/``bench``'s manifest check accepts it and a re-export of the same
   source model keeps it); otherwise a ``<out>.calibration.json`` sidecar is written beside it.

This sits in ``benchmarks/`` because it runs models (runners) — core ← converters ← benchmarks ← cli.
"""
from __future__ import annotations

import copy
import datetime as _dt
import hashlib
import json
import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np

from edgeretina import __version__
from edgeretina.converters.metadata import embed_metadata, metadata_from_bytes
from edgeretina.enums import TextEnum
from edgeretina.errors import DataError, EdgeRetinaError, ModelError
from edgeretina.inference.integrity import read_manifest
from edgeretina.inference.modelfile import ModelFile, open_model
from edgeretina.io import atomic_path, write_json_atomic
from edgeretina.metrics import bootstrap_auroc, threshold_at_sensitivity, youden_threshold
from edgeretina.run import file_sha256
from edgeretina.runtime import flatbuffer
from edgeretina.tasks import Task, TaskKind, TaskSpec

from .devices import DEVICES, Device
from .harness import load_images, load_records
from .options import SPLITS
from .scoring import binary_truth, default_threshold, screening_scores

CALIBRATION_SCHEMA = "edgeretina.calibration/1"
SIDECAR_SUFFIX = ".calibration.json"
MIN_PER_CLASS = 20  # positives and negatives needed for a threshold worth shipping
CHUNK = 256  # images loaded and scored at a time (a large local set never sits in memory at once)

Progress = Callable[[str], None]


class Target(TextEnum):
    """How the new threshold is chosen."""

    SENSITIVITY = "sensitivity"  # the highest threshold whose sensitivity on the local set is >= the target
    YOUDEN = "youden"  # maximise sensitivity + specificity - 1 (how the shipped threshold is chosen)


@dataclass(frozen=True)
class OperatingPoint:
    """Sensitivity and specificity at one threshold on the local set, with percentile-bootstrap 95 % CIs
    (positives and negatives resampled separately, so each replicate keeps the set's class counts)."""

    threshold: float
    sensitivity: float
    sensitivity_ci95: tuple[float, float] | None  # None with n_boot=0
    specificity: float
    specificity_ci95: tuple[float, float] | None
    tp: int
    fn: int
    tn: int
    fp: int

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k in ("sensitivity_ci95", "specificity_ci95"):
            d[k] = list(d[k]) if d[k] is not None else None
        return d


@dataclass(frozen=True)
class Stability:
    """How much the re-derived threshold depends on which images the local set happens to hold: the rule is
    re-applied on ``n_boot`` stratified bootstrap resamples; ``threshold_ci95`` is the 2.5–97.5 % range of
    those thresholds, and the out-of-bag figures score each resample's threshold on the images it left out
    (an estimate of what the new threshold gives on *new* patients of this site, unlike the in-sample
    figures of ``new``, which meet the target by construction)."""

    threshold_ci95: tuple[float, float]
    oob_sensitivity: float
    oob_sensitivity_ci95: tuple[float, float]
    oob_specificity: float
    oob_specificity_ci95: tuple[float, float]
    n_boot: int

    def to_dict(self) -> dict[str, Any]:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()}


@dataclass(frozen=True)
class CalibrationResult:
    model: str  # the input .tflite (unchanged)
    out: str  # the calibrated copy
    record: str  # manifest.json (export folder) or the <out>.calibration.json sidecar
    record_kind: str  # "manifest" | "sidecar"
    task: str
    positive_label: str
    dataset: dict[str, Any]  # name, path, format, split
    n: int
    n_pos: int
    n_neg: int
    auroc: float
    auroc_ci95: tuple[float, float] | None
    target: dict[str, Any]  # {"kind": "sensitivity", "value": 0.9} | {"kind": "youden"}
    old: OperatingPoint
    new: OperatingPoint
    stability: Stability | None
    sha256: str  # of the calibrated file
    source_sha256: str
    graph_sha256: str  # of the graph without its metadata: the same for input and output
    calibration: dict[str, Any]  # the record embedded in the metadata

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["auroc_ci95"] = list(self.auroc_ci95) if self.auroc_ci95 else None
        d["old"], d["new"] = self.old.to_dict(), self.new.to_dict()
        d["stability"] = self.stability.to_dict() if self.stability else None
        return d

    def lines(self) -> list[str]:
        """The terminal report."""
        ds = self.dataset
        pos = self.positive_label
        out = [f"local set: {ds['name']} ({ds['format']}, split {ds['split']}): n={self.n}, "
               f"{self.n_pos} {pos} / {self.n_neg} other",
               f"AUROC {self.auroc:.3f}" + (f" (95% CI {_ci(self.auroc_ci95)})" if self.auroc_ci95 else ""), ""]
        tgt = _target_text(self.target)
        rows = [("", "threshold", "sensitivity (95% CI)", "specificity (95% CI)"),
                ("old (metadata)",) + _op_cells(self.old), (f"new ({tgt})",) + _op_cells(self.new)]
        w = [max(len(r[i]) for r in rows) for i in range(4)]
        out += ["  ".join(c.ljust(w[i]) for i, c in enumerate(r)).rstrip() for r in rows]
        if self.stability is not None:
            s = self.stability
            out += ["", f"threshold stability ({s.n_boot} bootstrap resamples): threshold 95% range "
                        f"{_ci(s.threshold_ci95)}; on the images each resample left out: sensitivity "
                        f"{s.oob_sensitivity:.3f} ({_ci(s.oob_sensitivity_ci95)}), specificity "
                        f"{s.oob_specificity:.3f} ({_ci(s.oob_specificity_ci95)})"]
        out += ["", f"wrote {self.out} (sha256 {self.sha256[:16]}…, graph unchanged, {self.model} untouched)",
                f"record: {self.record} ({'manifest.json entry' if self.record_kind == 'manifest' else 'sidecar'})"]
        return out


def _ci(ci) -> str:
    return f"{ci[0]:.3f}-{ci[1]:.3f}"


def _op_cells(op: OperatingPoint) -> tuple[str, str, str]:
    def cell(v, ci, k, n):
        return f"{v:.3f}" + (f" ({_ci(ci)})" if ci else "") + f" {k}/{n}"

    return (f"{op.threshold:.4f}", cell(op.sensitivity, op.sensitivity_ci95, op.tp, op.tp + op.fn),
            cell(op.specificity, op.specificity_ci95, op.tn, op.tn + op.fp))


def _target_text(target: dict[str, Any]) -> str:
    return f"sensitivity ≥ {target['value']:g}" if target["kind"] == Target.SENSITIVITY.value else "Youden J"


# ------------------------------------------------------------------------------------------ thresholds


def derive_threshold(y, s, target: Target, sensitivity: float | None = None) -> float:
    """The new threshold on labels ``y`` (0/1) and scores ``s`` (``edgeretina.metrics`` does the ROC)."""
    if target is Target.SENSITIVITY:
        return threshold_at_sensitivity(y, s, float(sensitivity))
    return youden_threshold(y, s)


def _rates(y: np.ndarray, s: np.ndarray, t: float) -> tuple[int, int, int, int]:
    pred = s >= t
    pos = y == 1
    tp = int(np.sum(pred & pos))
    fn = int(np.sum(~pred & pos))
    tn = int(np.sum(~pred & ~pos))
    fp = int(np.sum(pred & ~pos))
    return tp, fn, tn, fp


def _stratified(rng: np.random.Generator, pos_idx: np.ndarray, neg_idx: np.ndarray) -> np.ndarray:
    return np.concatenate([rng.choice(pos_idx, len(pos_idx)), rng.choice(neg_idx, len(neg_idx))])


def _pct(a, level: float = 0.95) -> tuple[float, float]:
    a = np.asarray(a, dtype=np.float64)
    a = a[np.isfinite(a)]
    if a.size == 0:
        return (float("nan"), float("nan"))
    lo, hi = np.quantile(a, [(1 - level) / 2, 1 - (1 - level) / 2])
    return float(lo), float(hi)


def operating_point(y, s, threshold: float, n_boot: int = 1000, seed: int = 0) -> OperatingPoint:
    """Sensitivity/specificity at ``threshold`` (refer when score ≥ threshold) with bootstrap 95 % CIs."""
    y = np.asarray(y).astype(int).ravel()
    s = np.asarray(s, dtype=np.float64).ravel()
    tp, fn, tn, fp = _rates(y, s, threshold)
    sens, spec = tp / max(tp + fn, 1), tn / max(tn + fp, 1)
    if n_boot <= 0:
        return OperatingPoint(float(threshold), sens, None, spec, None, tp, fn, tn, fp)
    rng = np.random.default_rng(seed)
    hit_pos = (s[y == 1] >= threshold).astype(np.float64)  # per positive: referred?
    hit_neg = (s[y == 0] < threshold).astype(np.float64)  # per negative: not referred?
    bs = rng.choice(hit_pos, (n_boot, len(hit_pos))).mean(axis=1)
    bp = rng.choice(hit_neg, (n_boot, len(hit_neg))).mean(axis=1)
    return OperatingPoint(float(threshold), float(sens), _pct(bs), float(spec), _pct(bp), tp, fn, tn, fp)


def threshold_stability(y, s, target: Target, sensitivity: float | None = None, n_boot: int = 1000,
                        seed: int = 0) -> Stability:
    """Re-derive the threshold on stratified bootstrap resamples; score each on its out-of-bag images."""
    y = np.asarray(y).astype(int).ravel()
    s = np.asarray(s, dtype=np.float64).ravel()
    rng = np.random.default_rng([seed, 1])
    pos_idx, neg_idx = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    thr, sens, spec = [], [], []
    for _ in range(n_boot):
        idx = _stratified(rng, pos_idx, neg_idx)
        t = derive_threshold(y[idx], s[idx], target, sensitivity)
        thr.append(t)
        oob = np.ones(len(y), bool)
        oob[idx] = False
        yo, so = y[oob], s[oob]
        if (yo == 1).any() and (yo == 0).any():
            tp, fn, tn, fp = _rates(yo, so, t)
            sens.append(tp / (tp + fn))
            spec.append(tn / (tn + fp))
    return Stability(_pct(thr), float(np.mean(sens)), _pct(sens), float(np.mean(spec)), _pct(spec), n_boot)


# ------------------------------------------------------------------------------------------ the graph


def graph_sha256(tflite: bytes, name: str = "edgeretina") -> str:
    """sha256 of a .tflite without its ``name`` metadata entry: equal for two files that differ only in that
    metadata (e.g. a model and its calibrated copy). Buffers no tensor or remaining metadata entry uses are
    blanked and trailing blank ones dropped, so it does not matter whether re-embedding the metadata
    reused the entry's buffer or appended a new one."""
    return flatbuffer.graph_sha256(tflite, name)


# ------------------------------------------------------------------------------------------ checks


def _screening_spec(model, path: Path) -> TaskSpec:
    spec = model.config.spec
    if spec.kind is TaskKind.BINARY or (spec.kind is TaskKind.MULTICLASS and spec.task is Task.DR):
        return spec
    raise ModelError(f"{path}: task '{spec.task.value}' ({spec.kind.value}) has no single screening score; "
                     f"calibrate supports binary screening tasks (glaucoma, referable-dr, two-class image "
                     f"folders) and the DR grader's referable-DR decision")


def _check_output(model_path: Path, out: Path, overwrite: bool) -> None:
    if out.suffix != ".tflite":
        raise EdgeRetinaError(f"{out}: the calibrated model must be a .tflite file")
    if out.resolve() == model_path.resolve() or (out.exists() and os.path.samefile(out, model_path)):
        raise EdgeRetinaError(f"{out}: the output is the input model; write the calibrated copy to a new file "
                              f"(the original is never modified)")
    if out.is_dir():
        raise EdgeRetinaError(f"{out}: is a directory; give the calibrated model's file name")
    if out.exists() and not overwrite:
        raise EdgeRetinaError(f"{out}: already exists (use --overwrite to replace it)")
    anc = out.parent
    while not anc.exists() and anc != anc.parent:
        anc = anc.parent
    if not anc.is_dir():
        raise EdgeRetinaError(f"{out}: cannot create it ({anc} is not a directory)")
    if not os.access(anc, os.W_OK | os.X_OK) or (out.exists() and not os.access(out, os.W_OK)):
        raise EdgeRetinaError(f"{out}: output location is not writable")
    man = _export_manifest(out.parent)
    if man is not None:
        listed = {Path(str(r.get("path", ""))).name for r in man["results"]
                  if isinstance(r, dict) and not r.get("calibration")}
        if out.name in listed:
            raise EdgeRetinaError(f"{out}: is an exported variant listed in {out.parent / 'manifest.json'}; "
                                  f"write the calibrated copy under another name")


def _export_manifest(folder: Path) -> dict | None:
    """The folder's manifest.json (None when there is none). One that is unreadable or not an export
    manifest is refused: the calibrated file could not be recorded in it, and predict/bench refuse files
    of a folder whose manifest they cannot read."""
    return read_manifest(folder, remedy="write the calibrated model to another folder")


def _check_dataset_task(ds, spec: TaskSpec, data: str) -> None:
    """``open_dataset(data, task)`` already refuses a format that cannot serve the task (an APTOS set for a
    glaucoma model); a generic image folder must also carry the model's labels."""
    if tuple(ds.spec.labels) != tuple(spec.labels):
        raise DataError(f"{data}: its classes {list(ds.spec.labels)} are not the model's {list(spec.labels)} "
                        f"(task '{spec.task.value}'); calibrate on a set of the model's own task")


def _check_counts(n_pos: int, n_neg: int, spec: TaskSpec, data: str, split: str, minimum: int) -> None:
    pos = _positive_label(spec)
    where = f"{data}" + ("" if split == "all" else f" (split '{split}')")
    if n_pos == 0 or n_neg == 0:
        only = "positive" if n_neg == 0 else "negative"
        raise DataError(f"{where}: all {n_pos + n_neg} images are {only} ('{pos}' {'yes' if n_neg == 0 else 'no'}); "
                        f"a threshold needs both classes, at least {minimum} of each")
    if n_pos < minimum:
        raise DataError(f"{where}: only {n_pos} positive ('{pos}') images; a stable threshold needs at least "
                        f"{minimum} positives (and {minimum} negatives)")
    if n_neg < minimum:
        raise DataError(f"{where}: only {n_neg} negative (not '{pos}') images; a stable threshold needs at "
                        f"least {minimum} negatives (and {minimum} positives)")


def _positive_label(spec: TaskSpec) -> str:
    if spec.kind is TaskKind.BINARY:
        return spec.labels[spec.positive_index if spec.positive_index is not None else 1]
    return "referable (grade >= 2)"


def _dataset_name(data: str) -> str:
    if str(data).split(":", 1)[0] == "synthetic":
        return str(data)
    p = Path(data)
    return p.name or str(p)


# ------------------------------------------------------------------------------------------ calibrate


@dataclass(frozen=True)
class CalibrateOptions:
    """What :func:`calibrate` derives and how (checked on construction). ``sensitivity`` and ``youden``
    are exclusive; neither = Youden J."""

    task: str | None = None
    sensitivity: float | None = None
    youden: bool = False
    split: str = "all"
    overwrite: bool = False
    n_boot: int = 1000
    seed: int = 0
    threads: int | None = None
    min_per_class: int = MIN_PER_CLASS

    def __post_init__(self) -> None:
        if self.sensitivity is not None and self.youden:
            raise EdgeRetinaError("choose one target: --sensitivity S or --youden")
        if self.sensitivity is not None and not 0.0 < float(self.sensitivity) < 1.0:
            raise EdgeRetinaError(f"--sensitivity must be between 0 and 1 (exclusive), got {self.sensitivity}")
        if self.split not in SPLITS:
            raise DataError(f"unknown split '{self.split}' (choose from: {', '.join(SPLITS)})")

    @property
    def target(self) -> Target:
        return Target.SENSITIVITY if self.sensitivity is not None else Target.YOUDEN

    def target_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"kind": self.target.value}
        if self.target is Target.SENSITIVITY:
            d["value"] = float(self.sensitivity)
        return d


def calibrate(model: str | os.PathLike, data: str, out: str | os.PathLike, *,
              options: CalibrateOptions | None = None, progress: Progress | None = None,
              **kw) -> CalibrationResult:
    """Re-derive ``model``'s threshold on the labelled local set ``data`` and write the calibrated copy to
    ``out`` (see the module doc). ``options`` (:class:`CalibrateOptions`; keywords named like its fields
    override it: ``sensitivity=0.9``, ``youden=True``, ``split``, ``n_boot``, ...).
    Every refusal is an :class:`EdgeRetinaError` raised before anything is written."""
    o = replace(options, **kw) if options is not None else CalibrateOptions(**kw)
    say = progress or (lambda msg: None)
    model_path, out = Path(model), Path(out)
    mf, spec = _open_model(model_path, out, o)
    ds, records = load_records(data, spec, mf, o.split)  # DataError: a set of another task
    _check_dataset_task(ds, spec, data)
    y = binary_truth(spec, np.asarray([r.y for r in records]))
    n_pos, n_neg = int((y == 1).sum()), int((y == 0).sum())
    _check_counts(n_pos, n_neg, spec, data, o.split, o.min_per_class)
    runner = DEVICES[Device.CPU].load(mf, o.threads)
    scores = _score(runner, mf, spec, records, say)

    say("deriving the threshold")
    old_t = default_threshold(spec, mf.config.threshold)
    new_t = derive_threshold(y, scores, o.target, o.sensitivity)
    au = bootstrap_auroc(y, scores, n_boot=o.n_boot, seed=o.seed)
    auroc_ci = (au.lo, au.hi) if o.n_boot > 0 else None
    old_op = operating_point(y, scores, old_t, o.n_boot, o.seed)
    new_op = operating_point(y, scores, new_t, o.n_boot, o.seed)
    stab = threshold_stability(y, scores, o.target, o.sensitivity, o.n_boot, o.seed) if o.n_boot > 0 else None
    source_sha = hashlib.sha256(mf.file_bytes).hexdigest()
    dataset = {"name": _dataset_name(data), "path": str(data), "format": ds.format, "split": o.split}
    record = {
        "schema": CALIBRATION_SCHEMA,
        "date": _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
        "dataset": dataset, "n": len(y), "n_pos": n_pos, "n_neg": n_neg,
        "target": o.target_dict(), "old_threshold": old_t, "threshold": new_t,
        "source_file": model_path.name, "source_sha256": source_sha,
        "auroc": au.value, "auroc_ci95": list(auroc_ci) if auroc_ci else None,
        "old": old_op.to_dict(), "new": new_op.to_dict(),
        "stability": stab.to_dict() if stab else None,
        "n_boot": o.n_boot, "seed": o.seed, "edgeretina_version": __version__,
    }
    new_bytes, entry = _calibrated_copy(mf, model_path, out, record)
    say(f"writing {out}")
    record_path, kind = _write(out, new_bytes, entry, runner, mf, records[: min(8, len(records))])
    return CalibrationResult(
        model=str(model_path), out=str(out), record=str(record_path), record_kind=kind, task=spec.task.value,
        positive_label=_positive_label(spec), dataset=dataset, n=len(y), n_pos=n_pos, n_neg=n_neg,
        auroc=au.value, auroc_ci95=auroc_ci, target=record["target"], old=old_op, new=new_op, stability=stab,
        sha256=entry["sha256"], source_sha256=source_sha, graph_sha256=entry["graph_sha256"], calibration=record)


def _open_model(model_path: Path, out: Path, o: CalibrateOptions) -> tuple[ModelFile, TaskSpec]:
    """The exported .tflite to calibrate and its screening task; refuses a run dir / .keras, a task
    mismatch and an output path it must not write."""
    if model_path.is_dir() or model_path.suffix == ".keras":
        raise ModelError(f"{model_path}: calibrate re-writes an exported .tflite's metadata; export the run "
                         f"first ('edgeretina export') and calibrate the .tflite you ship")
    mf = open_model(model_path)  # ModelError: missing file, not a .tflite, no edgeretina metadata
    spec = _screening_spec(mf, model_path)
    if o.task is not None and str(o.task) != spec.task.value:
        raise ModelError(f"{model_path}: the model was trained for task '{spec.task.value}', not '{o.task}'")
    _check_output(model_path, out, o.overwrite)
    return mf, spec


def _score(runner, mf: ModelFile, spec: TaskSpec, records, say: Progress) -> np.ndarray:
    """Screening scores of every record on LiteRT, ``CHUNK`` images at a time."""
    probs = []
    for i in range(0, len(records), CHUNK):
        say(f"scoring images {i + 1}-{min(i + CHUNK, len(records))} of {len(records)} (LiteRT)")
        probs.append(np.asarray(runner.predict(load_images(records[i:i + CHUNK], mf.config.preprocessing))))
    return np.asarray(screening_scores(spec, np.concatenate(probs)), dtype=np.float64).ravel()


def _calibrated_copy(mf: ModelFile, model_path: Path, out: Path, record: dict) -> tuple[bytes, dict]:
    """The model's bytes with the new threshold and the calibration record in its metadata (graph
    unchanged, checked) and the manifest / sidecar entry that records them."""
    src, new_t, old_t = mf.file_bytes, record["threshold"], record["old_threshold"]
    meta = copy.deepcopy(mf.meta)
    if isinstance(meta.get("calibration"), dict):  # calibrating a calibrated model: keep the history
        record["previous"] = meta["calibration"]
    meta["threshold"] = new_t
    meta["threshold_source"] = (f"site calibration {record['date']}: {_target_text(record['target'])} on "
                                f"{record['dataset']['name']} (n={record['n']}, {record['n_pos']} positive); "
                                f"was {old_t:.6g}")
    meta["calibration"] = record
    new_bytes = embed_metadata(src, meta)
    if metadata_from_bytes(new_bytes, source=str(out)).get("threshold") != new_t:
        raise ModelError(f"{out}: the new metadata did not read back")  # pragma: no cover - a bug, not input
    g_src, g_new = graph_sha256(src), graph_sha256(new_bytes)
    if g_src != g_new:  # pragma: no cover - embed_metadata must not touch the graph
        raise ModelError(f"{out}: re-embedding the metadata changed the graph; nothing written")
    base = (mf.meta.get("export") or {}).get("variant") or model_path.stem
    entry = {"variant": f"{base}-calibrated", "path": str(out), "file": out.name,
             "sha256": hashlib.sha256(new_bytes).hexdigest(), "size_bytes": len(new_bytes),
             "source": str(model_path), "source_sha256": record["source_sha256"], "graph_sha256": g_new,
             "threshold": new_t, "calibration": record}
    return new_bytes, entry


def _write(out: Path, data: bytes, entry: dict, runner, mf, check_records) -> tuple[Path, str]:
    """Write the model atomically (after LiteRT ran the new bytes and matched the original's outputs),
    then the manifest entry or the sidecar; if that second write fails the new model is removed."""
    out.parent.mkdir(parents=True, exist_ok=True)
    x = load_images(check_records, mf.config.preprocessing)
    want = np.asarray(runner.predict(x))
    with atomic_path(out) as tmp:
        tmp.write_bytes(data)
        copy_ = ModelFile(tmp, "tflite", mf.config, mf.meta)
        got = np.asarray(DEVICES[Device.CPU].load(copy_, getattr(runner, "threads", None)).predict(x))
        if not np.array_equal(got, want):  # pragma: no cover - the graph is byte-identical
            raise ModelError(f"{out}: the calibrated file's outputs differ from the original's; nothing written")
    try:
        man = _export_manifest(out.parent)
        if man is not None:
            man["results"] = [r for r in man["results"] if not (isinstance(r, dict) and
                                                                Path(str(r.get("path", ""))).name == out.name)]
            man["results"].append(entry)
            return write_json_atomic(out.parent / "manifest.json", man), "manifest"
        return write_json_atomic(out.parent / (out.name + SIDECAR_SUFFIX), entry), "sidecar"
    except BaseException:
        out.unlink(missing_ok=True)
        raise


def verify_record(path: str | os.PathLike) -> dict[str, Any]:
    """The calibration record (manifest entry or sidecar) of a calibrated .tflite, after checking that the
    file's sha256 still matches it. ``ModelError`` when there is no record or it does not match."""
    p = Path(path)
    man = _export_manifest(p.parent)
    entry = None
    if man is not None:
        entry = next((e for e in man["results"] if isinstance(e, dict) and e.get("calibration")
                      and Path(str(e.get("path", ""))).name == p.name), None)
    side = p.parent / (p.name + SIDECAR_SUFFIX)
    if entry is None and side.is_file():
        entry = json.loads(side.read_text())
    if entry is None:
        raise ModelError(f"{p}: no calibration record (manifest.json entry or {side.name})")
    if file_sha256(p) != entry.get("sha256"):
        raise ModelError(f"{p}: sha256 does not match its calibration record (the file changed)")
    return entry
