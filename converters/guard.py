"""Guarded int8 (variant ``int8-guard``): the int8 model answers; an image whose screening logit lies within a
band of the threshold is re-scored by the fp16 model of the same export.

The variant is **the int8 graph with its own metadata** (``<stem>_int8_guard.tflite``, the same bytes as
``<stem>_int8.tflite`` but metadata variant ``int8-guard``) whose ``export.guard`` entry points at the fp16
file of the same folder by name and sha256 (:class:`GuardInfo`). An app ships both files; ``edgeretina predict``
and ``edgeretina bench`` run the cascade (:class:`GuardRunner`) whenever a model's metadata carries a guard.

The band, in logit units, is ``k`` × the int8 model's noise on the quantity each decision compares with the
band, measured against the float (Keras) model on the calibration images as a root mean square (a residual
offset counts too), ``k = 3`` by default:

- binary: the logit of p(positive) against the logit of the threshold; multi-label: any label within the band
  of its own threshold (noise pooled over labels);
- multi-class (argmax): the **margin** log p₁ − log p₂ between the int8 model's top-1 and top-2 classes (the
  difference of their logits; softmax keeps it). Noise: per image, the int8 change of the float model's own
  top-1 − top-2 logit difference (the pair the float model decides between). An image outside the band keeps
  its argmax: a flip to class *a* needs the (a, float top-1) difference to move by more than the int8 margin.
  The "referable" margin of DR grading (best grade ≥ 2 − best grade < 2) never is smaller than the top-1 −
  top-2 margin, so that band adds nothing; what DR grading adds is its **referral score**: |logit p(grade ≥ 2)
  − logit(threshold)| (the refer / no-referral decision ``predict`` and the app report), its noise pooled
  with the margin's. An image is re-scored when either is within the band.

Runtime code here imports only ``edgeretina.runtime`` / ``edgeretina.tasks`` (no TensorFlow).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgeretina.errors import ExportError, ModelError
from edgeretina.runtime import Timing, label_thresholds
from edgeretina.runtime.decisions import REFERABLE_GRADE, decision_flip_rate, disagreement, screening_threshold
from edgeretina.runtime.timing import time_batch1
from edgeretina.tasks import Task, TaskKind, TaskSpec, predicted_classes, scores_from_output

KEY = "guard"          # metadata: export.guard
DEFAULT_K = 3.0
#: ``--guard-max-flips``: the k tried, smallest first (the band is k × the int8 logit noise)
CHOICE_KS: tuple[float, ...] = (0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0)
_EPS = 1e-7
_TINY = 1e-30   # log-probabilities of argmax margins (a clip at _EPS would hide the noise of confident images)


def logit(p) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=np.float64), _EPS, 1 - _EPS)
    return np.log(p) - np.log1p(-p)


def rule(spec: TaskSpec) -> str:
    """What the band is compared with, for ``export.guard.rule`` (the Android core applies the same by kind)."""
    if spec.kind is TaskKind.MULTICLASS:
        ref = (f" or |logit p(grade >= {REFERABLE_GRADE}) - logit(threshold)|" if spec.task is Task.DR else "")
        return f"argmax margin log p1 - log p2{ref} <= band"
    return ("any label's |logit(score) - logit(threshold)| <= band" if spec.kind is TaskKind.MULTILABEL
            else "|logit(score) - logit(threshold)| <= band")


def _log_probs(p) -> np.ndarray:
    return np.log(np.clip(np.asarray(p, dtype=np.float64), _TINY, None))


def _referral_logit(spec: TaskSpec, probs) -> np.ndarray | None:
    """DR grading's referral score logit(p(grade ≥ 2)) per image; None for other multi-class tasks."""
    if spec.task is not Task.DR:
        return None
    return logit(np.asarray(probs, dtype=np.float64)[:, REFERABLE_GRADE:].sum(axis=1))


def _argmax_margins(spec: TaskSpec, probs, threshold) -> np.ndarray:
    lp = _log_probs(probs)
    top = np.sort(lp, axis=1)[:, -2:]
    m = top[:, 1] - top[:, 0]
    z = _referral_logit(spec, probs)
    t = screening_threshold(spec, threshold)
    return m if z is None else np.minimum(m, np.abs(z - logit(t)))


