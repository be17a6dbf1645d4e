"""`edgeretina data ...` (issue 3): inspect datasets. Thin: one library call per command, no TensorFlow."""
from __future__ import annotations

import json
from pathlib import Path

import click

from edgeretina.data import open_dataset
from edgeretina.data.preview import onh_sheet
from edgeretina.data.summary import format_summary, summarize
from edgeretina.errors import DataError
from edgeretina.io import ensure_writable_dir
from edgeretina.preprocess import Pipeline


@click.group()
def data():
    """Inspect fundus datasets (ODIR-5K, APTOS-2019, image folders, RetinaMNIST .npz, synthetic)."""


@data.command("summary")
@click.argument("path")
@click.option("--task", "-t", default=None,
              help="glaucoma | odir | multitask | dr | referable-dr | classes (default: the format's first task)")
@click.option("--format", "fmt", default=None,
              type=click.Choice(["odir", "aptos", "imagefolder", "npz", "synthetic"]), help="skip auto-detection")
@click.option("--split", "scheme", default=None,
              help="70/10/20 (default), 90/10, kfold:K:I, predefined (RetinaMNIST default), all")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--on-bad-image", type=click.Choice(["fail", "skip"]), default="fail", show_default=True,
              help="a bad image/row is an error, or is skipped and listed")
@click.option("--verify", type=click.Choice(["header", "full", "none"]), default="header", show_default=True,
              help="header: size/signature/end-marker of each file (fast); full: decode every image")
@click.option("--suspect", type=click.Choice(["include", "exclude"]), default=None,
              help="ODIR: count 'suspected glaucoma' eyes as glaucoma (default include) or leave them out")
@click.option("--onh", is_flag=True,
              help="also run the optic-disc locator on every task image and count the flagged ONH crops")
@click.option("--pipeline", "pipeline_json", default=None, type=click.Path(exists=True, dir_okay=False),
              help="preprocessing JSON (e.g. a run's config pipeline); with an onh_crop step its flagged crops "
                   "are counted")
@click.option("--json", "as_json", is_flag=True, help="print the summary as JSON")
def summary(path, task, fmt, scheme, seed, on_bad_image, verify, suspect, onh, pipeline_json, as_json):
    """Format, images, patients, counts per class and per split, and problems found in PATH."""
    opts = {"check": verify}
    if suspect is not None:
        opts["suspect"] = suspect
    pipe = Pipeline.from_json(Path(pipeline_json).read_text()) if pipeline_json else None
    if onh and (pipe is None or not pipe.uses_onh):
        pipe = Pipeline.default(onh=True)
    ds = open_dataset(path, task, format=fmt, on_bad_image=on_bad_image, **opts)
    s = summarize(ds, scheme, seed, onh_pipeline=pipe if pipe is not None and pipe.uses_onh else None)
    click.echo(json.dumps(s, indent=2) if as_json else format_summary(s))


@data.command("preview")
@click.argument("path")
@click.option("--task", "-t", default=None, help="task whose records are sampled (default: the format's first)")
@click.option("--out", "-o", required=True, type=click.Path(dir_okay=False), help="PNG contact sheet to write")
@click.option("-n", "n", default=24, show_default=True, type=int, help="number of images")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--pipeline", "pipeline_json", default=None, type=click.Path(exists=True, dir_okay=False),
              help="show this preprocessing JSON's uint8 output instead of the ONH crop (its onh_crop "
                   "parameters, if any, drive the disc locator)")
@click.option("--json", "as_json", is_flag=True, help="print the per-image disc detections as JSON")
def preview(path, task, out, n, seed, pipeline_json, as_json):
    """Check ONH localisation / preprocessing by eye: fundus with detected disc beside its crop."""
    if n < 1:
        raise DataError("-n must be at least 1")
    pipe = None
    if pipeline_json:
        pipe = Pipeline.from_json(Path(pipeline_json).read_text())
    ensure_writable_dir(Path(out).resolve().parent)
    ds = open_dataset(path, task)
    if not ds.records:
        raise DataError(f"{path}: no images for task '{ds.spec.task.value}'")
    r = onh_sheet(ds.records, out, n=n, seed=seed, pipeline=pipe)
    if as_json:
        click.echo(json.dumps(r.to_dict(), indent=2))
        return
    click.echo(f"wrote {r.path}: {r.n} images, optic disc found in {r.discs_found}, flagged {len(r.flagged)} "
               "(orange circle = flagged low-confidence guess, red = fallback to the field-of-view centre)")
    for d in r.flagged:
        click.echo(f"  flagged  {d['key']}: {d['disc']['reason']} (confidence {d['disc']['confidence']:.2f})")
