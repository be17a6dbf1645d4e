"""Emulated aarch64 LiteRT (issue 17): the same .tflite scored by the aarch64 ai-edge-litert wheel under
qemu-user, compared with the same file on this x86 machine.

- :mod:`.arm64_env`: the environment (arm64 CPython sysroot + aarch64 wheels; ``python -m
  edgeretina.emulation.arm64_env build``) and the one place that starts the emulated Python;
- :mod:`.cpus`: emulated CPU names (``cortex-a76``, ``max,sme=off`` …) and the SME refusal;
- :mod:`.guest`: :func:`~.guest.emulated_raw` — raw outputs of a file on an emulated CPU;
- :mod:`.parity`: :class:`~.parity.Parity` / :func:`~.parity.compare_outputs` (decisions, max |Δ|, bit-identity).

Core layer: used by ``converters`` (``export --verify-arm``) and ``benchmarks`` (``--device arm64-emu``, the
parity table). No TensorFlow.
"""
