"""`switchback serve`: the HTTP gateway (Starlette on uvicorn) for one role."""

from __future__ import annotations

import logging.config
import os
from pathlib import Path

import typer

from switchback.cli.common import DbOpt, err, fail, load_app_or_fail, store_location
from switchback.gateway.config import DEFAULT_MAX_HEAD_BYTES, DEFAULT_MAX_HEADERS


def serve(
    app_dir: Path = typer.Argument(..., help="App folder", exists=True, file_okay=False),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on"),
    port: int = typer.Option(9099, "--port", min=1, max=65535),
    data: Path | None = typer.Option(
        None,
        "--data",
        envvar="SWITCHBACK_DATA",
        help="Data directory (SQLite store) [default: ./.switchback]",
    ),
    db: str | None = DbOpt,
    role: str = typer.Option("all", "--role", help="all | apigw | scenario | transaction"),
    scenario_url: str | None = typer.Option(
        None,
        "--scenario-url",
        envvar="SWITCHBACK_SCENARIO_URL",
        help="apigw: URL of the scenario role",
    ),
    config_file: Path | None = typer.Option(
        None,
        "--config",
        envvar="SWITCHBACK_CONFIG",
        help="YAML/JSON: tokens, scenario_auth, max_body",
    ),
    scenario_auth: bool | None = typer.Option(
        None,
        "--scenario-auth/--no-scenario-auth",
        help="Require a bearer token on scenario endpoints too",
    ),
    max_body: int | None = typer.Option(
        None, "--max-body", min=1, help="Request body limit in bytes [default: 1 MiB]"
    ),
    max_header_bytes: int = typer.Option(
        DEFAULT_MAX_HEAD_BYTES,
        "--max-header-bytes",
        min=1024,
        help="Request line + headers limit in bytes; larger heads get 431",
    ),
    max_headers: int = typer.Option(
        DEFAULT_MAX_HEADERS, "--max-headers", min=1, help="More request headers get 431"
    ),
    limit_concurrency: int = typer.Option(
        1000, "--limit-concurrency", min=1, help="Connections + tasks before answering 503"
    ),
    keep_alive: int = typer.Option(
        5, "--keep-alive", min=1, help="Idle keep-alive timeout, seconds"
    ),
    graceful: int = typer.Option(
        10, "--graceful-timeout", min=0, help="Seconds to let requests finish on SIGTERM"
    ),
    access_log: bool = typer.Option(True, "--access-log/--no-access-log"),
    log_level: str = typer.Option("info", "--log-level"),
) -> None:
    """Serve an app over HTTP: scenario endpoints, the admin API, /openapi.json, /metrics.

    Admin tokens come from SWITCHBACK_ADMIN_TOKENS ("name=token,name2=token2") or --config.
    """
    import uvicorn

    from switchback.gateway import GatewayConfig, create_app
    from switchback.gateway.config import (
        DEFAULT_MAX_BODY,
        ConfigError,
        load_tokens,
        read_config_file,
    )
    from switchback.gateway.logs import log_config
    from switchback.gateway.protocol import bounded_protocol

    try:
        file_data = read_config_file(config_file) if config_file else {}
        config = GatewayConfig(
            role=role,
            tokens=load_tokens(file_data, dict(os.environ)),
            scenario_auth=bool(file_data.get("scenario_auth", False))
            if scenario_auth is None
            else scenario_auth,
            max_body=max_body or int(file_data.get("max_body") or DEFAULT_MAX_BODY),
            scenario_url=scenario_url,
        )
    except (ConfigError, ValueError) as exc:
        fail(str(exc))
    app = load_app_or_fail(app_dir)
    logging.config.dictConfig(log_config(role, log_level))
    if not config.tokens and config.serves_admin:
        err.print(
            "[yellow]warning:[/yellow] no admin tokens configured: every admin API call will get "
            "401. Set SWITCHBACK_ADMIN_TOKENS=name=token (or tokens: in --config)."
        )
    try:
        asgi = create_app(app, config, data_dir=store_location(data, db), access_log=access_log)
    except ValueError as exc:
        fail(str(exc))
    server = uvicorn.Server(
        uvicorn.Config(
            asgi,
            host=host,
            port=port,
            # httptools, with the request head bounded (uvicorn bounds it only for h11).
            http=bounded_protocol(max_header_bytes, max_headers),
            log_config=None,  # already configured: JSON lines
            access_log=False,  # ours is switchback.access, with route and xid
            limit_concurrency=limit_concurrency,
            timeout_keep_alive=keep_alive,
            timeout_graceful_shutdown=graceful,
            server_header=False,
            proxy_headers=False,
        )
    )
    server.run()
