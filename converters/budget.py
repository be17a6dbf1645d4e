"""Flip-budgeted selective precision: ``edgeretina export --int8 --quantizer aeq --max-flips 0.01`` (and/or
``--max-logit-noise 0.1``).

The int8 model is built by ai-edge-quantizer (``converters/aeq.py``) with the fewest layers kept in float that
brings its decisions within the budget of the float model's:

1. **rank** (no labels needed): on ``RANK_N`` calibration images, each candidate op (convolutions, adds,
   pooling, the dense head; pass-through ops aside) is in turn the only int8 op of the model — one
   quantization each, a fraction of a second, from one calibration — and ranked by the screening logit's noise
   variance (of the int8 − float logit difference) it adds on its own;
2. **search**: the ``k`` best-ranked ops float, ``k`` = 0, 1, 2, 4, … until the budget holds on the
   **hold-out images** — training images that are not calibration images (or, with ``--calib PATH``, a third
   of those images kept out of calibration); never validation or test images — then the smallest passing
   ``k`` by bisection, over the ranked ops that fit under ``--max-float-macs`` (default 10 % of the model's
   multiply-adds: an op that would take the float layers past it is left out of the list). Each candidate
   is measured as it would ship (output bias correction included);
3. the chosen layers, their share of the multiply-adds, the measured hold-out flip rate (with its Wilson
   95 % interval) and logit noise, and the all-int8 starting point are recorded in the file's metadata and the
   manifest (``quantizer.budget``). A budget no set of float layers meets is a one-line ``ExportError`` that
   names the best reached.

Flips and noise are measured against the source (float) model: a flip is an image whose decision at the run's
threshold differs; the noise is the root mean square of the difference of the logit of the screening score.
DR grading (5 grades) is budgeted on its **referable** decision, not on the grade: its two readings are counted —
the referral ``p(grade >= 2) >= threshold`` (what ``predict`` and the app report as refer, and what the bench's
``--agreement-data`` flips count) and the predicted grade ``>= 2`` (the expected grade, rounded: the test
table's "Referable flips") — and the budget's flip rate is the larger of the two; the noise is that of the
referral logit ``logit p(grade >= 2)`` (:func:`decision_rule` says which, in ``quantizer.budget.decision``).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import numpy as np

from edgeretina.compare import wilson_ci
from edgeretina.errors import ExportError
from edgeretina.runtime import LiteRTModel
from edgeretina.runtime.decisions import REFERABLE_GRADE
from edgeretina.tasks import Task, TaskKind, TaskSpec, scores_from_output

from . import aeq
from .guard import logit, screening_flips

RANK_N = 64        # calibration images the ranking runs on
HOLDOUT_N = 500    # default hold-out images for the budget check (--budget-n)
MAX_FLOAT_MACS = 0.10  # default --max-float-macs: float layers hold at most this share of the multiply-adds


def _graded(spec: TaskSpec) -> bool:
    return spec.kind is TaskKind.MULTICLASS and spec.task is Task.DR


def decision_rule(spec: TaskSpec) -> str:
    """The decision whose flips the budget counts and the logit whose noise it measures (for the manifest)."""
    if _graded(spec):
        return (f"DR referable: the larger flip rate of p(grade >= {REFERABLE_GRADE}) >= threshold and predicted "
                f"grade >= {REFERABLE_GRADE}; noise of logit p(grade >= {REFERABLE_GRADE})")
    return "the task's decision at the run's threshold; noise of the screening score's logit"


def screening_logit(spec: TaskSpec, scores) -> np.ndarray:
    """The logit(s) the budget's noise is measured on: DR grading's referral score logit p(grade >= 2) (N,),
    other tasks the logit of each score."""
    s = np.asarray(scores, dtype=np.float64)
    if _graded(spec):
        return logit(s.reshape(len(s), -1)[:, REFERABLE_GRADE:].sum(axis=1))
    return logit(s)


def budget_flips(spec: TaskSpec, scores, ref_scores, threshold) -> float:
    """The share of images whose decision differs from the reference's (:func:`decision_rule`; the same rule
    as the int8-guard's ``--guard-max-flips``: :func:`edgeretina.converters.guard.screening_flips`)."""
    return screening_flips(spec, scores, ref_scores, threshold)


