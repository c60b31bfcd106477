import pytest
import torch

from i2x.platform.errors import I2XError
from i2x.tuning.perturbation import (
    PERTURBATIONS,
    Plan,
    affected,
    contains,
    curate,
    pixel_mask,
    target_cells,
)

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


def test_affected_follows_the_scope():
    labels = torch.tensor([0, 1, 2])
    assert affected(ASSIGN, labels, (5,)).tolist() == [True, False, True]  # literal: every image that contains it
    assert affected(ASSIGN, labels, (5,), ((0, 1),)).tolist() == [True, False, False]  # only its pair's classes
    assert affected(ASSIGN, labels, (5, 2), ((2,), (1,))).tolist() == [False, True, True]
    assert target_cells(ASSIGN, (5, 2)).tolist() == [1, 2, 1]


def _curate(alpha, max_class_drop, hit, labels, cells=None):
    cells = torch.ones(len(labels), dtype=torch.long) if cells is None else cells
    return curate(torch.arange(len(labels)), hit, alpha, torch.Generator().manual_seed(0), labels, cells, max_class_drop, 2)


def test_drop_removes_the_requested_fraction_of_affected_samples():
    labels = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    hit = torch.tensor([True, False, True, False, True, False, False, False])
    full = _curate(1.0, 1.0, hit, labels)
    assert full.kept.tolist() == [1, 3, 5, 6, 7] and full.dropped_per_class == [2, 1] and full.capped == []  # the paper's curation
    assert _curate(0.0, 1.0, hit, labels).kept.tolist() == list(range(8))
    half = _curate(0.5, 1.0, hit, labels)
    assert half.dropped_per_class == [1, 0]  # class 1: round(0.5 * 1) is 0 (round half to even)
    assert {1, 3, 5, 6, 7} <= set(half.kept.tolist())


def test_the_floor_keeps_every_class_and_its_lowest_intensity_images():
    """Class 0 has every image affected: a full drop would delete the class. The floor
    keeps half of it, the images where the targets cover the fewest cells."""
    labels = torch.tensor([0, 0, 0, 0, 1, 1])
    hit = torch.tensor([True, True, True, True, True, False])
    cells = torch.tensor([5, 1, 7, 2, 3, 0])
    out = _curate(1.0, 0.5, hit, labels, cells)
    assert out.capped == [0] and out.dropped_per_class == [2, 1]  # class 1: dropping 1 of its 2 is within the floor
    assert out.kept.tolist() == [1, 3, 5]  # of class 0, the two lowest-intensity images (1 and 2 cells) stay


def test_upweight_is_registered_as_an_oversampling_kind():
    kind = PERTURBATIONS["upweight"]
    assert kind.oversamples and not kind.drops and kind.apply is None


def test_plan_validation():
    with pytest.raises(I2XError, match="unknown perturbation 'smudge'"):
        Plan("smudge", 0.5, (1,), 1, 1, 0.01)
    with pytest.raises(I2XError, match="alpha must be in"):
        Plan("mask", 1.5, (1,), 1, 1, 0.01)
    assert Plan("none", 0.0, (), 1, 1, 0.01).kind == "none"
    with pytest.raises(I2XError, match="scope names the classes of each target"):
        Plan("drop", 1.0, (1, 2), 1, 1, 0.01, scope=((0, 1),))
