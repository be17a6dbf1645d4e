"""``edgeretina demo``: the whole job end to end on the embedded synthetic fundus set, in a few minutes on a CPU.

1. open the synthetic glaucoma set (``synthetic:n=...,size=...``) and split it 70/10/20 (stratified);
2. train a small MobileNetV2 from scratch (``weights=None``; BatchNorm momentum lowered so that its moving
   statistics follow the short training — see ``docs/demo.md``) and save a run dir (model.keras + config.json);
3. export the float32, fp16, dynamic-range and full-integer int8 TFLite variants (``edgeretina.converters``);
4. run every variant on the held-out test images with ai-edge-litert (``edgeretina.benchmarks.run_bench``)
   and tabulate size, AUROC, ΔAUROC vs float32 and batch-1 latency.

Everything is a library call; the CLI (``edgeretina/cli/demo.py``) only prints. Output layout under ``out``::

    demo.json  demo.md            the variant table (this module)
    model/     model.keras  config.json  history.csv    the trained model (run-dir contract)
    export/    model_float32.tflite ... manifest.json     edgeretina.converters.export_model
    bench/     report.json/md/csv  roc.png  ballchart.png  edgeretina.benchmarks.run_bench
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np

from edgeretina.benchmarks.harness import run_bench
from edgeretina.converters import export_model
from edgeretina.data import load_arrays, open_dataset
from edgeretina.errors import EdgeRetinaError
from edgeretina.io import ensure_writable_dir, write_json_atomic, write_text_atomic
from edgeretina.metrics import auroc, youden_threshold
from edgeretina.models import build_model
from edgeretina.preprocess import Pipeline
from edgeretina.run import RunConfig
from edgeretina.train.helpers import history_csv, save_clean_model

Progress = Callable[[str], None]

DEMO_SCHEMA = "edgeretina.demo/1"
VARIANTS = ("float32", "fp16", "dynamic", "int8")


@dataclass(frozen=True)
class DemoSettings:
    """Everything that decides the demo's numbers (recorded in demo.json)."""

    n_images: int = 1600            # synthetic images in all (split 70/10/20)
    image_size: int = 192           # generated photographs (square, px)
    input_size: int = 112           # model input: an optic-nerve-head crop resized to this size
    onh_crop: bool = True           # crop 2 expected disc diameters around the detected disc (preprocess.onh_crop)
    alpha: float = 0.35             # MobileNetV2 width multiplier
    epochs: int = 6
    batch_size: int = 32
    learning_rate: float = 3e-3     # Adam, cosine-decayed to 0 over the run
    bn_momentum: float = 0.9        # Keras' default 0.999 leaves from-scratch BN stats near their init
    split: str = "70/10/20"
    seed: int = 0
    threads: int = 1                # LiteRT threads for the latency column
    runs: int = 10                  # latency: passes over `timing_images` images after `warmup` calls
    warmup: int = 3
    timing_images: int = 20
    n_boot: int = 1000              # bootstrap resamples for the AUROC CI in the bench report
    variants: tuple[str, ...] = VARIANTS

    @property
    def dataset(self) -> str:
        return f"synthetic:n={self.n_images},size={self.image_size},seed={self.seed}"

    def pipeline(self):
        return Pipeline.default(self.input_size, "tf", onh=self.onh_crop)


FULL = DemoSettings()
QUICK = replace(FULL, n_images=800, input_size=96, epochs=6, timing_images=10, runs=5, n_boot=200)


