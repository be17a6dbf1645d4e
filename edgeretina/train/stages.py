"""The stages of ``edgeretina train`` (:func:`edgeretina.train.run.train_run`), one method each:

    check → data → model → load → features → baseline → [cv] → fit → evaluate → write

``TrainRun`` holds the per-run context explicitly (no string-keyed caches). With ``RunOptions.cv = K`` the
``cv`` stage cross-validates the recipe on the development records (train + val; :mod:`edgeretina.train.cv`),
the final model then trains on all of them for the folds' median best epoch counts, its threshold comes from
the pooled out-of-fold scores, and the test split is scored once, at the end. ``cv_only`` stops after the CV
(recipe selection: the test split is never loaded).
"""
from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from edgeretina.errors import DataError, EdgeRetinaError, ModelError
from edgeretina.io import ensure_writable_dir, write_json_atomic, write_text_atomic
from edgeretina.tasks import TaskKind, scores_from_output, task_spec
from edgeretina.train.helpers import (CHECKPOINT_DIR, check_task_served, evaluate_model, history_csv,
                                      logreg_probe, make_strategy, save_clean_model, subsample)
from edgeretina.train.options import HeadFit, RunOptions
from edgeretina.train.loop import PhaseEnv
from edgeretina.train.two_phase import Arrays, Trainee, finetune, warmup
from edgeretina.augment import get_policy
from edgeretina.compare import delong_test
from edgeretina.data import class_weights, load_arrays, load_image, make_tf_dataset, open_dataset
from edgeretina.data.loading import count_disc_flags
from edgeretina.metrics import (auroc, binary_metrics, bootstrap_auroc, evaluate, plot_roc, roc_curves_for,
                                threshold_at_sensitivity, youden_threshold)
from edgeretina.models import build_model, get_backbone, normalize_weights
from edgeretina.models.macs import count_macs
from edgeretina.preprocess import Pipeline
from edgeretina.run import CONFIG_FILE, MODEL_FILE, RunConfig
from edgeretina.shifts import Benign, perturb, random_camera
from edgeretina.tasks import Task
from edgeretina.train import features as F
from edgeretina.train.consistency import COPIES, reacquire
from edgeretina.train.cv import cross_validate
from edgeretina.train.freezing import FreezePolicy
from edgeretina.train.grid import grid_search
from edgeretina.train.linear_head import LinearHeadOptions, Nuisance, check_linear_head, fit_linear_head
from edgeretina.train.loop import PhaseResult, predict_fast
from edgeretina.train.losses import LossName, make_loss
from edgeretina.tta import averaged_scores

CV_FILE = "cv.json"


