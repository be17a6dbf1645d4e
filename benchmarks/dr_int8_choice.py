"""Which int8 export keeps the shipped DR model's referral decisions? ``python -m edgeretina.benchmarks.dr_int8_choice``

Issue 15 asks the DR 5-grade model's int8 file for referable flips ≤ 1 %. The backend / activation ranges are a
recipe choice, so they are chosen on the **development photos** (the run's ``train`` split, 2,031 APTOS photos),
never on the test split: the shipped model (``--run``, default the ``dr_grading_aptos_cv`` run) is exported by
each int8 configuration below (``edgeretina export --int8 …``, GPTQ weight rounding in all but one), every file
is benchmarked in ONE ``edgeretina bench --split train`` run against the Keras model, and the configuration with
the fewest referable flips (ties: fewer grade flips) is the one ``real_data.DR_INT8`` ships. The test split is
then scored once, by ``python -m edgeretina.benchmarks.real_data --only dr_grading_aptos_cv``.

Caveat written on the page: the final model was fitted on train + val, so these photos were seen in training;
the quantization noise is the same, but fewer of these photos sit near the referral threshold than test photos
do — the flip rates here rank the configurations, they are not the test-split figure.
Writes ``docs/benchmarks/dr_int8_choice.md`` and ``.json``.
"""
from __future__ import annotations

import argparse
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

RUN = Path("runs/real/dr_grading_aptos_cv/run")
OUT = Path("runs/dr_int8_choice")
DOC = Path("docs/benchmarks/dr_int8_choice")

# label → export options (ExportOptions fields), as edgeretina export flags say them
CONFIGS: dict[str, dict[str, Any]] = {
    "converter-gptq": {"quantizer": "converter", "weight_rounding": "gptq"},
    "aeq-minmax-gptq": {"quantizer": "aeq", "ranges": "minmax", "weight_rounding": "gptq"},
    "aeq-percentile-gptq": {"quantizer": "aeq", "ranges": "percentile", "weight_rounding": "gptq"},
    "aeq-mse-gptq": {"quantizer": "aeq", "ranges": "mse", "weight_rounding": "gptq"},
    "aeq-mse": {"quantizer": "aeq", "ranges": "mse"},
    "converter-split4-gptq": {"quantizer": "converter", "head_split": 4, "weight_rounding": "gptq"},
}


def flags(cfg: dict[str, Any]) -> str:
    names = {"quantizer": "--quantizer", "ranges": "--ranges", "weight_rounding": "--weight-rounding",
             "head_split": "--head-split"}
    return " ".join(f"{names[k]} {v}" for k, v in cfg.items())


def rows_of(report: dict) -> list[dict[str, Any]]:
    n = int(report["dataset"]["n_images"])
    out = []
    for v in report["variants"]:
        if v["format"] == "keras":
            continue
        k = int(round((v.get("referable_flip_rate") or 0.0) * n))
        out.append({"name": v["name"], "flags": flags(CONFIGS.get(v["name"], {})), "n": n,
                    "referable_flips": k, "referable_flip_rate": v.get("referable_flip_rate"),
                    "referable_ci95": list(wilson_ci(k, n)), "grade_flip_rate": v.get("grade_flip_rate"),
                    "delta_kappa": v.get("delta_kappa"), "size_mb": v["size_bytes"] / 1e6})
    return sorted(out, key=lambda r: (r["referable_flips"], r["grade_flip_rate"]))


def markdown(rows: list[dict], meta: dict) -> str:
    best = rows[0]
    lines = [f"# DR 5-grade int8: the export configuration, chosen on the development photos (issue 15)", "",
             f"Regenerate: `{meta['command']}` (from the repository root, with `../shared`; ~{meta['minutes']:.0f} min "
             "on this machine).", "", f"Machine: {meta['machine']}.", "",
             f"Model: `{meta['run']}` (the `dr_grading_aptos_cv` table's model). Photos: the run's **train split** "
             f"({best['n']} APTOS photos; the test split is not loaded). Reference: the Keras model; a referable flip "
             "is a photo whose referral decision (predicted grade ≥ 2) differs from the Keras model's.", "",
             "| configuration | export flags | referable flips (95 % CI) | grade flips | Δκ | size MB |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        lo, hi = r["referable_ci95"]
        name = f"**{r['name']}**" if r is best else r["name"]
        lines.append(f"| {name} | `{r['flags']}` | {r['referable_flips']}/{r['n']} = "
                     f"{100 * r['referable_flip_rate']:.2f} % ({100 * lo:.1f}–{100 * hi:.1f}) | "
                     f"{100 * r['grade_flip_rate']:.2f} % | {r['delta_kappa']:+.4f} | {r['size_mb']:.2f} |")
    lines += ["", f"**Choice: `{best['name']}`** (fewest referable flips; ties → fewer grade flips) — "
              "`benchmarks/real_data.py` `DR_INT8` ships its flags; the test split is scored once by "
              "`python -m edgeretina.benchmarks.real_data --only dr_grading_aptos_cv` "
              "([dr_grading_aptos_cv.md](dr_grading_aptos_cv.md)).", "",
              "Caveat: the final model was fitted on train + val, so these photos were seen in training. The int8 "
              "noise is the same, but fewer of them sit near the referral threshold than test photos do: the flip "
              "rates here rank the configurations; they are not the test-split figure."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m edgeretina.benchmarks.dr_int8_choice", description=__doc__.split("\n")[0])
    ap.add_argument("--run", type=Path, default=RUN, help="the DR run dir (its model.keras and config.json)")
    ap.add_argument("--out", type=Path, default=OUT, help="exports and the bench report go here")
    ap.add_argument("--doc", type=Path, default=DOC, help="page stem (.md and .json are written)")
    ap.add_argument("--only", nargs="*", choices=list(CONFIGS), default=list(CONFIGS))
    ap.add_argument("--reuse", action="store_true", help="keep exports whose manifest exists")
    a = ap.parse_args(argv)
    if not (a.run / "model.keras").is_file():
        print(f"error: {a.run}: no model.keras (train the DR model first: real_data --only dr_grading_aptos_cv)",
              file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    log = lambda s: print(f"[{time.perf_counter() - t0:6.0f} s] {s}", flush=True)  # noqa: E731
    study.CONFIGS.update(CONFIGS)
    manifests = study.export_all(a.run, a.out, a.only, a.reuse, log)
    copies = study.study_copies(a.out, manifests)
    log(f"bench {len(copies)} files on the train split")
    rep = run_bench([str(a.run), *map(str, copies)], str(shared_dir() / "data" / "aptos"), out=a.out / "bench",
                    threads=2, n_boot=200, stability=False, runs=1, warmup=1, timing_images=3, split="train").to_dict()
    rows = rows_of(rep)
    meta = {"command": "python -m edgeretina.benchmarks.dr_int8_choice " + shlex.join(argv if argv is not None else sys.argv[1:]),
            "machine": "2-core AMD EPYC VM: " + machine_line(machine_info()), "run": str(a.run),
            "minutes": (time.perf_counter() - t0) / 60, "choice": rows[0]["name"]}
    write_json_atomic(a.doc.with_suffix(".json"), {"meta": meta, "rows": rows})
    write_text_atomic(a.doc.with_suffix(".md"), markdown(rows, meta))
    log(f"choice: {rows[0]['name']} → {a.doc}.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
