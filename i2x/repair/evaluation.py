"""Every strategy and baseline over ``tune.seeds`` seeds, scored on the test set by group, with
the matched control of the chosen i2x strategy (its settings at random cells)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np
import torch
from torch import nn

from i2x.platform.progress import doing, duration, say
from i2x.repair.baselines import BASELINES, available, scored
from i2x.repair.choice import chosen_strategy
from i2x.repair.context import RepairContext
from i2x.repair.edits import i2x_groups
from i2x.repair.strategies import fit_record, run_strategy
from i2x.training.groups import Groups, group_metrics, group_table
from i2x.training.loop import predictions

RANDOM_TARGET = "random-target"  # the chosen i2x strategy at random cells (random_context)
MIN_TEST_GROUP = 20


def scoring_groups(ctx: RepairContext) -> Groups:
    """The groups the test set is scored by: the truth where the data has it (less the images
    DFR read, :func:`i2x.repair.baselines.scored`), else the i2x groups of the test images (the
    final model's assignment), then said so. An i2x group with fewer than
    :data:`MIN_TEST_GROUP` test images is left out (its images in no group): one image wrong
    would make it the "worst group" at 0%."""
    if "scoring" in ctx._cache:
        return ctx._cache["scoring"]
    if ctx.test_groups is not None:
        g = ctx.test_groups
        out = replace(g, of_image=np.where(scored(ctx), g.of_image, -1))
    else:
        g = i2x_groups(ctx.assign(ctx.data.test_x), ctx.data.test_y, ctx.finding.prototype)
        ids, counts = np.unique(g, return_counts=True)
        g = np.where(np.isin(g, ids[counts < MIN_TEST_GROUP]), -1, g)
        what = "the copy" if ctx.finding.copy else f"P{ctx.finding.prototype}"
        names = tuple(f"{c} {'with' if m else 'without'} {what}" for c in ctx.data.classes for m in (0, 1))
        out = Groups(names, g, None, "i2x")
    ctx._cache["scoring"] = out
    return out


def score(model: nn.Module, ctx: RepairContext, groups: Groups) -> dict[str, Any]:
    """Accuracy, worst group and per-group accuracy on the scored test images."""
    keep = scored(ctx)
    pred = predictions(model, ctx.data.test_x, 1000, ctx.device).numpy()
    y = ctx.data.test_y.numpy()
    rows = group_table(pred, y, groups)
    m = group_metrics(rows)
    return {"accuracy": float((pred[keep] == y[keep]).mean()), "worst_group": m["worst_group_accuracy"],
            "gap": m.get("aligned_conflicting_gap"), "groups": {r["group"]: r["accuracy"] for r in rows}}


def random_target(chosen: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """``{RANDOM_TARGET: {"strategy", "params"}}``: the matched control of the chosen i2x
    strategy (its params, run on :func:`random_context`), or ``{}`` when every one declined."""
    name = chosen_strategy(chosen)
    return {RANDOM_TARGET: {"strategy": name, "params": dict(chosen[name]["params"])}} if name else {}


def random_context(ctx: RepairContext) -> RepairContext:
    """The matched control's view of ``ctx``: every training image carries as many finding
    cells as it does (and the same margin around them), at grid cells drawn at random (seeded),
    and the i2x groups keep their
    sizes per class with their members drawn at random. A strategy run on it edits, reweights
    or refits as much as on the finding, only not on the finding: what a strategy gains over
    it is the finding's, not the edit's."""
    if "random" not in ctx._cache:
        gen = torch.Generator().manual_seed(ctx.config.seed * 7919 + 11)
        flat = ctx.core.flatten(1)
        ranks = torch.rand(flat.shape, generator=gen).argsort(1).argsort(1)
        moved = (ranks < flat.sum(1, keepdim=True)).view_as(ctx.core)
        y = ctx.data.train_y.numpy()
        present = ctx.groups % 2
        rng = np.random.default_rng([ctx.config.seed, 7919])
        for c in np.unique(y):
            members = np.flatnonzero(y == c)
            present[members] = rng.permutation(present[members])
        ctx._cache["random"] = replace(ctx, _cache={"core": moved, "groups": 2 * y + present})
    return ctx._cache["random"]


def evaluate(ctx: RepairContext, chosen: dict[str, dict[str, Any]], groups: Groups, cache: dict[str, Any],
             save: Callable[[], None] = lambda: None) -> dict[str, list[dict[str, Any]]]:
    """Every strategy with its chosen params, ``tune.seeds`` seeds each, scored on the test
    set. ``cache`` holds finished ``"<strategy>/<seed>"`` results (a rerun resumes)."""
    names = ["before"] + [n for n in available(ctx) if n in chosen or n in BASELINES] + [n for n in (RANDOM_TARGET,) if n in chosen]
    todo = [(n, s) for n in names for s in (range(1) if n == "before" else range(ctx.config.tune.seeds))]
    start, ran = time.perf_counter(), 0
    for i, (name, s) in enumerate(todo):
        key = f"{name}/{s}"
        if key in cache:
            continue
        t0 = time.perf_counter()
        doing(f"evaluating {name}, seed {s}")
        seed = ctx.config.seed + s
        fit = None
        if name == "before" or chosen[name].get("declined"):
            model = ctx.fresh_model()
        elif name == RANDOM_TARGET:
            rctx = random_context(ctx)
            model = run_strategy(rctx, chosen[name]["strategy"], chosen[name]["params"], seed)
            fit = fit_record(rctx, chosen[name]["strategy"], seed)
        else:
            model = run_strategy(ctx, name, chosen[name]["params"], seed)
            fit = fit_record(ctx, name, seed)
        cache[key] = {**score(model, ctx, groups), "seconds": round(time.perf_counter() - t0, 1), "fit": fit}
        save()
        ran += 1
        eta = (time.perf_counter() - start) / ran * (len(todo) - i - 1)
        say(f"i2x tune: evaluated {name} seed {s} ({i + 1}/{len(todo)}): worst group {cache[key]['worst_group']:.3f}, "
            f"accuracy {cache[key]['accuracy']:.4f}; ETA {duration(eta)}")
    return {n: [cache[f"{n}/{s}"] for s in (range(1) if n == "before" else range(ctx.config.tune.seeds))] for n in names}
