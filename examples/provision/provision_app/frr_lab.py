"""A real router on this host for the provision example: FRRouting's ``zebra`` + ``staticd`` in a
network namespace made at run time, as an isolated FRR instance.

Each router gets a unique name ``sb-frr-<random>``, used both as the network namespace and as
FRR's *pathspace* (``-N NAME``): its daemons keep their sockets and pid files under
``/var/run/frr/NAME/`` and vtysh reads ``/etc/frr/NAME/vtysh.conf``, so several routers run at
once and an FRR of the host itself (the Debian service, if it runs) is never touched. Inside the
namespace: ``lo`` up and a veth pair ``sb0``/``sb1`` with ``192.0.2.1/24`` on ``sb0``, so that a
static route's next hop in ``192.0.2.0/24`` resolves and zebra installs the route in the
namespace's kernel table. The daemons run in the foreground, each in its own process group
(``ip netns exec`` execs them), started with no configuration and no TCP vty (``-P 0``).

``stop()`` kills the daemons, deletes the namespace (and the veth pair in it) and removes the
pathspace's folders; it is safe to call at any point of a failed start. Used by the tests
(``tests/examples/conftest.py``) and by ``make up`` (``python -m provision_app.lab up``), which
registers the router as ``edge1`` in the device inventory.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import secrets
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from provision_app.lab import LabError, Proc, spawn, wait_until

FRR_LIB = Path("/usr/lib/frr")
ZEBRA = FRR_LIB / "zebra"
STATICD = FRR_LIB / "staticd"
VTYSH = Path("/usr/bin/vtysh")
RUN_DIR = Path("/var/run/frr")  # pathspace NAME: sockets and pid files in RUN_DIR / NAME
ETC_DIR = Path("/etc/frr")  # pathspace NAME: vtysh.conf (and daemons' config) in ETC_DIR / NAME
PREFIX = "sb-frr-"
LINK, PEER = "sb0", "sb1"  # the veth pair inside the namespace
ADDRESS = "192.0.2.1/24"  # on LINK: next hops 192.0.2.2-254 are reachable (TEST-NET-1)
DAEMONS = (("zebra", ZEBRA), ("staticd", STATICD))  # start order: staticd talks to zebra


def _ip() -> str | None:
    return shutil.which("ip") or next(
        (p for p in ("/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip") if Path(p).exists()), None
    )


def _run(argv: list[str], timeout: float = 10.0) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise LabError(f"{' '.join(argv)}: {exc}") from exc


def _must(argv: list[str]) -> None:
    done = _run(argv)
    if done.returncode != 0:
        raise LabError(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr.strip()}")


def frr_available() -> str | None:
    """None when an FRR router can be started here, else why not."""
    missing = [str(p) for p in (ZEBRA, STATICD, VTYSH) if not p.exists()]
    if missing:
        return f"missing {', '.join(missing)} (Debian package frr)"
    ip = _ip()
    if ip is None:
        return "missing the ip command (Debian package iproute2)"
    try:
        pwd.getpwnam("frr")
    except KeyError:
        return "no user frr, which FRR's daemons run as (reinstall the Debian package frr)"
    if os.geteuid() != 0:
        return "network namespaces and FRR's daemons need root (run as root)"
    probe = f"{PREFIX}probe-{secrets.token_hex(3)}"
    try:
        made = _run([ip, "netns", "add", probe])
        if made.returncode != 0:
            return f"network namespaces not permitted here: ip netns add: {made.stderr.strip()}"
        try:
            veth = _run(
                [ip, "-n", probe, "link", "add", LINK, "type", "veth", "peer", "name", PEER]
            )
            if veth.returncode != 0:
                return f"veth pairs not permitted here: ip link add: {veth.stderr.strip()}"
        finally:
            _run([ip, "netns", "del", probe])
    except LabError as exc:
        return f"network namespaces not usable here: {exc}"
    return None


@dataclass
class FrrRouter:
    """One FRR instance (zebra + staticd) in its own network namespace and pathspace."""

    name: str  # its name in the device inventory
    netns: str
    pathspace: str
    workdir: Path  # the daemons' logs
    address: str = ADDRESS
    procs: list[Proc] = field(default_factory=list)
    _made: list[str] = field(default_factory=list)  # what stop() must undo: "netns", "run", "etc"

    def settings(self, timeout: float = 10.0, converge_timeout: float = 5.0) -> dict[str, Any]:
        """This router's entry in the app's device inventory (see provision_app.frr)."""
        return {
            "flavour": "frr",
            "netns": self.netns,
            "pathspace": self.pathspace,
            "timeout": timeout,
            "converge_timeout": converge_timeout,
        }

    # ---------------------------------------------------------------------------- looking

    def vtysh(self, *commands: str, check: bool = True) -> str:
        """Run vtysh in the namespace on this instance; stdout (raises LabError if refused)."""
        argv = [_ip() or "ip", "netns", "exec", self.netns, str(VTYSH), "-N", self.pathspace]
        for command in commands:
            argv += ["-c", command]
        done = _run(argv)
        refused = [line for line in done.stdout.splitlines() if line.startswith("%")]
        if check and (done.returncode != 0 or refused):
            raise LabError(
                f"{self.name}: vtysh {list(commands)} failed ({done.returncode}): "
                f"{done.stdout.strip()} {done.stderr.strip()}"
            )
        return done.stdout

    def daemons(self) -> set[str]:
        """The daemons vtysh reaches (empty when none answers)."""
        return set(self.vtysh("show daemons", check=False).split())

    def routes(self, prefix: str | None = None) -> dict[str, list[dict[str, Any]]]:
        """zebra's RIB as ``show ip route [PREFIX] json`` reports it: prefix → entries."""
        out = self.vtysh(f"show ip route {prefix} json" if prefix else "show ip route json")
        return dict(json.loads(out or "{}"))

    def static_config(self) -> list[str]:
        """The ``ip route ...`` lines of staticd's running configuration."""
        out = self.vtysh("show running-config staticd")
        return [line.strip() for line in out.splitlines() if line.startswith("ip route ")]

    def kernel_routes(self) -> str:
        """The namespace's kernel routing table (``ip route``), where zebra installs routes."""
        done = _run([_ip() or "ip", "-n", self.netns, "route", "show"])
        return done.stdout

    def add_address(self, cidr: str) -> None:
        """Add an address on the router's link (a new connected network: next hops in it
        become reachable)."""
        _must([_ip() or "ip", "-n", self.netns, "addr", "add", cidr, "dev", LINK])

    # ---------------------------------------------------------------------------- running

    def alive(self) -> bool:
        return bool(self.procs) and all(p.alive() for p in self.procs)

    def start_daemons(self, timeout: float = 15.0) -> None:
        """Start zebra then staticd in the namespace; ready = vtysh reaches each of them."""
        if self.procs:
            raise LabError(f"{self.name}: daemons already running")
        ip = _ip() or "ip"
        for daemon, exe in DAEMONS:
            argv = [ip, "netns", "exec", self.netns, str(exe), "-N", self.pathspace]
            argv += ["-P", "0", "--log", "stdout"]  # no TCP vty; log to our file
            proc = spawn(f"{daemon}[{self.pathspace}]", argv, self.workdir / f"{daemon}.log")
            self.procs.append(proc)
            wait_until(f"{daemon} in {self.netns}", self._answers(daemon), self.procs, timeout)

    def _answers(self, daemon: str) -> Callable[[], bool]:
        return lambda: daemon in self.daemons()

    def stop_daemons(self) -> None:
        """SIGTERM (zebra withdraws its routes from the kernel), SIGKILL after a grace period."""
        for proc in reversed(self.procs):
            proc.stop()
        self.procs.clear()

    def stop(self) -> None:
        """Kill the daemons, delete the namespace, remove the pathspace's folders."""
        try:
            self.stop_daemons()
        finally:
            if "netns" in self._made:
                with contextlib.suppress(LabError):
                    _run([_ip() or "ip", "netns", "del", self.netns])
            for kind, base in (("run", RUN_DIR), ("etc", ETC_DIR)):
                if kind in self._made:
                    shutil.rmtree(base / self.pathspace, ignore_errors=True)
            self._made.clear()


