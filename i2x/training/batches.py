"""Float batches of the uint8 images a :class:`i2x.training.data.DataBundle` holds: pixels in
[0, 1], the seeded training augmentation (reflect-padded crop and flip, one gather on the
device), airbench's alternating flip, and in-order batches for evaluation.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch


def to_float(x: torch.Tensor) -> torch.Tensor:
    """uint8 ``(B, C, H, W)`` -> float pixels in [0, 1]."""
    return x.float().div_(255.0)


def augment(x: torch.Tensor, gen: torch.Generator, pad: int = 4, flip: torch.Tensor | None = None) -> torch.Tensor:
    """Seeded random crop (reflect-padded by ``pad``) and horizontal flip of a float batch.

    ``flip`` (``(B,)`` bool) replaces the random flip, e.g. the alternating flip of
    :func:`flip_schedule`; the generator's draws are the same either way. One gather on
    ``x``'s device: the random draws come from ``gen`` (CPU) and are moved there.
    """
    b, c, h, w = x.shape
    dy = torch.randint(0, 2 * pad + 1, (b,), generator=gen)
    dx = torch.randint(0, 2 * pad + 1, (b,), generator=gen)
    drawn = torch.rand(b, generator=gen) < 0.5
    flip = drawn if flip is None else flip
    if pad == 0 and not bool(flip.any()):
        return x.clone()
    dev = x.device
    padded = torch.nn.functional.pad(x, (pad, pad, pad, pad), mode="reflect") if pad else x
    cols = torch.arange(w)
    cols = torch.where(flip[:, None], cols.flip(0), cols)  # a flipped crop reads its columns backwards
    rows = (dy[:, None] + torch.arange(h)).to(dev)
    cols = (dx[:, None] + cols).to(dev)
    batch = torch.arange(b, device=dev)[:, None, None, None]
    chan = torch.arange(c, device=dev)[None, :, None, None]
    return padded[batch, chan, rows[:, None, :, None], cols[:, None, None, :]]


def flip_schedule(n: int, seed: int, epoch: int) -> torch.Tensor:
    """airbench's alternating flip: image ``i`` is mirrored in epoch ``e`` when
    ``base[i] xor (e odd)``, ``base`` a seeded coin per image, so every image is seen both
    ways in any two consecutive epochs (random flips repeat one side half the time)."""
    base = torch.rand(n, generator=torch.Generator().manual_seed(seed * 7_919 + 17)) < 0.5
    return base ^ bool(epoch % 2)


def iterate(
    x: torch.Tensor, y: torch.Tensor, batch_size: int
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """In-order float batches of ``x`` (uint8) and ``y``, for evaluation."""
    for start in range(0, len(y), batch_size):
        yield to_float(x[start : start + batch_size]), y[start : start + batch_size]
