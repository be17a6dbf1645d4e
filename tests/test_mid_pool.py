"""``train --mid-pool``: the pooled last feature map and a mid-depth one, read by one linear head (issue 15's
ODIR 8-label recipe); a real MobileNetV2 graph, converted and run through LiteRT."""
from __future__ import annotations

import numpy as np
import pytest

from edgeretina.errors import EdgeRetinaError, ModelError


def test_mid_pool_concatenates_both_depths_and_converts():
    from edgeretina.converters.tflite import convert
    from edgeretina.converters.variants import VARIANTS, Variant
    from edgeretina.models.build import build_model
    from edgeretina.runtime import LiteRTModel

    m = build_model("mobilenetv2", "odir", 96, None, "gap", mid_pool="auto")
    assert m.edgeretina["mid_pool"] == "block_13_expand_relu"
    assert int(m.get_layer("head_gap").output.shape[-1]) == 1280 + 576
    x = np.random.default_rng(0).uniform(-1, 1, (2, 96, 96, 3)).astype(np.float32)
    lite = LiteRTModel(convert(m, VARIANTS[Variant.FLOAT32]))
    got = np.concatenate([lite.raw(x[i:i + 1]) for i in range(2)])
    np.testing.assert_allclose(got, m.predict(x, verbose=0), atol=1e-4)


def test_mid_pool_misuse_is_one_line():
    from edgeretina.models.build import build_model
    from edgeretina.train.options import RunOptions

    with pytest.raises(ModelError, match="no layer named 'nope'"):
        build_model("mobilenetv2", "odir", 96, None, "gap", mid_pool="nope")
    with pytest.raises(ModelError, match="two-view"):
        build_model("mobilenetv2", "glaucoma", 96, None, "gap", two_view=True, mid_pool="auto")
    with pytest.raises(EdgeRetinaError, match="--head-fit linear"):
        RunOptions(mid_pool="auto")


def test_unknown_mid_pool_layer_is_one_line_and_leaves_no_run_dir(shared, tmp_path):
    from click.testing import CliRunner

    from edgeretina.cli import cli

    out = tmp_path / "run"
    r = CliRunner().invoke(cli, ["train", "--data", str(shared / "data" / "odir"), "--task", "glaucoma",
                                 "--arch", "mobilenetv2", "--head-fit", "linear", "--input-size", "96",
                                 "--mid-pool", "nope", "--out", str(out)])
    assert r.exit_code == 2 and r.output.strip().splitlines()[-1] == \
        "error: --mid-pool: MobileNetV2 has no layer named 'nope'"
    assert not out.exists()


def test_mid_pool_takes_several_layers_and_converts():
    from edgeretina.converters.tflite import convert
    from edgeretina.converters.variants import VARIANTS, Variant
    from edgeretina.models.build import build_model
    from edgeretina.runtime import LiteRTModel

    m = build_model("mobilenetv2", "odir", 96, None, "gap", mid_pool="auto, block_6_expand_relu")
    assert m.edgeretina["mid_pool"] == "block_13_expand_relu,block_6_expand_relu"
    assert int(m.get_layer("head_gap").output.shape[-1]) == 1280 + 576 + 192
    x = np.random.default_rng(1).uniform(-1, 1, (1, 96, 96, 3)).astype(np.float32)
    lite = LiteRTModel(convert(m, VARIANTS[Variant.FLOAT32]))
    np.testing.assert_allclose(lite.raw(x), m.predict(x, verbose=0), atol=1e-4)
    for bad, msg in (("auto,auto", "named twice"), ("auto,", "empty layer name"), ("out_relu", "already pooled")):
        with pytest.raises(ModelError, match=msg):
            build_model("mobilenetv2", "odir", 96, None, "gap", mid_pool=bad)
