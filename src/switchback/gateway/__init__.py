"""The HTTP face of switchback: scenario endpoints, the transactions admin API, OpenAPI, auth,
metrics, and the process roles (apigw, scenario, transaction)."""

from switchback.gateway.app import create_app
from switchback.gateway.config import ROLES, GatewayConfig, load_tokens

__all__ = ["ROLES", "GatewayConfig", "create_app", "load_tokens"]
