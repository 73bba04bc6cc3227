"""The second device flavour: an FRRouting router driven with ``vtysh``. Scenario ``route``
(``POST /routes``): block ``static_route`` — DO ``add_route`` / UNDO ``remove_route`` — and block
``verify`` (``verify_route``: reads the route back from zebra's RIB, changes nothing).

Config A here is a static route ``ip route PREFIX NEXT_HOP tag TAG`` in staticd's running
configuration, where TAG is a 32-bit digest of the xid (:func:`tag_of`): the route itself says
which transaction made it. That is how a re-run of the DO (in doubt after a crash) recognises its
own route, and how an UNDO whose DO's output was never stored knows what it may remove. The DO
first reads the running configuration: a route to the same prefix through the same next hop that
is already there (someone else's) is left exactly as it is and the output says ``created: false``;
the UNDO removes only a route carrying this transaction's tag, and is done when it is absent.

Connection settings come from the device inventory (``PROVISION_DEVICES``, read on every call),
where an FRR router is an entry with ``flavour: frr``::

    devices:
      edge1:
        flavour: frr
        netns: sb-frr-1a2b3c4d      # network namespace FRR runs in (omit: the host's own)
        pathspace: sb-frr-1a2b3c4d  # FRR instance, vtysh -N (omit: the default instance)
        vtysh: /usr/bin/vtysh       # optional
        timeout: 10                 # seconds, each vtysh call
        converge_timeout: 5         # seconds verify waits for zebra to install the route

vtysh runs as ``ip netns exec NETNS vtysh -N PATHSPACE -c ...`` (root, on the router's host). A
non-zero exit or a ``%`` line in its answer raises :class:`FrrError` carrying vtysh's own text.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from typing import Any

from provision_app.settings import SettingsError, inventory_entry, never_reached
from switchback.engine import BlockContext

NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")  # netns and pathspace names (FRR: no '/' nor '.')
POLL = 0.1  # seconds between reads while verify waits for zebra


class FrrError(RuntimeError):
    """FRR refused a command or could not be reached; ``text`` is vtysh's own answer."""

    def __init__(self, message: str, text: str = "") -> None:
        super().__init__(message)
        self.text = text


@dataclass(frozen=True)
class RouterSettings:
    name: str
    netns: str | None
    pathspace: str | None
    vtysh: str
    timeout: float
    converge_timeout: float


def router(name: str) -> RouterSettings:
    """The inventory entry ``name``, which must be an FRR router."""
    path, entry = inventory_entry(name)
    if entry.get("flavour") != "frr":
        raise SettingsError(f"device {name!r} in {path} is not an FRR router (flavour: frr)")
    try:
        settings = RouterSettings(
            name=name,
            netns=entry.get("netns"),
            pathspace=entry.get("pathspace"),
            vtysh=str(entry.get("vtysh", "/usr/bin/vtysh")),
            timeout=float(entry.get("timeout", 10)),
            converge_timeout=float(entry.get("converge_timeout", 5)),
        )
    except (TypeError, ValueError) as exc:
        raise SettingsError(f"device {name!r} in {path}: bad setting {exc}") from exc
    for key in ("netns", "pathspace"):
        value = getattr(settings, key)
        if value is not None and not NAME.match(str(value)):
            raise SettingsError(f"device {name!r} in {path}: bad {key} {value!r}")
    return settings


# ------------------------------------------------------------------------------------ vtysh


def _text(*outputs: str) -> str:
    """vtysh's answer on one line, without the warning about a missing vtysh.conf."""
    lines = [
        line.strip()
        for out in outputs
        for line in out.splitlines()
        if line.strip() and "Can't open configuration file" not in line
    ]
    return " ".join(lines)


def vtysh(r: RouterSettings, *commands: str) -> str:
    """Run ``commands`` in one vtysh session on the router; its stdout. Raises FrrError."""
    argv: list[str] = []
    if r.netns:
        argv += [shutil.which("ip") or "/usr/sbin/ip", "netns", "exec", r.netns]
    argv.append(r.vtysh)
    if r.pathspace:
        argv += ["-N", r.pathspace]
    for command in commands:
        argv += ["-c", command]
    what = commands[-1]
    try:
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=r.timeout, stdin=subprocess.DEVNULL
        )
    except subprocess.TimeoutExpired as exc:
        raise FrrError(f"{r.name}: vtysh did not answer `{what}` within {r.timeout}s") from exc
    except OSError as exc:
        raise FrrError(f"{r.name}: cannot run vtysh: {exc}") from exc
    refused = any(line.startswith("%") for line in done.stdout.splitlines())
    if refused:
        text = _text(done.stdout)
        raise FrrError(f"{r.name} refused `{what}`: {text}", text)
    if done.returncode != 0:
        text = _text(done.stdout, done.stderr)
        raise FrrError(f"{r.name}: vtysh `{what}` failed (exit {done.returncode}): {text}", text)
    return done.stdout


