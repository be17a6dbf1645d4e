"""Two-phase fine-tuning (the published recipe):

1. **warm-up** — backbone frozen, the new head trains (SGD momentum 0.9, decay 1e-6, early stopping on
   validation loss, patience 20, best weights restored; at most 120 epochs). By default on **cached
   backbone features**: the frozen backbone runs once over the training/validation images, then the head
   trains on the pooled features — the same computation as through the frozen backbone, far cheaper.
2. **fine-tune** — unfreeze per the freezing policy (``frozen | partial[:<fraction|layer>] | all``) and
   train on at a lower learning rate (at most 80 epochs). Without augmentation and with a ``partial``
   policy the frozen lower part is also computed once (cached activations at the cut). With augmentation
   (``augment=<policy>``) the images stream through the whole network via tf.data.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import numpy as np

from edgeretina.tasks import TaskSpec
from edgeretina.train import features as F
from edgeretina.train.freezing import FreezePolicy, apply_freezing, freeze_backbone
from edgeretina.train.loop import PhaseEnv, PhaseResult, PhaseSettings, fit_phase
from edgeretina.models import backbone_layers


def _scope(strategy):
    """Models that train under a tf.distribute strategy must be created in its scope."""
    from contextlib import nullcontext

    return strategy.scope() if strategy is not None else nullcontext()


@dataclass(frozen=True)
class TrainConfig:
    epochs_warmup: int = 120
    epochs_finetune: int = 80
    lr_warmup: float = 1e-3
    lr_finetune: float = 1e-4
    batch_size: int = 8
    warmup_batch_size: int | None = None   # default: batch_size
    momentum: float = 0.9
    decay: float = 1e-6
    patience: int = 20
    freeze: str = "partial"
    loss: str = "weighted-ce"
    cache_features: bool = True
    augment: str | None = None
    seed: int = 0
    restore_best: bool = True   # early stopping restores the best epoch's weights (False: keep the last)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def with_(self, **kw) -> "TrainConfig":
        from dataclasses import replace

        return replace(self, **kw)


@dataclass
class Arrays:
    """Preprocessed inputs (Pipeline output) and labels of the training and validation splits."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray


@dataclass(frozen=True)
class Trainee:
    """What the phases train and how: the Keras ``model``, its task ``spec``, the ``loss``, the Keras
    ``class_weight`` (None: none) and where the phases run (``env``: progress lines, checkpoint folder,
    extra callbacks, distribution strategy)."""

    model: Any
    spec: TaskSpec
    loss: Any
    class_weight: Any = None
    env: PhaseEnv = field(default_factory=PhaseEnv)

    def fit(self, name: str, model, train, val, ps: PhaseSettings) -> PhaseResult:
        return fit_phase(name, model, self.spec, train, val, ps=ps, env=self.env)

    def log(self, msg: str) -> None:
        if self.env.log:
            self.env.log(msg)


def phase_settings(job: Trainee, cfg: TrainConfig, phase: str) -> PhaseSettings:
    """``cfg``'s settings of the ``warmup`` or ``finetune`` phase (the fine-tune's seed is ``cfg.seed + 1``)."""
    if phase == "warmup":
        lr, epochs, bs, seed = cfg.lr_warmup, cfg.epochs_warmup, cfg.warmup_batch_size or cfg.batch_size, cfg.seed
    else:
        lr, epochs, bs, seed = cfg.lr_finetune, cfg.epochs_finetune, cfg.batch_size, cfg.seed + 1
    return PhaseSettings(loss=job.loss, lr=lr, epochs=epochs, batch_size=bs, patience=cfg.patience,
                         momentum=cfg.momentum, decay=cfg.decay, class_weight=job.class_weight, seed=seed,
                         restore_best=cfg.restore_best)


def warmup(job: Trainee, data: Arrays, cfg: TrainConfig, *, cached: bool | None = None,
           features: tuple[np.ndarray, np.ndarray] | None = None) -> PhaseResult:
    """Phase 1: train the head with the backbone frozen (on cached pooled features when ``cached``, default
    ``cfg.cache_features``; ``features`` = precomputed (train, val) pooled features of the frozen backbone)."""
    cached = cfg.cache_features if cached is None else cached
    model = job.model
    freeze_backbone(model)
    ps = phase_settings(job, cfg, "warmup")
    if not cached:
        return job.fit("warmup", model, (data.x_train, data.y_train), (data.x_val, data.y_val), ps)
    if features is None:
        fm = F.pooled_feature_model(model)
        job.log(f"[warmup] caching pooled backbone features of {len(data.x_train)} + {len(data.x_val)} images")
        features = F.compute(fm, data.x_train), F.compute(fm, data.x_val)
    ftr, fva = features
    with _scope(job.env.strategy):
        head = F.head_model_of(model)
    return job.fit("warmup", head, (ftr, data.y_train), (fva, data.y_val), ps)


def finetune(job: Trainee, data: Arrays, cfg: TrainConfig, *, partial_from: str | None = None,
             train_dataset=None, cut_features: Callable | None = None) -> PhaseResult | None:
    """Phase 2: unfreeze per ``cfg.freeze`` and train. ``train_dataset`` (a batched tf.data of augmented
    images) makes it run through the whole network; otherwise frozen parts are computed once.
    ``cut_features(feature_model) -> (train, val)`` may supply those frozen-part activations (cross-validation
    computes them once for all folds: the frozen part has the same weights in every fold)."""
    policy = FreezePolicy.parse(cfg.freeze)
    if cfg.epochs_finetune <= 0:
        return None
    start = apply_freezing(job.model, policy, partial_from)
    ps = phase_settings(job, cfg, "finetune")
    if train_dataset is not None:
        return job.fit("finetune", job.model, train_dataset, (data.x_val, data.y_val), ps)
    if cfg.cache_features:
        res = _finetune_cached(job, data, ps, start, cut_features)
        if res is not None:
            return res
    return job.fit("finetune", job.model, (data.x_train, data.y_train), (data.x_val, data.y_val), ps)


def _finetune_cached(job: Trainee, data: Arrays, ps: PhaseSettings, start: int | None,
                     cut_features: Callable | None) -> PhaseResult | None:
    """The fine-tune on cached activations: the pooled features when the backbone stays frozen
    (``start`` None), the activations entering the first trainable layer otherwise; None when nothing is
    frozen below (the whole model trains)."""
    model, strategy = job.model, job.env.strategy
    if start is None:  # backbone stays frozen: more head training on pooled features
        fm = F.pooled_feature_model(model)
        with _scope(strategy):
            head = F.head_model_of(model)
        return job.fit("finetune", head, (F.compute(fm, data.x_train), data.y_train),
                       (F.compute(fm, data.x_val), data.y_val), ps)
    with _scope(strategy):
        cut = F.sub_model_from(model, start) if start > 0 else None
    if cut is None:
        return None
    feat, sub, idx = cut
    if job.env.log:
        job.log(f"[finetune] caching activations entering '{backbone_layers(model)[idx].name}' "
                f"(layers from there on train)")
    a_tr, a_va = cut_features(feat) if cut_features is not None else \
        (F.compute(feat, data.x_train), F.compute(feat, data.x_val))
    return job.fit("finetune", sub, (a_tr, data.y_train), (a_va, data.y_val), ps)
