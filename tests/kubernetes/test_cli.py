"""`switchback k8s ...` as a user runs it: the output, and a clear error for each kind of bad
input. `prestop` drains a real Envoy."""

from __future__ import annotations

import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml
from typer.testing import CliRunner

from switchback.cli import k8s as k8s_cli
from switchback.runtime.processes import free_port
from switchback.xds.sidecar import find_envoy
from tests.eventually import eventually

REPO = Path(__file__).resolve().parents[2]
APP = REPO / "examples" / "quickstart"


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


def sb(*args: str) -> Result:
    """``switchback k8s ...`` in this process (the command module's own Typer app)."""
    assert args[0] == "k8s"
    r = CliRunner().invoke(k8s_cli.app, list(args[1:]))
    if r.exception and not isinstance(r.exception, SystemExit):
        raise r.exception
    return Result(r.exit_code, r.stdout, r.stderr)


def test_the_k8s_group_is_on_the_switchback_command() -> None:
    r = subprocess.run(
        [sys.executable, "-m", "switchback.cli", "k8s", "--help"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert r.returncode == 0 and "no image is built here" in " ".join(r.stdout.split())


def test_render_prints_multi_document_yaml() -> None:
    r = sb("k8s", "render", str(APP), "-e", "staging", "--version", "v3", "--replicas",
           "apigw=3", "--app-cpu", "200m/2", "--envoy-memory", "/300Mi")  # fmt: skip
    assert r.returncode == 0, r.stderr
    docs = list(yaml.safe_load_all(r.stdout))
    assert len(docs) == 1 + 6 + 8 + 2
    dep = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "apigw-v3")
    assert dep["metadata"]["namespace"] == "staging" and dep["spec"]["replicas"] == 3
    assert dep["metadata"]["labels"]["app"] == "quickstart"  # the folder's name by default
    (app,) = dep["spec"]["template"]["spec"]["containers"]
    assert app["image"] == "quickstart:v3"
    assert app["resources"] == {"requests": {"cpu": "200m", "memory": "256Mi"},
                                "limits": {"cpu": "2", "memory": "512Mi"}}  # fmt: skip
    (envoy,) = dep["spec"]["template"]["spec"]["initContainers"]
    assert envoy["resources"]["limits"]["memory"] == "300Mi"


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["-e", "Prod", "--version", "v1"], 1, "invalid environment"),
        (["-e", "prod", "--version", "v1.0"], 1, "invalid version"),
        (["-e", "prod", "--version", "v1", "--slot", "old"], 1, "unknown slot"),
        (["-e", "prod", "--version", "v1", "--replicas", "apigw=0"], 2, "ROLE=N"),
        (["-e", "prod", "--version", "v1", "--xds", "nohost"], 2, "HOST:PORT"),
        (["-e", "prod", "--version", "v1", "--db-secret", ":url"], 2, "NAME or NAME:KEY"),
        (["-e", "prod", "--version", "v1", "--app-cpu", "fast"], 1, "quantity"),
        (["--version", "v1"], 2, "--environment"),
    ],
)
def test_render_refuses_bad_input(args: list[str], code: int, message: str) -> None:
    r = sb("k8s", "render", str(APP), *args)
    assert r.returncode == code, r.stdout
    assert message in " ".join(r.stderr.split()), r.stderr
    assert r.stdout == ""  # nothing half-printed for kubectl to apply


def test_render_refuses_a_broken_app(tmp_path: Path) -> None:
    (tmp_path / "scenarios").mkdir()
    (tmp_path / "scenarios" / "x.yaml").write_text("name: x\nblocks: 12\n")
    r = sb("k8s", "render", str(tmp_path), "-e", "prod", "--version", "v1")
    assert r.returncode == 1 and "problem" in r.stderr and r.stdout == ""
    r = sb("k8s", "render", str(tmp_path / "nope"), "-e", "prod", "--version", "v1")
    assert r.returncode == 2


def test_install_prints_and_refuses_bad_input() -> None:
    r = sb("k8s", "install", "-e", "production", "-e", "staging", "-n", "sb")
    assert r.returncode == 0, r.stderr
    kinds = [(d["kind"], d["metadata"].get("namespace")) for d in yaml.safe_load_all(r.stdout)]
    assert ("Role", "staging") in kinds and ("Deployment", "sb") in kinds
    r = sb("k8s", "install", "-e", "sb", "-n", "sb")
    assert r.returncode == 1 and "cannot also be an environment" in r.stderr


def app_copy(tmp_path: Path, lock: str | None) -> Path:
    app = tmp_path / "app"
    shutil.copytree(APP, app)
    if lock is not None:
        (app / "requirements.lock").write_text(lock)
    return app


