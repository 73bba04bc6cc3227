"""In-process checks of the small pieces: token parsing and matching, path-parameter merging,
the OpenAPI document's shape."""

from __future__ import annotations

import pytest
from jsonschema import Draft202012Validator

from switchback.gateway.app import merge_path_params
from switchback.gateway.auth import TokenSet
from switchback.gateway.config import ConfigError, GatewayConfig, load_tokens, parse_tokens
from switchback.gateway.http import HTTPError
from switchback.gateway.openapi import build_openapi
from switchback.model import load_app
from tests.gateway.conftest import TEST_APP


def test_parse_tokens() -> None:
    assert parse_tokens("a=1, b = 2 ,") == {"a": "1", "b": "2"}
    for bad in ("zz-secret", "=zz-secret", "a=", "a=zz-secret,a=zz-secret"):
        with pytest.raises(ConfigError) as exc:
            parse_tokens(bad)
        assert "zz-secret" not in str(exc.value)  # never echoes a token


def test_environment_wins_over_file() -> None:
    tokens = load_tokens(
        {"tokens": {"a": "file", "b": "file"}}, {"SWITCHBACK_ADMIN_TOKENS": "a=env"}
    )
    assert tokens == {"a": "env", "b": "file"}


def test_token_set() -> None:
    ts = TokenSet({"alice": "s3cret", "bob": "other"})
    assert ts.actor("Bearer s3cret") == "alice"
    assert ts.actor("bearer other") == "bob"
    assert ts.actor("Bearer s3cre") is None
    assert ts.actor("Basic s3cret") is None
    assert ts.actor("Bearer ") is None
    assert ts.actor(None) is None
    assert not TokenSet({})


def test_config_checks() -> None:
    with pytest.raises(ConfigError):
        GatewayConfig(role="nope")
    with pytest.raises(ConfigError):
        GatewayConfig(role="apigw")
    assert not GatewayConfig(role="transaction").serves_scenarios


def test_merge_path_params_coerces_and_detects_contradictions() -> None:
    app = load_app(TEST_APP)
    sc = app.scenario("device_put")
    assert merge_path_params(sc, {"port": 1}, {"name": "sw1"}) == {"port": 1, "name": "sw1"}
    with pytest.raises(HTTPError) as exc:
        merge_path_params(sc, {"name": "sw2"}, {"name": "sw1"})
    assert exc.value.status == 422
    with pytest.raises(HTTPError):
        merge_path_params(sc, [1], {"name": "sw1"})


def test_openapi_is_valid_json_schema_everywhere() -> None:
    app = load_app(TEST_APP)
    spec = build_openapi(app, GatewayConfig())
    assert spec["openapi"] == "3.1.0"
    for schema in spec["components"]["schemas"].values():
        Draft202012Validator.check_schema(schema)
    put = spec["paths"]["/devices/{name}"]["put"]
    assert put["parameters"][0] == {
        "name": "name",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "pattern": "^[a-z][a-z0-9-]{0,30}$"},
    }
    # The path parameter is not required in the body.
    assert put["requestBody"]["content"]["application/json"]["schema"]["required"] == ["port"]
    assert "requestBody" not in spec["paths"]["/devices/{name}"]["delete"]
    assert put["security"] == []
    assert spec["paths"]["/transactions"]["get"].get("security") is None  # global bearer
