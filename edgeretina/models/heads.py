"""Classification heads put on a backbone's last feature map.

Every head starts with global average pooling (layer ``head_gap``) so the frozen backbone's pooled
features can be cached and the head warmed up on them alone. Layer names all start with ``head_``;
the last two are ``head_logits`` (Dense, linear) and ``head_probs`` (softmax/sigmoid), so exporters
can cut the activation off and record ``{"kind": "logits"}``.

Head types (``HeadSpec.type``):
- ``gap``       GAP + dense softmax (binary/multiclass) or sigmoid (multi-label) — the glaucoma paper's
                "surgery".
- ``fc``        GAP + an FC stack (``units``, e.g. [16] or [32, 16]) with L1+L2 regularisation and
                dropout 0.5 before each dense, then the output layer (the DR ResNet paper's [16, 5] is
                ``fc:16`` on the 5-grade task).
- ``multitask`` GAP + one branch per label (optionally with its own FC stack) each ending in one
                sigmoid unit, concatenated into one (N, L) output (glaucoma + DR).
Written as a string: ``gap``, ``fc:32,16``, ``multitask`` or ``multitask:16``; or a dict
``{"type": "fc", "units": [32, 16], "dropout": 0.5, "l1": 1e-5, "l2": 1e-4}``.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import Enum
from typing import Any

from edgeretina.errors import ModelError
from edgeretina.tasks import Task, TaskKind, TaskSpec


class HeadType(str, Enum):
    GAP = "gap"
    FC = "fc"
    MULTITASK = "multitask"


@dataclass(frozen=True)
class HeadSpec:
    type: HeadType = HeadType.GAP
    units: tuple[int, ...] = ()
    dropout: float = 0.5
    l1: float = 1e-5
    l2: float = 1e-4
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["type"] = self.type.value
        d["units"] = list(self.units)
        d.pop("extra")
        return d

    @classmethod
    def parse(cls, head: "str | dict | HeadSpec | None", spec: TaskSpec) -> "HeadSpec":
        """``None`` → the task's default head (``multitask`` for the multi-task task, else ``gap``)."""
        if isinstance(head, HeadSpec):
            return head
        if head is None:
            return cls(HeadType.MULTITASK if spec.task is Task.MULTITASK else HeadType.GAP)
        if isinstance(head, dict):
            d = dict(head)
            try:
                t = HeadType(d.pop("type", "gap"))
            except ValueError:
                raise ModelError(f"unknown head type in {head!r} (choose from: gap, fc, multitask)") from None
            units = tuple(int(u) for u in d.pop("units", ()) or ())
            known = {k: float(d.pop(k)) for k in ("dropout", "l1", "l2") if k in d}
            return cls._checked(cls(t, units, **known))
        text = str(head).strip().lower()
        name, _, rest = text.partition(":")
        try:
            t = HeadType(name)
        except ValueError:
            raise ModelError(f"unknown head '{head}' (choose from: gap, fc:<units>, multitask[:<units>])") from None
        try:
            units = tuple(int(u) for u in rest.replace("[", "").replace("]", "").split(",") if u.strip())
        except ValueError:
            raise ModelError(f"head '{head}': units must be integers, e.g. fc:32,16") from None
        return cls._checked(cls(t, units))

    @staticmethod
    def _checked(h: "HeadSpec") -> "HeadSpec":
        if h.type is HeadType.FC and not h.units:
            raise ModelError("head 'fc' needs its hidden units, e.g. fc:16 or fc:32,16")
        if h.type is HeadType.GAP and h.units:
            raise ModelError("head 'gap' takes no units (use fc:<units> for an FC stack)")
        if any(u <= 0 for u in h.units):
            raise ModelError(f"head units must be positive, got {list(h.units)}")
        if not 0.0 <= h.dropout < 1.0:
            raise ModelError(f"head dropout must be in [0, 1), got {h.dropout}")
        return h


def _fc_stack(keras, x, units, h: HeadSpec, prefix: str):
    reg = keras.regularizers.L1L2(l1=h.l1, l2=h.l2)
    for i, u in enumerate(units, 1):
        x = keras.layers.Dropout(h.dropout, name=f"{prefix}dropout{i}")(x)
        x = keras.layers.Dense(u, activation="relu", kernel_regularizer=reg, name=f"{prefix}fc{i}")(x)
    if units:
        x = keras.layers.Dropout(h.dropout, name=f"{prefix}dropout_out")(x)
    return x


def apply_head(pooled, spec: TaskSpec, h: HeadSpec):
    """Head layers on a pooled (N, C) tensor → probabilities (N, n_outputs). Used by the full model and
    by the cached-feature head model (same layer names, so weights copy across by name)."""
    from edgeretina._keras import keras

    act = spec.activation
    if h.type is HeadType.MULTITASK:
        if spec.kind is not TaskKind.MULTILABEL:
            raise ModelError(f"head 'multitask' needs a multi-label task (task '{spec.task.value}' is "
                             f"{spec.kind.value})")
        outs = []
        for j, label in enumerate(spec.labels):
            b = _fc_stack(keras, pooled, h.units, h, f"head_t{j}_")
            outs.append(keras.layers.Dense(1, name=f"head_t{j}_logit")(b))
        logits = keras.layers.Concatenate(name="head_logits")(outs)
        return keras.layers.Activation("sigmoid", name="head_probs")(logits)
    x = _fc_stack(keras, pooled, h.units if h.type is HeadType.FC else (), h, "head_")
    reg = keras.regularizers.L1L2(l1=h.l1, l2=h.l2) if h.type is HeadType.FC else None
    logits = keras.layers.Dense(spec.n_outputs, kernel_regularizer=reg, name="head_logits")(x)
    return keras.layers.Activation(act, name="head_probs", dtype="float32")(logits)


def head_model(feature_dim: int, spec: TaskSpec, h: HeadSpec):
    """A stand-alone model pooled-features → probabilities with the same head layers (for warm-up on
    cached backbone features)."""
    from edgeretina._keras import keras

    inp = keras.Input((feature_dim,), name="head_features")
    return keras.Model(inp, apply_head(inp, spec, h), name="head")
