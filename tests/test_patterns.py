import numpy as np
import pytest
from sklearn.linear_model import Ridge

from i2x.explanation.patterns import (
    NOISE,
    PermutedFits,
    alias_groups,
    default_min_cluster_size,
    fit_group_betas,
    fit_ridge,
    heldout_summary,
    kfold_ss,
    learning_groups,
    prototype_aliases,
    r2_from,
    ridge,
)


def test_ridge_matches_sklearn_without_intercept():
    rng = np.random.default_rng(0)
    pi, c = rng.normal(size=(50, 6)), rng.normal(size=(50, 3))
    ours = ridge(pi, c, 2.5)
    ref = Ridge(alpha=2.5, fit_intercept=False).fit(pi, c).coef_.T
    np.testing.assert_allclose(ours, ref, atol=1e-10)


def test_centred_fit_matches_sklearn_with_intercept():
    """The centred closed form is ridge with an unpenalised intercept."""
    rng = np.random.default_rng(0)
    pi, c = rng.normal(size=(60, 5)) + 3.0, rng.normal(size=(60, 2)) - 1.0
    beta, b0 = fit_ridge(pi, c, 2.5, "centred")
    ref = Ridge(alpha=2.5, fit_intercept=True).fit(pi, c)
    np.testing.assert_allclose(beta, ref.coef_.T, atol=1e-10)
    np.testing.assert_allclose(b0, ref.intercept_, atol=1e-10)
    beta0, b00 = fit_ridge(pi, c, 2.5, "origin")
    np.testing.assert_allclose(beta0, ridge(pi, c, 2.5))
    assert not b00.any()


def _r2(x, c, regression="centred", folds=5, seed=0):
    fold = np.random.default_rng(seed).permutation(len(c)) % folds
    return r2_from([kfold_ss(x, c, 1e-3, regression, fold)])


def test_kfold_r2_is_high_for_a_linear_truth_and_about_zero_for_noise():
    rng = np.random.default_rng(1)
    pi = rng.normal(size=(400, 5))
    beta = rng.normal(size=(5, 2))
    assert _r2(pi, pi @ beta + 0.01 * rng.normal(size=(400, 2))) > 0.99
    noise = _r2(pi, rng.normal(size=(400, 2)))
    assert -0.1 < noise < 0.02
    # the mean-only model scores just below zero: it is the reference of the figure
    assert -0.02 < _r2(None, rng.normal(size=(400, 2))) <= 0


def test_a_group_shift_defeats_the_fit_through_the_origin_but_not_the_centred_fit():
    """Planted: dY = a large common shift + dP @ beta + noise, as in an HDBSCAN group of dY."""
    rng = np.random.default_rng(2)
    pi = rng.normal(size=(300, 4)) * 0.1
    beta = rng.normal(size=(4, 3))
    c = np.array([0.8, -0.5, 0.3]) + pi @ beta + 0.02 * rng.normal(size=(300, 3))
    assert _r2(pi, c, "origin") < 0
    assert _r2(pi, c, "centred") > 0.8


def test_class_baselines_are_scored_on_the_same_folds():
    """Planted: dY depends on the class only. The class one-hot must win, and dP add nothing."""
    rng = np.random.default_rng(3)
    labels = np.repeat(np.arange(3), 60)
    dp = rng.normal(size=(1, 180, 6))
    dy = (np.eye(3)[labels] * 0.5 + 0.05 * rng.normal(size=(180, 3)))[None]
    fits = fit_group_betas(dp, dy, np.zeros((1, 180), dtype=int), lam=1e-3, min_group_for_r2=30, seed=0, labels=labels)
    summary = heldout_summary(fits)["groups"]
    assert summary["class"] > 0.95
    assert summary["prototypes"] < 0.05
    assert summary["prototypes+class"] < summary["class"] + 0.01
    assert heldout_summary(fits)["noise"]["prototypes"] is None


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
    fits = fit_group_betas(dp, dy, groups, lam=1.0, min_group_for_r2=30, seed=0)
    assert sorted((f.interval, f.group) for f in fits) == [(0, -1), (0, 0), (0, 1), (1, 0)]
    noise = next(f for f in fits if f.group == NOISE)
    assert noise.r2 is None and noise.beta.shape == (4, 3)
    assert all(f.r2 is not None for f in fits if len(f.members) >= 30)
    assert default_min_cluster_size(1000) == 10 and default_min_cluster_size(10000) == 50


