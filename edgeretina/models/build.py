"""``build_model``: backbone + head as one flat functional graph.

Flat means ``Model(inp, head(backbone_layers(inp)))`` — the application's layers are layers of the
returned model, never one nested sub-model — because quantization-aware training (tfmot) rejects nested
models. The input tensor is the Pipeline output (scaling done outside the graph).
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from edgeretina.errors import ModelError
from edgeretina.models.backbones import Backbone, get_backbone
from edgeretina.models.heads import HeadSpec, apply_head
from edgeretina.paths import keras_cache_dir, seed_keras_cache
from edgeretina.tasks import TaskSpec, task_spec

_MNV2_SIZES = (96, 128, 160, 192, 224)


def _resolve_spec(spec) -> TaskSpec:
    return spec if isinstance(spec, TaskSpec) else task_spec(spec)


def normalize_weights(weights) -> str | None:
    """``None``/``"none"`` → None, ``"imagenet"`` → ``"imagenet"``, anything else → an existing file path."""
    if weights is None or str(weights).lower() in ("", "none", "random"):
        return None
    if str(weights).lower() == "imagenet":
        return "imagenet"
    p = Path(weights)
    if not p.is_file():
        raise ModelError(f"{p}: weights file not found (use 'imagenet', 'none' or a local .h5 file)")
    if p.suffix.lower() not in (".h5", ".hdf5"):
        raise ModelError(f"{p}: weights must be a Keras .h5 weights file (got '{p.suffix}')")
    return str(p)


def _mnv2_fallback(size: int, alpha: float) -> Path | None:
    """MobileNetV2 ImageNet weights for a size with no cached file: use the cached 224 file of the same
    alpha (convolution weights do not depend on the input size). None when Keras can find its own file."""
    rows = size if size in _MNV2_SIZES else 224
    stem = f"mobilenet_v2_weights_tf_dim_ordering_tf_kernels_{float(alpha)}_{{}}_no_top.h5"
    cache = keras_cache_dir()
    if (cache / stem.format(rows)).is_file():
        return None
    fallback = cache / stem.format(224)
    if rows != 224 and fallback.is_file():
        warnings.warn(f"no cached MobileNetV2 ImageNet weights for {rows} px; using {fallback.name} "
                      "(convolution weights are size-independent)", stacklevel=3)
        return fallback
    return None


def _strip_layers(app, prefixes: tuple[str, ...]):
    """Rebuild a functional application without the in-graph scaling layers whose names start with
    ``prefixes`` (each has a single input; consumers are rewired to that input), copying weights."""
    from edgeretina._keras import keras

    cfg = app.get_config()
    drop = {}
    for layer in cfg["layers"]:
        if layer["name"].startswith(prefixes):
            inbound = layer["inbound_nodes"][0]
            src = inbound[0] if isinstance(inbound, list) else inbound["args"][0]["config"]["keras_history"]
            drop[layer["name"]] = src
    if not drop:
        return app

    def resolve(name, idx, t_idx):
        while name in drop:
            src = drop[name]
            name, idx, t_idx = src[0], src[1], src[2]
        return name, idx, t_idx

    layers = []
    for layer in cfg["layers"]:
        if layer["name"] in drop:
            continue
        nodes = []
        for node in layer["inbound_nodes"]:
            new_node = []
            for ref in node:
                n, i, t = resolve(ref[0], ref[1], ref[2])
                new_node.append([n, i, t] + list(ref[3:]))
            nodes.append(new_node)
        layer["inbound_nodes"] = nodes
        layers.append(layer)
    cfg["layers"] = layers
    cfg["output_layers"] = [list(resolve(*o)) for o in cfg["output_layers"]]
    new = keras.Model.from_config(cfg)
    for layer in new.layers:
        w = app.get_layer(layer.name).get_weights()
        if w:
            layer.set_weights(w)
    return new


def build_backbone(arch: str | Backbone, input_size: int | None = None, weights=None, **arch_options):
    """The application without top (``include_top=False``), weights loaded; its input is (S, S, 3)."""
    from edgeretina._keras import keras

    bb = arch if isinstance(arch, Backbone) else get_backbone(arch)
    size = int(input_size or bb.default_size)
    if size < bb.min_size:
        raise ModelError(f"input size {size} is below {bb.keras_name}'s minimum of {bb.min_size} px")
    bad = sorted(set(arch_options) - set(bb.options))
    if bad:
        allowed = ", ".join(bb.options) or "none"
        raise ModelError(f"{bb.keras_name} does not take option(s) {', '.join(bad)} (allowed: {allowed})")
    w = normalize_weights(weights)
    ctor = getattr(keras.applications, bb.keras_name)
    kwargs: dict[str, Any] = dict(include_top=False, input_shape=(size, size, 3), **bb.fixed_kwargs,
                                  **arch_options)
    load_file = w if (w and w != "imagenet") else None
    keras_weights = "imagenet" if w == "imagenet" else None
    if w == "imagenet":
        seed_keras_cache()
        if bb.name == "mobilenetv2":
            fb = _mnv2_fallback(size, float(arch_options.get("alpha", 1.0)))
            if fb is not None:
                keras_weights, load_file = None, str(fb)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*input_shape.*")
            app = ctor(weights=keras_weights, **kwargs)
    except ValueError as e:
        raise ModelError(f"{bb.keras_name} at {size} px: {str(e).splitlines()[0]}") from None
    except Exception as e:  # download failure (offline) and the like
        raise ModelError(f"{bb.keras_name}: could not get ImageNet weights ({type(e).__name__}: "
                         f"{str(e).splitlines()[0] if str(e) else ''}); pass a local .h5 file with --weights")
    if load_file:
        try:
            app.load_weights(load_file)
        except Exception as e:
            msg = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise ModelError(f"{load_file}: not {bb.keras_name} (no-top) weights ({msg})") from None
    if bb.strip_prefixes:
        app = _strip_layers(app, bb.strip_prefixes)
    return app


def _branch(app, tensor, prefix: str):
    """The application's layers re-created (renamed with ``prefix``, weights copied) and applied to
    ``tensor`` as layers of the outer graph — flat, because tfmot rejects nested models. Walks the
    functional config (its layers are in topological order) instead of ``clone_model``, which cannot
    rename layers."""
    cfg = app.get_config()
    made: dict[str, Any] = {}
    for layer_cfg in cfg["layers"]:
        name = layer_cfg["name"]
        if layer_cfg["class_name"] == "InputLayer":
            made[name] = tensor
            continue
        nodes = layer_cfg["inbound_nodes"]
        if len(nodes) != 1:
            raise ModelError(f"{app.name}: layer {name} is shared; the two-view input needs a plain backbone")
        args = [made[ref[0]] for ref in nodes[0]]
        src = app.get_layer(name)
        new = src.__class__.from_config({**src.get_config(), "name": prefix + name})
        made[name] = new(args[0] if len(args) == 1 else args)
        w = src.get_weights()
        if w:
            new.set_weights(w)
    (out_name, _, _), = cfg["output_layers"]
    return made[out_name]


def _two_view_features(bb, size: int, weights, arch_options: dict):
    """Input (S, 2S, 3) = [whole fundus | ONH crop] → two backbone branches (same starting weights; the
    right one's layers prefixed ``onh_``), each view pooled apart → 2 × C features named ``head_gap`` (like
    the plain GAP, so the feature cache and the linear head treat both alike). Separate branches keep the
    views from leaking into each other's receptive fields (one pass over the side-by-side image would)."""
    from edgeretina._keras import keras

    app = build_backbone(bb, size, weights, **arch_options)
    inp = keras.Input((size, 2 * size, 3), name="two_view_input")
    left = keras.layers.Cropping2D(((0, 0), (0, size)), name="view_full")(inp)
    right = keras.layers.Cropping2D(((0, 0), (size, 0)), name="view_onh")(inp)
    gl = keras.layers.GlobalAveragePooling2D(name="head_gap_full")(_branch(app, left, ""))
    gr = keras.layers.GlobalAveragePooling2D(name="head_gap_onh")(_branch(app, right, "onh_"))
    return inp, keras.layers.Concatenate(name="head_gap")([gl, gr])


