"""Two-phase training on real data: cached-feature warm-up equals through-backbone warm-up; a tiny real run
trains, early-stops and resumes after an interruption; grid search resumes."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from edgeretina._keras import keras
from edgeretina.data import load_arrays, open_dataset
from edgeretina.models import build_model, head_layers
from edgeretina.preprocess import Pipeline
from edgeretina.train import Arrays, TrainConfig, Trainee, apply_freezing, make_loss, train_run, warmup
from edgeretina.train.freezing import FreezePolicy


@pytest.fixture(scope="module")
def retina_arrays(shared):
    ds = open_dataset(shared / "data" / "retinamnist" / "retinamnist.npz", "referable-dr")
    parts = ds.split("predefined")
    pipe = Pipeline.default(32, "tf", fov=False)
    tr = load_arrays(parts["train"][:256], pipe, ds.spec)
    va = load_arrays(parts["val"], pipe, ds.spec)
    return ds.spec, Arrays(tr[0], tr[1], va[0], va[1])


def test_cached_warmup_equals_through_backbone(retina_arrays):
    spec, data = retina_arrays
    keras.utils.set_random_seed(0)
    a = build_model("mobilenetv2", spec, 32, None, alpha=0.35)
    b = build_model("mobilenetv2", spec, 32, None, alpha=0.35)
    b.set_weights(a.get_weights())
    cfg = TrainConfig(epochs_warmup=3, lr_warmup=0.05, batch_size=32, patience=100)
    loss, _ = make_loss("ce", spec)
    ra = warmup(Trainee(a, spec, loss), data, cfg, cached=True)
    rb = warmup(Trainee(b, spec, loss), data, cfg, cached=False)
    la = [r["loss"] for r in ra.history]
    lb = [r["loss"] for r in rb.history]
    np.testing.assert_allclose(la, lb, rtol=1e-4)
    assert la[0] != la[-1]  # it trained
    for x, y in zip(head_layers(a), head_layers(b)):
        for wa, wb in zip(x.get_weights(), y.get_weights()):
            np.testing.assert_allclose(wa, wb, rtol=1e-4, atol=1e-5)
    # the backbone did not move in either
    np.testing.assert_array_equal(a.get_layer("Conv1").get_weights()[0], b.get_layer("Conv1").get_weights()[0])


def test_freezing_policies():
    m = build_model("mobilenetv2", "glaucoma", 32, None, alpha=0.35)
    start = apply_freezing(m, "partial")
    assert m.get_layer("block_13_expand").trainable and not m.get_layer("block_12_expand").trainable
    assert not m.get_layer("block_13_expand_BN").trainable  # BN stays in inference mode
    assert m.get_layer("head_logits").trainable and start is not None
    apply_freezing(m, "partial:0.5")
    n_tr = sum(l.trainable for l in m.layers if l.weights and not l.name.startswith("head_"))
    assert 0 < n_tr < len([l for l in m.layers if l.weights])
    apply_freezing(m, "all")
    assert m.get_layer("Conv1").trainable
    apply_freezing(m, "frozen")
    assert not m.get_layer("Conv1").trainable and m.get_layer("head_logits").trainable
    with pytest.raises(Exception, match="no backbone layer named 'nope'"):
        apply_freezing(m, "partial:nope")
    with pytest.raises(Exception, match="unknown freezing policy"):
        FreezePolicy.parse("some")


class _InterruptAt(keras.callbacks.Callback):
    """Simulates Ctrl-C after the n-th epoch (counted over both phases)."""

    def __init__(self, n):
        super().__init__()
        self.n, self.seen = n, 0

    def on_epoch_end(self, epoch, logs=None):
        self.seen += 1
        if self.seen == self.n:
            raise KeyboardInterrupt


def test_tiny_real_run_early_stops_and_resumes(shared, tmp_path):
    data = shared / "data" / "retinamnist" / "retinamnist.npz"
    out = tmp_path / "run"
    # warm-up runs exactly 3 epochs (patience 50); fine-tuning is interrupted after its 2nd epoch
    cfg = TrainConfig(epochs_warmup=3, epochs_finetune=40, lr_warmup=0.05, lr_finetune=0.05, batch_size=32,
                      patience=50)
    kw = dict(weights=None, input_size=32, arch_options={"alpha": 0.35}, config=cfg, max_train=300, n_boot=50)
    with pytest.raises(KeyboardInterrupt):
        train_run(data, "dr", "mobilenetv2", out, callbacks=[_InterruptAt(5)], **kw)
    state = json.loads((out / "checkpoint" / "finetune_state.json").read_text())
    assert state["epoch"] == 2 and not (out / "metrics.json").exists()
    logs = []
    cfg2 = cfg.with_(patience=2)  # resume with early stopping that will trigger
    train_run(data, "dr", "mobilenetv2", out, log=logs.append, **{**kw, "config": cfg2})
    assert any("[finetune] resuming after epoch 2" in line for line in logs)
    m = json.loads((out / "metrics.json").read_text())
    ft = m["phases"][1]
    assert ft["name"] == "finetune" and ft["resumed_from_epoch"] == 2
    assert ft["stopped_early"] and ft["epochs_run"] < 40
    rows = list(csv.DictReader(open(out / "history.csv")))
    assert [int(r["epoch"]) for r in rows if r["phase"] == "finetune"] == list(range(1, ft["epochs_run"] + 1))
    assert [int(r["epoch"]) for r in rows if r["phase"] == "warmup"] == [1, 2, 3]
    assert "quadratic_kappa" in m["test"] and "per_class_recall" in m["test"]
    assert not (out / "checkpoint").exists()
    with pytest.raises(Exception, match="already holds a finished run"):
        train_run(data, "dr", "mobilenetv2", out, **kw)


def test_grid_search_resumes(shared, tmp_path):
    data = shared / "data" / "retinamnist" / "retinamnist.npz"
    out = tmp_path / "grid"
    cfg = TrainConfig(epochs_warmup=2, epochs_finetune=1, batch_size=32, patience=5)
    kw = dict(weights=None, input_size=32, arch_options={"alpha": 0.35}, config=cfg, max_train=100, max_test=100, n_boot=20,
              grid=True, grid_space={"lr": [1e-4, 1e-2], "batch_size": [32]})
    first = []
    with pytest.raises(KeyboardInterrupt):  # stop after the second trial's fine-tune epoch
        train_run(data, "referable-dr", "mobilenetv2", out, log=first.append, callbacks=[_InterruptAt(4)], **kw)
    assert sum("val_auroc" in line for line in first) == 1  # one trial finished
    logs = []
    train_run(data, "referable-dr", "mobilenetv2", out, log=logs.append, **kw)
    assert any("warm-up weights restored" in line for line in logs)
    assert sum(": val_auroc" in line for line in logs) == 1  # only the unfinished trial ran again
    table = list(csv.DictReader(open(out / "grid_results.csv")))
    assert len(table) == 2 and {(float(r["lr"]), int(r["batch_size"])) for r in table} == {(1e-4, 32), (1e-2, 32)}
    m = json.loads((out / "metrics.json").read_text())
    assert m["grid"]["objective"] == "val_auroc" and m["grid"]["best"]["val_auroc"] == max(
        float(r["val_auroc"]) for r in table)


def test_multitask_run_with_exp_uwbce(shared, tmp_path):
    """ODIR glaucoma + DR as two sigmoid outputs, trained with the exponential uneven-weight BCE."""
    out = train_run(shared / "data" / "odir", "multitask", "mobilenetv2", tmp_path / "mt", weights=None,
                    input_size=32, arch_options={"alpha": 0.35}, n_boot=0, max_train=96, max_val=48, max_test=48,
                    config=TrainConfig(epochs_warmup=2, epochs_finetune=1, batch_size=16, loss="exp-uwbce"))
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["kind"] == "multilabel" and cfg["labels"] == ["glaucoma", "dr"]
    # per-label thresholds, chosen on the validation split (Youden), one per head
    assert isinstance(cfg["threshold"], list) and len(cfg["threshold"]) == 2
    assert all(0.0 <= t <= 1.0 for t in cfg["threshold"])
    assert cfg["head"]["type"] == "multitask" and cfg["output"]["activation"] == "sigmoid"
    m = json.loads((out / "metrics.json").read_text())
    assert set(m["test"]["per_label"]) == {"glaucoma", "dr"} and "macro_auroc" in m["test"]
    assert (out / "roc.png").stat().st_size > 1000
