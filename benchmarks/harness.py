"""``run_bench``: every model × every device over the same images, compared with one reference.

1. Open every model (``.tflite`` with embedded edgeretina metadata, ``.keras``/run dir with config.json);
   refuse any without it. All must serve the same task and labels.
2. Pick the reference: ``reference`` if given, else the first Keras model, else the float32 .tflite, else
   the first model.
3. Load the images once per distinct preprocessing (read from each model's own metadata) from the same
   split the model was trained with (``config.dataset.split``) or all images.
4. For each (model, device): make the device's runner, score every image, time batch-1 inference on the
   first ``timing_images`` images (``warmup`` calls, then ``runs`` passes), and compare with the reference.
5. Robustness stages (``benchmarks/robustness.py``): the
   decision-stability floor under benign re-acquisition (on by default) and the camera-shift stress test
   (``shifts``), every model re-scored on the host on perturbed copies of the same photos.
6. Build a :class:`~edgeretina.benchmarks.report.Report`; with ``out`` write report.json/md/csv, roc.png
   and ballchart.png (+ shift.csv and shift.png, stability.csv).
"""
from __future__ import annotations

import datetime as _dt
import json
import os
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from edgeretina import __version__, compare
from edgeretina.converters.variants import VARIANTS
from edgeretina.data import class_counts, count_disc_flags, labels_array, load_arrays, open_dataset
from edgeretina.env import machine_info
from edgeretina.errors import DataError, DeviceError, ModelError
from edgeretina.io import ensure_writable_dir, staged_dir
from edgeretina.metrics import plot_roc
from edgeretina.preprocess import Pipeline
from edgeretina.tasks import TaskKind, TaskSpec

from . import plots
from .agreement import add_agreement
from .devices import DEVICES, Device, get_device
from .modelfile import ModelFile, ModelStats, expand_models, open_model
from .options import SPLITS, BenchOptions
from .report import Latency, Report, ShiftResult, Stability, VariantReport
from .robustness import RawImages, Rescorer, shift_stage, stability_stage
from .scoring import Scores, binary_truth, decision_change, default_threshold, evaluate, screening_scores

Progress = Callable[[int, int, str], None]  # (done, total, what is running now)

VARIANT_ORDER = tuple(v.value for v in VARIANTS)  # rows: the Keras model, then the variants in registry order


def _order_key(m: ModelFile) -> tuple:
    if m.format == "keras":
        return (0, 0, str(m.path))
    base = m.name.split("@")[0]
    i = VARIANT_ORDER.index(base) if base in VARIANT_ORDER else len(VARIANT_ORDER)
    return (1, i, m.name, str(m.path))


def load_models(models: Sequence[str | os.PathLike], reference: str | os.PathLike | None = None
                ) -> tuple[list[ModelFile], ModelFile]:
    """Open and order the models; return them and the reference (added to the list if not in it)."""
    paths = expand_models(models) if models else []
    ref_path = None
    if reference is not None:
        ref_path = expand_models([reference])[0]
        if ref_path.resolve() not in {p.resolve() for p in paths}:
            paths.insert(0, ref_path)
    if not paths:
        raise ModelError("no models to benchmark (give .tflite/.keras files or directories)")
    opened = sorted((open_model(p) for p in paths), key=_order_key)
    named: dict[str, ModelFile] = {}
    for m in opened:  # two rows of one name would make the report ambiguous (and the reference a guess)
        if m.name in named:
            raise ModelError(f"two models are named '{m.name}': {named[m.name].path} and {m.path}; benchmark "
                             "one of them, or export them to separate folders and bench each")
        named[m.name] = m
    first = opened[0]
    for m in opened[1:]:
        if m.config.task != first.config.task or tuple(m.config.labels) != tuple(first.config.labels):
            raise ModelError(f"{m.path}: task {m.config.task} {list(m.config.labels)} differs from "
                             f"{first.path}'s {first.config.task} {list(first.config.labels)}; benchmark "
                             f"models of one task together")
    if ref_path is not None:
        ref = next(m for m in opened if m.path.resolve() == ref_path.resolve())
    else:
        ref = next((m for m in opened if m.format == "keras"), None) or \
            next((m for m in opened if m.is_float), None) or opened[0]
    return opened, ref


