"""``edgeretina import``: a fundus classifier made elsewhere → a run dir that ``export``, ``bench``,
``predict``, ``calibrate`` and the Android app use unchanged (issue 19).

Accepted: a Keras 2 ``.h5``/``.keras`` (tf_keras), a Keras 3 ``.keras`` (loaded with Keras 3, exported to a
SavedModel), a TensorFlow SavedModel folder, a float ``.tflite``. Stages: options checked (no model loaded)
→ the format sniffed from the bytes → the model loaded and its inputs/outputs inspected → checked against the
task (one NHWC float32 image input with 3 channels, square; output width vs the labels) → output kind
(probabilities or logits: the final layer of a Keras model, else the outputs on probe images, or
``--output``) → the output mapped to the project's convention (binary: 2 softmax columns, the score is
p(positive) = column ``positive_index``; a 1-column sigmoid is lifted to 2 columns, columns reordered to the
task's label order) → the threshold (``--threshold``, or Youden / target sensitivity on a labelled set) →
the run dir built in a staging folder beside ``--out``, re-opened and checked against the original model on
the probe images, then published in one rename. Any problem: one-line error, nothing written.

The stored model (``converters/sources.py``): ``model.keras`` (Keras 2: every variant, pruned/QAT included),
``saved_model/`` (SavedModel, Keras 3: graph-only variants) or ``model.tflite`` (float .tflite: graph-only
variants through ai-edge-quantizer).
"""
from __future__ import annotations

import json
import tempfile
import time
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from edgeretina.data import load_arrays, open_dataset
from edgeretina.errors import EdgeRetinaError, ModelError
from edgeretina.io import StagedDir, write_bytes_atomic, write_json_atomic
from edgeretina.metrics import evaluate, threshold_at_sensitivity, youden_threshold
from edgeretina.preprocess import MAX_INPUT_SIZE, Pipeline, Scaling
from edgeretina.run import MODEL_FILE, RunConfig
from edgeretina.runtime import LiteRTModel
from edgeretina.tasks import TaskKind, TaskSpec, activate, scores_from_output, task_spec
from edgeretina.train.helpers import save_clean_model

from .calib import stratified_indices
from .export import load_keras_model, quiet_native_stderr
from .sources import (INPUT_NAME, OUTPUT_NAME, SAVED_MODEL_DIR, SIGNATURE, TFLITE_FILE, SourceFormat, open_source,
                      source_sha256)

PRESETS = tuple(s.value for s in Scaling)  # tf [-1, 1], caffe, torch, unit [0, 1], none [0, 255]
OUTPUT_KINDS = ("probabilities", "logits")
REPORT = "import.json"
N_PROBE = 8
MAX_DIFF = 1e-4  # the stored model vs the original, on the probe images (probabilities)

PRESET_HELP = ("tf = x/127.5−1 [−1, 1], caffe = BGR minus the ImageNet means, torch = ImageNet mean/std on x/255, "
               "unit = x/255 [0, 1], none = raw 0..255")


class ImportRefused(EdgeRetinaError):
    """A model or option ``edgeretina import`` cannot use (one line, exit 2, nothing written)."""


# ------------------------------------------------------------------------------------------ options


