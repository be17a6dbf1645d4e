"""``BenchOptions``: every option of ``run_bench`` in one frozen, validated object (issue 16).

The defaults written here are THE defaults: ``run_bench``'s keywords, the ``edgeretina bench`` click options
(``edgeretina/cli/bench.py`` reads them from :data:`DEFAULTS`) and the command line a report records.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, fields, replace
from typing import Any, Sequence

from edgeretina.errors import DataError, EdgeRetinaError
from edgeretina.shifts import Benign, Shift, parse_benign, parse_shifts

SPLITS = ("test", "val", "train", "all")


def parse_devices(values: str | Sequence[str] | None) -> tuple[str, ...]:
    """Device names from repeatable and/or comma-separated values, in order, without repeats (default cpu).
    A piece ``name=value`` belongs to the device before it (``arm64-emu:max,sme=off`` is one device)."""
    if values is None or isinstance(values, str):
        values = (values,) if values else ()
    out: list[str] = []
    for v in values or ("cpu",):
        pieces: list[str] = []
        for d in str(getattr(v, "value", v)).split(","):
            d = d.strip()
            if "=" in d and ":" not in d and pieces and ":" in pieces[-1]:
                pieces[-1] += "," + d
            elif d:
                pieces.append(d)
        out += [d for d in pieces if d not in out]
    return tuple(out) or ("cpu",)


def parse_stability(value: bool | str) -> bool:
    if isinstance(value, str):
        return value.strip().lower() not in ("off", "no", "false", "0")
    return bool(value)


@dataclass(frozen=True)
class BenchOptions:
    """What ``run_bench`` measures and how (everything but the models, the data, the output folder and the
    callbacks). Checked on construction (``EdgeRetinaError`` / ``DataError``: one-line user errors).

    Scoring and timing: ``task`` (default: the models' own), ``split`` (``SPLITS``), ``devices`` (names, see
    ``benchmarks/devices.py``), ``threads`` (LiteRT threads; None: all cores), ``runs`` timing passes over the
    first ``timing_images`` images after ``warmup`` untimed calls, ``reference`` (default: the Keras model,
    else the float32 .tflite), ``n_boot`` bootstrap resamples for the AUROC CI (0: none), ``seed``,
    ``max_images`` (a seeded random subset).

    Robustness stages (``benchmarks/robustness.py``): ``shifts`` camera shifts for the stress test (empty: no
    stress test); ``stability`` the decision-stability floor under the ``benign`` perturbations;
    ``raw_cache_mb`` decoded photos kept in memory (beyond it the file bytes are kept and re-decoded).
    """

    task: str | None = None
    split: str = "test"
    devices: tuple[str, ...] = ("cpu",)
    threads: int | None = None
    runs: int = 10
    warmup: int = 3
    timing_images: int = 20
    reference: str | os.PathLike | None = None
    n_boot: int = 1000
    seed: int = 0
    max_images: int | None = None
    shifts: tuple[Shift, ...] = ()
    stability: bool = True
    benign: tuple[Benign, ...] = tuple(Benign)
    raw_cache_mb: int = 1024
    agreement_data: str | None = None  # flips vs the reference on an unlabelled set (benchmarks/agreement.py)

    def __post_init__(self) -> None:
        if self.runs < 1 or self.warmup < 0 or self.timing_images < 1:
            raise EdgeRetinaError("--runs and --timing-images must be >= 1 and --warmup >= 0")
        if self.n_boot < 0:
            raise EdgeRetinaError("--n-boot must be >= 0")
        if self.threads is not None and int(self.threads) < 1:
            raise EdgeRetinaError("--threads must be >= 1")
        if self.max_images is not None and int(self.max_images) < 1:
            raise EdgeRetinaError("--max-images must be >= 1")
        if self.split not in SPLITS:
            raise DataError(f"unknown split '{self.split}' (choose from: {', '.join(SPLITS)})")
        object.__setattr__(self, "devices", parse_devices(self.devices))
        object.__setattr__(self, "shifts", tuple(self.shifts))
        object.__setattr__(self, "benign", tuple(self.benign))

    @classmethod
    def make(cls, shift: str | Sequence[str] | None = None, stability: bool | str = True,
             benign: Sequence[str] | None = None, **kw) -> "BenchOptions":
        """From user-level values: shift names (``"all"``, a comma list), ``stability`` ``"on"``/``"off"``,
        benign perturbation names; other keywords are fields."""
        return cls(shifts=parse_shifts(shift), stability=parse_stability(stability),
                   benign=tuple(parse_benign(b) for b in benign) if benign else tuple(Benign), **kw)

    def with_(self, **kw: Any) -> "BenchOptions":
        """A copy with some fields changed (checked again); unknown names are a ``TypeError``."""
        known = {f.name for f in fields(self)}
        bad = sorted(set(kw) - known)
        if bad:
            raise TypeError(f"unknown bench option(s): {', '.join(bad)}")
        return replace(self, **kw) if kw else self

    @property
    def passes(self) -> int:
        """Perturbed passes over the images (for progress)."""
        return 2 * len(self.shifts) + (len(self.benign) if self.stability else 0)

    def resolved_threads(self) -> int:
        return int(self.threads) if self.threads else (os.cpu_count() or 1)


DEFAULTS = BenchOptions()

__all__ = ["BenchOptions", "DEFAULTS", "SPLITS", "parse_devices", "parse_stability"]
