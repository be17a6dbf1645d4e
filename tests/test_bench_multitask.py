"""The multi-task study's pieces (benchmarks/multitask*.py) on small real objects: heads trained by the
recipe's warm-up on cached features of a tiny untrained MobileNetV2 (32 px, no weights), the ExpUWBCE weight
chosen on validation only, paired DeLong comparisons on the test eyes, a run dir that ``open_model`` reads
(per-head thresholds as a list), and the page's target check. The real-data run is
``python -m edgeretina.benchmarks.multitask`` (docs/benchmarks/multitask_odir.md)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from edgeretina.benchmarks import multitask as mt
from edgeretina.benchmarks import multitask_heads as mh
from edgeretina.benchmarks import multitask_report as mr
from edgeretina.inference.modelfile import open_model
from edgeretina.run import RunConfig

TINY = mh.Backbone("mobilenetv2", 32, None)
FAST = (0.3, 3.0)  # penalties searched (validation)
ONE = (3.0,)


def _feats(seed: int = 0, dim: int = 1280) -> dict[str, np.ndarray]:
    """Separable synthetic pooled features: glaucoma ~8 %, DR ~30 %; each label shifts its own 300 features."""
    rng = np.random.default_rng(seed)
    out = {}
    for k, n in (("train", 400), ("val", 120), ("test", 160)):
        y = np.stack([rng.random(n) < 0.08, rng.random(n) < 0.3], axis=1).astype(np.float32)
        y[0] = (1, 1)
        f = rng.random((n, dim)).astype(np.float32)
        f[:, :300] += 0.5 * y[:, :1]
        f[:, 300:600] += 0.5 * y[:, 1:]
        out[f"f_{k}"], out[f"y_{k}"] = f, y
    return out


@pytest.fixture(scope="module")
def feats():
    return _feats()


@pytest.fixture(scope="module")
def trained(feats):
    return {"multi_bce": mh.train_head(mh.Head("multi_bce", (0, 1), "ce"), feats, TINY, FAST),
            "multi_expuwbce": mh.train_head(mh.Head("multi_expuwbce", (0, 1), "exp-uwbce", (3.0, 1.5)), feats,
                                            TINY, ONE),
            "single_glaucoma": mh.train_head(mh.Head("single_glaucoma", (0,), "ce"), feats, TINY, ONE)}


def test_heads_train_on_features_and_score_each_task(trained, feats):
    multi, single = trained["multi_bce"], trained["single_glaucoma"]
    assert multi.model.output.shape[-1] == 2 and single.model.output.shape[-1] == 2
    assert set(multi.test) == {"glaucoma", "dr"} and set(single.test) == {"glaucoma"}
    assert single.head.spec.kind.value == "binary" and multi.head.spec.task.value == "multitask"
    for t, s in multi.test.items():
        assert s.shape == (160,) and np.all((s >= 0) & (s <= 1))
        assert 0.0 <= multi.thresholds[t] <= 1.0
    assert mh.val_macro_auroc(multi, feats["y_val"]) > 0.6  # the shifted features are learnable
    assert set(multi.lam) == {"glaucoma", "dr"} and set(multi.lam.values()) <= set(FAST)
    assert multi.info["grid"][0]["iterations"] >= 1 and trained["multi_expuwbce"].head.loss == "exp-uwbce"


def test_folded_head_gives_the_fitted_probabilities(feats):
    """Standardisation folded into ``head_logits``: the Keras head on raw features = the fitted logits."""
    for head in (mh.Head("m", (0, 1), "exp-uwbce", (2.0, 1.0)), mh.Head("s", (1,), "ce")):
        model = mh.build_model("mobilenetv2", head.spec, 32, None, "gap")
        mu, sd = feats["f_train"].mean(0), feats["f_train"].std(0)
        W, b, nit = mh.fit_logits(head, (feats["f_train"] - mu) / sd, feats["y_train"], 1.0, maxiter=50)
        mh.fold_into(model, head, W, b, mu, sd)
        got = mh.task_scores(head, mh.F.head_model_of(model).predict(feats["f_val"], verbose=0))
        want = 1.0 / (1.0 + np.exp(-(((feats["f_val"] - mu) / sd) @ W + b)))
        for i, t in enumerate(got):
            np.testing.assert_allclose(got[t], want[:, i], atol=2e-5)
        assert nit >= 1


def test_positive_weights_and_alpha_choice_use_validation_only(feats):
    r = mh.positive_ratio(feats["y_train"])
    assert r[0] > r[1] > 1.0
    assert mh.w1_of(0.0, r, (0, 1)) == (1.0, 1.0) and mh.w1_of(1.0, r, (1,)) == (pytest.approx(r[1]),)
    no_test = {k: v for k, v in feats.items() if not k.endswith("_test")}
    best, rows, models = mh.choose_alpha(no_test, TINY, FAST, alphas=(0.0, 1.0), say=lambda m: None)
    assert best in (0.0, 1.0) and [r["alpha"] for r in rows] == [0.0, 1.0]
    assert best == max(rows, key=lambda r: (round(r["val_macro_auroc"], 6), -r["alpha"]))["alpha"]
    assert all(m.test == {} for m in models.values())  # no test features given: none scored


def test_paired_comparisons_per_shared_task(trained, feats):
    out = mh.score_heads(trained, feats["y_test"], [("E − B", "multi_expuwbce", "multi_bce"),
                                                    ("M − S", "multi_bce", "single_glaucoma")], n_boot=50)
    assert set(out["heads"]["single_glaucoma"]) == {"glaucoma"}
    lo, hi = out["heads"]["multi_bce"]["dr"]["ci95"]
    assert lo <= out["heads"]["multi_bce"]["dr"]["auroc"] <= hi
    tasks = [(p["comparison"], p["task"]) for p in out["pairs"]]
    assert tasks == [("E − B", "glaucoma"), ("E − B", "dr"), ("M − S", "glaucoma")]
    same = mh.paired(feats["y_test"][:, 0], trained["multi_bce"].test["glaucoma"],
                     trained["multi_bce"].test["glaucoma"])
    assert same["delta"] == 0.0 and same["p"] == 1.0


def test_groups_on_two_sides_counts_leaks():
    g = lambda *ids: np.array(ids)  # noqa: E731
    assert mt.groups_on_two_sides({"group_train": g("a", "b"), "group_val": g("c"), "group_test": g("d")}) == 0
    assert mt.groups_on_two_sides({"group_train": g("a", "b"), "group_val": g("b"), "group_test": g("a")}) == 2


def test_run_dir_holds_per_head_thresholds(trained, tmp_path):
    run = mt.write_run(trained["multi_bce"], tmp_path / "run", {"path": "odir", "split": {"scheme": "70/10/20"}},
                       "test")
    cfg = RunConfig.load(run)
    assert cfg.task == "multitask" and cfg.kind == "multilabel"
    assert cfg.threshold == [trained["multi_bce"].thresholds["glaucoma"], trained["multi_bce"].thresholds["dr"]]
    assert cfg.extra["loss"]["name"] == "ce"
    single = mt.write_run(trained["single_glaucoma"], tmp_path / "single", {}, "test")
    m = open_model(single)
    assert m.config.spec.labels == ("no glaucoma", "glaucoma") and isinstance(m.config.threshold, float)


def _heads_json(delta_g: float) -> dict:
    pair = lambda c, a, b, t, d: {"comparison": c, "a": a, "b": b, "task": t, "delta": d,  # noqa: E731
                                  "ci95": [d - 0.02, d + 0.02], "p": 0.5}
    auc = {"auroc": 0.9, "ci95": [0.85, 0.95]}
    return {"chosen": "multi_expuwbce", "val_macro_auroc": {"multi_bce": 0.8, "multi_expuwbce": 0.81},
            "alpha_rows": [{"alpha": 0.5, "w1": [4.0, 1.6], "val_auroc_glaucoma": 0.8, "val_auroc_dr": 0.8,
                            "val_macro_auroc": 0.8, "lambda": {"glaucoma": 1.0, "dr": 0.3}}],
            "heads": {k: {"w1": None, "lambda": {"glaucoma": 1.0}} for k in mr.HEAD_NAMES},
            "test": {"heads": {"multi_bce": {"glaucoma": auc, "dr": auc},
                               "multi_expuwbce": {"glaucoma": auc, "dr": auc},
                               "single_glaucoma": {"glaucoma": auc}, "single_dr": {"dr": auc}},
                     "pairs": [pair("E", "multi_expuwbce", "multi_bce", "glaucoma", 0.01),
                               pair("M", "multi_expuwbce", "single_glaucoma", "glaucoma", delta_g),
                               pair("M", "multi_expuwbce", "single_dr", "dr", 0.0)]}}


ONE_TWO = {"size_bytes": {"multi": 2_700_000, "glaucoma": 2_700_000, "dr": 2_700_000},
           "auroc": {"multi": {"glaucoma": 0.90, "dr": 0.80}, "glaucoma": {"glaucoma": 0.905},
                     "dr": {"dr": 0.80}},
           "p50_ms": {"one_multitask": 2.0, "two_single_task": 4.0}}


@pytest.mark.parametrize("delta_g, met", [(-0.005, True), (-0.02, False)])
def test_targets_read_the_paired_differences(delta_g, met):
    heads = _heads_json(delta_g)
    tg = mr.targets(heads, ONE_TWO, 600.0)
    assert [t["met"] for t in tg] == [met, True, True, True]
    assert "glaucoma" in tg[0]["measured"] and "5.40" in tg[2]["measured"]
    lines = mr.heads_table(heads) + mr.pairs_table(heads) + mr.alpha_table(heads) + mr.one_vs_two_table(ONE_TWO)
    assert any("(shipped)" in ln for ln in lines) and json.dumps(tg)


def test_summary_reads_the_bench_rows():
    row = lambda name, d, f: {"name": name, "device": "cpu",  # noqa: E731
                              "per_label": {"glaucoma": {"delta_auroc": d, "flip_rate": f},
                                            "dr": {"delta_auroc": 2 * d, "flip_rate": 2 * f}}}
    lines = mr.summary_lines([row("fp16", -0.001, 0.01), row("int8", -0.01, 0.1), row("int8-guard", 0, 0.005)], {
        **ONE_TWO, "p50_ms": {"one_multitask": 2.0, "two_single_task": 4.0}})
    assert "dr head most" in lines[0] and "flips ≤ 1.0 % per head" in lines[0] and "0.50× their size" in lines[0]
    assert mr.summary_lines([row("fp16", 0, 0)], ONE_TWO) == []