class TrainRun:
    def __init__(self, data, task: str, arch: str, out, opts: RunOptions, *,
                 log: Callable[[str], None] | None = None, callbacks=()):
        self.data, self.task, self.arch, self.out_arg, self.o = data, task, arch, out, opts
        self.say = self.log_always = log or (lambda m: None)
        self.callbacks = callbacks
        self.cfg = opts.cfg
        self.t_start, self.cpu_start = time.perf_counter(), time.process_time()
        self.metrics: dict[str, Any] = {}
        self.cv = None
        self.oof = None
        self.linear = opts.head_fit is HeadFit.LINEAR
        self.linear_fits: list = []

    # ------------------------------------------------------------------ stages
    def run(self) -> Path:
        fresh = not Path(self.out_arg).exists()
        try:
            self.check()
            self.load_data()
            self.build_model()
        except EdgeRetinaError:  # a refused run (bad data, model or option) leaves no empty run dir behind
            if fresh and Path(self.out_arg).is_dir() and not any(Path(self.out_arg).iterdir()):
                Path(self.out_arg).rmdir()
            raise
        self.load_images()
        self.compute_features()
        if self.o.cv:
            self.cross_validate()
            if self.o.cv_only:
                return self.write_cv_only()
        self.baseline()
        self.fit()
        self.evaluate()
        return self.write()

    def check(self) -> None:
        try:
            self.task_name = Task(self.task).value
        except ValueError:
            task_spec(self.task)  # raises the one-line "unknown task" error
            raise
        self.bb = get_backbone(self.arch)
        self.size = int(self.o.input_size or self.bb.default_size)
        if self.size < self.bb.min_size:
            raise ModelError(f"input size {self.size} is below {self.bb.keras_name}'s minimum of "
                             f"{self.bb.min_size} px")
        self.weights = normalize_weights(self.o.weights)
        FreezePolicy.parse(self.cfg.freeze)
        try:
            LossName(self.cfg.loss)
        except ValueError:
            raise EdgeRetinaError(f"unknown loss '{self.cfg.loss}' (choose from: "
                                  f"{', '.join(l.value for l in LossName)})") from None
        self.strategy = make_strategy(self.o.strategy)
        self.fmt = check_task_served(self.data, self.task_name, (self.o.data_options or {}).get("format"))
        out = ensure_writable_dir(self.out_arg)

        finished = ((out / "metrics.json").is_file() and (out / MODEL_FILE).is_file()) or \
            (self.o.cv_only and (out / CV_FILE).is_file())
        if finished and not (out / CHECKPOINT_DIR).exists():
            if not self.o.overwrite:
                raise EdgeRetinaError(f"{out}: already holds a finished run (choose a new --out or pass overwrite)")
            shutil.rmtree(out / "grid", ignore_errors=True)  # a fresh run: no resuming the old search
        self.out = out
        self.ckpt = out / CHECKPOINT_DIR

    def load_data(self) -> None:
        o = self.o
        opts = {k: v for k, v in (o.data_options or {}).items() if k != "format"}
        self.ds = ds = open_dataset(self.data, self.task_name, format=self.fmt, **opts)
        self.spec = spec = ds.spec
        if o.cv_tta > 1 and spec.kind is not TaskKind.BINARY:
            raise EdgeRetinaError(f"--cv-tta {o.cv_tta} averages a binary screening logit; '{spec.task.value}' is "
                                  f"{spec.kind.value}")
        if o.consistency.on and spec.kind is not TaskKind.BINARY:
            raise EdgeRetinaError(f"--consistency {o.consistency} needs a binary screening task (its λ is chosen "
                                  f"by AUROC and decision flips); '{spec.task.value}' is {spec.kind.value}")
        parts = ds.split(o.split, seed=o.seed)
        self.parts = {"train": subsample(parts["train"], o.max_train, spec, o.seed),
                      "val": subsample(parts["val"], o.max_val, spec, o.seed),
                      "test": [] if o.cv_only else subsample(parts["test"], o.max_test, spec, o.seed)}
        if not self.parts["train"] or not self.parts["val"]:
            raise DataError(f"{self.data}: split '{o.split or 'default'}' leaves no training or validation images")
        if o.pipeline is None:
            pipe = Pipeline.default(self.size, self.bb.scaling.value)
        else:
            pipe = o.pipeline if isinstance(o.pipeline, Pipeline) else Pipeline.from_json(o.pipeline)
            if pipe.input_size not in (None, self.size):
                raise DataError(f"preprocessing resizes to {pipe.input_size} px but the model input is {self.size} px")
            if pipe.scaling != self.bb.scaling.value:
                self.say(f"note: pipeline scaling '{pipe.scaling}' differs from {self.bb.keras_name}'s "
                         f"'{self.bb.scaling.value}'")
        if pipe.two_view and self.cfg.augment and self.cfg.augment != "none" and not (
                self.linear and self.cfg.augment == "camera"):
            raise EdgeRetinaError("the two-view input takes only '--head-fit linear --augment camera' (camera shifts "
                                  "drawn on the raw photo, before the views are cut); a flip or rotation of the "
                                  "side-by-side image would mix the two views")
        self.pipe = pipe
        p = self.parts
        self.say(f"data: {ds.format} {spec.task.value}  train {len(p['train'])}  val {len(p['val'])}  "
                 f"test {'(locked: --cv-only)' if o.cv_only else len(p['test'])}  preprocessing: {pipe.describe()}")

    def build_model(self) -> None:
        """Built before the images load, so a bad weights file fails fast."""
        from contextlib import nullcontext


        with (self.strategy.scope() if self.strategy is not None else nullcontext()):
            self.model = build_model(self.bb.name, self.spec, self.size, self.weights, self.o.head,
                                     two_view=self.pipe.two_view, mid_pool=self.o.mid_pool,
                                     **(self.o.arch_options or {}))
        self.info = self.model.edgeretina
        if self.linear:
            check_linear_head(self.model, int(self.model.get_layer("head_gap").output.shape[-1]))
        self.init_weights = self.model.get_weights() if self.o.cv else None
        train_recs = self.parts["train"] + (self.parts["val"] if self.o.cv else [])
        self.cw = class_weights(train_recs, self.spec)
        self.loss, self.keras_cw = make_loss(self.cfg.loss, self.spec, self.cw)

    def load_images(self) -> None:
        t0 = time.perf_counter()
        self.arrays = {k: load_arrays(v, self.pipe, self.spec) for k, v in self.parts.items() if v}
        self.t_load = time.perf_counter() - t0
        self.say(f"loaded {sum(len(a[0]) for a in self.arrays.values())} images in {self.t_load:.1f} s")
        self.disc_flags = self._disc_flags()

    def _disc_flags(self) -> dict[str, Any] | None:
        """Low-confidence / fallback optic-disc crops per split (only when the pipeline crops the ONH)."""
        if not self.pipe.uses_onh:
            return None

        flags = {k: count_disc_flags(v, self.pipe) for k, v in self.parts.items() if v}
        self.say("optic-disc crops flagged (low confidence / fallback): " +
                 ", ".join(f"{k} {f.get('flagged', 0)}/{f.get('n', 0)}" for k, f in flags.items()))
        return flags

    def compute_features(self) -> None:
        """Pooled features of the frozen ImageNet backbone: the warm-up's cache and the probe's input. In CV
        mode the backbone starts from the same weights in every fold, so one pass serves all folds."""

        self.feats = None
        self.reacq_feats = []
        binary = self.spec.kind is TaskKind.BINARY
        if not (self.cfg.cache_features or self.o.baseline or self.linear):
            return
        t0 = time.perf_counter()
        fm = F.pooled_feature_model(self.model)
        self.feats = {k: F.compute(fm, a[0]) for k, a in self.arrays.items()
                      if k != "test" or (self.o.baseline and binary)}
        self.say(f"cached pooled backbone features ({self.feats['train'].shape[1]}-d) of "
                 f"{sum(len(f) for f in self.feats.values())} images in {time.perf_counter() - t0:.1f} s")
        self.aug_feats = self._augmented_features(fm) if self.linear else []
        self.reacq_feats = self._reacquired_features(fm)

    def _augmented_features(self, fm) -> list:
        """Linear head + ``--augment``: pooled features of ``aug_copies`` augmented passes over train + val
        (in that order, as :meth:`_dev`), one seed per copy; a fit on records ``idx`` adds their copies."""

        if not (self.cfg.augment and self.cfg.augment != "none"):
            return []
        recs = self.parts["train"] + self.parts["val"]
        if self.pipe.two_view:
            return self._raw_camera_features(fm, recs)
        out = []
        for c in range(int(self.o.aug_copies)):
            t0 = time.perf_counter()
            ds = self._augmented_dataset(self.cfg.with_(seed=self.cfg.seed + 1000 * (c + 1)), recs, shuffle=False)
            out.append(F.compute(fm, ds))
            self.say(f"augmented copy {c + 1}/{self.o.aug_copies} ('{self.cfg.augment}') of {len(recs)} images: "
                     f"features in {time.perf_counter() - t0:.1f} s")
        return out

    def _raw_camera_features(self, fm, recs) -> list:
        """Two-view + ``--augment camera``: each copy draws the ``camera`` policy's shifts (two, random kind
        and strength up to severe) on the **raw photo**, then runs the whole pipeline — the disc locator and
        both views see the shifted photo, as they would with another camera. Seeded per (copy, record)."""

        pol = get_policy("camera", False)
        draw = lambda img, rng: random_camera(img, rng, n=pol.camera, max_strength=pol.camera_strength)  # noqa: E731
        return self._raw_copies(fm, recs, draw, int(self.o.aug_copies), 1000, "camera copy", "raw-photo shifts")

    def _reacquired_features(self, fm) -> list:
        """``--consistency``: pooled features of ``consistency.COPIES`` benign re-acquisitions of every
        development image (:func:`edgeretina.train.consistency.reacquire`, own seeds), whose changes from the
        originals estimate the nuisance covariance the linear head is penalised along."""

        if not (self.linear and self.o.consistency.on):
            return []
        return self._raw_copies(fm, self.parts["train"] + self.parts["val"], reacquire, COPIES, 5000,
                                "re-acquired copy", "consistency penalty")

    def _raw_copies(self, fm, recs, draw, copies: int, salt: int, what: str, why: str) -> list:
        """Features of ``copies`` passes over ``recs``, each photo ``draw(raw photo, rng)`` then the whole
        pipeline; ``rng`` seeded by (training seed, ``salt`` × copy, record)."""
        from concurrent.futures import ThreadPoolExecutor


        out = []
        for c in range(copies):
            t0 = time.perf_counter()

            def one(i, c=c):
                return self.pipe.apply(draw(load_image(recs[i]), np.random.default_rng([self.cfg.seed, salt * (c + 1), i])))
            with ThreadPoolExecutor(2) as ex:
                X = np.stack(list(ex.map(one, range(len(recs)))))
            out.append(F.compute(fm, X))
            self.say(f"{what} {c + 1}/{copies} ({why}) of {len(recs)} images: features in "
                     f"{time.perf_counter() - t0:.1f} s")
        return out

    # ------------------------------------------------------------------ CV
    def _dev(self):
        tr, va = self.arrays["train"], self.arrays["val"]
        X = np.concatenate([tr[0], va[0]])
        y = np.concatenate([tr[1], va[1]])
        f = np.concatenate([self.feats["train"], self.feats["val"]]) if self.feats else None
        return self.parts["train"] + self.parts["val"], X, y, f

    def _trainee(self, ckpt=None, callbacks=()) -> Trainee:
        """The model as the phases train it, logging through the current ``self.say``."""
        return Trainee(self.model, self.spec, self.loss, self.keras_cw,
                       PhaseEnv(log=self.say, ckpt_dir=ckpt, callbacks=tuple(callbacks), strategy=self.strategy))

    def _fit_linear(self, feats, y, records, seed: int, idx=None):
        """The ``linear`` recipe: one closed-form head fit (penalty by inner grouped CV), no SGD phases.
        ``idx``: the records' rows in train + val, whose augmented copies (if any) join the fit."""

        nuisance = None
        if self.reacq_feats and idx is not None:  # rows: the re-acquired copies' records among the fitted rows
            nuisance = Nuisance(np.concatenate([r[idx] - feats for r in self.reacq_feats]),
                                np.tile(np.arange(len(idx)), len(self.reacq_feats)))
        if self.aug_feats and idx is not None:  # copies keep their record's group: inner folds never split them
            feats = np.concatenate([feats] + [a[idx] for a in self.aug_feats])
            y = np.concatenate([y] * (1 + len(self.aug_feats)))
            records = list(records) * (1 + len(self.aug_feats))

        r = fit_linear_head(self.model, self.spec, feats, y, [rec.group for rec in records],
                            LinearHeadOptions(seed=seed, lambdas=self.o.consistency.lambdas,
                                              sd_floor=float(self.o.linear_sd_floor),
                                              **({"cs": tuple(self.o.linear_cs)} if self.o.linear_cs else {})),
                            nuisance)
        self.linear_fits.append(r)
        self.say(f"linear head: C {r.C:g} chosen by {r.inner_k}-fold inner CV on {r.n} records"
                 + (f", consistency λ {r.lam:g}" if nuisance is not None else "") + f" ({r.seconds:.1f} s)")
        return [PhaseResult("linear", 0, 0, None, False, r.seconds, [])]

    def _fit_arrays(self, cfg, data: Arrays, feats, ckpt=None):
        if self.linear:
            return self._fit_linear(feats[0], data.y_train, self.parts["train"], cfg.seed,
                                    np.arange(len(data.y_train)))
        job = self._trainee(ckpt, self.callbacks)
        ph1 = warmup(job, data, cfg, features=feats)
        train_ds = None
        if cfg.augment and cfg.augment != "none" and cfg.epochs_finetune > 0:
            train_ds = self._augmented_dataset(cfg)
        ph2 = finetune(job, data, cfg, partial_from=self.bb.partial_from, train_dataset=train_ds)
        return [p for p in (ph1, ph2) if p is not None]

    def _augmented_dataset(self, cfg, records=None, shuffle: bool = True):
        return make_tf_dataset(records if records is not None else self.parts["train"], self.pipe,
                               batch_size=cfg.batch_size if shuffle else 64, shuffle=shuffle, augment=cfg.augment,
                               seed=cfg.seed, spec=self.spec)

    def cross_validate(self) -> None:
        recs, X, y, f = self._dev()
        say = self.say
        quiet = lambda m: None  # noqa: E731  (per-epoch lines of K folds would flood the terminal)
        cache = self.ckpt / "cv"
        cache.mkdir(parents=True, exist_ok=True)
        probe_oof = np.full(len(y), np.nan)
        shifted = self._shifted_dev(recs)
        oof_shift = {k: np.full(len(y), np.nan) for k in shifted}

        def fit(tr, va, seed, tag):
            step = int(tag.split()[-1].split("/")[0])  # "cv 7/15": fold (7 - 1) % K + 1 of this seed
            key = cache / f"{(step - 1) % int(self.o.cv) + 1}of{int(self.o.cv)}_seed{seed}.npz"
            self.model.set_weights(self.init_weights)
            cfg = self.cfg.with_(seed=int(seed))
            if key.is_file():  # resume: this fold finished before an interruption
                with np.load(key, allow_pickle=False) as z:
                    cached = {n: z[n] for n in z.files}

                def cached_score(idx):
                    if "probe" in cached:
                        probe_oof[idx] = cached["probe"]
                    for k in oof_shift:
                        if f"shift_{k}" in cached:
                            oof_shift[k][idx] = cached[f"shift_{k}"]
                    return cached["scores"]
                return cached_score, {k[3:]: int(cached[k]) for k in cached if k.startswith("ep_")}
            data = Arrays(X[tr], y[tr], X[va], y[va])
            feats = (f[tr], f[va]) if f is not None else None
            self.say = quiet
            def fold_cut(feat_model):
                acts = self._cut_cache(feat_model, X)
                return acts[tr], acts[va]
            cut = None if (cfg.augment and cfg.augment != "none") else fold_cut
            try:
                dev_idx = np.concatenate([tr, va])
                phases = (self._fit_linear(f[dev_idx], y[dev_idx], [recs[i] for i in dev_idx], int(seed), dev_idx)
                          if self.linear else self._fit_arrays_cv(cfg, data, feats, [recs[i] for i in tr], cut))
            finally:
                self.say = say
            best = {p.name: int(p.best_epoch) for p in phases}

            def score(idx):
                s = self._cv_scores(X[idx])
                extra = {}
                if f is not None and self.spec.kind is TaskKind.BINARY:
                    dev = np.concatenate([tr, va])
                    extra["probe"] = probe_oof[idx] = _probe_scores(f[dev], y[dev], f[idx])
                for k, xs in shifted.items():
                    extra[f"shift_{k}"] = oof_shift[k][idx] = self._cv_scores(xs[idx])
                np.savez(key, scores=s, **extra, **{f"ep_{k}": v for k, v in best.items()})
                return s
            return score, best

        self.cv, self.oof = cross_validate(recs, y, self.spec, fit, k=int(self.o.cv), seeds=self.o.cv_seeds,
                                           n_boot=self.o.n_boot, sensitivity=self.o.sensitivity, log=say)
        self._cv_robustness(y, oof_shift)
        self.cv_rows = [{"key": r.key, "patient": r.patient, "y": _y_text(yv), "oof_score": _y_text(sv),
                         "probe_oof_score": "" if not np.isfinite(pv) else f"{pv:.6g}"}
                        for r, yv, sv, pv in zip(recs, y, self.oof, probe_oof)]
        self.cv_probe = None
        if np.isfinite(probe_oof).all():
            d = delong_test(y, self.oof, probe_oof)
            self.cv_probe = {"model": "logistic regression (C=0.1, balanced) on frozen pooled features, same folds",
                             **bootstrap_auroc(y, probe_oof, self.o.n_boot, self.o.seed).to_dict(),
                             "delong_model_minus_probe": {"delta": d.delta, "ci95": list(d.ci95()), "p": d.p}}
        say(self.cv.headline())
        if self.cv_probe:
            say(f"frozen-feature probe, same folds: pooled out-of-fold AUROC {self.cv_probe['auroc']:.3f} "
                f"(model − probe {self.cv_probe['delong_model_minus_probe']['delta']:+.3f}, "
                f"DeLong p {self.cv_probe['delong_model_minus_probe']['p']:.3f})")

    def _cv_scores(self, x):
        """A fold model's scores of held-out images; with ``--cv-tta K`` the mean logit over K input moves."""
        one = lambda b: scores_from_output(self.spec, predict_fast(self.model, b))  # noqa: E731
        return averaged_scores(one, x, int(self.o.cv_tta), self.pipe.two_view) if self.o.cv_tta > 1 else one(x)

    def _cv_robustness(self, y, oof_shift: dict) -> None:
        """After the folds: the CV shift / benign-perturbation summary with flip rates, the threshold margin,
        and the folds' own penalties (C, consistency λ; not the final fit's)."""
        self.cv_shifted = _shifted_summary(self.spec, y, {**oof_shift, "_oof": self.oof},
                                           self.cv.pooled.get("auroc"), self.cv.threshold)
        self.cv_margin = _margin_report(self.spec, self.oof, self.cv.threshold, self.cv_shifted)
        self.fold_C = [r.C for r in self.linear_fits]
        self.fold_lam = [r.lam for r in self.linear_fits] if self.reacq_feats else []

    def _shifted_dev(self, recs) -> dict:
        """``--cv-shifts``: the development images again, each under a seeded camera shift, preprocessed like
        the originals; every fold model also scores its held-out eyes on them (a robustness figure that never
        touches the test split)."""
        from concurrent.futures import ThreadPoolExecutor


        out = {}
        for item in self.o.cv_shifts:
            name, _, level = str(item).partition(":")
            benign = not level and name.strip().lower() in {b.value for b in Benign}
            level = None if benign else (level or "severe")
            t0 = time.perf_counter()

            def one(i, name=name, level=level):
                return self.pipe.apply(perturb(load_image(recs[i]), name, level, seed=[0, i]))
            with ThreadPoolExecutor(2) as ex:
                out[name if benign else f"{name}-{level}"] = np.stack(list(ex.map(one, range(len(recs)))))
            self.log_always(f"cv {'benign perturbation' if benign else 'shift'} {name}"
                            f"{'' if benign else f' ({level})'}: {len(recs)} development images in "
                            f"{time.perf_counter() - t0:.1f} s")
        return out

    def _cut_cache(self, feat_model, X):
        """Activations of the frozen lower part for all development images, computed once per cut layer."""

        name = feat_model.output.name
        cache = self.__dict__.setdefault("_cut_acts", {})
        if name not in cache:
            t0 = time.perf_counter()
            cache[name] = F.compute(feat_model, X)
            self.log_always(f"cached frozen-part activations {cache[name].shape[1:]} of {len(X)} development images "
                     f"for all folds in {time.perf_counter() - t0:.1f} s")
        return cache[name]

    def _fit_arrays_cv(self, cfg, data, feats, train_records, cut=None):
        job = self._trainee()  # no checkpoint (a fold's scores are its checkpoint), no extra callbacks
        ph1 = warmup(job, data, cfg, features=feats)
        train_ds = None
        if cfg.augment and cfg.augment != "none" and cfg.epochs_finetune > 0:
            train_ds = self._augmented_dataset(cfg, train_records)
        ph2 = finetune(job, data, cfg, partial_from=self.bb.partial_from, train_dataset=train_ds, cut_features=cut)
        return [p for p in (ph1, ph2) if p is not None]

    def cv_dict(self) -> dict[str, Any]:
        d = self.cv.to_dict()
        d["head_fit"] = self.o.head_fit.value
        if getattr(self, "cv_shifted", None):
            d["shifted"] = self.cv_shifted
        if getattr(self, "fold_C", None):  # the folds' own penalty choices (absent for folds resumed from cache)
            d["linear_head_C"] = self.fold_C
        if getattr(self, "cv_margin", None):
            d["threshold_margin"] = self.cv_margin
        if self.o.cv_tta > 1:
            d["tta"] = {"k": int(self.o.cv_tta), "note": "every CV score (and shifted score) is the mean logit over "
                        "k moves of the model input (edgeretina.tta): k model runs per photo"}
        if getattr(self, "fold_lam", None):
            d["consistency"] = {"option": str(self.o.consistency), "fold_lambda": self.fold_lam,
                                "inner": [r.consistency for r in self.linear_fits if r.consistency]}
        if self.cv_probe:
            d["baseline_logreg_frozen_features"] = self.cv_probe
        if self.disc_flags:
            d["disc_flags"] = self.disc_flags
        return d

    def write_oof(self) -> None:
        """``cv_oof.csv``: every development record's out-of-fold score (first seed) — for audits and for
        evaluating ensembles of recipes on the same folds without retraining."""
        import csv
        import io

        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=list(self.cv_rows[0]), lineterminator="\n")
        w.writeheader()
        w.writerows(self.cv_rows)
        write_text_atomic(self.out / "cv_oof.csv", buf.getvalue())

    def write_cv_only(self) -> Path:
        d = {"task": self.spec.task.value, "arch": self.bb.name, "input_size": self.size,
             "head_fit": self.o.head_fit.value,
             "macs": count_macs(self.model),
             "preprocessing": self.pipe.to_json(), "train": self.cfg.to_dict(),
             "dataset": self._dataset_dict(), "cv": self.cv_dict(),
             "seconds": round(time.perf_counter() - self.t_start, 2)}
        self.write_oof()
        keep = self.out / "cv_folds"  # the folds' scores: a later `train --cv` of this recipe reuses them
        shutil.rmtree(keep, ignore_errors=True)
        shutil.copytree(self.ckpt / "cv", keep)
        write_json_atomic(self.out / CV_FILE, d)
        shutil.rmtree(self.ckpt, ignore_errors=True)
        self.say(f"cv only: {self.out / CV_FILE} (the test split was not loaded)")
        return Path(self.out)

    # ------------------------------------------------------------------ final fit
    def baseline(self) -> None:
        self.base = None
        if not (self.o.baseline and self.spec.kind is TaskKind.BINARY and "test" in self.arrays):
            return
        tr, va = self.arrays["train"], self.arrays["val"]
        test = (self.feats["test"], self.arrays["test"][1])
        if self.o.cv:  # the final model trains on train+val: so does the probe
            ftr, ytr = np.concatenate([self.feats["train"], self.feats["val"]]), np.concatenate([tr[1], va[1]])
            self.base = logreg_probe(self.spec, (ftr, ytr), test, n_boot=self.o.n_boot, seed=self.o.seed)
        else:
            self.base = logreg_probe(self.spec, (self.feats["train"], tr[1]), test, (self.feats["val"], va[1]),
                                     n_boot=self.o.n_boot, seed=self.o.seed)
        self.say(f"baseline: logistic regression on frozen features, test AUROC {self.base['auroc']:.3f} "
                 f"({self.base['auroc_ci_low']:.3f}-{self.base['auroc_ci_high']:.3f})")

    def fit(self) -> None:
        t0 = time.perf_counter()
        self.grid_result = None
        if self.o.cv:
            self.phases = self._fit_final_on_dev()
        elif self.o.grid:
            tr, va = self.arrays["train"], self.arrays["val"]
            self.grid_result = grid_search(
                self._trainee(callbacks=self.callbacks), Arrays(tr[0], tr[1], va[0], va[1]), self.cfg, self.out,
                space=self.o.grid_space, partial_from=self.bb.partial_from,
                features=(self.feats["train"], self.feats["val"]) if self.feats else None)
            self.phases = self.grid_result.phases
        else:
            tr, va = self.arrays["train"], self.arrays["val"]
            feats = (self.feats["train"], self.feats["val"]) if self.feats else None
            self.phases = self._fit_arrays(self.cfg, Arrays(tr[0], tr[1], va[0], va[1]), feats, self.ckpt)
        self.t_train = time.perf_counter() - t0

    def _fit_final_on_dev(self):
        """All development records train, for the folds' median best epoch count (no early stopping: there
        is no held-out data left); the validation split is only watched, never used to pick weights."""
        recs, X, y, f = self._dev()
        if self.linear:
            self.say(f"final model: linear head on all {len(y)} development records")
            return self._fit_linear(f, y, recs, self.cfg.seed, np.arange(len(y)))
        ep = self.cv.final_epochs
        cfg = self.cfg.with_(epochs_warmup=ep.get("warmup", self.cfg.epochs_warmup),
                             epochs_finetune=ep.get("finetune", 0) if self.cfg.epochs_finetune > 0 else 0,
                             patience=10 ** 6, restore_best=False)
        self.model.set_weights(self.init_weights)
        self.say(f"final model: all {len(y)} development records, epochs {ep} (median best epochs of the folds)")
        va = self.arrays["val"]
        data = Arrays(X, y, va[0], va[1])
        feats = (f, self.feats["val"]) if f is not None else None
        job = self._trainee(self.ckpt, self.callbacks)
        ph1 = warmup(job, data, cfg, features=feats)
        train_ds = self._augmented_dataset(cfg, recs) if cfg.augment and cfg.augment != "none" \
            and cfg.epochs_finetune > 0 else None
        n_va = len(va[1])

        def cut(feat_model):  # dev = train + val in that order: the val activations are the last rows
            acts = self._cut_cache(feat_model, X)
            return acts, acts[len(X) - n_va:]
        ph2 = finetune(job, data, cfg, partial_from=self.bb.partial_from, train_dataset=train_ds,
                       cut_features=None if train_ds is not None else cut)
        return [p for p in (ph1, ph2) if p is not None]

    # ------------------------------------------------------------------ evaluation + run dir
    def evaluate(self) -> None:
        spec, o, va = self.spec, self.o, self.arrays["val"]
        binary = spec.kind is TaskKind.BINARY
        m: dict[str, Any] = {"task": spec.task.value, "kind": spec.kind.value,
                             "objective": {"binary": "auroc", "multiclass": "quadratic_kappa",
                                           "multilabel": "macro_auroc"}[spec.kind.value]}
        s_val, _ = evaluate_model(self.model, spec, va[0], va[1], None, 0)
        self.curves = {}
        if self.o.cv:
            threshold, t_sens = self.cv.threshold, self.cv.threshold_at_sensitivity
            m["cv"] = self.cv_dict()
            if binary:
                m["threshold"] = {"method": "youden_j_on_pooled_cv_out_of_fold_scores", "value": threshold,
                                  f"at_sensitivity_{o.sensitivity:g}_on_cv_out_of_fold": t_sens}
            self.curves["cv out-of-fold"] = (np.concatenate([self.arrays["train"][1], va[1]]), self.oof)
            if spec.kind is TaskKind.MULTILABEL:
                threshold = label_youden(self.curves["cv out-of-fold"][0], self.oof)
                m["threshold"] = {"method": "per_label_youden_j_on_pooled_cv_out_of_fold_scores",
                                  "value": threshold}
        else:
            threshold = youden_threshold(va[1], s_val) if binary else None
            m["val"] = evaluate(spec, va[1], s_val, threshold, o.n_boot, o.seed)
            self.curves["val"] = (va[1], s_val)
            if binary:
                t_sens = threshold_at_sensitivity(va[1], s_val, o.sensitivity)
                m["threshold"] = {"method": "youden_j_on_val", "value": threshold,
                                  f"at_sensitivity_{o.sensitivity:g}_on_val": t_sens}
            elif spec.kind is TaskKind.MULTILABEL:
                threshold = label_youden(va[1], s_val)
                m["threshold"] = {"method": "per_label_youden_j_on_val", "value": threshold}
        self.threshold = threshold
        if "test" in self.arrays:
            te = self.arrays["test"]
            s_test, m_test = evaluate_model(self.model, spec, te[0], te[1], threshold, o.n_boot, o.seed)
            m["test"] = m_test
            if binary:
                m["test_at_sensitivity"] = binary_metrics(te[1], s_test, t_sens)
            self.curves["test"] = (te[1], s_test)
            if self.base is not None:
                probe_scores = self.base.pop("_test_scores")
                d = delong_test(te[1], s_test, probe_scores)
                self.base["delong_model_minus_probe"] = {"delta": d.delta, "ci95": list(d.ci95()), "p": d.p}
        if self.base is not None:
            self.base.pop("_test_scores", None)
            m["baseline_logreg_frozen_features"] = self.base
        if self.disc_flags:
            m["disc_flags"] = self.disc_flags
        if self.linear:
            m["linear_head"] = self.linear_fits[-1].to_dict()
        if self.grid_result is not None:
            m["grid"] = self.grid_result.summary()
        m["phases"] = [{"name": p.name, "epochs_run": p.epochs_run, "best_epoch": p.best_epoch,
                        "best_val_loss": p.best_val_loss, "stopped_early": p.stopped_early,
                        "seconds": round(p.seconds, 2), "resumed_from_epoch": p.resumed_from} for p in self.phases]
        m["seconds"] = {"load_images": round(self.t_load, 2), "train": round(self.t_train, 2),
                        **({"cv": self.cv.seconds} if self.cv else {})}
        self.metrics = m

    def _dataset_dict(self) -> dict[str, Any]:
        o = self.o
        return {"path": str(self.data), "format": self.ds.format,
                "options": {k: v for k, v in (o.data_options or {}).items() if k != "format"},
                "split": {"scheme": o.split or "default", "seed": o.seed, **{k: len(v) for k, v in self.parts.items()}},
                "subsample": {"max_train": o.max_train, "max_val": o.max_val, "max_test": o.max_test}}

    def write(self) -> Path:
        out, spec = self.out, self.spec
        save_clean_model(self.model, out / MODEL_FILE)
        extra = {"train": self.cfg.to_dict(), "head_fit": self.o.head_fit.value,
                 **({"linear_head": self.linear_fits[-1].to_dict()} if self.linear else {}),
                 "arch_options": self.info["arch_options"],
                 **({"mid_pool": self.info["mid_pool"]} if self.info.get("mid_pool") else {}),
                 "scaling": self.info["scaling"], "strategy": self.o.strategy or "default",
                 "class_weights": {str(k): v for k, v in self.cw.items()},
                 **({"grid_best": self.grid_result.best} if self.grid_result else {}),
                 **({"cv": {"k": self.cv.k, "pooled_auroc": self.cv.pooled.get("auroc"), "mean": self.cv.mean,
                            "sd": self.cv.sd, "final_epochs": self.cv.final_epochs,
                            "trained_on": "train+val"}} if self.cv else {})}
        rc = RunConfig(task=spec.task.value, kind=spec.kind.value, labels=tuple(spec.labels),
                       preprocessing=self.pipe.to_json(), arch=self.bb.name, input_size=self.size,
                       weights=self.info["weights"], head=self.info["head"], positive_index=spec.positive_index,
                       output={"activation": spec.activation, "kind": "probabilities"}, threshold=self.threshold,
                       dataset=self._dataset_dict(), extra=extra)
        rc.save(out)
        if self.cv is not None:
            self.write_oof()
        write_text_atomic(out / "history.csv", history_csv([r for p in self.phases for r in p.history]))
        plot_roc(out / "roc.png", roc_curves_for(spec, self.curves), title=f"{self.bb.keras_name} · {spec.task.value}")
        if self.ckpt.exists():
            shutil.rmtree(self.ckpt, ignore_errors=True)
        for f in (out / "grid").glob("*.weights.h5"):  # per-trial weights: only needed while the search runs
            f.unlink()
        self.metrics["seconds"]["total"] = round(time.perf_counter() - self.t_start, 2)
        self.metrics["seconds"]["cpu_process"] = round(time.process_time() - self.cpu_start, 2)
        write_json_atomic(out / "metrics.json", self.metrics)
        self.say(f"done in {self.metrics['seconds']['total']:.0f} s → {out / MODEL_FILE}, {out / CONFIG_FILE}")
        return Path(out)