def load_records(data: str, spec: TaskSpec, ref: ModelFile, split: str = "test"):
    """Records of ``split`` of the dataset at ``data``, split as the reference model's training run did."""
    if split not in SPLITS:
        raise DataError(f"unknown split '{split}' (choose from: {', '.join(SPLITS)})")
    ds = open_dataset(data, spec.task.value)
    if split == "all":
        records = list(ds.records)
    else:
        parts = ds.split(**ref.config.split_args())
        records = list(parts.get(split) or [])
    if not records:
        raise DataError(f"{data}: split '{split}' has no images (use --split all to evaluate every image)")
    return ds, records


def load_images(records, pipeline_json) -> np.ndarray:
    pipeline = Pipeline.from_json(pipeline_json)
    x, _ = load_arrays(records, pipeline)
    return np.asarray(x, dtype=np.float32)


class Inputs:
    """The benchmark's images, preprocessed once per distinct Pipeline, and each model's host (LiteRT / Keras
    on this CPU) probabilities, computed once; the reference's host runner is kept for its own job."""

    def __init__(self, records, threads: int):
        self.records, self.threads = records, threads
        self._x: dict[str, np.ndarray] = {}
        self.probs: dict[Path, np.ndarray] = {}
        self._kept: dict[Path, object] = {}

    def x(self, m: ModelFile) -> np.ndarray:
        key = json.dumps(m.config.preprocessing, sort_keys=True)
        if key not in self._x:
            self._x[key] = load_images(self.records, m.config.preprocessing)
        return self._x[key]

    def host(self, m: ModelFile, keep: bool = False) -> np.ndarray:
        if m.path not in self.probs:
            r = DEVICES[Device.CPU].load(m, self.threads)
            self.probs[m.path] = r.predict(self.x(m))
            if keep:
                self._kept[m.path] = r
        return self.probs[m.path]

    def kept(self, m: ModelFile) -> bool:
        return m.path in self._kept

    def take_runner(self, m: ModelFile):
        return self._kept.pop(m.path)


def same_as_host(m: ModelFile, s) -> bool:
    """This job's runner is the host runner (its scores are the host scores)."""
    return s.device is Device.CPU or (m.format == "keras" and s.device is Device.KERAS_CPU)


@dataclass
class BenchContext:
    """One bench's working state, filled stage by stage (see :class:`Bench`)."""

    data: str
    models: list[ModelFile]
    ref: ModelFile
    spec: TaskSpec
    threads: int
    requested: list  # device specs asked for
    usable: list = field(default_factory=list)  # those available here
    jobs: list = field(default_factory=list)  # (model, device spec) pairs
    skipped: list[dict[str, str]] = field(default_factory=list)
    total: int = 0
    step: int = 0
    ds: object = None
    records: list = field(default_factory=list)
    y: np.ndarray | None = None
    inputs: Inputs | None = None
    ref_probs: np.ndarray | None = None
    rows: list[VariantReport] = field(default_factory=list)
    curves: dict[Path, tuple[str, np.ndarray, np.ndarray]] = field(default_factory=dict)  # one ROC per file
    stats: dict[Path, ModelStats] = field(default_factory=dict)

    @property
    def threshold(self):
        """The reference's threshold as the report shows it (``scoring.default_threshold``)."""
        return default_threshold(self.spec, self.ref.config.threshold)


_SCORE_FIELDS = tuple(f.name for f in fields(Scores) if f.name in {v.name for v in fields(VariantReport)})


