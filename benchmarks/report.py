"""Benchmark results as frozen dataclasses that serialise themselves: report.json, report.md, report.csv
(+ labels.csv for multiclass / multi-label tasks, shift.csv and stability.csv when the bench ran those stages).

Every table has ONE column list (:data:`VARIANT_COLUMNS`, :data:`LABEL_COLUMNS`, :data:`SHIFT_COLUMNS`,
:data:`STABILITY_COLUMNS`) that drives its CSV header, the flat keys its rows add to report.json and — for
the columns that have a header — the report.md / terminal table, so the three cannot drift apart.

The retention columns follow the task kind (a column's ``show``; :data:`HEADLINES` names each kind's headline
metric, which the ball chart plots): binary — AUROC, paired DeLong ΔAUROC, flips at the threshold; DR
grading — κ, Δκ (paired bootstrap CI), accuracy, grade flips, referable flips, per-grade recall; multi-label
(ODIR labels, multi-task heads) — macro AUROC, Δ macro AUROC (paired bootstrap CI), micro / macro F1 and, per
label or head, ΔAUROC and flips at the reference's per-label threshold.
"""
from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Sequence

from edgeretina.env import machine_line
from edgeretina.io import SizedArtifact, ensure_writable_dir, write_json_atomic, write_text_atomic

from . import arm_parity, guard_sweep, kernel_parity
from .devices import facts_lines

SCHEMA = "edgeretina.bench/1"


@dataclass(frozen=True)
class Latency:
    """Batch-1 latency in ms after warm-up; ``n`` timed inferences."""

    p50: float | None = None
    p90: float | None = None
    mean: float | None = None
    n: int = 0


@dataclass(frozen=True)
class VariantReport(SizedArtifact):
    """One model file on one device, compared with the reference on the same images."""

    name: str
    file: str
    device: str
    threads: int | None
    format: str
    is_reference: bool
    depth: int
    params: int
    nonzero_params: int
    size_bytes: int
    gzip_bytes: int
    auroc: float | None
    auroc_ci95: tuple[float, float] | None
    delta_auroc: float | None
    auroc_retention: float | None
    delong_p: float | None
    auroc_density: float | None  # AUROC per million parameters (the paper's density)
    auroc_density_nonzero: float | None  # AUROC per million non-zero parameters
    auroc_per_mb: float | None  # AUROC per MB of file
    sensitivity: float | None
    specificity: float | None
    flip_rate: float | None
    latency_ms: Latency
    images_per_s: float | None
    threshold: float | list[float] | None = None
    kappa: float | None = None  # DR grading: quadratic weighted kappa of the predicted (expected, rounded) grade
    grade_flip_rate: float | None = None  # DR grading: share of images whose argmax grade changed
    per_label: dict[str, dict[str, Any]] | None = None  # multi-label: AUROC, CI, DeLong p, sens, spec
    device_info: dict[str, Any] | None = None  # e.g. the phone's model, SoC, Android version, delegate
    note: str = ""
    delta_auroc_ci95: tuple[float, float] | None = None  # paired DeLong 95 % CI of ΔAUROC
    # binary screening score vs the reference, in logit units: mean shift and sd of the per-image difference
    # (the flip rate is ≈ the density of images near the threshold × this noise)
    logit_shift: float | None = None
    logit_noise_sd: float | None = None
    near_threshold: float | None = None  # share of images whose reference logit is within ±0.25 of the threshold
    # flip_rate ÷ the reference's own flip rate under a JPEG-95 re-save (the stability floor; issue 18)
    flip_floor_ratio: float | None = None
    # bench --agreement-data: flips vs the reference on a large unlabelled set, {"n", "flips", "flip_rate",
    # "ci95": [low, high]} (Wilson 95 %; benchmarks/agreement.py)
    agreement: dict[str, Any] | None = None
    # DR grading (scoring._multiclass): κ's bootstrap CI, Δκ vs the reference with its paired bootstrap CI,
    # argmax accuracy, referable flips (argmax grade >= 2 changed), κ per million parameters; any multiclass
    # task: {class: {"n", "recall", "delta_recall", "flip_rate"}}
    kappa_ci95: tuple[float, float] | None = None
    delta_kappa: float | None = None
    delta_kappa_ci95: tuple[float, float] | None = None
    accuracy: float | None = None
    referable_flip_rate: float | None = None
    kappa_density: float | None = None
    per_class: dict[str, dict[str, Any]] | None = None
    # multi-label: micro / macro F1 at the reference's per-label thresholds
    f1_micro: float | None = None
    f1_macro: float | None = None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k in _CI_FIELDS:
            d[k] = list(getattr(self, k)) if getattr(self, k) else None
        return _clean(_with_columns(d, VARIANT_COLUMNS, self))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "VariantReport":
        known = {f.name for f in fields(cls)}
        kw = {k: v for k, v in d.items() if k in known}
        kw["latency_ms"] = Latency(**(d.get("latency_ms") or {}))
        for k in _CI_FIELDS:
            if kw.get(k) is not None:
                kw[k] = tuple(kw[k])
        return cls(**kw)


_CI_FIELDS = ("auroc_ci95", "delta_auroc_ci95", "kappa_ci95", "delta_kappa_ci95")


