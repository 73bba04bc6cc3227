"""Real peers on loopback for the provision example: AWS (moto's server), a NETCONF device
(Debian's ``netconfd`` behind its own ``sshd``) and an FRRouting router in a network namespace
(``provision_app.frr_lab``).

Used by the tests (``tests/examples/conftest.py``) and by ``make up``
(``python -m provision_app.lab up``). Every process is started in its own process group on a free
loopback port chosen at run time, readiness is polled with a deadline, and ``stop()`` kills the
whole group. Nothing here is needed in production: there the settings point at real AWS and real
devices (see ``examples/provision/README.md``).
"""

from __future__ import annotations

import argparse
import contextlib
import getpass
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

if TYPE_CHECKING:
    from provision_app.frr_lab import FrrRouter

NETCONFD = "/usr/sbin/netconfd"
SUBSYSTEM = "/usr/sbin/netconf-subsystem"
SSHD = "/usr/sbin/sshd"
POLL = 0.05  # seconds between readiness checks (polling interval, never a synchronisation)


class LabError(RuntimeError):
    """A peer could not be started."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


@dataclass
class Proc:
    """A process started in its own session (= process group), stopped as a group."""

    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    def alive(self) -> bool:
        return self.popen.poll() is None

    def check(self) -> None:
        if not self.alive():
            raise LabError(
                f"{self.name} exited ({self.popen.returncode}):\n{self.log.read_text()[-3000:]}"
            )

    def stop(self, grace: float = 5.0) -> None:
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(grace)
            except subprocess.TimeoutExpired:
                pass
        # The group may hold children (sshd's per-connection processes) even after the leader left.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(5)


def spawn(name: str, cmd: list[str], log: Path, env: dict[str, str] | None = None) -> Proc:
    with log.open("ab") as out:
        popen = subprocess.Popen(
            cmd,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
            start_new_session=True,
        )
    return Proc(name, popen, log)


def wait_until(what: str, ready: Callable[[], bool], procs: list[Proc], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for p in procs:
            p.check()
        if ready():
            return
        time.sleep(POLL)
    logs = "\n".join(f"--- {p.name}:\n{p.log.read_text()[-2000:]}" for p in procs)
    raise LabError(f"{what} not ready within {timeout}s\n{logs}")


# --------------------------------------------------------------------------------------- AWS


@dataclass
class Moto:
    proc: Proc
    url: str
    region: str = "us-east-1"

    def env(self) -> dict[str, str]:
        """boto3's own settings (the app reads nothing else): moto's dummy credentials."""
        return {
            "AWS_ENDPOINT_URL": self.url,
            "AWS_DEFAULT_REGION": self.region,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
        }

    def stop(self) -> None:
        self.proc.stop()


def moto_available() -> bool:
    return _moto_server() is not None


def _moto_server() -> str | None:
    beside = Path(sys.executable).parent / "moto_server"
    return str(beside) if beside.exists() else shutil.which("moto_server")


MOTO_STATE = "moto-state.jsonl"  # in the lab's folder (make up's DATA/provision-lab)
MOTO_SEED = 20240611  # any fixed number: with it, replaying the recording gives the same ids


def start_moto(workdir: Path, timeout: float = 30.0, state: Path | None = None) -> Moto:
    """moto's server on a free port. moto keeps its state in memory; with ``state`` (a file) it
    survives a restart: moto's recorder appends every request to the file, and a later start
    replays it. Resource ids stay the same because the first recorded request seeds moto's
    random generator (``/moto-api/seed``), and a replay repeats the same requests in order."""
    exe = _moto_server()
    if exe is None:
        raise LabError("moto_server not found: pip install 'moto[server]'")
    port = free_port()
    env = (
        {"MOTO_ENABLE_RECORDING": "True", "MOTO_RECORDER_FILEPATH": str(state.resolve())}
        if state
        else {}
    )
    proc = spawn(
        "moto_server", [exe, "-H", "127.0.0.1", "-p", str(port)], workdir / "moto.log", env=env
    )
    moto = Moto(proc, f"http://127.0.0.1:{port}")
    try:
        wait_until("moto_server", lambda: _port_open(port), [proc], timeout)
        if state:
            _restore_moto(moto, state, timeout)
    except BaseException:
        proc.stop()
        raise
    return moto


def _restore_moto(moto: Moto, state: Path, timeout: float) -> None:
    import httpx

    with httpx.Client(base_url=moto.url, timeout=timeout) as client:
        if state.exists() and state.stat().st_size > 0:
            r = client.post("/moto-api/recorder/replay-recording")
        else:
            r = client.post("/moto-api/seed", params={"a": MOTO_SEED})  # recorded: replayed first
    if r.status_code != 200:
        raise LabError(f"moto_server could not restore {state}: {r.status_code} {r.text[:500]}")


# ------------------------------------------------------------------------------ NETCONF device


@dataclass
class NetconfDevice:
    """netconfd (running datastore, ietf-interfaces) reached through sshd's netconf subsystem."""

    name: str
    host: str
    port: int
    username: str
    key_filename: Path
    known_hosts: Path
    workdir: Path
    procs: list[Proc] = field(default_factory=list)
    sockdir: Path | None = None  # netconfd's socket folder in /tmp, removed by stop()

    def settings(self, timeout: float = 10.0) -> dict[str, Any]:
        """This device's entry in the app's device inventory."""
        return {
            "host": self.host,
            "port": self.port,
            "username": self.username,
            "key_filename": str(self.key_filename),
            "known_hosts": str(self.known_hosts),
            "timeout": timeout,
        }

    def alive(self) -> bool:
        return all(p.alive() for p in self.procs)

    def stop(self) -> None:
        for p in reversed(self.procs):
            p.stop()
        self.procs.clear()
        if self.sockdir is not None:
            shutil.rmtree(self.sockdir, ignore_errors=True)
            self.sockdir = None


