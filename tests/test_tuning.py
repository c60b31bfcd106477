"""The tuning stage in-process on the smoke run: plans, the paper recipe, matched controls, a short study."""

import dataclasses

import pytest
import torch

from i2x.explanation.analysis import analyse
from i2x.platform.config_io import apply_overrides
from i2x.training.checkpoints import list_checkpoints, model_from_checkpoint, read_checkpoint
from i2x.tuning.comparison import (
    evaluate_strategies,
    final_evaluation,
    strategy_plans,
    summarize,
    summary_markdown,
)
from i2x.tuning.finetune import evaluate_on_test, finetune, perturbed_pool
from i2x.tuning.perturbation import Plan, affected
from i2x.tuning.study import (
    TuneContext,
    assign_images,
    best_trial,
    focus,
    make_objective,
    make_plan,
    open_study,
    run_study,
    target_prototypes,
)

SCORES = [
    {"prototype": 0, "pair": ["bar", "bar+mark"], "score": 0.9},
    {"prototype": 1, "pair": ["column", "diagonal"], "score": 0.5},
    {"prototype": 2, "pair": ["bar", "column"], "score": 0.1},
    {"prototype": 3, "pair": ["bar", "diagonal"], "score": 0.5},
] + [{"prototype": k, "pair": ["bar", "column"], "score": 0.05} for k in range(4, 8)]


@pytest.fixture(scope="module")
def ctx(smoke_run):
    config, data, result = smoke_run
    config = apply_overrides(config, "tune.n_trials=3,tune.startup_trials=1,tune.epochs_choices=[1],tune.seeds=2,explain.uncertain_threshold=0.3")
    files = list_checkpoints(result.folder)
    final = read_checkpoint(files[-1])
    images, labels = data.train_x[data.analysis_idx], data.train_y[data.analysis_idx]
    analysis = analyse(len(files), lambda t: model_from_checkpoint(read_checkpoint(files[t]), "x"), images, labels,
                       data.num_classes, config.explain, config.seed, torch.device("cpu"), progress=False)
    model = model_from_checkpoint(final, "final")
    assignment = assign_images(model, model.target_layer, data.train_x, analysis.protos, 256, torch.device("cpu"))
    scores = [{"prototype": s.prototype, "pair": [data.classes[s.pair[0]], data.classes[s.pair[1]]], "score": s.score}
              for s in analysis.structure.scores]
    context = TuneContext(config=config, data=data, build=lambda: model_from_checkpoint(final, "final"), state=final["model"],
                          assignment=assignment, scores=scores, device=torch.device("cpu"), background=analysis.structure.background)
    return focus(context), analysis


def _with(context, **changes):
    return dataclasses.replace(context, **changes)


def test_assignment_of_training_images_matches_the_analysis(ctx):
    context, analysis = ctx
    data = context.data
    assert context.assignment.shape == (len(data.train_x), 8, 8)
    # the analysis subset is part of the training set: same model, same centres, same ids
    assert torch.equal(context.assignment[data.analysis_idx].long(), torch.from_numpy(analysis.protos.assignment))


def test_target_prototypes_rank_by_score_then_id():
    assert target_prototypes(SCORES, 2, 0.3) == (0, 1)
    assert target_prototypes(SCORES, 10, 0.3) == (0, 1, 3)
    assert target_prototypes(SCORES, 3, 0.95) == ()
    assert target_prototypes(SCORES, 10, 0.0, pair=("diagonal", "column")) == (1,)


def test_the_focal_pair_is_the_most_confused_candidate_pair_on_validation(ctx):
    context, _ = ctx
    c = _with(context, scores=SCORES, focal=None)
    focus(c)
    model = c.fresh_model()
    from i2x.tuning.study import _confusions, _val_preds

    y, preds = c.data.train_y[c.data.val_idx], _val_preds(model, c)
    candidates = [(0, 1), (2, 3), (0, 2), (0, 3)]  # the pairs of prototypes scored >= threshold_min (0.1)
    assert _confusions(y, preds, *c.focal) == max(_confusions(y, preds, *p) for p in candidates)
    from i2x.platform.errors import I2XError

    with pytest.raises(I2XError, match="no prototype has an uncertainty score >= tune.threshold_min"):
        focus(_with(context, scores=[dict(s, score=0.01) for s in SCORES], focal=None))


