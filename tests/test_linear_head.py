"""The ``linear`` head recipe (``train --head-fit linear``): the Keras model's probabilities are exactly the
fitted logistic regression's, the penalty comes from inner grouped CV, the run dir says so, and the
combinations it cannot honour are refused in one line."""
from __future__ import annotations

import json

import numpy as np
import pytest

from edgeretina.errors import EdgeRetinaError, ModelError


def _features(n=240, d=1280, seed=0, classes=2):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    f = rng.normal(0.0, 1.0, (n, d)).astype(np.float32) * rng.uniform(0.2, 3.0, d) + rng.uniform(-2, 2, d)
    f[:, :8] += 0.8 * y[:, None]  # a real, learnable signal in a few features
    return f, y


def _head_probs(model, feats):
    from edgeretina.train.features import head_model_of

    return head_model_of(model).predict(feats, verbose=0)


def test_binary_head_equals_the_logistic_regression():
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    from edgeretina.models import build_model
    from edgeretina.tasks import task_spec
    from edgeretina.train.linear_head import LinearHeadOptions, fit_linear_head

    spec = task_spec("glaucoma")
    model = build_model("mobilenetv2", spec, 32, None, alpha=0.35)
    f, y = _features()
    groups = np.arange(len(y)) // 2  # two eyes per patient
    fit = fit_linear_head(model, spec, f, y, groups, LinearHeadOptions(cs=(1e-3, 1e-1)))
    assert fit.C in (1e-3, 1e-1) and fit.n == len(y) and set(fit.inner_scores) == {"0.001", "0.1"}
    sc = StandardScaler().fit(f)
    ref = LogisticRegression(C=fit.C, max_iter=5000, class_weight="balanced").fit(sc.transform(f), y)
    p = _head_probs(model, f)
    np.testing.assert_allclose(p[:, spec.positive_index], ref.predict_proba(sc.transform(f))[:, 1], atol=2e-5)
    np.testing.assert_allclose(p.sum(1), 1.0, atol=1e-5)
    assert fit.inner_scores[f"{fit.C:g}"] > 0.7  # it learned the signal


def test_multiclass_head_is_the_multinomial_regression():
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    from edgeretina.models import build_model
    from edgeretina.tasks import task_spec
    from edgeretina.train.linear_head import LinearHeadOptions, fit_linear_head

    spec = task_spec("dr")
    model = build_model("mobilenetv2", spec, 32, None, alpha=0.35)
    f, y = _features(n=300, classes=spec.n_outputs, seed=1)
    fit = fit_linear_head(model, spec, f, y, None, LinearHeadOptions(cs=(1e-2,), class_weight=None))
    sc = StandardScaler().fit(f)
    ref = LogisticRegression(C=fit.C, max_iter=5000).fit(sc.transform(f), y)
    np.testing.assert_allclose(_head_probs(model, f), ref.predict_proba(sc.transform(f)), atol=2e-5)



