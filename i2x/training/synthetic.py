"""The synthetic data set with known ground truth (``data.name=synthetic``): shapes, a
planted mark that alone separates two classes, and an optional planted confuser shared by
two others. The tests and the smoke config check the explanation against these plants.
"""

from __future__ import annotations

import numpy as np
import torch

from i2x.platform.errors import I2XError

SYNTHETIC_CLASSES = ("bar", "bar+mark", "column", "diagonal")
SYNTHETIC_MARK_REGION = 12  # the mark lies inside the top-left 12x12 pixels
SYNTHETIC_CONFUSER_REGION = 12  # the confuser lies inside the bottom-left 12x12 pixels


def make_synthetic(
    per_class: int, seed: int, size: int = 32, confuser: float = 0.0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A data set with known ground truth, for tests and the smoke config.

    Class ``bar`` is a horizontal bar in the lower half; ``bar+mark`` is the same
    plus a planted 5x5 ring mark inside the top-left 12x12 region, and nothing else
    tells the two apart. The ring's brightness varies from image to image (90 to 255 over
    a background of 0 to 60), so how fast each image is learned depends on its mark. ``column`` is a vertical bar on the right, ``diagonal`` a
    diagonal line. Background is seeded noise.

    With ``confuser`` > 0, that share of the ``column`` and of the ``diagonal`` images lose
    their shape and show only a filled 4x4 square (the confuser) in the bottom-left 12x12
    region: the same cue under two labels, so the model confuses the two classes through it
    and its pull swings between them as training goes.

    Returns:
        images ``(4*per_class, 1, size, size)`` uint8, labels ``(4*per_class,)``, boxes
        ``(4*per_class, 2, 4)``: the mark's and the confuser's ``(y0, x0, y1, x1)``, -1 where
        there is none.
    """
    gen = np.random.default_rng(seed)
    n = 4 * per_class
    images = gen.integers(0, 60, size=(n, size, size)).astype(np.float32)
    labels = np.repeat(np.arange(4), per_class)
    boxes = np.full((n, 2, 4), -1, dtype=np.int64)
    half = size // 2
    for i, label in enumerate(labels):
        if label in (0, 1):
            row = gen.integers(half + 2, size - 4)
            x0 = gen.integers(0, size // 4)
            images[i, row : row + 2, x0 : x0 + size // 2 + gen.integers(4, size // 4)] = 230
        if label == 1:
            y, x = gen.integers(1, SYNTHETIC_MARK_REGION - 5, size=2)
            images[i, y : y + 5, x : x + 5] = gen.integers(70, 256)  # faint to bright: some marks are easier to learn
            images[i, y + 1 : y + 4, x + 1 : x + 4] = 0
            boxes[i, 0] = (y, x, y + 5, x + 5)
        elif label == 2:
            col = gen.integers(half + 2, size - 4)
            y0 = gen.integers(0, size // 4)
            images[i, y0 : y0 + size // 2 + gen.integers(4, size // 4), col : col + 2] = 230
        elif label == 3:
            offset = gen.integers(-6, 7)
            for t in range(size):
                c = t + offset
                if 0 <= c < size - 1:
                    images[i, t, c : c + 2] = 230
    if confuser:
        if not 0 < confuser <= 1:
            raise I2XError(f"data.synthetic_confuser must be a share in (0, 1], got {confuser}")
        cgen = np.random.default_rng(seed + 1000)  # its own stream: the rest of the set is unchanged
        for label in (2, 3):
            members = np.flatnonzero(labels == label)
            for i in cgen.choice(members, size=int(round(confuser * len(members))), replace=False):
                images[i] = cgen.integers(0, 60, size=(size, size))  # the shape is gone: only the confuser is left
                y = cgen.integers(size - SYNTHETIC_CONFUSER_REGION, size - 5)
                x = cgen.integers(1, SYNTHETIC_CONFUSER_REGION - 4)
                images[i, y : y + 4, x : x + 4] = 200
                boxes[i, 1] = (y, x, y + 4, x + 4)
    order = gen.permutation(n)
    x = torch.from_numpy(np.clip(images, 0, 255).astype(np.uint8)[order]).unsqueeze(1)
    return x, torch.from_numpy(labels[order]).long(), torch.from_numpy(boxes[order])
