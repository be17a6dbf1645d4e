"""Which int8 keeps the float model's decisions? ``python -m edgeretina.benchmarks.int8_study``

The glaucoma recipe's final model (``runs/recipe/final``: MobileNetV2-224, full fundus, ODIR) exported as
full-integer int8 by every backend / range / budget this project has (``edgeretina export``), then all of them
benchmarked in ONE ``edgeretina bench`` run on the ODIR test split (486 eyes never used for training,
calibration or a budget check) against the Keras model:

- ``converter``: the TF converter's int8 (its own min/max calibration);
- ``aeq-minmax`` / ``aeq-percentile`` / ``aeq-mse``: ai-edge-quantizer's ``static_wi8_ai8`` with global
  min/max, 0.01-99.99th percentile or MSE-optimal activation ranges (``--ranges``);
- ``aeq-flips0.01``: ai-edge-quantizer with a 1 % flip budget checked on 500 held-out training images
  (``--max-flips 0.01``: the fewest layers kept float); ``aeq-noise0.26``: a logit-noise budget instead;
- ``int8-guard``: the int8 file + its fp16 fallback for images near the threshold (the cascade is benched);
- ``…-split4``: the same with ``--head-split 4`` (the linear head's weights in 4 magnitude bands).

``--run`` / ``--doc`` / ``--title`` point it at another model: the two-view recipe model's page is
``docs/benchmarks/int8_twoview.md`` (``--run runs/recipe3/final``); ``--rewrite`` rebuilds the page from its
JSON after a change of the page only.

Each export goes to ``OUT/<label>/`` (the model's own export folder is not touched); a copy of each int8 file
whose metadata variant is renamed to its label (same graph bytes) goes to ``OUT/study/`` so the bench report
has one row per configuration. Flips on the test split get a Wilson 95 % interval (``compare.wilson_ci``).
Writes ``docs/benchmarks/int8_odir.md`` and ``.json``. LiteRT runs on one thread (``--threads``) and every
step is niced by the caller (the machine is shared).
"""
from __future__ import annotations

import argparse
import json
import shlex
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from edgeretina.benchmarks.harness import run_bench
from edgeretina.compare import wilson_ci
from edgeretina.converters import export_model
from edgeretina.env import machine_info, machine_line
from edgeretina.io import write_bytes_atomic, write_json_atomic, write_text_atomic
from edgeretina.run import RunConfig
from edgeretina.runtime.metadata import embed_metadata, metadata_from_bytes

RUN = Path("runs/recipe/final")
OUT = Path("runs/int8")
DOC = Path("docs/benchmarks/int8_odir")

# label → export options (variants, ExportOptions fields)
CONFIGS: dict[str, dict[str, Any]] = {
    "converter": {"quantizer": "converter"},
    "aeq-minmax": {"quantizer": "aeq", "ranges": "minmax"},
    "aeq-percentile": {"quantizer": "aeq", "ranges": "percentile"},
    "aeq-mse": {"quantizer": "aeq", "ranges": "mse"},
    "aeq-flips0.01": {"quantizer": "aeq", "max_flips": 0.01, "max_float_macs": 1.0},
    "int8-guard": {"variants": ["int8-guard"], "quantizer": "converter"},
    # --head-split 4: the linear head's weights in 4 magnitude bands, each on its own int8 grid (headsplit.py)
    "converter-split4": {"quantizer": "converter", "head_split": 4},
    "aeq-mse-split4": {"quantizer": "aeq", "ranges": "mse", "head_split": 4},
    "aeq-flips0.01-split4": {"quantizer": "aeq", "max_flips": 0.01, "head_split": 4, "max_float_macs": 1.0},
    "int8-guard-split4": {"variants": ["int8-guard"], "quantizer": "converter", "head_split": 4},
    # a logit-noise budget instead of a flip budget: the few worst layers float (8 layers, 8.3 % of the multiply-adds here; 0.25 needs a 9th: 11.5 %)
    "aeq-noise0.26-split4": {"quantizer": "aeq", "max_logit_noise": 0.26, "head_split": 4},
    "int8-guard-noise0.26-split4": {"variants": ["int8-guard"], "quantizer": "aeq", "max_logit_noise": 0.26,
                                    "head_split": 4},
    # --weight-rounding gptq: int8 weights re-rounded with GPTQ's error compensation (gptq.py); one export
    # (folder "split4-gptq") holds the int8 file and the guard built on it
    "converter-split4-gptq": {"variants": ["int8-guard"], "quantizer": "converter", "head_split": 4,
                              "weight_rounding": "gptq", "folder": "split4-gptq"},
    "int8-guard-split4-gptq": {"variants": ["int8-guard"], "quantizer": "converter", "head_split": 4,
                               "weight_rounding": "gptq", "folder": "split4-gptq"},
    # ai-edge-quantizer with GPTQ weights (its dead-channel int32 biases refitted: aeq.py), all int8, and the
    # flip budget on it (gptqfloat.py): activations float on the fewest layers, <= 10 % of the multiply-adds
    "aeq-split4-gptq": {"variants": ["int8-guard"], "quantizer": "aeq", "head_split": 4, "weight_rounding": "gptq",
                        "folder": "aeq-split4-gptq"},
    "int8-guard-aeq-split4-gptq": {"variants": ["int8-guard"], "quantizer": "aeq", "head_split": 4,
                                   "weight_rounding": "gptq", "folder": "aeq-split4-gptq"},
    "aeq-split4-gptq-flips0.02": {"quantizer": "aeq", "head_split": 4, "weight_rounding": "gptq", "max_flips": 0.02},
}
# label → the manifest variant that is studied (default: int8)
SHIPPED = {"int8-guard-aeq-split4-gptq": "int8-guard", "int8-guard": "int8-guard", "int8-guard-split4": "int8-guard", "int8-guard-noise0.26-split4": "int8-guard",
           "int8-guard-split4-gptq": "int8-guard"}


