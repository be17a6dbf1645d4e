"""Feature caching: run the frozen part of the network once, train only what comes after it.

- Warm-up (backbone frozen): cache the pooled backbone features (output of ``head_gap``) and train the head
  on them. The head model built here *shares* the full model's head layers, so training it trains the full
  model; with no augmentation this is the same computation as training through the frozen backbone.
- Partial fine-tuning: cache the activation entering the first unfrozen block and train the sub-graph from
  there (``sub_model_from``). Valid when the rest of the graph depends on that one tensor only (block
  boundaries); otherwise the cut moves earlier to the nearest valid boundary.
Both need BatchNormalization in inference mode in the frozen part (always so here).
"""
from __future__ import annotations

import numpy as np
from edgeretina.models import backbone_layers


def pooled_feature_model(model):
    from edgeretina._keras import keras

    return keras.Model(model.input, model.get_layer("head_gap").output, name="pooled_features")


def head_model_of(model):
    """pooled features → probabilities, sharing the full model's head layers."""
    from edgeretina._keras import keras

    return keras.Model(model.get_layer("head_gap").output, model.output, name="head_on_features")


def sub_model_from(model, backbone_index: int):
    """(feature model input → cut tensor, sub-model cut tensor → output) for the latest valid cut at or
    before backbone layer ``backbone_index``; None when no cut other than the model input exists."""
    from edgeretina._keras import keras

    layers = backbone_layers(model)
    for i in range(min(backbone_index, len(layers) - 1), 0, -1):
        layer = layers[i]
        try:
            t = layer.input
        except AttributeError:
            continue
        if isinstance(t, (list, tuple)):
            continue
        try:
            sub = keras.Model(t, model.output, name="finetune_sub")
            feat = keras.Model(model.input, t, name="finetune_features")
        except Exception:  # graph disconnected: a skip connection crosses this point
            continue
        return feat, sub, i
    return None


def compute(feature_model, X: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """Run ``feature_model`` over X in inference mode (BatchNorm frozen) → float32 array."""
    return np.asarray(feature_model.predict(X, batch_size=batch_size, verbose=0), dtype=np.float32)
