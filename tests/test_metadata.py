"""Metadata embedded in the .tflite flatbuffer reads back; files without it are refused."""
from __future__ import annotations

import numpy as np
import pytest

from edgeretina.converters.metadata import embed_metadata, metadata_from_bytes, read_metadata
from edgeretina.errors import ModelError


@pytest.fixture(scope="module")
def plain_tflite():
    from edgeretina._keras import keras, tf

    inp = keras.Input((8, 8, 3))
    out = keras.layers.Dense(2, activation="softmax")(keras.layers.GlobalAveragePooling2D()(inp))
    return bytes(tf.lite.TFLiteConverter.from_keras_model(keras.Model(inp, out)).convert())


def test_round_trip_and_model_still_runs(plain_tflite, tmp_path):
    from ai_edge_litert.interpreter import Interpreter

    payload = {"schema": "edgeretina.run/1", "task": "glaucoma", "labels": ["normal", "glaucoma"],
               "threshold": 0.0625, "export": {"variant": "float32", "ünïcode": "✓"}}
    buf = embed_metadata(plain_tflite, payload)
    p = tmp_path / "m.tflite"
    p.write_bytes(buf)
    assert read_metadata(p) == payload
    it = Interpreter(model_path=str(p))
    it.allocate_tensors()
    it.set_tensor(it.get_input_details()[0]["index"], np.ones((1, 8, 8, 3), np.float32))
    it.invoke()
    assert it.get_tensor(it.get_output_details()[0]["index"]).sum() == pytest.approx(1.0, abs=1e-5)


def test_embedding_twice_replaces(plain_tflite):
    buf = embed_metadata(embed_metadata(plain_tflite, {"a": 1}), {"a": 2})
    assert metadata_from_bytes(buf) == {"a": 2}


def test_missing_metadata_refused(plain_tflite, tmp_path):
    p = tmp_path / "plain.tflite"
    p.write_bytes(plain_tflite)
    with pytest.raises(ModelError, match="no 'edgeretina' metadata"):
        read_metadata(p)


@pytest.mark.parametrize("content", [b"", b"not a model at all", b"\x00" * 64])
def test_not_a_tflite_refused(tmp_path, content):
    p = tmp_path / "x.tflite"
    p.write_bytes(content)
    with pytest.raises(ModelError, match="x.tflite"):
        read_metadata(p)


def test_missing_file(tmp_path):
    with pytest.raises(ModelError, match="no such"):
        read_metadata(tmp_path / "nope.tflite")
