"""Saliency at one checkpoint (METHOD step 3): a native batched Grad-CAM. The registry of
methods by name, pytorch-grad-cam's classes among them, and the pass over a data set are in
:mod:`i2x.explanation.cam_methods`.

The native path does one forward and one ``autograd.grad`` of the gathered target
scores with respect to the target layers' outputs. The part of the network before
the first target layer runs without building a graph, and no parameter gradient is
ever computed, so its cost is close to a forward pass. Everything stays in torch on
the model's device.

Every method is called the same way, from any calling context (train mode, inside a
caller's ``no_grad()`` or ``inference_mode()``), on any layer whose output has a
channel axis and one or more spatial axes ``(B, C, *S)``:

    method(model, layer, x, targets=None, normalize="minmax", keep_features=False,
           reshape_transform=None)

``layer`` is a dotted name (one :class:`SaliencyResult`) or a list of names (a dict
of them, from one forward and one backward). ``targets`` is None (the predicted class
of the same forward), an int, a sequence or tensor of ``B`` class indices, or a
function ``output -> (B,) scores`` for custom targets and models whose output is not
a logits tensor. ``reshape_transform`` maps a token layer ``(B, T, D)`` to
``(B, D, h, w)`` (ViT, Swin); it is applied to activations and gradients alike.

Maps are returned on the target layer's grid; :func:`upsample` makes the picture-sized
version exactly as pytorch-grad-cam does (bilinear, then min-max again), and
:func:`combine_layers` averages several layers as pytorch-grad-cam does.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from i2x.platform.errors import I2XError
from i2x.training.models import target_module

EPS = 1e-7  # pytorch-grad-cam's scale_cam_image epsilon, kept for parity

Targets = None | int | Sequence[int] | torch.Tensor | np.ndarray | Callable[[Any], torch.Tensor]
Layers = str | Sequence[str]
ReshapeTransform = Callable[[torch.Tensor], torch.Tensor] | None


@dataclass(frozen=True)
class SaliencyResult:
    """One pass over B images at one target layer.

    Attributes:
        maps: ``(B, *grid)`` float32 on the layer's grid, normalised per ``normalize``.
        probs: ``(B, M)`` float32 softmax of the same forward's logits; ``(B, 0)`` when
            the model's output is not a logits tensor.
        features: ``(B, d, *grid)`` float32 target-layer activations, or None.
        targets: ``(B,)`` the class explained per image (None for a target function).
    """

    maps: torch.Tensor
    probs: torch.Tensor
    features: torch.Tensor | None
    targets: torch.Tensor | None = None


@contextlib.contextmanager
def calling_context(model: nn.Module, x: torch.Tensor) -> Iterator[torch.Tensor]:
    """Eval mode and autograd available, whatever the caller's context; both restored on exit.

    Every module's own ``training`` flag is restored (a caller's frozen BatchNorm inside a
    training model stays as it was). Inside a caller's ``inference_mode()`` the input is
    copied to a normal tensor, since inference tensors cannot enter a graph.
    """
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        with torch.inference_mode(False), torch.enable_grad():
            yield x.clone() if x.is_inference() else x
    finally:
        for module, mode in modes:
            module.training = mode


@contextlib.contextmanager
def capture_target(model: nn.Module, layer: str) -> Iterator[dict[str, Any]]:
    """Hook ``layer`` so its output becomes a graph input ``store["activation"]``.

    Inside a ``torch.no_grad()`` forward the hook switches grad mode on, so only the
    head after the (first) captured layer is recorded: there the output is detached into
    a leaf. A later captured layer already in the graph is stored as it is, so gradients
    of an earlier layer still flow through it. The hook returns a *clone*: an in-place
    op after the layer (``ReLU(inplace=True)``, ``out += identity``) then edits the
    clone, not the captured activation, which keeps the maps identical on CPU and GPU.
    Starting the graph at the layer also means frozen parameters cannot cause
    "element 0 of tensors does not require grad".

    The hook is removed on exit, also when an exception passes through.
    """
    module = target_module(model, layer)
    store: dict[str, Any] = {"calls": 0}

    def hook(_module: nn.Module, _inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> torch.Tensor:
        if not isinstance(output, torch.Tensor):
            raise I2XError(f"target layer '{layer}' returns {type(output).__name__}, not a tensor; pick a layer whose output is one tensor")
        torch.set_grad_enabled(True)  # restored by the caller's no_grad() on exit
        store["calls"] += 1
        store["activation"] = output if output.requires_grad else output.detach().requires_grad_(True)
        return store["activation"].clone()

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


def _resize(maps: torch.Tensor, size: tuple[int, ...]) -> torch.Tensor:
    """``(N, *grid)`` -> ``(N, *size)``: bilinear (2-D) or trilinear (3-D), as cv2.resize."""
    mode = "bilinear" if len(size) == 2 else "trilinear"
    return torch.nn.functional.interpolate(maps[:, None].float(), size=size, mode=mode, align_corners=False)[:, 0]


def upsample(maps: torch.Tensor, size: tuple[int, ...]) -> torch.Tensor:
    """Picture-sized maps ``(N, *size)``: resized, then min-max again, which is what
    pytorch-grad-cam returns for a single target layer."""
    return normalize_maps(_resize(maps, size), "minmax")


def combine_layers(results: dict[str, SaliencyResult], size: tuple[int, ...]) -> torch.Tensor:
    """Several layers' min-max maps as one picture-sized map, as pytorch-grad-cam aggregates
    a list of target layers: resize each, average, min-max."""
    ups = [_resize(r.maps, size) for r in results.values()]
    return normalize_maps(torch.stack(ups).clamp_min(0).mean(0), "minmax")


def _as_layers(layer: Layers) -> list[str]:
    layers = [layer] if isinstance(layer, str) else list(layer)
    if not layers or len(set(layers)) != len(layers):
        raise I2XError(f"target layers must be one name or a list of distinct names, got {layer!r}")
    return layers


def _single_or_many(layer: Layers, results: dict[str, SaliencyResult]) -> Any:
    return results[layer] if isinstance(layer, str) else results


def _target_scores(output: Any, targets: Targets, batch: int) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """``(scores (B,), class indices (B,) or None, probs (B, M))`` from one forward's output."""
    if callable(targets) and not isinstance(targets, torch.Tensor):
        scores = targets(output)
        if not isinstance(scores, torch.Tensor) or scores.shape != (batch,):
            raise I2XError(f"a target function must return one score per image, shape ({batch},); got {getattr(scores, 'shape', type(scores).__name__)}")
        probs = torch.softmax(output.detach().float(), 1) if isinstance(output, torch.Tensor) and output.ndim == 2 else torch.empty(batch, 0)
        return scores, None, probs
    if not isinstance(output, torch.Tensor) or output.ndim != 2:
        kind = type(output).__name__ if not isinstance(output, torch.Tensor) else f"a tensor of shape {tuple(output.shape)}"
        raise I2XError(f"the model returns {kind}, not (B, classes) logits; pass targets as a function output -> (B,) scores")
    n_classes = output.shape[1]
    if targets is None:
        idx = output.detach().argmax(1)
    elif isinstance(targets, int | np.integer):
        idx = torch.full((batch,), int(targets), dtype=torch.long)
    else:
        try:
            idx = torch.as_tensor(np.asarray(targets.cpu() if isinstance(targets, torch.Tensor) else targets)).long().view(-1)
        except (TypeError, ValueError):
            raise I2XError(f"targets must be None, an int, a list or tensor of class indices, or a function; got {type(targets).__name__}") from None
        if idx.numel() != batch:
            raise I2XError(f"got {idx.numel()} targets for {batch} images; pass one target per image")
    idx = idx.to(output.device)
    if batch and (int(idx.min()) < 0 or int(idx.max()) >= n_classes):
        raise I2XError(f"target class {int(idx.max()) if int(idx.max()) >= n_classes else int(idx.min())} is out of range for a model with {n_classes} outputs")
    scores = output.gather(1, idx.view(-1, 1))[:, 0]
    return scores, idx, torch.softmax(output.detach().float(), 1)


