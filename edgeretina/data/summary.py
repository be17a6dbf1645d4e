"""``edgeretina data summary``: what a dataset holds for a task, per class and per split, and what is wrong."""
from __future__ import annotations

from typing import Any

from edgeretina.data.loading import count_disc_flags
from edgeretina.data.records import FundusDataset, class_counts
from edgeretina.data.splits import groups_on_two_sides, split_fingerprints
from edgeretina.preprocess import Pipeline


def summarize(ds: FundusDataset, scheme: str | None = None, seed: int = 0,
              onh_pipeline: Pipeline | None = None) -> dict[str, Any]:
    """The summary dict (``--json``). ``n_images`` / ``n_patients`` count the whole dataset as found
    (patients None when the dataset has no patient ids); ``n_task_images`` / ``n_task_patients`` count the
    records that serve the task; ``classes`` and ``splits`` count task records per class. With
    ``onh_pipeline`` (a pipeline with an ``onh_crop`` step) every task image goes through its disc locator:
    ``disc_flags`` = :func:`edgeretina.data.loading.count_disc_flags` for all task images plus ``per_split``
    flagged counts."""
    if scheme is None:
        scheme = "predefined" if ds.has_predefined_splits else "70/10/20"
    parts = ds.split(scheme, seed)
    info = ds.info
    task_pats = ds.n_patients
    out: dict[str, Any] = {
        "format": ds.format,
        "task": ds.spec.task.value,
        "path": ds.path,
        "n_images": info.get("n_images_total", len(ds.records)),
        "n_patients": info.get("n_patients_total", task_pats),
        "n_task_images": len(ds.records),
        "n_task_patients": task_pats,
        "classes": class_counts(ds.records, ds.spec),
        "split": {"scheme": scheme, "seed": seed,
                  "unit": ("the dataset's own split" if scheme == "predefined" else "patient" if task_pats is not None
                           else "image (byte-identical images grouped)")},
        "splits": {name: class_counts(recs, ds.spec) for name, recs in parts.items()},
        "split_sizes": {name: len(recs) for name, recs in parts.items()},
        "split_fingerprints": split_fingerprints(parts),
        "patients_on_two_sides": len(groups_on_two_sides(parts, "patient")),
        "groups_on_two_sides": len(groups_on_two_sides(parts, "group")),
        "problems": list(ds.problems),
        "skipped": [p for p in ds.problems if p.startswith("skipped ")],
    }
    if onh_pipeline is not None:
        flags = count_disc_flags(ds.records, onh_pipeline, max_keys=len(ds.records))
        flagged = set(flags["flagged_keys"])
        flags["per_split"] = {name: sum(r.key in flagged for r in recs) for name, recs in parts.items()}
        flags["flagged_keys"] = flags["flagged_keys"][:50]
        out["disc_flags"] = flags
    for k in ("suspect", "glaucoma_suspected_only", "glaucoma_with_other_findings", "duplicate_groups",
              "duplicate_label_conflicts"):
        if k in info:
            out[k] = info[k]
    return out


def _n(v) -> str:
    return "unknown" if v is None else f"{v:,}"


def format_summary(s: dict[str, Any], max_problems: int = 20) -> str:
    lines = [f"dataset   {s['path']}  (format {s['format']})",
             f"images    {_n(s['n_images'])} images, {_n(s['n_patients'])} patients",
             f"task      {s['task']}: {_n(s['n_task_images'])} images"
             + (f" of {_n(s['n_task_patients'])} patients" if s['n_task_patients'] is not None else "")]
    if "suspect" in s and s["task"] == "glaucoma":
        if s["suspect"] == "include":
            lines.append(f"suspected glaucoma: INCLUDED as glaucoma ({s.get('glaucoma_suspected_only', 0)} eyes "
                         "are 'suspected glaucoma' only; --suspect exclude leaves them out)")
        else:
            lines.append("suspected glaucoma: EXCLUDED (eyes labelled only 'suspected glaucoma' are left out)")
        if s.get("glaucoma_with_other_findings"):
            lines.append(f"note      {s['glaucoma_with_other_findings']} glaucoma eyes carry another finding too; "
                         "normal eyes are pure 'normal fundus'")
    lines.append("classes   " + "  ".join(f"{k} {v:,}" for k, v in s["classes"].items()))
    sp = s["split"]
    lines.append(f"split     {sp['scheme']} (seed {sp['seed']}, unit: {sp['unit']})")
    for name, counts in s["splits"].items():
        n = s["split_sizes"][name]
        lines.append(f"  {name:<6} {n:>6,}  " + "  ".join(f"{k} {v:,}" for k, v in counts.items()))
    lines.append(f"leakage   patients on two sides: {s['patients_on_two_sides']}, "
                 f"groups on two sides: {s['groups_on_two_sides']}")
    if s.get("disc_flags"):
        f = s["disc_flags"]
        why = ", ".join(f"{k} {v}" for k, v in f["reasons"].items())
        lines.append(f"onh crops {f['flagged']:,} of {f['n']:,} flagged (low-confidence / no disc found"
                     + (f": {why}" if why else "") + ")")
        lines.append("          per split: " + "  ".join(f"{k} {v:,}" for k, v in f["per_split"].items()))
        if f["flagged_keys"]:
            more = f" … (+{f['flagged'] - len(f['flagged_keys'])})" if f["flagged"] > len(f["flagged_keys"]) else ""
            lines.append("          e.g. " + ", ".join(f["flagged_keys"][:10]) + (more if len(f["flagged_keys"]) <= 10
                                                                                 else " …"))
    probs = s["problems"]
    if probs:
        lines.append(f"problems  ({len(probs)})")
        for p in probs[:max_problems]:
            lines.append(f"  - {p}")
        if len(probs) > max_problems:
            lines.append(f"  ... {len(probs) - max_problems} more (--json lists all)")
    else:
        lines.append("problems  none")
    return "\n".join(lines)
