"""Table V across input sizes (issue 15, system 4): the five-CNN benchmark's table and ball chart for glaucoma on
ODIR, across input sizes × {whole fundus, optic-nerve-head crop}, the float32 and int8 file of each.

    python -m edgeretina.benchmarks.table_v [--sizes 96,128,160,192,224] [--views full,onh]
                                            [--arch mobilenetv2] [--work runs/table_v] [--docs docs/benchmarks]

Per config (arch × view × size) the shipped glaucoma recipe (docs/benchmarks/glaucoma_recipe.md), each step the
public CLI as a subprocess, skipped when its output exists (an interrupted run resumes):

1. ``edgeretina train --head-fit linear`` — frozen ImageNet backbone, L2 logistic-regression head, penalty by
   inner patient-grouped CV on the training split; no fine-tune. ``--crop onh`` for the ONH view.
2. ``edgeretina export --float32 --int8 --head-split 4`` (``EXPORT_ARGS``: the recipe's int8 when the page was
   published; the recipe has since added GPTQ weights and ai-edge-quantizer ranges, ``glaucoma_recipe.EXPORT_ARGS``).
3. ``edgeretina bench`` of the two files, reference = the float32 file: int8's ΔAUROC (DeLong) and decision
   flips against its own float model, on the glaucoma test split.

Then one ``edgeretina bench`` of every exported file together (one process, the same test images, LiteRT CPU,
batch 1): AUROC with its bootstrap CI, depth, parameters, size, AUROC density and p50 latency of the table.
The test split is scored once per config and nothing is chosen on it: the table is a report, not a selection;
the row it marks (the fastest whose AUROC is within ``TOLERANCE`` of the best) is a reading of it.

``--arch vgg16,resnet50,inceptionv3,xception,mobilenet`` runs the same table across backbones (the study's own
axis; ``--sizes 224`` for its table) where Keras can get their ImageNet weights — offline only MobileNetV2's are
in ``../shared/weights``, and an arch without weights stops the command with a one-line error before any step.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import socket
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from edgeretina.enums import TextEnum
from edgeretina.env import machine_info, machine_line
from edgeretina.errors import EdgeRetinaError
from edgeretina.io import atomic_path, ensure_writable_dir, write_json_atomic, write_text_atomic
from edgeretina.models import build_model, get_backbone
from edgeretina.models.macs import count_macs
from edgeretina.paths import REPO_ROOT, keras_cache_dir, seed_keras_cache, shared_dir
from edgeretina.tasks import task_spec

from .devices import DEVICES, Device
from .harness import load_images, load_records
from .modelfile import open_model
from .real_data import cli_argv, load_line, record_load, run_step

# the published page's int8 (the recipe's EXPORT_ARGS when it was made; kept so the page regenerates as written)
EXPORT_ARGS = ("--head-split", "4")

SIZES = (96, 128, 160, 192, 224)
TOLERANCE = 0.01  # AUROC below the best within which the fastest row is marked (issue 15's target)
PRECISIONS = ("float32", "int8")
ROUNDS = 15  # interleaved timing rounds over every file (joint_timing)
TIMING_IMAGES = 20  # test images per file per round
COMMAND = "python -m edgeretina.benchmarks.table_v"


class View(TextEnum):
    FULL = "full"
    ONH = "onh"


VIEW_ARGS = {View.FULL: (), View.ONH: ("--crop", "onh")}
VIEW_TEXT = {View.FULL: "whole fundus", View.ONH: "ONH crop (~2 disc diameters)"}

#: the file name Keras caches each backbone's no-top ImageNet weights under (a prefix: some carry the size);
#: MobileNetV2 at any size falls back to the cached 224-px file (edgeretina.models.build)
WEIGHT_FILES = {"vgg16": "vgg16_weights_tf_dim_ordering_tf_kernels_notop", "resnet50": "resnet50_weights_tf_",
                "resnet101": "resnet101_weights_tf_", "resnet152": "resnet152_weights_tf_",
                "inceptionv3": "inception_v3_weights_tf_", "xception": "xception_weights_tf_",
                "densenet121": "densenet121_weights_tf_", "mobilenet": "mobilenet_1_0_",
                "mobilenetv2": "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_",
                "mobilenetv3small": "weights_mobilenet_v3_small", "mobilenetv3large": "weights_mobilenet_v3_large",
                "efficientnetb0": "efficientnetb0_notop"}


@dataclass(frozen=True)
class Config:
    arch: str
    view: View
    size: int

    @property
    def name(self) -> str:
        return f"{self.arch}_{self.view.value}{self.size}"

    def train_args(self, data: str) -> tuple[str, ...]:
        return ("--data", data, "--task", "glaucoma", "--arch", self.arch, "--weights", "imagenet",
                "--input-size", str(self.size), "--head-fit", "linear", *VIEW_ARGS[self.view], "--quiet")


@dataclass(frozen=True)
class Smoke:
    """Extra CLI options of a plumbing run (few images, few timing passes); never for publishing."""

    train: tuple[str, ...] = ()
    export: tuple[str, ...] = ()
    bench: tuple[str, ...] = ()


SMOKE = Smoke(train=("--max-train", "80", "--max-val", "30", "--max-test", "40", "--bootstrap", "50"),
              export=("--calib-n", "16", "--verify-n", "8"),
              bench=("--max-images", "40", "--runs", "2", "--timing-images", "5", "--n-boot", "50"))


def parse_list(text: str, what: str, cast=str) -> list:
    items = [t.strip() for t in str(text).split(",") if t.strip()]
    if not items:
        raise EdgeRetinaError(f"--{what}: empty list")
    try:
        return [cast(t) for t in items]
    except ValueError:
        raise EdgeRetinaError(f"--{what}: cannot read '{text}' as a comma-separated list") from None


def configs(archs, views, sizes) -> list[Config]:
    """Smallest sizes first (the cheapest rows land first), each size's views together."""
    return [Config(a, v, s) for a in archs for s in sorted(sizes) for v in views]


