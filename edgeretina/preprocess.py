"""Preprocessing as named, composable, serialisable steps — one code path for every consumer.

A :class:`Pipeline` is an ordered list of :class:`Step` s, each a registered name plus explicit parameters.
It round-trips through JSON (``to_json()`` / ``from_json()``) and travels in ``config.json`` and in every
exported ``.tflite``, so training, int8 calibration, benchmarking and the phone app prepare images the same way.

Images are RGB ``uint8 (H, W, 3)`` through the *image steps* (``fov_crop``, ``onh_crop``, ``pad_square``,
``resize``, ``ben_graham``, ``clahe``, ``grey``, ``stretch``); the *float steps* (``standardize``, ``scale``)
come last and turn the image into the model's float32 input tensor. The last step is always ``scale``: the
backbone's own input scaling (``tf``/``torch``/``caffe``/``unit``/``none``).

Decoding (:func:`decode_image`) is robust: EXIF orientation (JPEG), grey → RGB, RGBA → RGB (composited on
black), 16-bit → 8-bit, and a one-line :class:`~edgeretina.errors.DataError` naming the file for zero-byte,
truncated, corrupt or non-image files. See ``docs/data.md`` for every step's exact algorithm.
"""
from __future__ import annotations

import contextlib
import io
import json
import math
import numbers
import os
import sys
import tempfile
import threading
import warnings
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, Callable

import cv2
import numpy as np
from PIL import Image

from edgeretina.errors import DataError
from edgeretina.io import write_json_atomic

SCHEMA = "edgeretina.preprocess/1"

cv2.setNumThreads(1)  # decode/preprocess run in parallel workers; OpenCV's own pool would oversubscribe


class Scaling(str, Enum):
    """A backbone's input scaling (the last step of every pipeline)."""

    TF = "tf"          # x / 127.5 - 1            (MobileNet, EfficientNetV2 w/o rescaling, Inception, Xception)
    TORCH = "torch"    # (x / 255 - mean) / std   (ImageNet mean/std: DenseNet)
    CAFFE = "caffe"    # RGB→BGR, x - BGR means   (ResNet50 v1, VGG)
    UNIT = "unit"      # x / 255
    NONE = "none"      # raw 0..255 floats       (EfficientNet with built-in rescaling)


IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CAFFE_BGR_MEAN = (103.939, 116.779, 123.68)


# --------------------------------------------------------------------------------------------- decoding
_JPEG = b"\xff\xd8\xff"
_PNG = b"\x89PNG\r\n\x1a\n"
_MAGIC = {
    "jpeg": (_JPEG,),
    "png": (_PNG,),
    "bmp": (b"BM",),
    "tiff": (b"II*\x00", b"MM\x00*"),
    "webp": (b"RIFF",),
}
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".jpe", ".jfif")


def sniff_format(head: bytes) -> str | None:
    """Image container from the first bytes of a file (None = not an image OpenCV reads)."""
    for fmt, magics in _MAGIC.items():
        if any(head.startswith(m) for m in magics):
            if fmt == "webp" and head[8:12] != b"WEBP":
                return None
            return fmt
    return None


def check_image_file(path: str | os.PathLike, size: int | None = None) -> str | None:
    """Cheap header/trailer check without decoding. Returns a problem string, or None when it looks fine.

    Catches zero-byte files, non-images with an image extension, and JPEG/PNG files cut short (no JPEG EOI
    marker / PNG IEND chunk in the last min(4 KiB, half the file)). Corruption inside the compressed data is
    only found by decoding.
    """
    try:
        if size is None:
            size = os.path.getsize(path)
        if size == 0:
            return "zero-byte file"
        with open(path, "rb") as f:
            head = f.read(16)
            n = _tail_len(size)
            f.seek(size - n)
            tail = f.read(n)
    except OSError as e:
        return f"cannot read ({e.strerror or e})"
    return _check_bytes(head, tail, size)


