"""The main run (``mlflow run .``): train, explain and tune as child runs, a plan first and where to look last."""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from i2x.platform import tracking
from i2x.platform.config import Config
from i2x.platform.process import UNDER_MAIN
from i2x.platform.progress import doing
from i2x.runs.runconfig import WORK_DIR_ENV, run_config
from i2x.training.loop import resolve_model


def run_main(args: argparse.Namespace) -> None:
    """``mlflow run .``: train, then explain, then tune, each as a child run of this one.

    Children are started with ``mlflow.projects.run(..., env_manager="local")``: this
    process already runs in the project's environment, and an inner run without an
    explicit env manager would try to build a new one (MLflow issues #11849, #6611).
    """
    params = {"dataset": args.dataset, "config": args.config, "data_dir": args.data_dir,
              "seed": args.seed, "overrides": args.overrides}
    root = Path(__file__).resolve().parents[2]  # the project (MLproject)
    def stage(entry_point: str, extra: dict[str, str]) -> str:
        run_id = tracking.run_entry_point(root, entry_point, {**params, **extra})
        tracking.set_tags({f"i2x.{entry_point}_run": run_id})
        return run_id

    from i2x.runs.plan import estimate
    from i2x.training.data import load_data
    from i2x.training.loop import resolve_device

    config = resolve_model(run_config(args))
    plan = estimate(config, load_data(config.data, config.seed, config.plant), resolve_device(config.train.device))
    print("\n".join(plan.lines()), flush=True)
    os.environ[UNDER_MAIN] = "1"  # the stages leave the stop line to this process
    # MLflow starts every stage in the project's folder: the work folder and a SQLite store named relative to the
    # folder main was started in are passed on as absolute paths, so nothing is written into the source checkout
    os.environ[WORK_DIR_ENV] = config.work_dir
    store = tracking.configure()
    if store.startswith("sqlite:///") and not store.startswith("sqlite:////"):
        os.environ["MLFLOW_TRACKING_URI"] = "sqlite:///" + str(Path(store.removeprefix("sqlite:///")).absolute())
        tracking.configure()
    with tracking.open_run(f"main {config.data.name} {config.model.name}", {tracking.TAG_STAGE: "main"}):
        tracking.log_metrics({f"plan_{name}_s": round(s, 1) for name, s in plan.stages.items()}, step=0)
        ids, took = {}, {}
        for name, extra in (("train", {}), ("explain", {"run_id": "train"}), ("tune", {"run_id": "explain"})):
            start = time.perf_counter()
            doing(f"the {name} stage, in its own process")
            ids[name] = stage(name, {k: ids[v] for k, v in extra.items()})
            took[name] = time.perf_counter() - start
            tracking.log_metrics({f"stage_{name}_s": round(took[name], 1)}, step=0)
            if name == "explain" and config.tune.act_on == "findings":
                checks = tracking.get_run(ids[name]).data.metrics.get("n_shortcut_checks", 0)
                print("plan: " + (f"the explanation states {int(checks)} shortcut check(s): tune acts on the first, "
                                  f"~ {plan.stages['tune'] / 60:.0f} min" if checks else
                                  "the explanation states no shortcut check: tune has nothing to act on (seconds)"), flush=True)
        print("stage times (estimate at start -> real): " + ", ".join(
            f"{name} {plan.stages[name] / 60:.1f} -> {took[name] / 60:.1f} min" for name in took), flush=True)
        print(_main_summary(ids, config), flush=True)


def _main_summary(ids: dict[str, str], config: Config) -> str:
    """The end of ``main``: the result in three lines, then where to look. The same lines
    become the parent run's description; its headline metrics and verdict are logged too."""
    runs = {name: tracking.get_run(run_id) for name, run_id in ids.items()}
    train, expl, tune = (runs[n].data for n in ("train", "explain", "tune"))
    accuracy = train.metrics.get("test_accuracy")
    result = [
        f"model: {config.data.name} {config.model.name}, test accuracy {accuracy:.4f}" if accuracy is not None else f"model: {config.data.name} {config.model.name}",
        f"explanation: {expl.tags.get(tracking.TAG_HEADLINE, '(none)')}",
        f"fine-tuning: {tune.tags.get(tracking.TAG_VERDICT, '(none)')}",
    ]
    tracking.log_metrics({k: v for k, v in {"test_accuracy": accuracy, "n_verified": expl.metrics.get("n_verified"),
                                            "n_findings": expl.metrics.get("n_findings"),
                                            "tuned_test_accuracy": tune.metrics.get("tuned_test_accuracy"),
                                            **{k: v for k, v in tune.metrics.items() if k.endswith("_worst_group_accuracy")},
                                            "full_full_test_accuracy": tune.metrics.get("full_full_test_accuracy")}.items() if v is not None})
    tracking.set_tags({tracking.TAG_HEADLINE: expl.tags.get(tracking.TAG_HEADLINE, ""), tracking.TAG_VERDICT: tune.tags.get(tracking.TAG_VERDICT, ""),
                       tracking.TAG_DESCRIPTION: "  \n".join(result)})
    ui, url = tracking.where_to_look(runs["train"].info.experiment_id)
    storage = tune.tags.get("optuna.storage", "")
    look = [
        f"explain report: {expl.tags.get(tracking.TAG_REPORT, '(not written)')}",
        f"tune report:    {tune.tags.get(tracking.TAG_REPORT, '(not written)')}",
        f"MLflow UI:      {ui}\n                then {url}",
        f"Optuna study:   optuna-dashboard {storage} --host 127.0.0.1 --port 8080   then http://127.0.0.1:8080"
        if storage.startswith(("sqlite", "postgresql", "mysql"))
        else f"Optuna study:   {tune.tags.get('optuna.study_name', '')} in {storage}" if storage
        else "Optuna study:   none (nothing to act on)",
    ]
    return "\ni2x main: done.\n  " + "\n  ".join(result) + "\n\nwhere to look:\n  " + "\n  ".join(look)
