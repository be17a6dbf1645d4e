"""Issue 17: device facts in every report row, and ``--device arm64-emu`` (aarch64 LiteRT under qemu-user).

The pure-Python tests (cpuinfo parsing, ISA flags, CPU parsing, the SME refusal, the parity comparison and
its report section) always run. The parity test runs the tiny_run model's exports under emulation when the
environment exists (``python -m edgeretina.emulation.arm64_env build``) and is skipped otherwise, saying so.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from edgeretina.emulation import arm64_env
from edgeretina.benchmarks.arm_parity import markdown_lines
from edgeretina.benchmarks.devices import Device, facts_line, get_device
from edgeretina.benchmarks.options import parse_devices
from edgeretina.emulation.cpus import EmuCpu, check_sme, version_tuple
from edgeretina.emulation.parity import compare_outputs, kernel_tier
from edgeretina.cli import cli
from edgeretina.env import cpu_facts, device_facts, isa_flags, machine_info, machine_line, parse_cpuinfo
from edgeretina.errors import DeviceError
from edgeretina.runtime.emulated import HWCAP, HWCAP2, decode_hwcaps
from edgeretina.tasks import task_spec

X86 = """processor\t: 0
model name\t: AMD EPYC 9B14
flags\t\t: fpu sse4_2 avx fma f16c avx2 avx512f avx512bw avx512vl avx512_vnni avx512_bf16 smap
"""
ARM = """processor\t: 0
BogoMIPS\t: 50.00
Features\t: fp asimd aes asimdhp asimddp sve i8mm bf16 sme
CPU implementer\t: 0x41
CPU part\t: 0xd0b
"""


def test_cpuinfo_and_isa_flags():
    x = parse_cpuinfo(X86)
    assert x["cpu"] == "AMD EPYC 9B14"
    assert x["isa"] == ["sse4_2", "avx", "fma", "f16c", "avx2", "avx512f", "avx512bw", "avx512vl", "avx512_vnni",
                        "avx512_bf16"]
    a = parse_cpuinfo(ARM)
    assert a["cpu"] == "ARM implementer 0x41 part 0xd0b"
    assert a["isa"] == ["neon", "fp16", "dotprod", "i8mm", "bf16", "sve", "sme"]
    assert isa_flags([]) == [] and isa_flags(["ASIMD", "avx2"]) == ["avx2", "neon"]
    f = cpu_facts(X86)
    assert f["cpu"] == "AMD EPYC 9B14" and f["cores"] >= 1 and "avx512f" in f["isa"]
    d = device_facts("xnnpack", 2)
    assert d["delegate"] == "xnnpack" and d["threads"] == 2 and d["runtime"].startswith("ai-edge-litert ")
    m = machine_info()
    assert isinstance(m["isa"], list) and m["arch"]
    line = machine_line({"cpu": "AMD EPYC 9B14", "cpu_count": 2, "isa": ["avx2"], "arch": "x86_64"})
    assert line == "AMD EPYC 9B14, 2 cores (avx2), x86_64"
    assert "ISA flags not recorded" in machine_line({"manufacturer": "Google", "model": "Pixel 8", "abi": "arm64-v8a"})
    assert facts_line("cpu", d).startswith("cpu: ") and "xnnpack" in facts_line("cpu", d)
    assert facts_line("android", None) == "android: no device facts recorded"


def test_hwcap_decoding():
    hw = (1 << HWCAP["asimd"]) | (1 << HWCAP["asimddp"])
    hw2 = (1 << HWCAP2["i8mm"]) | (1 << HWCAP2["sme"])
    names = decode_hwcaps(hw, hw2)
    assert names == ["asimd", "asimddp", "i8mm", "sme"]
    assert isa_flags(names) == ["neon", "dotprod", "i8mm", "sme"]
    assert kernel_tier(isa_flags(names)) == "NEON + dot product + i8mm + SME"
    assert kernel_tier(["neon"]) == "NEON" and kernel_tier(None) == "?"


def test_per_cpu_cpuinfo_names_the_emulated_core():
    """XNNPACK's cpuinfo enables features by core model: each emulated CPU's /proc/cpuinfo has its own MIDR."""
    text = arm64_env.cpuinfo_text("cortex-a53", ["fp", "asimd"])
    assert "CPU part\t: 0xd03" in text and "CPU implementer\t: 0x41" in text
    assert parse_cpuinfo(text)["isa"] == ["neon"]
    assert "CPU part\t: 0x051" in arm64_env.cpuinfo_text("max,sme=off", ["asimd", "sve"])


def test_emulated_cpu_names_and_the_sme_refusal():
    assert EmuCpu.parse(None).qemu_arg == "cortex-a76"
    c = EmuCpu.parse("max,sme=off")
    assert c.model == "max" and c.props == (("sme", "off"),) and not c.has_sme
    assert EmuCpu.parse("max").has_sme and not EmuCpu.parse("cortex-a53").has_sme
    with pytest.raises(DeviceError, match="unknown CPU 'cortex-a99'"):
        EmuCpu.parse("cortex-a99")
    with pytest.raises(DeviceError, match="not a CPU property"):
        EmuCpu.parse("max,sme")
    assert version_tuple("7.2.22") == (7, 2, 22) and version_tuple("11.1.3 (Debian)") == (11, 1, 3)
    with pytest.raises(DeviceError, match=r"qemu 7\.2\.22 mis-emulates SME.*arm64-emu:max,sme=off"):
        check_sme(EmuCpu.parse("max"), "7.2.22")
    check_sme(EmuCpu.parse("max,sme=off"), "7.2.22")
    check_sme(EmuCpu.parse("max"), "11.1.3")


def test_device_names_with_options():
    assert parse_devices("cpu,arm64-emu:max,sme=off,arm64-emu:cortex-a53") == \
        ("cpu", "arm64-emu:max,sme=off", "arm64-emu:cortex-a53")
    assert parse_devices(["arm64-emu", "cpu,gpu"]) == ("arm64-emu", "cpu", "gpu")
    s = get_device("arm64-emu:neoverse-n1")
    assert s.device.value == "arm64-emu:neoverse-n1" and s.device.base is Device.ARM64_EMU
    assert s.runs("tflite") and not s.runs("keras")
    assert get_device("arm64-emu").device is Device.ARM64_EMU
    with pytest.raises(DeviceError, match="takes no option"):
        get_device("gpu:fast")
    with pytest.raises(DeviceError, match="cpu:builtin"):
        get_device("cpu:fast")
    b = get_device("cpu:builtin")
    assert b.device.value == "cpu:builtin" and b.device.base is Device.CPU and b.runs("tflite")


def test_parity_comparison_and_report_section():
    spec = task_spec("glaucoma")
    x86 = np.array([[0.2, -0.1], [1.0, -1.0], [0.0, 0.05]])  # logits; positive = column 1
    p = compare_outputs(spec, 0.5, x86.copy(), x86, True, "softmax")
    assert p.identical and p.flips == 0 and p.max_abs_diff == 0.0 and p.output == "logits"
    arm = x86.copy()
    arm[2, 1] = -0.05  # image 3 crosses p = 0.5
    p = compare_outputs(spec, 0.5, arm, x86, True, "softmax")
    assert not p.identical and p.flips == 1 and p.flip_rate == pytest.approx(1 / 3)
    assert p.max_abs_diff == pytest.approx(0.1)
    with pytest.raises(ValueError, match="shape"):
        compare_outputs(spec, 0.5, arm[:2], x86, True, "softmax")
    rows = [{"name": "int8", "device": "cpu", "device_info": {}},
            {"name": "int8", "device": "arm64-emu:cortex-a53", "flip_rate": 0.02, "auroc": 0.91,
             "device_info": {"emulated_cpu": "cortex-a53", "isa": ["neon"], "emulator": "qemu-user 7.2.22",
                             "vs_x86": p.to_dict()}}]
    md = "\n".join(markdown_lines(rows))
    assert "## ARM kernel parity" in md and "qemu-user 7.2.22" in md and "not a speed" in md
    assert "| int8 | cortex-a53 | NEON | 3 | 1 (33.3 %) | 1.0e-01 logits | no | 2.0 % | 0.910 |" in md
    assert markdown_lines(rows[:1]) == []


def test_missing_environment_is_one_line_naming_the_script(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGERETINA_ARM64_ENV", str(tmp_path / "none"))
    with pytest.raises(DeviceError, match="arm64_env build"):
        get_device("arm64-emu:cortex-a53").check()
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "env.json").write_text(json.dumps(
        {"qemu": "/no/qemu", "qemu_version": "7.2", "python": "/usr/bin/python3.11", "litert": "2.3.0",
         "numpy": "2"}))
    monkeypatch.setenv("EDGERETINA_ARM64_ENV", str(tmp_path / "half"))
    monkeypatch.setenv("EDGERETINA_QEMU", str(tmp_path / "no-qemu"))
    with pytest.raises(DeviceError, match="incomplete .*build it again with python -m edgeretina.emulation"):
        arm64_env.load_env()


@pytest.fixture(scope="module")
def variants(tiny_run):
    from helpers.testmodels import glaucoma_variants

    return glaucoma_variants(tiny_run)


def test_bench_rows_carry_device_facts_and_missing_env_fails_cleanly(variants, tmp_path):
    out = tmp_path / "r"
    res = CliRunner().invoke(cli, ["bench", "--models", str(variants["tflite"]["int8"]), "--data",
                                   str(variants["data"]), "--device", "cpu", "--max-images", "16", "--runs", "1",
                                   "--n-boot", "0", "--stability", "off", "--out", str(out)],
                             catch_exceptions=False)
    assert res.exit_code == 0, res.output
    rep = json.loads((out / "report.json").read_text())
    assert "isa" in rep["machine"] and rep["machine"]["arch"]
    for v in rep["variants"]:
        info = v["device_info"]
        assert {"cpu", "cores", "isa", "runtime", "delegate", "threads"} <= set(info), info
    md = (out / "report.md").read_text()
    assert machine_line(rep["machine"]) in md and "- Device cpu: " in md
    from edgeretina.benchmarks.arm_table import main as arm_table

    assert arm_table(["--merge", str(out), str(out), "--out", str(tmp_path / "t.md")]) == 0
    table = (tmp_path / "t.md").read_text()
    assert "x86 (XNNPACK) rows" in table and table.count("| int8 |") == 1 and machine_line(rep["machine"]) in table

    res = CliRunner().invoke(cli, ["bench", "--models", str(variants["tflite"]["int8"]), "--data",
                                   str(variants["data"]), "--device", "arm64-emu:cortex-a53", "--out",
                                   str(tmp_path / "r2")], env={"EDGERETINA_ARM64_ENV": str(tmp_path / "none")},
                             catch_exceptions=False)
    lines = res.output.strip().splitlines()
    assert res.exit_code == 2 and len(lines) == 1, res.output
    assert lines[0].startswith("error: arm64-emu: no arm64 emulation environment") and "arm64_env build" in lines[0]


def _env_or_skip():
    try:
        return arm64_env.load_env()
    except DeviceError as e:
        pytest.skip(f"no arm64 emulation environment ({e})")


def test_parity_under_emulation(variants, tmp_path):
    """The tiny model's int8 and float32 files on emulated Cortex-A53 (plain NEON) vs the same files on x86."""
    env = _env_or_skip()
    from edgeretina.benchmarks.harness import run_bench

    files = [variants["tflite"]["float32"], variants["tflite"]["int8"]]
    rep = run_bench(files, str(variants["data"]), devices=("cpu", "arm64-emu:cortex-a53"), max_images=8,
                    n_boot=0, runs=1, warmup=0, timing_images=1, stability=False, out=tmp_path / "r")
    emu = [v for v in rep.variants if v.device == "arm64-emu:cortex-a53"]
    assert len(emu) == 2
    for v in emu:
        info = v.device_info
        assert info["emulator"] == f"qemu-user {env.qemu_version}" and info["arch"] == "aarch64"
        assert "neon" in info["isa"] and "dotprod" not in info["isa"]
        assert v.latency_ms.p50 is None and v.images_per_s is None and "not a speed" in info["latency"]
        p = info["vs_x86"]
        assert p["n"] == 8 and p["flips"] == 0
        if v.name == "int8":
            assert p["identical"], p  # the same integer kernels' results on NEON and AVX2
        else:
            assert p["max_abs_diff"] < 1e-4, p
    md = (tmp_path / "r" / "report.md").read_text()
    assert "## ARM kernel parity" in md and "- Device arm64-emu:cortex-a53: emulated cortex-a53" in md
    from edgeretina.benchmarks.arm_table import main as arm_table

    assert arm_table(["--merge", str(tmp_path / "r"), "--out", str(tmp_path / "t.md")]) == 0
    assert "| int8 | cortex-a53 | NEON | 8 | 0 (0.0 %) | 0 " in (tmp_path / "t.md").read_text()
    if version_tuple(env.qemu_version) < (11, 1):
        with pytest.raises(DeviceError, match="mis-emulates SME"):
            get_device("arm64-emu:max").check()


