"""Learning patterns (METHOD step 5: HDBSCAN on confidence changes) and the
prototype-to-confidence ridge regression (step 6)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from i2x.platform.errors import I2XError
from i2x.platform.progress import steps

NOISE = -1


def default_min_cluster_size(n: int) -> int:
    """OURS: max(10, N/200)."""
    return max(10, n // 200)


def learning_groups(dy: np.ndarray, min_cluster_size: int, max_dim: int, seed: int, progress: bool = False) -> np.ndarray:
    """Cluster the rows of each ``dY^t`` with HDBSCAN.

    Args:
        dy: ``(T-1, N, M)`` confidence changes.
        min_cluster_size: HDBSCAN's min_cluster_size (0: :func:`default_min_cluster_size`).
        max_dim: when M exceeds it, PCA-reduce (seeded) to ``max_dim`` first; HDBSCAN's
            boruvka_kdtree is fast only in low dimension, and its Prim's default is O(N^2).

    Returns:
        ``(T-1, N)`` int group ids; ``-1`` is noise.
    """
    import hdbscan
    from sklearn.decomposition import PCA

    intervals, n, m = dy.shape
    mcs = min_cluster_size or default_min_cluster_size(n)
    out = np.full((intervals, n), NOISE, dtype=np.int64)
    for t in steps(range(intervals), "learning groups (HDBSCAN) of checkpoint intervals", unit="interval", enabled=progress):
        x = dy[t].astype(np.float64)
        if m > max_dim:
            x = PCA(n_components=max_dim, random_state=seed).fit_transform(x)
        if n < 2 * mcs or np.allclose(x, x[0]):
            out[t] = 0  # too few samples, or no change at all: one group
            continue
        clusterer = hdbscan.HDBSCAN(min_cluster_size=mcs, algorithm="boruvka_kdtree", core_dist_n_jobs=1)
        out[t] = clusterer.fit_predict(x)
    return out


@dataclass(frozen=True)
class GroupFit:
    """One ridge fit ``beta^t_g``.

    Attributes:
        interval: t (between checkpoints t and t+1).
        group: g (-1 for noise).
        members: analysis-set positions in the group.
        beta: ``(K, M)``.
        intercept: ``(M,)`` the group's mean dY minus ``mean(dP) @ beta`` (zero through the origin).
        r2: held-out (k-fold) R^2 of the prototype model in this group; None when the group
            is too small to hold out.
        ss: held-out ``(SS_res, SS_tot)`` per predictor set (:data:`PREDICTORS`), pooled over
            folds, so figures can be pooled over groups; empty when not scored.
    """

    interval: int
    group: int
    members: np.ndarray
    beta: np.ndarray
    intercept: np.ndarray
    r2: float | None
    ss: dict[str, tuple[float, float]] = field(default_factory=dict)


# Predictor sets scored side by side: the prototypes (dP), the group mean alone, class
# identity (one-hot), and both (does dP add anything beyond the class?).
PREDICTORS = ("prototypes", "group_mean", "class", "prototypes+class")
REGRESSIONS = ("centred", "origin")


def check_regression(regression: str) -> None:
    """One line for an ``explain.regression`` that is not one of :data:`REGRESSIONS`."""
    if regression not in REGRESSIONS:
        raise I2XError(f"explain.regression must be one of {', '.join(REGRESSIONS)}, got '{regression}'")


def ridge(pi: np.ndarray, c: np.ndarray, lam: float) -> np.ndarray:
    """``(pi^T pi + lam I)^-1 pi^T C``; pi ``(n, K)``, C ``(n, M)`` -> ``(K, M)``."""
    k = pi.shape[1]
    return np.linalg.solve(pi.T @ pi + lam * np.eye(k), pi.T @ c)


def fit_ridge(pi: np.ndarray, c: np.ndarray, lam: float, regression: str = "centred") -> tuple[np.ndarray, np.ndarray]:
    """The paper's closed form, centred first (an unpenalised intercept) or through the origin.

    Returns:
        ``beta (K, M)`` and ``intercept (M,)`` with ``C ~ intercept + pi @ beta``.
    """
    if regression == "origin":
        return ridge(pi, c, lam), np.zeros(c.shape[1])
    x0, c0 = pi.mean(0), c.mean(0)
    beta = ridge(pi - x0, c - c0, lam)
    return beta, c0 - x0 @ beta


def kfold_ss(x: np.ndarray | None, c: np.ndarray, lam: float, regression: str, folds: np.ndarray) -> tuple[float, float]:
    """Held-out ``(SS_res, SS_tot)`` over k folds.

    Args:
        x: ``(n, p)`` predictors, or None for the mean-only model (the training folds' mean).
        c: ``(n, M)`` targets.
        folds: ``(n,)`` fold id of each row.

    SS_tot is taken around the mean of all n rows, so ``1 - SS_res / SS_tot`` is the share
    of the within-group variance predicted on rows the fit never saw; the mean-only model
    scores just below 0.
    """
    res = 0.0
    for f in np.unique(folds):
        test, train = folds == f, folds != f
        if x is None:
            pred = np.broadcast_to(c[train].mean(0), c[test].shape)
        else:
            beta, b0 = fit_ridge(x[train], c[train], lam, regression)
            pred = b0 + x[test] @ beta
        res += float(((c[test] - pred) ** 2).sum())
    return res, float(((c - c.mean(0)) ** 2).sum())


def r2_from(parts: list[tuple[float, float]]) -> float | None:
    """Pooled ``1 - sum SS_res / sum SS_tot`` (None when there is nothing to score)."""
    tot = sum(t for _, t in parts)
    return 1 - sum(r for r, _ in parts) / tot if tot > 0 else None


def prototype_aliases(presence: np.ndarray) -> np.ndarray:
    """``(K,)``: each prototype's column in the regression (OURS). Prototypes that occur in
    exactly the same images (and in some) share one column, the sum of their dP: the fit has
    the same rows for both and can only split the credit between them by float noise (a planted
    mark's own cells and the halo beside them, both in every marked image, were credited one
    way or the other depending on the training's thread count), so they are fitted as one and
    each gets the shared beta. Every other prototype keeps a column of its own; without
    aliases this is ``arange(K)`` and the fits are unchanged."""
    columns: dict[object, int] = {}
    out = np.empty(presence.shape[1], dtype=np.int64)
    for k in range(presence.shape[1]):
        key = presence[:, k].tobytes() if presence[:, k].any() else ("absent", k)
        out[k] = columns.setdefault(key, len(columns))
    return out


def alias_groups(alias: np.ndarray | None) -> list[list[int]]:
    """The prototypes that share a column, two or more to a group, in id order."""
    if alias is None:
        return []
    groups = [np.flatnonzero(alias == a).tolist() for a in np.unique(alias)]
    return sorted(g for g in groups if len(g) > 1)


def _merged(dp: np.ndarray, alias: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
    """dP with aliased prototypes summed into their shared column, and the map back (None
    when every prototype has its own column)."""
    if alias is None or np.array_equal(alias, np.arange(dp.shape[2])):
        return dp, None
    out = np.zeros(dp.shape[:2] + (int(alias.max()) + 1,), dtype=dp.dtype)
    for k, a in enumerate(alias):
        out[..., a] += dp[..., k]
    return out, alias


def fit_group_betas(
    dp: np.ndarray,
    dy: np.ndarray,
    groups: np.ndarray,
    lam: float,
    min_group_for_r2: int,
    seed: int,
    labels: np.ndarray | None = None,
    regression: str = "centred",
    folds: int = 5,
    score: bool = True,
    alias: np.ndarray | None = None,
) -> list[GroupFit]:
    """Fit ``beta^t_g`` for every interval t and group g (noise included as g = -1).

    Args:
        dp: ``(T-1, N, K)``; dy: ``(T-1, N, M)``; groups: ``(T-1, N)``.
        labels: ``(N,)`` classes, for the class one-hot baselines (skipped when None).
        regression: ``centred`` (OURS, the default: pi and C centred within the group, an
            unpenalised intercept) or ``origin`` (the paper's fit through the origin, kept
            for comparison; its held-out R^2 was negative on every data set tried).
        folds: k of the k-fold held-out R^2.
        score: compute held-out scores (the permutation null skips them).
        alias: :func:`prototype_aliases`; aliased prototypes are fitted as one column and
            each gets its beta (None: one column each).
    """
    check_regression(regression)
    dp, back = _merged(dp, alias)
    rng = np.random.default_rng(seed)
    m = dy.shape[2]
    onehot = None if labels is None else np.eye(m)[labels]
    fits = []
    for t in range(dp.shape[0]):
        for g in np.unique(groups[t]):
            members = np.flatnonzero(groups[t] == g)
            pi, c = dp[t, members].astype(np.float64), dy[t, members].astype(np.float64)
            beta, b0 = fit_ridge(pi, c, lam, regression)
            ss: dict[str, tuple[float, float]] = {}
            if score and len(members) >= min_group_for_r2:
                fold = rng.permutation(len(members)) % folds  # the same folds for every predictor set
                ss["prototypes"] = kfold_ss(pi, c, lam, regression, fold)
                ss["group_mean"] = kfold_ss(None, c, lam, regression, fold)
                if onehot is not None:
                    cls = onehot[members]
                    ss["class"] = kfold_ss(cls, c, lam, "centred", fold)
                    ss["prototypes+class"] = kfold_ss(np.hstack([pi, cls]), c, lam, regression, fold)
            r2 = r2_from([ss["prototypes"]]) if "prototypes" in ss else None
            fits.append(GroupFit(t, int(g), members, beta if back is None else beta[back], b0, r2, ss))
    return fits


class PermutedFits:
    """The fits of :func:`fit_group_betas` (``score=False``) with dP permuted across samples,
    for the permutation null's replicates, from sums computed once.

    A replicate's fit of group g needs the Gram, column sums and cross-products of the
    permuted rows of g. For a group holding most samples (HDBSCAN noise: 60% of the
    samples on MNIST, 98% on CIFAR-10) they are the sums over all rows, computed once per
    interval, minus those of the few rows outside it, so a replicate costs the small groups
    and ``X_perm^T dY`` instead of a Gram over every sample. Equal to refitting up to float64
    rounding (tests/test_structure.py).
    """

    def __init__(self, dp: np.ndarray, dy: np.ndarray, groups: np.ndarray, lam: float, regression: str = "centred",
                 alias: np.ndarray | None = None) -> None:
        check_regression(regression)
        dp, self.back = _merged(dp, alias)
        self.dp, self.dy = dp.astype(np.float64), dy.astype(np.float64)
        self.lam, self.regression = lam, regression
        self.gram = np.einsum("tnk,tnl->tkl", self.dp, self.dp)
        self.sums = self.dp.sum(1)
        n = groups.shape[1]
        self.parts = []
        for t in range(groups.shape[0]):
            parts = []
            for g in np.unique(groups[t]):
                inside = groups[t] == g
                big = inside.sum() > n // 2
                parts.append((int(g), np.flatnonzero(inside), np.flatnonzero(~inside) if big else None))
            self.parts.append(parts)

    def fits(self, perm: np.ndarray) -> list[GroupFit]:
        """The fits with sample i's dP replaced by sample ``perm[i]``'s."""
        return self.fits_many(perm[None])[0]

    def fits_many(self, perms: np.ndarray) -> list[list[GroupFit]]:
        """:meth:`fits` of each row of ``perms`` ``(R, N)``. A large group's ``X_perm^T dY``
        is one product over each interval's dP for all R replicates instead of one per replicate
        (on one BLAS thread, as the null runs: 1.6-2x less CPU per replicate on the CIFAR-10
        shape at N = 10,000 and R = 32, about the same on MNIST's; bench/null_replicates.py)."""
        k = self.dp.shape[2]
        inverse = np.argsort(perms, axis=1)  # sum_i x[perm[i]] c[i] = sum_j x[j] c[inverse[j]]
        out: list[list[GroupFit]] = [[] for _ in perms]
        for t, parts in enumerate(self.parts):
            x, c = self.dp[t], self.dy[t]
            xty_all = None
            if any(outside is not None for _, _, outside in parts):
                gathered = c[inverse]  # (R, N, M)
                xty_all = (x.T @ gathered.transpose(1, 0, 2).reshape(len(x), -1)).reshape(k, len(perms), -1)
            for r, perm in enumerate(perms):
                for g, members, outside in parts:
                    cm = c[members]
                    if outside is None:
                        xm = x[perm[members]]
                        xtx, sx, xty = xm.T @ xm, xm.sum(0), xm.T @ cm
                    else:
                        xo = x[perm[outside]]
                        xtx = self.gram[t] - xo.T @ xo
                        sx = self.sums[t] - xo.sum(0)
                        xty = xty_all[:, r] - xo.T @ c[outside]
                    m = len(members)
                    if self.regression == "origin":
                        beta, b0 = np.linalg.solve(xtx + self.lam * np.eye(k), xty), np.zeros(c.shape[1])
                    else:
                        x0, c0 = sx / m, cm.mean(0)
                        beta = np.linalg.solve(xtx - m * np.outer(x0, x0) + self.lam * np.eye(k), xty - m * np.outer(x0, c0))
                        b0 = c0 - x0 @ beta
                    out[r].append(GroupFit(t, g, members, beta if self.back is None else beta[self.back], b0, None, {}))
        return out


def heldout_summary(fits: list[GroupFit]) -> dict[str, dict[str, float | None]]:
    """Pooled held-out R^2 per predictor set over all sample-intervals (``all``: the headline),
    and for the learning groups and HDBSCAN noise apart. The headline covered the learning
    groups only until this release: 38% of MNIST's sample-intervals, where prototypes do best;
    on the rest, class alone beat them (0.28 against 0.23)."""
    out: dict[str, dict[str, float | None]] = {}
    for part, keep in (("all", lambda f: True), ("groups", lambda f: f.group != NOISE), ("noise", lambda f: f.group == NOISE)):
        out[part] = {name: r2_from([f.ss[name] for f in fits if keep(f) and name in f.ss]) for name in PREDICTORS}
    return out
