"""Every label against a null (OURS, METHOD step 7): the within-class permutation null
for shared, specialised and uncertain labels, and Benjamini-Hochberg within each role."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from i2x.explanation.labels import Labels, derive_labels
from i2x.explanation.patterns import fit_group_betas
from i2x.platform.config import ExplainConfig

ROLES = ("shared", "specialised", "uncertain")


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
) -> NullTest:
    """Test every label against dP permuted within each class (OURS, METHOD step 7).

    A replicate moves each sample's whole dP trajectory to another sample of the same
    class, keeping groups, presence and dY: class structure survives, the link between how
    a sample's saliency moved and how its confidence moved does not. A label that appears
    as readily in the replicates comes from class structure, not from the training history.

    Args:
        dp: ``(T-1, N, K)``; dy: ``(T-1, N, M)``; groups: ``(T-1, N)``.
        real: the labels of the real fits.
    """
    rng = np.random.default_rng(seed + 7)
    members_of = [np.flatnonzero(labels == c) for c in np.unique(labels)]
    cands = _candidates(real)
    null_stats = np.zeros((cfg.null_permutations, len(cands)))
    null_counts = {role: np.zeros(cfg.null_permutations) for role in ROLES}
    for r in range(cfg.null_permutations):
        perm = np.arange(len(labels))
        for members in members_of:
            perm[members] = members[rng.permutation(len(members))]
        fits = fit_group_betas(dp[:, perm], dy, groups, cfg.ridge_lambda, 0, seed, regression=cfg.regression, score=False)
        lab = derive_labels(fits, groups, presence, coverage, labels, background, cfg)
        for i, (role, cls, k, _) in enumerate(cands):
            null_stats[r, i] = _statistic(lab, role, cls, k)
        for role, _c, _k, _s in _candidates(lab):
            null_counts[role][r] += 1
    real_counts = {role: sum(1 for c in cands if c[0] == role) for role in ROLES}
    counts = {}
    for role in ROLES:
        nc = null_counts[role]
        counts[role] = {"real": float(real_counts[role]), "null_mean": float(nc.mean()), "null_std": float(nc.std(ddof=1)) if len(nc) > 1 else 0.0,
                        "p": float((1 + (nc >= real_counts[role]).sum()) / (1 + len(nc)))}
    p = np.array([(1 + (null_stats[:, i] >= s).sum()) / (1 + cfg.null_permutations) for i, (_, _, _, s) in enumerate(cands)])
    adjusted = np.ones(len(cands))
    for role in ROLES:
        idx = np.array([i for i, c in enumerate(cands) if c[0] == role], dtype=int)
        adjusted[idx] = benjamini_hochberg(p[idx])
    tests = [LabelTest(role, cls, k, s, float(null_stats[:, i].mean()), float(p[i]), float(adjusted[i]), bool(adjusted[i] < cfg.null_alpha))
             for i, (role, cls, k, s) in enumerate(cands)]
    return NullTest(cfg.null_permutations, counts, tests)