@dataclass(frozen=True)
class ImportOptions:
    """What ``edgeretina import`` is asked to do; checked before any model is loaded.

    ``labels``: the model's output columns in order (task ``classes``: required; other tasks: the task's
    labels, possibly in another order). ``preprocess``: a preset (``PRESETS``) or a pipeline.json path.
    ``output``: what the model emits (None: detected). ``threshold`` or ``data`` (labelled set: Youden, or
    ``sensitivity`` target) sets the decision threshold of binary / multi-label tasks."""

    task: str
    preprocess: str | None = None
    labels: tuple[str, ...] | None = None
    input_size: int | None = None
    output: str | None = None
    threshold: float | None = None
    data: str | None = None
    sensitivity: float | None = None
    max_images: int = 1000
    seed: int = 0

    def __post_init__(self):
        if self.labels is not None:
            labels = tuple(x.strip() for x in self.labels)
            if not labels or any(not x for x in labels) or len(set(labels)) != len(labels):
                raise ImportRefused(f"--labels must be distinct non-empty names, got {','.join(self.labels)!r}")
            object.__setattr__(self, "labels", labels)
        spec = self.spec  # unknown task / classes without labels → one line
        if self.labels is not None and spec.task.value != "classes" and sorted(self.labels) != sorted(spec.labels):
            raise ImportRefused(f"--labels {','.join(self.labels)} are not the labels of task '{spec.task.value}' "
                                f"({', '.join(spec.labels)}); give those, in the model's column order")
        if self.preprocess is None:
            raise ImportRefused(f"--preprocess is required: how the model's input is scaled — one of "
                                f"{', '.join(PRESETS)} ({PRESET_HELP}) — or a pipeline.json")
        if self.output is not None and self.output not in OUTPUT_KINDS:
            raise ImportRefused(f"unknown --output '{self.output}' (choose probabilities or logits)")
        if self.input_size is not None and not 16 <= self.input_size <= MAX_INPUT_SIZE:
            raise ImportRefused(f"--input-size must be in 16..{MAX_INPUT_SIZE}, got {self.input_size}")
        if self.max_images < 2:
            raise ImportRefused(f"--max-images must be >= 2, got {self.max_images}")
        self._check_threshold(spec)

    def _check_threshold(self, spec: TaskSpec) -> None:
        if self.threshold is not None and self.data is not None:
            raise ImportRefused("give --threshold or --data (a threshold derived on labelled images), not both")
        if self.sensitivity is not None:
            if self.data is None:
                raise ImportRefused("--sensitivity derives the threshold on a labelled set: add --data PATH")
            if not 0.0 < self.sensitivity <= 1.0:
                raise ImportRefused(f"--sensitivity must be in (0, 1], got {self.sensitivity}")
        if self.threshold is not None and not (np.isfinite(self.threshold) and 0.0 <= self.threshold <= 1.0):
            raise ImportRefused(f"--threshold is a probability in [0, 1], got {self.threshold}")
        if spec.kind is TaskKind.MULTICLASS:
            if self.threshold is not None or self.sensitivity is not None:
                rule = "the expected grade" if spec.ordinal else "argmax"
                raise ImportRefused(f"task '{spec.task.value}' decides by {rule}: --threshold/--sensitivity do not apply")
            return
        if self.threshold is None and self.data is None:
            pos = f"p({spec.labels[spec.positive_index]})" if spec.kind is TaskKind.BINARY else "each label's score"
            raise ImportRefused(f"no decision threshold: pass --threshold X (the cut-off on {pos} the model was "
                                "validated at), or --data LABELLED_SET [--youden | --sensitivity 0.9] to derive it")

    @property
    def spec(self) -> TaskSpec:
        try:
            return task_spec(self.task, self.labels if self.task == "classes" else None)
        except EdgeRetinaError as e:
            raise ImportRefused(f"--task: {e}") from None

    def pipeline(self, size: int) -> Pipeline:
        """The preset's standard pipeline at ``size`` px, or the pipeline.json (which must resize to it)."""
        if self.preprocess in PRESETS:
            return Pipeline.default(size, self.preprocess)
        p = Path(self.preprocess)
        if not p.is_file():
            raise ImportRefused(f"--preprocess {self.preprocess!r}: neither a preset ({', '.join(PRESETS)}) "
                                "nor a pipeline.json file")
        try:
            pipe = Pipeline.from_json(p.read_text())
        except (EdgeRetinaError, UnicodeDecodeError, KeyError, TypeError, ValueError) as e:
            raise ImportRefused(f"{p}: not a usable pipeline ({str(e).splitlines()[0][:200]})") from None
        if pipe.input_size != size:
            raise ImportRefused(f"{p}: the pipeline resizes to {pipe.input_size} px but the model takes {size} px")
        return pipe


# ------------------------------------------------------------------------------------------ the model


@dataclass
class Loaded:
    """The model as handed over: format, inspected tensors and a way to run it."""

    fmt: SourceFormat
    path: Path
    inputs: list[dict]          # {"name", "shape" (None = dynamic), "dtype"}
    outputs: list[dict]
    final_activation: str | None = None   # Keras: the last layer's softmax/sigmoid
    obj: Any = None                       # Keras 2 model | (loaded SavedModel, signature fn) | tflite bytes
    keep: Any = None                      # a temporary folder kept alive (Keras 3's SavedModel)

    def facts(self) -> dict[str, Any]:
        return {"inputs": self.inputs, "outputs": self.outputs}


def sniff_format(path: Path) -> SourceFormat:
    """The model's format from its bytes (the extension alone is not trusted)."""
    if not path.exists():
        raise ImportRefused(f"{path}: no such file or directory")
    if path.is_dir():
        if (path / "saved_model.pb").is_file() or (path / "saved_model.pbtxt").is_file():
            return SourceFormat.SAVED_MODEL
        if (path / MODEL_FILE).is_file() or (path / "config.json").is_file():
            raise ImportRefused(f"{path}: already an edgeretina run dir; export it directly")
        raise ImportRefused(f"{path}: a folder without saved_model.pb is not a SavedModel")
    try:
        with open(path, "rb") as f:
            head = f.read(16)
    except OSError as e:
        raise ImportRefused(f"{path}: unreadable ({e.strerror or e})") from None
    if head.startswith(b"\x89HDF\r\n\x1a\n"):
        return SourceFormat.KERAS2
    if head[4:8] == b"TFL3":
        return SourceFormat.TFLITE
    if head.startswith(b"PK") and zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as z:
                meta = json.loads(z.read("metadata.json"))
        except (KeyError, ValueError, zipfile.BadZipFile, OSError):
            raise ImportRefused(f"{path}: a zip without Keras metadata.json is not a .keras model") from None
        major = str(meta.get("keras_version", "")).split(".")[0]
        return SourceFormat.KERAS3 if major == "3" else SourceFormat.KERAS2
    raise ImportRefused(f"{path}: unreadable as a model (not HDF5 .h5, .keras, SavedModel or .tflite)")


def _dims(shape) -> list[int | None]:
    return [None if d is None or (isinstance(d, (int, np.integer)) and d < 0) else int(d) for d in shape]


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:200]


