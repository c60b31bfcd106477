import pytest
import torch

from i2x.platform.config import ModelConfig
from i2x.platform.config_io import load_config
from i2x.platform.errors import I2XError
from i2x.training.checkpoints import model_from_checkpoint
from i2x.training.models import MODELS, build_model, target_module


@pytest.mark.parametrize("name, channels, size, grid", [("cnn", 1, 28, 7), ("cnn", 3, 32, 8), ("resnet18", 1, 28, 4), ("resnet18", 3, 32, 4), ("resnet50", 3, 32, 4),
                                                      ("fastnet", 3, 32, 4), ("fastnet", 1, 28, 4)])
def test_models_shapes_and_target_layer_grid(name, channels, size, grid):
    model = build_model(ModelConfig(name=name), channels, 10).eval()
    seen = {}
    layer = target_module(model, model.target_layer)

    def hook(_m, _i, out):
        seen["shape"] = out.shape

    handle = layer.register_forward_hook(hook)
    with torch.no_grad():
        out = model(torch.rand(2, channels, size, size))
    handle.remove()
    assert out.shape == (2, 10)
    assert seen["shape"][-2:] == (grid, grid)


def test_resnet_has_small_image_stem():
    model = build_model(ModelConfig(name="resnet18"), 3, 10)
    assert model.net.conv1.kernel_size == (3, 3) and model.net.conv1.stride == (1, 1)
    assert isinstance(model.net.maxpool, torch.nn.Identity)


def test_unknown_model_and_layer_errors():
    with pytest.raises(I2XError, match="unknown model 'vgg'.*cnn"):
        build_model(ModelConfig(name="vgg"), 3, 10)
    model = build_model(ModelConfig(name="cnn"), 1, 10)
    with pytest.raises(I2XError, match="target layer 'net.block9' does not exist"):
        target_module(model, "net.block9")
    assert set(MODELS) == {"cnn", "fastnet", "resnet18", "resnet50"}


def test_checkpoint_from_another_architecture_is_refused(smoke_run):
    from i2x.training.checkpoints import list_checkpoints, read_checkpoint

    config, _, result = smoke_run
    payload = read_checkpoint(list_checkpoints(result.folder)[-1])
    with pytest.raises(I2XError, match="holds model 'cnn' but the config asks for 'resnet18'"):
        model_from_checkpoint(payload, "ckpt", expect=load_config("smoke", "model.name=resnet18"))
    payload["model"] = {k: v for k, v in payload["model"].items() if "block3" not in k}
    with pytest.raises(I2XError, match="does not fit model 'cnn'"):
        model_from_checkpoint(payload, "ckpt")


def test_fastnet_whitening_decorrelates_the_training_patches():
    """After :meth:`FastNet.init_whitening`, the 2x2 patches of the images it was set from
    come out of the first layer with unit variance and no correlation (the first half of
    the filters; the second half is their negative)."""
    torch.manual_seed(0)
    model = build_model(ModelConfig(name="fastnet", width=8), 3, 10)
    base = torch.rand(256, 1, 32, 32)
    x = torch.cat([base, 0.5 * base + 0.5 * torch.rand_like(base), torch.rand_like(base)], 1)  # correlated channels
    model.net.init_whitening(x)
    assert not model.net.whiten.weight.requires_grad
    out = model.net.whiten(x) - model.net.whiten.bias.view(1, -1, 1, 1)
    half = out[:, :12].permute(0, 2, 3, 1).reshape(-1, 12)
    cov = torch.cov(half.T)
    assert (cov - torch.diag(cov.diag())).abs().max() < 0.01  # decorrelated
    # unit variance, less a little in the weakest directions, which the eps damps
    assert ((cov.diag() > 0.9) & (cov.diag() < 1.01)).all()
    assert torch.allclose(out[:, 12:], -out[:, :12], atol=1e-5)  # the bias is added, then subtracted: rounding


@pytest.mark.parametrize("device, name, width", [("cpu", "fastnet", 32), ("cuda", "fastnet", 64)])
def test_model_auto_resolves_by_device(device, name, width):
    from i2x.training.models import AUTO_MODELS, resolve_auto

    cfg = resolve_auto(ModelConfig(name="auto"), torch.device(device))
    assert (cfg.name, cfg.width) == (name, width) == AUTO_MODELS[device]
    assert resolve_auto(ModelConfig(name="cnn", width=16), torch.device(device)) == ModelConfig(name="cnn", width=16)
    # an explicit width is kept (it was silently replaced by the device's); 0 means the registry's default
    assert resolve_auto(ModelConfig(name="auto", width=24), torch.device(device)) == ModelConfig(name=name, width=24)
    assert resolve_auto(ModelConfig(name="cnn"), torch.device(device)).width == 16
    assert build_model(ModelConfig(name="fastnet"), 3, 10).net.block1[0].out_channels == 64


def test_cifar10_config_asks_for_auto_and_training_resolves_it():
    from i2x.training.loop import resolve_model

    config = load_config("cifar10")
    assert config.model.name == "auto"
    resolved = resolve_model(config)
    assert (resolved.model.name, resolved.model.width) == ("fastnet", 32)  # no GPU here or in CI