HASHED = (
    "switchback==0.1.0 \\\n    --hash=sha256:" + "a" * 64 + "\n"
    "pyyaml==6.0.2 \\\n    --hash=sha256:" + "b" * 64 + "\n"
)


def test_dockerfile_is_written_for_a_locked_app(tmp_path: Path) -> None:
    app = app_copy(tmp_path, HASHED)
    r = sb("k8s", "dockerfile", str(app))
    assert r.returncode == 0, r.stderr
    text = (app / "Dockerfile").read_text()
    assert "FROM python:3.11-slim AS build" in text
    assert "pip install --no-deps --require-hashes -r /tmp/requirements.lock" in text
    assert "USER 10001:10001" in text and "COPY . /app" in text
    assert 'ENTRYPOINT ["switchback", "serve", "/app"]' in text
    assert ".venv" in (app / ".dockerignore").read_text()
    assert "no container engine" not in r.stderr and "docker build" in r.stderr
    # Not overwritten without --force; --force does; '-' prints.
    r = sb("k8s", "dockerfile", str(app))
    assert r.returncode == 1 and "exists" in r.stderr
    assert sb("k8s", "dockerfile", str(app), "--force", "--python", "3.12").returncode == 0
    assert "python:3.12-slim" in (app / "Dockerfile").read_text()
    r = sb("k8s", "dockerfile", str(app), "-o", "-")
    assert r.stdout.startswith("# syntax=docker/dockerfile:1")


@pytest.mark.parametrize(
    ("lock", "args", "message"),
    [
        (None, [], "has no requirements.lock"),
        ("pyyaml==6.0.2\n", [], "does not pin switchback"),
        ("switchback==0.1.0\n", ["--python", "3.9"], "3.11 or newer"),
    ],
)
def test_dockerfile_refuses(
    tmp_path: Path, lock: str | None, args: list[str], message: str
) -> None:
    app = app_copy(tmp_path, lock)
    r = sb("k8s", "dockerfile", str(app), *args)
    assert r.returncode == 1 and message in " ".join(r.stderr.split()), r.stderr
    assert not (app / "Dockerfile").exists()


def test_dockerfile_without_hashes_installs_without_require_hashes(tmp_path: Path) -> None:
    app = app_copy(tmp_path, "switchback==0.1.0\npyyaml==6.0.2\n")
    r = sb("k8s", "dockerfile", str(app), "-o", "-")
    assert r.returncode == 0 and "--require-hashes" not in r.stdout


def test_prestop_drains_the_sidecar(tmp_path: Path) -> None:
    """After the hook, every response of the sidecar says `connection: close` (its keep-alive
    clients reconnect elsewhere), while new connections are still served."""
    admin, port = free_port(), free_port()
    config = {
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin}}},
        "static_resources": {"listeners": [{
            "name": "inbound",
            "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
            "filter_chains": [{"filters": [{
                "name": "envoy.filters.network.http_connection_manager",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.network."
                             "http_connection_manager.v3.HttpConnectionManager",
                    "stat_prefix": "inbound",
                    "route_config": {"virtual_hosts": [{"name": "a", "domains": ["*"], "routes": [
                        {"match": {"prefix": "/"}, "direct_response": {"status": 200}}]}]},
                    "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}],
                }}]}],
        }]},
    }  # fmt: skip
    cfg = tmp_path / "envoy.yaml"
    cfg.write_text(yaml.safe_dump(config))
    # As in the pod: listeners stay open (draining) long after the hook has run.
    envoy = subprocess.Popen(
        [find_envoy(), "-c", str(cfg), "--drain-time-s", "30", "--drain-strategy", "immediate",
         "--disable-hot-restart", "-l", "warning"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        eventually(
            lambda: httpx.get(f"http://127.0.0.1:{admin}/ready").status_code == 200,
            timeout=30,
            what="envoy ready",
        )
        url = f"http://127.0.0.1:{port}/"
        assert "close" not in httpx.get(url).headers.get("connection", "")
        r = sb("k8s", "prestop", "--admin-port", str(admin), "--sleep", "0")
        assert r.returncode == 0, r.stderr
        resp = eventually(lambda: httpx.get(url), what="a response after the drain")
        assert resp.status_code == 200 and resp.headers["connection"] == "close"
    finally:
        envoy.kill()
        envoy.wait()


def test_prestop_without_a_sidecar_still_returns() -> None:
    r = sb("k8s", "prestop", "--admin-port", str(free_port()), "--sleep", "0")
    assert r.returncode == 0 and "envoy drain" in r.stderr
