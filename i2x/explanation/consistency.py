"""Shape consistency: whether a prototype looks the same in every image of its class that holds
it, up to a small shift and a change of brightness (issue 41).

The rigid-copy measure (:mod:`i2x.explanation.rigid`) asks for the same pixels at the same place,
which a pasted mark has and a mark that moves, varies in intensity, carries noise or is saved
as JPEG does not. This measure keeps what such cues still share, a shape: for each pair of the
class's images holding the prototype, the patch around its cell in one is compared with the
patch around its cell in the other at every shift up to one cell, by normalised cross-correlation
(zero mean, unit norm, so a fainter or brighter copy of the same shape scores as high); the
score is the median over pairs of the best correlation. A flat patch (blank canvas) has no shape
and scores 0 against anything.

It is a measurement reported beside the others; what it separates is measured in
``bench/shortcut_rules.py`` from the documents ``bench/power.py`` saves.
"""

from __future__ import annotations

import numpy as np
import torch

FLAT = 1e-3  # a patch whose pixels' standard deviation is below this ([0, 1] units) has no shape


def _patches(x: np.ndarray, centres: list[tuple[int, int, int]], half: int, shift: int) -> tuple[np.ndarray, np.ndarray]:
    """``(n, (2 * shift + 1) ** 2, C * (2 * half) ** 2)`` zero-mean, unit-norm patches of side
    ``2 * half`` centred on each ``(image, y, x)`` of ``centres`` moved by every shift up to
    ``shift`` pixels, flat patches all zeros; and ``(n, shifts)`` their standard deviations."""
    pad = half + shift
    padded = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    out = []
    for i, cy, cx in centres:
        rows = []
        for dy in range(-shift, shift + 1):
            for dx in range(-shift, shift + 1):
                y0, x0 = cy + pad + dy - half, cx + pad + dx - half
                rows.append(padded[i, :, y0:y0 + 2 * half, x0:x0 + 2 * half].ravel())
        out.append(rows)
    p = np.asarray(out, dtype=np.float32)
    p = p - p.mean(-1, keepdims=True)
    norm = np.linalg.norm(p, axis=-1, keepdims=True)
    std = p.std(-1, keepdims=True)
    return np.where(std < FLAT, 0.0, p / np.maximum(norm, 1e-12)).astype(np.float32), std[..., 0]


def shape_consistency(images: torch.Tensor, assignment: np.ndarray, labels: np.ndarray, classes: np.ndarray,
                      max_images: int = 48, seed: int = 0) -> np.ndarray:
    """For each prototype k, in its class's images that hold it (up to ``max_images``, drawn
    with ``seed``): the median over pairs of images of the best normalised cross-correlation of
    the patches around k's cell (the cell's side plus half a cell each way): one image's patch
    where it has the most contrast within a cell of k's cell (a prototype often takes in blank
    cells beside a mark), against the other's at every shift of up to one cell. A square that moves within a corner and varies in intensity scores near 1; the
    strokes of handwritten digits vary in shape and score lower (what separates them is measured,
    not assumed: ``bench/shortcut_rules.py``). 0 where fewer than 2 images hold k.

    Args:
        images: ``(N, C, H, W)`` uint8; assignment: ``(N, h, w)`` prototype ids per cell;
        labels: ``(N,)``; classes: ``(K,)`` the class each prototype is read in.
    """
    x = images.float().numpy() / 255
    (_, _, height, width), (_, h, w) = x.shape, assignment.shape
    ch, cw = height / h, width / w
    half, shift = int(np.ceil(max(ch, cw))), int(np.ceil(max(ch, cw)))
    rng = np.random.default_rng(seed)
    out = np.zeros(len(classes))
    for k, c in enumerate(classes):
        hit = assignment == k
        holders = np.flatnonzero((labels == c) & hit.reshape(len(hit), -1).any(1))
        if len(holders) < 2:
            continue
        if len(holders) > max_images:
            holders = np.sort(rng.choice(holders, size=max_images, replace=False))
        freq = hit[labels == c].mean(0)
        centres = []
        for i in holders:  # the image's cell of k nearest k's most frequent cell in the class
            cells = np.argwhere(hit[i])
            r, q = min(cells, key=lambda rc: (-freq[rc[0], rc[1]], rc[0], rc[1]))
            centres.append((int(i), int(round((r + 0.5) * ch)), int(round((q + 0.5) * cw))))
        p, std = _patches(x, centres, half, shift)
        anchor = p[np.arange(len(p)), std.argmax(1)]  # each image's patch on the most contrast within a cell of k's cell
        best = np.einsum("ad,bsd->abs", anchor, p).max(-1)  # a's anchor against b's patch at every shift
        best = np.maximum(best, best.T)
        pairs = best[np.triu_indices(len(p), 1)]
        out[k] = float(np.median(pairs))
    return out