@pytest.mark.parametrize("regression", ["centred", "origin"])
def test_the_null_replicates_fit_from_sums_what_a_refit_of_the_permuted_rows_gives(regression):
    """PermutedFits (the permutation null's replicates) takes a large group's sums as those of
    every row minus the rows outside it, several replicates at once; its fits must equal refitting
    the permuted dP."""
    rng = np.random.default_rng(3)
    t, n, k, m = 3, 400, 12, 4
    dp, dy = rng.normal(size=(t, n, k)).astype(np.float32), rng.normal(size=(t, n, m)).astype(np.float32)
    groups = np.where(rng.random((t, n)) < 0.8, -1, rng.integers(0, 3, (t, n)))  # a noise group of 80%, three small ones
    groups[2] = rng.integers(0, 2, n)  # an interval with no group over half the rows
    fitter = PermutedFits(dp, dy, groups, 0.5, regression)
    perms = np.stack([np.random.default_rng(seed).permutation(n) for seed in range(3)])
    together = fitter.fits_many(perms)  # the null fits replicates in batches: each must be its own refit
    for perm, fast in zip(perms, together, strict=True):
        slow = fit_group_betas(dp[:, perm], dy, groups, 0.5, 0, 0, regression=regression, score=False)
        assert [(f.interval, f.group) for f in fast] == [(f.interval, f.group) for f in slow]
        for a, b in zip(fast, slow, strict=True):
            assert np.array_equal(a.members, b.members)
            np.testing.assert_allclose(a.beta, b.beta, rtol=1e-9, atol=1e-12)
            np.testing.assert_allclose(a.intercept, b.intercept, rtol=1e-9, atol=1e-12)


def test_prototypes_in_exactly_the_same_images_are_fitted_as_one_and_share_the_credit():
    """Known truth: dY follows the sum of prototypes 1 and 2, which occur in exactly the same
    images (a mark's cell and the halo beside it); prototype 3 occurs in the same images but
    one, prototype 0 is independent. Fitted apart, the credit of the pair is split by the
    noise in their columns; fitted as aliases, both get the beta of their sum, which is the
    fit of one summed column, and everything else is the plain fit."""
    rng = np.random.default_rng(0)
    t, n = 2, 300
    present = rng.random(n) < 0.4
    presence = np.column_stack([rng.random(n) < 0.5, present, present, present & (np.arange(n) != np.flatnonzero(present)[0])])
    dp = rng.normal(size=(t, n, 4)) * presence[None]
    dy = (dp[..., 1] + dp[..., 2])[..., None] + 0.1 * rng.normal(size=(t, n, 1))
    alias = prototype_aliases(presence)
    assert alias.tolist() == [0, 1, 1, 2] and alias_groups(alias) == [[1, 2]]
    groups = np.zeros((t, n), dtype=int)
    fits = fit_group_betas(dp, dy, groups, 1.0, 0, 0, alias=alias, score=False)
    one = fit_group_betas(np.stack([dp[..., 0], dp[..., 1] + dp[..., 2], dp[..., 3]], axis=2), dy, groups, 1.0, 0, 0, score=False)
    for f, g in zip(fits, one, strict=True):
        assert f.beta[1, 0] == f.beta[2, 0] and f.beta[1, 0] > 0.9
        np.testing.assert_allclose(f.beta[[0, 1, 3]], g.beta, rtol=1e-12)
    # no aliases (or the identity): the fits are the plain ones, to the bit
    plain = fit_group_betas(dp, dy, groups, 1.0, 0, 0, score=False)
    same = fit_group_betas(dp, dy, groups, 1.0, 0, 0, score=False, alias=np.arange(4))
    assert all(np.array_equal(a.beta, b.beta) for a, b in zip(plain, same, strict=True))
    assert prototype_aliases(np.zeros((5, 3), dtype=bool)).tolist() == [0, 1, 2]  # absent prototypes are not aliases
    # the null's replicates fit the same columns
    perm = np.random.default_rng(1).permutation(n)
    fast = PermutedFits(dp, dy, groups, 1.0, alias=alias).fits(perm)
    slow = fit_group_betas(dp[:, perm], dy, groups, 1.0, 0, 0, alias=alias, score=False)
    for a, b in zip(fast, slow, strict=True):
        np.testing.assert_allclose(a.beta, b.beta, rtol=1e-9, atol=1e-12)


def test_the_headline_r2_pools_every_sample_interval_the_noise_too():
    """Issue 45: the headline R^2 covered the learning groups only. Planted: in a learning
    group dY follows dP; in HDBSCAN noise it follows the class. Over all sample-intervals the
    prototypes' R^2 lies between the two parts and the class's counts the noise too."""
    rng = np.random.default_rng(5)
    labels = np.repeat(np.arange(3), 100)
    dp = rng.normal(size=(1, 300, 4))
    groups = np.where(np.arange(300) < 150, 0, NOISE)[None]
    beta = rng.normal(size=(4, 3))
    dy = np.where((groups[0] == 0)[:, None], dp[0] @ beta, np.eye(3)[labels]) + 0.05 * rng.normal(size=(300, 3))
    fits = fit_group_betas(dp, dy[None], groups, lam=1e-3, min_group_for_r2=30, seed=0, labels=labels)
    summary = heldout_summary(fits)
    assert summary["groups"]["prototypes"] > 0.9 and summary["noise"]["prototypes"] < 0.2
    assert summary["noise"]["prototypes"] < summary["all"]["prototypes"] < summary["groups"]["prototypes"]
    assert summary["all"]["class"] > summary["groups"]["class"]
