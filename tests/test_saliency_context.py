"""Grad-CAM in every calling context, on every layer shape, with every kind of target.

Expected values come from Captum's LayerGradCam (which averages gradients over every
spatial axis) and from pytorch-grad-cam, computed here in the test, never from our output.
"""

import numpy as np
import pytest
import pytorch_grad_cam as pgc
import torch
from captum.attr import LayerGradCam
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch import nn
from torchvision.models import VisionTransformer

from i2x.explanation.cam_methods import CAM_METHODS, pixels, plan_batch, saliency_pass
from i2x.explanation.saliency import combine_layers, grad_cam, upsample
from i2x.platform.config import ModelConfig
from i2x.platform.errors import I2XError
from i2x.training.models import build_model


def _captum(model, layer, x, targets):
    return LayerGradCam(model, model.get_submodule(layer)).attribute(x, target=targets)[:, 0].detach()


class Net3d(nn.Module):
    """Conv3d feature extractor and a linear head (pytorch-grad-cam's 3-D test model shape)."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv3d(1, 6, 3, padding=1), nn.ReLU(), nn.Conv3d(6, 8, 3, padding=1), nn.ReLU())
        self.head = nn.Linear(8, 4)

    def forward(self, x):
        return self.head(self.features(x).mean(dim=(2, 3, 4)))


def test_conv3d_weights_average_every_spatial_axis():
    torch.manual_seed(0)
    model = Net3d().eval()
    x, t = torch.rand(3, 1, 5, 6, 7), torch.tensor([0, 2, 3])
    ours = grad_cam(model, "features.3", x, t, normalize="none")
    assert ours.maps.shape == (3, 5, 6, 7)
    expected = _captum(model, "features.3", x, t)
    assert torch.allclose(ours.maps, expected, atol=1e-6, rtol=1e-5)
    # pytorch-grad-cam on a 3-D input: same grid, resized by scipy's cubic-spline zoom at
    # scale 1, which is the identity up to spline round-off
    cam = pgc.GradCAM(model=model, target_layers=[model.features[3]])
    library = cam(x, [ClassifierOutputTarget(int(i)) for i in t])
    cam.activations_and_grads.release()
    assert np.abs(grad_cam(model, "features.3", x, t).maps.numpy() - library).max() < 1e-3


def _bn_model():
    torch.manual_seed(0)
    model = build_model(ModelConfig(name="cnn", width=8), 3, 5)
    with torch.no_grad():  # give BatchNorm statistics that differ from a batch's own
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    return model


def test_train_mode_model_is_explained_in_eval_mode_and_restored():
    model = _bn_model()
    x, t = torch.rand(6, 3, 32, 32), torch.randint(0, 5, (6,))
    expected = grad_cam(model.eval(), model.target_layer, x, t).maps
    model.train()
    frozen = next(m for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    frozen.eval()  # a caller's frozen BatchNorm inside a training model stays frozen
    stats = {k: v.clone() for k, v in model.state_dict().items()}
    single = grad_cam(model, model.target_layer, x[:1], t[:1]).maps
    batch = grad_cam(model, model.target_layer, x, t).maps
    assert torch.allclose(batch, expected, atol=1e-6)
    assert torch.allclose(single[0], batch[0], atol=1e-6)  # one image's map does not depend on the batch
    assert model.training and not frozen.training
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in stats.items())  # no BatchNorm update


@pytest.mark.parametrize("method", ["gradcam", "gradcam-reference", "gradcam++"])
@pytest.mark.parametrize("context", ["no_grad", "inference_mode"])
def test_works_inside_a_callers_no_grad_or_inference_mode(method, context):
    model = _bn_model().eval()
    x, t = torch.rand(3, 3, 32, 32), torch.tensor([0, 1, 4])
    expected = CAM_METHODS[method](model, model.target_layer, x, t).maps
    with getattr(torch, context)():
        inner = CAM_METHODS[method](model, model.target_layer, x.clone(), t)
    assert torch.allclose(inner.maps, expected, atol=1e-6)


def test_every_kind_of_target():
    model = _bn_model().eval()
    x = torch.rand(4, 3, 32, 32)
    logits = model(x).detach()
    explicit = grad_cam(model, model.target_layer, x, torch.tensor([2, 2, 2, 2])).maps
    assert torch.allclose(grad_cam(model, model.target_layer, x, 2).maps, explicit)
    assert torch.allclose(grad_cam(model, model.target_layer, x, [2, 2, 2, 2]).maps, explicit)
    assert torch.allclose(grad_cam(model, model.target_layer, x, np.array([2, 2, 2, 2])).maps, explicit)
    pred = grad_cam(model, model.target_layer, x, None)
    assert torch.equal(pred.targets, logits.argmax(1))
    assert torch.allclose(pred.maps, grad_cam(model, model.target_layer, x, logits.argmax(1)).maps)
    # a target function: the margin of class 1 over class 0, checked against Captum's own
    margin = grad_cam(model, model.target_layer, x, lambda out: out[:, 1] - out[:, 0], normalize="none").maps
    c1, c0 = (_captum(model, model.target_layer, x, torch.full((4,), c)) for c in (1, 0))
    assert torch.allclose(margin, c1 - c0, atol=1e-6, rtol=1e-5)
    with pytest.raises(I2XError, match="target class 9 is out of range for a model with 5 outputs"):
        grad_cam(model, model.target_layer, x, 9)
    with pytest.raises(I2XError, match="got 3 targets for 4 images"):
        grad_cam(model, model.target_layer, x, [0, 1, 2])
    with pytest.raises(I2XError, match="targets must be None, an int"):
        grad_cam(model, model.target_layer, x, "cat")


class Branchy(nn.Module):
    """Two conv branches, one unused; a Linear layer; optionally a dict output."""

    def __init__(self, as_dict=False):
        super().__init__()
        self.used, self.unused = nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(3, 4, 3, padding=1)
        self.fc, self.as_dict = nn.Linear(4, 3), as_dict

    def forward(self, x):
        self.unused(x)
        logits = self.fc(torch.relu(self.used(x)).mean(dim=(2, 3)))
        return {"logits": logits} if self.as_dict else logits


def test_layer_shapes_and_model_outputs_give_clear_answers():
    torch.manual_seed(0)
    model, x, t = Branchy().eval(), torch.rand(2, 3, 8, 8), torch.tensor([0, 2])
    with pytest.raises(I2XError, match=r"target layer 'fc' outputs shape \(2, 3\) with no spatial grid"):
        grad_cam(model, "fc", x, t)
    with pytest.warns(UserWarning, match="'unused' does not influence the explained score"):
        zeros = grad_cam(model, "unused", x, t)
    assert zeros.maps.shape == (2, 8, 8) and torch.count_nonzero(zeros.maps) == 0
    # (Captum 0.9 raises autograd's "appears to not have been used in the graph" here.)
    with pytest.raises(I2XError, match="the model returns dict, not"):
        grad_cam(Branchy(as_dict=True).eval(), "used", x, t)
    dict_model = Branchy(as_dict=True).eval()
    dict_model.load_state_dict(model.state_dict())
    picked = grad_cam(dict_model, "used", x, lambda out: out["logits"].gather(1, t.view(-1, 1))[:, 0])
    assert torch.allclose(picked.maps, grad_cam(model, "used", x, t).maps)
    assert picked.probs.shape == (2, 0)


def test_multi_layer_call_matches_single_calls_and_the_library_aggregate():
    torch.manual_seed(2)
    model = build_model(ModelConfig(name="resnet18"), 3, 10).eval()
    x, t = torch.rand(2, 3, 32, 32), torch.tensor([1, 8])
    layers = ["net.layer3", "net.layer4"]
    both = grad_cam(model, layers, x, t)
    assert set(both) == set(layers)
    for name in layers:
        assert torch.allclose(both[name].maps, grad_cam(model, name, x, t).maps, atol=1e-6)
    cam = pgc.GradCAM(model=model, target_layers=[model.get_submodule(n) for n in layers])
    expected = cam(x, [ClassifierOutputTarget(int(i)) for i in t])
    cam.activations_and_grads.release()
    assert np.abs(combine_layers(both, (32, 32)).numpy() - expected).max() <= 1e-5
    library = CAM_METHODS["gradcam-reference"](model, layers, x, t)
    assert all(torch.allclose(library[n].maps, both[n].maps, atol=1e-5) for n in layers)


def _tokens_to_grid(t):
    """ViT tokens ``(B, 1 + h*w, D)`` without the class token, as ``(B, D, h, w)``."""
    side = int((t.shape[1] - 1) ** 0.5)
    return t[:, 1:].reshape(t.shape[0], side, side, t.shape[2]).permute(0, 3, 1, 2)


def test_reshape_transform_on_a_small_vit_matches_the_library():
    torch.manual_seed(0)  # torchvision's vit_b_16 definition, small and randomly initialised
    vit = VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=32, mlp_dim=64, num_classes=5).eval()
    layer = "encoder.layers.encoder_layer_1.ln_1"
    x, t = torch.rand(3, 3, 32, 32), torch.tensor([0, 3, 4])
    ours = grad_cam(vit, layer, x, t, reshape_transform=_tokens_to_grid)
    assert ours.maps.shape == (3, 4, 4)
    cam = pgc.GradCAM(model=vit, target_layers=[vit.get_submodule(layer)], reshape_transform=_tokens_to_grid)
    expected = cam(x, [ClassifierOutputTarget(int(i)) for i in t])
    cam.activations_and_grads.release()
    assert np.abs(upsample(ours.maps, (32, 32)).numpy() - expected).max() <= 1e-5
    with pytest.raises(I2XError, match="no spatial grid"):
        grad_cam(vit, "heads.head", x, t)


def test_memory_budget_sets_the_batch_and_not_the_maps():
    torch.manual_seed(0)
    model = build_model(ModelConfig(name="resnet18"), 3, 10).eval()
    images = (torch.rand(12, 3, 32, 32) * 255).to(torch.uint8)
    labels = torch.randint(0, 10, (12,))
    sample = pixels(images[:2])
    early = plan_batch(grad_cam, model, "net.layer1", sample, 64, 10_000)
    late = plan_batch(grad_cam, model, "net.layer4", sample, 64, 10_000)
    assert late > early  # an early layer keeps the whole network's graph after it
    assert plan_batch(grad_cam, model, "net.layer4", sample, 16, 10_000) < late
    assert plan_batch(grad_cam, model, "net.layer4", sample, 1e6, 7) == 7
    fixed = saliency_pass(model, "net.layer2", images, labels, batch_size=5)
    budget = saliency_pass(model, "net.layer2", images, labels, batch_size=5, memory_mb=0.5)
    assert plan_batch(grad_cam, model, "net.layer2", sample, 0.5, 5) < 5
    assert torch.allclose(fixed.maps, budget.maps, atol=1e-5)  # batch-size-dependent conv kernels


def test_float_images_are_not_divided_twice():
    model = _bn_model().eval()
    images = (torch.rand(4, 3, 32, 32) * 255).to(torch.uint8)
    labels = torch.tensor([0, 1, 2, 3])
    as_uint8 = saliency_pass(model, model.target_layer, images, labels)
    as_float = saliency_pass(model, model.target_layer, images.float() / 255, labels)
    assert torch.allclose(as_uint8.maps, as_float.maps, atol=1e-6)
    with pytest.warns(UserWarning, match="look like unscaled 0-255 pixels"):
        saliency_pass(model, model.target_layer, images.float(), labels)


def test_pred_target_uses_the_same_forward():
    model = _bn_model().eval()
    images = (torch.rand(5, 3, 32, 32) * 255).to(torch.uint8)
    out = saliency_pass(model, model.target_layer, images, torch.zeros(5, dtype=torch.long), target="pred")
    preds = out.probs.argmax(1)
    assert torch.equal(out.targets, preds)
    assert torch.allclose(out.maps, saliency_pass(model, model.target_layer, images, preds).maps)


class InplaceHead(nn.Module):
    """Captum's in-place ReLU case: the target conv feeds a ReLU(inplace=True)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.relu = nn.ReLU(inplace=True)
        self.fc = nn.Linear(6, 4)

    def forward(self, x):
        return self.fc(self.relu(self.conv(x)).mean(dim=(2, 3)))


