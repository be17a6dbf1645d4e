"""Backbone registry and heads: every backbone builds flat with weights=None for every task/head."""
from __future__ import annotations

import numpy as np
import pytest

from edgeretina._keras import keras
from edgeretina.errors import ModelError
from edgeretina.models import BACKBONES, HeadSpec, backbone_layers, build_backbone, build_model, head_layers
from edgeretina.tasks import Task, task_spec

TASKS = [Task.GLAUCOMA, Task.DR, Task.ODIR, Task.MULTITASK, Task.REFERABLE_DR]
HEADS = [None, "gap", "fc:16", "fc:32,16"]


def _check(model, spec, size):
    assert not any(isinstance(l, keras.Model) for l in model.layers), "model must be flat"
    assert model.input_shape == (None, size, size, 3)
    assert model.output_shape == (None, spec.n_outputs)
    x = np.random.default_rng(0).uniform(-1, 1, (2, size, size, 3)).astype("float32")
    p = model(x, training=False).numpy()
    assert p.shape == (2, spec.n_outputs) and np.all((p >= 0) & (p <= 1))
    if spec.activation == "softmax":
        np.testing.assert_allclose(p.sum(1), 1.0, rtol=1e-5)


@pytest.mark.parametrize("i,arch", list(enumerate(BACKBONES)))
def test_every_backbone_builds_flat(i, arch):
    bb = BACKBONES[arch]
    spec = task_spec(TASKS[i % len(TASKS)])
    head = HEADS[i % len(HEADS)]
    size = max(bb.min_size, 32)
    model = build_model(arch, spec, input_size=size, weights=None, head=head)
    _check(model, spec, size)
    assert model.edgeretina["scaling"] == bb.scaling.value
    # scaling lives outside the graph: no Rescaling/Normalization layers
    assert not any(isinstance(l, (keras.layers.Rescaling, keras.layers.Normalization)) for l in model.layers)
    assert model.get_layer(bb.partial_from) in backbone_layers(model)
    assert head_layers(model)[0].name == "head_gap"


COMBOS = ([(t, None) for t in TASKS] + [(t, h) for t in (Task.GLAUCOMA, Task.ODIR) for h in HEADS[1:]]
          + [(Task.DR, "fc:16"), (Task.MULTITASK, "multitask:8"), (Task.GLAUCOMA, "multitask")])


@pytest.mark.parametrize("task,head", COMBOS)
def test_every_task_and_head(task, head):
    spec = task_spec(task)
    if head and head.startswith("multitask") and spec.kind.value != "multilabel":
        with pytest.raises(ModelError, match="multi-label"):
            build_model("mobilenetv2", spec, 32, head=head, alpha=0.35)
        return
    model = build_model("mobilenetv2", spec, 32, head=head, alpha=0.35)
    _check(model, spec, 32)
    names = [l.name for l in model.layers]
    assert names[-2:] == ["head_logits", "head_probs"]
    if head and head.startswith("fc"):
        assert any(isinstance(l, keras.layers.Dropout) and l.rate == 0.5 for l in model.layers)
        assert model.get_layer("head_fc1").kernel_regularizer is not None


def test_multitask_default_head_has_two_branches():
    model = build_model("mobilenetv2", "multitask", 32, alpha=0.35)
    assert model.edgeretina["head"]["type"] == "multitask"
    assert {"head_t0_logit", "head_t1_logit"} <= {l.name for l in model.layers}


def test_unknown_arch_suggests():
    with pytest.raises(ModelError, match=r"unknown architecture 'mobilenet_v5'.*did you mean"):
        build_model("mobilenet_v5", "glaucoma")


def test_input_size_below_minimum():
    with pytest.raises(ModelError, match="below InceptionV3's minimum of 75"):
        build_model("inceptionv3", "glaucoma", input_size=64)


def test_unknown_task_and_head_and_option():
    from edgeretina.errors import EdgeRetinaError

    with pytest.raises(EdgeRetinaError, match="unknown task 'cataract'"):
        build_model("mobilenetv2", "cataract", 32)
    with pytest.raises(ModelError, match="unknown head"):
        HeadSpec.parse("mlp:3", task_spec("glaucoma"))
    with pytest.raises(ModelError, match="does not take option"):
        build_model("vgg16", "glaucoma", 32, alpha=0.5)


def test_weights_file_of_wrong_architecture(tmp_path):
    other = build_backbone("mobilenet", 32, None, alpha=0.25)
    path = tmp_path / "mobilenet_v1.h5"
    other.save_weights(str(path))
    with pytest.raises(ModelError, match=r"mobilenet_v1.h5: not MobileNetV2 \(no-top\) weights"):
        build_model("mobilenetv2", "glaucoma", 32, weights=str(path), alpha=0.35)
    with pytest.raises(ModelError, match="weights file not found"):
        build_model("mobilenetv2", "glaucoma", 32, weights=str(tmp_path / "missing.h5"))


def test_local_weights_file_roundtrip(tmp_path):
    bb = build_backbone("mobilenetv2", 32, None, alpha=0.35)
    path = tmp_path / "bb.h5"
    bb.save_weights(str(path))
    m = build_model("mobilenetv2", "glaucoma", 32, weights=str(path), alpha=0.35)
    np.testing.assert_array_equal(m.get_layer("Conv1").get_weights()[0], bb.get_layer("Conv1").get_weights()[0])


def test_imagenet_mobilenetv2_offline_fallback(shared, tmp_path, monkeypatch):
    """ImageNet weights at 96 px come from the cached 224 file (conv weights are size-independent)."""
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    with pytest.warns(UserWarning, match="no cached MobileNetV2 ImageNet weights for 96 px"):
        m = build_model("mobilenetv2", "glaucoma", 96, weights="imagenet")
    ref = keras.applications.MobileNetV2(include_top=False, input_shape=(224, 224, 3), weights=str(
        shared / "weights" / "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5"))
    np.testing.assert_array_equal(m.get_layer("Conv_1").get_weights()[0], ref.get_layer("Conv_1").get_weights()[0])
    assert m.edgeretina["weights"] == "imagenet"
