"""Choosing a repair without the test set and without a group label: the Optuna study's search
space and objective, scored on the judging set (:func:`i2x.repair.heldout.judging_set`), the
do-no-harm rule, and the strategy handed to the user."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from torch import nn

from i2x.platform.progress import doing
from i2x.repair.context import RepairContext
from i2x.repair.heldout import HeldOut, worst_group
from i2x.repair.strategies import run_strategy
from i2x.training.loop import predictions

REPAIR_METRICS = ("heldout_accuracy", "heldout_worst_i2x_group")
WITHOUT_FINDING = "val_accuracy_without_finding"  # a trial's user attr (validation_scores' third value)
DEFAULTS: dict[str, dict[str, Any]] = {"i2x-augment": {"how": "swap", "share": 0.5}, "i2x-groups": {"power": 1.0}, "i2x-dfr": {}}


def validation_scores(ctx: RepairContext, model: nn.Module, held: HeldOut | None = None) -> tuple[float, float, float]:
    """On the judging set (``held``; default ``ctx.judging``): (accuracy, worst i2x group) where
    the finding no longer predicts its class, as on a test split where it does not, and the
    accuracy on the validation images that do not carry the finding, as they are: what the
    model knows apart from the finding, which a repair has no reason to change. (The images
    that carry it are left out: the finding is a cue on most of its class's images, so the
    accuracy they lend the final model is the cue's, and a repair that stops reading it must give
    some of it back; counting them declined every repair of planted CIFAR-10, docs/repair.md.)"""
    h = held if held is not None else ctx.judging
    y = h.y.numpy()
    pred = predictions(model, h.x, 1000, ctx.device).numpy()
    rest = ~h.edited & ~h.carried
    return float((pred == y).mean()), worst_group(pred, y, h.groups), float((pred[rest] == y[rest]).mean())


def suggest(trial: Any, ctx: RepairContext) -> tuple[str, dict[str, Any]]:
    """The search space: the strategy, then its strength (i2x-dfr chooses its C itself, by the
    published recipe)."""
    name = trial.suggest_categorical("strategy", list(ctx.config.tune.repair_strategies))
    if name == "i2x-augment":
        return name, {"how": trial.suggest_categorical("how", ["swap", "mask", "blur", "noise"]),
                      "share": trial.suggest_float("share", 0.1, 1.0)}
    if name == "i2x-groups":
        return name, {"power": trial.suggest_float("power", 0.25, 1.0)}
    return name, {}


def seed_trials(study: Any, ctx: RepairContext) -> None:
    """Queue one trial per strategy at its default strength (a new study only), so that every
    strategy is tried and has a chosen trial whatever the sampler does with few trials."""
    if not study.trials:
        for name in ctx.config.tune.repair_strategies:
            study.enqueue_trial({"strategy": name, **DEFAULTS[name]})


def make_objective(ctx: RepairContext, track: Callable[..., Any] | None = None) -> Callable[[Any], tuple[float, float]]:
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


def does_no_harm(values: Sequence[float], base: Sequence[float], max_loss: float) -> bool:
    """:func:`pick`'s test of one candidate: ``values`` and ``base`` are (judging accuracy,
    judging worst i2x group, validation accuracy without the finding), the candidate's and the
    final model's."""
    return values[0] >= base[0] - max_loss and values[1] > base[1] and values[2] >= base[2] - max_loss


def pick(trials: list[Any], base: tuple[float, float, float], max_loss: float) -> Any | None:
    """Do no harm: of the complete trials that keep the judging accuracy and the accuracy on
    the validation images without the finding, as they are (:func:`validation_scores`), both
    within ``max_loss`` of the final model's, and raise the worst i2x group above the final
    model's (``base``: its three values), the best worst group (ties: accuracy, then the
    earliest). None when no trial does all three: the strategy is declined."""
    ok = [t for t in trials if does_no_harm((*t.values[:2], t.user_attrs.get(WITHOUT_FINDING, -np.inf)), base, max_loss)]
    return max(ok, key=lambda t: (t.values[1], t.values[0], -t.number)) if ok else None


def best_per_strategy(study: Any, ctx: RepairContext) -> dict[str, dict[str, Any]]:
    """Each searched strategy's chosen trial (:func:`pick`) as ``{strategy: {params, ...}}``;
    a declined strategy gets ``declined`` (why) and leaves the model as it is."""
    from optuna.trial import TrialState

    base = validation_scores(ctx, ctx.fresh_model())
    done = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if not np.isnan(t.values[1])]
    out: dict[str, dict[str, Any]] = {}
    loss = ctx.config.tune.max_accuracy_loss
    for name in ctx.config.tune.repair_strategies:
        mine = [t for t in done if t.params.get("strategy") == name]
        if not mine:
            continue
        best = pick(mine, base, loss)
        if best is None:
            out[name] = {"params": {}, "declined": (
                f"none of its {len(mine)} trials kept the judging set's accuracy and the validation accuracy without the finding "
                f"within {100 * loss:g} points of the final model's ({100 * base[0]:.1f}%, {100 * base[2]:.1f}%) while raising "
                f"the worst i2x group above its {100 * base[1]:.1f}%; the model is left as it was")}
        else:
            out[name] = {"trial": best.number, "values": list(best.values), "params": {k: v for k, v in best.params.items() if k != "strategy"}}
    return out


def chosen_strategy(chosen: dict[str, dict[str, Any]]) -> str | None:
    """The i2x strategy to use, chosen without the test set: of those not declined, the best
    worst i2x group on the judging set (then its accuracy). None: every one declined."""
    ok = [n for n, c in chosen.items() if n.startswith("i2x-") and not c.get("declined") and c.get("values")]
    return max(ok, key=lambda n: (chosen[n]["values"][1], chosen[n]["values"][0])) if ok else None


def choose_jtt(ctx: RepairContext, lambdas: Sequence[float]) -> dict[str, Any]:
    """JTT's upweight: of ``lambdas``, the best worst validation group, by the true groups where
    the data has them for training images (as the JTT paper tunes it, which favours JTT), else
    by the i2x groups of the judging set."""
    best = None
    for lam in lambdas:
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