def _mid_pooled(bb, app, mid_pool: str):
    """``head_gap`` = [GAP of the last feature map | GAP of each mid-depth map in ``mid_pool``] (a layer name,
    ``auto`` = the backbone's ``mid_tap``, or several of them comma-separated, shallow or deep in any order): a
    linear read-out of several depths (mid-level features transfer better to fundus lesions than the
    ImageNet-specific last block alone). Returns (pooled tensor, the layer names joined by commas)."""
    from edgeretina._keras import keras

    names = []
    for item in str(mid_pool).split(","):
        item = item.strip()
        name = bb.mid_tap if item == "auto" else item
        if not item:
            raise ModelError(f"--mid-pool: empty layer name in '{mid_pool}'")
        if not name:
            raise ModelError(f"--mid-pool auto: {bb.keras_name} has no default mid-depth layer; name one")
        if name in names:
            raise ModelError(f"--mid-pool: layer '{name}' is named twice")
        names.append(name)
    pooled = [keras.layers.GlobalAveragePooling2D(name="head_gap_final")(app.output)]
    for i, name in enumerate(names):
        try:
            mid = app.get_layer(name).output
        except ValueError:
            raise ModelError(f"--mid-pool: {bb.keras_name} has no layer named '{name}'") from None
        if len(mid.shape) != 4:
            raise ModelError(f"--mid-pool: layer '{name}' is not a feature map (shape {tuple(mid.shape)})")
        if mid is app.output:
            raise ModelError(f"--mid-pool: layer '{name}' is the last feature map, already pooled")
        pooled.append(keras.layers.GlobalAveragePooling2D(name="head_gap_mid" + (f"_{i + 1}" if i else ""))(mid))
    return keras.layers.Concatenate(name="head_gap")(pooled), ",".join(names)