def _online(host: str = "storage.googleapis.com", timeout: float = 3.0) -> bool:
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def weights_problem(arch: str, online=None) -> str | None:
    """None when Keras can get ``arch``'s ImageNet weights (cached, in ``../shared/weights`` or downloadable);
    else the one-line reason."""
    bb = get_backbone(arch)
    prefix = WEIGHT_FILES.get(bb.name, bb.name)
    for d in (keras_cache_dir(), shared_dir() / "weights"):
        if d.is_dir() and any(f.name.startswith(prefix) for f in d.glob("*.h5")):
            return None
    if (online or _online)():
        return None
    return (f"--arch {bb.name}: no ImageNet weights offline ({prefix}*.h5 is in neither {keras_cache_dir()} nor "
            f"{shared_dir() / 'weights'}) and no internet to download them; only MobileNetV2's ship in "
            "../shared/weights — run this arch with internet access or put its no-top .h5 file there")


def bench_argv(models: list[str], reference: str, data: str, out: Path, threads: int, extra=()) -> list[str]:
    return cli_argv("bench", "--models", *models, "--reference", reference, "--data", data, "--task", "glaucoma",
                    "--device", "cpu", "--threads", str(threads), "--stability", "off", *extra, "--out", str(out))


def run_config(cfg: Config, data: str, work: Path, threads: int, smoke: Smoke | None = None) -> dict:
    """Train, export and bench one config (each step skipped when its output exists); its bench report."""
    s = smoke or Smoke()
    root = ensure_writable_dir(work / cfg.name)
    run, exp, rep = root / "run", root / "export", root / "bench"
    if not (run / "metrics.json").is_file():
        run_step(cli_argv("train", *cfg.train_args(data), *s.train, "--out", str(run), "--overwrite"),
                 root / "train.log")
    if not (exp / "manifest.json").is_file():
        run_step(cli_argv("export", str(run), "--float32", "--int8", *EXPORT_ARGS, "--borderline-band", "off",
                          *s.export, "--out", str(exp)), root / "export.log")
    if not (rep / "report.json").is_file():
        f32, i8 = files_of(exp)
        run_step(bench_argv([f32, i8], f32, data, rep, threads, s.bench), root / "bench.log")
        record_load(work, f"bench:{cfg.name}")
    return json.loads((rep / "report.json").read_text())


