"""`edgeretina predict MODEL IMAGE...`: class, probability and screening decision per image."""
from __future__ import annotations

import json

import click

from edgeretina.inference.predict import predict_images


@click.command()
@click.argument("model", type=click.Path())
@click.argument("images", nargs=-1, required=True, type=click.Path())
@click.option("--threads", type=click.IntRange(min=1), default=None, help="CPU threads for LiteRT.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object per image (all probabilities).")
@click.option("--on-bad-image", type=click.Choice(["fail", "skip"]), default="fail", show_default=True,
              help="A corrupt (libjpeg warns), truncated, tiny (< 64 px) or huge (> 50 MP) image: stop with an "
                   "error, or skip it and list it on stderr.")
@click.option("--borderline", type=click.FloatRange(min=0), default=None, metavar="DELTA",
              help="Flag a decision as borderline when the score is within DELTA logits of the threshold "
                   "(default: the model metadata's borderline_band, which edgeretina export measures and "
                   "writes; none: not judged).")
@click.option("--no-verify-manifest", is_flag=True,
              help="Use a .tflite even if it does not match its export folder's manifest.json (warns).")
def predict(model, images, threads, as_json, on_bad_image, no_verify_manifest, borderline):
    """Score fundus photos with MODEL (.tflite, .keras or a run dir) using the labels, preprocessing and
    recommended threshold the model carries in its metadata. The model is checked against its export
    folder's manifest.json and its metadata against the graph before any image is read."""
    if no_verify_manifest:
        click.echo("warning: --no-verify-manifest: the model file is NOT checked against its export manifest; "
                   "a tampered or swapped file would be used", err=True)
    problems: list[str] = []
    preds = predict_images(model, images, threads=threads, on_bad_image=on_bad_image, problems=problems,
                           verify_manifest=not no_verify_manifest, borderline=borderline)
    for p in problems:
        click.echo(f"warning: {p}", err=True)
    if problems:
        click.echo(f"warning: skipped {len(problems)} of {len(images)} image(s)", err=True)
    if as_json:
        for p in preds:
            click.echo(json.dumps(p.to_dict()))
        return
    w = max(len("image"), *(len(p.image) for p in preds))
    cw = max(len("class"), *(len(p.label) for p in preds))
    probs = [f"p({p.probability_of})={p.probability:.3f}" for p in preds]
    pw = max(len("probability"), *(len(s) for s in probs))
    click.echo(f"{'image'.ljust(w)}  {'class'.ljust(cw)}  {'probability'.ljust(pw)}  decision")
    for p, ps in zip(preds, probs):
        thr = p.threshold if isinstance(p.threshold, (int, float)) else None
        why = f" (score {p.score:.3f} {'≥' if p.score >= thr else '<'} threshold {thr:.3f})" if thr is not None else ""
        near = f" — borderline (within ±{p.borderline_band:g} logit; retake advised)" if p.borderline else ""
        near += " [re-scored by the fp16 fallback]" if p.rescored else ""
        near += f" [optic disc not found with confidence: {p.disc_reason}; retake advised]" if p.disc_flagged else ""
        click.echo(f"{p.image.ljust(w)}  {p.label.ljust(cw)}  {ps.ljust(pw)}  {p.decision}{why}{near}")
