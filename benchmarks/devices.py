"""Device registry: one row per ``--device`` choice — what it runs, how it is checked, how a runner is made.

=============  ==========================================================================================
``cpu``        .tflite on ai-edge-litert (XNNPACK, ``--threads``); a .keras model in the same run is timed
               with Keras on the CPU (its rows say ``keras-cpu``), so one ``--device cpu`` run covers a
               float reference and all its exported variants. ``cpu:builtin``: the same files on LiteRT's
               built-in kernels (no XNNPACK delegate — what an app gets with XNNPACK turned off, and the
               kernels LiteRT falls back to for ops a delegate does not take): its own scores, AUROC and
               flips, so a bench with ``--device cpu cpu:builtin`` shows how much the decisions depend on
               the kernel library.
``keras-cpu``  .keras models with Keras ``predict`` at batch 1 on the CPU (the paper's timing).
``gpu``        .keras models with Keras on the first TensorFlow GPU. No GPU → "no GPU found".
``android``    .tflite files on a phone through adb and the android_demo benchmark mode
               (``benchmarks/runners/android.py``). Scores come from the same file on the host (LiteRT);
               only the timing is the phone's.
``arm64-emu``  .tflite files on aarch64 LiteRT under qemu-user (``arm64-emu:CPU``, default cortex-a76;
               ``benchmarks/runners/arm64_emu.py``, environment from ``edgeretina/emulation/arm64_env.py``): scores,
               AUROC and flips from the emulated kernels, parity with the same file on x86 in
               ``device_info["vs_x86"]``; no latency (emulated time is not a speed).
=============  ==========================================================================================

A device that takes an option (``arm64-emu:cortex-a53``) is a :class:`DeviceChoice`: a ``str`` that reads
like a :class:`Device` (``.value`` is the full name, ``.base`` the Device), so reports name the option.

An android runner module provides ``check() -> None`` (raises ``DeviceError`` for no adb / no device /
unauthorised device) and ``load(path, *, meta, threads) -> Runner`` (a ``base.Runner`` whose ``time`` is
measured on the phone; ``supports_predict = False`` when it only times).
"""
from __future__ import annotations

import difflib
import importlib
from dataclasses import dataclass, replace
from functools import partial
from typing import Callable

from edgeretina.enums import TextEnum
from edgeretina.env import machine_line
from edgeretina.errors import DeviceError
from edgeretina.inference.cpu import load_cpu, load_keras_cpu
from edgeretina.inference.keras import KerasRunner, gpu_devices


class Device(TextEnum):
    CPU = "cpu"
    KERAS_CPU = "keras-cpu"
    GPU = "gpu"
    ANDROID = "android"
    ARM64_EMU = "arm64-emu"


class DeviceChoice(str):
    """A device with its option, e.g. ``arm64-emu:max,sme=off`` (``base`` Device, ``option`` text)."""

    def __new__(cls, base: Device, option: str) -> "DeviceChoice":
        obj = super().__new__(cls, f"{base.value}:{option}")
        obj.base, obj.option = base, option
        return obj

    @property
    def value(self) -> str:
        return str.__str__(self)


@dataclass(frozen=True)
class DeviceSpec:
    device: Device
    formats: tuple[str, ...]  # model formats ("tflite", "keras") this device runs
    description: str
    check: Callable[[], None]  # raises DeviceError when the device is not usable here
    load: Callable[..., object]  # (ModelFile, threads) -> Runner

    def runs(self, fmt: str) -> bool:
        return fmt in self.formats

    def skip_reason(self, fmt: str) -> str:
        return f"device '{self.device.value}' runs {' and '.join('.' + f for f in self.formats)} models only"


# ------------------------------------------------------------------------------------------- loaders
# cpu / keras-cpu: edgeretina.inference.cpu (shared with ``edgeretina predict``); the rest are bench-only.


def _load_gpu(model, threads=None):
    return KerasRunner.from_model(model, gpu=True)


def _android_module():
    try:
        return importlib.import_module("edgeretina.benchmarks.runners.android")
    except ModuleNotFoundError as e:
        if e.name and e.name.endswith("runners.android"):
            raise DeviceError("android: the adb runner (benchmarks/runners/android.py) is not installed in "
                              "this build") from None
        raise


def _load_android(model, threads=None):
    mod = _android_module()
    return mod.load(model.path, meta=model.meta, threads=threads)


def _arm64_module():
    return importlib.import_module("edgeretina.benchmarks.runners.arm64_emu")