def margins(spec: TaskSpec, scores, threshold) -> np.ndarray:
    """(N,) distance in logits of each image's score(s) from the threshold(s) (multi-label: the smallest);
    multi-class: the top-1 − top-2 log-probability margin (DR grading: or the referral score's distance from
    its threshold, whichever is smaller)."""
    s = np.asarray(scores, dtype=np.float64)
    if spec.kind is TaskKind.MULTICLASS:
        return _argmax_margins(spec, s.reshape(len(s), -1), threshold)
    t = label_thresholds(spec, threshold)
    d = np.abs(logit(s) - logit(t))
    return d.reshape(len(d), -1).min(axis=1) if d.ndim > 1 else d


def in_band(spec: TaskSpec, scores, threshold, band: float) -> np.ndarray:
    """Boolean (N,): the images the fp16 model re-scores."""
    return margins(spec, scores, threshold) <= float(band)


def noise_terms(spec: TaskSpec, scores, ref_scores) -> np.ndarray:
    """The int8 change of what each decision compares with the band, per image (and label): binary /
    multi-label the logit difference; multi-class the change of the reference's top-1 − top-2 log-probability
    difference (DR grading: and of the referral logit)."""
    if spec.kind is not TaskKind.MULTICLASS:
        return logit(scores) - logit(ref_scores)
    s, r = (np.asarray(a, dtype=np.float64).reshape(len(a), -1) for a in (scores, ref_scores))
    ls, lr = _log_probs(s), _log_probs(r)
    order = np.argsort(lr, axis=1, kind="stable")
    i, c1, c2 = np.arange(len(r)), order[:, -1], order[:, -2]
    d = (ls[i, c1] - ls[i, c2]) - (lr[i, c1] - lr[i, c2])
    zs = _referral_logit(spec, s)
    return d if zs is None else np.stack([d, zs - _referral_logit(spec, r)], axis=1)


def logit_noise(spec: TaskSpec, scores, ref_scores) -> tuple[float, float]:
    """(rms, mean) of :func:`noise_terms` of ``scores`` against ``ref_scores`` over every image and term."""
    d = noise_terms(spec, scores, ref_scores).reshape(-1)
    if d.size == 0:
        raise ExportError("int8-guard: no images to measure the int8 logit noise on")
    return float(np.sqrt(np.mean(d ** 2))), float(np.mean(d))


@dataclass(frozen=True)
class GuardInfo:
    """``export.guard`` of an int8-guard file's metadata."""

    fallback: str               # file name of the fp16 model, in the same folder
    fallback_sha256: str
    fallback_variant: str
    band: float                 # logits: re-score when the image's margin (``rule``) ≤ band
    k: float
    noise_rms: float            # int8 vs float screening-logit difference on the measuring images
    noise_mean: float
    n_images: int
    source: str                 # which images the noise was measured on
    rescored_share: float       # share of the measuring images inside the band
    check: dict[str, Any] | None = None  # cascade vs the float model on the verification sample
    rule: str | None = None     # what the band is compared with (:func:`rule`; None in files before it)
    choice: dict[str, Any] | None = None  # --guard-max-flips: how k was chosen (:func:`choose_k`)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_meta(cls, meta: dict | None, where: str = "model") -> "GuardInfo | None":
        """The guard entry of a model's metadata; None when it has none; ModelError when it is malformed."""
        g = ((meta or {}).get("export") or {}).get(KEY) if isinstance((meta or {}).get("export"), dict) else None
        if g is None:
            return None
        try:
            info = cls(**{k: g[k] for k in cls.__dataclass_fields__ if k in g})
            band = float(info.band)
        except (TypeError, KeyError, ValueError):
            raise ModelError(f"{where}: malformed int8-guard metadata ({KEY})") from None
        if not np.isfinite(band) or band < 0 or not isinstance(info.fallback, str) or not info.fallback \
                or Path(info.fallback).name != info.fallback:
            raise ModelError(f"{where}: int8-guard metadata needs a non-negative band and a fallback file name "
                             f"in the same folder, got band {info.band!r}, fallback {info.fallback!r}")
        return info

    def fallback_path(self, model_path: str | Path) -> Path:
        return Path(model_path).parent / self.fallback


