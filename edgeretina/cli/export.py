"""`edgeretina export RUN_DIR_or_MODEL [--int8 ...]`: thin wrapper over ``edgeretina.converters.export_model``.

The variant flags come from ``edgeretina.converters.variants`` (the registry table); every flag maps onto an
:class:`~edgeretina.converters.export.ExportOptions` field, which checks the combinations (the Python API gets
the same checks). No TensorFlow import at module level.
"""
from __future__ import annotations

from pathlib import Path

import click

from edgeretina.converters import export_model
from edgeretina.converters.export import ExportOptions
from edgeretina.converters.sources import resolve_source
from edgeretina.converters.variants import ALL, FLAGS, IO, select_variants


def _variant_flags(f):
    for name, help_ in reversed(list(FLAGS.items())):
        f = click.option(f"--{name}", f"flag_{name.replace('-', '_')}", is_flag=True, help=help_)(f)
    return f


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("model", type=click.Path(path_type=str))
@_variant_flags
@click.option("--all", "all_", is_flag=True, help=f"every variant ({' '.join(v.value for v in ALL)})")
@click.option("--sparsity", type=float, default=None, help="target sparsity for --pruned, in (0, 1) [0.5]")
@click.option("--allocation", type=click.Choice(["uniform", "size"]), default="uniform", show_default=True,
              help="--pruned: same sparsity in every layer, or small layers denser and large ones sparser "
                   "(same total zeros)")
@click.option("--calib", type=click.Path(path_type=str), default=None,
              help="calibration images: a folder of images or a .npy/.npz of preprocessed inputs "
                   "[default: training split of the run's dataset]")
@click.option("--calib-n", type=int, default=200, show_default=True, help="calibration images (stratified by class)")
@click.option("--io", "io_", type=click.Choice([x.value for x in IO]), default=IO.INT8.value, show_default=True,
              help="interface tensors of full-integer variants")
@click.option("--allow-float-fallback", is_flag=True, help="accept int8 models with some ops left in float")
@click.option("--verify-n", type=int, default=64, show_default=True,
              help="validation images for the float-vs-variant check (0: skip)")
@click.option("--steps", type=int, default=None, help="fine-tune steps for --pruned/--qat [300]")
@click.option("--finetune-target", type=click.Choice(["teacher", "labels"]), default="teacher", show_default=True,
              help="--pruned/--qat fine-tune: distil the float model's logits (keeps its decisions and threshold) "
                   "or train on labels (the variant gets its own validation threshold)")
@click.option("--bias-correction/--no-bias-correction", default=True, show_default=True,
              help="fold the int8 model's mean logit error vs the float model (calibration images) into its "
                   "output bias")
@click.option("--quantizer", type=click.Choice(["converter", "aeq"]), default="converter", show_default=True,
              help="full-integer backend of --int8 / --pruned --int8: the TF converter, or ai-edge-quantizer "
                   "(static_wi8_ai8 on the float32 .tflite, same calibration images)")
@click.option("--ranges", "--calibration-range", "ranges", type=click.Choice(["minmax", "ema", "percentile", "mse"]),
              default="minmax", show_default=True,
              help="--quantizer aeq activation ranges: global min/max over the calibration images, the "
                   "quantizer's own 0.95 moving average of per-image min/max, the 0.01-99.99th percentiles, or "
                   "the range with the least 8-bit squared error (histogram of the calibration activations)")
@click.option("--max-flips", type=float, default=None,
              help="--int8 --quantizer aeq: keep the fewest layers' activations float so that at most this share of held-out "
                   "training images (not calibration, validation or test) change decision vs the float model "
                   "(0.01 = 1 percent)")
@click.option("--max-logit-noise", type=float, default=None,
              help="like --max-flips, for the rms of the screening-logit difference vs the float model")
@click.option("--budget-n", type=int, default=500, show_default=True,
              help="held-out training images the --max-flips / --max-logit-noise budget is checked on")
@click.option("--max-float-macs", type=float, default=0.10, show_default=True,
              help="the budget's float layers hold at most this share of the model's multiply-adds (a budget "
                   "not met under it is an error naming the best reached)")
@click.option("--residual-weights", default="", metavar="LAYER[,LAYER]",
              help="--int8: run these Conv2D / DepthwiseConv2D layers (Keras names, e.g. expanded_conv_depthwise) "
                   "as two int8 kernels, the weights on the int8 grid plus their rounding residual on a 127x finer "
                   "one, summed before the activation (same function; all weights stay int8)")
@click.option("--head-split", type=int, default=0, show_default=True, metavar="K",
              help="--int8: split the final linear Dense into K magnitude bands of its weights, each on its own "
                   "int8 grid (same function; a linear head on standardised features has weights spanning "
                   "hundreds of times the median, most of which round to 0 on one grid); 0 = off")
@click.option("--weight-rounding", type=click.Choice(["nearest", "gptq"]), default="nearest", show_default=True,
              help="--int8: how int8 weights are rounded: nearest step, or GPTQ (error-compensating, column by "
                   "column on the calibration images' layer inputs, same scales; docs/export.md)")
