"""Per-task scoring of the benchmark (binary, DR grading, multi-label) and the report's serialisation."""
from __future__ import annotations

import csv
import io
import json

import numpy as np
import pytest
from sklearn.metrics import cohen_kappa_score, roc_auc_score

from edgeretina.benchmarks.report import Latency, Report, VariantReport
from edgeretina.benchmarks.scoring import evaluate
from edgeretina.tasks import task_spec


def _softmax2(p1):
    p1 = np.asarray(p1)
    return np.stack([1 - p1, p1], axis=1)


def test_binary_scores_against_reference():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 300)
    ref = 1 / (1 + np.exp(-(2 * y - 1 + rng.normal(0, 1, 300))))
    var = np.clip(ref + rng.normal(0, 0.05, 300), 0, 1)
    spec = task_spec("glaucoma")
    sc = evaluate(spec, y, _softmax2(var), _softmax2(ref), threshold=0.4, n_boot=200)
    assert sc.auroc == pytest.approx(roc_auc_score(y, var))
    assert sc.delta_auroc == pytest.approx(roc_auc_score(y, var) - roc_auc_score(y, ref))
    assert sc.auroc_ci95[0] < sc.auroc < sc.auroc_ci95[1]
    assert 0 < sc.delong_p <= 1
    lo, hi = sc.delta_auroc_ci95
    assert lo < sc.delta_auroc < hi and (lo > 0 or hi < 0) == (sc.delong_p < 0.05)
    assert sc.sensitivity == pytest.approx(np.mean(var[y == 1] >= 0.4))
    assert sc.specificity == pytest.approx(np.mean(var[y == 0] < 0.4))
    assert sc.flip_rate == pytest.approx(np.mean((var >= 0.4) != (ref >= 0.4)))
    same = evaluate(spec, y, _softmax2(ref), _softmax2(ref), threshold=0.4, n_boot=0)
    assert (same.flip_rate, same.delta_auroc, same.auroc_retention, same.delong_p) == (0.0, 0.0, 1.0, 1.0)
    assert same.auroc_ci95 is None


def test_dr_grading_reports_kappa_and_referable_auroc():
    rng = np.random.default_rng(1)
    grades = rng.integers(0, 5, 400)
    logits = np.eye(5)[grades] * 2.0 + rng.normal(0, 1, (400, 5))
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    sc = evaluate(task_spec("dr"), grades, probs, probs, threshold=None, n_boot=100)
    assert sc.kappa == pytest.approx(cohen_kappa_score(grades, probs.argmax(1), weights="quadratic"))
    assert sc.auroc == pytest.approx(roc_auc_score(grades >= 2, probs[:, 2:].sum(1)))
    assert sc.grade_flip_rate == 0.0 and sc.flip_rate == 0.0


def test_multilabel_reports_mean_and_per_label_auroc():
    rng = np.random.default_rng(2)
    spec = task_spec("odir")
    Y = rng.integers(0, 2, (300, 8)).astype(float)
    P = 1 / (1 + np.exp(-(2 * Y - 1 + rng.normal(0, 1.5, Y.shape))))
    P2 = P.copy()
    P2[:, 3] = rng.random(300)  # label C becomes noise
    sc = evaluate(spec, Y, P2, P, threshold=0.5, n_boot=100)
    per = {lb: roc_auc_score(Y[:, j], P2[:, j]) for j, lb in enumerate(spec.labels)}
    assert set(sc.per_label) == set(spec.labels)
    for lb in spec.labels:
        assert sc.per_label[lb]["auroc"] == pytest.approx(per[lb])
    assert sc.auroc == pytest.approx(np.mean(list(per.values())))
    assert sc.per_label["C"]["delong_p"] < 0.001 and sc.delong_p < 0.01  # Bonferroni over 8 labels
    assert sc.flip_rate > 0.3  # any-label flips: label C's decisions are random now


def _variant(**kw):
    base = dict(name="int8", file="m_int8.tflite", device="cpu", threads=2, format="tflite", is_reference=False,
                depth=53, params=2_209_378, nonzero_params=2_200_000, size_bytes=2_711_432, gzip_bytes=2_210_000,
                auroc=0.81, auroc_ci95=(0.75, 0.87), delta_auroc=0.01, auroc_retention=1.012, delong_p=0.43,
                auroc_density=0.367, auroc_density_nonzero=0.368, auroc_per_mb=0.3, sensitivity=0.77,
                specificity=0.72, flip_rate=0.128, latency_ms=Latency(0.4, 4.5, 1.1, 20), images_per_s=936.0,
                threshold=0.376)
    base.update(kw)
    return VariantReport(**base)


def test_report_serialises_to_json_markdown_csv(tmp_path):
    rep = Report(task="glaucoma", kind="binary",
                 dataset={"path": "odir", "split": "test", "n_images": 486, "classes": {"normal": 434, "glaucoma": 52}},
                 machine={"cpu": "x"}, reference="model.keras",
                 variants=(_variant(name="keras", is_reference=True, delong_p=float("nan")), _variant()))
    paths = rep.save(tmp_path, command="edgeretina bench ...")
    d = json.loads(paths["json"].read_text())
    assert d["variants"][0]["delong_p"] is None  # NaN never reaches JSON
    assert d["variants"][1]["latency_ms"] == {"p50": 0.4, "p90": 4.5, "mean": 1.1, "n": 20}
    assert Report.load(tmp_path).variants[1] == rep.variants[1]
    md = paths["md"].read_text()
    assert "| int8 | cpu×2 |" in md and "0.810 [0.750, 0.870]" in md and "`edgeretina bench ...`" in md
    rows = list(csv.DictReader(io.StringIO(paths["csv"].read_text())))
    assert rows[1]["name"] == "int8" and float(rows[1]["latency_p50_ms"]) == 0.4
    assert "keras (ref)" in rep.to_terminal()


def test_logit_shift_noise_and_near_threshold_are_measured_in_logit_units():
    """A variant whose scores are the reference's shifted by +0.3 logit: shift 0.3, noise 0; the images whose
    reference logit lies within ±0.25 of the threshold's are counted as fragile."""
    spec = task_spec("glaucoma")
    ref_logit = np.array([-3.0, -2.1, -2.0, -1.9, 0.0, 1.0, 2.0, -4.0])
    y = np.array([0, 0, 1, 0, 1, 1, 1, 0])
    sig = lambda z: 1 / (1 + np.exp(-z))  # noqa: E731
    ref = np.c_[1 - sig(ref_logit), sig(ref_logit)]
    var = np.c_[1 - sig(ref_logit + 0.3), sig(ref_logit + 0.3)]
    t = float(sig(-2.0))
    sc = evaluate(spec, y, var, ref, t, n_boot=0)
    assert sc.logit_shift == pytest.approx(0.3, abs=1e-6)
    assert sc.logit_noise_sd == pytest.approx(0.0, abs=1e-6)
    assert sc.near_threshold == pytest.approx(3 / 8)
    assert sc.flip_rate == pytest.approx(1 / 8)  # only -2.1 (→ -1.8) crosses the threshold
