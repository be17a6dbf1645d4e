"""Procedural colour-fundus generator: the embedded default data set (no files, no network).

Each image is drawn from a small anatomical model of a 45° fundus photograph:

- a circular field of view (black outside) with vignetting and uneven illumination,
- an orange-red background with low-frequency choroidal texture,
- a darker macula with a small foveal reflex, about 2.3 (2.1–2.5) disc diameters temporal to the disc,
- an optic disc (bright, yellowish, slightly taller than wide) with a paler central cup,
- branching vessels that emerge from the disc: superior/inferior temporal arcades that curve around the
  macula and nasal branches, tapering as they branch, veins darker and wider than arteries,
- random eye (left/right), position, illumination, colour, blur and sensor noise.

The label is **glaucoma** (1) versus **normal** (0). The glaucoma signal is the physiological one: a larger
*vertical* cup-to-disc ratio (CDR) and hence a thinner superior/inferior neuro-retinal rim. The CDR
distributions overlap a little (normal ≈ 0.15–0.55, glaucoma ≈ 0.48–0.88), so the task is learnable but not
trivial. Everything is deterministic by ``seed``; image ``i`` of a seed does not depend on ``n``.

>>> images, labels, info = generate(8, seed=0, size=128)
>>> images.shape, images.dtype, labels.tolist().count(1)
((8, 128, 128, 3), dtype('uint8'), 4)
"""
from __future__ import annotations

import math

import cv2
import numpy as np

__all__ = ["generate", "render_fundus", "CDR_NORMAL", "CDR_GLAUCOMA"]

# (mean, sd, low, high) of the vertical cup-to-disc ratio per class (clipped normal).
CDR_NORMAL = (0.33, 0.085, 0.15, 0.55)
CDR_GLAUCOMA = (0.68, 0.085, 0.48, 0.88)

_CACHE: dict[tuple, tuple] = {}  # the most recently generated set, returned as copies
_CACHE_MAX_BYTES = 256 << 20
_SS = 2  # vessels are drawn at this supersampling factor, then area-downsampled (sub-pixel widths)


def generate(n: int, seed: int = 0, size: int = 256, glaucoma_fraction: float = 0.5):
    """Draw ``n`` synthetic fundus photographs.

    Returns ``(images, labels, info)``: ``images`` uint8 ``(n, size, size, 3)`` RGB, ``labels`` int64 ``(n,)``
    (0 normal, 1 glaucoma; exactly ``round(n * glaucoma_fraction)`` glaucoma, in shuffled order) and ``info``,
    one dict per image with the ground truth it was drawn from (``cdr`` = vertical CDR, ``hcdr``,
    ``disc_center`` (x, y) and ``disc_radius`` in pixels, ``macula_center``, ``eye``, ``fov_center``,
    ``fov_radius``, ...).
    """
    n = int(n)
    size = int(size)
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if size < 32:
        raise ValueError(f"size must be >= 32 pixels, got {size}")
    if not 0.0 <= glaucoma_fraction <= 1.0:
        raise ValueError(f"glaucoma_fraction must be in [0, 1], got {glaucoma_fraction}")
    key = (n, int(seed), size, float(glaucoma_fraction))
    if key in _CACHE:  # the demo opens the same set for training, int8 calibration and benchmarking
        images, labels, info = _CACHE[key]
        return images.copy(), labels.copy(), [dict(m) for m in info]
    n_glaucoma = int(round(n * glaucoma_fraction))
    labels = np.zeros(n, dtype=np.int64)
    labels[:n_glaucoma] = 1
    labels = np.random.default_rng([int(seed), 0x5EED]).permutation(labels)
    images = np.empty((n, size, size, 3), dtype=np.uint8)
    info = []
    for i in range(n):
        rng = np.random.default_rng([int(seed), i])
        images[i], meta = render_fundus(rng, bool(labels[i]), size)
        info.append(meta)
    if images.nbytes <= _CACHE_MAX_BYTES:
        _CACHE.clear()  # keep only the most recent set
        _CACHE[key] = (images.copy(), labels.copy(), [dict(m) for m in info])
    return images, labels, info


def _clipped_normal(rng, mean, sd, lo, hi):
    return float(np.clip(rng.normal(mean, sd), lo, hi))


