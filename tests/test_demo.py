"""``edgeretina demo --quick`` end to end: train → export 4 variants → LiteRT on held-out synthetic images.
The command runs in-process (click's CliRunner: same command, same stdout/stderr split); the real
``python -m edgeretina`` process contract (exit codes, one-line errors, no TF import for --help) is
test_cli.py's."""
from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from edgeretina.cli import cli

VARIANTS = ("float32", "fp16", "dynamic", "int8")


@pytest.fixture(scope="module")
def quick_demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "out"
    r = CliRunner().invoke(cli, ["demo", "--quick", "--out", str(out)])
    assert r.exit_code == 0, (r.stderr[-3000:], r.exception)
    return out, r


def test_prints_table_and_progress(quick_demo):
    _, r = quick_demo
    assert "train: epoch 1/" in r.stderr  # progress while it works
    assert "export: int8" in r.stderr
    header = next(ln for ln in r.stdout.splitlines() if ln.startswith("Variant"))
    for col in ("Size (MB)", "AUROC", "ΔAUROC vs float", "Latency (ms, batch 1)"):
        assert col in header
    for v in VARIANTS:
        assert any(ln.split()[:1] == [v] for ln in r.stdout.splitlines()), r.stdout


def test_json_and_markdown_tables(quick_demo):
    out, _ = quick_demo
    d = json.loads((out / "demo.json").read_text())
    assert d["schema"] == "edgeretina.demo/1"
    assert [row["variant"] for row in d["rows"]] == list(VARIANTS)
    rows = {row["variant"]: row for row in d["rows"]}
    assert rows["float32"]["delta_auroc"] == pytest.approx(0.0, abs=1e-12)
    assert rows["float32"]["auroc"] >= 0.75, d  # the model really learned (not a constant output)
    for v in VARIANTS:
        row = rows[v]
        assert row["size_mb"] > 0 and row["latency_ms"] > 0
        assert row["auroc"] == pytest.approx(rows["float32"]["auroc"] + row["delta_auroc"], abs=1e-9)
        assert abs(row["delta_auroc"]) < 0.1  # quantisation keeps the ranking
    assert rows["fp16"]["size_mb"] < 0.6 * rows["float32"]["size_mb"]
    assert rows["int8"]["size_mb"] < 0.5 * rows["float32"]["size_mb"]
    assert d["n_test"] >= 100
    md = (out / "demo.md").read_text()
    assert "| Variant | Size (MB) | AUROC | ΔAUROC vs float | Latency (ms, batch 1) |" in md
    for v in VARIANTS:
        assert f"| {v} |" in md
    # the run dir and the full benchmark report are there too
    assert (out / "model" / "model.keras").is_file() and (out / "model" / "config.json").is_file()
    assert (out / "bench" / "report.json").is_file() and (out / "export" / "manifest.json").is_file()


def test_every_variant_runs_in_litert_on_test_images(quick_demo):
    from ai_edge_litert.interpreter import Interpreter
    from sklearn.metrics import roc_auc_score

    from edgeretina.converters.metadata import read_metadata
    from edgeretina.data import load_arrays, open_dataset
    from edgeretina.preprocess import Pipeline
    from edgeretina.tasks import activate

    out, _ = quick_demo
    d = json.loads((out / "demo.json").read_text())
    ds = open_dataset(d["dataset"])
    split = d["settings"]["split"]
    test = ds.split(split, seed=d["settings"]["seed"])["test"]
    arrays = {}  # preprocessed test images per distinct embedded pipeline (the variants share one)
    for row in d["rows"]:
        path = out / row["file"]
        assert path.is_file() and path.suffix == ".tflite"
        meta = read_metadata(path)  # config.json travels inside every variant
        assert meta["task"] == "glaucoma" and meta["labels"] == ["normal", "glaucoma"]
        key = json.dumps(meta["preprocessing"], sort_keys=True)
        if key not in arrays:
            arrays[key] = load_arrays(test, Pipeline.from_json(meta["preprocessing"]))
        x, y = arrays[key]
        it = Interpreter(model_path=str(path))
        it.allocate_tensors()
        inp, outp = it.get_input_details()[0], it.get_output_details()[0]
        scores = []
        for xi in x:
            if np.dtype(inp["dtype"]) == np.int8:
                s, z = inp["quantization"]
                xi = np.clip(np.round(xi / s + z), -128, 127).astype(np.int8)
            it.set_tensor(inp["index"], xi[None].astype(inp["dtype"]))
            it.invoke()
            o = it.get_tensor(outp["index"]).astype(np.float64)
            if np.dtype(outp["dtype"]) == np.int8:
                s, z = outp["quantization"]
                o = (o - z) * s
            if meta.get("output", {}).get("kind") == "logits":
                o = activate(o, meta["output"]["activation"])
            scores.append(o[0, 1])
        scores = np.asarray(scores)
        assert np.isfinite(scores).all() and scores.std() > 1e-3  # not a constant output
        assert roc_auc_score(y, scores) == pytest.approx(row["auroc"], abs=0.02), row["variant"]