def test_paper_strategy_is_the_papers_recipe_with_its_own_control(ctx):
    context, _ = ctx
    c = _with(context, scores=SCORES)
    tuned = make_plan(c, "mask", 0.4, (1,), 1, 1, 0.01)
    plans, _, notes = strategy_plans(tuned, c, seed=0)
    paper = plans["paper"]
    assert notes == ["full->full (1+1) is the same plan as full->full (the tuned schedule is 1+1 at the paper's learning rate): "
                     "one set of runs serves both."]
    assert (paper.kind, paper.alpha, paper.epochs_perturbed, paper.epochs_full) == ("drop", 1.0, 1, 1)
    assert paper.targets == (0, 1, 3)  # every uncertain prototype (u >= 0.3)
    assert paper.scope == ((0, 1), (2, 3), (0, 3))  # each in its pair's classes
    assert paper.epoch_samples == 0  # whole epochs
    ff = plans["full->full"]
    assert (ff.kind, ff.epochs_perturbed, ff.epochs_full, ff.lr, ff.epoch_samples) == ("none", 1, 1, 0.01, tuned.epoch_samples)
    ff11 = plans["full->full (1+1)"]
    assert (ff11.kind, ff11.epochs_perturbed, ff11.epochs_full, ff11.lr) == ("none", 1, 1, paper.lr)
    rnd = plans["random-target"]
    assert len(rnd.targets) == 1 and not set(rnd.targets) & {0, 1, 3}
    assert (rnd.kind, rnd.alpha, rnd.lr, rnd.scope) == (tuned.kind, tuned.alpha, tuned.lr, tuned.scope)


def test_random_target_affects_as_many_images_and_is_never_background(ctx):
    context, _ = ctx
    uncertain = target_prototypes(context.scores, 8, context.config.explain.uncertain_threshold)
    top = sorted(context.scores, key=lambda s: -s["score"])[:2]
    tuned = make_plan(context, "drop", 1.0, tuple(s["prototype"] for s in top), 1, 1, 0.01)
    plans, matches, _ = strategy_plans(tuned, context, seed=0)
    rnd = plans["random-target"]
    assert len(matches) == len(rnd.targets) >= 1
    for m in matches:
        assert m["control"] not in set(uncertain) | set(tuned.targets) | set(context.background)
        if m["matched"]:
            assert abs(m["n_control"] - m["n_target"]) <= 0.2 * m["n_target"]
    fit = context.data.fit_idx
    n_rnd = int(affected(context.assignment[fit], context.data.train_y[fit], rnd.targets, rnd.scope).sum())
    assert n_rnd == sum(m["n_control"] for m in matches) or len(rnd.targets) > 1


def test_pair_curation_keeps_every_class_above_the_floor(ctx):
    """The paper's literal rule removes every image with the prototype; the default removes
    only those of its pair's classes, and never more than tune.max_class_drop of a class."""
    context, _ = ctx
    data = context.data
    everywhere = max(range(8), key=lambda k: int(affected(context.assignment[data.fit_idx], data.train_y[data.fit_idx], (k,)).sum()))
    pair = ((0, 1),)
    fit_counts = torch.bincount(data.train_y[data.fit_idx], minlength=4)
    literal = Plan("drop", 1.0, (everywhere,), 1, 1, 0.01)
    _, lit = perturbed_pool(literal, data, context.assignment, apply_overrides(context.config, "tune.max_class_drop=1.0"), 0)
    assert min(lit["class_counts"].values()) == 0  # the literal rule can delete a whole class
    scoped = Plan("drop", 1.0, (everywhere,), 1, 1, 0.01, scope=pair)
    _, ours = perturbed_pool(scoped, data, context.assignment, context.config, 0)
    for c, name in enumerate(data.classes):
        assert ours["class_counts"][name] >= (1 - context.config.tune.max_class_drop) * int(fit_counts[c])
        if c not in pair[0]:
            assert ours["class_counts"][name] == int(fit_counts[c])  # untouched outside the pair
    assert ours["n_dropped"] > 0 and ours["capped_classes"]


