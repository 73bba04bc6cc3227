"""The CLI against a running platform (`switchback up examples/ping`: the controller, every role
with its Envoy sidecar, the ingress): `tx` commands find the environment's store, `xds status`
finds the controller's control plane, releases show each step as it runs, Ctrl-C says that the
release goes on, `up` prints no secret."""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from switchback.release.client import ControllerClient
from switchback.runtime import processes
from tests.cli.conftest import ROOT, SWITCHBACK, Runner, clean_env, piped
from tests.eventually import eventually

PING = ROOT / "examples" / "ping"
pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    data = tmp_path_factory.mktemp("platform") / ".switchback"
    up = subprocess.run(
        [*SWITCHBACK, "up", str(PING), "--data", str(data)],
        capture_output=True, text=True, timeout=240, env=clean_env(COLUMNS="80"),
    )  # fmt: skip
    ctl = ControllerClient(data)
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        (data / "up.txt").write_text(up.stdout)
        yield data
    finally:
        info = ctl.info if (data / "controller.json").exists() else None
        ctl.down()
        if info and processes.alive(info["pid"]):
            processes.stop(info["pid"])


def public_url(data: Path) -> str:
    runner = Runner()
    res = runner.run("release", "status", "--data", str(data))
    (line,) = [x for x in res.stdout.splitlines() if x.startswith("public ")]
    return line.split()[1]


def test_up_prints_what_a_person_needs_and_no_secret(platform: Path) -> None:
    text = (platform / "up.txt").read_text()
    info = ControllerClient(platform).info
    assert info["app_token"] not in text and info["token"] not in text
    assert "controller=" not in text
    assert "admin API:" in text


def test_tx_commands_find_the_environment(platform: Path, tmp_path: Path) -> None:
    r = httpx.post(f"{public_url(platform)}/ping", json={"n": 7}, timeout=30)
    assert r.status_code == 200, r.text
    xid = r.json()["xid"]
    done = piped("tx", "list", "--data", str(platform), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert xid in done.stdout.split()
    assert done.stderr.startswith("environment production of the platform in "), done.stderr
    quiet = piped("tx", "list", "-q", "--data", str(platform), cwd=tmp_path)
    assert xid in quiet.stdout.split() and quiet.stderr == ""
    shown = piped("tx", "show", xid, "--data", str(platform), cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.splitlines()[0] == f"xid {xid}"
    plan = piped("tx", "plan", xid, "--data", str(platform), cwd=tmp_path)
    assert plan.stdout.splitlines()[-1] == "no decision applies: nothing would run", plan.stdout
    wrong = piped("tx", "list", "--env", "staging", "--data", str(platform), cwd=tmp_path)
    assert wrong.returncode == 1
    assert "has no environment 'staging' (have: production)" in wrong.stderr


def test_xds_status_finds_the_controller(platform: Path, tmp_path: Path) -> None:
    done = piped("xds", "status", "--data", str(platform), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stderr.startswith("nodes of the controller in "), done.stderr
    assert "production.apigw.v1.0" in done.stdout and "sidecar/apigw/v1" in done.stdout
    one = piped("xds", "status", "-s", "role=scenario", "--data", str(platform), cwd=tmp_path)
    assert "production.scenario.v1.0" in one.stdout
    assert "production.apigw.v1.0" not in one.stdout, "the selector is applied"
    nowhere = piped("xds", "status", "--data", str(tmp_path / "none"), cwd=tmp_path,
                    SWITCHBACK_XDS_ADMIN="http://127.0.0.1:9")  # fmt: skip
    assert nowhere.returncode == 2
    assert "cannot reach the control plane at http://127.0.0.1:9/nodes" in nowhere.stderr


def test_release_shows_each_step_and_ctrl_c_leaves_it_running(
    platform: Path, tmp_path: Path
) -> None:
    env = clean_env(COLUMNS="80")
    start = [*SWITCHBACK, "release", "start", "--app", str(PING), "--data", str(platform),
             "--drain-timeout", "2"]  # fmt: skip
    done = subprocess.run([*start, "--version", "v2"], capture_output=True, text=True,
                          env=env, timeout=240)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    steps = [line.split()[1:] for line in done.stdout.splitlines() if line.strip()[:1].isdigit()]
    assert ["0", "deploy_new", "running"] in steps
    assert steps[-1] == ["6", "retire_old", "done"]
    assert done.stdout.splitlines()[-1].startswith("release ")
    assert "(v1 → v2): completed after " in done.stdout
    status = piped("release", "status", "--data", str(platform), cwd=tmp_path)
    (row,) = [line for line in status.stdout.splitlines() if "v1 → v2" in line]
    assert row.split()[-2:] == ["completed", "retire_old"]

    # Ctrl-C while it runs: the CLI stops following, says so, and the release goes on.
    follow = subprocess.Popen([*start, "--version", "v3"], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=env)  # fmt: skip
    try:
        assert follow.stdout is not None
        first = follow.stdout.readline()
        assert first.split()[1:] == ["0", "deploy_new", "running"], first
        follow.send_signal(signal.SIGINT)
        _, err = follow.communicate(timeout=60)
    finally:
        if follow.poll() is None:
            follow.kill()
    assert follow.returncode == 130, err
    assert "goes on in the controller" in err and "switchback release abort" in err
    watched = piped("release", "watch", "--data", str(platform), cwd=tmp_path)
    assert watched.returncode == 0, watched.stdout + watched.stderr
    assert "(v2 → v3): completed" in watched.stdout

    def current() -> str:
        out = piped("release", "status", "--data", str(platform), cwd=tmp_path).stdout
        return out.splitlines()[0]

    assert eventually(lambda: current() == "production: current v3", timeout=30)