def load_model(path: Path, fmt: SourceFormat) -> Loaded:
    if fmt is SourceFormat.KERAS2:
        m = load_keras_model(path)
        from .tflite import final_activation  # heavy: tflite.py imports TensorFlow

        return Loaded(fmt, path, _keras_tensors(m.inputs), _keras_tensors(m.outputs), final_activation(m), m)
    if fmt is SourceFormat.KERAS3:
        return _load_keras3(path)
    if fmt is SourceFormat.SAVED_MODEL:
        return _load_saved_model(path, fmt)
    return _load_tflite(path)


def _keras_tensors(ts) -> list[dict]:
    return [{"name": str(getattr(t, "name", f"t{i}")).split(":")[0].split("/")[0], "shape": _dims(tuple(t.shape)),
             "dtype": str(getattr(t.dtype, "name", t.dtype))} for i, t in enumerate(ts)]


def _load_keras3(path: Path) -> Loaded:
    try:
        import keras as keras3
    except ImportError as e:
        raise ImportRefused(f"{path}: a Keras 3 model needs the 'keras' 3 package ({e})") from None
    try:
        m = keras3.saving.load_model(str(path), compile=False)
    except Exception as e:  # noqa: BLE001 - Keras raises ValueError/TypeError/KeyError/...
        raise ImportRefused(f"{path}: cannot load the Keras 3 model ({_first_line(e)})") from None
    ins, outs = _keras_tensors(m.inputs), _keras_tensors(m.outputs)
    if len(ins) != 1 or len(outs) != 1:
        return Loaded(SourceFormat.KERAS3, path, ins, outs)  # refused by check_io with the counts
    tmp = tempfile.TemporaryDirectory(prefix="edgeretina-import-k3-")
    try:
        m.export(f"{tmp.name}/sm", format="tf_saved_model", verbose=False)
    except Exception as e:  # noqa: BLE001
        tmp.cleanup()
        raise ImportRefused(f"{path}: Keras 3 could not export it to a SavedModel ({_first_line(e)})") from None
    out = _load_saved_model(Path(f"{tmp.name}/sm"), SourceFormat.KERAS3)
    out.path, out.keep = path, tmp
    return out


def _load_saved_model(path: Path, fmt: SourceFormat) -> Loaded:
    from edgeretina._keras import tf

    try:
        obj = tf.saved_model.load(str(path))
    except Exception as e:  # noqa: BLE001 - TF raises OSError/ValueError/InvalidArgumentError
        raise ImportRefused(f"{path}: cannot load the SavedModel ({_first_line(e)})") from None
    sigs = dict(getattr(obj, "signatures", {}) or {})
    key = SIGNATURE if SIGNATURE in sigs else next(iter(sigs)) if len(sigs) == 1 else None
    if key is None:
        raise ImportRefused(f"{path}: the SavedModel has no '{SIGNATURE}' signature "
                            f"(signatures: {', '.join(sorted(sigs)) or 'none'})")
    fn = sigs[key]
    ins = [{"name": k, "shape": _dims(v.shape), "dtype": v.dtype.name}
           for k, v in sorted(fn.structured_input_signature[1].items())]
    outs = [{"name": k, "shape": _dims(v.shape), "dtype": v.dtype.name}
            for k, v in sorted(fn.structured_outputs.items())]
    return Loaded(fmt, path, ins, outs, obj=(obj, fn))


def _load_tflite(path: Path) -> Loaded:
    data = path.read_bytes()
    try:
        m = LiteRTModel(data, name=str(path))
    except ModelError as e:
        msg = str(e)
        if "expected one input tensor" in msg:
            n = msg.rsplit("found", 1)[-1].strip()
            raise ImportRefused(f"{path}: the model has {n} inputs; edgeretina models take one image") from None
        raise ImportRefused(msg) from None
    d = m.input_detail
    ins = [{"name": d["name"], "shape": _dims(d.get("shape_signature", d["shape"])), "dtype": np.dtype(d["dtype"]).name}]
    outs = [{"name": o["name"], "shape": _dims(o.get("shape_signature", o["shape"])),
             "dtype": np.dtype(o["dtype"]).name} for o in m.output_details]
    return Loaded(SourceFormat.TFLITE, path, ins, outs, obj=data)


# ------------------------------------------------------------------------------------------ checks


@dataclass(frozen=True)
class Plan:
    """How the model is read: input size and batch, output width, column order, kind and activation."""

    size: int
    batch: int | None
    width: int
    perm: tuple[int, ...]        # task column j = the model's column perm[j] (after a 1-column lift)
    lift: bool                   # binary with 1 sigmoid column → 2 softmax columns
    activation: str              # softmax | sigmoid (what turns the stored graph's logits into probabilities)

    @property
    def identity(self) -> bool:
        return not self.lift and self.perm == tuple(range(len(self.perm)))


