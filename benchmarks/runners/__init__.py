"""Runners: one per device, one interface (see ``base.Runner``); registry in ``benchmarks/devices.py``."""