def label_youden(y, scores) -> list[float]:
    """A multi-label model's per-label thresholds: Youden's J of each label's scores (validation or pooled
    out-of-fold data, never test); stored as the list ``config.json`` ``threshold`` (the Android core and
    ``runtime.decisions.screening_threshold`` read one value per label)."""
    y, s = np.asarray(y), np.asarray(scores, dtype=np.float64)
    return [float(youden_threshold(y[:, j], s[:, j])) for j in range(s.shape[1])]


def _shifted_summary(spec, y, oof_shift: dict, pooled, threshold=None) -> dict:
    """Pooled out-of-fold AUROC under each CV shift / benign perturbation, its change from the unshifted
    pooled AUROC and (binary, with the pooled Youden threshold) the **decision flip rate**: the share of
    out-of-fold eyes whose screening decision the perturbation changes, and the sd of their logit change
    (issue 18's stability floor, on CV). Keys ``_oof``: the unshifted scores, needed for the flips."""

    if spec.kind is not TaskKind.BINARY:
        return {}
    base = oof_shift.get("_oof")
    lg = lambda p: np.log(np.clip(p, 1e-7, 1 - 1e-7) / np.clip(1 - p, 1e-7, 1 - 1e-7))  # noqa: E731
    out = {}
    for k, s in oof_shift.items():
        if k == "_oof" or not np.isfinite(s).all():
            continue
        a = float(auroc(y, s))
        out[k] = {"auroc": a, "delta_auroc": None if pooled is None else a - float(pooled)}
        if k in {b.value for b in Benign}:
            out[k]["benign"] = True
        if base is not None and threshold is not None and np.isfinite(base).all():
            out[k]["flip_rate"] = float(np.mean((base >= threshold) != (s >= threshold)))
            out[k]["logit_change_sd"] = float(np.std(lg(s) - lg(base)))
    return out


