"""The causal check of every named prototype (METHOD step 7b; OURS, the paper has none).

A label such as "P5 drives class 7" is a claim about the final model. It earns its
place only when occluding the prototype's grid cells moves the model more than
occluding the same number of other cells chosen three ways, measured the same way:

- ``uniform``: cells drawn uniformly among the image's other cells;
- ``foreground``: cells drawn with the prototype's own mix of foreground and
  background cells (a digit's stroke against other stroke, not against blank canvas);
- ``gradcam``: the image's top final-checkpoint Grad-CAM cells (a reference: what plain
  saliency would pick).

The measure is the class margin (``logit_c - max other logit``) for a shared or
specialised prototype of class c, and ``|change of logit_a - logit_b|`` for an
uncertain prototype of pair (a, b), over the images of those classes that contain it.

Occluded cells are filled in each of ``faithfulness.fills`` ways, and a verdict must hold under
every one (ROAD, Rong et al. 2022: a constant fill leaks class information, so a deletion effect
measured with one fill can be the fill's). ``mean`` paints the data set's mean colour; on blank
canvas that paints a grey stroke the model never saw, and the "effect" is the paint's: three of
eleven MNIST findings of an earlier release were such (a prototype 79% empty canvas cost 1.16
logits erased, against 12.5 for as many digit cells). ``background`` fills with the image's own
border colour (on blank canvas: erasing), ``blur`` with the image blurred, ``road`` with
pytorch-grad-cam's noisy linear imputation from the neighbouring pixels (in-distribution, slower).
A prototype is **verified** when occluding it lowers the measure (the bootstrap CI of its
own mean drop is above 0), its mean excess over the foreground-matched baseline has a
bootstrap CI above 0, and its one-sided Wilcoxon p-value, Benjamini-Hochberg adjusted over
the prototypes tested, is below ``alpha``. The first condition was added after a model
trained on permuted labels had a "verified" prototype whose occlusion *raised* its class
margin, only less than the matched cells did: beating the control is not enough when the
control itself moves the wrong way.

Saliency-level faithfulness of the Grad-CAM maps themselves comes from
pytorch-grad-cam's ROAD metric (``pytorch_grad_cam.metrics.road.ROADCombined``),
measured beside random maps.

Forward passes only; no I/O and no tracking.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from i2x.explanation.nulls import benjamini_hochberg
from i2x.platform.config import FaithfulnessConfig
from i2x.platform.errors import I2XError
from i2x.training.batches import to_float
from i2x.training.pixels import border_level, cell_mask, gaussian_blur

BASELINES = ("uniform", "foreground", "gradcam")


@dataclass(frozen=True)
class Claim:
    """One named prototype to test: ``classes`` is ``(c,)`` for shared, specialised and cue
    (a prototype common in class c, tested whatever its training-history label) and
    ``(a, b)`` for uncertain."""

    prototype: int
    role: str
    classes: tuple[int, ...]


@dataclass(frozen=True)
class DeletionResult:
    """The deletion test of one claim.

    Attributes:
        effect: mean drop of the measure when the prototype's cells are occluded.
        effect_ci: bootstrap CI of ``effect``.
        baselines: mean drop for each of :data:`BASELINES` (same cell count per image).
        excess: ``effect - baselines["foreground"]``, mean over images.
        ci: bootstrap CI of ``excess``.
        p: one-sided Wilcoxon p-value of the per-image excess; ``p_adjusted`` is BH.
        verified: under every fill, ``effect_ci[0] > 0``, ``ci[0] > 0`` and ``p_adjusted <
            alpha``; None when not tested (fewer than ``min_images`` images contain it). The
            other numbers are the first fill's; the other fills are run only on what the first
            verified (BH-corrected among those), since a verdict needs every fill.
        gradcam_overlap: mean share of the prototype's cells that are among the image's as
            many top Grad-CAM cells: near 1, the prototype's drop is Grad-CAM's drop, and
            what it adds is the structure (which classes share it, when it was learned).
        beyond_gradcam / beyond_gradcam_ci: ``effect`` minus the drop of as many top Grad-CAM
            cells, and its bootstrap CI: above 0, the model relies on the prototype more than
            Grad-CAM's map shows (a hidden cue, such as a planted shortcut on MNIST).
    """

    claim: Claim
    n_images: int
    cells_per_image: float
    foreground_share: float
    effect: float
    baselines: dict[str, float]
    excess: float
    ci: tuple[float, float]
    p: float
    p_adjusted: float
    verified: bool | None
    effect_ci: tuple[float, float] = (float("nan"), float("nan"))
    gradcam_overlap: float = float("nan")
    beyond_gradcam: float = float("nan")
    beyond_gradcam_ci: tuple[float, float] = (float("nan"), float("nan"))
    fills: dict[str, dict[str, object]] = field(default_factory=dict)  # fill -> effect, excess, ci, p_adjusted, verified


def foreground_cells(x: torch.Tensor, grid: tuple[int, int], threshold: float) -> torch.Tensor:
    """``(N, h, w)`` bool: cells whose pixels differ from the image's border colour.

    Args:
        x: ``(N, C, H, W)`` float images in [0, 1].
        threshold: mean absolute difference (max over channels) that makes a cell foreground.
    """
    deviation = (x - border_level(x)[..., None, None]).abs().amax(1, keepdim=True)
    return torch.nn.functional.adaptive_avg_pool2d(deviation, grid)[:, 0] >= threshold


FILLS = ("mean", "background", "blur", "road")


def _fill(x: torch.Tensor, how: str, mean: torch.Tensor, sigma: float) -> torch.Tensor | None:
    """What occluded pixels become (``(N, C, H, W)``), or None for ``road`` (imputed per mask)."""
    if how == "mean":
        return mean.view(1, -1, 1, 1).expand_as(x)
    if how == "background":
        return border_level(x)[..., None, None].expand_as(x)
    if how == "blur":
        return gaussian_blur(x, sigma)
    if how == "road":
        return None
    raise I2XError(f"faithfulness.fills must be among {', '.join(FILLS)}, got '{how}'")


def occlude(x: torch.Tensor, m: torch.Tensor, fill: torch.Tensor | None) -> torch.Tensor:
    """``x`` with the pixels of mask ``m`` (``(N, 1, H, W)``) filled: from ``fill``, or (None) by
    ROAD's noisy linear imputation from the pixels around them."""
    if fill is not None:
        return x * (1 - m) + fill * m
    from pytorch_grad_cam.metrics.road import NoisyLinearImputer

    imputer = NoisyLinearImputer(noise=0.01)
    keep = 1 - m[:, 0]
    return torch.stack([imputer(x[i], keep[i]) if bool((keep[i] < 1).any()) else x[i] for i in range(len(x))])


