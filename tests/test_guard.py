"""int8-guard (converters/guard.py): the int8 model answers, images within the band of the threshold are
re-scored by the fp16 file; in export (metadata → fp16 file), predict and bench. Self-contained: the
``tiny_run`` model's ``--int8-guard --quantizer aeq`` export (tests/helpers/guarded.py)."""
from __future__ import annotations

import json
import shutil
from dataclasses import replace

import numpy as np
import pytest
from click.testing import CliRunner

from edgeretina.cli import cli
from edgeretina.converters.guard import GuardInfo, GuardRunner, in_band, logit, margins, measure
from edgeretina.errors import EdgeRetinaError, ExportError, ModelError
from edgeretina.tasks import task_spec


@pytest.fixture(scope="module")
def exported(tiny_run):
    from helpers.guarded import guard_export

    return guard_export(tiny_run)


@pytest.fixture(scope="module")
def test_x(tiny_run):
    from edgeretina.converters import calib
    from edgeretina.run import resolve_model_path

    _, cfg = resolve_model_path(tiny_run)
    recs = calib.dataset_splits(cfg, "config")["test"][:60]
    X, _ = calib.load_records(recs, calib.pipeline_of(cfg, "config"))
    return X


def _files(out):
    return {v: next(out.glob(f"*_{v}.tflite")) for v in ("fp16", "int8", "int8_guard")}


def test_band_math():
    spec = task_spec("glaucoma")
    s = np.array([0.5, 0.52, 0.9, 0.1])
    m = margins(spec, s, 0.5)
    assert m[0] == 0 and m[1] == pytest.approx(logit(0.52)) and m[2] == pytest.approx(logit(0.9))
    assert in_band(spec, s, 0.5, 0.1).tolist() == [True, True, False, False]
    ref = np.array([0.3, 0.6, 0.8])
    g = measure(spec, 1 / (1 + np.exp(-(logit(ref) + 0.2))), ref, 0.5, k=3)
    assert g["noise_rms"] == pytest.approx(0.2) and g["band"] == pytest.approx(0.6) and g["noise_mean"] == pytest.approx(0.2)
    with pytest.raises(ExportError, match="--guard-k"):
        measure(spec, ref, ref, 0.5, k=-1)


def _softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def test_band_math_argmax():
    """Multi-class: the top-1 − top-2 logit margin; its noise is the change of the reference's own top pair;
    DR grading also guards the referral score p(grade ≥ 2) at the threshold."""
    z = np.array([[2.0, 0.0, 1.0, 0.5, 0.0],      # margin 1 (grade 0 vs 2); p(ref) ≈ 0.39
                  [0.0, 2.0, 1.9, 0.0, -1.0],     # margin 0.1 (1 vs 2)
                  [-1.0, 0.0, 0.0, 4.0, 3.0]])    # margin 1 (3 vs 4); p(ref) ≈ 1
    p = _softmax(z)
    cls = task_spec("classes", ("a", "b", "c", "d", "e"))
    np.testing.assert_allclose(margins(cls, p, None), [1.0, 0.1, 1.0], atol=1e-9)
    dr = task_spec("dr")
    zr = np.log(p[:, 2:].sum(1)) - np.log(p[:, :2].sum(1))
    np.testing.assert_allclose(margins(dr, p, 0.5), np.minimum([1.0, 0.1, 1.0], np.abs(zr)), atol=1e-9)
    assert margins(dr, p, 0.5)[0] < 0.5  # image 0's referral logit (≈ −0.45) is nearer than its grade margin
    assert in_band(cls, p, None, 0.5).tolist() == [False, True, False]
    # int8 = the reference with class 1's logit moved by +0.3 and a shared shift (which softmax ignores):
    # the margin of each image's own top pair moves by 0 (image 0: 0 vs 2), +0.3 (1 vs 2), 0 (3 vs 4)
    z8 = z + np.array([0.0, 0.3, 0.0, 0.0, 0.0]) + 5.0
    g = measure(cls, _softmax(z8), p, None, k=3)
    assert g["noise_rms"] == pytest.approx(np.sqrt(0.09 / 3))
    assert g["noise_mean"] == pytest.approx(0.1) and g["band"] == pytest.approx(3 * g["noise_rms"])
    assert g["rule"].startswith("argmax margin") and "grade" not in g["rule"]
    gd = measure(dr, _softmax(z8), p, 0.5, k=3)  # pooled with the referral logit's change
    d_ref = (np.log(_softmax(z8)[:, 2:].sum(1)) - np.log(_softmax(z8)[:, :2].sum(1))) - zr
    assert gd["noise_rms"] == pytest.approx(np.sqrt((0.09 + (d_ref ** 2).sum()) / 6), rel=1e-6)
    assert "grade >= 2" in gd["rule"]


