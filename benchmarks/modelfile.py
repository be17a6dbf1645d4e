"""Re-export: a model file with its embedded config lives in :mod:`edgeretina.inference.modelfile` (the
inference layer, which ``predict`` and the bench share)."""
from __future__ import annotations

from edgeretina.inference.modelfile import (ModelFile, ModelStats, expand_models, keras_param_counts, open_model,
                                            read_tflite_metadata, tflite_param_counts)

__all__ = ["ModelFile", "ModelStats", "expand_models", "keras_param_counts", "open_model", "read_tflite_metadata",
           "tflite_param_counts"]
