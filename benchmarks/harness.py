"""``run_bench``: every model × every device over the same images, compared with one reference.

1. Open every model (``.tflite`` with embedded edgeretina metadata, ``.keras``/run dir with config.json);
   refuse any without it. All must serve the same task and labels.
2. Pick the reference: ``reference`` if given, else the first Keras model, else the float32 .tflite, else
   the first model.
3. Load the images once per distinct preprocessing (read from each model's own metadata) from the same
   split the model was trained with (``config.dataset.split``) or all images.
4. For each (model, device): make the device's runner, score every image, time batch-1 inference on the
   first ``timing_images`` images (``warmup`` calls, then ``runs`` passes), and compare with the reference.
5. Robustness stages (``options``: :class:`~edgeretina.benchmarks.robustness.BenchOptions`): the
   decision-stability floor under benign re-acquisition (on by default) and the camera-shift stress test
   (``shifts``), every model re-scored on the host on perturbed copies of the same photos.
6. Build a :class:`~edgeretina.benchmarks.report.Report`; with ``out`` write report.json/md/csv, roc.png
   and ballchart.png (+ shift.csv and shift.png, stability.csv).
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import platform
from dataclasses import replace
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from edgeretina import compare
from edgeretina.errors import DataError, DeviceError, EdgeRetinaError, ModelError
from edgeretina.tasks import TaskKind, TaskSpec

from . import plots
from .devices import DEVICES, Device, get_device
from .modelfile import ModelFile, expand_models, open_model
from .report import Latency, Report, ShiftResult, Stability, VariantReport
from .robustness import BenchOptions
from .scoring import binary_truth, decision_change, default_threshold, evaluate, screening_scores

Progress = Callable[[int, int, str], None]  # (done, total, what is running now)

SPLITS = ("test", "val", "train", "all")


def _order_key(m: ModelFile) -> tuple:
    try:
        from edgeretina.converters.variants import Variant

        order = [v.value for v in Variant]
    except ImportError:  # exporter not installed: keep a sensible order anyway
        order = ["float32", "fp16", "dynamic", "int8", "pruned", "pruned-int8", "qat", "pqat"]
    if m.format == "keras":
        return (0, 0, str(m.path))
    base = m.name.split("@")[0]
    return (1, order.index(base) if base in order else len(order), m.name, str(m.path))


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


def _split_args(cfg) -> dict:
    """The split the model was trained with (``config.dataset.split``: scheme and seed)."""
    split = (cfg.dataset or {}).get("split") or {}
    if not isinstance(split, dict):
        return {}
    out = {k: split[k] for k in ("scheme", "seed") if split.get(k) is not None}
    if out.get("scheme") == "default":  # the dataset's own default split
        del out["scheme"]
    return out


def load_records(data: str, spec: TaskSpec, ref: ModelFile, split: str = "test"):
    """Records of ``split`` of the dataset at ``data``, split as the reference model's training run did."""
    from edgeretina.data import open_dataset

    if split not in SPLITS:
        raise DataError(f"unknown split '{split}' (choose from: {', '.join(SPLITS)})")
    ds = open_dataset(data, spec.task.value)
    if split == "all":
        records = list(ds.records)
    else:
        parts = ds.split(**_split_args(ref.config))
        records = list(parts.get(split) or [])
    if not records:
        raise DataError(f"{data}: split '{split}' has no images (use --split all to evaluate every image)")
    return ds, records


def _labels_array(spec: TaskSpec, records) -> np.ndarray:
    ys = [r.y for r in records]
    if spec.kind is TaskKind.MULTILABEL:
        return np.asarray(ys, dtype=np.float64).reshape(len(ys), -1)
    return np.asarray(ys, dtype=np.int64).reshape(-1)


def load_images(records, pipeline_json) -> np.ndarray:
    from edgeretina.data import load_arrays
    from edgeretina.preprocess import Pipeline

    pipeline = Pipeline.from_json(pipeline_json)
    x, _ = load_arrays(records, pipeline)
    return np.asarray(x, dtype=np.float32)


