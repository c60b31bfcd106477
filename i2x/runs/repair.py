"""The tune stage when it acts on findings (``tune.act_on: findings``, the default): repair
what the explanation verified, or say in one line that there is nothing to act on."""

from __future__ import annotations

import argparse
import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from i2x.platform import tracking, trial_runs
from i2x.platform.config import Config
from i2x.platform.errors import I2XError
from i2x.platform.secrets import redact
from i2x.runs.artifacts import TUNE_SUMMARY
from i2x.training.checkpoints import atomic_write_text

NOTHING = ("nothing to act on: the explanation states no shortcut check (no cue that the final model needs, that alone turns "
           "other classes' images into its class, and that sits in one place off the objects); its findings are the model's own "
           "evidence for its classes, which tune leaves as they are. The paper's study of uncertain prototypes: "
           "--overrides tune.act_on=candidates")
WHAT_WOULD_ACT = ("Tune repairs a shortcut check: a prototype or a rigid copy the final model needs for one class (occluding it "
                  "hurts beyond matched cells), that alone turns other classes' images into that class when pasted (beyond the "
                  "class's other parts of the same size), and that sits in one place, off the objects. The explanation report lists "
                  "each check with its tests.")


def study_key(doc: dict[str, Any], config: Config) -> str:
    """The explanation's content and the tune config, hashed: a rerun of the same pipeline
    (after a crash or a failed upload) resumes the same study and work folder."""
    stable = {k: v for k, v in doc.items() if k not in doc.get("timestamp_fields", [])}
    return hashlib.sha256((json.dumps(stable, sort_keys=True) + json.dumps(config.to_dict()["tune"], sort_keys=True)).encode()).hexdigest()[:12]


def named_finding(doc: dict[str, Any], k: int, classes: list[str]) -> Any:
    """``tune.act_on=P<k>``: prototype k as the finding, for the class its report row names (a
    shortcut check, a cue worth a look, else a class cue the causal check verified); one line
    when the explanation has no such row, before any run is opened."""
    from i2x.repair.finding import Finding
    from i2x.reporting.claims import shortcut_checks, worth_a_look

    rows = [r for r in shortcut_checks(doc) + worth_a_look(doc, limit=10_000) if r["prototype"] == k]
    cls = rows[0]["class"] if rows else next((d["classes"][0] for d in (doc.get("faithfulness") or {}).get("deletion", [])
                                             if d["prototype"] == k and d["role"] != "uncertain" and d["verified"]), None)
    if cls is None:
        raise I2XError(f"tune.act_on=P{k}: the explanation verified no class cue P{k} (the causal check did not pass it for any class); "
                       "name a prototype the report lists as a shortcut check or under 'Worth a look'")
    where = (doc["prototypes"][k].get("where") or {}).get("region") or "no one place"
    return Finding(k, classes.index(cls), cls, f"P{k} -> {cls} ({where}), chosen by the user with tune.act_on=P{k}")


def _early_state(train_run_id: str, checkpoints: list[str], scratch: Path) -> dict[str, Any]:
    """JTT's early model: the first checkpoint at or after epoch 1 (else the first)."""
    from i2x.training.checkpoints import read_checkpoint

    first = None
    for name in checkpoints[:-1]:
        payload = read_checkpoint(tracking.download_artifacts(train_run_id, name, scratch))
        first = first or payload
        if float(payload.get("epoch", 0)) >= 1.0:
            return payload["model"]
    return (first or read_checkpoint(tracking.download_artifacts(train_run_id, checkpoints[0], scratch)))["model"]


def repair_context(tune_ctx: Any, finding: Any, early_state: dict[str, Any], min_rigid: float = 0.0) -> Any:
    """A :class:`~i2x.repair.context.RepairContext` from the candidate study's context; the
    truth (a plant's marks, a group file) goes only where marked; ``min_rigid``:
    :func:`i2x.repair.finding.copy_floor`."""
    from i2x.repair.context import RepairContext
    from i2x.repair.finding import acting_on
    from i2x.training.groups import groups_of
    from i2x.tuning.study import assign_images

    data, config = tune_ctx.data, tune_ctx.config
    marks = data.test_marks.numpy() if data.test_marks is not None else None
    test_groups = groups_of(config.plant, data.classes, data.test_y.numpy(), marks)
    true_train = None
    if config.plant.kind == "shortcut" and data.train_marks is not None:
        true_train = (2 * data.train_y + (data.train_marks[:, 0] >= 0).long()).numpy()
    def plain(x):  # noqa: ANN001, ANN202
        model = tune_ctx.fresh_model()
        return assign_images(model, tune_ctx.target_layer, x, tune_ctx.protos, config.explain.batch_size, tune_ctx.device)

    finding, assignment, assign = acting_on(finding, data.train_x, data.train_y, tune_ctx.assignment, plain,
                                            config.faithfulness.copy_tolerance, min_rigid)
    return RepairContext(config=config, data=data, build=tune_ctx.build, state=tune_ctx.state, early_state=early_state,
                         assignment=assignment, finding=finding, device=tune_ctx.device, test_groups=test_groups,
                         true_train=true_train, assign=assign)


