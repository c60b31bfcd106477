"""Pixel operations on grid cells of image batches, below both of their users: the causal
check occludes a prototype's cells (:mod:`i2x.explanation.faithfulness`) and the targeted
perturbations mask, blur or noise them in training batches (:mod:`i2x.tuning.perturbation`).
"""

from __future__ import annotations

import torch


def cell_mask(cells: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``(B, h, w)`` bool cells -> ``(B, 1, H, W)`` float pixel mask (nearest)."""
    return torch.nn.functional.interpolate(cells.float()[:, None], size=size, mode="nearest")


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of ``(B, C, H, W)`` with reflect padding."""
    radius = max(1, int(round(2 * sigma)))
    t = torch.arange(-radius, radius + 1, dtype=x.dtype)
    kernel = torch.exp(-(t**2) / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    c = x.shape[1]
    x = torch.nn.functional.pad(x, (radius, radius, radius, radius), mode="reflect")
    x = torch.nn.functional.conv2d(x, kernel.view(1, 1, 1, -1).repeat(c, 1, 1, 1), groups=c)
    return torch.nn.functional.conv2d(x, kernel.view(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)


def border_level(x: torch.Tensor) -> torch.Tensor:
    """``(N, C)`` the median pixel of each image's outer ring, per channel: its background
    colour (``x``: ``(N, C, H, W)`` floats)."""
    return torch.cat([x[..., 0, :], x[..., -1, :], x[..., :, 0], x[..., :, -1]], dim=-1).median(dim=-1).values
