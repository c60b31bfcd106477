"""Run lifecycle helpers: a new SQLite store initialised once under a lock, a work-folder
lock released when its holder dies, and stale RUNNING runs closed by the next holder."""

import fcntl
import os
import subprocess
import sys
import time

import pytest

from .conftest import ROOT, cli_env

INIT = "from i2x.platform.tracking import init_store; import mlflow; init_store(); mlflow.MlflowClient().search_experiments(); print('ok')"


def test_three_processes_on_a_new_store_all_get_a_working_store(tmp_path):
    """Without the lock, two of these at once fail in alembic about half the time
    ("Online migration expected to match one row", seen 3 times in 3 tries here)."""
    for attempt in range(3):
        env = cli_env(tmp_path, MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path}/store{attempt}.db")
        procs = [subprocess.Popen([sys.executable, "-c", INIT], env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for _ in range(3)]
        outs = [p.communicate(timeout=120) for p in procs]
        assert [p.returncode for p in procs] == [0, 0, 0], [o[1][-800:] for o in outs]


PLAIN_MLFLOW = "import mlflow; mlflow.MlflowClient().search_experiments(); print('ok')"  # no i2x code: what `mlflow run`'s launcher does


def test_plain_mlflow_processes_on_a_new_store_all_get_a_working_store(tmp_path):
    """The i2x plugin (i2x.platform.mlflow_store) serialises MLflow's own table creation, which
    `mlflow run` reaches before any i2x code. Without it, 3 plain MLflow processes at once
    on a new file failed in 4 of 4 tries here (alembic "Online migration expected to match
    one row", "duplicate column name: step")."""
    from mlflow.tracking._tracking_service.utils import _tracking_store_registry

    from i2x.platform.mlflow_store import sqlite_store

    assert _tracking_store_registry.get_store_builder("sqlite:///x.db") is sqlite_store  # registered by the entry point
    for attempt in range(2):
        env = cli_env(tmp_path, MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path}/plain{attempt}.db")
        procs = [subprocess.Popen([sys.executable, "-c", PLAIN_MLFLOW], env=env, cwd=tmp_path, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for _ in range(3)]
        outs = [p.communicate(timeout=120) for p in procs]
        assert [p.returncode for p in procs] == [0, 0, 0], [o[1][-800:] for o in outs]


def test_the_plugin_leaves_mlflow_start_up_light(tmp_path):
    """MLflow imports the plugin in every process of this environment (server, UI, the
    `mlflow run` launcher): that must not import torch or i2x's stages (it did through the
    package's eager __init__: 3.2 s against 1.3 s for `import mlflow` here)."""
    code = ("import sys, mlflow; from mlflow.tracking._tracking_service.utils import _tracking_store_registry as r; "
            "print(r.get_store_builder('sqlite:///x.db').__module__, sorted(m for m in sys.modules if m == 'torch' or m.startswith('i2x')))")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=cli_env(tmp_path), capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-800:]
    assert out.stdout.split(None, 1) == ["i2x.platform.mlflow_store", "['i2x', 'i2x.platform', 'i2x.platform.mlflow_store']\n"]


@pytest.mark.slow
def test_two_bare_mlflow_runs_on_a_new_store_both_finish(tmp_path):
    """Two `mlflow run` started together on a store file that does not exist yet (no
    `make run`, no init_store before the launcher): both finish."""
    import mlflow

    uri = f"sqlite:///{tmp_path}/fresh.db"
    env = cli_env(tmp_path, MLFLOW_TRACKING_URI=uri, I2X_CONFIG_DIR=str(ROOT / "configs"))
    procs = [subprocess.Popen([sys.executable, "-m", "mlflow", "run", str(ROOT), "-e", "train", "-P", "config=smoke",
                               "-P", f"overrides=work_dir={tmp_path / f'work{i}'},train.epochs=1", "--env-manager", "local"],
                              cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
    outs = [p.communicate(timeout=900) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1][-1500:] for o in outs]
    client = mlflow.MlflowClient(tracking_uri=uri)
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert sorted(r.info.status for r in runs) == ["FINISHED", "FINISHED"]


def test_the_folder_lock_is_released_when_its_holder_is_killed(tmp_path):
    from i2x.platform.process import folder_lock

    folder = tmp_path / "explain-x"
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from pathlib import Path; from i2x.platform.process import folder_lock\n"
        f"with folder_lock(Path({str(folder)!r})):\n    print('held', flush=True); time.sleep(60)")],
        cwd=ROOT, env=cli_env(tmp_path), stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    fd = os.open(tmp_path / ".explain-x.lock", os.O_RDWR)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            raise AssertionError("the lock was free while its holder lived")
        except BlockingIOError:
            pass
    finally:
        os.close(fd)
    holder.kill()
    holder.wait()
    start = time.monotonic()
    with folder_lock(folder):  # the kernel dropped the dead holder's lock: no wait
        assert time.monotonic() - start < 30