def track_trials(parent_run_id: str) -> Callable[..., Any]:
    import contextlib

    @contextlib.contextmanager
    def track(trial, strategy):  # noqa: ANN001, ANN202
        def outcome() -> dict[str, Any]:
            from i2x.repair.choice import WITHOUT_FINDING

            return {k: trial.user_attrs.get(k) for k in ("heldout_accuracy", "heldout_worst_i2x_group", WITHOUT_FINDING)}

        with trial_runs.trial_run(parent_run_id, trial.number, dict(trial.params), outcome, study_name=trial.study.study_name):
            yield

    return track


def repair_run(args: argparse.Namespace, inputs: tuple, build_ctx: Callable[[], Any], scratch: Path) -> str:
    """Open the tune run; with no finding, say so and finish; else the repair study, the
    evaluation of every strategy and baseline, the summary, figures and report."""
    from i2x.repair.finding import copy_floor, lead_finding
    from i2x.reporting.claims import copy_checks, shortcut_checks
    from i2x.tuning.study import resolve_storage

    doc, final, checkpoints, config, train_run_id = inputs
    classes = list(final["data"]["classes"])
    if config.tune.act_on == "findings":
        finding = lead_finding(shortcut_checks(doc), copy_checks(doc), classes)
    else:
        finding = named_finding(doc, int(config.tune.act_on[1:]), classes)
    key = study_key(doc, config)
    name = args.study or config.tune.study_name or f"i2x-{config.data.name}-{key}"
    url = resolve_storage(args.storage or config.tune.storage)
    tags = {tracking.TAG_STAGE: "tune", tracking.TAG_DATASET: config.data.name, tracking.TAG_MODEL: config.model.name,
            "i2x.explain_run_id": args.run_id, "i2x.act_on": config.tune.act_on}
    if finding is not None:
        tags |= {"optuna.study_name": name, "optuna.storage": redact(url)}
    local = (Path(config.work_dir) / f"tune-{config.data.name}-{key}").resolve()
    if finding is not None:  # the storage answers before a run is opened (a refusal used to leave a FAILED tune run)
        from i2x.tuning.study import storage_for

        _close(storage_for(url, config.tune.heartbeat_s))
    with tracking.open_run(f"tune {config.data.name} {config.model.name}", tags, local=local) as parent:
        tracking.log_params(config.flat())
        if finding is None:
            return _nothing(parent.info.run_id, local, config, args.run_id, doc)
        from i2x.repair.choice import REPAIR_METRICS, make_objective, seed_trials
        from i2x.tuning.comparison import study_record
        from i2x.tuning.study import open_study, run_study

        rctx = repair_context(build_ctx(), finding, _early_state(train_run_id, checkpoints, scratch),
                              copy_floor(doc, finding, config.explain.shortcut_rigid))
        print(f"i2x tune: acting on {rctx.finding.statement}", flush=True)
        study = open_study(name, url, config, dict.fromkeys(REPAIR_METRICS, "maximize"))
        study.set_user_attr("explain_run_id", args.run_id)
        study.set_user_attr("mlflow_parent_run_id", parent.info.run_id)
        study.set_user_attr("act_on", "findings")
        study.set_user_attr("finding", finding.__dict__)
        study.set_user_attr("config", config.to_dict())
        study.set_user_attr("mlflow_run_url", tracking.where_to_look(parent.info.experiment_id, parent.info.run_id)[1])
        study.set_user_attr("what", f"i2x repair of {config.data.name} {config.model.name}, acting on {rctx.finding.statement}: each trial "
                                    "applies one i2x strategy and reports the accuracy and the worst i2x group on the explanation's "
                                    "held-out set (validation images with the finding moved; both maximised); no group label is read")
        seed_trials(study, rctx)
        run_study(study, rctx, objective=make_objective(rctx, track_trials(parent.info.run_id)))
        trial_runs.adopt_trials(parent.info.experiment_id, name, parent.info.run_id, {t.number: t.state.name for t in study.trials})
        summary = _evaluate(study, rctx, local)
        summary["study"] = study_record(study, url)
        return _publish(parent, summary, rctx, study, local, config)


def _close(storage: Any) -> None:
    engine = getattr(storage, "engine", None)
    if engine is not None:
        engine.dispose()


