"""Named, seeded image perturbations of a raw fundus photo: camera shifts and benign re-acquisition.

Two registries, one per axis:

- :data:`SHIFTS` (:class:`Shift`): what another fundus camera or a phone adapter does to a photo — colour
  cast, gamma, contrast, defocus, motion blur, JPEG quality, down-then-up sampling, illumination gradient,
  vignetting, field-of-view shape (circle cut top and bottom, 4:3 and 3:2 frames, a smaller FOV diameter) and
  a small rotation/scale. Each at a ``mild`` and a ``severe`` :class:`Level`, or at any strength in [0, 1]
  (0 = the photo unchanged, 1 = severe) for augmentation (``edgeretina.augment``'s ``camera`` policy).
- :data:`BENIGN` (:class:`Benign`): re-acquisitions that should not change a screening decision — JPEG
  re-save at quality 95 and 85, 1 and 2 px translations, brightness ±3 %, a small white-balance change. The
  bench's stability floor (issue 18) is the reference model's decision flip rate under these.

Contract: RGB ``uint8`` (H, W, 3) in, RGB ``uint8`` out (the canvas may change size for the frame and
resolution shifts), applied to the **raw photo before the model's Pipeline** (so crops and resizing happen
after). Sizes (blur radius, gradient, FOV) are relative to the field-of-view diameter, so a shift means the
same on a 3000-px camera photo and a 128-px synthetic image; the benign 1–2 px translations and the JPEG 8×8
blocks are in photo pixels, as a re-acquisition is. Deterministic: the random parts (cast direction, blur
angle, gradient direction, rotation sign …) come from ``numpy.random.default_rng([seed, index, <shift id>])``
and are drawn before the strength is used, so mild and severe of one (image, seed) differ only in amount.
OpenCV + numpy only.
"""
from __future__ import annotations

import difflib
import zlib
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

import cv2
import numpy as np

from edgeretina.enums import TextEnum
from edgeretina.errors import EdgeRetinaError
from edgeretina.preprocess import fov_box, fov_mask


class Shift(TextEnum):
    """Camera shifts, in the order a photo meets them (field of view, optics, light, colour, sensor, file)."""

    FOV_CUT = "fov-cut"                # circle cut top and bottom
    FRAME_4X3 = "frame-4x3"            # the FOV circle in a 4:3 frame that cuts it
    FRAME_3X2 = "frame-3x2"            # the FOV circle in a 3:2 frame that cuts it
    FOV_SMALL = "fov-small"            # a smaller FOV diameter (narrower-angle camera)
    ROTATE_SCALE = "rotate-scale"      # small rotation and scale
    DEFOCUS = "defocus"                # Gaussian blur
    MOTION_BLUR = "motion-blur"        # line blur at a random angle
    ILLUMINATION = "illumination"      # linear illumination gradient
    VIGNETTE = "vignette"              # radial fall-off
    COLOUR_CAST = "colour-cast"        # white balance / colour cast
    GAMMA = "gamma"
    CONTRAST = "contrast"
    RESOLUTION = "resolution"          # down-then-up sampling
    JPEG = "jpeg"                      # JPEG quality


class Level(TextEnum):
    MILD = "mild"
    SEVERE = "severe"


class Benign(TextEnum):
    """Benign re-acquisition perturbations (the stability floor, issue 18)."""

    JPEG95 = "jpeg-95"
    JPEG85 = "jpeg-85"
    SHIFT_1PX = "shift-1px"
    SHIFT_2PX = "shift-2px"
    BRIGHTER = "brightness+3%"
    DARKER = "brightness-3%"
    WHITE_BALANCE = "white-balance"


# --------------------------------------------------------------------------------------- geometry helpers
def _fov(img: np.ndarray) -> tuple[float, float, float]:
    """Centre (cx, cy) and radius of the field of view (the bright disc on a black border)."""
    y0, y1, x0, x1 = fov_box(img)
    return (x0 + x1 - 1) / 2.0, (y0 + y1 - 1) / 2.0, max(x1 - x0, y1 - y0) / 2.0


def _to_u8(a: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(a), 0, 255).astype(np.uint8)


def _lut(img: np.ndarray, table: np.ndarray) -> np.ndarray:
    return cv2.LUT(img, _to_u8(table).reshape(256, 1))


def _unit_direction(rng: np.random.Generator) -> np.ndarray:
    a = rng.uniform(0, 2 * np.pi)
    return np.array([np.cos(a), np.sin(a)])


