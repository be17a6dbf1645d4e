"""Metrics against hand-computed values."""
from __future__ import annotations

import math

import numpy as np
import pytest

from edgeretina import metrics as M
from edgeretina.tasks import task_spec

# 3 negatives, 4 positives; positives .3 .6 .7 .9 vs negatives .1 .2 .5 → 11 of 12 pairs ordered
Y = np.array([0, 0, 0, 1, 1, 1, 1])
S = np.array([0.1, 0.2, 0.5, 0.3, 0.6, 0.7, 0.9])


def test_auroc_hand_value():
    assert M.auroc(Y, S) == pytest.approx(11 / 12)


def test_binary_metrics_hand_values():
    m = M.binary_metrics(Y, S, 0.5)  # pred 0 0 1 0 1 1 1 → tp 3, fn 1, fp 1, tn 2
    assert (m["tp"], m["fn"], m["fp"], m["tn"]) == (3, 1, 1, 2)
    assert m["accuracy"] == pytest.approx(5 / 7)
    assert m["sensitivity"] == pytest.approx(0.75)
    assert m["specificity"] == pytest.approx(2 / 3)
    assert m["ppv"] == pytest.approx(0.75)
    assert m["npv"] == pytest.approx(2 / 3)
    assert m["f1"] == pytest.approx(0.75)


def test_thresholds():
    assert M.youden_threshold([0, 0, 1, 1], [0.1, 0.3, 0.6, 0.8]) == pytest.approx(0.6)
    # need 3 of the 4 positives (.9 .7 .6 .3) → threshold .6
    assert M.threshold_at_sensitivity(Y, S, 0.75) == pytest.approx(0.6)
    assert M.threshold_at_sensitivity(Y, S, 1.0) == pytest.approx(0.3)
    assert M.binary_metrics(Y, S, M.threshold_at_sensitivity(Y, S, 0.75))["sensitivity"] >= 0.75


def test_quadratic_kappa_hand_value():
    # O: (0,0) (1,2) (2,2); E = rows [1,1,1] x cols [1,0,2] / 3; w = (i-j)^2/4 → 1 - 0.25/1.25
    assert M.quadratic_kappa([0, 1, 2], [0, 2, 2]) == pytest.approx(0.8)
    assert M.quadratic_kappa([0, 1, 2, 3, 4], [0, 1, 2, 3, 4]) == pytest.approx(1.0)


def test_bootstrap_ci_matches_manual_resampling():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 200)
    s = y * 0.8 + rng.normal(0, 0.6, 200)
    a = M.bootstrap_auroc(y, s, n_boot=300, seed=7)
    from sklearn.metrics import roc_auc_score

    r = np.random.default_rng(7)
    reps = []
    while len(reps) < 300:
        i = r.integers(0, 200, 200)
        if y[i].min() == y[i].max():
            continue
        reps.append(roc_auc_score(y[i], s[i]))
    lo, hi = np.quantile(reps, [0.025, 0.975])
    assert (a.lo, a.hi) == pytest.approx((lo, hi))
    assert a.lo < a.value < a.hi and a.value == pytest.approx(roc_auc_score(y, s))
    # the CI is about ±1.96·SE; for n=200 at AUROC ~0.8 it is ~0.1–0.15 wide
    assert 0.05 < a.hi - a.lo < 0.25
    perfect = M.bootstrap_auroc([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9], n_boot=50)
    assert (perfect.value, perfect.lo, perfect.hi) == (1.0, 1.0, 1.0)
    assert math.isnan(M.bootstrap_auroc([1, 1], [0.2, 0.3]).value)


def test_multiclass_metrics():
    y = np.array([0, 1, 2, 2])
    p = np.array([[.8, .1, .1], [.2, .7, .1], [.1, .2, .7], [.1, .6, .3]])  # pred 0 1 2 1
    m = M.multiclass_metrics(y, p, ("a", "b", "c"))
    assert m["accuracy"] == pytest.approx(0.75)
    assert m["per_class_recall"] == {"a": 1.0, "b": 1.0, "c": 0.5}
    assert m["micro_f1"] == pytest.approx(0.75)
    # F1: a 1, b 2/3 (tp1 fp1), c 2/3 (tp1 fn1)
    assert m["macro_f1"] == pytest.approx((1 + 2 / 3 + 2 / 3) / 3)
    assert m["quadratic_kappa"] == pytest.approx(M.quadratic_kappa(y, [0, 1, 2, 1], 3))


def test_multilabel_per_label_auroc_and_f1():
    y = np.array([[1, 0], [0, 1], [1, 1], [0, 0]])
    s = np.array([[.9, .5], [.2, .8], [.7, .4], [.4, .3]])
    m = M.multilabel_metrics(y, s, ("g", "d"))
    assert m["per_label"]["g"]["auroc"] == 1.0
    assert m["per_label"]["d"]["auroc"] == pytest.approx(0.75)
    assert m["macro_auroc"] == pytest.approx(0.875)
    # preds @0.5: [1,1] [0,1] [1,0] [0,0] → tp 3, fp 1, fn 1 → micro F1 6/8
    assert m["micro_f1"] == pytest.approx(0.75)
    assert m["per_label"]["d"]["ppv"] == pytest.approx(0.5)


def test_evaluate_and_roc_png(tmp_path):
    spec = task_spec("glaucoma")
    m = M.evaluate(spec, Y, S, threshold=0.5, n_boot=50)
    assert m["auroc"] == pytest.approx(11 / 12) and m["n_positive"] == 4 and m["threshold"] == 0.5
    p = M.plot_roc(tmp_path / "roc.png", M.roc_curves_for(spec, {"test": (Y, S)}))
    import cv2

    img = cv2.imread(str(p))
    assert img is not None and img.shape[0] > 100
    assert M.primary_score(task_spec("dr"), [0, 1, 2], np.eye(5)[[0, 2, 2]]) == pytest.approx(0.8)


def test_dr_grades_are_decided_by_the_expected_grade():
    """DR grades are ordinal: the predicted grade is Σ k·p_k rounded (half-way up), not the argmax — an image
    split between grades 0 and 4 is a 2, not whichever extreme is a hair more likely."""
    from edgeretina.runtime.decisions import task_decisions
    from edgeretina.tasks import expected_grade, predicted_classes, task_spec

    dr, other = task_spec("dr"), task_spec("classes", ("a", "b", "c", "d", "e"))
    p = np.array([[.51, 0, 0, 0, .49],      # argmax 0, expected 1.96 -> 2
                  [.1, .45, .4, .05, 0],    # argmax 1, expected 1.4 -> 1
                  [0, .5, .5, 0, 0],        # expected 1.5 -> 2 (half-way rounds up)
                  [0, 0, .2, .3, .5]])      # expected 3.3 -> 3
    assert expected_grade(p) == pytest.approx([1.96, 1.4, 1.5, 3.3])
    assert predicted_classes(dr, p).tolist() == [2, 1, 2, 3]
    assert predicted_classes(other, p).tolist() == [0, 1, 1, 4]
    assert task_decisions(dr, p).tolist() == [2, 1, 2, 3]
    # un-normalised rows (dequantised int8 softmax) decide as their normalised selves
    assert predicted_classes(dr, 2 * p).tolist() == [2, 1, 2, 3]
    m = M.evaluate(dr, np.array([2, 1, 2, 3]), p)
    assert m["accuracy"] == 1.0 and m["quadratic_kappa"] == pytest.approx(1.0)
    assert M.primary_score(dr, np.array([2, 1, 2, 3]), p) == pytest.approx(1.0)