def files_of(exp: Path) -> tuple[str, str]:
    """The float32 and int8 files of an export folder (from its manifest)."""
    man = json.loads((exp / "manifest.json").read_text())
    by = {r.get("variant"): r.get("file") or r.get("path") for r in man.get("results", [])}
    out = []
    for p in PRECISIONS:
        f = by.get(p)
        path = (exp / Path(f).name) if f else next(iter(sorted(exp.glob(f"*{p}.tflite"))), None)
        if path is None or not Path(path).is_file():
            raise EdgeRetinaError(f"{exp}: no {p} .tflite in the export")
        out.append(str(path))
    return out[0], out[1]


def joint_timing(done: list[Config], work: Path, data: str, threads: int, rounds: int = ROUNDS) -> dict:
    """Every finished config's float32 and int8 files timed in this one process, interleaved: ``rounds``
    rounds, each timing every file in turn (LiteRT CPU, batch 1, ``TIMING_IMAGES`` test images after a
    warm-up), so load from other jobs lands on all files alike. p50 = the lowest of the rounds' p50s (the
    least-disturbed round: on a shared machine other jobs only ever add time), their median kept beside it.
    Cached in ``<work>/timing_<configs>.json`` (named by the configs it holds)."""
    out = work / ("timing_" + "-".join(c.name for c in done) + ".json")
    if out.is_file():
        return json.loads(out.read_text())
    files = [f for c in done for f in files_of(work / c.name / "export")]
    models = [open_model(f) for f in files]
    _, records = load_records(data, task_spec("glaucoma"), models[0], "test")
    records, xs = records[:TIMING_IMAGES], {}
    runners = [DEVICES[Device.CPU].load(m, threads) for m in models]
    for m in models:
        key = json.dumps(m.config.preprocessing, sort_keys=True)
        if key not in xs:
            xs[key] = load_images(records, m.config.preprocessing)
    p50s: dict[str, list[float]] = {f: [] for f in files}
    for r in range(rounds):
        print(f"timing round {r + 1}/{rounds} ({len(files)} files)", flush=True)
        for f, m, run in zip(files, models, runners):
            t = run.time(xs[json.dumps(m.config.preprocessing, sort_keys=True)], runs=1, warmup=5 if r == 0 else 1)
            p50s[f].append(round(t.p50, 4))
    res = {"threads": threads, "rounds": rounds, "images": len(records), "load_1min": round(os.getloadavg()[0], 1),
           "files": {str(Path(f).resolve()): {"p50_ms": float(np.min(v)), "median_round_p50_ms": float(np.median(v)),
                                              "round_p50s_ms": v}
                     for f, v in p50s.items()}}
    write_json_atomic(out, res)
    return res


@dataclass(frozen=True)
class Row:
    """One row of Table V: one file (a config's float32 or int8) on LiteRT CPU, batch 1."""

    config: str
    arch: str
    view: str
    size: int
    precision: str
    depth: int
    params: int
    size_mb: float
    auroc: float
    auroc_ci95: tuple[float, float] | None
    auroc_density: float
    latency_p50_ms: float
    images_per_s: float | None
    delta_auroc_vs_float32: float | None = None
    delong_p: float | None = None
    flip_rate: float | None = None
    fastest_within_tolerance: bool = False
    macs: int | None = None  # multiply-adds per image (the Keras graph; the same for float32 and int8)

    def to_dict(self) -> dict:
        return asdict(self)


def _by_file(report: dict) -> dict[str, dict]:
    return {str(Path(v["file"]).resolve()): v for v in report.get("variants", []) if v.get("device") == "cpu"}


def build_rows(done: list[Config], work: Path, per_config: dict[str, dict], timing: dict) -> list[Row]:
    """Table rows: AUROC with its CI, size facts and int8's retention against its own float32 file from the
    config's bench (whole test split); the latency from the joint, interleaved timing pass."""
    rows = []
    for c in done:
        own, macs = _by_file(per_config[c.name]), macs_of(c)
        for prec, f in zip(PRECISIONS, files_of(work / c.name / "export")):
            key = str(Path(f).resolve())
            v, t = own[key], (timing.get("files") or {}).get(key) or {}
            ci = v.get("auroc_ci95")
            retention = (None, None, None) if prec == "float32" else (v.get("delta_auroc"), v.get("delong_p"),
                                                                        v.get("flip_rate"))
            p50 = t.get("p50_ms")
            rows.append(Row(c.name, c.arch, c.view.value, c.size, prec, int(v["depth"]), int(v["params"]),
                            round(v["size_bytes"] / 1e6, 3), v["auroc"], tuple(ci) if ci else None,
                            v["auroc_density"], p50, None if not p50 else round(1000.0 / p50, 1), *retention,
                            macs=macs))
    return mark_fastest(rows)


