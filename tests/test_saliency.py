import numpy as np
import pytest
import torch
from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch import nn

from i2x.explanation.cam_methods import CAM_METHODS, saliency_pass
from i2x.explanation.saliency import capture_target, grad_cam, upsample
from i2x.platform.config import ModelConfig
from i2x.platform.errors import I2XError
from i2x.training.models import build_model


class OneConv(nn.Module):
    """1x1 conv with channel weights (1, 2), global average pool, linear head ``head``.

    For class c the Grad-CAM channel weights are ``head[c] / (h*w)``, so the map is
    ``relu(x * (head[c, 0] + 2 * head[c, 1]) / (h*w))`` -- computable by hand.
    """

    def __init__(self, head):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 1, bias=False)
        self.conv.weight.data = torch.tensor([1.0, 2.0]).view(2, 1, 1, 1)
        self.fc = nn.Linear(2, 2, bias=False)
        self.fc.weight.data = torch.tensor(head)

    def forward(self, x):
        return self.fc(self.conv(x).mean(dim=(2, 3)))


def _reference(model, layer, x, targets):
    cam = GradCAM(model=model, target_layers=[model.get_submodule(layer)])
    return cam(x, [ClassifierOutputTarget(int(t)) for t in targets])


def test_hand_computed_grad_cam():
    x = (torch.arange(16.0) / 15).view(1, 1, 4, 4)
    model = OneConv([[1.0, 0.0], [1.0, -1.0]]).eval()
    positive = grad_cam(model, "conv", x, torch.tensor([0]))
    # class 0: cam = x/16 >= 0, and min-max turns it back into x
    assert torch.allclose(positive.maps[0], x[0, 0], atol=1e-5)
    negative = grad_cam(model, "conv", x, torch.tensor([1]))
    # class 1: cam = (1 - 2) x / 16 <= 0, all removed by the ReLU
    assert torch.count_nonzero(negative.maps) == 0
    logits = model(x)
    assert torch.allclose(positive.probs, torch.softmax(logits, 1))


class InplaceNet(nn.Module):
    """Target conv followed directly by an in-place ReLU (the CPU/GPU trap)."""

    def __init__(self, inplace=True):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.act1 = nn.ReLU(inplace=inplace)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.act2 = nn.ReLU(inplace=inplace)
        self.fc = nn.Linear(8, 5)

    def forward(self, x):
        return self.fc(self.act2(self.conv2(self.act1(self.conv1(x)))).mean(dim=(2, 3)))


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("batch", [1, 3, 8])
def test_parity_with_pytorch_grad_cam_on_random_cnns(seed, batch):
    torch.manual_seed(seed)
    model = build_model(ModelConfig(name="cnn", width=8), 3, 10).eval()
    x, t = torch.rand(batch, 3, 32, 32), torch.randint(0, 10, (batch,))
    ours = upsample(grad_cam(model, model.target_layer, x, t).maps, (32, 32)).numpy()
    assert np.abs(ours - _reference(model, model.target_layer, x, t)).max() <= 1e-5


def test_parity_with_pytorch_grad_cam_on_resnet18():
    torch.manual_seed(3)
    model = build_model(ModelConfig(name="resnet18"), 3, 10).eval()
    x, t = torch.rand(4, 3, 32, 32), torch.randint(0, 10, (4,))
    ours = upsample(grad_cam(model, model.target_layer, x, t).maps, (32, 32)).numpy()
    assert np.abs(ours - _reference(model, model.target_layer, x, t)).max() <= 1e-5


def test_parity_with_pytorch_grad_cam_on_fastnet():
    """The fast CIFAR net's target layer (a GELU after BatchNorm, channels-last inside)."""
    torch.manual_seed(4)
    model = build_model(ModelConfig(name="fastnet", width=8), 3, 10)
    model.net.init_whitening(torch.rand(64, 3, 32, 32))
    model.eval()
    x, t = torch.rand(4, 3, 32, 32), torch.randint(0, 10, (4,))
    ours = upsample(grad_cam(model, model.target_layer, x, t).maps, (32, 32)).numpy()
    assert np.abs(ours - _reference(model, model.target_layer, x, t)).max() <= 1e-5


