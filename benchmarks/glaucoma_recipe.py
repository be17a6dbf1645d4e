"""Glaucoma recipe chosen by cross-validation, the locked test split scored once (issue 12).

    python -m edgeretina.benchmarks.glaucoma_recipe [--work runs/recipe] [--docs docs/benchmarks] [--k 5]
                                                     [--only-cv] [--candidates NAME,...]

Every step is the public CLI run as a subprocess and is skipped when its output exists (an interrupted run
resumes):

1. ``edgeretina train <candidate> --cv K --cv-only`` for each candidate recipe → ``cv.json`` (per-fold AUROC,
   pooled out-of-fold AUROC with a bootstrap CI, the frozen-feature probe on the same folds). The test split is
   never loaded in this step.
2. The choice, made on CV only: constraints first — at most ``MAC_BUDGET`` × the multiply-adds of the
   224-px full-fundus model (when a candidate meets it), then a CV ΔAUROC ≥ ``SHIFT_FLOOR`` under every
   severe ``--cv-shifts`` shift (when a candidate keeps it) — then the highest pooled out-of-fold AUROC, a
   candidate within ``TOLERANCE`` of it that needs fewer multiply-adds winning (the same MACs run on every
   device, so it is the faster model everywhere). Ensembles of two candidates are also scored from their out-of-fold files (same
   folds), for information.
3. ``edgeretina train <chosen> --cv K`` (its fold scores are reused from step 1): the final model trains on all of
   train+val; its threshold is Youden's J on the pooled out-of-fold scores; the test split is scored once.
4. ``edgeretina export`` (float32, fp16, dynamic, int8) and ``edgeretina bench --shift all`` on the test split.
5. ``<docs>/glaucoma_recipe.md`` + ``.json``: the CV table of every candidate, which step decided what, the
   final CV and test figures side by side, the targets of issue 12, the bench and shift tables.
"""
from __future__ import annotations

import argparse
import csv
import json
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgeretina.env import machine_info, machine_line
from edgeretina.io import ensure_writable_dir, write_json_atomic, write_text_atomic
from edgeretina.metrics import bootstrap_auroc
from edgeretina.models import build_model
from edgeretina.models.macs import count_macs
from edgeretina.paths import REPO_ROOT, seed_keras_cache, shared_dir

from .real_data import cli_argv, run_step

SEEDS = "0,1,2"  # the final recipe's CV is repeated over these fold/training seeds (its spread is published)
TOLERANCE = 0.005  # pooled-AUROC difference below which the cheaper recipe wins
COMMON = ("--task", "glaucoma", "--arch", "mobilenetv2", "--weights", "imagenet", "--epochs-warmup", "120",
          "--epochs-finetune", "30", "--patience", "20", "--freeze", "partial", "--batch-size", "8",
          "--cv-shifts", "defocus:severe,resolution:severe")  # the two severe shifts the float model missed
#: a candidate's --cv-shifts replaces COMMON's: the severe shifts plus the benign floor pair (issue 18: flip rate)
BENIGN_CV_SHIFTS = "defocus:severe,resolution:severe,jpeg-95,shift-2px"


@dataclass(frozen=True)
class Candidate:
    name: str
    what: str
    args: tuple[str, ...]


