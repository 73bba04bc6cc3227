"""`make up` as a user runs it (``python -m provision_app.lab up``: moto, a NETCONF device, an FRR
router in its namespace, the controller and the app with its Envoys): a release, Ctrl-C, `make up`
again serves the same version with the peers' state kept; `switchback down` from another
terminal stops everything `make up` started; nothing is left behind (processes, namespaces,
/tmp folders)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest
import yaml

from tests.eventually import eventually

from .conftest import APP, ROOT, SWITCHBACK, lab

TOKEN = "dev-token"


def processes_of(path: Path) -> list[str]:
    """Live processes whose command line names ``path``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z" and any(str(path).encode() in a for a in argv):
            found.append(f"{entry.name}: {b' '.join(argv).decode(errors='replace')[:200]}")
    return found


def socket_folder(device_dir: Path) -> Path:
    """netconfd's socket folder in /tmp, as the device's sshd knows it."""
    return next(
        Path(line.split("@", 1)[1]).parent
        for line in (device_dir / "sshd_config").read_text().splitlines()
        if line.startswith("Subsystem netconf")
    )


def listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def netns_exists(name: str) -> bool:
    return Path("/run/netns", name).exists()


class MakeUp:
    """One `make up` (the lab's `up`, as the Makefile runs it), its output in a file."""

    def __init__(self, data: Path, port: int, n: int) -> None:
        self.data, self.port = data, port
        self.out = data.parent / f"make-up-{n}.log"
        env = {**os.environ, "SWITCHBACK_ADMIN_TOKENS": f"dev={TOKEN}",
               "PYTHONPATH": str(APP), "QUICKSTART_DIR": str(data / "quickstart-inventory")}  # fmt: skip
        with self.out.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "provision_app.lab", "up", "--app", str(APP),
                 "--data", str(data), "--port", str(port)],
                stdout=out, stderr=subprocess.STDOUT, env=env, cwd=ROOT, start_new_session=True,
            )  # fmt: skip
        eventually(self.serving, timeout=180, what="make up serving")

    def serving(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"make up exited {self.proc.returncode}:\n{self.output()}")
        return "switchback serves" in self.output()

    def output(self) -> str:
        return self.out.read_text(errors="replace")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def lab(self) -> dict:
        workdir = self.data / "provision-lab"
        return {
            "env": yaml.safe_load((workdir / "lab.yaml").read_text())["env"],
            "devices": yaml.safe_load((workdir / "devices.yaml").read_text())["devices"],
            "sockdir": socket_folder(workdir / "leaf1"),
        }

    def stop(self) -> None:
        """After a failed test: Ctrl-C first (it stops its peers, which live in their own process
        groups), SIGKILL only if that does not end it."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGINT)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)


def switchback(*args: str, data: Path, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SWITCHBACK), *args, "--data", str(data)], capture_output=True, text=True,
        timeout=timeout, env={**os.environ, "COLUMNS": "250"}, cwd=ROOT,
    )  # fmt: skip


@pytest.fixture
def data(tmp_path: Path) -> Iterator[Path]:
    data = tmp_path / "data"
    try:
        yield data
    finally:  # whatever the test did: stop what is left
        switchback("down", data=data)


def left_behind(data: Path, lab_state: dict) -> list[str]:
    left = processes_of(data)
    edge1 = lab_state["devices"].get("edge1")
    if edge1 and netns_exists(edge1["netns"]):
        left.append(f"netns {edge1['netns']}")
    if lab_state["sockdir"].exists():
        left.append(f"folder {lab_state['sockdir']}")
    moto_port = int(lab_state["env"]["AWS_ENDPOINT_URL"].rsplit(":", 1)[1])
    if listening(moto_port):
        left.append(f"moto still on {moto_port}")
    return left


def test_make_up_release_stop_make_up_again_then_down_from_another_terminal(
    data: Path, tmp_path: Path
) -> None:
    if lab.netconf_available() or not lab.moto_available():
        pytest.skip(f"the lab's peers cannot run here: {lab.netconf_available()}")
    port = lab.free_port()
    first = MakeUp(data, port, 1)
    try:
        r = httpx.post(f"{first.url}/foo/bar", json=json.loads((APP / "request.json").read_text()),
                       timeout=60)  # fmt: skip
        assert r.status_code == 200, r.text
        vm = r.json()["result"]["instance_id"]
        xid = r.json()["xid"]
        res = switchback("release", "start", "--version", "v2", "--app", str(APP), data=data)
        assert res.returncode == 0, res.stdout + res.stderr
        state = first.lab()
        first.proc.send_signal(signal.SIGINT)  # Ctrl-C
        assert first.proc.wait(120) == 0, first.output()
    finally:
        first.stop()
    assert left_behind(data, state) == []

    second = MakeUp(data, port, 2)
    try:
        r = httpx.post(f"{second.url}/foo/bar", json={**json.loads((APP / "request.json").read_text()),
                       "vm_name": "web-9", "interface": "vm-web-9"}, timeout=60)  # fmt: skip
        assert r.status_code == 200, r.text
        assert r.headers["x-switchback-version"] == "v2"  # the same current version
        # The first transaction's VM is still there: moto's state was kept.
        env = second.lab()["env"]
        ec2 = boto3.client("ec2", endpoint_url=env["AWS_ENDPOINT_URL"],
                           region_name=env["AWS_DEFAULT_REGION"], aws_access_key_id="testing",
                           aws_secret_access_key="testing")  # fmt: skip
        found = ec2.describe_instances(Filters=[{"Name": "tag:switchback:xid", "Values": [xid]}])
        ids = [i["InstanceId"] for rv in found["Reservations"] for i in rv["Instances"]]
        assert len(ids) == 1 and ids == [vm], found
        state = second.lab()
        # `switchback down` in another terminal stops `make up` too: it does not go on serving.
        res = switchback("down", data=data)
        assert res.returncode == 0, res.stdout + res.stderr
        assert second.proc.wait(120) == 0, second.output()
        assert "the platform was stopped" in second.output()
    finally:
        second.stop()
    assert left_behind(data, state) == []


def test_moto_keeps_its_state_across_a_restart(tmp_path: Path) -> None:
    if not lab.moto_available():
        pytest.skip("moto_server is not installed")
    state = tmp_path / "moto-state.jsonl"

    def ec2(moto: lab.Moto) -> Any:
        return boto3.client("ec2", endpoint_url=moto.url, region_name=moto.region,
                            aws_access_key_id="testing", aws_secret_access_key="testing")  # fmt: skip

    def instances(moto: lab.Moto) -> dict[str, str]:
        found = ec2(moto).describe_instances()["Reservations"]
        return {i["InstanceId"]: i["State"]["Name"] for r in found for i in r["Instances"]}

    moto = lab.start_moto(tmp_path, state=state)
    try:
        client = ec2(moto)
        kept, gone = (
            client.run_instances(ImageId="ami-12345678", MinCount=1, MaxCount=1)["Instances"][0][
                "InstanceId"
            ]
            for _ in range(2)
        )
        client.terminate_instances(InstanceIds=[gone])
        before = instances(moto)
    finally:
        moto.stop()
    moto = lab.start_moto(tmp_path, state=state)  # another port, the same state
    try:
        assert instances(moto) == before
        assert before[kept] == "running" and before[gone] == "terminated"
        new = ec2(moto).run_instances(ImageId="ami-12345678", MinCount=1, MaxCount=1)
        assert new["Instances"][0]["InstanceId"] not in before
    finally:
        moto.stop()


def test_a_stopped_netconf_device_leaves_no_folder_in_tmp(tmp_path: Path) -> None:
    why = lab.netconf_available()
    if why:
        pytest.skip(f"NETCONF device: {why}")
    device = lab.start_netconf_device(tmp_path / "leaf")
    folder = socket_folder(tmp_path / "leaf")
    assert folder.is_dir()
    device.stop()
    assert not folder.exists()
