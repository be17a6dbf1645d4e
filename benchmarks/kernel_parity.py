"""The report.md section of ``cpu:builtin`` rows: each file on LiteRT's built-in kernels against the same file on
XNNPACK (``device_info["vs_xnnpack"]``, :class:`edgeretina.emulation.parity.Parity`) — how much a file's
decisions depend on the kernel library that runs it (issue 17)."""
from __future__ import annotations

from .arm_parity import fmt, pct


def _get(row, key):
    return row.get(key) if isinstance(row, dict) else getattr(row, key, None)


def markdown_lines(variants) -> list[str]:
    rows = [v for v in variants if str(_get(v, "device") or "") == "cpu:builtin"
            and (_get(v, "device_info") or {}).get("vs_xnnpack")]
    if not rows:
        return []
    out = ["", "## Kernel-library parity (LiteRT built-in kernels vs XNNPACK, this CPU)", "",
           "Each file scored by LiteRT's built-in kernels (`--device cpu:builtin`, no XNNPACK delegate) and by "
           "XNNPACK on the same preprocessed inputs (decisions at the model's threshold; Δ in the model's raw "
           "output units; DR grading: the predicted grade, and the referable decision, predicted grade ≥ 2).", "",
           "| Variant | n | decisions differing from XNNPACK | max abs Δ | bit-identical | flips vs reference | AUROC |",
           "|---|---|---|---|---|---|---|"]
    for v in rows:
        p = _get(v, "device_info")["vs_xnnpack"]
        same = "yes" if p.get("identical") else "no"
        ref = (f"; referable {p['referable_flips']} ({pct(p.get('referable_flip_rate'))})"
               if p.get("referable_flips") is not None else "")
        out.append(f"| {_get(v, 'name')} | {p.get('n')} | {p.get('flips')} ({pct(p.get('flip_rate'))}){ref} | "
                   f"{p.get('max_abs_diff', 0):.1e} {p.get('output', '')} | {same} | {pct(_get(v, 'flip_rate'))} | "
                   f"{fmt(_get(v, 'auroc'))} |")
    return out
