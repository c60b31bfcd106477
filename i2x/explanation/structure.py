"""The structured explanation (METHOD step 7): the labels of :mod:`i2x.explanation.labels`, kept when
they beat the nulls of :mod:`i2x.explanation.nulls`, with the inter-class progression."""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import combinations

import numpy as np

from i2x.explanation.labels import (
    Labels,
    PrototypeScore,
    Specialised,
    background_prototypes,
    derive_labels,
)
from i2x.explanation.nulls import NullTest, permutation_null
from i2x.explanation.patterns import GroupFit, alias_groups
from i2x.platform.config import ExplainConfig


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
class Structure:
    """Everything step 7 derives.

    Attributes:
        candidates: the labels before the null test; ``interval_beta``, ``evidence``,
            ``abs_mass`` and ``scores`` are its own (see :class:`Labels`).
        shared / specialised / uncertain: the labels kept (they beat the null).
        background: prototypes present in most images of most classes; never class evidence.
        distinct: per class, prototypes mostly particular to it.
        null: the permutation test (None when ``null_permutations`` is 0).
    """

    candidates: Labels
    shared: dict[int, list[int]]
    specialised: dict[int, list[Specialised]]
    progression: list[PairProgression]
    uncertain: list[PrototypeScore]
    distinct: dict[int, int]
    background: list[int] = field(default_factory=list)
    null: NullTest | None = None
    distinct_vs_separation: float | None = None
    distinct_vs_separation_p: float | None = None
    background_reasons: dict[int, str] = field(default_factory=dict)
    aliases: list[list[int]] = field(default_factory=list)
    rise_share: np.ndarray | None = None  # (K, M): share of class c's images holding k where k's saliency rose, first to last

    @property
    def interval_beta(self) -> np.ndarray:
        return self.candidates.interval_beta

    @property
    def evidence(self) -> np.ndarray:
        return self.candidates.evidence

    @property
    def abs_mass(self) -> np.ndarray:
        return self.candidates.abs_mass

    @property
    def scores(self) -> list[PrototypeScore]:
        return self.candidates.scores


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
    cfg: ExplainConfig,
    dp: np.ndarray | None = None,
    dy: np.ndarray | None = None,
    seed: int = 0,
    content: dict[int, str] | None = None,
    alias: np.ndarray | None = None,
) -> Structure:
    """Derive the structured explanation from the group fits.

    Args:
        fits: from :func:`i2x.explanation.patterns.fit_group_betas`.
        groups: ``(T-1, N)``; presence: ``(N, K)``; coverage: ``(K, M)``.
        labels: ``(N,)``; preds: ``(T, N)``.
        dp, dy: ``(T-1, N, K)`` and ``(T-1, N, M)``, needed for the permutation null when
            ``cfg.null_permutations`` > 0; without them every candidate label is kept.
        content: background by content (:func:`i2x.explanation.prototypes.content_background`),
            added to the coverage rule's.
        alias: the fits' prototype columns (:func:`i2x.explanation.patterns.prototype_aliases`),
            which the null's replicates use too.
    """
    k, m = coverage.shape
    reasons = dict.fromkeys(background_prototypes(coverage, cfg.background_coverage, cfg.background_class_share), "in most classes")
    reasons |= {k: why for k, why in (content or {}).items() if k not in reasons}
    background = sorted(reasons)
    lab = derive_labels(fits, groups, presence, coverage, labels, background, cfg)
    null = None
    shared, specialised, uncertain = lab.shared, lab.specialised, lab.uncertain
    if cfg.null_permutations > 0 and dp is not None and dy is not None:
        null = permutation_null(dp, dy, groups, presence, coverage, labels, background, lab, cfg, seed, alias)
        kept = {(t.role, t.cls, t.prototype) for t in null.tests if t.kept}
        shared = {c: [p for p in ks if ("shared", c, p) in kept] for c, ks in lab.shared.items()}
        specialised = {c: [s for s in ss if ("specialised", c, s.prototype) in kept] for c, ss in lab.specialised.items()}
        uncertain = [s for s in lab.uncertain if ("uncertain", -1, s.prototype) in kept]

    progression = pair_progression(preds, labels, lab.interval_beta, cfg.separation_ratio, cfg.top_drivers)
    distinct = {}
    for c in range(m):
        rest = np.delete(coverage, c, axis=1).max(1) if m > 1 else np.zeros(k)
        distinct[c] = int(((coverage[:, c] >= cfg.distinct_coverage) & (coverage[:, c] >= cfg.distinct_ratio * rest)).sum())
    corr, corr_p = _distinct_vs_separation(progression, distinct, preds.shape[0], cfg.null_permutations, seed)
    return Structure(lab, shared, specialised, progression, uncertain, distinct, background, null, corr, corr_p, reasons,
                     alias_groups(alias), None if dp is None else rise_shares(dp, presence, labels, m))


def rise_shares(dp: np.ndarray, presence: np.ndarray, labels: np.ndarray, m: int) -> np.ndarray:
    """``(K, M)``: of the images of class c that hold prototype k, the share where k's saliency
    is higher at the last checkpoint than at the first (NaN where none holds it). The report says
    a prototype's saliency "rose" only where this is most of them: the regression says how its
    changes moved with the confidence, not that it rose (MNIST's P4 fell in 86% of the 1s).

    Args:
        dp: ``(T-1, N, K)``; presence: ``(N, K)``; labels: ``(N,)``.
    """
    rose = dp.sum(0) > 0
    out = np.full((presence.shape[1], m), np.nan)
    for c in range(m):
        held = presence & (labels == c)[:, None]
        counts = held.sum(0)
        out[:, c] = np.where(counts > 0, (rose & held).sum(0) / np.maximum(counts, 1), np.nan)
    return out


def _distinct_vs_separation(progression: list[PairProgression], distinct: dict[int, int], t: int, permutations: int,
                            seed: int) -> tuple[float | None, float | None]:
    """Spearman correlation between a pair's distinct prototypes and its separation
    checkpoint (never separated counts as T), and its two-sided p-value. PAPER expects it
    negative. Pairs share classes, so they are not independent and scipy's p-value would be
    too small: the null permutes the classes' distinct counts (``permutations`` draws, 0: no p)."""
    from scipy.stats import spearmanr

    y = [t if p.separated_at is None else p.separated_at for p in progression]

    def rho_of(counts: dict[int, int]) -> float | None:
        x = [counts[p.a] + counts[p.b] for p in progression]
        if len(set(x)) < 2 or len(set(y)) < 2:
            return None
        r = spearmanr(x, y).statistic
        return None if np.isnan(r) else float(r)

    rho = rho_of(distinct)
    if rho is None or permutations <= 0:
        return rho, None
    rng = np.random.default_rng([seed, 31])
    classes, values = list(distinct), np.array(list(distinct.values()))
    null = [rho_of(dict(zip(classes, rng.permutation(values), strict=True))) for _ in range(permutations)]
    extreme = sum(1 for r in null if r is not None and abs(r) >= abs(rho) - 1e-12)
    return rho, (extreme + 1) / (permutations + 1)
