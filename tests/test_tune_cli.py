"""The tune stage as users run it: real subprocesses, a real PostgreSQL server, SIGKILL."""

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from .conftest import cli_env

pytestmark = pytest.mark.slow
PG = "postgresql://postgres@127.0.0.1:5432"


def cli(env, cwd, *args, timeout=900):
    return subprocess.run([sys.executable, "-m", "i2x.cli", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def explained(tmp_path_factory):
    """A smoke train run and its explain run in a private MLflow store."""
    root = tmp_path_factory.mktemp("tune")
    env = cli_env(root)
    work = f"work_dir={root / 'work'}"
    out = cli(env, root, "train", "--config", "smoke", "--overrides", work)
    assert out.returncode == 0, out.stderr[-2000:]
    import mlflow
    from mlflow.tracking import MlflowClient

    mlflow.set_tracking_uri(env["MLFLOW_TRACKING_URI"])
    client = MlflowClient()
    (train,) = client.search_runs([e.experiment_id for e in client.search_experiments()])
    out = cli(env, root, "explain", "--run-id", train.info.run_id, "--config", "smoke", "--overrides", work)
    assert out.returncode == 0, out.stderr[-2000:]
    explain = next(r for r in client.search_runs([train.info.experiment_id]) if r.data.tags.get("i2x.stage") == "explain")
    return root, env, explain.info.run_id, client


@pytest.fixture
def pg_database():
    """A fresh database on the local PostgreSQL server, dropped afterwards."""
    import psycopg

    name = f"i2x_test_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(f"{PG}/postgres", autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    yield f"{PG}/{name}"
    with psycopg.connect(f"{PG}/postgres", autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def _finished(study):
    return [t for t in study.trials if t.state.name in ("COMPLETE", "PRUNED")]


def test_two_workers_on_postgresql_share_one_study(explained, pg_database):
    import optuna

    from i2x.platform.config_io import load_config
    from i2x.tuning.study import open_study

    root, env, explain_id, client = explained
    n = 4
    config = load_config("smoke", {"work_dir": str(root / "work"), "tune.n_trials": str(n)})
    parent = client.create_run(client.get_run(explain_id).info.experiment_id, run_name="tune-parent", tags={"i2x.stage": "tune"})
    study = open_study("shared", pg_database, config)
    study.set_user_attr("explain_run_id", explain_id)
    study.set_user_attr("mlflow_parent_run_id", parent.info.run_id)
    study.set_user_attr("config", config.to_dict())

    cmd = [sys.executable, "-m", "i2x.cli", "tune", "--worker", "--study", "shared", "--storage", pg_database]
    workers = [subprocess.Popen(cmd, cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [w.communicate(timeout=900) for w in workers]
    assert all(w.returncode == 0 for w in workers), [o[1][-1500:] for o in outs]

    study = optuna.load_study(study_name="shared", storage=pg_database)
    finished = _finished(study)
    # MaxTrialsCallback stops each worker once n trials are finished; a trial the other
    # worker had already started still completes, so at most n + (workers - 1).
    assert n <= len(finished) <= n + 1
    assert not [t for t in study.trials if t.state.name in ("RUNNING", "WAITING", "FAIL")]
    numbers = [t.number for t in study.trials]
    assert len(numbers) == len(set(numbers))
    runs = client.search_runs([parent.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    by_number = {}
    for run in runs:
        by_number.setdefault(int(run.data.tags["optuna.trial_number"]), []).append(run)
    assert sorted(by_number) == sorted(t.number for t in finished)
    assert all(len(v) == 1 for v in by_number.values())
    assert all(r.data.tags["optuna.state"] in ("COMPLETE", "PRUNED") for r in runs)
    client.set_terminated(parent.info.run_id)  # the stand-in parent of this test


def test_a_worker_killed_mid_trial_on_postgresql_is_failed_and_its_trial_counted_once(explained, pg_database):
    """Issue 23: two workers share a PostgreSQL study; one is SIGKILLed while it runs a trial and
    started again. Its trial ends FAIL (its heartbeat stopped) and is retried, no trial and no
    trial run stays RUNNING, every finished trial has exactly one MLflow run, and `i2x doctor`
    finds nothing wrong with the store or the study."""
    from i2x.platform.config_io import load_config
    from i2x.tuning.study import open_study

    root, env, explain_id, client = explained
    n = 5
    config = load_config("smoke", {"work_dir": str(root / "work"), "tune.n_trials": str(n), "tune.heartbeat_s": "2"})
    parent = client.create_run(client.get_run(explain_id).info.experiment_id, run_name="tune-parent", tags={"i2x.stage": "tune"})
    study = open_study("killed", pg_database, config)
    for key, value in {"explain_run_id": explain_id, "mlflow_parent_run_id": parent.info.run_id, "config": config.to_dict()}.items():
        study.set_user_attr(key, value)

    cmd = [sys.executable, "-m", "i2x.cli", "tune", "--worker", "--study", "killed", "--storage", pg_database]

    def start():
        return subprocess.Popen(cmd, cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def trial_runs(number: int) -> list:
        return client.search_runs([parent.info.experiment_id], filter_string=(
            f"tags.mlflow.parentRunId = '{parent.info.run_id}' and tags.`optuna.trial_number` = '{number}'"))

    survivor, victim = start(), start()
    try:
        _kill_one_and_check(start, trial_runs, pg_database, client, parent, n, survivor, victim)
    finally:
        client.set_terminated(parent.info.run_id)  # the stand-in parent of this test; RUNNING would fail the tests after it
        for worker in (survivor, victim):
            if worker.poll() is None:
                worker.kill()
    out = cli(env, root, "doctor", "--storage", pg_database)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]


def _kill_one_and_check(start, trial_runs, pg_database, client, parent, n, survivor, victim):
    import optuna

    deadline, killed = time.time() + 600, None
    while time.time() < deadline and killed is None:
        for t in optuna.load_study(study_name="killed", storage=pg_database).get_trials(deepcopy=False):
            # mid-trial: its holder is the victim and its MLflow run exists (on a slow machine the holder is set
            # seconds before the run is; a kill in between leaves no run to end)
            if t.state.name == "RUNNING" and t.user_attrs.get("i2x.holder", "").split()[1:2] == [str(victim.pid)] \
                    and trial_runs(t.number):
                killed = t.number
        time.sleep(0.1)
    assert killed is not None, "the victim never ran a trial"
    victim.kill()
    victim.wait(timeout=60)
    time.sleep(5)  # past the grace period (2 x 2 s)
    again = start()
    outs = [w.communicate(timeout=900) for w in (survivor, again)]
    assert [survivor.returncode, again.returncode] == [0, 0], [o[1][-1500:] for o in outs]
    assert not any("Traceback" in o[1] for o in outs), [o[1][-1500:] for o in outs]

    study = optuna.load_study(study_name="killed", storage=pg_database)
    states = {t.number: t.state.name for t in study.trials}
    assert states[killed] == "FAIL", states
    assert [k for k, v in states.items() if v in ("RUNNING", "WAITING")] == [], states
    finished = sorted(k for k, v in states.items() if v in ("COMPLETE", "PRUNED"))
    assert n <= len(finished) <= n + 1, states
    runs = client.search_runs([parent.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    by_number = {}
    for run in runs:
        by_number.setdefault(int(run.data.tags["optuna.trial_number"]), []).append(run)
    assert {k: len(v) for k, v in by_number.items() if k in finished} == dict.fromkeys(finished, 1)
    assert [r.info.status for r in by_number[killed]] == ["KILLED"]
    assert [r.data.tags["optuna.trial_number"] for r in runs if r.info.status == "RUNNING"] == []


@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGTERM])
def test_killed_study_resumes_and_keeps_completed_trials(explained, tmp_path, signum):
    """SIGKILL leaves the runs RUNNING until the rerun closes them; SIGTERM ends them KILLED
    at once (exit 143). Either way the rerun keeps the completed trials and ends with one
    FINISHED tune run that holds every trial. The rerun starts at once, long before the
    killed trial's heartbeat (30 s) is stale: it ends that trial because its holder is gone
    (the fault sweep found it left RUNNING under the finished study)."""
    import mlflow
    import optuna

    root, env, explain_id, client = explained
    storage = f"sqlite:///{tmp_path}/optuna.db"
    study_name = f"resume-{signum.name.lower()}"
    args = ["tune", "--run-id", explain_id, "--config", "smoke", "--storage", storage, "--study", study_name,
            "--overrides", f"work_dir={root / 'work'},tune.n_trials=5,tune.heartbeat_s=30"]
    proc = subprocess.Popen([sys.executable, "-m", "i2x.cli", *args], cwd=root, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 600
    before = []
    while time.time() < deadline:
        try:
            study = optuna.load_study(study_name=study_name, storage=storage)
            before = [(t.number, t.values) for t in study.trials if t.state.name == "COMPLETE"]
            running = [t for t in study.trials if t.state.name == "RUNNING"]
            if before and running:
                break
        except KeyError:
            pass
        time.sleep(0.2)
    os.kill(proc.pid, signum)
    code = proc.wait(timeout=120)
    assert code == (-signal.SIGKILL if signum == signal.SIGKILL else 143)
    assert before, "the kill must land after a completed trial"
    if signum == signal.SIGTERM:  # the handler ended the run before the process exited
        experiment_id = client.get_run(explain_id).info.experiment_id
        assert client.search_runs([experiment_id], "attributes.status = 'RUNNING'") == []
    study = optuna.load_study(study_name=study_name, storage=storage)
    assert len(_finished(study)) < 5, "the kill must land before the study finished"

    out = cli(env, root, *args)
    assert out.returncode == 0, out.stderr[-2000:]
    study = optuna.load_study(study_name=study_name, storage=storage)
    assert len(_finished(study)) >= 5
    assert [t.number for t in study.trials if t.state.name == "RUNNING"] == []
    doctor = cli(env, root, "doctor", "--storage", storage)
    assert doctor.returncode == 0, doctor.stdout[-2000:]
    after = {t.number: t.values for t in study.trials if t.state.name == "COMPLETE"}
    for number, values in before:
        assert after[number] == values
    assert "| tuned |" in out.stdout and "tuned vs full->full: accuracy" in out.stdout
    # nothing stays RUNNING, and the finished tune run holds every trial of the study
    experiment_id = client.get_run(explain_id).info.experiment_id
    assert client.search_runs([experiment_id], "attributes.status = 'RUNNING'") == []
    runs = client.search_runs([experiment_id], f"tags.`optuna.study_name` = '{study_name}'")
    parents = [r for r in runs if r.data.tags["i2x.stage"] == "tune"]
    final = next(r for r in parents if r.info.status == "FINISHED")
    assert {r.info.status for r in parents if r is not final} == {"KILLED"}
    trials = [r for r in runs if r.data.tags["i2x.stage"] == "tune-trial"]
    assert {r.data.tags["mlflow.parentRunId"] for r in trials} == {final.info.run_id}
    assert {int(r.data.tags["optuna.trial_number"]) for r in trials} >= set(after)
    # the summary counts each trial once by its final state: the killed one is one FAIL, not a finished trial
    failed = [t.number for t in study.trials if t.state.name == "FAIL"]
    assert failed, {t.number: t.state.name for t in study.trials}
    summary = json.loads(mlflow.artifacts.load_text(f"runs:/{final.info.run_id}/tuning/summary.json"))["study"]
    assert (summary["n_trials"], summary["n_finished"], summary["n_failed"]) == (len(study.trials), len(_finished(study)), len(failed))
    # `report --out` of the tune run carries the study's figures, as the run's own report does
    out = cli(env, root, "report", "--run-id", final.info.run_id, "--out", str(tmp_path / "tune-report"))
    assert out.returncode == 0, out.stderr[-2000:]
    page = (tmp_path / "tune-report" / "index.html").read_text()
    assert "Optuna: validation accuracy per trial" in page and "The study" in page  # figures are embedded in the page
    assert f"{len(study.trials)} trials ({len(_finished(study))} finished, {len(failed)} failed" in page


def test_tune_needs_an_explain_run(explained):
    root, env, explain_id, client = explained
    train_id = client.get_run(explain_id).data.tags["i2x.train_run_id"]
    out = cli(env, root, "tune", "--run-id", train_id)
    assert out.returncode == 2
    assert "is not an i2x explain run" in out.stderr.strip().splitlines()[-1]
    out = cli(env, root, "tune", "--worker", "--study", "nope", "--storage", f"sqlite:///{root}/none.db")
    assert out.returncode == 2 and "no study 'nope'" in out.stderr.strip().splitlines()[-1]


def test_a_storage_that_cannot_be_opened_is_one_line_and_opens_no_tune_run(explained, tmp_path):
    """Issue 44: an Optuna storage that is a directory (or a text file, or a server that refuses)
    gave one clean line but left a FAILED tune run behind: the storage is opened first now."""
    root, env, explain_id, client = explained
    experiment = client.get_run(explain_id).info.experiment_id
    before = {r.info.run_id for r in client.search_runs([experiment])}
    (tmp_path / "dir.db").mkdir()
    (tmp_path / "notes.db").write_text("my notes\n")
    for storage in (f"sqlite:///{tmp_path}/dir.db", f"sqlite:///{tmp_path}/notes.db", "postgresql://127.0.0.1:1/i2x"):
        out = cli(env, root, "tune", "--run-id", explain_id, "--storage", storage, "--overrides",
                  f"work_dir={root / 'work'},tune.act_on=candidates")
        lines = out.stderr.strip().splitlines()
        assert out.returncode == 2 and lines[-1].startswith("i2x: error: cannot open Optuna storage "), out.stderr[-2000:]
        assert "Traceback" not in out.stderr
    assert {r.info.run_id for r in client.search_runs([experiment])} == before  # no tune run, FAILED or otherwise


def test_report_command_regenerates_into_a_folder_or_the_run(explained, tmp_path):
    root, env, explain_id, client = explained
    out = cli(env, root, "report", "--run-id", explain_id, "--out", str(tmp_path / "rep"))
    assert out.returncode == 0, out.stderr[-2000:]
    import html
    import json

    from i2x.reporting.statements import statements

    doc = json.loads(open(client.download_artifacts(explain_id, "explanation/explanation.json", str(tmp_path / "dl"))).read())
    page = (tmp_path / "rep" / "index.html").read_text()
    said = statements(doc)
    assert said["classes"] and said["uncertain"]
    for sentence in said["classes"] + said["uncertain"]:
        assert html.escape(sentence) in page
    out = cli(env, root, "report", "--run-id", explain_id)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "report/index.html" in {a.path for a in client.list_artifacts(explain_id, "report")}
    train_id = client.get_run(explain_id).data.tags["i2x.train_run_id"]
    bad = cli(env, root, "report", "--run-id", train_id)
    assert bad.returncode == 2 and "reports are made for explain and tune runs" in bad.stderr.strip().splitlines()[-1]


def test_a_storage_password_reaches_no_artifact_tag_attribute_checkpoint_or_message(explained, pg_database, tmp_path):
    """The local server trusts 127.0.0.1, so it accepts any password: a planted one must
    then appear nowhere that i2x writes."""
    import optuna

    root, env, explain_id, client = explained
    secret = "Tr0ub4dor-and-3"
    with_password = pg_database.replace("postgres@", f"postgres:{secret}@")
    work = root / "work-secret"
    # in a flag or the config it is refused (argv shows in ps; config is copied everywhere)
    for args in (["--storage", with_password], ["--overrides", f"tune.storage={with_password}"]):
        out = cli(env, root, "tune", "--run-id", explain_id, "--config", "smoke", *args)
        assert out.returncode == 2 and secret not in out.stderr and "holds a password" in out.stderr.strip().splitlines()[-1]
    # from the environment it is used, and masked wherever the URL is written
    env = {**env, "I2X_OPTUNA_STORAGE": with_password}
    out = cli(env, root, "tune", "--run-id", explain_id, "--config", "smoke", "--study", "secret",
              "--overrides", f"work_dir={work},tune.n_trials=2")
    assert out.returncode == 0, out.stderr[-2000:]
    assert secret not in out.stdout + out.stderr
    tune = next(r for r in client.search_runs([client.get_run(explain_id).info.experiment_id], "tags.`optuna.study_name` = 'secret'")
                if r.data.tags["i2x.stage"] == "tune")
    assert tune.data.tags["optuna.storage"].startswith("postgresql://postgres:***@")
    written = {"params and tags": repr(tune.data.params) + repr(tune.data.tags)}
    for run in client.search_runs([tune.info.experiment_id]):
        written[f"run {run.info.run_id}"] = repr(run.data.params) + repr(run.data.tags)
    study = optuna.load_study(study_name="secret", storage=with_password)
    written["study attributes"] = repr(study.user_attrs) + repr(study._storage.get_study_system_attrs(study._study_id))
    written["trial attributes"] = repr([(t.user_attrs, t.system_attrs, t.params) for t in study.trials])
    for path in [*root.rglob("*"), *work.rglob("*")]:  # the tracking store, artifacts, checkpoints, work folders
        if path.is_file():
            written[str(path)] = path.read_bytes().decode("latin-1")
    leaks = [where for where, text in written.items() if secret in text]
    assert leaks == []


def _running_run(client, experiment_id, stage, work, proc, timeout=300):
    """Wait until the stage's run on ``work`` is RUNNING in MLflow (the process is inside it)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert proc.poll() is None, f"the stage ended before it could be killed: {proc.stderr.read()[-2000:]}"
        runs = [r for r in client.search_runs([experiment_id], f"tags.`i2x.stage` = '{stage}' and attributes.status = 'RUNNING'")
                if r.data.tags.get("i2x.work_dir", "").startswith(str(work))]
        if runs:
            return runs[0]
        time.sleep(0.2)
    raise AssertionError(f"no RUNNING {stage} run appeared")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_a_killed_explain_never_stays_running(explained, tmp_path, sig):
    root, env, explain_id, client = explained
    train_id = client.get_run(explain_id).data.tags["i2x.train_run_id"]
    experiment_id = client.get_run(explain_id).info.experiment_id
    work = tmp_path / "work"  # a fresh analysis folder: the stage really runs
    args = ["explain", "--run-id", train_id, "--config", "smoke", "--overrides", f"work_dir={work}"]
    proc = subprocess.Popen([sys.executable, "-m", "i2x.cli", *args], cwd=root, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    killed = _running_run(client, experiment_id, "explain", work, proc)
    os.kill(proc.pid, sig)
    out_text, err = proc.communicate(timeout=120)
    if sig == signal.SIGTERM:
        assert proc.returncode == 128 + signal.SIGTERM, (out_text + err)[-3000:]
        assert err.strip().splitlines()[-1].startswith("i2x: stopped by SIGTERM; the MLflow run is marked KILLED")
        assert client.get_run(killed.info.run_id).info.status == "KILLED"
    else:
        assert client.get_run(killed.info.run_id).info.status == "RUNNING"  # nothing can end it at SIGKILL...
    out = cli(env, root, *args)  # ... so the rerun, holding the folder's lock, closes it
    assert out.returncode == 0, out.stderr[-2000:]
    old = client.get_run(killed.info.run_id)
    assert old.info.status == "KILLED"
    runs = client.search_runs([experiment_id], "attributes.status = 'RUNNING'")
    assert runs == [], [(r.info.run_name, r.data.tags.get("i2x.work_dir")) for r in runs]
    if sig == signal.SIGKILL:
        new = next(r for r in client.search_runs([experiment_id], "attributes.status = 'FINISHED'") if r.data.tags.get("i2x.stage") == "explain"
                   and r.data.tags.get("i2x.work_dir", "").startswith(str(work)))
        assert old.data.tags["i2x.closed_by"] == new.info.run_id


def test_two_explains_of_the_same_work_at_once_both_finish(explained, tmp_path):
    root, env, explain_id, client = explained
    train_id = client.get_run(explain_id).data.tags["i2x.train_run_id"]
    args = ["explain", "--run-id", train_id, "--config", "smoke", "--overrides", f"work_dir={tmp_path / 'work'}"]
    procs = [subprocess.Popen([sys.executable, "-m", "i2x.cli", *args], cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(2)]
    outs = [p.communicate(timeout=900) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1][-1500:] for o in outs]
    said = [o[0] + o[1] for o in outs]
    # the second waited for the first's lock, then reused its finished analysis
    assert sum("another run is using" in s for s in said) == 1 and sum("reusing the finished analysis" in s for s in said) == 1
    assert not list((tmp_path / "work").glob("*.partial"))


def test_with_no_finding_tune_says_so_in_one_line_and_runs_no_study(explained):
    """Issue 22: acting on findings (the default outside the smoke config), an explanation that
    states no shortcut check gives one line, a FINISHED tune run with that verdict, no study
    and no trial run."""
    import json

    import optuna

    from i2x.reporting.claims import shortcut_checks

    root, env, explain_id, client = explained
    doc_path = client.download_artifacts(explain_id, "explanation/explanation.json", str(root / "doc"))
    assert shortcut_checks(json.loads(open(doc_path).read())) == []  # the premise: nothing verified to act on
    storage = f"sqlite:///{root / 'nothing.db'}"
    out = cli(env, root, "tune", "--run-id", explain_id, "--storage", storage, "--overrides",
              f"work_dir={root / 'work'},tune.act_on=findings")
    assert out.returncode == 0, out.stderr[-2000:]
    said = [line for line in out.stdout.splitlines() if "nothing to act on" in line]
    assert len(said) == 1 and "tune.act_on=candidates" in said[0], out.stdout
    # it says what is missing (a shortcut check), not that nothing was verified: explain states findings (issue 43)
    assert "states no shortcut check" in said[0] and "no verified finding" not in said[0], said
    assert "trial" not in out.stdout + out.stderr
    run = next(r for r in client.search_runs([client.get_run(explain_id).info.experiment_id], "tags.`i2x.act_on` = 'findings'"))
    assert run.info.status == "FINISHED" and run.data.tags["i2x.verdict"] == "nothing to act on"
    assert not client.search_runs([run.info.experiment_id], f"tags.mlflow.parentRunId = '{run.info.run_id}'")
    assert optuna.get_all_study_names(storage) == []
    # its page links the explanation's report and run, and says what would make tune act
    page = open(client.download_artifacts(run.info.run_id, "report/index.html", str(root / "page"))).read()
    report = client.get_run(explain_id).data.tags["i2x.report"]
    assert f'href="{Path(report).resolve().as_uri()}"' in page and f"runs/{explain_id}" in page, page[-3000:]
    assert "Tune repairs a shortcut check" in page and f"The explanation (run {explain_id}) states" in page


WRITER = """
import sys, time
import mlflow
client = mlflow.MlflowClient()
run = client.create_run(client.get_experiment_by_name("i2x").experiment_id, run_name="second writer")
print(run.info.run_id, flush=True)
i = 0
while True:  # as many small writes as the store takes, each its own transaction
    try:
        client.log_metric(run.info.run_id, "x", i, step=i)
    except Exception:
        time.sleep(0.01)
    i += 1
"""


def test_a_stop_under_a_second_writer_on_the_sqlite_store_is_one_line_and_ends_every_run(explained, tmp_path):
    """Issue 23: with a second process writing the same SQLite tracking store, SIGTERM during a
    tune printed 12 tracebacks ("database is locked", Optuna's UnboundLocalError) and left the
    tune run and its trial RUNNING. Now: one stop line, exit 143, every run of the tune ended
    KILLED, and `i2x doctor` finds nothing wrong once the writer's own run ends."""
    import optuna

    root, env, explain_id, client = explained
    storage = f"sqlite:///{tmp_path}/optuna.db"
    writer = subprocess.Popen([sys.executable, "-c", WRITER], cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    writer_run = writer.stdout.readline().strip()
    try:
        args = ["tune", "--run-id", explain_id, "--config", "smoke", "--storage", storage, "--study", "second-writer",
                "--overrides", f"work_dir={root / 'work'},tune.n_trials=5"]
        proc = subprocess.Popen([sys.executable, "-m", "i2x.cli", *args], cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.time() + 600
        while time.time() < deadline:
            try:
                trials = optuna.load_study(study_name="second-writer", storage=storage).get_trials(deepcopy=False)
                if any(t.state.name == "COMPLETE" for t in trials) and any(t.state.name == "RUNNING" for t in trials):
                    break
            except KeyError:
                pass
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=300)
    finally:
        writer.kill()
        writer.wait()
    assert proc.returncode == 143, err[-3000:]
    assert [line for line in err.splitlines() if line.startswith("i2x: stopped by")] == [
        "i2x: stopped by SIGTERM; the MLflow run is marked KILLED; run the same command again to resume"], err[-3000:]
    assert "Traceback" not in err and "Exception" not in err, err[-3000:]
    experiment = client.get_run(explain_id).info.experiment_id
    tune = [r for r in client.search_runs([experiment]) if r.data.tags.get("optuna.study_name") == "second-writer"]
    assert sorted({r.data.tags.get("i2x.stage") for r in tune}) == ["tune", "tune-trial"]
    assert [r.info.status for r in tune if r.info.status != "FINISHED"] == ["KILLED"] * len([r for r in tune if r.info.status != "FINISHED"])
    assert [r.info.status for r in tune if r.data.tags.get("i2x.stage") == "tune"] == ["KILLED"]
    client.set_terminated(writer_run)
    doctor = cli(env, root, "doctor", "--storage", storage)
    assert doctor.returncode == 0, doctor.stdout[-2000:] + doctor.stderr[-2000:]
