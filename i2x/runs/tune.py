"""The tune stage run: the Optuna study of targeted fine-tuning, its controls and report."""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import torch

from i2x.platform import tracking, trial_runs
from i2x.platform.config_io import config_from_dict
from i2x.platform.errors import I2XError
from i2x.platform.process import scratch_dir
from i2x.platform.secrets import redact
from i2x.runs.artifacts import TUNE_SUMMARY, resolve_run
from i2x.runs.runconfig import run_config
from i2x.training.checkpoints import atomic_write_text, check_data_fits


def _explain_inputs(explain_run_id: str, args: argparse.Namespace, scratch: Path, config_dict: dict | None = None):  # noqa: ANN202
    """The explain run's document, the training run's final checkpoint and the run config:
    what tune reads before it decides what to do (checked before any run opens)."""
    from i2x.runs.artifacts import EXPLANATION, read_explanation
    from i2x.training.checkpoints import read_checkpoint

    run = tracking.get_run(explain_run_id)
    train_run_id = run.data.tags.get(tracking.TAG_TRAIN_RUN, "")
    if run.data.tags.get(tracking.TAG_STAGE) != "explain" or not train_run_id:
        raise I2XError(f"run {explain_run_id} is not an i2x explain run of a tracked training run; pass the explain run id")
    if run.info.status != "FINISHED":
        raise I2XError(f"explain run {explain_run_id} is {run.info.status}, not FINISHED: its artifacts may be incomplete; "
                       "rerun explain (it resumes) and tune from the finished run")
    doc = read_explanation(tracking.download_artifacts(explain_run_id, EXPLANATION, scratch))
    checkpoints = sorted(p for p in tracking.list_artifacts(train_run_id, "checkpoints") if p.endswith(".pt"))
    final = read_checkpoint(tracking.download_artifacts(train_run_id, checkpoints[-1], scratch))
    config = config_from_dict(config_dict) if config_dict else run_config(args, config_from_dict(final["config"]))
    return doc, final, checkpoints, config, train_run_id


def _tune_context(explain_run_id: str, args: argparse.Namespace, scratch: Path, config_dict: dict | None = None, inputs=None):  # noqa: ANN001, ANN202
    """Everything a trial needs, rebuilt from an explain run (the same in every worker)."""
    from i2x.runs.artifacts import CENTERS, read_prototypes
    from i2x.training.checkpoints import model_from_checkpoint
    from i2x.training.data import load_data
    from i2x.training.loop import resolve_device
    from i2x.training.models import build_model
    from i2x.tuning.study import TuneContext, assign_images

    doc, final, checkpoints, config, _ = inputs or _explain_inputs(explain_run_id, args, scratch, config_dict)
    last = checkpoints[-1]
    protos = read_prototypes(tracking.download_artifacts(explain_run_id, CENTERS, scratch))
    data = load_data(config.data, config.seed, config.plant)
    check_data_fits(final, data, config)
    device = resolve_device(config.train.device)
    model = model_from_checkpoint(final, last).to(device)
    cache = Path(config.work_dir) / f"assignment-{explain_run_id}.pt"
    if cache.is_file():
        assignment = torch.load(cache, weights_only=True)
    else:
        from i2x.training.checkpoints import save_checkpoint

        assignment = assign_images(model, doc["run"]["target_layer"], data.train_x, protos, config.explain.batch_size, device)
        save_checkpoint(cache, assignment)  # atomic
    meta = final["data"]

    def build() -> torch.nn.Module:
        return build_model(config.model, meta["channels"], len(meta["classes"]), meta["mean"], meta["std"])

    ctx = TuneContext(config=config, data=data, build=build, state=final["model"], assignment=assignment,
                      scores=doc["scores"], device=device, background=doc.get("background", []), protos=protos,
                      target_layer=doc["run"]["target_layer"])
    return ctx, doc


def _track(parent_run_id: str):  # noqa: ANN202
    import contextlib

    @contextlib.contextmanager
    def track(trial, plan):  # noqa: ANN001, ANN202
        params = {**trial.params, "targets": list(plan.targets) or "none", "scope": [list(c) for c in plan.scope] or "every class"}
        keys = ("n_affected", "n_dropped", "n_added", "class_counts", "epoch_fraction")
        with trial_runs.trial_run(parent_run_id, trial.number, params, lambda: {k: trial.user_attrs[k] for k in keys if k in trial.user_attrs},
                                study_name=trial.study.study_name) as log_epoch:
            yield log_epoch

    return track


