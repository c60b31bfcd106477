"""Rigid copies with a planted answer: a mark that a hand-built model uses is found, verified
and located; a mark it ignores is found and not verified; noise and blank canvas are not copies."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from i2x.explanation.copies import find_copies, footprint, scan
from i2x.platform.config import FaithfulnessConfig
from i2x.reporting.claims import copy_checks, copy_sentence

SIZE, GRID = 16, (4, 4)


class MarkReader(nn.Module):
    """Calls class 1 when the 3x3 bottom-right corner is white, else class 0: a model whose
    only shortcut is known."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        white = (x[:, :, -3:, -3:].mean((1, 2, 3)) > 0.95).float()
        return torch.stack([torch.ones_like(white), 10 * white, torch.zeros_like(white), torch.zeros_like(white)], 1)


def planted(n: int = 400, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, np.ndarray, np.ndarray]:
    """Noise images of 4 classes; a white 3x3 square in the bottom-right of 30% of class 1, a
    bright 4x4 square in the top-left of 30% of class 2 (a copy the model ignores)."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 200, size=(n, 3, SIZE, SIZE), dtype=np.uint8)
    y = np.arange(n) % 4
    white = (y == 1) & (rng.random(n) < 0.3)
    grey = (y == 2) & (rng.random(n) < 0.3)
    x[white, :, -3:, -3:] = 255
    x[grey, :, :4, :4] = 250
    return torch.from_numpy(x), torch.from_numpy(y), white, grey


def test_a_mark_the_model_uses_is_verified_and_located_and_one_it_ignores_is_not():
    images, labels, white, grey = planted()
    cfg = FaithfulnessConfig(copy_recipients=200)
    found = find_copies(MarkReader(), images, labels, GRID, cfg, seed=0, device=torch.device("cpu"))
    verified = [f for f in found if f.verified]
    assert [(f.cls, f.where) for f in verified] == [(1, "bottom-right")]
    mark = verified[0]
    assert mark.box == (13, 13, 16, 16) and mark.pixels == 9  # exactly the planted square, not the grid cell
    assert mark.images == int(white.sum()) and mark.push > 0.9 and mark.control_flips == 0.0
    # 30% of class 1 against none of the others: no label shuffle comes near, the smallest p 999 shuffles can give
    assert mark.enrichment_p == pytest.approx(1 / 1000) and mark.scan_tries > 1 and mark.scan_permutations == 999
    ignored = [f for f in found if f.cls == 2]
    assert len(ignored) == 1 and ignored[0].tested and ignored[0].box == (0, 0, 4, 4)
    assert not ignored[0].verified and abs(ignored[0].push) < 0.05
    assert {f.cls for f in found} == {1, 2}  # the noise holds no copy anywhere


def test_a_mark_every_class_holds_is_no_copy_of_the_class_that_holds_it_a_little_more_often():
    """Shuffled labels' false copy, planted: the same white corner in 13 of class 1's 100 images
    and 9 of every other class's (a mark independent of the class, as white sky is on a model
    trained on shuffled labels). The model reads it as class 1, so the paste test passes; the
    scan's enrichment is chance (13 of 40 holders where 10 are expected), which the
    hypergeometric test, corrected for every patch the scan tried, refuses. Its p is checked
    against scipy's Fisher exact test on the 2x2 table."""
    from scipy.stats import fisher_exact

    rng = np.random.default_rng(3)
    x = rng.integers(0, 200, size=(400, 3, SIZE, SIZE), dtype=np.uint8)
    y = np.arange(400) % 4
    marked = np.zeros(400, dtype=bool)
    for c, k in ((0, 9), (1, 13), (2, 9), (3, 9)):
        marked[np.flatnonzero(y == c)[:k]] = True
    x[marked, :, -3:, -3:] = 255
    fisher = fisher_exact([[13, 27], [87, 273]], alternative="greater")[1]
    for permutations in (0, 999):  # Bonferroni, and the label-permutation min-P the product runs
        found = find_copies(MarkReader(), torch.from_numpy(x), torch.from_numpy(y), GRID,
                            FaithfulnessConfig(copy_recipients=200, copy_permutations=permutations), seed=0, device=torch.device("cpu"))
        corner = [f for f in found if f.cls == 1 and f.where == "bottom-right"]
        assert len(corner) == 1 and corner[0].tested and corner[0].push > 0.9 and corner[0].p_adjusted < 0.05  # the model does read it
        assert corner[0].scan_tries >= 1 and corner[0].scan_permutations == permutations
        if permutations:
            assert fisher < corner[0].enrichment_p <= min(1.0, fisher * corner[0].scan_tries)
        else:
            assert corner[0].enrichment_p == pytest.approx(min(1.0, fisher * corner[0].scan_tries))
        assert fisher > 0.05 and not corner[0].verified
        assert not any(f.verified for f in found)


