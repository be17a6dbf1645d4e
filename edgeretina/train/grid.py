"""Grid search over the fine-tuning learning rate × batch size with KerasTuner's ``GridSearch``.

The head is warmed up once (the warm-up does not depend on the fine-tuning hyper-parameters); every trial
restores the warmed-up weights, fine-tunes with its (lr, batch size) and is scored on the validation set:
AUROC (binary), quadratic weighted κ (DR grading), macro AUROC (multi-label). KerasTuner keeps the oracle
state in ``<run dir>/grid/``, so an interrupted search resumes with the trials it has not finished. The
best trial's weights end up in the model; ``grid_results.csv`` in the run dir lists every trial.

KerasTuner 1.4 runs on multi-backend Keras 3 while edgeretina trains tf_keras models, so the tuner's
``run_trial`` is overridden to call edgeretina's own training (no Keras 3 callbacks touch the model).
"""
from __future__ import annotations

import csv
import itertools
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgeretina.io import write_text_atomic
from edgeretina.tasks import TaskKind, TaskSpec
from edgeretina.train.loop import PhaseResult
from edgeretina.train.two_phase import Arrays, TrainConfig, Trainee, finetune, warmup
from edgeretina.metrics import primary_score
from edgeretina.tasks import scores_from_output

DEFAULT_SPACE = {"lr": [1e-5, 5e-5, 1e-4], "batch_size": [8, 12]}


def objective_name(spec: TaskSpec) -> str:
    return {TaskKind.BINARY: "val_auroc", TaskKind.MULTICLASS: "val_kappa",
            TaskKind.MULTILABEL: "val_macro_auroc"}[spec.kind]


@dataclass
class GridResult:
    objective: str
    trials: list[dict[str, Any]]
    best: dict[str, Any]
    phases: list[PhaseResult]

    def summary(self) -> dict[str, Any]:
        return {"objective": self.objective, "best": self.best, "trials": self.trials}


def _table(trials: list[dict[str, Any]], objective: str) -> str:
    buf = io.StringIO()
    cols = ["trial", "lr", "batch_size", objective, "epochs_run", "best_epoch", "best_val_loss", "seconds"]
    w = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for t in sorted(trials, key=lambda t: -t[objective] if np.isfinite(t[objective]) else np.inf):
        w.writerow(t)
    return buf.getvalue()


@dataclass(frozen=True)
class _Trials:
    """One grid trial at a time: restore the warmed-up weights, fine-tune with the trial's (lr, batch size),
    score on the validation set, keep the weights in ``grid/`` and the trial's row in ``grid/trials.json``."""

    job: Trainee
    data: Arrays
    cfg: TrainConfig
    gdir: Path
    start_weights: list
    partial_from: str | None
    obj: str

    @property
    def file(self) -> Path:
        return self.gdir / "trials.json"

    def done(self) -> list[dict[str, Any]]:
        return json.loads(self.file.read_text()) if self.file.is_file() else []

    def run(self, trial_id: str, lr: float, bs: int) -> dict[str, float]:
        job, data, model = self.job, self.data, self.job.model
        job.log(f"[grid] trial {trial_id}: lr {lr:g}, batch {bs}")
        model.set_weights(self.start_weights)
        ph = finetune(job, data, self.cfg.with_(lr_finetune=lr, batch_size=bs), partial_from=self.partial_from)
        s = scores_from_output(job.spec, model.predict(data.x_val, batch_size=64, verbose=0))
        score = float(primary_score(job.spec, data.y_val, s))
        model.save_weights(str(self.gdir / f"trial_{trial_id}.weights.h5"))
        rec = {"trial": trial_id, "lr": lr, "batch_size": bs, self.obj: score,
               "epochs_run": ph.epochs_run if ph else 0, "best_epoch": ph.best_epoch if ph else 0,
               "best_val_loss": ph.best_val_loss if ph else float("nan"),
               "seconds": round(ph.seconds, 2) if ph else 0.0}
        done = [t for t in self.done() if t["trial"] != trial_id] + [rec]
        write_text_atomic(self.file, json.dumps(done, indent=1))
        job.log(f"[grid] trial {trial_id}: {self.obj} {score:.4f}")
        return {self.obj: score}


