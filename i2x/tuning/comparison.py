"""After the study: each strategy against its matched controls, over seeds, on the test set.

Strategies (all from the final checkpoint, seeds ``seed, seed+1, ...``):

- ``tuned``: the best trial's plan;
- ``full->full``: the tuned schedule, learning rate and epoch budget with no perturbation;
- ``random-target``: the tuned kind and strength on prototypes matched to the targets on
  their classes and on the number of images they affect, never uncertain or background;
- ``paper``: the paper's recipe, curated->full: drop (alpha 1) the images that contain an
  uncertain prototype (in its pair's classes, by default), 1 epoch, then 1 full epoch;
- ``full->full (1+1)``: the paper's control, 1+1 full epochs at the paper's learning rate.

Each strategy gets its own verdict against each of its controls: the paired difference
over seeds (same seed, same data order) with a t-based CI, for test accuracy and for the
focal pair's confusions: "better", "no detectable difference" or "worse".
"""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from i2x.platform.progress import steps
from i2x.platform.secrets import redact
from i2x.training.checkpoints import atomic_write_text
from i2x.tuning.finetune import evaluate_on_test, finetune
from i2x.tuning.perturbation import Plan, affected
from i2x.tuning.study import (
    TuneContext,
    best_trial,
    make_plan,
    pair_of,
    plan_from_params,
    target_prototypes,
)

STRATEGIES = ("tuned", "full->full", "random-target", "paper", "full->full (1+1)")
CONTROLS: dict[str, tuple[str, ...]] = {
    "tuned": ("full->full", "random-target"),
    "random-target": ("full->full",),
    "paper": ("full->full (1+1)",),
}


def _affected_count(ctx: TuneContext, k: int, classes: tuple[int, ...]) -> int:
    fit = ctx.data.fit_idx
    return int(affected(ctx.assignment[fit], ctx.data.train_y[fit], (k,), (classes,)).sum())


def matched_random_targets(ctx: TuneContext, plan: Plan, seed: int) -> tuple[Plan, list[dict[str, Any]]]:
    """The random-target control of ``plan``: for each target, a prototype that is neither
    uncertain nor background, drawn (seeded) among those that affect, in the same classes,
    within ``tune.match_tolerance`` of the target's number of images; the closest one when
    none is that close (``matched`` is then false).

    Returns:
        the control plan (same kind, strength, schedule and scope), and one match record
        per target: ``target``, ``control``, ``classes``, ``n_target``, ``n_control``, ``matched``.
    """
    t = ctx.config.tune
    uncertain = set(target_prototypes(ctx.scores, len(ctx.scores), ctx.config.explain.uncertain_threshold)) | set(plan.targets)
    pool = [s["prototype"] for s in ctx.scores if s["prototype"] not in uncertain and s["prototype"] not in set(ctx.background)]
    rng = np.random.default_rng(seed)
    chosen: list[int] = []
    records = []
    for i, k in enumerate(plan.targets):
        classes = plan.scope[i] if plan.scope else tuple(range(len(ctx.data.classes)))
        n_target = _affected_count(ctx, k, classes)
        free = [c for c in pool if c not in chosen]
        if not free:
            break
        counts = {c: _affected_count(ctx, c, classes) for c in free}
        close = [c for c in free if abs(counts[c] - n_target) <= t.match_tolerance * max(n_target, 1)]
        pick = int(rng.choice(close)) if close else min(free, key=lambda c: (abs(counts[c] - n_target), c))
        chosen.append(pick)
        records.append({"target": k, "control": pick, "classes": [ctx.data.classes[c] for c in classes], "n_target": n_target,
                        "n_control": counts[pick], "matched": bool(close)})
    scope = tuple(plan.scope[: len(chosen)]) if plan.scope else ()
    control = Plan(plan.kind, plan.alpha, tuple(chosen), plan.epochs_perturbed, plan.epochs_full, plan.lr, scope, plan.epoch_samples)
    return control, records


