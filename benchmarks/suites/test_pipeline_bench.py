"""Input-pipeline throughput on real ODIR images: decode + preprocess (images/s), with and without cache.

Run: ``python -m pytest benchmarks/suites/test_pipeline_bench.py --benchmark-only``
(``extra_info.images_per_s`` in the report is the number to read). Also times the dataset open
(ODIR CSV parse + image listing + header check), which must stay well under a second.
"""
from __future__ import annotations

import os

import pytest

pytest.importorskip("pytest_benchmark")

from edgeretina.data import load_arrays, make_tf_dataset, open_dataset  # noqa: E402
from edgeretina.paths import shared_dir  # noqa: E402
from edgeretina.preprocess import Pipeline  # noqa: E402

N_IMAGES = 128
ODIR = shared_dir() / "data" / "odir"
pytestmark = pytest.mark.skipif(not (ODIR / "annotations.csv").is_file(), reason="ODIR not found in shared/")


@pytest.fixture(scope="module")
def records():
    return open_dataset(ODIR, "glaucoma").records[:N_IMAGES]


def _info(benchmark, n):
    benchmark.extra_info["images"] = n
    benchmark.extra_info["cpus"] = os.cpu_count()
    if benchmark.stats and benchmark.stats.stats.mean:
        benchmark.extra_info["images_per_s"] = round(n / benchmark.stats.stats.mean, 1)


def test_open_odir_dataset(benchmark):
    ds = benchmark.pedantic(open_dataset, args=(ODIR, "glaucoma"), rounds=5, iterations=1)
    assert len(ds.records) == 2480


@pytest.mark.parametrize("recipe", ["default", "onh+clahe"])
def test_decode_preprocess_no_cache(benchmark, records, recipe):
    """Every image decoded from JPEG and run through the pipeline (thread pool, all cores)."""
    pipe = Pipeline.default(224, "tf") if recipe == "default" else Pipeline.default(224, "tf", onh=True, clahe=True)
    X, _ = benchmark.pedantic(load_arrays, args=(records, pipe), rounds=3, iterations=1)
    assert X.shape == (len(records), 224, 224, 3)
    _info(benchmark, len(records))


def _epoch(ds):
    n = 0
    for x, _ in ds:
        n += int(x.shape[0])
    return n


def test_tf_dataset_first_epoch_no_cache(benchmark, records):
    """tf.data: parallel decode → preprocess → scale → batch, one epoch, nothing cached yet."""
    pipe = Pipeline.default(224, "tf")

    def run():
        return _epoch(make_tf_dataset(records, pipe, batch_size=32, cache=False))

    assert benchmark.pedantic(run, rounds=3, iterations=1, warmup_rounds=1) == len(records)  # warm-up: TF init
    _info(benchmark, len(records))


def test_tf_dataset_cached_epoch(benchmark, records):
    """tf.data with the decoded, preprocessed uint8 images cached: a later epoch (scale + batch only)."""
    ds = make_tf_dataset(records, Pipeline.default(224, "tf"), batch_size=32, cache=True)
    _epoch(ds)  # fills the cache
    assert benchmark.pedantic(_epoch, args=(ds,), rounds=5, iterations=1) == len(records)
    _info(benchmark, len(records))