def _window(cx: float, cy: float, half: float, S: int) -> tuple[slice, slice]:
    """(rows, cols) slices of the square of half-size ``half`` around (cx, cy), clipped to the image."""
    h = int(math.ceil(half))
    x0, y0 = max(0, int(cx) - h), max(0, int(cy) - h)
    return slice(y0, max(y0, min(S, int(cy) + h + 1))), slice(x0, max(x0, min(S, int(cx) + h + 1)))


def _smooth_noise(rng, size: int, cells: int) -> np.ndarray:
    """Low-frequency noise in about [-1, 1]: a ``cells``×``cells`` random grid, bicubically upsampled."""
    g = rng.standard_normal((cells, cells)).astype(np.float32)
    return cv2.resize(g, (size, size), interpolation=cv2.INTER_CUBIC)


def render_fundus(rng: np.random.Generator, glaucoma: bool, size: int = 256):
    """Render one fundus photograph; returns ``(rgb uint8 (size, size, 3), info dict)``."""
    S = size
    f32 = np.float32

    # --- geometry (plain Python floats keep the pixel maps float32) ---------------------------------
    fcx, fcy = S / 2 + rng.normal(0, 0.015 * S), S / 2 + rng.normal(0, 0.015 * S)
    fov_r = S * rng.uniform(0.455, 0.49)
    eye = "OD" if rng.random() < 0.5 else "OS"
    temporal = -1.0 if eye == "OD" else 1.0  # OD: disc on the right of the image, macula to its left
    disc_r = S * rng.uniform(0.056, 0.072)  # horizontal radius
    disc_ry = disc_r * rng.uniform(1.04, 1.14)  # discs are slightly taller than wide
    mcx = fcx + temporal * rng.uniform(0.03, 0.07) * S  # the camera centres between fovea and disc
    mcy = fcy + rng.normal(0, 0.03 * S)
    dd = 2 * disc_r
    dist = dd * rng.uniform(2.1, 2.5)  # fovea-disc distance ~2.3 disc diameters
    dcx, dcy = mcx - temporal * dist, mcy + rng.normal(-0.1, 0.15) * dd

    if glaucoma:
        vcdr = _clipped_normal(rng, *CDR_GLAUCOMA)
        hcdr = vcdr * rng.uniform(0.72, 0.9)  # vertical elongation of the cup: rim thins top and bottom
    else:
        vcdr = _clipped_normal(rng, *CDR_NORMAL)
        hcdr = min(vcdr * rng.uniform(0.92, 1.12), 0.6)
    ccx = dcx + temporal * disc_r * rng.uniform(0.0, 0.15)
    ccy = dcy + rng.normal(0, 0.04) * disc_ry
    cup_rx, cup_ry = hcdr * disc_r, vcdr * disc_ry
    fov_c, mac_c, disc_c = (fcx, fcy), (mcx, mcy), (dcx, dcy)

    # Pixel maps are (S, S) float32; features that only touch a small area (macula, disc) are computed in a
    # window around them, and per-pixel gains are combined before touching the (S, S, 3) image.
    x = np.arange(S, dtype=f32)[None, :]
    y = np.arange(S, dtype=f32)[:, None]
    r_px = np.hypot(x - fcx, y - fcy)
    r_fov = r_px / fov_r

    # --- background: orange-red with choroidal texture, warmer and slightly darker posterior pole -----
    base = np.array([rng.uniform(185, 225), rng.uniform(75, 115), rng.uniform(25, 50)], dtype=f32)
    tex_lo = _smooth_noise(rng, S, 5)
    tex_mid = _smooth_noise(rng, S, 16)
    shade = (1.0 + 0.07 * tex_lo + 0.03 * tex_mid) * (1.0 - 0.08 * (1.0 - np.minimum(r_fov, 1.0)) ** 2)
    img = shade[..., None] * base

    # --- macula: darker, browner, with a tiny foveal reflex ---------------------------------------
    mac_sigma = disc_r * rng.uniform(1.3, 1.8)
    ys, xs = _window(mcx, mcy, 3.5 * mac_sigma, S)
    d2m = ((x[:, xs] - mcx) ** 2 + (y[ys] - mcy) ** 2) * (1.0 / (2 * mac_sigma**2))
    strength = rng.uniform(0.3, 0.45)
    reflex = rng.uniform(8, 25)
    win = img[ys, xs]
    win *= 1.0 - (strength * np.exp(-d2m))[..., None] * np.array([0.8, 1.0, 1.0], dtype=f32)
    win += (reflex * np.exp(-d2m * 36))[..., None] * np.array([1.0, 0.9, 0.6], dtype=f32)

    # --- optic disc: peripapillary halo, orange-pink rim, pale cup --------------------------------
    ys, xs = _window(dcx, dcy, 1.8 * disc_ry + 2, S)
    xw, yw = x[:, xs], y[ys]
    d_disc = np.sqrt(((xw - dcx) / disc_r) ** 2 + ((yw - dcy) / disc_ry) ** 2)
    edge = max(0.6, S / 256) / disc_r  # about one pixel of soft edge, in disc radii
    disc_m = np.clip((1.0 - d_disc) / edge + 0.5, 0, 1)
    halo = np.exp(-((d_disc - 1.0).clip(0) ** 2) / 0.03) * (1 - disc_m)
    rim_col = np.array([rng.uniform(238, 252), rng.uniform(140, 165), rng.uniform(70, 100)], dtype=f32)
    cup_col = np.array([255, rng.uniform(238, 250), rng.uniform(215, 235)], dtype=f32)
    rim_shade = 1.0 - 0.12 * d_disc**2  # rim brightness falls off slightly towards the disc margin
    d_cup = np.sqrt(((xw - ccx) / cup_rx) ** 2 + ((yw - ccy) / cup_ry) ** 2)
    cup_soft = 1.5 / max(cup_ry, 1.0)  # the cup margin is a gentle slope, about 1.5 px
    cup_m = np.clip((1.0 - d_cup) / cup_soft + 0.5, 0, 1) * disc_m
    win = img[ys, xs] * ((1 + 0.15 * halo) * (1 - disc_m))[..., None] \
        + (rim_shade * disc_m)[..., None] * rim_col
    img[ys, xs] = win * (1 - cup_m[..., None]) + cup_m[..., None] * cup_col

    # --- vessels --------------------------------------------------------------------------------------
    veins, arteries = _vessel_masks(rng, S, disc_c, disc_r, disc_ry, mac_c, temporal, fov_c, fov_r)
    # veins dark red, arteries lighter; both absorb more green/blue than red. Inside the pale cup the
    # vessels dive into the lamina cribrosa and fade.
    fade = 1.0 - 0.6 * cup_m
    veins[ys, xs] *= fade
    arteries[ys, xs] *= fade
    dv = rng.uniform(0.85, 1.1)
    img *= 1.0 - veins[..., None] * (np.array([0.38, 0.55, 0.5], dtype=f32) * dv) \
        - arteries[..., None] * (np.array([0.2, 0.38, 0.34], dtype=f32) * dv)

    # --- camera: illumination, vignetting, colour cast, blur, noise, field stop -----------------------
    gain = rng.uniform(0.7, 1.08)
    light_dir = rng.uniform(0, 2 * math.pi)
    grad = ((x - fcx) * math.cos(light_dir) + (y - fcy) * math.sin(light_dir)) * (1.0 / fov_r)
    vign = 1.0 - rng.uniform(0.35, 0.6) * np.minimum(r_fov, 1.2) ** rng.uniform(2.5, 4.0)
    illum = (gain * vign) * (1.0 + rng.uniform(0.0, 0.15) * grad)
    cast = np.array([1.0, rng.uniform(0.9, 1.1), rng.uniform(0.85, 1.2)], dtype=f32)
    img *= illum[..., None] * cast
    sigma = rng.uniform(0.3, 1.1) * S / 256
    if sigma > 0.25:
        img = cv2.GaussianBlur(img, (0, 0), sigmaX=sigma)
    img += rng.standard_normal(img.shape, dtype=f32) * f32(rng.uniform(1.5, 4.5))
    fov_m = np.clip((fov_r - r_px) * (1.0 / max(1.0, S / 256)) + 0.5, 0, 1)
    img *= fov_m[..., None]
    out = np.clip(img + 0.5, 0, 255).astype(np.uint8)

    info = {
        "glaucoma": bool(glaucoma),
        "cdr": round(vcdr, 4),
        "hcdr": round(hcdr, 4),
        "disc_center": (round(dcx, 2), round(dcy, 2)),
        "disc_radius": round((disc_r + disc_ry) / 2, 2),
        "disc_radii": (round(disc_r, 2), round(disc_ry, 2)),
        "cup_center": (round(ccx, 2), round(ccy, 2)),
        "macula_center": (round(mcx, 2), round(mcy, 2)),
        "eye": eye,
        "fov_center": (round(fcx, 2), round(fcy, 2)),
        "fov_radius": round(fov_r, 2),
        "size": S,
    }
    return out, info


