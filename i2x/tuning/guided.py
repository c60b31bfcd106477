"""Act on what the explanation verified (``tune.act_on: findings``): an Optuna study over the
i2x repair strategies of :mod:`i2x.tuning.repair`, then every strategy and baseline re-run
over ``tune.seeds`` seeds and scored on the test set by group.

What i2x may read: the finding (a prototype ``k`` the final model relies on for class ``c``),
the cells assigned to ``k`` in every training image, and the labels. Never a group label.
The study's second objective is therefore built from the explanation alone: the i2x
held-out set (:mod:`i2x.tuning.heldout`) is the validation split with the finding's cells
pasted into half of the other classes' images and taken out of half of the class's own, so that every
(class, finding present) group occurs; its worst group says whether a model still follows
the cue. The truth (a plant's marks, a group file) is read only by the baselines marked as
using it (``dfr``, ``oracle``) and by the test-set scoring.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
from torch import nn

from i2x.platform.config import Config
from i2x.platform.progress import doing, duration, say
from i2x.training.batches import to_float
from i2x.training.data import DataBundle
from i2x.training.groups import Groups, group_metrics, group_table
from i2x.training.loop import predictions
from i2x.tuning.heldout import HeldOut, donor_positions, heldout, worst_group
from i2x.tuning.repair import (
    USES_TRUE_GROUPS,
    Budget,
    balanced_weights,
    counterfactual,
    finetune_sampled,
    i2x_groups,
    retrain_last_layer,
)

I2X_STRATEGIES = ("i2x-augment", "i2x-groups", "i2x-dfr")
BASELINES = ("erm", "jtt", "dfr", "oracle")
RANDOM_TARGET = "random-target"  # the chosen i2x strategy at random cells (random_context)
REPAIR_METRICS = ("heldout_accuracy", "heldout_worst_i2x_group")
JTT_LAMBDAS = (5.0, 20.0)
MIN_TEST_GROUP = 20
WITHOUT_FINDING = "val_accuracy_without_finding"  # a trial's user attr (validation_scores' third value)


@dataclass(frozen=True)
class Finding:
    """A verified finding to act on: prototype ``k`` drives class index ``cls``; for a rigid
    copy (``copy``: its explanation row, or a prototype check's own copy from
    :func:`i2x.runs.repair.on_its_copy`, which names its ``prototype``), ``k`` is
    :data:`COPY_ID`, the id its cells get in the assignment (:func:`i2x.runs.repair.with_copy`)."""

    prototype: int
    cls: int
    class_name: str
    statement: str
    copy: dict[str, Any] | None = None


COPY_ID = -2  # no prototype has it


@dataclass
class RepairContext:
    """What every repair trial and evaluation needs (the same in every worker)."""

    config: Config
    data: DataBundle
    build: Callable[[], nn.Module]
    state: dict[str, torch.Tensor]
    early_state: dict[str, torch.Tensor]
    assignment: torch.Tensor
    finding: Finding
    device: torch.device
    test_groups: Groups | None = None
    true_train: np.ndarray | None = None
    assign: Callable[[torch.Tensor], torch.Tensor] | None = None  # images -> (N, h, w) prototype ids (final model)
    _cache: dict[Any, Any] = field(default_factory=dict)

    def fresh_model(self, state: dict[str, torch.Tensor] | None = None) -> nn.Module:
        model = self.build()
        model.load_state_dict(self.state if state is None else state)
        return model.to(self.device).eval()

    @property
    def cells(self) -> torch.Tensor:
        """``(N_train, h, w)`` bool: the finding's cells in every training image."""
        if "cells" not in self._cache:
            self._cache["cells"] = self.assignment == self.finding.prototype
        return self._cache["cells"]

    @property
    def groups(self) -> np.ndarray:
        """The i2x group of every training image (:func:`i2x.tuning.repair.i2x_groups`)."""
        if "groups" not in self._cache:
            self._cache["groups"] = i2x_groups(self.assignment, self.data.train_y, self.finding.prototype)
        return self._cache["groups"]

    @property
    def held(self) -> HeldOut:
        """The study's i2x held-out set, the one every trial is judged on (the run's seed,
        the cue taken out as ``tune.heldout_take_out`` says)."""
        return self.held_for(self.config.seed)

    def held_for(self, seed: int, take_out: str = "") -> HeldOut:
        """The i2x held-out set built with ``seed`` (the evaluation's last-layer refits draw
        a new one per seed, as DFR's repeats draw new held-out subsets), the cue taken out by
        ``take_out`` (empty: ``tune.heldout_take_out``). Every way splits the same images into
        the same fit and scoring halves."""
        take_out = take_out or self.config.tune.heldout_take_out
        if ("held", seed, take_out) not in self._cache:
            self._cache["held", seed, take_out] = heldout(self.data, self.cells, self.finding.cls, seed, take_out)
        return self._cache["held", seed, take_out]

    def budget(self) -> Budget:
        t = self.config.tune
        return Budget(epochs=1, lr=t.repair_lr, batch_size=self.config.train.batch_size, samples=t.epoch_samples)

    def donors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Fit images of the finding's class that carry it in at most :data:`i2x.tuning.heldout.MAX_PASTE_SHARE`
        of their cells (:func:`donor_positions`), as floats, and their cells."""
        if "donors" not in self._cache:
            pos = donor_positions(self.data, self.cells, self.finding.cls)[:2000]
            self._cache["donors"] = (to_float(self.data.train_x[pos]), self.cells[pos])
        return self._cache["donors"]


def jtt_errors(ctx: RepairContext) -> np.ndarray:
    """JTT's error set: the fit images the early checkpoint gets wrong (bool, fit order)."""
    if "errors" not in ctx._cache:
        x = ctx.data.train_x[ctx.data.fit_idx]
        pred = predictions(ctx.fresh_model(ctx.early_state), x, 1000, ctx.device)
        ctx._cache["errors"] = (pred != ctx.data.train_y[ctx.data.fit_idx]).numpy()
    return ctx._cache["errors"]


