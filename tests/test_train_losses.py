"""Losses: ExpUWBCE follows its formula; class weighting wiring."""
from __future__ import annotations

import math

import numpy as np
import pytest

from edgeretina.errors import EdgeRetinaError
from edgeretina.tasks import task_spec
from edgeretina.train.losses import exp_uwbce_numpy, make_exp_uwbce, make_loss


def test_exp_uwbce_hand_values():
    # y=1: W1·(1/ŷ − 1); y=0: −W2·log(1−ŷ)
    assert exp_uwbce_numpy([1.0], [0.5], w1=2.0) == pytest.approx(2.0)
    assert exp_uwbce_numpy([0.0], [0.5], w2=3.0) == pytest.approx(-3 * math.log(0.5))
    assert exp_uwbce_numpy([1.0], [1 - 1e-9]) == pytest.approx(0.0, abs=1e-6)


def test_exp_uwbce_keras_matches_formula():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, (16, 2)).astype("float32")
    p = rng.uniform(0.05, 0.95, (16, 2)).astype("float32")
    w1, w2 = np.array([1.5, 3.0]), np.array([1.0, 0.5])
    loss = make_exp_uwbce(w1, w2)
    got = float(loss(y, p).numpy())
    ref = np.mean(w1 * (np.exp(-y * np.log(p)) - 1) - w2 * (1 - y) * np.log(1 - p))
    assert got == pytest.approx(ref, rel=1e-5)


def test_exp_uwbce_on_binary_softmax_column():
    spec = task_spec("glaucoma")
    loss, cw = make_loss("exp-uwbce", spec)
    y = np.array([1, 0, 1])
    probs = np.array([[0.3, 0.7], [0.8, 0.2], [0.6, 0.4]], "float32")
    assert cw is None
    assert float(loss(y, probs).numpy()) == pytest.approx(exp_uwbce_numpy(y, probs[:, 1]), rel=1e-5)


def test_ce_and_weighted_ce():
    spec = task_spec("glaucoma")
    loss, cw = make_loss("weighted-ce", spec, {0: 0.55, 1: 5.0})
    assert cw == {0: 0.55, 1: 5.0}
    y, p = np.array([1, 0]), np.array([[0.25, 0.75], [0.9, 0.1]], "float32")
    assert float(loss(y, p).numpy()) == pytest.approx(-(np.log(0.75) + np.log(0.9)) / 2, rel=1e-5)
    assert make_loss("ce", spec, {0: 1.0, 1: 9.0})[1] is None
    ml, _ = make_loss("weighted-ce", task_spec("multitask"), {0: 4.0, 1: 1.0})
    yt, pp = np.array([[1.0, 0.0]]), np.array([[0.5, 0.5]], "float32")
    assert float(np.mean(ml(yt, pp).numpy())) == pytest.approx((4 * -np.log(0.5) + -np.log(0.5)) / 2, rel=1e-5)


def test_bad_loss_names():
    with pytest.raises(EdgeRetinaError, match="unknown loss 'focal'"):
        make_loss("focal", task_spec("glaucoma"))
    with pytest.raises(EdgeRetinaError, match="needs a binary or multi-label task"):
        make_loss("exp-uwbce", task_spec("dr"))
