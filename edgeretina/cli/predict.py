"""`edgeretina predict MODEL IMAGE...`: class, probability and screening decision per image."""
from __future__ import annotations

import click


@click.command()
@click.argument("model", type=click.Path())
@click.argument("images", nargs=-1, required=True, type=click.Path())
@click.option("--threads", type=click.IntRange(min=1), default=None, help="CPU threads for LiteRT.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object per image (all probabilities).")
def predict(model, images, threads, as_json):
    """Score fundus photos with MODEL (.tflite, .keras or a run dir) using the labels, preprocessing and
    recommended threshold the model carries in its metadata."""
    from edgeretina.benchmarks.predict import predict_images

    preds = predict_images(model, images, threads=threads)
    if as_json:
        import json

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
        click.echo(f"{p.image.ljust(w)}  {p.label.ljust(cw)}  {ps.ljust(pw)}  {p.decision}{why}")
