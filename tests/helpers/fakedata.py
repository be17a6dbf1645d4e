"""Small datasets in the real on-disk formats, written from the embedded synthetic-fundus generator, for tests
of task kinds the synthetic set does not serve (DR grading, ODIR multi-label): a RetinaMNIST-style ``.npz``
and an ODIR-5K-style folder (``annotations.csv`` + ``images/``). The labels are drawn independently of the
pictures: these sets exercise loading, scoring and reporting, not learning."""
from __future__ import annotations

from pathlib import Path

import numpy as np

ODIR_HEADER = ("ID,Patient Age,Patient Sex,Left-Fundus,Right-Fundus,Left-Diagnostic Keywords,"
               "Right-Diagnostic Keywords,Normal,Diabetes,Glaucoma,Cataract,Age related Macular Degeneration,"
               "Hypertension,Pathological Myopia,Other diseases/abnormalities")
# one keyword per ODIR label (N D G C A H M O), as the real annotations spell them
ODIR_KEYWORDS = ("normal fundus", "moderate non proliferative retinopathy", "glaucoma", "cataract",
                 "dry age-related macular degeneration", "hypertensive retinopathy", "pathological myopia",
                 "drusen")


def write_retinamnist_npz(path: str | Path, n_train: int = 20, n_val: int = 10, n_test: int = 60,
                          size: int = 32, seed: int = 0) -> Path:
    """A RetinaMNIST-format ``.npz`` (``{train,val,test}_images`` uint8 (N, size, size, 3), ``*_labels``
    (N, 1) DR grades 0–4, every grade in every split)."""
    from edgeretina.data.synthetic import generate

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n = n_train + n_val + n_test
    images, _, _ = generate(n, seed=seed, size=size)
    rng = np.random.default_rng(seed)
    arrays, start = {}, 0
    for split, k in (("train", n_train), ("val", n_val), ("test", n_test)):
        arrays[f"{split}_images"] = images[start:start + k]
        arrays[f"{split}_labels"] = rng.permutation(np.arange(k) % 5).reshape(-1, 1).astype(np.uint8)
        start += k
    np.savez_compressed(path, **arrays)
    return path


def write_mini_odir(root: str | Path, n_patients: int = 60, size: int = 64, seed: int = 0) -> Path:
    """An ODIR-5K-format folder: ``n_patients`` patients, both eyes photographed (JPEG), each eye with one or
    two diagnostic keywords drawn at random (every label occurs), the patient-level flags from both eyes."""
    import cv2

    from edgeretina.data.synthetic import generate

    root = Path(root)
    (root / "images").mkdir(parents=True, exist_ok=True)
    images, _, _ = generate(2 * n_patients, seed=seed, size=size)
    rng = np.random.default_rng(seed)
    rows = []
    for pid in range(1, n_patients + 1):
        eyes, flags = [], np.zeros(8, int)
        for side, img in (("left", images[2 * pid - 2]), ("right", images[2 * pid - 1])):
            name = f"{pid}_{side}.jpg"
            cv2.imwrite(str(root / "images" / name), img[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95])
            first = (2 * pid + (side == "right")) % 8  # every label occurs
            labels = {first} if first == 0 or rng.random() < 0.6 else {first, int(rng.integers(1, 8))}
            flags[list(labels)] = 1
            eyes.append((name, "，".join(ODIR_KEYWORDS[j] for j in sorted(labels))))
        (left, lkw), (right, rkw) = eyes
        rows.append(f'{pid},60,Female,{left},{right},"{lkw}","{rkw}",' + ",".join(map(str, flags)))
    (root / "annotations.csv").write_text(ODIR_HEADER + "\n" + "\n".join(rows) + "\n", encoding="utf-8")
    return root
