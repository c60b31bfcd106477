import pytest
import torch

from i2x.errors import I2XError
from i2x.perturbation import PERTURBATIONS, Plan, contains, dropped, pixel_mask

# 3 samples on a 2x2 grid; prototype 5 occurs in sample 0 (top-left) and sample 2 (bottom-right)
ASSIGN = torch.tensor([[[5, 1], [1, 1]], [[1, 2], [2, 1]], [[0, 0], [0, 5]]], dtype=torch.int16)


def test_contains_and_pixel_mask_by_hand():
    assert contains(ASSIGN, (5,)).tolist() == [True, False, True]
    assert contains(ASSIGN, ()).tolist() == [False, False, False]
    mask = pixel_mask(ASSIGN, (5,), (4, 4))
    assert mask.shape == (3, 1, 4, 4)
    assert mask[0, 0, :2, :2].eq(1).all() and mask[0].sum() == 4
    assert mask[1].sum() == 0
    assert mask[2, 0, 2:, 2:].eq(1).all() and mask[2].sum() == 4


@pytest.mark.parametrize("kind", ["mask", "blur", "noise"])
def test_pixel_perturbations_touch_only_masked_pixels(kind):
    torch.manual_seed(0)
    x = torch.rand(3, 1, 4, 4)
    m = pixel_mask(ASSIGN, (5,), (4, 4))
    out = PERTURBATIONS[kind].apply(x, m, 1.0, torch.Generator().manual_seed(0))
    assert torch.equal(out[m == 0], x[m == 0])
    assert not torch.allclose(out[m == 1], x[m == 1])
    assert torch.equal(PERTURBATIONS[kind].apply(x, m, 0.0, torch.Generator().manual_seed(0)), x)
    assert float(out.min()) >= 0 and float(out.max()) <= 1


def test_drop_removes_the_requested_fraction_of_target_samples():
    has = torch.tensor([True, False, True, True, False, True])
    candidates = torch.arange(6)
    assert dropped(candidates, has, 1.0, torch.Generator().manual_seed(0)).tolist() == [1, 4]  # the paper's curation
    assert dropped(candidates, has, 0.0, torch.Generator().manual_seed(0)).tolist() == list(range(6))
    half = dropped(candidates, has, 0.5, torch.Generator().manual_seed(0))
    assert len(half) == 4 and {1, 4} <= set(half.tolist())


def test_plan_validation():
    with pytest.raises(I2XError, match="unknown perturbation 'smudge'"):
        Plan("smudge", 0.5, (1,), 1, 1, 0.01)
    with pytest.raises(I2XError, match="alpha must be in"):
        Plan("mask", 1.5, (1,), 1, 1, 0.01)
    assert Plan("none", 0.0, (), 1, 1, 0.01).kind == "none"
