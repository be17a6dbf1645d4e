"""One training phase: SGD (momentum 0.9, 1e-6 inverse-time decay), early stopping on validation loss
with best-weight restore, per-epoch validation score, progress lines, and an epoch checkpoint that a
later call resumes from (model + optimizer state + early-stopping state + history)."""
from __future__ import annotations

import contextlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from edgeretina.io import write_json_atomic
from edgeretina.tasks import TaskSpec, scores_from_output
from edgeretina.metrics import primary_score


def make_optimizer(lr: float, momentum: float = 0.9, decay: float = 1e-6):
    """SGD with momentum and the classic Keras ``decay``: lr_t = lr / (1 + decay · iteration)."""
    from edgeretina._keras import keras

    sched = keras.optimizers.schedules.InverseTimeDecay(lr, decay_steps=1, decay_rate=decay)
    return keras.optimizers.SGD(learning_rate=sched, momentum=momentum)


def array_dataset(x, y, batch_size: int, shuffle: bool, seed: int):
    from edgeretina._keras import tf

    ds = tf.data.Dataset.from_tensor_slices((x, y))
    if shuffle:
        ds = ds.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
    return ds.batch(batch_size).prefetch(2)


def predict_fast(model, x, batch_size: int = 64) -> np.ndarray:
    """Inference-mode outputs without ``Model.predict``'s per-call setup (which dominates on cached features)."""
    from edgeretina._keras import tf

    fn = getattr(model, "_edgeretina_infer", None)
    if fn is None:
        fn = tf.function(lambda t: model(t, training=False), reduce_retracing=True)
        model.__dict__["_edgeretina_infer"] = fn
    return np.concatenate([fn(tf.constant(x[i:i + batch_size])).numpy() for i in range(0, len(x), batch_size)])


@dataclass
class PhaseResult:
    name: str
    epochs_run: int
    best_epoch: int
    best_val_loss: float
    stopped_early: bool
    seconds: float
    history: list[dict[str, Any]]
    resumed_from: int = 0


@dataclass(frozen=True)
class PhaseSettings:
    """What one training phase does (``two_phase.warmup`` / ``finetune`` fill it from ``TrainConfig``):
    ``loss``, SGD ``lr`` / ``momentum`` / ``decay``, ``epochs``, ``batch_size``, early-stopping ``patience``,
    ``class_weight``, the per-epoch validation ``score_fn`` (default ``metrics.primary_score``), ``seed`` and
    whether the best epoch's weights are restored at the end (``restore_best``)."""

    loss: Any
    lr: float
    epochs: int
    batch_size: int
    patience: int = 20
    momentum: float = 0.9
    decay: float = 1e-6
    class_weight: Any = None
    score_fn: Callable | None = None
    seed: int = 0
    restore_best: bool = True


@dataclass(frozen=True)
class PhaseEnv:
    """Where a phase runs: progress lines (``log``), the checkpoint folder it resumes from (``ckpt_dir``),
    extra Keras ``callbacks`` and the distribution ``strategy`` (None: the default device)."""

    log: Callable[[str], None] | None = None
    ckpt_dir: str | Path | None = None
    callbacks: tuple = ()
    strategy: Any = None


