"""`edgeretina bench`: AUROC retention, size, AUROC density and latency of model variants, side by side."""
from __future__ import annotations

import json
import shlex
import sys

import click

from edgeretina.benchmarks.harness import run_bench
from edgeretina.benchmarks.options import DEFAULTS, SPLITS, BenchOptions
from edgeretina.inference.integrity import manifest_verification
from edgeretina.preprocess import strict_decoding

DEVICE_CHOICES = ("cpu", "keras-cpu", "gpu", "android")


@click.command()
@click.argument("more_models", nargs=-1, type=click.Path(), metavar="[MODELS]...")
@click.option("--models", "-m", "models", multiple=True, type=click.Path(),
              help="Model files (.tflite, .keras) or directories (a run dir, an export dir); repeatable. "
                   "Further paths may follow as arguments.")
@click.option("--data", "-d", required=True, help="Dataset path (ODIR, APTOS, image folder, .npz, synthetic).")
@click.option("--task", "-t", default=None, help="Task; defaults to the models' own (from their metadata).")
@click.option("--split", type=click.Choice(list(SPLITS)), default=DEFAULTS.split, show_default=True,
              help="Images to score: a split as the reference was trained with, or all images.")
@click.option("--device", "devices", multiple=True, default=DEFAULTS.devices, show_default=True,
              help="cpu | keras-cpu | gpu | android; repeatable or comma-separated.")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="CPU threads for LiteRT (default: all cores).")
@click.option("--runs", type=click.IntRange(min=1), default=DEFAULTS.runs, show_default=True,
              help="Timing passes over the timing images.")
@click.option("--warmup", type=click.IntRange(min=0), default=DEFAULTS.warmup, show_default=True,
              help="Untimed batch-1 calls before timing.")
@click.option("--timing-images", type=click.IntRange(min=1), default=DEFAULTS.timing_images, show_default=True,
              help="Images per timing pass (the first of the split).")
@click.option("--reference", type=click.Path(), default=None,
              help="Reference model (default: the Keras model, else the float32 .tflite).")
@click.option("--max-images", type=click.IntRange(min=2), default=None,
              help="Score a seeded random subset of this many images (quick runs).")
@click.option("--n-boot", type=click.IntRange(min=0), default=DEFAULTS.n_boot, show_default=True,
              help="Bootstrap resamples for the AUROC CI (0: no CI).")
@click.option("--seed", type=int, default=DEFAULTS.seed, show_default=True)
@click.option("--out", "-o", required=True, type=click.Path(file_okay=False),
              help="Report directory: report.json/md/csv, roc.png, ballchart.png.")
@click.option("--shift", "shift", default=None, metavar="NAME[,NAME...]|all",
              help="Camera-shift stress test: re-score the same photos under each named shift (edgeretina.shifts) "
                   "at a mild and a severe level; adds a table, shift.csv and shift.png.")
@click.option("--stability", type=click.Choice(["on", "off"]), default="on", show_default=True,
              help="Decision-stability floor: the reference's flips under benign re-acquisition (JPEG re-save, "
                   "1-2 px moves, brightness, white balance) and every variant's flips as a multiple of it.")
@click.option("--agreement-data", type=click.Path(), default=None, metavar="PATH",
              help="Also score every model's decision flips vs the reference on this unlabelled set (a dataset, "
                   "labels ignored, or a folder of images), with a Wilson 95 % CI.")
@click.option("--json", "as_json", is_flag=True, help="Print report.json instead of the table.")
@click.option("--no-verify-manifest", is_flag=True,
              help="Use .tflite files even if they do not match their export folder's manifest.json (warns).")
def bench(more_models, models, data, task, split, devices, threads, runs, warmup, timing_images, reference,
          max_images, n_boot, seed, out, shift, stability, agreement_data, as_json, no_verify_manifest):
    """Benchmark model variants on the same images: AUROC (95 % CI), ΔAUROC and paired DeLong p against
    the reference, AUROC density, sensitivity/specificity at the reference threshold, decision flips,
    size, gzip size and batch-1 latency.

    \b
    edgeretina bench --models runs/glaucoma runs/glaucoma/export --data ../shared/data/odir \\
        --task glaucoma --device cpu --threads 2 --out reports/glaucoma
    """
    # every check lives in BenchOptions (unknown shift names, bounds, split: one-line errors)
    options = BenchOptions.make(shift=shift, stability=stability, task=task, split=split, devices=devices,
                                threads=threads, runs=runs, warmup=warmup, timing_images=timing_images,
                                reference=reference, n_boot=n_boot, seed=seed, max_images=max_images,
                                agreement_data=agreement_data)
    all_models = list(models) + list(more_models)
    if not all_models:
        raise click.UsageError("give the models to benchmark (--models FILE_OR_DIR ...)")
    command = _command(all_models, data, out, options, shift=shift)
    bar = {"bar": None}

    def progress(done, total, what):
        if bar["bar"] is None:
            bar["bar"] = click.progressbar(length=total, label="bench", file=sys.stderr,
                                           show_pos=True, item_show_func=lambda x: x)
            bar["bar"].__enter__()
            bar["last"] = 0
        b = bar["bar"]
        b.update(done - bar["last"], current_item=what)
        bar["last"] = done

    def warn(msg):
        click.echo(f"warning: {msg}", err=True)

    if no_verify_manifest:
        warn("--no-verify-manifest: model files are NOT checked against their export manifests; a tampered "
             "or swapped file would be benchmarked")

    try:
        with manifest_verification(not no_verify_manifest), strict_decoding():  # issue 14: checked artifacts
            report = run_bench(all_models, data, out=out, progress=progress, warn=warn, command=command,
                               options=options)
    finally:
        if bar["bar"] is not None:
            bar["bar"].__exit__(None, None, None)
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
        return
    click.echo(report.to_terminal())
    for s in report.skipped:
        click.echo(f"skipped {s['file']} on {s['device']}: {s['reason']}", err=True)
    click.echo(f"reference: {report.reference}; {report.dataset['n_images']} images "
               f"({report.dataset['split']} split)")
    if report.stability is not None:
        click.echo(f"stability: {report.stability.summary()}")
    extra = (", stability.csv" if report.stability is not None else "") + \
        (", shift.csv, shift.png" if report.shifts else "")
    click.echo(f"wrote {out}/report.json, report.md, report.csv, roc.png, ballchart.png{extra}")


def _command(models, data, out, o: BenchOptions, shift: str | None = None) -> str:
    """The command line that reruns this bench (recorded in report.md): flags that differ from the defaults."""
    parts = ["edgeretina", "bench", "--models", *models, "--data", data]
    if o.task:
        parts += ["--task", o.task]
    if o.split != DEFAULTS.split:
        parts += ["--split", o.split]
    for d in o.devices:
        parts += ["--device", d]
    for flag, name in (("--threads", "threads"), ("--runs", "runs"), ("--warmup", "warmup"),
                       ("--timing-images", "timing_images"), ("--reference", "reference"),
                       ("--max-images", "max_images"), ("--n-boot", "n_boot"), ("--seed", "seed")):
        value = getattr(o, name)
        if value is not None and value != getattr(DEFAULTS, name):
            parts += [flag, str(value)]
    if shift:
        parts += ["--shift", shift]
    if o.stability != DEFAULTS.stability:
        parts += ["--stability", "on" if o.stability else "off"]
    if o.agreement_data:
        parts += ["--agreement-data", o.agreement_data]
    parts += ["--out", out]
    return shlex.join(str(p) for p in parts)
