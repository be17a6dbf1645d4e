"""`edgeretina train` (issue 4): thin wrapper over :func:`edgeretina.train.train_run`. No TF at import."""
from __future__ import annotations

import json

import click

from edgeretina.errors import EdgeRetinaError
from edgeretina.metrics import headline
from edgeretina.models import get_backbone
from edgeretina.preprocess import MAX_INPUT_SIZE, Pipeline
from edgeretina.train import TrainConfig, train_run
from edgeretina.train.options import RunOptions


@click.command(context_settings={"show_default": True})
@click.option("--data", "data", required=True, help="dataset path (ODIR, APTOS, image folder, .npz, 'synthetic')")
@click.option("--task", "-t", required=True, help="glaucoma | referable-dr | dr | odir | multitask | classes")
@click.option("--arch", "-a", required=True, help="backbone: vgg16, resnet50/101/152, inceptionv3, xception, densenet121, "
              "mobilenet, mobilenetv2, mobilenetv3small/large, efficientnetb0")
@click.option("--out", "out", required=True, type=click.Path(file_okay=False), help="run dir to write")
@click.option("--weights", default="imagenet", help="imagenet | none | path to a no-top .h5 weights file")
@click.option("--input-size", type=int, default=None, help="square input size [default: the backbone's]")
@click.option("--alpha", type=float, default=None, help="width multiplier (MobileNet family)")
@click.option("--head", default=None, help="gap | fc:<units,...> | multitask[:<units>] [default: per task]")
@click.option("--head-fit", type=click.Choice(["two-phase", "linear"]), default="two-phase",
              help="two-phase: SGD warm-up of the head, then deep tuning; linear: an L2 logistic regression on "
                   "the frozen backbone's pooled features, penalty chosen by inner patient-grouped CV (the "
                   "glaucoma recipe: it generalises better under CV, docs/training.md)")
@click.option("--grid", is_flag=True, help="KerasTuner grid search over fine-tuning lr × batch size")
@click.option("--grid-lr", default="1e-5,5e-5,1e-4", help="grid learning rates")
@click.option("--grid-batch", default="8,12", help="grid batch sizes")
@click.option("--epochs-warmup", type=int, default=120, help="max warm-up epochs (head only)")
@click.option("--epochs-finetune", type=int, default=80, help="max fine-tune epochs (0 = warm-up only)")
@click.option("--lr-warmup", type=float, default=1e-3)
@click.option("--lr-finetune", type=float, default=1e-4)
@click.option("--batch-size", type=int, default=8)
@click.option("--patience", type=int, default=20, help="early stopping patience on validation loss")
@click.option("--freeze", default="partial", help="fine-tuning freezing policy: frozen | partial[:<fraction|layer>] | all")
@click.option("--loss", default="weighted-ce", help="ce | weighted-ce | exp-uwbce")
@click.option("--augment", default=None, help="augmentation policy (mvoulana | odir | camera | none): fine-tuning streams "
              "augmented images through the whole network; the linear head adds --aug-copies augmented feature copies")
@click.option("--aug-copies", type=int, default=2,
              help="with --head-fit linear and --augment: augmented feature copies of each training image")
@click.option("--linear-cs", default="", help="with --head-fit linear: comma-separated inverse L2 strengths "
              "(on standardised features) searched by the inner CV [default: 1e-5 … 1e-1, 9 values]")
@click.option("--linear-sd-floor", type=float, default=0.0, show_default=True,
              help="with --head-fit linear: standardise features by max(σ, F × median σ) — caps the folded weight "
                   "w/σ of features that are ~0 on almost every image (their fp16 / int8 error would move logits)")
@click.option("--consistency", default="off", show_default=True,
              help="with --head-fit linear: off | auto | a number λ — penalise the logit change under benign "
                   "re-acquisitions (JPEG re-save, 1-3 px moves, brightness, white balance) by λ·wᵀS w; auto "
                   "chooses λ by the inner CV (issue 18, docs/training.md)")
@click.option("--mid-pool", default=None, metavar="LAYER[,LAYER...]|auto",
              help="with --head-fit linear: also pool these mid-depth backbone feature maps (auto: MobileNetV2's "
                   "block_13_expand_relu) beside the last one; the head reads all of them (docs/training.md)")
@click.option("--no-feature-cache", is_flag=True, help="train through the frozen backbone instead of cached features")
@click.option("--split", default=None, help="70/10/20 (default), a/b/c, kfold:K:I:val, predefined")
@click.option("--seed", type=int, default=0)
@click.option("--max-train", type=int, default=None, help="sample at most N training images")
@click.option("--max-val", type=int, default=None)
@click.option("--max-test", type=int, default=None)
@click.option("--strategy", type=click.Choice(["default", "mirrored", "multiworker"]), default="default",
              help="tf.distribute strategy (mirrored: all local GPUs; multiworker: reads TF_CONFIG)")