def test_upweight_repeats_the_affected_images(ctx):
    context, _ = ctx
    plan = Plan("upweight", 0.5, (0,), 1, 1, 0.01, scope=((0, 1),))
    pool, stats = perturbed_pool(plan, context.data, context.assignment, context.config, 0)
    factor = 1 + 0.5 * (context.config.tune.upweight_max - 1)  # 2.5: each affected image 1.5 extra times
    assert stats["n_added"] == int(1 * stats["n_affected"]) + int(round(0.5 * stats["n_affected"]))
    assert len(pool) == len(context.data.fit_idx) + stats["n_added"] and factor == 2.5


def test_a_trial_without_a_target_is_pruned_never_run(ctx):
    import optuna

    context, _ = ctx
    focal = tuple(context.data.classes[i] for i in context.focal)
    # pair mode, threshold above every focal-pair prototype's score: no target
    scores = [dict(s, score=0.2) if set(s["pair"]) == set(focal) else dict(s, score=0.9) for s in context.scores]
    c = _with(context, scores=scores)
    study = optuna.create_study(directions=["maximize", "minimize"])
    study.enqueue_trial({"target_mode": "pair", "kind": "mask", "alpha": 0.5, "n_targets": 2, "threshold": 0.5, "lr": 0.01,
                         "epochs_perturbed": 1, "epochs_full": 1})
    study.optimize(make_objective(c), n_trials=1)
    assert study.trials[0].state.name == "PRUNED" and study.trials[0].user_attrs["targets"] == []


def test_the_threshold_is_searched_only_up_to_the_largest_score(ctx):
    import optuna

    context, _ = ctx
    c = _with(context, config=apply_overrides(context.config, "tune.target_modes=[prototypes],tune.threshold_max=0.99"))
    top = max(s["score"] for s in c.scores)
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=optuna.samplers.RandomSampler(seed=0))
    study.optimize(make_objective(c), n_trials=2)
    for t in study.trials:
        assert t.params["threshold"] <= top and t.user_attrs["targets"] and t.state.name == "COMPLETE"
        assert sum(t.user_attrs["class_counts"].values()) > 0


def test_a_short_study_then_controls_and_summary(ctx, tmp_path, capsys):
    context, _ = ctx
    study = open_study("unit", f"sqlite:///{tmp_path}/optuna.db", context.config)
    run_study(study, context)
    finished = [t for t in study.trials if t.state.name in ("COMPLETE", "PRUNED")]
    assert len(finished) == 3
    # one line per trial: its number, the count done, its parameters, its outcome, the ETA
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("i2x tune: trial")]
    assert [line.split(":")[1].strip().split(" (")[0] for line in lines] == ["trial 1", "trial 2", "trial 3"]
    assert all(f"({i}/3 done)" in line and "ETA" in line for i, line in enumerate(lines, 1))
    for line, trial in zip(lines, study.trials, strict=True):
        assert all(f"{k}=" in line for k in trial.params)
        assert ("PRUNED" in line) == (trial.state.name == "PRUNED")
    again = open_study("unit", f"sqlite:///{tmp_path}/optuna.db", context.config)  # load_if_exists
    run_study(again, context)
    assert len(again.trials) == 3  # already done: nothing more runs
    assert again.metric_names == ["val_accuracy", "focal_pair_val_confusions"]
    # a paper recipe needs uncertain prototypes: give the smoke run two, at the real scores' order
    ranked = sorted(context.scores, key=lambda s: -s["score"])
    scores = [dict(s, score=0.9 if s in ranked[:2] else s["score"]) for s in context.scores]
    c = _with(context, scores=scores, config=apply_overrides(context.config, "tune.paper_lr=0.002"))
    summary = final_evaluation(study, c, cache=tmp_path / "controls.json")
    assert set(summary["strategies"]) == {"tuned", "paper", "full->full", "random-target", "full->full (1+1)"}
    assert all(len(r["seeds"]) == 2 for r in summary["strategies"].values())
    pairs = {(v["strategy"], v["control"]) for v in summary["verdicts"]}
    assert pairs == {("tuned", "full->full"), ("tuned", "random-target"), ("random-target", "full->full"), ("paper", "full->full (1+1)")}
    # on smoke, no strategy trains exactly like another (a silent no-op would share weights)
    digests = [r["digests"][0] for r in summary["strategies"].values()]
    assert len(set(digests)) == len(digests), summary["verdict"]["text"]
    assert not any(v["identical_weights"] for v in summary["verdicts"])
    text = summary_markdown(summary)
    assert "| tuned |" in text and "| full->full (1+1) |" in text and "paired over 2 seeds" in text