@dataclass(frozen=True)
class LabelRow:
    """One label (multi-label), head (multi-task) or grade (multiclass) of one model on one device, against
    the reference: a row of labels.csv and of report.md's per-label table (:data:`LABEL_COLUMNS`)."""

    name: str
    device: str
    is_reference: bool
    label: str
    n_positive: int | None = None  # images with this label / of this grade
    threshold: float | None = None  # the reference's threshold for this label (multi-label)
    auroc: float | None = None
    auroc_ci95: tuple[float, float] | None = None
    delta_auroc: float | None = None
    delta_auroc_ci95: tuple[float, float] | None = None  # paired DeLong
    delong_p: float | None = None
    sensitivity: float | None = None  # = the grade's recall for a multiclass task
    delta_sensitivity: float | None = None  # vs the reference on the same images
    specificity: float | None = None
    flip_rate: float | None = None  # this label's decisions that differ from the reference's (grade: of its images)

    @classmethod
    def of(cls, v: "VariantReport") -> list["LabelRow"]:
        head = dict(name=v.name, device=v.device, is_reference=v.is_reference)
        rows = []
        for label, d in (v.per_label or {}).items():
            ci, dci = d.get("auroc_ci95"), d.get("delta_auroc_ci95")
            rows.append(cls(**head, label=label, n_positive=d.get("n_positive"), threshold=d.get("threshold"),
                            auroc=d.get("auroc"), auroc_ci95=tuple(ci) if ci else None,
                            delta_auroc=d.get("delta_auroc"), delta_auroc_ci95=tuple(dci) if dci else None,
                            delong_p=d.get("delong_p"), sensitivity=d.get("sensitivity"),
                            specificity=d.get("specificity"), flip_rate=d.get("flip_rate")))
        for label, d in (v.per_class or {}).items():
            rows.append(cls(**head, label=label, n_positive=d.get("n"), sensitivity=d.get("recall"),
                            delta_sensitivity=d.get("delta_recall"), flip_rate=d.get("flip_rate")))
        return rows


class _TableRow:
    """A flat row of one table: ``to_dict`` = its fields plus the computed keys of its column list (given as
    the ``columns`` class keyword, a function: the lists are defined further down), ``from_dict`` = the
    fields back."""

    def __init_subclass__(cls, columns: Callable[[], Sequence["Column"]] | None = None, **kw):
        super().__init_subclass__(**kw)
        if columns is not None:
            cls._columns = staticmethod(columns)

    def to_dict(self) -> dict[str, Any]:
        return _clean(_with_columns(asdict(self), self._columns(), self))

    @classmethod
    def from_dict(cls, d: dict[str, Any]):
        return cls(**{f.name: d.get(f.name) for f in fields(cls)})


@dataclass(frozen=True)
class ShiftResult(_TableRow, columns=lambda: SHIFT_COLUMNS):
    """One model file under one camera shift at one level (``shift="none"``: the same images unshifted),
    scored on the host; accuracy at the reference's shipped threshold."""

    name: str
    file: str
    is_reference: bool
    shift: str
    level: str
    auroc: float | None
    delta_auroc: float | None  # vs the UNSHIFTED reference model
    delta_auroc_self: float | None  # vs the same model unshifted
    delta_auroc_vs_ref_shifted: float | None  # vs the reference under the same shift (retention under shift)
    sensitivity: float | None
    specificity: float | None
    flip_rate: float | None  # decisions that differ from the same model's unshifted ones


@dataclass(frozen=True)
class StabilityRow(_TableRow, columns=lambda: STABILITY_COLUMNS):
    """One model file under one benign re-acquisition perturbation, against its own unperturbed scores."""

    name: str
    file: str
    is_reference: bool
    perturbation: str
    flip_rate: float | None  # decisions that differ from the same model's unperturbed ones
    logit_change_mean: float | None
    logit_change_sd: float | None
    amplification: float | None = None  # flip_rate ÷ the reference's flip rate under this perturbation


