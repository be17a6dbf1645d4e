"""Where real data and weights live, and offline seeding of Keras' weight cache.

``EDGERETINA_SHARED`` points at the read-only folder of real datasets and ImageNet weights; it defaults
to ``../shared`` beside the repository checkout. Nothing from it is ever copied into the project.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def shared_dir() -> Path:
    env = os.environ.get("EDGERETINA_SHARED")
    return Path(env) if env else (REPO_ROOT.parent / "shared")


def keras_cache_dir() -> Path:
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    return Path(home) / "models"


def seed_keras_cache(source: str | os.PathLike | None = None) -> list[Path]:
    """Copy ImageNet ``*.h5`` weights from ``source`` (default ``shared_dir()/weights``) into Keras' cache.

    Keras looks in ``$KERAS_HOME/models/`` before downloading, so ``weights="imagenet"`` then works offline.
    Returns the files that are now in the cache. Missing source → nothing happens.
    """
    src = Path(source) if source else shared_dir() / "weights"
    if not src.is_dir():
        return []
    dst = keras_cache_dir()
    dst.mkdir(parents=True, exist_ok=True)
    out = []
    for f in sorted(src.glob("*.h5")):
        target = dst / f.name
        if not target.exists() or target.stat().st_size != f.stat().st_size:
            shutil.copyfile(f, target)
        out.append(target)
    return out
