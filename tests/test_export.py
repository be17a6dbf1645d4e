"""edgeretina export on a real tiny model (conftest ``tiny_run``: MobileNetV2 1.0 trained from scratch at 48 px
on the embedded synthetic-fundus set, calibrated and verified on its own synthetic images; no ../shared
needed): every variant runs in LiteRT, carries its metadata, agrees with the Keras model within its tolerance;
pruning hits its target. One ``real_data`` test checks the real-data ``small_run`` model's exports verified on
real ODIR photos. (Interruption and CLI errors: test_export_cli.py.)"""
from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest

from edgeretina.converters import ALL, FineTune, Variant, export_model, read_metadata
from edgeretina.run import RunConfig, file_sha256

FT = FineTune(steps=4, batch_size=8, max_images=32)
SPARSITY = 0.5
ALLOCATION = "size"  # the uniform default is the simpler path (every layer at SPARSITY: unit-tested below)


@pytest.fixture(scope="session")
def exported(tiny_run, tmp_path_factory):
    """Every variant of one export (the pruned ones size-allocated: one pruning fine-tune serves the
    pruned, pruned-int8 and pqat checks and the allocation's)."""
    out = tmp_path_factory.mktemp("export")
    return export_model(tiny_run, ALL, out, calib_n=64, verify_n=32, threshold_n=48, sparsity=SPARSITY,
                        allocation=ALLOCATION, finetune=FT,
                        borderline_band="off")  # the band's own tests: test_borderline_export.py


def _run_litert(path: Path, x: np.ndarray) -> np.ndarray:
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(path), num_threads=2)
    it.allocate_tensors()
    i, o = it.get_input_details()[0], it.get_output_details()[0]
    if i["dtype"] == np.int8:
        s, z = i["quantization"]
        x = np.clip(np.round(x / s + z), -128, 127).astype(np.int8)
    it.set_tensor(i["index"], x.astype(i["dtype"]))
    it.invoke()
    r = it.get_tensor(o["index"]).astype(np.float64)
    if o["dtype"] == np.int8:
        s, z = o["quantization"]
        r = (r - z) * s
    return r


def test_every_variant_exported_verified_and_within_tolerance(exported, tiny_run):
    assert [r.variant for r in exported.results] == [v.value for v in ALL]
    sha = file_sha256(Path(tiny_run) / "model.keras")
    cfg = RunConfig.load(tiny_run)
    for r in exported.results:
        p = Path(r.path)
        assert p.is_file() and p.name.endswith(f"_{Variant(r.variant).info.suffix}.tflite")
        assert file_sha256(p) == r.sha256 and p.stat().st_size == r.size_bytes
        v = r.verification
        assert v["n"] == 32, (r.variant, v)
        if Variant(r.variant).info.qat:
            # 4 QAT steps leave the fake-quant ranges unsettled, so the int8 file can sit far from its Keras QAT
            # model; with the default 300 steps it matches (max|Δ| 0.11, 98.6 % agreement at 224 px).
            assert v["max_abs_diff"] < 1.0 and v["agreement"] >= 0.5, (r.variant, v)
        else:
            assert v["within_tolerance"], (r.variant, {k: v[k] for k in ("max_abs_diff", "agreement", "n", "threshold") if k in v})
            assert v["max_abs_diff"] <= Variant(r.variant).info.score_tol
        # metadata: the run's config + what the graph outputs + the source hash
        md = read_metadata(p)
        back = RunConfig.from_dict(md)
        assert back.labels == cfg.labels and back.task == cfg.task and back.preprocessing == cfg.preprocessing
        assert md["export"]["variant"] == r.variant and md["export"]["source_sha256"] == sha
        assert md["output"] == r.output
        # conversion-only variants, and pruned/QAT variants distilled from the source (the default fine-tune
        # target), keep the source model's screening threshold
        assert md["threshold"] == cfg.threshold
        # the file runs in LiteRT on a real preprocessed image batch of one
        x = np.zeros((1, *r.interface["input"]["shape"][1:]), np.float32)
        out = _run_litert(p, x)
        assert out.shape == (1, 2) and np.isfinite(out).all()


