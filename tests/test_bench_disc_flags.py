"""Bench reports count the low-confidence / fallback optic-disc crops when the reference crops the ONH."""
from __future__ import annotations

from edgeretina.benchmarks.harness import disc_flags
from edgeretina.benchmarks.report import Report
from edgeretina.data import open_dataset
from edgeretina.preprocess import Pipeline


def test_disc_flags_only_for_onh_pipelines_and_shown_in_the_report():
    ds = open_dataset("synthetic:n=40,size=128,seed=5", "glaucoma")
    assert disc_flags(ds.records, Pipeline.default(64, "tf").to_json()) == {}
    d = disc_flags(ds.records, Pipeline.default(64, "tf", onh=True).to_json())["disc_flags"]
    assert d["n"] == 40 and 0 <= d["flagged"] <= 40 and len(d["flagged_keys"]) == min(d["flagged"], 50)
    rep = Report(task="glaucoma", kind="binary", dataset={"path": "synthetic", "split": "test", "n_images": 40,
                                                          "classes": {}, "disc_flags": d},
                 machine={}, reference="ref.tflite", variants=(), settings={})
    assert f"{d['flagged']} of 40" in rep.to_markdown()
