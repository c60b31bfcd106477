"""Readable logs: plain lines with an ETA when stderr is not a terminal, one line per trial,
named runs, the UI opening on the runs table, pruned trials not drawn as failures."""

import pytest

from i2x.platform.progress import Progress, duration, steps


def test_progress_in_a_log_is_a_few_plain_lines_with_an_eta(capsys, monkeypatch):
    monkeypatch.setattr("i2x.platform.progress.is_tty", lambda: False)
    now = [0.0]
    monkeypatch.setattr("i2x.platform.progress.time.perf_counter", lambda: now[0])
    with Progress("train", total=20, unit="step", every_s=60) as bar:
        for _ in range(20):
            now[0] += 10  # every step takes 10 s
            bar.update()
    lines = capsys.readouterr().err.splitlines()
    assert "\r" not in "".join(lines)
    # 200 s of work printed every 60 s: 3 progress lines and the final one, not 20
    assert len(lines) == 4, lines
    assert lines[0].startswith("i2x train: 6/20 step, 1m00s elapsed, ETA 2m20s")
    assert lines[-1].startswith("i2x train: 20/20 step") and "ETA" not in lines[-1]


def test_a_disabled_or_empty_loop_prints_nothing(capsys, monkeypatch):
    monkeypatch.setattr("i2x.platform.progress.is_tty", lambda: False)
    assert list(steps(range(3), "quiet", enabled=False)) == [0, 1, 2]
    assert list(steps([], "empty")) == []
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize(("seconds", "text"), [(0.4, "0s"), (59.6, "1m00s"), (187, "3m07s"), (3725, "1h02m")])
def test_duration(seconds, text):
    assert duration(seconds) == text


def test_runs_are_named_and_the_experiment_opens_on_its_runs(mlflow_store, monkeypatch):
    import mlflow

    from i2x.platform import tracking

    # as under `mlflow run`: the launcher made the run (random name) and passes its id
    experiment = mlflow.set_experiment("launcher")
    made = mlflow.MlflowClient().create_run(experiment.experiment_id, run_name="victorious-slug-129")
    monkeypatch.setenv("MLFLOW_RUN_ID", made.info.run_id)
    with tracking.open_run("explain mnist cnn (from train ab12cd)", {tracking.TAG_STAGE: "explain"}) as run:
        assert run.info.run_id == made.info.run_id
        tracking.log_metrics({"test_accuracy": 0.9942000110944113})
    client = mlflow.MlflowClient()
    got = client.get_run(made.info.run_id)
    assert got.info.run_name == "explain mnist cnn (from train ab12cd)"
    assert got.data.metrics["test_accuracy"] == 0.9942
    assert client.get_experiment(experiment.experiment_id).tags["mlflow.experimentKind"] == "custom_model_development"


def test_a_pruned_trial_is_finished_and_tagged_not_killed(mlflow_store):
    import mlflow
    import optuna

    from i2x.platform import tracking, trial_runs

    with tracking.open_run("tune", {}) as parent:
        with pytest.raises(optuna.TrialPruned), trial_runs.trial_run(parent.info.run_id, 3, {"alpha": 0.5}) as log_epoch:
            log_epoch(0, 0.5)
            raise optuna.TrialPruned()
    trial = mlflow.MlflowClient().search_runs([parent.info.experiment_id], "tags.`i2x.stage` = 'tune-trial'")[0]
    assert trial.info.status == "FINISHED" and trial.data.tags["optuna.state"] == "PRUNED"
    assert "Pruned" in trial.data.tags["mlflow.note.content"]


@pytest.mark.parametrize(("raised", "status"), [(KeyboardInterrupt, "KILLED"), (RuntimeError, "FAILED")])
def test_a_stopped_trial_ends_killed_and_a_failed_one_failed(mlflow_store, raised, status):
    """Issue 23: a stop inside a trial (process.Stopped is a KeyboardInterrupt) left the trial's
    run FAILED while its tune run ended KILLED; now both end KILLED. An error stays FAILED."""
    import mlflow

    from i2x.platform import tracking, trial_runs

    with pytest.raises(raised), tracking.open_run("tune", {}) as parent, trial_runs.trial_run(parent.info.run_id, 0, {"alpha": 0.5}):
        raise raised()
    client = mlflow.MlflowClient()
    trial = client.search_runs([parent.info.experiment_id], "tags.`i2x.stage` = 'tune-trial'")[0]
    assert trial.info.status == status and client.get_run(parent.info.run_id).info.status == status


def _gaps(times: list[float]) -> list[float]:
    return [b - a for a, b in zip(times, times[1:], strict=False)]