def _vessel_masks(rng, S, disc_c, disc_r, disc_ry, mac_c, temporal, fov_c, fov_r):
    """Vein and artery coverage masks in [0, 1], float32 (S, S), drawn as tapering branching polylines."""
    C = S * _SS
    canvases = [np.zeros((C, C), np.uint8), np.zeros((C, C), np.uint8)]  # veins, arteries
    step = S * 0.014
    w_vein = max(S * 0.0085, 0.75)
    fx, fy, lim2 = float(fov_c[0]), float(fov_c[1]), (fov_r * 1.02) ** 2
    mx, my, fav2 = float(mac_c[0]), float(mac_c[1]), (disc_r * 0.7) ** 2
    scale = _SS * 16  # cv2 fixed-point coordinates (shift=4)

    def grow(kind, x, y, h, target, turn, length, width, depth):
        n_steps = max(2, int(length / step))
        wiggle = rng.normal(0, 0.09, n_steps).tolist()
        n_br = min(n_steps - 3, int(rng.integers(1, 4))) if depth > 0 else 0
        branch_at = set(rng.choice(np.arange(2, n_steps - 1), size=n_br, replace=False).tolist()) \
            if n_br > 0 else set()
        pts = [(x, y)]
        for k in range(n_steps):
            if target is not None:  # steer towards the target direction
                h += turn * math.atan2(math.sin(target - h), math.cos(target - h))
            h += wiggle[k]
            x += step * math.cos(h)
            y += step * math.sin(h)
            if (x - fx) ** 2 + (y - fy) ** 2 > lim2:
                break
            if depth < 2 and (x - mx) ** 2 + (y - my) ** 2 < fav2:  # foveal avascular zone
                break
            pts.append((x, y))
            if k in branch_at:
                wk = width * (1.0 - 0.55 * k / n_steps)
                side = 1.0 if rng.random() < 0.5 else -1.0
                grow(kind, x, y, h + side * rng.uniform(0.45, 1.0), None, 0.0,
                     length * rng.uniform(0.3, 0.55), wk * rng.uniform(0.55, 0.75), depth - 1)
        # draw: consecutive segments with the same integer thickness go into one polyline
        a = (np.asarray(pts) * scale).round().astype(np.int32)
        m = len(a) - 1
        if m < 1:
            return
        th = np.maximum(1, np.round(width * (1.0 - 0.55 * np.arange(m) / n_steps) * _SS)).astype(int)
        i = 0
        while i < m:
            j = i
            while j + 1 < m and th[j + 1] == th[i]:
                j += 1
            cv2.polylines(canvases[kind], [a[i:j + 2]], False, 255, int(th[i]), cv2.LINE_AA, shift=4)
            i = j + 1

    cx, cy = float(disc_c[0]), float(disc_c[1])
    for vert in (-1.0, 1.0):  # superior (-1, image up) and inferior (+1)
        for kind, jitter in ((0, 0.0), (1, 0.3)):  # vein and artery run side by side
            w = w_vein * (1.0 if kind == 0 else 0.75)
            sx = cx + rng.normal(0, 0.12) * disc_r
            sy = cy + vert * disc_ry * rng.uniform(0.0, 0.25)
            # temporal arcade: leaves the disc almost vertically, then arches around the macula
            h0 = math.atan2(vert, temporal * (rng.uniform(0.05, 0.35) + jitter))
            tgt = math.atan2(vert * rng.uniform(0.05, 0.3), temporal)
            grow(kind, sx, sy, h0, tgt, rng.uniform(0.045, 0.08), S * rng.uniform(0.6, 0.8), w, 3)
            # nasal branch
            h1 = math.atan2(vert * rng.uniform(0.5, 1.5), -temporal)
            grow(kind, sx, sy, h1, math.atan2(vert * 0.4, -temporal), 0.04, S * rng.uniform(0.3, 0.45),
                 w * 0.7, 2)
        # a small macular branch from the disc margin towards the macula
        sx = cx + temporal * disc_r * 0.7
        sy = cy + vert * disc_ry * rng.uniform(0.1, 0.5)
        h2 = math.atan2(vert * rng.uniform(0.15, 0.6), temporal)
        grow(int(rng.integers(0, 2)), sx, sy, h2, None, 0.0, S * rng.uniform(0.12, 0.22), w_vein * 0.45, 1)
    return [cv2.resize(c, (S, S), interpolation=cv2.INTER_AREA).astype(np.float32) * (1 / 255.0)
            for c in canvases]
