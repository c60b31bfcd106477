"""Every saliency method against the out-of-place truth, on the two in-place traps of torchvision.

A ResNet block adds its shortcut in place after ``bn2`` (``out += identity``), and DenseNet
applies ``F.relu(features, inplace=True)`` after ``features``, pytorch-grad-cam's own README
layer. On the CPU the library's stored activation is the same tensor, so it is overwritten.
The truth is the same method on a copy whose forward does the same maths out of place.
"""

import copy
import types

import numpy as np
import pytest
import pytorch_grad_cam as pgc
import torch
import torch.nn.functional as F
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torchvision.models import densenet121, resnet18

from i2x.explanation.cam_methods import CAM_METHODS
from i2x.explanation.saliency import upsample

LIBRARY_CLASS = {
    "gradcam": "GradCAM", "gradcam-reference": "GradCAM", "gradcam++": "GradCAMPlusPlus", "xgradcam": "XGradCAM",
    "layercam": "LayerCAM", "hirescam": "HiResCAM", "eigencam": "EigenCAM", "scorecam": "ScoreCAM",
}


def _block_out_of_place(self, x):
    identity = x if self.downsample is None else self.downsample(x)
    out = torch.relu(self.bn1(self.conv1(x)))
    return torch.relu(self.bn2(self.conv2(out)) + identity)


def _densenet_out_of_place(self, x):
    out = F.relu(self.features(x))
    return self.classifier(torch.flatten(F.adaptive_avg_pool2d(out, (1, 1)), 1))


def _out_of_place(model):
    truth = copy.deepcopy(model)
    for module in truth.modules():
        if getattr(module, "inplace", False):
            module.inplace = False
        if type(module).__name__ == "BasicBlock":
            module.forward = types.MethodType(_block_out_of_place, module)
    if type(truth).__name__ == "DenseNet":
        truth.forward = types.MethodType(_densenet_out_of_place, truth)
    return truth


def _library(model, layer, method, x, targets):
    cam = getattr(pgc, LIBRARY_CLASS[method])(model=model, target_layers=[model.get_submodule(layer)])
    try:
        return cam(x, [ClassifierOutputTarget(int(t)) for t in targets])
    finally:
        cam.activations_and_grads.release()


CASES = {  # name: (builder, layer, input size)
    "resnet18-bn2": (lambda: resnet18(num_classes=10), "layer4.1.bn2", 128),
    "densenet121-features": (lambda: densenet121(num_classes=10), "features", 96),
}


@pytest.fixture(scope="module", params=sorted(CASES))
def case(request):
    build, layer, size = CASES[request.param]
    torch.manual_seed(0)
    model = build().eval()
    return model, _out_of_place(model).eval(), layer, size


@pytest.mark.parametrize("method", sorted(CAM_METHODS))
def test_every_method_matches_the_out_of_place_truth(case, method):
    model, truth, layer, size = case
    n = 1 if method == "scorecam" else 2  # ScoreCAM runs one forward per channel
    if method == "scorecam":
        size = 64
    torch.manual_seed(1)
    x, t = torch.rand(n, 3, size, size), torch.tensor([3, 7][:n])
    expected = _library(truth, layer, method, x, t)
    ours = CAM_METHODS[method](model, layer, x, t).maps
    assert np.abs(upsample(ours, (size, size)).numpy() - expected).max() <= 1e-5
    assert torch.allclose(ours, CAM_METHODS[method](truth, layer, x, t).maps, atol=1e-5)


def test_the_trap_is_live(case):
    """Without protection the library's own maps on the in-place model are wrong, so the test above can fail."""
    model, truth, layer, size = case
    torch.manual_seed(1)
    x, t = torch.rand(2, 3, size, size), torch.tensor([3, 7])
    assert np.abs(_library(model, layer, "gradcam-reference", x, t) - _library(truth, layer, "gradcam-reference", x, t)).max() > 0.1