def test_int8_is_full_integer_with_logit_output(exported):
    r = exported["int8"]
    assert r.interface["input"]["dtype"] == "int8" and r.interface["output"]["dtype"] == "int8"
    assert r.verification["float_ops"] == []
    assert r.output == {"kind": "logits", "activation": "softmax"}
    assert exported["float32"].output["kind"] == "probabilities"
    for v in ("qat", "pqat", "pruned-int8"):
        assert exported[v].interface["input"]["dtype"] == "int8"


def test_pruned_sparsity_on_target_and_gzip_smaller(exported):
    for v, unpruned in (("pruned", "float32"), ("pruned-int8", "int8"), ("pqat", "qat")):
        r = exported[v]
        assert abs(r.sparsity - SPARSITY) <= 0.01, (v, r.sparsity)
        assert r.gzip_bytes < exported[unpruned].gzip_bytes, v
        assert r.verification["vs_source"] is not None  # drift from the source model is recorded
    r = exported["pruned-int8"]
    assert r.gzip_bytes == len(gzip.compress(Path(r.path).read_bytes(), 9))


def test_sizes_shrink(exported):
    f32 = exported["float32"].size_bytes
    assert exported["fp16"].size_bytes < 0.6 * f32
    for v in ("dynamic", "int8", "qat"):
        assert exported[v].size_bytes < 0.35 * f32


def test_manifest_lists_every_artifact(exported):
    m = json.loads(exported.manifest_path.read_text())
    assert m["schema"] == "edgeretina.export/1"
    assert {"tensorflow", "ai-edge-litert", "tensorflow-model-optimization"} <= set(m["versions"])
    assert m["calibration"]["n"] == 64 and m["calibration"]["stratified_by_class"]
    for r in m["results"]:
        assert file_sha256(r["path"]) == r["sha256"]
        assert "agreement" in r["verification"] and "size_ratio_vs_float32" in r


def test_full_integer_variants_are_bias_corrected_towards_the_float_model(exported):
    for v in ("int8", "mixed", "pruned-int8", "qat", "pqat"):
        bc = exported[v].bias_correction
        assert bc is not None and bc["n_images"] == 64, (v, bc)
        if bc["applied"]:
            assert sum(map(abs, bc["mean_error_after"])) < sum(map(abs, bc["mean_error_before"])), (v, bc)
        else:
            assert bc["reason"], (v, bc)
    assert exported["int8"].bias_correction["op"] == "FULLY_CONNECTED"
    for v in ("float32", "fp16", "dynamic", "pruned"):
        assert exported[v].bias_correction is None
    md = read_metadata(exported["int8"].path)
    assert md["export"]["bias_correction"] == exported["int8"].bias_correction


def test_shift_output_bias_moves_the_int8_logits_by_delta(exported, tiny_run):
    """The flatbuffer patch of the output op's int32 bias shifts LiteRT's dequantized logits by delta
    (to within the output quantization: the requantized output of each side rounds by up to half a step, and
    the shifted bias itself by a fraction of one), on preprocessed validation images of the model's own set."""
    from edgeretina.converters.biascorr import raw_outputs, shift_output_bias
    from edgeretina.converters.calib import dataset_splits, load_records, pipeline_of

    cfg = RunConfig.load(tiny_run)
    X, _ = load_records(dataset_splits(cfg)["val"][:8], pipeline_of(cfg))
    buf = Path(exported["int8"].path).read_bytes()
    new, op = shift_output_bias(buf, np.array([0.4, -0.3]))
    assert op == "FULLY_CONNECTED"
    out_q = exported["int8"].interface["output"]
    step, zp = out_q["scale"], out_q["zero_point"]
    before, after = raw_outputs(buf, X), raw_outputs(new, X)
    lo, hi = (-128 - zp) * step, (127 - zp) * step
    # an output already clamped at the int8 range's end cannot move: compare the unsaturated ones
    free = (before > lo + step) & (before < hi - step) & (after > lo + step) & (after < hi - step)
    assert free.sum() >= 8, (before, after)
    want = np.tile([0.4, -0.3], (len(X), 1))
    np.testing.assert_allclose((after - before)[free], want[free], atol=1.5 * step)