CANDIDATES: dict[str, Candidate] = {c.name: c for c in (
    Candidate("full224", "whole fundus, 224 px (the previous published recipe)", ("--input-size", "224")),
    Candidate("onh160", "optic-nerve-head crop (2 disc diameters), 160 px", ("--input-size", "160", "--crop", "onh")),
    Candidate("onh160_allneg", "ONH crop 160 px, negatives = every non-glaucoma eye",
              ("--input-size", "160", "--crop", "onh", "--negatives", "all")),
    Candidate("full224_linear", "whole fundus, 224 px, linear head (L2 logistic regression on frozen features)",
              ("--input-size", "224", "--head-fit", "linear")),
    Candidate("full160_linear", "whole fundus, 160 px, linear head", ("--input-size", "160", "--head-fit", "linear")),
    Candidate("onh160_linear", "ONH crop 160 px, linear head",
              ("--input-size", "160", "--crop", "onh", "--head-fit", "linear")),
    Candidate("onh128_linear", "ONH crop 128 px, linear head",
              ("--input-size", "128", "--crop", "onh", "--head-fit", "linear")),
    Candidate("onh128_linear_camera", "ONH crop 128 px, linear head + 2 camera-augmented feature copies per eye",
              ("--input-size", "128", "--crop", "onh", "--head-fit", "linear", "--augment", "camera")),
    Candidate("twoview96_linear", "whole fundus | ONH crop side by side, 96 px each (one input), linear head",
              ("--input-size", "96", "--crop", "two-view", "--head-fit", "linear")),
    Candidate("twoview128_linear", "whole fundus | ONH crop side by side, 128 px each (one input), linear head",
              ("--input-size", "128", "--crop", "two-view", "--head-fit", "linear")),
    Candidate("twoview112_linear", "whole fundus | ONH crop side by side, 112 px each (one input), linear head",
              ("--input-size", "112", "--crop", "two-view", "--head-fit", "linear")),
    Candidate("twoview96_linear_camera", "two-view 96 px, linear head + 2 camera-shifted copies (raw photo) per eye",
              ("--input-size", "96", "--crop", "two-view", "--head-fit", "linear", "--augment", "camera")),
    Candidate("twoview96_linear_camera_consistent", "twoview96_linear_camera + consistency penalty (λ by inner CV) "
              "against benign re-acquisitions (issue 18)",
              ("--input-size", "96", "--crop", "two-view", "--head-fit", "linear", "--augment", "camera",
               "--consistency", "auto", "--cv-shifts", BENIGN_CV_SHIFTS)),
    # issue 18 (docs/benchmarks/stability_cv.md): a σ 1 px Gaussian on the ONH view cut the CV flips on the plain
    # two-view recipe by 35 % (JPEG-95) / 44 % (2-px) at the same pooled AUROC — the study's choice
    Candidate("twoview96_linear_camera_stable", "twoview96_linear_camera + ONH view σ 1 px (issue 18: steadier "
              "under re-acquisition)",
              ("--input-size", "96", "--crop", "two-view", "--head-fit", "linear", "--augment", "camera",
               "--onh-blur", "1.0", "--cv-shifts", BENIGN_CV_SHIFTS)),
)}


def run_cv(c: Candidate, data: str, k: int, work: Path) -> dict:
    out = work / f"cv_{c.name}"
    if not (out / "cv.json").is_file():
        secs = run_step(cli_argv("train", "--data", data, *COMMON, *c.args, "--cv", str(k), "--cv-only", "--out", str(out),
                         "--overwrite"), work / f"cv_{c.name}.log")
        d = json.loads((out / "cv.json").read_text())
        d["wall_seconds"] = round(secs, 1)
        write_json_atomic(out / "cv.json", d)
    d = json.loads((out / "cv.json").read_text())
    if "macs" not in d:  # a cv.json written before the MAC count was recorded
        d["macs"] = count_macs(build_model(d["arch"], d["task"], d["input_size"], None))
        write_json_atomic(out / "cv.json", d)
    return d


def _oof(path: Path) -> dict[str, tuple[float, float]]:
    with open(path) as f:
        return {r["key"]: (float(r["y"]), float(r["oof_score"])) for r in csv.DictReader(f)}


