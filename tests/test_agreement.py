"""``bench --agreement-data``: decision flips vs the reference on an unlabelled set with a Wilson 95 % CI
(benchmarks/agreement.py, compare.wilson_ci)."""
from __future__ import annotations

import math

import numpy as np
import pytest

from edgeretina.compare import wilson_ci
from edgeretina.errors import DataError


@pytest.mark.parametrize("k, n, lo, hi", [
    (0, 10, 0.0, 0.27753),      # Wilson (1927); Newcombe (1998) table I
    (5, 10, 0.23659, 0.76341),
    (1, 100, 0.00177, 0.05449),
    (10, 10, 0.72247, 1.0),
    (30, 3000, 0.00701, 0.01424),  # 1 % of 3,000 agreement images: the "upper bound ≤ 1.5 %"
])
def test_wilson_ci_known_values(k, n, lo, hi):
    a, b = wilson_ci(k, n)
    assert a == pytest.approx(lo, abs=1e-5) and b == pytest.approx(hi, abs=1e-5)


def test_wilson_ci_edges():
    assert all(math.isnan(v) for v in wilson_ci(0, 0))
    with pytest.raises(ValueError):
        wilson_ci(3, 2)
    lo90, hi90 = wilson_ci(5, 50, z=1.6448536)
    lo95, hi95 = wilson_ci(5, 50)
    assert lo95 < lo90 < 0.1 < hi90 < hi95


@pytest.fixture(scope="module")
def exported(tiny_run):
    from helpers.guarded import guard_export

    return guard_export(tiny_run)


@pytest.fixture(scope="module")
def photo_folder(tmp_path_factory):
    """A plain folder (with a subfolder) of unlabelled JPEG photos from a synthetic set the model never saw,
    plus one corrupt file."""
    import cv2

    from edgeretina.data import open_dataset

    d = tmp_path_factory.mktemp("unlabelled")
    (d / "more").mkdir()
    for i, r in enumerate(open_dataset("synthetic:n=90,size=96,seed=7", "glaucoma").records):
        cv2.imwrite(str(d / ("more" if i % 2 else ".") / f"img{i:03d}.jpg"), r.image[:, :, ::-1])
    (d / "broken.jpg").write_bytes(b"\xff\xd8\xff not a jpeg")
    return d


def test_agreement_stage_on_a_folder_of_images(exported, tiny_run, photo_folder):
    from edgeretina.benchmarks.agreement import agreement_stage
    from edgeretina.benchmarks.harness import load_models

    _, out = exported
    models, ref = load_models([tiny_run, out])
    res, info = agreement_stage(models, ref, photo_folder, threads=2, chunk=32)
    assert info["n_images"] == 90 and info["skipped"] == 1 and info["format"] == "images"
    assert res[ref.path].flips == 0 and res[ref.path].ci95[0] == 0.0
    by_name = {m.name: res[m.path] for m in models}
    assert set(by_name) == {"keras", "fp16", "int8", "int8-guard"}
    for a in by_name.values():
        assert a.n == 90 and a.flip_rate == a.flips / 90
        assert a.ci95 == pytest.approx(wilson_ci(a.flips, 90))
    # the guard flips no more than int8 does (fp16 decides inside the band)
    assert by_name["int8-guard"].flips <= by_name["int8"].flips + by_name["fp16"].flips
    # its band sweep: the same int8 / fp16 outputs under each band; k = 0 is the int8 file, the shipped k the guard
    guard_path = next(m.path for m in models if m.name == "int8-guard")
    sw = info["guard_sweeps"][str(guard_path)]
    rows = {r["k"]: r for r in sw["rows"]}
    assert rows[0.0]["flips"] == by_name["int8"].flips and rows[0.0]["rescored_share"] == 0.0
    shipped = [r for r in sw["rows"] if r["shipped"]]
    assert len(shipped) == 1 and shipped[0]["flips"] == by_name["int8-guard"].flips
    shares = [r["rescored_share"] for r in sw["rows"]]
    assert shares == sorted(shares) and all(r["n"] == 90 for r in sw["rows"])
    assert sw["t_ratio"] > 0 and all(r["latency_ratio"] == pytest.approx(1 + r["rescored_share"] * sw["t_ratio"])
                                     for r in sw["rows"])
    assert all(r["band"] == pytest.approx(r["k"] * sw["noise_rms"]) for r in sw["rows"])