def true_heldout(ctx: RepairContext, seed: int) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """DFR's held-out set with true groups: the fit half of the validation images (the same
    images i2x-dfr refits on), the plant's mark stamped in half of every class, independently
    of class (DFR assumes every group occurs in its held-out set)."""
    from i2x.training.plants import stamp_into

    if ("true_held", seed) not in ctx._cache:
        keep = ctx.data.val_idx[torch.from_numpy(ctx.held_for(seed).fit)]
        x = ctx.data.train_x[keep].clone()
        rng = np.random.default_rng([seed, 4243])
        boxes = stamp_into(x, rng.random(len(x)) < 0.5, ctx.config.plant, rng)
        y = ctx.data.train_y[keep]
        ctx._cache["true_held", seed] = (x, y, (2 * y + (boxes[:, 0] >= 0).long()).numpy())
    return ctx._cache["true_held", seed]


def available(ctx: RepairContext) -> tuple[str, ...]:
    """The baselines this data allows (``dfr`` and ``oracle`` need the truth) and the i2x
    strategies asked for."""
    truth = ctx.true_train is not None
    base = tuple(b for b in BASELINES if truth or b not in USES_TRUE_GROUPS)
    return base + tuple(s for s in ctx.config.tune.repair_strategies)


def run_strategy(ctx: RepairContext, name: str, params: dict[str, Any], seed: int) -> nn.Module:
    """Fine-tune (or refit the last layer of) a copy of the final model by one strategy."""
    model = ctx.fresh_model()
    fit = ctx.data.fit_idx.numpy()
    weights = transform = None
    if name in ("i2x-dfr", "dfr"):
        if name == "i2x-dfr":  # refit on edits of another kind than those it is judged on (bench/selection.py)
            h = ctx.held_for(seed, ctx.config.tune.refit_take_out)
            x, y, groups = h.x[h.fit], h.y[h.fit], h.groups[h.fit]
        else:
            x, y, groups = true_heldout(ctx, seed)
        return retrain_last_layer(model, x, y, groups, seed, ctx.device, c=float(params.get("C", 1.0)))
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


def validation_scores(ctx: RepairContext, model: nn.Module, held: HeldOut | None = None) -> tuple[float, float, float]:
    """On the scoring half of the i2x held-out set (``held``; default ``ctx.held``):
    (accuracy, worst i2x group) where the finding no longer predicts its class, as on a test
    split where it does not, and the accuracy on the images that do not carry the finding, as
    they are: what the model knows apart from the finding, which a repair has no reason to
    change. (The images that carry it are left out: the finding is a rigid copy, the same pixels
    on most of its class's images, so the accuracy they lend the final model is the copy's, and a
    repair that stops reading the copy must give some of it back; counting them declined every
    repair of planted CIFAR-10, docs/benchmarks.md.)"""
    h = held if held is not None else ctx.held
    part = ~h.fit
    y = h.y[part].numpy()
    pred = predictions(model, h.x[part], 1000, ctx.device).numpy()
    rest = part & ~h.carried
    as_is = predictions(model, h.original[rest], 1000, ctx.device).numpy()
    return float((pred == y).mean()), worst_group(pred, y, h.groups[part]), float((as_is == h.y[rest].numpy()).mean())