def measure(spec: TaskSpec, int8_scores, ref_scores, threshold, k: float = DEFAULT_K) -> dict[str, float]:
    """Band from the int8 logit noise: ``{"band", "k", "noise_rms", "noise_mean", "rescored_share"}``."""
    if not (np.isfinite(k) and k >= 0):
        raise ExportError(f"--guard-k must be a non-negative number, got {k!r}")
    rms, mean = logit_noise(spec, int8_scores, ref_scores)
    band = float(k) * rms
    share = float(in_band(spec, int8_scores, threshold, band).mean())
    return {"band": band, "k": float(k), "noise_rms": rms, "noise_mean": mean, "rescored_share": share,
            "rule": rule(spec)}


def screening_flips(spec: TaskSpec, scores, ref_scores, threshold) -> float:
    """Share of images whose screening decision differs from the reference's (``tasks.scores_from_output``
    scores): binary / multi-label at the threshold(s); DR grading the referable decision read both ways the
    bench reports it — the referral p(grade ≥ 2) ≥ threshold (what ``predict`` and the app call refer) and the
    predicted grade ≥ 2 (the test table's "Referable flips") — whichever flips more; other multi-class the
    argmax."""
    if spec.kind is TaskKind.MULTICLASS and spec.task is Task.DR:
        t = logit(screening_threshold(spec, threshold))
        referral = disagreement(_referral_logit(spec, scores) >= t, _referral_logit(spec, ref_scores) >= t)
        graded = disagreement(predicted_classes(spec, scores) >= REFERABLE_GRADE,
                              predicted_classes(spec, ref_scores) >= REFERABLE_GRADE)
        return max(referral, graded)
    return decision_flip_rate(spec, scores, ref_scores, threshold)


def choose_k(spec: TaskSpec, outputs: tuple[np.ndarray, np.ndarray], ref_scores, threshold, noise_rms: float,
             max_flips: float | None, max_latency: float | None = None,
             latency_ratio: float | None = None) -> tuple[float, dict[str, Any]]:
    """The guard's k from the cascade of ``outputs`` (the int8 and fp16 probabilities of the same held-out
    images) against ``ref_scores`` (the float model's screening decisions); ``(k, {"n", "table": [{k, flips,
    rescored_share[, est_latency]}], "max_flips"?, "max_latency"?, "latency_ratio"?})``.

    - ``--guard-max-flips`` (``max_flips``): the smallest k of :data:`CHOICE_KS` that flips at most that share;
    - ``--guard-max-latency`` (``max_latency``, a multiple of the int8 mean latency; needs ``latency_ratio`` =
      fp16 / int8 batch-1 latency): the cascade's estimated mean latency is ``1 + re-scored share × ratio``; the
      k with the fewest flips among those within the budget (ties → the smaller k);
    - both: the smallest k within the flip budget, which must also fit the latency budget.

    ``ExportError`` naming the best reached when the budget(s) cannot be met."""
    if max_latency is not None and (latency_ratio is None or not latency_ratio > 0):
        raise ExportError("--guard-max-latency needs the fp16 / int8 latency ratio measured on this machine")
    p8, pf = (np.asarray(a, dtype=np.float64) for a in outputs)
    table = []
    for k in CHOICE_KS:
        probs, mask = cascade(spec, p8, lambda m: pf[m], threshold, k * noise_rms)
        rate = screening_flips(spec, scores_from_output(spec, probs), ref_scores, threshold)
        row = {"k": k, "flips": round(float(rate), 6), "rescored_share": round(float(mask.mean()), 6)}
        if latency_ratio:
            row["est_latency"] = round(1.0 + float(mask.mean()) * float(latency_ratio), 4)
        table.append(row)
    info: dict[str, Any] = {"n": int(len(p8)), "table": table}
    if max_flips is not None:
        info["max_flips"] = max_flips
    if max_latency is not None:
        info.update(max_latency=max_latency, latency_ratio=round(float(latency_ratio), 4))
    fits = [r for r in table if max_latency is None or r["est_latency"] <= max_latency]
    if max_flips is not None:
        ok = [r for r in table if r["flips"] <= max_flips]
        if ok and (max_latency is None or ok[0] in fits):
            info["table"] = table[:table.index(ok[0]) + 1] if max_latency is None else table
            return ok[0]["k"], info
        best = min(table, key=lambda r: (r["flips"], r["k"]))
        if not ok:
            raise ExportError(f"--guard-max-flips {max_flips:g}: no band up to k = {CHOICE_KS[-1]:g} keeps it on "
                              f"{len(p8)} held-out images (best: k = {best['k']:g}, {100 * best['flips']:.2f} % "
                              f"flips, {100 * best['rescored_share']:.0f} % re-scored); raise the budget or use "
                              "--guard-k")
        fast = min(fits, key=lambda r: (r["flips"], r["k"])) if fits else None
        raise ExportError(f"--guard-max-flips {max_flips:g} and --guard-max-latency {max_latency:g} cannot both be met "
                          f"on {len(p8)} held-out images: k = {ok[0]['k']:g} keeps the flips at an estimated "
                          f"{ok[0]['est_latency']:.2f}x the int8 latency"
                          + (f"; within {max_latency:g}x the best is k = {fast['k']:g}, "
                             f"{100 * fast['flips']:.2f} % flips" if fast else ""))
    if not fits:
        raise ExportError(f"--guard-max-latency {max_latency:g}: even k = {CHOICE_KS[0]:g} re-scores "
                          f"{100 * table[0]['rescored_share']:.0f} % of {len(p8)} held-out images, an estimated "
                          f"{table[0]['est_latency']:.2f}x the int8 latency (fp16 / int8 {latency_ratio:.2f} here); "
                          "raise the budget or use --guard-k")
    best = min(fits, key=lambda r: (r["flips"], r["k"]))
    return best["k"], info