def machine_info() -> dict:
    from importlib import metadata

    def ver(name):
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return None

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"platform": platform.platform(), "cpu": cpu, "cpu_count": os.cpu_count(),
            "python": platform.python_version(), "numpy": ver("numpy"), "tensorflow": ver("tensorflow"),
            "tf_keras": ver("tf-keras"), "ai_edge_litert": ver("ai-edge-litert")}


def _class_counts(spec: TaskSpec, y: np.ndarray) -> dict[str, int]:
    if spec.kind is TaskKind.MULTILABEL:
        return {lb: int(y[:, j].sum()) for j, lb in enumerate(spec.labels[: y.shape[1]])}
    return {lb: int((y == j).sum()) for j, lb in enumerate(spec.labels)}


def run_bench(models: Sequence[str | os.PathLike], data: str, *, task: str | None = None,
              split: str = "test", devices: Sequence[str | Device] = ("cpu",), threads: int | None = None,
              runs: int = 10, warmup: int = 3, timing_images: int = 20, reference=None,
              out: str | os.PathLike | None = None, n_boot: int = 1000, seed: int = 0,
              max_images: int | None = None, progress: Progress | None = None,
              warn: Callable[[str], None] | None = None, command: str | None = None,
              options: BenchOptions | None = None) -> Report:
    """Benchmark ``models`` on ``data`` (see the module doc). Returns the report; writes it to ``out``."""
    options = options or BenchOptions()
    if runs < 1 or warmup < 0 or timing_images < 1:
        raise EdgeRetinaError("--runs and --timing-images must be >= 1 and --warmup >= 0")
    warn = warn or (lambda msg: None)
    threads = int(threads) if threads else (os.cpu_count() or 1)
    specs = []
    for d in devices or ("cpu",):
        s = get_device(d)
        if s not in specs:
            specs.append(s)
    opened, ref = load_models(models, reference)
    spec = ref.config.spec
    if task is not None and str(task) != spec.task.value:
        raise ModelError(f"{ref.path}: the model was trained for task '{spec.task.value}', not '{task}'")
    out_dir = None
    if out is not None:
        from edgeretina.io import ensure_writable_dir

        out_dir = ensure_writable_dir(out)

    # Devices available here; an unavailable one is reported and skipped, the others still run.
    skipped: list[dict[str, str]] = []
    usable = []
    errors = []
    for s in specs:
        try:
            s.check()
            usable.append(s)
        except DeviceError as e:
            errors.append(e)
            skipped.append({"file": "*", "device": s.device.value, "reason": str(e)})
    if not usable:
        raise errors[0]
    for e in errors:
        warn(str(e))

    jobs = [(m, s) for m in opened for s in usable if s.runs(m.format)]
    for m in opened:
        for s in usable:
            if not s.runs(m.format):
                skipped.append({"file": str(m.path), "device": s.device.value, "reason": s.skip_reason(m.format)})
    if not jobs:
        formats = sorted({m.format for m in opened})
        raise DeviceError(f"none of the models ({', '.join('.' + f for f in formats)}) runs on "
                          f"{', '.join(s.device.value for s in usable)}: "
                          + "; ".join(s.skip_reason(f) for s in usable for f in formats[:1]))
    total = len(jobs) + 1 + options.passes
    report_progress = progress or (lambda done, total, what: None)

    # Images: once per distinct preprocessing.
    report_progress(0, total, f"loading images from {data}")
    ds, records = load_records(data, spec, ref, split)
    if max_images is not None and len(records) > max_images:
        rng = np.random.default_rng(seed)
        keep = np.sort(rng.choice(len(records), size=max_images, replace=False))
        records = [records[i] for i in keep]
    y = _labels_array(spec, records)
    images: dict[str, np.ndarray] = {}

    def x_for(m: ModelFile) -> np.ndarray:
        key = json.dumps(m.config.preprocessing, sort_keys=True)
        if key not in images:
            images[key] = load_images(records, m.config.preprocessing)
        return images[key]

    threshold = default_threshold(spec, ref.config.threshold)

    # Reference probabilities, computed on the host once.
    host_probs: dict[Path, np.ndarray] = {}
    kept: dict[Path, object] = {}  # the reference's host runner, reused when it is also a job

    def host(m: ModelFile, keep: bool = False) -> np.ndarray:
        if m.path not in host_probs:
            r = DEVICES[Device.CPU].load(m, threads)
            host_probs[m.path] = r.predict(x_for(m))
            if keep:
                kept[m.path] = r
        return host_probs[m.path]

    def same_as_host(m: ModelFile, s) -> bool:  # this job's runner is the host runner
        return s.device is Device.CPU or (m.format == "keras" and s.device is Device.KERAS_CPU)

    ref_probs = host(ref, keep=any(m is ref and same_as_host(m, s) for m, s in jobs))
    if len(ref_probs) != len(y):
        raise ModelError(f"{ref.path}: scored {len(ref_probs)} images but {len(y)} were given")

    rows: list[VariantReport] = []
    curves: dict[Path, tuple[str, np.ndarray, np.ndarray]] = {}  # one ROC per model file
    stats_cache: dict[Path, object] = {}
    for done, (m, s) in enumerate(jobs, start=1):
        report_progress(done, total, f"{m.name} on {s.device.value}")
        reuse = same_as_host(m, s) and m.path in kept
        try:
            runner = kept.pop(m.path) if reuse else s.load(m, threads)
        except DeviceError as e:
            warn(str(e))
            skipped.append({"file": str(m.path), "device": s.device.value, "reason": str(e)})
            continue
        x = x_for(m)
        note = ""
        if reuse:
            probs = host_probs[m.path]
        elif getattr(runner, "supports_predict", True):
            probs = np.asarray(runner.predict(x))
            if s.device in (Device.CPU, Device.KERAS_CPU) and m.path not in host_probs:
                host_probs[m.path] = probs
        else:
            probs = host(m)
            note = "scores from the same file on the host (LiteRT); latency from the device"
        timing = runner.time(x[:timing_images], runs=runs, warmup=warmup)
        facts = getattr(runner, "facts", None)
        device_info = dict(facts) if isinstance(facts, dict) and facts else None
        if m.path not in stats_cache:
            stats_cache[m.path] = m.stats(keras_model=getattr(runner, "model", None)) if m.format == "keras" \
                else m.stats()
        st = stats_cache[m.path]
        sc = evaluate(spec, y, probs, ref_probs, ref.config.threshold, n_boot=n_boot, seed=seed)
        device_name = getattr(runner, "device", s.device.value)
        rows.append(VariantReport(
            name=m.name, file=str(m.path), device=str(device_name),
            threads=getattr(runner, "threads", threads), format=m.format, is_reference=m is ref,
            depth=st.depth, params=st.params, nonzero_params=st.nonzero_params, size_bytes=st.size_bytes,
            gzip_bytes=st.gzip_bytes, auroc=sc.auroc, auroc_ci95=sc.auroc_ci95, delta_auroc=sc.delta_auroc,
            auroc_retention=sc.auroc_retention, delong_p=sc.delong_p,
            auroc_density=compare.auroc_density(sc.auroc, st.params / 1e6),
            auroc_density_nonzero=compare.auroc_density(sc.auroc, st.nonzero_params / 1e6),
            auroc_per_mb=compare.auroc_density(sc.auroc, st.size_bytes / 1e6),
            sensitivity=sc.sensitivity, specificity=sc.specificity, flip_rate=sc.flip_rate,
            latency_ms=Latency(timing.p50, timing.p90, timing.mean, timing.n),
            images_per_s=timing.images_per_s, threshold=threshold, kappa=sc.kappa,
            grade_flip_rate=sc.grade_flip_rate, per_label=sc.per_label, device_info=device_info, note=note,
            delta_auroc_ci95=sc.delta_auroc_ci95, logit_shift=sc.logit_shift, logit_noise_sd=sc.logit_noise_sd,
            near_threshold=sc.near_threshold,
        ))
        if m.path not in curves:
            curves[m.path] = (m.name, binary_truth(spec, y), screening_scores(spec, probs))
        del runner

    def stage_progress(what, _n=[len(jobs)]):
        _n[0] += 1
        report_progress(_n[0], total, what)

    base = {m.path: host(m) for m in opened} if options.passes else {}
    shift_rows, stability = robustness_stages(options, opened, ref, records, spec, y, ref.config.threshold, base,
                                              threads, seed, stage_progress)
    if stability is not None:
        rows = [replace(r, flip_floor_ratio=stability.ratio(r.flip_rate)) for r in rows]
    report_progress(total, total, "done")

    from edgeretina import __version__

    report = Report(
        task=spec.task.value, kind=spec.kind.value,
        dataset={"path": str(data), "format": getattr(ds, "format", None), "split": split,
                 "n_images": int(len(y)), "classes": _class_counts(spec, y),
                 **disc_flags(records, ref.config.preprocessing)},
        machine=machine_info(), reference=str(ref.path), variants=tuple(rows),
        settings={"runs": runs, "warmup": warmup, "timing_images": min(timing_images, len(y)),
                  "threads": threads, "n_boot": n_boot, "seed": seed, "threshold": threshold,
                  "devices": [s.device.value for s in specs], "max_images": max_images,
                  "shift": [s.value for s in options.shifts], "stability": options.stability},
        skipped=tuple(skipped), created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        edgeretina_version=__version__, shifts=shift_rows, stability=stability,
    )
    if out_dir is not None:
        write_outputs(report, list(curves.values()), spec, out_dir, command=command)
    return report


