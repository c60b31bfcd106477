import numpy as np
import torch

from i2x.explanation.intensity import compute_intensities, prototype_intensity


def test_intensity_is_mean_saliency_over_assigned_locations():
    maps = torch.tensor([[[[0.2, 0.4], [0.6, 0.8]]], [[[1.0, 0.0], [0.5, 0.5]]]])  # (T=2, N=1, 2, 2)
    assignment = np.array([[[0, 0], [1, 2]]])
    p, presence = prototype_intensity(maps, assignment, k=4)
    assert p.shape == (2, 1, 4)
    np.testing.assert_allclose(p[0, 0], [0.3, 0.6, 0.8, 0.0], atol=1e-6)
    np.testing.assert_allclose(p[1, 0], [0.5, 0.5, 0.5, 0.0], atol=1e-6)
    assert presence.tolist() == [[True, True, True, False]]


def test_differences_between_checkpoints():
    rng = np.random.default_rng(0)
    maps = torch.from_numpy(rng.random((3, 4, 2, 2)).astype(np.float32))
    probs = torch.softmax(torch.from_numpy(rng.normal(size=(3, 4, 5)).astype(np.float32)), -1)
    assignment = rng.integers(0, 3, (4, 2, 2))
    out = compute_intensities(maps, probs, assignment, k=3)
    assert out.dp.shape == (2, 4, 3) and out.dy.shape == (2, 4, 5)
    np.testing.assert_allclose(out.dp[1], out.p[2] - out.p[1], atol=1e-6)
    np.testing.assert_allclose(out.dy[0], (probs[1] - probs[0]).numpy(), atol=1e-6)
    # a reference loop over locations
    for i in range(4):
        for k in range(3):
            mask = assignment[i] == k
            want = maps[0, i].numpy()[mask].mean() if mask.any() else 0.0
            assert abs(out.p[0, i, k] - want) < 1e-6
