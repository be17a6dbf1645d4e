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
    pred = np.clip(np.floor(probs @ np.arange(5) + 0.5), 0, 4)  # DR decides by the expected grade, rounded
    assert sc.kappa == pytest.approx(cohen_kappa_score(grades, pred, weights="quadratic"))
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


# ------------------------------------------------------------------ task-aware retention (issue 15)
def _softmax(z):
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def test_quadratic_kappa_matches_scikit_learn():
    from edgeretina import compare

    rng = np.random.default_rng(3)
    for _ in range(20):
        y, p = rng.integers(0, 5, 80), rng.integers(0, 5, 80)
        assert compare.quadratic_kappa(y, p, 5) == pytest.approx(
            cohen_kappa_score(y, p, weights="quadratic", labels=list(range(5))))
    assert np.isnan(compare.quadratic_kappa([2, 2], [2, 2], 5))


def test_dr_grading_retention_kappa_delta_flips_recall():
    """A variant whose logits are the reference's plus noise: κ, Δκ with a paired CI, accuracy, per-grade
    recall, grade flips and referable (grade >= 2) flips, each checked against a direct computation."""
    from sklearn.metrics import recall_score

    rng = np.random.default_rng(4)
    grades = rng.integers(0, 5, 500)
    z = np.eye(5)[grades] * 2.5 + rng.normal(0, 1, (500, 5))
    ref, var = _softmax(z), _softmax(z + rng.normal(0, 0.6, z.shape))
    spec = task_spec("dr")
    sc = evaluate(spec, grades, var, ref, threshold=0.5, n_boot=300)
    pv, pr = (np.clip(np.floor(p @ np.arange(5) + 0.5), 0, 4) for p in (var, ref))  # expected grade, rounded
    k_v = cohen_kappa_score(grades, pv, weights="quadratic")
    k_r = cohen_kappa_score(grades, pr, weights="quadratic")
    assert sc.kappa == pytest.approx(k_v) and sc.delta_kappa == pytest.approx(k_v - k_r)
    assert sc.kappa_ci95[0] < sc.kappa < sc.kappa_ci95[1]
    lo, hi = sc.delta_kappa_ci95
    assert lo < sc.delta_kappa < hi and hi - lo < 0.1  # paired: far narrower than two independent CIs
    assert sc.accuracy == pytest.approx(np.mean(pv == grades))
    assert sc.grade_flip_rate == pytest.approx(np.mean(pv != pr)) and sc.grade_flip_rate > 0.05
    assert sc.referable_flip_rate == pytest.approx(np.mean((pv >= 2) != (pr >= 2)))
    assert sc.referable_flip_rate < sc.grade_flip_rate
    rec = recall_score(grades, pv, average=None, labels=range(5))
    rec_ref = recall_score(grades, pr, average=None, labels=range(5))
    for i, lb in enumerate(spec.labels):
        assert sc.per_class[lb]["recall"] == pytest.approx(rec[i])
        assert sc.per_class[lb]["delta_recall"] == pytest.approx(rec[i] - rec_ref[i])
        assert sc.per_class[lb]["n"] == int(np.sum(grades == i))
    same = evaluate(spec, grades, ref, ref, threshold=0.5, n_boot=50)
    assert same.delta_kappa == 0.0 and same.delta_kappa_ci95 == (0.0, 0.0)
    assert (same.grade_flip_rate, same.referable_flip_rate) == (0.0, 0.0)


def test_generic_multiclass_reports_accuracy_recall_and_class_flips():
    spec = task_spec("classes", labels=("a", "b", "c"))
    rng = np.random.default_rng(5)
    y = rng.integers(0, 3, 200)
    ref = _softmax(np.eye(3)[y] * 2 + rng.normal(0, 1, (200, 3)))
    var = _softmax(np.log(ref) + rng.normal(0, 0.5, ref.shape))
    sc = evaluate(spec, y, var, ref, n_boot=0)
    assert sc.kappa is None and sc.referable_flip_rate is None
    assert sc.accuracy == pytest.approx(np.mean(var.argmax(1) == y))
    assert sc.flip_rate == sc.grade_flip_rate == pytest.approx(np.mean(var.argmax(1) != ref.argmax(1)))
    assert set(sc.per_class) == {"a", "b", "c"}
    assert sc.auroc == pytest.approx(roc_auc_score(y, var, multi_class="ovr"))