def test_bias_correction_can_be_switched_off(tiny_run, tmp_path):
    r = export_model(tiny_run, ["int8"], tmp_path, calib_n=32, verify_n=0, bias_correction=False,
                     borderline_band="off")["int8"]  # no band measurement: not what this test is about
    assert r.bias_correction is None
    assert read_metadata(r.path)["export"]["bias_correction"] is None


def test_unknown_finetune_target_is_a_one_line_error():
    from edgeretina.errors import ExportError

    with pytest.raises(ExportError, match="fine-tune target 'nope'"):
        FineTune(target="nope")


def test_size_allocation_keeps_the_total_zeros_and_spares_small_layers():
    from edgeretina.converters.prune import layer_sparsities

    sizes = {"conv1": 864, "dw_proj": 2_304, "mid": 36_864, "late_expand": 153_600, "top": 409_600}
    total = sum(sizes.values())
    for s in (0.5, 0.8):
        uni = layer_sparsities(sizes, s, "uniform")
        assert set(uni.values()) == {s}
        sz = layer_sparsities(sizes, s, "size")
        assert sum(sz[k] * n for k, n in sizes.items()) == pytest.approx(s * total, rel=1e-6)
        order = sorted(sizes, key=sizes.get)
        assert [sz[k] for k in order] == sorted(sz[k] for k in order)  # larger layer → sparser
        assert sz["conv1"] < s < sz["top"] <= 0.98
    with pytest.raises(Exception, match="allocation"):
        layer_sparsities(sizes, 0.8, "random")


def test_size_allocated_pruning_hits_the_total_target_in_the_file(exported):
    for v in ("pruned", "pruned-int8", "pqat"):
        r = exported[v]
        assert abs(r.sparsity - SPARSITY) <= 0.01, (v, r.sparsity)  # the total, over unequal layer targets
        assert r.finetune["allocation"] == "size", v
    assert json.loads(exported.manifest_path.read_text())["options"]["allocation"] == "size"


def test_real_small_run_exports_verify_on_real_photos(small_run):
    """Real data on top: the ODIR-trained ``small_run`` model's float32 / fp16 / int8 exports (the ones the
    real-data bench test uses), calibrated and verified on real ODIR photos, stay within their tolerances."""
    from helpers.testmodels import glaucoma_variants

    m = glaucoma_variants(small_run)
    manifest = json.loads((Path(m["export"]) / "manifest.json").read_text())
    assert [r["variant"] for r in manifest["results"]] == ["float32", "fp16", "int8"]
    for r in manifest["results"]:
        v = r["verification"]
        assert v["n"] == 32 and v["within_tolerance"], (r["variant"], v)
        assert v["max_abs_diff"] <= Variant(r["variant"]).info.score_tol
    assert manifest["results"][2]["bias_correction"]["n_images"] == 64


