"""Backbone registry and heads (issue 4). ``build_model(arch, spec, ...)`` returns a flat Keras model."""
from edgeretina.models.backbones import BACKBONES, Backbone, Scaling, backbone_names, get_backbone
from edgeretina.models.build import (backbone_layers, build_backbone, build_model, head_layers,
                                     normalize_weights)
from edgeretina.models.heads import HeadSpec, HeadType, apply_head, head_model

__all__ = ["BACKBONES", "Backbone", "Scaling", "backbone_names", "get_backbone", "build_model",
           "build_backbone", "backbone_layers", "head_layers", "normalize_weights", "HeadSpec", "HeadType",
           "apply_head", "head_model"]
