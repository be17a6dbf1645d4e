"""DR 5-grade recipe study (issue 15, system 1): the DR ResNet study's axes on MobileNetV2-224, chosen by CV.

    python -m edgeretina.benchmarks.dr_grading_study [--data ../shared/data/aptos] [--work runs/dr_study]
        [--docs docs/benchmarks] [--enhance none,ben-graham] [--heads linear,gap,fc:16,fc:32,16] [--k 5]

The study compares frozen / partially unfrozen / fully unfrozen ResNets with FC heads ``[16, 5]`` and
``[32, 16, 5]`` (L1 + L2, dropout) and Gaussian-filter (Ben Graham) preprocessing. Offline only MobileNetV2 has
ImageNet weights here, so its axes run on MobileNetV2-224: preprocessing {none, Ben Graham} × head {linear
read-out fitted in closed form (L2 multinomial logistic regression, penalty by inner CV), GAP + softmax trained
by SGD, FC [16] and FC [32, 16] with L1 + L2 and dropout} on the frozen backbone, every arm scored by the same
content-hash-grouped 5-fold CV over the development split (train + val of the default 70/10/20 split; the test
split is never read here). The backbone pass runs once per preprocessing (features cached under ``--work``),
so every head arm costs seconds. ``--partial`` adds the partially unfrozen arm (the last inverted-residual
block and the head fine-tuned on cached activations) for the best frozen arm.

Writes ``<docs>/dr_grading_cv.md`` / ``.json``: every arm's pooled out-of-fold κ with a bootstrap 95 % CI, the
fold mean ± sd, accuracy, and the chosen arm (highest pooled κ) with the ``edgeretina train`` arguments that the
real-data table ``dr_grading_aptos_cv`` trains (``python -m edgeretina.benchmarks.real_data --only
dr_grading_aptos_cv``).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from edgeretina.data import open_dataset
from edgeretina.data.loading import load_arrays
from edgeretina.env import machine_info, machine_line
from edgeretina.io import ensure_writable_dir, write_json_atomic, write_text_atomic
from edgeretina.metrics import quadratic_kappa
from edgeretina.models import backbone_layers, build_model
from edgeretina.paths import REPO_ROOT, seed_keras_cache, shared_dir
from edgeretina.preprocess import Pipeline
from edgeretina.tasks import predicted_classes, task_spec
from edgeretina.train import features as F
from edgeretina.train.cv import cross_validate
from edgeretina.train.helpers import subsample
from edgeretina.train.linear_head import LinearHeadOptions, fit_linear_head
from edgeretina.train.loop import PhaseEnv, predict_fast
from edgeretina.train.losses import make_loss
from edgeretina.train.two_phase import Arrays, Trainee, TrainConfig, finetune, warmup

ENHANCE = ("none", "ben-graham")
HEADS = ("linear", "gap", "fc:16", "fc:32,16")
ARCH, SIZE = "mobilenetv2", 224
# The SGD heads' warm-up: the real-data grading tables' settings (benchmarks/real_data.py DR_GRADING_TRAIN).
SGD = TrainConfig(epochs_warmup=200, epochs_finetune=0, lr_warmup=1e-3, batch_size=32, patience=20, loss="ce")
CHUNK = 256
# The partially unfrozen arm: the last inverted-residual block (block_16), the 1x1 conv and the head fine-tune on
# cached activations entering block_16 (SGD momentum 0.9, lr 1e-4, early stopping), after the head's warm-up.
PARTIAL_FROM = "block_16_expand"
PARTIAL = SGD.with_(epochs_finetune=30, lr_finetune=1e-4, freeze=f"partial:{PARTIAL_FROM}")  # patience 20 too


@dataclass(frozen=True)
class Arm:
    enhance: str
    head: str
    freeze: str = "frozen"

    @property
    def name(self) -> str:
        return f"{self.enhance} · {self.head} · {self.freeze}"

    def train_args(self) -> tuple[str, ...]:
        """The ``edgeretina train`` arguments of this arm (frozen backbone, no fine-tune)."""
        head = "gap" if self.head == "linear" else self.head
        args = ("--arch", ARCH, "--weights", "imagenet", "--head", head)
        if self.head == "linear":
            args += ("--head-fit", "linear")
        else:
            args += ("--loss", "ce", "--epochs-warmup", "200", "--epochs-finetune", "0", "--patience", "20",
                     "--batch-size", "32")
        if self.freeze != "frozen":
            args = tuple("30" if a == "0" and args[i - 1] == "--epochs-finetune" else a for i, a in enumerate(args))
            args += ("--freeze", PARTIAL.freeze, "--lr-finetune", "1e-4")
        if self.enhance != "none":
            args += ("--enhance", self.enhance)
        return args + ("--cv", "5")


@dataclass(frozen=True)
class ArmResult:
    arm: Arm
    kappa: float
    kappa_ci: tuple[float, float]
    kappa_argmax: float
    fold_mean: float
    fold_sd: float
    accuracy: float
    per_class_recall: dict
    seconds: float


def pipeline_for(enhance: str) -> Pipeline:
    return Pipeline.default(SIZE, "tf", ben_graham=enhance == "ben-graham", clahe=enhance == "clahe")


def features(records, spec, enhance: str, work: Path, say) -> np.ndarray:
    """Pooled frozen-backbone features of ``records`` under ``enhance`` (cached in ``work``)."""
    cache = work / f"features_{enhance}.npz"
    keys = np.array([r.key for r in records])
    if cache.exists():
        z = np.load(cache)
        if np.array_equal(z["keys"], keys):
            return z["feats"]
    model = build_model(ARCH, spec, SIZE, "imagenet", "gap")
    fm = F.pooled_feature_model(model)
    pipe, out, t0 = pipeline_for(enhance), [], time.perf_counter()
    for i in range(0, len(records), CHUNK):
        x, _ = load_arrays(records[i:i + CHUNK], pipe, spec)
        out.append(F.compute(fm, x))
        done = i + len(x)
        eta = (time.perf_counter() - t0) / done * (len(records) - done)
        say(f"[features {enhance}] {done}/{len(records)} images (ETA {eta:.0f} s)")
    feats = np.concatenate(out)
    tmp = cache.with_suffix(".tmp.npz")
    np.savez(tmp, keys=keys, feats=feats)
    os.replace(tmp, cache)
    return feats


def cut_activations(records, spec, enhance: str, work: Path, say) -> np.ndarray:
    """Activations entering ``PARTIAL_FROM`` (ImageNet weights) for the partially unfrozen arm (cached)."""
    cache = work / f"cut_{PARTIAL_FROM}_{enhance}.npy"
    if cache.exists():
        return np.load(cache)
    model = build_model(ARCH, spec, SIZE, "imagenet", "gap")
    feat, _, _ = F.sub_model_from(model, _layer_index(model, PARTIAL_FROM))
    pipe, out, t0 = pipeline_for(enhance), [], time.perf_counter()
    for i in range(0, len(records), CHUNK):
        x, _ = load_arrays(records[i:i + CHUNK], pipe, spec)
        out.append(F.compute(feat, x))
        say(f"[activations {enhance}] {i + len(x)}/{len(records)} images ({time.perf_counter() - t0:.0f} s)")
    acts = np.concatenate(out)
    np.save(cache.with_suffix(".tmp.npy"), acts)
    os.replace(cache.with_suffix(".tmp.npy"), cache)
    return acts


def _layer_index(model, name: str) -> int:
    return next(i for i, layer in enumerate(backbone_layers(model)) if layer.name == name)


def partial_fitter(arm: Arm, spec, feats: np.ndarray, acts: np.ndarray, y: np.ndarray):
    """Warm-up of the head on pooled features, then block_16 + head fine-tuned on cached activations."""
    loss, cw = make_loss(SGD.loss, spec, None)

    def fit(tr, va, seed, tag):
        model = build_model(ARCH, spec, SIZE, "imagenet", arm.head)
        job = Trainee(model, spec, loss, cw, PhaseEnv())
        data = Arrays(None, y[tr], None, y[va])
        w = warmup(job, data, SGD.with_(seed=seed), features=(feats[tr], feats[va]))
        ft = finetune(job, data, PARTIAL.with_(seed=seed), partial_from=PARTIAL_FROM,
                      cut_features=lambda _feat: (acts[tr], acts[va]))
        _, sub, _ = F.sub_model_from(model, _layer_index(model, PARTIAL_FROM))
        return (lambda idx: predict_fast(sub, acts[idx])), {"warmup": int(w.best_epoch),
                                                             "finetune": int(ft.best_epoch)}

    return fit


def head_fitter(arm: Arm, spec, feats: np.ndarray, y: np.ndarray, records):
    """The ``fit(train_idx, val_idx, seed, tag)`` of :func:`cross_validate` for one frozen-backbone arm."""
    loss, cw = make_loss(SGD.loss, spec, None)

    def fit(tr, va, seed, tag):
        model = build_model(ARCH, spec, SIZE, None, "gap" if arm.head == "linear" else arm.head)
        head = F.head_model_of(model)
        if arm.head == "linear":
            idx = np.concatenate([tr, va])
            fit_linear_head(model, spec, feats[idx], y[idx], [records[i].group for i in idx],
                            LinearHeadOptions(seed=seed))
            best = {}
        else:
            job = Trainee(model, spec, loss, cw, PhaseEnv())
            res = warmup(job, Arrays(None, y[tr], None, y[va]), SGD.with_(seed=seed), features=(feats[tr], feats[va]))
            best = {"warmup": int(res.best_epoch)}
        return (lambda idx: predict_fast(head, feats[idx])), best

    return fit


def _saved(work: Path | None, arm: Arm, y, k: int) -> Path | None:
    """Where an arm's finished CV is kept (reused by a re-run with the same development set and K)."""
    if work is None:
        return None
    tag = f"{arm.enhance}_{arm.head.replace(':', '').replace(',', '-')}_{arm.freeze}_k{k}_n{len(y)}"
    return work / f"arm_{tag}.json"


