"""Benchmark results as frozen dataclasses that serialise themselves: report.json, report.md, report.csv."""
from __future__ import annotations

import csv
import io
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from edgeretina.io import SizedArtifact, ensure_writable_dir, write_json_atomic, write_text_atomic

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
    kappa: float | None = None  # DR grading: quadratic weighted kappa of the argmax grade
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

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["auroc_ci95"] = list(self.auroc_ci95) if self.auroc_ci95 else None
        d["delta_auroc_ci95"] = list(self.delta_auroc_ci95) if self.delta_auroc_ci95 else None
        d["size_mb"] = round(self.size_mb, 4)
        d["gzip_mb"] = round(self.gzip_mb, 4)
        return _clean(d)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "VariantReport":
        known = {f.name for f in fields(cls)}
        kw = {k: v for k, v in d.items() if k in known}
        kw["latency_ms"] = Latency(**(d.get("latency_ms") or {}))
        for k in ("auroc_ci95", "delta_auroc_ci95"):
            if kw.get(k) is not None:
                kw[k] = tuple(kw[k])
        return cls(**kw)


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

    def to_dict(self) -> dict[str, Any]:
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
                   edgeretina_version=d.get("edgeretina_version", ""))

    @classmethod
    def load(cls, path: str | Path) -> "Report":
        import json

        p = Path(path)
        if p.is_dir():
            p = p / "report.json"
        return cls.from_dict(json.loads(p.read_text()))

    # ------------------------------------------------------------------------------------- renderers
    def columns(self) -> list[tuple[str, str]]:
        """(header, key) of the summary table; the same columns for markdown and the terminal."""
        cols = [("Variant", "name"), ("Device", "device"), ("Size MB", "size_mb"), ("gzip MB", "gzip_mb"),
                ("Params M", "params_m"), ("AUROC [95% CI]", "auroc_ci"), ("ΔAUROC", "delta_auroc"),
                ("Retention", "auroc_retention"), ("DeLong p", "delong_p"), ("AUROC/M", "auroc_density"),
                ("Sens", "sensitivity"), ("Spec", "specificity"), ("Flips", "flip_rate")]
        if self.kind == "multiclass":
            cols.append(("κ", "kappa"))
        cols += [("p50 ms", "p50"), ("p90 ms", "p90"), ("img/s", "images_per_s")]
        return cols

    def rows(self) -> list[list[str]]:
        out = []
        for v in self.variants:
            cells = {
                "name": v.name + (" (ref)" if v.is_reference else ""),
                "device": v.device + (f"×{v.threads}" if v.threads else ""),
                "size_mb": _f(v.size_mb, 2), "gzip_mb": _f(v.gzip_mb, 2),
                "params_m": _f(v.params / 1e6, 3),
                "auroc_ci": (f"{_f(v.auroc, 3)} [{_f(v.auroc_ci95[0], 3)}, {_f(v.auroc_ci95[1], 3)}]"
                             if v.auroc_ci95 else _f(v.auroc, 3)),
                "delta_auroc": _f(v.delta_auroc, 4, sign=True),
                "auroc_retention": _pct(v.auroc_retention),
                "delong_p": _p(v.delong_p),
                "auroc_density": _f(v.auroc_density, 3),
                "sensitivity": _f(v.sensitivity, 3), "specificity": _f(v.specificity, 3),
                "flip_rate": _pct(v.flip_rate), "kappa": _f(v.kappa, 3),
                "p50": _f(v.latency_ms.p50, 2), "p90": _f(v.latency_ms.p90, 2),
                "images_per_s": _f(v.images_per_s, 1),
            }
            out.append([cells[k] for _, k in self.columns()])
        return out

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
            f"- Reference: `{self.reference}`; ΔAUROC, retention, DeLong p (paired, two-sided) and flips are "
            f"against it; sensitivity/specificity at the reference's threshold {thr}",
            f"- Latency: batch 1 after {st.get('warmup')} warm-up calls, {runs} pass{'es' if runs != 1 else ''} "
            f"over {st.get('timing_images')} images; AUROC CI: {st.get('n_boot')} bootstrap resamples",
            f"- Machine: {m.get('cpu', '?')}, {m.get('cpu_count', '?')} cores, {m.get('platform', '?')}; "
            f"tensorflow {m.get('tensorflow', '?')}, ai-edge-litert {m.get('ai_edge_litert', '?')}",
        ]
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
        if self.skipped:
            lines += ["", "Skipped:", ""] + [f"- `{s['file']}` on {s['device']}: {s['reason']}"
                                               for s in self.skipped]
        lines += ["", "Columns: size = file bytes / 1e6; gzip = gzip -9 of the file; Params M = stored "
                  "weights (BatchNorm folded in .tflite); AUROC/M = AUROC per million parameters; "
                  "Flips = share of images whose screening decision differs from the reference.", ""]
        return "\n".join(lines)

    def to_csv(self) -> str:
        keys = ["name", "file", "device", "threads", "format", "is_reference", "depth", "params",
                "nonzero_params", "size_bytes", "gzip_bytes", "auroc", "auroc_ci_low", "auroc_ci_high",
                "delta_auroc", "auroc_retention", "delong_p", "auroc_density", "auroc_density_nonzero",
                "auroc_per_mb", "sensitivity", "specificity", "flip_rate", "kappa", "latency_p50_ms",
                "latency_p90_ms", "latency_mean_ms", "images_per_s"]
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(keys)
        for v in self.variants:
            d = v.to_dict()
            ci = v.auroc_ci95 or (None, None)
            d.update(auroc_ci_low=ci[0], auroc_ci_high=ci[1], latency_p50_ms=v.latency_ms.p50,
                     latency_p90_ms=v.latency_ms.p90, latency_mean_ms=v.latency_ms.mean)
            w.writerow(["" if d.get(k) is None else d.get(k) for k in keys])
        return buf.getvalue()

    def to_terminal(self) -> str:
        headers = [h for h, _ in self.columns()]
        rows = self.rows()
        widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
        line = lambda cells: "  ".join(c.rjust(w) if i else c.ljust(w)  # noqa: E731
                                       for i, (c, w) in enumerate(zip(cells, widths)))
        return "\n".join([line(headers), "  ".join("-" * w for w in widths)] + [line(r) for r in rows])

    def save(self, out_dir: str | Path, command: str | None = None) -> dict[str, Path]:
        d = ensure_writable_dir(out_dir)
        return {
            "json": write_json_atomic(d / "report.json", self.to_dict()),
            "md": write_text_atomic(d / "report.md", self.to_markdown(command)),
            "csv": write_text_atomic(d / "report.csv", self.to_csv()),
        }


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
