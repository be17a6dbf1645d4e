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
from typing import Any, Callable

import numpy as np

from edgeretina.io import write_text_atomic
from edgeretina.tasks import TaskKind, TaskSpec
from edgeretina.train.loop import PhaseResult
from edgeretina.train.two_phase import Arrays, TrainConfig, finetune, warmup

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


def grid_search(model, spec: TaskSpec, data: Arrays, cfg: TrainConfig, loss, class_weight, run_dir, *,
                space: dict | None = None, partial_from: str | None = None, log: Callable | None = None,
                strategy=None, features=None, callbacks=()) -> GridResult:
    import keras_tuner as kt

    from edgeretina.metrics import primary_score
    from edgeretina.tasks import scores_from_output

    space = {**DEFAULT_SPACE, **(space or {})}
    say = log or (lambda m: None)
    run_dir = Path(run_dir)
    gdir = run_dir / "grid"
    gdir.mkdir(parents=True, exist_ok=True)
    obj = objective_name(spec)
    phases: list[PhaseResult] = []

    # ---- warm-up once (resumable: its weights are kept in grid/)
    warm_w = gdir / "after_warmup.weights.h5"
    if warm_w.is_file():
        model.load_weights(str(warm_w))
        say("[grid] warm-up weights restored from an earlier run")
    else:
        phases.append(warmup(model, spec, data, cfg, loss, class_weight, log=log, strategy=strategy,
                             features=features, callbacks=callbacks))
        model.save_weights(str(warm_w))
    start_weights = model.get_weights()
    trials_file = gdir / "trials.json"

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
            lr, bs = hp.get("lr"), hp.get("batch_size")
            say(f"[grid] trial {trial.trial_id}: lr {lr:g}, batch {bs}")
            model.set_weights(start_weights)
            ph = finetune(model, spec, data, cfg.with_(lr_finetune=lr, batch_size=bs), loss, class_weight,
                          partial_from=partial_from, log=log, strategy=strategy,
                          callbacks=callbacks)
            s = scores_from_output(spec, model.predict(data.x_val, batch_size=64, verbose=0))
            score = float(primary_score(spec, data.y_val, s))
            model.save_weights(str(gdir / f"trial_{trial.trial_id}.weights.h5"))
            rec = {"trial": trial.trial_id, "lr": lr, "batch_size": bs, obj: score,
                   "epochs_run": ph.epochs_run if ph else 0, "best_epoch": ph.best_epoch if ph else 0,
                   "best_val_loss": ph.best_val_loss if ph else float("nan"),
                   "seconds": round(ph.seconds, 2) if ph else 0.0}
            done = json.loads(trials_file.read_text()) if trials_file.is_file() else []
            done = [t for t in done if t["trial"] != trial.trial_id] + [rec]
            write_text_atomic(trials_file, json.dumps(done, indent=1))
            say(f"[grid] trial {trial.trial_id}: {obj} {score:.4f}")
            return {obj: score}

        def save_model(self, trial_id, model, step=0):
            pass

        def load_model(self, trial):
            return None

    hps = kt.HyperParameters()
    hps.Choice("lr", [float(v) for v in space["lr"]])
    hps.Choice("batch_size", [int(v) for v in space["batch_size"]])
    n = len(space["lr"]) * len(space["batch_size"])
    oracle = _Oracle(objective=kt.Objective(obj, "max"), hyperparameters=hps, max_trials=n, seed=cfg.seed)
    tuner = _Grid(oracle=oracle, hypermodel=None, directory=str(gdir), project_name="tuner", overwrite=False)
    tuner.search_space_summary = lambda *a, **k: None
    tuner.search(verbose=0)
    trials = json.loads(trials_file.read_text()) if trials_file.is_file() else []
    if not trials:
        raise RuntimeError("grid search finished without any trial")
    best = max(trials, key=lambda t: t[obj] if np.isfinite(t[obj]) else -np.inf)
    model.load_weights(str(gdir / f"trial_{best['trial']}.weights.h5"))
    write_text_atomic(run_dir / "grid_results.csv", _table(trials, obj))
    say(f"[grid] best: lr {best['lr']:g}, batch {best['batch_size']} → {obj} {best[obj]:.4f}")
    return GridResult(obj, trials, best, phases)