def netconf_available() -> str | None:
    """None when a NETCONF device can be started here, else why not."""
    missing = [p for p in (NETCONFD, SUBSYSTEM, SSHD) if not Path(p).exists()]
    if missing:
        return f"missing {', '.join(missing)} (Debian packages netconfd, openssh-server)"
    if os.geteuid() != 0:
        return "sshd needs root to authenticate users (run as root)"
    return None


def _keygen(path: Path) -> None:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", path.name, "-f", str(path)],
        check=True,
        stdin=subprocess.DEVNULL,
    )


def start_netconf_device(
    workdir: Path, name: str = "leaf1", timeout: float = 30.0
) -> NetconfDevice:
    why = netconf_available()
    if why:
        raise LabError(f"cannot start a NETCONF device: {why}")
    workdir.mkdir(parents=True, exist_ok=True)
    host_key, user_key = workdir / "ssh_host_ed25519_key", workdir / "id_ed25519"
    for key in (host_key, user_key):
        if not key.exists():
            _keygen(key)
    (workdir / "authorized_keys").write_text(Path(f"{user_key}.pub").read_text())
    # netconfd and its subsystem talk over a Unix socket, whose path must stay short (108 bytes):
    # a folder in /tmp, removed by NetconfDevice.stop().
    sockdir = Path(tempfile.mkdtemp(prefix="sbnc-"))
    sock = sockdir / "ncx.sock"
    port = free_port()
    host_pub = Path(f"{host_key}.pub").read_text().split()
    known_hosts = workdir / "known_hosts"
    known_hosts.write_text(f"[127.0.0.1]:{port} {host_pub[0]} {host_pub[1]}\n")
    config = workdir / "sshd_config"
    config.write_text(
        "\n".join(
            [
                "ListenAddress 127.0.0.1",
                f"Port {port}",
                f"HostKey {host_key}",
                f"AuthorizedKeysFile {workdir / 'authorized_keys'}",
                f"PidFile {workdir / 'sshd.pid'}",
                "StrictModes no",
                "UsePAM no",
                "PubkeyAuthentication yes",
                "PasswordAuthentication no",
                "KbdInteractiveAuthentication no",
                "PermitRootLogin prohibit-password",
                "X11Forwarding no",
                "AllowTcpForwarding no",
                # The subsystem finds netconfd's socket by the SSH port it was reached on.
                f"Subsystem netconf {SUBSYSTEM} --ncxserver-sockname={port}@{sock}",
                "",
            ]
        )
    )
    Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege-separation directory
    home = workdir / "netconfd-home"
    home.mkdir(exist_ok=True)
    device = NetconfDevice(
        name, "127.0.0.1", port, getpass.getuser(), user_key, known_hosts, workdir, sockdir=sockdir
    )
    try:
        netconfd = spawn(
            "netconfd",
            [
                NETCONFD,
                "--target=running",
                "--access-control=off",
                "--module=ietf-interfaces",
                "--module=iana-if-type",
                "--no-startup",
                f"--port={port}",
                f"--ncxserver-sockname={sock}",
                "--log-level=info",
            ],
            workdir / "netconfd.log",
            env={"HOME": str(home)},
        )
        device.procs.append(netconfd)
        wait_until("netconfd", sock.exists, device.procs, timeout)
        sshd = spawn("sshd", [SSHD, "-D", "-e", "-f", str(config)], workdir / "sshd.log")
        device.procs.append(sshd)
        wait_until(f"sshd on port {port}", lambda: _port_open(port), device.procs, timeout)
        # Ready = a real NETCONF session gets its hello through sshd to netconfd.
        wait_until(f"NETCONF on port {port}", lambda: _hello(device), device.procs, timeout)
    except BaseException:
        device.stop()
        raise
    return device


