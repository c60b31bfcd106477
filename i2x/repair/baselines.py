"""The baselines a repair must beat, and the truth only they may read.

- ``erm``: plain fine-tuning at the repair's budget;
- ``jtt``: Just Train Twice's mechanism (Liu et al., 2021): the fit images an early checkpoint
  gets wrong, upweighted; lambda chosen on the validation split;
- ``dfr``: DFR as Kirichenko et al. publish it (:mod:`i2x.repair.lastlayer`) on a held-out set
  with true group labels;
- ``dfr-classes``: the same recipe balanced by class only: it reads no group label, but its
  held-out set is one only the truth builds (below), which is what it is for: how far a plain
  last-layer refit gets on data where the cue no longer predicts the class;
- ``oracle``: fine-tuning with true groups balanced (a plant's training groups).

The truth's held-out set: for a plant, the validation images as they were before the plant,
with the mark stamped into a share ``plant.test`` of every class, independently of class, as the
test split carries it; for a user's group file (which labels test images), a seeded half of the
test split, stratified by group, and then every strategy is scored on the other half.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from i2x.repair.context import RepairContext
from i2x.training.loop import predictions
from i2x.training.plants import mark_share_of_every_class

BASELINES = ("erm", "jtt", "dfr", "dfr-classes", "oracle")
READS_GROUP_LABELS = frozenset({"dfr", "oracle"})
NEEDS_TRUTH = frozenset({"dfr", "dfr-classes", "oracle"})
JTT_LAMBDAS = (5.0, 20.0)


@dataclass(frozen=True)
class TrueHeldOut:
    """DFR's held-out set: ``x`` ``(N, C, H, W)`` uint8, ``y``, true ``groups``, and ``what``
    it is, in words for the table."""

    x: torch.Tensor
    y: torch.Tensor
    groups: np.ndarray
    what: str


def truth(ctx: RepairContext) -> str | None:
    """Where the true groups come from: ``plant``, ``file`` (a user's group file) or None."""
    if ctx.test_groups is None:
        return None
    if ctx.config.plant.group_file:
        return "file"
    return "plant" if ctx.data.val_clean is not None else None


def available(ctx: RepairContext) -> tuple[str, ...]:
    """The baselines this data allows and the i2x strategies asked for."""
    have = truth(ctx)
    allowed = [b for b in BASELINES if b not in NEEDS_TRUTH or (have and (b != "oracle" or ctx.true_train is not None))]
    return tuple(allowed) + tuple(ctx.config.tune.repair_strategies)


def dfr_test_half(ctx: RepairContext) -> np.ndarray:
    """``(N_test,)`` bool: the test images DFR reads with their groups (a user's group file
    only; none for a plant): a seeded half of every group."""
    if "dfr_half" not in ctx._cache:
        half = np.zeros(len(ctx.data.test_y), dtype=bool)
        if truth(ctx) == "file":
            rng = np.random.default_rng([ctx.config.seed, 6_151])
            of = ctx.test_groups.of_image
            for g in np.unique(of[of >= 0]):
                members = np.flatnonzero(of == g)
                half[rng.choice(members, len(members) // 2, replace=False)] = True
        ctx._cache["dfr_half"] = half
    return ctx._cache["dfr_half"]


def scored(ctx: RepairContext) -> np.ndarray:
    """``(N_test,)`` bool: the test images every strategy is scored on (all but DFR's half)."""
    return ~dfr_test_half(ctx)


def true_heldout(ctx: RepairContext, seed: int) -> TrueHeldOut:
    """DFR's held-out set for an evaluation seed (module doc)."""
    if ("true_held", seed) in ctx._cache:
        return ctx._cache["true_held", seed]
    kind = truth(ctx)
    if kind == "plant":
        y = ctx.data.train_y[ctx.data.val_idx]
        x, marked = mark_share_of_every_class(ctx.data.val_clean, y, ctx.config.plant, seed)
        out = TrueHeldOut(x, y, (2 * y.numpy() + marked), f"the {len(y):,} validation images before the plant, the mark stamped "
                          f"into {100 * ctx.config.plant.test:g}% of every class")
    elif kind == "file":
        keep = np.flatnonzero(dfr_test_half(ctx) & (ctx.test_groups.of_image >= 0))
        out = TrueHeldOut(ctx.data.test_x[keep], ctx.data.test_y[keep], ctx.test_groups.of_image[keep],
                          f"{len(keep):,} test images with their groups (half of every group; every row is scored on the other half)")
    else:
        raise ValueError("DFR needs the truth: a plant or a group file")
    ctx._cache["true_held", seed] = out
    return out


def jtt_errors(ctx: RepairContext) -> np.ndarray:
    """JTT's error set: the fit images the early checkpoint gets wrong (bool, fit order)."""
    if "errors" not in ctx._cache:
        x = ctx.data.train_x[ctx.data.fit_idx]
        pred = predictions(ctx.fresh_model(ctx.early_state), x, 1000, ctx.device)
        ctx._cache["errors"] = (pred != ctx.data.train_y[ctx.data.fit_idx]).numpy()
    return ctx._cache["errors"]
