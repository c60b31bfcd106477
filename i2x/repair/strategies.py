"""Every strategy and baseline as one call: a copy of the final model in, the repaired model out.

The i2x strategies read the finding's cells and nothing else (never a group label):

- ``i2x-augment``: counterfactual augmentation (:func:`i2x.repair.edits.counterfactual`): the
  finding's cells pasted into a share of the other classes' images, or masked, blurred or
  noised in the images of its class, while fine-tuning;
- ``i2x-groups``: JTT's mechanism with groups the explanation inferred, (class, finding
  present): the minority groups oversampled (``power`` sets how far toward balance);
- ``i2x-dfr``: DFR's recipe (:mod:`i2x.repair.lastlayer`) on the refit set the explanation
  builds from training images (:func:`i2x.repair.heldout.refit_set`), balanced by i2x groups.

The baselines (:mod:`i2x.repair.baselines`) run at the same budget: one epoch of the fit split
for those that fine-tune, the last layer alone for the DFR variants.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from i2x.repair.baselines import jtt_errors, true_heldout
from i2x.repair.context import RepairContext
from i2x.repair.edits import balanced_weights, counterfactual
from i2x.repair.finetune import finetune_sampled
from i2x.repair.lastlayer import LastLayer, features, fit_last_layer, install

I2X_STRATEGIES = ("i2x-augment", "i2x-groups", "i2x-dfr")
LAST_LAYER = frozenset({"dfr", "dfr-classes", "i2x-dfr"})


def last_layer(ctx: RepairContext, name: str, seed: int) -> LastLayer:
    """The refit last layer of a DFR variant for an evaluation seed (cached: the fit is
    deterministic given the seed), with what it read recorded for the summary."""
    if ("layer", name, seed) in ctx._cache:
        return ctx._cache["layer", name, seed]
    model = ctx.fresh_model()
    if name == "i2x-dfr":
        h = ctx.refit(seed)
        x, y, groups = h.x, h.y, h.groups
        what = (f"{len(h):,} training images, the finding's cells pasted into half of the other classes' and taken out of half "
                f"of its class's ({ctx.config.tune.refit_take_out}); i2x groups")
    else:
        t = true_heldout(ctx, seed)
        x, y = t.x, t.y
        groups = t.groups if name == "dfr" else t.y.numpy()
        what = t.what + ("; true groups" if name == "dfr" else "; balanced by class, no group label read")
    z = features(model, x, ctx.device, ctx.config.explain.batch_size)
    layer = fit_last_layer(z, y.numpy(), groups, len(ctx.data.classes), seed, draws=ctx.config.tune.dfr_draws)
    ctx._cache["layer", name, seed] = layer
    ctx._cache["fit", name, seed] = {**layer.record(), "held_out": what}
    return layer


def fit_record(ctx: RepairContext, name: str, seed: int) -> dict[str, Any] | None:
    """What a strategy trained on, for the summary's table (sizes, the DFR variants' C)."""
    if name in LAST_LAYER:
        return ctx._cache.get(("fit", name, seed))
    n = ctx.config.tune.epoch_samples or len(ctx.data.fit_idx)
    return {"images": min(n, len(ctx.data.fit_idx)), "epochs": 1, "lr": ctx.config.tune.repair_lr}


def run_strategy(ctx: RepairContext, name: str, params: dict[str, Any], seed: int) -> nn.Module:
    """Fine-tune (or refit the last layer of) a copy of the final model by one strategy."""
    model = ctx.fresh_model()
    if name in LAST_LAYER:
        return install(model, last_layer(ctx, name, seed))
    fit = ctx.data.fit_idx.numpy()
    weights = transform = None
    if name == "jtt":
        weights = 1.0 + (float(params["lambda"]) - 1.0) * jtt_errors(ctx)
    elif name == "oracle":
        weights = balanced_weights(ctx.true_train[fit])
    elif name == "i2x-groups":
        weights = balanced_weights(ctx.groups[fit]) ** float(params.get("power", 1.0))
    elif name == "i2x-augment":
        cells, donors, cls = ctx.cells, ctx.donors(), ctx.finding.cls
        how, share = params["how"], float(params["share"])

        def transform(xb: torch.Tensor, yb: torch.Tensor, pos: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
            return counterfactual(xb, yb, cells[ctx.data.fit_idx[pos]], cls, how, share, gen, donors)
    elif name != "erm":
        raise ValueError(f"unknown repair strategy {name!r}")
    return finetune_sampled(model, ctx.data, weights, ctx.budget(), ctx.config, seed, ctx.device, transform)