def test_the_next_holder_closes_a_dead_runs_record(mlflow_store, tmp_path):
    import mlflow

    from i2x.platform import tracking

    folder = (tmp_path / "train-x").resolve()
    experiment = mlflow.set_experiment("i2x")
    client = mlflow.MlflowClient()
    dead = client.create_run(experiment.experiment_id, tags={tracking.TAG_WORK_DIR: str(folder)})  # as SIGKILL leaves it
    other = client.create_run(experiment.experiment_id, tags={tracking.TAG_WORK_DIR: str(folder) + "-other"})
    with tracking.open_run("train x", {}, local=folder) as run:
        pass
    assert client.get_run(dead.info.run_id).info.status == "KILLED"
    assert client.get_run(dead.info.run_id).data.tags["i2x.closed_by"] == run.info.run_id
    assert client.get_run(other.info.run_id).info.status == "RUNNING"  # another folder's run is not ours to close
    assert client.get_run(run.info.run_id).info.status == "FINISHED"


SLEEPER = """name: sleeper
entry_points:
  main:
    command: "python -c 'import time; time.sleep(120)'"
"""


def test_a_stop_while_mlflow_starts_a_child_stage_ends_the_childs_run_killed(mlflow_store, tmp_path, monkeypatch):
    """Issue 43's window: a Ctrl-C after MLflow created the child stage's run and started its
    process, before the call that does both returned (so before main held a handle on it). The
    child's run must end KILLED and its process stop; before the fix it stayed RUNNING with a
    process nobody waited for."""
    import signal

    import mlflow

    from i2x.platform import tracking

    project = tmp_path / "project"
    project.mkdir()
    (project / "MLproject").write_text(SLEEPER)
    monkeypatch.setenv("PATH", f"{os.path.dirname(sys.executable)}:{os.environ.get('PATH', '')}")  # MLflow's launcher calls `mlflow`
    real = mlflow.projects.run
    started = []

    def stopped_inside(*args, **kwargs):
        submitted = real(*args, **kwargs)
        started.append(submitted)
        os.kill(os.getpid(), signal.SIGINT)  # the stop arrives before the call returns
        time.sleep(0.3)
        return submitted

    monkeypatch.setattr(mlflow.projects, "run", stopped_inside)
    with pytest.raises(KeyboardInterrupt), tracking.open_run("main", {tracking.TAG_STAGE: "main"}) as parent:
        tracking.run_entry_point(project, "main", {})
    client = mlflow.MlflowClient()
    assert client.get_run(parent.info.run_id).info.status == "KILLED"
    child = started[0]
    assert client.get_run(child.run_id).info.status == "KILLED"
    assert child.command_proc.wait(timeout=30) is not None  # its process was stopped, not left sleeping


def test_a_run_left_running_under_an_ended_parent_without_a_holder_is_closed_by_the_next_run(mlflow_store, tmp_path):
    """What an older version left after that window: a child stage's run RUNNING, never held by a
    process, under a main run that ended KILLED. The next run of any stage closes it; a child
    held by a live process, or under a parent still running, is left alone."""
    import mlflow

    from i2x.platform import tracking
    from i2x.platform.process import holder

    experiment = mlflow.set_experiment("i2x")
    client = mlflow.MlflowClient()
    parent = client.create_run(experiment.experiment_id)
    client.set_terminated(parent.info.run_id, status="KILLED")
    orphan = client.create_run(experiment.experiment_id, tags={tracking.TAG_PARENT: parent.info.run_id})
    held = client.create_run(experiment.experiment_id, tags={tracking.TAG_PARENT: parent.info.run_id, tracking.TAG_HOLDER: holder()})
    live = client.create_run(experiment.experiment_id)
    child = client.create_run(experiment.experiment_id, tags={tracking.TAG_PARENT: live.info.run_id})
    with tracking.open_run("explain x", {}) as run:
        pass
    assert client.get_run(orphan.info.run_id).info.status == "KILLED"
    assert client.get_run(orphan.info.run_id).data.tags["i2x.closed_by"] == run.info.run_id
    assert client.get_run(held.info.run_id).info.status == "RUNNING"  # this process holds it
    assert client.get_run(child.info.run_id).info.status == "RUNNING"  # its parent still runs
