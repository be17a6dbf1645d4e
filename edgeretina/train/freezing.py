"""Freezing policies for the fine-tuning phase: ``frozen | partial[:<fraction or layer>] | all``.

- ``frozen``          backbone stays frozen (fine-tuning trains the head only).
- ``partial``         unfreeze from the backbone's registered boundary (e.g. MobileNetV2 ``block_13_expand``).
- ``partial:0.3``     unfreeze the top 30 % of backbone layers.
- ``partial:<layer>`` unfreeze from the named layer on.
- ``all``             the whole backbone trains.
BatchNormalization layers always stay frozen (inference mode) — the usual practice for small sets, and it
keeps moving statistics from ImageNet.
"""
from __future__ import annotations

from dataclasses import dataclass

from edgeretina.errors import EdgeRetinaError
from edgeretina.models import backbone_layers, head_layers


@dataclass(frozen=True)
class FreezePolicy:
    mode: str            # frozen | partial | all
    arg: str | None = None

    @classmethod
    def parse(cls, text: "str | FreezePolicy") -> "FreezePolicy":
        if isinstance(text, FreezePolicy):
            return text
        mode, _, arg = str(text).strip().partition(":")
        mode = mode.lower()
        if mode not in ("frozen", "partial", "all"):
            raise EdgeRetinaError(f"unknown freezing policy '{text}' (choose frozen, partial[:<fraction|layer>] or all)")
        if arg and mode != "partial":
            raise EdgeRetinaError(f"freezing policy '{mode}' takes no argument (got '{text}')")
        if arg:
            try:
                f = float(arg)
                if not 0.0 < f <= 1.0:
                    raise EdgeRetinaError(f"freezing fraction must be in (0, 1], got {arg}")
            except ValueError:
                pass
        return cls(mode, arg or None)

    def __str__(self) -> str:
        return self.mode + (f":{self.arg}" if self.arg else "")


def first_trainable_index(model, policy: FreezePolicy, default_layer: str | None) -> int | None:
    """Index into ``backbone_layers(model)`` of the first unfrozen layer; None = everything frozen."""

    layers = backbone_layers(model)
    if policy.mode == "frozen":
        return None
    if policy.mode == "all":
        return 0
    arg = policy.arg
    if arg is None:
        arg = default_layer or "0.3"
    try:
        frac = float(arg)
    except ValueError:
        names = [l.name for l in layers]
        if arg not in names:
            raise EdgeRetinaError(f"freezing policy: no backbone layer named '{arg}'") from None
        return names.index(arg)
    return max(0, min(len(layers) - 1, int(round(len(layers) * (1.0 - frac)))))


def apply_freezing(model, policy: "str | FreezePolicy", default_layer: str | None = None) -> int | None:
    """Set ``trainable`` on the backbone layers per ``policy``; head layers always train; BN stays frozen.
    Returns the index of the first unfrozen backbone layer (None when frozen)."""
    from edgeretina._keras import keras

    policy = FreezePolicy.parse(policy)
    start = first_trainable_index(model, policy, default_layer)
    for i, layer in enumerate(backbone_layers(model)):
        train = start is not None and i >= start and not isinstance(layer, keras.layers.BatchNormalization)
        layer.trainable = train
    for layer in head_layers(model):
        layer.trainable = True
    return start


def freeze_backbone(model) -> None:
    apply_freezing(model, FreezePolicy("frozen"))
