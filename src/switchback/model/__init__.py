"""Definitions: scenarios, blocks, schemas; loading YAML/Python; linting. Pure, no I/O beyond
reading the app's own files."""

from switchback.model.builder import BlockHandle, ScenarioBuilder, scenario
from switchback.model.definitions import (
    App,
    Block,
    RequestCheckFailed,
    RetryPolicy,
    Scenario,
    TransactionOptions,
)
from switchback.model.loader import AppLoadError, Problem, lint_app, load_app

__all__ = [
    "App",
    "AppLoadError",
    "Block",
    "BlockHandle",
    "Problem",
    "RequestCheckFailed",
    "RetryPolicy",
    "Scenario",
    "ScenarioBuilder",
    "TransactionOptions",
    "lint_app",
    "load_app",
    "scenario",
]