def tune_run(args: argparse.Namespace) -> str:
    """The Optuna study for an explain run, then the controls and the test-set summary."""
    if args.worker:
        return tune_worker(args)
    from i2x.reporting.run_figures import plot_optuna, plot_strategies
    from i2x.tuning.comparison import (
        STRATEGIES,
        final_evaluation,
        study_record,
        summary_markdown,
        verdict_line,
    )
    from i2x.tuning.study import open_study, resolve_storage, run_study

    if not args.run_id:
        raise I2XError("say which explain run to tune from: --run-id EXPLAIN_RUN_ID (or join a study with --worker)")
    args.run_id = resolve_run(args.run_id, "explain")
    scratch = scratch_dir("tune")
    try:
        inputs = _explain_inputs(args.run_id, args, scratch)
        if inputs[3].tune.act_on != "candidates":  # findings, or a prototype the user names (P<k>)
            from i2x.runs.repair import repair_run

            return repair_run(args, inputs, lambda: _tune_context(args.run_id, args, scratch, inputs=inputs)[0], scratch)
        ctx, doc = _tune_context(args.run_id, args, scratch, inputs=inputs)
        config = ctx.config
        from i2x.runs.repair import study_key

        key = study_key(doc, config)  # content, not run ids: a rerun resumes the same study
        name = args.study or config.tune.study_name or f"i2x-{config.data.name}-{key}"
        url = resolve_storage(args.storage or config.tune.storage)
        tags = {tracking.TAG_STAGE: "tune", tracking.TAG_DATASET: config.data.name, tracking.TAG_MODEL: config.model.name,
                "i2x.explain_run_id": args.run_id, "optuna.study_name": name, "optuna.storage": redact(url)}
        local = Path(config.work_dir) / f"tune-{config.data.name}-{key}"
        from i2x.tuning.study import storage_for

        probe = storage_for(url, config.tune.heartbeat_s)  # the storage answers before a run is opened
        if getattr(probe, "engine", None) is not None:
            probe.engine.dispose()
        with tracking.open_run(f"tune {config.data.name} {config.model.name}", tags, local=local.resolve()) as parent:
            tracking.log_params(config.flat())
            study = open_study(name, url, config)
            study.set_user_attr("explain_run_id", args.run_id)
            study.set_user_attr("mlflow_parent_run_id", parent.info.run_id)
            study.set_user_attr("mlflow_run_url", tracking.where_to_look(parent.info.experiment_id, parent.info.run_id)[1])
            study.set_user_attr("what", f"I2X-guided fine-tuning of {config.data.name} {config.model.name} from explain run {args.run_id}: "
                                        "each trial perturbs the training images of the prototypes it targets, fine-tunes, and reports "
                                        "the validation accuracy (maximised) and the focal pair's validation confusions (minimised)")
            study.set_user_attr("config", config.to_dict())
            run_study(study, ctx, _track(parent.info.run_id))
            # after a killed run: its trials move under this run; the killed trial's run ends KILLED
            trial_runs.adopt_trials(parent.info.experiment_id, name, parent.info.run_id, {t.number: t.state.name for t in study.trials})
            summary = final_evaluation(study, ctx, cache=local / "controls.json")
            summary["study"] = study_record(study, url)
            text = summary_markdown(summary)
            out = local / "tuning"  # kept locally: a failed upload loses nothing
            out.mkdir(parents=True, exist_ok=True)
            atomic_write_text(local / TUNE_SUMMARY, json.dumps(summary, indent=2, sort_keys=True))
            (out / "summary.md").write_text(f"# I2X-guided fine-tuning: {config.data.name} / {config.model.name}\n\n{text}")
            plot_strategies(summary, list(STRATEGIES), out / "strategies.png")
            optuna_figures = plot_optuna(study, out)
            for path in sorted(out.iterdir()):
                tracking.log_artifact(path, "tuning")
            if config.tune.artifact_store:
                from i2x.tuning.study import upload_study_artifacts

                upload_study_artifacts(study, config.tune.artifact_store, [local / TUNE_SUMMARY, out / "strategies.png"])
            from i2x.reporting.html import tune_report

            tune_report(summary, local / "report", optuna_figures)
            for path in sorted((local / "report").iterdir()):
                tracking.log_artifact(path, "report")
            for strategy, row in summary["strategies"].items():
                key = strategy.replace("->", "_").replace("-", "_").replace(" (1+1)", "_1_1")
                tracking.log_metrics({f"{key}_test_accuracy": row["accuracy_mean"], f"{key}_focal_confusions": row["focal_mean"]})
            verdict = verdict_line(summary)
            tracking.describe_run(tracking.TAG_VERDICT, verdict, local / "report" / "index.html",
                                  f"{verdict}. Study '{name}', {len(study.trials)} trials. Report: report/index.html.")
            print(f"i2x tune: run {parent.info.run_id} FINISHED, study '{name}' ({len(study.trials)} trials)\n\n{text}")
            return parent.info.run_id
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def tune_worker(args: argparse.Namespace) -> str:
    """Join a running study by name: run trials until the study holds ``n_trials``."""
    import optuna

    from i2x.tuning.study import resolve_storage, run_study, storage_for

    if not args.study:
        raise I2XError("--worker needs --study NAME (and --storage URL unless it is the default)")
    url = resolve_storage(args.storage)
    try:
        study = optuna.load_study(study_name=args.study, storage=storage_for(url, 30))
    except KeyError:
        raise I2XError(f"no study '{args.study}' in {redact(url)}; start it with 'i2x tune --run-id ...' first") from None
    attrs = study.user_attrs
    # again with the study's own heartbeat: a killed worker's trial is stale after the grace it was started with
    study = optuna.load_study(study_name=args.study, storage=storage_for(url, int(attrs["config"]["tune"]["heartbeat_s"])))
    scratch = scratch_dir("tune-worker")
    try:
        ctx, _ = _tune_context(attrs["explain_run_id"], args, scratch, config_dict=attrs["config"])
        if attrs.get("act_on") == "findings":  # a repair study: its trials never need JTT's early model
            from i2x.repair.choice import make_objective
            from i2x.repair.finding import Finding
            from i2x.runs.repair import repair_context, track_trials

            rctx = repair_context(ctx, Finding(**attrs["finding"]), ctx.state)
            run_study(study, rctx, objective=make_objective(rctx, track_trials(attrs["mlflow_parent_run_id"])))
        else:
            run_study(study, ctx, _track(attrs["mlflow_parent_run_id"]))
        # a worker killed before this one ended left its trial's run RUNNING: Optuna has failed that trial (its heartbeat
        # stopped), so its run ends KILLED here, whichever worker finishes
        from mlflow.tracking import MlflowClient

        parent = MlflowClient().get_run(attrs["mlflow_parent_run_id"])
        trial_runs.adopt_trials(parent.info.experiment_id, args.study, parent.info.run_id, {t.number: t.state.name for t in study.trials})
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print(f"i2x tune --worker: study '{args.study}' done")
    return attrs["mlflow_parent_run_id"]
