"""`edgeretina demo`: train → export → benchmark on the embedded synthetic fundus set (issue 2)."""
from __future__ import annotations

import time

import click

from edgeretina.demo import run_demo


@click.command()
@click.option("--out", "out", default="demo_out", show_default=True, metavar="DIR",
              help="Directory for the run, the .tflite variants and the demo.json/demo.md table.")
@click.option("--quick", is_flag=True, help="Smaller data, 96 px, fewer timing runs (about a minute; used by tests).")
def demo(out, quick):
    """Train a small MobileNetV2 on synthetic fundus images, export float32/fp16/dynamic/int8 TFLite,
    run each in LiteRT on held-out images and print size, AUROC, ΔAUROC and batch-1 latency."""
    t0 = time.perf_counter()

    def progress(msg: str) -> None:
        click.echo(f"[{time.perf_counter() - t0:6.1f}s] {msg}", err=True)

    command = f"edgeretina demo --out {out}" + (" --quick" if quick else "")
    result = run_demo(out, quick=quick, progress=progress, command=command)
    click.echo("")
    click.echo(result.to_terminal())
    click.echo("")
    click.echo(f"test images: {result.n_test}; wall time {result.seconds['total']:.0f} s; "
               f"table: {result.out_dir}/demo.md and demo.json; full report: {result.out_dir}/bench/report.md")