def check_io(loaded: Loaded, opts: ImportOptions) -> Plan:
    """The model's tensors against the task; one-line ``ImportRefused`` naming the problem."""
    p, spec = loaded.path, opts.spec
    if len(loaded.inputs) != 1:
        names = ", ".join(i["name"] for i in loaded.inputs)
        raise ImportRefused(f"{p}: the model has {len(loaded.inputs)} inputs ({names}); edgeretina models take "
                            "one image")
    if len(loaded.outputs) != 1:
        names = ", ".join(o["name"] for o in loaded.outputs)
        raise ImportRefused(f"{p}: the model has {len(loaded.outputs)} outputs ({names}); edgeretina needs one "
                            "(batch, classes) output")
    size, batch = _check_input(p, loaded.inputs[0], opts, loaded.fmt)
    width = _check_output(p, loaded.outputs[0], spec)
    lift = spec.kind is TaskKind.BINARY and width == 1
    order = opts.labels or spec.labels
    perm = tuple(order.index(lbl) for lbl in spec.labels) if spec.task.value != "classes" else tuple(range(len(order)))
    act = "sigmoid" if spec.kind is TaskKind.MULTILABEL else "softmax"
    plan = Plan(size, batch, width, perm, lift, act)
    if loaded.fmt is SourceFormat.TFLITE and not plan.identity:
        what = (f"has 1 sigmoid column where the project's binary models (and the Android app) have 2 softmax "
                f"columns" if lift else f"columns ({', '.join(order)}) are not in the task's order "
                f"({', '.join(spec.labels)})")
        raise ImportRefused(f"{p}: the .tflite {what}, and a .tflite graph cannot be changed here; import the "
                            "Keras or SavedModel version (its output is mapped)")
    return plan


def _check_input(p: Path, t: dict, opts: ImportOptions, fmt: SourceFormat) -> tuple[int, int | None]:
    shape = t["shape"]
    if len(shape) != 4:
        raise ImportRefused(f"{p}: input '{t['name']}' has shape {_fmt(shape)}; edgeretina feeds images as "
                            "(batch, height, width, 3)")
    b, h, w, c = shape
    if c not in (1, 3) and shape[1] in (1, 3):
        raise ImportRefused(f"{p}: input '{t['name']}' is channels-first (NCHW, {_fmt(shape)}); edgeretina feeds "
                            "NHWC (batch, height, width, 3): re-export the model channels-last")
    if c == 1:
        raise ImportRefused(f"{p}: input '{t['name']}' has 1 channel (grayscale, {_fmt(shape)}); edgeretina feeds "
                            "RGB fundus images (3 channels)")
    if c != 3:
        raise ImportRefused(f"{p}: input '{t['name']}' has {c} channels ({_fmt(shape)}); edgeretina feeds RGB (3)")
    if t["dtype"] != "float32":
        raise ImportRefused(f"{p}: input '{t['name']}' is {t['dtype']}; import a float32-input model (edgeretina "
                            "builds the quantized variants itself)")
    if h is None or w is None:
        if opts.input_size is None:
            raise ImportRefused(f"{p}: the input size is dynamic ({_fmt(shape)}); pass --input-size N")
        if fmt is SourceFormat.TFLITE:
            raise ImportRefused(f"{p}: the .tflite's input size is dynamic ({_fmt(shape)}); convert it with a "
                                "fixed size (apps allocate one input tensor)")
        return opts.input_size, b
    if h != w:
        raise ImportRefused(f"{p}: input '{t['name']}' is {h}×{w}; edgeretina's pipelines make square inputs")
    if opts.input_size is not None and opts.input_size != h:
        raise ImportRefused(f"{p}: --input-size {opts.input_size} but the model's input is fixed at {h} px")
    return h, b


def _check_output(p: Path, t: dict, spec: TaskSpec) -> int:
    shape = t["shape"]
    if len(shape) != 2 or shape[1] is None:
        raise ImportRefused(f"{p}: output '{t['name']}' has shape {_fmt(shape)}; edgeretina needs (batch, classes)")
    width, n = shape[1], len(spec.labels)
    ok = width in (1, 2) if spec.kind is TaskKind.BINARY else width == n
    if not ok:
        need = "2 softmax columns or 1 sigmoid column" if spec.kind is TaskKind.BINARY else f"{n} columns"
        raise ImportRefused(f"{p}: the model outputs {width} columns but task '{spec.task.value}' has {n} labels "
                            f"({', '.join(spec.labels)}): a {spec.kind.value} model needs {need}")
    return width


def _fmt(shape) -> str:
    return "(" + ", ".join("?" if d is None else str(d) for d in shape) + ")"


# ------------------------------------------------------------------------------------------ output kind


def _looks_like_probabilities(raw: np.ndarray, softmax: bool) -> bool:
    raw = np.asarray(raw, dtype=np.float64)
    if raw.size == 0 or raw.min() < -1e-6 or raw.max() > 1 + 1e-6:
        return False
    return not softmax or bool(np.abs(raw.sum(axis=1) - 1.0).max() < 1e-3)


