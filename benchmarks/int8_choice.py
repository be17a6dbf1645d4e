"""Which int8 export keeps a shipped model's decisions? ``python -m edgeretina.benchmarks.int8_choice --model dr|glaucoma``

The int8 backend / activation ranges / weight rounding are a recipe choice, so they are chosen on the
**development photos** (the run's ``train`` split), never on the test split: the shipped model (``--model dr``: the
``dr_grading_aptos_cv`` run, issue 15's referable-flip target; ``--model glaucoma``: the glaucoma recipe's final
model, issue 13) is exported by each int8 configuration below (``edgeretina export --int8 …``), every file is
benchmarked in ONE ``edgeretina bench --split train`` run against the Keras model, and the configuration with the
fewest decision flips (DR: referable, i.e. predicted grade ≥ 2; glaucoma: the screening decision at the model's
threshold; ties → lower logit noise / fewer grade flips) is the one the model's table ships
(``real_data.DR_INT8`` / ``glaucoma_recipe.EXPORT_ARGS``). The test split is then scored once, by that table.

Caveat written on the page: the final models were fitted on train + val, so these photos were seen in training;
the quantization noise is the same, but fewer of them sit near the threshold than test photos do — the flip rates
here rank the configurations, they are not the test-split figure.
Writes ``docs/benchmarks/int8_choice_<model>.md`` and ``.json``.
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path
from typing import Any

from edgeretina.benchmarks import int8_study as study
from edgeretina.benchmarks.harness import run_bench
from edgeretina.compare import wilson_ci
from edgeretina.env import machine_info, machine_line
from edgeretina.io import write_json_atomic, write_text_atomic
from edgeretina.paths import shared_dir

# model → (run dir, dataset under ../shared/data, what the table is)
MODELS: dict[str, tuple[Path, str, str]] = {
    "dr": (Path("runs/real/dr_grading_aptos_cv/run"), "aptos",
           "DR 5-grade (`dr_grading_aptos_cv`, [table](dr_grading_aptos_cv.md))"),
    "glaucoma": (Path("runs/recipe/final"), "odir",
                 "glaucoma recipe's final model ([glaucoma_recipe.md](glaucoma_recipe.md))"),
}

# label → export options (ExportOptions fields), as edgeretina export flags say them
CONFIGS: dict[str, dict[str, Any]] = {
    "converter-gptq": {"quantizer": "converter", "weight_rounding": "gptq"},
    "aeq-minmax-gptq": {"quantizer": "aeq", "ranges": "minmax", "weight_rounding": "gptq"},
    "aeq-percentile-gptq": {"quantizer": "aeq", "ranges": "percentile", "weight_rounding": "gptq"},
    "aeq-mse-gptq": {"quantizer": "aeq", "ranges": "mse", "weight_rounding": "gptq"},
    "aeq-mse": {"quantizer": "aeq", "ranges": "mse"},
    "converter-split4-gptq": {"quantizer": "converter", "head_split": 4, "weight_rounding": "gptq"},
    "aeq-mse-split4-gptq": {"quantizer": "aeq", "ranges": "mse", "head_split": 4, "weight_rounding": "gptq"},
    "aeq-minmax-split4-gptq": {"quantizer": "aeq", "ranges": "minmax", "head_split": 4, "weight_rounding": "gptq"},
    # residual int8 kernels (converters/residual.py) for the layers holding most of the int8 weight noise
    "aeq-mse-gptq-res1": {"quantizer": "aeq", "ranges": "mse", "weight_rounding": "gptq",
                          "residual_weights": "expanded_conv_depthwise"},
    "aeq-mse-gptq-res3": {"quantizer": "aeq", "ranges": "mse", "weight_rounding": "gptq",
                          "residual_weights": "expanded_conv_depthwise,block_1_depthwise,expanded_conv_project"},
    "aeq-mse-split4-gptq-res1": {"quantizer": "aeq", "ranges": "mse", "head_split": 4, "weight_rounding": "gptq",
                                 "residual_weights": "expanded_conv_depthwise"},
    "aeq-mse-split4-gptq-res3": {"quantizer": "aeq", "ranges": "mse", "head_split": 4, "weight_rounding": "gptq",
                                 "residual_weights": "expanded_conv_depthwise,block_1_depthwise,expanded_conv_project"},
}
# the configurations each model's page compares (--only overrides); the head split is for linear heads
DEFAULT = {"dr": ("converter-gptq", "aeq-minmax-gptq", "aeq-percentile-gptq", "aeq-mse-gptq", "aeq-mse",
                  "converter-split4-gptq", "aeq-mse-gptq-res1", "aeq-mse-gptq-res3"),
           "glaucoma": ("converter-split4-gptq", "aeq-minmax-split4-gptq", "aeq-mse-split4-gptq", "aeq-mse-gptq",
                        "converter-gptq")}


def flags(cfg: dict[str, Any]) -> str:
    """The ``edgeretina export`` flags of a configuration, in CONFIGS' order."""
    names = {"quantizer": "--quantizer", "ranges": "--ranges", "weight_rounding": "--weight-rounding",
             "head_split": "--head-split", "residual_weights": "--residual-weights"}
    return " ".join(f"{names[k]} {v}" for k, v in cfg.items())


