"""The bench's robustness stages: camera-shift stress test (issue 12, ``--shift``) and the decision-stability
floor (issue 18, on unless ``--stability off``).

Both re-score the SAME test photos after a perturbation of the raw photo (``edgeretina.shifts``), applied
before each model's own Pipeline, on the host (LiteRT / Keras on this CPU). The raw photos are decoded once
(:class:`RawImages`); each perturbed pass is preprocessed once per distinct Pipeline and then run through
every model that uses it. Seeds: image ``i`` gets ``[seed, i]``, so every model sees the same perturbed
pixels and a rerun gives the same numbers.
"""
from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Callable, Sequence

import numpy as np

from edgeretina.data.loading import load_image
from edgeretina.errors import EdgeRetinaError
from edgeretina.preprocess import Pipeline, decode_image
from edgeretina.shifts import Benign, Level, Shift, apply_benign, apply_shift

from .devices import DEVICES, Device
from .options import BenchOptions  # noqa: F401 - the bench's options (issue 16) were first defined here
from .predict import borderline_band_of
from .report import ShiftResult, Stability, StabilityRow
from .scoring import decision_change, evaluate, margin_share

FLOOR = Benign.JPEG95  # the headline floor: a JPEG re-save at quality 95
BAND_Z = 1.96  # borderline band = 1.96 × the reference's largest logit-change sd under the benign set


# ------------------------------------------------------------------------------------------ raw photos
def _workers() -> int:
    return max(1, min(8, os.cpu_count() or 1))


def _map(fn, items):
    items = list(items)
    if len(items) < 4 or _workers() == 1:
        return [fn(x) for x in items]
    with ThreadPoolExecutor(_workers()) as ex:  # OpenCV releases the GIL
        return list(ex.map(fn, items))


class RawImages:
    """The records' decoded RGB uint8 photos, decoded once: arrays up to ``budget_bytes`` in memory (photos
    held in memory by the record, e.g. synthetic ones, are used as they are), the rest kept as file bytes and
    decoded again on each pass (a 486-photo ODIR test split decoded is ~4 GB)."""

    def __init__(self, records, budget_bytes: int = 1 << 30):
        self._records = list(records)
        self._arrays: dict[int, np.ndarray] = {}
        self._bytes: dict[int, bytes] = {}
        used = 0
        for i, r in enumerate(self._records):
            if r.image is not None:
                self._arrays[i] = r.image
                continue
            img = load_image(r)
            if used + img.nbytes <= budget_bytes:
                self._arrays[i] = img
                used += img.nbytes
            else:
                with open(r.source, "rb") as f:
                    self._bytes[i] = f.read()

    def __len__(self) -> int:
        return len(self._records)

    def get(self, i: int) -> np.ndarray:
        if i in self._arrays:
            return self._arrays[i]
        return decode_image(self._records[i].source, data=self._bytes[i])


Perturb = Callable[[np.ndarray, list], np.ndarray]  # (raw photo, [seed, index]) → photo


def _inputs(raw: RawImages, pipeline_json, perturb: Perturb, seed: int) -> np.ndarray:
    pipe = Pipeline.from_json(pipeline_json)
    xs = _map(lambda i: pipe.apply(perturb(raw.get(i), [int(seed), i])), range(len(raw)))
    return np.stack(xs).astype(np.float32, copy=False)


class Rescorer:
    """Host runners for every model (loaded once) and one scoring call per perturbation."""

    def __init__(self, models, raw: RawImages, threads: int, seed: int):
        self.models, self.raw, self.threads, self.seed = list(models), raw, threads, seed
        self._runners: dict = {}

    def _runner(self, m):
        if m.path not in self._runners:
            self._runners[m.path] = DEVICES[Device.CPU].load(m, self.threads)
        return self._runners[m.path]

    def score(self, perturb: Perturb) -> dict:
        """``{model path: probabilities}`` of every model on the perturbed photos."""
        groups: dict[str, list] = {}
        for m in self.models:
            groups.setdefault(json.dumps(m.config.preprocessing, sort_keys=True), []).append(m)
        out = {}
        for key, ms in groups.items():
            x = _inputs(self.raw, ms[0].config.preprocessing, perturb, self.seed)
            for m in ms:
                out[m.path] = np.asarray(self._runner(m).predict(x), dtype=np.float64)
            del x
        return out

    def close(self) -> None:
        self._runners.clear()


