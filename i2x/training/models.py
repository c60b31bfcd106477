"""Classifiers (a registry), each declaring its Grad-CAM / prototype target layer.

Models take float pixels in [0, 1] and normalise inside, so a checkpoint carries its
own input statistics and the saliency and perturbation code works on plain pixels.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from i2x.platform.config import ModelConfig
from i2x.platform.errors import I2XError


class Normalize(nn.Module):
    """``(x - mean) / std`` per channel, with the statistics stored as buffers."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(list(mean)).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(list(std)).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class Classifier(nn.Module):
    """``net(normalize(x))`` plus the dotted name of the target layer inside it.

    Attributes:
        target_layer: dotted module path (``model.get_submodule(target_layer)``) of the
            last convolutional block; Grad-CAM and the prototypes both read it.
        arch: the registry name that built it.
    """

    def __init__(self, net: nn.Module, mean: Sequence[float], std: Sequence[float], target: str, arch: str):
        super().__init__()
        self.normalize = Normalize(mean, std)
        self.net = net
        self.target_layer = f"net.{target}"
        self.arch = arch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.normalize(x))

    @property
    def needs_data_init(self) -> bool:
        """Whether the net takes a part from its training images before the first step
        (FastNet's whitening): see :meth:`init_from_data`."""
        return hasattr(self.net, "init_whitening")

    @torch.no_grad()
    def init_from_data(self, x: torch.Tensor) -> None:
        """Set that part from float pixels ``x``; a net without one is left as it is."""
        if self.needs_data_init:
            self.net.init_whitening(self.normalize(x))


def _conv_bn(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]


class CompactCNN(nn.Module):
    """Three blocks of two 3x3 convs; the grid is the input size / 4 (7x7 on MNIST).

    About 0.1 M parameters at width 16: fast on a 2-core CPU, 99% on MNIST in a few epochs.
    """

    def __init__(self, in_channels: int, num_classes: int, width: int = 16) -> None:
        super().__init__()
        w = width
        self.block1 = nn.Sequential(*_conv_bn(in_channels, w), *_conv_bn(w, w), nn.MaxPool2d(2))
        self.block2 = nn.Sequential(*_conv_bn(w, 2 * w), *_conv_bn(2 * w, 2 * w), nn.MaxPool2d(2))
        self.block3 = nn.Sequential(*_conv_bn(2 * w, 4 * w), *_conv_bn(4 * w, 4 * w))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4 * w, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.block3(self.block2(self.block1(x)))
        return self.fc(torch.flatten(self.pool(x), 1))


def _fixed_scale_bn(channels: int) -> nn.BatchNorm2d:
    bn = nn.BatchNorm2d(channels, eps=1e-12, momentum=0.4)
    bn.weight.requires_grad_(False)
    return bn