def _nothing(run_id: str, local: Path, config: Config, explain_run_id: str, doc: dict[str, Any]) -> str:
    from i2x.reporting.claims import findings_stated
    from i2x.reporting.html import repair_report

    explain = tracking.get_run(explain_run_id)
    summary = {"act_on": "findings", "finding": None, "said": NOTHING, "what_would_act": WHAT_WOULD_ACT,
               "explain_run_id": explain_run_id, "explain_report": explain.data.tags.get(tracking.TAG_REPORT, ""),
               "explain_url": tracking.where_to_look(explain.info.experiment_id, explain_run_id)[1],
               "explain_headline": explain.data.tags.get(tracking.TAG_HEADLINE, ""), "findings": findings_stated(doc)}
    local.mkdir(parents=True, exist_ok=True)
    atomic_write_text(local / TUNE_SUMMARY, json.dumps(summary, indent=2, sort_keys=True))
    tracking.log_artifact(local / TUNE_SUMMARY, "tuning")
    index = repair_report(summary, local / "report", {})
    tracking.log_artifact(index, "report")
    tracking.describe_run(tracking.TAG_VERDICT, "nothing to act on", index, NOTHING)
    print(f"i2x tune: {NOTHING}", flush=True)
    print(f"i2x tune: run {run_id} FINISHED ({config.data.name}: no shortcut check, no study)", flush=True)
    return run_id


def _evaluate(study: Any, rctx: Any, local: Path) -> dict[str, Any]:
    from i2x.repair.baselines import JTT_LAMBDAS, available
    from i2x.repair.choice import best_per_strategy, choose_jtt
    from i2x.repair.evaluation import evaluate, random_target, scoring_groups
    from i2x.repair.summary import summarize_repair

    chosen = best_per_strategy(study, rctx)
    chosen |= random_target(chosen)
    path = local / "repair.json"
    cache = json.loads(path.read_text()) if path.is_file() else {}
    if "jtt" in available(rctx):
        chosen["jtt"] = {"params": cache.get("jtt_params") or choose_jtt(rctx, JTT_LAMBDAS)}
        cache["jtt_params"] = chosen["jtt"]["params"]
    chosen |= {"erm": {"params": {}}, "dfr": {"params": {}}, "dfr-classes": {"params": {}}, "oracle": {"params": {}}}
    results = cache.setdefault("results", {})
    groups = scoring_groups(rctx)

    def save() -> None:
        atomic_write_text(path, json.dumps(cache))

    out = evaluate(rctx, chosen, groups, results, save)
    summary = summarize_repair(out, chosen, groups, rctx.finding, rctx.config.tune.ci)
    summary["chosen"] = chosen
    return summary


def _publish(parent: Any, summary: dict[str, Any], rctx: Any, study: Any, local: Path, config: Config) -> str:
    from i2x.repair.summary import changed_examples, repair_markdown, repair_verdict
    from i2x.reporting.html import repair_report
    from i2x.reporting.run_figures import plot_changed, plot_optuna, plot_repair

    out = local / "tuning"
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(local / TUNE_SUMMARY, json.dumps(summary, indent=2, sort_keys=True))
    text = repair_markdown(summary)
    (out / "summary.md").write_text(f"# i2x repair: {config.data.name} / {config.model.name}\n\n{text}")
    figures = {"repair": plot_repair(summary, out / "repair.png")}
    best = summary.get("chosen_strategy")
    if best is not None:
        before, after, captions = changed_examples(rctx, best, summary["chosen"][best]["params"])
        figures["changed"] = plot_changed(before, after, captions, f"What {best} changed ({rctx.finding.statement.split(' (')[0]})",
                                          out / "changed.png")
    if best is not None:  # the repaired model beside the train run's: the registry can hold before and after
        from i2x.platform.mlflow_model import log_model
        from i2x.repair.strategies import run_strategy
        from i2x.runs.train import TAG_MODEL_URI, evaluate_model
        from i2x.training.batches import to_float

        model = run_strategy(rctx, best, summary["chosen"][best]["params"], config.seed)  # seed 0 of the evaluation
        uri = log_model(model, to_float(rctx.data.test_x[:4]).numpy(), rctx.data.classes, register_as=config.train.register_as)
        tracking.set_tags({TAG_MODEL_URI: uri, "i2x.model_strategy": best})
        evaluate_model(config, rctx.data, rctx.test_groups, model, stage="tune")  # the repaired model's confusion matrix and groups
    figures["optuna"] = plot_optuna(study, out)
    for path in sorted(out.iterdir()):
        tracking.log_artifact(path, "tuning")
    tracking.log_artifact(local / TUNE_SUMMARY, "tuning")
    index = repair_report(summary, local / "report", figures)
    for path in sorted((local / "report").iterdir()):
        tracking.log_artifact(path, "report")
    for name, row in summary["strategies"].items():
        key = name.replace("-", "_")
        tracking.log_metrics({f"{key}_worst_group_accuracy": row["worst_mean"], f"{key}_test_accuracy": row["accuracy_mean"]})
    verdict = repair_verdict(summary)
    tracking.describe_run(tracking.TAG_VERDICT, verdict, index, f"{verdict}. Study '{summary['study']['name']}', "
                                                                f"{summary['study']['n_trials']} trials. Report: report/index.html.")
    print(f"i2x tune: run {parent.info.run_id} FINISHED, study '{summary['study']['name']}' ({summary['study']['n_trials']} trials)\n\n{text}",
          flush=True)
    return parent.info.run_id