def suggest(trial: Any, ctx: RepairContext) -> tuple[str, dict[str, Any]]:
    """The search space: the strategy, then its strength."""
    name = trial.suggest_categorical("strategy", list(ctx.config.tune.repair_strategies))
    if name == "i2x-augment":
        return name, {"how": trial.suggest_categorical("how", ["swap", "mask", "blur", "noise"]),
                      "share": trial.suggest_float("share", 0.1, 1.0)}
    if name == "i2x-groups":
        return name, {"power": trial.suggest_float("power", 0.25, 1.0)}
    return name, {"C": trial.suggest_float("C", 0.01, 10.0, log=True)}


DEFAULTS = {"i2x-augment": {"how": "swap", "share": 0.5}, "i2x-groups": {"power": 1.0}, "i2x-dfr": {"C": 1.0}}


def seed_trials(study: Any, ctx: RepairContext) -> None:
    """Queue one trial per strategy at its default strength (a new study only), so that every
    strategy is tried and has a chosen trial whatever the sampler does with few trials."""
    if not study.trials:
        for name in ctx.config.tune.repair_strategies:
            study.enqueue_trial({"strategy": name, **DEFAULTS[name]})


def make_objective(ctx: RepairContext, track: Callable[..., Any] | None = None) -> Callable[[Any], tuple[float, float]]:
    import contextlib

    def objective(trial: Any) -> tuple[float, float]:
        name, params = suggest(trial, ctx)
        doing(f"trial {trial.number + 1}: {name}")
        with track(trial, name) if track else contextlib.nullcontext(None):
            model = run_strategy(ctx, name, params, ctx.config.seed)
            acc, worst, as_is = validation_scores(ctx, model)
            trial.set_user_attr("heldout_accuracy", acc)
            trial.set_user_attr("heldout_worst_i2x_group", worst)
            trial.set_user_attr(WITHOUT_FINDING, as_is)
        return acc, worst

    return objective


def pick(trials: list[Any], base: tuple[float, float, float], max_loss: float) -> Any | None:
    """Do no harm: of the complete trials that keep the held-out accuracy and the accuracy
    on the validation images without the finding, as they are (:func:`validation_scores`), both
    within ``max_loss`` of the final model's, and
    raise the held-out worst i2x group above the final model's (``base``: its three values),
    the best worst group (ties: accuracy, then the earliest). None when no trial does all
    three: the strategy is declined."""
    ok = [t for t in trials if does_no_harm((*t.values[:2], t.user_attrs.get(WITHOUT_FINDING, -np.inf)), base, max_loss)]
    return max(ok, key=lambda t: (t.values[1], t.values[0], -t.number)) if ok else None


def does_no_harm(values: Sequence[float], base: Sequence[float], max_loss: float) -> bool:
    """:func:`pick`'s test of one candidate: ``values`` and ``base`` are (held-out accuracy,
    held-out worst i2x group, validation accuracy without the finding), the candidate's and the
    final model's."""
    return values[0] >= base[0] - max_loss and values[1] > base[1] and values[2] >= base[2] - max_loss


def best_per_strategy(study: Any, ctx: RepairContext) -> dict[str, dict[str, Any]]:
    """Each searched strategy's chosen trial (:func:`pick`) as ``{strategy: {params, ...}}``;
    a declined strategy gets ``declined`` (why) and leaves the model as it is."""
    from optuna.trial import TrialState

    base = validation_scores(ctx, ctx.fresh_model())
    done = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if not np.isnan(t.values[1])]
    out: dict[str, dict[str, Any]] = {}
    for name in ctx.config.tune.repair_strategies:
        mine = [t for t in done if t.params.get("strategy") == name]
        if not mine:
            continue
        best = pick(mine, base, ctx.config.tune.max_accuracy_loss)
        if best is None:
            out[name] = {"params": {}, "declined": (
                f"none of its {len(mine)} trials kept the held-out accuracy and the validation accuracy without the finding within "
                f"{100 * ctx.config.tune.max_accuracy_loss:g} points of the final model's ({100 * base[0]:.1f}%, {100 * base[2]:.1f}%) while raising the held-out worst i2x group above its "
                f"{100 * base[1]:.1f}%; the model is left as it was")}
        else:
            out[name] = {"trial": best.number, "values": list(best.values), "params": {k: v for k, v in best.params.items() if k != "strategy"}}
    return out


def choose_jtt(ctx: RepairContext) -> dict[str, Any]:
    """JTT's upweight: of :data:`JTT_LAMBDAS`, the best worst validation group, by the true
    groups where the data has them (as the JTT paper tunes it, which favours JTT), else by
    the i2x held-out groups."""
    best = None
    for lam in JTT_LAMBDAS:
        model = run_strategy(ctx, "jtt", {"lambda": lam}, ctx.config.seed)
        if ctx.true_train is not None:
            val = ctx.data.val_idx
            pred = predictions(model, ctx.data.train_x[val], 1000, ctx.device).numpy()
            score = worst_group(pred, ctx.data.train_y[val].numpy(), ctx.true_train[val.numpy()])
        else:
            score = validation_scores(ctx, model)[1]
        if best is None or score > best[0]:
            best = (score, lam)
    return {"lambda": best[1]}


