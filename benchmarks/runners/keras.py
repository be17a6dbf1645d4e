"""Re-export: the ``keras-cpu`` / ``gpu`` devices' runner is :class:`edgeretina.inference.keras.KerasRunner`
(the inference layer, which ``predict`` and the bench share)."""
from __future__ import annotations

from edgeretina.inference.keras import KerasRunner, gpu_devices, set_cpu_threads

__all__ = ["KerasRunner", "gpu_devices", "set_cpu_threads"]
