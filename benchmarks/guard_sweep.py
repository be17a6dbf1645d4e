"""The int8-guard's band as a trade-off: flips vs re-scored share vs mean latency, on the agreement images.

An int8-guard file carries one band (``k`` × its int8 logit noise, ``converters/guard.py``). A wider band
re-scores more images with the fp16 fallback (fewer flips, slower on average); a narrower one the opposite.
``bench --agreement-data`` already runs the guard's int8 graph and its fp16 fallback on every agreement image,
so the whole curve costs nothing more than one fp16 pass: for each ``k`` of :data:`KS` the cascade is applied
to the same int8 and fp16 outputs (exactly what the guard runner computes with that band) and scored against
the reference with the bench's own decision rule. The mean latency of each band is **estimated** from two
batch-1 timings of the same run — the int8 graph and the fp16 fallback on the same images — as
``t_int8 + share × t_fp16`` and given as a ratio to ``t_int8`` (issue 13's "≤ 1.3× plain int8").
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Sequence

import numpy as np

from edgeretina.compare import wilson_ci
from edgeretina.converters import guard as guard_mod
from edgeretina.converters.guard import GuardInfo
from edgeretina.tasks import TaskSpec

from .scoring import decision_change

KS: tuple[float, ...] = (0.0, 1.0, 1.5, 2.0, 2.5, 3.0, 4.0)  # bands in units of the file's int8 logit noise


@dataclass(frozen=True)
class SweepRow:
    """One band of an int8-guard's sweep on the agreement images."""

    k: float
    band: float               # logits
    rescored_share: float     # images the fp16 fallback re-scores
    flips: int                # decisions that differ from the reference's
    n: int
    flip_rate: float
    ci95: tuple[float, float]
    latency_ratio: float | None  # estimated mean latency / the int8 graph's (None: not timed)
    shipped: bool             # the band in the file's metadata

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["ci95"] = list(self.ci95)
        return d


def sweep(spec: TaskSpec, thresholds: tuple[Any, Any], ref_probs, outputs: dict[str, Any], info: GuardInfo,
          ks: Sequence[float] = KS) -> list[SweepRow]:
    """Rows for each ``k`` (plus the file's own ``info.k``): the cascade of ``outputs["int8"]`` with
    ``outputs["fp16"]`` (probabilities of the same images) at band ``k × info.noise_rms`` and the guard's
    threshold, its decisions compared with ``ref_probs`` at the reference's (``thresholds`` = (guard's,
    reference's)). ``outputs["t_ratio"]`` = fp16 / int8 mean batch-1 latency of the same run (None: no
    latency column)."""
    p8 = np.asarray(outputs["int8"], dtype=np.float64)
    pf = np.asarray(outputs["fp16"], dtype=np.float64)
    t_ratio = outputs.get("t_ratio")
    n = len(p8)
    rows = []
    for k in sorted({float(x) for x in ks} | {float(info.k)}):
        band = k * float(info.noise_rms)
        probs, mask = guard_mod.cascade(spec, p8, lambda m: pf[m], thresholds[0], band)
        rate = decision_change(spec, ref_probs, probs, thresholds[1]).flip_rate or 0.0
        flips = int(round(rate * n))
        share = float(mask.mean()) if n else 0.0
        rows.append(SweepRow(k, band, share, flips, n, flips / n if n else 0.0, wilson_ci(flips, n),
                             None if t_ratio is None else 1.0 + share * float(t_ratio),
                             abs(k - float(info.k)) < 1e-12))
    return rows


def timing_ratio(primary, fallback, x: np.ndarray, runs: int = 3) -> float:
    """fp16 / int8 mean batch-1 latency on the same images (``x``: a few preprocessed images)."""
    t8 = primary.time(x, runs=runs, warmup=3).mean
    tf = fallback.time(x, runs=runs, warmup=3).mean
    return float(tf / t8) if t8 > 0 else float("nan")


def markdown_lines(sweeps: dict[str, dict[str, Any]] | None) -> list[str]:
    """The report section: one table per int8-guard file (``sweeps``: {file: {"noise_rms", "t_ratio",
    "rows": [SweepRow.to_dict()]}})."""
    out: list[str] = []
    for file, s in (sweeps or {}).items():
        ratio = s.get("t_ratio")
        out += ["", f"int8-guard band sweep on the agreement images — `{file}` (int8 logit noise "
                f"{s['noise_rms']:.3f}; band = k × noise; fp16 / int8 batch-1 latency here "
                f"{'–' if ratio is None else f'{ratio:.2f}'}; estimated mean latency = int8 + re-scored share × "
                "fp16; * = the band in the file)", "",
                "| k | band (logits) | re-scored | flips [95% CI] | est. mean latency vs int8 |",
                "|---|---|---|---|---|"]
        for r in s["rows"]:
            lo, hi = r["ci95"]
            lat = "–" if r.get("latency_ratio") is None else f"{r['latency_ratio']:.2f}×"
            out.append(f"| {r['k']:g}{' *' if r.get('shipped') else ''} | {r['band']:.3f} | "
                       f"{100 * r['rescored_share']:.1f} % | {r['flips']} ({100 * r['flip_rate']:.2f} %) "
                       f"[{100 * lo:.2f}–{100 * hi:.2f} %] | {lat} |")
    return out
