"""``export_model``: one Keras run → the requested .tflite variants + manifest.json, verified.

Order of work per variant: (fine-tune if pruned/QAT) → convert to bytes → embed metadata → verify the final
bytes in LiteRT → write atomically. Any failure before the rename leaves no .tflite behind.
"""
from __future__ import annotations

import gzip
import hashlib
import json
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from edgeretina.errors import EdgeRetinaError, ExportError, ModelError
from edgeretina.io import SizedArtifact, ensure_writable_dir, write_bytes_atomic, write_json_atomic
from edgeretina.run import MODEL_FILE, RunConfig, file_sha256, resolve_model_path

from . import calib as calib_mod
from .finetune import FineTune
from .metadata import SCHEMA as META_SCHEMA
from .metadata import embed_metadata
from .variants import DEFAULT, IO, VARIANTS, Variant, parse_variant
from .verify import drift, verify

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


def package_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for pkg in ("edgeretina", "tensorflow", "tf-keras", "tensorflow-model-optimization", "ai-edge-litert", "numpy"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out


def load_keras_model(path: Path):
    from edgeretina._keras import keras

    try:
        import edgeretina.models  # noqa: F401 - registers custom head layers, if any
    except ImportError:
        pass
    try:
        return keras.models.load_model(str(path), compile=False)
    except (OSError, ValueError, TypeError, KeyError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelError(f"{path}: cannot load Keras model ({first[:200]})") from None


def _stem(model_path: Path) -> str:
    return model_path.parent.name if model_path.name == MODEL_FILE else model_path.stem


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


def export_model(model_or_run_dir, variants: Sequence[str | Variant] | None = None,
                 out_dir: str | Path | None = None, calib: str | Path | None = None, *,
                 config: RunConfig | None = None, io: str | IO = IO.INT8, sparsity: float = 0.5,
                 allocation: str = "uniform",
                 calib_n: int = 200, verify_n: int = 64, threshold_n: int = 500, allow_float_fallback: bool = False,
                 finetune: FineTune | None = None, output: str = "auto", seed: int = 0,
                 bias_correction: bool = True,
                 on_result: Callable[[ExportResult], None] | None = None) -> ExportReport:
    """Export a run dir / ``.keras`` file (or a Keras model with ``config=``) into ``variants``.

    ``output``: ``auto`` (full-integer variants output logits — the int8 softmax output step of 1/256 is
    coarse near low screening thresholds — float variants keep probabilities), ``logits`` or
    ``probabilities`` for every variant. The metadata's ``output`` says which, so runners know.
    ``bias_correction``: fold the mean logit error of each int8-activation variant against the source model
    (on the calibration images) into its output bias (``converters/biascorr.py``).
    Returns the report; ``manifest.json`` is written beside the files.
    """
    t_all = time.perf_counter()
    io = _parse_io(io)
    vs = _parse_variants(variants)
    infos = [VARIANTS[v] for v in vs]
    if any(i.pruned for i in infos):
        from .prune import ALLOCATIONS, check_sparsity

        sparsity = check_sparsity(sparsity)
        if allocation not in ALLOCATIONS:
            raise ExportError(f"unknown --allocation '{allocation}' (choose {' or '.join(ALLOCATIONS)})")
    if output not in ("auto", "logits", "probabilities"):
        raise ExportError(f"unknown output '{output}' (choose auto, logits or probabilities)")
    ft = finetune or FineTune(seed=seed)

    # ---- source model + config
    if isinstance(model_or_run_dir, (str, Path)):
        model_path, cfg = resolve_model_path(model_or_run_dir)
        source, source_sha = str(model_path), file_sha256(model_path)
        cfg_source = str(model_path.parent / "config.json")
        out = Path(out_dir) if out_dir else model_path.parent / "export"
        stem = _stem(model_path)
    else:
        if config is None:
            raise ModelError("export_model(model=...) needs config=RunConfig (labels, preprocessing, threshold)")
        model_path, cfg, source, source_sha, cfg_source = None, config, "<keras model>", None, "config"
        if out_dir is None:
            raise ExportError("export_model(model=...) needs out_dir")
        out, stem = Path(out_dir), getattr(model_or_run_dir, "name", "model")
    try:
        spec = cfg.spec
    except EdgeRetinaError as e:
        raise ModelError(f"{cfg_source}: {e}") from None
    pipeline = calib_mod.pipeline_of(cfg, cfg_source)
    out = ensure_writable_dir(out)
    model = load_keras_model(model_path) if model_path is not None else model_or_run_dir
    from .tflite import input_shape, logits_model

    shape = input_shape(model)
    if pipeline.input_size is not None and pipeline.input_size != shape[0]:
        raise ModelError(f"{cfg_source}: preprocessing resizes to {pipeline.input_size} px but the model "
                         f"takes {shape[0]} px")
    data = _Data(cfg, cfg_source, pipeline)

    # ---- calibration set (only if a variant needs it)
    calib_info: dict[str, Any] = {}
    X_cal = None
    if any(i.calibration for i in infos):
        if calib is not None:
            X_cal = calib_mod.from_path(calib, pipeline, shape, n=calib_n, seed=seed)
            calib_info = {"source": str(calib), "n": int(len(X_cal))}
        else:
            if not data.available():
                data.splits()  # raises the one-line reason
            X_cal, ycal = data.sample("train", calib_n, seed)
            if len(X_cal) < calib_mod.MIN_CALIB:
                raise ExportError(f"{cfg_source}: only {len(X_cal)} training images for calibration, "
                                  f"need at least {calib_mod.MIN_CALIB}")
            calib_info = {"source": f"{cfg.dataset.get('path')} train split", "n": int(len(X_cal)),
                          "stratified_by_class": _counts(ycal)}

    # ---- verification sample: validation split, else the calibration images
    X_ver, sample_info = None, {"source": None, "n": 0}
    if verify_n > 0:
        if data.available() and (data.splits().get("val") or []):
            X_ver, yv = data.sample("val", verify_n, seed)
            sample_info = {"source": "val split", "n": int(len(X_ver)), "classes": _counts(yv)}
        elif X_cal is not None:
            X_ver = X_cal[:verify_n]
            sample_info = {"source": "calibration images", "n": int(len(X_ver))}
    ref = None
    if X_ver is not None:
        from edgeretina.tasks import scores_from_output

        ref = scores_from_output(spec, model.predict(X_ver, batch_size=32, verbose=0))

    # ---- the models each variant converts
    lmodel, act = logits_model(model)
    prob_output = dict(cfg.output or {"kind": "probabilities", "activation": spec.activation})
    logit_output = {"kind": "logits", "activation": act} if act else prob_output

    def wants_logits(info) -> bool:
        return act is not None and (output == "logits" or (output == "auto" and info.full_integer))

    from .tflite import SavedModels

    train_cache: dict[str, Any] = {}
    results: list[ExportResult] = []
    with SavedModels() as saved:
        for info in infos:
            t0 = time.perf_counter()
            logits = wants_logits(info) or info.trains  # fine-tuned models are trained on logits
            out_desc = logit_output if logits else prob_output
            km = lmodel if logits else model
            ft_info = None
            if info.trains:
                km, ft_info = _trained(info, lmodel, cfg, data, ft, (sparsity, allocation), train_cache, seed)
            from .tflite import convert

            rep = (lambda: (x[None] for x in X_cal)) if (info.calibration and X_cal is not None) else None
            buf = convert(km, info, representative=rep, io=io, allow_float_fallback=allow_float_fallback,
                          qat=info.qat, saved=saved)
            bias_info = None
            if bias_correction and info.activations == "int8" and logits and act is not None:
                buf, bias_info = _correct_bias(buf, km, act, X_cal, data, calib_n, seed, train_cache)
            from .verify import interpreter, io_details

            iface = io_details(interpreter(buf))
            measured = None
            if info.pruned:
                from .prune import tflite_sparsity

                measured = tflite_sparsity(buf)
            payload = cfg.to_dict()
            payload["output"] = out_desc
            payload["export"] = {
                "schema": META_SCHEMA, "variant": info.variant.value, "description": info.description,
                "weights": info.weights, "activations": info.activations,
                "io": io.value if info.full_integer and not info.mixed else "float", "interface": iface,
                "source_file": Path(source).name, "source_sha256": source_sha,
                "sparsity": measured, "target_sparsity": sparsity if info.pruned else None,
                "calibration": calib_info if info.calibration else None,
                "bias_correction": bias_info,
                "versions": package_versions(),
            }
            threshold, ref_v, ref_name = cfg.threshold, ref, "source Keras model"
            if info.trains and X_ver is not None:
                ref_v = _keras_scores(km, X_ver, spec, logits)
                ref_name = f"fine-tuned Keras model ({info.variant.value})"
                if not ft.distil:  # a model distilled from the source keeps the source's threshold
                    threshold = _rederive_threshold(km, cfg, spec, data, logits, train_cache, seed,
                                                    threshold_n)
                else:
                    train_cache["threshold_source"] = "config.json (distilled from the source model)"
            if info.trains:
                payload["threshold"] = threshold
                payload["export"]["source_threshold"] = cfg.threshold
                payload["export"]["threshold_source"] = train_cache.get("threshold_source")
            buf = embed_metadata(buf, payload)
            ver = verify(buf, info, io, spec, out_desc, threshold, X_ver, ref_v,
                         allow_float_fallback=allow_float_fallback, sample=sample_info["source"] or "",
                         reference=ref_name)
            if info.trains and ver.scores is not None:
                from dataclasses import replace

                ver = replace(ver, vs_source=drift(spec, ver.scores, threshold, ref, cfg.threshold))
            target = out / f"{stem}_{info.suffix}.tflite"
            write_bytes_atomic(target, buf)
            res = ExportResult(
                variant=info.variant.value, path=str(target), size_bytes=len(buf),
                gzip_bytes=len(gzip.compress(buf, 9)), sha256=hashlib.sha256(buf).hexdigest(),
                seconds=round(time.perf_counter() - t0, 2),
                io=io.value if info.full_integer and not info.mixed else "float",
                output=out_desc, interface=iface, verification=ver.to_dict(), sparsity=measured,
                target_sparsity=sparsity if info.pruned else None, finetune=ft_info, bias_correction=bias_info)
            results.append(res)
            if on_result:
                on_result(res)

    report = ExportReport(
        source=source, source_sha256=source_sha, out_dir=str(out), results=tuple(results),
        calibration=calib_info, verification_sample=sample_info, config=cfg.to_dict(),
        versions=package_versions(),
        options={"io": io.value, "sparsity": sparsity if any(i.pruned for i in infos) else None,
                 "allocation": allocation if any(i.pruned for i in infos) else None,
                 "calib_n": calib_n, "verify_n": verify_n, "allow_float_fallback": allow_float_fallback,
                 "output": output, "finetune": ft.to_dict() if any(i.trains for i in infos) else None,
                 "bias_correction": bias_correction,
                 "seconds": round(time.perf_counter() - t_all, 2)})
    _save_manifest(report)
    return report


def _counts(y) -> dict[str, int]:
    keys = [calib_mod._label_key(v) for v in y]  # noqa: SLF001
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


def _trained(info, lmodel, cfg: RunConfig, data: _Data, ft: FineTune, pruning: tuple[float, str], cache: dict,
             seed: int):
    """Fine-tuned Keras model for a pruned / QAT variant (the pruned model is shared by pruned,
    pruned-int8 and pqat)."""
    from .finetune import balanced_class_weight, labels_array

    if "xy" not in cache:
        if not data.available():
            data.splits()
        X, y = data.sample("train", ft.max_images, seed)
        ya = labels_array(y, cfg.kind)
        if ft.distil:  # the source model's logits are the target
            ya = lmodel.predict(X, batch_size=32, verbose=0).astype(np.float32)
        cache["xy"] = (X, ya, None if ft.distil else balanced_class_weight(ya, cfg.kind))
    X, ya, cw = cache["xy"]
    info_d: dict[str, Any] = {**ft.to_dict(), "n_train_images": int(len(X))}
    if info.pruned and "pruned" not in cache:
        from .prune import keras_sparsity, prune

        t = time.perf_counter()
        sparsity, allocation = pruning
        pm = prune(lmodel, X, ya, cfg.kind, sparsity, ft, class_weight=cw, allocation=allocation)
        cache["pruned"] = pm
        cache["pruned_info"] = {"prune_seconds": round(time.perf_counter() - t, 2),
                                "keras_sparsity": keras_sparsity(pm), "allocation": allocation}
    if info.pruned:
        info_d.update(cache["pruned_info"])
    if not info.qat:
        return cache["pruned"], info_d
    from edgeretina._keras import keras

    from .qat import qat

    base = cache["pruned"] if info.pruned else lmodel
    m = keras.models.clone_model(base)
    m.set_weights(base.get_weights())
    t = time.perf_counter()
    qm = qat(m, X, ya, cfg.kind, ft, preserve_sparsity=info.pruned, class_weight=cw)
    info_d["qat_seconds"] = round(time.perf_counter() - t, 2)
    return qm, info_d


def _correct_bias(buf: bytes, km, act: str, X_cal, data: "_Data", calib_n: int, seed: int, cache: dict):
    """Output bias correction against the logits of the Keras model the file was converted from (the source
    model for post-training variants; the pruned / QAT model, itself distilled from the source, otherwise), on
    the calibration images (training images when the variant needed none)."""
    from .biascorr import correct_output_bias

    if "bias_x" not in cache:
        X = X_cal
        if X is None:
            if not data.available():
                return buf, {"applied": False, "reason": "no calibration images (dataset unavailable)"}
            X, _ = data.sample("train", calib_n, seed)
        cache["bias_x"] = X
    X = cache["bias_x"]
    ref = km.predict(X, batch_size=32, verbose=0)
    new, info = correct_output_bias(buf, X, ref, softmax=(act == "softmax"))
    return new, info.to_dict()


def _keras_scores(km, X, spec, logits: bool) -> np.ndarray:
    from edgeretina.tasks import activate, scores_from_output

    out = km.predict(X, batch_size=32, verbose=0)
    return scores_from_output(spec, activate(out, spec.activation) if logits else out)


def _rederive_threshold(km, cfg: RunConfig, spec, data: "_Data", logits: bool, cache: dict, seed: int, n: int):
    """Fine-tuning moves the score distribution, so a binary pruned/QAT variant gets its own Youden
    threshold on the validation split (up to ``n`` images); otherwise the config's threshold is kept."""
    from edgeretina.tasks import TaskKind

    if spec.kind is not TaskKind.BINARY or not data.available() or not data.splits().get("val"):
        cache["threshold_source"] = "config.json (not re-derived)"
        return cfg.threshold
    from edgeretina.metrics import youden_threshold

    X, y = data.sample("val", n, seed)
    thr = youden_threshold(np.asarray(y), _keras_scores(km, X, spec, logits))
    cache["threshold_source"] = f"Youden J of the fine-tuned model on {len(X)} validation images"
    return thr


def _save_manifest(report: ExportReport) -> Path:
    """Write manifest.json; entries for other variants from an earlier export of the SAME source model into
    the same folder are kept if their files are still there unchanged."""
    path = report.manifest_path
    d = report.to_dict()
    if path.is_file():
        try:
            old = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError, OSError):
            old = None
        if isinstance(old, dict) and old.get("source_sha256") == report.source_sha256 and report.source_sha256:
            mine = {r["variant"] for r in d["results"]}
            kept = [r for r in old.get("results", []) if r.get("variant") not in mine
                    and Path(r.get("path", "")).is_file() and file_sha256(r["path"]) == r.get("sha256")]
            if kept:
                order = [v.value for v in Variant]
                d["results"] = sorted(kept + d["results"], key=lambda r: order.index(r["variant"])
                                      if r["variant"] in order else 99)
    return write_json_atomic(path, d)
