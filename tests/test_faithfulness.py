"""The causal check on a model whose answer is known by construction."""

import numpy as np
import pytest
import torch
from torch import nn

from i2x.explanation.faithfulness import (
    Claim,
    deletion_test,
    foreground_cells,
    matched_cells,
)
from i2x.explanation.road import road_scores
from i2x.platform.config import FaithfulnessConfig


class CellModel(nn.Module):
    """Logits from a 4x4 grid of cell means of an 8x8 image: class 0's logit is 20x the
    brightness of cell (0, 0) and nothing else; class 1's logit is a constant 2. So the
    truth is known: only cell (0, 0) matters, for class 0."""

    def __init__(self) -> None:
        super().__init__()
        self.pool = nn.AvgPool2d(2)
        self.head = nn.Linear(16, 2)
        with torch.no_grad():
            self.head.weight.zero_()
            self.head.bias.copy_(torch.tensor([0.0, 2.0]))
            self.head.weight[0, 0] = 20.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(x).flatten(1))


def _planted(n: int = 60, seed: int = 0):
    """Images with a mark of varying brightness in cell (0, 0) and a bright stroke along the
    bottom row of cells; prototype 0 = the mark's cell, 1 = the stroke, 2 = the rest."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 10, size=(n, 1, 8, 8)).astype(np.uint8)
    x[:, :, 0:2, 0:2] = rng.integers(150, 256, size=(n, 1, 1, 1))
    x[:, :, 6:8, :] = 220
    assignment = np.full((n, 4, 4), 2)
    assignment[:, 0, 0] = 0
    assignment[:, 3, :] = 1
    saliency = np.zeros((n, 4, 4))
    saliency[:, 0, 0] = 1.0
    return torch.from_numpy(x), torch.zeros(n, dtype=torch.long), assignment, saliency


def test_foreground_cells_by_hand():
    x = torch.zeros(1, 1, 8, 8)
    x[0, 0, 0:2, 2:4] = 1.0  # cell (0, 1) fully bright
    x[0, 0, 4, 4] = 1.0  # a quarter of cell (2, 2): mean difference 0.25
    fg = foreground_cells(x, (4, 4), 0.3)[0]
    assert fg.sum() == 1 and fg[0, 1]
    assert foreground_cells(x, (4, 4), 0.2)[0].sum() == 2


def test_matched_cells_keep_the_foreground_mix_and_avoid_the_prototype():
    rng = np.random.default_rng(0)
    own = np.zeros(16, dtype=bool)
    own[[0, 1, 5]] = True
    fg = np.zeros(16, dtype=bool)
    fg[[0, 1, 2, 3, 4, 8]] = True  # the prototype has 2 foreground cells and 1 background cell
    for _ in range(20):
        drawn = matched_cells(own, fg, rng)
        assert drawn.sum() == 3 and not (drawn & own).any()
        assert (drawn & fg).sum() == 2
    # too few free foreground cells: topped up from background, same count
    scarce = np.zeros(16, dtype=bool)
    scarce[[0, 1, 2]] = True
    drawn = matched_cells(own, scarce, rng)
    assert drawn.sum() == 3 and (drawn & scarce).sum() == 1


@pytest.mark.parametrize("fills", [("mean",), ("blur",), ("background",), ("road",), ("mean", "background")])
def test_the_planted_cell_is_verified_and_the_irrelevant_stroke_is_not(fills):
    """A planted cue holds under every fill (issue 45): paint, blur, erase, ROAD's imputation."""
    x, y, assignment, saliency = _planted()
    cfg = FaithfulnessConfig(fills=fills, draws=3, bootstrap=500, blur_sigma=1.0)
    mark, stroke = deletion_test(CellModel(), x, y, assignment, saliency,
                                 [Claim(0, "shared", (0,)), Claim(1, "shared", (0,))], cfg, seed=0, device=torch.device("cpu"))
    assert mark.verified is True and mark.ci[0] > 0
    assert mark.effect > 1.0 and abs(mark.baselines["foreground"]) < 1e-5  # random cells never hit (0, 0)
    # the top Grad-CAM cell is the mark's cell (ROAD's imputation adds noise to each pass)
    assert mark.baselines["gradcam"] == pytest.approx(mark.effect, rel=0.01 if fills == ("road",) else 1e-6)
    assert stroke.verified is False and abs(stroke.effect) < 1e-5
    assert stroke.cells_per_image == 4 and mark.cells_per_image == 1
    assert set(mark.fills) == set(fills) and all(f["verified"] for f in mark.fills.values())