@click.option("--bootstrap", type=int, default=1000, help="bootstrap resamples for the AUROC CI")
@click.option("--overwrite", is_flag=True, help="replace a finished run in --out")
@click.option("--crop", type=click.Choice(["full", "onh", "two-view"]), default="full",
              help="what the model sees: the whole fundus, a window of ~2 disc diameters around the optic disc, "
                   "or both side by side (two-view: one input of S x 2S, each half pooled apart)")
@click.option("--enhance", type=click.Choice(["none", "ben-graham", "clahe"]), default="none",
              help="contrast enhancement at the model's input size: Ben Graham's local-average subtraction "
                   "(the DR studies' Gaussian filter) or CLAHE on L*; travels in the model's preprocessing")
@click.option("--negatives", type=click.Choice(["normal", "all"]), default=None,
              help="ODIR glaucoma: negatives are pure 'normal fundus' eyes (default) or every non-glaucoma eye")
@click.option("--suspect", type=click.Choice(["include", "exclude"]), default=None,
              help="ODIR glaucoma: count 'suspected glaucoma' eyes as glaucoma (default) or leave them out")
@click.option("--cv", "cv", type=int, default=None,
              help="K-fold patient-level CV over train+val first (per-fold, pooled out-of-fold AUROC); the "
                   "final model then trains on train+val and the test split is scored once")
@click.option("--cv-seeds", default="0", help="comma-separated seeds: repeat the CV per seed (spread over seeds)")
@click.option("--cv-shifts", default="", help="with --cv: also score every out-of-fold eye under these camera "
              "shifts or benign perturbations, e.g. defocus:severe,jpeg-95,shift-2px (cv.shifted: pooled AUROC, "
              "its change, and the decision flip rate at the pooled Youden threshold)")
@click.option("--cv-tta", type=int, default=1, show_default=True,
              help="with --cv: score every out-of-fold eye (and its --cv-shifts copies) as the mean logit over K "
                   "1-px moves of the model input (test-time averaging, K model runs per photo; issue 18)")
@click.option("--onh-blur", type=float, default=0.0, show_default=True,
              help="with --crop two-view: Gaussian σ (px) on the ONH view after its resize (issue 18: the crop is "
                   "at native resolution, JPEG blocks and pixel phase reach the backbone); travels in the preprocessing")
@click.option("--onh-centre", type=click.Choice(["pixel", "subpixel"]), default="pixel", show_default=True,
              help="with --crop two-view: cut the ONH window at the disc centre rounded to whole pixels, or at its "
                   "sub-pixel estimate (bilinear, 8-bit weights) so the window follows a moved eye smoothly")
@click.option("--onh-diameters", type=float, default=2.0, show_default=True,
              help="with --crop two-view: ONH window side in disc diameters (> 2: a larger region, area-downsampled)")
@click.option("--cv-only", is_flag=True, help="recipe selection: run the CV only (writes cv.json; test split untouched)")
@click.option("--quiet", "-q", is_flag=True, help="no per-epoch progress")
@click.option("--allow-untrained", is_flag=True,
              help="accept --epochs-warmup 0 --epochs-finetune 0 (writes the initial, untrained model)")