def netconf_session(device: NetconfDevice, timeout: float = 10.0) -> Any:
    """An ncclient session to the device (the tests use it to look and to hold locks)."""
    from ncclient import manager

    from provision_app.settings import host_key_b64

    return manager.connect(
        host=device.host,
        port=device.port,
        username=device.username,
        key_filename=str(device.key_filename),
        hostkey_verify=True,
        hostkey_b64=host_key_b64(device.known_hosts, device.host, device.port),
        allow_agent=False,
        look_for_keys=False,
        timeout=timeout,
    )


def _hello(device: NetconfDevice) -> bool:
    try:
        with netconf_session(device, timeout=5) as m:
            return bool(m.session_id)
    except Exception:
        return False


def write_inventory(path: Path, devices: dict[str, dict[str, Any]]) -> None:
    """Write the app's device inventory atomically (the blocks read it on every call)."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(yaml.safe_dump({"devices": devices}, sort_keys=True))
    tmp.replace(path)


# -------------------------------------------------------------------------------- make up


@contextlib.contextmanager
def peers(workdir: Path) -> Iterator[tuple[Moto | None, NetconfDevice | None, list[str]]]:
    """Start what can be started here; yield (moto, device, notes on what could not). moto's
    state (the VMs) is kept in ``moto-state.jsonl`` across restarts: earlier transactions' VMs
    are still there after the next ``make up``."""
    notes: list[str] = []
    moto: Moto | None = None
    device: NetconfDevice | None = None
    try:
        try:
            moto = start_moto(workdir, state=workdir / MOTO_STATE)
        except LabError as exc:
            notes.append(f"AWS peer not started: {exc}")
        why = netconf_available()
        if why:
            notes.append(f"NETCONF device not started: {why}")
        else:
            try:
                device = start_netconf_device(workdir / "leaf1")
            except LabError as exc:
                notes.append(f"NETCONF device not started: {exc}")
        yield moto, device, notes
    finally:
        if device:
            device.stop()
        if moto:
            moto.stop()


@contextlib.contextmanager
def frr_router(workdir: Path, notes: list[str]) -> Iterator[FrrRouter | None]:
    """The FRR router ``edge1`` when it can run here (else None and a note); stopped at the end."""
    from provision_app import frr_lab

    why = frr_lab.frr_available()
    if why:
        notes.append(f"FRR router not started: {why}")
        yield None
        return
    try:
        router = frr_lab.start_frr_router(workdir / "edge1", name="edge1")
    except LabError as exc:
        notes.append(f"FRR router not started: {exc}")
        yield None
        return
    try:
        yield router
    finally:
        router.stop()


def up(app: Path, data: Path, port: int) -> int:
    """Start the peers, then ``switchback serve`` the app in the foreground (Ctrl-C stops all)."""
    workdir = (data / "provision-lab").resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    env: dict[str, str] = {}
    with peers(workdir) as (moto, device, notes), frr_router(workdir, notes) as router:
        inventory = workdir / "devices.yaml"
        devices = {"leaf1": device.settings()} if device else {}
        if router:
            devices["edge1"] = router.settings()
        write_inventory(inventory, devices)
        env["PROVISION_DEVICES"] = str(inventory)
        if moto:
            env.update(moto.env())
        (workdir / "lab.yaml").write_text(yaml.safe_dump({"env": env}))
        for note in notes:
            print(f"warning: {note}", file=sys.stderr)
        url = f"http://127.0.0.1:{port}"
        token = (
            "dev-token"
            if "dev=dev-token" in os.environ.get("SWITCHBACK_ADMIN_TOKENS", "")
            else "$TOKEN"
        )
        sb = str(Path(sys.executable).parent / "switchback")
        # The whole platform: the controller (xDS + runtime) deploys the app as v1 of
        # `production` — every role with its Envoy sidecar, services, and an ingress whose
        # public port is `port`. The instances inherit the peers' settings from `env`.
        stop = _Stop()  # Ctrl-C or SIGTERM from here on: stop the platform, then the peers
        try:
            started = subprocess.run(
                [sb, "up", str(app), "--data", str(data), "--public-port", str(port)],
                env={**os.environ, **env},
            )
            if started.returncode != 0 or stop.requested:
                return started.returncode or 130
            controller = _controller_pid(data)
            print(f"\nswitchback serves {app} at {url}  (Ctrl-C stops it and the peers)")
            if moto:
                print(f"  AWS (moto_server)  {moto.url}")
            if device:
                print(
                    f"  NETCONF device     leaf1: ssh -p {device.port} -i {device.key_filename} "
                    f"{device.username}@127.0.0.1 -s netconf"
                )
            if router:
                print(
                    f"  FRR router         edge1: ip netns exec {router.netns} vtysh -N "
                    f"{router.pathspace}  (or: python -m provision_app.lab vtysh)"
                )
            print(f"  device inventory   {inventory}")
            print("  try (README.md, 'Walkthrough: the provision example'):")
            print(
                f"    curl -s {url}/foo/bar -H 'Content-Type: application/json' -d @{app}/request.json"
            )
            if router:
                route = (
                    '{"router": "edge1", "prefix": "198.51.100.0/24", "next_hop": "192.0.2.254"}'
                )
                print(f"    curl -s {url}/routes -H 'Content-Type: application/json' -d '{route}'")
            print(f"    curl -s {url}/transactions -H 'Authorization: Bearer {token}'")
            print(f"    {sb} release status --data {data}")
            if moto:
                print(
                    f"    env for boto3 / aws cli: {' '.join(f'{k}={v}' for k, v in moto.env().items())}"
                )
            print("", flush=True)
            if stop.wait_or_exit(controller):
                print("stopping the platform and the peers...", flush=True)
            else:
                print(
                    "\nthe platform was stopped (switchback down): stopping the peers...",
                    flush=True,
                )
            return 0
        finally:
            stop.restore()
            # Whatever happened (a failed start, Ctrl-C, an error here): nothing of the platform
            # stays running. `down` is a no-op when the controller is gone already.
            subprocess.run([sb, "down", "--data", str(data)], stdout=subprocess.DEVNULL)


class _Stop:
    """SIGINT/SIGTERM as an event this process can wait for together with another process's
    exit (a pidfd): `make up` ends when the user stops it or when `switchback down` stopped the
    controller from another terminal."""

    def __init__(self) -> None:
        self.requested = False
        self._read, self._write = os.pipe()
        os.set_blocking(self._write, False)
        self._previous = {
            sig: signal.signal(sig, self._handle) for sig in (signal.SIGINT, signal.SIGTERM)
        }

    def _handle(self, signum: int, frame: object) -> None:
        self.requested = True
        with contextlib.suppress(BlockingIOError):
            os.write(self._write, b"x")

    def wait_or_exit(self, pid: int | None) -> bool:
        """Block until a stop is requested (True) or process ``pid`` exits (False)."""
        watched = [self._read]
        pidfd = None
        if pid is not None:
            try:
                pidfd = os.pidfd_open(pid)
            except ProcessLookupError:
                return self.requested
            watched.append(pidfd)
        try:
            while not self.requested:
                ready, _, _ = select.select(watched, [], [])
                if pidfd is not None and pidfd in ready:
                    return self.requested
            return True
        finally:
            if pidfd is not None:
                os.close(pidfd)

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        os.close(self._read)
        os.close(self._write)


def _controller_pid(data: Path) -> int | None:
    try:
        info = json.loads((data / "controller.json").read_text())
    except (OSError, ValueError):
        return None
    pid = info.get("pid")
    return int(pid) if pid else None


def _lab_env(data: Path) -> dict[str, str]:
    state = (data / "provision-lab" / "lab.yaml").resolve()
    if not state.exists():
        raise SystemExit(f"{state} not found: is `make up` running (with DATA={data})?")
    return dict(yaml.safe_load(state.read_text())["env"])


def show(data: Path, xid: str | None) -> int:
    """What the peers themselves hold: instances (by xid tag), the device's interfaces and the
    FRR router's static routes."""
    os.environ.update(_lab_env(data))
    from provision_app import device as dev_blocks
    from provision_app import settings

    ec2 = settings.ec2_client()
    filters = [{"Name": f"tag:{settings.TAG_XID}", "Values": [xid or "*"]}]
    print(
        f"(moto's state is kept across restarts of make up in {data / 'provision-lab' / MOTO_STATE};"
        " the device and the router start empty)"
    )
    print("EC2 instances (tag switchback:xid):")
    for r in ec2.describe_instances(Filters=filters)["Reservations"]:
        for i in r["Instances"]:
            tags = {t["Key"]: t["Value"] for t in i.get("Tags", [])}
            print(f"  {i['InstanceId']}  {i['State']['Name']:<13} xid={tags.get(settings.TAG_XID)}")
    dev = settings.device("leaf1")
    print(f"leaf1 running datastore, interfaces ({dev.host}:{dev.port}):")
    with dev_blocks.session(dev) as m:
        reply = m.get_config(
            source="running", filter=("subtree", f'<interfaces xmlns="{dev_blocks.IF_NS}"/>')
        )
        ns = {"if": dev_blocks.IF_NS}
        for node in reply.data_ele.findall(".//if:interface", ns):
            desc = node.findtext("if:description", default="", namespaces=ns)
            if xid is None or xid in desc:
                print(f"  {node.findtext('if:name', namespaces=ns)}: {desc}")
    show_routes("edge1", xid)
    return 0