@dataclass(frozen=True)
class Stability:
    """The decision-stability floor (issue 18): the reference model's own flip rate under benign
    re-acquisition, every model's flips under the same perturbations, and the threshold margin."""

    reference: str
    n_images: int
    perturbations: tuple[str, ...]
    floor: float | None  # the reference's flip rate under a JPEG-95 re-save (the "JPEG-95 floor")
    floor_max: float | None  # its largest flip rate over the perturbations
    floor_perturbation: str | None  # which perturbation gives floor_max
    resolution: float  # 1 / n_images: ratios divide by max(floor, resolution) so they stay finite
    band: float | None  # δ in logit units: 1.96 × the reference's largest logit-change sd
    near_band: float | None  # share of images whose reference logit lies within ±band of the threshold
    rows: tuple[StabilityRow, ...] = ()
    # per model file: flips vs the reference ÷ the floor, and the share of its own scores within ±band
    variants: tuple[dict[str, Any], ...] = ()

    def ratio(self, flip_rate: float | None, to_max: bool = False) -> float | None:
        base = self.floor_max if to_max else self.floor
        if flip_rate is None or base is None or not math.isfinite(flip_rate):
            return None
        return float(flip_rate / max(base, self.resolution))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["rows"] = [r.to_dict() for r in self.rows]
        d["variants"] = [dict(v) for v in self.variants]
        return _clean(d)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Stability":
        kw = {f.name: d.get(f.name) for f in fields(cls)}
        kw["perturbations"] = tuple(d.get("perturbations") or ())
        kw["rows"] = tuple(StabilityRow.from_dict(r) for r in d.get("rows") or ())
        kw["variants"] = tuple(d.get("variants") or ())
        return cls(**kw)

    @property
    def shipped(self) -> list[dict[str, Any]]:
        """The variants whose file carries a borderline band (``shipped_band``, from ``edgeretina export``)."""
        return [v for v in self.variants if _ok(v.get("shipped_band"))]

    def _shipped_text(self) -> str:
        """'±b logit: s of the images' for the band the model files carry (one band: once; else a range)."""
        sh = self.shipped
        if not sh:
            return ""
        bands = sorted({round(float(v["shipped_band"]), 3) for v in sh})
        shares = [v.get("near_shipped_band") for v in sh if _ok(v.get("near_shipped_band"))]
        band = f"±{bands[0]:.3f}" if len(bands) == 1 else f"±{bands[0]:.3f}–{bands[-1]:.3f}"
        share = (_pct(shares[0]) if len(set(shares)) == 1 else f"{_pct(min(shares))}–{_pct(max(shares))}") \
            if shares else "–"
        return f"{band} logit holds {share} of the images"

    def summary(self) -> str:
        worst = (f"max {_pct(self.floor_max)} ({self.floor_perturbation})" if self.floor_perturbation else "")
        shipped = f"; shipped band (model metadata) {self._shipped_text()}" if self.shipped else ""
        return (f"JPEG-95 floor {_pct(self.floor)}, {worst}; borderline band ±{_f(self.band, 3)} logit holds "
                f"{_pct(self.near_band)} of the images{shipped}")

    def to_markdown(self) -> list[str]:
        floor_txt = _pct(self.floor)
        at_res = self.floor is not None and self.floor < self.resolution
        lines = ["", "## Decision stability floor", "",
                 f"The reference (`{self.reference}`) re-scored on the same {self.n_images} photos after benign "
                 f"re-acquisition perturbations (seeded), against its own unperturbed decisions. "
                 f"**JPEG-95 floor: {floor_txt}**; largest: {_pct(self.floor_max)} "
                 f"({self.floor_perturbation or '–'}). Borderline band δ = 1.96 × the largest logit-change sd = "
                 f"±{_f(self.band, 3)} logit: {_pct(self.near_band)} of the images lie within it of the threshold.",
                 ""]
        if self.shipped:
            lines += [f"**Retakes an app would ask for:** the borderline band the model files carry in their "
                      f"metadata (`edgeretina export --borderline-band`; what `predict` and the Android app flag) "
                      f"{self._shipped_text()} (score within ±band of the threshold).", ""]
        if at_res:
            lines += [f"The floor is below one image (1/{self.n_images}); ratios divide by 1/{self.n_images} and "
                      "are lower bounds (marked ≥).", ""]
        pre = "≥" if at_res else ""
        said = [f"- **{v.get('name')}** flips {_pct(v.get('flip_rate'))} of the reference's decisions = "
                f"{pre}{_f(v.get('floor_ratio'), 1)}× the JPEG-95 floor"
                for v in self.variants if not v.get("is_reference") and _ok(v.get("floor_ratio"))]
        if said:
            lines += said + [""]
        if self.variants:
            ship = bool(self.shipped)
            lines += [_md_table(["Variant", "Flips vs reference", "× JPEG-95 floor", "× max floor",
                                 "Within ±δ of threshold"] + (["Within ± shipped band (retakes)"] if ship else []),
                                [[v.get("name", ""), _pct(v.get("flip_rate")),
                                  (pre + _f(v.get("floor_ratio"), 1) + "×") if _ok(v.get("floor_ratio")) else "–",
                                  _f(v.get("floor_max_ratio"), 1) + "×" if _ok(v.get("floor_max_ratio")) else "–",
                                  _pct(v.get("near_band"))]
                                 + ([f"{_pct(v.get('near_shipped_band'))} (±{_f(v.get('shipped_band'), 3)})"
                                     if _ok(v.get("shipped_band")) else "–"] if ship else [])
                                 for v in self.variants]), ""]
        by_model: dict[tuple[str, str], dict[str, StabilityRow]] = {}
        for r in self.rows:
            by_model.setdefault((r.name, r.file), {})[r.perturbation] = r
        if by_model:
            lines += ["Flip rate of each model under each perturbation (vs its own unperturbed decisions; "
                      "logit-change sd in brackets):", "",
                      _md_table(["Variant"] + list(self.perturbations),
                                [[name + (" (ref)" if any(r.is_reference for r in rs.values()) else "")]
                                 + [f"{_pct(rs[p].flip_rate)} ({_f(rs[p].logit_change_sd, 3)})" if p in rs else "–"
                                    for p in self.perturbations]
                                 for (name, _), rs in by_model.items()])]
        return lines