def ensembles(work: Path, names: list[str]) -> list[dict]:
    """Mean-of-logits ensembles of candidate pairs on the same out-of-fold records (information only)."""
    out = []
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            pa, pb = work / f"cv_{a}" / "cv_oof.csv", work / f"cv_{b}" / "cv_oof.csv"
            if not (pa.is_file() and pb.is_file()):
                continue
            A, B = _oof(pa), _oof(pb)
            keys = sorted(set(A) & set(B))
            if len(keys) < 0.9 * min(len(A), len(B)):
                continue  # different populations: not comparable
            y = np.array([A[k][0] for k in keys])
            lg = lambda p: np.log(np.clip(p, 1e-7, 1 - 1e-7) / np.clip(1 - p, 1e-7, 1))  # noqa: E731
            s = (lg(np.array([A[k][1] for k in keys])) + lg(np.array([B[k][1] for k in keys]))) / 2
            out.append({"members": [a, b], "n": len(keys), **bootstrap_auroc(y, s, 1000, 0).to_dict()})
    return out


# the int8 file's linear head on 4 magnitude-banded int8 grids (converters/headsplit.py): the same function;
# on all 5,070 ODIR photos (label-free agreement, ~90 % of them development photos) int8 decision flips vs float
# 7.6 % → 5.9 %, logit noise sd 0.54 → 0.40; and GPTQ-rounded int8 weights (converters/gptq.py): 5.9 % → 2.9 %,
# sd 0.40 → 0.20, same ops and scales (docs/benchmarks/int8_twoview.md). Table V exports with the same args.
# Since session 12 the backend is ai-edge-quantizer with MSE-optimal activation ranges, chosen on the 1,750
# development photos (python -m edgeretina.benchmarks.int8_choice --model glaucoma, docs/benchmarks/
# int8_choice_glaucoma.md: decision flips 2.74 % with the TF converter's ranges → 2.23 %), never the test split.
EXPORT_ARGS = ("--quantizer", "aeq", "--ranges", "mse", "--head-split", "4", "--weight-rounding", "gptq")
MAC_BUDGET = 0.5      # × the multiply-adds of the 224-px full-fundus MobileNetV2 (issue 12: the faster model)
SHIFT_FLOOR = -0.08   # CV ΔAUROC under each severe --cv-shifts shift that a robust candidate keeps
STABILITY_TOLERANCE = 0.003  # issue 18: a candidate this close in pooled AUROC, same MACs, fewer CV flips wins


def cv_flips(r: dict) -> float | None:
    """Mean of the JPEG-95 and 2-px CV decision flip rates (issue 18's two targets); None when not measured."""
    sh = r["cv"].get("shifted") or {}
    v = [sh[k]["flip_rate"] for k in ("jpeg-95", "shift-2px") if "flip_rate" in sh.get(k, {})]
    return sum(v) / 2 if len(v) == 2 else None


def _macs_ok(r: dict, base: float) -> bool:
    return r["macs"] <= MAC_BUDGET * base * 1.03  # 3 %: the head and rounding


def _shift_ok(r: dict) -> bool | None:
    sh = r["cv"].get("shifted") or {}
    sh = {k: v for k, v in sh.items() if not v.get("benign")}  # benign re-acquisitions: the flip columns
    return all(v["delta_auroc"] >= SHIFT_FLOOR for v in sh.values()) if sh else None