def folder_of(out: Path, label: str, configs: dict[str, dict[str, Any]] | None = None) -> Path:
    """Where a configuration's export lives (configurations may share one export)."""
    return out / (configs or CONFIGS)[label].get("folder", label)


def export_all(run: Path, out: Path, labels, reuse: bool, log,
               configs: dict[str, dict[str, Any]] | None = None) -> dict[str, dict]:
    """Export every configuration of ``configs`` (default: this study's) named in ``labels`` (kept when ``reuse``
    and its manifest exists); label → manifest."""
    manifests = {}
    for label in labels:
        cfg = dict((configs or CONFIGS)[label])
        variants = cfg.pop("variants", ["int8"])
        folder = out / cfg.pop("folder", label)
        done = {m.get("_folder") for m in manifests.values()}
        if str(folder) not in done and not (reuse and (folder / "manifest.json").is_file()):
            t = time.perf_counter()
            log(f"export {label}: {variants} {cfg}")
            export_model(run, variants, folder, progress=lambda s: log(f"  {s}"), borderline_band="off", **cfg)
            log(f"export {label}: {time.perf_counter() - t:.0f}s")
        manifests[label] = {**json.loads((folder / "manifest.json").read_text()), "_folder": str(folder)}
    return manifests


def study_copies(out: Path, manifests: dict[str, dict],
                 configs: dict[str, dict[str, Any]] | None = None) -> list[Path]:
    """``OUT/study/<label>.tflite``: each int8 file with its metadata variant renamed to the label."""
    dest = out / "study"
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    paths = []
    for label, man in manifests.items():
        entry = _entry(man, label)
        src = folder_of(out, label, configs) / Path(entry["path"]).name
        data = src.read_bytes()
        meta = metadata_from_bytes(data, str(src))
        meta["export"] = {**meta["export"], "variant": label, "study_source": str(src)}
        guard = meta["export"].get("guard")
        if guard:  # the cascade's fp16 file sits beside it (renamed per label: each export has its own)
            shutil.copyfile(folder_of(out, label, configs) / guard["fallback"], dest / f"{label}_fp16.tflite")
            meta["export"]["guard"] = {**guard, "fallback": f"{label}_fp16.tflite"}
        paths.append(write_bytes_atomic(dest / f"{label}.tflite", embed_metadata(data, meta)))
    return paths


def _entry(man: dict, label: str) -> dict:
    want = SHIPPED.get(label, "int8")
    return next(r for r in man["results"] if r["variant"] == want)


def _row(v: dict, man: dict | None, n: int) -> dict[str, Any]:
    k = int(round((v.get("flip_rate") or 0.0) * n))
    q = ((next((r for r in man["results"] if r["variant"] == "int8"), {}) if man else {}).get("quantizer") or {})
    g = (v.get("device_info") or {}).get("guard") or {}
    b = q.get("budget") or {}
    return {"name": v["name"], "size_mb": v["size_bytes"] / 1e6, "auroc": v.get("auroc"),
            "delta_auroc": v.get("delta_auroc"), "delong_p": v.get("delong_p"), "flips": k, "n": n,
            "flip_rate": v.get("flip_rate"), "flip_ci95": list(wilson_ci(k, n)) if v.get("flip_rate") is not None
            else None, "logit_shift": v.get("logit_shift"), "logit_noise_sd": v.get("logit_noise_sd"),
            "p50_ms": (v.get("latency_ms") or {}).get("p50"), "mean_ms": (v.get("latency_ms") or {}).get("mean"),
            "backend": q.get("backend", "keras" if v["format"] == "keras" else "–") +
            (f"+split{q['head_split']['groups']}" if (q.get("head_split") or {}).get("groups") else "") +
            ("+gptq" if (q.get("weight_rounding") or {}).get("method") == "gptq" else ""),
            "ranges": q.get("ranges"), "rescored_share": g.get("rescored_share"),
            "ranking": list(b.get("ranking") or []), "all_int8": b.get("all_int8"),
            "float_layers": [x["layer"] for x in b.get("float_layers", [])] if b else None,
            "float_macs_share": b.get("float_macs_share"), "holdout_flips": b.get("flips"),
            "holdout_noise": b.get("logit_noise"), "holdout_n": (b.get("holdout") or {}).get("n"),
            "weight_rounding": _rounding_summary(q.get("weight_rounding"))}