@dataclass(frozen=True)
class Report:
    task: str
    kind: str
    dataset: dict[str, Any]  # path, split, n_images, classes {label: count}
    machine: dict[str, Any]
    reference: str  # file of the reference model
    variants: tuple[VariantReport, ...]
    settings: dict[str, Any] = field(default_factory=dict)  # runs, warmup, timing images, bootstrap
    skipped: tuple[dict[str, str], ...] = ()  # {"file", "device", "reason"}
    schema: str = SCHEMA
    created: str = ""
    edgeretina_version: str = ""
    shifts: tuple[ShiftResult, ...] = ()  # edgeretina bench --shift (issue 12)
    stability: Stability | None = None  # the decision-stability floor (issue 18; --stability off: None)
    agreement: dict[str, Any] | None = None  # --agreement-data: {"path", "format", "n_images", "skipped"}

    def to_dict(self) -> dict[str, Any]:
        d = self._base_dict()
        if self.agreement is not None:
            d["agreement"] = self.agreement
        if self.shifts:
            d["shifts"] = [r.to_dict() for r in self.shifts]
        if self.stability is not None:
            d["stability"] = self.stability.to_dict()
        return d

    def _base_dict(self) -> dict[str, Any]:
        return _clean({
            "schema": self.schema,
            "task": self.task,
            "kind": self.kind,
            "dataset": self.dataset,
            "machine": self.machine,
            "reference": self.reference,
            "settings": self.settings,
            "created": self.created,
            "edgeretina_version": self.edgeretina_version,
            "variants": [v.to_dict() for v in self.variants],
            "skipped": list(self.skipped),
        })

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Report":
        return cls(task=d["task"], kind=d["kind"], dataset=d["dataset"], machine=d.get("machine", {}),
                   reference=d.get("reference", ""),
                   variants=tuple(VariantReport.from_dict(v) for v in d["variants"]),
                   settings=d.get("settings", {}), skipped=tuple(d.get("skipped", ())),
                   schema=d.get("schema", SCHEMA), created=d.get("created", ""),
                   edgeretina_version=d.get("edgeretina_version", ""),
                   shifts=tuple(ShiftResult.from_dict(r) for r in d.get("shifts") or ()),
                   stability=Stability.from_dict(d["stability"]) if d.get("stability") else None,
                   agreement=d.get("agreement"))

    @classmethod
    def load(cls, path: str | Path) -> "Report":
        p = Path(path)
        if p.is_dir():
            p = p / "report.json"
        return cls.from_dict(json.loads(p.read_text()))

    # ------------------------------------------------------------------------------------- renderers
    def table_columns(self) -> list["Column"]:
        """The VARIANT_COLUMNS shown in report.md and on the terminal for this report."""
        return [c for c in VARIANT_COLUMNS if c.header and (c.show is None or c.show(self))]

    def columns(self) -> list[tuple[str, str]]:
        """(header, key) of the summary table; the same columns for markdown and the terminal."""
        return [(c.heading(self), c.key) for c in self.table_columns()]

    def rows(self) -> list[list[str]]:
        cols = self.table_columns()
        return [[c.cell(v) for c in cols] for v in self.variants]

    def to_markdown(self, command: str | None = None) -> str:
        ds = self.dataset
        classes = ", ".join(f"{k} {v}" for k, v in (ds.get("classes") or {}).items())
        m = self.machine
        st = self.settings
        thr = st.get("threshold")
        thr = (", ".join(f"{x:.3f}" for x in thr) if isinstance(thr, (list, tuple))
               else f"{thr:.3f}" if isinstance(thr, (int, float)) else "–")
        subset = " (a seeded random subset)" if st.get("max_images") else ""
        runs = st.get("runs")
        lines = [
            f"# edgeretina benchmark: {self.task}",
            "",
            f"- Data: `{ds.get('path')}` split `{ds.get('split')}`, {ds.get('n_images')} images{subset} "
            f"({classes})",
            *([f"- Optic-disc crops flagged (low confidence / fallback, the app should ask for a retake): "
               f"{ds['disc_flags']['flagged']} of {ds['disc_flags']['n']}"] if ds.get("disc_flags") else []),
            f"- Reference: `{self.reference}`; ΔAUROC, retention, DeLong p (paired, two-sided) and flips are "
            f"against it; sensitivity/specificity at the reference's threshold {thr}",
            f"- Latency: batch 1 after {st.get('warmup')} warm-up calls, {runs} pass{'es' if runs != 1 else ''} "
            f"over {st.get('timing_images')} images; AUROC CI: {st.get('n_boot')} bootstrap resamples",
            f"- Machine: {machine_line(m)}; {m.get('platform', '?')}; "
            f"tensorflow {m.get('tensorflow', '?')}, ai-edge-litert {m.get('ai_edge_litert', '?')}",
            *[f"- Device {line}" for line in facts_lines(self.variants)],
        ]
        if self.agreement:
            a = self.agreement
            lines.append(f"- Agreement data: `{a.get('path')}` ({a.get('format')}), {a.get('n_images')} unlabelled "
                         f"images ({a.get('skipped', 0)} undecodable skipped): every model's decisions vs the "
                         "reference's, flip rate with a Wilson 95 % CI")
        if command:
            lines.append(f"- Command: `{command}`")
        lines += ["", _md_table([h for h, _ in self.columns()], self.rows())]
        per_label = [v for v in self.variants if v.per_label]
        if per_label:
            labels = list(per_label[0].per_label)
            lines += ["", "Per-label AUROC", "",
                      _md_table(["Variant", "Device"] + labels,
                                [[v.name, v.device] + [_f((v.per_label.get(lb) or {}).get("auroc"), 3)
                                                       for lb in labels] for v in per_label])]
        lines += self.label_markdown()
        lines += arm_parity.markdown_lines(self.variants)
        lines += kernel_parity.markdown_lines(self.variants)
        lines += guard_sweep.markdown_lines((self.agreement or {}).get("guard_sweeps"))
        if self.skipped:
            lines += ["", "Skipped:", ""] + [f"- `{s['file']}` on {s['device']}: {s['reason']}"
                                               for s in self.skipped]
        lines += ["", "Columns: size = file bytes / 1e6; gzip = gzip -9 of the file; Params M = stored "
                  "weights (BatchNorm folded in .tflite); AUROC/M = AUROC per million parameters; "
                  "Flips = share of images whose screening decision differs from the reference; logit sd = sd "
                  "of the per-image screening-logit difference from the reference"
                  + KIND_NOTES.get(self.headline().kind, "")
                  + ("; × floor = Flips ÷ the reference's own flip rate under a JPEG-95 re-save (below)."
                     if self.stability is not None else "."), ""]
        if self.stability is not None:
            lines += self.stability.to_markdown()
        if self.shifts:
            lines += self.shift_markdown()
        return "\n".join(lines).rstrip("\n") + "\n"

    def shift_markdown(self) -> list[str]:
        names = sorted({r.shift for r in self.shifts if r.shift != "none"},
                       key=[r.shift for r in self.shifts].index)
        return ["", "## Camera-shift stress test", "",
                f"The same photos through each named, seeded shift ({', '.join(names)}) at a mild and a severe "
                "level before the model's preprocessing, every model scored on the host. ΔAUROC vs ref = against "
                "the UNSHIFTED reference; Δ vs self = against the same model unshifted; Δ vs ref (same shift) = "
                "int8-style retention under the shift; Sens/Spec at the shipped threshold; Flips = decisions "
                "that differ from the same model's unshifted ones. Plot: shift.png.", "",
                _md_table([c.header for c in SHIFT_COLUMNS if c.header],
                          [[c.cell(r) for c in SHIFT_COLUMNS if c.header] for r in self.shifts])]

    def to_csv(self) -> str:
        return _csv(VARIANT_COLUMNS, self.variants)

    def label_rows(self) -> list[LabelRow]:
        """Per label / head / grade rows of every variant (empty for a binary task)."""
        return [r for v in self.variants for r in LabelRow.of(v)]

    def label_csv(self) -> str:
        return _csv(LABEL_COLUMNS, self.label_rows())

    def label_markdown(self) -> list[str]:
        rows = self.label_rows()
        if not rows:
            return []
        cols = [c for c in LABEL_COLUMNS if c.header and any(_ok(c.get(r)) for r in rows)]
        what = {"multiclass": "Per grade" if self.task == "dr" else "Per class",
                "multilabel": "Per head" if self.task == "multitask" else "Per label"}.get(self.kind, "Per label")
        note = ("recall of each grade, its change vs the reference, and the share of that grade's images whose "
                "predicted grade changed" if self.kind == "multiclass" else
                "AUROC with its bootstrap CI, ΔAUROC with the paired DeLong CI, and decisions at the reference's "
                "threshold for that label: sensitivity, specificity and the share of images whose decision flipped")
        return ["", f"## {what}", "", f"{what.split()[1].capitalize()} rows (the bench's labels.csv): {note}.", "",
                _md_table([("Head" if c.key == "label" and self.task == "multitask" else c.heading(self))
                           for c in cols], [[c.cell(r) for c in cols] for r in rows])]

    def headline(self) -> "Headline":
        """The task kind's headline metric (what the ball chart plots, :data:`HEADLINES`)."""
        if self.kind == "multiclass" and any(v.kappa is not None for v in self.variants):
            return HEADLINES["grading"]
        return HEADLINES.get(self.kind, HEADLINES["binary"])

    def shift_csv(self) -> str:
        return _csv(SHIFT_COLUMNS, self.shifts)

    def stability_csv(self) -> str:
        return _csv(STABILITY_COLUMNS, self.stability.rows if self.stability else ())

    def to_terminal(self) -> str:
        headers = [h for h, _ in self.columns()]
        rows = self.rows()
        widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
        line = lambda cells: "  ".join(c.rjust(w) if i else c.ljust(w)  # noqa: E731
                                       for i, (c, w) in enumerate(zip(cells, widths)))
        return "\n".join([line(headers), "  ".join("-" * w for w in widths)] + [line(r) for r in rows])

    def save(self, out_dir: str | Path, command: str | None = None) -> dict[str, Path]:
        d = ensure_writable_dir(out_dir)
        paths = {
            "json": write_json_atomic(d / "report.json", self.to_dict()),
            "md": write_text_atomic(d / "report.md", self.to_markdown(command)),
            "csv": write_text_atomic(d / "report.csv", self.to_csv()),
        }
        if self.label_rows():
            paths["labels_csv"] = write_text_atomic(d / "labels.csv", self.label_csv())
        if self.shifts:
            paths["shift_csv"] = write_text_atomic(d / "shift.csv", self.shift_csv())
        if self.stability is not None:
            paths["stability_csv"] = write_text_atomic(d / "stability.csv", self.stability_csv())
        return paths