def choose(results: dict[str, dict], base_macs: float | None = None) -> tuple[str, str]:
    """Constraints first, then accuracy, all on CV: candidates within the MAC budget (when any is), of those
    the ones that keep ``SHIFT_FLOOR`` under every CV shift (when any does); then the highest pooled
    out-of-fold AUROC, a cheaper one within ``TOLERANCE`` of it winning."""
    base = base_macs or max(r["macs"] for r in results.values())
    pool, rules = dict(results), []
    cheap = {n: r for n, r in pool.items() if _macs_ok(r, base)}
    if cheap and len(cheap) < len(pool):
        pool = cheap
        rules.append(f"≤ {MAC_BUDGET}× the MACs of full224")
    robust = {n: r for n, r in pool.items() if _shift_ok(r)}
    if robust and len(robust) < len(pool):
        pool = robust
        rules.append(f"CV ΔAUROC ≥ {SHIFT_FLOOR} under every severe CV shift")
    best = max(pool, key=lambda n: pool[n]["cv"]["pooled"]["auroc"])
    top = pool[best]["cv"]["pooled"]["auroc"]
    close = [n for n in pool if pool[n]["cv"]["pooled"]["auroc"] >= top - TOLERANCE]
    pick = min(close, key=lambda n: (pool[n]["macs"], -pool[n]["cv"]["pooled"]["auroc"]))
    why = (f"highest pooled out-of-fold AUROC ({top:.3f})" if pick == best else
           f"within {TOLERANCE} of the best pooled out-of-fold AUROC ({best}, {top:.3f}) with fewer "
           f"multiply-adds ({pool[pick]['macs'] / 1e6:.0f} M vs {pool[best]['macs'] / 1e6:.0f} M)")
    steady = _steadier(pool, pick)
    if steady != pick:
        why = (f"within {STABILITY_TOLERANCE} of {pick}'s pooled out-of-fold AUROC "
               f"({pool[pick]['cv']['pooled']['auroc']:.3f}; {why}), same MACs, and the fewest CV decision flips under "
               f"JPEG-95 / 2-px ({100 * cv_flips(pool[steady]):.2f} % mean"
               + (f" vs {100 * cv_flips(pool[pick]):.2f} %)" if cv_flips(pool[pick]) is not None else
                  f"; {pick}'s not measured)"))
        pick = steady
    if rules:
        why = f"{pick}: among the candidates with {' and '.join(rules)}, {why}"
    else:
        why = f"{pick}: {why}"
    return pick, why


def _steadier(pool: dict[str, dict], pick: str) -> str:
    """Issue 18's tie-break: among candidates with ``pick``'s MACs and pooled AUROC ≥ ``pick``'s −
    ``STABILITY_TOLERANCE`` whose CV flips were measured, the fewest mean JPEG-95 / 2-px flips, if fewer than
    ``pick``'s (an unmeasured ``pick`` is beaten by a measured one: run it with the benign --cv-shifts to compare)."""
    a0, f0 = pool[pick]["cv"]["pooled"]["auroc"], cv_flips(pool[pick])
    near = [n for n, r in pool.items() if r["macs"] == pool[pick]["macs"] and cv_flips(r) is not None
            and r["cv"]["pooled"]["auroc"] >= a0 - STABILITY_TOLERANCE]
    best = min(near, key=lambda n: cv_flips(pool[n]), default=pick)
    return best if f0 is None or cv_flips(pool[best]) < f0 else pick


def final(c: Candidate, data: str, k: int, work: Path) -> tuple[Path, float]:
    run = work / "final"
    mark = work / "final_candidate.txt"
    if (run / "metrics.json").is_file():
        if mark.is_file() and mark.read_text().strip() != c.name:
            raise SystemExit(f"{run} holds the final model of {mark.read_text().strip()}, but the choice is now "
                             f"{c.name}: use a fresh --work folder (or remove final/, export/ and bench/)")
        return run, json.loads((run / "metrics.json").read_text())["seconds"]["total"]
    write_text_atomic(mark, c.name + "\n")
    folds = work / f"cv_{c.name}" / "cv_folds"
    if folds.is_dir():  # the same folds, seeds and recipe: reuse the candidate's fold scores
        (run / "checkpoint").mkdir(parents=True, exist_ok=True)
        shutil.copytree(folds, run / "checkpoint" / "cv", dirs_exist_ok=True)
    secs = run_step(cli_argv("train", "--data", data, *COMMON, *c.args, "--cv", str(k), "--cv-seeds", SEEDS,
                             "--out", str(run)), work / "final.log")
    return run, secs


def export_and_bench(run: Path, data: str, work: Path) -> dict:
    exp = work / "export"
    if not (exp / "manifest.json").is_file():
        run_step(cli_argv("export", str(run), "--float32", "--fp16", "--dynamic", "--int8", *EXPORT_ARGS, "--out",
                          str(exp)),
             work / "export.log")
    rep = work / "bench"
    if not (rep / "report.json").is_file():
        run_step(cli_argv("bench", "--models", *sorted(str(p) for p in exp.glob("*.tflite")), "--data", data,
                  "--task", "glaucoma", "--device", "cpu", "--threads", "2", "--shift", "all", "--out", str(rep)),
             work / "bench.log")
    return json.loads((rep / "report.json").read_text())