def _rounding_summary(wr: dict | None) -> dict | None:
    """GPTQ's record without its per-op list (ops re-rounded, held-out layer output error before/after)."""
    if not isinstance(wr, dict) or wr.get("method") != "gptq":
        return None
    return {k: wr.get(k) for k in ("method", "ops", "ops_gptq", "n_fit", "n_heldout", "seconds",
                                   "heldout_output_mse_sum")}


def _rounding_lines(rows: list[dict]) -> list[str]:
    out = []
    for r in rows:
        wr = r.get("weight_rounding")
        if wr and not r["name"].startswith("int8-guard"):
            mse = wr["heldout_output_mse_sum"]
            out += ["", f"`{r['name']}`: GPTQ re-rounded the int8 weights of {wr['ops_gptq']} of {wr['ops']} ops "
                        f"(H from {wr['n_fit']} calibration images); the sum over ops of the layer output error on "
                        f"the {wr['n_heldout']} held-out calibration images went {mse['nearest']:.4f} → "
                        f"{mse['shipped']:.4f} ({wr['seconds']:.0f} s)."]
    return out


def _f(x, fmt: str, none: str = "–") -> str:
    return none if x is None else format(x, fmt)


def _latency_ratios(rows: list[dict]) -> dict[str, float]:
    """name → mean latency / the plain int8's (``converter``) mean latency."""
    base = next((r["mean_ms"] for r in rows if r["name"] == "converter"), None)
    return {r["name"]: r["mean_ms"] / base for r in rows if base and r["mean_ms"]}


def _ranking_lines(rows: list[dict]) -> list[str]:
    out, seen = [], []
    for r in rows:
        if r["ranking"] and r["ranking"] not in seen:  # budgets of one calibration share their ranking
            seen.append(r["ranking"])
            a = r["all_int8"] or {}
            out += ["", f"`{r['name']}`: all-int8 start on the hold-out images {100 * a.get('flips', 0):.1f} % flips, "
                        f"logit noise {a.get('logit_noise', 0):.3f}; the ops ranked by their own share of the int8 "
                        "logit-noise variance (each alone int8, every other op float):", "",
                    ", ".join(f"{x['layer']} ({x['type'].lower()}) {100 * x['noise_share']:.1f} %"
                              for x in r["ranking"])]
    return out