# ------------------------------------------------------------------------------------------- columns
@dataclass(frozen=True)
class Column:
    """One column of a table: ``key`` is its CSV header and its flat key in report.json (rows' ``to_dict``
    add every column key); ``header`` (None: CSV/JSON only) puts it in report.md and the terminal table,
    rendered by ``fmt`` — or ``render`` when the cell needs the whole row; ``show`` limits it to some reports."""

    key: str
    get: Callable[[Any], Any]
    header: str | None = None
    fmt: Callable[[Any], str] = str
    render: Callable[[Any], str] | None = None
    show: Callable[["Report"], bool] | None = None
    headers: tuple[tuple[str, str], ...] = ()  # (headline kind, header) where the header differs by task kind

    def cell(self, row) -> str:
        return self.render(row) if self.render is not None else self.fmt(self.get(row))

    def heading(self, report: "Report") -> str:
        return dict(self.headers).get(report.headline().kind, self.header or self.key)


@dataclass(frozen=True)
class Headline:
    """A task kind's headline metric: ``key`` of the VariantReport field, its ``label`` and its density
    (value per million parameters) field — the ball chart's y axis and ball labels."""

    kind: str  # binary | grading | multilabel | multiclass
    key: str
    label: str
    density: str


HEADLINES: dict[str, Headline] = {h.kind: h for h in (
    Headline("binary", "auroc", "AUROC", "auroc_density"),
    Headline("grading", "kappa", "quadratic weighted κ", "kappa_density"),
    Headline("multilabel", "auroc", "macro AUROC", "auroc_density"),
    Headline("multiclass", "auroc", "macro one-vs-rest AUROC", "auroc_density"),
)}

