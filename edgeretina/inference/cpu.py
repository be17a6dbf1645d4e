"""Which runner a model gets on this machine's CPU: a .tflite on LiteRT (an int8-guard file as its cascade with
the fp16 fallback it names), a .keras on Keras. ``edgeretina predict`` and the bench's ``cpu`` / ``keras-cpu``
devices load models here."""
from __future__ import annotations

from edgeretina.converters.guard import GuardRunner
from edgeretina.errors import ModelError
from edgeretina.run import file_sha256

from .keras import KerasRunner
from .litert import LiteRTRunner
from .modelfile import ModelFile, open_model


def load_cpu(model: ModelFile, threads: int | None = None, xnnpack: bool = True):
    """The CPU runner of an opened model: LiteRT for .tflite (``xnnpack=False``: LiteRT's built-in kernels
    instead of the XNNPACK delegate), Keras for .keras."""
    if model.format == "keras":
        return load_keras_cpu(model, threads)
    if model.guard is not None:
        return load_guarded(model, threads, xnnpack)
    return LiteRTRunner.from_model(model, threads=threads, xnnpack=xnnpack)


def load_guarded(model: ModelFile, threads: int | None = None, xnnpack: bool = True) -> GuardRunner:
    """An int8-guard file: the int8 graph + the fp16 file its metadata names (same folder, checked against
    the manifest and the sha256 in the metadata), run as one cascade (``converters/guard.py``)."""
    info = model.guard
    fb_path = info.fallback_path(model.path)
    fb = open_model(fb_path)
    if file_sha256(fb_path) != info.fallback_sha256:
        raise ModelError(f"{model.path}: its fp16 fallback {fb_path.name} is not the file it was exported with "
                         "(sha256 differs); export the pair again")
    if fb.config.spec.task != model.config.spec.task or tuple(fb.config.labels) != tuple(model.config.labels):
        raise ModelError(f"{model.path}: its fallback {fb_path.name} serves another task or labels")
    return GuardRunner(LiteRTRunner.from_model(model, threads=threads, xnnpack=xnnpack),
                       LiteRTRunner.from_model(fb, threads=threads, xnnpack=xnnpack),
                       model.config.spec, model.config.threshold, info)


def load_keras_cpu(model: ModelFile, threads: int | None = None) -> KerasRunner:
    return KerasRunner.from_model(model, threads=threads, gpu=False)