def test_agreement_on_a_dataset_ignores_labels_and_fills_the_report(exported, tiny_run):
    from edgeretina.benchmarks.agreement import add_agreement, agreement_records
    from edgeretina.benchmarks.harness import load_models
    from edgeretina.benchmarks.report import Report, VARIANT_COLUMNS, VariantReport

    recs, fmt = agreement_records("synthetic:n=40,size=96,seed=3", "glaucoma")
    assert len(recs) == 40 and fmt == "synthetic"
    with pytest.raises(DataError):
        agreement_records("/nonexistent/folder", "glaucoma")
    _, out = exported
    models, ref = load_models([tiny_run, out])
    rows = tuple(VariantReport.from_dict({"name": m.name, "file": str(m.path), "device": "cpu", "threads": 1,
                                          "format": m.format, "is_reference": m is ref, "depth": 1, "params": 1,
                                          "nonzero_params": 1, "size_bytes": 1, "gzip_bytes": 1, "auroc": None,
                                          "auroc_ci95": None, "delta_auroc": None, "auroc_retention": None,
                                          "delong_p": None, "auroc_density": None, "auroc_density_nonzero": None,
                                          "auroc_per_mb": None, "sensitivity": None, "specificity": None,
                                          "flip_rate": None, "latency_ms": {"p50": 1, "p90": 1, "mean": 1, "n": 1},
                                          "images_per_s": 1.0}) for m in models)
    rep = Report(task="glaucoma", kind="binary", dataset={}, machine={}, reference=str(ref.path), variants=rows)
    got = add_agreement(rep, models, ref, "synthetic:n=40,size=96,seed=3", threads=2)
    assert got.agreement["n_images"] == 40
    assert all(v.agreement["n"] == 40 and len(v.agreement["ci95"]) == 2 for v in got.variants)
    headers = [h for h, _ in got.columns()]
    assert "Agreement flips [95% CI]" in headers and "Agreement flips [95% CI]" not in [h for h, _ in rep.columns()]
    md = got.to_markdown()
    assert "Agreement data:" in md and "of 40" in md
    csv_head = got.to_csv().splitlines()[0].split(",")
    assert {"agreement_flip_rate", "agreement_n", "agreement_ci_low", "agreement_ci_high"} <= set(csv_head)
    back = Report.from_dict(got.to_dict())
    assert back.agreement == got.agreement and back.variants[0].agreement == got.variants[0].agreement
    assert {c.key for c in VARIANT_COLUMNS} >= {"rescored_share"}
    assert np.isfinite(got.variants[0].agreement["ci95"][1])


def test_bench_cli_agreement_data_adds_the_columns(exported, tiny_run, photo_folder, tmp_path):
    import dataclasses
    import json

    from click.testing import CliRunner

    from edgeretina.cli import cli

    try:
        from edgeretina.benchmarks.options import BenchOptions
    except ImportError:
        BenchOptions = None
    if BenchOptions is None or "agreement_data" not in {f.name for f in dataclasses.fields(BenchOptions)}:
        pytest.skip("bench's --agreement-data call site is not in this build's harness yet")
    _, out = exported
    r = CliRunner().invoke(cli, ["bench", "--models", str(tiny_run), str(out), "--data",
                                 "synthetic:n=800,size=96,seed=0", "--max-images", "40", "--runs", "1",
                                 "--warmup", "0", "--timing-images", "2", "--n-boot", "0", "--stability", "off",
                                 "--threads", "2", "--agreement-data", str(photo_folder), "--out",
                                 str(tmp_path / "rep")])
    assert r.exit_code == 0, r.output
    rep = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert rep["agreement"]["n_images"] == 90
    rows = {v["name"]: v for v in rep["variants"]}
    assert all(v["agreement"]["n"] == 90 for v in rows.values())
    g = rows["int8-guard"]
    assert g["device_info"]["guard"]["rescored_share"] is not None
    assert list(rep["agreement"]["guard_sweeps"]) == [g["file"]]
    assert "int8-guard band sweep on the agreement images" in (tmp_path / "rep" / "report.md").read_text()
    from pathlib import Path

    assert g["size_bytes"] == Path(g["file"]).stat().st_size + rows["fp16"]["size_bytes"]  # both files
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "Agreement flips [95% CI]" in md and "Re-scored" in md and "--agreement-data" in md


def test_dr_grading_agreement_counts_grade_and_grade_2_flips():
    """DR 5-grade: besides the referral flips, the agreement stage counts predicted-grade flips and predicted
    grade >= 2 flips, each with a Wilson interval; the report shows them as their own columns."""
    from types import SimpleNamespace

    from edgeretina.benchmarks.agreement import Agreement, graded_flips
    from edgeretina.benchmarks.report import VARIANT_COLUMNS
    from edgeretina.tasks import Task, task_spec

    ref = np.array([[.7, .2, .05, .03, .02], [.1, .3, .4, .1, .1], [0, 0, .9, .1, 0], [0, 0, 0, .2, .8]])
    var = np.array([[.2, .7, .05, .03, .02], [.6, .3, .05, .03, .02], [0, 0, .1, .9, 0], [0, 0, 0, .2, .8]])
    got = graded_flips(task_spec(Task.DR), ref, var)
    assert got["grade"]["flips"] == 3 and got["referable_grade"]["flips"] == 1
    assert got["referable_grade"]["ci95"] == pytest.approx(list(wilson_ci(1, 4)))
    assert graded_flips(task_spec(Task.GLAUCOMA), ref[:, :2], var[:, :2]) is None
    a = Agreement(4, 1, 0.25, wilson_ci(1, 4), got)
    assert Agreement.from_dict(a.to_dict()) == a and "decisions" not in Agreement(4, 0, 0.0, (0, .5)).to_dict()
    cols = {c.key: c for c in VARIANT_COLUMNS}
    row = SimpleNamespace(agreement=a.to_dict())
    assert cols["agreement_grade_flip_rate"].get(row) == 0.75
    assert cols["agreement_referable_grade_flip_rate"].cell(row).startswith("25.00% [") and "of 4" in \
        cols["agreement_referable_grade_flip_rate"].cell(row)
