"""Artifacts in a real S3 server (SeaweedFS, started here), direct and proxied, and failures.

Every case runs real processes against a real `weed mini`; nothing is mocked.
"""

import hashlib
import json
import os
import random
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from i2x.platform import services

from .conftest import ROOT, cli_env

pytestmark = pytest.mark.slow
KEY, SECRET = "i2x-test-access", "i2x-test-secret-" + uuid.uuid4().hex[:12]
PG = "postgresql://postgres@127.0.0.1:5432"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


_PORTS = random.Random()


def free_s3_port() -> int:
    """An S3 port whose whole weed span is free, below the kernel's ephemeral range (where
    a client's outgoing connection could take one of weed's ports between check and bind)."""
    for _ in range(200):
        port = _PORTS.randrange(20000, 32768 - services.WEED_SPAN, 16)
        if all(_bindable(p) for p in range(port, port + services.WEED_SPAN) if p == port or p > port + 1000):
            return port
    raise RuntimeError("no free block of ports for SeaweedFS in 20000-32768")


@pytest.fixture
def s3(tmp_path, monkeypatch):
    """A SeaweedFS S3 server on a free port, stopped afterwards."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    root = tmp_path / "stack"
    port = free_s3_port()
    stack = services.local_stack(root, s3_port=port, mlflow_port=free_port(), dashboard_port=free_port())
    services.up(root, stack[:1])
    yield {"root": root, "stack": stack, "url": f"http://127.0.0.1:{port}"}
    services.down(root)


def s3_client(url):
    import boto3

    return boto3.client("s3", endpoint_url=url, aws_access_key_id=KEY, aws_secret_access_key=SECRET, region_name="us-east-1")


def keys(url, prefix=""):
    """The bucket's keys under ``prefix``; none while SeaweedFS has not made the bucket yet (its
    port answers before its ``-bucket`` exists: seen once in CI under load)."""
    client = s3_client(url)
    out = []
    try:
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=services.BUCKET, Prefix=prefix):
            out += [o["Key"] for o in page.get("Contents", [])]
    except client.exceptions.NoSuchBucket:
        return []
    return out


def direct_env(tmp_path, url, **extra):
    return cli_env(tmp_path, AWS_ACCESS_KEY_ID=KEY, AWS_SECRET_ACCESS_KEY=SECRET, MLFLOW_S3_ENDPOINT_URL=url, **extra)


def make_experiment(env, name, location):
    import mlflow
    from mlflow.tracking import MlflowClient

    mlflow.set_tracking_uri(env["MLFLOW_TRACKING_URI"])
    return MlflowClient().create_experiment(name, artifact_location=location)


def mlflow_run(env, tmp_path, experiment, timeout=900, extra=None):
    extra = extra if extra is not None else f",tune.storage=sqlite:///{tmp_path}/optuna.db"
    return subprocess.run(
        [sys.executable, "-m", "mlflow", "run", str(ROOT), "-P", "config=smoke", "-P", f"overrides=work_dir={tmp_path / 'work'}{extra}",
         "--experiment-name", experiment, "--env-manager", "local"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def runs_by_stage(env, experiment_id):
    import mlflow
    from mlflow.tracking import MlflowClient

    mlflow.set_tracking_uri(env["MLFLOW_TRACKING_URI"])
    client = MlflowClient()
    out = {}
    for run in client.search_runs([experiment_id], order_by=["attributes.start_time DESC"]):
        out.setdefault(run.data.tags.get("i2x.stage"), run)  # newest per stage
    return client, out


def assert_contract(all_keys, prefix, stages):
    def under(run):
        return {k.split(f"{run.info.run_id}/artifacts/", 1)[1] for k in all_keys if f"{run.info.run_id}/artifacts/" in k}

    train, explain, tune = (under(stages[s]) for s in ("train", "explain", "tune"))
    assert len([k for k in train if k.startswith("checkpoints/ckpt-")]) >= 4, sorted(train)
    assert {"checkpoints/index.json", "config/resolved.yaml"} <= train
    assert {"explanation/explanation.json", "saliency/maps.npz", "prototypes/gallery.png", "report/index.html"} <= explain
    assert len([k for k in explain if k.startswith("saliency/ckpt-")]) >= 4
    assert {"tuning/summary.json", "tuning/summary.md", "report/index.html"} <= tune
    assert all(k.startswith(prefix) for k in all_keys)


def test_direct_s3_stores_the_whole_contract_and_no_credentials_leak(s3, tmp_path):
    env = direct_env(tmp_path, s3["url"])
    exp = make_experiment(env, "direct", f"s3://{services.BUCKET}/direct")
    storage = f"sqlite:///{tmp_path}/optuna.db"
    out = mlflow_run(env, tmp_path, "direct", extra=f",tune.artifact_store=s3://{services.BUCKET},tune.storage={storage}")
    assert out.returncode == 0, out.stderr[-3000:]
    client, stages = runs_by_stage(env, exp)
    assert_contract(keys(s3["url"], "direct/"), "direct/", stages)
    # Optuna's own artifacts land in the same bucket, attached to the study
    import optuna
    from optuna.artifacts import get_all_artifact_meta

    tune = stages["tune"]
    study = optuna.load_study(study_name=tune.data.tags["optuna.study_name"], storage=storage)
    metas = get_all_artifact_meta(study)
    assert {m.filename for m in metas} >= {"summary.json", "strategies.png"}
    assert {m.artifact_id for m in metas} <= set(keys(s3["url"]))

    # No credential value anywhere: params, tags, metric names, and every text artifact.
    texts = []
    for run in client.search_runs([exp]):
        texts += [json.dumps(run.data.params), json.dumps(run.data.tags), json.dumps(list(run.data.metrics))]
    s3c = s3_client(s3["url"])
    for key in keys(s3["url"], "direct/"):
        if key.endswith((".json", ".yaml", ".md", ".html", ".txt")):
            texts.append(s3c.get_object(Bucket=services.BUCKET, Key=key)["Body"].read().decode("utf-8", "replace"))
    blob = "\n".join(texts)
    assert len(texts) > 20
    assert SECRET not in blob and KEY not in blob


def test_proxied_server_holds_the_credentials(s3, tmp_path):
    import psycopg

    name = f"i2x_test_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(f"{PG}/postgres", autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    stack = services.local_stack(s3["root"], backend_uri=f"{PG}/{name}", s3_port=int(s3["url"].rsplit(":", 1)[1]),
                                 mlflow_port=free_port(), dashboard_port=free_port())
    try:
        services.up(s3["root"], stack[:2], timeout=120)
        env = cli_env(tmp_path, MLFLOW_TRACKING_URI=f"http://127.0.0.1:{stack[1].port}")
        for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "MLFLOW_S3_ENDPOINT_URL"):
            env.pop(var, None)
        exp = make_experiment(env, "proxied", None)
        out = mlflow_run(env, tmp_path, "proxied")
        assert out.returncode == 0, out.stderr[-3000:]
        _, stages = runs_by_stage(env, exp)
        assert_contract(keys(s3["url"], f"{services.MLFLOW_PREFIX}/"), f"{services.MLFLOW_PREFIX}/", stages)
    finally:
        services.down(s3["root"])
        with psycopg.connect(f"{PG}/postgres", autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def _tree_digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_wrong_secret_fails_in_one_line_and_keeps_local_files(s3, tmp_path):
    env = direct_env(tmp_path, s3["url"])
    exp = make_experiment(env, "creds", f"s3://{services.BUCKET}/creds")
    cmd = [sys.executable, "-m", "i2x.cli", "train", "--config", "smoke", "--overrides", f"work_dir={tmp_path / 'work'}"]
    ok = subprocess.run(cmd, cwd=tmp_path, env={**env, "MLFLOW_EXPERIMENT_NAME": "creds"}, capture_output=True, text=True, timeout=600)
    assert ok.returncode == 0, ok.stderr[-2000:]
    before = _tree_digest(tmp_path / "work")

    bad_env = {**env, "MLFLOW_EXPERIMENT_NAME": "creds", "AWS_SECRET_ACCESS_KEY": "not-the-secret"}
    start = time.time()
    bad = subprocess.run(cmd, cwd=tmp_path, env=bad_env, capture_output=True, text=True, timeout=600)
    assert bad.returncode == 2
    assert time.time() - start < 120  # bounded retries, no hang
    last = bad.stderr.strip().splitlines()[-1]
    assert last.startswith("i2x: error: uploading ") and "SignatureDoesNotMatch" in last and "local files are kept" in last
    assert "Traceback" not in bad.stderr
    after = _tree_digest(tmp_path / "work")
    assert {k: v for k, v in after.items() if k.endswith(".pt")} == {k: v for k, v in before.items() if k.endswith(".pt")}
    _, stages = runs_by_stage(env, exp)
    assert stages["train"].info.status == "FAILED"


def test_s3_outage_mid_run_then_restart_and_rerun_completes(s3, tmp_path):
    env = direct_env(tmp_path, s3["url"])
    exp = make_experiment(env, "outage", f"s3://{services.BUCKET}/outage")
    cmd = [sys.executable, "-m", "mlflow", "run", str(ROOT), "-P", "config=smoke", "-P", f"overrides=work_dir={tmp_path / 'work'},tune.storage=sqlite:///{tmp_path}/optuna.db",
           "--experiment-name", "outage", "--env-manager", "local"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while time.time() < deadline and not [k for k in keys(s3["url"], "outage/") if "/checkpoints/ckpt-" in k]:
        time.sleep(0.2)
    uploaded = len(keys(s3["url"], "outage/"))
    services.down(s3["root"])  # the S3 server goes away mid-run
    out, err = proc.communicate(timeout=600)
    assert proc.returncode != 0, f"the run survived the outage ({uploaded} objects were up before it): {out[-1500:]}"
    assert "i2x: error:" in err, err[-3000:]
    doctor = [sys.executable, "-m", "i2x.cli", "doctor", "--work", str(tmp_path / "work"), "--verify"]
    after_outage = subprocess.run(doctor, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert after_outage.returncode == 0, after_outage.stdout[-2000:]  # no run left RUNNING, every checkpoint whole

    services.up(s3["root"], s3["stack"][:1])  # back, with its data
    out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    _, stages = runs_by_stage(env, exp)
    assert_contract(keys(s3["url"], "outage/"), "outage/", stages)
    assert stages["train"].data.tags.get("i2x.resumed_from_step")  # training was not redone
    after_rerun = subprocess.run(doctor, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert after_rerun.returncode == 0, after_rerun.stdout[-2000:]  # every FINISHED run's manifest matches S3, hash for hash


def test_compose_file_matches_the_native_stack(tmp_path, monkeypatch):
    import yaml

    committed = (ROOT / "docker" / "docker-compose.yml").read_text()
    assert committed == services.compose_yaml(), "regenerate with: i2x services compose > docker/docker-compose.yml"
    spec = yaml.safe_load(committed)
    svc = spec["services"]
    assert {"minio", "create-bucket", "postgres", "mlflow", "dashboard", "proxy", "worker"} == set(svc)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "y")
    native = {s.name: s for s in services.local_stack(tmp_path)}
    # same server flags and ports as the native stack, differing only in host and backend
    mlflow_cmd = svc["mlflow"]["command"]
    assert mlflow_cmd[mlflow_cmd.index("--artifacts-destination") + 1] == native["mlflow"].command[native["mlflow"].command.index("--artifacts-destination") + 1]
    assert "--serve-artifacts" in mlflow_cmd and "--serve-artifacts" in native["mlflow"].command
    loopback = "${I2X_BIND:-127.0.0.1}"  # published on the host's loopback unless I2X_BIND is set
    # MLflow and the dashboard are published through the authenticating proxy only, on the native ports
    assert svc["proxy"]["ports"] == [f"{loopback}:{native[name].port}:{native[name].port}" for name in ("mlflow", "dashboard")]
    assert svc["mlflow"]["expose"] == [str(native["mlflow"].port)] and svc["dashboard"]["expose"] == [str(native["dashboard"].port)]
    assert svc["minio"]["ports"][0] == f"{loopback}:{native['s3'].port}:9000"
    # nothing is published on every interface by default: each published port names the bind address
    published = [port for service in svc.values() for port in service.get("ports", [])]
    assert published and all(port.startswith(loopback + ":") for port in published)
    # the PostgreSQL password reaches the servers through the environment, never their argv
    assert svc["mlflow"]["environment"]["MLFLOW_BACKEND_STORE_URI"].startswith("postgresql://")
    for name, service in svc.items():
        assert "POSTGRES_PASSWORD" not in json.dumps(service.get("command", "")), name
        assert "POSTGRES_PASSWORD" not in json.dumps(service.get("entrypoint", "")), name
    assert svc["worker"]["command"][:3] == ["i2x", "tune", "--worker"] and svc["worker"]["deploy"]["replicas"] >= 2
    assert set(spec["volumes"]) == {"minio-data", "postgres-data"}
    assert all("healthcheck" in svc[name] for name in ("minio", "postgres", "mlflow"))
    # credentials only through ${...} from .env, never literal
    env_example = (ROOT / "docker" / ".env.example").read_text()
    for name in ("MINIO_ROOT_USER", "MINIO_ROOT_PASSWORD", "POSTGRES_USER", "POSTGRES_PASSWORD", "I2X_UI_USER", "I2X_UI_PASSWORD"):
        assert f"{name}=" in env_example and "${" + name + ":?set " + name + " in docker/.env}" in committed
    assert os.path.exists(ROOT / "docker" / "Dockerfile")


def test_services_up_requires_credentials_from_the_environment(tmp_path, monkeypatch):
    from i2x.platform.errors import I2XError

    monkeypatch.delenv("AWS_ACCESS_KEY_ID", raising=False)
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY", raising=False)
    with pytest.raises(I2XError, match="set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"):
        services.local_stack(tmp_path)


def _service_groups(root: Path) -> set[int]:
    """Process groups of the processes working in ``root`` (each service leads its own)."""
    groups = set()
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and os.readlink(proc / "cwd") == str(root):
                groups.add(os.getpgid(int(proc.name)))
        except OSError:
            continue
    return groups


def test_services_up_twice_at_once_on_one_root_starts_one_stack(tmp_path):
    """Issue 23: two `i2x services up` on one root at the same moment both read "nothing
    running" and both started every server: the second set died on ports in use and overwrote
    the first's pids. Now the second waits for the first and finds the stack up; a third `up`
    changes nothing; `down` stops every process."""
    root = tmp_path / "stack"
    env = {**cli_env(tmp_path), "AWS_ACCESS_KEY_ID": KEY, "AWS_SECRET_ACCESS_KEY": SECRET}
    args = [sys.executable, "-m", "i2x.cli", "services", "up", "--root", str(root), "--s3-port", str(free_s3_port()),
            "--mlflow-port", str(free_port()), "--dashboard-port", str(free_port())]
    try:
        both = [subprocess.Popen(args, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
        outs = [p.communicate(timeout=300) for p in both]
        assert [p.returncode for p in both] == [0, 0], [o[1][-1500:] for o in outs]
        pids = json.loads((root / "pids.json").read_text())
        assert sorted(pids) == ["dashboard", "mlflow", "s3"]
        assert _service_groups(root) == {entry[0] for entry in pids.values()}  # one of each, each still running
        assert not [log.name for log in (root / "logs").iterdir() if "already in use" in log.read_text(errors="replace")]
        again = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
        assert again.returncode == 0, again.stderr[-1500:]
        assert json.loads((root / "pids.json").read_text()) == pids
        status = subprocess.run([*args[:4], "status", *args[5:]], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
        assert [line.split()[:2] for line in status.stdout.splitlines()] == [["s3", "up"], ["mlflow", "up"], ["dashboard", "up"]], status.stdout
    finally:
        down = subprocess.run([sys.executable, "-m", "i2x.cli", "services", "down", "--root", str(root)],
                              cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert down.returncode == 0 and sorted(down.stdout.removeprefix("stopped: ").strip().split(", ")) == ["dashboard", "mlflow", "s3"], down.stdout
    time.sleep(1)
    assert _service_groups(root) == set()