def reuse_published(path: Path, names: list[str], work: Path) -> tuple[list[str], list[dict]]:
    """Seed ``work/cv_<name>/cv.json`` from a published recipe JSON for the candidates not yet run in ``work``
    (their CV took up to 70 min; the code and folds are the same), and return (those names, the published
    ensembles whose members' out-of-fold files are not in ``work``)."""
    pub = json.loads(Path(path).read_text())
    seeded = []
    for n in names:
        cvj = work / f"cv_{n}" / "cv.json"
        if not cvj.is_file() and n in pub.get("candidates", {}):
            cvj.parent.mkdir(parents=True, exist_ok=True)
            write_json_atomic(cvj, {**pub["candidates"][n], "reused_from": str(path)})
            seeded.append(n)
    ens = [e for e in pub.get("ensembles", []) if set(e["members"]) <= set(names)
           and not all((work / f"cv_{m}" / "cv_oof.csv").is_file() for m in e["members"])]
    return seeded, ens


def _f(v, nd=3):
    return "–" if v is None else f"{v:.{nd}f}"


@dataclass(frozen=True)
class Outcome:
    """What the recipe search found: the CV results per candidate, the ensembles, the choice and why; then,
    unless --only-cv, the final run dir, its training time and the bench report."""

    results: dict
    ens: list
    pick: str
    why: str
    run: Path | None = None
    secs_final: float = 0.0
    report: dict | None = None