def sky(share_in_class: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """400 noise images of 4 classes; the top half white (sky: 32 scan windows, all held by the
    same images) in the first ``share_in_class`` of class 1's 100 images and 15 of every other
    class's."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 200, size=(400, 3, SIZE, SIZE), dtype=np.uint8)
    y = np.arange(400) % 4
    for c in range(4):
        x[np.flatnonzero(y == c)[:share_in_class if c == 1 else 15], :, :SIZE // 2] = 255
    return x / 255.0, y


def test_the_same_sky_in_many_windows_is_one_test_for_min_p_and_many_for_bonferroni():
    """Class 1 holds a white top half in 30 of its images, the others in 15 of 100 each: Fisher
    p 0.001. The 32 windows the sky covers are held by the same images, so the scan's 128
    (window, class) tests are 4 in truth: Bonferroni (x 128) refuses it, the label-permutation
    min-P keeps it near the 4 real tests' correction (0.0046)."""
    from scipy.stats import fisher_exact

    x, y = sky(30)
    fisher = fisher_exact([[30, 70], [45, 255]], alternative="greater")[1]
    bonferroni, tries = scan(x, y, GRID, tolerance=0.05, min_images=10, permutations=0)
    permuted, _ = scan(x, y, GRID, tolerance=0.05, min_images=10, permutations=999, seed=0)
    assert tries == 32 * 4 and {(c, round(p, 12)) for _, c, _, _, p in bonferroni} == {(1, round(min(1.0, fisher * tries), 12))}
    assert bonferroni[0][4] > 0.05
    ps = {p for _, c, _, _, p in permuted if c == 1}
    # in truth 0.0046 (20,000 shuffles counted directly); 999 shuffles put it under 0.02 but for a 1e-6 chance
    assert len(ps) == 1 and ps.pop() < 0.02 < bonferroni[0][4] / 5


def test_min_p_matches_a_direct_count_over_the_same_shuffles():
    """min_p's table lookup against scipy's Fisher test on every shuffle's every (patch, class)
    2x2 table, with the shuffles drawn the same way."""
    from scipy.stats import fisher_exact

    from i2x.explanation.copies import min_p

    rng = np.random.default_rng(5)
    holding = rng.random((6, 60)) < np.array([0.1, 0.2, 0.3, 0.3, 0.5, 0.7])[:, None]
    labels = np.arange(60) % 3
    correct = min_p(holding, labels, [0, 1, 2], permutations=40, seed=11)
    draw, smallest = np.random.default_rng(11), []
    for _ in range(40):
        shuffled = draw.permutation(labels)
        smallest.append(min(fisher_exact([[int((h & (shuffled == c)).sum()), int((h & (shuffled != c)).sum())],
                                          [int((~h & (shuffled == c)).sum()), int((~h & (shuffled != c)).sum())]],
                                         alternative="greater")[1] for h in holding for c in range(3)))
    for p in (1e-4, *sorted(smallest)[::7], 0.9):
        assert correct(p) == pytest.approx((1 + sum(m <= p * (1 + 1e-7) for m in smallest)) / 41)


def test_on_labels_that_carry_nothing_min_p_rejects_at_most_its_level():
    """Six flat squares (each in its own place, held by 60 random images of 400) and labels that
    carry nothing: over 40 label draws the scan's corrected p passes 0.05 in at most 6 (its
    level is 2 of 40), where the smallest uncorrected p of the 24 (square, class) tests, from
    scipy's Fisher test, passes it in most."""
    from scipy.stats import fisher_exact

    rng = np.random.default_rng(0)
    x = rng.integers(60, 140, size=(400, 3, SIZE, SIZE), dtype=np.uint8)
    holders = []
    for j, colour in enumerate((0, 20, 200, 220, 240, 255)):
        held = np.zeros(400, dtype=bool)
        held[rng.choice(400, size=60, replace=False)] = True
        r, c = divmod(j, 4)
        x[held, :, 4 * r:4 * r + 4, 4 * c:4 * c + 4] = colour
        holders.append(held)
    rejected = raw_small = 0
    for i in range(40):
        y = rng.permutation(np.arange(400) % 4)
        found, _ = scan(x / 255.0, y, GRID, tolerance=0.05, min_images=5, permutations=199, seed=i)
        rejected += any(p < 0.05 for *_, p in found)
        raw_small += min(fisher_exact([[int((h & (y == c)).sum()), int((~h & (y == c)).sum())], [int((h & (y != c)).sum()),
                                                                                                 int((~h & (y != c)).sum())]],
                                      alternative="greater")[1] for h in holders for c in range(4)) < 0.05
    assert rejected <= 6 and raw_small >= 20


def test_blank_canvas_that_every_class_shares_is_not_a_candidate():
    x = np.zeros((200, 1, SIZE, SIZE), dtype=np.uint8)
    y = np.arange(200) % 4
    x[:, :, 4:12, 4:12] = np.random.default_rng(1).integers(0, 255, size=(200, 1, 8, 8))
    assert scan(x / 255.0, y, GRID, tolerance=0.05, min_images=10)[0] == []


def test_the_footprint_follows_the_copy_not_the_grid():
    rng = np.random.default_rng(2)
    x = rng.random((50, 3, SIZE, SIZE)).astype(np.float32)
    x[:, :, 11:16, 11:16] = 1.0  # a 5-pixel mark over parts of four 4-pixel cells
    mask = footprint(x, np.ones(50, dtype=bool), (12, 14, 12, 14), reach=4, tolerance=0.05)
    assert np.argwhere(mask).min(0).tolist() == [11, 11] and np.argwhere(mask).max(0).tolist() == [15, 15] and mask.sum() == 25


def test_the_report_states_a_verified_copy_with_its_control_and_leaves_unverified_ones_out():
    row = {"class": "horse", "window": [28, 30, 28, 30], "where": "bottom-right", "box": [27, 27, 32, 32], "pixels": 25, "images": 22,
           "share": 0.11, "others": 0.013, "tested": True, "n_pairs": 295, "flips": 0.149, "control_flips": 0.02, "push": 0.129,
           "ci": [0.095, 0.169], "p": 1e-12, "p_adjusted": 2e-11, "verified": True, "exemplars": [1, 2]}
    weak = {**row, "class": "truck", "where": "top-left", "push": 0.02, "p_adjusted": 0.6, "verified": False}
    doc = {"config": {"explain": {}}, "prototypes": [], "faithfulness": {"deletion": [], "transplant": [], "copies": [weak, row]}}
    assert [c["class"] for c in copy_checks(doc)] == ["horse"]
    said = copy_sentence(row)
    assert "bottom-right" in said and "25 pixels" in said and "15% of them into horse" in said and "against 2%" in said
    assert "+13 points" in said and "CI [+10, +17]" in said and "enrichment" not in said  # a document from before the test
    said = copy_sentence({**row, "enrichment_p": 3e-5, "scan_tries": 7830})
    assert "1.3% of the other classes' (enrichment p 3e-05, corrected for the scan's 7,830 tests); pasted" in said
    said = copy_sentence({**row, "enrichment_p": 0.001, "scan_tries": 7830, "scan_permutations": 999})
    assert "(enrichment p 0.001, corrected for the scan's 7,830 tests by 999 label shuffles); pasted" in said


def test_tune_acts_on_a_copy_through_the_cells_it_covers_in_the_images_that_hold_it():
    from i2x.repair.finding import COPY_ID, lead_finding, with_copy
    from i2x.reporting.claims import copy_checks, shortcut_checks

    images, labels, white, _ = planted()
    found = [f for f in find_copies(MarkReader(), images, labels, GRID, FaithfulnessConfig(copy_recipients=200), seed=0,
                                    device=torch.device("cpu")) if f.verified]
    f = found[0]
    row = {"class": "1", "where": f.where, "push": f.push, "verified": True, "pixels": f.pixels, "share": f.share, "box": list(f.box),
           "mask": f.mask.astype(int).tolist(), "reference": f.reference.tolist()}
    doc = {"config": {"explain": {}}, "prototypes": [], "faithfulness": {"deletion": [], "transplant": [], "copies": [row]}}
    finding = lead_finding(shortcut_checks(doc), copy_checks(doc), ["0", "1", "2", "3"])
    assert finding.prototype == COPY_ID and finding.cls == 1 and finding.copy is row and "bottom-right" in finding.statement
    ids = with_copy(lambda x: torch.zeros(len(x), *GRID, dtype=torch.int16), finding, GRID, 0.05)(images)
    cells = (ids == COPY_ID).numpy()
    assert cells.any((1, 2)).tolist() == white.tolist()  # exactly the images that carry the mark
    assert cells[white].all(0).tolist() == [[False] * 4] * 3 + [[False, False, False, True]]  # its one cell: rows/cols 12-15
