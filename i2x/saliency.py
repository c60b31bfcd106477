"""Saliency at one checkpoint (METHOD step 3): a native batched Grad-CAM plus pytorch-grad-cam adapters.

The native path does one forward and one ``autograd.grad`` of the gathered target
logits with respect to the target layer's output. The part of the network before
the target layer runs without building a graph, and no parameter gradient is ever
computed, so its cost is close to a forward pass. Everything stays in torch on the
model's device.

Maps are returned on the target layer's ``h x w`` grid; :func:`upsample` makes the
picture-sized version exactly as pytorch-grad-cam does (bilinear, then min-max again).
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from i2x.data import to_float
from i2x.errors import I2XError
from i2x.models import target_module

EPS = 1e-7  # pytorch-grad-cam's scale_cam_image epsilon, kept for parity


@dataclass(frozen=True)
class SaliencyResult:
    """One checkpoint's pass over N images.

    Attributes:
        maps: ``(N, h, w)`` float32 on the grid, normalised per ``normalize``.
        probs: ``(N, M)`` float32 softmax confidences from the same forward.
        features: ``(N, d, h, w)`` float32 target-layer activations, or None.
    """

    maps: torch.Tensor
    probs: torch.Tensor
    features: torch.Tensor | None


@contextlib.contextmanager
def capture_target(model: nn.Module, layer: str) -> Iterator[dict[str, torch.Tensor]]:
    """Hook ``layer`` so its output becomes a graph leaf ``store["activation"]``.

    Inside a ``torch.no_grad()`` forward the hook switches grad mode on, so only the
    head after the layer is recorded. The hook returns a *clone* of the leaf: an
    in-place op after the layer (``ReLU(inplace=True)``) then edits the clone, not
    the captured activation, which keeps the maps identical on CPU and GPU
    (pytorch-grad-cam's ``.cpu()`` copy on GPU but not on CPU makes them differ).
    Starting the graph at the layer also means frozen parameters cannot cause
    "element 0 of tensors does not require grad".

    The hook is removed on exit, also when an exception passes through.
    """
    module = target_module(model, layer)
    store: dict[str, torch.Tensor] = {}

    def hook(_module: nn.Module, _inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> torch.Tensor:
        if not isinstance(output, torch.Tensor):
            raise I2XError(f"target layer '{layer}' returns {type(output).__name__}, not a tensor; pick a conv block")
        torch.set_grad_enabled(True)  # restored by the caller's no_grad() on exit
        leaf = output.detach().requires_grad_(True)
        store["activation"] = leaf
        return leaf.clone()

    handle = module.register_forward_hook(hook)
    try:
        yield store
    finally:
        handle.remove()


def normalize_maps(cam: torch.Tensor, how: str) -> torch.Tensor:
    """``minmax``: ReLU then per-map min-max to [0, 1] (pytorch-grad-cam); ``none``: raw."""
    if how == "none":
        return cam
    if how != "minmax":
        raise I2XError(f"explain.normalize must be minmax or none, got '{how}'")
    cam = cam.clamp_min(0)
    flat = cam.flatten(1)
    flat = flat - flat.min(dim=1, keepdim=True).values
    flat = flat / (EPS + flat.max(dim=1, keepdim=True).values)
    return flat.view_as(cam)


def upsample(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Picture-sized maps ``(N, H, W)``: bilinear (as cv2.resize), then min-max again,
    which is what pytorch-grad-cam returns for a single target layer."""
    up = torch.nn.functional.interpolate(maps[:, None].float(), size=size, mode="bilinear", align_corners=False)[:, 0]
    return normalize_maps(up, "minmax")


def grad_cam(
    model: nn.Module, layer: str, x: torch.Tensor, targets: torch.Tensor, normalize: str = "minmax", keep_features: bool = False
) -> SaliencyResult:
    """Native batched Grad-CAM.

    Args:
        model: in eval mode.
        layer: dotted name of the target layer.
        x: ``(B, C, H, W)`` float pixels on the model's device.
        targets: ``(B,)`` class indices, one per image.

    Returns:
        :class:`SaliencyResult` with ``(B, h, w)`` maps and ``(B, M)`` probabilities.
    """
    if targets.shape[0] != x.shape[0]:
        raise I2XError(f"got {targets.shape[0]} targets for {x.shape[0]} images; pass one target per image")
    with torch.no_grad(), capture_target(model, layer) as store:
        logits = model(x)
    if "activation" not in store:
        raise I2XError(f"target layer '{layer}' was not called in the forward pass")
    activation = store["activation"]
    score = logits.gather(1, targets.view(-1, 1).to(logits.device)).sum()
    (grads,) = torch.autograd.grad(score, activation)
    with torch.no_grad():
        weights = grads.mean(dim=(2, 3), keepdim=True)
        cam = (weights * activation).sum(dim=1)
        maps = normalize_maps(cam, normalize)
        probs = torch.softmax(logits, dim=1)
    return SaliencyResult(maps.detach(), probs.detach(), activation.detach() if keep_features else None)


def _without_inplace(model: nn.Module) -> nn.Module:
    """A copy with every ``inplace=True`` activation made out-of-place, for pytorch-grad-cam."""
    clone = copy.deepcopy(model)
    for module in clone.modules():
        if getattr(module, "inplace", False):
            module.inplace = False
    return clone


def _grad_cam_library(cls_name: str) -> Callable[..., SaliencyResult]:
    """Adapter for a pytorch-grad-cam class: grid-level maps through its own weights."""

    def run(model: nn.Module, layer: str, x: torch.Tensor, targets: torch.Tensor, normalize: str = "minmax", keep_features: bool = False) -> SaliencyResult:
        import pytorch_grad_cam as pgc
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

        if targets.shape[0] != x.shape[0]:
            # pytorch-grad-cam zips targets with outputs and silently returns all-zero
            # maps for the images left without a target.
            raise I2XError(f"got {targets.shape[0]} targets for {x.shape[0]} images; pass one target per image")
        safe = _without_inplace(model).eval()
        cam = getattr(pgc, cls_name)(model=safe, target_layers=[target_module(safe, layer)])
        try:
            wanted = [ClassifierOutputTarget(int(t)) for t in targets]
            # A leaf that requires grad keeps its hooks working when parameters are frozen.
            inp = x.detach().clone().requires_grad_(True)
            outputs = cam.activations_and_grads(inp)
            safe.zero_grad()
            if cam.uses_gradients:
                loss = sum(t(o) for t, o in zip(wanted, outputs, strict=True))
                loss.backward(retain_graph=True)
            acts = cam.activations_and_grads.activations[0].cpu().numpy()
            grads = cam.activations_and_grads.gradients[0].cpu().numpy() if cam.uses_gradients else np.zeros_like(acts)
            grid = cam.get_cam_image(inp, target_module(safe, layer), wanted, acts, grads, False)
            maps = normalize_maps(torch.from_numpy(np.asarray(grid, dtype=np.float32)).to(x.device), normalize)
            probs = torch.softmax(outputs.detach(), dim=1)
        finally:
            cam.activations_and_grads.release()
        feats = torch.from_numpy(acts).to(x.device) if keep_features else None
        return SaliencyResult(maps, probs, feats)

    return run


CamFn = Callable[..., SaliencyResult]
CAM_METHODS: dict[str, CamFn] = {
    "gradcam": grad_cam,
    "gradcam++": _grad_cam_library("GradCAMPlusPlus"),
    "xgradcam": _grad_cam_library("XGradCAM"),
    "layercam": _grad_cam_library("LayerCAM"),
    "hirescam": _grad_cam_library("HiResCAM"),
    "eigencam": _grad_cam_library("EigenCAM"),
    "scorecam": _grad_cam_library("ScoreCAM"),
    "gradcam-reference": _grad_cam_library("GradCAM"),
}


def saliency_pass(
    model: nn.Module,
    layer: str,
    images: torch.Tensor,
    labels: torch.Tensor,
    method: str = "gradcam",
    target: str = "label",
    normalize: str = "minmax",
    batch_size: int = 500,
    keep_features: bool = False,
    device: torch.device | None = None,
    desc: str | None = None,
) -> SaliencyResult:
    """Saliency for a whole set of uint8 images, batched.

    Args:
        images: ``(N, C, H, W)`` uint8.
        labels: ``(N,)`` true labels.
        target: ``label`` (explain the true class) or ``pred`` (the predicted class).

    Returns:
        :class:`SaliencyResult` with ``(N, h, w)`` maps, ``(N, M)`` probs, and
        ``(N, d, h, w)`` features when ``keep_features``; all on the CPU.
    """
    if method not in CAM_METHODS:
        raise I2XError(f"unknown saliency method '{method}'; choose one of {', '.join(CAM_METHODS)}")
    if target not in ("label", "pred"):
        raise I2XError(f"explain.target must be label or pred, got '{target}'")
    fn = CAM_METHODS[method]
    device = device or next(model.parameters()).device
    was_training = model.training
    model.eval()
    maps, probs, feats = [], [], []
    try:
        starts = range(0, len(labels), batch_size)
        for start in tqdm(starts, desc=desc, leave=False, disable=desc is None, unit="batch"):
            xb = to_float(images[start : start + batch_size]).to(device)
            tb = labels[start : start + batch_size].to(device)
            if target == "pred":
                with torch.no_grad():
                    tb = model(xb).argmax(1)
            out = fn(model, layer, xb, tb, normalize=normalize, keep_features=keep_features)
            maps.append(out.maps.float().cpu())
            probs.append(out.probs.float().cpu())
            if keep_features and out.features is not None:
                feats.append(out.features.float().cpu())
    finally:
        model.train(was_training)
    return SaliencyResult(torch.cat(maps), torch.cat(probs), torch.cat(feats) if feats else None)
