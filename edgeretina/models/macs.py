"""Multiply-accumulate count of a Keras model at batch 1 (convolutions, depthwise convolutions, dense layers;
BatchNorm, activations and pooling are negligible and not counted). Used to compare recipes' compute:
the same MACs run on every device, so a recipe with half the MACs is the faster one everywhere."""
from __future__ import annotations

import numpy as np


def _hw(shape) -> int:
    return int(np.prod([d for d in shape[1:-1]])) if len(shape) > 2 else 1


def count_macs(model) -> int:
    from edgeretina._keras import keras

    total = 0
    for layer in model.layers:
        if isinstance(layer, keras.layers.DepthwiseConv2D):
            k = int(np.prod(layer.kernel_size))
            cin = int(layer.input_shape[-1])
            total += _hw(layer.output_shape) * k * cin * int(layer.depth_multiplier)
        elif isinstance(layer, keras.layers.Conv2D):
            k = int(np.prod(layer.kernel_size))
            cin = int(layer.input_shape[-1]) // int(getattr(layer, "groups", 1) or 1)
            total += _hw(layer.output_shape) * k * cin * int(layer.filters)
        elif isinstance(layer, keras.layers.Dense):
            total += _hw(layer.output_shape) * int(layer.input_shape[-1]) * int(layer.units)
    return int(total)