def test_a_stop_while_optuna_creates_a_trial_lands_in_its_objective_and_ends_it_failed(tmp_path):
    """SIGTERM while Optuna sets a new trial up (here: its sampler), before the objective runs,
    once left that trial RUNNING with no holder; the rerun could not tell it was dead and finished
    the study around it. The stop now waits for the objective, which Optuna ends FAIL."""
    import os
    import signal
    import time
    from types import SimpleNamespace

    import optuna

    from i2x.platform.process import Stopped, quiet_timer, stop_on_signals

    class StopOnSecondTrial(optuna.samplers.RandomSampler):
        def before_trial(self, study, trial):
            if trial.number == 1:
                os.kill(os.getpid(), signal.SIGTERM)
            super().before_trial(study, trial)

    def objective(trial):
        time.sleep(0.5)  # the stop lands here, within the timer's 0.1 s
        return trial.suggest_float("x", 0, 1)

    study = optuna.create_study(storage=f"sqlite:///{tmp_path}/optuna.db", sampler=StopOnSecondTrial(seed=0))
    ctx = SimpleNamespace(config=SimpleNamespace(tune=SimpleNamespace(n_trials=3)))
    stopped = None
    with stop_on_signals():
        try:
            run_study(study, ctx, objective=objective)
        except Stopped as exc:
            quiet_timer()
            stopped = exc.signum
    assert stopped == signal.SIGTERM
    assert [t.state.name for t in study.trials] == ["COMPLETE", "FAIL"]
    assert study.trials[1].user_attrs["i2x.holder"].split()[1] == str(os.getpid())


def test_a_paper_recipe_with_nothing_to_drop_is_not_run_and_the_summary_says_why(ctx):
    context, _ = ctx
    c = _with(context, scores=[dict(s, score=0.2) for s in context.scores])
    tuned = make_plan(c, "mask", 0.4, (0,), 1, 1, 0.01)
    plans, _, notes = strategy_plans(tuned, c, seed=0)
    assert "paper" not in plans and "full->full (1+1)" not in plans
    assert any(n.startswith("paper not run: no prototype has u >= explain.uncertain_threshold") for n in notes)


def _runs(values, focal=10):
    return [{"accuracy": a, "confusions": {"a<->b": focal + i}, "seed": i} for i, a in enumerate(values)]


def test_each_strategy_is_judged_against_its_own_matched_control():
    """Planted: tuned is 2 points better than full->full on every seed (better), the same as
    random-target up to noise (no detectable difference); paper is worse than its 1+1 control."""
    names = ("tuned", "full->full", "random-target", "paper", "full->full (1+1)")
    plans = {n: Plan("none", 0.0, (), 1, 1, 0.01 * (i + 1)) for i, n in enumerate(names)}
    results = {"tuned": _runs([0.92, 0.93, 0.94]), "full->full": _runs([0.90, 0.91, 0.92]),
               "random-target": _runs([0.93, 0.92, 0.945]), "paper": _runs([0.80, 0.81, 0.79]), "full->full (1+1)": _runs([0.90, 0.91, 0.90])}
    summary = summarize(results, plans, "a<->b", {})
    v = {(x["strategy"], x["control"]): x for x in summary["verdicts"]}
    assert v[("tuned", "full->full")]["accuracy"]["verdict"] == "better"
    assert v[("tuned", "full->full")]["accuracy"]["mean"] == pytest.approx(0.02)
    assert v[("tuned", "random-target")]["accuracy"]["verdict"] == "no detectable difference"
    assert v[("paper", "full->full (1+1)")]["accuracy"]["verdict"] == "worse"
    assert v[("tuned", "full->full")]["focal"]["verdict"] == "no detectable difference"  # identical confusions: 0 difference
    assert summary["goal_met"] is False