def test_the_heartbeat_leaves_no_gap_over_its_period_in_a_stage_with_a_long_silent_step():
    """Issue 24, on a fake clock: a stage prints progress lines at 0-40 s, then computes for
    5 minutes without a loop (a solver), then prints again. The heartbeat's rule, checked once
    a second, fills the silence so that no two lines are more than 30 s apart, naming the work."""
    from i2x.platform.progress import Beat

    progress_lines = [0.0, 10.0, 40.0, 340.0, 350.0]
    assert max(_gaps(progress_lines)) > 30  # the premise: without the heartbeat there is a 300 s hole
    beat, last, printed, said = Beat("explain", 30.0, start=0.0), 0.0, [], []
    for now in range(0, 351):
        if float(now) in progress_lines:
            last = float(now)
            printed.append(last)
            continue
        line = beat.due(float(now), last, "causal check")
        if line:
            last = float(now)
            printed.append(last)
            said.append(line)
    assert max(_gaps(printed)) <= 30, _gaps(printed)
    assert len(said) == 9 and said[0] == "i2x explain: working (causal check), 1m10s into the stage", said[:2]


def test_mains_heartbeat_gives_the_stage_its_own_time():
    """Issue 43: main's line named the explain stage, 5 minutes in, with main's 57 minutes."""
    from i2x.platform.progress import Beat

    line = Beat("main", 30.0, start=0.0).due(3456.0, 3400.0, "the explain stage, in its own process", since=3156.0)
    assert line == "i2x main: working (the explain stage, in its own process, for 5m00s), 57m36s since main started", line


def test_a_stage_under_the_heartbeat_prints_what_it_is_doing_while_silent(capsys, monkeypatch):
    import time

    from i2x.platform.progress import doing, heartbeat

    monkeypatch.setenv("I2X_PROGRESS_EVERY", "0.2")
    monkeypatch.setattr("i2x.platform.progress.is_tty", lambda: False)
    with heartbeat("tune"):
        doing("trial 3: i2x-dfr")
        time.sleep(1.0)
    lines = capsys.readouterr().err.splitlines()
    assert lines and all(line.startswith("i2x tune: working (trial 3: i2x-dfr, for ") for line in lines), lines
    time.sleep(0.5)
    assert capsys.readouterr().err == ""  # the thread stopped with the stage


def test_a_stop_inside_a_finalizer_prints_nothing_but_other_finalizer_errors_still_do(tmp_path):
    """Ctrl-C during `make run` printed "Exception ignored in ... Stopped: 15": the stop had
    landed in a finalizer, where Python prints and drops it (the timer raises it again).
    In a subprocess: pytest replaces the hook that prints these."""
    import subprocess
    import sys

    from .conftest import ROOT, cli_env

    code = """
import gc
from i2x.platform.process import Stopped, stop_on_signals

class Finalised:
    def __init__(self, exc):
        self.exc = exc
    def __del__(self):
        raise self.exc

with stop_on_signals():
    Finalised(Stopped(15))
    gc.collect()
    Finalised(ValueError("a real bug"))
    gc.collect()
"""
    out = subprocess.run([sys.executable, "-c", code], env=cli_env(tmp_path), cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "Stopped" not in out.stderr and "ValueError: a real bug" in out.stderr, out.stderr


def test_optuna_says_nothing_of_a_trial_ended_by_a_stop_but_still_reports_failures():
    """Ctrl-C during tune printed Optuna's 48-line traceback of the KeyboardInterrupt and
    "failed with value None" beside i2x's one stop line."""
    import logging

    import optuna
    import pytest

    from i2x.platform.process import Stopped
    from i2x.tuning.trial_log import QuietStops

    class Seen(logging.Handler):
        def __init__(self) -> None:
            super().__init__()
            self.records: list[logging.LogRecord] = []

        def emit(self, record: logging.LogRecord) -> None:
            self.records.append(record)

    seen = Seen()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    quiet = QuietStops()
    logging.getLogger("optuna.study._optimize").addFilter(quiet)
    logging.getLogger("optuna").addHandler(seen)

    def stopped(trial):
        raise Stopped(2)

    def broken(trial):
        raise ValueError("a real bug")

    try:
        study = optuna.create_study()
        with pytest.raises(Stopped):
            study.optimize(stopped, n_trials=1)
        assert [r.getMessage() for r in seen.records] == []
        study.optimize(broken, n_trials=1, catch=(ValueError,))
        said = [r.getMessage() for r in seen.records]
        assert said == ["Trial 1 failed with parameters: {} because of the following error: ValueError('a real bug').",
                        "Trial 1 failed with value None."], said
    finally:
        logging.getLogger("optuna").removeHandler(seen)
        logging.getLogger("optuna.study._optimize").removeFilter(quiet)