class Bench:
    """``run_bench`` in stages: :meth:`open` (models, reference, devices), :meth:`load_data`, :meth:`score`
    (every model on every device), :meth:`robustness` (stability floor, camera shifts), :meth:`report`."""

    def __init__(self, options: BenchOptions | None = None, progress: Progress | None = None,
                 warn: Callable[[str], None] | None = None):
        self.opts = options or BenchOptions()
        self.progress = progress or (lambda done, total, what: None)
        self.warn = warn or (lambda msg: None)

    def run(self, models: Sequence[str | os.PathLike], data: str, out: str | os.PathLike | None = None,
            command: str | None = None) -> Report:
        ctx = self.open(models, data)
        out_dir = ensure_writable_dir(out) if out is not None else None
        self.plan(ctx)
        self.load_data(ctx)
        self.score(ctx)
        shift_rows, stability = self.robustness(ctx)
        report = self.report(ctx, shift_rows, stability)
        if self.opts.agreement_data:  # flips on a large unlabelled set, Wilson CI (benchmarks/agreement.py)
            report = add_agreement(report, ctx.models, ctx.ref, self.opts.agreement_data, ctx.threads,
                                   seed=self.opts.seed, progress=lambda what: self.progress(ctx.step, ctx.total, what))
        if out_dir is not None:
            write_outputs(report, list(ctx.curves.values()), ctx.spec, out_dir, command=command)
        return report

    def _tick(self, ctx: BenchContext, what: str, step: int | None = None) -> None:
        ctx.step = ctx.step + 1 if step is None else step
        self.progress(ctx.step, ctx.total, what)

    # ---- stage 1: models, the reference, devices
    def open(self, models, data: str) -> BenchContext:
        o = self.opts
        requested = []
        for d in o.devices:
            s = get_device(d)
            if s not in requested:
                requested.append(s)
        opened, ref = load_models(models, o.reference)
        spec = ref.config.spec
        if o.task is not None and str(o.task) != spec.task.value:
            raise ModelError(f"{ref.path}: the model was trained for task '{spec.task.value}', not '{o.task}'")
        return BenchContext(data=data, models=opened, ref=ref, spec=spec, threads=o.resolved_threads(),
                            requested=requested)

    def plan(self, ctx: BenchContext) -> None:
        """Devices available here (an unavailable one is reported and skipped, the others still run) and
        the (model, device) jobs."""
        errors = []
        for s in ctx.requested:
            try:
                s.check()
                ctx.usable.append(s)
            except DeviceError as e:
                errors.append(e)
                ctx.skipped.append({"file": "*", "device": s.device.value, "reason": str(e)})
        if not ctx.usable:
            raise errors[0]
        for e in errors:
            self.warn(str(e))
        for m in ctx.models:
            for s in ctx.usable:
                if s.runs(m.format):
                    ctx.jobs.append((m, s))
                else:
                    ctx.skipped.append({"file": str(m.path), "device": s.device.value,
                                        "reason": s.skip_reason(m.format)})
        if not ctx.jobs:
            formats = sorted({m.format for m in ctx.models})
            raise DeviceError(f"none of the models ({', '.join('.' + f for f in formats)}) runs on "
                              f"{', '.join(s.device.value for s in ctx.usable)}: "
                              + "; ".join(s.skip_reason(f) for s in ctx.usable for f in formats[:1]))
        ctx.total = len(ctx.jobs) + 1 + self.opts.passes

    # ---- stage 2: images and labels, the reference's scores
    def load_data(self, ctx: BenchContext) -> None:
        o = self.opts
        self._tick(ctx, f"loading images from {ctx.data}", step=0)
        ctx.ds, records = load_records(ctx.data, ctx.spec, ctx.ref, o.split)
        if o.max_images is not None and len(records) > o.max_images:
            rng = np.random.default_rng(o.seed)
            keep = np.sort(rng.choice(len(records), size=o.max_images, replace=False))
            records = [records[i] for i in keep]
        ctx.records = records
        ctx.y = labels_array(records, ctx.spec)
        ctx.inputs = Inputs(records, ctx.threads)
        keep = any(m is ctx.ref and same_as_host(m, s) for m, s in ctx.jobs)
        ctx.ref_probs = ctx.inputs.host(ctx.ref, keep=keep)
        if len(ctx.ref_probs) != len(ctx.y):
            raise ModelError(f"{ctx.ref.path}: scored {len(ctx.ref_probs)} images but {len(ctx.y)} were given")

    # ---- stage 3: every model on every device
    def score(self, ctx: BenchContext) -> None:
        for m, s in ctx.jobs:
            self._tick(ctx, f"{m.name} on {s.device.value}")
            row = self.score_job(ctx, m, s)
            if row is not None:
                ctx.rows.append(row)

    def score_job(self, ctx: BenchContext, m: ModelFile, s) -> VariantReport | None:
        """One model on one device: scores, batch-1 timing, size facts, comparison with the reference."""
        o = self.opts
        reuse = same_as_host(m, s) and ctx.inputs.kept(m)
        try:
            runner = ctx.inputs.take_runner(m) if reuse else s.load(m, ctx.threads)
        except DeviceError as e:
            self.warn(str(e))
            ctx.skipped.append({"file": str(m.path), "device": s.device.value, "reason": str(e)})
            return None
        x = ctx.inputs.x(m)
        probs, note = self._probabilities(ctx, m, s, runner, reuse, x)
        timing = runner.time(x[:o.timing_images], runs=o.runs, warmup=o.warmup)
        if m.path not in ctx.stats:
            ctx.stats[m.path] = m.stats(keras_model=getattr(runner, "model", None)) if m.format == "keras" \
                else m.stats()
        sc = evaluate(ctx.spec, ctx.y, probs, ctx.ref_probs, ctx.ref.config.threshold, n_boot=o.n_boot, seed=o.seed)
        if m.path not in ctx.curves:
            ctx.curves[m.path] = (m.name, binary_truth(ctx.spec, ctx.y), screening_scores(ctx.spec, probs))
        return variant_row(ctx, m, s, runner, sc, timing, note)

    @staticmethod
    def _probabilities(ctx: BenchContext, m: ModelFile, s, runner, reuse: bool, x) -> tuple[np.ndarray, str]:
        if reuse:
            return ctx.inputs.probs[m.path], ""
        if getattr(runner, "supports_predict", True):
            probs = np.asarray(runner.predict(x))
            if s.device in (Device.CPU, Device.KERAS_CPU) and m.path not in ctx.inputs.probs:
                ctx.inputs.probs[m.path] = probs
            return probs, getattr(runner, "score_note", "")
        return ctx.inputs.host(m), getattr(runner, "score_note", "") or \
            "scores from the same file on the host (LiteRT); latency from the device"

    # ---- stage 4: the stability floor and the camera-shift stress test
    def robustness(self, ctx: BenchContext) -> tuple[tuple[ShiftResult, ...], Stability | None]:
        """``benchmarks/robustness.py`` on every model's host probabilities of the unperturbed images; the
        rows get their flip rate as a multiple of the stability floor."""
        o = self.opts
        if not o.shifts and not o.stability:
            self._tick(ctx, "done", step=ctx.total)
            return (), None
        base = {m.path: ctx.inputs.host(m) for m in ctx.models}
        ref, spec, threshold = ctx.ref, ctx.spec, ctx.ref.config.threshold
        rescorer = Rescorer(ctx.models, RawImages(ctx.records, o.raw_cache_mb << 20), ctx.threads, o.seed)
        try:
            stability = None
            if o.stability:
                flips = {m.path: decision_change(spec, base[ref.path], base[m.path], threshold).flip_rate
                         for m in ctx.models}
                stability = stability_stage(rescorer, o.benign, spec, threshold, ref, base, flips,
                                            lambda what: self._tick(ctx, what))
            shift_rows = shift_stage(rescorer, o.shifts, spec, ctx.y, threshold, ref, base,
                                     lambda what: self._tick(ctx, what)) if o.shifts else ()
        finally:
            rescorer.close()
        if stability is not None:
            ctx.rows = [replace(r, flip_floor_ratio=stability.ratio(r.flip_rate)) for r in ctx.rows]
        self._tick(ctx, "done", step=ctx.total)
        return shift_rows, stability

    # ---- stage 5: the report
    def report(self, ctx: BenchContext, shift_rows=(), stability: Stability | None = None) -> Report:
        o, spec, y = self.opts, ctx.spec, ctx.y
        dataset = {"path": str(ctx.data), "format": getattr(ctx.ds, "format", None), "split": o.split,
                   "n_images": int(len(y)), "classes": class_counts(ctx.records, spec),
                   **disc_flags(ctx.records, ctx.ref.config.preprocessing)}
        settings = {"runs": o.runs, "warmup": o.warmup, "timing_images": min(o.timing_images, len(y)),
                    "threads": ctx.threads, "n_boot": o.n_boot, "seed": o.seed, "threshold": ctx.threshold,
                    "devices": [s.device.value for s in ctx.requested], "max_images": o.max_images,
                    "shift": [s.value for s in o.shifts], "stability": o.stability}
        return Report(task=spec.task.value, kind=spec.kind.value, dataset=dataset, machine=machine_info(),
                      reference=str(ctx.ref.path), variants=tuple(ctx.rows), settings=settings,
                      skipped=tuple(ctx.skipped),
                      created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                      edgeretina_version=__version__, shifts=shift_rows, stability=stability)


