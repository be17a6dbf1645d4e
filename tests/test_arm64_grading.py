"""Issue 17, DR grading: ARM-vs-x86 parity of a 5-grade ordinal model counts grade flips (the predicted grade,
the expected grade rounded) and referable flips (predicted grade >= 2), and the ARM table shows both with κ
and referable AUROC. The emulated test runs a tiny real DR .tflite (int8) through aarch64 LiteRT
under qemu when the environment exists (``python -m edgeretina.emulation.arm64_env build``), else skips."""
from __future__ import annotations

import numpy as np
import pytest
from helpers.fakedata import write_retinamnist_npz

from edgeretina.benchmarks.arm_parity import markdown_lines
from edgeretina.emulation import arm64_env
from edgeretina.emulation.parity import compare_outputs
from edgeretina.errors import DeviceError
from edgeretina.tasks import task_spec


def test_graded_parity_counts_grade_and_referable_flips():
    spec = task_spec("dr")
    x86 = np.array([[0.7, 0.2, 0.1, 0, 0], [0.1, 0.39, 0.41, 0.1, 0], [0, 0, 0.1, 0.6, 0.3],
                    [0, 0, 0.1, 0.1, 0.8]])
    arm = x86.copy()
    arm[1] = [0.1, 0.45, 0.35, 0.1, 0]  # expected grade 1.51 -> 1.45: grade 2 -> 1, referable -> not
    arm[2] = [0, 0, 0.1, 0.3, 0.6]  # grade 3 -> 4: a grade flip, still referable
    p = compare_outputs(spec, None, arm, x86, False, "softmax")
    assert (p.flips, p.referable_flips, p.n) == (2, 1, 4) and p.referable_flip_rate == pytest.approx(0.25)
    assert p.flipped == (1, 2)  # which images: their positions in the inputs
    assert p.max_abs_diff == pytest.approx(0.3) and not p.identical and p.output == "probabilities"
    assert compare_outputs(task_spec("glaucoma"), 0.5, x86[:, :2], x86[:, :2], False, "softmax").referable_flips \
        is None
    rows = [{"name": "int8", "device": "arm64-emu:cortex-a76", "referable_flip_rate": 0.02, "kappa": 0.86,
             "auroc": 0.967, "flip_rate": 0.03,
             "device_info": {"emulated_cpu": "cortex-a76", "isa": ["neon", "fp16", "dotprod"],
                             "emulator": "qemu-user 7.2.22", "vs_x86": p.to_dict()}}]
    md = "\n".join(markdown_lines(rows))
    assert "| referable flips vs x86 | grade flips vs x86 |" in md and "referable decision, predicted grade" in md
    assert ("| int8 | cortex-a76 | NEON + fp16 + dot product | 4 | 1 (25.0 %) | 2 (50.0 %) | 3.0e-01 probabilities "
            "| no | 2.0 % | 0.860 | 0.967 |") in md


def _tiny_dr_run(root, size=32):
    from edgeretina._keras import keras
    from edgeretina.preprocess import Pipeline
    from edgeretina.run import RunConfig

    spec = task_spec("dr")
    keras.utils.set_random_seed(0)
    inp = keras.Input((size, size, 3))
    x = keras.layers.Conv2D(8, 3, strides=2, activation="relu")(inp)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inp, keras.layers.Dense(5, activation="softmax")(x))
    root.mkdir(parents=True)
    model.save(root / "model.keras")
    RunConfig(task="dr", kind="multiclass", labels=spec.labels, arch="tiny", input_size=size,
              preprocessing=Pipeline.default(size, "tf", fov=False).to_json(), positive_index=None,
              output={"activation": "softmax", "kind": "probabilities"}).save(root)
    return root


def test_dr_grading_parity_under_emulation(tmp_path):
    """A tiny real 5-grade model's int8 file on emulated Cortex-A53 vs the same file on x86 (one emulated run:
    each costs a guest start under qemu)."""
    try:
        arm64_env.load_env()
    except DeviceError as e:
        pytest.skip(f"no arm64 emulation environment ({e})")
    from edgeretina.benchmarks.arm_table import main as arm_table
    from edgeretina.benchmarks.harness import run_bench
    from edgeretina.converters import export_model
    from edgeretina.preprocess import Pipeline

    data = write_retinamnist_npz(tmp_path / "retina.npz", n_test=20)
    run = _tiny_dr_run(tmp_path / "dr")
    pipe = Pipeline.default(32, "tf", fov=False)
    with np.load(data) as z:
        np.save(tmp_path / "calib.npy", np.stack([pipe.apply(im) for im in z["train_images"]]).astype(np.float32))
    export_model(run, ["int8"], run / "export", calib=str(tmp_path / "calib.npy"), calib_n=20,
                 verify_n=4)
    rep = run_bench([run / "export"], str(data), reference=run, devices=("cpu", "arm64-emu:cortex-a53"),
                    max_images=12, n_boot=0, runs=1, warmup=0, timing_images=1, stability=False,
                    out=tmp_path / "r")
    emu = {v.name: v.device_info["vs_x86"] for v in rep.variants if v.device == "arm64-emu:cortex-a53"}
    assert set(emu) == {"int8"}
    p = emu["int8"]
    assert p["n"] == 12 and p["flips"] == 0 and p["referable_flips"] == 0 and not p["flipped"], p
    assert p["identical"], p  # the same integer kernels' results on NEON and x86
    assert arm_table(["--merge", str(tmp_path / "r"), "--title", "DR", "--out", str(tmp_path / "t.md")]) == 0
    table = (tmp_path / "t.md").read_text()
    assert table.startswith("# DR\n") and "| Variant | κ | referable AUROC |" in table
    assert "| int8 | cortex-a53 | NEON | 12 | 0 (0.0 %) | 0 (0.0 %) | 0 " in table
