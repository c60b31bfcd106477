"""``i2x doctor`` (issue 23): each invariant is seen to hold on a healthy store and to break on
the fault that breaks it: a holder killed by SIGKILL, a child left RUNNING, an artifact cut
short or altered, a trial whose worker died, a checkpoint cut short."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

from i2x.runs.doctor import doctor

from .conftest import ROOT, cli_env

# A stage-like process: opens a run on a work folder, logs an artifact, then waits to be killed.
HOLD = """
import sys, time
from pathlib import Path
from i2x.platform import tracking
with tracking.open_run("held", {tracking.TAG_STAGE: "train"}, local=Path(sys.argv[1]).resolve()) as run:
    print(run.info.run_id, flush=True)
    time.sleep(600)
"""


def _finished_run(tmp_path: Path) -> str:
    from i2x.platform import tracking

    (tmp_path / "out").mkdir(exist_ok=True)
    for name, text in (("a.json", '{"x": 1}'), ("b.txt", "hello " * 100)):
        (tmp_path / "out" / name).write_text(text)
    with tracking.open_run("finished", {tracking.TAG_STAGE: "explain"}, local=(tmp_path / "work-f").resolve()) as run:
        tracking.log_artifact(tmp_path / "out" / "a.json", "explanation")
        tracking.log_artifact(tmp_path / "out" / "b.txt")
        tracking.log_text("k: v\n", "config/resolved.yaml")
    return str(run.info.run_id)


def _artifact_file(run_id: str, path: str) -> Path:
    import mlflow

    root = mlflow.MlflowClient().get_run(run_id).info.artifact_uri.removeprefix("file://")
    return Path(root) / path


def test_a_healthy_run_passes_and_a_damaged_artifact_is_a_violation(mlflow_store, tmp_path):
    run_id = _finished_run(tmp_path)
    found = doctor()
    assert found.violations == [] and found.checks == 3, (found.violations, found.checks)  # the three logged artifacts
    cut = _artifact_file(run_id, "explanation/a.json")
    cut.write_text('{"x"')  # cut short
    altered = _artifact_file(run_id, "b.txt")
    altered.write_text("HELLO " * 100)  # same size, other bytes
    found = doctor()
    assert found.violations == [f"run {run_id} (explain): artifact explanation/a.json has 4 bytes, recorded 8"], found.violations
    found = doctor(verify=True)
    assert found.violations == [f"run {run_id} (explain): artifact b.txt differs from its recorded SHA-256",
                                f"run {run_id} (explain): artifact explanation/a.json has 4 bytes, recorded 8"], found.violations
    _artifact_file(run_id, "i2x-manifest.json").unlink()
    assert doctor().violations == [f"run {run_id} (explain) is FINISHED without i2x-manifest.json: it did not record what it logged"]


def test_a_report_regenerated_into_a_finished_run_keeps_its_manifest_true(mlflow_store, tmp_path):
    from i2x.platform import tracking

    run_id = _finished_run(tmp_path)
    (tmp_path / "out" / "a.json").write_text('{"x": 2, "y": 3}')
    tracking.log_artifacts_to(run_id, [tmp_path / "out" / "a.json"], "explanation")  # what `i2x report --run-id` does
    found = doctor(verify=True)
    assert found.violations == [] and found.checks == 3, found.violations


def test_a_run_whose_holder_was_killed_is_a_violation_until_the_next_holder_closes_it(mlflow_store, tmp_path):
    import mlflow

    from i2x.platform import tracking

    work = tmp_path / "work-h"
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(work)], env=cli_env(tmp_path), cwd=ROOT, stdout=subprocess.PIPE, text=True)
    run_id = proc.stdout.readline().strip()
    assert doctor().violations == []  # alive: RUNNING is true
    proc.kill()
    proc.wait(timeout=30)
    found = doctor()
    assert len(found.violations) == 1 and found.violations[0].startswith(f"run {run_id} (train) is RUNNING but its holder ("), found.violations
    with tracking.open_run("again", {tracking.TAG_STAGE: "train"}, local=work.resolve()):
        pass
    assert mlflow.MlflowClient().get_run(run_id).info.status == "KILLED"
    assert doctor().violations == []


def test_a_child_left_running_under_an_ended_parent_is_a_violation(mlflow_store, tmp_path):
    import mlflow

    from i2x.platform import tracking
    from i2x.platform.process import holder

    client = mlflow.MlflowClient()
    with tracking.open_run("parent", {tracking.TAG_STAGE: "tune"}) as parent:
        child = client.create_run(parent.info.experiment_id, tags={tracking.TAG_PARENT: parent.info.run_id, tracking.TAG_HOLDER: holder(),
                                                                     tracking.TAG_STAGE: "tune-trial"})
    found = doctor()
    assert found.violations == [f"run {child.info.run_id} (tune-trial) is RUNNING under parent {parent.info.run_id}, which ended FINISHED"]
    client.set_terminated(child.info.run_id, status="KILLED")
    assert doctor().violations == []


def test_a_trial_whose_worker_died_is_a_violation(tmp_path):
    import optuna

    storage = f"sqlite:///{tmp_path}/optuna.db"
    study = optuna.create_study(study_name="s", storage=storage)
    trial = study.ask()
    dead = subprocess.run([sys.executable, "-c", "from i2x.platform.process import holder; print(holder())"], capture_output=True,
                          text=True, env=cli_env(tmp_path), cwd=ROOT, check=True).stdout.strip()
    trial.set_user_attr("i2x.holder", dead)
    found = doctor(store_checks=False, storage=storage)
    assert found.violations == [f"study s: trial 0 is RUNNING but its worker ({dead}) is gone"]
    study.tell(trial, 1.0)
    assert doctor(store_checks=False, storage=storage).violations == []


def test_a_checkpoint_cut_short_is_a_violation(smoke_run, tmp_path):
    import shutil

    _, _, result = smoke_run
    work = tmp_path / "work"
    shutil.copytree(Path(result.folder), work / "train-x")
    found = doctor(store_checks=False, work=work)
    assert found.violations == [] and found.checks >= 3
    last = sorted((work / "train-x").glob("ckpt-*.pt"))[-1]
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])
    assert doctor(store_checks=False, work=work).violations == [f"checkpoint {last} is not a whole file"]


def test_the_command_prints_each_violation_and_exits_1(tmp_path):
    import mlflow
    import optuna

    mlflow.MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db").search_experiments()  # the (empty) tracking store doctor reads
    storage = f"sqlite:///{tmp_path}/optuna.db"
    study = optuna.create_study(study_name="s", storage=storage)
    study.ask().set_user_attr("i2x.holder", "nohost 1 1")  # another host's worker: not visible from here
    study.ask().set_user_attr("i2x.holder", f"{socket.gethostname()} 1 999999999999")  # pid 1, but started at another time
    out = subprocess.run([sys.executable, "-m", "i2x.cli", "doctor", "--storage", storage], env=cli_env(tmp_path), cwd=ROOT,
                         capture_output=True, text=True)
    assert out.returncode == 1, out.stderr[-800:]
    lines = out.stdout.splitlines()
    assert lines[0].startswith("VIOLATION  study s: trial 1 is RUNNING but its worker (") and lines[1] == (
        "cannot tell  study s: trial 0 is RUNNING with a worker this host cannot see"), lines
    assert lines[-1].startswith("i2x doctor: 2 checks over sqlite:///") and lines[-1].endswith(": 1 violation(s), 1 not verifiable here"), lines


def test_a_manifest_cut_short_is_a_violation_not_a_traceback(mlflow_store, tmp_path):
    """Issue 44: a manifest cut short gave a JSONDecodeError traceback."""
    run_id = _finished_run(tmp_path)
    manifest = _artifact_file(run_id, "i2x-manifest.json")
    manifest.write_text(manifest.read_text()[:20])
    found = doctor()
    assert found.violations == [f"run {run_id} (explain): i2x-manifest.json is damaged (JSONDecodeError): what the run logged "
                                "cannot be checked"], found.violations


def test_doctor_creates_nothing_where_there_is_no_store(tmp_path):
    """Issue 44: doctor on a store, a storage or a folder that is not there said "0 violations"
    or created them; it only reads, so each is one line, exit 2, and nothing is created."""
    env = cli_env(tmp_path, MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path}/missing/mlflow.db")
    out = subprocess.run([sys.executable, "-m", "i2x.cli", "doctor"], env=env, cwd=tmp_path, capture_output=True, text=True)
    assert out.returncode == 2 and out.stderr.strip().startswith("i2x: error: no tracking store at "), out.stderr
    assert not (tmp_path / "missing").exists()
    import mlflow

    mlflow.MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db").search_experiments()  # a store that exists
    env = cli_env(tmp_path)
    out = subprocess.run([sys.executable, "-m", "i2x.cli", "doctor", "--storage", f"sqlite:///{tmp_path}/new/optuna.db"], env=env,
                         cwd=tmp_path, capture_output=True, text=True)
    assert out.returncode == 2 and "no Optuna storage at" in out.stderr and not (tmp_path / "new").exists(), out.stderr


def test_repair_ends_what_no_process_can_end_and_leaves_the_rest(mlflow_store, tmp_path):
    """``--repair``: a run whose holder died and an orphan under an ended parent become KILLED
    (tagged ``i2x.closed_by: doctor``), a trial whose worker died FAIL; a run held by a live
    process stays RUNNING; afterwards no violation is left."""
    import mlflow
    import optuna

    from i2x.platform import tracking
    from i2x.platform.process import holder

    client = mlflow.MlflowClient()
    experiment = mlflow.set_experiment("i2x").experiment_id
    dead = subprocess.run([sys.executable, "-c", "from i2x.platform.process import holder; print(holder())"], capture_output=True,
                          text=True, env=cli_env(tmp_path), cwd=ROOT, check=True).stdout.strip()
    gone = client.create_run(experiment, tags={tracking.TAG_HOLDER: dead, tracking.TAG_STAGE: "train"})
    parent = client.create_run(experiment)
    client.set_terminated(parent.info.run_id, "KILLED")
    orphan = client.create_run(experiment, tags={tracking.TAG_PARENT: parent.info.run_id, tracking.TAG_STAGE: "train"})
    alive = client.create_run(experiment, tags={tracking.TAG_HOLDER: holder(), tracking.TAG_STAGE: "explain"})
    storage = f"sqlite:///{tmp_path}/optuna.db"
    study = optuna.create_study(study_name="s", storage=storage)
    study.ask().set_user_attr("i2x.holder", dead)
    out = subprocess.run([sys.executable, "-m", "i2x.cli", "doctor", "--storage", storage, "--repair"], env=cli_env(tmp_path),
                         cwd=tmp_path, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    repaired = [line for line in out.stdout.splitlines() if line.startswith("REPAIRED")]
    assert len(repaired) == 3 and out.stdout.splitlines()[-1].endswith(": 0 violation(s), 0 not verifiable here"), out.stdout
    for run in (gone, orphan):
        got = client.get_run(run.info.run_id)
        assert got.info.status == "KILLED" and got.data.tags["i2x.closed_by"] == "doctor"
    assert client.get_run(alive.info.run_id).info.status == "RUNNING"
    assert [t.state.name for t in optuna.load_study(study_name="s", storage=storage).trials] == ["FAIL"]
