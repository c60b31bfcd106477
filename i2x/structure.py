"""The structured explanation (METHOD step 7): evidence, shared and specialised prototypes,
inter-class progression and uncertain prototypes, each label tested against a
within-class permutation null. Thresholds are config fields (OURS)."""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import combinations

import numpy as np

from i2x.config import ExplainConfig
from i2x.errors import I2XError
from i2x.patterns import NOISE, GroupFit, fit_group_betas

OSCILLATION_WEIGHTS = ("min", "later")
ROLES = ("shared", "specialised", "uncertain")


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


@dataclass(frozen=True)
class Structure:
    """Everything step 7 derives.

    Attributes:
        interval_beta / evidence / abs_mass: see :class:`Labels`.
        shared / specialised / uncertain: the labels kept (they beat the null).
        candidates: the labels before the null test.
        background: prototypes present in most images of most classes; never class evidence.
        distinct: per class, prototypes mostly particular to it.
        null: the permutation test (None when ``null_permutations`` is 0).
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
    background: list[int] = field(default_factory=list)
    candidates: Labels | None = None
    null: NullTest | None = None
    distinct_vs_separation: float | None = None


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


def oscillation(d: np.ndarray, weight: str = "min") -> float:
    """Share of the pull that flips sign: ``o = sum_t w_t 1[sign d_t != sign d_{t-1}] / sum_t |d_t|``.

    Args:
        d: ``(T-1,)`` pull of a prototype toward class a rather than b, per interval.
        weight: ``min`` (OURS, the default): ``w_t = min(|d_t|, |d_{t-1}|)``, so one strong
            onset after near-zero noise is not a flip; ``later``: ``w_t = |d_t|``, the first
            version, which scored a feature learned once as oscillating.
    """
    if weight not in OSCILLATION_WEIGHTS:
        raise I2XError(f"explain.oscillation_weight must be one of {', '.join(OSCILLATION_WEIGHTS)}, got '{weight}'")
    total = np.abs(d).sum()
    if total == 0 or len(d) < 2:
        return 0.0
    flips = np.sign(d[1:]) != np.sign(d[:-1])
    w = np.minimum(np.abs(d[1:]), np.abs(d[:-1])) if weight == "min" else np.abs(d[1:])
    return float((w * flips).sum() / total)


def uncertainty_scores(interval_beta: np.ndarray, abs_mass: np.ndarray, weight: str = "min") -> list[PrototypeScore]:
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


def _candidates(lab: Labels) -> list[tuple[str, int, int, float]]:
    """``(role, class, prototype, statistic)`` of every label in ``lab``."""
    out = [("shared", c, k, float(lab.evidence[k, c])) for c, ks in lab.shared.items() for k in ks]
    out += [("specialised", c, s.prototype, float(lab.specialised_stat[s.prototype, c])) for c, ss in lab.specialised.items() for s in ss]
    out += [("uncertain", -1, s.prototype, s.score) for s in lab.uncertain]
    return out


def _statistic(lab: Labels, role: str, cls: int, k: int) -> float:
    if role == "shared":
        return float(lab.evidence[k, cls])
    if role == "specialised":
        return float(lab.specialised_stat[k, cls])
    return lab.scores[k].score


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
) -> Structure:
    """Derive the structured explanation from the group fits.

    Args:
        fits: from :func:`i2x.patterns.fit_group_betas`.
        groups: ``(T-1, N)``; presence: ``(N, K)``; coverage: ``(K, M)``.
        labels: ``(N,)``; preds: ``(T, N)``.
        dp, dy: ``(T-1, N, K)`` and ``(T-1, N, M)``, needed for the permutation null when
            ``cfg.null_permutations`` > 0; without them every candidate label is kept.
    """
    k, m = coverage.shape
    background = background_prototypes(coverage, cfg.background_coverage, cfg.background_class_share)
    lab = derive_labels(fits, groups, presence, coverage, labels, background, cfg)
    null = None
    shared, specialised, uncertain = lab.shared, lab.specialised, lab.uncertain
    if cfg.null_permutations > 0 and dp is not None and dy is not None:
        null = permutation_null(dp, dy, groups, presence, coverage, labels, background, lab, cfg, seed)
        kept = {(t.role, t.cls, t.prototype) for t in null.tests if t.kept}
        shared = {c: [p for p in ks if ("shared", c, p) in kept] for c, ks in lab.shared.items()}
        specialised = {c: [s for s in ss if ("specialised", c, s.prototype) in kept] for c, ss in lab.specialised.items()}
        uncertain = [s for s in lab.uncertain if ("uncertain", -1, s.prototype) in kept]

    progression = pair_progression(preds, labels, lab.interval_beta, cfg.separation_ratio, cfg.top_drivers)
    distinct = {}
    for c in range(m):
        rest = np.delete(coverage, c, axis=1).max(1) if m > 1 else np.zeros(k)
        distinct[c] = int(((coverage[:, c] >= cfg.distinct_coverage) & (coverage[:, c] >= cfg.distinct_ratio * rest)).sum())
    corr = _distinct_vs_separation(progression, distinct, preds.shape[0])
    return Structure(lab.interval_beta, lab.evidence, lab.abs_mass, shared, specialised, progression, lab.scores, uncertain, distinct,
                     background, lab, null, corr)


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
