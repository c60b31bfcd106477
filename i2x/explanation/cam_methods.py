"""The saliency methods by name (:data:`CAM_METHODS`: our Grad-CAM of :mod:`i2x.explanation.saliency`
and pytorch-grad-cam's classes through one adapter that keeps its own weights), and the
batched pass over a data set: the batch sized from a memory budget, the maps, the
probabilities and the final checkpoint's features.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from torch import nn

from i2x.explanation.saliency import (
    Layers,
    ReshapeTransform,
    SaliencyResult,
    Targets,
    _as_layers,
    _single_or_many,
    _spatial,
    _target_scores,
    _zero_grads_warning,
    calling_context,
    grad_cam,
    normalize_maps,
)
from i2x.platform.errors import I2XError
from i2x.platform.progress import steps
from i2x.training.models import target_module


@contextlib.contextmanager
def _protected(modules: list[nn.Module]) -> Iterator[None]:
    """Forward hooks, registered after a library's own, that hand the rest of the network a
    clone of each target output: in-place ops downstream (``out += identity`` in a ResNet
    block, ``F.relu(..., inplace=True)`` after DenseNet's ``features``) then cannot
    overwrite the activation the library stored, and gradients still reach it."""
    handles = [m.register_forward_hook(lambda _m, _i, out: out.clone() if isinstance(out, torch.Tensor) else None) for m in modules]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def _grad_cam_library(cls_name: str) -> Callable[..., Any]:
    """Adapter for a pytorch-grad-cam class: grid-level maps through its own weights."""

    def run(model: nn.Module, layer: Layers, x: torch.Tensor, targets: Targets = None, normalize: str = "minmax",
            keep_features: bool = False, reshape_transform: ReshapeTransform = None) -> Any:
        import pytorch_grad_cam as pgc

        layers = _as_layers(layer)
        modules = [target_module(model, name) for name in layers]
        with calling_context(model, x) as xin:
            cam = getattr(pgc, cls_name)(model=model, target_layers=modules, reshape_transform=reshape_transform)
            try:
                with _protected(modules):
                    # A leaf that requires grad keeps its hooks working when parameters are frozen.
                    inp = xin.detach().clone().requires_grad_(True)
                    outputs = cam.activations_and_grads(inp)
                    scores, idx, probs = _target_scores(outputs, targets, x.shape[0])
                    wanted = _library_targets(idx)
                    store = cam.activations_and_grads
                    if len(store.activations) != len(layers):
                        raise I2XError(f"target layers {layers} produced {len(store.activations)} activations in one forward; each must run exactly once")
                    if cam.uses_gradients and scores.requires_grad:
                        # Gradients reach the library's hooks on the way to the input; no
                        # parameter's .grad is written, so a caller's accumulated gradients stay.
                        torch.autograd.grad(scores.sum(), inp)
                    results = {}
                    for i, (name, module) in enumerate(zip(layers, modules, strict=True)):
                        acts = store.activations[i]
                        _spatial(acts, name, None)
                        if not cam.uses_gradients:
                            grads = torch.zeros_like(acts)
                        elif len(store.gradients) == len(layers):
                            grads = store.gradients[i]
                        else:
                            _zero_grads_warning(name)
                            grads = torch.zeros_like(acts)
                        with contextlib.redirect_stderr(io.StringIO()):  # ScoreCAM's own tqdm bar
                            grid = cam.get_cam_image(inp, module, wanted, acts.numpy(), grads.numpy(), False)
                        maps = normalize_maps(torch.from_numpy(np.asarray(grid, dtype=np.float32)).to(x.device), normalize)
                        results[name] = SaliencyResult(maps, probs, acts.to(x.device) if keep_features else None, idx)
            finally:
                cam.activations_and_grads.release()
        return _single_or_many(layer, results)

    return run


def _library_targets(idx: torch.Tensor | None) -> list:
    """pytorch-grad-cam target objects; ScoreCAM re-scores masked inputs through them."""
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    if idx is None:
        raise I2XError("target functions work with the native gradcam method only; pass class indices to library methods")
    return [ClassifierOutputTarget(int(t)) for t in idx]


CamFn = Callable[..., Any]
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


def pixels(images: torch.Tensor) -> torch.Tensor:
    """uint8 pictures -> float in [0, 1]; float input is taken as already prepared.

    A float batch whose values run past 1.5 (and none below 0) looks like 0-255 pixels
    that were never scaled; it is used as given, with a warning, never divided twice.
    """
    if images.dtype == torch.uint8:
        return images.float().div_(255.0)
    if not images.is_floating_point():
        raise I2XError(f"images must be uint8 pictures or float tensors, got {images.dtype}")
    if images.numel() and float(images.min()) >= 0 and float(images.max()) > 1.5:
        warnings.warn("float images with values up to "
                      f"{float(images.max()):.0f} look like unscaled 0-255 pixels; they are used as given "
                      "(pass uint8 to have them divided by 255)", stacklevel=3)
    return images.float()


def batch_bytes(fn: CamFn, model: nn.Module, layer: str, x: torch.Tensor, reshape_transform: ReshapeTransform = None) -> int:
    """Memory one call of ``fn`` on ``x`` holds at its peak, measured, in bytes.

    Counted: every tensor autograd saves for the backward (distinct storages), the
    captured activation three times (leaf, the clone the network continues with, its
    gradient), the largest output of any module in the forward twice (what a layer holds
    while it writes the next), and the input. The same count on any device; a memory
    budget divided by ``batch_bytes(2 images) - batch_bytes(1 image)`` is a batch size.
    """
    saved: dict[int, int] = {}
    largest = [0]

    def pack(t: torch.Tensor) -> torch.Tensor:
        with contextlib.suppress(RuntimeError, NotImplementedError):
            storage = t.untyped_storage()
            saved[storage.data_ptr()] = storage.nbytes()
        return t

    def watch(_m: nn.Module, _i: Any, out: Any) -> None:
        if isinstance(out, torch.Tensor):
            largest[0] = max(largest[0], out.numel() * out.element_size())

    handle = torch.nn.modules.module.register_module_forward_hook(watch)
    try:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            out = fn(model, layer, x, None, keep_features=True, reshape_transform=reshape_transform)
    finally:
        handle.remove()
    feats = out.features.numel() * 4 if out.features is not None else 0
    return sum(saved.values()) + 3 * feats + 2 * largest[0] + x.numel() * x.element_size()


def plan_batch(fn: CamFn, model: nn.Module, layer: str, sample: torch.Tensor, memory_mb: float, cap: int,
               reshape_transform: ReshapeTransform = None) -> int:
    """The largest batch, at most ``cap``, whose measured per-image cost fits ``memory_mb``.

    ``sample``: at least 2 prepared float images. The per-image cost is the difference of
    :func:`batch_bytes` at 2 and 1 images, so parameters and fixed buffers cancel out.
    """
    if memory_mb <= 0:
        raise I2XError(f"explain.memory_mb must be positive, got {memory_mb}")
    one = batch_bytes(fn, model, layer, sample[:1], reshape_transform)
    two = batch_bytes(fn, model, layer, sample[:2], reshape_transform)
    per_image = max(two - one, sample[:1].numel() * 4, 1)
    return int(max(1, min(cap, memory_mb * 2**20 // per_image)))


def cam_method(name: str) -> CamFn:
    """The method registered as ``name``, or one line listing the choices."""
    if name not in CAM_METHODS:
        raise I2XError(f"unknown saliency method '{name}'; choose one of {', '.join(CAM_METHODS)}")
    return CAM_METHODS[name]


def pass_batch(model: nn.Module, layer: str, images: torch.Tensor, method: str, batch_size: int, memory_mb: float | None,
               device: torch.device) -> int:
    """The batch of a saliency pass: ``batch_size``, or with ``memory_mb`` the measured fit
    (:func:`plan_batch` on the first two images), at most ``batch_size``."""
    if batch_size < 1:
        raise I2XError(f"explain.batch_size must be at least 1, got {batch_size}")
    if memory_mb is None or len(images) < 2:
        return batch_size
    return plan_batch(cam_method(method), model, layer, pixels(images[:2]).to(device), memory_mb, batch_size)


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
    memory_mb: float | None = None,
) -> SaliencyResult:
    """Saliency for a whole set of images, batched.

    Args:
        images: ``(N, C, *S)`` uint8 pictures (or float, taken as prepared; see :func:`pixels`).
        labels: ``(N,)`` true labels.
        target: ``label`` (explain the true class) or ``pred`` (the predicted class, from
            the same forward).
        batch_size: the batch, or with ``memory_mb`` the largest batch allowed.
        memory_mb: a memory budget for one batch (see :func:`pass_batch`); a caller that
            runs many passes of one architecture measures once and passes ``batch_size``.

    Returns:
        :class:`SaliencyResult` with ``(N, *grid)`` maps, ``(N, M)`` probs, ``(N,)`` the
        classes explained, and ``(N, d, *grid)`` features when ``keep_features``; all on
        the CPU. Every method returns its features from the same pass.
    """
    fn = cam_method(method)
    if target not in ("label", "pred"):
        raise I2XError(f"explain.target must be label or pred, got '{target}'")
    device = device or next(model.parameters()).device
    batch_size = pass_batch(model, layer, images, method, batch_size, memory_mb, device)
    maps, probs, feats, explained = [], [], [], []
    for start in steps(range(0, len(labels), batch_size), desc or "saliency", unit="batch", enabled=desc is not None):
        xb = pixels(images[start : start + batch_size]).to(device)
        tb = None if target == "pred" else labels[start : start + batch_size].to(device)
        out = fn(model, layer, xb, tb, normalize=normalize, keep_features=keep_features)
        maps.append(out.maps.float().cpu())
        probs.append(out.probs.float().cpu())
        explained.append(out.targets.cpu())
        if keep_features and out.features is not None:
            feats.append(out.features.float().cpu())
    return SaliencyResult(torch.cat(maps), torch.cat(probs), torch.cat(feats) if feats else None, torch.cat(explained))