PHONE_ADB = """#!/bin/sh
case "$*" in
  "devices -l") printf 'List of devices attached\\nPHONE1 device product:p model:Pixel_8 device:shiba\\n' ;;
  *"shell cat /proc/cpuinfo") printf 'processor\\t: 0\\nFeatures\\t: fp asimd asimdhp asimddp i8mm bf16 sve sve2\\n\\nprocessor\\t: 1\\nFeatures\\t: fp asimd\\n' ;;
  *) exit 1 ;;
esac
"""


def test_android_rows_get_the_phones_cores_and_isa_flags(tmp_path):
    """The phone's /proc/cpuinfo over adb (a shell-script adb here) → cores and ISA flags in its facts."""
    from edgeretina.benchmarks.runners.android import AndroidRunner

    adb = tmp_path / "adb"
    adb.write_text(PHONE_ADB)
    adb.chmod(0o755)
    model = tmp_path / "m.tflite"
    model.write_bytes(b"0")
    r = AndroidRunner(model, adb=str(adb))
    assert r.cpu_facts() == {"cores": 2, "isa": ["neon", "fp16", "dotprod", "i8mm", "bf16", "sve", "sve2"]}


def test_export_verify_arm_refusals_are_one_line_and_write_nothing(tiny_run, tmp_path):
    """Bad --verify-arm values and a missing environment: one line, exit 2, no export folder."""
    out = tmp_path / "exp"
    base = ["export", str(tiny_run), "--float32", "--borderline-band", "off", "--out", str(out)]
    cases = [(["--verify-arm", "cortex-z9"], "unknown CPU 'cortex-z9'"),
             (["--verify-arm", "default", "--verify-n", "0"], "needs --verify-n >= 1"),
             (["--verify-arm", "cortex-a53", "--verify-arm-n", "0"], "--verify-arm-n must be"),
             (["--verify-arm", "cortex-a53"], "no arm64 emulation environment")]
    for extra, msg in cases:
        res = CliRunner().invoke(cli, base + extra, env={"EDGERETINA_ARM64_ENV": str(tmp_path / "none")},
                                 catch_exceptions=False)
        lines = res.output.strip().splitlines()
        assert res.exit_code == 2 and lines[-1].startswith("error: ") and msg in lines[-1], res.output
        assert not out.exists()


