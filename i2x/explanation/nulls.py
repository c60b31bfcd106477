"""Every label against a null (OURS, METHOD step 7): the within-class permutation null
for shared, specialised and uncertain labels, and Benjamini-Hochberg within each role."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from threadpoolctl import threadpool_limits

from i2x.explanation.labels import Labels, derive_labels
from i2x.explanation.patterns import PermutedFits
from i2x.platform.config import ExplainConfig

ROLES = ("shared", "specialised", "uncertain")
REPLICATE_BATCH = 32  # null replicates fitted together (PermutedFits.fits_many)


@dataclass(frozen=True)
class LabelTest:
    """One candidate label against the within-class permutation null.

    ``cls`` is the class for shared/specialised and -1 for uncertain; ``p`` is
    ``(1 + #{null >= real}) / (1 + n)``; ``p_adjusted`` is Benjamini-Hochberg within the role.
    """

    role: str
    cls: int
    prototype: int
    statistic: float
    null_mean: float
    p: float
    p_adjusted: float
    kept: bool


@dataclass(frozen=True)
class NullTest:
    """Labels of the real data against ``n_permutations`` replicates with dP permuted
    within each class. ``counts[role]`` holds the real count of candidate labels, the null
    counts' mean and std, and the p-value of the count."""

    n_permutations: int
    counts: dict[str, dict[str, float]]
    tests: list[LabelTest]


def _candidates(lab: Labels) -> list[tuple[str, int, int, float]]:
    """``(role, class, prototype, statistic)`` of every label in ``lab``."""
    out = [("shared", c, k, float(lab.evidence[k, c])) for c, ks in lab.shared.items() for k in ks]
    out += [("specialised", c, s.prototype, float(lab.specialised_stat[s.prototype, c])) for c, ss in lab.specialised.items() for s in ss]
    out += [("uncertain", -1, s.prototype, s.flipped) for s in lab.uncertain]
    return out


def _statistic(lab: Labels, role: str, cls: int, k: int) -> float:
    if role == "shared":
        return float(lab.evidence[k, cls])
    if role == "specialised":
        return float(lab.specialised_stat[k, cls])
    return lab.scores[k].flipped


def benjamini_hochberg(p: np.ndarray) -> np.ndarray:
    """BH-adjusted p-values (monotone, capped at 1)."""
    n = len(p)
    if n == 0:
        return p
    order = np.argsort(p, kind="stable")
    ranked = p[order] * n / np.arange(1, n + 1)
    adjusted = np.minimum.accumulate(ranked[::-1])[::-1]
    out = np.empty(n)
    out[order] = np.minimum(adjusted, 1.0)
    return out


def within_class(members_of: list[np.ndarray], n: int, rng: np.random.Generator) -> np.ndarray:
    """A permutation of ``n`` samples that moves each sample only among ``members_of`` its class."""
    perm = np.arange(n)
    for members in members_of:
        perm[members] = members[rng.permutation(len(members))]
    return perm


def permutation_null(
    dp: np.ndarray,
    dy: np.ndarray,
    groups: np.ndarray,
    presence: np.ndarray,
    coverage: np.ndarray,
    labels: np.ndarray,
    background: list[int],
    real: Labels,
    cfg: ExplainConfig,
    seed: int,
    alias: np.ndarray | None = None,
) -> NullTest:
    """Test every label against dP permuted within each class (OURS, METHOD step 7).

    A replicate moves each sample's whole dP trajectory to another sample of the same
    class, keeping groups, presence and dY: class structure survives, the link between how
    a sample's saliency moved and how its confidence moved does not. A label that appears
    as readily in the replicates comes from class structure, not from the training history.

    Args:
        dp: ``(T-1, N, K)``; dy: ``(T-1, N, M)``; groups: ``(T-1, N)``.
        real: the labels of the real fits.
        alias: the real fits' prototype columns (:func:`i2x.explanation.patterns.prototype_aliases`).
    """
    rng = np.random.default_rng(seed + 7)
    members_of = [np.flatnonzero(labels == c) for c in np.unique(labels)]
    cands = _candidates(real)
    fitter = PermutedFits(dp, dy, groups, cfg.ridge_lambda, cfg.regression, alias)

    @threadpool_limits.wrap(limits=1, user_api="blas")  # 128x128 solves: a second BLAS thread spins, doubling CPU for the same wall time
    def replicates(count: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        stats = np.zeros((count, len(cands)))
        tally = {role: np.zeros(count) for role in ROLES}
        for r in range(count):
            if r % REPLICATE_BATCH == 0:  # the same draws in the same order as one at a time
                batch = fitter.fits_many(np.stack([within_class(members_of, len(labels), rng)
                                                   for _ in range(min(REPLICATE_BATCH, count - r))]))
            lab = derive_labels(batch[r % REPLICATE_BATCH], groups, presence, coverage, labels, background, cfg)
            for i, (role, cls, k, _) in enumerate(cands):
                stats[r, i] = _statistic(lab, role, cls, k)
            for role, _c, _k, _s in _candidates(lab):
                tally[role][r] += 1
        return stats, tally

    null_stats, null_counts = replicates(cfg.null_permutations)
    # Adaptive (OURS): while a label's verdict would change within the Monte Carlo error of its
    # p-value, double the replicates (same stream: the first ones are unchanged), up to the cap.
    statistic = np.array([c[3] for c in cands])
    while 0 < len(null_stats) < cfg.null_max_permutations and _unresolved(null_stats, statistic, cands, cfg.null_alpha, alias):
        more, tally = replicates(min(len(null_stats), cfg.null_max_permutations - len(null_stats)))
        null_stats = np.concatenate([null_stats, more])
        null_counts = {role: np.concatenate([null_counts[role], tally[role]]) for role in ROLES}
    n = len(null_stats)
    real_counts = {role: sum(1 for c in cands if c[0] == role) for role in ROLES}
    counts = {}
    for role in ROLES:
        nc = null_counts[role]
        counts[role] = {"real": float(real_counts[role]), "null_mean": float(nc.mean()) if n else 0.0,
                        "null_std": float(nc.std(ddof=1)) if len(nc) > 1 else 0.0,
                        "p": float((1 + (nc >= real_counts[role]).sum()) / (1 + len(nc)))}
    p = _p_values(null_stats, statistic)
    adjusted = _adjusted(p, cands, alias)
    tests = [LabelTest(role, cls, k, s, float(null_stats[:, i].mean()) if n else 0.0, float(p[i]), float(adjusted[i]),
                       bool(adjusted[i] < cfg.null_alpha))
             for i, (role, cls, k, s) in enumerate(cands)]
    return NullTest(n, counts, tests)


def _p_values(null_stats: np.ndarray, statistic: np.ndarray) -> np.ndarray:
    """``(1 + #{null >= real}) / (1 + n)`` per candidate."""
    return (1 + (null_stats >= statistic[None, :]).sum(0)) / (1 + len(null_stats))


def _adjusted(p: np.ndarray, cands: list[tuple[str, int, int, float]], alias: np.ndarray | None = None) -> np.ndarray:
    """Benjamini-Hochberg within each role. Aliased prototypes (one column of the fits, so the
    same statistic in every replicate) are one hypothesis: one test, whose verdict each takes."""
    adjusted = np.ones(len(cands))
    for role in ROLES:
        tests: dict[tuple[int, int], list[int]] = {}
        for i, (r, cls, k, _) in enumerate(cands):
            if r == role:
                tests.setdefault((cls, k if alias is None else int(alias[k])), []).append(i)
        first = np.array([ids[0] for ids in tests.values()], dtype=int)
        for value, ids in zip(benjamini_hochberg(p[first]), tests.values(), strict=True):
            adjusted[ids] = value
    return adjusted


def _unresolved(null_stats: np.ndarray, statistic: np.ndarray, cands: list[tuple[str, int, int, float]], alpha: float,
                alias: np.ndarray | None = None) -> bool:
    """Would any label's verdict change if its p-value moved by 3 Monte Carlo standard
    errors (``sqrt(p (1 - p) / n)``, with p at least ``1 / n``)?"""
    n = len(null_stats)
    p = _p_values(null_stats, statistic)
    se = np.sqrt(np.maximum(p, 1 / n) * (1 - p) / n)
    low = _adjusted(np.clip(p - 3 * se, 1 / (n + 1), 1), cands, alias) < alpha
    high = _adjusted(np.clip(p + 3 * se, 0, 1), cands, alias) < alpha
    return bool((low != high).any())
