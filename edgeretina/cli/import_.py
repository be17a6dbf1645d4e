"""`edgeretina import MODEL --task T --preprocess P (--threshold X | --data SET) --out RUN_DIR`: a classifier
made elsewhere (Keras 2 .h5/.keras, Keras 3 .keras, SavedModel, float .tflite) → a run dir that export, bench,
predict, calibrate and the app use unchanged (library: ``edgeretina.converters.importer``; docs/import.md).
The module is ``import_`` because ``import`` is a Python keyword."""
from __future__ import annotations

import json

import click

from edgeretina.converters.importer import OUTPUT_KINDS, PRESETS, ImportOptions, ImportRefused, import_model


@click.command("import")
@click.argument("model", type=click.Path(path_type=str))
@click.option("--task", "-t", required=True, help="What the model predicts: glaucoma, referable-dr, dr, odir, "
              "multitask, or classes (with --labels).")
@click.option("--labels", default=None, help="The model's output columns in order, comma-separated (task "
              "classes: required; other tasks: the task's labels in the model's order, e.g. glaucoma,normal).")
@click.option("--preprocess", "-p", default=None, help=f"Input convention: a preset ({', '.join(PRESETS)}: "
              "tf [-1,1], caffe BGR mean-subtracted, torch ImageNet mean/std, unit [0,1], none 0..255; after "
              "FOV crop, pad to square and resize) or a pipeline.json (edgeretina.preprocess steps).")
@click.option("--input-size", type=int, default=None, help="Input size in px (needed when the model's is dynamic).")
@click.option("--output", type=click.Choice(OUTPUT_KINDS), default=None,
              help="What the model emits [detected from its last layer / its outputs on probe images].")
@click.option("--threshold", type=float, default=None, help="Decision threshold on the positive class's "
              "probability (binary) or on every label's (multi-label).")
@click.option("--data", "-d", default=None, help="A labelled set (image folder, ODIR, APTOS, .npz, synthetic:...) "
              "to derive the threshold on (and to calibrate int8 exports from).")
@click.option("--youden", is_flag=True, help="With --data: Youden's J (the default).")
@click.option("--sensitivity", type=float, default=None,
              help="With --data: the highest threshold whose sensitivity reaches this.")
@click.option("--max-images", type=click.IntRange(min=2), default=1000, show_default=True,
              help="--data: at most this many images (stratified).")
@click.option("--out", "-o", required=True, type=click.Path(path_type=str),
              help="The new run dir (must not exist or be empty); built beside it and renamed into place.")
@click.option("--json", "as_json", is_flag=True, help="Print the import report as JSON.")
def import_(model, task, labels, preprocess, input_size, output, threshold, data, youden, sensitivity,
            max_images, out, as_json):
    """Import MODEL (a Keras 2 .h5/.keras, a Keras 3 .keras, a SavedModel folder or a float .tflite) as an
    edgeretina run dir: its inputs/outputs are checked against the task, its output is mapped to the project's
    convention, and the decision threshold comes from --threshold or a labelled --data set.

    \b
    edgeretina import vgg_glaucoma.h5 --task glaucoma --preprocess caffe --threshold 0.42 --out runs/vgg
    edgeretina export runs/vgg --int8 --calib clinic_photos/
    """
    if youden and sensitivity is not None:
        raise ImportRefused("--youden and --sensitivity are two rules for one threshold: give one")
    if youden and data is None:
        raise ImportRefused("--youden derives the threshold on a labelled set: add --data PATH")
    opts = ImportOptions(task=task, preprocess=preprocess, input_size=input_size, output=output,
                         labels=tuple(labels.split(",")) if labels is not None else None, threshold=threshold,
                         data=data, sensitivity=sensitivity, max_images=max_images)
    report = import_model(model, out, opts, progress=None if as_json else (lambda m: click.echo(f"  {m}", err=True)))
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2, default=str))
        return
    click.echo(f"edgeretina import: {model} → {out} ({report.seconds:.1f}s)")
    for line in report.lines():
        click.echo(f"  {line}")