def _tail_len(size: int) -> int:
    """How many trailing bytes to search for the end marker: up to 4 KiB (cameras append trailers after the
    JPEG EOI), but never more than the second half of the file (an EXIF thumbnail's EOI sits near the start)."""
    return max(1, min(4096, size // 2))


def _check_bytes(head: bytes, tail: bytes, size: int) -> str | None:
    fmt = sniff_format(head)
    if fmt is None:
        return "not an image (unknown file signature)"
    if fmt == "jpeg" and b"\xff\xd9" not in tail.rstrip(b"\x00\n\r "):
        return "truncated JPEG (no end-of-image marker)"
    if fmt == "png" and b"IEND" not in tail:
        return "truncated PNG (no IEND chunk)"
    return None


# Image integrity limits (issue 14). A decompression bomb (a 30000×30000 PNG compresses to < 1 MB) is refused
# from its header, before the raster is allocated; a fundus photograph is 1–25 MP.
MAX_PIXELS = 50_000_000
MIN_SIDE = 64          # smaller images are refused where decisions are made (strict decoding)
MAX_INPUT_SIZE = 1024  # largest model input / resize size (memory is O(size²) per image)

_STRICT = {"on": False}
_DECODE_LOCK = threading.Lock()


@contextlib.contextmanager
def strict_decoding(on: bool = True):
    """Inside the block (process-wide, every thread), :func:`decode_image` defaults to ``strict=on``:
    libjpeg's "corrupt data" / "premature end" warnings and images under ``MIN_SIDE`` px are errors."""
    old = _STRICT["on"]
    _STRICT["on"] = bool(on)
    try:
        yield
    finally:
        _STRICT["on"] = old


def image_size(buf: np.ndarray) -> tuple[int, int] | None:
    """(width, height) from the file header without decoding the raster (Pillow); None if unknown."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            old, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
            try:
                with Image.open(io.BytesIO(buf.tobytes())) as im:
                    return int(im.size[0]), int(im.size[1])
            finally:
                Image.MAX_IMAGE_PIXELS = old
    except Exception:  # noqa: BLE001 - Pillow cannot read this header: OpenCV decides below
        return None


def _imdecode_checked(buf: np.ndarray, flags: int) -> tuple[np.ndarray | None, str]:
    """``cv2.imdecode`` with libjpeg's warnings captured: OpenCV prints them on stderr (file descriptor 2)
    and returns the damaged image, so stderr is pointed at a temp file for the call (one decode at a time)."""
    with _DECODE_LOCK, tempfile.TemporaryFile() as tmp:
        sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(tmp.fileno(), 2)
        try:
            img = cv2.imdecode(buf, flags)
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        tmp.seek(0)
        msg = tmp.read(2000).decode("utf-8", "replace").strip()
    return img, msg


def decode_image(path: str | os.PathLike, data: bytes | None = None, strict: bool | None = None) -> np.ndarray:
    """Read an image file as RGB uint8 ``(H, W, 3)``; any problem is a one-line DataError naming the file.

    JPEG/BMP: ``cv2.IMREAD_COLOR`` (applies EXIF orientation, grey → 3 channels). PNG/TIFF/WebP:
    ``cv2.IMREAD_UNCHANGED`` then grey → RGB, RGBA composited on black, 16-bit → 8-bit (``>> 8``, i.e.
    ``x // 257`` rounded down). TIFF orientation tags are applied by OpenCV's TIFF reader.

    Images over ``MAX_PIXELS`` are refused from their header. ``strict`` (default: :func:`strict_decoding`):
    a JPEG whose decoding makes libjpeg warn (corrupt or missing scan data: OpenCV would return a damaged
    picture) and images under ``MIN_SIDE`` px on a side are refused too.
    """
    strict = _STRICT["on"] if strict is None else strict
    p = str(path)
    try:
        buf = np.frombuffer(data, np.uint8) if data is not None else np.fromfile(p, dtype=np.uint8)
    except OSError as e:
        raise DataError(f"{p}: cannot read image ({e.strerror or e})") from None
    if buf.size == 0:
        raise DataError(f"{p}: zero-byte file")
    raw = buf.tobytes() if buf.size < 80 else buf[:16].tobytes()
    problem = _check_bytes(raw, buf[-_tail_len(buf.size):].tobytes(), buf.size)
    if problem:
        raise DataError(f"{p}: {problem}")
    fmt = sniff_format(raw)
    wh = image_size(buf)
    if wh is not None and wh[0] * wh[1] > MAX_PIXELS:
        raise DataError(f"{p}: {wh[0]}×{wh[1]} image ({wh[0] * wh[1] / 1e6:.0f} MP) exceeds the "
                        f"{MAX_PIXELS / 1e6:.0f} MP limit (a decompression bomb?); not decoded")
    if strict and wh is not None and min(wh) < MIN_SIDE:
        raise DataError(f"{p}: {wh[0]}×{wh[1]} image is smaller than {MIN_SIDE} px on a side; too small to "
                        "screen")
    flags = cv2.IMREAD_COLOR if fmt in ("jpeg", "bmp") else cv2.IMREAD_UNCHANGED
    if strict and fmt == "jpeg":
        img, warning = _imdecode_checked(buf, flags)
        if warning and img is not None:
            first = warning.splitlines()[0][:160]
            raise DataError(f"{p}: corrupt JPEG data (libjpeg: {first}); the decoded picture would be damaged")
    else:
        img = cv2.imdecode(buf, flags)
    if img is None or img.size == 0:
        raise DataError(f"{p}: corrupt {fmt.upper()} (OpenCV cannot decode it)")
    if img.shape[0] * img.shape[1] > MAX_PIXELS:  # a format Pillow could not size
        raise DataError(f"{p}: {img.shape[1]}×{img.shape[0]} image exceeds the {MAX_PIXELS / 1e6:.0f} MP limit")
    if strict and min(img.shape[:2]) < MIN_SIDE:
        raise DataError(f"{p}: {img.shape[1]}×{img.shape[0]} image is smaller than {MIN_SIDE} px on a side; "
                        "too small to screen")
    return to_rgb_uint8(img, bgr=True, source=p)


def to_rgb_uint8(img: np.ndarray, bgr: bool = False, source: str = "image") -> np.ndarray:
    """Normalise any array image to RGB uint8: grey/1-channel → 3, 4-channel → composited on black,
    uint16 → uint8 (``>> 8``), float in [0, 1] → ×255 rounded. ``bgr``: channels are in OpenCV order."""
    a = np.asarray(img)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if a.dtype == np.uint16:
        a = (a >> 8).astype(np.uint8)
    elif a.dtype in (np.float32, np.float64):
        scale = 255.0 if a.size and float(np.nanmax(a)) <= 1.0 else 1.0
        a = np.clip(np.rint(a * scale), 0, 255).astype(np.uint8)
    elif a.dtype != np.uint8:
        a = np.clip(a, 0, 255).astype(np.uint8)
    if a.ndim == 2:
        return np.ascontiguousarray(np.repeat(a[:, :, None], 3, axis=2))
    if a.ndim != 3 or a.shape[2] not in (3, 4):
        raise DataError(f"{source}: unsupported image shape {a.shape}")
    if a.shape[2] == 4:
        alpha = a[:, :, 3:4].astype(np.uint16)
        a = ((a[:, :, :3].astype(np.uint16) * alpha + 127) // 255).astype(np.uint8)
    if bgr:
        a = a[:, :, ::-1]
    return np.ascontiguousarray(a)


# ------------------------------------------------------------------------------------------- image steps
def fov_mask(img: np.ndarray, threshold: int = 10) -> np.ndarray:
    """Field-of-view mask: pixels whose max(R, G, B) > ``threshold`` (the black border is below it)."""
    # elementwise maximum of the channel planes: same result as img.max(axis=2), ~20x faster on big photos
    return np.maximum(np.maximum(img[:, :, 0], img[:, :, 1]), img[:, :, 2]) > threshold


def fov_box(img: np.ndarray, threshold: int = 10, min_fraction: float = 0.01) -> tuple[int, int, int, int]:
    """Bounding box (y0, y1, x0, x1) of the field of view: rows/columns in which more than
    ``min_fraction`` of the pixels are inside the FOV mask. The whole image when nothing qualifies."""
    h, w = img.shape[:2]
    m = fov_mask(img, threshold)
    rows = np.flatnonzero(m.sum(axis=1) > min_fraction * w)
    cols = np.flatnonzero(m.sum(axis=0) > min_fraction * h)
    if rows.size == 0 or cols.size == 0:
        return 0, h, 0, w
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


def fov_crop_box(img: np.ndarray, threshold: int = 10, min_fraction: float = 0.01,
                 margin: int = 0) -> tuple[int, int, int, int]:
    """The (y0, y1, x0, x1) window :func:`fov_crop` cuts out (the whole image for a nearly black one)."""
    y0, y1, x0, x1 = fov_box(img, threshold, min_fraction)
    h, w = img.shape[:2]
    y0, x0 = max(0, y0 - margin), max(0, x0 - margin)
    y1, x1 = min(h, y1 + margin), min(w, x1 + margin)
    if (y1 - y0) < 0.1 * h or (x1 - x0) < 0.1 * w:  # nearly black image: keep it whole (fallback)
        return 0, h, 0, w
    return y0, y1, x0, x1


def fov_crop(img: np.ndarray, threshold: int = 10, min_fraction: float = 0.01, margin: int = 0) -> np.ndarray:
    y0, y1, x0, x1 = fov_crop_box(img, threshold, min_fraction, margin)
    if (y0, y1, x0, x1) == (0,) + img.shape[:1] + (0,) + img.shape[1:2]:
        return img
    return img[y0:y1, x0:x1]


def pad_square(img: np.ndarray, value: int = 0) -> np.ndarray:
    """Pad the shorter side symmetrically (extra pixel at the bottom/right) to a square with ``value``."""
    h, w = img.shape[:2]
    if h == w:
        return img
    s = max(h, w)
    top, left = (s - h) // 2, (s - w) // 2
    return cv2.copyMakeBorder(img, top, s - h - top, left, s - w - left, cv2.BORDER_CONSTANT,
                              value=(value, value, value))


_INTERP = {"area": cv2.INTER_AREA, "linear": cv2.INTER_LINEAR, "nearest": cv2.INTER_NEAREST,
           "cubic": cv2.INTER_CUBIC}


def resize(img: np.ndarray, size: int | list[int] = 224, interpolation: str = "area") -> np.ndarray:
    """Resize to ``size`` (square int, or [height, width]). ``area``: ``cv2.INTER_AREA`` when neither side
    grows, otherwise ``cv2.INTER_LINEAR`` (half-pixel centres) — see docs/data.md for the exact algorithm."""
    th, tw = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    h, w = img.shape[:2]
    if (h, w) == (th, tw):
        return img
    if interpolation not in _INTERP:
        raise DataError(f"resize: unknown interpolation '{interpolation}' (choose from: {', '.join(_INTERP)})")
    mode = _INTERP[interpolation]
    if interpolation == "area" and (th > h or tw > w):
        mode = cv2.INTER_LINEAR
    return cv2.resize(img, (tw, th), interpolation=mode)


def ben_graham(img: np.ndarray, sigma_frac: float = 1 / 60, weight: float = 4.0, offset: float = 128.0,
               mask_radius: float = 0.95) -> np.ndarray:
    """Ben Graham's local contrast normalisation (Kaggle DR 2015): ``w·x − w·GaussianBlur(x, σ) + offset``
    with σ = ``sigma_frac`` × image width, then pixels outside a centred circle of ``mask_radius`` × half
    the shorter side set to 0 (removes the bright ring the filter draws at the FOV edge). 0 = no mask."""
    h, w = img.shape[:2]
    sigma = max(0.5, sigma_frac * w)
    blur = cv2.GaussianBlur(img, (0, 0), sigmaX=sigma, sigmaY=sigma)
    out = cv2.addWeighted(img, weight, blur, -weight, offset)
    if mask_radius and mask_radius > 0:
        m = np.zeros((h, w), np.uint8)
        cv2.circle(m, (w // 2, h // 2), int(round(mask_radius * min(h, w) / 2)), 1, -1)
        out = out * m[:, :, None]
    return out


def clahe(img: np.ndarray, clip_limit: float = 2.0, tile: int = 8) -> np.ndarray:
    """CLAHE on the L channel of CIE L*a*b* (``cv2.createCLAHE(clip_limit, (tile, tile))``)."""
    lab = cv2.cvtColor(img, cv2.COLOR_RGB2LAB)
    lab[:, :, 0] = cv2.createCLAHE(clipLimit=clip_limit, tileGridSize=(tile, tile)).apply(lab[:, :, 0])
    return cv2.cvtColor(lab, cv2.COLOR_LAB2RGB)


def grey(img: np.ndarray) -> np.ndarray:
    """Greyscale (``cv2.COLOR_RGB2GRAY``: 0.299 R + 0.587 G + 0.114 B) replicated to 3 channels."""
    g = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
    return cv2.merge([g, g, g])


def stretch(img: np.ndarray, low: float = 0.2, high: float = 99.8, per_channel: bool = False) -> np.ndarray:
    """Percentile contrast stretch: map the ``low``..``high`` percentile (numpy linear interpolation, over
    all channels unless ``per_channel``) to 0..255, clip, round half to even."""
    a = img.astype(np.float32)
    if per_channel:
        lo = np.percentile(a, low, axis=(0, 1))
        hi = np.percentile(a, high, axis=(0, 1))
    else:
        lo, hi = np.percentile(a, [low, high])
    rng = np.maximum(np.asarray(hi, np.float32) - lo, 1.0)
    return np.clip(np.rint((a - lo) * (255.0 / rng)), 0, 255).astype(np.uint8)


# ---------------------------------------------------------------------------------------- ONH localisation
@dataclass(frozen=True)
class DiscDetection:
    """Optic-disc estimate in the pixels of the image given to :func:`locate_disc`.

    ``found`` False = **flagged**: no convincing disc. ``reason`` says why (``""`` when found):
    ``"no field of view"`` / ``"no disc-like spot"`` — (x, y) is the fallback, the FOV centre;
    ``"ambiguous"`` (runner-up almost as good), ``"not round"`` (no isolated round blob: rim crescent,
    lesion cluster), ``"at search border"`` (the score still rises towards the FOV rim) — (x, y) is the best
    candidate, a guess an app should not trust (ask for a retake / skip the image).

    ``confidence`` in [0, 1]: ``0.5 · min_i(value_i / threshold_i)`` over the criteria score, margin and
    roundness (clipped), 0 when flagged for the FOV border or no FOV; ``found`` ⇔ every criterion met ⇔
    ``confidence ≥ 0.5``. ``score`` (z-units), ``margin`` (score gap to the runner-up candidate) and
    ``roundness`` (z-units, see :func:`locate_disc`) are the raw values.
    """

    x: float
    y: float
    diameter: float
    confidence: float
    found: bool
    score: float = 0.0
    margin: float = 0.0
    roundness: float = 0.0
    reason: str = ""
    #: every candidate scored, best first: (x, y, score, map score, roundness, fovea term), image pixels
    candidates: tuple[tuple[float, ...], ...] = field(default=(), repr=False, compare=False)

    @property
    def flagged(self) -> bool:
        return not self.found

    @property
    def fallback(self) -> bool:
        """True when (x, y) is the FOV centre (no candidate at all), not a flagged best guess."""
        return self.reason in ("no field of view", "no disc-like spot")

    def scaled(self, sx: float, sy: float | None = None, dx: float = 0.0, dy: float = 0.0) -> "DiscDetection":
        """The same detection in another image's pixels: ``x' = x · sx + dx`` (diameter scales by sx)."""
        sy = sx if sy is None else sy
        return DiscDetection(self.x * sx + dx, self.y * sy + dy, self.diameter * sx, self.confidence, self.found,
                             self.score, self.margin, self.roundness, self.reason,
                             tuple((c[0] * sx + dx, c[1] * sy + dy) + tuple(c[2:]) for c in self.candidates))

    def to_dict(self) -> dict[str, Any]:
        return {"x": round(self.x, 2), "y": round(self.y, 2), "diameter": round(self.diameter, 2),
                "confidence": round(self.confidence, 3), "found": self.found, "score": round(self.score, 3),
                "margin": round(self.margin, 3), "roundness": round(self.roundness, 3), "reason": self.reason}


_DISC_WORK_SIZE = 192
_N_CANDIDATES = 6
_N_SECTORS = 8


def _clean_fov_mask(small: np.ndarray, threshold: int) -> np.ndarray:
    """FOV mask at work size: max(R, G, B) > threshold, opened (drops specks/text), holes filled, largest
    connected component. uint8 0/1."""
    m = fov_mask(small, threshold).astype(np.uint8)
    k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5))
    m = cv2.morphologyEx(m, cv2.MORPH_OPEN, k)
    n, lab, stats, _ = cv2.connectedComponentsWithStats(m, connectivity=8)
    if n <= 1:
        return m
    big = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    m = (lab == big).astype(np.uint8)
    # fill holes: background connected to the image border stays background
    inv = np.pad(1 - m, 1, constant_values=1)
    n2, lab2 = cv2.connectedComponents(inv, connectivity=4)
    outside = lab2 == lab2[0, 0]
    return (~outside[1:-1, 1:-1]).astype(np.uint8)


def _sector_geometry(dd: float):
    """Offsets of a (2R+1)² window (R = dd): inner disc (r ≤ 0.4 dd) and 8 annular sectors
    (0.6 dd < r ≤ 1.0 dd) used for the roundness test."""
    R = max(2, int(round(dd)))
    yy, xx = np.mgrid[-R:R + 1, -R:R + 1].astype(np.float32)
    r = np.hypot(xx, yy)
    inner = r <= max(1.0, 0.4 * dd)
    ring = (r > 0.6 * dd) & (r <= dd)
    sector = ((np.arctan2(yy, xx) + np.pi) / (2 * np.pi) * _N_SECTORS).astype(np.int32) % _N_SECTORS
    return R, inner, ring, sector


def _roundness(lum: np.ndarray, mask: np.ndarray, x: int, y: int, geo, spread: float) -> float:
    """How much brighter the centre is than *every* side of it, in units of the FOV's brightness spread:
    the second-lowest of the 8 sector contrasts (inner mean − sector mean of the ring at 0.6–1 dd).
    A disc is brighter than all its surroundings (one sector may hold a vessel trunk); a rim crescent or
    a streak is as bright along its length, a lesion cluster is patchy. Sectors mostly outside the FOV are
    skipped (a disc at the FOV edge)."""
    R, inner, ring, sector = geo
    h, w = lum.shape
    y0, y1, x0, x1 = y - R, y + R + 1, x - R, x + R + 1
    oy0, ox0 = max(0, -y0), max(0, -x0)
    win = lum[max(0, y0):min(h, y1), max(0, x0):min(w, x1)]
    mw = mask[max(0, y0):min(h, y1), max(0, x0):min(w, x1)] > 0
    sl = (slice(oy0, oy0 + win.shape[0]), slice(ox0, ox0 + win.shape[1]))
    inn = inner[sl] & mw
    if inn.sum() < 3:
        return -10.0
    c = float(win[inn].mean())
    rg, sec = ring[sl] & mw, sector[sl]
    full = np.bincount(sector[ring], minlength=_N_SECTORS)
    cnt = np.bincount(sec[rg], minlength=_N_SECTORS)
    tot = np.bincount(sec[rg], weights=win[rg], minlength=_N_SECTORS)
    ok = cnt >= 0.3 * full
    if ok.sum() < 3:
        return -10.0
    contrast = np.sort((c - tot[ok] / cnt[ok]) / spread)
    return float(contrast[1])


def locate_disc(img: np.ndarray, disc_fraction: float = 0.15, threshold: int = 10,
                min_confidence: float = 2.0, vessel_weight: float = 1.0,
                vertical_prior: float = 4.0, edge_penalty: float = 3.5, search_margin: float = 0.07,
                roundness_weight: float = 1.0, fovea_weight: float = 0.0, min_margin: float = 0.75,
                min_roundness: float = 0.2, red_weight: float = 0.25, vessel_clip: bool = True,
                refine: bool = False, subpixel: bool = False) -> DiscDetection:
    """Find the optic nerve head: a bright, round, disc-sized spot where vessels converge, well inside the
    field of view.

    Everything runs at 192 px on the longer side; sizes are relative to the field-of-view diameter ``D``
    (the FOV mask's bounding-box side) and the expected disc diameter ``dd = disc_fraction · D``:

    1. FOV mask = max(R, G, B) > ``threshold``, opened, holes filled, largest component. ``dist`` = distance
       to the FOV edge (the image border counts as edge). **Search region**: ``dist > search_margin · D``
       — a bright rim, yellow ring or edge glare can never be the answer. **Rim band** ``dist ≤
       search_margin · D / 2`` is replaced by the FOV median before filtering, so its glare does not leak in.
    2. Brightness ``0.25 R + 0.75 G`` clipped at its 99.5th percentile inside the FOV, band-pass =
       GaussianBlur(σ = dd/4) − GaussianBlur(σ = 2 dd).
    3. Vessels: dark thin structures = max(0, medianBlur(G, ≈dd/2) − G) (darker than their surroundings;
       unlike a black-hat it does not fire on the gaps between bright exudates), blurred with σ = dd/2:
       high where the main vessels converge on the disc.
    4. Map score = z(brightness) + ``vessel_weight`` · z(vessels) − ``vertical_prior`` · (2·dy / D)² −
       up to ``edge_penalty`` within dd/2 of the FOV edge (z = (v − median) / std in the search region).
    5. Candidates: the ``6`` best local maxima of the map (one per disc-sized neighbourhood). Each gets
       ``roundness`` = second-lowest of 8 sector contrasts (centre ≤ 0.4 dd vs. ring 0.6–1 dd, in FOV
       brightness standard deviations) and a fovea term = how dark the band-pass is 2–2.7 dd to either
       side at the same height (clipped 0–3). Candidate score = map score + ``roundness_weight`` ·
       clip(roundness, −3, 3) + ``fovea_weight`` · fovea. The best candidate is the disc.

    **Honest confidence** — the detection is *flagged* (``found=False``) when: the score is below
    ``min_confidence`` (no disc-like spot: the FOV centre is returned), the runner-up is within
    ``min_margin`` (ambiguous), ``roundness < min_roundness`` (not a round isolated blob), or the winner sits
    on the search region's border (the map still rises towards the rim). See :class:`DiscDetection`.

    ``subpixel``: the centre is the map peak refined by a parabola through it and its 4 neighbours
    (:func:`subpixel_peak`), so it moves continuously with the eye instead of in whole work pixels
    (≈ 1.7 photo px on ODIR's 320-px photos) — issue 18's stable crop centre.
    """
    h, w = img.shape[:2]
    s = _DISC_WORK_SIZE / max(h, w)
    small = cv2.resize(img, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA) \
        if s < 1 else img
    s = small.shape[1] / w
    sh, sw = small.shape[:2]

    def to_img(v):
        return (v + 0.5) / s - 0.5

    mask = _clean_fov_mask(small, threshold)
    ys, xs = np.nonzero(mask)
    if ys.size < 0.05 * mask.size:
        y0, y1, x0, x1 = fov_box(small, threshold)
        fov_d = max(y1 - y0, x1 - x0)
        return DiscDetection(to_img((x0 + x1 - 1) / 2.0), to_img((y0 + y1 - 1) / 2.0),
                             disc_fraction * fov_d / s, 0.0, False, reason="no field of view")
    y0, y1, x0, x1 = int(ys.min()), int(ys.max()) + 1, int(xs.min()), int(xs.max()) + 1
    fov_d = float(max(y1 - y0, x1 - x0))
    dd = disc_fraction * fov_d
    cx_f, cy_f = (x0 + x1) / 2.0, (y0 + y1) / 2.0

    def fallback(score: float, reason: str) -> DiscDetection:
        return DiscDetection(to_img(cx_f - 0.5), to_img(cy_f - 0.5), dd / s, 0.0, False, score, 0.0, 0.0, reason)

    dist = cv2.distanceTransform(np.pad(mask, 1), cv2.DIST_L2, 3)[1:-1, 1:-1]
    m_px = search_margin * fov_d
    search = dist > m_px
    if search.sum() < 0.02 * mask.size:  # tiny FOV: search half-way in
        m_px = 0.5 * float(dist.max())
        search = dist > m_px
    inside = mask > 0
    core = dist > 0.5 * m_px  # FOV without the rim band
    if core.sum() < 0.05 * mask.size:
        core = inside

    g = small[:, :, 1].astype(np.float32)
    lum_raw = red_weight * small[:, :, 0].astype(np.float32) + (1.0 - red_weight) * g
    lum_raw = np.minimum(lum_raw, np.percentile(lum_raw[inside], 99.5))
    lum = np.where(core, lum_raw, float(np.median(lum_raw[core])))
    bright = cv2.GaussianBlur(lum, (0, 0), max(1.0, dd / 4)) - _wide_blur(lum, max(2.0, 2 * dd))
    resp = _zscore(bright, search, 1.0)
    if vessel_weight:
        g8 = np.ascontiguousarray(np.where(core, small[:, :, 1], np.uint8(np.median(small[:, :, 1][core]))))
        k = max(3, int(round(dd / 2)) | 1)
        if vessel_clip:  # bright spots (exudates) pushed down to the local median first: they must not
            g8 = np.minimum(g8, cv2.medianBlur(g8, k))  # lift the median and make the gaps look like vessels
        vess = np.maximum(cv2.medianBlur(g8, k).astype(np.float32) - g8, 0.0)
        resp = resp + vessel_weight * _zscore(cv2.GaussianBlur(vess, (0, 0), max(1.0, dd / 2)), search, 0.25)
    if vertical_prior:
        dyv = (np.arange(sh, dtype=np.float32) - cy_f + 0.5) * (2.0 / max(fov_d, 1.0))
        resp = resp - vertical_prior * (dyv ** 2)[:, None]
    if edge_penalty:
        resp = resp - edge_penalty * np.clip(1.0 - dist / max(dd / 2, 1.0), 0.0, 1.0)

    masked = np.where(search, resp, -np.inf).astype(np.float32)
    kk = max(3, int(round(dd)) | 1)
    peaks = (masked >= cv2.dilate(masked, cv2.getStructuringElement(cv2.MORPH_RECT, (kk, kk)))) & search
    py, px = np.nonzero(peaks)
    if py.size == 0:
        return fallback(0.0, "no disc-like spot")
    keep: list[int] = []  # best first (ties: raster order); a plateau's equal peaks count once
    for i in np.argsort(-masked[py, px], kind="stable").tolist():
        if all(max(abs(py[i] - py[j]), abs(px[i] - px[j])) > kk // 2 for j in keep):
            keep.append(i)
            if len(keep) == _N_CANDIDATES:
                break
    py, px = py[keep], px[keep]

    spread = float(lum_raw[inside].std()) + 1e-6
    geo = _sector_geometry(dd)
    cands = []
    for yy, xx in zip(py.tolist(), px.tolist()):
        base = float(masked[yy, xx])
        # best over the candidate and 4 points 0.2 dd away: the map peak can sit beside the disc centre
        # (on the vessel trunk), where the sector test is unfair to a real disc
        o = max(1, int(round(0.2 * dd)))
        rnd = _roundness(lum_raw, mask, xx, yy, geo, spread)
        if rnd < 1.0:  # (a clearly round blob needs no second look)
            rnd = max([rnd] + [_roundness(lum_raw, mask, xx + ox_, yy + oy_, geo, spread)
                               for ox_, oy_ in ((o, 0), (-o, 0), (0, o), (0, -o))])
        fov_term = _fovea_term(bright, inside, xx, yy, dd) if fovea_weight else 0.0
        total = base + roundness_weight * float(np.clip(rnd, -3.0, 3.0)) + fovea_weight * fov_term
        cands.append((total, xx, yy, rnd, base, fov_term))
    cands.sort(key=lambda c: -c[0])
    total, bx, by, rnd, base = cands[0][:5]
    trace = tuple((float(to_img(c[1])), float(to_img(c[2])), round(c[0], 3), round(c[4], 3), round(c[3], 3),
                   round(c[5], 3)) for c in cands)
    margin = total - cands[1][0] if len(cands) > 1 else 10.0
    if not np.isfinite(total) or total < min_confidence:
        return fallback(total if np.isfinite(total) else 0.0, "no disc-like spot")
    at_border = dist[by, bx] <= m_px + 1.5
    if refine:  # centre on the brightness blob: the vessel term peaks on the trunk, beside the disc centre
        rr = max(1, int(round(0.4 * dd)))
        ya, yb, xa, xb = max(0, by - rr), min(sh, by + rr + 1), max(0, bx - rr), min(sw, bx + rr + 1)
        yy_, xx_ = np.mgrid[ya:yb, xa:xb]
        win = np.where((np.hypot(yy_ - by, xx_ - bx) <= rr) & inside[ya:yb, xa:xb], bright[ya:yb, xa:xb], -np.inf)
        iy, ix = np.unravel_index(int(np.argmax(win)), win.shape)
        bx, by = int(xa + ix), int(ya + iy)
    fx, fy = subpixel_peak(masked, bx, by) if subpixel and not refine else (float(bx), float(by))
    crit = [total / max(min_confidence, 1e-6), margin / max(min_margin, 1e-6)]
    if min_roundness > 0:
        crit.append(rnd / min_roundness)
    conf = float(np.clip(0.5 * min(crit), 0.0, 1.0))
    reason = ""
    if at_border:
        reason, conf = "at search border", 0.0
    elif margin < min_margin:
        reason = "ambiguous"
    elif rnd < min_roundness:
        reason = "not round"
    if reason:
        conf = min(conf, 0.49)
    return DiscDetection(to_img(fx), to_img(fy), dd / s, conf, not reason, float(total), float(margin),
                         float(rnd), reason, trace)


def subpixel_peak(m: np.ndarray, x: int, y: int) -> tuple[float, float]:
    """(x, y) moved to the vertex of the parabola through ``m`` at x−1, x, x+1 (and likewise in y), each
    offset clipped to ±0.5 px; an axis whose neighbour is off the map or not finite keeps its integer value.
    float64 arithmetic on the float32 map (the Android core does the same)."""
    out = []
    for axis, (c, n) in enumerate(((x, m.shape[1]), (y, m.shape[0]))):
        if not 0 < c < n - 1:
            out.append(float(c))
            continue
        a, b, d = ((float(m[y, c - 1]), float(m[y, c]), float(m[y, c + 1])) if axis == 0 else
                   (float(m[c - 1, x]), float(m[c, x]), float(m[c + 1, x])))
        curv = a - 2.0 * b + d
        if not (np.isfinite(a) and np.isfinite(d)) or curv >= 0.0:
            out.append(float(c))
            continue
        out.append(c + min(0.5, max(-0.5, 0.5 * (a - d) / curv)))
    return out[0], out[1]


def _fovea_term(bright: np.ndarray, inside: np.ndarray, x: int, y: int, dd: float) -> float:
    """Darkest band-pass value (in units of its spread, sign flipped, clipped 0–3) 2–2.7 disc diameters to the
    left or right of (x, y) within ±0.4 dd vertically: the fovea sits there, level with the disc."""
    h, w = bright.shape
    std = float(bright[inside].std()) + 1e-6
    best = 0.0
    ylo, yhi = max(0, int(y - 0.4 * dd)), min(h, int(y + 0.4 * dd) + 1)
    for sgn in (-1, 1):
        xa, xb = x + sgn * 2.0 * dd, x + sgn * 2.7 * dd
        xlo, xhi = max(0, int(min(xa, xb))), min(w, int(max(xa, xb)) + 1)
        if xhi <= xlo or yhi <= ylo:
            continue
        win = bright[ylo:yhi, xlo:xhi]
        m = inside[ylo:yhi, xlo:xhi]
        if m.sum() < 3:
            continue
        best = max(best, float(-win[m].min()) / std)
    return float(np.clip(best, 0.0, 3.0))


def _wide_blur(a: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur with a large σ, computed at 1/4 resolution and bilinearly enlarged (8x cheaper)."""
    h, w = a.shape[:2]
    small = cv2.resize(a, (max(1, w // 4), max(1, h // 4)), interpolation=cv2.INTER_AREA)
    small = cv2.GaussianBlur(small, (0, 0), max(0.5, sigma / 4))
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


def _zscore(a: np.ndarray, m: np.ndarray, floor: float = 1e-6) -> np.ndarray:
    """(a − median) / max(std, floor) over the pixels in ``m``; the floor (in grey levels) keeps a flat,
    featureless image at z ≈ 0 instead of blowing rounding noise up to large z-values."""
    v = a[m]
    return (a - float(np.median(v))) / max(float(v.std()), floor)


def onh_crop_with_info(img: np.ndarray, diameters: float = 2.0, **locator) -> tuple[np.ndarray, DiscDetection]:
    """:func:`onh_crop` that also returns the :class:`DiscDetection` it cropped around."""
    det = locate_disc(img, **locator)
    side = max(8, int(round(diameters * det.diameter)))
    x0 = int(round(det.x - side / 2))
    y0 = int(round(det.y - side / 2))
    h, w = img.shape[:2]
    out = np.zeros((side, side, 3), np.uint8)
    sx0, sy0, sx1, sy1 = max(0, x0), max(0, y0), min(w, x0 + side), min(h, y0 + side)
    if sx1 > sx0 and sy1 > sy0:
        out[sy0 - y0:sy1 - y0, sx0 - x0:sx1 - x0] = img[sy0:sy1, sx0:sx1]
    return out, det


def onh_crop(img: np.ndarray, diameters: float = 2.0, disc_fraction: float = 0.15, threshold: int = 10,
             min_confidence: float = 2.0, vessel_weight: float = 1.0, vertical_prior: float = 4.0,
             edge_penalty: float = 3.5, search_margin: float = 0.07, roundness_weight: float = 1.0,
             fovea_weight: float = 0.0, min_margin: float = 0.75, min_roundness: float = 0.2,
             red_weight: float = 0.25, vessel_clip: bool = True, refine: bool = False) -> np.ndarray:
    """Square crop of ``diameters`` disc diameters centred on the detected optic disc (see
    :func:`locate_disc`); zero-padded where the window leaves the image. Flagged detections crop around the
    best guess, or the FOV centre when there is none (``DiscDetection.fallback``); use
    :meth:`Pipeline.apply_with_info` to see the flag."""
    return onh_crop_with_info(img, diameters, disc_fraction=disc_fraction, threshold=threshold,
                              min_confidence=min_confidence, vessel_weight=vessel_weight,
                              vertical_prior=vertical_prior, edge_penalty=edge_penalty,
                              search_margin=search_margin, roundness_weight=roundness_weight,
                              fovea_weight=fovea_weight, min_margin=min_margin, min_roundness=min_roundness,
                              red_weight=red_weight, vessel_clip=vessel_clip, refine=refine)[0]


_ONH_DEFAULTS: dict[str, Any] = {"diameters": 2.0, "disc_fraction": 0.15, "threshold": 10, "min_confidence": 2.0,
                                 "vessel_weight": 1.0, "vertical_prior": 4.0, "edge_penalty": 3.5,
                                 "search_margin": 0.07, "roundness_weight": 1.0, "fovea_weight": 0.0,
                                 "min_margin": 0.75, "min_roundness": 0.2, "red_weight": 0.25, "vessel_clip": True,
                                 "refine": False}


def crop_bilinear(img: np.ndarray, x0: float, y0: float, side: int) -> np.ndarray:
    """``side`` × ``side`` window whose top-left pixel centre is the fractional point (x0, y0) of ``img``,
    bilinear with 8-bit weights on a 1/16-px grid — ``a = 16·round(16·frac)`` per axis (half to even), out =
    (Σ w·p + 2¹⁵) >> 16 with w = (256 − a_x or a_x)(256 − a_y or a_y) — zero outside the image. Integer
    arithmetic only, so the Android core reproduces it bit for bit; the 1/16-px grid absorbs the last-bit
    differences of its float32 locator map (~1e-4 px). A whole-pixel (x0, y0) is a plain copy."""
    ix, iy = math.floor(x0), math.floor(y0)
    ax, ay = 16 * int(round((x0 - ix) * 16)), 16 * int(round((y0 - iy) * 16))
    if ax == 256:
        ix, ax = ix + 1, 0
    if ay == 256:
        iy, ay = iy + 1, 0
    h, w = img.shape[:2]
    win = np.zeros((side + 1, side + 1, 3), np.int32)
    sx0, sy0, sx1, sy1 = max(0, ix), max(0, iy), min(w, ix + side + 1), min(h, iy + side + 1)
    if sx1 > sx0 and sy1 > sy0:
        win[sy0 - iy:sy1 - iy, sx0 - ix:sx1 - ix] = img[sy0:sy1, sx0:sx1]
    out = ((256 - ax) * (256 - ay) * win[:-1, :-1] + ax * (256 - ay) * win[:-1, 1:]
           + (256 - ax) * ay * win[1:, :-1] + ax * ay * win[1:, 1:] + (1 << 15)) >> 16
    return out.astype(np.uint8)


def onh_crop_subpixel(img: np.ndarray, diameters: float = 2.0, **locator) -> tuple[np.ndarray, DiscDetection]:
    """:func:`onh_crop_with_info` around the sub-pixel disc centre (``locate_disc(subpixel=True)``), cut by
    :func:`crop_bilinear`: a 2-px move of the eye moves the window by ~2 px, not by 0 or 3 whole pixels."""
    det = locate_disc(img, subpixel=True, **locator)
    side = max(8, int(round(diameters * det.diameter)))
    return crop_bilinear(img, det.x - side / 2, det.y - side / 2, side), det


def two_view_with_info(img: np.ndarray, size: int = 128, interpolation: str = "area", diameters: float = 2.0,
                       onh_blur: float = 0.0, subpixel: bool = False,
                       **locator) -> tuple[np.ndarray, DiscDetection]:
    """:func:`two_view` that also returns the optic-disc detection it cropped around."""
    crop, det = (onh_crop_subpixel if subpixel else onh_crop_with_info)(img, diameters, **locator)
    full = resize(pad_square(img), int(size), interpolation)
    onh = resize(pad_square(crop), int(size), interpolation)
    if onh_blur > 0:
        onh = cv2.GaussianBlur(onh, (0, 0), float(onh_blur))
    return np.ascontiguousarray(np.concatenate([full, onh], axis=1)), det


def two_view(img: np.ndarray, size: int = 128, interpolation: str = "area", **onh) -> np.ndarray:
    """Two views side by side, ``size`` × ``2·size``: the whole (FOV-cropped) fundus padded square and
    resized on the left, the optic-nerve-head crop (:func:`onh_crop`, same parameters) on the right. A
    model reads each half separately (the ``two_view`` head pools the halves apart), so one .tflite with
    one input sees the disc at high resolution and the whole fundus for context.

    Issue 18's stability options for the ONH view (:data:`TWO_VIEW_OPTIONAL`; in the JSON only when set):
    ``onh_blur`` σ > 0 — ``cv2.GaussianBlur(σ)`` of the resized ONH view (8-bit, OpenCV's kernel, REFLECT_101):
    the crop is at about native resolution, so JPEG blocks and pixel-grid phase reach the backbone
    unsmoothed otherwise; ``subpixel`` — :func:`onh_crop_subpixel` instead of a whole-pixel window."""
    return two_view_with_info(img, size, interpolation, **onh)[0]


#: ``two_view`` parameters written to the pipeline JSON only when they differ from these (a model trained
#: without them keeps the JSON that older apps read)
TWO_VIEW_OPTIONAL: dict[str, Any] = {"onh_blur": 0.0, "subpixel": False}


@dataclass(frozen=True)
class PipelineInfo:
    """What a pipeline's image steps found on one image (:meth:`Pipeline.apply_with_info`).

    ``disc``: the ``onh_crop`` step's :class:`DiscDetection` mapped back to the **input image's pixels**
    (None when the pipeline has no ``onh_crop``); ``disc_flagged``: that detection is low-confidence /
    fallback — an app should ask for a retake, a training set can count or drop the image."""

    disc: DiscDetection | None = None

    @property
    def disc_flagged(self) -> bool:
        return self.disc is not None and not self.disc.found

    def to_dict(self) -> dict[str, Any]:
        return {"disc": None if self.disc is None else self.disc.to_dict(), "disc_flagged": self.disc_flagged}


# ------------------------------------------------------------------------------------------- float steps
def standardize(x: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """Per-image standardisation ``(x − mean) / max(std, eps)`` over all pixels and channels."""
    a = x.astype(np.float32)
    return (a - a.mean()) / max(float(a.std()), eps)


def scale(x: np.ndarray, mode: str = "tf") -> np.ndarray:
    a = x.astype(np.float32, copy=True) if x.dtype != np.float32 else x.copy()
    m = Scaling(mode)
    if m is Scaling.TF:
        a = a / np.float32(127.5) - np.float32(1.0)
    elif m is Scaling.TORCH:
        a = (a / np.float32(255.0) - np.asarray(IMAGENET_MEAN, np.float32)) / np.asarray(IMAGENET_STD, np.float32)
    elif m is Scaling.CAFFE:
        a = a[..., ::-1] - np.asarray(CAFFE_BGR_MEAN, np.float32)
    elif m is Scaling.UNIT:
        a = a / np.float32(255.0)
    return np.ascontiguousarray(a, dtype=np.float32)


# ------------------------------------------------------------------------------------------- registry
@dataclass(frozen=True)
class StepDef:
    fn: Callable[..., np.ndarray]
    defaults: dict[str, Any]
    float_step: bool = False
    doc: str = ""


STEPS: dict[str, StepDef] = {
    "fov_crop": StepDef(fov_crop, {"threshold": 10, "min_fraction": 0.01, "margin": 0},
                        doc="crop to the bounding box of the field of view (black border removed)"),
    "onh_crop": StepDef(onh_crop, dict(_ONH_DEFAULTS),
                        doc="square window of ~2 disc diameters around the detected optic disc"),
    "two_view": StepDef(two_view, {"size": 128, "interpolation": "area", **_ONH_DEFAULTS},
                        doc="whole fundus | optic-nerve-head crop side by side (size x 2*size)"),
    "pad_square": StepDef(pad_square, {"value": 0}, doc="pad to a square with black"),
    "resize": StepDef(resize, {"size": 224, "interpolation": "area"}, doc="resize (INTER_AREA when shrinking)"),
    "ben_graham": StepDef(ben_graham, {"sigma_frac": 1 / 60, "weight": 4.0, "offset": 128.0, "mask_radius": 0.95},
                          doc="Ben Graham local contrast normalisation (Gaussian blur subtraction)"),
    "clahe": StepDef(clahe, {"clip_limit": 2.0, "tile": 8}, doc="CLAHE on L*"),
    "grey": StepDef(grey, {}, doc="greyscale, 3 channels"),
    "stretch": StepDef(stretch, {"low": 0.2, "high": 99.8, "per_channel": False},
                       doc="percentile contrast stretch"),
    "standardize": StepDef(standardize, {"eps": 1e-6}, float_step=True, doc="(x - mean) / std per image"),
    "scale": StepDef(scale, {"mode": "tf"}, float_step=True, doc="backbone input scaling (always last)"),
}


@dataclass(frozen=True)
class Step:
    name: str
    params: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        if self.name not in STEPS:
            raise DataError(f"unknown preprocessing step '{self.name}' (choose from: {', '.join(STEPS)})")
        d = STEPS[self.name].defaults
        optional = TWO_VIEW_OPTIONAL if self.name == "two_view" else {}
        unknown = sorted(set(self.params) - set(d) - set(optional))
        if unknown:
            raise DataError(f"preprocessing step '{self.name}': unknown parameter(s) {', '.join(unknown)} "
                            f"(known: {', '.join(d) or 'none'})")
        full = {**d, **{k: v for k, v in self.params.items() if k not in optional or v != optional[k]}}
        if self.name == "scale":
            try:
                full["mode"] = Scaling(full["mode"]).value
            except ValueError:
                raise DataError(f"preprocessing step 'scale': unknown mode '{full['mode']}' "
                                f"(choose from: {', '.join(s.value for s in Scaling)})") from None
        if self.name == "two_view" and not (isinstance(full["size"], numbers.Integral) and
                                            not isinstance(full["size"], bool) and 32 <= full["size"] <= 512):
            raise DataError(f"preprocessing step 'two_view': size {full['size']!r} must be an integer between 32 "
                            "and 512 px (each view is size x size)")
        if self.name == "two_view" and not (isinstance(full.get("onh_blur", 0.0), numbers.Real) and
                                            0.0 <= full.get("onh_blur", 0.0) <= 5.0):
            raise DataError(f"preprocessing step 'two_view': onh_blur {full['onh_blur']!r} must be a σ between 0 "
                            "and 5 px")
        if self.name == "resize":  # bounded: a metadata asking for a 20000-px resize would allocate gigabytes
            size = full["size"]
            sides = list(size) if isinstance(size, (list, tuple)) else [size]
            if not sides or len(sides) > 2 or not all(isinstance(v, numbers.Integral) and not isinstance(v, bool) and
                                                      8 <= v <= MAX_INPUT_SIZE for v in sides):
                raise DataError(f"preprocessing step 'resize': size {size!r} must be an integer (or a pair) "
                                f"between 8 and {MAX_INPUT_SIZE} px")
        object.__setattr__(self, "params", full)  # every parameter explicit (the JSON is the spec)

    @property
    def is_float(self) -> bool:
        return STEPS[self.name].float_step

    def __call__(self, img: np.ndarray) -> np.ndarray:
        return STEPS[self.name].fn(img, **self.params)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "params": dict(self.params)}

    def __hash__(self):
        return hash((self.name, json.dumps(self.params, sort_keys=True)))


@dataclass(frozen=True)
class Pipeline:
    """Ordered preprocessing steps. ``apply(rgb_uint8) -> float32 (S, S, 3)`` is the model's input tensor."""

    steps: tuple[Step, ...]

    def __post_init__(self):
        steps = tuple(s if isinstance(s, Step) else Step(s["name"], s.get("params", {})) for s in self.steps)
        object.__setattr__(self, "steps", steps)
        if not steps or steps[-1].name != "scale":
            raise DataError("preprocessing pipeline must end with a 'scale' step (the backbone's input scaling)")
        if sum(s.name == "scale" for s in steps) != 1:
            raise DataError("preprocessing pipeline must have exactly one 'scale' step")
        seen_float = False
        for s in steps:
            if s.is_float:
                seen_float = True
            elif seen_float:
                raise DataError(f"preprocessing step '{s.name}' works on uint8 images and cannot follow "
                                "'standardize'/'scale'")

    # ---- construction
    @classmethod
    def default(cls, input_size: int = 224, scaling: str | Scaling = "tf", *, fov: bool = True,
                onh: bool = False, ben_graham: bool = False, clahe: bool = False, grey: bool = False,
                stretch: bool = False, standardize: bool = False, interpolation: str = "area",
                two_view: bool = False) -> "Pipeline":
        """The standard recipe: [fov_crop] → [onh_crop] → pad_square → resize → [enhancements] →
        [standardize] → scale. Enhancements run at the model's input size (cheap and size-independent).
        ``standardize=True`` replaces the backbone scaling with ``none``: its output is already zero-mean,
        unit-variance, and a further ``tf``/``unit`` scaling would squash it to a constant."""
        steps: list[Step] = []
        if fov:
            steps.append(Step("fov_crop"))
        if two_view:
            if ben_graham:
                raise DataError("the two-view input (whole fundus | ONH crop side by side) does not take "
                                "Ben Graham preprocessing (its mask assumes one round fundus)")
            steps.append(Step("two_view", {"size": int(input_size), "interpolation": interpolation}))
        else:
            if onh:
                steps.append(Step("onh_crop"))
            steps.append(Step("pad_square"))
            steps.append(Step("resize", {"size": int(input_size), "interpolation": interpolation}))
        if grey:
            steps.append(Step("grey"))
        if clahe:
            steps.append(Step("clahe"))
        if ben_graham:
            steps.append(Step("ben_graham"))
        if stretch:
            steps.append(Step("stretch"))
        if standardize:
            steps.append(Step("standardize"))
        mode = Step("scale", {"mode": scaling.value if isinstance(scaling, Scaling) else scaling}).params["mode"]
        steps.append(Step("scale", {"mode": "none" if standardize else mode}))
        return cls(tuple(steps))

    @classmethod
    def from_json(cls, obj: dict | str | list) -> "Pipeline":
        if isinstance(obj, str):
            try:
                obj = json.loads(obj)
            except json.JSONDecodeError as e:
                raise DataError(f"preprocessing JSON is not valid ({e})") from None
        if isinstance(obj, list):
            steps = obj
        elif isinstance(obj, dict) and isinstance(obj.get("steps"), list):
            steps = obj["steps"]
        else:
            raise DataError("preprocessing JSON must be {'schema': ..., 'steps': [{'name', 'params'}, ...]}")
        out = []
        for i, s in enumerate(steps):
            if not isinstance(s, dict) or "name" not in s:
                raise DataError(f"preprocessing JSON step {i}: needs a 'name'")
            params = s.get("params")
            if params is None:  # also accept flat {"name": ..., "size": ...}
                params = {k: v for k, v in s.items() if k != "name"}
            out.append(Step(s["name"], dict(params)))
        return cls(tuple(out))

    def to_json(self) -> dict[str, Any]:
        return {"schema": SCHEMA, "input_size": self.input_size, "scaling": self.scaling,
                "steps": [s.to_json() for s in self.steps]}

    def save(self, path: str | Path) -> Path:
        return write_json_atomic(path, self.to_json())

    # ---- views
    @property
    def image_steps(self) -> tuple[Step, ...]:
        """The uint8 → uint8 steps (cached by the tf.data pipeline; augmentation runs after them)."""
        return tuple(s for s in self.steps if not s.is_float)

    @property
    def float_steps(self) -> tuple[Step, ...]:
        return tuple(s for s in self.steps if s.is_float)

    @property
    def input_size(self) -> int | None:
        for s in reversed(self.image_steps):
            if s.name == "two_view":
                return int(s.params["size"])
            if s.name == "resize":
                size = s.params["size"]
                return int(size) if isinstance(size, int) else int(size[0])
        return None

    @property
    def input_shape(self) -> tuple[int, int] | None:
        """(height, width) of the model input: the last ``resize`` (S × S or its pair), or ``two_view``'s
        S × 2·S when that comes last."""
        for s in reversed(self.image_steps):
            if s.name == "two_view":
                return (int(s.params["size"]), 2 * int(s.params["size"]))
            if s.name == "resize":
                size = s.params["size"]
                return (int(size), int(size)) if isinstance(size, int) else (int(size[0]), int(size[1]))
        return None

    @property
    def two_view(self) -> bool:
        """The model input is ``two_view``'s side-by-side image (no resize after it)."""
        last = next((s.name for s in reversed(self.image_steps) if s.name in ("two_view", "resize")), None)
        return last == "two_view"

    @property
    def onh_params(self) -> dict[str, Any] | None:
        """The optic-disc locator's parameters (``diameters`` + locator) of the ``onh_crop`` / ``two_view``
        step; None when the pipeline does not crop the ONH."""
        for s in self.image_steps:
            if s.name in ("onh_crop", "two_view"):
                return {k: v for k, v in s.params.items() if k in _ONH_DEFAULTS}
        return None

    @property
    def scaling(self) -> str:
        return self.steps[-1].params["mode"]

    def with_scaling(self, scaling: str | Scaling) -> "Pipeline":
        mode = scaling.value if isinstance(scaling, Scaling) else scaling
        return Pipeline(self.steps[:-1] + (Step("scale", {"mode": mode}),))

    def with_onh_view(self, **params) -> "Pipeline":
        """The same pipeline with these ``two_view`` parameters changed (``onh_blur``, ``subpixel``,
        ``diameters`` …; issue 18's ONH-view options). Refuses a pipeline without a ``two_view`` step."""
        if not any(s.name == "two_view" for s in self.steps):
            raise DataError("the ONH-view options need a two-view pipeline (--crop two-view)")
        return Pipeline(tuple(Step(s.name, {**s.params, **params}) if s.name == "two_view" else s
                              for s in self.steps))

    def names(self) -> list[str]:
        return [s.name for s in self.steps]

    # ---- running
    def apply_image(self, rgb: np.ndarray) -> np.ndarray:
        """Run the uint8 image steps only."""
        img = rgb
        if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
            img = to_rgb_uint8(img)
        for s in self.image_steps:
            img = s(img)
        return np.ascontiguousarray(img)

    def apply_float(self, img: np.ndarray) -> np.ndarray:
        """Run the float steps (standardize, scale) on an image-stepped uint8 image."""
        x = img
        for s in self.float_steps:
            x = s(x)
        return x

    def apply(self, rgb: np.ndarray) -> np.ndarray:
        """RGB uint8 (H, W, 3) → float32 model input (S, S, 3)."""
        return self.apply_float(self.apply_image(rgb))

    @property
    def uses_onh(self) -> bool:
        return any(s.name in ("onh_crop", "two_view") for s in self.steps)

    def apply_image_with_info(self, rgb: np.ndarray) -> tuple[np.ndarray, PipelineInfo]:
        """:meth:`apply_image` plus what the steps found (the ``onh_crop`` detection in input pixels)."""
        return self._run_image(rgb, stop_at_onh=False)

    def apply_with_info(self, rgb: np.ndarray) -> tuple[np.ndarray, PipelineInfo]:
        """:meth:`apply` plus a :class:`PipelineInfo` (e.g. ``info.disc_flagged``: the ONH crop is a
        low-confidence guess). The tensor is identical to :meth:`apply`'s."""
        img, info = self._run_image(rgb, stop_at_onh=False)
        return self.apply_float(img), info

    def load_with_info(self, path: str | os.PathLike) -> tuple[np.ndarray, PipelineInfo]:
        return self.apply_with_info(decode_image(path))

    def detect_disc(self, rgb: np.ndarray) -> DiscDetection | None:
        """Only the steps up to ``onh_crop``: its detection in input pixels (None without ``onh_crop``)."""
        if not self.uses_onh:
            return None
        return self._run_image(rgb, stop_at_onh=True)[1].disc

    def _run_image(self, rgb: np.ndarray, stop_at_onh: bool) -> tuple[np.ndarray, PipelineInfo]:
        img = rgb
        if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
            img = to_rgb_uint8(img)
        # input pixel = current pixel · (sx, sy) + (ox, oy): tracked through the geometric steps
        sx = sy = 1.0
        ox = oy = 0.0
        disc = None
        for s in self.image_steps:
            h, w = img.shape[:2]
            if s.name == "two_view":
                p = dict(s.params)
                if stop_at_onh:
                    p.pop("size"), p.pop("interpolation"), p.pop("onh_blur", None)
                    crop_fn = onh_crop_subpixel if p.pop("subpixel", False) else onh_crop_with_info
                    _, det = crop_fn(img, p.pop("diameters"), **p)
                    disc = det.scaled(sx, sy, ox, oy)
                    break
                img, det = two_view_with_info(img, **p)
                disc = det.scaled(sx, sy, ox, oy)
                continue
            if s.name == "onh_crop":
                p = dict(s.params)
                img, det = onh_crop_with_info(img, p.pop("diameters"), **p)
                disc = det.scaled(sx, sy, ox, oy)
                if stop_at_onh:
                    break
                side = img.shape[0]
                ox += sx * int(round(det.x - side / 2))
                oy += sy * int(round(det.y - side / 2))
                continue
            if s.name == "fov_crop":  # = fov_crop(img), with the offset it cut at
                y0, y1, x0, x1 = fov_crop_box(img, **s.params)
                ox, oy = ox + sx * x0, oy + sy * y0
                img = img[y0:y1, x0:x1]
                continue
            if s.name == "pad_square" and h != w:
                n = max(h, w)
                ox, oy = ox - sx * ((n - w) // 2), oy - sy * ((n - h) // 2)
            img = s(img)
            if s.name == "resize" and img.shape[:2] != (h, w):
                # pixel centres: x_in = (x_out + 0.5) · w / w' − 0.5
                fx, fy = w / img.shape[1], h / img.shape[0]
                ox, oy = ox + sx * (0.5 * fx - 0.5), oy + sy * (0.5 * fy - 0.5)
                sx, sy = sx * fx, sy * fy
        return np.ascontiguousarray(img), PipelineInfo(disc)

    def load_image(self, path: str | os.PathLike) -> np.ndarray:
        """Decode a file and run the image steps (uint8)."""
        return self.apply_image(decode_image(path))

    def load(self, path: str | os.PathLike) -> np.ndarray:
        """Decode a file and run every step: float32 model input."""
        return self.apply(decode_image(path))

    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        return self.apply(rgb)

    def describe(self) -> str:
        return " → ".join(
            s.name + ("(" + ", ".join(f"{k}={v}" for k, v in s.params.items()) + ")" if s.params else "")
            for s in self.steps)
