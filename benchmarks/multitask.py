"""Issue 15, system 3: glaucoma + DR multi-task on ODIR eyes — one frozen ImageNet MobileNetV2-224 with two
sigmoid outputs (GAP → Dense(2, sigmoid)), **ExpUWBCE against plain BCE** (the multi-task study's
comparison), and the two single-task models on the same eyes, the same patient-level split and the same
features; then the edge variants of the multi-task model and **one multi-task int8 file vs two single-task
int8 files** (size, latency, per-task AUROC).

    python -m edgeretina.benchmarks.multitask [--work runs/multitask] [--docs docs/benchmarks]

(also ``python -m edgeretina.benchmarks.real_data --only multitask_odir``). Steps, each skipped when its
output exists (an interrupted run resumes):

1. ``features``: every eye of the ``multitask`` task (ODIR eyes with a diagnostic keyword; y = (glaucoma,
   DR)) split 70/10/20 by patient (seed 0), one pass through the frozen backbone → ``features.npz``.
2. ``heads``: every head trains on those cached pooled features (Adam, early stopping on validation loss):
   multi-task BCE, multi-task ExpUWBCE (its positive weight W1 chosen from a grid by validation macro AUROC)
   and single-task sigmoid heads for glaucoma and DR. Thresholds: validation Youden per output. The test
   split is scored once, after every choice is made. Each head is folded into a full Keras model and
   written as a run dir (``model.keras`` + ``config.json``) that ``edgeretina export`` / ``bench`` read.
3. ``export`` (public CLI): the chosen multi-task model → float32 / fp16 / dynamic / int8; each single-task
   model → int8.
4. ``bench`` (public CLI, ``--task multitask``): per-head AUROC, ΔAUROC with CI and flips per variant.
5. ``compare``: the multi-task int8 file against the two single-task int8 files (their summed size, and
   one invoke against two, measured in LiteRT on the same test eyes).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from edgeretina.converters.calib import stratified_indices
from edgeretina.data import load_arrays, open_dataset
from edgeretina.inference.cpu import load_cpu
from edgeretina.inference.modelfile import open_model
from edgeretina.io import ensure_writable_dir, write_json_atomic
from edgeretina.metrics import auroc
from edgeretina.models import build_model, get_backbone
from edgeretina.paths import REPO_ROOT, seed_keras_cache, shared_dir
from edgeretina.preprocess import Pipeline
from edgeretina.run import RunConfig
from edgeretina.runtime.timing import time_batch1
from edgeretina.tasks import scores_from_output
from edgeretina.train import features as F
from edgeretina.train.helpers import save_clean_model

from .multitask_heads import (ALPHAS, LAMBDAS, MAXITER, TASKS, Head, Trained, choose_alpha, score_heads,
                              train_head, val_macro_auroc)
from .multitask_report import publish
from .real_data import cli_argv, record_load, run_step

TASK = "multitask"
ARCH, SIZE, SPLIT, SEED = "mobilenetv2", 224, "70/10/20", 0
CHUNK = 128  # images decoded and pushed through the backbone at a time (bounded memory)
FEATURES = "features.npz"


def split_records(data: str):
    ds = open_dataset(data, TASK)
    return ds, ds.split(SPLIT, seed=SEED)


def compute_features(data: str, root: Path, say=print) -> Path:
    """Step 1: pooled features of the frozen ImageNet MobileNetV2-224 for every eye, per split, with the
    labels, record keys and patient groups → ``<root>/features.npz``."""
    out = root / FEATURES
    if out.is_file():
        return out
    t0 = time.perf_counter()
    ds, parts = split_records(data)
    pipe = Pipeline.default(SIZE, get_backbone(ARCH).scaling.value)
    fm = F.pooled_feature_model(build_model(ARCH, ds.spec, SIZE, "imagenet", "gap"))
    arrays: dict[str, np.ndarray] = {}
    done, total = 0, sum(len(v) for v in parts.values())
    for name, recs in parts.items():
        feats, ys = [], []
        for i in range(0, len(recs), CHUNK):
            X, y = load_arrays(recs[i:i + CHUNK], pipe, ds.spec)
            feats.append(F.compute(fm, X))
            ys.append(y)
            done += len(X)
            say(f"features: {done}/{total} eyes ({time.perf_counter() - t0:.0f} s)")
        arrays[f"f_{name}"] = np.concatenate(feats)
        arrays[f"y_{name}"] = np.concatenate(ys).astype(np.float32)
        arrays[f"key_{name}"] = np.array([r.key for r in recs])
        arrays[f"group_{name}"] = np.array([str(r.group) for r in recs])
    arrays["seconds"] = np.float64(time.perf_counter() - t0)
    tmp = root / (FEATURES + ".tmp.npz")
    np.savez(tmp, **arrays)
    tmp.replace(out)
    return out


HEADS_FILE = "heads.json"
CALIB_FILE = "calib_train.npy"
CALIB_N = 200
RUNS = {"multi": "run_multitask", "glaucoma": "run_glaucoma", "dr": "run_dr"}
MULTI_EXPORTS = (("export", ("--float32", "--fp16", "--dynamic", "--int8")),
                 ("export_hs4", ("--int8", "--head-split", "4")),
                 ("export_guard", ("--int8-guard",)))
SINGLE_EXPORT = ("export", ("--float32", "--int8"))
TIMING_IMAGES, TIMING_RUNS, TIMING_ROUNDS = 20, 3, 3


def load_features(root: Path) -> dict[str, np.ndarray]:
    with np.load(root / FEATURES, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def dataset_dict(data: str, parts: dict) -> dict:
    return {"path": data, "format": "odir", "options": {},
            "split": {"scheme": SPLIT, "seed": SEED, **{k: len(v) for k, v in parts.items()}}}


def write_run(tr: Trained, out: Path, dataset: dict, note: str) -> Path:
    """A trained head → a run dir (``model.keras`` + ``config.json``) that ``export`` and ``bench`` read.
    Multi-task: thresholds as a list (one per head, validation Youden)."""
    spec = tr.head.spec
    out = ensure_writable_dir(out)
    save_clean_model(tr.model, out / "model.keras")
    multi = len(tr.head.columns) > 1
    thr = [tr.thresholds[t] for t in TASKS] if multi else tr.thresholds[TASKS[tr.head.columns[0]]]
    info = tr.model.edgeretina
    RunConfig(task=spec.task.value, kind=spec.kind.value, labels=tuple(spec.labels),
              preprocessing=Pipeline.default(SIZE, info["scaling"]).to_json(), arch=info["arch"], input_size=SIZE,
              weights=info["weights"], head=info["head"], positive_index=spec.positive_index,
              output={"activation": spec.activation, "kind": "probabilities"}, threshold=thr,
              dataset=dataset, extra={"head_fit": "l-bfgs on cached pooled features, L2 penalty by validation",
                                      "loss": {"name": tr.head.loss, "w1": tr.head.w1, "w2": 1.0},
                                      "lambda": tr.lam, "lambdas": list(LAMBDAS), "maxiter": MAXITER,
                                      "threshold_method": "youden_j_on_val", "note": note,
                                      "made_by": "python -m edgeretina.benchmarks.multitask"}).save(out)
    write_json_atomic(out / "metrics.json", {"threshold": tr.thresholds, "val": tr.info,
                                             "seconds": {"total": tr.info.get("seconds")}})
    return out


def train_heads(root: Path, data: str, say=print) -> dict:
    """Step 2: every head on the cached features, choices on validation only; run dirs of the chosen
    multi-task model and the two single-task models; ``heads.json`` with every number."""
    if (root / HEADS_FILE).is_file() and all((root / r / "model.keras").is_file() for r in RUNS.values()):
        return json.loads((root / HEADS_FILE).read_text())
    t0 = time.perf_counter()
    feats = load_features(root)
    alpha, alpha_rows, by_alpha = choose_alpha(feats, say=say)
    trained = {"multi_bce": train_head(Head("multi_bce", (0, 1), "ce"), feats, say=say),
               "multi_expuwbce": by_alpha[alpha],
               "single_glaucoma": train_head(Head("single_glaucoma", (0,), "ce"), feats, say=say),
               "single_dr": train_head(Head("single_dr", (1,), "ce"), feats, say=say)}
    val = {k: val_macro_auroc(v, feats["y_val"]) for k, v in trained.items() if len(v.head.columns) > 1}
    chosen = max(("multi_expuwbce", "multi_bce"), key=lambda k: round(val[k], 6))
    scores = score_heads(trained, feats["y_test"], [
        ("ExpUWBCE − BCE (multi-task)", "multi_expuwbce", "multi_bce"),
        ("multi-task ExpUWBCE − single-task", "multi_expuwbce", "single_glaucoma"),
        ("multi-task ExpUWBCE − single-task", "multi_expuwbce", "single_dr"),
        ("multi-task BCE − single-task", "multi_bce", "single_glaucoma"),
        ("multi-task BCE − single-task", "multi_bce", "single_dr")])
    _, parts = split_records(data)
    ds = dataset_dict(data, parts)
    note = "trained on the multitask split of ODIR (benchmarks/multitask.py); single-task: one of its two labels"
    write_run(trained[chosen], root / RUNS["multi"], ds, note)
    write_run(trained["single_glaucoma"], root / RUNS["glaucoma"], {}, note)
    write_run(trained["single_dr"], root / RUNS["dr"], {}, note)
    out = {"alpha": alpha, "alphas": list(ALPHAS), "alpha_rows": alpha_rows, "chosen": chosen,
           "val_macro_auroc": val, "test": scores, "features_seconds": float(feats["seconds"]),
           "heads": {k: {"loss": v.head.loss, "w1": v.head.w1, "lambda": v.lam, **v.info,
                         "thresholds": v.thresholds} for k, v in trained.items()},
           "dataset": _dataset_counts(feats), "seconds": round(time.perf_counter() - t0, 1)}
    write_json_atomic(root / HEADS_FILE, out)
    return out


def _dataset_counts(feats: dict) -> dict:
    out = {}
    for k in ("train", "val", "test"):
        y = feats[f"y_{k}"]
        out[k] = {"eyes": int(len(y)), "patients": int(len(set(feats[f"group_{k}"].tolist()))),
                  **{t: int(y[:, j].sum()) for j, t in enumerate(TASKS)}}
    return out


def groups_on_two_sides(feats: dict) -> int:
    """Split units (patient ∪ identical images) found in more than one of train / val / test: must be 0."""
    sides = [set(feats[f"group_{k}"].tolist()) for k in ("train", "val", "test")]
    return len((sides[0] & sides[1]) | (sides[0] & sides[2]) | (sides[1] & sides[2]))


def write_calibration(root: Path, data: str) -> Path:
    """200 training-split eyes (stratified by label pattern), preprocessed: the int8 calibration set of
    every export here, so the multi-task and single-task int8 files see the same images."""
    out = root / CALIB_FILE
    if not out.is_file():
        ds, parts = split_records(data)
        recs = parts["train"]
        idx = stratified_indices([r.y for r in recs], CALIB_N, SEED)
        X, _ = load_arrays([recs[i] for i in idx], Pipeline.default(SIZE, get_backbone(ARCH).scaling.value), ds.spec)
        np.save(out, X.astype(np.float32))
    return out


def export_all(root: Path, data: str) -> dict[str, float]:
    """Step 3 (public CLI): the chosen multi-task model's variants; each single-task model's float32 + int8."""
    calib = str(write_calibration(root, data))
    steps: dict[str, float] = {}
    jobs = [(RUNS["multi"], sub, flags) for sub, flags in MULTI_EXPORTS]
    jobs += [(RUNS[t], SINGLE_EXPORT[0], SINGLE_EXPORT[1] + ("--borderline-band", "off")) for t in ("glaucoma", "dr")]
    for run, sub, flags in jobs:
        out = root / run / sub
        if not (out / "manifest.json").is_file():
            steps[f"export:{run}/{sub}"] = run_step(
                cli_argv("export", str(root / run), *flags, "--calib", calib, "--out", str(out)),
                root / f"{run}_{sub}.log")
    return steps


def bench_multi(root: Path, data: str) -> tuple[dict, dict[str, float]]:
    """Step 4 (public CLI): ``edgeretina bench --task multitask`` of the multi-task model's variants on the
    test split (LiteRT, 2 threads; the Keras model is the reference)."""
    out = root / "bench_cpu_2"
    steps: dict[str, float] = {}
    if not (out / "report.json").is_file():
        # the export folder, and of the guard folder only its cascade file (its int8 / fp16 files repeat those
        # names); the --head-split file is reported by export_notes()
        exports = [str(root / RUNS["multi"] / MULTI_EXPORTS[0][0]),
                   *map(str, (root / RUNS["multi"] / "export_guard").glob("*_int8_guard.tflite"))]
        steps["bench:cpu:2"] = run_step(
            cli_argv("bench", "--models", str(root / RUNS["multi"]), *exports, "--data", data, "--task", TASK,
                     "--device", "cpu", "--threads", "2", "--stability", "off", "--out", str(out)),
            root / "bench_cpu_2.log")
        record_load(root, "bench:cpu:2")
    return json.loads((out / "report.json").read_text()), steps


def export_notes(root: Path) -> list[str]:
    """The exporter's own check of each multi-task int8 file (its 64 validation eyes vs the Keras model) and the
    int8-guard's band: the ``--head-split 4`` file is not benched (the bench keys rows by variant name), its
    check is reported."""
    out = []
    for sub, flags in MULTI_EXPORTS:
        man = json.loads((root / RUNS["multi"] / sub / "manifest.json").read_text())
        for r in man["results"]:
            g = r.get("guard") or {}
            if r["variant"] == "int8-guard" and g:
                out.append(f"`export {' '.join(flags)}`: int8 logit noise rms {g['noise_rms']:.2f} (calibration "
                           "eyes) → "
                           f"band ±{g['band']:.2f} logit (k = {g['k']:g}), so the fp16 file re-scores "
                           f"{100 * g['rescored_share']:.0f} % of calibration eyes: the cascade is fp16 plus an int8 "
                           "pass here.")
            if r["variant"] == "int8" and "--int8-guard" not in flags:  # the guard's int8 is the plain one
                v = r["verification"]
                out.append(f"`export {' '.join(flags)}`: int8 agrees with the Keras model on "
                           f"{100 * v['agreement']:.1f} % "
                           f"of {v['n']} validation eyes (both decisions), max |Δp| {v['max_abs_diff']:.3f}, mean "
                           f"|Δp| {v['mean_abs_diff']:.4f}.")
    return out


def int8_file(root: Path, run: str) -> Path:
    return next((root / run / SINGLE_EXPORT[0]).glob("*_int8.tflite"))


def compare_one_vs_two(root: Path, data: str, threads: int = 2, say=print) -> dict:
    """Step 5: the multi-task int8 file against the two single-task int8 files on the test eyes: per-task
    AUROC, summed size, and batch-1 latency of one invoke vs both single-task invokes per eye (alternating
    rounds, median of the rounds' p50s: the machine is shared)."""
    out_file = root / "one_vs_two.json"
    if out_file.is_file():
        return json.loads(out_file.read_text())
    t0 = time.perf_counter()
    ds, parts = split_records(data)
    recs = parts["test"]
    X, y = load_arrays(recs, Pipeline.default(SIZE, get_backbone(ARCH).scaling.value), ds.spec)
    files = {k: int8_file(root, RUNS[k]) for k in ("multi", "glaucoma", "dr")}
    runners = {k: load_cpu(open_model(p), threads) for k, p in files.items()}
    auc = {}
    for k, r in runners.items():
        m = open_model(files[k])
        s = scores_from_output(m.config.spec, r.predict(X))
        auc[k] = ({t: auroc(y[:, j], s[:, j]) for j, t in enumerate(TASKS)} if k == "multi"
                  else {k: auroc(y[:, TASKS.index(k)], s)})
    xt = X[:TIMING_IMAGES]
    one, two = [], []
    for _ in range(TIMING_ROUNDS):
        one.append(runners["multi"].time(xt, TIMING_RUNS, 3).p50)
        two.append(time_batch1(lambda x1: (runners["glaucoma"].litert.step(x1), runners["dr"].litert.step(x1)),
                               xt, TIMING_RUNS, 3).p50)
    res = {"files": {k: str(p.relative_to(root)) for k, p in files.items()},
           "size_bytes": {k: p.stat().st_size for k, p in files.items()}, "auroc": auc,
           "p50_ms_rounds": {"one_multitask": one, "two_single_task": two},
           "p50_ms": {"one_multitask": float(np.median(one)), "two_single_task": float(np.median(two))},
           "threads": threads, "timing_images": TIMING_IMAGES, "runs": TIMING_RUNS, "n_test": int(len(y)),
           "seconds": round(time.perf_counter() - t0, 1)}
    write_json_atomic(out_file, res)
    record_load(root, "one-vs-two timing")
    return res


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work", default=str(REPO_ROOT / "runs" / "multitask"), help="work folder")
    ap.add_argument("--docs", default=str(REPO_ROOT / "docs" / "benchmarks"), help="where the table goes")
    ap.add_argument("--until", choices=["features", "heads", "export", "bench", "publish"], default="publish")
    a = ap.parse_args(argv)
    seed_keras_cache()
    root = ensure_writable_dir(Path(a.work))
    data = str(shared_dir() / "data" / "odir")
    compute_features(data, root)
    if a.until == "features":
        return 0
    heads = train_heads(root, data)
    heads["groups_on_two_sides"] = groups_on_two_sides(load_features(root))
    if a.until == "heads":
        return 0
    steps = export_all(root, data)
    if a.until == "export":
        return 0
    report, bench_steps = bench_multi(root, data)
    steps.update(bench_steps)
    if a.until == "bench":
        return 0
    one_two = compare_one_vs_two(root, data)
    publish(root, Path(a.docs), heads, report, one_two, steps, export_notes(root))
    return 0


if __name__ == "__main__":
    sys.exit(main())