def macs_of(c: Config) -> int:
    """Multiply-adds per image of the config's model (built without weights: the count is the graph's)."""
    return count_macs(build_model(c.arch, "glaucoma", c.size, None))


def mark_fastest(rows: list[Row], tolerance: float = TOLERANCE) -> list[Row]:
    """Mark the row with the lowest p50 latency among those whose AUROC is within ``tolerance`` of the best."""
    timed = [r for r in rows if r.latency_p50_ms is not None and r.auroc is not None]
    if not timed:
        return rows
    best = max(r.auroc for r in timed)
    pick = min((r for r in timed if r.auroc >= best - tolerance - 1e-12), key=lambda r: r.latency_p50_ms)
    return [Row(**{**r.to_dict(), "fastest_within_tolerance": r is pick}) for r in rows]


def _f(v, nd=3, sign=False) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    return f"{v:+.{nd}f}" if sign else f"{v:.{nd}f}"


HEADERS = ["config", "view", "input px", "precision", "depth (layers)", "params M", "MACs M", "size MB",
           "test AUROC (95 % CI)", "AUROC / M params", "p50 ms (batch 1)", "int8 ΔAUROC vs float32 (DeLong p)",
           "int8 flips %"]


def md_rows(rows: list[Row]) -> list[str]:
    out = ["| " + " | ".join(HEADERS) + " |", "|" + "---|" * len(HEADERS)]
    for r in rows:
        ci = f" ({r.auroc_ci95[0]:.3f}–{r.auroc_ci95[1]:.3f})" if r.auroc_ci95 else ""
        delta = "–" if r.delta_auroc_vs_float32 is None else (f"{r.delta_auroc_vs_float32:+.4f} "
                                                              f"({_f(r.delong_p, 2)})")
        cells = [r.config, VIEW_TEXT[View(r.view)], str(r.size), r.precision, str(r.depth), _f(r.params / 1e6, 2),
                 "–" if r.macs is None else f"{r.macs / 1e6:.0f}", _f(r.size_mb, 2), _f(r.auroc) + ci, _f(r.auroc_density), _f(r.latency_p50_ms, 2), delta,
                 "–" if r.flip_rate is None else f"{100 * r.flip_rate:.1f}"]
        if r.fastest_within_tolerance:
            cells = [f"**{c}**" for c in cells]
        out.append("| " + " | ".join(cells) + " |")
    return out