def test_fewer_confusions_is_better_for_the_focal_pair():
    plans = {"tuned": Plan("mask", 0.5, (1,), 1, 1, 0.01), "full->full": Plan("none", 0.0, (), 1, 1, 0.01)}
    tuned = [{"accuracy": 0.9, "confusions": {"a<->b": c}, "seed": i} for i, c in enumerate([80, 82, 79])]
    base = [{"accuracy": 0.9, "confusions": {"a<->b": c}, "seed": i} for i, c in enumerate([100, 101, 99])]
    summary = summarize({"tuned": tuned, "full->full": base}, plans, "a<->b", {})
    (v,) = summary["verdicts"]
    assert v["focal"]["verdict"] == "better" and v["focal_change"] == pytest.approx(-0.19, abs=0.01)
    assert summary["goal_met"] is True


def test_objective_prunes_through_the_median_pruner(ctx, tmp_path):
    import optuna

    context, _ = ctx
    c = _with(context, config=apply_overrides(context.config, "tune.second_objective=false"))
    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.ThresholdPruner(lower=2.0))  # prune everything
    study.optimize(make_objective(c), n_trials=1)
    assert study.trials[0].state.name == "PRUNED"


def test_test_report_counts_pair_confusions(ctx):
    context, _ = ctx
    model = context.fresh_model()
    report = evaluate_on_test(model, context.data, [(0, 1)], torch.device("cpu"))
    assert 0 <= report["accuracy"] <= 1 and set(report["confusions"]) == {"bar<->bar+mark"}


def test_evaluate_strategies_caches_each_run(ctx, tmp_path):
    context, _ = ctx
    plans = {"full->full": Plan("none", 0.0, (), 1, 0, 0.001, (), 64)}
    first = evaluate_strategies(context, plans, 1, [(0, 1)], cache=tmp_path / "c.json")
    again = evaluate_strategies(context, plans, 1, [(0, 1)], cache=tmp_path / "c.json")
    assert first == again and first["full->full"][0]["stats"]["epoch_fraction"] < 1


def test_finetune_reports_its_weights(ctx):
    context, _ = ctx
    a = finetune(context.fresh_model(), context.data, context.assignment, Plan("none", 0.0, (), 1, 0, 0.001, (), 64), context.config, 0, context.device)
    b = finetune(context.fresh_model(), context.data, context.assignment, Plan("none", 0.0, (), 1, 0, 0.001, (), 64), context.config, 0, context.device)
    c = finetune(context.fresh_model(), context.data, context.assignment, Plan("none", 0.0, (), 1, 0, 0.001, (), 64), context.config, 1, context.device)
    assert a.digest == b.digest != c.digest and len(a.history) == 1


def test_the_tuned_trial_is_on_the_pareto_front():
    """CIFAR-10 (this round): trials 0 and 3 tied on validation accuracy (0.8748) with 109 and
    100 focal confusions; the tie went to the earlier trial, 0, which trial 3 dominates."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(directions=["maximize", "minimize"])
    for values in ([0.8748, 109.0], [0.8744, 96.0], [0.8746, 101.0], [0.8748, 100.0], [0.8740, 103.0]):
        study.add_trial(optuna.trial.create_trial(values=values))
    chosen = best_trial(study)
    assert chosen.number == 3
    assert chosen.number in {t.number for t in study.best_trials}
    single = optuna.create_study(direction="maximize")
    for value in (0.5, 0.7, 0.7):
        single.add_trial(optuna.trial.create_trial(value=value))
    assert best_trial(single).number == 1  # one objective: the earliest of the best
