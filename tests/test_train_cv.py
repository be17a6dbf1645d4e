"""``edgeretina train --cv K``: patient-level folds over train+val, pooled out-of-fold AUROC, the test split
locked until the final model, resume of finished folds, ODIR ``negatives``."""
from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from edgeretina.cli import cli as main
from edgeretina.data import open_dataset
from edgeretina.errors import DataError, EdgeRetinaError
from edgeretina.tasks import task_spec
from edgeretina.train import TrainConfig, train_run
from edgeretina.train.cv import check_cv, fold_indices
from edgeretina.train.options import RunOptions


def test_folds_are_patient_disjoint_stratified_and_cover_every_record():
    ds = open_dataset("synthetic:n=240,size=64,seed=3", "glaucoma")
    recs = ds.records
    k = 5
    held = []
    for i in range(k):
        idx = fold_indices(recs, ds.spec, k, i, seed=0)
        parts = {n: {recs[j].group for j in v} for n, v in idx.items()}
        assert not (parts["train"] & parts["eval"]) and not (parts["val"] & parts["eval"])
        assert not (parts["train"] & parts["val"])
        assert len(idx["train"]) + len(idx["val"]) + len(idx["eval"]) == len(recs)
        y = np.array([recs[j].y for j in idx["eval"]])
        assert 0 < y.mean() < 1  # both classes in every held-out fold
        held.extend(idx["eval"].tolist())
    assert sorted(held) == list(range(len(recs)))  # every record held out exactly once


def test_cv_option_checks():
    with pytest.raises(EdgeRetinaError, match="at least 3 folds"):
        RunOptions(cv=2)
    with pytest.raises(EdgeRetinaError, match="--cv-only needs --cv"):
        RunOptions(cv_only=True)
    with pytest.raises(DataError, match="only 3 positive"):
        check_cv(5, task_spec("glaucoma"), np.array([1, 1, 1] + [0] * 50))


def test_odir_negatives_all_adds_other_findings(shared):
    normal = open_dataset(shared / "data" / "odir", "glaucoma")
    every = open_dataset(shared / "data" / "odir", "glaucoma", negatives="all")
    pos = lambda d: sum(r.y for r in d.records)  # noqa: E731
    assert pos(every) == pos(normal) == 256
    assert len(every.records) > len(normal.records) + 1000
    assert every.info["negatives"] == "all"
    with pytest.raises(DataError, match="negatives"):
        open_dataset(shared / "data" / "odir", "glaucoma", negatives="some")


@pytest.fixture(scope="module")
def cv_run(shared, tmp_path_factory):
    """3-fold CV of a warm-up-only MobileNetV2-96 recipe on a patient-level ODIR sample, then the final fit."""
    out = tmp_path_factory.mktemp("cv") / "run"
    cfg = TrainConfig(epochs_warmup=40, epochs_finetune=0, batch_size=16, patience=8)
    logs: list[str] = []
    train_run(shared / "data" / "odir", "glaucoma", "mobilenetv2", out, log=logs.append, weights="imagenet",
              input_size=96, config=cfg, max_train=300, max_val=100, max_test=150, n_boot=100, cv=3)
    return out, logs


def test_cv_run_reports_folds_pooled_auroc_and_locks_test(cv_run):
    out, logs = cv_run
    m = json.loads((out / "metrics.json").read_text())
    cv = m["cv"]
    assert cv["k"] == 3 and len(cv["folds"]) == 3
    assert sum(f["n_eval"] for f in cv["folds"]) == cv["n_dev"] == 400  # train+val, each held out once
    assert cv["pooled"]["n"] == 400 and 0.6 < cv["pooled"]["auroc"] <= 1.0  # it learned something
    assert cv["pooled"]["auroc_ci_low"] < cv["pooled"]["auroc"] < cv["pooled"]["auroc_ci_high"]
    assert abs(cv["mean"] - np.mean([f["score"] for f in cv["folds"]])) < 1e-9
    assert "auroc" in cv["baseline_logreg_frozen_features"]
    # threshold from the pooled out-of-fold scores, final model trained on train+val, test scored once
    assert m["threshold"]["method"] == "youden_j_on_pooled_cv_out_of_fold_scores"
    assert m["threshold"]["value"] == pytest.approx(cv["threshold"])
    assert "test" in m and "val" not in m
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["extra"]["cv"]["trained_on"] == "train+val"
    assert cfg["threshold"] == pytest.approx(cv["threshold"])
    assert any("ETA" in line for line in logs)  # progress per fold
    assert not (out / "checkpoint").exists()


def test_cv_only_never_loads_the_test_split(shared, tmp_path):
    out = tmp_path / "sel"
    r = CliRunner().invoke(main, ["train", "--data", str(shared / "data" / "odir"), "--task", "glaucoma",
                                  "--arch", "mobilenetv2", "--input-size", "96", "--epochs-warmup", "5",
                                  "--epochs-finetune", "0", "--max-train", "150", "--max-val", "60",
                                  "--max-test", "10", "--cv", "3", "--cv-only", "--bootstrap", "50",
                                  "--crop", "onh", "--out", str(out), "-q"])
    assert r.exit_code == 0, r.output
    assert "pooled out-of-fold AUROC" in r.output
    d = json.loads((out / "cv.json").read_text())
    assert d["dataset"]["split"]["test"] == 0  # not even loaded
    assert any(s["name"] == "onh_crop" for s in d["preprocessing"]["steps"])
    assert not (out / "metrics.json").exists() and not (out / "model.keras").exists()
    # finished folds are cached while the run is unfinished; a finished run refuses to be overwritten silently
    r2 = CliRunner().invoke(main, ["train", "--data", str(shared / "data" / "odir"), "--task", "glaucoma",
                                   "--arch", "mobilenetv2", "--cv", "3", "--cv-only", "--out", str(out), "-q"])
    assert r2.exit_code == 2 and "already holds a finished run" in r2.output