def plot_table_v(rows: list[Row], path: Path, title: str) -> Path:
    """The study's ball chart from the real rows: x = p50 latency (ms, batch 1, log), y = test AUROC, ball area
    ∝ file size, colour = view, filled = float32 / hatched-light = int8; the marked row ringed in red."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    fig, ax = plt.subplots(figsize=(8.4, 5.8), dpi=120)
    colours = {"full": "tab:blue", "onh": "tab:orange"}
    smax = max((r.size_mb for r in rows), default=1.0) or 1.0
    for r in rows:
        if r.latency_p50_ms is None:
            continue
        area = 40 + 700 * r.size_mb / smax
        if r.auroc_ci95:
            ax.plot([r.latency_p50_ms] * 2, r.auroc_ci95, color="grey", lw=0.8, alpha=0.6, zorder=0)
        ax.scatter(r.latency_p50_ms, r.auroc, s=area, color=colours.get(r.view, "grey"),
                   alpha=0.55 if r.precision == "float32" else 0.25, edgecolors="black",
                   linewidths=0.6, marker="o" if r.precision == "float32" else "s")
        left = r.view == "full"  # the two views of a size share a latency: full labelled left, ONH right
        ax.annotate(f"{r.size} {r.precision}\n{r.auroc_density:.3f}/M", (r.latency_p50_ms, r.auroc),
                    xytext=(-9 if left else 9, 0), textcoords="offset points", fontsize=6.5,
                    ha="right" if left else "left", va="center")
        if r.fastest_within_tolerance:
            ax.scatter(r.latency_p50_ms, r.auroc, s=area * 1.5, facecolors="none", edgecolors="red", linewidths=2)
    for v, c in colours.items():
        for prec, m, a in (("float32", "o", 0.55), ("int8", "s", 0.25)):
            ax.scatter([], [], s=60, color=c, alpha=a, marker=m, edgecolors="black",
                       label=f"{VIEW_TEXT[View(v)].split(' (')[0]}, {prec}")
    ax.scatter([], [], s=60, facecolors="none", edgecolors="red", linewidths=2,
               label=f"fastest within {TOLERANCE} AUROC of the best")
    ax.set_xscale("log")
    xs = [r.latency_p50_ms for r in rows if r.latency_p50_ms]
    if xs:
        ax.set_xlim(min(xs) / 1.5, max(xs) * 1.5)
    ax.margins(y=0.12)
    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xticks([t for t in (0.5, 0.7, 1, 1.5, 2, 3, 5, 7, 10, 15, 20, 30, 50, 100, 200)
                   if xs and min(xs) / 1.5 <= t <= max(xs) * 1.5])
    ax.set(xlabel="p50 latency per image, ms (LiteRT CPU, batch 1; log scale)", ylabel="test AUROC")
    ax.set_title(f"{title}\nball area ∝ file size (MB); label: input px, precision, AUROC per million "
                 "parameters; grey bar: 95 % CI", fontsize=9)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    try:
        with atomic_path(Path(path)) as tmp:
            fig.savefig(tmp, format="png")
    finally:
        plt.close(fig)
    return Path(path)


def publish(rows: list[Row], meta: dict, docs: Path, stem: str = "table_v_glaucoma") -> dict:
    """``<docs>/<stem>.md`` + ``.json`` + ``.png`` from the rows and the run's facts (``meta``)."""
    docs = ensure_writable_dir(docs)
    pick = next((r for r in rows if r.fastest_within_tolerance), None)
    best = max((r.auroc for r in rows), default=None)
    payload = {**meta, "tolerance": TOLERANCE, "best_auroc": best,
               "fastest_within_tolerance": pick.to_dict() if pick else None, "rows": [r.to_dict() for r in rows]}
    write_json_atomic(docs / f"{stem}.json", payload)
    plot_table_v(rows, docs / f"{stem}.png", meta["title"])
    target = ("met" if pick else "missed") + (
        f": **{pick.config} {pick.precision}**, AUROC {pick.auroc:.3f} (best {best:.3f}), "
        f"{pick.latency_p50_ms:.2f} ms p50" if pick else "")
    lines = [f"# {meta['title']}", "", f"Regenerate: `{meta['command']}` (from the repository root, with "
             "`../shared` or `$EDGERETINA_SHARED`).", "", f"Machine: {meta['machine_line']}; {meta['load']}", "",
             *meta["method"], "", *md_rows(rows), "",
             f"Issue-15 target — a ball chart whose points are real runs and the fastest row at AUROC within "
             f"{TOLERANCE} of the best: {target} (bold row, ringed in the chart).", "", *meta.get("notes", []),
             "", f"![Table V ball chart]({stem}.png)", ""]
    write_text_atomic(docs / f"{stem}.md", "\n".join(lines))
    return payload


def step_minutes(done: list[Config], work: Path) -> dict[str, float]:
    """Train + export wall minutes per config, read back from its artifacts (a resumed run still has them):
    ``metrics.json`` seconds.total and the export manifest's per-file seconds."""
    out = {}
    for c in done:
        m = json.loads((work / c.name / "run" / "metrics.json").read_text())
        man = json.loads((work / c.name / "export" / "manifest.json").read_text())
        secs = float((m.get("seconds") or {}).get("total") or 0) + sum(float(r.get("seconds") or 0)
                                                                      for r in man.get("results", []))
        out[c.name] = round(secs / 60, 1)
    return out