def test_multilabel_retention_paired_delta_ci_f1_and_per_label_flips():
    from sklearn.metrics import f1_score

    rng = np.random.default_rng(6)
    spec = task_spec("odir")
    Y = rng.integers(0, 2, (400, 8)).astype(float)
    P = 1 / (1 + np.exp(-(2 * Y - 1 + rng.normal(0, 1.2, Y.shape))))
    P2 = np.clip(P + rng.normal(0, 0.03, P.shape), 0, 1)
    ts = [0.3, 0.4, 0.5, 0.5, 0.6, 0.5, 0.5, 0.7]  # the reference's per-label thresholds
    sc = evaluate(spec, Y, P2, P, threshold=dict(zip(spec.labels, ts)), n_boot=200)
    pred = (P2 >= np.array(ts)).astype(int)
    assert sc.f1_micro == pytest.approx(f1_score(Y, pred, average="micro"))
    assert sc.f1_macro == pytest.approx(f1_score(Y, pred, average="macro"))
    lo, hi = sc.delta_auroc_ci95
    assert lo <= sc.delta_auroc <= hi and hi - lo < 0.02  # paired on the same draws: tight
    for j, lb in enumerate(spec.labels):
        d = sc.per_label[lb]
        assert d["threshold"] == ts[j]
        assert d["flip_rate"] == pytest.approx(np.mean((P2[:, j] >= ts[j]) != (P[:, j] >= ts[j])))
        assert d["delta_auroc"] == pytest.approx(roc_auc_score(Y[:, j], P2[:, j]) - roc_auc_score(Y[:, j], P[:, j]))
    same = evaluate(spec, Y, P, P, threshold=0.5, n_boot=50)
    assert same.delta_auroc_ci95 == (0.0, 0.0) and same.flip_rate == 0.0


def _report(task, kind, variants):
    return Report(task=task, kind=kind, dataset={"path": "d", "split": "test", "n_images": 500, "classes": {}},
                  machine={"cpu": "x"}, reference="model.keras", variants=tuple(variants))


def test_report_columns_follow_the_task_kind(tmp_path):
    """One field list: the md/terminal headers, report.csv keys, labels.csv and the ball chart's metric all
    change with the task kind (binary / DR grading / multi-label / multi-task)."""
    from edgeretina.benchmarks.report import LABEL_COLUMNS, VARIANT_COLUMNS

    grades = {lb: {"n": 100, "recall": 0.8, "delta_recall": -0.01, "flip_rate": 0.02}
              for lb in task_spec("dr").labels}
    dr = _report("dr", "multiclass", [_variant(name="keras", is_reference=True, kappa=0.85, kappa_ci95=(0.8, 0.9),
                                               delta_kappa=0.0, accuracy=0.8, grade_flip_rate=0.0,
                                               referable_flip_rate=0.0, kappa_density=0.38, per_class=grades),
                                      _variant(kappa=0.84, kappa_ci95=(0.79, 0.89), delta_kappa=-0.01,
                                               delta_kappa_ci95=(-0.02, 0.0), accuracy=0.79, grade_flip_rate=0.03,
                                               referable_flip_rate=0.008, kappa_density=0.38, per_class=grades)])
    heads = [h for h, _ in dr.columns()]
    assert {"κ [95% CI]", "Δκ [95% CI]", "Acc", "Grade flips", "Referable flips", "κ/M",
            "Referable AUROC [95% CI]"} <= set(heads)
    assert "Sens" not in heads and "Flips" not in heads and dr.headline().key == "kappa"
    paths = dr.save(tmp_path / "dr")
    md = paths["md"].read_text()
    assert "-0.010 [-0.020, +0.000]" in md and "0.8%" in md and "## Per grade" in md and "| Recall |" in md
    rows = list(csv.DictReader(io.StringIO(paths["labels_csv"].read_text())))
    assert len(rows) == 10 and rows[0]["label"] == "no DR" and float(rows[0]["sensitivity"]) == 0.8
    assert list(rows[0]) == [c.key for c in LABEL_COLUMNS]
    head = paths["csv"].read_text().splitlines()[0].split(",")
    assert head == [c.key for c in VARIANT_COLUMNS] and {"delta_kappa_ci_low", "referable_flip_rate"} <= set(head)
    assert Report.load(tmp_path / "dr").variants[1] == dr.variants[1]

    per = {lb: {"auroc": 0.9, "delta_auroc": -0.002, "delta_auroc_ci95": [-0.01, 0.006], "flip_rate": 0.01,
                "threshold": 0.4, "n_positive": 30, "delong_p": 0.6} for lb in ("glaucoma", "dr")}
    mt = _report("multitask", "multilabel", [_variant(per_label=per, f1_micro=0.7, f1_macro=0.6,
                                                       delta_auroc_ci95=(-0.01, 0.005))])
    heads = [h for h, _ in mt.columns()]
    assert {"Macro AUROC [95% CI]", "Δ macro AUROC [95% CI]", "Micro F1", "Macro F1", "Any-label flips"} <= set(heads)
    assert "κ [95% CI]" not in heads and "Logit sd" not in heads and mt.headline().label == "macro AUROC"
    md = mt.to_markdown()
    assert "## Per head" in md and "| Variant | Device | Head | n | Threshold |" in md
    assert "| int8 | cpu | glaucoma | 30 | 0.400 |" in md and "-0.0020 [-0.0100, +0.0060]" in md

    binary = _report("glaucoma", "binary", [_variant()])
    assert "κ [95% CI]" not in [h for h, _ in binary.columns()] and not binary.label_rows()
    assert binary.headline().key == "auroc"
