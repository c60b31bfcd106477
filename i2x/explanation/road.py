"""ROAD (Rong et al. 2022), as pytorch-grad-cam's ROADCombined computes it, on the final
Grad-CAM maps and on random maps over the same images: a whole-map faithfulness score beside
the per-prototype deletion test of :mod:`i2x.explanation.faithfulness`."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from i2x.platform.config import FaithfulnessConfig
from i2x.training.batches import to_float


@dataclass(frozen=True)
class RoadResult:
    """pytorch-grad-cam's ROADCombined score of the final Grad-CAM maps and of random maps
    on the same images (higher: removing what the map calls relevant hurts more than
    removing what it calls irrelevant)."""

    n_images: int
    percentiles: tuple[int, ...]
    gradcam: float
    random: float
    gradcam_ci: tuple[float, float]
    random_ci: tuple[float, float]



def road_scores(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    saliency: np.ndarray,
    cfg: FaithfulnessConfig,
    seed: int,
    device: torch.device,
) -> RoadResult | None:
    """ROADCombined (pytorch-grad-cam) of the final Grad-CAM maps and of uniform random
    maps on the same seeded subset of images; None when ``road_images`` is 0.

    Args:
        saliency: ``(N, h, w)`` final Grad-CAM toward the label.
    """
    if cfg.road_images <= 0:
        return None
    from pytorch_grad_cam.metrics.road import ROADCombined
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget

    from i2x.explanation.saliency import upsample

    rng = np.random.default_rng(seed + 2)
    n = len(labels)
    rows = np.sort(rng.choice(n, size=min(n, cfg.road_images), replace=False))
    x = to_float(images[rows]).to(device)
    size = tuple(x.shape[-2:])
    cams = upsample(torch.from_numpy(saliency[rows]).float(), size).numpy()
    random_cams = upsample(torch.from_numpy(rng.random(saliency[rows].shape)).float(), size).numpy()
    targets = [ClassifierOutputSoftmaxTarget(int(c)) for c in labels[rows]]
    metric = ROADCombined(percentiles=list(cfg.road_percentiles))
    model.eval()
    torch.manual_seed(seed)  # ROAD's imputer adds torch noise
    ours = np.asarray(metric(x, cams, targets, model), dtype=np.float64).reshape(-1)
    torch.manual_seed(seed)
    rand = np.asarray(metric(x, random_cams, targets, model), dtype=np.float64).reshape(-1)

    def ci(v: np.ndarray) -> tuple[float, float]:
        boot = v[rng.integers(0, len(v), size=(cfg.bootstrap, len(v)))].mean(1)
        return float(np.quantile(boot, 0.025)), float(np.quantile(boot, 0.975))

    return RoadResult(len(rows), tuple(cfg.road_percentiles), float(ours.mean()), float(rand.mean()), ci(ours), ci(rand))