def test_inplace_relu_after_target_conv_matches_out_of_place():
    torch.manual_seed(0)
    inplace = InplaceNet(inplace=True).eval()
    plain = InplaceNet(inplace=False).eval()
    plain.load_state_dict(inplace.state_dict())
    x, t = torch.rand(6, 3, 16, 16), torch.randint(0, 5, (6,))
    a = grad_cam(inplace, "conv2", x, t).maps
    b = grad_cam(plain, "conv2", x, t).maps
    assert torch.allclose(a, b, atol=1e-6)
    ref = _reference(plain, "conv2", x, t)
    assert np.abs(upsample(a, (16, 16)).numpy() - ref).max() <= 1e-5
    # The trap itself: pytorch-grad-cam on the in-place model reads post-ReLU activations
    # on CPU (its .cpu() is no copy there), so its maps differ from the reference.
    trapped = _reference(inplace, "conv2", x, t)
    assert np.abs(trapped - ref).max() > 1e-3
    # Our adapter for the library methods removes in-place ops first, so it is safe too.
    adapted = CAM_METHODS["gradcam-reference"](inplace, "conv2", x, t).maps
    assert torch.allclose(adapted, b, atol=1e-5)


def test_fewer_targets_than_images_is_refused():
    model = build_model(ModelConfig(name="cnn", width=4), 1, 3).eval()
    x = torch.rand(3, 1, 16, 16)
    for name in ("gradcam", "gradcam++"):
        with pytest.raises(I2XError, match="2 targets for 3 images"):
            CAM_METHODS[name](model, model.target_layer, x, torch.tensor([0, 1]))


def test_frozen_parameters_still_work():
    torch.manual_seed(0)
    model = build_model(ModelConfig(name="cnn", width=4), 1, 3).eval()
    x, t = torch.rand(2, 1, 16, 16), torch.tensor([0, 2])
    expected = grad_cam(model, model.target_layer, x, t).maps
    model.requires_grad_(False)
    assert torch.allclose(grad_cam(model, model.target_layer, x, t).maps, expected)
    assert torch.allclose(CAM_METHODS["gradcam-reference"](model, model.target_layer, x, t).maps, expected, atol=1e-5)
    assert all(p.grad is None for p in model.parameters())


def test_hooks_are_removed_when_an_exception_passes_through():
    model = build_model(ModelConfig(name="cnn", width=4), 1, 3).eval()
    layer = model.get_submodule(model.target_layer)
    with pytest.raises(RuntimeError, match="boom"), capture_target(model, model.target_layer):
        assert len(layer._forward_hooks) == 1
        raise RuntimeError("boom")
    assert len(layer._forward_hooks) == 0

    def explode(*_args):
        raise RuntimeError("head failed")

    model.net.fc.register_forward_hook(explode)
    with pytest.raises(RuntimeError, match="head failed"):
        grad_cam(model, model.target_layer, torch.rand(1, 1, 16, 16), torch.tensor([0]))
    assert len(layer._forward_hooks) == 0


@pytest.mark.parametrize("method", sorted(set(CAM_METHODS) - {"scorecam"}))
def test_every_method_returns_grid_maps_in_unit_range(method):
    torch.manual_seed(0)
    model = build_model(ModelConfig(name="cnn", width=4), 1, 3).eval()
    images = (torch.rand(5, 1, 16, 16) * 255).to(torch.uint8)
    out = saliency_pass(model, model.target_layer, images, torch.tensor([0, 1, 2, 0, 1]), method=method, batch_size=2)
    assert out.maps.shape == (5, 4, 4) and out.probs.shape == (5, 3)
    assert float(out.maps.min()) >= 0 and float(out.maps.max()) <= 1 + 1e-6
    assert torch.allclose(out.probs.sum(1), torch.ones(5))


def test_unknown_method_and_missing_layer():
    model = build_model(ModelConfig(name="cnn", width=4), 1, 3)
    images = torch.zeros(2, 1, 16, 16, dtype=torch.uint8)
    with pytest.raises(I2XError, match="unknown saliency method 'magic'"):
        saliency_pass(model, model.target_layer, images, torch.tensor([0, 1]), method="magic")
    with pytest.raises(I2XError, match="target layer 'net.nope' does not exist"):
        saliency_pass(model, "net.nope", images, torch.tensor([0, 1]))


def test_pass_keeps_model_mode_and_returns_features():
    model = build_model(ModelConfig(name="cnn", width=4), 1, 3).train()
    images = (torch.rand(3, 1, 16, 16) * 255).to(torch.uint8)
    out = saliency_pass(model, model.target_layer, images, torch.tensor([0, 1, 2]), keep_features=True)
    assert model.training
    assert out.features is not None and out.features.shape == (3, 16, 4, 4)
