"""edgeretina's one LiteRT layer (core; no TensorFlow).

- :mod:`.interpreter` — :class:`LiteRTModel`, the only code that creates an ai-edge-litert interpreter:
  threads / delegates, (de)quantization of interface tensors (``np.iinfo`` of the tensor dtype), batch-1
  invoke loop, timing.
- :mod:`.decisions` — raw outputs → probabilities (``tasks.activate``), screening decisions at a threshold,
  flip rates. The export's agreement and the benchmark's flip rate are computed here.
- :mod:`.timing` — :class:`Timing` and the batch-1 timing loop every runner uses.
- :mod:`.flatbuffer` — the only .tflite flatbuffer reader/writer (metadata table, op names, output bias
  patch, sparsity and parameter statistics); :mod:`.metadata` — the edgeretina JSON metadata on top of it.
"""
from __future__ import annotations

from .decisions import (decision_flip_rate, decisions, disagreement, flip_rate, label_flip_rate,
                        label_thresholds, outputs_logits, probabilities, screening_threshold, task_decisions,
                        to_probabilities)
from .interpreter import LiteRTModel, dequantize, qparams, quantize
from .metadata import NAME as METADATA_NAME
from .metadata import SCHEMA as METADATA_SCHEMA
from .metadata import embed_metadata, metadata_from_bytes, read_metadata
from .timing import Timing, time_batch1

__all__ = [
    "LiteRTModel", "qparams", "quantize", "dequantize",
    "Timing", "time_batch1",
    "outputs_logits", "to_probabilities", "probabilities", "decisions", "label_thresholds", "screening_threshold",
    "task_decisions",
    "disagreement", "flip_rate", "label_flip_rate", "decision_flip_rate",
    "METADATA_NAME", "METADATA_SCHEMA", "embed_metadata", "metadata_from_bytes", "read_metadata",
]
