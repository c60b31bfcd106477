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
    if cfg.mark == "text":
        h, w = text_cover(cfg.text, cfg.size).shape
        if not cfg.text.strip() or w > size or h > size:
            raise I2XError(f"plant.text {cfg.text!r} at plant.size {cfg.size} is {w}x{h} pixels, which does not fit {size}x{size} "
                           "images; give a shorter text or a smaller size")


WHOLE_IMAGE = ("tint", "texture")  # marks that change the image, not a patch of it
FOREGROUND = 0.1  # a pixel brighter than this (in [0, 1], any channel) is the object's, for tint and texture


def text_cover(text: str, height: int) -> torch.Tensor:
    """``(h, w)`` bool: ``text`` rendered about ``height`` pixels high (Pillow's default font),
    cropped to its ink."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default(size=max(4, height))
    left, top, right, bottom = font.getbbox(text)
    canvas = Image.new("L", (right - left + 2, bottom - top + 2), 0)
    ImageDraw.Draw(canvas).text((1 - left, 1 - top), text, fill=255, font=font)
    ink = torch.from_numpy(np.asarray(canvas) > 96)
    rows, cols = torch.nonzero(ink.any(1)).flatten(), torch.nonzero(ink.any(0)).flatten()
    return ink[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1] if len(rows) else ink


def stamp(cfg: PlantConfig, channels: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The mark: ``(C, h, w)`` uint8 values and ``(h, w)`` bool coverage (``h = w = size``
    but for text)."""
    s = cfg.size
    cover = torch.zeros(s, s, dtype=torch.bool)
    if cfg.mark in ("square", *WHOLE_IMAGE):
        cover[:] = True
    elif cfg.mark == "ring":
        edge = max(1, s // 5)
        cover[:edge], cover[-edge:], cover[:, :edge], cover[:, -edge:] = True, True, True, True
    elif cfg.mark == "text":
        cover = text_cover(cfg.text, s)
    else:  # stripes: every other row, a texture rather than a blob
        cover[::2] = True
    color = torch.tensor(cfg.color if len(cfg.color) == channels else cfg.color * channels, dtype=torch.uint8)
    return color.view(-1, 1, 1).expand(channels, *cover.shape).clone(), cover


def _corner_origin(cfg: PlantConfig, size: int, side: int, wide: int | None = None) -> tuple[int, int]:
    """Top-left pixel of the corner's rectangle of ``side`` rows and ``wide`` (default ``side``) columns."""
    y = 0 if cfg.corner[0] == "t" else size - side
    x = 0 if cfg.corner[1] == "l" else size - (side if wide is None else wide)
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
    ``(y0, x0, y1, x1)``, -1 where there is none (for ``tint`` and ``texture``, the whole image).
    Each mark's values are ``color`` times a factor drawn from ``intensity`` to 1, plus pixel noise
    of standard deviation ``noise``; ``position: random`` moves it within its corner's square."""
    n, channels, size = x.shape[0], x.shape[1], x.shape[-1]
    values, cover = stamp(cfg, channels)
    h, w = cover.shape
    boxes = torch.full((n, 4), -1, dtype=torch.int64)
    side = min((cfg.region or 2 * max(h, w)) if cfg.position == "random" else max(h, w), size)
    oy, ox = _corner_origin(cfg, size, side) if cfg.position == "random" else _corner_origin(cfg, size, h, w)
    for i in np.flatnonzero(marked):
        factor = rng.uniform(cfg.intensity, 1.0) if cfg.intensity < 1 else 1.0
        if cfg.mark in WHOLE_IMAGE:
            img = x[i].float()
            fg = (img.amax(0, keepdim=True) >= FOREGROUND * 255).expand_as(img)
            if cfg.mark == "tint":
                scale = (values[:, :1, :1].float() / 255) * factor
                img = torch.where(fg, img * scale, img)
            else:
                stripes = torch.zeros(1, size, size)
                stripes[:, ::2] = 1.0
                img = torch.where(fg, img, img + stripes * values[:, :1, :1].float() * factor)
            img = img + torch.from_numpy(rng.normal(0, 255 * cfg.noise, img.shape)).float() if cfg.noise else img
            x[i] = img.round().clamp(0, 255).to(torch.uint8)
            boxes[i] = torch.tensor((0, 0, size, size))
            continue
        if cfg.position != "random":
            dy, dx = 0, 0
        elif h == w:  # one draw of two, as before text marks: the same seed plants the same images
            dy, dx = (int(v) for v in rng.integers(0, side - h + 1, size=2))
        else:
            dy, dx = int(rng.integers(0, side - h + 1)), int(rng.integers(0, side - w + 1))
        y0, x0 = oy + dy, ox + dx
        value = values.float() * factor
        if cfg.noise:
            value = value + torch.from_numpy(rng.normal(0, 255 * cfg.noise, value.shape)).float()
        patch = x[i, :, y0 : y0 + h, x0 : x0 + w]
        x[i, :, y0 : y0 + h, x0 : x0 + w] = torch.where(cover, value.round().clamp(0, 255).to(torch.uint8), patch)
        boxes[i] = torch.tensor((y0, x0, y0 + h, x0 + w))
    return boxes


def reencode_jpeg(x: torch.Tensor, quality: int) -> torch.Tensor:
    """Every image of ``x`` (uint8 ``(N, C, H, W)``) saved as JPEG at ``quality`` and read back."""
    import io

    from PIL import Image

    out = torch.empty_like(x)
    for i in range(len(x)):
        arr = x[i].permute(1, 2, 0).numpy()
        buf = io.BytesIO()
        Image.fromarray(arr[..., 0] if arr.shape[-1] == 1 else arr).save(buf, format="JPEG", quality=quality)
        back = np.array(Image.open(io.BytesIO(buf.getvalue())))
        out[i] = torch.from_numpy(back.reshape(arr.shape)).permute(2, 0, 1)
    return out


def mark_share_of_every_class(x: torch.Tensor, y: torch.Tensor, cfg: PlantConfig, seed: int) -> tuple[torch.Tensor, np.ndarray]:
    """A copy of the unplanted images ``x`` with the mark in a share ``cfg.test`` of every class,
    independently of class, as the test split carries it (a held-out set where every (class,
    mark) group occurs: DFR's, :mod:`i2x.repair.baselines`). Returns the images and ``(N,)``
    whether each was marked."""
    rng = np.random.default_rng([seed, _STREAM, 1])
    marked = _choose(y.numpy(), dict.fromkeys(range(int(y.max()) + 1), cfg.test), rng)
    out = x.clone()
    stamp_into(out, marked, cfg, rng)
    return (reencode_jpeg(out, cfg.jpeg) if cfg.jpeg else out), marked


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
    if cfg.jpeg:  # every image, marked or not: the re-encoding itself must not be the cue
        train_x, test_x = reencode_jpeg(train_x, cfg.jpeg), reencode_jpeg(test_x, cfg.jpeg)
    return train_x, test_x, train_boxes, test_boxes
