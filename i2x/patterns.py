"""Learning patterns (METHOD step 5: HDBSCAN on confidence changes) and the
prototype-to-confidence ridge regression (step 6)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from tqdm.auto import tqdm

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
    for t in tqdm(range(intervals), desc="patterns", leave=False, disable=not progress):
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
        r2: held-out R^2 (None when the group is too small to hold out).
    """

    interval: int
    group: int
    members: np.ndarray
    beta: np.ndarray
    r2: float | None


def ridge(pi: np.ndarray, c: np.ndarray, lam: float) -> np.ndarray:
    """``(pi^T pi + lam I)^-1 pi^T C``; pi ``(n, K)``, C ``(n, M)`` -> ``(K, M)``."""
    k = pi.shape[1]
    return np.linalg.solve(pi.T @ pi + lam * np.eye(k), pi.T @ c)


def heldout_r2(pi: np.ndarray, c: np.ndarray, lam: float, holdout: float, rng: np.random.Generator) -> float:
    """R^2 of a ridge fit on ``1 - holdout`` of the rows, scored on the rest
    (pooled over outputs: 1 - SS_res / SS_tot)."""
    n = len(pi)
    order = rng.permutation(n)
    n_test = max(1, int(round(holdout * n)))
    test, train = order[:n_test], order[n_test:]
    beta = ridge(pi[train], c[train], lam)
    resid = c[test] - pi[test] @ beta
    total = c[test] - c[test].mean(0, keepdims=True)
    ss_tot = float((total**2).sum())
    return float(1 - (resid**2).sum() / ss_tot) if ss_tot > 0 else float("nan")


def fit_group_betas(
    dp: np.ndarray, dy: np.ndarray, groups: np.ndarray, lam: float, holdout: float, min_group_for_r2: int, seed: int
) -> list[GroupFit]:
    """Fit ``beta^t_g`` for every interval t and group g (noise included as g = -1).

    Args:
        dp: ``(T-1, N, K)``; dy: ``(T-1, N, M)``; groups: ``(T-1, N)``.
    """
    rng = np.random.default_rng(seed)
    fits = []
    for t in range(dp.shape[0]):
        for g in np.unique(groups[t]):
            members = np.flatnonzero(groups[t] == g)
            pi, c = dp[t, members].astype(np.float64), dy[t, members].astype(np.float64)
            r2 = heldout_r2(pi, c, lam, holdout, rng) if len(members) >= min_group_for_r2 else None
            fits.append(GroupFit(t, int(g), members, ridge(pi, c, lam), None if r2 is None or np.isnan(r2) else r2))
    return fits
