"""The structured explanation (METHOD step 7): evidence, shared and specialised prototypes,
inter-class progression and uncertain prototypes. Thresholds are config fields (OURS)."""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import combinations

import numpy as np

from i2x.patterns import NOISE, GroupFit


@dataclass(frozen=True)
class Specialised:
    prototype: int
    interval: int
    group: int
    group_coverage: float
    beta: float


@dataclass(frozen=True)
class PairProgression:
    """How the model came to separate classes a and b.

    Attributes:
        confusions: ``(T,)`` count of a->b plus b->a mistakes on the analysis set.
        separated_at: first checkpoint index from which the count stays at or below
            ``separation_ratio * peak``; 0 when never confused; None when never separated.
        toward_a / toward_b: ``(prototype, beta[k,a] - beta[k,b])`` with the largest
            (smallest) difference in the interval that ends at ``separated_at``.
    """

    a: int
    b: int
    confusions: list[int]
    separated_at: int | None
    toward_a: list[tuple[int, float]]
    toward_b: list[tuple[int, float]]


@dataclass(frozen=True)
class PrototypeScore:
    """Uncertainty of one prototype: its class pair, oscillation o, share and u = o * share."""

    prototype: int
    pair: tuple[int, int]
    d: list[float]
    oscillation: float
    share: float
    score: float


@dataclass(frozen=True)
class Structure:
    """Everything step 7 derives.

    Attributes:
        interval_beta: ``(T-1, K, M)`` size-weighted mean of ``beta^t_g`` over groups.
        evidence: ``(K, M)`` size-weighted sum over t and g of ``beta^t_g``.
        abs_mass: ``(K, M)`` the same sum of ``|beta|``.
        shared / specialised: per class.
        distinct: per class, prototypes mostly particular to it.
    """

    interval_beta: np.ndarray
    evidence: np.ndarray
    abs_mass: np.ndarray
    shared: dict[int, list[int]]
    specialised: dict[int, list[Specialised]]
    progression: list[PairProgression]
    scores: list[PrototypeScore]
    uncertain: list[PrototypeScore]
    distinct: dict[int, int]
    distinct_vs_separation: float | None = field(default=None)


