"""Anti-aliasing a frozen ImageNet MobileNetV2 without retraining (issue 18): ``python -m
edgeretina.benchmarks.antialias_probe [--modes base,pre,post]``.

MobileNetV2's five stride-2 layers alias, so a 1-2 px move or a JPEG re-save of a photo changes the pooled features.
Each mode rebuilds the frozen backbone — ``base``: unchanged; ``pre``: a 3×3 binomial blur before every stride-2
conv; ``post``: every stride-2 conv at stride 1, its BatchNorm + ReLU6, then blur + subsample (BlurPool, Zhang
2019) — and fits the multinomial logistic head (C by the inner validation fold) by the 5-fold content-hash-grouped
CV of the APTOS development images (train + val; the test split is not loaded). Printed per mode: pooled
out-of-fold κ (expected grade, rounded), referable AUROC, share within ±0.25 logit of the referral threshold, and
the referral flips and logit-change sd under JPEG-95, 1-px and 2-px (``edgeretina.shifts.apply_benign``, seeded
per image). Features are cached under ``runs/antialias_probe/``. ~4 min per mode on the 2-core VM.
"""
import os, sys, time
import numpy as np
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
from edgeretina._keras import keras
import tensorflow as tf
from concurrent.futures import ThreadPoolExecutor
from edgeretina.data import open_dataset
from edgeretina.data.loading import load_image
from edgeretina.preprocess import Pipeline
from edgeretina.models.build import build_model
from edgeretina.train import features as F
from edgeretina.train.cv import fold_indices
from edgeretina.shifts import apply_benign
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import cohen_kappa_score, roc_auc_score

import argparse
from edgeretina.paths import shared_dir

def blur_kernel(ch, n=3):
    k1 = {3: [1, 2, 1], 5: [1, 4, 6, 4, 1]}[n]
    k = np.outer(k1, k1).astype(np.float32); k /= k.sum()
    return np.tile(k[:, :, None, None], (1, 1, ch, 1))

class Blur(keras.layers.Layer):
    def __init__(self, n=3, stride=1, offset=0, **kw):
        super().__init__(**kw); self.n, self.stride, self.offset = n, stride, offset
    def build(self, s):
        self.k = tf.constant(blur_kernel(int(s[-1]), self.n))
    def call(self, x):
        y = tf.nn.depthwise_conv2d(x, self.k, [1, 1, 1, 1], "SAME")
        if self.stride > 1:
            y = y[:, self.offset::self.stride, self.offset::self.stride, :]
        return y

def antialias(model, mode, n=3):
    """clone the flat functional model; mode 'pre': blur before each stride-2 conv; 'post': conv at stride 1,
    its BN + ReLU, then blur + subsample (Zhang 2019)"""
    strided = {l.name for l in model.layers if getattr(l, "strides", (1, 1)) == (2, 2)}
    out = {}; pending_pool = set()
    inp = keras.Input(model.input.shape[1:])
    out[model.layers[0].name] = inp
    for l in model.layers[1:]:
        ib = l.inbound_nodes[0].inbound_layers
        ib = ib if isinstance(ib, list) else [ib]
        xs = [out[p.name] for p in ib]
        x = xs[0] if len(xs) == 1 else xs
        if isinstance(l, keras.layers.ZeroPadding2D) and mode == "post":
            out[l.name] = x; continue
        if l.name in strided:
            cfg = l.get_config()
            if mode == "pre":
                x = Blur(n, name=l.name + "_aa")(x); y = l(x)
            else:
                cfg.update(strides=(1, 1), padding="same"); nl = l.__class__.from_config(cfg)
                y = nl(x); nl.set_weights(l.get_weights()); pending_pool.add(l.name)
            out[l.name] = y; continue
        y = l(x)
        if mode == "post" and isinstance(l, keras.layers.ReLU) and ib[0].inbound_nodes[0].inbound_layers.name in pending_pool:
            y = Blur(n, stride=2, offset=1, name=l.name + "_aa")(y)
        out[l.name] = y
    return keras.Model(inp, out[model.layers[-1].name])


