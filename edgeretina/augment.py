"""Named augmentation policies on RGB uint8 images (after the pipeline's image steps, before scaling).

- ``mvoulana``: rotation ±40°, zoom 0.8–1.2, shear factor ±0.2, horizontal and vertical flips (p = 0.5 each)
  — the glaucoma fine-tuning paper's Keras ``ImageDataGenerator(rotation_range=40, zoom_range=0.2,
  shear_range=0.2, horizontal_flip=True, vertical_flip=True)`` as one affine warp.
- ``odir``: Gaussian noise with variance 0.01 on the 0–1 intensity scale (σ = 0.1 × 255), rotation ±45°,
  0.2–99.8 percentile contrast stretch (p = 0.5); **no flips** (left/right eyes are mirror images, so a
  flip changes the apparent eye).
- ``camera``: another fundus camera or phone adapter (issue 12): two camera shifts per image from
  ``edgeretina.shifts`` (colour cast, gamma, contrast, defocus and motion blur, JPEG quality, down-then-up
  sampling, illumination gradient, vignetting, FOV cut / frame / smaller FOV, small rotation/scale), each of
  a random kind at a random strength between none and the registry's ``severe`` level, applied in acquisition
  order. A shift that changes the canvas (a 4:3/3:2 frame) is re-fitted to the input size the way the
  default Pipeline does (FOV crop, pad to square, resize).
- ``none``: identity.
- ``<policy>+minority-only`` (or ``minority_only=True``): augment only positive / unhealthy records
  (``edgeretina.data.is_minority``); the others pass through unchanged.

Every policy is deterministic under a seed: ``policy.apply(img, seed)`` with the same seed gives the same
image (the tf.data pipeline draws one seed per element per epoch from ``Dataset.random(seed)``).
Geometric warps use ``cv2.warpAffine`` (bilinear, black border — the fundus background).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

import cv2
import numpy as np

from edgeretina.errors import DataError
from edgeretina.preprocess import fov_crop, pad_square
from edgeretina.preprocess import stretch as _stretch
from edgeretina.shifts import random_camera


@dataclass(frozen=True)
class Policy:
    name: str
    rotation: float = 0.0          # max |angle| in degrees, uniform in [-rotation, rotation]
    zoom: float = 0.0              # scale uniform in [1 - zoom, 1 + zoom]
    shear: float = 0.0             # shear factor uniform in [-shear, shear]
    hflip: float = 0.0             # probability
    vflip: float = 0.0             # probability
    noise_var: float = 0.0         # Gaussian noise variance on the 0..1 scale
    stretch_p: float = 0.0         # probability of a 0.2-99.8 percentile contrast stretch
    minority_only: bool = False
    camera: int = 0                # camera shifts per image (edgeretina.shifts), random kind and strength
    camera_strength: float = 1.0   # strength drawn uniform in [0, camera_strength]; 1 = the severe level

    @property
    def is_identity(self) -> bool:
        return not any((self.rotation, self.zoom, self.shear, self.hflip, self.vflip, self.noise_var,
                        self.stretch_p, self.camera))

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def __call__(self, img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Augment one RGB uint8 image with random numbers from ``rng`` (always drawn in the same order)."""
        u = rng.random(8)
        out = img
        geo = self.rotation or self.zoom or self.shear or self.hflip or self.vflip
        if geo:
            h, w = img.shape[:2]
            ang = np.deg2rad((2 * u[0] - 1) * self.rotation)
            zoom = 1.0 + (2 * u[1] - 1) * self.zoom
            sh = (2 * u[2] - 1) * self.shear
            fx = -1.0 if u[3] < self.hflip else 1.0
            fy = -1.0 if u[4] < self.vflip else 1.0
            c, s = np.cos(ang), np.sin(ang)
            rot = np.array([[c, -s], [s, c]])
            m = rot @ np.array([[1.0, sh], [0.0, 1.0]]) @ np.diag([fx * zoom, fy * zoom])
            ctr = np.array([(w - 1) / 2.0, (h - 1) / 2.0])
            a = np.hstack([m, (ctr - m @ ctr)[:, None]])
            out = cv2.warpAffine(out, a, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                                 borderValue=(0, 0, 0))
        if self.stretch_p and u[5] < self.stretch_p:
            out = _stretch(out, 0.2, 99.8)
        if self.noise_var:
            sigma = np.sqrt(self.noise_var) * 255.0
            noise = rng.normal(0.0, sigma, size=out.shape).astype(np.float32)
            out = np.clip(np.rint(out.astype(np.float32) + noise), 0, 255).astype(np.uint8)
        if self.camera:
            out = _camera(out, rng, self.camera, self.camera_strength)
        return np.ascontiguousarray(out)

    def apply(self, img: np.ndarray, seed: int | tuple | list) -> np.ndarray:
        return self(img, np.random.default_rng(seed))


def _camera(img: np.ndarray, rng: np.random.Generator, n: int, strength: float) -> np.ndarray:
    """``n`` random camera shifts; a re-framed canvas is fitted back to ``img``'s size (FOV crop → square →
    resize), as the model's Pipeline would."""
    out = random_camera(img, rng, n=n, max_strength=strength)
    if out.shape != img.shape:
        h, w = img.shape[:2]
        out = cv2.resize(pad_square(fov_crop(out)), (w, h), interpolation=cv2.INTER_AREA)
    return out


POLICIES: dict[str, Policy] = {
    "none": Policy("none"),
    "mvoulana": Policy("mvoulana", rotation=40.0, zoom=0.2, shear=0.2, hflip=0.5, vflip=0.5),
    "odir": Policy("odir", rotation=45.0, noise_var=0.01, stretch_p=0.5),
    "camera": Policy("camera", camera=2, camera_strength=1.0),
}
MINORITY_SUFFIX = "+minority-only"


def get_policy(policy: str | Policy | None, minority_only: bool | None = None) -> Policy | None:
    """Name (``mvoulana``, ``odir``, ``none``, optionally ``+minority-only``) or Policy → Policy; None → None."""
    if policy is None:
        return None
    if isinstance(policy, Policy):
        p = policy
    else:
        name = str(policy).strip().lower()
        mo = name.endswith(MINORITY_SUFFIX)
        base = name[: -len(MINORITY_SUFFIX)] if mo else name
        if base not in POLICIES:
            raise DataError(f"unknown augmentation policy '{policy}' (choose from: {', '.join(POLICIES)}, "
                            f"optionally with '{MINORITY_SUFFIX}')")
        p = replace(POLICIES[base], minority_only=mo)
    if minority_only is not None:
        p = replace(p, minority_only=bool(minority_only))
    return p


def augment_batch(images: np.ndarray, policy: str | Policy, seed: int = 0,
                  apply_mask: np.ndarray | None = None) -> np.ndarray:
    """Augment a stack of uint8 images deterministically (image i uses seed ``[seed, i]``); ``apply_mask``
    selects which images are augmented (e.g. the minority ones)."""
    p = get_policy(policy)
    out = np.empty_like(images)
    for i, img in enumerate(images):
        do = p is not None and not p.is_identity and (apply_mask is None or bool(apply_mask[i]))
        out[i] = p.apply(img, [int(seed), i]) if do else img
    return out