class FastNet(nn.Module):
    """A fast small-image classifier built from the ideas of airbench (K. Jordan,
    cifar10-airbench, 94% on CIFAR-10 in seconds on one A100); our own module, not the
    package, so that it fits the registry, the checkpoints and Grad-CAM:

    - a 2x2 patch-whitening convolution, set from the training images before the first
      step (:meth:`init_whitening`) and frozen: the eigenvectors of the patch covariance,
      scaled by ``1/sqrt(eigenvalue)``, with both signs;
    - three blocks of conv -> max-pool -> BatchNorm -> GELU -> conv -> BatchNorm -> GELU,
      widths ``(w, 4w, 4w)`` (airbench: w = 64);
    - airbench's BatchNorm: the scale fixed at 1 (only the shift trains), eps 1e-12,
      running statistics with momentum 0.4; each conv starts as an identity on its first
      ``in_channels`` outputs (Dirac init: an implicit residual);
    - a global max-pool and a bias-free linear head scaled by 1/9;
    - channels-last memory inside (1.4-1.9x faster convolutions on CPU, measured).

    The pools round up, so the last block keeps a 4x4 grid on 32-pixel images (airbench's
    3x3 is too coarse for prototypes): 32 -> 31 (whitening) -> 16 -> 8 -> 4. The target
    layer is ``block3``.
    """

    def __init__(self, in_channels: int, num_classes: int, width: int = 64) -> None:
        super().__init__()
        patch = 2
        self.whiten = nn.Conv2d(in_channels, 2 * in_channels * patch * patch, patch, bias=True)
        self.whiten.weight.requires_grad_(False)
        widths = (width, 4 * width, 4 * width)
        cin = self.whiten.out_channels
        for i, cout in enumerate(widths, start=1):
            setattr(self, f"block{i}", nn.Sequential(
                nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.MaxPool2d(2, ceil_mode=True), _fixed_scale_bn(cout), nn.GELU(),
                nn.Conv2d(cout, cout, 3, padding=1, bias=False), _fixed_scale_bn(cout), nn.GELU()))
            cin = cout
        for module in self.modules():
            if isinstance(module, nn.Conv2d) and module is not self.whiten:
                nn.init.dirac_(module.weight.data[: module.in_channels])
        self.pool = nn.AdaptiveMaxPool2d(1)
        self.fc = nn.Linear(cin, num_classes, bias=False)

    @torch.no_grad()
    def init_whitening(self, x: torch.Tensor, eps: float = 5e-4) -> None:
        """Set the whitening filters from normalised training images ``x`` ``(n, C, H, W)``."""
        k = self.whiten.kernel_size[0]
        patches = x.unfold(2, k, 1).unfold(3, k, 1).transpose(1, 3).reshape(-1, x.shape[1] * k * k).double()
        patches = patches - patches.mean(0)
        eigval, eigvec = torch.linalg.eigh(patches.T @ patches / len(patches))
        filters = (eigvec.T / torch.sqrt(eigval.clamp_min(0) + eps)[:, None]).reshape(-1, x.shape[1], k, k)
        self.whiten.weight.copy_(torch.cat([filters, -filters]).to(self.whiten.weight.dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.functional.gelu(self.whiten(x.contiguous(memory_format=torch.channels_last)))
        x = self.block3(self.block2(self.block1(x)))
        return self.fc(torch.flatten(self.pool(x), 1)) / 9


def _small_resnet(builder: Callable[..., nn.Module], in_channels: int, num_classes: int) -> nn.Module:
    """torchvision ResNet for small images: 3x3 stride-1 stem and no max-pool."""
    net = builder(num_classes=num_classes)
    net.conv1 = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
    net.maxpool = nn.Identity()
    return net


@dataclass(frozen=True)
class ModelSpec:
    build: Callable[[ModelConfig, int, int], nn.Module]
    target: str  # target layer inside the bare net
    width: int = 0  # the width that model.width=0 stands for (0: the net has no width setting)


def _resnet18(cfg: ModelConfig, cin: int, m: int) -> nn.Module:
    from torchvision.models import resnet18

    return _small_resnet(resnet18, cin, m)


def _resnet50(cfg: ModelConfig, cin: int, m: int) -> nn.Module:
    from torchvision.models import resnet50

    return _small_resnet(resnet50, cin, m)


MODELS: dict[str, ModelSpec] = {
    "cnn": ModelSpec(lambda cfg, cin, m: CompactCNN(cin, m, cfg.width), "block3", 16),
    "fastnet": ModelSpec(lambda cfg, cin, m: FastNet(cin, m, cfg.width), "block3", 64),
    "resnet18": ModelSpec(_resnet18, "layer4"),
    "resnet50": ModelSpec(_resnet50, "layer4"),
}


# ``model.name=auto``: the registry entry and width for each device type (OURS, measured:
# width 32 is what a 2-core CPU trains for 10 epochs in about half an hour; on an H200 the
# fast net at airbench's width 64 beat ResNet-18 on both counts, 5x faster per step and
# 89.5% against 89.0% test accuracy; see bench/cifar_fast.py and bench/gpu.sh).
AUTO_MODELS: dict[str, tuple[str, int]] = {"cpu": ("fastnet", 32), "cuda": ("fastnet", 64)}


def resolve_auto(cfg: ModelConfig, device: torch.device) -> ModelConfig:
    """``cfg`` with concrete values: ``name=auto`` becomes the device's entry of
    :data:`AUTO_MODELS`, and ``width=0`` that entry's width (or the registry's default for
    a named model). A width given explicitly is kept."""
    name, width = cfg.name, cfg.width
    if name == "auto":
        name, auto_width = AUTO_MODELS.get(device.type, AUTO_MODELS["cpu"])
        width = width or auto_width
    if name in MODELS:
        width = width or MODELS[name].width
    return cfg if (name, width) == (cfg.name, cfg.width) else dataclasses.replace(cfg, name=name, width=width)


def build_model(
    cfg: ModelConfig,
    in_channels: int,
    num_classes: int,
    mean: Sequence[float] = (0.0,),
    std: Sequence[float] = (1.0,),
) -> Classifier:
    """Build ``cfg.name`` for images with ``in_channels`` channels and ``num_classes`` classes."""
    if cfg.name not in MODELS:
        raise I2XError(f"unknown model '{cfg.name}'; choose one of {', '.join(sorted(MODELS))}, or auto")
    if len(mean) != in_channels:
        mean, std = (list(mean) * in_channels)[:in_channels], (list(std) * in_channels)[:in_channels]
    spec = MODELS[cfg.name]
    if not cfg.width and spec.width:
        cfg = dataclasses.replace(cfg, width=spec.width)
    return Classifier(spec.build(cfg, in_channels, num_classes), mean, std, spec.target, cfg.name)


def target_module(model: nn.Module, name: str) -> nn.Module:
    """The module at dotted path ``name``; a one-line error listing valid names otherwise."""
    try:
        return model.get_submodule(name)
    except AttributeError:
        convs = [n for n, m in model.named_modules() if n and len(list(m.children())) > 0][-6:]
        raise I2XError(
            f"target layer '{name}' does not exist in {type(model).__name__}; "
            f"candidates include: {', '.join(convs)}"
        ) from None


def load_weights(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """``load_state_dict`` with a one-line error when the architectures differ."""
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = next((ln.strip() for ln in str(exc).splitlines()[1:] if ln.strip()), str(exc))
        raise I2XError(
            f"checkpoint {source} does not fit model '{getattr(model, 'arch', type(model).__name__)}' "
            f"({first[:160]}); use the config/model it was trained with"
        ) from None
