"""Benchmark harness, installed as ``edgeretina.benchmarks`` (the source folder is ``benchmarks/``).

``benchmarks/suites/`` holds pytest-benchmark files: ``pytest benchmarks/suites``.
"""
