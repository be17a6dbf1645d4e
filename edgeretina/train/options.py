"""``RunOptions``: every option of ``train_run`` besides (data, task, arch, out), validated once."""
from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any

from edgeretina.errors import EdgeRetinaError, ModelError
from edgeretina.train.two_phase import TrainConfig
from edgeretina.shifts import Benign, parse_level, parse_shift
from edgeretina.train.consistency import Consistency
from edgeretina.tta import check_k


class HeadFit(str, Enum):
    """How the classifier is fitted: ``two-phase`` = SGD warm-up of the head on the frozen backbone, then
    deep tuning (the published recipe); ``linear`` = an L2 logistic regression on the frozen backbone's pooled
    features, penalty chosen by inner patient-grouped CV (:mod:`edgeretina.train.linear_head`)."""

    TWO_PHASE = "two-phase"
    LINEAR = "linear"


@dataclass(frozen=True)
class RunOptions:
    """Everything ``train_run`` needs besides (data, task, arch, out). Validated on construction."""

    weights: Any = "imagenet"
    input_size: int | None = None
    head: Any = None
    arch_options: dict | None = None
    config: TrainConfig | None = None
    split: str | None = None
    seed: int = 0
    pipeline: Any = None
    data_options: dict | None = None
    max_train: int | None = None
    max_val: int | None = None
    max_test: int | None = None
    grid: bool = False
    grid_space: dict | None = None
    strategy: str | None = "default"
    n_boot: int = 1000
    baseline: bool = True
    sensitivity: float = 0.9
    overwrite: bool = False
    cv: int | None = None             # K-fold CV over train+val; the final model trains on all of them
    cv_seeds: tuple[int, ...] = (0,)  # repeat the CV with these fold/training seeds (spread over seeds)
    cv_only: bool = False             # recipe selection: write cv.json only, never touch the test split
    head_fit: HeadFit = HeadFit.TWO_PHASE
    aug_copies: int = 2               # linear head + --augment: augmented feature copies per training image
    cv_shifts: tuple[str, ...] = ()   # "shift:level" or a benign name: also score every out-of-fold eye under it
    consistency: Any = "off"          # linear head: "off", "auto" or λ (edgeretina.train.consistency)
    linear_cs: tuple[float, ...] | None = None  # linear head: the inverse penalties searched (None: DEFAULT_CS)
    linear_sd_floor: float = 0.0      # linear head: standardise by max(σ, floor × median σ) (0: plain σ)
    cv_tta: int = 1                   # CV scores = mean logit over this many input moves (edgeretina.tta)
    mid_pool: str | None = None       # backbone layers (comma-separated) pooled beside the last map ("auto": registry's)


    def __post_init__(self):
        if self.input_size is not None and not 32 <= int(self.input_size) <= 1024:
            raise ModelError(f"input size must be between 32 and 1024 px, got {self.input_size}")
        if self.cv is not None and int(self.cv) < 3:
            raise EdgeRetinaError(f"--cv needs at least 3 folds, got {self.cv}")
        if self.cv_only and not self.cv:
            raise EdgeRetinaError("--cv-only needs --cv K")
        if not self.cv_seeds:
            raise EdgeRetinaError("cv_seeds must name at least one seed")
        if not 0.0 < float(self.sensitivity) < 1.0:
            raise EdgeRetinaError(f"sensitivity target must be in (0, 1), got {self.sensitivity}")
        try:
            object.__setattr__(self, "head_fit", HeadFit(self.head_fit))
        except ValueError:
            raise EdgeRetinaError(f"unknown head fit '{self.head_fit}' (choose from: "
                                  f"{', '.join(h.value for h in HeadFit)})") from None
        if self.mid_pool and self.head_fit is not HeadFit.LINEAR:
            raise EdgeRetinaError("--mid-pool needs --head-fit linear (a fine-tune's cached activations would "
                                  "skip the mid-depth branch)")
        if self.head_fit is HeadFit.LINEAR and self.grid:
            raise EdgeRetinaError("--head-fit linear chooses its penalty by inner CV; it takes no --grid")
        if self.cv_shifts:
            is_benign = lambda n: n.strip().lower() in {b.value for b in Benign}  # noqa: E731

            if not self.cv:
                raise EdgeRetinaError("--cv-shifts needs --cv K")
            for item in self.cv_shifts:
                name, _, level = str(item).partition(":")
                if not (is_benign(name) and not level):
                    parse_shift(name), parse_level(level or "severe")

        if int(self.cv_tta) != 1 and not self.cv:
            raise EdgeRetinaError("--cv-tta needs --cv K")
        check_k(self.cv_tta)
        object.__setattr__(self, "consistency", Consistency.parse(self.consistency))
        if self.consistency.on and self.head_fit is not HeadFit.LINEAR:
            raise EdgeRetinaError(f"--consistency {self.consistency} needs --head-fit linear (it is a penalty of "
                                  "the linear head's fit)")
        if self.linear_cs is not None and (self.head_fit is not HeadFit.LINEAR or not self.linear_cs
                                           or any(not float(c) > 0 for c in self.linear_cs)):
            raise EdgeRetinaError(f"--linear-cs needs --head-fit linear and positive values, got {self.linear_cs}")
        if not 0.0 <= float(self.linear_sd_floor) <= 1.0 or (self.linear_sd_floor and self.head_fit is not HeadFit.LINEAR):
            raise EdgeRetinaError(f"--linear-sd-floor needs --head-fit linear and a value in [0, 1], got {self.linear_sd_floor}")
        if not 1 <= int(self.aug_copies) <= 16:
            raise EdgeRetinaError(f"--aug-copies must be between 1 and 16, got {self.aug_copies}")
        if self.grid and self.strategy not in (None, "default") and self.cv:
            raise EdgeRetinaError("--grid with --cv runs on one device (strategy default)")

    @property
    def cfg(self) -> TrainConfig:
        return self.config or TrainConfig()
