"""The tf.data input pipeline: parallel decode → cache → shuffle → augment → float steps → batch → prefetch.

- **decode + image steps** run in parallel (``num_parallel_calls=AUTOTUNE``; OpenCV releases the GIL) and
  produce uint8 images at the model's input size;
- **cache** keeps those decoded, preprocessed uint8 images (in memory, or in ``cache`` files when a path is
  given), so later epochs skip decoding;
- **shuffle** (seeded, reshuffled every epoch), **augmentation** (named policy from ``edgeretina.augment``,
  one seed per element per epoch drawn from ``Dataset.random(seed, rerandomize_each_iteration=True)`` —
  deterministic under ``seed`` and independent of thread scheduling), then the float steps (standardize,
  scale), batch and prefetch.
Elements are ``(x float32 (B, S, S, 3), y)`` with ``y`` int64 (B,) or float32 (B, L) (multi-label).
"""
from __future__ import annotations

import hashlib
import json
from typing import Iterable

import numpy as np

from edgeretina.augment import get_policy
from edgeretina.data.loading import load_image
from edgeretina.data.records import OnBadImage, Record, is_minority, labels_array
from edgeretina.errors import DataError
from edgeretina.preprocess import Pipeline
from edgeretina.tasks import TaskKind, TaskSpec


def _infer_spec_kind(recs: list[Record]) -> bool:
    return bool(recs) and isinstance(recs[0].y, (tuple, list))


def _cache_path(prefix: str, recs: list[Record], pipeline: Pipeline) -> str:
    """File-cache prefix made unique per (records, image steps): a stale cache is never reused."""
    h = hashlib.sha1(json.dumps([s.to_json() for s in pipeline.image_steps], sort_keys=True).encode())
    for r in recs:
        h.update(r.source.encode() + b"\0")
    return f"{prefix}.{h.hexdigest()[:12]}"


def make_tf_dataset(records: Iterable[Record], pipeline: Pipeline, batch_size: int = 32, shuffle: bool = False,
                    augment=None, seed: int = 0, *, spec: TaskSpec | None = None, cache: bool | str = True,
                    minority_only: bool | None = None, on_bad_image: str = "fail", drop_remainder: bool = False,
                    repeat: bool = False, parallel: int | None = None, with_keys: bool = False):
    """Build a ``tf.data.Dataset`` of ``(x, y)`` batches (``(x, y, index)`` with ``with_keys``).

    ``augment``: policy name/``Policy``/None (see ``edgeretina.augment``); ``minority_only`` restricts it to
    positive/unhealthy records. ``cache``: True (memory), a file path prefix (a hash of the records and image
    steps is appended, so a stale cache is never reused), or False. ``on_bad_image``:
    ``fail`` raises (``tf.errors`` wrapping the one-line DataError naming the file); ``skip`` drops images
    that fail to decode.
    """
    from edgeretina._keras import tf

    recs = list(records)
    if not recs:
        raise DataError("make_tf_dataset: no records")
    size = pipeline.input_size
    hw = pipeline.input_shape
    if size is None:
        raise DataError("make_tf_dataset: the pipeline has no 'resize' step, so images have no fixed size")
    policy = OnBadImage(on_bad_image)
    multilabel = spec.kind is TaskKind.MULTILABEL if spec is not None else _infer_spec_kind(recs)
    if spec is not None:
        y_all = labels_array(recs, spec)
    else:
        y_all = (np.asarray([list(r.y) for r in recs], np.float32) if multilabel
                 else np.asarray([int(r.y) for r in recs], np.int64))
    aug = get_policy(augment, minority_only)
    if aug is not None and aug.is_identity:
        aug = None
    if aug is not None and aug.minority_only:
        if spec is not None:
            do_aug = np.asarray([is_minority(r, spec) for r in recs], bool)
        else:  # no spec: minority = any non-zero label (class != 0, or any positive label)
            do_aug = np.asarray([any(v > 0.5 for v in r.y) if multilabel else int(r.y) != 0 for r in recs], bool)
    else:
        do_aug = np.ones(len(recs), bool)
    autotune = tf.data.AUTOTUNE if parallel is None else parallel

    def _decode(i):
        i = int(i)
        try:
            img = pipeline.apply_image(load_image(recs[i]))
        except DataError as e:
            if policy is OnBadImage.FAIL:
                raise
            return np.zeros((*hw, 3), np.uint8), False
        if img.shape != (*hw, 3):
            raise DataError(f"{recs[i].source}: pipeline output {img.shape} is not {(*hw, 3)}")
        return img, True

    def decode_fn(i):
        img, ok = tf.numpy_function(_decode, [i], [tf.uint8, tf.bool], stateful=False)
        img.set_shape((*hw, 3))
        ok.set_shape(())
        return i, img, ok

    ds = tf.data.Dataset.range(len(recs)).map(decode_fn, num_parallel_calls=autotune, deterministic=True)
    if policy is OnBadImage.SKIP:
        ds = ds.filter(lambda i, img, ok: ok)
    ds = ds.map(lambda i, img, ok: (i, img))
    if cache:
        ds = ds.cache(_cache_path(cache, recs, pipeline) if isinstance(cache, str) else "")
    if repeat:
        ds = ds.repeat()
    if shuffle:
        ds = ds.shuffle(min(len(recs), 10000), seed=seed, reshuffle_each_iteration=True)
    if aug is not None:
        rnd = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)
        ds = tf.data.Dataset.zip((ds, rnd))

        def _aug(i, img, r):
            i = int(i)
            if not do_aug[i]:
                return img
            return aug.apply(img, [int(r) & 0xFFFFFFFFFFFF, i])

        def aug_fn(elem, r):
            i, img = elem
            out = tf.numpy_function(_aug, [i, img, r], tf.uint8, stateful=False)
            out.set_shape((*hw, 3))
            return i, out

        ds = ds.map(aug_fn, num_parallel_calls=autotune, deterministic=True)
    y_const = tf.constant(y_all)

    def float_fn(i, img):
        x = tf.numpy_function(pipeline.apply_float, [img], tf.float32, stateful=False)
        x.set_shape((*hw, 3))
        y = tf.gather(y_const, i)
        return (x, y, i) if with_keys else (x, y)

    ds = ds.map(float_fn, num_parallel_calls=autotune, deterministic=True)
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    return ds.prefetch(tf.data.AUTOTUNE)