def method_lines(missing: list[Config], report: dict, timing: dict, minutes: dict | None = None) -> list[str]:
    ds = report.get("dataset") or {}
    classes = ", ".join(f"{k} {v}" for k, v in (ds.get("classes") or {}).items())
    out = [f"Test images: {ds.get('n_images', '?')} eyes of the glaucoma test split ({classes}; patient-level "
           "70/10/20 split, seed 0 — the same eyes for every row; the ONH rows see each eye's optic-disc crop). "
           "Each config is the shipped glaucoma recipe: frozen ImageNet backbone + `--head-fit linear` (L2 "
           "logistic regression on the pooled features, penalty by inner patient-grouped CV on the training "
           "split; no fine-tune), exported `--float32 --int8 --head-split 4`. The test split is scored once per "
           "config and nothing is chosen on it: this table is a report, not a selection (the recipe itself was "
           "chosen by CV: [glaucoma_recipe.md](glaucoma_recipe.md)).",
           "",
           "Columns: depth = layers of the .tflite graph, params = its parameters (the same at every input size, so "
           "AUROC density follows AUROC here; int8 changes the size, not the count), MACs = multiply-adds per "
           "image of the model, size = the .tflite file; AUROC "
           "with its bootstrap 95 % CI (each config's `edgeretina bench` of its two files over the whole test "
           "split, reference = its float32 file); AUROC density = AUROC per million parameters (the study's "
           f"measure); p50 = median per-image latency, LiteRT CPU (XNNPACK), batch 1, {timing.get('threads')} "
           f"thread(s), every file timed in one process, interleaved: {timing.get('rounds')} rounds × "
           f"{timing.get('images')} test images per file, the lowest of the rounds' p50s — the least-disturbed round, "
           "as other jobs on the shared machine only ever add time (the JSON keeps each "
           f"round's; 1-minute load average as the timing ended: {timing.get('load_1min')}). int8 ΔAUROC (paired "
           "DeLong p) and decision flips are against the config's own float32 file at its validation Youden "
           "threshold."]
    if minutes:
        out += ["", "Train + export wall time per config, beside the other jobs (the load line above): "
                + ", ".join(f"{k.split('_', 1)[-1]} {v:.1f}" for k, v in minutes.items())
                + f" min; {sum(minutes.values()):.0f} min in all (issue 15: each experiment ≤ 30 min on 2 cores)."]
    if missing:
        out += ["", "**Not finished in this run** (no row, nothing estimated): "
                + ", ".join(c.name for c in missing) + "."]
    return out


