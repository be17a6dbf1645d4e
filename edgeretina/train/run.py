"""``train_run``: dataset → split → preprocess → model → two-phase training → [CV] → evaluation → run dir.

The run dir holds ``model.keras`` + ``config.json`` (the contract every later stage reads), plus
``history.csv`` (one row per epoch and phase), ``metrics.json`` (validation or cross-validation and test
metrics, the chosen threshold, a logistic-regression probe on the frozen ImageNet features as a baseline,
timings) and ``roc.png``. ``checkpoint/`` exists only while a run is unfinished: calling ``train_run`` again
with the same arguments resumes from it. The work itself is done stage by stage by
:class:`edgeretina.train.stages.TrainRun`; options are :class:`edgeretina.train.options.RunOptions`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from edgeretina.train.helpers import (CHECKPOINT_DIR, check_task_served, evaluate_model, history_csv,  # noqa: F401
                                      logreg_probe, make_strategy, save_clean_model, subsample)
from edgeretina.train.options import RunOptions
from edgeretina.train.stages import TrainRun

__all__ = ["train_run", "RunOptions", "CHECKPOINT_DIR", "check_task_served", "evaluate_model", "history_csv",
           "logreg_probe", "make_strategy", "save_clean_model", "subsample"]


def train_run(data, task: str, arch: str, out, *, log: Callable[[str], None] | None = None, callbacks=(),
              options: RunOptions | None = None, **kw) -> Path:
    """Train one model and write its run dir ``out``; returns ``Path(out)``. Options: :class:`RunOptions`
    (pass ``options=`` or its fields as keywords). Re-running the same call after an interruption resumes
    from ``out/checkpoint``. With ``cv=K`` the recipe is cross-validated first (:mod:`edgeretina.train.cv`) and
    the final model trains on train+val. See docs/training.md."""

    opts = options if options is not None else RunOptions(**kw)
    return TrainRun(data, task, arch, out, opts, log=log, callbacks=callbacks).run()