def train(data, task, arch, out, weights, input_size, alpha, head, head_fit, grid, grid_lr, grid_batch, epochs_warmup,
          epochs_finetune, lr_warmup, lr_finetune, batch_size, patience, freeze, loss, augment, aug_copies, linear_cs,
          linear_sd_floor, consistency, mid_pool,
          no_feature_cache,
          split, seed, max_train, max_val, max_test, strategy, bootstrap, crop, enhance, negatives, suspect, cv, cv_seeds,
          cv_shifts, cv_tta, onh_blur, onh_centre, onh_diameters, cv_only, overwrite, quiet, allow_untrained):
    """Fine-tune an ImageNet CNN on fundus images (two phases) and write a run dir:
    model.keras, config.json, history.csv, metrics.json, roc.png. Re-run the same command to resume an
    interrupted run."""
    if input_size is not None and not 32 <= input_size <= MAX_INPUT_SIZE:  # issue 14: bounded before any work
        raise EdgeRetinaError(f"--input-size must be between 32 and {MAX_INPUT_SIZE} px, got {input_size}")
    if epochs_warmup == 0 and epochs_finetune == 0 and not allow_untrained and head_fit != "linear":
        raise EdgeRetinaError("--epochs-warmup 0 --epochs-finetune 0 would write an untrained model; add "
                              "--allow-untrained if that is really wanted")
    if batch_size > 1024 or any(v is not None and v < 1 for v in (max_train, max_val, max_test)):
        raise EdgeRetinaError("--batch-size must be ≤ 1024 and --max-train/--max-val/--max-test ≥ 1")

    def floats(text, what):
        try:
            return [float(v) for v in text.split(",") if v.strip()]
        except ValueError:
            raise EdgeRetinaError(f"--{what}: expected comma-separated numbers, got '{text}'") from None

    grid_space = {"lr": floats(grid_lr, "grid-lr"), "batch_size": [int(v) for v in floats(grid_batch, "grid-batch")]}
    for name, v in (("epochs-warmup", epochs_warmup), ("epochs-finetune", epochs_finetune), ("patience", patience)):
        if v < 0:
            raise EdgeRetinaError(f"--{name} must be ≥ 0, got {v}")
    if batch_size < 1:
        raise EdgeRetinaError(f"--batch-size must be ≥ 1, got {batch_size}")

    cfg = TrainConfig(epochs_warmup=epochs_warmup, epochs_finetune=epochs_finetune, lr_warmup=lr_warmup,
                      lr_finetune=lr_finetune, batch_size=batch_size, patience=patience, freeze=freeze, loss=loss,
                      cache_features=not no_feature_cache, augment=augment, seed=seed)
    log = None if quiet else (lambda m: click.echo(m, err=True))
    data_options = {k: v for k, v in (("negatives", negatives), ("suspect", suspect)) if v is not None}
    pipeline = None
    if crop in ("onh", "two-view") or enhance != "none":
        bb = get_backbone(arch)
        pipeline = Pipeline.default(input_size or bb.default_size, bb.scaling.value, onh=crop == "onh",
                                    two_view=crop == "two-view", ben_graham=enhance == "ben-graham",
                                    clahe=enhance == "clahe")
    onh_view = {"onh_blur": onh_blur, "subpixel": onh_centre == "subpixel", "diameters": onh_diameters}
    if onh_view != {"onh_blur": 0.0, "subpixel": False, "diameters": 2.0}:
        if crop != "two-view":
            raise EdgeRetinaError("--onh-blur / --onh-centre / --onh-diameters shape the two-view input's ONH view: "
                                  "they need --crop two-view")
        pipeline = pipeline.with_onh_view(**onh_view)
    opts = RunOptions(weights=weights, input_size=input_size, head=head,
                      arch_options={"alpha": alpha} if alpha is not None else None, config=cfg, split=split,
                      seed=seed, pipeline=pipeline, data_options=data_options or None, max_train=max_train,
                      max_val=max_val, max_test=max_test, grid=grid, grid_space=grid_space, strategy=strategy,
                      n_boot=bootstrap, overwrite=overwrite, cv=cv,
                      cv_seeds=tuple(int(v) for v in floats(cv_seeds, "cv-seeds")), cv_only=cv_only,
                      head_fit=head_fit, aug_copies=aug_copies, consistency=consistency,
                      linear_cs=tuple(floats(linear_cs, "linear-cs")) or None,
                      linear_sd_floor=linear_sd_floor, cv_tta=cv_tta, mid_pool=mid_pool,
                      cv_shifts=tuple(v.strip() for v in cv_shifts.split(",") if v.strip()))
    run_dir = train_run(data, task, arch, out, log=log, options=opts)
    if cv_only:
        c = json.loads((run_dir / "cv.json").read_text())["cv"]
        click.echo(_cv_line(c))
        click.echo(f"run dir: {run_dir} (cv.json only; the test split was not used)")
        return
    m = json.loads((run_dir / "metrics.json").read_text())
    if "cv" in m:
        click.echo(_cv_line(m["cv"]) + "  ← chose the recipe/threshold")
    which = "test" if "test" in m else "val"
    click.echo(headline(m))
    if "baseline_logreg_frozen_features" in m:
        b = m["baseline_logreg_frozen_features"]
        click.echo(f"baseline (logistic regression on frozen features) {which} AUROC {b['auroc']:.3f} "
                   f"(95% CI {b['auroc_ci_low']:.3f}-{b['auroc_ci_high']:.3f})")
    click.echo(f"run dir: {run_dir}")


def _cv_line(c: dict) -> str:
    txt = f"cv ({c['k']}-fold, train+val): {c['metric']} {c['mean']:.3f} ± {c['sd']:.3f} per fold"
    p = c.get("pooled", {})
    if "auroc_ci_low" in p:
        txt += f"; pooled out-of-fold AUROC {p['auroc']:.3f} (95% CI {p['auroc_ci_low']:.3f}-{p['auroc_ci_high']:.3f})"
    if c.get("seed_sd") is not None:
        txt += f"; sd over {len(c['seeds'])} seeds {c['seed_sd']:.3f}"
    return txt
