"""Export backends, installed as ``edgeretina.converters`` (the source folder is ``converters/``).

>>> from edgeretina.converters import export_model, Variant
>>> report = export_model("runs/glaucoma", ["float32", "int8"])          # → runs/glaucoma/export/
>>> report["int8"].verification["agreement"]
>>> from edgeretina.converters.metadata import read_metadata

Importing this package does not import TensorFlow (the CLI's ``--help`` stays fast).
"""
from .export import ExportReport, ExportResult, export_model
from .finetune import FineTune
from .metadata import read_metadata
from .variants import ALL, DEFAULT, IO, VARIANTS, Variant, VariantInfo, parse_variant, select_variants

__all__ = ["export_model", "ExportReport", "ExportResult", "FineTune", "read_metadata", "Variant", "VariantInfo",
           "VARIANTS", "IO", "ALL", "DEFAULT", "parse_variant", "select_variants"]