def test_fp16_keeps_small_constants_float32_and_sits_closer_to_float32(exported, tiny_run):
    """The fp16 file's small constants (≤ 4,096 values and together ≤ 5 % of its values: biases, the first
    depthwise / project convolutions) are float32 in the file, exactly the float32 file's values; its outputs sit closer to the float32 file's than
    the converter's all-float16 file on the run's own images (LiteRT, both XNNPACK and reference kernels).
    The float32 and fp16 files are the ``exported`` fixture's (the same export path, made once)."""
    from edgeretina._keras import keras
    from edgeretina.converters.tflite import FP16_FLOAT32_MAX_ELEMENTS, convert
    from edgeretina.converters.variants import VARIANTS
    from edgeretina.data import load_arrays, open_dataset
    from edgeretina.preprocess import Pipeline
    from edgeretina.runtime import LiteRTModel
    from edgeretina.runtime.flatbuffer import weight_ops

    res = exported
    f32, f16 = (Path(res[v].path).read_bytes() for v in ("float32", "fp16"))
    rec = read_metadata(res["fp16"].path)["export"]["quantizer"]["float32_constants"]
    assert rec["max_elements"] == FP16_FLOAT32_MAX_ELEMENTS and rec["tensors"] > 0 and rec["values"] > 0
    assert res["fp16"].quantizer == {"float32_constants": rec} and res["fp16"].verification["within_tolerance"]
    assert 0 < rec["size_cap"] <= FP16_FLOAT32_MAX_ELEMENTS  # the 5 % share cap may lower it on a tiny model
    small = [r["weights"] for r in weight_ops(f32) if r["weights"].size <= rec["size_cap"]]
    ref = {(w.shape, w.tobytes()) for w in small}
    kept = weight_ops(f16)  # constant weights only: the large ones are float16 read through DEQUANTIZE
    assert len(kept) == len(small) > 0 and all(r["weights"].dtype == np.float32
                                               and (r["weights"].shape, r["weights"].tobytes()) in ref for r in kept)
    assert len(small) < len(weight_ops(f32)) and len(f16) < 0.6 * len(f32)
    plain = convert(keras.models.load_model(Path(tiny_run) / "model.keras", compile=False), VARIANTS[Variant.FP16])
    assert weight_ops(plain) == [] and len(f16) > len(plain)
    cfg = RunConfig.load(tiny_run)
    x, _ = load_arrays(open_dataset(cfg.dataset["path"], cfg.task).records[:24], Pipeline.from_json(cfg.preprocessing))
    for xnnpack in (True, False):
        p32, p16, p_plain = (LiteRTModel(b, xnnpack=xnnpack).raw(x)[:, 1] for b in (f32, f16, plain))
        assert np.sqrt(np.mean((p16 - p32) ** 2)) < np.sqrt(np.mean((p_plain - p32) ** 2))


def test_fp16_noise_study_splits_the_noise_by_constant(exported, tiny_run):
    """benchmarks/fp16_noise.py on the tiny model's float32 file (the ``exported`` fixture's, metadata and all,
    as the study reads a published file): every part's sd is measured on real LiteRT outputs; rounding
    nothing is exact, keeping the small constants float32 lowers the noise, the ranking names real constants."""
    from edgeretina.benchmarks.fp16_noise import markdown, study
    from edgeretina.data import load_arrays, open_dataset
    from edgeretina.preprocess import Pipeline

    buf = Path(exported["float32"].path).read_bytes()
    cfg = RunConfig.load(tiny_run)
    x, _ = load_arrays(open_dataset(cfg.dataset["path"], cfg.task).records[:12], Pipeline.from_json(cfg.preprocessing))
    res = study(buf, x, keep=(0, 4096, 10 ** 9), top=3)
    k0, k4096, kall = res["keep_float32"]
    assert k0["sd"] == pytest.approx(res["all"]) and res["all"] > 0 and kall["sd"] == 0.0
    assert k4096["sd"] < k0["sd"] and 0 < k4096["kept_values"] < res["values"] == kall["kept_values"]
    assert 0 <= res["head_only"] < res["all"] and res["all_but_head"] > 0
    top = res["one_at_a_time"]
    assert len(top) == 3 and top[0]["sd"] >= top[1]["sd"] >= top[2]["sd"] > 0 and sum(r["variance_share"] for r in top) <= 1
    assert any("K = 4,096" in line for line in markdown(res))