KIND_NOTES = {
    "grading": ("; κ = quadratic weighted κ of the predicted grade (the expected grade Σ k·p_k, rounded) [95 % bootstrap CI]; Δκ = κ − the reference's κ "
                "[paired bootstrap CI: both models on the same resampled images]; Acc = predicted-grade accuracy; "
                "Grade flips = share of images whose predicted grade differs from the reference's; Referable "
                "flips = share whose predicted grade ≥ 2 (refer) decision differs; κ/M = κ per million "
                "parameters; Referable AUROC = AUROC of p(grade ≥ 2), its ΔAUROC with the paired DeLong test"),
    "multilabel": ("; Macro AUROC = mean of the per-label AUROCs [95 % bootstrap CI]; Δ macro AUROC "
                   "[paired bootstrap CI]; DeLong p = smallest per-label p × labels (Bonferroni); Micro/Macro F1 "
                   "and the mean sensitivity / specificity at the reference's per-label thresholds; Flips = share "
                   "of images with any label decision different from the reference's (per label: below)"),
    "multiclass": "; Acc = argmax accuracy; Class flips = share of images whose predicted class changed",
}


def _attr(name: str) -> Callable[[Any], Any]:
    return lambda row: getattr(row, name)


def _col(key: str, header: str | None = None, fmt: Callable[[Any], str] = str, **kw) -> Column:
    return Column(key, kw.pop("get", None) or _attr(key), header, fmt, **kw)


def _n(digits: int, sign: bool = False) -> Callable[[Any], str]:
    return lambda v: _f(v, digits, sign=sign)


def _ci(row, i: int, name: str = "auroc_ci95"):
    ci = getattr(row, name)
    return ci[i] if ci else None


def _auroc_cell(v) -> str:
    if v.auroc_ci95:
        return f"{_f(v.auroc, 3)} [{_f(v.auroc_ci95[0], 3)}, {_f(v.auroc_ci95[1], 3)}]"
    return _f(v.auroc, 3)


def _agreement(v, key: str, decision: str | None = None):
    a = v.agreement or {}
    if decision is not None:  # DR grading's other decisions (Agreement.decisions)
        a = {**(a.get("decisions") or {}).get(decision, {}), "n": a.get("n")}
    if key in ("ci_low", "ci_high"):
        ci = a.get("ci95")
        return ci[0 if key == "ci_low" else 1] if ci else None
    return a.get(key)


def _agreement_cell(v, decision: str | None = None) -> str:
    a = v.agreement or {}
    if decision is not None:
        a = {**(a.get("decisions") or {}).get(decision, {}), "n": a.get("n")}
    if a.get("flip_rate") is None:
        return "–"
    lo, hi = a.get("ci95") or (None, None)
    pct = lambda x: f"{100 * x:.2f}%" if _ok(x) else "–"  # noqa: E731 - flips near 1 % need two decimals
    return f"{pct(a['flip_rate'])} [{pct(lo)}, {pct(hi)}] of {a['n']}"


def _guard_share(v):
    return ((v.device_info or {}).get("guard") or {}).get("rescored_share")


def _kind(*kinds: str) -> Callable[["Report"], bool]:
    return lambda r: r.kind in kinds


def _graded(r: "Report") -> bool:
    """A grading report (DR): its rows carry κ."""
    return r.headline().kind == "grading"


def _value_ci(v, ci, digits: int, sign: bool = False) -> str:
    if not _ok(v):
        return "–"
    if not ci:
        return _f(v, digits, sign)
    return f"{_f(v, digits, sign)} [{_f(ci[0], digits, sign)}, {_f(ci[1], digits, sign)}]"


def _ratio(v) -> str:
    return f"{v:.1f}×" if _ok(v) else "–"