@dataclass(frozen=True)
class Budget:
    """What the int8 model must keep: at most ``max_flips`` decision flips (share of hold-out images) and/or
    a screening-logit noise (rms) of at most ``max_logit_noise``."""

    max_flips: float | None = None
    max_logit_noise: float | None = None
    max_float_macs: float = MAX_FLOAT_MACS  # the float layers' largest share of the multiply-adds

    def __post_init__(self):
        if self.max_flips is None and self.max_logit_noise is None:
            raise ExportError("a budget needs --max-flips and/or --max-logit-noise")
        if self.max_flips is not None and not (isinstance(self.max_flips, (int, float)) and 0 <= self.max_flips < 1):
            raise ExportError(f"--max-flips must be a share in [0, 1) (0.01 = 1 %), got {self.max_flips!r}")
        if self.max_logit_noise is not None and not (isinstance(self.max_logit_noise, (int, float))
                                                     and self.max_logit_noise > 0):
            raise ExportError(f"--max-logit-noise must be a positive number (logits), got {self.max_logit_noise!r}")
        if not (isinstance(self.max_float_macs, (int, float)) and 0 <= self.max_float_macs <= 1):
            raise ExportError(f"--max-float-macs must be a share in [0, 1] (0.1 = 10 %), got {self.max_float_macs!r}")

    def met(self, flips: float, noise: float) -> bool:
        return ((self.max_flips is None or flips <= self.max_flips + 1e-12)
                and (self.max_logit_noise is None or noise <= self.max_logit_noise))

    def text(self) -> str:
        parts = []
        if self.max_flips is not None:
            parts.append(f"--max-flips {self.max_flips:g}")
        if self.max_logit_noise is not None:
            parts.append(f"--max-logit-noise {self.max_logit_noise:g}")
        return " and ".join(parts)


@dataclass(frozen=True)
class Probe:
    """What a candidate model is measured on: ranking images (``X_rank``) and hold-out images (``X_hold``)
    with the float model's scores on both, the task and threshold, how the quantized file's output is read
    (``output``: logits + activation), and ``finish`` (bytes → bytes as shipped: output bias correction)."""

    spec: TaskSpec
    threshold: Any
    output: dict
    X_rank: np.ndarray
    ref_rank: np.ndarray
    X_hold: np.ndarray
    ref_hold: np.ndarray
    holdout_source: str
    finish: Callable[[bytes], bytes] = lambda b: b
    threads: int = 1

    def scores(self, buf: bytes, X: np.ndarray) -> np.ndarray:
        m = LiteRTModel(buf, threads=self.threads, name="int8 candidate")
        return scores_from_output(self.spec, m.probabilities(X, self.output))

    def measure(self, buf: bytes) -> tuple[float, float, int]:
        """(flip rate, logit noise rms, flips) of the finished ``buf`` on the hold-out images."""
        s = self.scores(buf, self.X_hold)
        d = (screening_logit(self.spec, s) - screening_logit(self.spec, self.ref_hold)).reshape(-1)
        flips = budget_flips(self.spec, s, self.ref_hold, self.threshold)
        return float(flips), float(np.sqrt(np.mean(d ** 2))), int(round(flips * len(s)))


@dataclass(frozen=True)
class Step:
    k: int
    flips: float
    noise: float
    graph_bytes: int   # the .tflite before its metadata is embedded

    def to_dict(self) -> dict[str, Any]:
        return {"k": self.k, "flips": round(self.flips, 5), "logit_noise": round(self.noise, 4),
                "graph_bytes": self.graph_bytes}


@dataclass(frozen=True)
class BudgetResult:
    """``quantizer.budget`` in the manifest and the metadata."""

    max_flips: float | None
    max_logit_noise: float | None
    float_layers: tuple[dict, ...]       # layer, type, macs, scope, noise share removed alone
    float_macs_share: float
    holdout: dict[str, Any]              # source, n
    flips: float                          # measured on the hold-out images, as shipped
    flips_ci95: tuple[float, float]
    logit_noise: float
    all_int8: dict[str, Any]              # the starting point: flips, logit noise, size
    graph_bytes: int                      # the chosen .tflite before its metadata is embedded
    ranking: tuple[dict, ...]             # the 10 best-ranked ops
    n_rank: int
    tried: tuple[dict, ...] = field(default_factory=tuple)
    max_float_macs: float | None = None  # the cap the float layers were chosen under (--max-float-macs)
    decision: str = ""                    # which decision's flips and which logit's noise (decision_rule)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def rank(q: "aeq.Quantization", probe: Probe, ops: list["aeq.Op"], all_ops: list["aeq.Op"]
         ) -> list[tuple["aeq.Op", float]]:
    """Candidate ops by their own share of the logit-noise variance: the variance added when that op alone is
    int8 (every other op float) over the all-float floor (the interface tensors' quantization), as a share of
    the all-int8 variance. Quantization noises of different layers add up nearly independently, so the shares
    of the best-ranked ops say how much keeping them float removes. On the ranking images, before bias
    correction (a constant offset is what that removes anyway)."""
    def var(float_ops) -> float:
        s = probe.scores(q.quantize([o.scope for o in float_ops]), probe.X_rank)
        return float(np.var(screening_logit(probe.spec, s) - screening_logit(probe.spec, probe.ref_rank)))

    v_all, v_floor = var([]), var(all_ops)
    out = [(op, (var([o for o in all_ops if o is not op]) - v_floor) / max(v_all, 1e-12)) for op in ops]
    return sorted(out, key=lambda t: -t[1])