def show_routes(name: str, xid: str | None) -> None:
    """The router's static routes (those of the transaction ``xid``: carrying its tag)."""
    from provision_app import frr
    from provision_app.settings import SettingsError

    try:
        router = frr.router(name)
    except SettingsError as exc:
        print(f"{name}: {exc}")
        return
    where = f"netns {router.netns or '(host)'}, FRR instance {router.pathspace or '(default)'}"
    print(f"{name} static routes ({where}):")
    config = frr.vtysh(router, "show running-config staticd")
    for route in frr.parse_static_routes(config):
        if xid is None or route.tag == frr.tag_of(xid):
            entries = frr.rib_entries(router, route.prefix)
            state = "installed" if frr.installed(entries, route.next_hop) else "not installed"
            print(f"  {route.line}  ({state})")


def vtysh(data: Path, name: str, commands: list[str]) -> int:
    """vtysh on the FRR router ``name`` (in its namespace, on its instance): each command as a
    ``-c``; without commands, vtysh's interactive shell."""
    os.environ.update(_lab_env(data))
    from provision_app import frr

    router = frr.router(name)
    argv = ["ip", "netns", "exec", router.netns] if router.netns else []
    argv += [router.vtysh, *(["-N", router.pathspace] if router.pathspace else [])]
    for command in commands:
        argv += ["-c", command]
    return subprocess.run(argv).returncode