def variant_row(ctx: BenchContext, m: ModelFile, s, runner, sc: Scores, timing, note: str = "") -> VariantReport:
    """The report row of one model on one device: its size facts, its scores, its latency."""
    st = ctx.stats[m.path]
    facts = getattr(runner, "facts", None)
    return VariantReport(
        name=m.name, file=str(m.path), device=str(getattr(runner, "device", s.device.value)),
        threads=getattr(runner, "threads", ctx.threads), format=m.format, is_reference=m is ctx.ref,
        **{f.name: getattr(st, f.name) for f in fields(st)}, **{k: getattr(sc, k) for k in _SCORE_FIELDS},
        auroc_density=compare.auroc_density(sc.auroc, st.params / 1e6),
        auroc_density_nonzero=compare.auroc_density(sc.auroc, st.nonzero_params / 1e6),
        auroc_per_mb=compare.auroc_density(sc.auroc, st.size_bytes / 1e6),
        kappa_density=compare.auroc_density(sc.kappa, st.params / 1e6),
        latency_ms=Latency(timing.p50, timing.p90, timing.mean, timing.n), images_per_s=timing.images_per_s,
        threshold=ctx.threshold, device_info=dict(facts) if isinstance(facts, dict) and facts else None,
        note=note)


def run_bench(models: Sequence[str | os.PathLike], data: str, *, out: str | os.PathLike | None = None,
              progress: Progress | None = None, warn: Callable[[str], None] | None = None,
              command: str | None = None, options: BenchOptions | None = None, **kw) -> Report:
    """Benchmark ``models`` on ``data`` (see the module doc). Returns the report; writes it to ``out``.

    ``options`` (:class:`BenchOptions`) holds what to measure; keywords named like its fields (``runs=1``,
    ``split="all"``, ``devices=("cpu",)``, ...) override it. = ``Bench(options, progress, warn).run(...)``."""
    opts = (options or BenchOptions()).with_(**kw)
    return Bench(opts, progress, warn).run(models, data, out=out, command=command)


