"""``export_model``: one Keras run → the requested .tflite variants + manifest.json, verified, published
together.

:class:`ExportOptions` (validated once) → :class:`Exporter`, one method per stage: calibrate → reference →
per variant (fine-tune if pruned/QAT → convert to bytes → bias correction → embed metadata and verify the final
bytes in LiteRT → write into the staging folder) → publish (manifest written, every file re-hashed, the staging
folder swapped in for the output folder in one step). A failed, interrupted or killed export leaves the previous
export untouched; an :class:`ExportContext` carries the state of one export between stages.
"""
from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import os
import sys
import time
import warnings
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

import edgeretina.models  # noqa: F401 - registers custom head layers, if any
from edgeretina.env import package_versions
from edgeretina.errors import EdgeRetinaError, ExportError, ModelError
from edgeretina.data.loading import load_image
from edgeretina.io import (SizedArtifact, StagedDir, ensure_writable_dir, fault_point, write_bytes_atomic,
                           write_json_atomic)
from edgeretina.metrics import youden_threshold
from edgeretina.run import MODEL_FILE, RunConfig, file_sha256
from edgeretina.runtime import LiteRTModel, decision_flip_rate
from edgeretina.tasks import Task, TaskKind, activate, scores_from_output

from . import aeq, armcheck
from . import band as band_mod
from . import calib as calib_mod
from . import gptq as gptq_mod
from . import guard as guard_mod
from .biascorr import correct_output_bias
from .budget import MAX_FLOAT_MACS, RANK_N, Budget, Probe, search
from .gptqfloat import grid_match, rounded_float
from .finetune import FineTune, balanced_class_weight, labels_array, reporting
from .headsplit import check_groups, split_head
from .residual import parse_layers as parse_residual, rewrite as residual_rewrite
from .metadata import SCHEMA as META_SCHEMA
from .metadata import embed_metadata
from .qat import qat
from .sources import (SAVED_MODEL_DIR, TFLITE_FILE, input_shape, logits_model, open_source, refusal, resolve_source,
                      source_sha256)
from .variants import DEFAULT, IO, VARIANTS, Variant, VariantInfo, parse_variant
from .verify import Comparison, drift, interpreter, io_details, verify

MANIFEST = "manifest.json"
MANIFEST_SCHEMA = "edgeretina.export/1"


@dataclass(frozen=True)
class ExportResult(SizedArtifact):
    variant: str
    path: str
    size_bytes: int
    gzip_bytes: int
    sha256: str
    seconds: float
    io: str
    output: dict[str, Any]
    interface: dict[str, Any]
    verification: dict[str, Any]
    sparsity: float | None = None          # measured zeros in the .tflite's conv/dense weights
    target_sparsity: float | None = None
    finetune: dict[str, Any] | None = None
    bias_correction: dict[str, Any] | None = None  # output bias correction (full-integer variants)
    quantizer: dict[str, Any] | None = None        # calibrated full-integer variants: which backend (aeq.py)
    guard: dict[str, Any] | None = None            # int8-guard: fallback file, band (guard.py)
    arm_parity: list[dict[str, Any]] | None = None  # --verify-arm: one armcheck.ArmCheck per emulated CPU

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def line(self) -> str:
        """Ultralytics-style one-liner for the CLI."""
        v = self.verification
        extra = []
        if v.get("max_abs_diff") is not None:
            extra.append(f"max|Δ| {v['max_abs_diff']:.4f}, agreement {100 * v['agreement']:.1f}% (n={v['n']})")
        if self.sparsity is not None:
            extra.append(f"sparsity {100 * self.sparsity:.1f}%")
        extra.append(f"gzip {self.gzip_mb:.2f} MB")
        if v.get("float_ops"):
            extra.append(f"float ops: {', '.join(sorted(set(v['float_ops'])))}")
        if self.guard:
            extra.append(f"band ±{self.guard['band']:.3f} logit → {self.guard['fallback']} "
                         f"({100 * self.guard['rescored_share']:.1f}% of calibration images re-scored)")
        if self.arm_parity:
            same = all(a["identical"] for a in self.arm_parity)
            extra.append(f"ARM ({', '.join(a['cpu'] for a in self.arm_parity)}): same decisions"
                         + (", bit-identical" if same else f", max|Δ| {max(a['max_abs_diff'] for a in self.arm_parity):.2g}"))
        if v.get("within_tolerance") is False:
            extra.append("WARNING: outside tolerance")
        return (f"{self.variant}: export success ✅ {self.seconds:.1f}s, saved as '{self.path}' "
                f"({self.size_mb:.1f} MB); " + "; ".join(extra))


@dataclass(frozen=True)
class ExportReport:
    source: str
    source_sha256: str | None
    out_dir: str
    results: tuple[ExportResult, ...]
    calibration: dict[str, Any]
    verification_sample: dict[str, Any]
    config: dict[str, Any]
    versions: dict[str, str]
    options: dict[str, Any] = field(default_factory=dict)
    schema: str = MANIFEST_SCHEMA
    # the borderline band written into every variant's metadata and where it came from (converters/band.py);
    # {"band": None, "method": "off", "note": why} when none was written
    borderline_band: dict[str, Any] | None = None

    def __getitem__(self, variant: str | Variant) -> ExportResult:
        v = parse_variant(variant).value
        for r in self.results:
            if r.variant == v:
                return r
        raise KeyError(v)

    @property
    def variants(self) -> list[str]:
        return [r.variant for r in self.results]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["results"] = [r.to_dict() for r in self.results]
        f32 = next((r for r in self.results if r.variant == Variant.FLOAT32.value), None)
        if f32:
            for r in d["results"]:
                r["size_ratio_vs_float32"] = r["size_bytes"] / f32.size_bytes
                r["gzip_ratio_vs_float32"] = r["gzip_bytes"] / f32.gzip_bytes
        return d

    def save(self, path: str | Path | None = None) -> Path:
        return write_json_atomic(Path(path) if path else Path(self.out_dir) / MANIFEST, self.to_dict())

    @property
    def manifest_path(self) -> Path:
        return Path(self.out_dir) / MANIFEST