# ----------------------------------------------------------------------------------- the transformations
# Each takes (img, amount, rng) and draws its random numbers first, whatever the amount.
def _fov_cut(img, cut, rng):
    """Black out the rows above/below the FOV circle's chord at ``cut`` × diameter from the top and bottom."""
    rng.random()
    cx, cy, r = _fov(img)
    out = img.copy()
    top, bottom = int(round(cy - r + cut * 2 * r)), int(round(cy + r - cut * 2 * r)) + 1
    out[: max(0, top)] = 0
    out[max(0, bottom):] = 0
    return out


def _frame(aspect: float):
    def fn(img, cut, rng):
        """Re-frame the photo on a black ``aspect`` canvas whose height is (1 − 2·cut) × the FOV diameter,
        centred on the FOV (the circle is cut top and bottom, black margins left and right)."""
        rng.random()
        cx, cy, r = _fov(img)
        h = max(8, int(round(2 * r * (1 - 2 * cut))))
        w = max(h, int(round(h * aspect)))
        x0, y0 = int(round(cx - w / 2)), int(round(cy - h / 2))
        canvas = np.zeros((h, w, 3), np.uint8)
        sx0, sy0 = max(0, x0), max(0, y0)
        sx1, sy1 = min(img.shape[1], x0 + w), min(img.shape[0], y0 + h)
        if sx1 > sx0 and sy1 > sy0:
            canvas[sy0 - y0: sy1 - y0, sx0 - x0: sx1 - x0] = img[sy0:sy1, sx0:sx1]
        return canvas
    return fn


def _fov_small(img, shrink, rng):
    """Keep a circle of (1 − shrink) × the FOV radius around its centre (a narrower-angle camera)."""
    rng.random()
    cx, cy, r = _fov(img)
    mask = np.zeros(img.shape[:2], np.uint8)
    cv2.circle(mask, (int(round(cx)), int(round(cy))), max(1, int(round(r * (1 - shrink)))), 1, -1,
               lineType=cv2.LINE_AA)
    return img * mask[:, :, None]


def _rotate_scale(img, amount, rng):
    """Rotate by ±``amount`` × 12° and scale by 1 ± ``amount`` × 0.15 (signs and share drawn per image)."""
    sign_a, sign_s, share = rng.choice([-1.0, 1.0]), rng.choice([-1.0, 1.0]), rng.uniform(0.5, 1.0)
    angle = sign_a * 12.0 * amount * share
    scale = 1.0 + sign_s * 0.15 * amount * share
    cx, cy, _ = _fov(img)
    m = cv2.getRotationMatrix2D((cx, cy), angle, scale)
    return cv2.warpAffine(img, m, (img.shape[1], img.shape[0]), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))


def _defocus(img, sigma_frac, rng):
    rng.random()
    sigma = sigma_frac * 2 * _fov(img)[2]
    if sigma < 0.05:
        return img
    return cv2.GaussianBlur(img, (0, 0), sigmaX=sigma, sigmaY=sigma, borderType=cv2.BORDER_REFLECT)


def _motion_blur(img, length_frac, rng):
    """Average along a line of ``length_frac`` × the FOV diameter at a random angle (the kernel is drawn at
    8× and area-downsampled, so short fractional lengths blur a little instead of not at all)."""
    angle = np.deg2rad(rng.uniform(0, 180))
    length = length_frac * 2 * _fov(img)[2]
    if length <= 1.0:
        return img
    k = int(np.ceil(length)) | 1
    ss = 8
    big = np.zeros((k * ss, k * ss), np.float32)
    c = (k * ss - 1) / 2.0
    dx, dy = np.cos(angle) * (length - 1) * ss / 2, np.sin(angle) * (length - 1) * ss / 2
    cv2.line(big, (int(round(c - dx)), int(round(c - dy))), (int(round(c + dx)), int(round(c + dy))), 1.0, ss)
    kernel = cv2.resize(big, (k, k), interpolation=cv2.INTER_AREA)
    kernel /= kernel.sum()
    return cv2.filter2D(img, -1, kernel, borderType=cv2.BORDER_REFLECT)


def _illumination(img, strength, rng):
    """Multiply by 1 + strength × (position along a random direction, −1 at one FOV edge, +1 at the other)."""
    d = _unit_direction(rng)
    cx, cy, r = _fov(img)
    h, w = img.shape[:2]
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    t = ((xs - cx) * d[0] + (ys - cy) * d[1]) / max(r, 1.0)
    gain = np.clip(1.0 + strength * np.clip(t, -1, 1), 0, None)
    return _to_u8(img.astype(np.float32) * gain[:, :, None])


