"""``train_run``: dataset → split → preprocess → model → two-phase training → evaluation → run dir.

The run dir holds ``model.keras`` + ``config.json`` (the contract every later stage reads), plus
``history.csv`` (one row per epoch and phase), ``metrics.json`` (validation and test metrics, the chosen
threshold, a logistic-regression probe on the frozen ImageNet features as a baseline, timings) and
``roc.png``. ``checkpoint/`` exists only while a run is unfinished: calling ``train_run`` again with the
same arguments resumes from it.
"""
from __future__ import annotations

import csv
import io
import shutil
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from edgeretina.errors import DataError, EdgeRetinaError, ModelError
from edgeretina.io import ensure_writable_dir, write_json_atomic, write_text_atomic
from edgeretina.tasks import TaskKind, TaskSpec, scores_from_output, task_spec
from edgeretina.train.two_phase import Arrays, TrainConfig, finetune, warmup

CHECKPOINT_DIR = "checkpoint"


def subsample(records: list, n: int | None, spec: TaskSpec, seed: int = 0) -> list:
    """At most ``n`` records, drawn at random; the positive/minority records are kept preferentially
    (up to half of ``n``) so a small sample still has enough of them. ``None`` → all records."""
    if n is None or n >= len(records):
        return list(records)
    from edgeretina.data import is_minority

    rng = np.random.default_rng(seed)
    pos = [r for r in records if is_minority(r, spec)]
    neg = [r for r in records if not is_minority(r, spec)]
    k_pos = min(len(pos), n // 2)
    pick_pos = [pos[i] for i in sorted(rng.choice(len(pos), k_pos, replace=False))] if k_pos else []
    k_neg = min(len(neg), n - k_pos)
    pick_neg = [neg[i] for i in sorted(rng.choice(len(neg), k_neg, replace=False))] if k_neg else []
    return pick_pos + pick_neg


def make_strategy(name: str | None):
    """``default`` → None (one device); ``mirrored`` → MirroredStrategy (all local GPUs);
    ``multiworker`` → MultiWorkerMirroredStrategy (reads ``TF_CONFIG``)."""
    name = (name or "default").lower()
    if name == "default":
        return None
    from edgeretina._keras import tf

    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multiworker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise EdgeRetinaError(f"unknown strategy '{name}' (choose default, mirrored or multiworker)")


def check_task_served(data, task: str, fmt: str | None = None) -> str:
    """One-line DataError when the dataset's format cannot serve the task. Returns the format."""
    from edgeretina.data import FORMAT_TASKS, DataFormat, detect_format

    f = DataFormat(fmt) if fmt else detect_format(data)
    served = FORMAT_TASKS.get(f, ())
    if task not in served:
        raise DataError(f"{data}: a {f.value} dataset does not serve task '{task}' "
                        f"(it serves: {', '.join(served)})")
    return f.value


def _history_csv(rows: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    cols = ["phase", "epoch", "loss", "val_loss", "val_score", "lr", "seconds"]
    w = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow(r)
    return buf.getvalue()


def logreg_probe(f_train, y_train, f_test, y_test, spec: TaskSpec, n_boot: int = 1000, seed: int = 0,
                 f_val=None, y_val=None):
    """Baseline: logistic regression (balanced classes, standardized features) on frozen pooled features."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from edgeretina.metrics import bootstrap_auroc

    if spec.kind is not TaskKind.BINARY:
        return None
    clf = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=3000, class_weight="balanced"))
    clf.fit(f_train, y_train)
    s = clf.predict_proba(f_test)[:, 1]
    out = {"model": "logistic regression (C=0.1, balanced) on frozen pooled backbone features",
           **bootstrap_auroc(y_test, s, n_boot, seed).to_dict(), "_test_scores": s}
    if f_val is not None and len(f_val):
        from edgeretina.metrics import auroc

        out["val_auroc"] = auroc(y_val, clf.predict_proba(f_val)[:, 1])
    return out


def save_clean_model(model, path: Path) -> Path:
    """Save an uncompiled copy (no custom loss/optimizer needed to load it), atomically."""
    from edgeretina._keras import keras
    from edgeretina.io import atomic_path

    clean = keras.Model.from_config(model.get_config())
    clean.set_weights(model.get_weights())
    for layer in clean.layers:
        layer.trainable = True
    with atomic_path(path) as tmp:
        tmpk = tmp.with_suffix(".keras")
        clean.save(tmpk)
        tmpk.replace(tmp)
    return path


def evaluate_model(model, spec: TaskSpec, x, y, threshold=None, n_boot: int = 1000, seed: int = 0):
    from edgeretina.metrics import evaluate

    s = scores_from_output(spec, model.predict(x, batch_size=64, verbose=0))
    return s, evaluate(spec, y, s, threshold, n_boot, seed)


def train_run(data, task: str, arch: str, out, *, weights="imagenet", input_size: int | None = None,
              head=None, arch_options: dict | None = None, config: TrainConfig | None = None,
              split: str | None = None, seed: int = 0, pipeline=None, data_options: dict | None = None,
              max_train: int | None = None, max_val: int | None = None, max_test: int | None = None,
              grid: bool = False, grid_space: dict | None = None, strategy: str | None = "default",
              n_boot: int = 1000, baseline: bool = True, sensitivity: float = 0.9, overwrite: bool = False,
              log: Callable[[str], None] | None = None, callbacks=()) -> Path:
    """Train one model and write its run dir ``out``; returns ``Path(out)``. Re-running the same call after an
    interruption resumes from ``out/checkpoint``. See docs/training.md."""
    from edgeretina.data import class_weights, load_arrays, open_dataset
    from edgeretina.models import build_model, get_backbone, normalize_weights
    from edgeretina.preprocess import Pipeline
    from edgeretina.run import CONFIG_FILE, MODEL_FILE, RunConfig

    t_start, cpu_start = time.perf_counter(), time.process_time()
    cfg = config or TrainConfig()
    from edgeretina.tasks import Task

    try:
        task_name = Task(task).value
    except ValueError:
        task_spec(task)  # raises the one-line "unknown task" error
        raise
    bb = get_backbone(arch)
    size = int(input_size or bb.default_size)
    if size < bb.min_size:
        raise ModelError(f"input size {size} is below {bb.keras_name}'s minimum of {bb.min_size} px")
    w = normalize_weights(weights)
    from edgeretina.train.freezing import FreezePolicy
    from edgeretina.train.losses import LossName

    FreezePolicy.parse(cfg.freeze)
    try:
        LossName(cfg.loss)
    except ValueError:
        raise EdgeRetinaError(f"unknown loss '{cfg.loss}' (choose from: "
                              f"{', '.join(l.value for l in LossName)})") from None
    strat = make_strategy(strategy)
    fmt = check_task_served(data, task_name, (data_options or {}).get("format"))
    out = ensure_writable_dir(out)
    if (out / "metrics.json").is_file() and (out / MODEL_FILE).is_file() and not (out / CHECKPOINT_DIR).exists():
        if not overwrite:
            raise EdgeRetinaError(f"{out}: already holds a finished run (choose a new --out or pass overwrite)")
        shutil.rmtree(out / "grid", ignore_errors=True)  # a fresh run: no resuming the old search
    say = log or (lambda m: None)

    # ---- data
    opts = {k: v for k, v in (data_options or {}).items() if k != "format"}
    ds = open_dataset(data, task_name, format=fmt, **opts)
    spec = ds.spec
    parts = ds.split(split, seed=seed)
    parts = {"train": subsample(parts["train"], max_train, spec, seed),
             "val": subsample(parts["val"], max_val, spec, seed),
             "test": subsample(parts["test"], max_test, spec, seed)}
    if not parts["train"] or not parts["val"]:
        raise DataError(f"{data}: split '{split or 'default'}' leaves no training or validation images")
    if pipeline is None:
        pipe = Pipeline.default(size, bb.scaling.value)
    else:
        pipe = pipeline if isinstance(pipeline, Pipeline) else Pipeline.from_json(pipeline)
        if pipe.input_size not in (None, size):
            raise DataError(f"preprocessing resizes to {pipe.input_size} px but the model input is {size} px")
        if pipe.scaling != bb.scaling.value:
            say(f"note: pipeline scaling '{pipe.scaling}' differs from {bb.keras_name}'s '{bb.scaling.value}'")
    say(f"data: {ds.format} {spec.task.value}  train {len(parts['train'])}  val {len(parts['val'])}  "
        f"test {len(parts['test'])}  preprocessing: {pipe.describe()}")
    # ---- model (built before the images load, so a bad weights file fails fast)
    from edgeretina.train.loop import _null
    from edgeretina.train.losses import make_loss

    with (strat.scope() if strat is not None else _null()):
        model = build_model(bb.name, spec, size, w, head, **(arch_options or {}))
    info = model.edgeretina
    cw = class_weights(parts["train"], spec)
    loss, keras_cw = make_loss(cfg.loss, spec, cw)
    t0 = time.perf_counter()
    arrays = {k: load_arrays(v, pipe, spec) for k, v in parts.items() if v}
    t_load = time.perf_counter() - t0
    say(f"loaded {sum(len(a[0]) for a in arrays.values())} images in {t_load:.1f} s")
    tr, va = arrays["train"], arrays["val"]
    data_arr = Arrays(tr[0], tr[1], va[0], va[1])

    ckpt = out / CHECKPOINT_DIR

    # ---- pooled features of the frozen ImageNet backbone: the warm-up's cache and the baseline probe's input
    from edgeretina.train import features as F

    feats = None
    if cfg.cache_features or baseline:
        t0 = time.perf_counter()
        fm = F.pooled_feature_model(model)
        feats = {k: F.compute(fm, a[0]) for k, a in arrays.items()
                 if k != "test" or (baseline and spec.kind is TaskKind.BINARY)}
        say(f"cached pooled backbone features ({feats['train'].shape[1]}-d) of "
            f"{sum(len(f) for f in feats.values())} images in {time.perf_counter() - t0:.1f} s")
    base = None
    if baseline and spec.kind is TaskKind.BINARY and "test" in arrays:
        base = logreg_probe(feats["train"], tr[1], feats["test"], arrays["test"][1], spec, n_boot, seed,
                            feats["val"], va[1])
        say(f"baseline: logistic regression on frozen features, test AUROC {base['auroc']:.3f} "
            f"({base['auroc_ci_low']:.3f}-{base['auroc_ci_high']:.3f})")

    # ---- training
    grid_result = None
    t0 = time.perf_counter()
    if grid:
        from edgeretina.train.grid import grid_search

        grid_result = grid_search(model, spec, data_arr, cfg, loss, keras_cw, out, space=grid_space,
                                  partial_from=bb.partial_from, log=say, strategy=strat,
                                  features=(feats["train"], feats["val"]) if feats else None,
                                  callbacks=callbacks)
        phases = grid_result.phases
    else:
        train_ds = None
        if cfg.augment and cfg.augment != "none" and cfg.epochs_finetune > 0:
            from edgeretina.data import make_tf_dataset

            train_ds = make_tf_dataset(parts["train"], pipe, batch_size=cfg.batch_size, shuffle=True,
                                       augment=cfg.augment, seed=seed)
        ph1 = warmup(model, spec, data_arr, cfg, loss, keras_cw, log=say, ckpt_dir=ckpt, callbacks=callbacks,
                     strategy=strat, features=(feats["train"], feats["val"]) if feats else None)
        ph2 = finetune(model, spec, data_arr, cfg, loss, keras_cw, partial_from=bb.partial_from,
                       train_dataset=train_ds, log=say, ckpt_dir=ckpt, callbacks=callbacks, strategy=strat)
        phases = [p for p in (ph1, ph2) if p is not None]
    t_train = time.perf_counter() - t0

    # ---- evaluation: threshold by Youden's J on validation, metrics on val and test
    from edgeretina.metrics import plot_roc, roc_curves_for, threshold_at_sensitivity, youden_threshold

    s_val, _ = evaluate_model(model, spec, va[0], va[1], None, 0)
    threshold = youden_threshold(va[1], s_val) if spec.kind is TaskKind.BINARY else None
    from edgeretina.metrics import evaluate

    metrics: dict[str, Any] = {"task": spec.task.value, "kind": spec.kind.value,
                               "objective": {"binary": "auroc", "multiclass": "quadratic_kappa",
                                             "multilabel": "macro_auroc"}[spec.kind.value]}
    metrics["val"] = evaluate(spec, va[1], s_val, threshold, n_boot, seed)
    curves = {"val": (va[1], s_val)}
    if spec.kind is TaskKind.BINARY:
        t_sens = threshold_at_sensitivity(va[1], s_val, sensitivity)
        metrics["threshold"] = {"method": "youden_j_on_val", "value": threshold,
                                f"at_sensitivity_{sensitivity:g}_on_val": t_sens}
    if "test" in arrays:
        te = arrays["test"]
        s_test, m_test = evaluate_model(model, spec, te[0], te[1], threshold, n_boot, seed)
        metrics["test"] = m_test
        if spec.kind is TaskKind.BINARY:
            from edgeretina.metrics import binary_metrics

            metrics["test_at_sensitivity"] = binary_metrics(te[1], s_test, t_sens)
        curves["test"] = (te[1], s_test)
    if base is not None:
        probe_scores = base.pop("_test_scores")
        if "test" in metrics:
            from edgeretina.compare import delong_test

            d = delong_test(arrays["test"][1], s_test, probe_scores)
            base["delong_model_minus_probe"] = {"delta": d.delta, "ci95": list(d.ci95()), "p": d.p}
        metrics["baseline_logreg_frozen_features"] = base
    if grid_result is not None:
        metrics["grid"] = grid_result.summary()
    metrics["phases"] = [{"name": p.name, "epochs_run": p.epochs_run, "best_epoch": p.best_epoch,
                          "best_val_loss": p.best_val_loss, "stopped_early": p.stopped_early,
                          "seconds": round(p.seconds, 2), "resumed_from_epoch": p.resumed_from} for p in phases]
    metrics["seconds"] = {"load_images": round(t_load, 2), "train": round(t_train, 2),
                          "total": round(time.perf_counter() - t_start, 2)}

    # ---- write the run dir
    save_clean_model(model, out / MODEL_FILE)
    rc = RunConfig(task=spec.task.value, kind=spec.kind.value, labels=tuple(spec.labels),
                   preprocessing=pipe.to_json(), arch=bb.name, input_size=size, weights=info["weights"],
                   head=info["head"], positive_index=spec.positive_index,
                   output={"activation": spec.activation, "kind": "probabilities"}, threshold=threshold,
                   dataset={"path": str(data), "format": ds.format,
                            "split": {"scheme": split or "default", "seed": seed,
                                      **{k: len(v) for k, v in parts.items()}},
                            "subsample": {"max_train": max_train, "max_val": max_val, "max_test": max_test}},
                   extra={"train": cfg.to_dict(), "arch_options": info["arch_options"], "scaling": info["scaling"],
                          "strategy": strategy or "default", "class_weights": {str(k): v for k, v in cw.items()},
                          **({"grid_best": grid_result.best} if grid_result else {})})
    rc.save(out)
    rows = [r for p in phases for r in p.history]
    write_text_atomic(out / "history.csv", _history_csv(rows))
    write_json_atomic(out / "metrics.json", metrics)
    plot_roc(out / "roc.png", roc_curves_for(spec, curves), title=f"{bb.keras_name} · {spec.task.value}")
    if ckpt.exists():
        shutil.rmtree(ckpt, ignore_errors=True)
    for f in (out / "grid").glob("*.weights.h5"):  # per-trial weights: only needed while the search runs
        f.unlink()
    metrics["seconds"]["total"] = round(time.perf_counter() - t_start, 2)
    metrics["seconds"]["cpu_process"] = round(time.process_time() - cpu_start, 2)  # all threads, user+sys
    write_json_atomic(out / "metrics.json", metrics)
    say(f"done in {metrics['seconds']['total']:.0f} s → {out / MODEL_FILE}, {out / CONFIG_FILE}")
    return Path(out)