def _cv_lines(results: dict, ens: list, k: int) -> list[str]:
    """Step 1 of the published page: the candidates' CV table, the targets on CV and the ensembles."""
    lines = [f"## Step 1 — {k}-fold patient-level CV over train+val (the test split is not loaded)", "",
             "| candidate | what the model sees | MACs (M) | per-fold AUROC mean ± sd | pooled out-of-fold AUROC "
             "(95 % CI) | frozen-feature probe, same folds | CV ΔAUROC, severe defocus / resolution | "
             "CV flips %, JPEG-95 / 2-px | CV wall time |",
             "|---|---|---|---|---|---|---|---|---|"]
    for n, r in results.items():
        cv = r["cv"]
        probe = cv.get("baseline_logreg_frozen_features", {})
        mark = " †" if r.get("reused_from") else ""
        lines.append(f"| {n}{mark} | {CANDIDATES[n].what} | {r['macs'] / 1e6:.0f} | {cv['mean']:.3f} ± {cv['sd']:.3f} | "
                     f"{cv['pooled']['auroc']:.3f} ({cv['pooled']['auroc_ci_low']:.3f}–"
                     f"{cv['pooled']['auroc_ci_high']:.3f}) | {_f(probe.get('auroc'))} | {_shifted(cv)} | {_flips(cv)} | "
                     f"{r.get('wall_seconds', r.get('seconds', 0)) / 60:.0f} min |")
    reused = sorted({r["reused_from"] for r in results.values() if r.get("reused_from")})
    if reused:
        lines += ["", f"† CV results carried from {', '.join(reused)} (`--reuse-published`: same code, folds and "
                  "seeds, not re-run this time); their ensembles below are carried too."]
    lines += ["", "Per-fold AUROC is what one model reaches on patients it never saw; the pooled out-of-fold AUROC "
              "ranks every development eye with the scores of five different fold models (whose score scales "
              "differ), so it is lower — the stricter figure, and the one the choice and the threshold use. The "
              "probe column is a logistic regression on frozen ImageNet features trained on the same folds (C = 0.1): a "
              "fine-tune that does not beat it has learned nothing the backbone did not already know. The `linear` "
              "candidates are that probe done right — nested choice of a much stronger penalty — so their five fold "
              "models share one score scale and the two figures agree. The shift column re-scores every out-of-fold "
              "eye under the two severe camera shifts the float model failed in the test-split stress test (`--cv-shifts`; "
              "pooled out-of-fold ΔAUROC, target ≥ −0.08): robustness measured without the test split, and a constraint of "
              "the choice (step 2). Measured: a single view at 96–128 px loses 0.09–0.13 under severe blur or "
              "down-sampling, and linear-head feature copies of camera-shifted photos do not change that (the "
              "frozen features themselves move); the `twoview` candidates — the whole fundus and the ONH crop side "
              "by side in one input, two backbone branches pooled apart (`--crop two-view`) — read the disc at high "
              "resolution and the whole fundus for context, and at 112–128 px per view keep most of their AUROC under "
              "both severe shifts. The flips column (issue 18, candidates run with `--cv-shifts` including `jpeg-95` and "
              "`shift-2px`) is the share of out-of-fold eyes whose decision at the pooled Youden threshold a JPEG-95 "
              "re-save / a 2-px move of the eye flips — the bench's stability floor measured on CV (target ≤ 0.5 %)."]
    base = results.get("full224", {}).get("macs")
    if base:
        lines += ["", "Issue-12 targets on CV: " + "; ".join(
            f"{n} — CV ≥ 0.92 {'met' if r['cv']['mean'] >= 0.92 else 'missed'} ({r['cv']['mean']:.3f}), "
            f"MACs {r['macs'] / base:.2f}× of full224 ({'≤ 0.5× met' if r['macs'] <= 0.5 * base * 1.03 else '> 0.5×'})"
            for n, r in results.items()) + ". (MobileNetV2-160 is 0.51× of 224: counted as meeting the issue's "
            "'an ONH crop at ≤ 160 px does'.)"]
    if ens:
        lines += ["", "Ensembles (mean logit of two candidates, same out-of-fold records; information only — two "
                  "models to ship; the `twoview` candidates are the one-.tflite way to combine the two views):", ""]
        lines += [f"- {' + '.join(e['members'])}: pooled out-of-fold AUROC {e['auroc']:.3f} "
                  f"({e['auroc_ci_low']:.3f}–{e['auroc_ci_high']:.3f}), n = {e['n']}" for e in ens]
    return lines