def _load_arm64(model, threads=None, option=None):
    return _arm64_module().load(model, cpu=option, threads=threads)


def _check_arm64(option=None) -> None:
    _arm64_module().check(option)


def _check_none() -> None:
    return None


CPU_OPTIONS = {"builtin": "LiteRT's built-in kernels, no XNNPACK delegate"}  # cpu:OPTION


def _check_cpu(option: str | None = None) -> None:
    if option is not None and option not in CPU_OPTIONS:
        raise DeviceError(f"device 'cpu' option ':{option}' is unknown; choose from: "
                          f"{', '.join('cpu:' + k for k in CPU_OPTIONS)}")


def _load_cpu(model, threads=None, option=None):
    """``cpu`` (XNNPACK) or ``cpu:builtin`` (LiteRT's built-in kernels) for .tflite; Keras for .keras."""
    _check_cpu(option)
    return load_cpu(model, threads, xnnpack=option != "builtin")


def _check_gpu() -> None:
    if not gpu_devices():
        raise DeviceError("gpu: no GPU found (TensorFlow lists no GPU device; install 'edgeretina[gpu]' "
                          "on a machine with a CUDA GPU)")


def _check_android() -> None:
    mod = _android_module()
    check = getattr(mod, "check", None)
    if check is not None:
        check()


DEVICES: dict[Device, DeviceSpec] = {
    Device.CPU: DeviceSpec(Device.CPU, ("tflite", "keras"),
                           "LiteRT (XNNPACK; cpu:builtin = its built-in kernels) for .tflite, Keras on the CPU "
                           "for .keras", _check_cpu, _load_cpu),
    Device.KERAS_CPU: DeviceSpec(Device.KERAS_CPU, ("keras",), "Keras predict at batch 1 on the CPU",
                                 _check_none, load_keras_cpu),
    Device.GPU: DeviceSpec(Device.GPU, ("keras",), "Keras on the first TensorFlow GPU", _check_gpu, _load_gpu),
    Device.ANDROID: DeviceSpec(Device.ANDROID, ("tflite",), "a phone over adb (android_demo benchmark mode)",
                               _check_android, _load_android),
    Device.ARM64_EMU: DeviceSpec(Device.ARM64_EMU, ("tflite",), "aarch64 LiteRT under qemu-user (kernel parity, "
                                 "no latency)", _check_arm64, _load_arm64),
}
OPTION_DEVICES = (Device.ARM64_EMU, Device.CPU)  # devices that take ":option"


def get_device(name: str | Device) -> DeviceSpec:
    """The spec of ``--device`` ``name``; ``arm64-emu:CPU`` / ``cpu:builtin`` give a spec bound to that
    option."""
    base, sep, option = str(getattr(name, "value", name)).partition(":")
    try:
        if sep and Device(base) in OPTION_DEVICES:
            spec = DEVICES[Device(base)]
            if spec.device is Device.CPU:
                _check_cpu(option)  # a wrong option is an error now, not at check time
            return replace(spec, device=DeviceChoice(spec.device, option),
                           check=partial(spec.check, option), load=partial(spec.load, option=option))
        if sep:
            raise DeviceError(f"device '{base}' takes no option (':{option}')")
        return DEVICES[Device(name)]
    except ValueError:
        names = [d.value for d in Device]
        close = difflib.get_close_matches(str(name), names, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise DeviceError(f"unknown device '{name}'{hint}; choose from: {', '.join(names)}") from None


def facts_line(device: str, facts: dict | None) -> str:
    """One line of a report row's device facts: CPU, cores, ISA flags, runtime, delegate, threads (+ the
    emulator or the phone's SoC when recorded)."""
    f = facts or {}
    if not f:
        return f"{device}: no device facts recorded"
    extra = [f"{k} {f[k]}" for k in ("soc", "emulator", "gpu") if f.get(k)]
    rest = [str(f[k]) for k in ("runtime", "delegate") if f.get(k)] + \
        ([f"{f['threads']} thread{'s' if f['threads'] != 1 else ''}"] if f.get("threads") else [])
    return f"{device}: {machine_line(f)}" + (f"; {', '.join(rest)}" if rest else "") + \
        (f"; {', '.join(extra)}" if extra else "")


def facts_lines(variants) -> list[str]:
    """One :func:`facts_line` per distinct device of a report's rows (first row's facts of each)."""
    seen: dict[str, str] = {}
    for v in variants:
        dev = str(getattr(v, "device", "?"))
        if dev not in seen:
            seen[dev] = facts_line(dev, getattr(v, "device_info", None))
    return list(seen.values())
