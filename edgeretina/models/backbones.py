"""Backbone registry: one entry per ImageNet CNN.

Each entry knows the Keras application constructor, its default and minimum input size, and the input
scaling its ImageNet weights expect (a ``scale`` mode of :class:`edgeretina.preprocess.Pipeline`:
``tf`` = x/127.5-1, ``torch`` = ImageNet mean/std on x/255, ``caffe`` = BGR minus ImageNet means).
The scaling is never inside the Keras graph (quantization-aware training cannot quantize
Rescaling/Lambda layers); applications that carry it in-graph (EfficientNet) are built without it.
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from enum import Enum

from edgeretina.errors import ModelError


class Scaling(str, Enum):
    TF = "tf"
    TORCH = "torch"
    CAFFE = "caffe"
    UNIT = "unit"
    NONE = "none"


@dataclass(frozen=True)
class Backbone:
    name: str                 # registry key, lower case (``mobilenetv2``)
    keras_name: str           # attribute of ``keras.applications``
    default_size: int
    min_size: int
    scaling: Scaling
    options: tuple[str, ...] = ()          # extra constructor options users may pass (alpha, ...)
    # constructor kwargs always passed (e.g. MobileNetV3 without its in-graph Rescaling)
    fixed_kwargs: dict = field(default_factory=dict)
    # layers that carry input scaling inside the application graph; removed so the graph stays
    # quantizable (the Pipeline's ``scale`` step does the same arithmetic)
    strip_prefixes: tuple[str, ...] = ()
    # a sensible partial fine-tuning boundary (first layer to unfreeze for ``partial``)
    partial_from: str | None = None
    # the mid-depth feature map ``--mid-pool auto`` pools beside the last one (None: name it explicitly)
    mid_tap: str | None = None
    description: str = ""

    @property
    def display(self) -> str:
        return self.keras_name


_BACKBONES = [
    Backbone("vgg16", "VGG16", 224, 32, Scaling.CAFFE, partial_from="block5_conv1",
             description="VGG16 (138M params with top; 14.7M conv)"),
    Backbone("resnet50", "ResNet50", 224, 32, Scaling.CAFFE, partial_from="conv5_block1_1_conv",
             description="ResNet50"),
    Backbone("resnet101", "ResNet101", 224, 32, Scaling.CAFFE, partial_from="conv5_block1_1_conv",
             description="ResNet101"),
    Backbone("resnet152", "ResNet152", 224, 32, Scaling.CAFFE, partial_from="conv5_block1_1_conv",
             description="ResNet152 (the DR grading paper's backbone)"),
    Backbone("inceptionv3", "InceptionV3", 299, 75, Scaling.TF, partial_from="mixed9",
             description="InceptionV3 (299 px)"),
    Backbone("xception", "Xception", 299, 71, Scaling.TF, partial_from="block14_sepconv1",
             description="Xception (299 px; the five-CNN glaucoma benchmark's fifth backbone)"),
    Backbone("densenet121", "DenseNet121", 224, 32, Scaling.TORCH, partial_from="conv5_block1_0_bn",
             description="DenseNet121"),
    Backbone("mobilenet", "MobileNet", 224, 32, Scaling.TF, options=("alpha", "depth_multiplier"),
             partial_from="conv_dw_12", description="MobileNet v1 (alpha 0.25-1.0)"),
    Backbone("mobilenetv2", "MobileNetV2", 224, 32, Scaling.TF, options=("alpha",),
             partial_from="block_13_expand", mid_tap="block_13_expand_relu",
             description="MobileNetV2 (alpha 0.35-1.4)"),
    Backbone("mobilenetv3small", "MobileNetV3Small", 224, 32, Scaling.TF, options=("alpha", "minimalistic"),
             fixed_kwargs={"include_preprocessing": False}, partial_from="expanded_conv_8/expand",
             description="MobileNetV3-Small"),
    Backbone("mobilenetv3large", "MobileNetV3Large", 224, 32, Scaling.TF, options=("alpha", "minimalistic"),
             fixed_kwargs={"include_preprocessing": False}, partial_from="expanded_conv_12/expand",
             description="MobileNetV3-Large"),
    Backbone("efficientnetb0", "EfficientNetB0", 224, 32, Scaling.TORCH,
             strip_prefixes=("rescaling", "normalization", "tf.math.multiply"),
             partial_from="block6a_expand_conv", description="EfficientNet-B0"),
]

BACKBONES: dict[str, Backbone] = {b.name: b for b in _BACKBONES}


def _key(name: str) -> str:
    return str(name).lower().replace("_", "").replace("-", "")


def get_backbone(name: str) -> Backbone:
    """Look a backbone up by name (case, ``-`` and ``_`` ignored); unknown → one-line ``ModelError``."""
    b = BACKBONES.get(_key(name))
    if b is None:
        close = difflib.get_close_matches(_key(name), list(BACKBONES), n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise ModelError(f"unknown architecture '{name}' (choose from: {', '.join(BACKBONES)}){hint}")
    return b


def backbone_names() -> list[str]:
    return list(BACKBONES)
