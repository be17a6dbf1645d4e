"""The DR recipe study (issue 15, system 1): its CV on real APTOS photos, the page it writes, and the link
between its choice and the real-data table that trains it."""
from __future__ import annotations

import json

import numpy as np
import pytest

from edgeretina.benchmarks import dr_grading_study as S
from edgeretina.benchmarks.real_data import EXPERIMENTS
from edgeretina.paths import REPO_ROOT


def test_heads_parse_and_arms_give_train_arguments():
    assert S.parse_heads("linear,gap,fc:16,fc:32,16") == ["linear", "gap", "fc:16", "fc:32,16"]
    assert S.Arm("none", "linear").train_args()[:8] == ("--arch", "mobilenetv2", "--weights", "imagenet",
                                                        "--head", "gap", "--head-fit", "linear")
    bg = S.Arm("ben-graham", "fc:16", "partial").train_args()
    assert bg[bg.index("--enhance") + 1] == "ben-graham" and bg[bg.index("--epochs-finetune") + 1] == "30"
    assert bg[bg.index("--freeze") + 1] == "partial:block_16_expand" and bg[-2:] == ("--cv", "5")


def test_choice_prefers_the_simpler_arm_on_a_tie():
    r = lambda h, k: S.ArmResult(S.Arm("none", h), k, (k, k), k, k, 0.0, 0.5, {}, 1.0)  # noqa: E731
    results = [r("linear", 0.8500), r("gap", 0.8505), r("fc:16", 0.84)]
    assert S.choose(results).arm.head == "linear"
    assert S.choose([r("linear", 0.80), r("gap", 0.85)]).arm.head == "gap"


def test_published_choice_is_what_the_real_data_table_trains():
    page = REPO_ROOT / "docs" / "benchmarks" / "dr_grading_cv.json"
    if not page.exists():
        pytest.skip("docs/benchmarks/dr_grading_cv.json not generated")
    chosen = json.loads(page.read_text())["train_args"]
    assert tuple(chosen) == EXPERIMENTS["dr_grading_aptos_cv"].train_args


def test_study_runs_its_cv_on_real_aptos_photos(shared, tmp_path):
    """A 3-fold CV of the GAP head on 90 real development photos: features cached, page written, κ of the
    expected-grade decision reported beside argmax's, the test split never read."""
    rc = S.main(["--data", str(shared / "data" / "aptos"), "--work", str(tmp_path / "w"), "--docs",
                 str(tmp_path / "d"), "--enhance", "none", "--heads", "gap", "--k", "3", "--max-dev", "90"])
    assert rc == 0
    out = json.loads((tmp_path / "d" / "dr_grading_cv.json").read_text())
    (arm,) = out["arms"]
    assert arm["name"] == "none · gap · frozen" and out["n_dev"] == 90
    assert -1 <= arm["kappa_argmax"] <= 1 and arm["kappa_ci"][0] <= arm["kappa"] <= arm["kappa_ci"][1]
    z = np.load(tmp_path / "w" / "features_none.npz")
    assert z["feats"].shape == (90, 1280)
    md = (tmp_path / "d" / "dr_grading_cv.md").read_text()
    assert "**← chosen**" in md and "The test split is not read" in md
