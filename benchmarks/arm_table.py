"""``python -m edgeretina.benchmarks.arm_table --models DIR --data DATA``: every model benched on x86 and on
emulated aarch64 CPUs (default cortex-a53 / cortex-a76 / neoverse-n1, ``--cpus``), written as the ARM parity
table (docs/benchmarks/arm_parity.md was made with it). Emulation is slow (int8 MobileNetV2-224 ~1 s per image
per CPU, float ~4 s): ``--max-images`` keeps it to a seeded subset, and the table says n.
"""
from __future__ import annotations

import argparse
import shlex
import sys
from dataclasses import replace
from pathlib import Path
from typing import Sequence

from edgeretina.env import machine_line
from edgeretina.errors import EdgeRetinaError
from edgeretina.io import write_text_atomic

from .arm_parity import DEFAULT_CPUS, fmt, markdown_lines, pct
from .harness import run_bench
from .report import Report


TITLE = "ARM kernel parity of the exported variants (emulated aarch64 vs x86)"


def _x86_lines(x86) -> list[str]:
    """The x86 rows of the same files: AUROC and flips vs the reference; DR grading κ, referable AUROC and
    referable / grade flips."""
    if not x86:
        return []
    if any(v.kappa is not None for v in x86):
        return ["x86 (XNNPACK) rows of the same files:", "",
                "| Variant | κ | referable AUROC | referable flips vs reference | grade flips vs reference |",
                "|---|---|---|---|---|"] + \
            [f"| {v.name} | {fmt(v.kappa)} | {fmt(v.auroc)} | {pct(v.referable_flip_rate)} | "
             f"{pct(v.grade_flip_rate)} |" for v in x86]
    return ["x86 (XNNPACK) rows of the same files:", "", "| Variant | AUROC | flips vs reference |", "|---|---|---|"] + \
        [f"| {v.name} | {fmt(v.auroc)} | {pct(v.flip_rate)} |" for v in x86]


def table_markdown(report, command: str, title: str = TITLE) -> str:
    """docs/benchmarks/arm_parity.md from a bench report with cpu and arm64-emu rows."""
    ds = report.dataset
    x86 = [v for v in report.variants if v.device == "cpu"]
    lines = [f"# {title}", "",
             f"- Data: `{ds.get('path')}` split `{ds.get('split')}`, {ds.get('n_images')} images"
             f"{' (a seeded random subset)' if report.settings.get('max_images') else ''}",
             f"- x86 host: {machine_line(report.machine)}; ai-edge-litert {report.machine.get('ai_edge_litert')}",
             f"- Reference for AUROC / flips: `{report.reference}`",
             f"- Command: `{command}`", ""]
    lines += _x86_lines(x86)
    lines += markdown_lines(report.variants)
    return "\n".join(lines) + "\n"


def merge_reports(folders: Sequence[str | Path]):
    """One report of several bench report folders of the same data and reference (e.g. one emulated CPU
    each, run side by side): the first report's header, every row once (by variant and device)."""
    reports = [Report.load(f) for f in folders]
    first = reports[0]
    for r in reports[1:]:
        if (r.dataset.get("path"), r.dataset.get("n_images"), r.reference) != \
                (first.dataset.get("path"), first.dataset.get("n_images"), first.reference):
            raise EdgeRetinaError("arm_table --merge: the reports differ in data, image count or reference")
    rows, seen = [], set()
    for r in reports:
        for v in r.variants:
            if (v.name, v.device) not in seen:
                seen.add((v.name, v.device))
                rows.append(v)
    return replace(first, variants=tuple(rows))


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m edgeretina.benchmarks.arm_table",
                                 description="ARM parity table: every model on x86 and on emulated aarch64 CPUs")
    ap.add_argument("--models", nargs="+")
    ap.add_argument("--data")
    ap.add_argument("--merge", nargs="+", default=None, metavar="REPORT_DIR",
                    help="no bench: the table of these bench report folders (same data and reference)")
    ap.add_argument("--reference", default=None, help="the reference for AUROC / flips (e.g. the Keras run dir; "
                                                       "a .keras model runs on x86 only)")
    ap.add_argument("--cpus", default=",".join(DEFAULT_CPUS), help="emulated CPUs (';'-separated when one has "
                                                                    "a ',prop=...' suffix)")
    ap.add_argument("--max-images", type=int, default=100)
    ap.add_argument("--split", default="test")
    ap.add_argument("--out", default="docs/benchmarks/arm_parity.md")
    ap.add_argument("--report", default=None, help="also write the full bench report into this folder")
    ap.add_argument("--title", default=TITLE, help="the table's heading")
    a = ap.parse_args(argv)
    cpus = [c for c in (a.cpus.split(";") if ";" in a.cpus else a.cpus.split(",")) if c]
    devices = ("cpu",) + tuple(f"arm64-emu:{c}" for c in cpus)
    command = "python -m edgeretina.benchmarks.arm_table " + shlex.join(sys.argv[1:] if argv is None else argv)
    try:
        if a.merge:
            report = merge_reports(a.merge)
        elif not (a.models and a.data):
            raise EdgeRetinaError("give --models and --data (or --merge REPORT_DIR...)")
        else:
            report = run_bench(a.models, a.data, out=a.report, reference=a.reference, devices=devices, threads=1,
                               split=a.split,
                               max_images=a.max_images, stability=False, n_boot=200, runs=1, warmup=0,
                               timing_images=1, progress=lambda d, t, what: print(f"[{d}/{t}] {what}", flush=True),
                               warn=lambda m: print(f"warning: {m}", file=sys.stderr))
    except EdgeRetinaError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    write_text_atomic(Path(a.out), table_markdown(report, command, a.title))
    print(Path(a.out).read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