@click.option("--guard-k", type=float, default=3.0, show_default=True,
              help="--int8-guard: band = k × the int8 model's logit noise (vs the float model, calibration images)")
@click.option("--guard-max-latency", type=float, default=None, metavar="RATIO",
              help="--int8-guard: choose k instead of --guard-k — the fewest held-out flips whose estimated mean "
                   "latency (int8 + re-scored share x fp16, both timed here) stays within RATIO x the int8 latency "
                   "(e.g. 1.3); with --guard-max-flips both must hold")
@click.option("--guard-max-flips", type=float, default=None, metavar="SHARE",
              help="--int8-guard: instead of --guard-k, the smallest k (0.5-5) whose cascade flips at most this "
                   "share of the float model's screening decisions (DR grading: the referable decision, both readings) "
                   "on held-out training images (--budget-n); "
                   "an error naming the best reached when none does")
@click.option("--borderline-band", "borderline_band", default="auto", show_default=True, metavar="auto|off|LOGITS",
              help="the band written into every variant's metadata (predict and the app flag a decision within "
                   "±band logits of the threshold as borderline): auto = the 0.95 quantile of the source model's "
                   "|logit change| under the bench's benign perturbations on --band-n validation images (none, "
                   "with a note, when the run's dataset is not available), off, or a number of logits")
@click.option("--band-n", type=int, default=100, show_default=True,
              help="validation images the auto borderline band is measured on")
@click.option("--verify-arm", "verify_arm", multiple=True, metavar="CPU|default",
              help="also run every file by aarch64 LiteRT under qemu-user on this emulated CPU (repeatable; "
                   "default = cortex-a53, cortex-a76, neoverse-n1; properties as in qemu, e.g. max,sme=off) and "
                   "fail when a decision differs from x86; environment: python -m edgeretina.emulation.arm64_env "
                   "build (docs/arm.md)")
@click.option("--verify-arm-n", type=int, default=16, show_default=True,
              help="verification images each file is run on under emulation (~0.3-1.5 s per image)")
@click.option("--output", type=click.Choice(["auto", "logits", "probabilities"]), default="auto", show_default=True,
              help="what the .tflite outputs (auto: logits for full-integer variants)")
@click.option("--out", "out_dir", type=click.Path(path_type=str), default=None,
              help="output folder [RUN_DIR/export]; built beside it and swapped in when every file is verified")
@click.option("--quiet", "-q", is_flag=True, help="no per-stage progress lines")
def export(model, all_, out_dir, quiet, sparsity, allocation, calib, calib_n, io_, allow_float_fallback, verify_n,
           steps, finetune_target, bias_correction, quantizer, ranges, max_flips, max_logit_noise, budget_n, guard_k,
           guard_max_flips, guard_max_latency, residual_weights, head_split, max_float_macs, weight_rounding, output, borderline_band, band_n, verify_arm, verify_arm_n,
           **flags):
    """Export MODEL (a run dir — trained, or made by `edgeretina import` — or a .keras file with config.json
    beside it) to .tflite variants.

    No variant flag: float32 + int8. Writes <name>_<variant>.tflite (config embedded as metadata) and
    manifest.json; every file is verified in LiteRT against the Keras model. The folder is replaced as a
    whole at the end: a failed or interrupted export leaves the previous one untouched.
    """
    sel = {k.removeprefix("flag_"): v for k, v in flags.items()}
    options = ExportOptions(
        variants=select_variants(**sel, all_=all_), io=io_, sparsity=sparsity, allocation=allocation,
        calib=calib, calib_n=calib_n, verify_n=verify_n, allow_float_fallback=allow_float_fallback, steps=steps,
        finetune_target=finetune_target, bias_correction=bias_correction, output=output, quantizer=quantizer,
        ranges=ranges, guard_k=guard_k, guard_max_flips=guard_max_flips, guard_max_latency=guard_max_latency, max_flips=max_flips, max_logit_noise=max_logit_noise, budget_n=budget_n,
        max_float_macs=max_float_macs, residual_weights=residual_weights, head_split=head_split, weight_rounding=weight_rounding, borderline_band=borderline_band, band_n=band_n,
        verify_arm=verify_arm, verify_arm_n=verify_arm_n)

    resolve_source(Path(model))  # missing file / not a model / no config → one-line error before any work
    names = " ".join(v.value for v in options.variants)
    click.echo(f"edgeretina export: {model} → {names}")
    report = export_model(model, out_dir=out_dir, options=options, on_result=lambda r: click.echo(r.line()),
                          progress=None if quiet else (lambda line: click.echo(f"  {line}")))
    band = report.borderline_band or {}
    if band.get("band") is not None:
        click.echo(f"borderline band: ±{band['band']:.3f} logit in every variant's metadata ({band.get('method')})")
    else:
        click.echo(f"borderline band: none ({band.get('note') or 'off'})")
    click.echo(f"manifest: {report.manifest_path} ({len(report.results)} variant(s), "
               f"{report.options['seconds']:.1f}s)")