def publish(o: Outcome, docs: Path, k: int) -> dict:
    results, ens, pick, why, run, secs_final, report = (o.results, o.ens, o.pick, o.why, o.run, o.secs_final,
                                                        o.report)
    m = json.loads((run / "metrics.json").read_text()) if run else None
    lines = ["# Glaucoma recipe — chosen by cross-validation, test split scored once", "",
             "Generated by `python -m edgeretina.benchmarks.glaucoma_recipe` (ODIR-5K from `../shared`, ImageNet "
             f"MobileNetV2; the candidates differ in what the model sees and how its head is fitted: the two-phase SGD "
             f"fine-tune or the `linear` head, docs/training.md). Machine: {_machine()}, "
             "this project's 2-core AMD EPYC VM, shared with other jobs while it ran (times are upper bounds).", "",
             *_cv_lines(results, ens, k)]
    lines += ["", f"## Step 2 — the choice (CV only): **{pick}**", "", why + ".", ""]
    out = {"candidates": results, "ensembles": ens, "chosen": pick, "why": why}
    if m is not None:
        cv, te = m["cv"], m["test"]
        lo, hi = cv["mean"] - 2 * cv["sd"], cv["mean"] + 2 * cv["sd"]
        inside = lo <= te["auroc"] <= hi
        lines += ["## Step 3 — final model: trained on all of train+val, test scored once", "",
                  "| | AUROC (95 % CI) | sensitivity / specificity at the threshold | decided |", "|---|---|---|---|",
                  f"| CV, pooled out-of-fold ({cv['n_dev']} eyes) | {cv['pooled']['auroc']:.3f} "
                  f"({cv['pooled']['auroc_ci_low']:.3f}–{cv['pooled']['auroc_ci_high']:.3f}) | "
                  f"{cv['pooled']['at_youden_threshold']['sensitivity']:.3f} / "
                  f"{cv['pooled']['at_youden_threshold']['specificity']:.3f} | recipe, epochs, threshold "
                  f"({m['threshold']['value']:.3f}) |",
                  f"| locked test split ({te.get('n', '')} eyes) | {te['auroc']:.3f} ({te['auroc_ci_low']:.3f}–"
                  f"{te['auroc_ci_high']:.3f}) | {te['sensitivity']:.3f} / {te['specificity']:.3f} | nothing |", "",
                  f"Test AUROC inside the CV mean ± 2 sd ({lo:.3f}–{hi:.3f}): **{'yes' if inside else 'no'}**. "
                  f"Final training run (incl. the CV it reused or ran): {secs_final / 60:.0f} min."]
        if cv.get("per_seed_pooled"):
            lines += ["", f"Spread over seeds {SEEDS} (fold assignment and training seed): pooled out-of-fold AUROC "
                      + ", ".join(f"{v:.3f}" for v in cv["per_seed_pooled"]) + (f" (sd {cv['seed_sd']:.3f})"
                                                                             if cv.get("seed_sd") is not None else "")
                      + "."]
        if not inside:
            lines += ["", "The locked test split disagrees with the cross-validation: one 486-eye split is "
                      "not representative (its eyes are easier than the folds'). Expect the CV figure on new "
                      "patients, not the test figure — a dev-test number the CV does not confirm is not a "
                      "claim this toolkit makes."]
        out["final"] = {"cv": cv, "test": te, "threshold": m["threshold"], "test_inside_cv_2sd": inside,
                        "baseline_test": m.get("baseline_logreg_frozen_features")}
    if report is not None:
        lines += ["", "## Step 4 — edge variants and the shift stress test (test split)", "",
                  "Reference: the float32 .tflite (numerically the Keras model; LiteRT keeps the re-scoring "
                  "passes of the shift and stability stages affordable on 2 cores).", "",
                  "Full report: `bench/report.md` of the work folder; summary below.", ""]
        lines += _bench_lines(report)
        out["bench"] = report
    docs = ensure_writable_dir(docs)
    write_text_atomic(docs / "glaucoma_recipe.md", "\n".join(lines) + "\n")
    write_json_atomic(docs / "glaucoma_recipe.json", out)
    return out


def _shifted(cv: dict) -> str:
    sh = cv.get("shifted") or {}
    vals = [sh.get(k, {}).get("delta_auroc") for k in ("defocus-severe", "resolution-severe")]
    return "–" if all(v is None for v in vals) else " / ".join(_f(v) for v in vals)


def _flips(cv: dict) -> str:
    """Issue 18 on CV: the share of out-of-fold eyes whose decision (pooled Youden threshold) a JPEG-95 re-save
    / a 2-px move flips (candidates run with ``BENIGN_CV_SHIFTS``; target ≤ 0.5 % each)."""
    sh = cv.get("shifted") or {}
    vals = [sh.get(k, {}).get("flip_rate") for k in ("jpeg-95", "shift-2px")]
    return "–" if all(v is None for v in vals) else " / ".join(_f(None if v is None else 100 * v, 2) for v in vals)


def _machine() -> str:
    return machine_line(machine_info())