def decide_kind(loaded: Loaded, plan: Plan, opts: ImportOptions, raw: np.ndarray) -> tuple[str, str]:
    """(``probabilities`` | ``logits``, how it was decided) from ``--output``, the Keras model's last layer
    and the outputs on the probe images; a contradiction is refused."""
    p = loaded.path
    if not np.isfinite(raw).all():
        raise ImportRefused(f"{p}: the model outputs NaN or inf on {len(raw)} probe fundus images")
    softmax = plan.width > 1 and opts.spec.kind is not TaskKind.MULTILABEL
    looks = _looks_like_probabilities(raw, softmax)
    rng = f"range [{raw.min():.3g}, {raw.max():.3g}]" + (
        f", row sums {raw.sum(1).min():.3g}–{raw.sum(1).max():.3g}" if softmax else "")
    if opts.output == "probabilities" and not looks:
        raise ImportRefused(f"{p}: --output probabilities, but its outputs on {len(raw)} probe images are not "
                            f"{'softmax ' if softmax else ''}probabilities ({rng}); use --output logits")
    if opts.output == "logits" and (loaded.final_activation or (looks and softmax)):
        why = (f"its last layer applies {loaded.final_activation}" if loaded.final_activation
               else f"every output row on {len(raw)} probe images sums to 1 ({rng})")
        raise ImportRefused(f"{p}: --output logits, but {why}; use --output probabilities")
    if opts.output:
        return opts.output, "--output"
    if loaded.final_activation:
        return "probabilities", f"the model's last layer ({loaded.final_activation})"
    return ("probabilities" if looks else "logits"), f"its outputs on {len(raw)} probe images ({rng})"


def column_map(plan: Plan, kind: str) -> tuple[np.ndarray, np.ndarray]:
    """(W, b): the model's columns → the task's columns as ``y @ W + b``: a 1-column binary output lifted to
    two (logits: z → [−z/2, z/2], whose softmax is [1−σ(z), σ(z)]; probabilities: p → [1−p, p]), then the
    columns put in the task's label order."""
    if plan.lift:
        w = np.array([[-0.5, 0.5]] if kind == "logits" else [[-1.0, 1.0]], np.float32)
        b = np.array([0.0, 0.0] if kind == "logits" else [1.0, 0.0], np.float32)
    else:
        w, b = np.eye(plan.width, dtype=np.float32), np.zeros(plan.width, np.float32)
    idx = list(plan.perm)
    return w[:, idx], b[idx]


def task_probabilities(raw: np.ndarray, plan: Plan, kind: str) -> np.ndarray:
    """The original model's raw outputs → probabilities in the task's columns (what the run model gives)."""
    raw = np.asarray(raw, dtype=np.float64).reshape(len(raw), -1)
    if kind == "logits":
        raw = activate(raw, "sigmoid" if (plan.width == 1 or plan.activation == "sigmoid") else "softmax")
    if plan.lift:
        raw = np.concatenate([1.0 - raw, raw], axis=1)
    return raw[:, list(plan.perm)]


# ------------------------------------------------------------------------------------------ the run model


@dataclass
class RunModel:
    """The model as the run dir stores it: ``save(folder)`` writes it, ``probabilities(X)`` runs it in memory,
    ``output`` is config.json's ``output`` (what the stored graph emits)."""

    fmt: SourceFormat
    output: dict[str, str]
    save: Callable[[Path], Path]
    probabilities: Callable[[np.ndarray], np.ndarray]
    transforms: list[str] = field(default_factory=list)


def original_raw(loaded: Loaded, plan: Plan) -> Callable[[np.ndarray], np.ndarray]:
    """The original model's raw outputs (its own framework) on float32 inputs."""
    if loaded.fmt is SourceFormat.KERAS2:
        base = _keras2_base(loaded.obj, plan)
        return lambda X: np.asarray(base.predict(X, batch_size=32, verbose=0), np.float64).reshape(len(X), -1)
    if loaded.fmt is SourceFormat.TFLITE:
        m = LiteRTModel(loaded.obj, threads=2, name=str(loaded.path))
        return lambda X: m.raw(X)
    from edgeretina._keras import tf

    _, fn = loaded.obj
    in_name, out_name = loaded.inputs[0]["name"], loaded.outputs[0]["name"]
    bs = plan.batch or 32

    def run(X):
        outs = [fn(**{in_name: tf.constant(X[i:i + bs])})[out_name].numpy() for i in range(0, len(X), bs)]
        return np.concatenate(outs).astype(np.float64).reshape(len(X), -1)
    return run


def _keras2_base(m, plan: Plan):
    """The Keras 2 model with a dynamic batch and a fixed square input (cloned, same weights, if needed)."""
    shp = tuple(m.inputs[0].shape)
    if shp[0] is None and shp[1] == plan.size and shp[2] == plan.size:
        return m
    from edgeretina._keras import keras

    c = keras.models.clone_model(m, input_tensors=keras.Input((plan.size, plan.size, 3)))
    c.set_weights(m.get_weights())
    return c


def run_model(loaded: Loaded, plan: Plan, kind: str) -> RunModel:
    if loaded.fmt is SourceFormat.KERAS2:
        return _keras2_run_model(loaded, plan, kind)
    if loaded.fmt is SourceFormat.TFLITE:
        return _tflite_run_model(loaded, plan, kind)
    return _saved_run_model(loaded, plan, kind)


def _final_activation(plan: Plan) -> str:
    return plan.activation  # after a 1-column lift the binary output is a 2-column softmax