def _tuner_classes(kt, trials: _Trials):
    """KerasTuner's oracle and tuner, resumable, with edgeretina's own training in ``run_trial``."""

    class _Oracle(kt.oracles.GridSearchOracle):
        """Grid order without in-memory state: the first combination not tried yet (KerasTuner's own
        linked list is not persisted, so its GridSearch cannot resume after an interrupted trial)."""

        def populate_space(self, trial_id):
            hps = self.get_space()
            names = [hp.name for hp in hps.space]
            for combo in itertools.product(*[hp.values for hp in hps.space]):
                values = dict(zip(names, combo))
                if self._compute_values_hash(values) not in self._tried_so_far:
                    return {"status": kt.engine.trial.TrialStatus.RUNNING, "values": values}
            return {"status": kt.engine.trial.TrialStatus.STOPPED, "values": None}

    class _Grid(kt.Tuner):
        def run_trial(self, trial, *args, **kwargs):
            hp = trial.hyperparameters
            return trials.run(trial.trial_id, hp.get("lr"), hp.get("batch_size"))

        def save_model(self, trial_id, model, step=0):
            pass

        def load_model(self, trial):
            return None

    return _Oracle, _Grid


def _warm_once(job: Trainee, data: Arrays, cfg: TrainConfig, gdir: Path, features) -> list[PhaseResult]:
    """The warm-up, once (resumable: its weights are kept in ``grid/``)."""
    warm_w = gdir / "after_warmup.weights.h5"
    if warm_w.is_file():
        job.model.load_weights(str(warm_w))
        job.log("[grid] warm-up weights restored from an earlier run")
        return []
    phases = [warmup(job, data, cfg, features=features)]
    job.model.save_weights(str(warm_w))
    return phases


def grid_search(job: Trainee, data: Arrays, cfg: TrainConfig, run_dir, *, space: dict | None = None,
                partial_from: str | None = None, features=None) -> GridResult:
    """Warm up ``job.model`` once, then fine-tune one trial per (lr, batch size) of ``space`` (default
    ``DEFAULT_SPACE``); the best trial's weights end up in the model, every trial in ``grid_results.csv``."""
    import keras_tuner as kt

    space = {**DEFAULT_SPACE, **(space or {})}
    run_dir = Path(run_dir)
    gdir = run_dir / "grid"
    gdir.mkdir(parents=True, exist_ok=True)
    obj = objective_name(job.spec)
    phases = _warm_once(job, data, cfg, gdir, features)
    trials = _Trials(job, data, cfg, gdir, job.model.get_weights(), partial_from, obj)
    oracle_cls, tuner_cls = _tuner_classes(kt, trials)
    hps = kt.HyperParameters()
    hps.Choice("lr", [float(v) for v in space["lr"]])
    hps.Choice("batch_size", [int(v) for v in space["batch_size"]])
    n = len(space["lr"]) * len(space["batch_size"])
    oracle = oracle_cls(objective=kt.Objective(obj, "max"), hyperparameters=hps, max_trials=n, seed=cfg.seed)
    tuner = tuner_cls(oracle=oracle, hypermodel=None, directory=str(gdir), project_name="tuner", overwrite=False)
    tuner.search_space_summary = lambda *a, **k: None
    tuner.search(verbose=0)
    done = trials.done()
    if not done:
        raise RuntimeError("grid search finished without any trial")
    best = max(done, key=lambda t: t[obj] if np.isfinite(t[obj]) else -np.inf)
    job.model.load_weights(str(gdir / f"trial_{best['trial']}.weights.h5"))
    write_text_atomic(run_dir / "grid_results.csv", _table(done, obj))
    job.log(f"[grid] best: lr {best['lr']:g}, batch {best['batch_size']} → {obj} {best[obj]:.4f}")
    return GridResult(obj, done, best, phases)