def _tracker_cls():
    from edgeretina._keras import keras

    class PhaseTracker(keras.callbacks.Callback):
        """Validation (loss + task score), early stopping with best-weight restore, checkpoint, progress."""

        def __init__(self, name, spec, val, loss_fn, ps: PhaseSettings, env: PhaseEnv, score_fn):
            super().__init__()
            self.name, self.spec = name, spec
            self.x_val, self.y_val = val if val is not None else (None, None)
            self.loss_fn, self.patience, self.epochs, self.log = loss_fn, ps.patience, ps.epochs, env.log
            self.ckpt_dir, self.batch_size, self.score_fn = env.ckpt_dir, max(ps.batch_size, 64), score_fn
            self.best, self.best_epoch, self.wait = np.inf, -1, 0
            self.best_weights = None
            self.history: list[dict[str, Any]] = []
            self.stopped_early = False
            self.restore_best = True
            self._t0 = time.perf_counter()

        # -- checkpoint state
        def state(self, epoch):
            return {"phase": self.name, "epoch": epoch, "best": float(self.best), "best_epoch": self.best_epoch,
                    "wait": self.wait, "history": self.history, "stopped_early": self.stopped_early}

        def on_epoch_begin(self, epoch, logs=None):
            self._t0 = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            logs = logs if logs is not None else {}
            if self.x_val is not None and len(self.x_val):
                p = predict_fast(self.model, self.x_val, self.batch_size)
                val_loss = float(np.mean(self.loss_fn(self.y_val, p).numpy()))
                if self.model.losses:
                    val_loss += float(sum(float(l.numpy()) for l in self.model.losses))
                logs["val_loss"] = val_loss
                try:
                    logs["val_score"] = float(self.score_fn(self.y_val, scores_from_output(self.spec, p)))
                except ValueError:
                    logs["val_score"] = float("nan")
            monitor = logs.get("val_loss", logs.get("loss"))
            improved = monitor < self.best - 1e-6
            if improved:
                self.best, self.best_epoch, self.wait = float(monitor), epoch + 1, 0
                self.best_weights = self.model.get_weights()
            else:
                self.wait += 1
            opt = self.model.optimizer
            sched = getattr(opt, "_learning_rate", None)
            lr_now = (float(np.asarray(sched(opt.iterations))) if callable(sched) and not hasattr(sched, "numpy")
                      else float(np.asarray(opt.learning_rate)))
            row = {"phase": self.name, "epoch": epoch + 1, "loss": float(logs.get("loss", np.nan)),
                   "val_loss": float(logs.get("val_loss", np.nan)),
                   "val_score": float(logs.get("val_score", np.nan)), "lr": lr_now,
                   "seconds": round(time.perf_counter() - self._t0, 3)}
            self.history.append(row)
            if self.log:
                self.log(f"[{self.name}] epoch {epoch + 1}/{self.epochs}  loss {row['loss']:.4f}  "
                         f"val_loss {row['val_loss']:.4f}  val_score {row['val_score']:.4f}"
                         f"{'  *' if improved else ''}  ({row['seconds']:.1f} s)")
            if self.wait >= self.patience:
                self.stopped_early = True
                self.model.stop_training = True
            if self.ckpt_dir is not None:
                self.save(epoch + 1)

        def on_train_end(self, logs=None):
            if self.best_weights is not None and self.restore_best:
                self.model.set_weights(self.best_weights)

        def save(self, epoch):
            from edgeretina._keras import tf

            d = Path(self.ckpt_dir)
            d.mkdir(parents=True, exist_ok=True)
            ck = tf.train.Checkpoint(model=self.model, optimizer=self.model.optimizer)
            ck.write(str(d / f"{self.name}_last"))
            if self.best_weights is not None and self.best_epoch == epoch:
                tmp = d / f".{self.name}_best.npz"
                with open(tmp, "wb") as f:
                    np.savez(f, *self.best_weights)
                tmp.replace(d / f"{self.name}_best.npz")
            write_json_atomic(d / f"{self.name}_state.json", self.state(epoch))

        def restore(self):
            """Load the last checkpoint of this phase → the epoch to resume at (0 if none)."""
            from edgeretina._keras import tf

            d = Path(self.ckpt_dir) if self.ckpt_dir else None
            if d is None or not (d / f"{self.name}_state.json").is_file():
                return 0
            st = json.loads((d / f"{self.name}_state.json").read_text())
            ck = tf.train.Checkpoint(model=self.model, optimizer=self.model.optimizer)
            ck.read(str(d / f"{self.name}_last")).expect_partial()
            self.best, self.best_epoch, self.wait = st["best"], st["best_epoch"], st["wait"]
            self.history = st["history"]
            self.stopped_early = st.get("stopped_early", False)
            bp = d / f"{self.name}_best.npz"
            if bp.is_file():
                with np.load(bp) as z:
                    self.best_weights = [z[f"arr_{i}"] for i in range(len(z.files))]
            return int(st["epoch"])

    return PhaseTracker


def fit_phase(name: str, model, spec: TaskSpec, train, val, ps: PhaseSettings,
              env: PhaseEnv = PhaseEnv()) -> PhaseResult:
    """Train ``model`` (already frozen as wanted) on ``train`` = (x, y) arrays or a batched tf.data.Dataset;
    ``val`` = (x, y) arrays. Resumes from ``env.ckpt_dir`` when it holds this phase's checkpoint."""
    from edgeretina._keras import keras, tf

    t0 = time.perf_counter()
    score_fn = ps.score_fn or (lambda y, s: primary_score(spec, y, s))
    keras.utils.set_random_seed(ps.seed)

    def scope():
        return env.strategy.scope() if env.strategy is not None else contextlib.nullcontext()

    with scope():
        model.compile(optimizer=make_optimizer(ps.lr, ps.momentum, ps.decay), loss=ps.loss)
    if isinstance(train, tf.data.Dataset):
        ds = train
    else:
        ds = array_dataset(train[0], train[1], ps.batch_size, shuffle=True, seed=ps.seed)
    loss_fn = keras.losses.get(ps.loss) if isinstance(ps.loss, str) else ps.loss
    tracker = _tracker_cls()(name, spec, val, loss_fn, ps, env, score_fn)
    tracker.restore_best = ps.restore_best
    start = 0
    if env.ckpt_dir is not None:
        # build optimizer slots so the checkpoint restores them
        with scope():
            model.optimizer.build(model.trainable_variables)
        tracker.set_model(model)
        start = tracker.restore()
        if start and env.log:
            env.log(f"[{name}] resuming after epoch {start} (best val_loss {tracker.best:.4f} at epoch "
                    f"{tracker.best_epoch})")
    if start < ps.epochs and not tracker.stopped_early:
        model.fit(ds, epochs=ps.epochs, initial_epoch=start, class_weight=ps.class_weight, verbose=0,
                  callbacks=[tracker, *env.callbacks])
    elif tracker.best_weights is not None and ps.restore_best:
        model.set_weights(tracker.best_weights)
    return PhaseResult(name, len(tracker.history), tracker.best_epoch, float(tracker.best), tracker.stopped_early,
                       time.perf_counter() - t0, tracker.history, start)