def _vignette(img, strength, rng):
    """Multiply by 1 − strength × (distance from the FOV centre / radius)²."""
    rng.random()
    cx, cy, r = _fov(img)
    h, w = img.shape[:2]
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    rr = ((xs - cx) ** 2 + (ys - cy) ** 2) / max(r, 1.0) ** 2
    gain = np.clip(1.0 - strength * np.clip(rr, 0, 1), 0, None)
    return _to_u8(img.astype(np.float32) * gain[:, :, None])


def _gains(img, gains):
    return cv2.merge([_lut(img[:, :, i], np.arange(256) * g) for i, g in enumerate(gains)])


def _colour_cast(img, cast, rng):
    """Channel gains 1 + cast × d, d a random temperature (R up, B down or the reverse) and tint (G) mix,
    scaled so that its largest component is ±1."""
    temp, tint = rng.uniform(-1, 1), rng.uniform(-0.5, 0.5)
    d = np.array([temp, tint, -temp])
    d = d / max(np.abs(d).max(), 1e-6)
    return _gains(img, 1.0 + cast * d)


def _gamma(img, log_gamma, rng):
    """Gamma exp(±log_gamma) on the 0–1 scale (sign drawn per image)."""
    g = float(np.exp(rng.choice([-1.0, 1.0]) * log_gamma))
    return _lut(img, 255.0 * (np.arange(256) / 255.0) ** g)


def _contrast(img, log_factor, rng):
    """Contrast × exp(±log_factor) around the FOV's mean intensity; the black border stays black."""
    f = float(np.exp(rng.choice([-1.0, 1.0]) * log_factor))
    m = fov_mask(img)
    mean = float(img[m].mean()) if m.any() else 128.0
    out = _lut(img, mean + f * (np.arange(256) - mean))
    out[~m] = img[~m]
    return out


def _resolution(img, factor, rng):
    """Down-sample to ``factor`` × the size (area), then back up (bilinear)."""
    rng.random()
    if factor >= 0.999:
        return img
    h, w = img.shape[:2]
    small = cv2.resize(img, (max(1, int(round(w * factor))), max(1, int(round(h * factor)))),
                       interpolation=cv2.INTER_AREA)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


def jpeg(img: np.ndarray, quality: int) -> np.ndarray:
    """Re-encode as a real JPEG at ``quality`` (cv2.imencode, 4:2:0 as the library defaults) and decode it."""
    ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(img[:, :, ::-1]), [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:  # pragma: no cover - OpenCV always encodes uint8 RGB
        raise EdgeRetinaError("JPEG encoding failed")
    return np.ascontiguousarray(cv2.imdecode(buf, cv2.IMREAD_COLOR)[:, :, ::-1])


def _jpeg(img, quality, rng):
    rng.random()
    q = int(round(quality))
    return img if q >= 100 else jpeg(img, q)


def translate(img: np.ndarray, dx: int, dy: int) -> np.ndarray:
    """Move the photo by whole pixels (black fill), the same size."""
    out = np.zeros_like(img)
    h, w = img.shape[:2]
    src = img[max(0, -dy): h - max(0, dy), max(0, -dx): w - max(0, dx)]
    out[max(0, dy): max(0, dy) + src.shape[0], max(0, dx): max(0, dx) + src.shape[1]] = src
    return out


# --------------------------------------------------------------------------------------------- registry
@dataclass(frozen=True)
class ShiftDef:
    """One camera shift: ``fn(img, amount, rng)``; ``amount`` is ``identity`` (no change) at strength 0,
    ``mild`` at the mild level and ``severe`` at strength 1 (linear in between)."""

    name: Shift
    what: str
    fn: Callable[[np.ndarray, float, np.random.Generator], np.ndarray] = field(repr=False)
    identity: float
    mild: float
    severe: float
    unit: str = ""
    reshapes: bool = False  # the output canvas may differ in size

    def amount(self, level: "Level | str | float") -> float:
        if isinstance(level, (int, float)) and not isinstance(level, bool):
            s = float(level)
            if not 0.0 <= s <= 1.0:
                raise EdgeRetinaError(f"shift strength {s} is outside [0, 1]")
            return self.identity + s * (self.severe - self.identity)
        lv = parse_level(level)
        return self.mild if lv is Level.MILD else self.severe

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name.value, "what": self.what, "mild": self.mild, "severe": self.severe,
                "identity": self.identity, "unit": self.unit}