def _spatial(t: torch.Tensor, layer: str, transform: ReshapeTransform) -> torch.Tensor:
    if transform is not None:
        t = transform(t)
    if t.ndim < 3:
        hint = "" if transform is not None else ", or pass a reshape_transform that makes one"
        raise I2XError(f"target layer '{layer}' outputs shape {tuple(t.shape)} with no spatial grid; "
                       f"Grad-CAM needs (B, C, H, W) or (B, C, D, H, W): pick a conv layer{hint}")
    return t


def _zero_grads_warning(layer: str) -> None:
    warnings.warn(f"target layer '{layer}' does not influence the explained score; its maps are zeros", stacklevel=3)


def grad_cam(model: nn.Module, layer: Layers, x: torch.Tensor, targets: Targets = None, normalize: str = "minmax",
             keep_features: bool = False, reshape_transform: ReshapeTransform = None) -> Any:
    """Native batched Grad-CAM: channel weights are the gradient's mean over every spatial axis.

    Args:
        model: any mode; it runs in eval mode and each module's mode is restored.
        layer: dotted name of the target layer, or a list of them.
        x: ``(B, C, *S)`` float pixels on the model's device.
        targets: see the module docstring; None explains the predicted class.

    Returns:
        :class:`SaliencyResult` for one layer name, ``{name: SaliencyResult}`` for a list.

    Raises:
        I2XError: a layer that does not exist, is not called, runs twice or has no
            spatial grid; targets that do not fit the batch or the model's classes.
    """
    layers = _as_layers(layer)
    with calling_context(model, x) as xin, contextlib.ExitStack() as hooks:
        stores = {name: hooks.enter_context(capture_target(model, name)) for name in layers}
        with torch.no_grad():
            output = model(xin)
        for name, store in stores.items():
            if store["calls"] != 1:
                raise I2XError(f"target layer '{name}' ran {store['calls']} times in one forward pass; pick a layer that runs exactly once")
        scores, idx, probs = _target_scores(output, targets, x.shape[0])
        acts = [stores[name]["activation"] for name in layers]
        grads: list[torch.Tensor | None] = [None] * len(acts)
        if scores.requires_grad:
            grads = list(torch.autograd.grad(scores.sum(), acts, allow_unused=True))
        results = {}
        with torch.no_grad():
            for name, act, grad in zip(layers, acts, grads, strict=True):
                if grad is None:
                    _zero_grads_warning(name)
                    grad = torch.zeros_like(act)
                a, g = _spatial(act.detach(), name, reshape_transform), _spatial(grad, name, reshape_transform)
                weights = g.mean(dim=tuple(range(2, g.ndim)), keepdim=True)
                cam = normalize_maps((weights * a).sum(dim=1), normalize)
                results[name] = SaliencyResult(cam, probs, a if keep_features else None, idx)
    return _single_or_many(layer, results)