def disc_flags(records, pipeline_json) -> dict:
    """``{"disc_flags": {...}}`` when the reference crops the optic-nerve head: how many of the benchmark's
    photos got a low-confidence / fallback disc crop (issue 12/20); ``{}`` otherwise."""
    pipe = Pipeline.from_json(pipeline_json)
    if not pipe.uses_onh:
        return {}
    f = count_disc_flags(records, pipe)
    return {"disc_flags": {k: f[k] for k in ("n", "flagged", "fallback", "reasons", "flagged_keys")}}


def write_outputs(report: Report, curves, spec: TaskSpec, out_dir: Path, command: str | None = None) -> dict:
    """Write every report file into a staging folder beside ``out_dir`` and publish them together
    (``edgeretina.io.staged_dir``): a failed or killed bench leaves the previous report as it was."""
    final = Path(out_dir)
    ours = {"report.json", "report.md", "report.csv", "labels.csv", "roc.png", "ballchart.png", "shift.csv",
            "shift.png", "stability.csv"}  # an earlier report's files do not survive next to this one (other files do)
    with staged_dir(final, keep=lambda p: p.name not in ours, what="edgeretina bench") as stage:
        paths = _write_report_files(report, curves, spec, stage, command)
    return {k: final / Path(p).name for k, p in paths.items()}


def _write_report_files(report: Report, curves, spec: TaskSpec, out_dir: Path, command: str | None) -> dict:
    paths = report.save(out_dir, command=command)
    roc_curves = []
    for name, yb, s in curves:
        if spec.kind is TaskKind.MULTILABEL:  # micro-average over labels
            roc_curves.append((f"{name} (micro)", np.asarray(yb).reshape(-1), np.asarray(s).reshape(-1)))
        elif np.ndim(s) == 1:
            roc_curves.append((name, yb, s))
    what = {"binary": f"positive = {spec.labels[spec.positive_index or 1]}" if spec.kind is TaskKind.BINARY
            else "", "multiclass": "referable DR (grade ≥ 2)",
            "multilabel": "all labels, micro-average"}[spec.kind.value]
    n = report.dataset.get("n_images")
    paths["roc"] = plot_roc(out_dir / "roc.png", roc_curves, title=f"ROC: {report.task} ({what}), {n} images")
    h = report.headline()
    paths["ballchart"] = plots.plot_ballchart(report.variants, out_dir / "ballchart.png",
                                              title=f"{report.task}: throughput vs {h.label}", metric=h.key,
                                              label=h.label, density=h.density)
    if report.shifts:
        paths["shift"] = plots.plot_shifts(report.shifts, out_dir / "shift.png",
                                           title=f"{report.task}: AUROC under camera shifts, {n} images")
    return paths
