"""A fundus classifier made *outside* edgeretina's builders, in every format ``edgeretina import`` takes
(issue 19): a small VGG-style tf_keras CNN (two strided 3×3 convolutions, global average pooling, 2-way
softmax) trained for a few seconds on the embedded synthetic-fundus set at 64 px with the ``tf`` input
convention ([−1, 1]), saved as a Keras 2 ``.h5``, a TensorFlow SavedModel, a float ``.tflite`` (TF converter)
and, when Keras 3 is installed, a Keras 3 ``.keras`` holding the same weights. tests/test_import.py and the
worked example of docs/import.md use it (``python tests/helpers/foreign.py OUT_DIR``)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

SIZE = 64
SCALING = "tf"
DATA = "synthetic:n=200,size=96,seed=11"  # training images
EPOCHS = 10
SEED = 0


def arrays(spec: str, n: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Images of a dataset spec through the model's input convention (fov crop, pad, resize, tf scaling)."""
    from edgeretina.data import load_arrays, open_dataset
    from edgeretina.preprocess import Pipeline

    ds = open_dataset(spec, "glaucoma")
    recs = ds.records[:n] if n else ds.records
    X, y = load_arrays(recs, Pipeline.default(SIZE, SCALING))
    return np.asarray(X, np.float32), np.asarray(y)


def vggish(layers, inp, dense_act="softmax", width=2):
    """The CNN, built with ``layers`` = tf_keras or Keras 3 ``keras.layers``."""
    x = layers.Conv2D(16, 3, strides=2, activation="relu", name="conv1")(inp)
    x = layers.Conv2D(32, 3, strides=2, activation="relu", name="conv2")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    return layers.Dense(width, activation=dense_act, name="head")(x)


def keras3():
    """The Keras 3 package, or None when it is not installed."""
    try:
        import keras as k3
    except ImportError:
        return None
    return k3 if k3.__version__.split(".")[0] == "3" else None


def make_foreign_models(out: str | Path) -> dict[str, Path]:
    """Train the CNN and save it in every format under ``out`` → ``{"h5", "savedmodel", "tflite"[, "keras3"]}``
    paths; the tf_keras model itself is returned as ``"model"``."""
    from edgeretina._keras import keras, tf

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    X, y = arrays(DATA)
    keras.utils.set_random_seed(SEED)
    inp = keras.Input((SIZE, SIZE, 3), name="image")
    m = keras.Model(inp, vggish(keras.layers, inp), name="paper_cnn")
    m.compile(keras.optimizers.Adam(3e-3), "sparse_categorical_crossentropy")
    m.fit(X, y, epochs=EPOCHS, batch_size=32, verbose=0)
    paths = {"h5": out / "paper_cnn.h5", "savedmodel": out / "paper_cnn_savedmodel", "tflite": out / "paper_cnn.tflite"}
    m.save(paths["h5"])
    tf.saved_model.save(m, str(paths["savedmodel"]))
    paths["tflite"].write_bytes(tf.lite.TFLiteConverter.from_saved_model(str(paths["savedmodel"])).convert())
    k3 = keras3()
    if k3 is not None:
        i3 = k3.Input((SIZE, SIZE, 3), name="image")
        m3 = k3.Model(i3, vggish(k3.layers, i3), name="paper_cnn_k3")
        m3.set_weights(m.get_weights())
        paths["keras3"] = out / "paper_cnn_k3.keras"
        m3.save(paths["keras3"])
    return {**paths, "model": m}


if __name__ == "__main__":  # python tests/helpers/foreign.py OUT_DIR: the models of docs/import.md
    import sys

    made = make_foreign_models(sys.argv[1] if len(sys.argv) > 1 else "foreign_models")
    for k, v in made.items():
        if k != "model":
            print(f"{k}: {v}")