# The per-variant table. Order = CSV order; the md/terminal table shows the columns with a header, in order.
VARIANT_COLUMNS: tuple[Column, ...] = (
    _col("name", "Variant", render=lambda v: v.name + (" (ref)" if v.is_reference else "")),
    _col("file"),
    _col("device", "Device", render=lambda v: v.device + (f"×{v.threads}" if v.threads else "")),
    _col("threads"), _col("format"), _col("is_reference"), _col("depth"), _col("params"),
    _col("nonzero_params"), _col("size_bytes"), _col("gzip_bytes"),
    _col("size_mb", "Size MB", _n(2), get=lambda v: round(v.size_mb, 4)),
    _col("gzip_mb", "gzip MB", _n(2), get=lambda v: round(v.gzip_mb, 4)),
    _col("params_m", "Params M", _n(3), get=lambda v: v.params / 1e6),
    # DR grading: κ, Δκ, accuracy, grade / referable flips, κ density
    _col("kappa", "κ [95% CI]", render=lambda v: _value_ci(v.kappa, v.kappa_ci95, 3), show=_graded),
    _col("kappa_ci_low", get=lambda v: _ci(v, 0, "kappa_ci95")),
    _col("kappa_ci_high", get=lambda v: _ci(v, 1, "kappa_ci95")),
    _col("delta_kappa", "Δκ [95% CI]", render=lambda v: _value_ci(v.delta_kappa, v.delta_kappa_ci95, 3, True),
         show=_graded),
    _col("delta_kappa_ci_low", get=lambda v: _ci(v, 0, "delta_kappa_ci95")),
    _col("delta_kappa_ci_high", get=lambda v: _ci(v, 1, "delta_kappa_ci95")),
    _col("accuracy", "Acc", _n(3), show=_kind("multiclass")),
    _col("grade_flip_rate", "Grade flips", lambda v: _pct(v), show=_kind("multiclass"),
         headers=(("multiclass", "Class flips"),)),
    _col("referable_flip_rate", "Referable flips", lambda v: _pct(v), show=_graded),
    _col("kappa_density", "κ/M", _n(3), show=_graded),
    # AUROC (binary; DR grading: referable, p(grade >= 2); multi-label: macro)
    _col("auroc", "AUROC [95% CI]", render=_auroc_cell,
         headers=(("grading", "Referable AUROC [95% CI]"), ("multilabel", "Macro AUROC [95% CI]"),
                  ("multiclass", "OvR AUROC"))),
    _col("auroc_ci_low", get=lambda v: _ci(v, 0)), _col("auroc_ci_high", get=lambda v: _ci(v, 1)),
    _col("delta_auroc", "ΔAUROC", _n(4, sign=True), show=lambda r: r.kind != "multilabel"),
    _col("delta_macro_auroc", "Δ macro AUROC [95% CI]", get=lambda v: v.delta_auroc,
         render=lambda v: _value_ci(v.delta_auroc, v.delta_auroc_ci95, 4, True), show=_kind("multilabel")),
    _col("delta_auroc_ci_low", get=lambda v: _ci(v, 0, "delta_auroc_ci95")),
    _col("delta_auroc_ci_high", get=lambda v: _ci(v, 1, "delta_auroc_ci95")),
    _col("auroc_retention", "Retention", lambda v: _pct(v), show=lambda r: not _graded(r)),
    _col("delong_p", "DeLong p", lambda v: _p(v)),
    _col("auroc_density", "AUROC/M", _n(3), show=lambda r: not _graded(r),
         headers=(("multilabel", "Macro AUROC/M"),)),
    _col("auroc_density_nonzero"), _col("auroc_per_mb"),
    _col("f1_micro", "Micro F1", _n(3), show=_kind("multilabel")),
    _col("f1_macro", "Macro F1", _n(3), show=_kind("multilabel")),
    _col("sensitivity", "Sens", _n(3), show=lambda r: not _graded(r), headers=(("multilabel", "Mean sens"),)),
    _col("specificity", "Spec", _n(3), show=lambda r: not _graded(r), headers=(("multilabel", "Mean spec"),)),
    _col("flip_rate", "Flips", lambda v: _pct(v), show=lambda r: not _graded(r) and r.kind != "multiclass",
         headers=(("multilabel", "Any-label flips"),)),
    _col("flip_floor_ratio", "× floor", _ratio, show=lambda r: r.stability is not None),
    _col("agreement_flip_rate", "Agreement flips [95% CI]", render=_agreement_cell,
         get=lambda v: _agreement(v, "flip_rate"), show=lambda r: any(v.agreement for v in r.variants),
         headers=(("grading", "Agreement referral flips [95% CI]"),)),
    # DR grading on the agreement images: predicted grade >= 2 and predicted grade flips (benchmarks/agreement.py)
    _col("agreement_referable_grade_flip_rate", "Agreement grade ≥ 2 flips [95% CI]",
         render=lambda v: _agreement_cell(v, "referable_grade"),
         get=lambda v: _agreement(v, "flip_rate", "referable_grade"),
         show=lambda r: _graded(r) and any(v.agreement for v in r.variants)),
    _col("agreement_grade_flip_rate", "Agreement grade flips [95% CI]",
         render=lambda v: _agreement_cell(v, "grade"), get=lambda v: _agreement(v, "flip_rate", "grade"),
         show=lambda r: _graded(r) and any(v.agreement for v in r.variants)),
    _col("agreement_flips", get=lambda v: _agreement(v, "flips")),
    _col("agreement_n", get=lambda v: _agreement(v, "n")),
    _col("agreement_ci_low", get=lambda v: _agreement(v, "ci_low")),
    _col("agreement_ci_high", get=lambda v: _agreement(v, "ci_high")),
    _col("rescored_share", "Re-scored", lambda v: _pct(v), get=_guard_share,
         show=lambda r: any(_guard_share(v) is not None for v in r.variants)),
    _col("logit_shift", "Logit shift", _n(3, sign=True), show=_kind("binary")),
    _col("logit_noise_sd", "Logit sd", _n(3), show=_kind("binary")),
    _col("near_threshold"),
    _col("latency_p50_ms", "p50 ms", _n(2), get=lambda v: v.latency_ms.p50),
    _col("latency_p90_ms", "p90 ms", _n(2), get=lambda v: v.latency_ms.p90),
    _col("latency_mean_ms", get=lambda v: v.latency_ms.mean),
    _col("images_per_s", "img/s", _n(1)),
)