def load_keras_model(path: Path):
    from edgeretina._keras import keras

    try:
        return keras.models.load_model(str(path), compile=False)
    except (OSError, ValueError, TypeError, KeyError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelError(f"{path}: cannot load Keras model ({first[:200]})") from None


def _stem(model_path: Path) -> str:
    return model_path.parent.name if model_path.name in (MODEL_FILE, SAVED_MODEL_DIR, TFLITE_FILE) else model_path.stem


class _Data:
    """Lazy access to the run's splits and preprocessed arrays (loaded once, only when needed)."""

    def __init__(self, cfg: RunConfig, source: str, pipeline):
        self.cfg, self.source, self.pipeline = cfg, source, pipeline
        self._splits = None
        self._cache: dict[tuple, tuple[np.ndarray, list]] = {}

    def splits(self):
        if self._splits is None:
            self._splits = calib_mod.dataset_splits(self.cfg, self.source)
        return self._splits

    def available(self) -> bool:
        try:
            self.splits()
            return True
        except ExportError:
            return False

    def holdout(self, split: str, exclude_n: int, n: int, seed: int = 0) -> tuple[np.ndarray, list]:
        """``n`` images of ``split`` (stratified) that are not among ``sample(split, exclude_n, seed)``."""
        recs = self.splits().get(split) or []
        used = set(calib_mod.stratified_indices([r.y for r in recs], exclude_n, seed))
        rest = [r for i, r in enumerate(recs) if i not in used]
        if len(rest) < calib_mod.MIN_CALIB:
            raise ExportError(f"{self.source}: only {len(rest)} '{split}' images outside the calibration "
                              f"sample for the budget check, need at least {calib_mod.MIN_CALIB}")
        idx = calib_mod.stratified_indices([r.y for r in rest], n, seed + 1)
        try:
            return calib_mod.load_records([rest[i] for i in idx], self.pipeline)
        except EdgeRetinaError as e:
            raise ExportError(f"{self.source}: cannot load {split} images ({e})") from None

    def sample(self, split: str, n: int, seed: int = 0) -> tuple[np.ndarray, list]:
        key = (split, n, seed)
        if key not in self._cache:
            recs = self.splits().get(split) or []
            if not recs:
                raise ExportError(f"{self.source}: the dataset's '{split}' split is empty")
            idx = calib_mod.stratified_indices([r.y for r in recs], n, seed)
            try:
                self._cache[key] = calib_mod.load_records([recs[i] for i in idx], self.pipeline)
            except EdgeRetinaError as e:
                raise ExportError(f"{self.source}: cannot load {split} images ({e})") from None
        return self._cache[key]


# ------------------------------------------------------------------------------------------ options

OUTPUTS = ("auto", "logits", "probabilities")
WEIGHT_ROUNDINGS = ("nearest", "gptq")  # converters.gptq.ROUNDINGS (kept here so options need no numpy-heavy import)
GUARD_TIMING_IMAGES = 16  # --guard-max-latency: batch-1 timings of the int8 and fp16 files on this many images
QUANTIZERS = ("converter", "aeq")  # full-integer backends: the TF converter, or ai-edge-quantizer (aeq.py)
RANGES = ("minmax", "ema", "percentile", "mse")  # converters.aeq.RANGES (kept here so options need no quantizer import)
ALLOCATIONS = ("uniform", "size")  # converters.prune.ALLOCATIONS (kept here so options need no TensorFlow)
DEFAULT_SPARSITY = 0.5
MAX_IMAGES = 10_000  # calibration / verification / threshold images held in memory at once


@dataclass(frozen=True)
class ExportOptions:
    """Everything an export is asked to do, checked once here (the CLI only maps its flags onto these
    fields, so the Python API refuses the same combinations with the same one-line messages).

    ``sparsity`` / ``steps``: None = the default (0.5 / ``FineTune.steps``); giving either for variants that
    do not use it is an error. ``finetune``: a full :class:`FineTune` (overrides ``steps`` and
    ``finetune_target``)."""

    variants: tuple[Variant, ...] = DEFAULT
    io: IO = IO.INT8
    sparsity: float | None = None
    allocation: str = "uniform"
    calib: str | None = None
    calib_n: int = 200
    verify_n: int = 64
    threshold_n: int = 500
    allow_float_fallback: bool = False
    steps: int | None = None
    finetune_target: str = "teacher"
    finetune: FineTune | None = None
    output: str = "auto"
    seed: int = 0
    bias_correction: bool = True
    quantizer: str = "converter"
    ranges: str = "minmax"
    guard_k: float = 3.0
    guard_max_flips: float | None = None  # int8-guard: k = the smallest of guard.CHOICE_KS keeping this flip rate
    guard_max_latency: float | None = None  # int8-guard: k within this multiple of the int8 mean latency (estimated)
    max_flips: float | None = None        # flip budget: the fewest float layers that keep it (budget.py)
    max_logit_noise: float | None = None
    budget_n: int = 500                   # hold-out training images the budget is checked on
    max_float_macs: float = MAX_FLOAT_MACS  # the budget's float layers: at most this share of the multiply-adds
    head_split: int = 0                   # int8: the linear head's weights split into K magnitude bands (headsplit.py)
    residual_weights: tuple = ()          # int8: these conv layers as two int8 kernels, w_hi + residual (residual.py)
    weight_rounding: str = "nearest"      # int8 weights: nearest step, or GPTQ error-compensating (gptq.py)
    borderline_band: str | float = "auto"  # auto (measured, converters/band.py), off, or a band in logits
    band_n: int = band_mod.DEFAULT_N      # validation images the auto band is measured on
    verify_arm: tuple[str, ...] = ()      # emulated aarch64 CPUs every file is also verified on (armcheck.py)
    verify_arm_n: int = armcheck.DEFAULT_N

    def __post_init__(self):
        put = object.__setattr__
        put(self, "variants", _parse_variants(self.variants))
        if Variant.INT8_GUARD in self.variants:  # the guard cascades the int8 and fp16 files of this export
            put(self, "variants", tuple(sorted({*self.variants, Variant.FP16, Variant.INT8},
                                               key=list(Variant).index)))
        put(self, "io", _parse_io(self.io))
        infos = self.infos
        if self.sparsity is not None and not any(i.pruned for i in infos):
            raise ExportError("--sparsity only applies to pruned variants (add --pruned)")
        if any(i.pruned for i in infos):
            put(self, "sparsity", _check_sparsity(DEFAULT_SPARSITY if self.sparsity is None else self.sparsity))
        if self.allocation not in ALLOCATIONS:
            raise ExportError(f"unknown --allocation '{self.allocation}' (choose {' or '.join(ALLOCATIONS)})")
        if self.steps is not None and not any(i.trains for i in infos):
            raise ExportError("--steps only applies to --pruned/--qat variants")
        if self.steps is not None and self.steps < 1:
            raise ExportError(f"--steps must be >= 1, got {self.steps}")
        if self.calib is not None and not any(i.calibration for i in infos):
            raise ExportError("--calib only applies to calibrated variants (--int8, --pruned --int8)")
        if self.calib_n < 1 or self.verify_n < 0 or self.threshold_n < 1:
            raise ExportError("--calib-n must be >= 1 and --verify-n >= 0")
        if max(self.calib_n, self.verify_n, self.threshold_n) > MAX_IMAGES:
            raise ExportError(f"--calib-n and --verify-n must be <= {MAX_IMAGES} (images held in memory)")
        if self.output not in OUTPUTS:
            raise ExportError(f"unknown output '{self.output}' (choose auto, logits or probabilities)")
        if self.quantizer not in QUANTIZERS:
            raise ExportError(f"unknown --quantizer '{self.quantizer}' (choose {' or '.join(QUANTIZERS)})")
        if self.quantizer != "converter" and not any(self.uses_quantizer(i) for i in infos):
            raise ExportError("--quantizer only applies to calibrated full-integer variants (--int8, --pruned --int8)")
        if self.ranges not in RANGES:
            raise ExportError(f"unknown --ranges '{self.ranges}' (choose {' or '.join(RANGES)})")
        if self.ranges != "minmax" and self.quantizer != "aeq":
            raise ExportError("--ranges applies to --quantizer aeq only (the converter keeps min/max ranges)")
        self._check_budget(infos)
        if self.head_split:
            check_groups(self.head_split)
            if not any(self.uses_quantizer(i) for i in infos):
                raise ExportError("--head-split only applies to calibrated full-integer variants "
                                  "(--int8, --pruned --int8)")
        put(self, "residual_weights", parse_residual(self.residual_weights))
        if self.residual_weights and not any(self.uses_quantizer(i) for i in infos):
            raise ExportError("--residual-weights only applies to calibrated full-integer variants "
                              "(--int8, --pruned --int8)")
        if self.residual_weights and self.quantizer != "aeq":
            raise ExportError("--residual-weights needs --quantizer aeq (the grid kernel's int8 range is capped "
                              "there; the converter would spread it over the kernel's whole unclamped output)")
        self._check_rounding(infos)
        put(self, "borderline_band", band_mod.parse_band(self.borderline_band))
        if not (isinstance(self.band_n, int) and band_mod.MIN_IMAGES <= self.band_n <= MAX_IMAGES):
            raise ExportError(f"--band-n must be an integer in [{band_mod.MIN_IMAGES}, {MAX_IMAGES}], "
                              f"got {self.band_n!r}")
        if not (isinstance(self.guard_k, (int, float)) and np.isfinite(self.guard_k) and self.guard_k >= 0):
            raise ExportError(f"--guard-k must be a non-negative number, got {self.guard_k!r}")
        self._check_guard_budget(infos)
        self._check_arm()
        if self.finetune is None:
            put(self, "finetune", FineTune(seed=self.seed, target=self.finetune_target,
                                           **({} if self.steps is None else {"steps": self.steps})))

    @property
    def infos(self) -> tuple[VariantInfo, ...]:
        return tuple(VARIANTS[v] for v in self.variants)

    @property
    def budget(self):
        """The flip / logit-noise budget (``converters.budget.Budget``), or None."""
        if self.max_flips is None and self.max_logit_noise is None:
            return None

        return Budget(self.max_flips, self.max_logit_noise, self.max_float_macs)

    def _check_budget(self, infos) -> None:
        if self.budget is None:
            return
        if not any(self.uses_quantizer(i) for i in infos):
            raise ExportError("--max-flips / --max-logit-noise apply to --int8 (or --pruned --int8)")
        if self.quantizer != "aeq":
            raise ExportError("--max-flips / --max-logit-noise need --quantizer aeq (layers are kept float "
                              "through ai-edge-quantizer's per-layer recipe)")
        if not (isinstance(self.budget_n, int) and 16 <= self.budget_n <= MAX_IMAGES):
            raise ExportError(f"--budget-n must be an integer in [16, {MAX_IMAGES}], got {self.budget_n!r}")

    def _check_rounding(self, infos) -> None:
        if self.weight_rounding not in WEIGHT_ROUNDINGS:
            raise ExportError(f"unknown --weight-rounding '{self.weight_rounding}' (choose "
                              f"{' or '.join(WEIGHT_ROUNDINGS)})")
        if self.weight_rounding == "nearest":
            return
        if not any(self.uses_quantizer(i) for i in infos):
            raise ExportError("--weight-rounding gptq only applies to calibrated full-integer variants "
                              "(--int8, --pruned --int8)")

    def _check_guard_budget(self, infos) -> None:
        r = self.guard_max_latency
        if r is not None:
            if not any(i.guarded for i in infos):
                raise ExportError("--guard-max-latency applies to --int8-guard only")
            if isinstance(r, bool) or not (isinstance(r, (int, float)) and np.isfinite(r) and r > 1):
                raise ExportError(f"--guard-max-latency must be a multiple of the int8 latency above 1 "
                                  f"(1.3 = 30 percent slower on average), got {r!r}")
        f = self.guard_max_flips
        if f is None:
            return
        if not any(i.guarded for i in infos):
            raise ExportError("--guard-max-flips applies to --int8-guard only")
        if not (isinstance(f, (int, float)) and np.isfinite(f) and 0 <= f < 1):
            raise ExportError(f"--guard-max-flips must be a share in [0, 1) (0.003 = 0.3 percent), got {f!r}")

    def _check_arm(self) -> None:
        object.__setattr__(self, "verify_arm", armcheck.parse_cpus(self.verify_arm))
        if not (isinstance(self.verify_arm_n, int) and 1 <= self.verify_arm_n <= 1000):
            raise ExportError(f"--verify-arm-n must be an integer in [1, 1000], got {self.verify_arm_n!r}")
        if self.verify_arm and self.verify_n < 1:
            raise ExportError("--verify-arm compares decisions on the verification images: it needs --verify-n >= 1")

    def uses_quantizer(self, info: VariantInfo) -> bool:
        """Whether ``--quantizer`` picks this variant's backend (calibrated full-integer, not mixed/guard)."""
        return info.calibration and info.full_integer and not info.mixed and not info.guarded

    def to_manifest(self, seconds: float) -> dict[str, Any]:
        infos, ft = self.infos, self.finetune
        return {"io": self.io.value, "sparsity": self.sparsity,
                "allocation": self.allocation if any(i.pruned for i in infos) else None,
                "calib_n": self.calib_n, "verify_n": self.verify_n,
                "allow_float_fallback": self.allow_float_fallback, "output": self.output,
                "finetune": ft.to_dict() if any(i.trains for i in infos) else None,
                "bias_correction": self.bias_correction, "quantizer": self.quantizer,
                "ranges": self.ranges if self.quantizer == "aeq" else None,
                "guard_k": self.guard_k if any(i.guarded for i in infos) else None,
                "guard_max_flips": self.guard_max_flips, "guard_max_latency": self.guard_max_latency,
                "max_flips": self.max_flips, "max_logit_noise": self.max_logit_noise,
                "budget_n": self.budget_n if self.budget is not None else None,
                "max_float_macs": self.max_float_macs if self.budget is not None else None,
                "head_split": self.head_split or None,
                "residual_weights": list(self.residual_weights) or None, "weight_rounding": self.weight_rounding,
                "borderline_band": self.borderline_band,
                "band_n": self.band_n if self.borderline_band == "auto" else None,
                "verify_arm": list(self.verify_arm) or None,
                "verify_arm_n": self.verify_arm_n if self.verify_arm else None, "seconds": round(seconds, 2)}


def _check_sparsity(s) -> float:
    from .prune import check_sparsity  # one rule for the option, the API and the pruning code

    return check_sparsity(s)


# ------------------------------------------------------------------------------------------ context


@dataclass
class ExportContext:
    """The state of one export, passed explicitly from stage to stage."""

    source: str
    source_sha: str | None
    cfg_source: str
    cfg: RunConfig
    out: Path                      # the folder the user named (paths in the manifest point here)
    stem: str
    model: Any
    pipeline: Any = None
    data: "_Data | None" = None
    stage: Path | None = None      # the private staging folder the files are written to
    shape: tuple[int, int, int] = (0, 0, 0)  # the model's input (H, W, C)
    lmodel: Any = None             # the model without its final activation (logits)
    act: str | None = None
    X_cal: np.ndarray | None = None
    calib_info: dict[str, Any] = field(default_factory=dict)
    X_ver: np.ndarray | None = None
    sample_info: dict[str, Any] = field(default_factory=lambda: {"source": None, "n": 0})
    ref: np.ndarray | None = None  # the source model's scores on X_ver
    train_xy: tuple | None = None  # fine-tune images, targets, class weights (shared by pruned / QAT)
    pruned: Any = None
    pruned_info: dict[str, Any] | None = None
    bias_x: np.ndarray | None = None
    splits: dict = field(default_factory=dict)  # id(model) → (model, split model, HeadSplit | None)
    float32s: dict = field(default_factory=dict)  # id(model) → (model, its float32 .tflite): converted once
    band_info: dict[str, Any] | None = None  # the borderline band and its provenance (converters/band.py)
    arm_env: Any = None                      # --verify-arm: the emulation environment (checked at open)
    kept: list[dict] = field(default_factory=list)  # manifest entries of the same source kept from before
    results: list[ExportResult] = field(default_factory=list)

    @property
    def spec(self):
        return self.cfg.spec

    @property
    def prob_output(self) -> dict[str, Any]:
        return dict(self.cfg.output or {"kind": "probabilities", "activation": self.spec.activation})

    @property
    def logit_output(self) -> dict[str, Any]:
        return {"kind": "logits", "activation": self.act} if self.act else self.prob_output


@dataclass
class _Build:
    """One variant on its way through the stages."""

    info: VariantInfo
    logits: bool
    km: Any
    t0: float
    buf: bytes = b""
    ft_info: dict | None = None
    bias_info: dict | None = None
    threshold: Any = None
    threshold_source: str | None = None
    ref_v: np.ndarray | None = None
    ref_name: str = "source Keras model"
    iface: dict | None = None
    sparsity: float | None = None
    ver: Any = None
    quant_info: dict | None = None
    guard_info: dict | None = None
    arm: list[dict] | None = None
    head_split: dict | None = None
    residual: dict | None = None
    float_buf: bytes | None = None  # the float32 .tflite the aeq backend quantized (reused by --weight-rounding)


# ------------------------------------------------------------------------------------------ progress


def _clock(s: float) -> str:
    s = int(round(s))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


class Progress:
    """``[step/total] what (elapsed, ETA)`` lines for the export's stages, and step ticks inside a
    fine-tune. The ETA assumes the remaining stages take as long as the finished ones on average."""

    def __init__(self, total: int, emit: Callable[[str], None] | None):
        self.total, self.emit, self.done, self.t0 = total, emit, 0, time.perf_counter()

    def stage(self, what: str) -> None:
        fault_point(f"export:{what}")
        self.done += 1
        if self.emit is None:
            return
        el = time.perf_counter() - self.t0
        eta = f", ETA {_clock(el / (self.done - 1) * (self.total - self.done + 1))}" if self.done > 1 else ""
        self.emit(f"[{self.done}/{self.total}] {what} ({_clock(el)} elapsed{eta})")

    def ticker(self, what: str) -> Callable[[int, int], None]:
        t0 = time.perf_counter()

        def tick(step: int, total: int) -> None:
            if self.emit is None:
                return
            el = time.perf_counter() - t0
            self.emit(f"      {what} step {step}/{total} ({_clock(el)} elapsed, "
                      f"ETA {_clock(el / max(step, 1) * (total - step))})")
        return tick


@contextlib.contextmanager
def quiet_native_stderr():
    """Keep TensorFlow's and the converter's own stderr output (``fully_quantize: 0, inference_type: 6 …``,
    deprecation warnings) out of the user's terminal: file descriptor 2 points at /dev/null inside the block.
    ``EDGERETINA_VERBOSE=1`` keeps it."""
    if os.environ.get("EDGERETINA_VERBOSE"):
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 2)
    os.close(null)
    # Python code that writes to sys.stderr at call time (progress callbacks such as the demo's) still
    # reaches the terminal: sys.stderr, when it is file descriptor 2, is pointed at a copy of the real one.
    old_stderr, real = sys.stderr, None
    try:
        if old_stderr is not None and old_stderr.fileno() == 2:
            real = os.fdopen(os.dup(saved), "w", buffering=1, encoding=getattr(old_stderr, "encoding", None),
                             errors="backslashreplace")
            sys.stderr = real
    except (AttributeError, OSError, ValueError):  # not a real file (pytest / click's test runner)
        pass
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        sys.stderr = old_stderr
        if real is not None:
            real.close()
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)


