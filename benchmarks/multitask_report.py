"""The multi-task study's page (``docs/benchmarks/multitask_odir.md`` / ``.json``): heads, paired
comparisons, edge variants per head, one multi-task int8 file vs two single-task ones, issue 15's targets."""
from __future__ import annotations

import json
from pathlib import Path

from edgeretina.env import machine_line
from edgeretina.io import ensure_writable_dir, write_json_atomic, write_text_atomic

from .report import Report

NAME = "multitask_odir"
TITLE = "Glaucoma + DR multi-task — ODIR-5K eyes, frozen MobileNetV2-224, two sigmoid heads (ExpUWBCE vs BCE)"
COMMAND = "python -m edgeretina.benchmarks.multitask"
TOLERANCE = 0.01  # issue 15: per-task AUROC within 0.01 of the single-task models
HEAD_NAMES = {"multi_bce": "multi-task, BCE", "multi_expuwbce": "multi-task, ExpUWBCE",
              "single_glaucoma": "single-task glaucoma (CE)", "single_dr": "single-task DR (CE)"}
TASKS = ("glaucoma", "dr")


def _md(headers: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)] + \
        ["| " + " | ".join(r) + " |" for r in rows]


def _auc(d: dict | None) -> str:
    if not d:
        return "–"
    return f"{d['auroc']:.3f} ({d['ci95'][0]:.3f}–{d['ci95'][1]:.3f})"


def _delta(p: dict) -> str:
    return f"{p['delta']:+.4f} ({p['ci95'][0]:+.3f} to {p['ci95'][1]:+.3f}), p {p['p']:.2f}"


def heads_table(heads: dict) -> list[str]:
    test = heads["test"]["heads"]
    rows = []
    for k, label in HEAD_NAMES.items():
        h = heads["heads"][k]
        w1 = "–" if not h.get("w1") else ", ".join(f"{w:.2f}" for w in h["w1"])
        val = heads["val_macro_auroc"].get(k)
        rows.append([label + (" **(shipped)**" if k == heads["chosen"] else ""), w1,
                     "–" if val is None else f"{val:.3f}", ", ".join(f"{h['lambda'][t]:g}" for t in TASKS if t in h["lambda"]),
                     *[_auc(test[k].get(t)) for t in TASKS]])
    return _md(["head", "ExpUWBCE W1 (G, D)", "val macro AUROC", "L2 λ per task (val)", "test AUROC glaucoma (95 % CI)",
                "test AUROC DR (95 % CI)"], rows)


def pairs_table(heads: dict) -> list[str]:
    rows = [[p["comparison"], p["task"], _delta(p)] for p in heads["test"]["pairs"]]
    return _md(["paired comparison (same test eyes)", "task", "ΔAUROC (DeLong 95 % CI), p"], rows)


def alpha_table(heads: dict) -> list[str]:
    rows = [[f"{r['alpha']:g}", ", ".join(f"{w:.2f}" for w in r["w1"]), f"{r['val_auroc_glaucoma']:.3f}",
             f"{r['val_auroc_dr']:.3f}", f"{r['val_macro_auroc']:.4f}",
             ", ".join(f"{v:g}" for v in r["lambda"].values())]
            for r in heads["alpha_rows"]]
    return _md(["alpha", "W1 (glaucoma, DR)", "val AUROC glaucoma", "val AUROC DR", "val macro AUROC", "L2 λ (G, D; val)"],
               rows)


def one_vs_two_table(one_two: dict) -> list[str]:
    sz, auc, ms = one_two["size_bytes"], one_two["auroc"], one_two["p50_ms"]
    two = sz["glaucoma"] + sz["dr"]
    return _md(["deployment", "files", "size MB", "p50 ms per eye (both tasks)", "AUROC glaucoma", "AUROC DR"], [
        ["one multi-task int8", "1", f"{sz['multi'] / 1e6:.2f}", f"{ms['one_multitask']:.1f}",
         f"{auc['multi']['glaucoma']:.3f}", f"{auc['multi']['dr']:.3f}"],
        ["two single-task int8", "2", f"{two / 1e6:.2f} ({sz['glaucoma'] / 1e6:.2f} + {sz['dr'] / 1e6:.2f})",
         f"{ms['two_single_task']:.1f}", f"{auc['glaucoma']['glaucoma']:.3f}", f"{auc['dr']['dr']:.3f}"]])