def scoring_groups(ctx: RepairContext) -> Groups:
    """The groups the test set is scored by: the truth where the data has it, else the i2x
    groups of the test images (the final model's assignment) — then said so. An i2x group
    with fewer than :data:`MIN_TEST_GROUP` test images is left out (its images in no group):
    one image wrong would make it the "worst group" at 0%."""
    if ctx.test_groups is not None:
        return ctx.test_groups
    if "i2x_test" not in ctx._cache:
        g = i2x_groups(ctx.assign(ctx.data.test_x), ctx.data.test_y, ctx.finding.prototype)
        ids, counts = np.unique(g, return_counts=True)
        g = np.where(np.isin(g, ids[counts < MIN_TEST_GROUP]), -1, g)
        what = "the copy" if ctx.finding.copy else f"P{ctx.finding.prototype}"
        names = tuple(f"{c} {'with' if m else 'without'} {what}" for c in ctx.data.classes for m in (0, 1))
        ctx._cache["i2x_test"] = Groups(names, g, None, "i2x")
    return ctx._cache["i2x_test"]


def score(model: nn.Module, ctx: RepairContext, groups: Groups) -> dict[str, Any]:
    pred = predictions(model, ctx.data.test_x, 1000, ctx.device).numpy()
    y = ctx.data.test_y.numpy()
    rows = group_table(pred, y, groups)
    m = group_metrics(rows)
    return {"accuracy": float((pred == y).mean()), "worst_group": m["worst_group_accuracy"], "gap": m.get("aligned_conflicting_gap"),
            "groups": {r["group"]: r["accuracy"] for r in rows}}


def chosen_strategy(chosen: dict[str, dict[str, Any]]) -> str | None:
    """The i2x strategy to use, chosen without the test set: of those not declined, the best
    worst i2x group on the held-out set (then its accuracy). None: every one declined."""
    ok = [n for n, c in chosen.items() if n.startswith("i2x-") and not c.get("declined") and c.get("values")]
    return max(ok, key=lambda n: (chosen[n]["values"][1], chosen[n]["values"][0])) if ok else None


def random_target(chosen: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """``{RANDOM_TARGET: {"strategy", "params"}}``: the matched control of the chosen i2x
    strategy (its params, run on :func:`random_context`), or ``{}`` when every one declined."""
    name = chosen_strategy(chosen)  # not `pick`: that is this module's do-no-harm choice of a trial
    return {RANDOM_TARGET: {"strategy": name, "params": dict(chosen[name]["params"])}} if name else {}


def random_context(ctx: RepairContext) -> RepairContext:
    """The matched control's view of ``ctx``: every training image carries as many finding
    cells as it does, at grid cells drawn at random (seeded), and the i2x groups keep their
    sizes per class with their members drawn at random. A strategy run on it edits, reweights
    or refits as much as on the finding, only not on the finding: what a strategy gains over
    it is the finding's, not the edit's."""
    if "random" not in ctx._cache:
        gen = torch.Generator().manual_seed(ctx.config.seed * 7919 + 11)
        flat = ctx.cells.flatten(1)
        ranks = torch.rand(flat.shape, generator=gen).argsort(1).argsort(1)
        moved = (ranks < flat.sum(1, keepdim=True)).view_as(ctx.cells)
        y = ctx.data.train_y.numpy()
        present = ctx.groups % 2
        rng = np.random.default_rng([ctx.config.seed, 7919])
        for c in np.unique(y):
            members = np.flatnonzero(y == c)
            present[members] = rng.permutation(present[members])
        ctx._cache["random"] = replace(ctx, _cache={"cells": moved, "groups": 2 * y + present})
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
        keep = name == "before" or chosen[name].get("declined")
        if keep:
            model = ctx.fresh_model()
        elif name == RANDOM_TARGET:
            model = run_strategy(random_context(ctx), chosen[name]["strategy"], chosen[name]["params"], ctx.config.seed + s)
        else:
            model = run_strategy(ctx, name, chosen[name]["params"], ctx.config.seed + s)
        cache[key] = {**score(model, ctx, groups), "seconds": round(time.perf_counter() - t0, 1)}
        save()
        ran += 1
        eta = (time.perf_counter() - start) / ran * (len(todo) - i - 1)
        say(f"i2x tune: evaluated {name} seed {s} ({i + 1}/{len(todo)}): worst group {cache[key]['worst_group']:.3f}, "
            f"accuracy {cache[key]['accuracy']:.4f}; ETA {duration(eta)}")
    return {n: [cache[f"{n}/{s}"] for s in (range(1) if n == "before" else range(ctx.config.tune.seeds))] for n in names}
