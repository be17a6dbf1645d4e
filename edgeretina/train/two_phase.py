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

from dataclasses import asdict, dataclass
from typing import Any, Callable

import numpy as np

from edgeretina.train import features as F
from edgeretina.train.freezing import FreezePolicy, apply_freezing, freeze_backbone
from edgeretina.train.loop import PhaseEnv, PhaseResult, PhaseSettings, fit_phase


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


def warmup(model, spec, data: Arrays, cfg: TrainConfig, loss, class_weight=None, *, cached: bool | None = None,
           log: Callable | None = None, ckpt_dir=None, callbacks=(), strategy=None,
           features: tuple[np.ndarray, np.ndarray] | None = None) -> PhaseResult:
    """Phase 1: train the head with the backbone frozen (on cached pooled features when ``cached``;
    ``features`` = precomputed (train, val) pooled features of the frozen backbone)."""
    cached = cfg.cache_features if cached is None else cached
    freeze_backbone(model)
    bs = cfg.warmup_batch_size or cfg.batch_size
    kw = dict(ps=PhaseSettings(loss=loss, lr=cfg.lr_warmup, epochs=cfg.epochs_warmup, batch_size=bs,
                               patience=cfg.patience, momentum=cfg.momentum, decay=cfg.decay,
                               class_weight=class_weight, seed=cfg.seed, restore_best=cfg.restore_best),
              env=PhaseEnv(log=log, ckpt_dir=ckpt_dir, callbacks=tuple(callbacks), strategy=strategy))
    if cached:
        if features is None:
            fm = F.pooled_feature_model(model)
            if log:
                log(f"[warmup] caching pooled backbone features of {len(data.x_train)} + {len(data.x_val)} images")
            features = F.compute(fm, data.x_train), F.compute(fm, data.x_val)
        ftr, fva = features
        with _scope(strategy):
            head = F.head_model_of(model)
        return fit_phase("warmup", head, spec, (ftr, data.y_train), (fva, data.y_val), **kw)
    return fit_phase("warmup", model, spec, (data.x_train, data.y_train), (data.x_val, data.y_val), **kw)


def finetune(model, spec, data: Arrays, cfg: TrainConfig, loss, class_weight=None, *, partial_from: str | None = None,
             train_dataset=None, log: Callable | None = None, ckpt_dir=None, callbacks=(),
             strategy=None, cut_features: Callable | None = None) -> PhaseResult | None:
    """Phase 2: unfreeze per ``cfg.freeze`` and train. ``train_dataset`` (a batched tf.data of augmented
    images) makes it run through the whole network; otherwise frozen parts are computed once.
    ``cut_features(feature_model) -> (train, val)`` may supply those frozen-part activations (cross-validation
    computes them once for all folds: the frozen part has the same weights in every fold)."""
    policy = FreezePolicy.parse(cfg.freeze)
    if cfg.epochs_finetune <= 0:
        return None
    start = apply_freezing(model, policy, partial_from)
    kw = dict(ps=PhaseSettings(loss=loss, lr=cfg.lr_finetune, epochs=cfg.epochs_finetune, batch_size=cfg.batch_size,
                               patience=cfg.patience, momentum=cfg.momentum, decay=cfg.decay,
                               class_weight=class_weight, seed=cfg.seed + 1, restore_best=cfg.restore_best),
              env=PhaseEnv(log=log, ckpt_dir=ckpt_dir, callbacks=tuple(callbacks), strategy=strategy))
    val = (data.x_val, data.y_val)
    if train_dataset is not None:
        return fit_phase("finetune", model, spec, train_dataset, val, **kw)
    if cfg.cache_features:
        if start is None:  # backbone stays frozen: more head training on pooled features
            fm = F.pooled_feature_model(model)
            with _scope(strategy):
                head = F.head_model_of(model)
            return fit_phase("finetune", head, spec, (F.compute(fm, data.x_train), data.y_train),
                             (F.compute(fm, data.x_val), data.y_val), **kw)
        with _scope(strategy):
            cut = F.sub_model_from(model, start) if start > 0 else None
        if cut is not None:
            feat, sub, idx = cut
            if log:
                from edgeretina.models import backbone_layers

                log(f"[finetune] caching activations entering '{backbone_layers(model)[idx].name}' "
                    f"(layers from there on train)")
            a_tr, a_va = cut_features(feat) if cut_features is not None else \
                (F.compute(feat, data.x_train), F.compute(feat, data.x_val))
            return fit_phase("finetune", sub, spec, (a_tr, data.y_train), (a_va, data.y_val), **kw)
    return fit_phase("finetune", model, spec, (data.x_train, data.y_train), val, **kw)