def _draw(pool: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    return pool[rng.permutation(len(pool))[:count]] if count > 0 else pool[:0]


def matched_cells(own: np.ndarray, fg: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Random cells outside ``own`` with as many foreground and background cells as ``own``
    has (topped up from the other kind when one kind runs short).

    Args:
        own, fg: ``(h*w,)`` bool, the prototype's cells and the foreground cells.
    """
    free_fg, free_bg = np.flatnonzero(fg & ~own), np.flatnonzero(~fg & ~own)
    n_fg, n_bg = int((own & fg).sum()), int((own & ~fg).sum())
    take_fg = _draw(free_fg, min(n_fg, len(free_fg)), rng)
    take_bg = _draw(free_bg, min(n_bg + n_fg - len(take_fg), len(free_bg)), rng)
    short = n_fg + n_bg - len(take_fg) - len(take_bg)
    if short > 0:
        take_fg = np.concatenate([take_fg, _draw(np.setdiff1d(free_fg, take_fg), short, rng)])
    out = np.zeros_like(own)
    out[np.concatenate([take_fg, take_bg]).astype(int)] = True
    return out


def _measure(logits: torch.Tensor, claim: Claim, y: torch.Tensor) -> torch.Tensor:
    """Class margin (shared/specialised) or signed pair margin of the true class (uncertain)."""
    if claim.role == "uncertain":
        a, b = claim.classes
        sign = torch.where(y == a, 1.0, -1.0)
        return sign * (logits[:, a] - logits[:, b])
    return class_margin(logits, claim.classes[0])


def class_margin(logits: torch.Tensor, c: int) -> torch.Tensor:
    """``(B,)`` logit of class ``c`` minus the largest other logit."""
    others = logits.clone()
    others[:, c] = -torch.inf
    return logits[:, c] - others.max(1).values


@torch.no_grad()
def batched_logits(model: nn.Module, x: torch.Tensor, batch_size: int, device: torch.device) -> torch.Tensor:
    """The model's logits of ``x`` in batches, on the CPU."""
    return torch.cat([model(x[s : s + batch_size].to(device)).float().cpu() for s in range(0, len(x), batch_size)])


def deletion_test(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    assignment: np.ndarray,
    saliency: np.ndarray,
    claims: list[Claim],
    cfg: FaithfulnessConfig,
    seed: int,
    device: torch.device,
    batch_size: int = 500,
) -> list[DeletionResult]:
    """Count-matched deletion test of every claim on the final model.

    Args:
        images: ``(N, C, H, W)`` uint8 analysis images; labels: ``(N,)``.
        assignment: ``(N, h, w)`` prototype ids; saliency: ``(N, h, w)`` final Grad-CAM.
        claims: the named prototypes.

    Returns:
        One :class:`DeletionResult` per claim, in order.
    """
    model.eval()
    x = to_float(images)
    fills = {how: _fill(x, how, x.mean(dim=(0, 2, 3)), cfg.blur_sigma) for how in cfg.fills}
    first = cfg.fills[0]
    with torch.random.fork_rng():  # ROAD's imputation draws torch noise: seeded here, the caller's stream untouched
        torch.manual_seed(seed)
        raw = _deletion_drops(model, x, labels, assignment, saliency, claims, cfg, seed, device, batch_size, fills, first)
        # the other fills confirm what the first verified (a verdict needs every fill): the rest need not be run
        judged = _fill_verdicts(raw, first, cfg, seed)
        passed = [i for i, v in enumerate(judged) if v is not None and v["verified"]]
        for how in cfg.fills[1:]:
            for i in passed:
                claim, rows, info = raw[i]
                info["by_fill"][how] = fill_drops(model, x, labels.long(), rows, claim, info, fills[how], ["prototype", "foreground"],
                                                  assignment.shape[1:], batch_size, device)
    return _verdicts(raw, cfg, seed, judged)


def _deletion_drops(model: nn.Module, x: torch.Tensor, labels: torch.Tensor, assignment: np.ndarray, saliency: np.ndarray,
                    claims: list[Claim], cfg: FaithfulnessConfig, seed: int, device: torch.device, batch_size: int,
                    fills: dict[str, torch.Tensor | None], first: str) -> list[tuple[Claim, np.ndarray | None, dict]]:
    """Per claim, its variants' cells and their drops under the first fill (:func:`deletion_test`)."""
    n, h, w = assignment.shape
    fg = foreground_cells(x, (h, w), cfg.foreground_threshold).reshape(n, -1).numpy()
    flat_a = assignment.reshape(n, -1)
    rank = np.argsort(-saliency.reshape(n, -1), axis=1, kind="stable")
    base_logits = batched_logits(model, x, batch_size, device)
    y = labels.long()
    rng = np.random.default_rng(seed)
    raw: list[tuple[Claim, np.ndarray | None, dict]] = []
    for claim in claims:
        own_all = flat_a == claim.prototype
        rows = np.flatnonzero(own_all.any(1) & np.isin(y.numpy(), claim.classes) & ~own_all.all(1))
        if 0 < cfg.max_images < len(rows):
            rows = np.sort(rng.choice(rows, size=cfg.max_images, replace=False))
        if len(rows) < cfg.min_images:
            raw.append((claim, None, {"n": len(rows)}))
            continue
        own = own_all[rows]
        counts = own.sum(1)
        variants = {"prototype": [own]}
        variants["uniform"] = []
        variants["foreground"] = []
        for d in range(max(cfg.draws, cfg.uniform_draws)):
            if d < cfg.uniform_draws:  # reported beside the verdict, not judged: fewer draws
                uni = np.zeros_like(own)
                for r in range(len(rows)):
                    uni[r, _draw(np.flatnonzero(~own[r]), counts[r], rng)] = True
                variants["uniform"].append(uni)
            if d < cfg.draws:
                variants["foreground"].append(np.stack([matched_cells(own[r], fg[rows[r]], rng) for r in range(len(rows))]))
        top = np.zeros_like(own)
        for r in range(len(rows)):
            top[r, rank[rows[r], : counts[r]]] = True
        variants["gradcam"] = [top]
        base = _measure(base_logits[rows], claim, y[rows])
        overlap = float(((own & top).sum(1) / np.maximum(counts, 1)).mean())
        info = {"counts": counts, "fg": (own & fg[rows]).sum() / max(1, own.sum()), "overlap": overlap, "variants": variants,
                "base": base}
        info["by_fill"] = {first: fill_drops(model, x, y, rows, claim, info, fills[first], list(variants), (h, w), batch_size, device)}
        raw.append((claim, rows, info))
    return raw


def fill_drops(model: nn.Module, x: torch.Tensor, y: torch.Tensor, rows: np.ndarray, claim: Claim, info: dict,
               fill: torch.Tensor | None, names: list[str], grid: tuple[int, int], batch_size: int, device: torch.device
               ) -> dict[str, np.ndarray]:
    """Per variant in ``names``, the mean drop of the claim's measure over its draws when its cells
    are filled with ``fill`` (None: ROAD's imputation)."""
    size = tuple(x.shape[-2:])
    drops = {}
    for name in names:
        per_draw = []
        for cells in info["variants"][name]:
            m = cell_mask(torch.from_numpy(cells.reshape(-1, *grid)), size)
            occluded = occlude(x[rows], m, None if fill is None else fill[rows])
            drop = (info["base"] - _measure(batched_logits(model, occluded, batch_size, device), claim, y[rows])).numpy()
            # A confuser can push either class: for an uncertain prototype the size of the move is the claim, for every
            # variant alike.
            per_draw.append(np.abs(drop) if claim.role == "uncertain" else drop)
        drops[name] = np.mean(per_draw, axis=0)
    return drops


def _fill_verdicts(raw: list[tuple[Claim, np.ndarray | None, dict]], how: str, cfg: FaithfulnessConfig, seed: int
                   ) -> list[dict[str, object] | None]:
    """Per claim, the verdict under one fill (None: not tested): the mean drop and its CI, the
    excess over foreground-matched cells and its CI, Wilcoxon p BH-adjusted over the claims
    (labels and cues corrected apart), verified."""
    from scipy.stats import wilcoxon

    rng = np.random.default_rng(seed + 1)
    tested = [i for i, (_, rows, info) in enumerate(raw) if rows is not None and how in info["by_fill"]]
    p = np.ones(len(raw))
    for i in tested:
        drops = raw[i][2]["by_fill"][how]
        excess = drops["prototype"] - drops["foreground"]
        p[i] = 1.0 if np.allclose(excess, 0) else float(wilcoxon(excess, alternative="greater").pvalue)
    adjusted = np.ones(len(raw))
    for family in (lambda role: role != "cue", lambda role: role == "cue"):
        idx = [i for i in tested if family(raw[i][0].role)]
        if idx:
            adjusted[idx] = benjamini_hochberg(p[idx])
    out: list[dict[str, object] | None] = []
    levels = [(1 - cfg.ci) / 2, (1 + cfg.ci) / 2]
    for i, (_claim, rows, info) in enumerate(raw):
        if rows is None or how not in info["by_fill"]:
            out.append(None)
            continue
        drops = info["by_fill"][how]
        excess = drops["prototype"] - drops["foreground"]
        resample = rng.integers(0, len(excess), size=(cfg.bootstrap, len(excess)))  # the same resamples for both CIs
        lo, hi = np.quantile(excess[resample].mean(1), levels)
        own_lo, own_hi = np.quantile(drops["prototype"][resample].mean(1), levels)
        out.append({"effect": float(drops["prototype"].mean()), "effect_ci": (float(own_lo), float(own_hi)),
                    "excess": float(excess.mean()), "ci": (float(lo), float(hi)), "p": float(p[i]), "p_adjusted": float(adjusted[i]),
                    "verified": bool(own_lo > 0 and lo > 0 and adjusted[i] < cfg.alpha), "resample": resample})
    return out


def _verdicts(raw: list[tuple[Claim, np.ndarray | None, dict]], cfg: FaithfulnessConfig, seed: int,
              first_verdicts: list[dict[str, object] | None] | None = None) -> list[DeletionResult]:
    """The results, from every fill's verdicts; ``first_verdicts``: the first fill's, where the
    caller has judged them already (the same numbers, not computed twice)."""
    per_fill = {how: first_verdicts if how == cfg.fills[0] and first_verdicts is not None else _fill_verdicts(raw, how, cfg, seed)
                for how in cfg.fills}
    first = cfg.fills[0]
    levels = [(1 - cfg.ci) / 2, (1 + cfg.ci) / 2]
    out = []
    for i, (claim, rows, info) in enumerate(raw):
        if rows is None:
            out.append(DeletionResult(claim, info["n"], 0.0, 0.0, float("nan"), dict.fromkeys(BASELINES, float("nan")), float("nan"),
                                      (float("nan"), float("nan")), 1.0, 1.0, None))
            continue
        v = per_fill[first][i]
        drops = info["by_fill"][first]
        beyond = drops["prototype"] - drops["gradcam"]
        beyond_lo, beyond_hi = np.quantile(beyond[v["resample"]].mean(1), levels)
        fills = {how: {k: val for k, val in per_fill[how][i].items() if k != "resample"} for how in cfg.fills if per_fill[how][i]}
        out.append(DeletionResult(
            claim, len(rows), float(info["counts"].mean()), float(info["fg"]), v["effect"],
            {k: float(drops[k].mean()) for k in BASELINES}, v["excess"], v["ci"], v["p"], v["p_adjusted"],
            len(fills) == len(cfg.fills) and all(f["verified"] for f in fills.values()), v["effect_ci"], info.get("overlap", float("nan")),
            float(beyond.mean()), (float(beyond_lo), float(beyond_hi)), fills,
        ))
    return out
