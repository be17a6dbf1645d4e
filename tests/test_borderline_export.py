"""Issue 18, the app side: ``edgeretina export`` measures the borderline band and writes it into every variant's
metadata (converters/band.py), ``predict`` flags decisions within it by default, ``calibrate`` keeps it, and
the bench's stability section reports how many test eyes lie within the shipped band (the retakes an app
would ask for). Runs on the session's ``tiny_run`` model and its exports (helpers/testmodels.py, shared with
tests/test_predict.py in one process); the only new export is a float32 one without verification images."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from edgeretina.cli import cli


@pytest.fixture(scope="module")
def exported(tiny_run):
    from helpers.testmodels import glaucoma_variants

    return glaucoma_variants(tiny_run)


@pytest.fixture(scope="module")
def test_records(exported):
    from edgeretina.data import open_dataset

    return open_dataset(exported["data"], "glaucoma").split()["test"]


@pytest.fixture(scope="module")
def photos(test_records, tmp_path_factory):
    import cv2

    d = tmp_path_factory.mktemp("band_photos")
    paths = []
    for r in test_records[:12]:
        p = d / f"{r.key}.png"
        assert cv2.imwrite(str(p), r.image[:, :, ::-1])
        paths.append(str(p))
    return paths


def _logit(p: float) -> float:
    p = min(max(float(p), 1e-7), 1 - 1e-7)
    return float(np.log(p) - np.log1p(-p))


# ------------------------------------------------------------------------------------------ options
def test_band_option_values():
    from edgeretina.converters.band import parse_band
    from edgeretina.converters.export import ExportOptions
    from edgeretina.errors import ExportError

    assert parse_band("auto") == "auto" and parse_band(" OFF ") == "off" and parse_band("0.4") == 0.4
    assert ExportOptions(borderline_band=0.25).borderline_band == 0.25
    assert ExportOptions().borderline_band == "auto"
    for bad in ("wide", "0", -1, "nan", True):
        with pytest.raises(ExportError, match="--borderline-band"):
            ExportOptions(borderline_band=bad)
    with pytest.raises(ExportError, match="--band-n"):
        ExportOptions(band_n=3)
    assert ExportOptions(borderline_band="off").to_manifest(1.0)["band_n"] is None
    from edgeretina.converters.band import fixed_band

    assert fixed_band(0.3) == {"band": 0.3, "method": "given", "rule": "--borderline-band on the export command line"}


# ------------------------------------------------------------------------------------------ export
def test_export_writes_measured_band_into_every_variant(exported):
    from edgeretina.runtime import read_metadata
    from edgeretina.shifts import Benign

    bands = {}
    for v, f in exported["tflite"].items():
        meta = read_metadata(f)  # through the LiteRT layer's reader, as predict and the bench read it
        prov = meta["export"]["borderline_band"]
        bands[v] = meta["borderline_band"]
        assert meta["borderline_band"] > 0 and prov["band"] == meta["borderline_band"]
        assert prov["method"] == "measured" and prov["quantile"] == 0.95
        assert prov["perturbations"] == [b.value for b in Benign]
        assert set(prov["per_perturbation"]) == set(prov["perturbations"])
        assert prov["n_images"] == 80 and "validation" in prov["source"]  # the tiny run's whole val split
        assert all(r["quantile"] >= 0 and r["sd"] >= 0 and 0 <= r["flip_rate"] <= 1
                   for r in prov["per_perturbation"].values())
    assert len(set(bands.values())) == 1  # one band (the source model's) for every variant
    man = json.loads((exported["export"] / "manifest.json").read_text())
    assert man["borderline_band"]["band"] == next(iter(bands.values()))
    assert man["options"]["borderline_band"] == "auto" and man["options"]["band_n"] == 100


def test_band_is_the_bench_stability_code_on_the_same_images(exported, test_records):
    """measure_band on 24 test photos through the float32 file = the bench's stability stage (Rescorer,
    decision_change) on the same photos: same perturbed pixels, same seeds, same logit changes."""
    from edgeretina.benchmarks.devices import DEVICES, Device
    from edgeretina.benchmarks.modelfile import open_model
    from edgeretina.benchmarks.robustness import RawImages, Rescorer
    from edgeretina.benchmarks.scoring import decision_change
    from edgeretina.converters.band import measure_band
    from edgeretina.preprocess import Pipeline
    from edgeretina.shifts import Benign, apply_benign

    m = open_model(exported["tflite"]["float32"])
    recs = test_records[:24]
    runner = DEVICES[Device.CPU].load(m, 1)
    got = measure_band(runner.predict, [lambda r=r: r.image for r in recs],
                       Pipeline.from_json(m.config.preprocessing), m.config.spec, m.config.threshold,
                       source="test photos")
    resc = Rescorer([m], RawImages(recs), threads=1, seed=0)
    base = resc.score(lambda img, sd: img)[m.path]
    for b in Benign:
        probs = resc.score(lambda img, sd, b=b: apply_benign(img, b, sd))[m.path]
        c = decision_change(m.config.spec, base, probs, m.config.threshold)
        row = got.per_perturbation[b.value]
        assert row["sd"] == pytest.approx(c.logit_sd, abs=1e-6) and row["mean"] == pytest.approx(c.logit_mean, abs=1e-6)
        assert row["flip_rate"] == pytest.approx(c.flip_rate)
    assert got.band > 0 and got.n_images == 24


def test_export_band_off(tiny_run, tmp_path):
    """``--borderline-band off`` writes no band (and says so); a malformed value is a one-line error."""
    from edgeretina.runtime import read_metadata

    out = tmp_path / "off"
    r = CliRunner().invoke(cli, ["export", str(tiny_run), "--float32", "--verify-n", "0", "--borderline-band", "off",
                                 "--out", str(out), "-q"], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    assert "borderline band: none (--borderline-band off)" in r.output
    f = next(out.glob("*_float32.tflite"))
    meta = read_metadata(f)
    assert "borderline_band" not in meta and "borderline_band" not in (meta.get("extra") or {})
    assert meta["export"]["borderline_band"]["method"] == "off"
    from edgeretina.benchmarks.predict import borderline_band_of
    from edgeretina.benchmarks.modelfile import open_model

    assert borderline_band_of(open_model(f)) is None  # predict judges nothing
    r = CliRunner().invoke(cli, ["export", str(tiny_run), "--borderline-band", "wide", "--out", str(tmp_path / "x")])
    assert r.exit_code == 2 and r.output.startswith("error: --borderline-band") and len(r.output.splitlines()) == 1


# ------------------------------------------------------------------------------------------ predict
def test_predict_flags_borderline_from_exported_metadata(exported, photos):
    from edgeretina.benchmarks.predict import predict_images
    from edgeretina.runtime import read_metadata

    f = exported["tflite"]["int8"]
    band = read_metadata(f)["borderline_band"]
    preds = predict_images(f, photos)
    dist = [abs(_logit(p.score) - _logit(p.threshold)) for p in preds]
    assert all(p.borderline_band == band for p in preds)
    assert [p.borderline for p in preds] == [d <= band for d in dist]
    assert any(p.borderline for p in preds)  # a score inside the band is flagged
    # a band just under the closest photo's distance flags nothing (the --borderline option still wins)
    assert not any(p.borderline for p in predict_images(f, photos, borderline=0.99 * min(dist)))
    res = CliRunner().invoke(cli, ["predict", str(f), *photos])
    assert res.exit_code == 0, res.output
    lines = res.stdout.strip().splitlines()[1:]
    assert ["borderline (within ±" in ln for ln in lines] == [p.borderline for p in preds]


# ------------------------------------------------------------------------------------------ calibrate
def test_calibrate_keeps_the_band(exported, tmp_path):
    from edgeretina.benchmarks.calibrate import calibrate
    from edgeretina.runtime import read_metadata

    src = exported["tflite"]["float32"]
    old = read_metadata(src)
    out = tmp_path / "site.tflite"
    calibrate(src, "synthetic:n=60,size=96,seed=11", out, n_boot=0)
    new = read_metadata(out)
    assert new["threshold"] != old["threshold"] and "calibration" in new
    assert new["borderline_band"] == old["borderline_band"]
    assert new["export"]["borderline_band"] == old["export"]["borderline_band"]


# ------------------------------------------------------------------------------------------ bench
def test_bench_stability_reports_the_share_within_the_shipped_band(exported, test_records):
    """The stability section: per model file, the band it ships and the share of test eyes within it of the
    threshold (margin_share), in the summary line and a markdown column."""
    from edgeretina.benchmarks.modelfile import open_model
    from edgeretina.benchmarks.robustness import RawImages, Rescorer, stability_stage
    from edgeretina.benchmarks.scoring import margin_share
    from edgeretina.shifts import Benign

    models = [open_model(exported["run"]), open_model(exported["tflite"]["float32"])]
    ref, f32 = models
    recs = test_records[:24]
    resc = Rescorer(models, RawImages(recs), threads=1, seed=0)
    base = resc.score(lambda img, sd: img)
    spec, t = ref.config.spec, ref.config.threshold
    st = stability_stage(resc, (Benign.JPEG95,), spec, t, ref, base, {m.path: 0.0 for m in models})
    v = {x["name"]: x for x in st.variants}
    band = f32.meta["borderline_band"]
    assert "shipped_band" not in v[ref.name]  # the run dir's config carries no band
    assert v["float32"]["shipped_band"] == band
    assert v["float32"]["near_shipped_band"] == pytest.approx(margin_share(spec, base[f32.path], t, band))
    assert f"shipped band (model metadata) ±{band:.3f} logit holds" in st.summary()
    md = "\n".join(st.to_markdown())
    assert "Retakes an app would ask for" in md and "Within ± shipped band (retakes)" in md
    from edgeretina.benchmarks.report import Stability

    assert Stability.from_dict(st.to_dict()).to_dict() == st.to_dict()