SHIFTS: dict[Shift, ShiftDef] = {d.name: d for d in (
    ShiftDef(Shift.FOV_CUT, "FOV circle cut top and bottom", _fov_cut, 0.0, 0.06, 0.15,
             "cut per side, × FOV diameter"),
    ShiftDef(Shift.FRAME_4X3, "4:3 frame that cuts the FOV circle top and bottom", _frame(4 / 3), 0.0, 0.04, 0.12,
             "cut per side, × FOV diameter", reshapes=True),
    ShiftDef(Shift.FRAME_3X2, "3:2 frame that cuts the FOV circle top and bottom", _frame(3 / 2), 0.0, 0.04, 0.12,
             "cut per side, × FOV diameter", reshapes=True),
    ShiftDef(Shift.FOV_SMALL, "smaller FOV diameter", _fov_small, 0.0, 0.10, 0.25, "radius lost, × FOV radius"),
    ShiftDef(Shift.ROTATE_SCALE, "rotation up to ±12° and scale up to ±15 % (severe)", _rotate_scale,
             0.0, 0.4, 1.0, "× (12°, 15 %)"),
    ShiftDef(Shift.DEFOCUS, "defocus (Gaussian blur)", _defocus, 0.0, 0.002, 0.006, "sigma, × FOV diameter"),
    ShiftDef(Shift.MOTION_BLUR, "motion blur at a random angle", _motion_blur, 0.0, 0.006, 0.02,
             "length, × FOV diameter"),
    ShiftDef(Shift.ILLUMINATION, "linear illumination gradient", _illumination, 0.0, 0.15, 0.4,
             "gain ± across the FOV"),
    ShiftDef(Shift.VIGNETTE, "vignetting (radial fall-off)", _vignette, 0.0, 0.2, 0.5, "gain lost at the FOV edge"),
    ShiftDef(Shift.COLOUR_CAST, "white balance / colour cast", _colour_cast, 0.0, 0.08, 0.25,
             "largest channel gain change"),
    ShiftDef(Shift.GAMMA, "gamma", _gamma, 0.0, float(np.log(1.25)), float(np.log(1.8)), "|log gamma|"),
    ShiftDef(Shift.CONTRAST, "contrast around the FOV mean", _contrast, 0.0, float(np.log(1.25)),
             float(np.log(1.8)), "|log factor|"),
    ShiftDef(Shift.RESOLUTION, "down-then-up sampling", _resolution, 1.0, 0.5, 0.25, "× resolution"),
    ShiftDef(Shift.JPEG, "JPEG quality", _jpeg, 100.0, 70.0, 30.0, "quality"),
)}


@dataclass(frozen=True)
class BenignDef:
    name: Benign
    what: str
    fn: Callable[[np.ndarray, np.random.Generator], np.ndarray] = field(repr=False)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name.value, "what": self.what}


def _shift_px(n: int):
    def fn(img, rng):
        """The eye moves ``n`` px (seeded direction) behind the camera's fixed field-of-view aperture: the
        content is translated, the FOV mask stays where it was (a plain translation of the whole photo would
        be undone exactly by the pipeline's ``fov_crop``)."""
        dx, dy = [(n, 0), (-n, 0), (0, n), (0, -n), (n, n), (-n, -n), (n, -n), (-n, n)][int(rng.integers(8))]
        m = fov_mask(img)
        return translate(img, dx, dy) * m[:, :, None].astype(np.uint8)
    return fn


BENIGN: dict[Benign, BenignDef] = {d.name: d for d in (
    BenignDef(Benign.JPEG95, "JPEG re-save at quality 95", lambda img, rng: jpeg(img, 95)),
    BenignDef(Benign.JPEG85, "JPEG re-save at quality 85", lambda img, rng: jpeg(img, 85)),
    BenignDef(Benign.SHIFT_1PX, "1-pixel move of the eye behind a fixed FOV aperture (seeded direction)",
              _shift_px(1)),
    BenignDef(Benign.SHIFT_2PX, "2-pixel move of the eye behind a fixed FOV aperture (seeded direction)",
              _shift_px(2)),
    BenignDef(Benign.BRIGHTER, "brightness +3 %", lambda img, rng: _lut(img, np.arange(256) * 1.03)),
    BenignDef(Benign.DARKER, "brightness −3 %", lambda img, rng: _lut(img, np.arange(256) * 0.97)),
    BenignDef(Benign.WHITE_BALANCE, "white balance: red +2 %, blue −2 %",
              lambda img, rng: _gains(img, (1.02, 1.0, 0.98))),
)}


# ------------------------------------------------------------------------------------------- public API
def _close(name: str, choices: Iterable[str]) -> str:
    m = difflib.get_close_matches(name, list(choices), n=1)
    return f" (did you mean '{m[0]}'?)" if m else ""


