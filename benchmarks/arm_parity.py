"""ARM kernel parity (issue 17): the same .tflite on emulated aarch64 LiteRT vs on this x86 machine.

:func:`compare_outputs` is the comparison one ``arm64-emu`` row records in its ``device_info["vs_x86"]``: the
share of images whose task decision differs from the same file on x86 (each at the model's own threshold),
the largest |Δ| of a raw output (logit or probability, as the model emits it) and whether every output is
bit-identical. :func:`parity_rows` / :func:`markdown_lines` turn a report's arm64-emu rows into the report.md
section; :func:`kernel_tier` names the ISA tier the emulated CPU offers XNNPACK.

The published table (docs/benchmarks/arm_parity.md) is made by ``python -m edgeretina.benchmarks.arm_table``.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Sequence

import numpy as np

from edgeretina.runtime.decisions import decision_flip_rate, to_probabilities
from edgeretina.tasks import TaskSpec, scores_from_output

LATENCY_NOTE = "latency under emulation is not a speed (not measured)"
# the CPUs the parity table covers: plain NEON, NEON + fp16 + dot product (two cores of that tier)
DEFAULT_CPUS = ("cortex-a53", "cortex-a76", "neoverse-n1")


@dataclass(frozen=True)
class Parity:
    """One file on emulated aarch64 vs the same file on x86, on the same inputs."""

    n: int
    flips: int  # images whose task decision differs
    flip_rate: float
    max_abs_diff: float  # largest |Δ| of any raw output
    identical: bool  # every raw output bit-identical
    output: str  # "logits" or "probabilities": what max_abs_diff is measured in

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def compare_outputs(spec: TaskSpec, threshold, raw_arm: np.ndarray, raw_x86: np.ndarray, logits: bool,
                    activation: str | None) -> Parity:
    """:class:`Parity` of raw outputs (N, outputs) of one file on arm vs x86, decisions at ``threshold``."""
    a, b = np.asarray(raw_arm, np.float64), np.asarray(raw_x86, np.float64)
    if a.shape != b.shape:
        raise ValueError(f"arm and x86 outputs differ in shape: {a.shape} vs {b.shape}")
    sa = scores_from_output(spec, to_probabilities(a, logits, activation))
    sb = scores_from_output(spec, to_probabilities(b, logits, activation))
    rate = decision_flip_rate(spec, sa, sb, threshold) if len(a) else float("nan")
    flips = int(round(rate * len(a))) if len(a) else 0
    diff = float(np.max(np.abs(a - b))) if a.size else 0.0
    return Parity(n=int(len(a)), flips=flips, flip_rate=float(rate), max_abs_diff=diff,
                  identical=bool(a.size == 0 or np.array_equal(a, b)),
                  output="logits" if logits else "probabilities")


def kernel_tier(isa: Sequence[str] | None) -> str:
    """The arm64 kernel tier a CPU offers (from :func:`edgeretina.env.isa_flags` names)."""
    isa = set(isa or ())
    if not isa:
        return "?"
    parts = ["NEON"] + [n for f, n in (("fp16", "fp16"), ("dotprod", "dot product"), ("i8mm", "i8mm"),
                                       ("sve2", "SVE2"), ("sme", "SME"), ("sme2", "SME2")) if f in isa]
    return " + ".join(parts)


def is_emulated(row) -> bool:
    return str(_get(row, "device") or "").startswith("arm64-emu")


def _get(row, key):
    return row.get(key) if isinstance(row, dict) else getattr(row, key, None)


def parity_rows(variants) -> list[dict[str, Any]]:
    """One dict per arm64-emu row of a report (VariantReport objects or their dicts)."""
    out = []
    for v in variants:
        if not is_emulated(v):
            continue
        info = _get(v, "device_info") or {}
        p = info.get("vs_x86") or {}
        out.append({"name": _get(v, "name"), "device": _get(v, "device"), "cpu": info.get("emulated_cpu"),
                    "tier": kernel_tier(info.get("isa")), "n": p.get("n"), "flips_x86": p.get("flips"),
                    "flip_rate_x86": p.get("flip_rate"), "max_abs_diff": p.get("max_abs_diff"),
                    "identical": p.get("identical"), "output": p.get("output"),
                    "flip_rate_ref": _get(v, "flip_rate"), "auroc": _get(v, "auroc"),
                    "emulator": info.get("emulator")})
    return out


def fmt(x, nd=3) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{nd}f}"


def _g(x) -> str:
    return "–" if x is None else "0" if x == 0 else f"{x:.1e}"


def pct(x) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.1f} %"


def markdown_lines(variants) -> list[str]:
    """report.md's "ARM kernel parity" section ([] when the report has no arm64-emu rows)."""
    rows = parity_rows(variants)
    if not rows:
        return []
    emu = sorted({r["emulator"] for r in rows if r["emulator"]})
    lines = ["", "## ARM kernel parity (emulated aarch64)", "",
             f"Each file re-scored by aarch64 LiteRT under {', '.join(emu) or 'qemu-user'} on the same preprocessed "
             "inputs and compared with the same file on this x86 machine (decisions at the model's threshold; "
             "Δ in the model's raw output units). AUROC and flips vs the reference use the emulated scores. "
             f"Latency: {LATENCY_NOTE}.", "",
             "| Variant | emulated CPU | kernel tier | n | flips vs x86 | max abs Δ vs x86 | bit-identical | "
             "flips vs reference | AUROC |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        flips = "–" if r["flips_x86"] is None else f"{r['flips_x86']} ({pct(r['flip_rate_x86'])})"
        ident = "–" if r["identical"] is None else "yes" if r["identical"] else "no"
        lines.append(f"| {r['name']} | {r['cpu'] or r['device']} | {r['tier']} | {r['n'] or '–'} | {flips} | "
                     f"{_g(r['max_abs_diff'])} {r['output'] or ''} | {ident} | {pct(r['flip_rate_ref'])} | "
                     f"{fmt(r['auroc'])} |")
    return lines