def _share(chosen, total_macs: int) -> float:
    return sum(op.macs for op, _ in chosen) / max(total_macs, 1)


def _candidate(q, probe: Probe, chosen, k: int) -> tuple[bytes, Step]:
    buf = probe.finish(q.quantize([op.scope for op, _ in chosen[:k]]))
    flips, noise, _ = probe.measure(buf)
    return buf, Step(k, flips, noise, len(buf))


def _ks(n: int) -> list[int]:
    ks, k = [0], 1
    while k < n:
        ks.append(k)
        k *= 2
    return ks + [n] if n else ks


def capped(ranked: list, total_macs: int, share: float) -> list:
    """The ranked ops in rank order, an op left out where keeping it float (with the ops before it that were
    kept) would take the float layers past ``share`` of the model's multiply-adds."""
    out, used = [], 0
    for op, g in ranked:
        if used + op.macs <= share * total_macs + 1e-9:
            out.append((op, g))
            used += op.macs
    return out


def search(q: "aeq.Quantization", budget: Budget, probe: Probe,
           emit: Callable[[str], None] | None = None) -> tuple[bytes, BudgetResult]:
    """The int8 bytes (as shipped) with the fewest best-ranked ops float that meet ``budget`` on the hold-out
    images, and what was chosen. ``ExportError`` naming the best reached when no ``k`` meets it."""
    say = emit or (lambda s: None)
    ops = aeq.op_table(q.fb)
    total_macs = sum(o.macs for o in ops) or 1
    tried: dict[int, tuple[bytes, Step]] = {0: _candidate(q, probe, [], 0)}
    fl = "referable flips" if _graded(probe.spec) else "flips"
    say(f"all int8: {100 * tried[0][1].flips:.2f}% {fl}, logit noise {tried[0][1].noise:.3f} "
        f"on {len(probe.X_hold)} hold-out images")
    ranked: list = []
    if not budget.met(tried[0][1].flips, tried[0][1].noise):
        say(f"ranking {len(aeq.candidates(ops))} ops (each alone int8) on {len(probe.X_rank)} images")
        ranked = capped(rank(q, probe, aeq.candidates(ops), ops), total_macs, budget.max_float_macs)
        lo, hi = 0, None
        for k in _ks(len(ranked))[1:]:
            tried[k] = _candidate(q, probe, ranked, k)
            say(f"{k} float ({100 * _share(ranked[:k], total_macs):.1f}% of the multiply-adds): "
                f"{100 * tried[k][1].flips:.2f}% {fl}, logit noise {tried[k][1].noise:.3f}")
            if budget.met(tried[k][1].flips, tried[k][1].noise):
                hi = k
                break
            lo = k
        if hi is None:
            best = min((s for _, s in tried.values()), key=lambda s: (s.flips, s.noise))
            raise ExportError(f"{budget.text()} cannot be met: the best reached is {100 * best.flips:.2f}% {fl}, "
                              f"logit noise {best.noise:.3f} ({best.k} layers float, "
                              f"{100 * _share(ranked[:best.k], total_macs):.1f}% of the multiply-adds; "
                              f"--max-float-macs {budget.max_float_macs:g}) on "
                              f"{len(probe.X_hold)} hold-out images ({probe.holdout_source})")
        while hi - lo > 1:  # the smallest passing k between the last failing and the first passing one
            mid = (lo + hi) // 2
            tried[mid] = _candidate(q, probe, ranked, mid)
            lo, hi = (lo, mid) if budget.met(tried[mid][1].flips, tried[mid][1].noise) else (mid, hi)
        k = hi
    else:
        k = 0
    buf, step = tried[k]
    chosen = ranked[:k]
    n_flips = int(round(step.flips * len(probe.X_hold)))
    res = BudgetResult(
        max_flips=budget.max_flips, max_logit_noise=budget.max_logit_noise,
        float_layers=tuple({"layer": op.layer, "type": op.type, "macs": op.macs, "noise_share": round(g, 4),
                            "scope": op.scope} for op, g in chosen),
        float_macs_share=round(_share(chosen, total_macs), 5), max_float_macs=budget.max_float_macs,
        holdout={"source": probe.holdout_source, "n": int(len(probe.X_hold))},
        flips=step.flips, flips_ci95=wilson_ci(n_flips, len(probe.X_hold)), logit_noise=step.noise,
        all_int8=tried[0][1].to_dict(), graph_bytes=len(buf),
        ranking=tuple({"layer": op.layer, "type": op.type, "noise_share": round(g, 4)} for op, g in ranked[:10]),
        n_rank=int(len(probe.X_rank)), tried=tuple(tried[j][1].to_dict() for j in sorted(tried)),
        decision=decision_rule(probe.spec))
    return buf, res
