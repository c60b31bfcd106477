import numpy as np
import pytest
import torch

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


def test_rigidity_tells_a_pasted_mark_from_a_part_that_varies_and_from_blank_canvas():
    """Planted truth on a 4x4 grid of 4-pixel cells: class 0 carries the same white square in
    cell (3, 3) (prototype 0), a stroke whose pixels move from image to image in cell (1, 1)
    (prototype 1) and blank canvas elsewhere (prototype 2); class 1 is blank with its own
    varying stroke. Only the pasted mark is a rigid copy."""
    rng = np.random.default_rng(0)
    n = 60
    images = np.zeros((n, 1, 16, 16), dtype=np.uint8)
    labels = np.repeat([0, 1], n // 2)
    assignment = np.full((n, 4, 4), 2)
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