def test_multilabel_head_is_one_regression_per_label_and_an_absent_label_is_its_prior():
    """ODIR 8-label: one sigmoid per label equals its own logistic regression; a label with no positive among
    the fitting eyes (a rare label in a small sample) gets zero weights and the smoothed prior as its bias."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    from edgeretina.models import build_model
    from edgeretina.tasks import task_spec
    from edgeretina.train.linear_head import LinearHeadOptions, fit_linear_head

    spec = task_spec("odir")
    model = build_model("mobilenetv2", spec, 32, None, alpha=0.35)
    f, _ = _features(n=200, seed=2)
    rng = np.random.default_rng(3)
    Y = (rng.random((200, spec.n_outputs)) < 0.3).astype(np.float32)
    Y[:, 0] = (f[:, 0] > np.median(f[:, 0])).astype(np.float32)
    Y[:, 5] = 0.0  # H: no positive at all
    fit = fit_linear_head(model, spec, f, Y, np.arange(200) // 2, LinearHeadOptions(cs=(1e-2,)))
    p = _head_probs(model, f)
    sc = StandardScaler().fit(f)
    ref = LogisticRegression(C=fit.C, max_iter=5000, class_weight="balanced").fit(sc.transform(f), Y[:, 0])
    np.testing.assert_allclose(p[:, 0], ref.predict_proba(sc.transform(f))[:, 1], atol=2e-5)
    np.testing.assert_allclose(p[:, 5], 0.5 / 201, rtol=1e-4)  # (0 + 0.5) / (n + 1), the same for every eye
    assert np.isfinite(fit.inner_scores["0.01"])


def test_sd_floor_caps_the_folded_weight_of_a_near_dead_feature():
    """A pooled feature that is ~0 on almost every image (ODIR 8-label: σ 6e-5, folded |w| 1132) gets a weight
    w / σ thousands of times the median; ``sd_floor`` standardises by max(σ, floor × median σ) instead."""
    from edgeretina.models import build_model
    from edgeretina.tasks import task_spec
    from edgeretina.train.linear_head import LinearHeadOptions, fit_linear_head

    spec = task_spec("glaucoma")
    f, y = _features(n=240, seed=4)
    f[:, 100] = 0.0
    f[::40, 100] = 1e-3 * y[::40]  # nearly dead, and what little it says is about the label
    ratios = []
    for floor in (0.0, 0.1):
        model = build_model("mobilenetv2", spec, 32, None, alpha=0.35)
        fit_linear_head(model, spec, f, y, None, LinearHeadOptions(cs=(1e-1,), sd_floor=floor))
        W = np.abs(model.get_layer("head_logits").get_weights()[0]).max(1)
        ratios.append(W[100] / np.median(W))
    assert ratios[0] > 100 and ratios[1] < 20, ratios

def test_fc_head_is_refused_in_one_line():
    from edgeretina.models import build_model
    from edgeretina.tasks import task_spec
    from edgeretina.train.linear_head import check_linear_head

    model = build_model("mobilenetv2", task_spec("glaucoma"), 32, None, head="fc:16", alpha=0.35)
    with pytest.raises(ModelError, match="gap"):
        check_linear_head(model, 1280)


@pytest.mark.parametrize("kw, match", [({"grid": True}, "no --grid"), ({"aug_copies": 0}, "aug-copies"),
                                       ({"head_fit": "ridge"}, "unknown head fit"),
                                       ({"linear_cs": (1e-3, 0.0)}, "linear-cs"),
                                       ({"head_fit": "two-phase", "linear_cs": (1e-3,)}, "linear-cs"),
                                       ({"linear_sd_floor": 2.0}, "linear-sd-floor")])
def test_impossible_combinations_are_refused(kw, match):
    from edgeretina.train import TrainConfig
    from edgeretina.train.options import RunOptions

    cfg = TrainConfig(augment=kw.pop("augment", None))
    with pytest.raises(EdgeRetinaError, match=match):
        RunOptions(config=cfg, **{"head_fit": "linear", **kw})


def test_train_cv_with_a_linear_head_writes_an_honest_run(tmp_path):
    """End to end on the embedded synthetic set, with camera-augmented feature copies: nested CV (folds choose
    their own penalty), the final fit on train+val (+ one augmented copy each), the run dir records the recipe
    and the model really separates the classes."""
    from edgeretina.train import TrainConfig, train_run

    out = train_run("synthetic", "glaucoma", "mobilenetv2", tmp_path / "run", weights="imagenet", input_size=64,
                    config=TrainConfig(seed=0, augment="camera"), head_fit="linear", aug_copies=1, cv=3,
                    max_train=90, max_val=30, max_test=60, n_boot=50, cv_shifts=("defocus:severe",))
    m = json.loads((out / "metrics.json").read_text())
    cfg = json.loads((out / "config.json").read_text())
    assert m["cv"]["head_fit"] == "linear" and len(m["cv"]["linear_head_C"]) == 3
    assert m["linear_head"]["n"] == 240 and m["phases"][0]["name"] == "linear"
    assert cfg["extra"]["head_fit"] == "linear" and cfg["extra"]["linear_head"]["C"] == m["linear_head"]["C"]
    assert m["test"]["auroc"] > 0.7 and m["cv"]["pooled"]["auroc"] > 0.6
    sh = m["cv"]["shifted"]["defocus-severe"]  # every out-of-fold eye re-scored under the shift
    assert 0.0 <= sh["auroc"] <= 1.0 and sh["delta_auroc"] == pytest.approx(sh["auroc"] - m["cv"]["pooled"]["auroc"])


def test_cv_shifts_are_checked_up_front():
    from edgeretina.train.options import RunOptions

    with pytest.raises(EdgeRetinaError, match="needs --cv"):
        RunOptions(cv_shifts=("defocus:severe",))
    with pytest.raises(EdgeRetinaError):
        RunOptions(cv=5, cv_shifts=("defocsu:severe",))
