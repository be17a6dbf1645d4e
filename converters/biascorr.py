"""Output bias correction for full-integer .tflite files.

Post-training int8 (and QAT) graphs carry a *systematic* output offset: on a real ODIR glaucoma MobileNetV2 the
int8 logit difference sat +0.26 above the float model's on every split (sd 0.27 around that), which alone moves
many images across a low screening threshold. Correction (the "bias correction" step of Nagel et al., 2019,
applied to the output layer): run the .tflite and the float reference on the calibration images, take the mean
output error per channel, and subtract it from the int32 bias of the op that produces the output, in the
flatbuffer itself (bias step = input scale × per-channel weight scale), so no re-conversion is needed and the
activation ranges stay as calibrated.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgeretina.runtime import LiteRTModel
from edgeretina.runtime.flatbuffer import shift_output_bias

__all__ = ["BiasCorrection", "correct_output_bias", "raw_outputs", "shift_output_bias"]


@dataclass(frozen=True)
class BiasCorrection:
    applied: bool
    op: str | None
    mean_error_before: tuple[float, ...]
    mean_error_after: tuple[float, ...] | None = None
    n_images: int = 0
    reason: str = ""

    def to_dict(self) -> dict:
        return {"applied": self.applied, "op": self.op, "n_images": self.n_images, "reason": self.reason,
                "mean_error_before": [round(v, 5) for v in self.mean_error_before],
                "mean_error_after": None if self.mean_error_after is None
                else [round(v, 5) for v in self.mean_error_after]}


def raw_outputs(tflite: bytes, X: np.ndarray) -> np.ndarray:
    """Dequantized raw outputs (logits for edgeretina's full-integer exports) of ``tflite`` on ``X``."""
    return LiteRTModel(tflite, threads=2, name="converted model").raw(X)


def _error(out: np.ndarray, ref: np.ndarray, softmax: bool) -> np.ndarray:
    if softmax:  # softmax logits are defined up to a per-image constant: compare them centred
        out = out - out.mean(axis=1, keepdims=True)
        ref = ref - ref.mean(axis=1, keepdims=True)
    return (out - ref).mean(axis=0)


def correct_output_bias(tflite: bytes, X: np.ndarray, ref: np.ndarray, softmax: bool = True
                        ) -> tuple[bytes, BiasCorrection]:
    """Measure the mean output error of ``tflite`` against ``ref`` (the float model's logits on ``X``; for a
    softmax head, log-probabilities do too) and fold it into the output bias. Returns the (possibly
    unchanged) bytes and what was done."""
    ref = np.asarray(ref, dtype=np.float64).reshape(len(X), -1)
    softmax = softmax and ref.shape[1] > 1
    before = _error(raw_outputs(tflite, X), ref, softmax)
    res = shift_output_bias(tflite, -before)
    if res is None:
        return tflite, BiasCorrection(False, None, tuple(map(float, before)), n_images=len(X),
                                      reason="output is not produced by a biased integer FC/conv op")
    new, op = res
    after = _error(raw_outputs(new, X), ref, softmax)
    if softmax and np.abs(after).sum() > 0.1 * np.abs(before).sum():
        new, after = _shift_around_a_fixed_channel(tflite, X, ref, before, (new, after))
    if np.abs(after).sum() >= np.abs(before).sum():
        return tflite, BiasCorrection(False, op, tuple(map(float, before)), tuple(map(float, after)), len(X),
                                      reason="no improvement on the calibration images")
    return new, BiasCorrection(True, op, tuple(map(float, before)), tuple(map(float, after)), len(X))


def _shift_around_a_fixed_channel(tflite: bytes, X: np.ndarray, ref: np.ndarray, before: np.ndarray, best):
    """Softmax logits only matter up to a per-image constant, so the correction may leave one channel's bias
    alone and move the others by the difference. That matters when one channel's bias cannot move: a channel
    with all-zero weights (the 'normal' logit of a two-logit linear head) has an int8 weight scale of 0, so its
    int32 bias has no step (ai-edge-quantizer's files), and the plain correction removes only half the
    error. Returns the (bytes, error after) with the smallest remaining error."""
    for j in range(len(before)):
        res = shift_output_bias(tflite, -(before - before[j]))
        if res is not None:
            after = _error(raw_outputs(res[0], X), ref, True)
            if np.abs(after).sum() < np.abs(best[1]).sum():
                best = (res[0], after)
    return best