def run_arm(arm: Arm, spec, fitter, y, records, k: int, say, work: Path | None = None) -> ArmResult:
    saved = _saved(work, arm, y, k)
    if saved is not None and saved.exists():
        d = json.loads(saved.read_text())
        out = ArmResult(**{**d, "arm": arm, "kappa_ci": tuple(d["kappa_ci"])})
        say(f"[{arm.name}] pooled OOF κ {out.kappa:.3f} (finished earlier: {saved.name})")
        return out
    t0 = time.perf_counter()
    res, oof = cross_validate(records, y, spec, fitter, k=k, seeds=(0,), log=say)
    print_fold_scores(res, say)
    kappa, ci = kappa_ci(y, predicted_classes(spec, oof), spec.n_outputs)
    kappa_argmax = quadratic_kappa(y, oof.argmax(1), spec.n_outputs)
    p = res.pooled
    out = ArmResult(arm, kappa, ci, kappa_argmax, res.mean, res.sd, float(p["accuracy"]), p["per_class_recall"],
                    round(time.perf_counter() - t0, 1))
    if saved is not None:
        np.savez(saved.with_suffix(".npz"), oof=oof, y=y)
        write_json_atomic(saved, {**asdict(out), "arm": asdict(arm)})
    say(f"[{arm.name}] pooled OOF κ {kappa:.3f} [{ci[0]:.3f}, {ci[1]:.3f}], folds {res.mean:.3f} ± {res.sd:.3f} "
        f"(argmax κ {kappa_argmax:.3f}; {out.seconds:.0f} s)")
    return out


