"""Gateway settings: one dataclass filled by the CLI (flags, environment, config file)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROLES = ("all", "apigw", "scenario", "transaction")
TOKENS_ENV = "SWITCHBACK_ADMIN_TOKENS"
DEFAULT_MAX_BODY = 1024 * 1024
# The request head (request line + headers) and the header count; more gets 431 (protocol.py).
DEFAULT_MAX_HEAD_BYTES = 64 * 1024  # Envoy's default is 60 KiB, nginx's 4 × 8 KiB
DEFAULT_MAX_HEADERS = 128  # Envoy's default is 100, and it adds a few of its own upstream


class ConfigError(Exception):
    pass


@dataclass
class GatewayConfig:
    role: str = "all"
    # Bearer tokens by name; the name is the actor recorded in the audit trail.
    tokens: dict[str, str] = field(default_factory=dict)
    # Scenario endpoints ask for a token only when this is set; the admin API always does.
    scenario_auth: bool = False
    max_body: int = DEFAULT_MAX_BODY
    # apigw only: where the scenario role listens.
    scenario_url: str | None = None
    # Upper bound of a synchronous wait when the scenario has no transaction timeout.
    default_wait: float = 300.0
    sweep_interval: float = 1.0

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise ConfigError(f"unknown role {self.role!r}; one of: {', '.join(ROLES)}")
        if self.role == "apigw" and not self.scenario_url:
            raise ConfigError("the apigw role needs --scenario-url (where the scenario role runs)")
        if self.max_body < 1:
            raise ConfigError("--max-body must be at least 1 byte")

    @property
    def runs_engine(self) -> bool:
        return self.role != "apigw"

    @property
    def serves_scenarios(self) -> bool:
        return self.role in ("all", "scenario", "apigw")

    @property
    def serves_admin(self) -> bool:
        return self.role in ("all", "scenario", "apigw")


def parse_tokens(text: str) -> dict[str, str]:
    """``name=token,name2=token2`` → {name: token}. Never echoes a token in an error."""
    out: dict[str, str] = {}
    for n, part in enumerate(p.strip() for p in text.split(",")):
        if not part:
            continue
        name, sep, token = part.partition("=")
        name, token = name.strip(), token.strip()
        if not sep or not name or not token:
            raise ConfigError(f"{TOKENS_ENV}: entry {n + 1} is not of the form name=token")
        if name in out:
            raise ConfigError(f"{TOKENS_ENV}: token name {name!r} appears twice")
        out[name] = token
    return out


def read_config_file(path: Path) -> dict[str, Any]:
    """A YAML or JSON file: ``tokens: {name: token}``, ``scenario_auth: bool``, ``max_body: int``."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path} is not valid YAML/JSON: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    unknown = set(data) - {"tokens", "scenario_auth", "max_body"}
    if unknown:
        raise ConfigError(f"{path}: unknown keys {', '.join(sorted(unknown))}")
    tokens = data.get("tokens") or {}
    if not isinstance(tokens, dict) or not all(
        isinstance(k, str) and isinstance(v, str) and k and v for k, v in tokens.items()
    ):
        raise ConfigError(f"{path}: 'tokens' must map names to non-empty token strings")
    return data


def load_tokens(
    file_data: dict[str, Any] | None = None, env: dict[str, str] | None = None
) -> dict[str, str]:
    """Tokens from the config file, then the environment (the environment wins per name)."""
    env = os.environ if env is None else env
    tokens = dict((file_data or {}).get("tokens") or {})
    tokens.update(parse_tokens(env.get(TOKENS_ENV, "")))
    return tokens