def _keras2_run_model(loaded: Loaded, plan: Plan, kind: str) -> RunModel:
    """Keras 2: stored as ``model.keras`` that outputs probabilities in the task's columns (the project's
    convention: pruning / QAT / bias correction find its logits by cutting the final activation)."""
    from edgeretina._keras import keras

    from .tflite import logits_model  # heavy: tflite.py imports TensorFlow

    m, act, notes = _keras2_base(loaded.obj, plan), _final_activation(plan), []
    if m is not loaded.obj:
        notes.append(f"input fixed at (batch, {plan.size}, {plan.size}, 3)")
    out, inputs = m.outputs[0], m.inputs
    if kind == "probabilities" and not plan.identity:
        lm, lact = logits_model(m)
        if lact is not None:
            w, b = column_map(plan, "logits")
            z = _dense(keras, lm.outputs[0], w, b)
            out, inputs = keras.layers.Activation(act, name="import_probs")(z), lm.inputs
        else:
            w, b = column_map(plan, "probabilities")
            out = _dense(keras, out, w, b)
    elif kind == "logits":
        if not plan.identity:
            w, b = column_map(plan, "logits")
            out = _dense(keras, out, w, b)
        out = keras.layers.Activation(act, name="import_probs")(out)
        notes.append(f"{act} appended (the model outputs logits)")
    if plan.lift:
        notes.append("1 sigmoid column lifted to 2 softmax columns (score = p(positive) = column 1)")
    if plan.perm != tuple(range(len(plan.perm))):
        notes.append(f"columns reordered to the task's label order (model column {list(plan.perm)} → 0..)")
    model = m if out is m.outputs[0] else keras.Model(inputs, out, name=m.name)

    def save(folder: Path) -> Path:
        return save_clean_model(model, folder / MODEL_FILE)
    return RunModel(loaded.fmt, {"kind": "probabilities", "activation": act}, save,
                    lambda X: np.asarray(model.predict(X, batch_size=32, verbose=0), np.float64), notes)


def _dense(keras, x, w: np.ndarray, b: np.ndarray):
    layer = keras.layers.Dense(w.shape[1], name="import_columns")
    y = layer(x)
    layer.set_weights([w, b])
    return y


def _tflite_run_model(loaded: Loaded, plan: Plan, kind: str) -> RunModel:
    """A float .tflite is stored as it is (a graph cannot be edited here; ``check_io`` refused any output that
    would need mapping)."""
    m = LiteRTModel(loaded.obj, threads=2, name=str(loaded.path))
    output = {"kind": kind, "activation": plan.activation}

    def save(folder: Path) -> Path:
        return write_bytes_atomic(folder / TFLITE_FILE, loaded.obj)

    def probs(X):
        raw = m.raw(X)
        return activate(raw, plan.activation) if kind == "logits" else raw
    return RunModel(loaded.fmt, output, save, probs, ["stored unchanged"])


def _saved_run_model(loaded: Loaded, plan: Plan, kind: str) -> RunModel:
    """SavedModel / Keras 3: a wrapper SavedModel with one ``serving_default`` signature, input ``input``
    float32 (B, S, S, 3), output ``output`` in the task's columns (logits stay logits)."""
    from edgeretina._keras import tf

    obj, fn = loaded.obj
    in_name, out_name = loaded.inputs[0]["name"], loaded.outputs[0]["name"]
    w, b = column_map(plan, kind)
    mapped = not plan.identity
    mod = tf.Module()
    mod.source = obj

    @tf.function(input_signature=[tf.TensorSpec([plan.batch, plan.size, plan.size, 3], tf.float32, name=INPUT_NAME)])
    def serve(x):
        y = fn(**{in_name: x})[out_name]
        if mapped:
            y = tf.matmul(y, tf.constant(w)) + tf.constant(b)
        return {OUTPUT_NAME: y}
    mod.serve = serve
    act = _final_activation(plan)
    notes = [f"SavedModel signature '{SIGNATURE}': {INPUT_NAME} (batch, {plan.size}, {plan.size}, 3) → {OUTPUT_NAME}"]
    if plan.lift:
        notes.append("1 sigmoid column lifted to 2 softmax columns (score = p(positive) = column 1)")
    if plan.perm != tuple(range(len(plan.perm))):
        notes.append(f"columns reordered to the task's label order (model column {list(plan.perm)} → 0..)")

    def save(folder: Path) -> Path:
        tf.saved_model.save(mod, str(folder / SAVED_MODEL_DIR), signatures={SIGNATURE: serve})
        return folder / SAVED_MODEL_DIR

    def probs(X):
        bs = plan.batch or 32
        raw = np.concatenate([serve(tf.constant(X[i:i + bs]))[OUTPUT_NAME].numpy() for i in range(0, len(X), bs)])
        raw = raw.astype(np.float64).reshape(len(X), -1)
        return activate(raw, act) if kind == "logits" else raw
    return RunModel(loaded.fmt, {"kind": kind, "activation": act}, save, probs, notes)


# ------------------------------------------------------------------------------------------ threshold