@dataclass(frozen=True)
class StaticRoute:
    """One ``ip route`` line of staticd's running configuration (default VRF)."""

    prefix: str
    next_hop: str
    interface: str | None = None
    distance: int | None = None
    tag: int | None = None
    table: int | None = None
    line: str = ""


_VALUED = {"tag", "table", "label", "nexthop-vrf", "vrf", "color", "segments"}


def parse_static_routes(config: str) -> list[StaticRoute]:
    """The top-level ``ip route PREFIX NEXT_HOP ...`` lines (routes inside ``vrf`` blocks are
    indented and not ours to look at)."""
    routes = []
    for line in config.splitlines():
        words = line.split()
        if line[:1].isspace() or words[:2] != ["ip", "route"] or len(words) < 4:
            continue
        try:
            prefix = str(ipaddress.IPv4Network(words[2], strict=False))
            next_hop = str(ipaddress.IPv4Address(words[3]))
        except ValueError:
            continue  # a blackhole / Null0 / interface route: no next hop address
        interface = distance = tag = table = None
        rest = words[4:]
        i = 0
        while i < len(rest):
            word = rest[i]
            if word in _VALUED and i + 1 < len(rest):
                value = rest[i + 1]
                if word == "tag" and value.isdigit():
                    tag = int(value)
                elif word == "table" and value.isdigit():
                    table = int(value)
                i += 2
                continue
            if word.isdigit():
                distance = int(word)
            elif i == 0 and word != "onlink":
                interface = word
            i += 1
        routes.append(StaticRoute(prefix, next_hop, interface, distance, tag, table, line))
    return routes


def static_route(r: RouterSettings, prefix: str, next_hop: str) -> StaticRoute | None:
    """Our kind of route to ``prefix`` through ``next_hop`` (no interface, default distance,
    main table) in staticd's running configuration, or None. FrrError if staticd is down: a
    silent "absent" would be a lie."""
    daemons = vtysh(r, "show daemons").split()
    if "staticd" not in daemons:
        raise FrrError(f"{r.name}: staticd is not running (vtysh reaches {daemons or 'nothing'})")
    for route in parse_static_routes(vtysh(r, "show running-config staticd")):
        if (route.prefix, route.next_hop) == (prefix, next_hop) and (
            route.interface is None and route.distance in (None, 1) and route.table is None
        ):
            return route
    return None


def rib_entries(r: RouterSettings, prefix: str) -> list[dict[str, Any]]:
    """zebra's entries for exactly ``prefix`` (``show ip route PREFIX json``)."""
    out = vtysh(r, f"show ip route {prefix} json")
    try:
        data = json.loads(out or "{}")
    except json.JSONDecodeError as exc:
        raise FrrError(f"{r.name}: unreadable `show ip route {prefix} json`: {out[:300]}") from exc
    return list(data.get(prefix, []))


def installed(entries: list[dict[str, Any]], next_hop: str) -> dict[str, Any] | None:
    """The static entry that zebra selected and installed through ``next_hop``, or None."""
    for entry in entries:
        if entry.get("protocol") != "static" or not entry.get("installed"):
            continue
        for hop in entry.get("nexthops", []):
            if hop.get("ip") == next_hop and hop.get("active"):
                return {**entry, "nexthop": hop}
    return None


# ----------------------------------------------------------------------------------- blocks


def tag_of(xid: str) -> int:
    """The route tag that marks a route as this transaction's (1..2**32-1)."""
    return int.from_bytes(hashlib.sha256(xid.encode()).digest()[:4], "big") or 1


