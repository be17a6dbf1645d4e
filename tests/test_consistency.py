"""The linear head's consistency penalty (issue 18, ``train --consistency``): the transform really is the
penalty wᵀ(I + λS̃)w, the fitted Keras head changes its logit less under the nuisance it was penalised along
(relative to its logit spread, so not by shrinking), ``auto`` picks a λ > 0 when that costs no AUROC, the
re-acquisition copies are benign and seeded, and bad values are refused in one line."""
from __future__ import annotations

import numpy as np
import pytest

from edgeretina.errors import EdgeRetinaError


D_FEAT = 24


def _model():
    """A real Keras model of the edgeretina head's shape (``head_gap`` → Dense ``head_logits`` → softmax) on
    a tiny 24-channel input, so the fits take milliseconds, not the 1280-d backbone's seconds."""
    from edgeretina._keras import keras

    inp = keras.Input((2, 2, D_FEAT))
    gap = keras.layers.GlobalAveragePooling2D(name="head_gap")(inp)
    logits = keras.layers.Dense(2, name="head_logits")(gap)
    return keras.Model(inp, keras.layers.Activation("softmax", name="head_probs")(logits))


def _problem(n=400, d=D_FEAT, seed=0):
    """One latent disease signal read by features 2-3 and again, identically, by 0-1; only 0-1 carry a large
    re-acquisition nuisance — a steady head can lean on 2-3 at no cost."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    f = rng.normal(0.0, 1.0, (n, d))
    f[:, 2:4] = (1.5 * y + rng.normal(0.0, 1.0, n))[:, None] + rng.normal(0.0, 0.1, (n, 2))
    f[:, :2] = f[:, 2:4]  # the same reading: what 0-1 add, 2-3 already have

    def delta(m):
        D = rng.normal(0.0, 0.05, (m, d))
        D[:, :2] += rng.normal(0.0, 1.5, (m, 2))
        return D
    return f.astype(np.float32), y, delta


def _head_logit(model, feats):
    from edgeretina.train.features import head_model_of

    p = head_model_of(model).predict(np.asarray(feats, np.float32), verbose=0)[:, 1].astype(np.float64)
    p = np.clip(p, 1e-7, 1 - 1e-7)
    return np.log(p / (1 - p))


def test_transform_is_the_penalty():
    """λ = 0 is the plain L2 fit; M^(-1/2) M M^(-1/2) = I for the basis' M (exact when the nuisance has rank
    below the basis), so the L2 fit of v on Z M^(-1/2) is the fit of w = M^(-1/2) v under wᵀMw; the
    penalised fit puts less weight along the nuisance (scale-free measure)."""
    from sklearn.linear_model import LogisticRegression

    from edgeretina.train.linear_head import _Basis, _solve_consistent

    rng = np.random.default_rng(3)
    D = rng.normal(size=(200, 5)) @ rng.normal(size=(5, 24))  # rank 5 < the basis rank
    basis = _Basis.of(D)
    S = D.T @ D * 24 / np.sum(D * D)
    assert basis.rho == pytest.approx(0.0, abs=1e-9) and basis.e.sum() == pytest.approx(24.0)
    H = basis.half_inverse(np.eye(24), 7.0)
    np.testing.assert_allclose(H @ (np.eye(24) + 7.0 * S) @ H, np.eye(24), atol=1e-8)

    f, y, delta = _problem(n=300)
    Z = (f - f.mean(0)) / f.std(0)
    D = delta(300)
    basis = _Basis.of(D)
    plain = LogisticRegression(C=0.05, max_iter=5000, class_weight="balanced").fit(Z, y)
    np.testing.assert_allclose(_solve_consistent(Z, y, 0.05, "balanced", basis, 0.0).coef_, plain.coef_)
    w = _solve_consistent(Z, y, 0.05, "balanced", basis, 30.0).coef_[0]
    quad = lambda v: np.mean((D @ v) ** 2) / np.var(Z @ v)  # noqa: E731
    assert quad(w) < 0.2 * quad(plain.coef_[0])


def test_penalised_head_is_steadier_under_the_nuisance():
    from edgeretina.tasks import task_spec
    from edgeretina.train.linear_head import LinearHeadOptions, Nuisance, fit_linear_head

    spec = task_spec("glaucoma")
    model = _model()
    f, y, delta = _problem()
    nuis = Nuisance(delta(len(y)), np.arange(len(y)))
    f_new, _, _ = _problem(n=300, seed=5)
    d_new = delta(len(f_new))
    rel, quad = {}, {}
    for lam in (0.0, 30.0):
        fit = fit_linear_head(model, spec, f, y, None, LinearHeadOptions(cs=(1e-2,), lambdas=(lam,)), nuis)
        assert fit.lam == lam
        a, b = _head_logit(model, f_new), _head_logit(model, f_new + d_new)
        rel[lam] = np.sqrt(np.mean((b - a) ** 2)) / np.std(a)  # scale-free: shrinking w does not help
        w = model.get_layer("head_logits").get_weights()[0][:, 1].astype(np.float64)
        quad[lam] = float(np.mean((nuis.delta @ w) ** 2) / np.var(f.astype(np.float64) @ w))
    assert rel[30.0] < 0.5 * rel[0.0] and quad[30.0] < 0.25 * quad[0.0]


def test_auto_chooses_a_penalty_that_keeps_auroc():
    from edgeretina.tasks import task_spec
    from edgeretina.train.consistency import DEFAULT_LAMBDAS, choose_lambda
    from edgeretina.train.linear_head import LinearHeadOptions, Nuisance, fit_linear_head

    spec = task_spec("glaucoma")
    model = _model()
    f, y, delta = _problem(seed=2)
    nuis = Nuisance(delta(2 * len(y)), np.tile(np.arange(len(y)), 2))
    fit = fit_linear_head(model, spec, f, y, np.arange(len(y)) // 2,
                          LinearHeadOptions(cs=(1e-2,), inner_k=3, lambdas=DEFAULT_LAMBDAS, auroc_tolerance=0.01), nuis)
    table = fit.consistency
    assert set(table) == {f"{v:g}" for v in DEFAULT_LAMBDAS} and fit.lam > 0
    assert table[f"{fit.lam:g}"]["relative_nuisance"] < 0.75 * table["0"]["relative_nuisance"]
    assert table[f"{fit.lam:g}"]["inner_auroc"] >= table["0"]["inner_auroc"] - 0.01
    # the rule itself: an AUROC loss beyond the tolerance disqualifies, ties go to the smaller λ
    assert choose_lambda({0.0: 0.80, 3.0: 0.799, 10.0: 0.70}, {0.0: 0.3, 3.0: 0.2, 10.0: 0.1}, 0.005) == 3.0
    assert choose_lambda({0.0: 0.80, 3.0: 0.799, 10.0: 0.70}, {0.0: 0.3, 3.0: 0.2, 10.0: 0.1}) == 0.0
    assert choose_lambda({0.0: 0.80, 1.0: 0.80, 3.0: 0.80}, {0.0: 0.3, 1.0: 0.2, 3.0: 0.2}) == 1.0


def test_reacquire_is_benign_and_seeded():
    from edgeretina.preprocess import fov_mask
    from edgeretina.train.consistency import reacquire

    img = np.zeros((120, 160, 3), np.uint8)
    import cv2

    cv2.circle(img, (80, 60), 55, (180, 90, 40), -1)
    cv2.circle(img, (100, 55), 9, (250, 220, 160), -1)
    outs = [reacquire(img, np.random.default_rng([0, 5000, i])) for i in range(8)]
    again = reacquire(img, np.random.default_rng([0, 5000, 3]))
    np.testing.assert_array_equal(outs[3], again)
    for o in outs:
        assert o.shape == img.shape and o.dtype == np.uint8
        inside = fov_mask(img) & fov_mask(o)
        assert np.abs(o.astype(int) - img.astype(int))[inside > 0].mean() < 12  # small, benign
    assert any(not np.array_equal(o, img) for o in outs)


@pytest.mark.parametrize("text, ok", [("off", True), ("auto", True), ("30", True), ("0", True), ("-1", False),
                                      ("lots", False), ("nan", False)])
def test_option_values(text, ok):
    from edgeretina.train.consistency import Consistency

    if ok:
        c = Consistency.parse(text)
        assert str(c) in (text, f"{float(text):g}" if text not in ("off", "auto") else text)
    else:
        with pytest.raises(EdgeRetinaError, match="--consistency"):
            Consistency.parse(text)


def test_consistency_needs_the_linear_head():
    from edgeretina.train.options import RunOptions

    with pytest.raises(EdgeRetinaError, match="needs --head-fit linear"):
        RunOptions(consistency="auto")
    assert RunOptions(consistency="auto", head_fit="linear").consistency.on
    assert not RunOptions(consistency="0", head_fit="linear").consistency.on
    RunOptions(cv=5, cv_shifts=("jpeg-95", "shift-2px", "defocus:severe"))  # benign names take no level