def rows_of(report: dict, grading: bool) -> list[dict[str, Any]]:
    """One row per int8 file, best first: DR ranks referable flips (ties: grade flips), glaucoma decision flips
    (ties: logit noise sd)."""
    n = int(report["dataset"]["n_images"])
    out = []
    for v in report["variants"]:
        if v["format"] == "keras":
            continue
        rate = v.get("referable_flip_rate" if grading else "flip_rate") or 0.0
        k = int(round(rate * n))
        out.append({"name": v["name"], "flags": flags(CONFIGS.get(v["name"], {})), "n": n, "flips": k,
                    "flip_rate": rate, "flip_ci95": list(wilson_ci(k, n)),
                    "tie": v.get("grade_flip_rate") if grading else v.get("logit_noise_sd"),
                    "delta": v.get("delta_kappa") if grading else v.get("delta_auroc"),
                    "size_mb": v["size_bytes"] / 1e6})
    return sorted(out, key=lambda r: (r["flips"], r["tie"] if r["tie"] is not None else 1e9))


def markdown(rows: list[dict], meta: dict) -> str:
    best, grading = rows[0], meta["model"] == "dr"
    what = "referable flips" if grading else "decision flips"
    tie, delta = ("grade flips", "Δκ") if grading else ("logit noise sd", "ΔAUROC")
    lines = [f"# int8 export configuration of the shipped {meta['model']} model, chosen on the development photos "
             f"(issues 13, 15)", "",
             f"Regenerate: `{meta['command']}` (from the repository root, with `../shared`; ~{meta['minutes']:.0f} min "
             "on this machine).", "", f"Machine: {meta['machine']}.", "",
             f"Model: `{meta['run']}`, the {MODELS[meta['model']][2]}. Photos: the run's **train split** "
             f"({best['n']} photos of `{MODELS[meta['model']][1]}`; the test split is not loaded). Reference: the Keras "
             "model; a flip is a photo whose " + ("referral decision (predicted grade ≥ 2)" if grading else
                                                 "screening decision at the model's threshold") +
             " differs from the Keras model's.", "",
             f"| configuration | export flags | {what} (95 % CI) | {tie} | {delta} | size MB |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        lo, hi = r["flip_ci95"]
        name = f"**{r['name']}**" if r is best else r["name"]
        t = "–" if r["tie"] is None else (f"{100 * r['tie']:.2f} %" if grading else f"{r['tie']:.3f}")
        lines.append(f"| {name} | `{r['flags']}` | {r['flips']}/{r['n']} = {100 * r['flip_rate']:.2f} % "
                     f"({100 * lo:.1f}–{100 * hi:.1f}) | {t} | {r['delta']:+.4f} | {r['size_mb']:.2f} |")
    ships = ("`benchmarks/real_data.py` `DR_INT8` ships its flags; the test split is scored once by `python -m "
             "edgeretina.benchmarks.real_data --only dr_grading_aptos_cv` ([dr_grading_aptos_cv.md](dr_grading_aptos_cv.md))"
             if grading else "`benchmarks/glaucoma_recipe.py` `EXPORT_ARGS` ships its flags; the test split is scored "
             "once by the recipe's step 4 ([glaucoma_recipe.md](glaucoma_recipe.md))")
    lines += ["", f"**Choice: `{best['name']}`** (fewest {what}; ties → {'fewer grade flips' if grading else 'lower logit noise'}) — "
              f"{ships}.", "",
              "Caveat: the final model was fitted on train + val, so these photos were seen in training. The int8 "
              "noise is the same, but fewer of them sit near the decision threshold than test photos do: the flip "
              "rates here rank the configurations; they are not the test-split figure."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m edgeretina.benchmarks.int8_choice", description=__doc__.split("\n")[0])
    ap.add_argument("--model", choices=list(MODELS), required=True, help="which shipped model")
    ap.add_argument("--run", type=Path, default=None, help="its run dir [the table's default work folder]")
    ap.add_argument("--out", type=Path, default=None, help="exports and the bench report [runs/int8_choice_<model>]")
    ap.add_argument("--only", nargs="*", choices=list(CONFIGS), default=None, help="configurations [the model's]")
    ap.add_argument("--reuse", action="store_true", help="keep exports whose manifest exists")
    ap.add_argument("--rewrite", action="store_true", help="re-render the page from OUT/bench/report.json only")
    a = ap.parse_args(argv)
    run, data, _ = MODELS[a.model]
    a.run = a.run or run
    a.out = a.out or Path(f"runs/int8_choice_{a.model}")
    a.doc = Path(f"docs/benchmarks/int8_choice_{a.model}")
    a.only = a.only or list(DEFAULT[a.model])
    if not (a.run / "model.keras").is_file():
        print(f"error: {a.run}: no model.keras (train the {a.model} model first, or pass --run)", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    log = lambda s: print(f"[{time.perf_counter() - t0:6.0f} s] {s}", flush=True)  # noqa: E731
    report = a.out / "bench" / "report.json"
    if a.rewrite:
        if not report.is_file():
            print(f"error: {report}: no bench report to re-render (run without --rewrite first)", file=sys.stderr)
            return 2
        rep = json.loads(report.read_text())
        old = json.loads(a.doc.with_suffix(".json").read_text())["meta"] if a.doc.with_suffix(".json").is_file() else {}
    else:
        manifests = study.export_all(a.run, a.out, a.only, a.reuse, log, configs=CONFIGS)
        copies = study.study_copies(a.out, manifests, configs=CONFIGS)
        log(f"bench {len(copies)} files on the train split")
        rep = run_bench([str(a.run), *map(str, copies)], str(shared_dir() / "data" / data), out=a.out / "bench",
                        threads=2, n_boot=200, stability=False, runs=1, warmup=1, timing_images=3,
                        split="train").to_dict()
        old = {}
    rows = rows_of(rep, a.model == "dr")
    args = [x for x in (argv if argv is not None else sys.argv[1:]) if x != "--rewrite"]
    meta = {"command": old.get("command") or "python -m edgeretina.benchmarks.int8_choice " + shlex.join(args),
            "machine": "2-core AMD EPYC VM: " + machine_line(machine_info()), "run": str(a.run), "model": a.model,
            "minutes": old.get("minutes", (time.perf_counter() - t0) / 60), "choice": rows[0]["name"]}
    write_json_atomic(a.doc.with_suffix(".json"), {"meta": meta, "rows": rows})
    write_text_atomic(a.doc.with_suffix(".md"), markdown(rows, meta))
    log(f"choice: {rows[0]['name']} → {a.doc}.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