def test_export_writes_guard_metadata_pointing_at_fp16(exported):
    from edgeretina.converters import read_metadata
    from edgeretina.run import file_sha256

    rep, out = exported
    f = _files(out)
    g = GuardInfo.from_meta(read_metadata(f["int8_guard"]))
    assert g.fallback == f["fp16"].name and g.fallback_sha256 == file_sha256(f["fp16"])
    assert g.k == 3.0 and g.band == pytest.approx(3 * g.noise_rms) and g.band > 0
    assert 0 <= g.rescored_share <= 1 and g.n_images == 48
    assert g.check["n"] == 32 and g.check["agreement"] >= rep["int8"].verification["agreement"]
    # the guard's graph is the int8 file's graph
    from edgeretina.runtime.flatbuffer import graph_sha256

    assert graph_sha256(f["int8_guard"].read_bytes(), "edgeretina") == graph_sha256(f["int8"].read_bytes(), "edgeretina")
    man = json.loads((out / "manifest.json").read_text())
    assert [e["variant"] for e in man["results"]] == ["fp16", "int8", "int8-guard"]
    assert man["results"][2]["guard"]["fallback"] == f["fp16"].name


def test_cascade_decisions_fp16_inside_band_int8_outside(exported, test_x):
    from edgeretina.benchmarks.devices import DEVICES, Device
    from edgeretina.benchmarks.modelfile import open_model
    from edgeretina.tasks import scores_from_output

    _, out = exported
    f = _files(out)
    mg, m8, m16 = open_model(f["int8_guard"]), open_model(f["int8"]), open_model(f["fp16"])
    cpu = DEVICES[Device.CPU]
    runner = cpu.load(mg)
    assert isinstance(runner, GuardRunner)
    p8, p16 = cpu.load(m8).predict(test_x), cpu.load(m16).predict(test_x)
    spec, thr = mg.config.spec, mg.config.threshold
    s8 = scores_from_output(spec, p8)
    # a band that puts images on both sides, whatever the tiny model's noise
    band = float(np.median(margins(spec, s8, thr)))
    r = GuardRunner(runner.primary, runner.fallback, spec, thr, replace(runner.info, band=band))
    pg = r.predict(test_x)
    inside = in_band(spec, s8, thr, band)
    assert 0 < inside.sum() < len(inside)
    np.testing.assert_allclose(pg[inside], p16[inside])
    np.testing.assert_allclose(pg[~inside], p8[~inside])
    assert r.facts["guard"]["rescored"] == int(inside.sum()) and r.facts["guard"]["scored"] == len(test_x)
    assert r.last_mask.tolist() == inside.tolist()
    # its decisions: fp16's inside the band, int8's outside
    d = lambda p: scores_from_output(spec, p) >= thr  # noqa: E731
    assert (d(pg)[inside] == d(p16)[inside]).all() and (d(pg)[~inside] == d(p8)[~inside]).all()
    t = r.time(test_x[:4], runs=1, warmup=1)
    assert t.n == 4 and t.mean > 0
    # size counts both files
    assert mg.size_bytes() == f["int8_guard"].stat().st_size + f["fp16"].stat().st_size


def _guard_inputs(exported, test_x, tiny_run):
    """(spec, threshold, int8 and fp16 probabilities, the Keras model's scores, a noise rms) on ``test_x``: the
    real outputs the k choices are tested on."""
    from edgeretina.benchmarks.devices import DEVICES, Device
    from edgeretina.benchmarks.modelfile import open_model
    from edgeretina.tasks import scores_from_output

    _, out = exported
    f = _files(out)
    m8, m16, mk = open_model(f["int8"]), open_model(f["fp16"]), open_model(tiny_run)
    cpu = DEVICES[Device.CPU]
    p8, p16 = cpu.load(m8).predict(test_x), cpu.load(m16).predict(test_x)
    spec, thr = m8.config.spec, m8.config.threshold
    ref = scores_from_output(spec, cpu.load(mk).predict(test_x))
    rms = 0.5 * float(np.median(margins(spec, scores_from_output(spec, p8), thr))) + 1e-6
    return spec, thr, p8, p16, ref, rms


