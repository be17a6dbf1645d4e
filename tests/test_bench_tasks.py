"""The benchmark on the other task kinds end to end: DR grading (RetinaMNIST: κ, Δκ, grade / referable flips,
per-grade recall, referable AUROC), ODIR multi-label (macro + per-label AUROC, Δ CI, F1, per-label flips) and
glaucoma + DR multi-task (per head), with small untrained-but-real Keras models and their float32 / int8
.tflite exports run through LiteRT. Accuracy is not the point here (the models are random); the report's shape
and the task-aware retention columns are.

Each runs on a small set in the real on-disk format written from the synthetic generator
(tests/helpers/fakedata.py: no ../shared needed) and, marked ``real_data``, on the real RetinaMNIST / ODIR.
The decision-stability floor is off (its tests: test_bench_shift.py)."""
from __future__ import annotations

import json

import numpy as np
import pytest
from helpers.fakedata import write_mini_odir, write_retinamnist_npz

from edgeretina.benchmarks.harness import run_bench
from edgeretina.benchmarks.robustness import BenchOptions

NO_FLOOR = BenchOptions.make(stability="off")
SOURCES = ["fake", pytest.param("real", marks=pytest.mark.real_data)]


@pytest.fixture(scope="module", params=SOURCES)
def dr_data(request, tmp_path_factory):
    """(RetinaMNIST-format .npz, its test split's size)."""
    if request.param == "real":
        return request.getfixturevalue("shared") / "data" / "retinamnist" / "retinamnist.npz", 400
    return write_retinamnist_npz(tmp_path_factory.mktemp("npz") / "retina.npz", n_test=60), 60


@pytest.fixture(scope="module", params=SOURCES)
def odir_data(request, tmp_path_factory):
    """An ODIR-5K-format folder with at least 120 photos."""
    if request.param == "real":
        return request.getfixturevalue("shared") / "data" / "odir"
    return write_mini_odir(tmp_path_factory.mktemp("odir") / "odir", n_patients=60)


