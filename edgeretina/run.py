"""The run-dir contract: ``model.keras`` + ``config.json`` is what every later stage reads.

``config.json`` is the single source of truth for task, labels, preprocessing and decision threshold.
It is embedded (as JSON) in every exported .tflite, so ``bench``, ``predict`` and the Android app read it
from the model and never re-specify it. A model without it is refused, not guessed.

Schema (``edgeretina.run/1``)::

    {
      "schema": "edgeretina.run/1",
      "task": "glaucoma",                 # edgeretina.tasks.Task value
      "kind": "binary",                   # TaskKind value
      "labels": ["normal", "glaucoma"],
      "positive_index": 1,                # BINARY only
      "arch": "mobilenetv2", "input_size": 224, "weights": "imagenet",
      "head": {"type": "gap", ...},
      "preprocessing": {...},             # edgeretina.preprocess.Pipeline.to_json(); its last step is the
                                          # backbone's input scaling; output = the model's input tensor
      "output": {"activation": "softmax", "kind": "probabilities"},   # what model.keras outputs
      "threshold": 0.5,                   # recommended decision threshold on the positive score (val Youden J)
      "dataset": {"path": ..., "format": ..., "split": {...}},
      "edgeretina_version": "0.1.0"
    }
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from edgeretina import __version__
from edgeretina.errors import ModelError
from edgeretina.io import write_json_atomic
from edgeretina.tasks import TaskKind, TaskSpec, task_spec

SCHEMA = "edgeretina.run/1"
MODEL_FILE = "model.keras"
CONFIG_FILE = "config.json"


@dataclass(frozen=True)
class RunConfig:
    task: str
    kind: str
    labels: tuple[str, ...]
    preprocessing: dict[str, Any]
    arch: str = "mobilenetv2"
    input_size: int = 224
    weights: str | None = None
    head: dict[str, Any] = field(default_factory=lambda: {"type": "gap"})
    positive_index: int | None = None
    output: dict[str, Any] = field(default_factory=lambda: {"activation": "softmax", "kind": "probabilities"})
    threshold: float | None = None
    dataset: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    schema: str = SCHEMA
    edgeretina_version: str = ""

    @property
    def spec(self) -> TaskSpec:
        return task_spec(self.task, self.labels)

    @property
    def is_binary(self) -> bool:
        return self.kind == TaskKind.BINARY.value

    def split_args(self) -> dict[str, Any]:
        """The keywords that split the run's dataset as training did (``FundusDataset.split(**...)``): the
        recorded ``scheme`` and ``seed``; a ``"default"`` scheme (the dataset's own split) is left out."""
        split = (self.dataset or {}).get("split") or {}
        if not isinstance(split, dict):
            return {}
        out = {k: split[k] for k in ("scheme", "seed") if split.get(k) is not None}
        if out.get("scheme") == "default":
            del out["scheme"]
        return out

    def with_(self, **changes) -> "RunConfig":
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["labels"] = list(self.labels)
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False)

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "config") -> "RunConfig":
        if not isinstance(d, dict) or d.get("schema") != SCHEMA:
            raise ModelError(f"{source}: not an edgeretina config (schema {SCHEMA!r} missing)")
        missing = [k for k in ("task", "kind", "labels", "preprocessing") if k not in d]
        if missing:
            raise ModelError(f"{source}: config lacks {', '.join(missing)}")
        known = {f for f in cls.__dataclass_fields__}
        kw = {k: v for k, v in d.items() if k in known}
        kw["labels"] = tuple(kw["labels"])
        return cls(**kw)

    def save(self, run_dir: str | Path) -> Path:
        cfg = self if self.edgeretina_version else replace(self, edgeretina_version=__version__)
        return write_json_atomic(Path(run_dir) / CONFIG_FILE, cfg.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> "RunConfig":
        p = Path(path)
        if p.is_dir():
            p = p / CONFIG_FILE
        if not p.is_file():
            raise ModelError(f"{p}: no config.json (a model without its preprocessing/labels is refused)")
        try:
            d = json.loads(p.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ModelError(f"{p}: config.json is not valid JSON ({e})") from None
        return cls.from_dict(d, source=str(p))


def resolve_model_path(path: str | Path) -> tuple[Path, RunConfig]:
    """A run dir or a ``.keras`` file → (model path, its config). The config sits beside the model."""
    p = Path(path)
    if not p.exists():
        raise ModelError(f"{p}: no such file or directory")
    model = p / MODEL_FILE if p.is_dir() else p
    if not model.is_file():
        raise ModelError(f"{p}: no {MODEL_FILE} in this run dir")
    if model.suffix != ".keras":
        raise ModelError(f"{model}: not a Keras model file (expected .keras)")
    return model, RunConfig.load(model.parent)


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
