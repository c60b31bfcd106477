"""The repair evaluation summarised: mean +- std per strategy and baseline, what each trained on,
the group table, paired verdicts, the goal, the lines the report and the run show, and the
images a strategy changed (for the report's picture)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from i2x.repair.baselines import READS_GROUP_LABELS
from i2x.repair.choice import chosen_strategy
from i2x.repair.context import RepairContext
from i2x.repair.edits import balanced_weights, counterfactual
from i2x.repair.evaluation import RANDOM_TARGET
from i2x.repair.finding import Finding
from i2x.repair.strategies import LAST_LAYER
from i2x.training.batches import to_float
from i2x.training.groups import Groups
from i2x.tuning.comparison import _mean_std, paired

GOAL_BASELINES = ("erm", "jtt", "dfr", "dfr-classes")  # the chosen strategy's paired verdicts


def trained_on(name: str, fits: list[dict[str, Any] | None]) -> str:
    """What a strategy read, in words, from its seeds' fit records (sizes; the DFR variants' C)."""
    fits = [f for f in fits if f]
    if not fits:
        return "-"
    f = fits[0]
    if name in LAST_LAYER or f.get("held_out"):
        cs = sorted({float(x["C"]) for x in fits})
        return (f"last layer refit on {f['held_out']}; {f['draws']} balanced draws of {f['balanced']:,} images averaged; "
                f"C {', '.join(f'{c:g}' for c in cs)} (chosen by worst group on half)")
    return f"{f['epochs']} epoch of {f['images']:,} fit images at lr {f['lr']:g}"


def summarize_repair(results: dict[str, list[dict[str, Any]]], chosen: dict[str, dict[str, Any]], groups: Groups,
                     finding: Finding, level: float) -> dict[str, Any]:
    """Mean +- std per strategy, the group table, each i2x strategy's paired verdicts against
    ERM and JTT (the chosen one's also against DFR, DFR by class and its random-target
    control) on worst-group and average accuracy; the goal line."""
    rows = {}
    for name, runs in results.items():
        w, a = _mean_std([r["worst_group"] for r in runs]), _mean_std([r["accuracy"] for r in runs])
        rows[name] = {"worst_mean": w[0], "worst_std": w[1], "accuracy_mean": a[0], "accuracy_std": a[1], "seeds": len(runs),
                      "true_groups": name in READS_GROUP_LABELS, "params": chosen.get(name, {}).get("params", {}),
                      "declined": chosen.get(name, {}).get("declined"), "matches": chosen.get(name, {}).get("strategy"),
                      "trained_on": trained_on(chosen.get(name, {}).get("strategy") or name, [r.get("fit") for r in runs]),
                      "groups": {g: _mean([r["groups"][g] for r in runs]) for g in groups.names}}
    pick = chosen_strategy(chosen)
    verdicts = []
    for name in (n for n in results if n.startswith("i2x-")):
        others = GOAL_BASELINES + (RANDOM_TARGET,) if name == pick else ("erm", "jtt")
        for other in others:
            if other not in results:
                continue
            for metric in ("worst_group", "accuracy"):
                diffs = [x[metric] - y[metric] for x, y in zip(results[name], results[other], strict=True)]
                verdicts.append({"strategy": name, "against": other, "metric": metric, **paired(diffs, level, True)})
    goal = None
    if pick is not None and "jtt" in results and "dfr" in results:
        beats = next(v for v in verdicts if v["strategy"] == pick and v["against"] == "jtt" and v["metric"] == "worst_group")
        vs_dfr = next(v for v in verdicts if v["strategy"] == pick and v["against"] == "dfr" and v["metric"] == "worst_group")
        goal = {"strategy": pick, "beats_jtt": beats["verdict"] == "better",
                "at_or_above_dfr": rows[pick]["worst_mean"] >= rows["dfr"]["worst_mean"], "vs_dfr": vs_dfr["mean"],
                "vs_dfr_ci": vs_dfr["ci"], "accuracy_within_1": rows[pick]["accuracy_mean"] >= rows["erm"]["accuracy_mean"] - 0.01}
        goal["met"] = all(goal[k] for k in ("beats_jtt", "at_or_above_dfr", "accuracy_within_1"))
    return {"act_on": "findings", "finding": finding.__dict__, "groups_source": groups.source, "group_names": list(groups.names),
            "scored_images": int((groups.of_image >= 0).sum()), "strategies": rows, "verdicts": verdicts, "goal": goal, "ci": level,
            "chosen_strategy": pick}


def _mean(values: list[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return sum(kept) / len(kept) if kept else None


def settings(name: str, r: dict[str, Any]) -> str:
    """A row's chosen settings in words."""
    text = ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in r["params"].items()) or "-"
    if r.get("declined"):
        return "declined: the model as it was (see below)"
    if name == RANDOM_TARGET:
        return f"the control: {r.get('matches')}'s settings ({text}) at random cells, not the finding's"
    return text