def _margin_report(spec, oof, threshold, shifted: dict) -> dict | None:
    """The threshold margin: share of out-of-fold eyes whose logit lies within ±δ of the threshold's, for
    δ = 0.1, 0.25, 0.5 and δ = 1.96 × the largest logit-change sd under the benign CV perturbations (the
    decisions a benign re-acquisition can flip; the bench's borderline band on the test split)."""
    if spec.kind is not TaskKind.BINARY or threshold is None or not np.isfinite(oof).all():
        return None
    lg = lambda p: np.log(np.clip(p, 1e-7, 1 - 1e-7) / np.clip(1 - p, 1e-7, 1 - 1e-7))  # noqa: E731
    dist = np.abs(lg(np.asarray(oof, dtype=np.float64)) - lg(np.float64(threshold)))
    sds = [v["logit_change_sd"] for v in shifted.values() if v.get("benign") and "logit_change_sd" in v]
    deltas = {f"{d:g}": d for d in (0.1, 0.25, 0.5)}
    if sds:
        deltas["benign_band"] = 1.96 * max(sds)
    return {"threshold_logit": float(lg(np.float64(threshold))), "logit_sd": float(np.std(lg(np.asarray(oof)))),
            "share_within": {k: float(np.mean(dist <= d)) for k, d in deltas.items()},
            **({"benign_band_logit": deltas["benign_band"]} if sds else {})}


def _probe_scores(f_train, y_train, f_eval) -> np.ndarray:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    clf = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=3000, class_weight="balanced"))
    clf.fit(f_train, y_train)
    return clf.predict_proba(f_eval)[:, 1]


def _y_text(v) -> str:
    a = np.atleast_1d(np.asarray(v, dtype=np.float64))
    return " ".join(f"{x:.6g}" for x in a)
