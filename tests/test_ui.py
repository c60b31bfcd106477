"""What a new user sees in the browser: the MLflow UI opens on the project's runs table,
optuna-dashboard names the study's objectives, and the native stack starts on a fresh root."""

import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(url: str, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert proc.poll() is None, f"{proc.args[0]} exited with {proc.returncode}"
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"{url} did not answer in {timeout} s")


def _text_appears(browser, text: str, timeout: float = 45) -> str:
    deadline = time.time() + timeout
    body = ""
    while time.time() < deadline:
        body = browser.find_element("tag name", "body").text
        if text in body:
            return body
        time.sleep(0.5)
    raise AssertionError(f"'{text}' never appeared; the page said:\n{body[:2000]}")


def test_the_mlflow_ui_opens_on_the_runs_table(mlflow_store, browser, tmp_path):
    import mlflow

    from i2x.platform import tracking

    with tracking.open_run("train mnist cnn", {tracking.TAG_STAGE: "train"}) as run:
        tracking.log_metrics({"test_accuracy": 0.99})
    experiment_id = run.info.experiment_id
    port = _free_port()
    server = subprocess.Popen([str(Path(sys.executable).parent / "mlflow"), "server", "--backend-store-uri", mlflow_store,
                               "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        _wait(f"http://127.0.0.1:{port}/health", server)
        _, url = tracking.where_to_look(experiment_id)  # the URL that `main` prints, on this server's port
        browser.get(url.replace("127.0.0.1:5000", f"127.0.0.1:{port}"))
        body = _text_appears(browser, "train mnist cnn")
        browser.save_screenshot(str(tmp_path / "mlflow_ui.png"))
        # the runs table, not MLflow 3's GenAI overview of traces
        assert "Run Name" in body, body[:2000]
        assert "No data available" not in body and "Detect Issues" not in body
        assert mlflow.MlflowClient().get_experiment(experiment_id).tags["mlflow.experimentKind"] == "custom_model_development"
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_a_fresh_stack_root_starts_the_dashboard_with_named_objectives(browser, tmp_path):
    """`i2x services up --root <fresh folder>` starts the whole native stack (S3, MLflow,
    dashboard); the dashboard used to die on the empty SQLite file ("no such table:
    version_info"). Then a study's page names its objectives."""
    from i2x.platform import services
    from i2x.platform.config_io import load_config
    from i2x.tuning.study import open_study

    from .conftest import cli_env
    from .test_s3 import free_s3_port

    root = tmp_path / "stack"
    env = cli_env(tmp_path, AWS_ACCESS_KEY_ID="local", AWS_SECRET_ACCESS_KEY="local-secret")
    ports = {"--s3-port": free_s3_port(), "--mlflow-port": _free_port(), "--dashboard-port": _free_port()}
    cli = [sys.executable, "-m", "i2x.cli", "services"]
    flags = ["--root", str(root), *[str(x) for pair in ports.items() for x in pair]]
    up = subprocess.run([*cli, "up", *flags], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    try:
        assert up.returncode == 0, up.stderr[-2000:]
        status = subprocess.run([*cli, "status", *flags], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60)
        states = dict(line.split(maxsplit=1) for line in status.stdout.splitlines() if line.strip())
        assert {name: state.split()[0] for name, state in states.items()} == {"s3": "up", "mlflow": "up", "dashboard": "up"}, status.stdout
        storage = f"sqlite:///{root.resolve() / 'optuna' / 'optuna.db'}"
        study = open_study("i2x-unit", storage, load_config("smoke"))
        study.set_user_attr("explain_run_id", "abc123")
        for value in (0.5, 0.7):
            trial = study.ask()
            trial.suggest_float("alpha", 0.0, 1.0)
            study.tell(trial, [value, 10.0 + value])
        browser.get(f"http://127.0.0.1:{ports['--dashboard-port']}/dashboard/studies/{study._study_id}")
        body = _text_appears(browser, "val_accuracy")
        browser.save_screenshot(str(tmp_path / "dashboard.png"))
        assert "focal_pair_val_confusions" in body and "Objective 0" not in body
    finally:
        services.down(root)


def test_the_dashboard_opens_before_any_study_and_leaves_no_empty_file(tmp_path):
    """`make dashboard` on a fresh clone (issue 43): the dashboard used to print an 84-line
    traceback ("no such table: version_info") and leave a 0-byte optuna.db. Now it serves an
    empty study list, and the storage it leaves is a whole Optuna database."""
    import json

    from .conftest import cli_env

    port = _free_port()
    env = cli_env(tmp_path)
    env.pop("I2X_OPTUNA_STORAGE", None)
    proc = subprocess.Popen([sys.executable, "-m", "i2x.cli", "dashboard", "--port", str(port)], env=env, cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        body = None
        for _ in range(120):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=2) as answer:
                    body = json.loads(answer.read())
                break
            except OSError:
                time.sleep(0.5)
        assert body is not None and body.get("study_summaries") == [], body
    finally:
        proc.terminate()
        out, err = proc.communicate(timeout=30)
    assert "Traceback" not in err and "no such table" not in err, err[-2000:]
    assert out.splitlines()[0].startswith("i2x dashboard: optuna-dashboard on sqlite:///mlruns/optuna.db at http://127.0.0.1:"), out
    db = tmp_path / "mlruns" / "optuna.db"
    assert db.stat().st_size > 0
