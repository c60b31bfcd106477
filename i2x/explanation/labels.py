"""Step-7 labels from one set of group fits (METHOD step 7): evidence, shared and
specialised prototypes, and uncertainty scores. Used for the real fits and for every null
replicate alike; the tests against nulls are in :mod:`i2x.explanation.nulls`. Thresholds are config
fields (OURS)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from i2x.explanation.patterns import NOISE, GroupFit
from i2x.platform.config import ExplainConfig
from i2x.platform.errors import I2XError

OSCILLATION_WEIGHTS = ("runs", "min", "later")


@dataclass(frozen=True)
class Specialised:
    prototype: int
    interval: int
    group: int
    group_coverage: float
    beta: float


@dataclass(frozen=True)
class PrototypeScore:
    """Uncertainty of one prototype: its class pair, oscillation o, share and u = o * share."""

    prototype: int
    pair: tuple[int, int]
    d: list[float]
    oscillation: float
    share: float
    score: float

    @property
    def flipped(self) -> float:
        """The pull that flips sign, in beta units: ``o * sum_t |d_t|``. u is a ratio, so pure
        noise, which flips at random, can score as high as a real swing; the null test
        compares this absolute amount instead."""
        return self.oscillation * float(np.abs(self.d).sum())


@dataclass(frozen=True)
class Labels:
    """The step-7 labels derived from one set of fits (the real ones, or a null replicate).

    Attributes:
        interval_beta: ``(T-1, K, M)`` size-weighted mean of ``beta^t_g`` over groups.
        evidence: ``(K, M)`` size-weighted sum over t and g of ``beta^t_g``.
        abs_mass: ``(K, M)`` the same sum of ``|beta|``.
        specialised_stat: ``(K, M)`` the largest ``beta^t_g[k, c]`` over the groups where k
            could be specialised for c (-inf where there is none); positive means a label.
        shared / specialised: per class; uncertain: by descending score.
    """

    interval_beta: np.ndarray
    evidence: np.ndarray
    abs_mass: np.ndarray
    specialised_stat: np.ndarray
    shared: dict[int, list[int]]
    specialised: dict[int, list[Specialised]]
    scores: list[PrototypeScore]
    uncertain: list[PrototypeScore]


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


def oscillation(d: np.ndarray, weight: str = "runs") -> float:
    """Share of the pull that flips sign: ``o = sum_t w_t 1[sign d_t != sign d_{t-1}] / sum_t |d_t|``.

    Args:
        d: ``(T-1,)`` pull of a prototype toward class a rather than b, per interval.
        weight: ``runs`` (OURS, the default): consecutive intervals of one sign are merged
            into a run first, and each flip counts the smaller of the two runs it separates,
            so a swing spread over two intervals (+0.066, then -0.009 and -0.047) counts in
            full; ``min``: ``w_t = min(|d_t|, |d_{t-1}|)`` on the raw intervals, so one strong
            onset after near-zero noise is not a flip (both rules agree on that), but a
            small step inside a swing hides it; ``later``: ``w_t = |d_t|``, the first
            version, which scored a feature learned once as oscillating.
    """
    if weight not in OSCILLATION_WEIGHTS:
        raise I2XError(f"explain.oscillation_weight must be one of {', '.join(OSCILLATION_WEIGHTS)}, got '{weight}'")
    d = np.asarray(d, dtype=np.float64)
    total = np.abs(d).sum()
    if total == 0 or len(d) < 2:
        return 0.0
    if weight == "runs":
        d = d[d != 0]
        starts = np.flatnonzero(np.r_[True, np.sign(d[1:]) != np.sign(d[:-1])])
        mass = np.add.reduceat(np.abs(d), starts) if len(d) else np.zeros(0)
        return float(np.minimum(mass[1:], mass[:-1]).sum() / total)
    flips = np.sign(d[1:]) != np.sign(d[:-1])
    w = np.minimum(np.abs(d[1:]), np.abs(d[:-1])) if weight == "min" else np.abs(d[1:])
    return float((w * flips).sum() / total)


def uncertainty_scores(interval_beta: np.ndarray, abs_mass: np.ndarray, weight: str = "runs") -> list[PrototypeScore]:
    """u_k for every prototype, with its two classes of largest total |beta|."""
    scores = []
    for k in range(abs_mass.shape[0]):
        a, b = (int(c) for c in np.argsort(-abs_mass[k], kind="stable")[:2])
        d = interval_beta[:, k, a] - interval_beta[:, k, b]
        total = abs_mass[k].sum()
        share = float((abs_mass[k, a] + abs_mass[k, b]) / total) if total > 0 else 0.0
        o = oscillation(d, weight)
        scores.append(PrototypeScore(k, (a, b), [float(v) for v in d], o, share, o * share))
    return scores


def background_prototypes(coverage: np.ndarray, min_coverage: float, class_share: float) -> list[int]:
    """Prototypes with coverage >= ``min_coverage`` in at least ``class_share`` of the classes:
    blank background, borders, generic texture. They say nothing about one class."""
    common = (coverage >= min_coverage).mean(1) >= class_share
    return [int(k) for k in np.flatnonzero(common)]


def derive_labels(
    fits: list[GroupFit],
    groups: np.ndarray,
    presence: np.ndarray,
    coverage: np.ndarray,
    labels: np.ndarray,
    background: list[int],
    cfg: ExplainConfig,
) -> Labels:
    """Shared, specialised and uncertain labels of one set of fits (no null test here).

    Args:
        groups: ``(T-1, N)``; presence: ``(N, K)``; coverage: ``(K, M)``; labels: ``(N,)``.
        background: prototype ids never labelled shared or specialised.
    """
    intervals, n = groups.shape
    k, m = coverage.shape
    interval_beta, evidence, abs_mass = aggregate_betas(fits, intervals, n, cfg.evidence_includes_noise)
    foreground = np.ones(k, dtype=bool)
    foreground[background] = False
    shared = {c: [int(p) for p in np.flatnonzero((evidence[:, c] > 0) & (coverage[:, c] >= cfg.shared_coverage) & foreground)] for c in range(m)}

    spec_stat = np.full((k, m), -np.inf)
    best: dict[tuple[int, int], Specialised] = {}
    for fit in fits:
        if fit.group == NOISE or len(fit.members) == 0:
            continue
        counts = np.bincount(labels[fit.members], minlength=m)
        c = int(counts.argmax())
        if counts[c] / len(fit.members) <= cfg.specialised_purity:
            continue
        group_cov = presence[fit.members].mean(0)
        eligible = (group_cov >= cfg.shared_coverage) & (coverage[:, c] < cfg.shared_coverage) & foreground
        spec_stat[eligible, c] = np.maximum(spec_stat[eligible, c], fit.beta[eligible, c])
        for p in np.flatnonzero(eligible & (fit.beta[:, c] > 0)):
            cand = Specialised(int(p), fit.interval, fit.group, float(group_cov[p]), float(fit.beta[p, c]))
            if (c, int(p)) not in best or cand.beta > best[(c, int(p))].beta:
                best[(c, int(p))] = cand
    specialised: dict[int, list[Specialised]] = {c: [] for c in range(m)}
    for (c, _p), spec in sorted(best.items()):
        specialised[c].append(spec)

    scores = uncertainty_scores(interval_beta, abs_mass, cfg.oscillation_weight)
    uncertain = sorted((s for s in scores if s.score >= cfg.uncertain_threshold), key=lambda s: (-s.score, s.prototype))
    return Labels(interval_beta, evidence, abs_mass, spec_stat, shared, specialised, scores, uncertain)