def test_export_verify_arm_records_parity_per_cpu(tiny_run, tmp_path):
    """``export --verify-arm``: each file re-run on emulated Cortex-A53 (plain NEON); same decisions as x86,
    the int8 file bit-identical; the parity lands in the manifest and the CLI line."""
    env = _env_or_skip()
    out = tmp_path / "exp"
    res = CliRunner().invoke(cli, ["export", str(tiny_run), "--float32", "--int8", "--borderline-band", "off",
                                   "--verify-arm", "cortex-a53", "--verify-arm-n", "4", "--out", str(out)],
                             catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert "verify on emulated aarch64 (cortex-a53; 4 images)" in res.output and "ARM (cortex-a53): same decisions" in res.output
    man = json.loads((out / "manifest.json").read_text())
    assert man["options"]["verify_arm"] == ["cortex-a53"] and man["options"]["verify_arm_n"] == 4
    by = {r["variant"]: r for r in man["results"]}
    for name in ("float32", "int8"):
        (a,) = by[name]["arm_parity"]
        assert a["cpu"] == "cortex-a53" and a["n"] == 4 and a["flips"] == 0 and a["kernel_tier"] == "NEON"
        assert a["emulator"] == f"qemu-user {env.qemu_version}" and a["litert"] == env.litert
    assert by["int8"]["arm_parity"][0]["identical"]
    assert by["float32"]["arm_parity"][0]["max_abs_diff"] < 1e-4
