"""Is a prototype enough on its own? The transplant test of a class cue (OURS, issue 21).

The deletion test (:mod:`i2x.explanation.faithfulness`) asks whether the final model *needs*
a prototype: occlude it, the class margin drops. A shortcut is more: the cue alone *pushes*
the class. The transplant test pastes the prototype's cells from images of its class into
images of the other classes, at the same place, and measures how much the class margin of
the recipient rises, against pasting as many other foreground cells of the same donor at
their places (count-matched, foreground-matched). A planted mark flips recipients to its
class; a part of a digit, seen out of its digit, pushes far less than the digit's other parts.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from i2x.explanation.faithfulness import Claim, batched_logits, class_margin, foreground_cells
from i2x.explanation.nulls import benjamini_hochberg
from i2x.platform.config import FaithfulnessConfig
from i2x.training.batches import to_float
from i2x.training.pixels import cell_mask


@dataclass(frozen=True)
class TransplantResult:
    """The transplant test of one class claim.

    Attributes:
        n_pairs: recipient images (of other classes), each with a random donor of the class.
        rise: mean rise of the recipient's margin for the claim's class (its logit minus the
            largest other) when the donor's prototype cells are pasted in.
        control: the same for as many of the donor's other foreground cells.
        excess: ``rise - control``, mean over pairs; ci: its bootstrap CI; p / p_adjusted:
            one-sided Wilcoxon and Benjamini-Hochberg over the tested claims.
        flips / control_flips: share of recipients then predicted as the class.
        sufficient: ``ci[0] > 0`` and ``p_adjusted < alpha``; None when not tested.
    """

    claim: Claim
    n_pairs: int
    rise: float
    control: float
    excess: float
    ci: tuple[float, float]
    p: float
    p_adjusted: float
    flips: float
    control_flips: float
    sufficient: bool | None


@torch.no_grad()
def transplant_test(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, assignment: np.ndarray, claims: list[Claim],
                    cfg: FaithfulnessConfig, seed: int, device: torch.device, max_pairs: int = 300,
                    batch_size: int = 500) -> list[TransplantResult]:
    """Transplant every class claim (shared, specialised, cue) into other classes' images.

    Args:
        images: ``(N, C, H, W)`` uint8 analysis images; labels: ``(N,)``; assignment: ``(N, h, w)``.
        max_pairs: recipients per claim (a seeded sample of the other classes' images).
    """
    from scipy.stats import wilcoxon

    model.eval()
    n, h, w = assignment.shape
    x = to_float(images)
    size = tuple(x.shape[-2:])
    fg = foreground_cells(x, (h, w), cfg.foreground_threshold).numpy()
    y = labels.numpy()
    rng = np.random.default_rng([seed, 53])

    base = batched_logits(model, x, batch_size, device)
    raw = []
    for claim in claims:
        c, k = claim.classes[0], claim.prototype
        own = assignment == k
        donors = np.flatnonzero((y == c) & own.reshape(n, -1).any(1))
        pool = np.flatnonzero(y != c)
        if claim.role == "uncertain" or len(donors) < cfg.min_images or len(pool) == 0:
            raw.append((claim, None))
            continue
        recipients = np.sort(rng.choice(pool, size=min(max_pairs, len(pool)), replace=False))
        paired = rng.choice(donors, size=len(recipients))
        cells = own[paired]
        control = np.zeros_like(cells)
        for i, d in enumerate(paired):
            options = np.flatnonzero((fg[d] & ~own[d]).ravel())
            if len(options) < cells[i].sum():
                options = np.flatnonzero((~own[d]).ravel())
            pick = rng.choice(options, size=min(int(cells[i].sum()), len(options)), replace=False)
            control[i].flat[pick] = True
        before = class_margin(base[recipients], c)
        out = {}
        for name, chosen in (("prototype", cells), ("control", control)):
            m = cell_mask(torch.from_numpy(chosen), size)
            pasted = x[recipients] * (1 - m) + x[paired] * m
            after = batched_logits(model, pasted, batch_size, device)
            out[name] = ((class_margin(after, c) - before).numpy(), (after.argmax(1) == c).float().mean().item())
        raw.append((claim, out))
    tested = [i for i, (_, o) in enumerate(raw) if o is not None]
    p = np.ones(len(raw))
    for i in tested:
        d = raw[i][1]["prototype"][0] - raw[i][1]["control"][0]
        p[i] = 1.0 if np.allclose(d, 0) else float(wilcoxon(d, alternative="greater").pvalue)
    adjusted = np.ones(len(raw))
    if tested:
        adjusted[tested] = benjamini_hochberg(p[tested])
    boot = np.random.default_rng([seed, 59])
    results = []
    for i, (claim, o) in enumerate(raw):
        if o is None:
            nan = float("nan")
            results.append(TransplantResult(claim, 0, nan, nan, nan, (nan, nan), 1.0, 1.0, nan, nan, None))
            continue
        d = o["prototype"][0] - o["control"][0]
        means = d[boot.integers(0, len(d), size=(cfg.bootstrap, len(d)))].mean(1)
        lo, hi = np.quantile(means, [(1 - cfg.ci) / 2, (1 + cfg.ci) / 2])
        results.append(TransplantResult(claim, len(d), float(o["prototype"][0].mean()), float(o["control"][0].mean()), float(d.mean()),
                                        (float(lo), float(hi)), float(p[i]), float(adjusted[i]), o["prototype"][1], o["control"][1],
                                        bool(lo > 0 and adjusted[i] < cfg.alpha)))
    return results
