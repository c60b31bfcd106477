"""Tune acting on a planted mark through the product's stages, in process (issue 22): its own
file, so that the two test workers run it beside tests/test_repair.py (--dist loadfile)."""

from pathlib import Path

import numpy as np
import pytest


@pytest.mark.slow
def test_tune_acts_on_the_planted_mark_end_to_end(mlflow_store, tmp_path, monkeypatch):
    """The product's path, in process: train MNIST with the mark on 95% of the 7s, explain it, and
    tune acts on the report's lead shortcut check. The tune run holds the summary with every
    baseline, a verdict, one trial run per trial, the report that leads with the group table,
    the picture of what changed, and the repaired model as an MLflow Model."""
    import mlflow

    from i2x.platform.mlflow_model import load_pyfunc
    from i2x.runs import artifacts
    from i2x.runs.explain import explain_run
    from i2x.runs.train import TAG_MODEL_URI, train_run
    from i2x.runs.tune import tune_run

    from .conftest import MNIST_MARK, MNIST_SMALL
    from .test_runs import _args, _download

    monkeypatch.chdir(tmp_path)
    small = {**MNIST_SMALL, **MNIST_MARK, "plant.rho": 0.95, "work_dir": str(tmp_path / "work"), "tune.n_trials": 6, "tune.seeds": 1,
             "tune.epoch_samples": 1500}
    ov = ",".join(f"{k}={v}".replace(" ", "") for k, v in small.items())
    train_id = train_run(_args("train", "--dataset", "mnist", "--overrides", ov))
    explain_id = explain_run(_args("explain", "--run-id", train_id, "--overrides", ov))
    tune_id = tune_run(_args("tune", "--run-id", explain_id, "--storage", f"sqlite:///{tmp_path / 'optuna.db'}", "--overrides", ov))
    summary = artifacts.read_tune_summary(_download(tune_id, artifacts.TUNE_SUMMARY, tmp_path / "s"))
    assert summary["finding"]["class_name"] == "7" and summary["groups_source"] == "plant"
    assert {"before", "erm", "jtt", "dfr", "oracle"} <= set(summary["strategies"])
    client = mlflow.MlflowClient()
    run = client.get_run(tune_id)
    assert run.info.status == "FINISHED" and run.data.tags["i2x.verdict"]
    trials = client.search_runs([run.info.experiment_id], f"tags.mlflow.parentRunId = '{tune_id}'")
    assert len(trials) == summary["study"]["n_trials"] == 6
    page = _download(tune_id, "report/index.html", tmp_path / "r").read_text()
    assert page.index("Did the repair help?") < page.index("Verdicts")
    names = {Path(a.path).name for a in client.list_artifacts(tune_id, "tuning")}
    assert {"summary.json", "summary.md", "repair.png"} <= names
    # 95% of the 7s marked: the model leans on the mark (worst group, marked non-7s read as 7,
    # far below average) and a label-free strategy passes the do-no-harm guard and lifts the
    # worst group on the test split (seen with the earlier mean-filled held-out set: i2x-dfr 84%
    # against 43% before, 42% ERM, 33% JTT, 77% DFR with the true groups; it passes with tune's
    # judging set now, the cue pasted only; every 7 marked, as before, left nothing to choose once
    # the environment's packages moved: the guard declined all three)
    chosen = summary["chosen_strategy"]
    rows = summary["strategies"]
    assert chosen in ("i2x-augment", "i2x-groups", "i2x-dfr"), chosen
    assert rows[chosen]["worst_mean"] > rows["before"]["worst_mean"] + 0.10 and rows[chosen]["worst_mean"] > rows["erm"]["worst_mean"]
    # the repair costs at most 5 points of accuracy (it may gain: the test split carries the mark on half of every class)
    assert rows[chosen]["accuracy_mean"] > rows["before"]["accuracy_mean"] - 0.05
    assert "changed.png" in names and run.data.tags["i2x.model_strategy"] == chosen
    # the repaired model is evaluated as a trained one is (issue 24): confusion matrix, groups
    evaluated = {Path(a.path).name for a in client.list_artifacts(tune_id, "evaluation")}
    assert {"confusion.json", "confusion.png", "most_confused.png", "groups.json"} <= evaluated, evaluated
    per_class = [v for k, v in run.data.metrics.items() if k.startswith("class_accuracy/")]
    assert len(per_class) == 10 and 0 <= run.data.metrics["worst_group_accuracy"] <= min(per_class), sorted(run.data.metrics)
    model = load_pyfunc(run.data.tags[TAG_MODEL_URI])
    assert model.predict(np.zeros((2, 1, 28, 28), dtype=np.float32)).shape == (2, 10)
    # the repaired model has no checkpoints to explain: its URI is refused in one line
    from i2x.platform.errors import I2XError
    from i2x.runs.artifacts import resolve_run

    with pytest.raises(I2XError, match=f"was logged by tune run {run.info.run_id}, not by an i2x training run"):
        resolve_run(run.data.tags[TAG_MODEL_URI], "explain")
