"""The tuning stage in-process on the smoke run: plans, the paper recipe, a short study."""

import pytest
import torch

from i2x.analysis import analyse
from i2x.checkpoints import list_checkpoints, model_from_checkpoint, read_checkpoint
from i2x.config import apply_overrides
from i2x.finetune import evaluate_on_test, finetune
from i2x.perturbation import Plan, contains
from i2x.tuning import (
    TuneContext,
    assign_images,
    make_objective,
    open_study,
    plan_from_params,
    run_study,
    strategy_plans,
    summarize,
    summary_markdown,
    target_prototypes,
)

SCORES = [
    {"prototype": 0, "pair": ["bar", "bar+mark"], "score": 0.9},
    {"prototype": 1, "pair": ["column", "diagonal"], "score": 0.5},
    {"prototype": 2, "pair": ["bar", "column"], "score": 0.1},
    {"prototype": 3, "pair": ["bar", "diagonal"], "score": 0.5},
]


@pytest.fixture(scope="module")
def ctx(smoke_run):
    config, data, result = smoke_run
    config = apply_overrides(config, "tune.n_trials=3,tune.startup_trials=1,tune.epochs_choices=[1],tune.seeds=2")
    files = list_checkpoints(result.folder)
    final = read_checkpoint(files[-1])
    images, labels = data.train_x[data.analysis_idx], data.train_y[data.analysis_idx]
    analysis = analyse(len(files), lambda t: model_from_checkpoint(read_checkpoint(files[t]), "x"), images, labels,
                       data.num_classes, config.explain, config.seed, torch.device("cpu"), progress=False)
    model = model_from_checkpoint(final, "final")
    assignment = assign_images(model, model.target_layer, data.train_x, analysis.protos, 256, torch.device("cpu"))
    scores = [{"prototype": s.prototype, "pair": [data.classes[s.pair[0]], data.classes[s.pair[1]]], "score": s.score}
              for s in analysis.structure.scores]
    return TuneContext(config=config, data=data, build=lambda: model_from_checkpoint(final, "final"), state=final["model"],
                       assignment=assignment, scores=scores, device=torch.device("cpu")), analysis


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


def test_paper_strategy_is_the_papers_recipe(ctx):
    context, _ = ctx
    context = TuneContext(**{**context.__dict__, "scores": [dict(s, pair=["bar", "column"]) for s in SCORES]})
    tuned = Plan("mask", 0.4, (1,), 1, 1, 0.01)
    plans = strategy_plans(tuned, context, uncertain_threshold=0.3, seed=0)
    paper = plans["paper"]
    assert (paper.kind, paper.alpha, paper.epochs_perturbed, paper.epochs_full) == ("drop", 1.0, 1, 1)
    assert paper.targets == (0, 1, 3)  # every uncertain prototype (u >= 0.3)
    assert plans["full->full"].kind == "none" and plans["full->full"].epochs_perturbed == tuned.epochs_perturbed
    rnd = plans["random-target"]
    assert len(rnd.targets) == 1 and not set(rnd.targets) & {0, 1, 3}
    assert (rnd.kind, rnd.alpha, rnd.lr) == (tuned.kind, tuned.alpha, tuned.lr)


def test_paper_curated_phase_excludes_every_sample_with_an_uncertain_prototype(ctx, monkeypatch):
    """The curated epoch must see exactly the fit samples that contain no target."""
    context, _ = ctx
    data = context.data
    targets = (0, 3)
    seen = []
    import i2x.finetune as ft

    real = ft.train_step

    def spy(model, optimizer, xb, yb):
        seen.append(len(yb))
        return real(model, optimizer, xb, yb)

    monkeypatch.setattr(ft, "train_step", spy)
    model = context.fresh_model()
    finetune(model, data, context.assignment, Plan("drop", 1.0, targets, 1, 0, 0.001), context.config, 0, torch.device("cpu"))
    clean = int((~contains(context.assignment[data.fit_idx], targets)).sum())
    assert sum(seen) == clean < len(data.fit_idx)


def test_a_short_study_then_controls_and_summary(ctx, tmp_path):
    context, _ = ctx
    study = open_study("unit", f"sqlite:///{tmp_path}/optuna.db", context.config)
    run_study(study, context)
    finished = [t for t in study.trials if t.state.name in ("COMPLETE", "PRUNED")]
    assert len(finished) == 3
    again = open_study("unit", f"sqlite:///{tmp_path}/optuna.db", context.config)  # load_if_exists
    run_study(again, context)
    assert len(again.trials) == 3  # already done: nothing more runs
    best = max((t for t in study.trials if t.state.name == "COMPLETE"), key=lambda t: t.values[0])
    plans = strategy_plans(plan_from_params(best.params, context), context, 0.3, 0)
    from i2x.tuning import evaluate_strategies

    results = evaluate_strategies(context, plans, 2, [(0, 1)])
    summary = summarize(results, plans, "bar<->bar+mark", {"number": best.number})
    assert set(summary["strategies"]) == {"tuned", "paper", "full->full", "random-target"}
    assert all(len(r["seeds"]) == 2 for r in summary["strategies"].values())
    assert summary["strategies"]["full->full"]["paired_accuracy_diff_mean"] == 0.0
    assert summary["verdict"]["text"].startswith(("GAIN", "NO GAIN"))
    assert "| tuned |" in summary_markdown(summary)


def test_verdict_requires_beating_both_controls_beyond_spread():
    plans = {n: Plan("none", 0.0, (), 1, 1, 0.01) for n in ("tuned", "paper", "full->full", "random-target")}

    def runs(accs):
        return [{"accuracy": a, "confusions": {"a<->b": 10}, "seed": i} for i, a in enumerate(accs)]

    clear = summarize({"tuned": runs([0.95, 0.96]), "paper": runs([0.9, 0.9]), "full->full": runs([0.90, 0.91]),
                       "random-target": runs([0.90, 0.92])}, plans, "a<->b", {})
    assert clear["verdict"]["gain"] is True
    within = summarize({"tuned": runs([0.93, 0.93]), "paper": runs([0.9, 0.9]), "full->full": runs([0.90, 0.91]),
                        "random-target": runs([0.88, 0.96])}, plans, "a<->b", {})
    assert within["verdict"]["gain"] is False and "random-target" in within["verdict"]["text"]


def test_objective_prunes_through_the_median_pruner(ctx, tmp_path):
    import optuna

    context, _ = ctx
    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.ThresholdPruner(lower=2.0))  # prune everything
    objective = make_objective(context)
    study.optimize(objective, n_trials=1)
    assert study.trials[0].state.name == "PRUNED"


def test_test_report_counts_pair_confusions(ctx):
    context, _ = ctx
    model = context.fresh_model()
    report = evaluate_on_test(model, context.data, [(0, 1)], torch.device("cpu"))
    assert 0 <= report["accuracy"] <= 1 and set(report["confusions"]) == {"bar<->bar+mark"}


def test_focal_pair_is_the_most_confused_target_pair_under_full_to_full():
    from i2x.tuning import focal_pair

    runs = [{"confusions": {"3<->8": 1, "2<->7": 9}}, {"confusions": {"3<->8": 2, "2<->7": 8}}]
    assert focal_pair({"full->full": runs}) == "2<->7"
    tie = [{"confusions": {"a<->b": 1, "c<->d": 1}}]
    assert focal_pair({"full->full": tie}) == "a<->b"
