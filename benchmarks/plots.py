"""Figures of a benchmark: ``roc.png`` (every variant's ROC overlaid, ``edgeretina.metrics.plot_roc``) and
``ballchart.png`` (images/s on x, the task's headline metric on y — AUROC, DR grading's κ or multi-label macro
AUROC — ball area proportional to parameters, each ball labelled with that metric's density per million
parameters — the glaucoma benchmark paper's Figure 6)
and, with ``--shift``, ``shift.png`` (AUROC per camera shift per variant, mild and severe panels).

matplotlib with the Agg backend (no display needed); files are written atomically.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from edgeretina.io import atomic_path


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def plot_ballchart(variants, path: str | Path, title: str = "Throughput vs AUROC", metric: str = "auroc",
                   label: str = "AUROC", density: str | None = "auroc_density") -> Path:
    """``variants``: VariantReport-like objects (name, device, images_per_s, params and the ``metric`` and
    ``density`` attributes: ``auroc``/``auroc_density``, ``kappa``/``kappa_density``)."""
    plt = _plt()
    val = lambda v: getattr(v, metric, None)  # noqa: E731
    pts = [v for v in variants if v.images_per_s and val(v) is not None
           and math.isfinite(v.images_per_s) and math.isfinite(val(v))]
    fig, ax = plt.subplots(figsize=(7.2, 5.4), dpi=120)
    devices = sorted({v.device for v in pts})
    cmap = plt.get_cmap("tab10")
    colours = {d: cmap(i % 10) for i, d in enumerate(devices)}
    pmax = max((v.params for v in pts), default=1) or 1
    for v in pts:
        size = 80 + 1400 * (v.params / pmax)
        ax.scatter(v.images_per_s, val(v), s=size, color=colours[v.device], alpha=0.45,
                   edgecolors="black", linewidths=0.6)
        dens = getattr(v, density, None) if density else None
        text = v.name + (f"\n{dens:.3f}/M" if dens is not None and math.isfinite(dens) else "")
        ax.annotate(text, (v.images_per_s, val(v)), fontsize=8, ha="center", va="center")
    for d in devices:
        ax.scatter([], [], s=80, color=colours[d], alpha=0.45, edgecolors="black", label=d)
    xs = [v.images_per_s for v in pts]
    if xs and max(xs) / max(min(xs), 1e-9) > 20:
        ax.set_xscale("log")
    ys = [val(v) for v in pts]
    if ys:
        lo, hi = min(ys), max(ys)
        pad = max(0.01, (hi - lo) * 0.25)
        ax.set_ylim(max(-1.0 if metric == "kappa" else 0.0, lo - pad), min(1.0, hi + pad))
    if xs:
        lo, hi = min(xs), max(xs)
        if ax.get_xscale() == "log":
            ax.set_xlim(lo / 1.6, hi * 1.6)
        else:
            pad = max(1.0, (hi - lo) * 0.15)
            ax.set_xlim(max(0.0, lo - pad), hi + pad)
    per_m = f"; under each name: {label} per million parameters" if density else ""
    ax.set(xlabel="images/s (batch 1)", ylabel=label)
    ax.set_title(f"{title}\nball area ∝ parameters{per_m}", fontsize=9)
    ax.grid(alpha=0.3)
    if devices:
        ax.legend(title="device", fontsize=8, loc="best")
    fig.tight_layout()
    return _save(fig, plt, path)


def plot_shifts(results, path: str | Path, title: str = "AUROC under camera shifts") -> Path:
    """``results``: ShiftResult-like rows (name, file, shift, level, auroc). One panel per level (mild,
    severe); x = shift, one line of markers per variant, its unshifted AUROC as a dotted line."""
    plt = _plt()
    shifts = []
    for r in results:
        if r.shift != "none" and r.shift not in shifts:
            shifts.append(r.shift)
    variants = []
    for r in results:
        if (r.name, r.file) not in variants:
            variants.append((r.name, r.file))
    names = [n for n, _ in variants]
    label = {(n, f): (n if names.count(n) == 1 else f"{n} ({Path(f).parent.name})") for n, f in variants}
    val = {(r.name, r.file, r.shift, r.level): r.auroc for r in results}
    levels = ["mild", "severe"]
    fig, axes = plt.subplots(1, 2, figsize=(max(8.0, 1.0 + 0.7 * len(shifts) * 2), 4.8), dpi=120, sharey=True)
    markers = "osD^v<>PX*"
    ys_all = []
    for ax, lv in zip(axes, levels):
        x = np.arange(len(shifts))
        for i, v in enumerate(variants):
            ys = np.array([val.get((v[0], v[1], s, lv)) if val.get((v[0], v[1], s, lv)) is not None else np.nan
                           for s in shifts], dtype=float)
            off = (i - (len(variants) - 1) / 2) * 0.08
            ax.plot(x + off, ys, markers[i % len(markers)], color=f"C{i % 10}", ms=6, alpha=0.85,
                    label=label[v] if lv == "mild" else None)
            base = val.get((v[0], v[1], "none", "none"))
            if base is not None and math.isfinite(base):
                ax.axhline(base, color=f"C{i % 10}", ls=":", lw=0.9, alpha=0.7)
                ys_all.append(base)
            ys_all += [y for y in ys if math.isfinite(y)]
        ax.set_xticks(x)
        ax.set_xticklabels(shifts, rotation=55, ha="right", fontsize=8)
        ax.set_title(f"{lv} shifts")
        ax.grid(alpha=0.3, axis="y")
    if ys_all:
        lo, hi = min(ys_all), max(ys_all)
        pad = max(0.01, (hi - lo) * 0.1)
        axes[0].set_ylim(max(0.0, lo - pad), min(1.0, hi + pad))
    axes[0].set_ylabel("AUROC (dotted: unshifted)")
    axes[0].legend(fontsize=8, loc="lower left")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, plt, path)


def _save(fig, plt, path) -> Path:
    path = Path(path)
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png")
    finally:
        plt.close(fig)
    return path