# --------------------------------------------------------------------------------------- shift stage
def shift_stage(rescorer: Rescorer, shifts: Sequence[Shift], spec, y, threshold, ref, base: dict,
                progress: Callable[[str], None] = lambda what: None) -> tuple[ShiftResult, ...]:
    """Every model under every shift at mild and severe level (plus its unshifted row, ``shift="none"``)."""
    models = rescorer.models
    scored = {("none", "none"): base}
    for s in shifts:
        for lv in Level:
            progress(f"shift {s.value} {lv.value}")
            scored[(s.value, lv.value)] = rescorer.score(lambda img, sd, s=s, lv=lv: apply_shift(img, s, lv, sd))
    ref_base = base[ref.path]

    def auroc(probs):
        return evaluate(spec, y, probs, ref_base, threshold, n_boot=0).auroc

    self_auroc = {m.path: auroc(base[m.path]) for m in models}
    rows = []
    for m in models:
        for (s, lv), probs in scored.items():
            sc = evaluate(spec, y, probs[m.path], ref_base, threshold, n_boot=0)
            ref_shift = auroc(probs[ref.path]) if m is not ref else sc.auroc
            rows.append(ShiftResult(
                name=m.name, file=str(m.path), is_reference=m is ref, shift=s, level=lv, auroc=sc.auroc,
                delta_auroc=sc.delta_auroc, delta_auroc_self=_diff(sc.auroc, self_auroc[m.path]),
                delta_auroc_vs_ref_shifted=_diff(sc.auroc, ref_shift), sensitivity=sc.sensitivity,
                specificity=sc.specificity,
                flip_rate=decision_change(spec, base[m.path], probs[m.path], threshold).flip_rate))
    return tuple(rows)


def _diff(a, b):
    return None if a is None or b is None else float(a - b)


# ----------------------------------------------------------------------------------- stability stage
def stability_stage(rescorer: Rescorer, benign: Sequence[Benign], spec, threshold, ref, base: dict,
                    flips_vs_ref: dict, progress: Callable[[str], None] = lambda what: None) -> Stability:
    """The reference's flip rate and logit-change sd under each benign perturbation (the floor), the same
    for every other model, each model's flips vs the reference as a multiple of the floor, and the share of
    images within the borderline band δ of the threshold."""
    models = rescorer.models
    changes: dict = {}
    for b in benign:
        progress(f"stability {b.value}")
        probs = rescorer.score(lambda img, sd, b=b: apply_benign(img, b, sd))
        for m in models:
            changes[(m.path, b)] = decision_change(spec, base[m.path], probs[m.path], threshold)
    n = len(rescorer.raw)
    ref_flips = {b: changes[(ref.path, b)].flip_rate for b in benign}
    floor = ref_flips.get(FLOOR)
    finite = {b: f for b, f in ref_flips.items() if f is not None}
    worst = max(finite, key=finite.get) if finite else None
    sds = [changes[(ref.path, b)].logit_sd for b in benign if changes[(ref.path, b)].logit_sd is not None]
    band = BAND_Z * max(sds) if sds else None
    rows = []
    for m in models:
        for b in benign:
            c = changes[(m.path, b)]
            rf = ref_flips[b]
            amp = (c.flip_rate / max(rf, 1.0 / n)) if c.flip_rate is not None and rf is not None else None
            rows.append(StabilityRow(name=m.name, file=str(m.path), is_reference=m is ref, perturbation=b.value,
                                     flip_rate=c.flip_rate, logit_change_mean=c.logit_mean,
                                     logit_change_sd=c.logit_sd, amplification=amp))
    st = Stability(reference=str(ref.path), n_images=n, perturbations=tuple(b.value for b in benign),
                   floor=floor, floor_max=finite.get(worst) if worst else None,
                   floor_perturbation=worst.value if worst else None, resolution=1.0 / max(n, 1), band=band,
                   near_band=margin_share(spec, base[ref.path], threshold, band), rows=tuple(rows))
    variants = tuple({"name": m.name, "file": str(m.path), "is_reference": m is ref,
                      "flip_rate": flips_vs_ref.get(m.path),
                      "floor_ratio": st.ratio(flips_vs_ref.get(m.path)),
                      "floor_max_ratio": st.ratio(flips_vs_ref.get(m.path), to_max=True),
                      "near_band": margin_share(spec, base[m.path], threshold, band),
                      **_shipped(m, spec, base[m.path], threshold)} for m in models)
    return replace(st, variants=variants)


def _shipped(m, spec, probs, threshold) -> dict:
    """The borderline band the model file carries (metadata ``borderline_band``, written by ``edgeretina
    export``: what predict and the app flag) and the share of its test scores within ±that band of the
    threshold — the retakes an app would ask for; {} when it carries none."""
    try:
        b = borderline_band_of(m)
    except EdgeRetinaError:  # a malformed band: predict refuses it; the bench just does not report it
        b = None
    return {} if b is None else {"shipped_band": b, "near_shipped_band": margin_share(spec, probs, threshold, b)}


__all__ = ["BenchOptions", "RawImages", "Rescorer", "shift_stage", "stability_stage", "FLOOR", "BAND_Z"]