def test_macs_of_mobilenetv2_match_the_published_count():
    from edgeretina.models import build_model
    from edgeretina.models.macs import count_macs

    m224 = count_macs(build_model("mobilenetv2", "glaucoma", 224, None))
    m160 = count_macs(build_model("mobilenetv2", "glaucoma", 160, None))
    assert 295e6 < m224 < 305e6  # MobileNetV2 1.0-224: 300 M multiply-adds (Sandler et al. 2018)
    assert abs(m160 / m224 - (160 / 224) ** 2) < 0.01


def _cand(auroc, macs, mean=0.8, sd=0.02):
    return {"macs": macs, "seconds": 60.0,
            "cv": {"k": 5, "mean": mean, "sd": sd, "n_dev": 100,
                   "pooled": {"auroc": auroc, "auroc_ci_low": auroc - 0.05, "auroc_ci_high": auroc + 0.04},
                   "baseline_logreg_frozen_features": {"auroc": 0.8}}}


def test_recipe_choice_is_made_on_cv_and_prefers_fewer_macs_within_tolerance(tmp_path):
    from edgeretina.benchmarks import glaucoma_recipe as gr

    res = {"full224": _cand(0.850, 300e6), "onh128_linear": _cand(0.847, 98e6), "onh160": _cand(0.849, 153e6)}
    pick, why = gr.choose(res, 300e6)
    assert pick == "onh128_linear" and "fewer multiply-adds" in why and "MACs" in why
    res["onh160"] = _cand(0.80, 153e6)
    res["onh128_linear"] = _cand(0.79, 98e6)
    assert gr.choose(res, 300e6)[0] == "onh160"  # the MAC budget is a constraint, not a preference
    assert gr.choose({"full224": res["full224"]}, 300e6)[0] == "full224"  # nothing meets it: best on CV
    # the CV shift floor: a robust candidate beats a more accurate fragile one
    res["onh160"]["cv"]["shifted"] = {"defocus-severe": {"auroc": 0.70, "delta_auroc": -0.10}}
    res["onh128_linear"]["cv"]["shifted"] = {"defocus-severe": {"auroc": 0.75, "delta_auroc": -0.04}}
    pick, why = gr.choose(res, 300e6)
    assert pick == "onh128_linear" and "every severe CV shift" in why
    # issue 18's tie-break: same MACs, pooled AUROC within 0.003, fewer measured CV flips → the steadier one
    flips = lambda j, s: {"jpeg-95": {"flip_rate": j, "benign": True}, "shift-2px": {"flip_rate": s, "benign": True}}  # noqa: E731
    steady = _cand(0.788, 98e6)
    steady["cv"]["shifted"] = {**res["onh128_linear"]["cv"]["shifted"], **flips(0.02, 0.03)}
    pick, why = gr.choose({**res, "steady": steady}, 300e6)
    assert pick == "steady" and "fewest CV decision flips" in why and "not measured" in why
    res["onh128_linear"]["cv"]["shifted"].update(flips(0.01, 0.02))  # already steadier: kept
    assert gr.choose({**res, "steady": steady}, 300e6)[0] == "onh128_linear"
    steady["cv"]["pooled"]["auroc"] = 0.78  # 0.01 below: accuracy first
    res["onh128_linear"]["cv"]["shifted"] = {"defocus-severe": {"auroc": 0.75, "delta_auroc": -0.04}}
    assert gr.choose({**res, "steady": steady}, 300e6)[0] == "onh128_linear"
    # two candidates' out-of-fold files on the same records → a mean-logit ensemble row
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    for name in ("full224", "onh160"):
        d = tmp_path / f"cv_{name}"
        d.mkdir()
        s = 1 / (1 + np.exp(-(y * 1.5 + rng.normal(0, 1, 200))))
        lines = ["key,patient,y,oof_score,probe_oof_score"] + [f"k{i},p{i},{y[i]},{s[i]:.6f}," for i in range(200)]
        (d / "cv_oof.csv").write_text("\n".join(lines) + "\n")
    ens = gr.ensembles(tmp_path, ["full224", "onh160"])
    assert len(ens) == 1 and ens[0]["n"] == 200 and 0.7 < ens[0]["auroc"] <= 1
    out = gr.publish(gr.Outcome(res, ens, "full224", "highest"), tmp_path / "docs", 5)
    md = (tmp_path / "docs" / "glaucoma_recipe.md").read_text()
    assert "| full224 |" in md and "| onh160 |" in md and "Ensembles (mean logit" in md
    assert out["chosen"] == "full224" and "final" not in out  # no test figure without the final step