@dataclass(frozen=True)
class DemoRow:
    variant: str
    file: str
    size_mb: float
    auroc: float | None
    delta_auroc: float | None        # vs the float32 .tflite
    latency_ms: float | None         # batch 1, median
    latency_p90_ms: float | None
    flip_rate: float | None          # share of test decisions that differ from float32

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class DemoResult:
    rows: tuple[DemoRow, ...]
    out_dir: str
    settings: DemoSettings
    n_test: int
    train: dict[str, Any]            # epochs, val AUROC, threshold, seconds
    seconds: dict[str, float]        # per stage and "total"
    paths: dict[str, str] = field(default_factory=dict)

    @property
    def float_auroc(self) -> float | None:
        return next((r.auroc for r in self.rows if r.variant == "float32"), None)

    def to_dict(self) -> dict[str, Any]:
        d = {"schema": DEMO_SCHEMA, "rows": [r.to_dict() for r in self.rows], "out_dir": self.out_dir,
             "settings": asdict(self.settings), "dataset": self.settings.dataset, "n_test": self.n_test,
             "train": self.train, "seconds": self.seconds, "paths": self.paths}
        d["settings"]["variants"] = list(self.settings.variants)
        return d

    # ------------------------------------------------------------------------------------------ tables
    HEADERS = ("Variant", "Size (MB)", "AUROC", "ΔAUROC vs float", "Latency (ms, batch 1)")

    def table_rows(self) -> list[list[str]]:
        return [[r.variant, _f(r.size_mb, 3), _f(r.auroc, 4), _f(r.delta_auroc, 4, sign=True),
                 _f(r.latency_ms, 2)] for r in self.rows]

    def to_terminal(self) -> str:
        rows = self.table_rows()
        widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(self.HEADERS)]
        fmt = lambda cells: "  ".join(c.ljust(w) if i == 0 else c.rjust(w)  # noqa: E731
                                      for i, (c, w) in enumerate(zip(cells, widths)))
        return "\n".join([fmt(self.HEADERS), "  ".join("-" * w for w in widths)] + [fmt(r) for r in rows])

    def to_markdown(self, command: str | None = None) -> str:
        s = self.settings
        lines = [
            "# edgeretina demo: synthetic glaucoma screening, edge variants",
            "",
            f"- Data: `{s.dataset}` (procedural fundus images), split {s.split} → {self.n_test} test images; "
            f"input: {'optic-nerve-head crop' if s.onh_crop else 'whole field of view'} at {s.input_size} px",
            f"- Model: MobileNetV2 α={s.alpha} at {s.input_size} px, weights=None, {s.epochs} epochs "
            f"(Adam {s.learning_rate:g}, cosine decay, BN momentum {s.bn_momentum}); "
            f"val AUROC {_f(self.train.get('val_auroc'), 4)}",
            f"- Every variant runs in ai-edge-litert on the test images; ΔAUROC is against the float32 .tflite; "
            f"latency is the median batch-1 invoke time ({s.threads} thread(s), {s.warmup} warm-up calls, "
            f"{s.runs} passes over {s.timing_images} images)",
            f"- Wall time: {self.seconds.get('total', 0):.0f} s (CPU time {self.seconds.get('cpu_total', 0):.0f} s)",
        ]
        if command:
            lines.append(f"- Command: `{command}`")
        lines += ["", "| " + " | ".join(self.HEADERS) + " |",
                  "|" + "|".join(["---"] + ["---:"] * (len(self.HEADERS) - 1)) + "|"]
        lines += ["| " + " | ".join(r) + " |" for r in self.table_rows()]
        lines += ["", "Full benchmark report (CI, DeLong p, sensitivity/specificity, flips): `bench/report.md`.", ""]
        return "\n".join(lines)

    def save(self, out_dir: str | Path | None = None, command: str | None = None) -> dict[str, Path]:
        d = ensure_writable_dir(out_dir or self.out_dir)
        return {"json": write_json_atomic(d / "demo.json", self.to_dict()),
                "md": write_text_atomic(d / "demo.md", self.to_markdown(command))}


def _f(v, digits: int, sign: bool = False) -> str:
    if v is None:
        return "–"
    return f"{v:+.{digits}f}" if sign else f"{v:.{digits}f}"


# ---------------------------------------------------------------------------------------------- steps