def _route(request: dict[str, Any]) -> tuple[str, str]:
    """(prefix, next hop) as FRR writes them: host bits of the prefix cleared, as FRR does."""
    return (
        str(ipaddress.IPv4Network(request["prefix"], strict=False)),
        str(ipaddress.IPv4Address(request["next_hop"])),
    )


def add_route(ctx: BlockContext) -> dict[str, Any]:
    r = router(ctx.request["router"])
    prefix, next_hop = _route(ctx.request)
    tag = tag_of(ctx.xid)
    out = {"router": r.name, "prefix": prefix, "next_hop": next_hop, "tag": tag}
    current = static_route(r, prefix, next_hop)
    if current is not None and current.tag == tag:
        ctx.log.info(
            "route %s via %s on %s is already this transaction's", prefix, next_hop, r.name
        )
        return {**out, "created": True}
    if current is not None:
        return {
            **out,
            "created": False,
            "note": f"already configured, not by this transaction: `{current.line}` left as it is",
        }
    vtysh(r, "configure terminal", f"ip route {prefix} {next_hop} tag {tag}")
    current = static_route(r, prefix, next_hop)
    if current is None or current.tag != tag:
        raise FrrError(
            f"{r.name}: route {prefix} via {next_hop} not in the running configuration after "
            f"`ip route`: {current.line if current else 'absent'}"
        )
    return {**out, "created": True}


def remove_route(ctx: BlockContext) -> dict[str, Any]:
    if never_reached(ctx):
        note = f"the DO never reached the router: {ctx.error['message']}"  # type: ignore[index]
        return {"router": ctx.request["router"], "removed": False, "note": note}
    r = router(ctx.request["router"])
    prefix, next_hop = _route(ctx.request)
    tag = tag_of(ctx.xid)
    out = {"router": r.name, "prefix": prefix, "next_hop": next_hop}
    current = static_route(r, prefix, next_hop)
    if current is None:
        return {**out, "removed": False, "note": "absent"}
    did = ctx.output if isinstance(ctx.output, dict) else {}
    if current.tag != tag or did.get("created") is False:
        # Not made by this transaction (there before it, or someone else's): leave it alone.
        return {**out, "removed": False, "note": f"left untouched: `{current.line}`"}
    try:
        # `no ip route` matches prefix, next hop and distance (the tag is not part of the key).
        vtysh(r, "configure terminal", f"no ip route {prefix} {next_hop}")
    except FrrError as exc:
        if "non-existent route" not in exc.text:  # removed meanwhile: the goal is reached
            raise
        return {**out, "removed": False, "note": "absent (removed meanwhile)"}
    return {**out, "removed": True}


def _describe(entries: list[dict[str, Any]]) -> str:
    if not entries:
        return "no route to it in the RIB"
    parts = []
    for entry in entries:
        hops = ", ".join(
            f"{hop.get('ip') or hop.get('interfaceName') or ('blackhole' if hop.get('blackhole') else '?')}"
            f"{'' if hop.get('active') else ' (inactive)'}"
            for hop in entry.get("nexthops", [])
        )
        parts.append(
            f"{entry.get('protocol')} via [{hops}] selected={bool(entry.get('selected'))} "
            f"installed={bool(entry.get('installed'))}"
        )
    return "; ".join(parts)


def verify_route(ctx: BlockContext) -> dict[str, Any]:
    """Read the route back from zebra: selected and installed through the next hop. zebra
    installs what staticd hands it asynchronously, so wait up to ``converge_timeout``."""
    r = router(ctx.request["router"])
    prefix, next_hop = _route(ctx.request)
    deadline = time.monotonic() + r.converge_timeout
    while True:
        entries = rib_entries(r, prefix)
        entry = installed(entries, next_hop)
        if entry is not None:
            return {
                "router": r.name,
                "prefix": prefix,
                "next_hop": next_hop,
                "installed": True,
                "interface": entry["nexthop"].get("interfaceName"),
                "distance": entry.get("distance"),
                "tag": entry.get("tag"),
                "created": (ctx.outputs.get("static_route") or {}).get("created"),
            }
        if time.monotonic() >= deadline:
            configured = static_route(r, prefix, next_hop)
            raise FrrError(
                f"{r.name}: route {prefix} via {next_hop} is not installed after "
                f"{r.converge_timeout:g}s: {_describe(entries)}; staticd configuration: "
                f"{f'`{configured.line}`' if configured else 'no such route'}"
            )
        time.sleep(POLL)