def lock(data: Path) -> int:
    """Hold <lock> on leaf1's running datastore until Ctrl-C: the device refuses every edit."""
    os.environ.update(_lab_env(data))
    from provision_app import device as dev_blocks
    from provision_app import settings

    def _release(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    for sig in (signal.SIGINT, signal.SIGTERM):  # also when started in the background
        signal.signal(sig, _release)
    with dev_blocks.session(settings.device("leaf1")) as m:
        m.lock("running")
        print("leaf1: running datastore locked; Ctrl-C releases it", flush=True)
        try:
            signal.pause()
        except KeyboardInterrupt:
            pass
        m.unlock("running")
        print("leaf1: unlocked")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m provision_app.lab")
    sub = parser.add_subparsers(dest="command", required=True)
    p_up = sub.add_parser(
        "up", help="start moto, a NETCONF device and an FRR router; serve the provision app"
    )
    p_up.add_argument("--app", type=Path, default=Path(__file__).resolve().parents[1])
    p_up.add_argument("--port", type=int, default=9099)
    p_show = sub.add_parser("show", help="instances and device config, as the peers see them")
    p_show.add_argument("xid", nargs="?")
    sub.add_parser("lock", help="lock leaf1's running datastore until Ctrl-C")
    p_vtysh = sub.add_parser("vtysh", help="vtysh on the FRR router edge1 (each argument a -c)")
    p_vtysh.add_argument("commands", nargs="*", help='e.g. "show ip route" (none: interactive)')
    p_vtysh.add_argument("--router", default="edge1", help="its name in the device inventory")
    for command in sub.choices.values():
        command.add_argument(
            "--data", type=Path, default=Path(".switchback"), help="as make up's DATA"
        )
    args = parser.parse_args(argv)
    if args.command == "show":
        return show(args.data, args.xid)
    if args.command == "lock":
        return lock(args.data)
    if args.command == "vtysh":
        return vtysh(args.data, args.router, args.commands)
    return up(args.app, args.data, args.port)


if __name__ == "__main__":
    sys.exit(main())
