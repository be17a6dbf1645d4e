"""CLI-level behaviour: help lists subcommands, --version, usage errors exit 2, bad --out is one line."""
from __future__ import annotations

import subprocess
import sys

import pytest

from edgeretina import __version__
from edgeretina.cli import COMMANDS


def run(*args, timeout=60):
    return subprocess.run([sys.executable, "-m", "edgeretina", *args], capture_output=True, text=True,
                          timeout=timeout)


def test_help_lists_every_subcommand():
    r = run("--help")
    assert r.returncode == 0, r.stderr
    for name in ("demo", "data", "train", "export", "bench", "predict"):
        assert name in COMMANDS
        assert f"  {name} " in r.stdout
    assert "Traceback" not in r.stdout + r.stderr


def test_version():
    for flag in ("--version", "-V"):
        r = run(flag)
        assert r.returncode == 0
        assert __version__ in r.stdout and "edgeretina" in r.stdout


def test_unknown_subcommand_is_a_usage_error():
    r = run("frobnicate")
    assert r.returncode == 2
    assert "No such command 'frobnicate'" in r.stderr
    assert "Traceback" not in r.stderr


def test_unknown_option_is_a_usage_error():
    r = run("demo", "--no-such-option")
    assert r.returncode == 2
    assert "No such option" in r.stderr and "Usage: edgeretina demo" in r.stderr
    r = run("--no-such-option")
    assert r.returncode == 2 and "No such option" in r.stderr


def test_demo_help():
    r = run("demo", "--help")
    assert r.returncode == 0
    assert "--out" in r.stdout and "--quick" in r.stdout


@pytest.mark.parametrize("kind", ["under-a-file", "is-a-file"])
def test_unwritable_out_is_one_line_error(tmp_path, kind):
    f = tmp_path / "plain.txt"
    f.write_text("not a directory")
    out = f / "sub" if kind == "under-a-file" else f
    r = run("demo", "--quick", "--out", str(out))
    assert r.returncode != 0
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("error: ") and str(out) in lines[0]
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "plain.txt").is_dir()


def test_no_tensorflow_import_for_help():
    code = ("import sys; from edgeretina.cli import cli, COMMANDS; import importlib\n"
            "[importlib.import_module(m) for m, _ in COMMANDS.values()]\n"
            "print('tensorflow' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "False"