def _inplace_truth():
    """The in-place model and its out-of-place twin (same weights): Captum runs on the twin."""
    torch.manual_seed(5)
    model = InplaceHead().eval()
    twin = InplaceHead().eval()
    twin.load_state_dict(model.state_dict())
    twin.relu.inplace = False
    return model, twin


@pytest.mark.parametrize("layer", ["net.block1", "net.block2", "net.block3", "net.block3.2"])
def test_raw_maps_equal_captum_layer_grad_cam_at_every_depth(layer):
    model = _bn_model().eval()
    x, t = torch.rand(4, 3, 32, 32), torch.tensor([0, 1, 2, 4])
    ours = grad_cam(model, layer, x, t, normalize="none").maps
    assert torch.allclose(ours, _captum(model, layer, x, t), atol=1e-6, rtol=1e-5)


def test_captum_cases_inplace_frozen_targets_and_batch_vs_single():
    model, twin = _inplace_truth()
    x, t = torch.rand(5, 3, 12, 12), torch.tensor([0, 3, 1, 1, 2])
    expected = _captum(twin, "conv", x, t)
    assert torch.allclose(grad_cam(model, "conv", x, t, normalize="none").maps, expected, atol=1e-6, rtol=1e-5)
    # frozen parameters: the same maps
    model.requires_grad_(False)
    assert torch.allclose(grad_cam(model, "conv", x, t, normalize="none").maps, expected, atol=1e-6, rtol=1e-5)
    # each image alone equals its row of the batch
    for i in range(5):
        alone = grad_cam(model, "conv", x[i : i + 1], t[i : i + 1], normalize="none").maps[0]
        assert torch.allclose(alone, expected[i], atol=1e-6, rtol=1e-5)
    # a different target per image changes the map exactly as Captum's does
    other = torch.tensor([1, 0, 3, 2, 2])
    assert torch.allclose(grad_cam(model, "conv", x, other, normalize="none").maps, _captum(twin, "conv", x, other), atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("method", ["gradcam", "gradcam-reference", "gradcam++"])
def test_a_callers_accumulated_gradients_are_left_alone(method):
    model = _bn_model().eval()
    for p in model.parameters():
        p.grad = torch.full_like(p, 0.25)
    CAM_METHODS[method](model, model.target_layer, torch.rand(2, 3, 32, 32), [0, 1])
    assert all(torch.equal(p.grad, torch.full_like(p, 0.25)) for p in model.parameters())
