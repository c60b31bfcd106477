import numpy as np
import pytest
import torch

from i2x.explanation.consistency import shape_consistency
from i2x.explanation.prototypes import fit_prototypes, receptive_box
from i2x.explanation.rigid import rigidity
from i2x.platform.errors import I2XError


def _clustered_features(n=12, d=6, h=3, w=3, seed=0):
    """Three well-separated location types: top row -> type 0, middle -> 1, bottom -> 2,
    except samples of class 1 whose bottom row is type 0 instead."""
    rng = np.random.default_rng(seed)
    centres = np.eye(d)[:3] * 10
    feats = np.zeros((n, d, h, w), dtype=np.float32)
    labels = np.array([i % 2 for i in range(n)])
    for i in range(n):
        for r in range(h):
            kind = 0 if (r == 2 and labels[i] == 1) else r
            for c in range(w):
                feats[i, :, r, c] = centres[kind] + rng.normal(0, 0.1, d)
    return torch.from_numpy(feats), torch.from_numpy(labels)


def test_prototypes_recover_planted_location_types():
    feats, labels = _clustered_features()
    protos = fit_prototypes(feats, labels, 2, n_prototypes=3, pca_components=4, fit_max_locations=10_000, n_exemplars=2, seed=0, image_size=(9, 9))
    a = protos.assignment
    assert a.shape == (12, 3, 3)
    top, mid, bottom_class0 = a[0, 0, 0], a[0, 1, 0], a[0, 2, 0]
    assert len({top, mid, bottom_class0}) == 3
    assert (a[:, 0] == top).all() and (a[:, 1] == mid).all()
    assert (a[labels == 1, 2] == top).all() and (a[labels == 0, 2] == bottom_class0).all()
    # coverage per class, by hand: the bottom type occurs only in class 0
    assert protos.coverage[bottom_class0].tolist() == [1.0, 0.0]
    assert protos.coverage[top].tolist() == [1.0, 1.0]
    assert protos.presence.shape == (12, 3)
    # exemplars: distinct samples, nearest first, inside the image
    for rows in protos.exemplars:
        assert len({e.sample for e in rows}) == len(rows) == 2
        assert rows[0].distance <= rows[1].distance
        assert all(0 <= e.box[0] < e.box[2] <= 9 and 0 <= e.box[1] < e.box[3] <= 9 for e in rows)


def test_assign_is_nearest_centre_and_deterministic():
    feats, labels = _clustered_features(seed=1)
    kwargs = dict(n_prototypes=3, pca_components=4, fit_max_locations=50, n_exemplars=2, seed=5, image_size=(9, 9))
    a = fit_prototypes(feats, labels, 2, **kwargs)
    b = fit_prototypes(feats, labels, 2, **kwargs)
    assert np.array_equal(a.assignment, b.assignment) and np.array_equal(a.centers, b.centers)
    z = a.project(feats)
    brute = ((z[:, None, :] - a.centers[None]) ** 2).sum(-1).argmin(1)
    assert np.array_equal(brute.reshape(a.assignment.shape), a.assignment)


def test_k_larger_than_locations_is_refused():
    feats, labels = _clustered_features(n=2)
    with pytest.raises(I2XError, match="n_prototypes=50 is larger than the 18 feature locations"):
        fit_prototypes(feats, labels, 2, n_prototypes=50, pca_components=4, fit_max_locations=100, n_exemplars=1, seed=0, image_size=(9, 9))


def test_receptive_box_maps_cells_to_pixels():
    assert receptive_box((0, 0), (8, 8), (32, 32), 1.0) == (0, 0, 4, 4)
    assert receptive_box((7, 7), (8, 8), (32, 32), 2.0) == (26, 26, 32, 32)


def _canvas(n: int, size: int, grid: int) -> tuple[np.random.Generator, np.ndarray, np.ndarray, np.ndarray]:
    """A seeded generator, ``n`` blank 1-channel images of ``size`` pixels, two classes (half
    each) and a ``grid`` x ``grid`` assignment of prototype 2 (blank canvas) everywhere."""
    return (np.random.default_rng(0), np.zeros((n, 1, size, size), dtype=np.uint8), np.repeat([0, 1], n // 2),
            np.full((n, grid, grid), 2))


def test_rigidity_tells_a_pasted_mark_from_a_part_that_varies_and_from_blank_canvas():
    """Planted truth on a 4x4 grid of 4-pixel cells: class 0 carries the same white square in
    cell (3, 3) (prototype 0), a stroke whose pixels move from image to image in cell (1, 1)
    (prototype 1) and blank canvas elsewhere (prototype 2); class 1 is blank with its own
    varying stroke. Only the pasted mark is a rigid copy."""
    rng, images, labels, assignment = _canvas(60, 16, 4)
    n = len(labels)
    for i in range(n):
        row = rng.integers(4, 8)  # a horizontal stroke at a random row of cell (1, 1)
        images[i, 0, row, 4:8] = 255
        if labels[i] == 0:
            images[i, 0, 12:16, 12:16] = 255
            assignment[i, 3, 3], assignment[i, 1, 1] = 0, 1
        else:
            assignment[i, 1, 1] = 3
    rigid, at = rigidity(torch.from_numpy(images), assignment, labels, np.array([0, 0, 0, 1]))
    assert rigid[0] == 1.0 and at[0] == "bottom-right"
    assert rigid[1] < 0.5, rigid  # the stroke is in the cell in every image, never at the same pixels
    assert rigid[2] == 0.0 and at[2] is None  # blank canvas is the same everywhere, and so not a copy


def test_shape_consistency_keeps_a_mark_that_moves_and_varies_which_rigidity_loses():
    """Planted truth on MNIST's 7x7 grid of 4-pixel cells: class 0 carries a 5-pixel square
    that moves within a 10-pixel corner square, at a random intensity (150-255) with noise
    (prototype 0, wherever its centre cell is); class 1 carries three strokes at random angles
    (prototype 1); blank canvas is prototype 2. The moving square is no rigid copy, but it has
    one shape; the strokes do not, and blank canvas has none."""
    rng, images, labels, assignment = _canvas(120, 28, 7)
    n = len(labels)
    for i in range(n):
        if labels[i] == 0:
            y, x = 18 + rng.integers(0, 6), 18 + rng.integers(0, 6)
            images[i, 0, y:y + 5, x:x + 5] = np.clip(rng.uniform(150, 255) + rng.normal(0, 25, (5, 5)), 0, 255)
            assignment[i, (y + 2) // 4, (x + 2) // 4] = 0
        else:
            for _ in range(3):
                y0, x0 = rng.integers(8, 18, 2)
                angle = rng.uniform(0, np.pi)
                for t in range(8):
                    images[i, 0, int(y0 + t * np.sin(angle)):int(y0 + t * np.sin(angle)) + 2,
                           int(x0 + t * np.cos(angle)):int(x0 + t * np.cos(angle)) + 2] = 255
            assignment[i, 3, 3] = 1
    images_t = torch.from_numpy(images)
    classes = np.array([0, 1, 0])
    consistent = shape_consistency(images_t, assignment, labels, classes)
    rigid, _ = rigidity(images_t, assignment, labels, classes)
    assert rigid[0] < 0.5  # the rigid-copy measure loses the moving square
    assert consistent[0] > 0.9, consistent
    assert consistent[1] < 0.75, consistent
    assert consistent[2] == 0.0  # blank canvas has no shape
    # brightness does not matter: the same squares at a quarter of the intensity score the same
    dim = shape_consistency(torch.from_numpy((images // 4).astype(np.uint8)), assignment, labels, classes)
    assert abs(dim[0] - consistent[0]) < 0.05
