"""Test-time averaging (issue 18): a binary screening score as the mean logit over ``k`` small moves of the
model input, so a decision does not hang on the backbone's pixel-grid phase (a strided CNN is not
shift-invariant: a 1-px move of its input changes its pooled features).

The moves are whole pixels of the **model input** (:data:`MOVES`, first ``k``), edge pixels repeated; a
two-view input (whole fundus | ONH crop side by side) moves each half on its own, so no view borrows the
other's pixels. Cost: ``k`` model runs per photo (``k``× the latency); nothing else changes (the same model
file, the same threshold scale — it is re-chosen on the averaged out-of-fold scores).
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from edgeretina.errors import EdgeRetinaError

#: (dx, dy) in model-input pixels; k = 1 is the plain model, k = 4 the 2 × 2 block
MOVES: tuple[tuple[int, int], ...] = ((0, 0), (1, 0), (0, 1), (1, 1), (-1, 0), (0, -1), (-1, -1), (1, -1))
MAX_K = len(MOVES)


def check_k(k: int) -> int:
    if not 1 <= int(k) <= MAX_K:
        raise EdgeRetinaError(f"test-time averaging takes 1 to {MAX_K} moves, got {k}")
    return int(k)


def move(x: np.ndarray, dx: int, dy: int, two_view: bool = False) -> np.ndarray:
    """A batch (N, H, W, C) with its content moved ``dx`` px right and ``dy`` px down, edges repeated; a
    two-view batch (W = 2H) moves each half separately."""
    if dx == 0 and dy == 0:
        return x
    if two_view:
        h = x.shape[2] // 2
        return np.concatenate([move(x[:, :, :h], dx, dy), move(x[:, :, h:], dx, dy)], axis=2)
    p = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="edge")
    return np.ascontiguousarray(p[:, 1 - dy:1 - dy + x.shape[1], 1 - dx:1 - dx + x.shape[2]])


def averaged_scores(score: Callable[[np.ndarray], np.ndarray], x: np.ndarray, k: int,
                    two_view: bool = False) -> np.ndarray:
    """``score`` (a batch → p(positive)) averaged over the first ``k`` :data:`MOVES` in logit space."""
    if check_k(k) == 1:
        return np.asarray(score(x), np.float64)
    logits = []
    for dx, dy in MOVES[:k]:
        p = np.clip(np.asarray(score(move(x, dx, dy, two_view)), np.float64), 1e-7, 1 - 1e-7)
        logits.append(np.log(p) - np.log1p(-p))
    return 1.0 / (1.0 + np.exp(-np.mean(logits, axis=0)))