# Per label (multi-label), head (multi-task) or grade (multiclass): labels.csv and report.md's per-label table
# (which shows the columns with a header that have a value in some row).
LABEL_COLUMNS: tuple[Column, ...] = (
    _col("name", "Variant", render=lambda r: r.name + (" (ref)" if r.is_reference else "")),
    _col("device", "Device"), _col("is_reference"),
    _col("label", "Label", headers=(("grading", "Grade"), ("multiclass", "Class"))),
    _col("n_positive", "n"),
    _col("threshold", "Threshold", _n(3)),
    _col("auroc", "AUROC [95% CI]", render=_auroc_cell),
    _col("auroc_ci_low", get=lambda r: _ci(r, 0)), _col("auroc_ci_high", get=lambda r: _ci(r, 1)),
    _col("delta_auroc", "ΔAUROC [95% CI]", render=lambda r: _value_ci(r.delta_auroc, r.delta_auroc_ci95, 4, True)),
    _col("delta_auroc_ci_low", get=lambda r: _ci(r, 0, "delta_auroc_ci95")),
    _col("delta_auroc_ci_high", get=lambda r: _ci(r, 1, "delta_auroc_ci95")),
    _col("delong_p", "DeLong p", lambda v: _p(v)),
    _col("sensitivity", "Sens", _n(3), headers=(("grading", "Recall"), ("multiclass", "Recall"))),
    _col("delta_sensitivity", "ΔRecall", _n(3, sign=True)),
    _col("specificity", "Spec", _n(3)),
    _col("flip_rate", "Flips", lambda v: _pct(v)),
)

SHIFT_COLUMNS: tuple[Column, ...] = (
    _col("name", "Variant", render=lambda r: r.name + (" (ref)" if r.is_reference else "")),
    _col("file"), _col("is_reference"),
    _col("shift", "Shift"), _col("level", "Level"),
    _col("auroc", "AUROC", _n(3)),
    _col("delta_auroc", "ΔAUROC vs ref", _n(4, sign=True)),
    _col("delta_auroc_self", "Δ vs self", _n(4, sign=True)),
    _col("delta_auroc_vs_ref_shifted", "Δ vs ref (same shift)", _n(4, sign=True)),
    _col("sensitivity", "Sens", _n(3)), _col("specificity", "Spec", _n(3)),
    _col("flip_rate", "Flips", lambda v: _pct(v)),
)

STABILITY_COLUMNS: tuple[Column, ...] = (
    _col("name", "Variant"), _col("file"), _col("is_reference"), _col("perturbation", "Perturbation"),
    _col("flip_rate", "Flips", lambda v: _pct(v)),
    _col("logit_change_mean", "Logit change mean", _n(3, sign=True)),
    _col("logit_change_sd", "Logit change sd", _n(3)),
    _col("amplification", "× reference", _ratio),
)


def _with_columns(d: dict[str, Any], columns: Sequence[Column], row) -> dict[str, Any]:
    """``d`` (a row's own fields) plus every column key it does not have yet (derived values)."""
    for c in columns:
        if c.key not in d:
            d[c.key] = c.get(row)
    return d


def _csv(columns: Sequence[Column], rows) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow([c.key for c in columns])
    for r in rows:
        vals = [_clean(c.get(r)) for c in columns]
        w.writerow(["" if v is None else v for v in vals])
    return buf.getvalue()


# ------------------------------------------------------------------------------------------- helpers


def _clean(o):
    """NaN/inf → None (JSON has no NaN); tuples → lists."""
    if isinstance(o, dict):
        return {k: _clean(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_clean(v) for v in o]
    if isinstance(o, float) and not math.isfinite(o):
        return None
    if hasattr(o, "item") and not isinstance(o, (str, bytes)):
        try:
            return _clean(o.item())
        except (AttributeError, ValueError, TypeError):
            return o
    return o


def _ok(v) -> bool:
    return v is not None and not (isinstance(v, float) and not math.isfinite(v))


def _f(v, digits: int, sign: bool = False) -> str:
    if not _ok(v):
        return "–"
    return f"{v:+.{digits}f}" if sign else f"{v:.{digits}f}"


def _pct(v) -> str:
    return f"{100 * v:.1f}%" if _ok(v) else "–"


def _p(v) -> str:
    if not _ok(v):
        return "–"
    return "<0.001" if v < 0.001 else f"{v:.3f}"


def _md_table(headers, rows) -> str:
    out = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)