def run_all(cfgs: list[Config], a, smoke: Smoke | None) -> tuple[list[Config], dict]:
    data = str(shared_dir() / "data" / "odir") if a.data is None else a.data
    work = ensure_writable_dir(a.work)
    per_config, done = {}, []
    deadline = time.time() + 60 * a.budget_min if a.budget_min is not None else None
    for i, c in enumerate(cfgs):
        if deadline and time.time() > deadline and not (work / c.name / "bench" / "report.json").is_file():
            print(f"[{i + 1}/{len(cfgs)}] {c.name}: skipped (--budget-min reached)", flush=True)
            continue
        t = time.perf_counter()
        per_config[c.name] = run_config(c, data, work, a.threads, smoke)
        done.append(c)
        print(f"[{i + 1}/{len(cfgs)}] {c.name}: done ({time.perf_counter() - t:.0f} s)", flush=True)
    if not done:
        raise EdgeRetinaError("no config finished: nothing to tabulate")
    timing = joint_timing(done, work, data, a.threads, 2 if smoke else ROUNDS)
    return done, {"per_config": per_config, "timing": timing, "work": work}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default=",".join(map(str, SIZES)), help="input sizes, px (default: %(default)s)")
    ap.add_argument("--views", default="full,onh", help="full (whole fundus) and/or onh (optic-nerve-head crop)")
    ap.add_argument("--arch", default="mobilenetv2",
                    help="backbones, e.g. vgg16,resnet50,inceptionv3,xception,mobilenet (needs their ImageNet "
                         "weights: internet, or the .h5 files in ~/.keras/models)")
    ap.add_argument("--work", default=str(REPO_ROOT / "runs" / "table_v"))
    ap.add_argument("--docs", default=str(REPO_ROOT / "docs" / "benchmarks"))
    ap.add_argument("--data", default=None, help="ODIR folder (default: ../shared/data/odir)")
    ap.add_argument("--threads", type=int, default=1, help="LiteRT threads for the latency column")
    ap.add_argument("--budget-min", type=float, default=None,
                    help="start no new config after this many minutes; publish the finished ones")
    ap.add_argument("--smoke", action="store_true", help="few images and timing passes; plumbing only")
    a = ap.parse_args(argv)
    try:
        sizes = parse_list(a.sizes, "sizes", int)
        views = [View(v) if v in {x.value for x in View} else _bad_view(v) for v in parse_list(a.views, "views")]
        archs = [get_backbone(x).name for x in parse_list(a.arch, "arch")]
        seed_keras_cache()
        for arch in archs:
            problem = weights_problem(arch)
            if problem:
                raise EdgeRetinaError(problem)
        cfgs = configs(archs, views, sizes)
        done, res = run_all(cfgs, a, SMOKE if a.smoke else None)
    except EdgeRetinaError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    rows = build_rows(done, res["work"], res["per_config"], res["timing"])
    first = res["per_config"][done[0].name]
    missing = [c for c in cfgs if c not in done]
    m = first.get("machine") or machine_info()
    meta = {"title": "Table V — glaucoma on ODIR across input sizes and views (" + ", ".join(archs) + ")",
            "command": _command(a), "machine": m,
            "machine_line": machine_line(m) + ", shared with the other engineers' jobs while this ran",
            "load": load_line(res["work"], m.get("cpu_count")), "dataset": first.get("dataset"),
            "test_images_per_config": {c.name: (res["per_config"][c.name].get("dataset") or {}).get("n_images")
                                       for c in done}, "timing": res["timing"],
            "configs": [c.name for c in cfgs], "finished": [c.name for c in done],
            "not_finished": [c.name for c in missing], "threads": a.threads, "smoke": bool(a.smoke),
            "method": method_lines(missing, first, res["timing"], step_minutes(done, res["work"])), "notes": NOTES,
            "train_export_minutes": step_minutes(done, res["work"])}
    publish(rows, meta, Path(a.docs))
    print(f"wrote {Path(a.docs) / 'table_v_glaucoma.md'} ({len(rows)} rows)")
    return 0


NOTES = [
    "Reading it: each test AUROC rests on the split's few glaucomatous eyes (the class counts above), so its 95 % "
    "CI is several hundredths wide and differences of about 0.01 between rows are not resolved by this split; the "
    "marked row is a reading of this table, not a choice — the shipped size and view are chosen by "
    "cross-validation ([glaucoma_recipe.md](glaucoma_recipe.md)). int8's decision flips against its own float32 "
    "file are in the last column; `export --int8-guard` ([export.md](../export.md)) is the way to cut them.",
    "",
    "Weights: offline only MobileNetV2's 224-px ImageNet file is in `../shared/weights`; every size here starts "
    "from it (convolution weights do not depend on the input size; `edgeretina.models.build`). With internet, "
    "Keras's per-resolution MobileNetV2 files would be used instead and may do better at small sizes.",
    "",
    "Across backbones, the study's own axis: `python -m edgeretina.benchmarks.table_v --arch "
    "vgg16,resnet50,inceptionv3,xception,mobilenet --sizes 224 --views full` (with internet access: Keras "
    "downloads each backbone's no-top ImageNet weights once into `~/.keras/models`; or put the .h5 files there). "
    "Not run for this page: this machine has no internet, and an arch without weights stops the command with a "
    "one-line `error:` before any step — no row of this table is estimated or copied from the study.",
]


def _bad_view(v: str):
    raise EdgeRetinaError(f"--views: unknown view '{v}' (choose from: full, onh)")


def _command(a) -> str:
    parts = [COMMAND]
    if a.sizes != ",".join(map(str, SIZES)):
        parts.append(f"--sizes {a.sizes}")
    if a.views != "full,onh":
        parts.append(f"--views {a.views}")
    if a.arch != "mobilenetv2":
        parts.append(f"--arch {a.arch}")
    return " ".join(parts)


if __name__ == "__main__":
    sys.exit(main())