class CanvasModel(nn.Module):
    """Class 0's logit falls with the brightness of cell (1, 1), which is empty canvas (0) in
    every image: the class "relies on" nothing there, but grey paint on it lowers the class."""

    def __init__(self) -> None:
        super().__init__()
        self.pool = nn.AvgPool2d(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cells = self.pool(x).flatten(1)
        return torch.stack([2.0 - 20.0 * cells[:, 5], torch.zeros(len(x))], 1)


def test_a_prototype_of_empty_canvas_is_not_a_finding_whatever_the_paint_does():
    """Issue 45: P8, 79% empty canvas, was "class 9's evidence" because painting the data set's
    mean grey onto canvas is a stroke the model never saw. Erased (the background fill) it costs
    nothing, so it is not verified when every fill must agree; the mean fill alone verifies it."""
    x, y, assignment, saliency = _planted()
    x[x < 150] = 0  # blank canvas (0) everywhere but the mark, which sits in cell (0, 0)
    x[:, :, 6:8, :] = 0
    assignment[:, 1, 1] = 3  # prototype 3: that canvas cell
    claim = [Claim(3, "shared", (0,))]
    (painted,) = deletion_test(CanvasModel(), x, y, assignment, saliency, claim, FaithfulnessConfig(fills=("mean",), bootstrap=300),
                               seed=0, device=torch.device("cpu"))
    assert painted.verified is True and painted.effect > 0.5  # the paint's effect, not the canvas's
    (both,) = deletion_test(CanvasModel(), x, y, assignment, saliency, claim, FaithfulnessConfig(fills=("mean", "background"),
                            bootstrap=300), seed=0, device=torch.device("cpu"))
    assert both.verified is False and both.fills["mean"]["verified"] is True and both.fills["background"]["verified"] is False
    assert abs(both.fills["background"]["effect"]) < 1e-5


def test_a_claim_in_more_images_than_max_images_is_judged_on_a_seeded_subsample():
    """faithfulness.max_images (300 by default): the planted cell, in all 60 images, is judged on
    25 of them and still verified; the verdict's control is the foreground draws, whatever the
    number of uniform draws (reported only)."""
    x, y, assignment, saliency = _planted()
    claims = [Claim(0, "shared", (0,))]
    runs = [deletion_test(CellModel(), x, y, assignment, saliency, claims,
                          FaithfulnessConfig(max_images=25, uniform_draws=u, bootstrap=300), seed=0, device=torch.device("cpu"))[0]
            for u in (1, 4)]
    for result in runs:
        assert result.n_images == 25 and result.verified is True and result.ci[0] > 0
    assert runs[0].effect == runs[1].effect and runs[0].excess == runs[1].excess
    (everything,) = deletion_test(CellModel(), x, y, assignment, saliency, claims, FaithfulnessConfig(max_images=0, bootstrap=300),
                                  seed=0, device=torch.device("cpu"))
    assert everything.n_images == 60


def test_an_uncertain_claim_measures_the_size_of_the_pair_margin_change():
    x, y, assignment, saliency = _planted()
    y = torch.tensor([0, 1] * 30)  # half the images are labelled 1: occluding the mark still moves the 0/1 margin
    (result,) = deletion_test(CellModel(), x, y, assignment, saliency, [Claim(0, "uncertain", (0, 1))],
                              FaithfulnessConfig(draws=2, bootstrap=300), seed=0, device=torch.device("cpu"))
    assert result.verified is True and result.effect > 1.0


def test_too_few_images_is_not_tested_rather_than_rejected():
    x, y, assignment, saliency = _planted(n=6)
    (result,) = deletion_test(CellModel(), x, y, assignment, saliency, [Claim(0, "shared", (0,))],
                              FaithfulnessConfig(min_images=10), seed=0, device=torch.device("cpu"))
    assert result.verified is None and result.n_images == 6


def test_road_prefers_the_true_map_to_random_maps():
    """pytorch-grad-cam's ROAD on the hand-set model: a map that puts all relevance on cell
    (0, 0) beats random maps."""
    x, y, _, saliency = _planted(n=24)
    road = road_scores(CellModel(), x, y, saliency, FaithfulnessConfig(road_images=24, bootstrap=200), seed=0,
                       device=torch.device("cpu"))
    assert road.n_images == 24
    assert road.gradcam > road.random and road.gradcam_ci[0] > road.random_ci[1]


def test_beating_a_control_that_moves_the_wrong_way_is_not_verified():
    """Seen on a model trained on permuted labels: occluding the prototype RAISED its class
    margin (drop -0.003), only less than the matched cells did (-0.017), so the excess was
    positive with a CI above 0 and the prototype was 'verified'. A prototype that drives a
    class must lower it when occluded; the same numbers with the signs of a real driver pass."""
    from i2x.explanation.faithfulness import BASELINES, _verdicts

    rng = np.random.default_rng(0)

    def verdict(own: float, matched: float) -> bool:
        n = 100
        drops = {"prototype": own + 0.005 * rng.standard_normal(n), **{k: matched + 0.005 * rng.standard_normal(n) for k in BASELINES}}
        info = {"by_fill": {"mean": drops}, "counts": np.full(n, 7.5), "fg": 0.06, "n": n}
        (result,) = _verdicts([(Claim(3, "shared", (0,)), np.zeros(n), info)], FaithfulnessConfig(fills=("mean",)), seed=0)
        assert result.ci[0] > 0  # the excess alone would verify both
        return result.verified

    assert verdict(own=-0.003, matched=-0.017) is False
    assert verdict(own=0.017, matched=0.003) is True
