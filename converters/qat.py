"""Quantization-aware training (tfmot) on the flat model, and pruning-preserving QAT for pruned models."""
from __future__ import annotations

import numpy as np

from edgeretina.errors import ExportError

from .finetune import FineTune, fit, freeze_batchnorm


def qat(model, X: np.ndarray, y: np.ndarray, kind: str, ft: FineTune, preserve_sparsity: bool = False,
        class_weight=None):
    """Quantize-annotate ``model`` (logits; a stripped pruned model when ``preserve_sparsity``), fine-tune,
    and return the quantize-applied Keras model ready for the converter (no calibration data needed)."""
    import tensorflow_model_optimization as tfmot

    freeze_batchnorm(model)
    try:
        if preserve_sparsity:
            annotated = tfmot.quantization.keras.quantize_annotate_model(model)
            qm = tfmot.quantization.keras.quantize_apply(
                annotated, tfmot.experimental.combine.Default8BitPrunePreserveQuantizeScheme())
        else:
            qm = tfmot.quantization.keras.quantize_model(model)
    except (ValueError, RuntimeError, TypeError) as e:
        raise ExportError(f"quantization-aware training cannot wrap this model: {str(e).splitlines()[0]}") from None
    fit(qm, X, y, kind, ft, class_weight=class_weight)
    return qm
