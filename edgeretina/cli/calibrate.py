"""`edgeretina calibrate MODEL --data LOCAL_SET --out NEW.tflite`: re-fit the decision threshold on a site's
own labelled images (library: ``edgeretina.benchmarks.calibrate``; docs/calibrate.md)."""
from __future__ import annotations

import json
import sys

import click

from edgeretina.benchmarks.calibrate import calibrate as calibrate_model


@click.command()
@click.argument("model", type=click.Path())
@click.option("--data", "-d", required=True,
              help="Labelled local set: image folder, ODIR, APTOS, .npz or synthetic:... (all images are used).")
@click.option("--task", "-t", default=None, help="Task; must be the model's own (default: from its metadata).")
@click.option("--sensitivity", type=float, default=None,
              help="Target sensitivity: the highest threshold whose sensitivity on the local set is >= this.")
@click.option("--youden", is_flag=True, help="Youden's J (sensitivity + specificity − 1); the default target.")
@click.option("--split", type=click.Choice(["all", "test", "val", "train"]), default="all", show_default=True,
              help="Images of the local set to use: all, or a split as the model's training run made it.")
@click.option("--out", "-o", required=True, type=click.Path(dir_okay=False),
              help="The calibrated copy (.tflite); the input model is never modified.")
@click.option("--overwrite", is_flag=True, help="Replace an existing --out file.")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="CPU threads for LiteRT.")
@click.option("--n-boot", type=click.IntRange(min=0), default=1000, show_default=True,
              help="Bootstrap resamples for the 95 % CIs and the threshold stability (0: none).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON instead of the table.")
def calibrate(model, data, task, sensitivity, youden, split, out, overwrite, threads, n_boot, seed, as_json):
    """Re-derive MODEL's screening threshold on a labelled local set and write a calibrated copy whose
    metadata carries the new threshold and where it came from (predict, bench and the Android app use it).

    \b
    edgeretina calibrate export/model_float32.tflite --data clinic_photos/ --sensitivity 0.90 \\
        --out export/model_float32_clinic.tflite
    """
    res = calibrate_model(model, data, out, task=task, sensitivity=sensitivity, youden=youden, split=split,
              overwrite=overwrite, n_boot=n_boot, seed=seed, threads=threads,
              progress=None if as_json else (lambda msg: click.echo(msg, err=True)))
    if as_json:
        click.echo(json.dumps(res.to_dict(), indent=2, default=str))
        return
    for line in res.lines():
        click.echo(line)
    sys.stdout.flush()