def main(argv=None):

    _ap = argparse.ArgumentParser(prog="python -m edgeretina.benchmarks.antialias_probe")
    _ap.add_argument("--modes", default="base,pre,post", help="comma-separated: base, pre, post (post5 / pre5: 5x5 blur)")
    _ap.add_argument("--data", default=None, help="APTOS dataset [../shared/data/aptos]")
    A = _ap.parse_args(argv)
    MODES = A.modes.split(",")
    PERT = ("jpeg-95", "shift-1px", "shift-2px")
    log = lambda s: print(time.strftime("%H:%M:%S"), s, flush=True)


    ds = open_dataset(A.data or str(shared_dir() / "data" / "aptos"), "dr"); spec = ds.spec
    parts = ds.split(None, seed=0); dev = parts["train"] + parts["val"]
    pipe = Pipeline.default(224, "tf")
    y = np.array([int(np.argmax(r.y)) if np.ndim(r.y) else int(r.y) for r in dev])
    with ThreadPoolExecutor(2) as ex:
        raw = list(ex.map(lambda r: load_image(r), dev))
    log(f"{len(raw)} dev images")
    X = {"orig": np.stack([pipe.apply(im) for im in raw])}
    for b in PERT:
        X[b] = np.stack([pipe.apply(apply_benign(im, b, seed=i)) for i, im in enumerate(raw)])
    log("inputs ready")
    base = build_model("mobilenetv2", spec, 224, "imagenet", "gap")
    pool = F.pooled_feature_model(base)

    def refer_logit(p):
        p = np.clip(p, 1e-7, 1); return np.log(p[:, 2:].sum(1)) - np.log(p[:, :2].sum(1))

    for mode in MODES:
        os.makedirs("runs/antialias_probe", exist_ok=True)
        cache = f"runs/antialias_probe/{mode}.npz"
        if os.path.exists(cache):
            Fz = dict(np.load(cache))
        else:
            m = pool if mode == "base" else antialias(pool, mode.rstrip("5"), 5 if mode.endswith("5") else 3)
            t = time.time(); Fz = {k: F.compute(m, v) for k, v in X.items()}
            log(f"{mode}: features {time.time()-t:.0f}s"); np.savez(cache, **Fz)
        oof = {k: np.zeros((len(dev), 5)) for k in Fz}
        for fold in range(5):
            fi = fold_indices(dev, spec, 5, fold, 0); tr, va, ev = fi["train"], fi["val"], fi["eval"]
            A = Fz["orig"]; mu, sd = A[tr].mean(0), A[tr].std(0) + 1e-6
            best = None
            for C in (1e-3, 3e-3, 1e-2):
                clf = LogisticRegression(C=C, max_iter=1000).fit((A[tr] - mu) / sd, y[tr])
                pv = clf.predict_proba((A[va] - mu) / sd)
                k = cohen_kappa_score(y[va], np.rint(pv @ np.arange(5)).astype(int), weights="quadratic")
                if best is None or k > best[0]: best = (k, C, clf)
            clf = best[2]
            for kk in Fz:
                oof[kk][ev] = clf.predict_proba((Fz[kk][ev] - mu) / sd)
        p = oof["orig"]; r0 = refer_logit(p)
        kap = cohen_kappa_score(y, np.rint(p @ np.arange(5)).astype(int), weights="quadratic")
        auc = roc_auc_score(y >= 2, r0)
        s = f"{mode}: OOF kappa {kap:.4f} refAUROC {auc:.4f} near±0.25 {100*np.mean(abs(r0)<0.25):.1f}% |"
        for b in PERT:
            r = refer_logit(oof[b]); s += f" {b} {100*np.mean((r>=0)!=(r0>=0)):.2f}% sd {np.std(r-r0):.3f};"
        log(s)


if __name__ == "__main__":
    main()
