import subprocess
import sys

import pytest

from .conftest import ROOT, cli_env


def run_cli(tmp_path, *args, timeout=600):
    return subprocess.run([sys.executable, "-m", "i2x.cli", *args], cwd=tmp_path, env=cli_env(tmp_path), capture_output=True, text=True, timeout=timeout)


def test_help_lists_the_stages(tmp_path):
    out = run_cli(tmp_path, "--help")
    assert out.returncode == 0
    for sub in ("train", "explain", "tune", "report", "services", "main"):
        assert sub in out.stdout


@pytest.mark.slow
def test_mlflow_run_train_entry_point_smoke(tmp_path):
    env = cli_env(tmp_path, I2X_CONFIG_DIR=str(ROOT / "configs"))
    proc = subprocess.run(
        [sys.executable, "-m", "mlflow", "run", str(ROOT), "-e", "train", "-P", "config=smoke",
         "-P", f"overrides=work_dir={tmp_path / 'work'}", "--env-manager", "local"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    import mlflow
    from mlflow.tracking import MlflowClient

    mlflow.set_tracking_uri(env["MLFLOW_TRACKING_URI"])
    client = MlflowClient()
    (run,) = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert run.info.status == "FINISHED"
    ckpts = [a.path for a in client.list_artifacts(run.info.run_id, "checkpoints")]
    assert len([p for p in ckpts if p.endswith(".pt")]) >= 4
    assert "checkpoints/index.json" in ckpts
    assert [a.path for a in client.list_artifacts(run.info.run_id, "config")] == ["config/resolved.yaml"]
    assert len(client.get_metric_history(run.info.run_id, "loss")) >= 3
    assert len(client.get_metric_history(run.info.run_id, "val_accuracy")) >= 4
    tags = run.data.tags
    assert tags["i2x.dataset"] == "synthetic" and tags["i2x.model"] == "cnn" and "mlflow.source.git.commit" in tags
    assert run.data.params["train.epochs"] == "2"



def test_make_run_passes_the_overrides_the_plan_advises():
    """Issue 43: the plan advised overrides that `make run` had no way to pass."""
    out = subprocess.run(["make", "-n", "run", "OVERRIDES=train.epochs=1,tune.seeds=2"], cwd=ROOT, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    line = next(x for x in out.stdout.splitlines() if " run . " in x)
    assert "-P overrides=train.epochs=1,tune.seeds=2" in line, line


HOLDS_NO_RUN = """
import time
import i2x.runs.doctor as doctor
def slow(*args, **kwargs):
    print("ready", flush=True)
    time.sleep(120)
doctor.doctor = slow
from i2x.cli import run
run(["doctor", "--verify"])
"""


def test_a_stop_of_a_command_that_holds_no_run_says_no_run_was_changed(tmp_path):
    """Issue 44: Ctrl-C of `doctor --verify` (or `services up`, `report --out`, a train still
    starting) said "the MLflow run is marked KILLED" where no run existed."""
    import signal

    import mlflow

    mlflow.MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db").search_experiments()
    proc = subprocess.Popen([sys.executable, "-c", HOLDS_NO_RUN], cwd=tmp_path, env=cli_env(tmp_path), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert err.strip().splitlines() == ["i2x: stopped by SIGINT; no MLflow run was open, so none was changed"], err