def test_choose_k_by_a_flip_budget_on_real_outputs(exported, test_x, tiny_run):
    """--guard-max-flips: the smallest k of CHOICE_KS whose cascade keeps the screening flips vs the float
    model within the budget; none → one ExportError naming the best reached."""
    from edgeretina.converters.guard import CHOICE_KS, choose_k, screening_flips
    from edgeretina.tasks import scores_from_output

    spec, thr, p8, p16, ref, rms = _guard_inputs(exported, test_x, tiny_run)
    rates = [screening_flips(spec, scores_from_output(spec, p), ref, thr) for p in (p8, p16)]
    budget = max(rates[1], 0.5 * rates[0])  # at least what fp16 alone flips: a wide enough band keeps it
    k, choice = choose_k(spec, (p8, p16), ref, thr, rms, budget)
    table = choice["table"]
    assert k in CHOICE_KS and table[-1]["k"] == k and table[-1]["flips"] <= budget + 1e-9
    assert all(r["flips"] > budget for r in table[:-1]) and choice["n"] == len(test_x)
    shares = [r["rescored_share"] for r in table]
    assert shares == sorted(shares)
    if rates[1] > 0:  # fp16 itself flips: below that nothing helps
        with pytest.raises(ExportError, match="best: k ="):
            choose_k(spec, (p8, p16), ref, thr, rms, rates[1] / 2)


def test_export_with_guard_max_flips_records_the_choice(tiny_run, tmp_path):
    from edgeretina.converters import export_model, read_metadata
    from edgeretina.converters.guard import CHOICE_KS

    out = tmp_path / "exp"
    export_model(tiny_run, ["int8-guard"], out, calib_n=32, verify_n=16, budget_n=32, guard_max_flips=0.5)
    g = GuardInfo.from_meta(read_metadata(next(out.glob("*_int8_guard.tflite"))))
    c = g.choice
    assert c["max_flips"] == 0.5 and c["n"] == 32 and "training images" in c["source"]
    assert g.k == c["table"][-1]["k"] and g.k in CHOICE_KS and g.band == pytest.approx(g.k * g.noise_rms)
    man = json.loads((out / "manifest.json").read_text())
    assert man["options"]["guard_max_flips"] == 0.5


def test_choose_k_by_a_latency_budget_on_real_outputs(exported, test_x, tiny_run):
    """--guard-max-latency: the fewest flips among the k whose estimated mean latency (1 + re-scored share ×
    fp16/int8) fits; with --guard-max-flips both must hold; an unmeetable budget is one ExportError."""
    from edgeretina.converters.guard import CHOICE_KS, choose_k

    spec, thr, p8, p16, ref, rms = _guard_inputs(exported, test_x, tiny_run)
    _, full = choose_k(spec, (p8, p16), ref, thr, rms, None, 100.0, 2.0)  # every k fits: the whole table
    table = full["table"]
    assert [r["k"] for r in table] == list(CHOICE_KS) and full["latency_ratio"] == 2.0
    assert all(r["est_latency"] == pytest.approx(1 + 2.0 * r["rescored_share"], abs=1e-4) for r in table)
    budget = table[2]["est_latency"]  # k = 1.5's estimate: the larger k cost more
    k, choice = choose_k(spec, (p8, p16), ref, thr, rms, None, budget, 2.0)
    fits = [r for r in table if r["est_latency"] <= budget]
    assert k == min(fits, key=lambda r: (r["flips"], r["k"]))["k"] and choice["max_latency"] == budget
    if table[0]["rescored_share"] > 0:
        with pytest.raises(ExportError, match="--guard-max-latency .*even k = 0.5"):
            choose_k(spec, (p8, p16), ref, thr, rms, None, 1 + table[0]["rescored_share"], 2.0)
    slow = [r for r in table if r["est_latency"] > budget and r["flips"] < min(f_["flips"] for f_ in fits)]
    if slow:  # a flip budget only a slower band keeps
        with pytest.raises(ExportError, match="cannot both be met"):
            choose_k(spec, (p8, p16), ref, thr, rms, slow[0]["flips"], budget, 2.0)
    with pytest.raises(ExportError, match="latency ratio"):
        choose_k(spec, (p8, p16), ref, thr, rms, None, 1.3, None)