def _tiny_run(root, task, size, fov):
    from edgeretina._keras import keras
    from edgeretina.preprocess import Pipeline
    from edgeretina.run import RunConfig
    from edgeretina.tasks import task_spec

    spec = task_spec(task)
    keras.utils.set_random_seed(0)
    inp = keras.Input((size, size, 3))
    x = keras.layers.Conv2D(8, 3, strides=2, activation="relu")(inp)
    x = keras.layers.Conv2D(16, 3, strides=2, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    out = keras.layers.Dense(spec.n_outputs, activation=spec.activation)(x)
    model = keras.Model(inp, out)
    root.mkdir(parents=True)
    model.save(root / "model.keras")
    RunConfig(task=spec.task.value, kind=spec.kind.value, labels=spec.labels, arch="tiny", input_size=size,
              preprocessing=Pipeline.default(size, "tf", fov=fov).to_json(), positive_index=spec.positive_index,
              output={"activation": spec.activation, "kind": "probabilities"}, threshold=0.3).save(root)
    return root


def _calib_array(run, npz, tmp_path):
    """40 training images of a RetinaMNIST-format .npz through the run's preprocessing (the exporter takes
    preprocessed float arrays or a folder of images)."""
    from edgeretina.preprocess import Pipeline
    from edgeretina.run import RunConfig

    pipe = Pipeline.from_json(RunConfig.load(run).preprocessing)
    with np.load(npz) as z:
        x = np.stack([pipe.apply(im) for im in z["train_images"][:40]]).astype(np.float32)
    np.save(tmp_path / "calib.npy", x)
    return tmp_path / "calib.npy"


def test_dr_grading_report(dr_data, tmp_path):
    from edgeretina.converters import export_model

    data, n_test = dr_data
    run = _tiny_run(tmp_path / "dr", "dr", 32, fov=False)
    export_model(run, ["float32", "int8"], run / "export", calib=str(_calib_array(run, data, tmp_path)),
                 calib_n=40, verify_n=8)
    rep = run_bench([run, run / "export"], str(data), runs=1, warmup=0, timing_images=2, n_boot=50,
                    out=tmp_path / "rep", options=NO_FLOOR)
    assert rep.kind == "multiclass" and rep.dataset["n_images"] == n_test  # the .npz's own test split
    assert set(rep.dataset["classes"]) == {"no DR", "mild", "moderate", "severe", "proliferative"}
    keras_row, tfl, int8 = rep.variants
    assert int8.name == "int8"
    for v in rep.variants:
        assert v.kappa is not None and -1 <= v.kappa <= 1
        assert 0 <= v.auroc <= 1 and v.grade_flip_rate is not None and v.referable_flip_rate is not None
        assert v.depth == 3 and 0 <= v.accuracy <= 1 and list(v.per_class) == list(rep.dataset["classes"])
        assert v.kappa_density == pytest.approx(v.kappa / (v.params / 1e6))
        assert v.referable_flip_rate <= v.grade_flip_rate
    # no BatchNorm to fold; the converter drops the dense layer's all-zero (untrained) bias: 5 weights
    assert keras_row.params == 1477 and tfl.params == 1472
    assert tfl.grade_flip_rate == 0.0 and abs(tfl.delta_auroc) < 1e-6 and tfl.delta_kappa == 0.0
    assert int8.delta_kappa == pytest.approx(int8.kappa - keras_row.kappa)
    lo, hi = int8.delta_kappa_ci95
    assert lo <= int8.delta_kappa <= hi
    d = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert d["variants"][1]["kappa"] == pytest.approx(keras_row.kappa)
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "| κ [95% CI] | Δκ [95% CI] |" in md and "## Per grade" in md
    labels = (tmp_path / "rep" / "labels.csv").read_text().splitlines()
    assert len(labels) == 1 + 3 * 5
    assert (tmp_path / "rep" / "roc.png").stat().st_size > 1000
    assert (tmp_path / "rep" / "ballchart.png").stat().st_size > 1000


def test_multilabel_report(odir_data, tmp_path):
    run = _tiny_run(tmp_path / "odir", "odir", 64, fov=True)
    rep = run_bench([run], str(odir_data), task="odir", split="all", max_images=120, runs=1,
                    warmup=0, timing_images=2, n_boot=50, out=tmp_path / "rep", options=NO_FLOOR)
    (v,) = rep.variants
    assert rep.kind == "multilabel" and rep.dataset["n_images"] == 120
    assert list(v.per_label) == ["N", "D", "G", "C", "A", "H", "M", "O"]
    aucs = [p["auroc"] for p in v.per_label.values() if p.get("auroc") is not None]
    assert v.auroc == pytest.approx(np.mean(aucs))
    assert v.flip_rate == 0.0 and v.delong_p == 1.0
    assert v.f1_micro is not None and v.f1_macro is not None
    assert all(p["flip_rate"] == 0.0 for p in v.per_label.values())
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "Per-label AUROC" in md and "| Macro AUROC [95% CI] | Δ macro AUROC [95% CI] |" in md
    assert "## Per label" in md
    assert (tmp_path / "rep" / "ballchart.png").stat().st_size > 1000


def test_multitask_report_per_head(tmp_path):
    """Glaucoma + DR as two sigmoid heads: the float32 and int8 .tflite through LiteRT, per-head rows."""
    from edgeretina.converters import export_model

    data = write_mini_odir(tmp_path / "odir", n_patients=60)
    run = _tiny_run(tmp_path / "mt", "multitask", 48, fov=True)
    export_model(run, ["float32", "int8"], run / "export", calib=str(data / "images"), calib_n=40, verify_n=8)
    rep = run_bench([run, run / "export"], str(data), task="multitask", split="all", runs=1, warmup=0,
                    timing_images=2, n_boot=50, out=tmp_path / "rep", options=NO_FLOOR)
    assert rep.kind == "multilabel" and len(rep.variants) == 3
    for v in rep.variants:
        assert list(v.per_label) == ["glaucoma", "dr"]
        for head in v.per_label.values():
            assert head["flip_rate"] is not None and head["threshold"] == pytest.approx(0.3)
    int8 = rep.variants[-1]
    assert int8.delta_auroc_ci95 is not None and int8.f1_micro is not None
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "## Per head" in md and "| Head |" in md
    rows = (tmp_path / "rep" / "labels.csv").read_text().splitlines()
    assert len(rows) == 1 + 2 * len(rep.variants)
