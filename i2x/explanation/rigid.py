"""Rigid copies inside prototypes: whether a prototype holds the same pixels at one place in
nearly every image of its class (a pasted mark does; parts of objects do not), and, for a
repair to act on, those pixels as a copy row that :func:`i2x.explanation.copies.copy_cells`
finds in any image."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from i2x.explanation.prototypes import NINTHS, _part

RIGID_SHARE = 0.98  # the share of images a rigid copy's pixels must agree in (the report quotes it)


def _cell_copy(x: np.ndarray, here: np.ndarray, rest: np.ndarray, box: tuple[int, int, int, int], tolerance: float,
               share: float, min_contrast: float) -> tuple[float, np.ndarray, np.ndarray]:
    """One grid cell (``box`` = y0, x0, y1, x1 in pixels) of the images ``here`` (bool over ``x``):
    (the share of its pixels that stay within ``tolerance`` of their median in at least ``share``
    of those images and differ from ``rest`` (the other classes' mean image) by
    ``min_contrast``, that pixel mask ``(ph, pw)``, the median ``(C, ph, pw)``)."""
    y0, x0, y1, x1 = box
    patch = x[here, :, y0:y1, x0:x1]
    median = np.median(patch, 0)
    contrast = np.abs(median - rest[:, y0:y1, x0:x1]).max(0) >= min_contrast
    same = ((np.abs(patch - median) <= tolerance).mean(0) >= share).all(0)
    keep = same & contrast
    return float(keep.mean()), keep, median


def _core_cells(x: np.ndarray, assignment: np.ndarray, labels: np.ndarray, k: int, c: int, rest: np.ndarray, tolerance: float,
                share: float, min_contrast: float) -> list[tuple[float, tuple[int, int], tuple[int, int, int, int], np.ndarray, np.ndarray]]:
    """:func:`_cell_copy` of each core cell of prototype ``k`` (where it is at least half as often
    as at its most frequent cell) in class ``c``'s images where ``k`` sits there."""
    (_, _, height, width), (_, h, w) = x.shape, assignment.shape
    mine = labels == c
    freq = (assignment[mine] == k).mean(0)
    if freq.sum() == 0:
        return []
    out = []
    for r, q in zip(*np.nonzero(freq >= 0.5 * freq.max()), strict=True):
        here = mine.copy()
        here[mine] = assignment[mine, r, q] == k
        if here.sum() < 2:
            continue
        box = (r * height // h, q * width // w, -(-(r + 1) * height // h), -(-(q + 1) * width // w))
        score, keep, median = _cell_copy(x, here, rest, box, tolerance, share, min_contrast)
        out.append((score, (int(r), int(q)), box, keep, median))
    return out


def rigidity(images: torch.Tensor, assignment: np.ndarray, labels: np.ndarray, classes: np.ndarray,
             tolerance: float = 0.15, share: float = RIGID_SHARE, min_contrast: float = 0.25) -> tuple[np.ndarray, list[str | None]]:
    """Whether prototype k is a rigid copy, the same pixels in nearly every image: over
    its core cells (where it is at least half as often as at its most frequent cell) in its
    class's images, the largest share of a cell's pixels that stay within ``tolerance`` of their
    median in at least ``share`` of the images where k sits there (every channel; [0, 1] pixel
    units) and whose median differs from the other classes' mean by ``min_contrast`` (blank
    canvas is the same everywhere, and is not a copy). A mark pasted at one place scores 1;
    parts of objects vary from image to image (18 MNIST power runs, ``bench/shortcut_rules.py``:
    every planted mark's prototype 1.0; the other shortcut-check candidates median 0.03, the
    most regular, the stroke of a 1, up to 0.94).

    Args:
        images: ``(N, C, H, W)`` uint8; assignment: ``(N, h, w)``; labels: ``(N,)``;
        classes: ``(K,)`` the class each prototype is read in (its most covered).

    Returns:
        ``(K,)`` scores, and for each the ninth of the image its best cell lies in ("bottom-right"),
        None where no cell scores: where the copy is, more precisely than where the whole
        prototype sits (a mark's prototype often takes in cells around it).
    """
    x = images.float().numpy() / 255
    h, w = assignment.shape[1:]
    out = np.zeros(len(classes))
    where: list[str | None] = [None] * len(classes)
    rest = {c: x[labels != c].mean(0) for c in np.unique(classes) if (labels != c).any()}  # the other classes' mean image
    for k, c in enumerate(classes):
        if c not in rest:
            continue
        for score, (r, q), *_ in _core_cells(x, assignment, labels, k, c, rest[c], tolerance, share, min_contrast):
            if score > out[k]:
                out[k], where[k] = score, NINTHS[int(_part(r, 3, h))][int(_part(q, 3, w))]
    return out, where


def rigid_copy(images: torch.Tensor, assignment: np.ndarray, labels: np.ndarray, k: int, c: int, tolerance: float = 0.15,
               share: float = RIGID_SHARE, min_contrast: float = 0.25) -> dict[str, Any] | None:
    """Prototype ``k``'s rigid copy in class ``c`` as a copy row (``box``, ``mask``,
    ``reference``, ``where``, ``pixels``; :func:`i2x.explanation.copies.copy_cells` finds it in
    any image; ``prototype``: ``k``): the pixels of its best core cell that :func:`rigidity`
    counts, their median as the reference. None where no cell holds one.

    A shortcut check is a claim about such a copy, and what the model reads there is the
    copy's pixels, not the prototype's id: one mark can be split over two prototypes (the
    mark's cell, and the cells beside it that see it) whose ids move with float noise between
    machines, while the pixels do not.
    """
    x = images.float().numpy() / 255
    others = labels != c
    if not others.any():
        return None
    cells = _core_cells(x, assignment, labels, k, c, x[others].mean(0), tolerance, share, min_contrast)
    if not cells:
        return None
    score, (r, q), box, keep, median = max(cells, key=lambda t: t[0])
    if not keep.any():
        return None
    h, w = assignment.shape[1:]
    return {"box": [int(v) for v in box], "mask": keep.tolist(), "reference": median.tolist(), "pixels": int(keep.sum()),
            "where": NINTHS[int(_part(r, 3, h))][int(_part(q, 3, w))], "rigid": score, "prototype": int(k)}