def test_export_with_guard_max_latency_records_the_timing(tiny_run, tmp_path):
    from edgeretina.converters import export_model, read_metadata

    out = tmp_path / "lat"
    export_model(tiny_run, ["int8-guard"], out, calib_n=32, verify_n=16, budget_n=32, guard_max_latency=50.0)
    c = GuardInfo.from_meta(read_metadata(next(out.glob("*_int8_guard.tflite")))).choice
    assert c["max_latency"] == 50.0 and c["timing"]["int8_mean_ms"] > 0 and c["timing"]["threads"] == 1
    assert c["latency_ratio"] == pytest.approx(c["timing"]["fp16_mean_ms"] / c["timing"]["int8_mean_ms"], rel=1e-3)
    assert json.loads((out / "manifest.json").read_text())["options"]["guard_max_latency"] == 50.0
    for args, msg in ((["--int8", "--guard-max-latency", "1.3"], "--int8-guard only"),
                      (["--int8-guard", "--guard-max-latency", "0.9"], "above 1")):
        r = CliRunner().invoke(cli, ["export", str(tiny_run), *args, "--out", str(tmp_path / "x")])
        assert r.exit_code == 2 and msg in r.output and "Traceback" not in r.output
        assert not (tmp_path / "x").exists()


def test_guard_max_flips_needs_the_guard_and_a_share(tiny_run, tmp_path):
    for args, msg in ((["--int8", "--guard-max-flips", "0.01"], "--int8-guard only"),
                      (["--int8-guard", "--guard-max-flips", "2"], "share in [0, 1)")):
        r = CliRunner().invoke(cli, ["export", str(tiny_run), *args, "--out", str(tmp_path / "x")])
        assert r.exit_code == 2 and msg in r.output and "Traceback" not in r.output
        assert not (tmp_path / "x").exists()


def test_predict_reports_rescored_and_refuses_a_changed_fallback(exported, tiny_run, tmp_path):
    import cv2

    from edgeretina.data import open_dataset

    _, out = exported
    f = _files(out)
    recs = open_dataset(f"synthetic:n=800,size=96,seed=0", "glaucoma").split()["test"][:3]
    imgs = []
    for r in recs:
        p = tmp_path / f"{r.key}.jpg"
        cv2.imwrite(str(p), r.image[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95])
        imgs.append(str(p))
    res = CliRunner().invoke(cli, ["predict", str(f["int8_guard"]), *imgs, "--json"])
    assert res.exit_code == 0, res.output
    rows = [json.loads(ln) for ln in res.output.splitlines() if ln.startswith("{")]
    assert len(rows) == 3 and all(isinstance(r["rescored"], bool) for r in rows)
    res8 = CliRunner().invoke(cli, ["predict", str(f["int8"]), imgs[0], "--json"])
    assert json.loads(res8.output.splitlines()[-1])["rescored"] is None
    # a fallback that is not the exported file is refused (manifest, or the sha256 in the metadata)
    bad = tmp_path / "bad"
    shutil.copytree(out, bad)
    shutil.copy(f["int8"], bad / f["fp16"].name)
    r = CliRunner().invoke(cli, ["predict", str(bad / f["int8_guard"].name), imgs[0]])
    assert r.exit_code == 2 and "error:" in r.output
    from edgeretina.benchmarks.devices import DEVICES, Device
    from edgeretina.benchmarks.integrity import manifest_verification
    from edgeretina.benchmarks.modelfile import open_model

    with manifest_verification(False):
        with pytest.raises(ModelError, match="sha256 differs"):
            DEVICES[Device.CPU].load(open_model(bad / f["int8_guard"].name))


def test_malformed_guard_metadata_is_refused():
    with pytest.raises(ModelError):
        GuardInfo.from_meta({"export": {"guard": {"fallback": "../x.tflite", "band": 1.0, "fallback_sha256": "",
                                                   "fallback_variant": "fp16", "k": 3, "noise_rms": 0.1,
                                                   "noise_mean": 0, "n_images": 1, "source": "",
                                                   "rescored_share": 0}}})
    assert GuardInfo.from_meta({"export": {"variant": "int8"}}) is None
    assert issubclass(ModelError, EdgeRetinaError)
