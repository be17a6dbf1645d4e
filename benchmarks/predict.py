"""Re-export: ``edgeretina predict`` lives in :mod:`edgeretina.inference.predict` (the inference layer: an
app-facing use of an exported model, below the bench)."""
from __future__ import annotations

from edgeretina.inference.predict import (BAND_KEY, Prediction, borderline_band_of, mark_borderline,
                                          predict_images)
from edgeretina.inference.predict import logit as _logit  # noqa: F401 - the name tests know it by

__all__ = ["BAND_KEY", "Prediction", "borderline_band_of", "mark_borderline", "predict_images"]
