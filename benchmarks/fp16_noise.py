"""``python -m edgeretina.benchmarks.fp16_noise MODEL_float32.tflite --data PATH --task TASK``: where a binary
screening model's fp16 logit noise comes from (docs/export.md, session 9).

The float32 file's constants are rounded to float16 and back (what an fp16 file's DEQUANTIZE gives XNNPACK,
which computes in float32) in the float32 file itself, part by part, and the screening logit (logit of the last
output column) is compared with the float32 file's on ``-n`` seeded random images of the dataset (labels unused):
the head (constants of the last FULLY_CONNECTED op) alone, everything else alone, all; one constant at a time
(the ``--top`` largest shares of the summed variance; 0 skips it); every constant of > K values rounded, those of ≤ K kept
float32 (``--keep``, the rule ``converters/tflite.py:keep_small_float32`` ships at 4,096).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Sequence

import numpy as np

from edgeretina.data import open_dataset
from edgeretina.data.loading import load_image
from edgeretina.env import machine_info, machine_line
from edgeretina.inference.modelfile import open_model
from edgeretina.preprocess import Pipeline
from edgeretina.runtime import LiteRTModel
from edgeretina.runtime.flatbuffer import float_constants, replace_weights

KEEP = (0, 300, 1024, 4096, 8192)


def sample_images(model: Path, data: str, task: str, n: int, seed: int) -> np.ndarray:
    """``n`` seeded random images of ``data`` through the model's own preprocessing."""
    recs = list(open_dataset(data, task).records)
    idx = np.random.default_rng(seed).choice(len(recs), min(n, len(recs)), replace=False)
    pipe = Pipeline.from_json(open_model(model).config.preprocessing)
    return np.stack([pipe.apply(load_image(recs[i])) for i in idx]).astype(np.float32)


def screening_logits(buf: bytes, x: np.ndarray) -> np.ndarray:
    p = np.clip(LiteRTModel(buf, threads=1).raw(x)[:, -1], 1e-12, 1 - 1e-12)
    return np.log(p) - np.log1p(-p)


def _sd(buf: bytes, consts: list[dict], x: np.ndarray, ref: np.ndarray) -> float:
    """Logit sd vs ``ref`` with the constants ``consts`` of ``buf`` fp16-rounded."""
    new = {c["tensor"]: c["values"].astype(np.float16).astype(np.float32) for c in consts}
    return float(np.std(screening_logits(replace_weights(buf, new) if new else buf, x) - ref))


def study(buf: bytes, x: np.ndarray, keep: Sequence[int] = KEEP, top: int = 8) -> dict:
    consts = float_constants(buf)
    ref = screening_logits(buf, x)
    fc = [c["op_index"] for c in consts if c["op"] == "FULLY_CONNECTED"]
    head = [c for c in consts if fc and c["op_index"] == max(fc)]
    rest = [c for c in consts if c not in head]
    one = [(_sd(buf, [c], x, ref), c) for c in consts] if top else []  # one LiteRT model per constant
    total = sum(s * s for s, _ in one) or 1.0
    ranked = sorted(one, key=lambda sc: -sc[0])[:top]
    return {
        "n_images": int(len(x)), "constants": len(consts), "values": int(sum(c["values"].size for c in consts)),
        "all": _sd(buf, consts, x, ref), "head_only": _sd(buf, head, x, ref), "all_but_head": _sd(buf, rest, x, ref),
        "one_at_a_time": [{"tensor": c["tensor"], "op": c["op"], "op_index": c["op_index"],
                           "values": int(c["values"].size), "sd": s, "variance_share": s * s / total}
                          for s, c in ranked],
        "keep_float32": [{"max_elements": k, "kept_values": int(sum(c["values"].size for c in consts
                                                                    if c["values"].size <= k)),
                          "sd": _sd(buf, [c for c in consts if c["values"].size > k], x, ref)} for k in keep],
    }


def markdown(res: dict) -> list[str]:
    lines = [f"fp16 rounding of a float32 file, logit sd vs float32 on {res['n_images']} images "
             f"({res['constants']} constants, {res['values']:,} values): all {res['all']:.4f}, head only "
             f"{res['head_only']:.4f}, all but the head {res['all_but_head']:.4f}", "",
             "| constant (first op) | values | sd alone | share of summed variance |", "|---|---|---|---|"]
    lines += [f"| {r['op']} #{r['op_index']} | {r['values']:,} | {r['sd']:.4f} | {r['variance_share']:.1%} |"
              for r in res["one_at_a_time"]]
    lines += ["", "| constants of ≤ K values kept float32 | kept values | sd |", "|---|---|---|"]
    lines += [f"| K = {r['max_elements']:,} | {r['kept_values']:,} (+{r['kept_values'] * 2 / 1024:.0f} KB) | "
              f"{r['sd']:.4f} |" for r in res["keep_float32"]]
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m edgeretina.benchmarks.fp16_noise", description=__doc__.split("\n")[0])
    ap.add_argument("model", type=Path, help="float32 .tflite (with edgeretina metadata)")
    ap.add_argument("--data", required=True)
    ap.add_argument("--task", required=True)
    ap.add_argument("-n", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--top", type=int, default=8)
    ap.add_argument("--out", type=Path, default=None, help="JSON of the results")
    a = ap.parse_args(argv)
    res = study(a.model.read_bytes(), sample_images(a.model, a.data, a.task, a.n, a.seed), top=a.top)
    res["machine"] = machine_line(machine_info())
    print("\n".join(markdown(res)))
    if a.out:
        a.out.write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