def build_model(arch: str, spec, input_size: int | None = None, weights=None, head=None, *, two_view: bool = False,
                mid_pool: str | None = None, **arch_options):
    """Backbone + head as one flat Keras model outputting probabilities.

    ``spec``: a :class:`TaskSpec` or task name. ``weights``: ``"imagenet"`` (Keras download/cache; the
    cache is seeded from ``shared/weights`` first), a local ``.h5`` no-top weights file, or ``None``.
    ``head``: ``None`` (task default), ``"gap"``, ``"fc:32,16"``, ``"multitask"``, a dict or a HeadSpec.
    ``arch_options``: e.g. ``alpha=0.35`` for MobileNets. ``two_view``: the input is the ``two_view``
    preprocessing step's S × 2S image (whole fundus | ONH crop), read by two backbone branches. ``mid_pool``:
    backbone layers (comma-separated; ``auto``: the registry's ``mid_tap``) pooled beside the last feature map
    (:func:`_mid_pooled`).
    The model carries ``model.edgeretina`` (arch, input_size, weights, head, scaling) for the run config.
    """
    from edgeretina._keras import keras

    spec = _resolve_spec(spec)
    bb = get_backbone(arch)
    h = HeadSpec.parse(head, spec)
    size = int(input_size or bb.default_size)
    mid_layer = None
    if two_view and mid_pool:
        raise ModelError("--mid-pool does not combine with the two-view input")
    if two_view:
        inp, pooled = _two_view_features(bb, size, weights, arch_options)
    else:
        app = build_backbone(bb, size, weights, **arch_options)
        if mid_pool:
            (pooled, mid_layer), inp = _mid_pooled(bb, app, mid_pool), app.input
        else:
            inp, pooled = app.input, keras.layers.GlobalAveragePooling2D(name="head_gap")(app.output)
    out = apply_head(pooled, spec, h)
    model = keras.Model(inp, out, name=f"{bb.name}_{spec.task.value}".replace("-", "_"))
    w = normalize_weights(weights)
    # plain attribute (bypasses Keras attribute tracking, which would wrap the dict)
    model.__dict__["edgeretina"] = {
        "arch": bb.name,
        "input_size": int(input_size or bb.default_size),
        "weights": w if w in (None, "imagenet") else Path(w).name,
        "head": h.to_dict(),
        "scaling": bb.scaling.value,
        "arch_options": dict(arch_options),
        **({"two_view": True} if two_view else {}),
        **({"mid_pool": mid_layer} if mid_layer else {}),
    }
    return model


def backbone_layers(model) -> list:
    """The model's backbone layers in graph order (everything that is not an input or a ``head_`` layer)."""
    from edgeretina._keras import keras

    return [l for l in model.layers
            if not l.name.startswith("head_") and not isinstance(l, keras.layers.InputLayer)]


def head_layers(model) -> list:
    return [l for l in model.layers if l.name.startswith("head_")]
