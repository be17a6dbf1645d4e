"""Table V (issue 15, system 4; ``python -m edgeretina.benchmarks.table_v``): its table, marked row and ball chart
built from real objects — the suite's ``tiny_run`` model (conftest: MobileNetV2 trained at 48 px on the embedded
synthetic-fundus set, no ../shared needed), its real float32 / int8 .tflite exports, a real ``run_bench`` per
config and the real interleaved LiteRT timing pass — and the command's one-line refusals."""
from __future__ import annotations

import json
import shutil

import cv2
import pytest

from edgeretina.benchmarks import table_v
from edgeretina.benchmarks.harness import run_bench
from edgeretina.benchmarks.robustness import BenchOptions


@pytest.fixture(scope="module")
def two_configs(tiny_run, tmp_path_factory):
    """Two configs' work folders holding the tiny model's real exports and a real bench report each."""
    from helpers.testmodels import glaucoma_variants

    m = glaucoma_variants(tiny_run)
    work = tmp_path_factory.mktemp("table_v")
    done = [table_v.Config("mobilenetv2", table_v.View.FULL, 48), table_v.Config("mobilenetv2", table_v.View.ONH, 48)]
    per_config = {}
    for c in done:
        exp = work / c.name / "export"
        shutil.copytree(m["export"], exp)
        f32, i8 = table_v.files_of(exp)
        run_bench([f32, i8], m["data"], reference=f32, out=work / c.name / "bench", runs=1, warmup=0,
                  timing_images=2, max_images=60, n_boot=50, options=BenchOptions.make(stability="off"))
        per_config[c.name] = json.loads((work / c.name / "bench" / "report.json").read_text())
    return {"work": work, "done": done, "per_config": per_config, "data": m["data"]}


def test_table_rows_mark_and_chart_from_real_runs(two_configs, tmp_path):
    t = two_configs
    timing = table_v.joint_timing(t["done"], t["work"], t["data"], threads=1, rounds=2)
    assert timing["rounds"] == 2 and len(timing["files"]) == 4
    assert all(len(v["round_p50s_ms"]) == 2 and v["p50_ms"] > 0 for v in timing["files"].values())
    assert table_v.joint_timing(t["done"], t["work"], t["data"], threads=1) == timing  # cached: resumable

    rows = table_v.build_rows(t["done"], t["work"], t["per_config"], timing)
    assert [(r.view, r.precision) for r in rows] == [("full", "float32"), ("full", "int8"), ("onh", "float32"),
                                                    ("onh", "int8")]
    for r in rows:
        assert r.depth > 10 and r.params > 1e6 and r.size_mb > 0.3 and r.latency_p50_ms > 0
        assert 0 <= r.auroc <= 1 and r.auroc_ci95[0] <= r.auroc <= r.auroc_ci95[1]
        assert r.auroc_density == pytest.approx(r.auroc / (r.params / 1e6), rel=1e-6)
        assert (r.delta_auroc_vs_float32 is None) == (r.precision == "float32")
    int8 = [r for r in rows if r.precision == "int8"]
    assert int8[0].size_mb < 0.5 * rows[0].size_mb and int8[0].flip_rate is not None

    marked = [r for r in rows if r.fastest_within_tolerance]
    assert len(marked) == 1
    best = max(r.auroc for r in rows)
    ok = [r for r in rows if r.auroc >= best - table_v.TOLERANCE]
    assert marked[0].latency_p50_ms == min(r.latency_p50_ms for r in ok)

    meta = {"title": "Table V test", "command": "python -m edgeretina.benchmarks.table_v --sizes 48",
            "machine_line": "test machine", "load": "load", "method": table_v.method_lines([], t["per_config"][
                t["done"][0].name], timing)}
    out = table_v.publish(rows, meta, tmp_path)
    md = (tmp_path / "table_v_glaucoma.md").read_text()
    assert md.count("| mobilenetv2_") == 3 and md.count("| **mobilenetv2_") == 1 and "target — a ball chart" in md
    assert out["fastest_within_tolerance"]["config"] == marked[0].config
    assert json.loads((tmp_path / "table_v_glaucoma.json").read_text())["rows"][0]["depth"] == rows[0].depth
    img = cv2.imread(str(tmp_path / "table_v_glaucoma.png"))
    assert img is not None and img.shape[0] > 300 and img.std() > 5


def test_mark_fastest_within_tolerance_of_best(two_configs):
    t = two_configs
    base = table_v.build_rows(t["done"], t["work"], t["per_config"], {"files": {}})
    assert not any(r.fastest_within_tolerance for r in base)  # nothing timed: nothing marked
    from dataclasses import replace

    rows = [replace(base[0], auroc=0.90, latency_p50_ms=4.0), replace(base[1], auroc=0.895, latency_p50_ms=2.0),
            replace(base[2], auroc=0.85, latency_p50_ms=1.0), replace(base[3], auroc=0.889, latency_p50_ms=1.5)]
    marked = [r for r in table_v.mark_fastest(rows) if r.fastest_within_tolerance]
    assert [(r.view, r.precision) for r in marked] == [("full", "int8")]  # 0.85 and 0.889 are > 0.01 below


def test_missing_weights_offline_is_one_line_error(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(table_v, "_online", lambda *a, **k: False)  # no network here: the offline case
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    code = table_v.main(["--arch", "mobilenetv2,xception", "--sizes", "96", "--work", str(tmp_path / "w"),
                         "--docs", str(tmp_path / "d")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("error: --arch xception: no ImageNet weights offline")
    assert not (tmp_path / "w").exists() and not (tmp_path / "d").exists()  # refused before any step
    assert table_v.main(["--arch", "nosuchnet", "--work", str(tmp_path / "w")]) == 2
    assert "unknown architecture" in capsys.readouterr().err
    assert table_v.main(["--views", "side", "--work", str(tmp_path / "w")]) == 2
    assert capsys.readouterr().err.startswith("error: --views: unknown view 'side'")