def print_fold_scores(res, say) -> None:
    say("  folds: " + ", ".join(f"{f.score:.3f}" for f in res.folds))


def kappa_ci(y, pred, k: int, n_boot: int = 1000, seed: int = 0) -> tuple[float, tuple[float, float]]:
    rng = np.random.default_rng(seed)
    vals = [quadratic_kappa(y[i], pred[i], k) for i in (rng.integers(0, len(y), len(y)) for _ in range(n_boot))]
    return quadratic_kappa(y, pred, k), (float(np.percentile(vals, 2.5)), float(np.percentile(vals, 97.5)))


def choose(results: list[ArmResult]) -> ArmResult:
    """The highest pooled out-of-fold κ; ties (within 0.001) go to the simpler arm (earlier in the grid)."""
    top = max(r.kappa for r in results)
    return next(r for r in results if r.kappa >= top - 1e-3)


def _md(results: list[ArmResult], best: ArmResult, n_dev: int, k: int, machine: str, seconds: float) -> str:
    lines = ["# DR 5-grade recipe by cross-validation — APTOS-2019, MobileNetV2-224 (issue 15, system 1)", "",
             "Regenerate: `python -m edgeretina.benchmarks.dr_grading_study` (from the repository root, with "
             "`../shared` or `$EDGERETINA_SHARED`).", "",
             f"Machine: {machine}. Shared with other jobs (load 10–17 on 2 cores); each arm's CV seconds are in "
             f"the last column (an arm finished by an earlier run of the same command is reused, not re-run).", "",
             f"The DR ResNet study's axes on the only ImageNet backbone offline (MobileNetV2-224): preprocessing × "
             f"head on the frozen backbone, each arm scored by the same content-hash-grouped {k}-fold CV over the "
             f"{n_dev} development images (train + val of the default 70/10/20 split). **The test split is not "
             f"read**; the chosen arm is trained and scored once by `python -m edgeretina.benchmarks.real_data "
             f"--only dr_grading_aptos_cv`. κ: quadratic weighted κ of the pooled out-of-fold predicted grades — "
             f"the expected grade Σ k·p_k rounded, the toolkit's rule for ordinal grades "
             f"(`edgeretina.tasks.predicted_classes`) — with a 95 % CI by 1,000 bootstrap resamples of the images; "
             f"the argmax column is the same out-of-fold probabilities decided by argmax (the rule before).", "",
             "| preprocessing | head | backbone | pooled OOF κ [95 % CI] | argmax κ | fold κ mean ± sd | accuracy | "
             "recall no DR / mild / moderate / severe / PDR | CV s |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        rec = " / ".join(f"{v:.2f}" for v in r.per_class_recall.values())
        mark = " **← chosen**" if r is best else ""
        lines.append(f"| {r.arm.enhance} | {r.arm.head} | {r.arm.freeze} | {r.kappa:.3f} [{r.kappa_ci[0]:.3f}, "
                     f"{r.kappa_ci[1]:.3f}]{mark} | {r.kappa_argmax:.3f} | {r.fold_mean:.3f} ± {r.fold_sd:.3f} | {r.accuracy:.3f} | {rec} | "
                     f"{r.seconds:.0f} |")
    lines += ["", "Heads: `linear` = multinomial L2 logistic regression on the standardised pooled features, "
              "penalty by inner grouped CV, folded into the GAP + softmax head (`--head-fit linear`); `gap` = the "
              "same head trained by SGD (momentum 0.9, lr 1e-3, batch 32, early stopping on the inner validation "
              "fold, plain cross-entropy); `fc:16`, `fc:32,16` = the study's FC heads (L1 1e-5 + L2 1e-4, "
              "dropout 0.5) trained the same way. Ben Graham = `w·x − w·GaussianBlur(x, σ = size/60) + 128` on "
              "the resized fundus (the study's Gaussian filter; `--enhance ben-graham`).", "",
              f"Chosen: **{best.arm.name}** — `edgeretina train --data ../shared/data/aptos --task dr "
              f"{' '.join(best.arm.train_args())}`.", ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m edgeretina.benchmarks.dr_grading_study", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=None, help="APTOS-2019 folder (default: <shared>/data/aptos)")
    ap.add_argument("--work", default="runs/dr_study")
    ap.add_argument("--docs", default=str(REPO_ROOT / "docs" / "benchmarks"))
    ap.add_argument("--enhance", default=",".join(ENHANCE))
    ap.add_argument("--heads", default=",".join(HEADS), help="linear,gap,fc:16,fc:32,16 (';' between fc heads "
                    "is not needed: fc:32,16 is read as one head)")
    ap.add_argument("--k", type=int, default=5)
    ap.add_argument("--max-dev", type=int, default=None, help="at most N development images (a quick check; "
                    "the published page uses all)")
    ap.add_argument("--partial", action="store_true", help="add the partially unfrozen arm (block_16 + head "
                    "fine-tuned on cached activations) for the best frozen SGD-trained head")
    a = ap.parse_args(argv)
    t0 = time.perf_counter()
    say = lambda m: print(m, flush=True)  # noqa: E731
    work = ensure_writable_dir(Path(a.work))
    seed_keras_cache()
    spec = task_spec("dr")
    ds = open_dataset(a.data or shared_dir() / "data" / "aptos", "dr")
    parts = ds.split(None, seed=0)
    records = subsample(parts["train"] + parts["val"], a.max_dev, spec)
    y = np.array([int(r.y) for r in records])
    arms = [Arm(e, h) for e in a.enhance.split(",") for h in parse_heads(a.heads)]
    results = []
    for enhance in dict.fromkeys(x.enhance for x in arms):
        feats = features(records, spec, enhance, work, say)
        for arm in (x for x in arms if x.enhance == enhance):
            results.append(run_arm(arm, spec, head_fitter(arm, spec, feats, y, records), y, records, a.k, say, work))
    best = choose(results)
    sgd = [r for r in results if r.arm.head != "linear"]
    if a.partial and sgd:
        top = choose(sgd).arm
        arm = Arm(top.enhance, top.head, "partial")
        acts = cut_activations(records, spec, arm.enhance, work, say)
        feats = features(records, spec, arm.enhance, work, say)
        results.append(run_arm(arm, spec, partial_fitter(arm, spec, feats, acts, y), y, records, a.k, say, work))
        best = choose(results)
    seconds = time.perf_counter() - t0
    machine = machine_line(machine_info())
    docs = ensure_writable_dir(Path(a.docs))
    write_text_atomic(docs / "dr_grading_cv.md", _md(results, best, len(records), a.k, machine, seconds))
    write_json_atomic(docs / "dr_grading_cv.json", {
        "n_dev": len(records), "k": a.k, "machine": machine, "seconds": round(seconds, 1),
        "arms": [{**asdict(r), "arm": asdict(r.arm), "name": r.arm.name} for r in results],
        "chosen": best.arm.name, "train_args": list(best.arm.train_args())})
    say(f"chosen: {best.arm.name} (pooled OOF κ {best.kappa:.3f}); wrote {docs / 'dr_grading_cv.md'}")
    return 0


def parse_heads(text: str) -> list[str]:
    """``linear,gap,fc:16,fc:32,16`` → [linear, gap, fc:16, fc:32,16]: numbers join the fc head before them."""
    out: list[str] = []
    for tok in (t.strip() for t in text.split(",") if t.strip()):
        if tok.isdigit() and out and out[-1].startswith("fc:"):
            out[-1] += "," + tok
        else:
            out.append(tok)
    return out


if __name__ == "__main__":
    sys.exit(main())