def probe_images(pipeline: Pipeline, n: int = N_PROBE, seed: int = 7) -> np.ndarray:
    """``n`` synthetic fundus photographs (edgeretina.data.synthetic) through the run's pipeline."""
    size = max(128, pipeline.input_size or 128)
    ds = open_dataset(f"synthetic:n={n},size={size},seed={seed}", "glaucoma")
    X, _ = load_arrays(ds.records, pipeline)
    return np.asarray(X, dtype=np.float32)


def threshold_from_data(opts: ImportOptions, pipeline: Pipeline, probs: Callable) -> tuple[Any, dict]:
    """Score the labelled set ``opts.data`` (up to ``max_images``, stratified) with the run model and derive
    the threshold (Youden J, or the highest threshold reaching ``opts.sensitivity``) with
    ``edgeretina.metrics``. Returns (threshold, what was measured)."""
    spec = opts.spec
    ds = open_dataset(opts.data, spec.task.value)
    if tuple(ds.spec.labels) != tuple(spec.labels):
        raise ImportRefused(f"{opts.data}: its labels ({', '.join(ds.spec.labels)}) are not the model's "
                            f"({', '.join(spec.labels)})")
    recs = ds.records
    if len(recs) > opts.max_images:
        recs = [recs[i] for i in stratified_indices([r.y for r in recs], opts.max_images, opts.seed)]
    scores, ys = [], []
    for i in range(0, len(recs), 128):
        X, y = load_arrays(recs[i:i + 128], pipeline, spec)
        scores.append(scores_from_output(spec, probs(np.asarray(X, np.float32))))
        ys.append(np.asarray(y))
    s, y = np.concatenate(scores), np.concatenate(ys)
    how = "sensitivity" if opts.sensitivity is not None else "youden"

    def derive(yy, ss) -> float:
        yy = np.asarray(yy).astype(int)
        if yy.min() == yy.max():
            raise ImportRefused(f"{opts.data}: its {len(yy)} images hold one class only; a threshold needs both")
        return (threshold_at_sensitivity(yy, ss, opts.sensitivity) if how == "sensitivity"
                else youden_threshold(yy, ss))
    if spec.kind is TaskKind.BINARY:
        t: Any = derive(y, s)
    elif spec.kind is TaskKind.MULTILABEL:
        t = {lbl: derive(y[:, j], s[:, j]) for j, lbl in enumerate(spec.labels)}
    else:
        t = None
    metrics = evaluate(spec, y, s, threshold=None if isinstance(t, dict) else t, n_boot=200, seed=opts.seed)
    if isinstance(t, dict):
        metrics = evaluate(spec, y, s, threshold=[t[lbl] for lbl in spec.labels], n_boot=200, seed=opts.seed)
    what = (f"highest threshold reaching sensitivity {opts.sensitivity:g}" if how == "sensitivity"
            else "Youden J") if t is not None else "argmax (no threshold)"
    info = {"path": str(opts.data), "format": ds.format, "n_images": int(len(y)), "rule": what,
            "metrics": metrics}
    return t, info


def resolve_threshold(opts: ImportOptions, pipeline: Pipeline, probs: Callable) -> tuple[Any, str, dict | None]:
    """(threshold, where it came from, labelled-set info or None)."""
    if opts.data is not None:
        t, info = threshold_from_data(opts, pipeline, probs)
        return t, f"{info['rule']} on {info['n_images']} labelled images of {opts.data}", info
    if opts.threshold is not None:
        return float(opts.threshold), "--threshold", None
    return None, "argmax (multi-class: no threshold)", None


# ------------------------------------------------------------------------------------------ report


@dataclass(frozen=True)
class ImportReport:
    source: str
    source_format: str
    source_sha256: str
    out_dir: str
    model_file: str
    task: str
    labels: tuple[str, ...]
    input_size: int
    preprocessing: str
    output: dict[str, str]
    output_decided_by: str
    threshold: Any
    threshold_source: str
    inspection: dict[str, Any]
    transforms: tuple[str, ...]
    check: dict[str, Any]
    variants: str
    data: dict[str, Any] | None = None
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["labels"], d["transforms"] = list(self.labels), list(self.transforms)
        return d

    def lines(self) -> list[str]:
        i = self.inspection
        t = self.threshold
        ts = (f"{t:.4f}" if isinstance(t, float) else
              ", ".join(f"{k} {v:.3f}" for k, v in t.items()) if isinstance(t, dict) else "none (argmax)")
        out = [f"source: {self.source} ({self.source_format}, sha256 {self.source_sha256[:12]}…)",
               f"input: {i['inputs'][0]['name']} {_fmt(i['inputs'][0]['shape'])} {i['inputs'][0]['dtype']}; "
               f"output: {i['outputs'][0]['name']} {_fmt(i['outputs'][0]['shape'])} → {self.output['kind']} "
               f"({self.output['activation']}; decided by {self.output_decided_by})",
               f"task: {self.task} ({', '.join(self.labels)}); preprocessing: {self.preprocessing}",
               f"threshold: {ts} ({self.threshold_source})"]
        if self.data and "auroc" in self.data["metrics"]:
            m = self.data["metrics"]
            out.append(f"on {self.data['path']}: AUROC {m['auroc']:.3f} ({m['auroc_ci_low']:.3f}–"
                       f"{m['auroc_ci_high']:.3f}), sensitivity {m['sensitivity']:.3f}, specificity "
                       f"{m['specificity']:.3f} (n={m['n']})")
        out += [f"transforms: {'; '.join(self.transforms) or 'none'}",
                f"check: stored model vs original on {self.check['n']} probe images: max |Δ score| "
                f"{self.check['max_abs_diff']:.2e}",
                f"variants: {self.variants}",
                f"run dir: {self.out_dir} ({self.model_file} + config.json + {REPORT})"]
        return out


