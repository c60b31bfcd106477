import numpy as np
from sklearn.linear_model import Ridge

from i2x.patterns import (
    NOISE,
    default_min_cluster_size,
    fit_group_betas,
    heldout_r2,
    learning_groups,
    ridge,
)


def test_ridge_matches_sklearn_without_intercept():
    rng = np.random.default_rng(0)
    pi, c = rng.normal(size=(50, 6)), rng.normal(size=(50, 3))
    ours = ridge(pi, c, 2.5)
    ref = Ridge(alpha=2.5, fit_intercept=False).fit(pi, c).coef_.T
    np.testing.assert_allclose(ours, ref, atol=1e-10)


def test_heldout_r2_is_high_for_a_linear_truth_and_low_for_noise():
    rng = np.random.default_rng(1)
    pi = rng.normal(size=(400, 5))
    beta = rng.normal(size=(5, 2))
    assert heldout_r2(pi, pi @ beta + 0.01 * rng.normal(size=(400, 2)), 1e-3, 0.2, rng) > 0.99
    assert heldout_r2(pi, rng.normal(size=(400, 2)), 1e-3, 0.2, rng) < 0.1


def test_hdbscan_groups_blobs_and_marks_noise():
    rng = np.random.default_rng(0)
    a = rng.normal(0, 0.01, (60, 3)) + [0.5, -0.5, 0]
    b = rng.normal(0, 0.01, (60, 3)) + [-0.5, 0.5, 0]
    far = np.array([[5.0, 5.0, 5.0], [-5.0, 4.0, -3.0]])
    dy = np.concatenate([a, b, far])[None]
    groups = learning_groups(dy, min_cluster_size=10, max_dim=16, seed=0)
    assert groups.shape == (1, 122)
    assert len(set(groups[0, :60])) == 1 and len(set(groups[0, 60:120])) == 1
    assert groups[0, 0] != groups[0, 60] and NOISE not in (groups[0, 0], groups[0, 60])
    assert (groups[0, 120:] == NOISE).all()


def test_high_dimensional_dy_is_reduced_first():
    rng = np.random.default_rng(0)
    dy = np.concatenate([rng.normal(0, 0.01, (50, 40)) + 1, rng.normal(0, 0.01, (50, 40)) - 1])[None]
    groups = learning_groups(dy, min_cluster_size=10, max_dim=4, seed=0)
    assert len(set(groups[0, :50])) == 1 and groups[0, 0] != groups[0, 50]


def test_group_fits_cover_every_interval_and_group():
    rng = np.random.default_rng(0)
    dp, dy = rng.normal(size=(2, 80, 4)), rng.normal(size=(2, 80, 3))
    groups = np.array([[0] * 40 + [1] * 30 + [NOISE] * 10, [0] * 80])
    fits = fit_group_betas(dp, dy, groups, lam=1.0, holdout=0.2, min_group_for_r2=30, seed=0)
    assert sorted((f.interval, f.group) for f in fits) == [(0, -1), (0, 0), (0, 1), (1, 0)]
    noise = next(f for f in fits if f.group == NOISE)
    assert noise.r2 is None and noise.beta.shape == (4, 3)
    assert default_min_cluster_size(1000) == 10 and default_min_cluster_size(10000) == 50