def disc_flags(records, pipeline_json) -> dict:
    """``{"disc_flags": {...}}`` when the reference crops the optic-nerve head: how many of the benchmark's
    photos got a low-confidence / fallback disc crop (issue 12/20); ``{}`` otherwise."""
    from edgeretina.preprocess import Pipeline, count_disc_flags

    pipe = Pipeline.from_json(pipeline_json)
    if not pipe.uses_onh:
        return {}
    f = count_disc_flags(records, pipe)
    return {"disc_flags": {k: f[k] for k in ("n", "flagged", "fallback", "reasons", "flagged_keys")}}


def robustness_stages(options: BenchOptions, models: Sequence[ModelFile], ref: ModelFile, records, spec: TaskSpec,
                      y: np.ndarray, threshold, base: dict, threads: int, seed: int,
                      progress: Callable[[str], None]) -> tuple[tuple[ShiftResult, ...], Stability | None]:
    """The stability floor and the camera-shift stress test (``benchmarks/robustness.py``); ``base`` holds
    every model's host probabilities on the unperturbed images."""
    if not options.shifts and not options.stability:
        return (), None
    from .robustness import RawImages, Rescorer, shift_stage, stability_stage

    rescorer = Rescorer(models, RawImages(records, options.raw_cache_mb << 20), threads, seed)
    try:
        stability = None
        if options.stability:
            flips = {m.path: decision_change(spec, base[ref.path], base[m.path], threshold).flip_rate
                     for m in models}
            stability = stability_stage(rescorer, options.benign, spec, threshold, ref, base, flips, progress)
        shift_rows = shift_stage(rescorer, options.shifts, spec, y, threshold, ref, base, progress) \
            if options.shifts else ()
    finally:
        rescorer.close()
    return shift_rows, stability


def write_outputs(report: Report, curves, spec: TaskSpec, out_dir: Path, command: str | None = None) -> dict:
    """Write every report file into a staging folder beside ``out_dir`` and publish them together
    (``edgeretina.io.staged_dir``): a failed or killed bench leaves the previous report as it was."""
    from edgeretina.io import staged_dir

    final = Path(out_dir)
    ours = {"report.json", "report.md", "report.csv", "roc.png", "ballchart.png", "shift.csv", "shift.png",
            "stability.csv"}  # an earlier report's files do not survive next to this one (other files do)
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
    paths["roc"] = plots.plot_roc(roc_curves, out_dir / "roc.png",
                                  title=f"ROC: {report.task} ({what}), {n} images")
    paths["ballchart"] = plots.plot_ballchart(report.variants, out_dir / "ballchart.png",
                                              title=f"{report.task}: throughput vs AUROC")
    if report.shifts:
        paths["shift"] = plots.plot_shifts(report.shifts, out_dir / "shift.png",
                                           title=f"{report.task}: AUROC under camera shifts, {n} images")
    return paths