def repair_markdown(summary: dict[str, Any]) -> str:
    """The worst-group table, what each row trained on, the verdict lines and the goal, as Markdown."""
    f = summary["finding"]
    by = "the true groups" if summary["groups_source"] != "i2x" else f"the i2x groups (class x {'the copy' if f.get('copy') else 'P' + str(f['prototype'])} present)"
    lines = [f"Acting on: {f['statement']}",
             f"Test set scored by {by} ({summary.get('scored_images', 0):,} images); {summary['strategies']['erm']['seeds']} seeds per strategy.", "",
             "| strategy | reads group labels | worst-group accuracy (%) | average accuracy (%) | chosen settings | trained on |",
             "|---|---|---|---|---|---|"]
    for name, r in summary["strategies"].items():
        lines.append(f"| {name} | {'yes' if r['true_groups'] else 'no'} | {100 * r['worst_mean']:.1f} +- {100 * r['worst_std']:.1f} | "
                     f"{100 * r['accuracy_mean']:.2f} +- {100 * r['accuracy_std']:.2f} | {settings(name, r)} | {r.get('trained_on', '-')} |")
    lines += ["", *verdict_lines(summary)]
    lines += [f"{name} declined: {r['declined']}." for name, r in summary["strategies"].items() if r.get("declined")]
    return "\n".join(lines) + "\n"


def verdict_lines(summary: dict[str, Any]) -> list[str]:
    out = []
    for v in summary["verdicts"]:
        lo, hi = v["ci"]
        ci = "" if lo is None else f", {100 * summary['ci']:.0f}% CI [{100 * lo:+.1f}, {100 * hi:+.1f}]"
        what = "worst-group" if v["metric"] == "worst_group" else "average"
        out.append(f"{v['strategy']} vs {v['against']}, {what} accuracy: {100 * v['mean']:+.1f} points{ci}, "
                   f"{v['n']} paired seeds: {v['verdict'].upper()}")
    g = summary.get("goal")
    if g:
        out.append(f"Goal (the i2x strategy chosen without labels, {g['strategy']}: beats JTT on worst group, at or above DFR with true "
                   f"group labels, average accuracy within 1 point of ERM): {'MET' if g['met'] else 'NOT MET'} "
                   f"(beats JTT: {g['beats_jtt']}; vs DFR {100 * g['vs_dfr']:+.1f} points: {g['at_or_above_dfr']}; "
                   f"accuracy: {g['accuracy_within_1']}).")
    return out


def repair_verdict(summary: dict[str, Any]) -> str:
    """One line for the run's tag: the chosen i2x strategy against ERM on worst group (and DFR,
    where the truth allows it)."""
    best = summary.get("chosen_strategy")
    if best is None:
        return "every i2x strategy declined (none helped on the judging set without costing accuracy): the model is left as it was"
    rows = summary["strategies"]
    v = next((v for v in summary["verdicts"] if v["strategy"] == best and v["against"] == "erm" and v["metric"] == "worst_group"), None)
    word = v["verdict"] if v else "no detectable difference"
    line = (f"{best} vs plain fine-tuning on worst-group accuracy: {word.upper()} "
            f"({100 * rows[best]['worst_mean']:.1f}% vs {100 * rows['erm']['worst_mean']:.1f}%)")
    if "dfr" in rows:
        line += f"; DFR with true group labels {100 * rows['dfr']['worst_mean']:.1f}%"
    return line


def changed_examples(ctx: RepairContext, name: str, params: dict[str, Any], n: int = 6) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Up to ``n`` training images before and after a strategy changed them, and a caption
    each: for ``i2x-groups`` the images are unchanged and the caption gives the weight the
    strategy gives them, relative to the median image."""
    gen = torch.Generator().manual_seed(ctx.config.seed)
    fit, y, cls, classes = ctx.data.fit_idx, ctx.data.train_y, ctx.finding.cls, ctx.data.classes
    k = "the copy" if ctx.finding.copy else f"P{ctx.finding.prototype}"
    if name == "i2x-dfr":
        h = ctx.refit(ctx.config.seed)  # what it refits on
        edited = np.flatnonzero(h.edited)[:n]
        return (to_float(h.original[edited]).numpy(), to_float(h.x[edited]).numpy(),
                [f"{classes[int(h.y[i])]}: {k} {'added' if h.groups[i] % 2 else 'taken out'} (refit set)" for i in edited])
    if name == "i2x-groups":
        weights = balanced_weights(ctx.groups[fit.numpy()]) ** float(params.get("power", 1.0))
        top = np.argsort(-weights, kind="stable")[:n]
        x = to_float(ctx.data.train_x[fit[top]]).numpy()
        rel = weights[top] / np.median(weights)
        return x, x, [f"{classes[int(y[fit[i]])]}, {k} {'present' if ctx.groups[fit[i]] % 2 else 'absent'}: weight x{w:.1f}"
                      for i, w in zip(top, rel, strict=True)]
    how = params["how"]
    has = ctx.cells[fit].flatten(1).any(1)
    pool = fit[(y[fit] != cls)] if how == "swap" else fit[(y[fit] == cls) & has]
    pick = pool[torch.randperm(len(pool), generator=gen)[:n]]
    before = to_float(ctx.data.train_x[pick])
    after = counterfactual(before, y[pick], ctx.cells[pick], cls, how, 1.0, gen, ctx.donors())
    what = f"{k} pasted in" if how == "swap" else f"{k} {how}ed" if how != "noise" else f"{k} noised"
    return before.numpy(), after.numpy(), [f"{classes[int(c)]}: {what}" for c in y[pick]]
