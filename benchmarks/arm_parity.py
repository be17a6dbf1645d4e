"""ARM kernel parity in bench reports (issue 17): the report.md section of a report's ``arm64-emu`` rows.

The comparison itself (:class:`~edgeretina.emulation.parity.Parity`, :func:`compare_outputs`,
:func:`kernel_tier`) lives in :mod:`edgeretina.emulation.parity` (``export --verify-arm`` uses it too).
The published table (docs/benchmarks/arm_parity.md) is made by ``python -m edgeretina.benchmarks.arm_table``.
"""
from __future__ import annotations

import math
from typing import Any

from edgeretina.emulation.cpus import PARITY_CPUS as DEFAULT_CPUS
from edgeretina.emulation.parity import LATENCY_NOTE, Parity, compare_outputs, kernel_tier

__all__ = ["DEFAULT_CPUS", "LATENCY_NOTE", "Parity", "compare_outputs", "kernel_tier", "markdown_lines",
           "parity_rows", "fmt", "pct", "is_emulated"]


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
                    "emulator": info.get("emulator"), "referable_flips_x86": p.get("referable_flips"),
                    "referable_flip_rate_x86": p.get("referable_flip_rate"),
                    "referable_flip_rate_ref": _get(v, "referable_flip_rate"), "kappa": _get(v, "kappa")})
    return out


def fmt(x, nd=3) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{nd}f}"


def _g(x) -> str:
    return "–" if x is None else "0" if x == 0 else f"{x:.1e}"


def pct(x) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.1f} %"


def _count(n, rate) -> str:
    return "–" if n is None else f"{n} ({pct(rate)})"


def _intro(rows, graded: bool) -> list[str]:
    emu = sorted({r["emulator"] for r in rows if r["emulator"]})
    decided = ("the predicted grade — the expected grade, rounded — and the referable decision, predicted grade "
               "≥ 2" if graded else "decisions at the model's threshold")
    return ["", "## ARM kernel parity (emulated aarch64)", "",
            f"Each file re-scored by aarch64 LiteRT under {', '.join(emu) or 'qemu-user'} on the same preprocessed "
            f"inputs and compared with the same file on this x86 machine ({decided}; "
            "Δ in the model's raw output units). "
            f"{'κ, referable AUROC' if graded else 'AUROC'} and flips vs the reference use the emulated scores. "
            f"Latency: {LATENCY_NOTE}.", ""]


def _line(r, graded: bool) -> str:
    ident = "–" if r["identical"] is None else "yes" if r["identical"] else "no"
    head = f"| {r['name']} | {r['cpu'] or r['device']} | {r['tier']} | {r['n'] or '–'} | "
    delta = f"{_g(r['max_abs_diff'])} {r['output'] or ''} | {ident} | "
    if graded:
        return (head + f"{_count(r['referable_flips_x86'], r['referable_flip_rate_x86'])} | "
                f"{_count(r['flips_x86'], r['flip_rate_x86'])} | " + delta +
                f"{pct(r['referable_flip_rate_ref'])} | {fmt(r['kappa'])} | {fmt(r['auroc'])} |")
    return head + f"{_count(r['flips_x86'], r['flip_rate_x86'])} | " + delta + \
        f"{pct(r['flip_rate_ref'])} | {fmt(r['auroc'])} |"


def markdown_lines(variants) -> list[str]:
    """report.md's "ARM kernel parity" section ([] when the report has no arm64-emu rows). DR grading rows
    (their ``vs_x86`` has referable flips) get referable and grade flips vs x86, and κ and referable AUROC."""
    rows = parity_rows(variants)
    if not rows:
        return []
    graded = any(r["referable_flips_x86"] is not None for r in rows)
    if graded:
        header = ["| Variant | emulated CPU | kernel tier | n | referable flips vs x86 | grade flips vs x86 | "
                  "max abs Δ vs x86 | bit-identical | referable flips vs reference | κ | referable AUROC |",
                  "|---|---|---|---|---|---|---|---|---|---|---|"]
    else:
        header = ["| Variant | emulated CPU | kernel tier | n | flips vs x86 | max abs Δ vs x86 | bit-identical | "
                  "flips vs reference | AUROC |", "|---|---|---|---|---|---|---|---|---|"]
    return _intro(rows, graded) + header + [_line(r, graded) for r in rows]