# ------------------------------------------------------------------------------------------ exporter


class Exporter:
    """One export, stage by stage: open → calibrate → reference → per variant (fine-tune → convert →
    correct → verify → write) → publish. Files are written into a private staging folder beside the output
    folder and published in one step (:class:`edgeretina.io.StagedDir`): a failed, interrupted or killed
    export leaves the previous export untouched; a second concurrent export into the same folder is refused."""

    def __init__(self, options: ExportOptions, on_result: Callable[[ExportResult], None] | None = None,
                 progress: Callable[[str], None] | None = None):
        self.opts, self.on_result, self.emit = options, on_result, progress

    def run(self, model_or_run_dir, out_dir=None, config: RunConfig | None = None) -> ExportReport:
        t_all = time.perf_counter()
        with quiet_native_stderr():
            from .tflite import SavedModels, clean_stale_savedmodels

            clean_stale_savedmodels()
            arm_env = armcheck.ready(self.opts.verify_arm) if self.opts.verify_arm else None  # before any work
            ctx = self.open(model_or_run_dir, out_dir, config)
            ctx.arm_env = arm_env
            rules = _CarryRules(self, ctx)  # evaluated under the folder's lock, when the staging folder is made
            self.progress = Progress(self._n_stages(), self.emit)
            with StagedDir(ctx.out, keep=rules, what="edgeretina export") as st, SavedModels() as saved:
                ctx.stage, fresh = st.path, rules.compute()
                try:
                    self.calibrate(ctx)
                    self.reference(ctx)
                    self.band(ctx)
                    for info in self.opts.infos:
                        self.variant(ctx, info, saved)
                    report = self.publish(ctx, st, time.perf_counter() - t_all)
                except KeyboardInterrupt:
                    if fresh and ctx.results:  # nothing earlier to protect: keep the finished, verified files
                        st.publish()
                    raise
        return report

    def _n_stages(self) -> int:
        n = 4  # calibrate, reference, borderline band, publish
        for i in self.opts.infos:
            n += 2 + int(i.trains) + int(self.opts.bias_correction and i.activations == "int8" and not i.guarded)
            n += int(bool(self.opts.verify_arm))
            n += int(self.opts.weight_rounding == "gptq" and self.opts.uses_quantizer(i))
            n += int(i.guarded and (self.opts.guard_max_flips is not None or self.opts.guard_max_latency is not None))
        return n

    # ---- open: source model, config, output folder
    def open(self, model_or_run_dir, out_dir, config: RunConfig | None) -> ExportContext:
        if isinstance(model_or_run_dir, (str, Path)):
            model_path, cfg = resolve_source(model_or_run_dir)  # model.keras, saved_model/ or model.tflite
            why = refusal(model_path, cfg, self.opts.infos)
            if why:
                raise ExportError(why)
            out = Path(out_dir) if out_dir else model_path.parent / "export"
            ctx_kw = dict(source=str(model_path), source_sha=source_sha256(model_path), cfg=cfg,
                          cfg_source=str(model_path.parent / "config.json"), stem=_stem(model_path))
        else:
            if config is None:
                raise ModelError("export_model(model=...) needs config=RunConfig (labels, preprocessing, threshold)")
            if out_dir is None:
                raise ExportError("export_model(model=...) needs out_dir")
            model_path, out = None, Path(out_dir)
            ctx_kw = dict(source="<keras model>", source_sha=None, cfg=config, cfg_source="config",
                          stem=getattr(model_or_run_dir, "name", "model"))
        try:
            ctx_kw["cfg"].spec
        except EdgeRetinaError as e:
            raise ModelError(f"{ctx_kw['cfg_source']}: {e}") from None
        pipeline = calib_mod.pipeline_of(ctx_kw["cfg"], ctx_kw["cfg_source"])
        out = ensure_writable_dir(out)
        if model_path is None:
            model = model_or_run_dir
        else:
            model = load_keras_model(model_path) if model_path.suffix == ".keras" else open_source(model_path, cfg)
        ctx = ExportContext(out=out, model=model, pipeline=pipeline, **ctx_kw)

        ctx.shape = input_shape(model)
        if pipeline.input_size is not None and pipeline.input_size != ctx.shape[0]:
            raise ModelError(f"{ctx.cfg_source}: preprocessing resizes to {pipeline.input_size} px but the "
                             f"model takes {ctx.shape[0]} px")
        ctx.data = _Data(ctx.cfg, ctx.cfg_source, pipeline)
        ctx.lmodel, ctx.act = logits_model(model)
        return ctx

    def carry_rules(self, ctx: ExportContext) -> tuple[set[str], bool]:
        """Which entries of the existing folder the new one keeps: everything except manifest.json, the
        files this export writes and the .tflite files an earlier manifest lists that are not kept (another
        source model, or changed since). Entries of the same source model whose files are unchanged are kept
        in the new manifest (``ctx.kept``). Returns (names to drop, fresh: the folder held no export).
        Call it while holding the folder's lock."""
        old = _read_manifest(ctx.out / MANIFEST)
        mine = {v.value for v in self.opts.variants}
        drop = {f"{ctx.stem}_{i.suffix}.tflite" for i in self.opts.infos} | {MANIFEST}
        for r in (old or {}).get("results", []) if isinstance(old, dict) else []:
            if not isinstance(r, dict) or not isinstance(r.get("path"), str):
                continue
            f = ctx.out / Path(r["path"]).name
            same = bool(ctx.source_sha) and old.get("source_sha256") == ctx.source_sha
            if same and r.get("variant") not in mine and f.is_file() and file_sha256(f) == r.get("sha256"):
                ctx.kept.append({**r, "path": str(f)})
            else:
                drop.add(f.name)
        return drop, old is None and not any(ctx.out.glob("*.tflite"))

    # ---- calibrate: representative images for full-integer variants
    def calibrate(self, ctx: ExportContext) -> None:
        self.progress.stage("calibration images")
        o = self.opts
        if not any(i.calibration for i in o.infos):
            return
        if o.calib is not None:
            ctx.X_cal = calib_mod.from_path(o.calib, ctx.pipeline, ctx.shape, n=o.calib_n, seed=o.seed)
            ctx.calib_info = {"source": str(o.calib), "n": int(len(ctx.X_cal))}
            return
        if not ctx.data.available():
            ctx.data.splits()  # raises the one-line reason
        ctx.X_cal, ycal = ctx.data.sample("train", o.calib_n, o.seed)
        if len(ctx.X_cal) < calib_mod.MIN_CALIB:
            raise ExportError(f"{ctx.cfg_source}: only {len(ctx.X_cal)} training images for calibration, "
                              f"need at least {calib_mod.MIN_CALIB}")
        ctx.calib_info = {"source": f"{ctx.cfg.dataset.get('path')} train split", "n": int(len(ctx.X_cal)),
                          "stratified_by_class": _counts(ycal)}

    # ---- reference: the source model's scores on the verification sample
    def reference(self, ctx: ExportContext) -> None:
        self.progress.stage("reference scores of the source model")
        o = self.opts
        if o.verify_n <= 0:
            return
        if ctx.data.available() and (ctx.data.splits().get("val") or []):
            ctx.X_ver, yv = ctx.data.sample("val", o.verify_n, o.seed)
            ctx.sample_info = {"source": "val split", "n": int(len(ctx.X_ver)), "classes": _counts(yv)}
        elif ctx.X_cal is not None:
            ctx.X_ver = ctx.X_cal[:o.verify_n]
            ctx.sample_info = {"source": "calibration images", "n": int(len(ctx.X_ver))}
        if ctx.X_ver is not None:
            ctx.ref = scores_from_output(ctx.spec, ctx.model.predict(ctx.X_ver, batch_size=32, verbose=0))

    # ---- borderline band: the source model's logit change under benign re-acquisition (band.py)
    def band(self, ctx: ExportContext) -> None:
        self.progress.stage("borderline band")
        mode = self.opts.borderline_band
        if mode == "off":
            ctx.band_info = {"band": None, "method": "off", "note": "--borderline-band off"}
            return
        if not isinstance(mode, str):
            ctx.band_info = band_mod.fixed_band(mode)
            return
        recs, source = self._band_records(ctx)
        if not recs:  # silently off: the note says why (metadata, manifest, one progress line)
            ctx.band_info = {"band": None, "method": "off", "note": source}
            self._say(f"      borderline band: none ({source})")
            return

        try:
            m = band_mod.measure_band(lambda x: ctx.model.predict(x, batch_size=32, verbose=0),
                                      [lambda r=r: load_image(r) for r in recs], ctx.pipeline, ctx.spec,
                                      ctx.cfg.threshold, source=source,
                                      settings=band_mod.BandSettings(seed=self.opts.seed),
                                      reference=f"source model ({Path(ctx.source).name})")
        except EdgeRetinaError as e:
            raise ExportError(f"{ctx.cfg_source}: cannot measure the borderline band ({e}); "
                              "--borderline-band off skips it") from None
        ctx.band_info = m.to_dict()
        self._say(f"      borderline band ±{m.band:.3f} logit ({m.quantile:g} quantile of the source model's "
                  f"|Δlogit| on {source} × {len(m.perturbations)} benign perturbations)")

    def _band_records(self, ctx: ExportContext) -> tuple[list, str]:
        """(up to band_n records, stratified; where from) for the auto band: the validation split, else the
        training split; never the test split. No records: ([], why)."""
        if ctx.spec.kind is TaskKind.MULTICLASS and ctx.spec.task is not Task.DR:
            return [], "an argmax task has no screening threshold"
        if not ctx.data.available():
            return [], "the run's dataset is not available to measure it on"
        splits = ctx.data.splits()
        name = "val" if splits.get("val") else "train"
        recs = splits.get(name) or []
        if len(recs) < band_mod.MIN_IMAGES:
            return [], f"only {len(recs)} {name} images, need at least {band_mod.MIN_IMAGES}"
        idx = calib_mod.stratified_indices([r.y for r in recs], self.opts.band_n, self.opts.seed)
        what = "validation" if name == "val" else "training"
        return [recs[i] for i in idx], f"{len(idx)} {what} images ({ctx.cfg.dataset.get('path')} {name} split)"

    def _say(self, line: str) -> None:
        if self.emit:
            self.emit(line)

    # ---- one variant through its stages
    def variant(self, ctx: ExportContext, info: VariantInfo, saved) -> ExportResult:
        o = self.opts
        logits = ctx.act is not None and (o.output == "logits" or (o.output == "auto" and info.full_integer))
        logits = logits or info.trains  # fine-tuned models are trained on logits
        b = _Build(info, logits, ctx.lmodel if logits else ctx.model, time.perf_counter())
        if info.guarded:  # no conversion: the int8 file of this export, with the band to the fp16 file
            self.guard(ctx, b)
            self.verify(ctx, b)
            return self.write(ctx, b)
        if info.trains:
            self.fine_tune(ctx, b)
        if o.head_split and o.uses_quantizer(info) and b.logits:
            self.split_head(ctx, b)
        if o.residual_weights and o.uses_quantizer(info) and b.logits:
            self.split_residual(ctx, b)
        self.convert(ctx, b, saved)
        if o.weight_rounding == "gptq" and o.uses_quantizer(info) and o.budget is None:
            self.reround(ctx, b, saved)
        elif o.uses_quantizer(info) and "weight_rounding" not in (b.quant_info or {}):  # (budgeted: set there)
            b.quant_info = {**(b.quant_info or {}), "weight_rounding": {"method": "nearest"}}
        if b.head_split:
            b.quant_info = {**(b.quant_info or {}), "head_split": b.head_split}
        if b.residual:
            b.quant_info = {**(b.quant_info or {}), "residual_weights": b.residual}
        if o.bias_correction and info.activations == "int8":
            self.correct(ctx, b)
        self.verify(ctx, b)
        return self.write(ctx, b)

    # ---- fine-tune (pruned / QAT); the pruned model is shared by pruned, pruned-int8 and pqat
    def fine_tune(self, ctx: ExportContext, b: _Build) -> None:
        info, ft = b.info, self.opts.finetune
        self.progress.stage(f"{info.variant.value}: fine-tune ({ft.steps} steps)")
        X, ya, cw = self._train_xy(ctx)
        b.ft_info = {**ft.to_dict(), "n_train_images": int(len(X))}
        with reporting(self.progress.ticker(f"{info.variant.value}: fine-tune")):
            if info.pruned and ctx.pruned is None:
                from .prune import keras_sparsity, prune

                t = time.perf_counter()
                ctx.pruned = prune(ctx.lmodel, X, ya, ctx.cfg.kind, self.opts.sparsity, ft, class_weight=cw,
                                   allocation=self.opts.allocation)
                ctx.pruned_info = {"prune_seconds": round(time.perf_counter() - t, 2),
                                   "keras_sparsity": keras_sparsity(ctx.pruned), "allocation": self.opts.allocation}
            if info.pruned:
                b.ft_info.update(ctx.pruned_info)
            b.km = ctx.pruned
            if info.qat:
                from edgeretina._keras import keras

                base = ctx.pruned if info.pruned else ctx.lmodel
                m = keras.models.clone_model(base)
                m.set_weights(base.get_weights())
                t = time.perf_counter()
                b.km = qat(m, X, ya, ctx.cfg.kind, ft, preserve_sparsity=info.pruned, class_weight=cw)
                b.ft_info["qat_seconds"] = round(time.perf_counter() - t, 2)

    def _train_xy(self, ctx: ExportContext) -> tuple:
        if ctx.train_xy is None:
            ft = self.opts.finetune
            if not ctx.data.available():
                ctx.data.splits()
            X, y = ctx.data.sample("train", ft.max_images, self.opts.seed)
            ya = labels_array(y, ctx.cfg.kind)
            if ft.distil:  # the source model's logits are the target
                ya = ctx.lmodel.predict(X, batch_size=32, verbose=0).astype(np.float32)
            ctx.train_xy = (X, ya, None if ft.distil else balanced_class_weight(ya, ctx.cfg.kind))
        return ctx.train_xy

    # ---- head split (--head-split K): the final linear Dense in K magnitude bands (headsplit.py)
    def split_head(self, ctx: ExportContext, b: _Build) -> None:
        key = id(b.km)
        if key not in ctx.splits:  # one split model per source (its SavedModel is reused by every variant)
            ctx.splits[key] = (b.km, *split_head(b.km, self.opts.head_split))
        _, b.km, hs = ctx.splits[key]
        b.head_split = hs.to_dict() if hs else {"applied": False, "reason": "no final linear Dense with a bias"}
        if hs:
            self._say(f"      {b.info.variant.value}: head split into {hs.units} units "
                      f"(max/median |w| {hs.max_over_median:g})")

    # ---- residual int8 weights (--residual-weights LAYERS): each layer as two int8 kernels (residual.py)
    def split_residual(self, ctx: ExportContext, b: _Build) -> None:
        key = ("residual", id(b.km))
        if key not in ctx.splits:  # one rewritten model per source (shared by every variant that uses it)
            ctx.splits[key] = (b.km, *residual_rewrite(b.km, self.opts.residual_weights, ctx.X_cal))
        _, b.km, done = ctx.splits[key]
        b.residual = {"layers": [d.to_dict() for d in done]}
        self._say(f"      {b.info.variant.value}: residual int8 kernels for "
                  + ", ".join(f"{d.layer} ({d.weights} weights, {d.activation})" for d in done))

    @staticmethod
    def _caps(b: _Build) -> dict[str, float] | None:
        """Upper ends of the residual layers' grid-kernel outputs (residual.py: lossless int8 range caps)."""
        caps = {f"/{d['layer']}_hi/": d["hi_cap"] for d in (b.residual or {}).get("layers", ())
                if d.get("hi_cap") is not None}
        return caps or None

    # ---- convert to .tflite bytes
    @staticmethod
    def float32_of(ctx: ExportContext, km, saved) -> bytes:
        """``km``'s float32 .tflite, converted once per export (the float32 variant, fp16's small constants,
        aeq's input and GPTQ's float weights all read the same bytes)."""
        from .tflite import convert

        if id(km) not in ctx.float32s:
            ctx.float32s[id(km)] = (km, convert(km, VARIANTS[Variant.FLOAT32], saved=saved))
        return ctx.float32s[id(km)][1]

    def convert(self, ctx: ExportContext, b: _Build, saved) -> None:
        from .tflite import convert, keep_small_float32

        info, o = b.info, self.opts
        self.progress.stage(f"{info.variant.value}: convert")
        if o.uses_quantizer(info):
            b.quant_info = {"backend": o.quantizer}
        from_tflite = getattr(b.km, "tflite_bytes", None) is not None  # only ai-edge-quantizer reads a .tflite
        if (o.quantizer == "aeq" or from_tflite) and o.uses_quantizer(info):  # float32 .tflite → aeq.py
            fb = b.float_buf = self.float32_of(ctx, b.km, saved)
            if o.budget is not None:
                self.budgeted(ctx, b, fb)
                return
            b.buf, q = aeq.quantize(fb, ctx.X_cal, o.io, o.ranges, caps=self._caps(b))
            b.quant_info = q.to_dict()
            return
        if info.variant is Variant.FLOAT32:
            b.buf = self.float32_of(ctx, b.km, saved)
            return
        rep = (lambda: (x[None] for x in ctx.X_cal)) if (info.calibration and ctx.X_cal is not None) else None
        b.buf = convert(b.km, info, representative=rep, io=o.io, allow_float_fallback=o.allow_float_fallback,
                        qat=info.qat, saved=saved)
        if info.weights == "float16":  # small constants back to float32 (tflite.py: keep_small_float32)
            b.buf, b.quant_info = keep_small_float32(b.buf, self.float32_of(ctx, b.km, saved))

    # ---- weight rounding (--weight-rounding gptq): int8 weights re-rounded on the layer inputs (gptq.py)
    def reround(self, ctx: ExportContext, b: _Build, saved) -> None:
        name = b.info.variant.value
        self.progress.stage(f"{name}: GPTQ weight rounding")
        fb = b.float_buf or self.float32_of(ctx, b.km, saved)  # same graph's float weights
        b.buf, info = gptq_mod.reround(b.buf, fb, ctx.X_cal, tick=self.progress.ticker(f"{name}: layer inputs"))
        d = info.to_dict()
        b.quant_info = {**(b.quant_info or {}), "weight_rounding": d}
        mse = d["heldout_output_mse_sum"]
        self._say(f"      {name}: GPTQ re-rounded {d['ops_gptq']} of {d['ops']} ops; held-out output error "
                  f"{mse['nearest']:.3g} -> {mse['shipped']:.3g} ({d['seconds']:.0f} s)")

    # ---- budget (--max-flips / --max-logit-noise): the fewest float layers within the budget (budget.py)
    def budgeted(self, ctx: ExportContext, b: _Build, fb: bytes) -> None:
        o = self.opts
        X_cal, X_hold, src = self._holdout(ctx)
        wr, gptq_buf = {"method": "nearest"}, None
        if o.weight_rounding == "gptq":  # the search then ranks activation rounding on GPTQ weights
            fb, wr, gptq_buf = self._gptq_float(b, fb, X_cal)
        q = aeq.Quantization(fb, X_cal, o.io, o.ranges, caps=self._caps(b))
        ref_logits = b.km.predict(X_cal, batch_size=32, verbose=0)

        def finish(buf: bytes) -> bytes:  # as the correct stage will ship it
            if not (o.bias_correction and b.logits and ctx.act is not None):
                return buf

            return correct_output_bias(buf, X_cal, ref_logits, softmax=(ctx.act == "softmax"))[0]

        X_rank = X_cal[:RANK_N]
        probe = Probe(ctx.spec, ctx.cfg.threshold, ctx.logit_output if b.logits else ctx.prob_output, X_rank,
                      _keras_scores(ctx.model, X_rank, ctx.spec, False), X_hold,
                      _keras_scores(ctx.model, X_hold, ctx.spec, False), src, finish)
        emit = (lambda line: self.emit(f"      {b.info.variant.value}: {line}")) if self.emit else None
        _, res = search(q, o.budget, probe, emit)
        b.buf = q.quantize([layer["scope"] for layer in res.float_layers])  # corrected by the correct stage
        ctx.bias_x = X_cal
        if gptq_buf is not None:
            wr = {**wr, "grid_match": round(grid_match(b.buf, gptq_buf), 6)}
        b.quant_info = {**q.info().to_dict(), "budget": res.to_dict(), "weight_rounding": wr}

    def _gptq_float(self, b: _Build, fb: bytes, X_cal: np.ndarray) -> tuple[bytes, dict, bytes]:
        """The float32 file with the GPTQ-rounded int8 weights of its all-int8 aeq file, dequantized
        (converters/gptqfloat.py); what GPTQ did; the GPTQ int8 file."""
        name = b.info.variant.value
        self.progress.stage(f"{name}: GPTQ weight rounding")
        int8, _ = aeq.quantize(fb, X_cal, self.opts.io, self.opts.ranges, caps=self._caps(b))
        g, info = gptq_mod.reround(int8, fb, X_cal, tick=self.progress.ticker(f"{name}: layer inputs"), pin_ends=True)
        out, n = rounded_float(fb, g)
        d = info.to_dict()
        self._say(f"      {name}: GPTQ re-rounded {d['ops_gptq']} of {d['ops']} ops; their int8 weights written "
                  f"into the float file ({n} ops) the budget search quantizes")
        return out, d, g

    def _holdout(self, ctx: ExportContext) -> tuple[np.ndarray, np.ndarray, str]:
        """(calibration images, hold-out images, where the hold-out came from): training images outside the
        calibration sample; with --calib PATH (or no dataset) the last third of the calibration images."""
        o = self.opts
        if o.calib is None and ctx.data.available():
            X, _ = ctx.data.holdout("train", o.calib_n, o.budget_n, o.seed)
            return ctx.X_cal, X, f"{len(X)} training images outside the calibration sample"
        m = len(ctx.X_cal) - max(len(ctx.X_cal) // 3, 1)
        return ctx.X_cal[:m], ctx.X_cal[m:], f"the last {len(ctx.X_cal) - m} calibration images, kept out of calibration"

    # ---- guard (int8-guard): the band from the int8 file's logit noise vs the float model
    def guard(self, ctx: ExportContext, b: _Build) -> None:
        """The int8 file written earlier in this export becomes the guard's graph; its logit noise against
        the source model on the calibration images sets the band (``converters/guard.py``)."""
        self.progress.stage(f"{b.info.variant.value}: measure the int8 logit noise")
        done = {r.variant: r for r in ctx.results}
        r8, r16 = done.get(Variant.INT8.value), done.get(Variant.FP16.value)
        if r8 is None or r16 is None:
            raise ExportError("int8-guard needs the int8 and fp16 variants of the same export")
        b.buf = (ctx.stage / Path(r8.path).name).read_bytes()
        b.quant_info, b.bias_info = r8.quantizer, r8.bias_correction
        X = ctx.bias_x if ctx.bias_x is not None else ctx.X_cal
        ref = _keras_scores(ctx.model, X, ctx.spec, False)
        s8 = scores_of(LiteRTModel(b.buf, threads=2, name="int8"), X, ctx.spec, r8.output)
        m = guard_mod.measure(ctx.spec, s8, ref, ctx.cfg.threshold, self.opts.guard_k)
        choice = None
        if self.opts.guard_max_flips is not None or self.opts.guard_max_latency is not None:  # k on held-out images
            k, choice = self._guard_choice(ctx, b.buf, (r8, r16), m["noise_rms"])
            m = guard_mod.measure(ctx.spec, s8, ref, ctx.cfg.threshold, k)
        check = None
        if ctx.X_ver is not None and ctx.ref is not None and len(ctx.X_ver):
            fp16 = LiteRTModel((ctx.stage / Path(r16.path).name).read_bytes(), threads=2, name="fp16")
            p8 = LiteRTModel(b.buf, threads=2, name="int8").probabilities(ctx.X_ver, r8.output)
            pc, mask = guard_mod.cascade(ctx.spec, p8, lambda k: fp16.probabilities(ctx.X_ver[k], r16.output),
                                         ctx.cfg.threshold, m["band"])

            sc = scores_from_output(ctx.spec, pc)
            check = {"sample": ctx.sample_info.get("source"), "n": int(len(mask)),
                     "rescored_share": float(mask.mean()),
                     "agreement": 1.0 - decision_flip_rate(ctx.spec, sc, ctx.ref, ctx.cfg.threshold)}
        b.guard_info = guard_mod.GuardInfo(
            fallback=Path(r16.path).name, fallback_sha256=r16.sha256, fallback_variant=r16.variant,
            n_images=int(len(X)), source=ctx.calib_info.get("source") or "calibration images", check=check,
            choice=choice, **m).to_dict()

    def _guard_choice(self, ctx: ExportContext, int8: bytes, results, noise_rms: float) -> tuple[float, dict]:
        """``--guard-max-flips`` / ``--guard-max-latency``: k by the cascade's screening flips vs the float model
        on the hold-out images (training images outside the calibration sample, as the flip budget's) and by its
        estimated mean latency, int8 + re-scored share × fp16, both timed batch-1 here (1 thread, XNNPACK)."""
        r8, r16 = results
        o = self.opts
        self.progress.stage("int8-guard: choose k on held-out images")
        _, X, where = self._holdout(ctx)
        ref = _keras_scores(ctx.model, X, ctx.spec, False)
        fp16 = (ctx.stage / Path(r16.path).name).read_bytes()
        outs = (LiteRTModel(int8, threads=2, name="int8").probabilities(X, r8.output),
                LiteRTModel(fp16, threads=2, name="fp16").probabilities(X, r16.output))
        ratio, timing = None, None
        if o.guard_max_latency is not None:
            xs = X[:GUARD_TIMING_IMAGES]
            t8 = LiteRTModel(int8, threads=1, name="int8").time(xs, runs=3, warmup=2)
            t16 = LiteRTModel(fp16, threads=1, name="fp16").time(xs, runs=3, warmup=2)
            ratio = t16.mean / t8.mean
            timing = {"int8_mean_ms": round(t8.mean, 4), "fp16_mean_ms": round(t16.mean, 4), "n": int(t8.n),
                      "threads": 1}
        k, choice = guard_mod.choose_k(ctx.spec, outs, ref, ctx.cfg.threshold, noise_rms, o.guard_max_flips,
                                       o.guard_max_latency, ratio)
        row = next(r for r in choice["table"] if r["k"] == k)
        said = [f"screening flips {100 * row['flips']:.2f} %"]
        if ratio is not None:
            said.append(f"est. {row['est_latency']:.2f}x the int8 latency (fp16 / int8 {ratio:.2f})")
        self._say(f"      int8-guard: k {k:g} (band {k * noise_rms:.3f}): " + ", ".join(said) + f" on {where}")
        return k, {**choice, "source": where, **({"timing": timing} if timing else {})}

    # ---- correct: output bias correction of int8-activation variants that output logits
    def correct(self, ctx: ExportContext, b: _Build) -> None:
        """Against the logits of the Keras model the file was converted from, on the calibration images
        (training images when the variant needed none)."""
        self.progress.stage(f"{b.info.variant.value}: bias correction")
        if not (b.logits and ctx.act is not None):
            return

        if ctx.bias_x is None:
            X = ctx.X_cal
            if X is None:
                if not ctx.data.available():
                    b.bias_info = {"applied": False, "reason": "no calibration images (dataset unavailable)"}
                    return
                X, _ = ctx.data.sample("train", self.opts.calib_n, self.opts.seed)
            ctx.bias_x = X
        ref = b.km.predict(ctx.bias_x, batch_size=32, verbose=0)
        b.buf, info = correct_output_bias(b.buf, ctx.bias_x, ref, softmax=(ctx.act == "softmax"))
        b.bias_info = info.to_dict()

    # ---- verify: metadata embedded, then the final bytes checked in LiteRT
    def verify(self, ctx: ExportContext, b: _Build) -> None:
        info, o = b.info, self.opts
        self.progress.stage(f"{info.variant.value}: verify in LiteRT")
        b.iface = io_details(interpreter(b.buf))
        if info.pruned:
            from .prune import tflite_sparsity

            b.sparsity = tflite_sparsity(b.buf)
        self._threshold(ctx, b)
        b.buf = embed_metadata(b.buf, self._payload(ctx, b))
        out_desc = ctx.logit_output if b.logits else ctx.prob_output
        against = Comparison(ctx.spec, out_desc, b.threshold, ctx.X_ver, b.ref_v,
                             sample=ctx.sample_info["source"] or "", reference=b.ref_name)
        budgeted = bool(((b.quant_info or {}).get("budget") or {}).get("float_layers"))  # float by design
        b.ver = verify(b.buf, info, o.io, against, allow_float_fallback=o.allow_float_fallback or budgeted)
        if info.trains and b.ver.scores is not None:
            b.ver = replace(b.ver, vs_source=drift(ctx.spec, b.ver.scores, b.threshold, ctx.ref, ctx.cfg.threshold))
        self.verify_arm(ctx, b)

    def verify_arm(self, ctx: ExportContext, b: _Build) -> None:
        """``--verify-arm``: the final bytes on emulated aarch64 CPUs vs x86 (armcheck.py); a differing
        decision fails the export."""
        o = self.opts
        if not o.verify_arm or ctx.X_ver is None:
            return
        x = ctx.X_ver[:o.verify_arm_n]
        self.progress.stage(f"{b.info.variant.value}: verify on emulated aarch64 ({', '.join(o.verify_arm)}; "
                            f"{len(x)} images)")
        job = armcheck.ArmJob(ctx.spec, b.threshold, b.logits, ctx.act, b.info.variant.value)
        b.arm = [c.to_dict() for c in armcheck.check_file(b.buf, x, job, o.verify_arm, ctx.arm_env)]

    def _threshold(self, ctx: ExportContext, b: _Build) -> None:
        """Conversion-only variants and distilled fine-tunes keep the source threshold; a binary variant
        fine-tuned on labels gets its own Youden threshold on the validation split (up to threshold_n)."""
        b.threshold, b.ref_v = ctx.cfg.threshold, ctx.ref
        if not b.info.trains or ctx.X_ver is None:
            return

        b.ref_v = _keras_scores(b.km, ctx.X_ver, ctx.spec, b.logits)
        b.ref_name = f"fine-tuned Keras model ({b.info.variant.value})"
        if self.opts.finetune.distil:
            b.threshold_source = "config.json (distilled from the source model)"
        elif ctx.spec.kind is not TaskKind.BINARY or not ctx.data.available() or not ctx.data.splits().get("val"):
            b.threshold_source = "config.json (not re-derived)"
        else:
            X, y = ctx.data.sample("val", self.opts.threshold_n, self.opts.seed)
            b.threshold = youden_threshold(np.asarray(y), _keras_scores(b.km, X, ctx.spec, b.logits))
            b.threshold_source = f"Youden J of the fine-tuned model on {len(X)} validation images"

    def _payload(self, ctx: ExportContext, b: _Build) -> dict[str, Any]:
        info, o = b.info, self.opts
        payload = ctx.cfg.to_dict()
        payload["output"] = ctx.logit_output if b.logits else ctx.prob_output
        payload["export"] = {
            "schema": META_SCHEMA, "variant": info.variant.value, "description": info.description,
            "weights": info.weights, "activations": info.activations, "io": _io_of(info, o.io),
            "interface": b.iface, "source_file": Path(ctx.source).name, "source_sha256": ctx.source_sha,
            "sparsity": b.sparsity, "target_sparsity": o.sparsity if info.pruned else None,
            "calibration": ctx.calib_info if info.calibration else None,
            "bias_correction": b.bias_info, "versions": package_versions(),
        }
        if b.quant_info is not None:
            payload["export"]["quantizer"] = _lean_quantizer(b.quant_info)
        if b.guard_info is not None:
            payload["export"]["guard"] = b.guard_info
        self._band_payload(ctx, payload)
        if info.trains:
            payload["threshold"] = b.threshold
            payload["export"]["source_threshold"] = ctx.cfg.threshold
            payload["export"]["threshold_source"] = b.threshold_source
        return payload

    @staticmethod
    def _band_payload(ctx: ExportContext, payload: dict[str, Any]) -> None:
        """``borderline_band`` (top level: what predict / bench / the Android core read) and its provenance
        (``export.borderline_band``); with ``off`` a band the run's config carries is dropped too."""
        info = ctx.band_info
        if info is None:
            return
        payload["export"]["borderline_band"] = info
        if info.get("band") is not None:
            payload[band_mod.BAND_KEY] = info["band"]
        elif info.get("method") == "off" and band_mod.BAND_KEY in (payload.get("extra") or {}):
            payload["extra"] = {k: v for k, v in payload["extra"].items() if k != band_mod.BAND_KEY}

    # ---- write the verified bytes into the staging folder
    def write(self, ctx: ExportContext, b: _Build) -> ExportResult:
        info = b.info
        name = f"{ctx.stem}_{info.suffix}.tflite"
        write_bytes_atomic(ctx.stage / name, b.buf)
        res = ExportResult(
            variant=info.variant.value, path=str(ctx.out / name), size_bytes=len(b.buf),
            gzip_bytes=len(gzip.compress(b.buf, 9)), sha256=hashlib.sha256(b.buf).hexdigest(),
            seconds=round(time.perf_counter() - b.t0, 2), io=_io_of(info, self.opts.io),
            output=ctx.logit_output if b.logits else ctx.prob_output, interface=b.iface,
            verification=b.ver.to_dict(), sparsity=b.sparsity,
            target_sparsity=self.opts.sparsity if info.pruned else None, finetune=b.ft_info,
            bias_correction=b.bias_info, quantizer=b.quant_info, guard=b.guard_info, arm_parity=b.arm)
        ctx.results.append(res)
        if self.on_result:
            self.on_result(res)
        return res

    # ---- publish: manifest written and every listed file re-hashed in the staging folder, then one rename
    def publish(self, ctx: ExportContext, st: StagedDir, seconds: float) -> ExportReport:
        self.progress.stage("publish")
        report = ExportReport(
            source=ctx.source, source_sha256=ctx.source_sha, out_dir=str(ctx.out), results=tuple(ctx.results),
            calibration=ctx.calib_info, verification_sample=ctx.sample_info, config=ctx.cfg.to_dict(),
            versions=package_versions(), options=self.opts.to_manifest(seconds), borderline_band=ctx.band_info)
        d = report.to_dict()
        if ctx.kept:
            order = [v.value for v in Variant]
            d["results"] = sorted(ctx.kept + d["results"], key=lambda r: order.index(r["variant"])
                                  if r["variant"] in order else 99)
        for r in d["results"]:
            f = st.path / Path(r["path"]).name
            if not f.is_file() or file_sha256(f) != r["sha256"]:
                raise ExportError(f"{f.name}: the staged file does not match its manifest entry; nothing "
                                  "was published")
        write_json_atomic(st.path / MANIFEST, d)
        st.publish()
        return report


class _CarryRules:
    """``keep(path)`` for :class:`StagedDir`, computed once on first use (under the lock)."""

    def __init__(self, exporter: Exporter, ctx: ExportContext):
        self.exporter, self.ctx, self._rules = exporter, ctx, None

    def compute(self) -> bool:
        """Compute the rules (if not yet) and return ``fresh``."""
        if self._rules is None:
            self._rules = self.exporter.carry_rules(self.ctx)
        return self._rules[1]

    def __call__(self, p: Path) -> bool:
        self.compute()
        return p.name not in self._rules[0]


def export_model(model_or_run_dir, variants: Sequence[str | Variant] | None = None,
                 out_dir: str | Path | None = None, calib: str | Path | None = None, *,
                 config: RunConfig | None = None, options: ExportOptions | None = None,
                 on_result: Callable[[ExportResult], None] | None = None,
                 progress: Callable[[str], None] | None = None, **option_fields) -> ExportReport:
    """Export a run dir / ``.keras`` file (or a Keras model with ``config=``) into ``variants``.

    ``option_fields`` are :class:`ExportOptions` fields (``io``, ``sparsity``, ``allocation``, ``calib_n``,
    ``verify_n``, ``threshold_n``, ``allow_float_fallback``, ``finetune``, ``steps``, ``output``, ``seed``,
    ``bias_correction``), or pass ``options=``. ``output``: ``auto`` (full-integer variants output logits —
    the int8 softmax output step of 1/256 is coarse near low screening thresholds — float variants keep
    probabilities), ``logits`` or ``probabilities``. ``bias_correction``: fold the mean logit error of each
    int8-activation variant against the source model (calibration images) into its output bias.
    ``progress``: called with one line per stage. Returns the report; ``manifest.json`` is published with the
    files, all together (see :class:`Exporter`).
    """
    if options is None:
        options = ExportOptions(variants=variants, calib=None if calib is None else str(calib), **option_fields)
    elif variants is not None or calib is not None or option_fields:
        raise TypeError("export_model: pass either options= or variants/calib/option fields, not both")
    return Exporter(options, on_result=on_result, progress=progress).run(model_or_run_dir, out_dir, config)


def _lean_quantizer(q: dict) -> dict:
    """The quantizer record for the file's metadata: GPTQ's per-op list stays in the manifest only (about
    200 bytes per op in every shipped file otherwise)."""
    wr = q.get("weight_rounding")
    if not isinstance(wr, dict) or "layers" not in wr:
        return q
    return {**q, "weight_rounding": {**{k: v for k, v in wr.items() if k != "layers"}, "layers": "manifest.json"}}


def _io_of(info: VariantInfo, io: IO) -> str:
    return io.value if info.integer_io else "float"


def _read_manifest(path: Path) -> dict | None:
    if not path.is_file():
        return None
    try:
        old = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError, OSError):
        return {}
    return old if isinstance(old, dict) else {}


def scores_of(model, X, spec, output: dict) -> np.ndarray:
    """Task scores of a LiteRT model (``runtime.LiteRTModel``) whose output is described by ``output``."""
    return scores_from_output(spec, model.probabilities(X, output))


def _keras_scores(km, X, spec, logits: bool) -> np.ndarray:
    out = km.predict(X, batch_size=32, verbose=0)
    return scores_from_output(spec, activate(out, spec.activation) if logits else out)


def _counts(y) -> dict[str, int]:
    keys = [calib_mod.label_key(v) for v in y]
    return {k: keys.count(k) for k in sorted(set(keys))}


def _parse_io(io) -> IO:
    try:
        return IO(getattr(io, "value", io))
    except ValueError:
        raise ExportError(f"unknown --io '{io}' (choose int8 or float)") from None


def _parse_variants(variants) -> tuple[Variant, ...]:
    if variants is None:
        return DEFAULT
    if isinstance(variants, (str, Variant)):
        variants = [variants]
    vs = [parse_variant(v) for v in variants]
    if not vs:
        raise ExportError("no variant to export")
    return tuple(dict.fromkeys(vs))