def _bench_lines(report: dict) -> list[str]:
    """The variant table and the shift stress test against issue 12's targets: float ΔAUROC ≥ −0.03 under
    every mild and ≥ −0.08 under every severe shift; int8's ΔAUROC vs the float model under a shift within
    0.01 of its unshifted value."""
    rows = ["| variant | size MB | AUROC | ΔAUROC | flips % | × JPEG-95 floor | p50 ms |", "|---|---|---|---|---|---|---|"]
    for v in report.get("variants", []):
        lat = (v.get("latency_ms") or {}).get("p50")
        fr = v.get("flip_rate")
        rows.append(f"| {v.get('name')} | {v.get('size_bytes', 0) / 1e6:.2f} | {_f(v.get('auroc'))} | "
                    f"{_f(v.get('delta_auroc'), 4)} | {_f(100 * fr if fr is not None else None, 1)} | "
                    f"{_f(v.get('flip_floor_ratio'), 1)} | {_f(lat, 2)} |")
    shifts = report.get("shifts") or []
    if not shifts:
        return rows
    ref = [r for r in shifts if r.get("is_reference") and r.get("shift") != "none"]
    base = {r["name"]: r.get("delta_auroc_vs_ref_shifted") for r in shifts if r.get("shift") == "none"}
    int8 = [r for r in shifts if "int8" in str(r.get("name")) and r.get("shift") != "none"]
    rows += ["", "| shift | level | float AUROC | float ΔAUROC | target | int8 ΔAUROC vs float (shifted) |",
             "|---|---|---|---|---|---|"]
    ok_float, ok_int8 = True, True
    for r in ref:
        lim = -0.03 if r["level"] == "mild" else -0.08
        met = r.get("delta_auroc") is not None and r["delta_auroc"] >= lim
        ok_float &= met
        q = next((x for x in int8 if x["shift"] == r["shift"] and x["level"] == r["level"]), None)
        dq = q.get("delta_auroc_vs_ref_shifted") if q else None
        if q is not None and dq is not None and base.get(q["name"]) is not None:
            ok_int8 &= abs(dq - base[q["name"]]) <= 0.01
        rows.append(f"| {r['shift']} | {r['level']} | {_f(r.get('auroc'))} | {_f(r.get('delta_auroc'), 4)} | "
                    f"≥ {lim} {'met' if met else '**missed**'} | {_f(dq, 4)} |")
    rows += ["", f"Shift targets — float model: **{'met' if ok_float else 'missed'}**; int8 within 0.01 of its "
             f"unshifted ΔAUROC under every shift: **{'met' if ok_int8 else 'missed'}**."]
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work", default=str(REPO_ROOT / "runs" / "recipe"))
    ap.add_argument("--docs", default=str(REPO_ROOT / "docs" / "benchmarks"))
    ap.add_argument("--k", type=int, default=5)
    ap.add_argument("--candidates", default=",".join(CANDIDATES))
    ap.add_argument("--only-cv", action="store_true", help="stop after the choice (no final model, no test)")
    ap.add_argument("--no-bench", action="store_true", help="stop after the final model (no export, no bench)")
    ap.add_argument("--reuse-published", default=None, metavar="JSON",
                    help="take the CV results of candidates not yet run in --work from a published recipe JSON "
                         "(e.g. docs/benchmarks/glaucoma_recipe.json; the page marks them)")
    a = ap.parse_args(argv)
    seed_keras_cache()
    data = str(shared_dir() / "data" / "odir")
    work = ensure_writable_dir(a.work)
    names = [n.strip() for n in a.candidates.split(",") if n.strip()]
    unknown = [n for n in names if n not in CANDIDATES]
    if unknown:
        raise SystemExit(f"unknown candidate(s) {unknown}; choose from {list(CANDIDATES)}")
    reused, ens_pub = reuse_published(Path(a.reuse_published), names, work) if a.reuse_published else ([], [])
    results = {n: run_cv(CANDIDATES[n], data, a.k, work) for n in names}
    ens = ensembles(work, names) + ens_pub
    pick, why = choose(results, (results.get("full224") or {}).get("macs"))
    print(f"chosen: {pick} — {why}", flush=True)
    run = report = None
    secs = 0.0
    if not a.only_cv:
        run, secs = final(CANDIDATES[pick], data, a.k, work)
        report = None if a.no_bench else export_and_bench(run, data, work)
    publish(Outcome(results, ens, pick, why, run, secs, report), Path(a.docs), a.k)
    return 0


if __name__ == "__main__":
    sys.exit(main())