def targets(heads: dict, one_two: dict, total_s: float) -> list[dict]:
    """Issue 15's multi-task targets, measured."""
    chosen, pairs = heads["chosen"], heads["test"]["pairs"]
    vs_single = [p for p in pairs if p["a"] == chosen and p["b"].startswith("single_")]
    ok = all(p["delta"] >= -TOLERANCE for p in vs_single)
    out = [{"target": f"per-task test AUROC of the shipped multi-task model ({HEAD_NAMES[chosen]}) within "
                      f"{TOLERANCE} of the single-task models (ΔAUROC ≥ −{TOLERANCE})", "met": ok,
            "measured": "; ".join(f"{p['task']} {_delta(p)}" for p in vs_single)}]
    ev = [p for p in pairs if p["a"] == "multi_expuwbce" and p["b"] == "multi_bce"]
    out.append({"target": "ExpUWBCE vs BCE reported per task with CIs", "met": bool(ev),
                "measured": "; ".join(f"{p['task']} {_delta(p)}" for p in ev)})
    sz, auc, ms = one_two["size_bytes"], one_two["auroc"], one_two["p50_ms"]
    smaller = sz["multi"] < sz["glaucoma"] + sz["dr"]
    faster = ms["one_multitask"] < ms["two_single_task"]
    equal = all(auc["multi"][t] >= auc[t][t] - TOLERANCE for t in TASKS)
    out.append({"target": f"one multi-task int8 model smaller and faster than the two single-task int8 models at "
                          f"per-task AUROC within {TOLERANCE}", "met": smaller and faster and equal,
                "measured": f"{sz['multi'] / 1e6:.2f} vs {(sz['glaucoma'] + sz['dr']) / 1e6:.2f} MB, "
                            f"{ms['one_multitask']:.1f} vs {ms['two_single_task']:.1f} ms; AUROC "
                            + ", ".join(f"{t} {auc['multi'][t]:.3f} vs {auc[t][t]:.3f}" for t in TASKS)})
    out.append({"target": "the experiment ≤ 30 min on 2 CPU cores (issue 15)", "met": total_s <= 1800,
                "measured": f"{total_s / 60:.1f} min"})
    return out


def step_seconds(root: Path, heads: dict, steps: dict) -> dict[str, float]:
    """Wall seconds per step (``timings.json`` keeps those of earlier, resumed invocations)."""
    f = root / "timings.json"
    t = json.loads(f.read_text()) if f.is_file() else {}
    t.update({k: round(v, 1) for k, v in steps.items()})
    t["features"] = round(heads["features_seconds"], 1)
    t["heads"] = heads["seconds"]
    write_json_atomic(f, t)
    return t