def markdown(rows: list[dict], meta: dict) -> str:
    lines = [
        f"# Decision-faithful int8 — {meta.get('title') or meta['run']} (issue 13)", "",
        f"Regenerate: `{meta['command']}` (from the repository root, with `../shared`; ~{meta['minutes']:.0f} min "
        "on this machine).", "",
        f"Machine: {meta['machine']}; LiteRT threads: {meta['threads']}.", "",
        f"Model: `{meta['run']}`. Test images: {meta['n']} (the ODIR test split "
        "of its config, never used for training, calibration or a budget check); reference: the Keras model at "
        "its threshold. Every int8 file has its output bias corrected (calibration images) and was verified in "
        "LiteRT at export. Flips: test images whose screening decision differs from the Keras model's, with a "
        "Wilson 95 % interval; logit shift ± sd: the per-image difference of the screening logit; ΔAUROC with "
        "the paired DeLong p. Budget columns: what the export measured on 500 held-out *training* images "
        "(`--max-flips` / `--max-logit-noise`), and the layers it kept float with their share of the "
        "multiply-adds.", "",
        "| model | backend | ranges | size MB | flips (95 % CI) | logit shift ± sd | AUROC | ΔAUROC | DeLong p "
        "| mean ms | × int8 | float layers (MACs) | hold-out flips / noise |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    ratio = _latency_ratios(rows)
    for r in rows:
        ci = r["flip_ci95"]
        flips = (f"{r['flips']}/{r['n']} = {100 * r['flip_rate']:.1f} % ({100 * ci[0]:.1f}–{100 * ci[1]:.1f})"
                 if ci else "–")
        shift = (f"{r['logit_shift']:+.3f} ± {r['logit_noise_sd']:.3f}" if r["logit_noise_sd"] is not None else "–")
        fl = "–" if r["float_layers"] is None else (
            f"{len(r['float_layers'])} ({100 * r['float_macs_share']:.1f} %)" +
            (": " + ", ".join(r["float_layers"][:6]) + (" …" if len(r["float_layers"]) > 6 else "")
             if r["float_layers"] else ""))
        ho = "–" if r["holdout_flips"] is None else f"{100 * r['holdout_flips']:.1f} % / {r['holdout_noise']:.3f}"
        lines.append(f"| {r['name']} | {r['backend']} | {r['ranges'] or '–'} | {r['size_mb']:.2f} | {flips} | "
                     f"{shift} | {_f(r['auroc'], '.3f')} | {_f(r['delta_auroc'], '+.4f')} | {_f(r['delong_p'], '.3f')} "
                     f"| {_f(r['mean_ms'], '.1f')} | {_f(ratio.get(r['name']), '.2f')} | {fl} | {ho} |")
    for r in rows:
        if r["rescored_share"] is not None:
            lines += ["", f"`{r['name']}` re-scored {100 * r['rescored_share']:.1f} % of the test images with its fp16 "
                          "fallback (its size is the int8 and fp16 files together)."]
    return "\n".join(lines + _rounding_lines(rows) + _ranking_lines(rows)) + "\n"


def rewrite(a) -> int:
    """DOC.md again from DOC.json's bench report and the export manifests (after a change of the page only)."""
    saved = json.loads(a.doc.with_suffix(".json").read_text())
    d = saved["report"]
    n = int(d["dataset"]["n_images"])
    manifests = {lab: json.loads((folder_of(a.out, lab) / "manifest.json").read_text()) for lab in saved["configs"]
                 if (folder_of(a.out, lab) / "manifest.json").is_file()}
    rows = [_row(v, manifests.get(v["name"]), n) for v in d["variants"]]
    meta = {k: v for k, v in saved.items() if k not in ("rows", "report")}
    meta["title"] = a.title or meta.get("title")
    write_json_atomic(a.doc.with_suffix(".json"), {**meta, "rows": rows, "report": d})
    write_text_atomic(a.doc.with_suffix(".md"), markdown(rows, meta))
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m edgeretina.benchmarks.int8_study", description=__doc__.split("\n")[0])
    ap.add_argument("--run", type=Path, default=RUN)
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--doc", type=Path, default=DOC, help="writes DOC.md and DOC.json")
    ap.add_argument("--only", nargs="*", choices=list(CONFIGS), default=list(CONFIGS))
    ap.add_argument("--reuse", action="store_true", help="keep exports whose manifest exists")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--title", default=None, help="what the page calls the model (default: the run path)")
    ap.add_argument("--n-boot", type=int, default=1000)
    ap.add_argument("--runs", type=int, default=10, help="bench timing runs per image (latency)")
    ap.add_argument("--timing-images", type=int, default=20)
    ap.add_argument("--rewrite", action="store_true",
                    help="only rewrite DOC.md from DOC.json and the manifests in OUT (no export, no bench)")
    a = ap.parse_args(argv)
    t0 = time.perf_counter()
    if a.rewrite:
        return rewrite(a)

    def log(s: str) -> None:
        print(f"[{time.perf_counter() - t0:6.0f}s] {s}", file=sys.stderr, flush=True)

    manifests = export_all(a.run, a.out, a.only, a.reuse, log)
    copies = study_copies(a.out, manifests)
    data = RunConfig.load(a.run).dataset["path"]
    log(f"bench {len(copies)} int8 files on {data} (test split)")
    rep = run_bench([str(a.run), *map(str, copies)], data, out=a.out / "bench", threads=a.threads,
                    n_boot=a.n_boot, stability=False, runs=a.runs, warmup=min(3, a.runs),
                    timing_images=a.timing_images)
    d = rep.to_dict()
    n = int(d["dataset"]["n_images"])
    rows = [_row(v, manifests.get(v["name"]), n) for v in d["variants"]]
    cmd = shlex.join(argv if argv is not None else sys.argv[1:])
    meta = {"command": "python -m edgeretina.benchmarks.int8_study " + cmd,
            "machine": "2-core AMD EPYC VM: " + machine_line(machine_info()), "threads": a.threads,
            "run": str(a.run), "title": a.title, "n": n, "minutes": (time.perf_counter() - t0) / 60,
            "configs": {k: CONFIGS[k] for k in a.only}}
    a.doc.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(a.doc.with_suffix(".json"), {**meta, "rows": rows, "report": d})
    write_text_atomic(a.doc.with_suffix(".md"), markdown(rows, meta))
    log(f"wrote {a.doc.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