# ------------------------------------------------------------------------------------------ import


def import_model(model: str | Path, out: str | Path, options: ImportOptions,
                 progress: Callable[[str], None] | None = None) -> ImportReport:
    """Import ``model`` into the run dir ``out`` (refused if it exists and is not empty). See the module
    docstring; every refusal is an ``ImportRefused`` (one line) and leaves nothing at ``out``."""
    t0, say = time.perf_counter(), progress or (lambda line: None)
    src, out = Path(model), Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ImportRefused(f"{out}: exists and is not empty; choose a new --out (import never overwrites)")
    fmt = sniff_format(src)
    with quiet_native_stderr():
        say(f"load {fmt.value} model")
        loaded = load_model(src, fmt)
        plan = check_io(loaded, options)
        pipeline = options.pipeline(plan.size)
        X = probe_images(pipeline)
        raw = original_raw(loaded, plan)(X)
        kind, decided = decide_kind(loaded, plan, options, raw)
        rm = run_model(loaded, plan, kind)
        if options.data:
            say(f"score the labelled set {options.data}")
        threshold, t_source, data_info = resolve_threshold(options, pipeline, rm.probabilities)
        cfg = _config(options, plan, pipeline, rm, threshold, data_info)
        say("write the run dir")
        report = _write(src, out, loaded, cfg, rm, X, task_probabilities(raw, plan, kind), dict(
            output_decided_by=decided, threshold_source=t_source, data=data_info, t0=t0, plan=plan))
    return report


def _config(opts: ImportOptions, plan: Plan, pipeline: Pipeline, rm: RunModel, threshold, data_info) -> RunConfig:
    spec = opts.spec
    dataset = {"path": data_info["path"], "format": data_info["format"]} if data_info else {}
    return RunConfig(task=spec.task.value, kind=spec.kind.value, labels=spec.labels,
                     preprocessing=pipeline.to_json(), arch="imported", input_size=plan.size, weights=None,
                     head={"type": "imported"}, positive_index=spec.positive_index, output=dict(rm.output),
                     threshold=threshold, dataset=dataset)


def _write(src: Path, out: Path, loaded: Loaded, cfg: RunConfig, rm: RunModel, X: np.ndarray,
           expected: np.ndarray, meta: dict) -> ImportReport:
    """Build the run dir in a staging folder beside ``out``, re-open the stored model, check it against the
    original on the probe images, then publish in one rename."""
    plan, spec = meta["plan"], cfg.spec
    info = {"source_file": src.name, "source_format": loaded.fmt.value,  # no local path: it ships in every .tflite
            "source_sha256": source_sha256(src), **loaded.facts(), "transforms": rm.transforms,
            "output_decided_by": meta["output_decided_by"], "threshold_source": meta["threshold_source"]}
    with StagedDir(out, what="edgeretina import") as st:
        path = rm.save(st.path)
        cfg = cfg.with_(extra={"import": info})
        cfg.save(st.path)
        if loaded.fmt is SourceFormat.KERAS2:
            stored = load_keras_model(path)
        else:
            stored = open_source(path, cfg)
        got = scores_from_output(spec, stored.predict(X, verbose=0))
        diff = float(np.abs(got - scores_from_output(spec, expected)).max())
        if not diff <= MAX_DIFF:
            raise ImportRefused(f"{src}: the stored model does not reproduce the original (max |Δ score| "
                                f"{diff:.3g} on {len(X)} probe images); nothing was written")
        variants = "all (Keras 2: pruned/QAT too)" if loaded.fmt is SourceFormat.KERAS2 else (
            "float32, fp16, dynamic, int8, int8-guard (no mixed, pruned, QAT: a .tflite is not a Keras 2 model)"
            if loaded.fmt is SourceFormat.TFLITE else
            "float32, fp16, dynamic, int8, mixed, int8-guard (no pruned/QAT: those need a Keras 2 model)")
        report = ImportReport(
            source=str(src), source_format=loaded.fmt.value, source_sha256=info["source_sha256"],
            out_dir=str(out), model_file=path.name, task=cfg.task, labels=tuple(cfg.labels),
            input_size=plan.size, preprocessing=Pipeline.from_json(cfg.preprocessing).describe(),
            output=dict(cfg.output), output_decided_by=meta["output_decided_by"], threshold=cfg.threshold,
            threshold_source=meta["threshold_source"], inspection=loaded.facts(), transforms=tuple(rm.transforms),
            check={"n": int(len(X)), "max_abs_diff": diff}, variants=variants, data=meta["data"],
            seconds=round(time.perf_counter() - meta["t0"], 2))
        write_json_atomic(st.path / REPORT, report.to_dict())
    return report