def _train(settings: DemoSettings, parts, spec, pipeline, progress: Progress):
    """Build and fit the model; returns (model, history dict, val AUROC, threshold)."""
    from edgeretina._keras import keras

    s = settings
    keras.utils.set_random_seed(s.seed)
    X, y = load_arrays(parts["train"], pipeline)
    Xv, yv = load_arrays(parts["val"], pipeline)
    model = build_model("mobilenetv2", spec, input_size=s.input_size, weights=None, alpha=s.alpha)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = s.bn_momentum
    steps = int(np.ceil(len(X) / s.batch_size)) * s.epochs
    lr = keras.optimizers.schedules.CosineDecay(s.learning_rate, decay_steps=steps)
    model.compile(optimizer=keras.optimizers.Adam(lr), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    history: list[dict[str, Any]] = []  # rows of history.csv, the schema edgeretina.train writes
    last: dict[str, Any] = {}

    class _Log(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.t0 = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            logs = logs or {}
            probs = self.model.predict(Xv, batch_size=64, verbose=0)
            pv = probs[:, spec.positive_index]
            val_loss = float(-np.mean(np.log(np.clip(probs[np.arange(len(yv)), yv], 1e-7, 1.0))))
            last.update(pv=pv)
            row = {"phase": "scratch", "epoch": epoch + 1, "loss": float(logs.get("loss", float("nan"))),
                   "val_loss": val_loss, "val_score": auroc(yv, pv),
                   "lr": float(lr(self.model.optimizer.iterations)), "seconds": round(time.perf_counter() - self.t0, 2),
                   "accuracy": float(logs.get("accuracy", float("nan")))}
            history.append(row)
            progress(f"train: epoch {epoch + 1}/{s.epochs}  loss {row['loss']:.3f}  acc {row['accuracy']:.3f}  "
                     f"val loss {val_loss:.3f}  val AUROC {row['val_score']:.3f}  ({row['seconds']:.0f} s)")

    model.fit(X, y, batch_size=s.batch_size, epochs=s.epochs, shuffle=True, verbose=0, callbacks=[_Log()])
    pv = last["pv"]
    return model, history, auroc(yv, pv), youden_threshold(yv, pv)


def run_demo(out: str | Path = "demo_out", quick: bool = False, progress: Progress | None = None,
             settings: DemoSettings | None = None, command: str | None = None) -> DemoResult:
    """Train → export → benchmark on synthetic fundus images; write demo.json/demo.md under ``out``."""
    say = progress or (lambda msg: None)
    s = settings or (QUICK if quick else FULL)
    t_start, c_start = time.perf_counter(), time.process_time()
    out_dir = ensure_writable_dir(out)  # fail fast: before any work
    run_dir = ensure_writable_dir(out_dir / "model")
    seconds: dict[str, float] = {}

    # 1. data
    t = time.perf_counter()

    say(f"data: generating {s.n_images} synthetic fundus images at {s.image_size} px ({s.dataset})")
    ds = open_dataset(s.dataset, "glaucoma")
    parts = ds.split(s.split, seed=s.seed)
    pipeline = s.pipeline()
    counts = {k: len(v) for k, v in parts.items()}
    say(f"data: split {s.split} → train {counts['train']}, val {counts['val']}, test {counts['test']}; "
        f"preprocessing: {pipeline.describe()}")
    seconds["data"] = round(time.perf_counter() - t, 2)

    # 2. train
    t = time.perf_counter()
    say(f"train: MobileNetV2 alpha {s.alpha}, {s.input_size} px, weights=None, {s.epochs} epochs")
    model, history, val_auroc, threshold = _train(s, parts, ds.spec, pipeline, say)

    info = _plain(getattr(model, "edgeretina", {}))  # Keras wraps attributes in trackable containers
    cfg = RunConfig(task=ds.spec.task.value, kind=ds.spec.kind.value, labels=ds.spec.labels,
                    preprocessing=pipeline.to_json(), arch="mobilenetv2", input_size=s.input_size, weights=None,
                    head=info.get("head", {"type": "gap"}), positive_index=ds.spec.positive_index,
                    threshold=threshold,
                    dataset={"path": s.dataset, "format": "synthetic", "split": {"scheme": s.split, "seed": s.seed}},
                    extra={"arch_options": {"alpha": s.alpha}, "bn_momentum": s.bn_momentum, "demo": True})

    save_clean_model(model, run_dir / "model.keras")
    cfg.save(run_dir)
    write_text_atomic(run_dir / "history.csv", history_csv(history))
    seconds["train"] = round(time.perf_counter() - t, 2)
    say(f"train: done, val AUROC {val_auroc:.3f}, threshold {threshold:.3f} → {run_dir}")

    # 3. export
    t = time.perf_counter()

    say(f"export: {', '.join(s.variants)} (int8 calibrated on training images)")
    export = export_model(run_dir, list(s.variants), out_dir / "export", seed=s.seed,
                          on_result=lambda r: say(f"export: {r.variant} {r.size_bytes / 1e6:.2f} MB "
                                                  f"in {r.seconds:.1f} s"))
    export.save()
    seconds["export"] = round(time.perf_counter() - t, 2)

    # 4. benchmark every variant in LiteRT on the held-out test split
    t = time.perf_counter()

    files = [r.path for r in export.results]
    report = run_bench(files, s.dataset, split="test", devices=("cpu",), threads=s.threads, runs=s.runs,
                       warmup=s.warmup, timing_images=s.timing_images, out=out_dir / "bench", n_boot=s.n_boot,
                       seed=s.seed, progress=lambda done, total, what: say(f"bench: [{done}/{total}] {what}"),
                       warn=lambda msg: say(f"bench: warning: {msg}"), command=command)
    seconds["bench"] = round(time.perf_counter() - t, 2)

    by_file = {str(Path(v.file)): v for v in report.variants}
    rows = []
    for r in export.results:
        v = by_file.get(str(Path(r.path)))
        if v is None:
            raise EdgeRetinaError(f"{r.path}: the benchmark produced no result for this variant")
        rows.append(DemoRow(variant=r.variant, file=str(Path(r.path).relative_to(out_dir)),
                            size_mb=round(r.size_bytes / 1e6, 4), auroc=v.auroc, delta_auroc=v.delta_auroc,
                            latency_ms=v.latency_ms.p50, latency_p90_ms=v.latency_ms.p90, flip_rate=v.flip_rate))
    seconds["total"] = round(time.perf_counter() - t_start, 2)
    seconds["cpu_total"] = round(time.process_time() - c_start, 2)  # this process's CPU time (all threads)
    result = DemoResult(
        rows=tuple(rows), out_dir=str(out_dir), settings=s, n_test=int(report.dataset.get("n_images", 0)),
        train={"epochs": s.epochs, "val_auroc": val_auroc, "threshold": threshold,
               "final_loss": history[-1]["loss"] if history else None,
               "history": [{k: r[k] for k in ("epoch", "loss", "val_loss", "val_score")} for r in history]},
        seconds=seconds,
        paths={"run": "model", "export": "export", "bench": "bench", "json": "demo.json", "md": "demo.md"},
    )
    result.save(out_dir, command=command)
    return result


def _plain(o):
    if isinstance(o, dict) or hasattr(o, "items"):
        return {str(k): _plain(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)) or (hasattr(o, "__iter__") and not isinstance(o, (str, bytes))):
        return [_plain(v) for v in o]
    return o


