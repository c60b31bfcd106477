"""The stage runs of ``i2x/runs/`` in process: no subprocess, no ``mlflow run``. Each module
runs the smoke config against a private MLflow store (the ``mlflow_store`` fixture), and the
next one reads what the last one wrote through :mod:`i2x.runs.artifacts`."""

from __future__ import annotations

import html
from pathlib import Path

import mlflow
import mlflow.pytorch
import numpy as np
import pytest

from i2x.cli import build_parser
from i2x.explanation.document import validate
from i2x.runs import artifacts


def _args(*argv: str):
    return build_parser().parse_args(list(argv))


def _download(run_id: str, path: str, dst: Path) -> Path:
    return Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=path, dst_path=str(dst)))


@pytest.fixture
def trained(mlflow_store, tmp_path, monkeypatch):
    from i2x.runs.train import train_run

    monkeypatch.setenv("I2X_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    work = f"work_dir={tmp_path / 'work'}"
    return train_run(_args("train", "--config", "smoke", "--overrides", work)), work


def test_train_then_explain_then_report_in_process(trained, tmp_path, capsys):
    from i2x.runs.explain import explain_run
    from i2x.runs.report import report_run

    train_id, work = trained
    client = mlflow.MlflowClient()
    train = client.get_run(train_id)
    assert train.info.status == "FINISHED" and train.data.tags["i2x.stage"] == "train"
    assert sum(a.path.endswith(".pt") for a in client.list_artifacts(train_id, "checkpoints")) >= 3

    explain_id = explain_run(_args("explain", "--run-id", train_id, "--overrides", work))
    run = client.get_run(explain_id)
    assert run.info.status == "FINISHED" and run.data.tags["i2x.train_run_id"] == train_id
    doc = artifacts.read_explanation(_download(explain_id, artifacts.EXPLANATION, tmp_path / "a"))
    validate(doc)
    assert doc["run"]["train_run_id"] == train_id and len(doc["checkpoints"]) == len(artifacts.read_maps(_download(explain_id, artifacts.MAPS, tmp_path / "a"))["steps"])

    # the same checkpoints and explain config again: the finished analysis is reused, the document is the same
    again = explain_run(_args("explain", "--run-id", train_id, "--overrides", work))
    assert again != explain_id and "reusing the finished analysis" in capsys.readouterr().out
    assert artifacts.read_explanation(_download(again, artifacts.EXPLANATION, tmp_path / "b")) == doc

    index = report_run(_args("report", "--run-id", explain_id, "--out", str(tmp_path / "report")))
    page = index.read_text()
    assert index == tmp_path / "report" / "index.html" and "<title>I2X explanation" in page
    assert all(html.escape(name) in page for name in doc["classes"])  # the page speaks of this run's classes
    # one meaning of "finding": the headline's count is the run's n_findings metric (issue 24)
    from i2x.reporting.claims import findings_stated

    run = mlflow.MlflowClient().get_run(explain_id)
    assert run.data.metrics["n_findings"] == len(findings_stated(doc))
    # the training run's evaluation leads the details, in the regenerated report and in the run's own
    assert '<h2>How the model does on the test set</h2>' in page and "Test confusion matrix" in page
    logged = _download(explain_id, "report/index.html", tmp_path / "c").read_text()
    assert '<h2>How the model does on the test set</h2>' in logged


@pytest.mark.slow
def test_tune_then_its_report_in_process(trained, tmp_path):
    from i2x.runs.explain import explain_run
    from i2x.runs.report import report_run
    from i2x.runs.tune import tune_run

    train_id, work = trained
    explain_id = explain_run(_args("explain", "--run-id", train_id, "--overrides", work))
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    tune_id = tune_run(_args("tune", "--run-id", explain_id, "--storage", storage, "--overrides", work))
    client = mlflow.MlflowClient()
    run = client.get_run(tune_id)
    assert run.info.status == "FINISHED" and run.data.tags["i2x.stage"] == "tune"
    summary = artifacts.read_tune_summary(_download(tune_id, artifacts.TUNE_SUMMARY, tmp_path / "t"))
    assert summary["study"]["n_trials"] >= 3 and "full->full" in summary["strategies"]
    trials = client.search_runs([run.info.experiment_id], f"tags.mlflow.parentRunId = '{tune_id}'")
    assert len(trials) == summary["study"]["n_trials"]
    index = report_run(_args("report", "--run-id", tune_id, "--out", str(tmp_path / "tune-report")))
    assert summary["verdict"]["text"].split(":")[0].replace(">", "&gt;") in index.read_text()  # the verdict, HTML-escaped


def test_the_trained_model_is_an_mlflow_model_that_predicts_like_its_checkpoint(mlflow_store, tmp_path, monkeypatch):
    """Issue 24: the train run logs its model with mlflow.pytorch (signature, input example,
    class names) and, when asked, registers a version; loaded back through pyfunc it predicts
    the same classes as the final checkpoint."""
    import numpy as np
    import torch

    from i2x.platform.config_io import load_config
    from i2x.platform.mlflow_model import load_pyfunc
    from i2x.runs.train import TAG_MODEL_URI, train_run
    from i2x.training.batches import to_float
    from i2x.training.checkpoints import list_checkpoints, model_from_checkpoint, read_checkpoint
    from i2x.training.data import load_data

    monkeypatch.setenv("I2X_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    work = tmp_path / "work"
    run_id = train_run(_args("train", "--config", "smoke", "--overrides", f"work_dir={work},train.register_as=smoke-cnn"))
    client = mlflow.MlflowClient()
    uri = client.get_run(run_id).data.tags[TAG_MODEL_URI]
    versions = client.search_model_versions("name='smoke-cnn'")
    assert [v.run_id for v in versions] == [run_id]
    info = mlflow.models.get_model_info(uri)
    assert info.signature is not None and info.metadata["classes"] == ["bar", "bar+mark", "column", "diagonal"]
    config = load_config("smoke", {"work_dir": str(work)})
    data = load_data(config.data, config.seed, config.plant)
    x = to_float(data.test_x[:64])
    final = list_checkpoints(next(work.glob("train-*")))[-1]
    with torch.no_grad():
        expected = model_from_checkpoint(read_checkpoint(final), str(final)).eval()(x).argmax(1).numpy()
    for loaded in (uri, f"models:/smoke-cnn/{versions[0].version}"):
        got = np.asarray(load_pyfunc(loaded).predict(x.numpy())).argmax(1)
        assert np.array_equal(got, expected)
    assert not torch.equal(torch.from_numpy(expected), torch.zeros(64, dtype=torch.long))  # a real prediction, not a constant
    # and back as the module (issue 43: MLflow 3's default torch.export graph raised NotImplementedError on .eval())
    module = mlflow.pytorch.load_model(uri)
    assert isinstance(module, torch.nn.Module) and module.eval() is module
    with torch.no_grad():
        assert np.array_equal(module(x).argmax(1).numpy(), expected)

    # explain and tune accept the model's URI: version, alias, latest or the logged model's id
    from i2x.platform.errors import I2XError
    from i2x.runs.artifacts import resolve_run
    from i2x.runs.explain import explain_run

    client.set_registered_model_alias("smoke-cnn", "champion", versions[0].version)
    for ref in ("models:/smoke-cnn/1", "models:/smoke-cnn@champion", "models:/smoke-cnn/latest", uri):
        assert resolve_run(ref, "train") == run_id
    with pytest.raises(I2XError, match="has no FINISHED explain run: i2x explain --run-id models:/smoke-cnn/1 first"):
        resolve_run("models:/smoke-cnn/1", "explain")
    explain_id = explain_run(_args("explain", "--run-id", "models:/smoke-cnn@champion", "--overrides", f"work_dir={work}"))
    assert client.get_run(explain_id).data.tags["i2x.train_run_id"] == run_id
    assert resolve_run("models:/smoke-cnn/latest", "explain") == explain_id
    with pytest.raises(I2XError, match="no model 'models:/smoke-cnn/7'"):
        resolve_run("models:/smoke-cnn/7", "train")


def test_a_train_run_logs_its_evaluation(trained):
    """The confusion matrix (table and figure), the most-confused examples and the accuracy per
    class are on every train run."""
    import json

    train_id, _ = trained
    client = mlflow.MlflowClient()
    names = {a.path for a in client.list_artifacts(train_id, "evaluation")}
    assert {"evaluation/confusion.json", "evaluation/confusion.png", "evaluation/most_confused.png"} <= names
    table = json.loads(mlflow.artifacts.load_text(f"runs:/{train_id}/evaluation/confusion.json"))
    confusion = np.array(table["confusion"])
    assert table["classes"] == ["bar", "bar+mark", "column", "diagonal"] and confusion.shape == (4, 4)
    metrics = client.get_run(train_id).data.metrics
    assert metrics["class_accuracy/bar+mark".replace("+", "_")] == confusion[1, 1] / confusion[1].sum()
    assert abs(metrics["test_accuracy"] - np.trace(confusion) / confusion.sum()) < 1e-9
