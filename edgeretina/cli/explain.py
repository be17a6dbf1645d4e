"""`edgeretina explain` (issue 4): Grad-CAM heatmap over a fundus image. No TF at import."""
from __future__ import annotations

from pathlib import Path

import click

from edgeretina.errors import DataError
from edgeretina.io import ensure_writable_dir
from edgeretina.models.gradcam import explain_file


@click.command()
@click.argument("model", type=click.Path())
@click.argument("image", type=click.Path())
@click.option("--out", "-o", required=True, type=click.Path(dir_okay=False), help="heatmap PNG to write")
@click.option("--class", "class_name", default=None,
              help="label name or index to explain [default: the positive class (binary) or the top class]")
@click.option("--layer", default=None, help="feature-map layer [default: the last backbone feature map]")
@click.option("--alpha", type=float, default=0.4, show_default=True, help="heatmap opacity")
def explain(model, image, out, class_name, layer, alpha):
    """Grad-CAM of MODEL (run dir or model.keras with its config.json) on IMAGE, overlaid → --out PNG."""
    if not Path(image).is_file():
        raise DataError(f"{image}: no such image file")

    ensure_writable_dir(Path(out).resolve().parent)  # an unwritable --out fails before the model loads

    ex = explain_file(model, image, out, class_name=class_name, layer=layer, alpha=alpha)
    click.echo(f"{ex.class_name}: p = {ex.probability:.3f}; Grad-CAM on '{ex.layer}' → {out}")
