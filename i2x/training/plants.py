"""Planted defects in any data set (``plant.*``): a mark with a known place and a known
correlation with the labels, so that what the explanation finds can be checked against the
truth and its power measured (:class:`i2x.platform.config.PlantConfig`).

The mark is stamped into the uint8 images after loading, before the splits. Its own seeded
stream leaves every other draw of the bundle (splits, analysis subset) as it was. Each image's
mark box is kept beside the images; the groups built from it are for metrics and baselines
only (:mod:`i2x.training.groups`), never an input of the explanation or the tuner.
"""

from __future__ import annotations

import numpy as np
import torch

from i2x.platform.config import PlantConfig
from i2x.platform.errors import I2XError

_STREAM = 7919  # the plant's own stream of the run's seed


def check_plant(cfg: PlantConfig, num_classes: int, channels: int, size: int) -> None:
    """One-line refusal of a plant that cannot be stamped into these images."""
    if cfg.kind == "none":
        return
    bad = [c for c in cfg.classes if not 0 <= c < num_classes]
    if not cfg.classes or bad:
        raise I2XError(f"plant.classes must be class indices in 0..{num_classes - 1}, got {list(cfg.classes)}")
    if cfg.kind == "confuser" and len(set(cfg.classes)) != 2:
        raise I2XError(f"plant.kind=confuser needs exactly two plant.classes, got {list(cfg.classes)}")
    if len(cfg.color) not in (1, channels) or not all(0 <= v <= 255 for v in cfg.color):
        raise I2XError(f"plant.color must be 1 or {channels} values in 0..255 for these images, got {list(cfg.color)}")
    if cfg.size > size or max(cfg.region, cfg.size) > size:
        raise I2XError(f"plant.size {cfg.size} / plant.region {cfg.region} do not fit {size}x{size} images; make them smaller")


def stamp(cfg: PlantConfig, channels: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The mark: ``(C, s, s)`` uint8 values and ``(s, s)`` bool coverage."""
    s = cfg.size
    cover = torch.zeros(s, s, dtype=torch.bool)
    if cfg.mark == "square":
        cover[:] = True
    elif cfg.mark == "ring":
        edge = max(1, s // 5)
        cover[:edge], cover[-edge:], cover[:, :edge], cover[:, -edge:] = True, True, True, True
    else:  # stripes: every other row, a texture rather than a blob
        cover[::2] = True
    color = torch.tensor(cfg.color if len(cfg.color) == channels else cfg.color * channels, dtype=torch.uint8)
    return color.view(-1, 1, 1).expand(channels, s, s).clone(), cover


def _corner_origin(cfg: PlantConfig, size: int, side: int) -> tuple[int, int]:
    """Top-left pixel of the corner's square of ``side`` pixels."""
    y = 0 if cfg.corner[0] == "t" else size - side
    x = 0 if cfg.corner[1] == "l" else size - side
    return y, x


def _choose(labels: np.ndarray, share_of: dict[int, float], rng: np.random.Generator) -> np.ndarray:
    """``(N,)`` bool: exactly ``round(share * n_c)`` images of each class ``c``, seeded."""
    marked = np.zeros(len(labels), dtype=bool)
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        take = int(round(share_of.get(int(c), 0.0) * len(members)))
        marked[rng.choice(members, size=take, replace=False)] = True
    return marked


def stamp_into(x: torch.Tensor, marked: np.ndarray, cfg: PlantConfig, rng: np.random.Generator) -> torch.Tensor:
    """Stamp the mark into the ``marked`` images of ``x`` (in place); ``(N, 4)`` boxes
    ``(y0, x0, y1, x1)``, -1 where there is none."""
    n, channels, size = x.shape[0], x.shape[1], x.shape[-1]
    values, cover = stamp(cfg, channels)
    s = cfg.size
    boxes = torch.full((n, 4), -1, dtype=torch.int64)
    side = (cfg.region or 2 * s) if cfg.position == "random" else s
    oy, ox = _corner_origin(cfg, size, min(side, size))
    for i in np.flatnonzero(marked):
        dy, dx = (rng.integers(0, min(side, size) - s + 1, size=2) if cfg.position == "random" else (0, 0))
        y0, x0 = oy + int(dy), ox + int(dx)
        patch = x[i, :, y0 : y0 + s, x0 : x0 + s]
        x[i, :, y0 : y0 + s, x0 : x0 + s] = torch.where(cover, values, patch)
        boxes[i] = torch.tensor((y0, x0, y0 + s, x0 + s))
    return boxes


def mark_share_of_every_class(x: torch.Tensor, y: torch.Tensor, cfg: PlantConfig, seed: int) -> tuple[torch.Tensor, np.ndarray]:
    """A copy of the unplanted images ``x`` with the mark in a share ``cfg.test`` of every class,
    independently of class, as the test split carries it (a held-out set where every (class,
    mark) group occurs: DFR's, :mod:`i2x.repair.baselines`). Returns the images and ``(N,)``
    whether each was marked."""
    rng = np.random.default_rng([seed, _STREAM, 1])
    marked = _choose(y.numpy(), dict.fromkeys(range(int(y.max()) + 1), cfg.test), rng)
    out = x.clone()
    stamp_into(out, marked, cfg, rng)
    return out, marked


def apply_plant(
    cfg: PlantConfig, seed: int, train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Plant the mark in copies of the training and test images.

    Args:
        train_x / test_x: ``(N, C, H, W)`` uint8 images; train_y / test_y: ``(N,)`` labels.

    Returns:
        the planted training and test images, and their ``(N, 4)`` mark boxes (-1: none).
    """
    rng = np.random.default_rng([seed, _STREAM])
    planted = {c: cfg.rho for c in cfg.classes}
    others = {c: cfg.other for c in range(int(max(train_y.max(), test_y.max())) + 1) if c not in planted}
    train_x, test_x = train_x.clone(), test_x.clone()
    train_marked = _choose(train_y.numpy(), planted | others, rng)
    test_marked = _choose(test_y.numpy(), dict.fromkeys(range(int(test_y.max()) + 1), cfg.test), rng)
    train_boxes = stamp_into(train_x, train_marked, cfg, rng)
    test_boxes = stamp_into(test_x, test_marked, cfg, rng)
    return train_x, test_x, train_boxes, test_boxes