def parse_shift(name: "Shift | str") -> Shift:
    if isinstance(name, Shift):
        return name
    key = str(name).strip().lower().replace("_", "-")
    try:
        return Shift(key)
    except ValueError:
        raise EdgeRetinaError(f"unknown shift '{name}'{_close(key, [s.value for s in Shift])} (choose from: "
                              f"{', '.join(s.value for s in Shift)}, or all)") from None


def parse_level(level: "Level | str") -> Level:
    try:
        return Level(str(level).strip().lower())
    except ValueError:
        raise EdgeRetinaError(f"unknown shift level '{level}' (choose mild or severe)") from None


def parse_benign(name: "Benign | str") -> Benign:
    if isinstance(name, Benign):
        return name
    try:
        return Benign(str(name).strip().lower())
    except ValueError:
        raise EdgeRetinaError(f"unknown benign perturbation '{name}' (choose from: "
                              f"{', '.join(b.value for b in Benign)})") from None


def parse_shifts(text: "str | Sequence[str] | None") -> tuple[Shift, ...]:
    """``"all"``, ``"jpeg,defocus"`` or a sequence of names → shifts in registry order, no duplicates."""
    if text is None:
        return ()
    parts = [text] if isinstance(text, (str, Shift)) else list(text)
    names: list[str] = []
    for p in parts:
        names += [s.strip() for s in str(p.value if isinstance(p, Shift) else p).split(",") if s.strip()]
    if any(n.lower() == "all" for n in names):
        return tuple(SHIFTS)
    chosen = {parse_shift(n) for n in names}
    return tuple(s for s in SHIFTS if s in chosen)


def _rng(seed, name: str) -> np.random.Generator:
    seq = list(seed) if isinstance(seed, (list, tuple)) else [int(seed)]
    return np.random.default_rng([int(s) & 0xFFFFFFFFFFFF for s in seq] + [zlib.crc32(name.encode())])


def _check(img: np.ndarray) -> np.ndarray:
    a = np.asarray(img)
    if a.dtype != np.uint8 or a.ndim != 3 or a.shape[2] != 3:
        raise EdgeRetinaError(f"shifts take RGB uint8 (H, W, 3) images, not {a.dtype} {a.shape}")
    return a


def apply_shift(img: np.ndarray, name: "Shift | str", level: "Level | str | float" = Level.MILD,
                seed: "int | Sequence[int]" = 0) -> np.ndarray:
    """``img`` under camera shift ``name`` at ``level`` (``mild``/``severe``, or a strength in [0, 1]).
    Deterministic in ``seed`` (give ``[seed, image_index]`` for a stack)."""
    d = SHIFTS[parse_shift(name)]
    a = _check(img)
    amount = d.amount(level)
    if amount == d.identity:
        return a.copy()
    return np.ascontiguousarray(d.fn(a, amount, _rng(seed, d.name.value)))


def apply_benign(img: np.ndarray, name: "Benign | str", seed: "int | Sequence[int]" = 0) -> np.ndarray:
    """``img`` under benign re-acquisition perturbation ``name`` (deterministic in ``seed``)."""
    d = BENIGN[parse_benign(name)]
    return np.ascontiguousarray(d.fn(_check(img), _rng(seed, d.name.value)))


def perturb(img: np.ndarray, kind: "Shift | Benign | str", level: "Level | str | float | None" = None,
            seed: "int | Sequence[int]" = 0) -> np.ndarray:
    """One entry point for both registries: a :class:`Benign` name ignores ``level``."""
    if isinstance(kind, Benign) or (not isinstance(kind, Shift) and str(kind) in {b.value for b in Benign}):
        return apply_benign(img, kind, seed)
    return apply_shift(img, kind, Level.MILD if level is None else level, seed)


def random_camera(img: np.ndarray, rng: np.random.Generator, n: int = 1, max_strength: float = 1.0,
                  kinds: Sequence[Shift] | None = None) -> np.ndarray:
    """``n`` camera shifts of random kind and random strength in [0, ``max_strength``], applied in registry
    (acquisition) order. Used by the ``camera`` augmentation policy."""
    pool = list(kinds or SHIFTS)
    picks = sorted(((int(rng.integers(len(pool))), float(rng.uniform(0, max_strength)), int(rng.integers(2**31)))
                    for _ in range(n)), key=lambda t: t[0])
    out = img
    for k, s, sd in picks:
        out = apply_shift(out, pool[k], s, sd)
    return out


def describe() -> list[dict[str, Any]]:
    """The two registries as JSON (for reports and docs)."""
    return [d.to_json() for d in SHIFTS.values()] + [dict(d.to_json(), benign=True) for d in BENIGN.values()]