def aggregate_betas(fits: list[GroupFit], intervals: int, n: int, include_noise: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-interval mean beta, total evidence and |beta| mass, all weighted by n_g / N."""
    k, m = fits[0].beta.shape
    interval_beta = np.zeros((intervals, k, m))
    weight = np.zeros(intervals)
    evidence = np.zeros((k, m))
    abs_mass = np.zeros((k, m))
    for fit in fits:
        if fit.group == NOISE and not include_noise:
            continue
        w = len(fit.members) / n
        interval_beta[fit.interval] += w * fit.beta
        weight[fit.interval] += w
        evidence += w * fit.beta
        abs_mass += w * np.abs(fit.beta)
    interval_beta /= np.maximum(weight, 1e-12)[:, None, None]
    return interval_beta, evidence, abs_mass


def oscillation(d: np.ndarray) -> float:
    """``o = sum_t |d_t| 1[sign d_t != sign d_{t-1}] / sum_t |d_t|`` (0 when d is all zero)."""
    total = np.abs(d).sum()
    if total == 0 or len(d) < 2:
        return 0.0
    flips = np.sign(d[1:]) != np.sign(d[:-1])
    return float((np.abs(d[1:]) * flips).sum() / total)


def uncertainty_scores(interval_beta: np.ndarray, abs_mass: np.ndarray) -> list[PrototypeScore]:
    """u_k for every prototype, with its two classes of largest total |beta|."""
    scores = []
    for k in range(abs_mass.shape[0]):
        a, b = (int(c) for c in np.argsort(-abs_mass[k], kind="stable")[:2])
        d = interval_beta[:, k, a] - interval_beta[:, k, b]
        total = abs_mass[k].sum()
        share = float((abs_mass[k, a] + abs_mass[k, b]) / total) if total > 0 else 0.0
        o = oscillation(d)
        scores.append(PrototypeScore(k, (a, b), [float(v) for v in d], o, share, o * share))
    return scores


def pair_progression(
    preds: np.ndarray, labels: np.ndarray, interval_beta: np.ndarray, ratio: float, top: int
) -> list[PairProgression]:
    """Confusion count per checkpoint and the separation checkpoint of every class pair.

    Args:
        preds: ``(T, N)`` predicted class at each checkpoint.
        labels: ``(N,)``.
        interval_beta: ``(T-1, K, M)``.
    """
    m = interval_beta.shape[2]
    out = []
    for a, b in combinations(range(m), 2):
        conf = ((labels == a)[None] & (preds == b)) | ((labels == b)[None] & (preds == a))
        counts = conf.sum(1).astype(int)
        peak = counts.max()
        if peak == 0:
            sep: int | None = 0
        else:
            above = np.flatnonzero(counts > ratio * peak)
            sep = int(above[-1]) + 1 if above[-1] + 1 < len(counts) else None
        toward_a: list[tuple[int, float]] = []
        toward_b: list[tuple[int, float]] = []
        if sep is not None:
            diff = interval_beta[max(sep - 1, 0), :, a] - interval_beta[max(sep - 1, 0), :, b]
            order = np.argsort(-diff, kind="stable")
            toward_a = [(int(k), float(diff[k])) for k in order[:top] if diff[k] > 0]
            toward_b = [(int(k), float(diff[k])) for k in order[::-1][:top] if diff[k] < 0]
        out.append(PairProgression(a, b, counts.tolist(), sep, toward_a, toward_b))
    return out


def build_structure(
    fits: list[GroupFit],
    groups: np.ndarray,
    presence: np.ndarray,
    coverage: np.ndarray,
    labels: np.ndarray,
    preds: np.ndarray,
    shared_coverage: float = 0.8,
    specialised_purity: float = 0.5,
    separation_ratio: float = 0.25,
    top_drivers: int = 3,
    uncertain_threshold: float = 0.3,
    include_noise: bool = True,
) -> Structure:
    """Derive the structured explanation from the group fits.

    Args:
        fits: from :func:`i2x.patterns.fit_group_betas`.
        groups: ``(T-1, N)``; presence: ``(N, K)``; coverage: ``(K, M)``.
        labels: ``(N,)``; preds: ``(T, N)``.
    """
    intervals, n = groups.shape
    k, m = coverage.shape
    interval_beta, evidence, abs_mass = aggregate_betas(fits, intervals, n, include_noise)

    shared = {c: [int(p) for p in np.flatnonzero((evidence[:, c] > 0) & (coverage[:, c] >= shared_coverage))] for c in range(m)}
    specialised: dict[int, list[Specialised]] = {c: [] for c in range(m)}
    best: dict[tuple[int, int], Specialised] = {}
    for fit in fits:
        if fit.group == NOISE or len(fit.members) == 0:
            continue
        member_labels = labels[fit.members]
        counts = np.bincount(member_labels, minlength=m)
        c = int(counts.argmax())
        if counts[c] / len(fit.members) <= specialised_purity:
            continue
        group_cov = presence[fit.members].mean(0)
        for p in np.flatnonzero((fit.beta[:, c] > 0) & (group_cov >= shared_coverage) & (coverage[:, c] < shared_coverage)):
            cand = Specialised(int(p), fit.interval, fit.group, float(group_cov[p]), float(fit.beta[p, c]))
            if (c, int(p)) not in best or cand.beta > best[(c, int(p))].beta:
                best[(c, int(p))] = cand
    for (c, _p), spec in sorted(best.items()):
        specialised[c].append(spec)

    progression = pair_progression(preds, labels, interval_beta, separation_ratio, top_drivers)
    scores = uncertainty_scores(interval_beta, abs_mass)
    uncertain = sorted((s for s in scores if s.score >= uncertain_threshold), key=lambda s: (-s.score, s.prototype))

    others = coverage.copy()
    distinct = {}
    for c in range(m):
        rest = np.delete(others, c, axis=1).max(1) if m > 1 else np.zeros(k)
        distinct[c] = int(((coverage[:, c] >= 0.5) & (coverage[:, c] >= 2 * rest)).sum())
    corr = _distinct_vs_separation(progression, distinct, preds.shape[0])
    return Structure(interval_beta, evidence, abs_mass, shared, specialised, progression, scores, uncertain, distinct, corr)


def _distinct_vs_separation(progression: list[PairProgression], distinct: dict[int, int], t: int) -> float | None:
    """Spearman correlation between a pair's distinct prototypes and its separation
    checkpoint (never separated counts as T). PAPER expects it negative."""
    from scipy.stats import spearmanr

    x = [distinct[p.a] + distinct[p.b] for p in progression]
    y = [t if p.separated_at is None else p.separated_at for p in progression]
    if len(set(x)) < 2 or len(set(y)) < 2:
        return None
    rho = spearmanr(x, y).statistic
    return None if np.isnan(rho) else float(rho)