def publish(root: Path, docs: Path, heads: dict, bench: dict, one_two: dict, steps: dict) -> dict:
    docs = ensure_writable_dir(docs)
    report = Report.from_dict(bench)
    timings = step_seconds(root, heads, steps)
    total = sum(timings.values())
    tg = targets(heads, one_two, total)
    loads = json.loads((root / "load.json").read_text()) if (root / "load.json").is_file() else {}
    payload = {"experiment": NAME, "title": TITLE, "command": COMMAND, "machine": report.machine,
               "dataset": heads["dataset"], "heads": heads, "one_vs_two": one_two, "targets": tg,
               "step_seconds": timings, "total_seconds": round(total, 1), "load": loads,
               "variants": [v.to_dict() for v in report.variants]}
    write_json_atomic(docs / f"{NAME}.json", payload)
    lines = [f"# {TITLE}", "", f"Regenerate: `{COMMAND}` (also `python -m edgeretina.benchmarks.real_data --only "
             f"{NAME}`; from the repository root, with `../shared` or `$EDGERETINA_SHARED`).", "",
             *page_intro(heads, report, loads), "", "## Heads (test split, scored once)", "", *heads_table(heads),
             "", *pairs_table(heads), "", "### ExpUWBCE weight (validation only)", "", *alpha_table(heads), "",
             "## Edge variants of the shipped multi-task model (LiteRT, 2 threads, test split)", "",
             *_md([h for h, _ in report.columns()], report.rows()), *report.label_markdown(), "",
             "## One multi-task int8 model vs two single-task int8 models", "", *one_vs_two_note(one_two), "",
             *one_vs_two_table(one_two), "", "## Targets (issue 15)", "", "| target | met | measured |",
             "|---|---|---|"]
    lines += [f"| {t['target']} | {'yes' if t['met'] else 'NO'} | {t['measured']} |" for t in tg]
    lines += ["", f"Wall time of the steps: {total / 60:.1f} min ("
              + ", ".join(f"{k} {v / 60:.1f}" for k, v in timings.items()) + ").", ""]
    write_text_atomic(docs / f"{NAME}.md", "\n".join(lines))
    return payload


def page_intro(heads: dict, report: Report, loads: dict) -> list[str]:
    ds = heads["dataset"]
    counts = "; ".join(f"{k} {v['eyes']} eyes of {v['patients']} patients (glaucoma {v['glaucoma']}, DR {v['dr']})"
                       for k, v in ds.items())
    load = ", ".join(f"{k} {v}" for k, v in loads.items()) or "not recorded"
    return [f"Machine: {machine_line(report.machine)}; LiteRT {report.machine.get('ai_edge_litert', '')}, "
            f"TensorFlow {report.machine.get('tensorflow', '')}. Shared with other jobs (1-minute load average as "
            f"the timing steps finished: {load}): latencies are upper bounds, compare them within this page.", "",
            f"Data: ODIR-5K eyes with a diagnostic keyword, labels (glaucoma, DR) from each eye's own keywords "
            f"(task `multitask`), split 70/10/20 by patient (seed 0; no patient on two sides): {counts}.", "",
            "Method: one pass of every eye through the frozen ImageNet MobileNetV2-224 (pooled 1280-d features, "
            "cached); every head is a linear read-out of those features fitted by full-batch L-BFGS on the "
            "project's Keras loss (`train.losses.make_loss`) plus an L2 penalty λ/2·|W|² on standardised features "
            "(folded into the model's `head_logits` Dense), λ chosen per task on the validation split (the losses are "
            "means of per-task terms, so each head's weights are their own problem). Multi-task: GAP → "
            "Dense(2, sigmoid), plain BCE or ExpUWBCE (W1 per task = (n_neg / n_pos)^alpha on the training "
            "split, alpha chosen by validation macro AUROC; W2 = 1). Single-task: GAP → Dense(2, softmax) = "
            "sigmoid of one logit, cross-entropy (= BCE). The shipped multi-task model is the loss with the "
            "better validation macro AUROC. Thresholds: validation Youden J per task (a list in the metadata). "
            "The test split is scored once, after every choice. With the backbone frozen, the two heads share "
            "only the features: each task's logit is its own linear read-out, so the multi-task model differs "
            "from the single-task ones by its loss and early stopping, and its gain is deployment — one backbone "
            "pass for both tasks."]


def one_vs_two_note(one_two: dict) -> list[str]:
    return [f"The multi-task int8 file against the two single-task int8 files (same backbone, same 200 "
            f"calibration eyes), all {one_two['n_test']} test eyes scored in LiteRT; latency: batch 1, "
            f"{one_two['threads']} threads, p50 over {one_two['timing_images']} eyes × {one_two['runs']} runs, "
            f"median of {len(one_two['p50_ms_rounds']['one_multitask'])} alternating rounds (one invoke vs "
            f"the two single-task invokes per eye)."]