def cascade(spec: TaskSpec, primary_probs: np.ndarray, fallback_probs_of, threshold, band: float
            ) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities of the cascade and the re-scored mask: rows of ``primary_probs`` whose score is inside
    the band are replaced by ``fallback_probs_of(mask)`` (the fallback's probabilities of those images)."""
    p = np.array(primary_probs, dtype=np.float64, copy=True)
    mask = in_band(spec, scores_from_output(spec, p), threshold, band)
    if mask.any():
        p[mask] = np.asarray(fallback_probs_of(mask), dtype=np.float64).reshape(int(mask.sum()), -1)
    return p, mask


class GuardRunner:
    """A ``benchmarks.runners.base.Runner`` for an int8-guard model: ``primary`` (the int8 file's runner) and
    ``fallback`` (the fp16 file's runner) both return probabilities. ``predict`` scores every image with the
    int8 model and re-scores those inside the band with the fp16 one; ``time`` times the whole cascade per
    image (the int8 call, the band check and, for images inside the band, the fp16 call), so the mean latency
    includes the re-scoring. ``facts`` reports the band and the share of images re-scored by ``predict``."""

    device = "cpu"
    supports_predict = True

    def __init__(self, primary, fallback, spec: TaskSpec, threshold, info: GuardInfo):
        self.primary, self.fallback, self.spec, self.threshold, self.info = primary, fallback, spec, threshold, info
        self.threads = getattr(primary, "threads", None)
        self.device = getattr(primary, "device", "cpu")
        self.scored = 0
        self.rescored = 0
        self.last_mask: np.ndarray | None = None

    def predict(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float32)
        p, mask = cascade(self.spec, self.primary.predict(x), lambda m: self.fallback.predict(x[m]),
                          self.threshold, self.info.band)
        self.scored += len(mask)
        self.rescored += int(mask.sum())
        self.last_mask = mask
        return p

    def _step(self, x1: np.ndarray):
        p = self.primary.predict(x1)
        if in_band(self.spec, scores_from_output(self.spec, p), self.threshold, self.info.band)[0]:
            p = self.fallback.predict(x1)
        return p

    def time(self, x: np.ndarray, runs: int = 10, warmup: int = 3) -> Timing:
        return time_batch1(self._step, np.asarray(x, dtype=np.float32), runs, warmup)

    @property
    def facts(self) -> dict[str, Any]:
        share = self.rescored / self.scored if self.scored else None
        return {**(getattr(self.primary, "facts", None) or {}),
                "guard": {"fallback": self.info.fallback, "band": self.info.band, "k": self.info.k,
                          "scored": self.scored, "rescored": self.rescored, "rescored_share": share}}