def strategy_plans(tuned: Plan, ctx: TuneContext, seed: int) -> tuple[dict[str, Plan], list[dict[str, Any]], list[str]]:
    """Every strategy's plan (see the module docstring), the random-target match records,
    and notes on strategies left out or shared (a strategy with nothing to act on is not
    run: it would train exactly like its control and say nothing)."""
    t = ctx.config.tune
    uncertain = target_prototypes(ctx.scores, len(ctx.scores), ctx.config.explain.uncertain_threshold)
    paper_lr = t.paper_lr or tuned.lr
    paper_samples = 0 if t.paper_whole_epochs else t.epoch_samples
    random_plan, matches = matched_random_targets(ctx, tuned, seed)
    plans = {
        "tuned": tuned,
        "full->full": Plan("none", 0.0, (), tuned.epochs_perturbed, tuned.epochs_full, tuned.lr, (), tuned.epoch_samples),
        "random-target": random_plan,
        "paper": make_plan(ctx, "drop", 1.0, uncertain, 1, 1, paper_lr, epoch_samples=paper_samples),
        "full->full (1+1)": Plan("none", 0.0, (), 1, 1, paper_lr, (), paper_samples),
    }
    notes = []
    if not random_plan.targets:
        del plans["random-target"]
        notes.append("random-target not run: every prototype is uncertain, targeted or background.")
    if not uncertain:
        del plans["paper"], plans["full->full (1+1)"]
        notes.append(f"paper not run: no prototype has u >= explain.uncertain_threshold={ctx.config.explain.uncertain_threshold}, "
                     "so the paper's curated set would be the full set.")
    elif plans["full->full (1+1)"] == plans["full->full"]:
        notes.append("full->full (1+1) is the same plan as full->full (the tuned schedule is 1+1 at the paper's learning rate): "
                     "one set of runs serves both.")
    return plans, matches, notes


def evaluate_strategies(ctx: TuneContext, plans: dict[str, Plan], seeds: int, pairs: list[tuple[int, int]],
                        cache: Path | None = None) -> dict[str, list[dict]]:
    """Fine-tune every strategy with seeds ``seed, seed+1, ...`` and evaluate on the test set.

    Each finished (plan, seed) is saved to ``cache`` (atomically), so a re-run after a
    crash or a failed upload redoes only what is missing.
    """
    done: dict[str, dict] = json.loads(cache.read_text()) if cache and cache.is_file() else {}
    results: dict[str, list[dict]] = {name: [] for name in plans}
    jobs = [(name, s) for s in range(seeds) for name in plans]
    for name, s in steps(jobs, "controls", unit="run"):
        seed = ctx.config.seed + s
        key = f"{seed}|{plans[name]}|{pairs}"  # by plan, not name: identical plans share their runs
        if key not in done:
            model = ctx.fresh_model()
            run = finetune(model, ctx.data, ctx.assignment, plans[name], ctx.config, seed, ctx.device)
            report = evaluate_on_test(model, ctx.data, pairs, ctx.device)
            done[key] = {**report, "seed": seed, "digest": run.digest, "stats": run.stats}
            if cache:
                atomic_write_text(cache, json.dumps(done))
        results[name].append(done[key])
    return results


def _mean_std(values: list[float]) -> tuple[float, float]:
    return (statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0)


def paired(diffs: list[float], level: float, higher_is_better: bool) -> dict[str, Any]:
    """Mean of paired differences with a t-based CI, a two-sided paired t-test p-value, and
    the verdict: "better" when the CI excludes 0 on the good side, "worse" on the bad side,
    else "no detectable difference" (always so for fewer than 2 seeds)."""
    from scipy import stats

    n = len(diffs)
    mean = statistics.fmean(diffs)
    sd = statistics.stdev(diffs) if n > 1 else 0.0
    if n < 2:
        return {"mean": mean, "ci": [None, None], "p": None, "verdict": "no detectable difference", "n": n}
    if sd == 0:
        lo = hi = mean
        p = 1.0 if mean == 0 else 0.0
    else:
        half = stats.t.ppf((1 + level) / 2, n - 1) * sd / math.sqrt(n)
        lo, hi = mean - half, mean + half
        p = float(stats.ttest_1samp(diffs, 0.0).pvalue)
    good_lo, good_hi = (lo, hi) if higher_is_better else (-hi, -lo)
    verdict = "better" if good_lo > 0 else "worse" if good_hi < 0 else "no detectable difference"
    return {"mean": mean, "ci": [lo, hi], "p": p, "verdict": verdict, "n": n}


