"""The native stack's process handling, without starting the real servers."""

import re
import sys

import pytest

from i2x.platform import services
from i2x.platform.errors import I2XError


def _ports(flags):
    return {flag.split("=")[0]: int(flag.split("=")[1]) for flag in flags if re.match(r"-[\w.]+port[\w.]*=", flag)}


@pytest.mark.parametrize("s3_port", [8333, 25000, 65535 - services.WEED_SPAN])
def test_every_weed_listener_is_pinned_inside_its_span(s3_port):
    ports = _ports(services.weed_port_flags(s3_port))
    listening = {name: port for name, port in ports.items() if port}
    # one HTTP and one gRPC listener for each of s3, master, volume, filer and admin
    assert len(listening) == 10
    assert len(set(listening.values())) == 10
    assert all(s3_port <= port < s3_port + services.WEED_SPAN for port in listening.values())
    assert ports["-s3.port.iceberg"] == 0 and ports["-s3.port.lance"] == 0


@pytest.mark.parametrize("s3_port", [0, 65535 - services.WEED_SPAN + 1, 65000])
def test_an_s3_port_without_room_for_weed_is_refused(s3_port):
    with pytest.raises(I2XError, match="S3 port .* out of range.*choose a port from 1024"):
        services.weed_port_flags(s3_port)


def test_a_service_that_dies_at_start_says_why_in_the_error(tmp_path, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "y")
    crash = [sys.executable, "-c", "import sys; print('starting'); print('F1126 bind: address already in use 127.0.0.1:9'); sys.exit(3)"]
    svc = services.Service("s3", 9, crash, "http://127.0.0.1:9/", {})
    with pytest.raises(I2XError) as err:
        services.up(tmp_path, [svc], timeout=30)
    assert "exited with 3" in str(err.value) and "address already in use 127.0.0.1:9" in str(err.value)


def test_the_team_stack_binds_to_loopback_by_default_with_pinned_images_and_no_root():
    import yaml

    from .conftest import ROOT

    compose = yaml.safe_load((ROOT / "docker" / "docker-compose.yml").read_text())
    # Inside its container a server listens on 0.0.0.0 (else the port mapping cannot reach
    # it); what matters is the host side, which is loopback unless I2X_BIND says otherwise.
    published = [p for svc in compose["services"].values() for p in svc.get("ports", [])]
    assert published and all(str(p).startswith("${I2X_BIND:-127.0.0.1}:") for p in published), published
    for name, svc in compose["services"].items():
        if "image" in svc:  # an exact release, never a floating tag
            assert re.search(r":(RELEASE\.|\d+\.\d+)", svc["image"]) and not svc["image"].endswith(":latest"), (name, svc["image"])
        command = " ".join(map(str, svc.get("command", []) if isinstance(svc.get("command"), list) else [svc.get("command", "")]))
        assert not re.search(r"://[^:$/\s]*:[^$@\s]+@", command), f"{name}: a password literal in argv"
    # MLflow and the dashboard, which have no authentication, are reached only through the proxy
    assert "ports" not in compose["services"]["mlflow"] and "ports" not in compose["services"]["dashboard"]
    proxy = compose["services"]["proxy"]
    assert proxy["environment"]["I2X_UI_PASSWORD"].startswith("${I2X_UI_PASSWORD:?") and proxy["user"] != "root"
    assert (ROOT / "docker" / "Caddyfile").read_text() == services.caddyfile(), "regenerate with: i2x services caddyfile > docker/Caddyfile"
    dockerfile = (ROOT / "docker" / "Dockerfile").read_text()
    base = re.search(r"^FROM (\S+)", dockerfile, re.M).group(1)
    assert re.fullmatch(r"python:3\.11\.\d+-slim-\w+", base), base
    assert re.search(r"^USER (?!root)\w+", dockerfile, re.M)
    assert "pip install -e" not in dockerfile and "[dev]" not in dockerfile