def _frr_dir(path: Path, mode: int) -> None:
    """A folder owned by FRR's user and group (the daemons drop root for them)."""
    user = pwd.getpwnam("frr")
    path.mkdir(mode=mode, exist_ok=True)
    os.chown(path, user.pw_uid, user.pw_gid)
    path.chmod(mode)


def start_frr_router(workdir: Path, name: str = "edge1", timeout: float = 15.0) -> FrrRouter:
    """A new FRR router in a new namespace; stopped again (everything undone) if the start fails."""
    why = frr_available()
    if why:
        raise LabError(f"cannot start an FRR router: {why}")
    workdir.mkdir(parents=True, exist_ok=True)
    ident = f"{PREFIX}{secrets.token_hex(4)}"
    router = FrrRouter(name, netns=ident, pathspace=ident, workdir=workdir)
    ip = _ip() or "ip"
    try:
        _must([ip, "netns", "add", ident])
        router._made.append("netns")
        _must([ip, "-n", ident, "link", "set", "lo", "up"])
        _must([ip, "-n", ident, "link", "add", LINK, "type", "veth", "peer", "name", PEER])
        _must([ip, "-n", ident, "addr", "add", router.address, "dev", LINK])
        _must([ip, "-n", ident, "link", "set", PEER, "up"])
        _must([ip, "-n", ident, "link", "set", LINK, "up"])
        if not RUN_DIR.exists():  # /var/run is a tmpfs: gone after a reboot until FRR starts
            _frr_dir(RUN_DIR, 0o755)
        router._made.append("run")  # the daemons make RUN_DIR / ident themselves
        router._made.append("etc")
        _frr_dir(ETC_DIR / ident, 0o750)
        vtysh_conf = ETC_DIR / ident / "vtysh.conf"
        vtysh_conf.write_text(f"! vtysh of the FRR instance {ident} ({name}), made by the lab\n")
        user = pwd.getpwnam("frr")
        os.chown(vtysh_conf, user.pw_uid, user.pw_gid)
        router.start_daemons(timeout)
    except BaseException:
        router.stop()
        raise
    return router