def summarize(results: dict[str, list[dict]], plans: dict[str, Plan], focal: str, best: dict[str, Any],
              level: float = 0.95, matches: list[dict[str, Any]] | None = None, n_fit: int | None = None) -> dict[str, Any]:
    """Mean +- std per strategy, and each strategy's verdicts against its matched controls.

    Args:
        results: per strategy, one record per seed (seeds in the same order everywhere).
        focal: the focal pair's name, ``"a<->b"``.
        n_fit: size of the fit split, to print the fraction of an epoch used.
    """
    rows: dict[str, Any] = {}
    for name, runs in results.items():
        acc = [r["accuracy"] for r in runs]
        foc = [r["confusions"].get(focal, 0) for r in runs]
        plan = asdict(plans[name])
        plan["targets"] = list(plan["targets"])
        stats = runs[0].get("stats", {})
        rows[name] = {
            "plan": plan, "seeds": [r["seed"] for r in runs], "accuracy": acc, "focal_confusions": foc,
            "confusions": [r["confusions"] for r in runs], "digests": [r.get("digest") for r in runs],
            "accuracy_mean": _mean_std(acc)[0], "accuracy_std": _mean_std(acc)[1],
            "focal_mean": _mean_std(foc)[0], "focal_std": _mean_std(foc)[1],
            "epoch_fraction": (min(1.0, plans[name].epoch_samples / n_fit) if plans[name].epoch_samples and n_fit else 1.0),
            "trained_on": {k: stats.get(k) for k in ("size", "class_counts", "n_affected", "n_dropped", "n_added", "capped_classes")},
        }
    verdicts = []
    for name, controls in CONTROLS.items():
        if name not in rows:
            continue
        for control in controls:
            if control not in rows:
                continue
            a, b = results[name], results[control]
            d_acc = [x["accuracy"] - y["accuracy"] for x, y in zip(a, b, strict=True)]
            d_foc = [x["confusions"].get(focal, 0) - y["confusions"].get(focal, 0) for x, y in zip(a, b, strict=True)]
            base = rows[control]["focal_mean"]
            identical = [x.get("digest") is not None and x.get("digest") == y.get("digest") for x, y in zip(a, b, strict=True)]
            if plans[name] == plans[control]:
                continue  # the same plan: nothing to compare
            verdicts.append({
                "strategy": name, "control": control,
                "accuracy": paired(d_acc, level, higher_is_better=True),
                "focal": paired(d_foc, level, higher_is_better=False),
                "focal_change": (rows[name]["focal_mean"] - base) / base if base else None,
                "identical_weights": all(identical),
            })
    tuned = next((v for v in verdicts if v["strategy"] == "tuned" and v["control"] == "full->full"), None)
    goal = None
    if tuned and tuned["focal_change"] is not None:
        goal = bool(tuned["focal_change"] <= -0.10 and tuned["accuracy"]["verdict"] != "worse")
    text = verdict_text(verdicts, focal)
    return {"focal_pair": focal, "strategies": rows, "verdicts": verdicts, "matches": matches or [],
            "goal_met": goal, "verdict": {"text": text}, "best_trial": best}


def verdict_text(verdicts: list[dict[str, Any]], focal: str) -> str:
    """One line per comparison, e.g. ``tuned vs full->full: accuracy +0.12 points [...]: no
    detectable difference; 2<->7 confusions -8.3% ...``."""
    lines = []
    for v in verdicts:
        acc, foc = v["accuracy"], v["focal"]
        ci = "" if acc["ci"][0] is None else f" [{100 * acc['ci'][0]:+.2f}, {100 * acc['ci'][1]:+.2f}]"
        fci = "" if foc["ci"][0] is None else f" [{foc['ci'][0]:+.1f}, {foc['ci'][1]:+.1f}]"
        change = "" if v["focal_change"] is None else f" ({v['focal_change']:+.1%})"
        same = " IDENTICAL WEIGHTS: the strategy did nothing different from its control." if v["identical_weights"] else ""
        lines.append(f"{v['strategy']} vs {v['control']}: accuracy {100 * acc['mean']:+.2f} points{ci}: {acc['verdict'].upper()}; "
                     f"{focal} confusions {foc['mean']:+.1f}{fci}{change}: {foc['verdict'].upper()} (paired over {acc['n']} seeds).{same}")
    return "\n".join(lines)


def verdict_line(summary: dict[str, Any]) -> str:
    """The tuning result in one line: tuned against its matched full->full, and the goal."""
    focal = summary["focal_pair"]
    v = next((v for v in summary["verdicts"] if v["strategy"] == "tuned" and v["control"] == "full->full"), None)
    if v is None:
        return f"tuned is the same plan as full->full: nothing to compare ({focal})"
    acc, foc = v["accuracy"], v["focal"]
    change = "" if v["focal_change"] is None else f" ({v['focal_change']:+.1%})"
    goal = summary.get("goal_met")
    goal_text = "" if goal is None else f"; goal {'MET' if goal else 'NOT MET'}"
    return (f"tuned vs full->full over {acc['n']} seeds: accuracy {100 * acc['mean']:+.2f} points, {acc['verdict']}; "
            f"{focal} confusions {foc['mean']:+.1f}{change}, {foc['verdict']}{goal_text}")


def focal_name(ctx: TuneContext) -> str:
    a, b = ctx.focal
    return f"{ctx.data.classes[a]}<->{ctx.data.classes[b]}"


