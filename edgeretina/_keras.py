"""The one place that imports Keras.

edgeretina builds every model with tf_keras (Keras 2) because tensorflow-model-optimization 0.8.1
(pruning, QAT) only supports Keras 2. Everything else does ``from edgeretina._keras import keras, tf``;
never write ``tf.keras``.
"""
import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402
import tf_keras as keras  # noqa: E402

__all__ = ["keras", "tf"]
