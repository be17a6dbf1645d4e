"""The variant registry: ONE table drives the CLI flags, file suffixes, verification tolerances and docs.

Adding a variant is one ``Variant`` member plus one ``VARIANTS`` row (and, if it needs a new recipe, one
function in ``tflite.py``/``prune.py``/``qat.py``).
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass
from enum import Enum

from edgeretina.enums import TextEnum
from edgeretina.errors import ExportError


class Variant(TextEnum):
    FLOAT32 = "float32"
    FP16 = "fp16"
    DYNAMIC = "dynamic"
    INT8 = "int8"
    MIXED = "mixed"
    PRUNED = "pruned"
    PRUNED_INT8 = "pruned-int8"
    QAT = "qat"
    PQAT = "pqat"
    INT8_GUARD = "int8-guard"

    @property
    def info(self) -> "VariantInfo":
        return VARIANTS[self]


class IO(str, Enum):
    """Interface tensor dtype of full-integer variants (float variants always have float32 interfaces)."""

    INT8 = "int8"
    FLOAT = "float"


@dataclass(frozen=True)
class VariantInfo:
    variant: Variant
    suffix: str              # file name: <stem>_<suffix>.tflite
    weights: str             # "float32" | "float16" | "int8"
    activations: str         # "float32" | "int8"
    pruned: bool             # magnitude pruning + fine-tune before conversion
    qat: bool                # quantization-aware fine-tune before conversion
    calibration: bool        # needs a representative dataset
    score_tol: float         # max |Δ score| vs the source Keras model on the verification sample
    min_agreement: float     # fraction of decisions that must agree with the source model
    description: str
    float_layers: int = 0     # selective quantization: the N worst layers (QuantizationDebugger) stay float
    guarded: bool = False     # int8 answers, images near the threshold re-scored by fp16 (converters/guard.py)

    @property
    def full_integer(self) -> bool:
        return self.activations == "int8"

    @property
    def mixed(self) -> bool:
        return self.float_layers > 0

    @property
    def integer_io(self) -> bool:
        """The interface follows ``--io`` (int8 by default): full-integer variants except mixed, whose
        selectively quantized graph keeps float input and output."""
        return self.full_integer and not self.mixed

    @property
    def trains(self) -> bool:
        return self.pruned or self.qat


# Tolerances apply to the .tflite vs the Keras model it was converted from: the source model for conversion-only
# variants, the fine-tuned Keras model for pruned/QAT variants (whose drift from the source model is recorded
# as ``vs_source``, not judged: their accuracy is measured by `edgeretina bench`). They are set to catch a broken
# conversion (wrong scaling, wrong output, a bad op: max |Δ| near 1, agreement near the prevalence), not to
# judge legitimate quantization noise, which on ImageNet-feature heads reached max |Δ| 0.05 (fp16), 0.25
# (dynamic) and 0.65 (int8) with 88-94 % agreement on real ODIR models (docs/export.md).
VARIANTS: dict[Variant, VariantInfo] = {
    Variant.FLOAT32: VariantInfo(Variant.FLOAT32, "float32", "float32", "float32", False, False, False,
                                 1e-4, 1.0, "float32 weights and activations (reference)"),
    Variant.FP16: VariantInfo(Variant.FP16, "fp16", "float16", "float32", False, False, False,
                              0.05, 0.95, "float16 weights, float32 compute; half the size"),
    Variant.DYNAMIC: VariantInfo(Variant.DYNAMIC, "dynamic", "int8", "float32", False, False, False,
                                 0.3, 0.85, "dynamic-range: int8 weights, float activations"),
    Variant.INT8: VariantInfo(Variant.INT8, "int8", "int8", "int8", False, False, True,
                              0.7, 0.75, "full-integer int8 weights and activations, calibrated"),
    Variant.MIXED: VariantInfo(Variant.MIXED, "mixed", "int8", "int8", False, False, True,
                               0.7, 0.75, "int8 except the 5 layers with the worst quantization error "
                               "(float there; float32 interface)", float_layers=5),
    Variant.PRUNED: VariantInfo(Variant.PRUNED, "pruned", "float32", "float32", True, False, False,
                                1e-4, 1.0, "magnitude-pruned to --sparsity, fine-tuned, float32"),
    Variant.PRUNED_INT8: VariantInfo(Variant.PRUNED_INT8, "pruned_int8", "int8", "int8", True, False, True,
                                     0.7, 0.75, "pruned, then full-integer int8 (calibrated)"),
    Variant.QAT: VariantInfo(Variant.QAT, "qat", "int8", "int8", False, True, False,
                             0.7, 0.75, "quantization-aware fine-tune, then full-integer int8"),
    Variant.PQAT: VariantInfo(Variant.PQAT, "pqat", "int8", "int8", True, True, False,
                              0.7, 0.75, "pruned, then pruning-preserving QAT, full-integer int8"),
    Variant.INT8_GUARD: VariantInfo(Variant.INT8_GUARD, "int8_guard", "int8", "int8", False, False, True,
                                    0.7, 0.75, "the int8 model, with images within k × its logit noise of the "
                                    "threshold re-scored by the fp16 file (ships both; adds --int8 --fp16)",
                                    guarded=True),
}

# CLI flags (edgeretina export --<flag>), generated from the table above: one per variant that is not a pruned
# form of another (the --pruned modifier maps float32 / int8 / qat onto those), then --pruned itself.
FLAGS: dict[str, str] = {
    **{v.value: i.description for v, i in VARIANTS.items() if not i.pruned},
    "pruned": "magnitude-prune to --sparsity and fine-tune (alone: float32; with --int8: pruned-int8; "
              "with --qat: pqat)",
}

ALL: tuple[Variant, ...] = tuple(Variant)
DEFAULT: tuple[Variant, ...] = (Variant.FLOAT32, Variant.INT8)

# The --pruned / --qat modifiers map base variants onto their pruned / QAT counterparts.
_PRUNED_OF = {Variant.FLOAT32: Variant.PRUNED, Variant.INT8: Variant.PRUNED_INT8, Variant.QAT: Variant.PQAT}


def parse_variant(name: str | Variant) -> Variant:
    """A variant name (value, suffix or enum) → ``Variant``, with a did-you-mean on a typo."""
    if isinstance(name, Variant):
        return name
    key = str(name).strip().lower().replace("_", "-")
    for v in Variant:
        if key in (v.value, v.info.suffix.replace("_", "-")):
            return v
    names = [v.value for v in Variant]
    close = difflib.get_close_matches(key, names, n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    raise ExportError(f"unknown variant '{name}'{hint}; choose from: {', '.join(names)}")


def _flags_on(flags: dict[str, bool]) -> list[str]:
    """The ``FLAGS`` names (``int8-guard`` or ``int8_guard``) set in ``flags``, in ``FLAGS`` order."""
    known = {n.replace("-", "_"): n for n in FLAGS}
    unknown = sorted(k for k in flags if k.replace("-", "_") not in known)
    if unknown:
        raise TypeError(f"select_variants: unknown flag(s) {', '.join(unknown)} (flags: {', '.join(FLAGS)})")
    given = {known[k.replace("-", "_")] for k, v in flags.items() if v}
    return [n for n in FLAGS if n in given]


def select_variants(*, all_: bool = False, **flags: bool) -> tuple[Variant, ...]:
    """CLI flags (one keyword per ``FLAGS`` name, e.g. ``int8=True, pruned=True``) → the ordered variants.

    ``--pruned`` is a modifier: alone it means the pruned float32 model; with ``--int8`` it turns int8 into
    ``pruned-int8``; with ``--qat`` it turns QAT into pruning-preserving QAT (``pqat``); with ``--float32`` it
    adds ``pruned`` next to float32. A guarded variant (``--int8-guard``) also builds ``int8`` and ``fp16``
    (the files it cascades). ``--all`` builds every variant. No flag → float32 + int8.
    """
    on = _flags_on(flags)
    if all_:
        if on:
            raise ExportError(f"--all conflicts with {', '.join('--' + n for n in on)} "
                              "(--all already builds every variant)")
        return ALL
    pruned = "pruned" in on
    bases = [Variant(n) for n in on if n != "pruned"]
    if pruned:
        bad = [v for v in bases if v not in _PRUNED_OF]
        if bad:
            raise ExportError(f"--pruned conflicts with --{bad[0].value}: pruning combines with float32, --int8 "
                              "or --qat only")
    out: list[Variant] = []
    for v in bases:
        out.append(_PRUNED_OF[v] if pruned and v is not Variant.FLOAT32 else v)
        if v.info.guarded:
            out += [Variant.FP16, Variant.INT8]
    if pruned and (Variant.FLOAT32 in bases or not {Variant.INT8, Variant.QAT} & set(bases)):
        out.append(Variant.PRUNED)
    return tuple(sorted(set(out), key=ALL.index)) if out else DEFAULT


def variants_markdown() -> str:
    """The docs table (docs/export.md embeds this output)."""
    lines = ["| variant | file suffix | weights | activations | calibration | fine-tune | max \\|Δ score\\| | min agreement | what |",
             "|---|---|---|---|---|---|---|---|---|"]
    for v, i in VARIANTS.items():
        ft = "+".join(x for x, on in (("prune", i.pruned), ("QAT", i.qat)) if on) or "–"
        lines.append(f"| `{v.value}` | `_{i.suffix}.tflite` | {i.weights} | {i.activations} | "
                     f"{'yes' if i.calibration else '–'} | {ft} | {i.score_tol:g} | {i.min_agreement:g} | {i.description} |")
    return "\n".join(lines)