def final_evaluation(study: Any, ctx: TuneContext, cache: Path | None = None) -> dict[str, Any]:
    """After the search: the best trial, the paper's recipe and the matched controls, each re-run
    with ``tune.seeds`` seeds on the test set, summarised (see :func:`summarize`)."""
    from i2x.tuning.study import focus

    if ctx.focal is None:
        focus(ctx)
    best = best_trial(study)
    tuned = plan_from_params(best.params, ctx)
    plans, matches, notes = strategy_plans(tuned, ctx, ctx.config.seed)
    paper_targets = plans["paper"].targets if "paper" in plans else ()
    pairs = [ctx.focal] + [p for p in (pair_of(ctx, k) for k in tuned.targets + paper_targets) if p != ctx.focal]
    pairs = list(dict.fromkeys(pairs))
    results = evaluate_strategies(ctx, plans, ctx.config.tune.seeds, pairs, cache=cache)
    pareto = [{"number": t.number, "values": t.values, "params": t.params} for t in getattr(study, "best_trials", [])] if len(study.directions) > 1 else []
    summary = summarize(results, plans, focal_name(ctx), {"number": best.number, "params": best.params, "values": best.values},
                        ctx.config.tune.ci, matches, len(ctx.data.fit_idx))
    summary["pareto"] = pareto
    summary["notes"] = notes
    return summary


def _settings(plan: dict[str, Any], fraction: float) -> str:
    if plan["kind"] == "none":
        what = "no perturbation"
    else:
        targets = ", ".join(f"P{k}" for k in plan["targets"]) or "none"
        scope = "pair classes" if plan["scope"] else "every class"
        what = f"{plan['kind']} alpha {plan['alpha']:.2f} on {targets} ({scope})"
    epochs = f"{plan['epochs_perturbed']}+{plan['epochs_full']} epochs" + ("" if fraction >= 1 else f" of {fraction:.0%} each")
    return f"{what}; {epochs}; lr {plan['lr']:.2g}"


def summary_table(summary: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """The paper-format table as data: the header and one row per strategy (its exact
    settings and what it trained on). :func:`summary_markdown` and the HTML report both
    render it."""
    header = ["strategy", "test accuracy (%)", f"{summary['focal_pair']} confusions", "settings", "perturbed phase trained on", "seeds"]
    rows = []
    for name in STRATEGIES:
        r = summary["strategies"].get(name)
        if r is None:
            continue
        on = r["trained_on"]
        trained = "-" if not on.get("size") else (
            f"{on['size']} images ({', '.join(f'{c} {n}' for c, n in (on.get('class_counts') or {}).items())})"
            + (f"; {on['n_dropped']} dropped" if on.get("n_dropped") else "") + (f"; {on['n_added']} repeated" if on.get("n_added") else "")
            + (f"; {on['n_affected']} perturbed" if r["plan"]["kind"] in ("mask", "blur", "noise") else "")
            + (f"; floor kept {', '.join(on['capped_classes'])}" if on.get("capped_classes") else ""))
        rows.append([name, f"{100 * r['accuracy_mean']:.2f} +- {100 * r['accuracy_std']:.2f}", f"{r['focal_mean']:.1f} +- {r['focal_std']:.1f}",
                     _settings(r["plan"], r["epoch_fraction"]), trained, str(len(r["seeds"]))])
    return header, rows


def summary_markdown(summary: dict[str, Any]) -> str:
    """The paper-format table (:func:`summary_table`), then one verdict line per comparison."""
    focal = summary["focal_pair"]
    header, rows = summary_table(summary)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + ["| " + " | ".join(row) + " |" for row in rows]
    unmatched = [m for m in summary.get("matches", []) if not m["matched"]]
    note = ""
    if unmatched:
        note = "\n\nrandom-target: no prototype affected within the tolerance of " + ", ".join(
            f"P{m['target']} ({m['n_target']} images; closest P{m['control']}, {m['n_control']})" for m in unmatched) + "."
    if summary.get("notes"):
        note += "\n\n" + "\n".join(summary["notes"])
    goal = summary.get("goal_met")
    goal_line = "" if goal is None else (f"\n\nGoal (tuned cuts {focal} confusions by >= 10% against its full->full at no loss of accuracy): "
                                         f"{'MET' if goal else 'NOT MET'}.")
    return "\n".join(lines) + note + f"\n\n{summary['verdict']['text']}{goal_line}\n"


def study_record(study: Any, url: str) -> dict[str, Any]:
    """What the summary says about the study: every trial counted once, by its final state (a
    trial killed with its worker is one FAIL, and its retry one more trial)."""
    from optuna.trial import TrialState

    states = [t.state for t in study.get_trials(deepcopy=False)]
    finished = sum(s in (TrialState.COMPLETE, TrialState.PRUNED) for s in states)
    return {"name": study.study_name, "storage": redact(url), "n_trials": len(states), "n_finished": finished,
            "n_failed": sum(s == TrialState.FAIL for s in states)}
