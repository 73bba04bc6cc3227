"""The pipeline file, ``.switchback/pipeline.yaml`` in an app's repository: its typed form
(:class:`Pipeline` and its parts) and its shape as a JSON Schema (:data:`PIPELINE_SHAPE`, also
what `switchback pipeline schema` prints for editors). Reading and lint: ``pipeline_loader``.

An environment's ``approval`` is a policy written inline (an ``identity.ApprovalPolicy``) or the
name of a policy of the users file (a :class:`PolicyRef`, looked up in the directory when the gate
opens, so a policy changed by the platform's owners applies to runs already going). The rules of
voting are the identity package's (``docs/identity.md``); nothing here re-implements them.
``docs/pipeline.md`` is the user's guide to the format.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Literal

from jsonschema import Draft202012Validator

from switchback.identity import POLICY_SHAPE, ApprovalPolicy

if TYPE_CHECKING:
    from switchback.identity import Directory

PIPELINE_FILE = ".switchback/pipeline.yaml"
DEFAULT_STEP_TIMEOUT = 600.0
DEFAULT_SMOKE_TIMEOUT = 60.0
DEFAULT_LOCK_FILES = ("requirements.lock", "requirements.txt")
ON_FAILURE = ("suspend", "rollback")
# Environment names end up in ports' labels, paths and metric labels: keep them plain.
ENV_NAME = re.compile(r"^[a-z][a-z0-9-]{0,39}$")
STEP_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
ENV_VAR = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
RESERVED_PREFIX = "SWITCHBACK_"  # set by the runner (commit, ref, work dir, standby URL)

_PATTERNS = {"type": "array", "items": {"type": "string"}}
_SECONDS = {"type": "number", "description": "seconds, > 0"}
PIPELINE_SHAPE: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "switchback pipeline file (.switchback/pipeline.yaml)",
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "version": {"const": 1, "description": "the format's version; 1 (the default)"},
        "app": {
            "type": "string",
            "description": "the app folder (scenarios/ and its modules), relative to the "
            "repository's root; default: the root",
        },
        "triggers": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "branches": {
                    **_PATTERNS,
                    "description": "a push here runs the whole pipeline (default: the "
                    "project's branch)",
                },
                "ci_branches": {
                    **_PATTERNS,
                    "description": "a push here runs CI only (default: every other branch)",
                },
                "pull_requests": {
                    "type": "boolean",
                    "description": "run CI on pull requests opened or updated (default true)",
                },
            },
        },
        "ci": {
            "type": ["array", "null"],
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["name", "run"],
                "properties": {
                    "name": {"type": "string"},
                    "run": {"type": "string", "description": "a bash script (bash -e -o pipefail)"},
                    "timeout": _SECONDS,
                    "env": {
                        "type": "object",
                        "additionalProperties": {"type": ["string", "number", "boolean"]},
                    },
                    "working_directory": {"type": "string"},
                    "description": {"type": "string"},
                },
            },
        },
        "build": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "include": {**_PATTERNS, "description": "paths in the app folder (default **)"},
                "exclude": _PATTERNS,
                "lock": {
                    "type": ["string", "boolean"],
                    "description": "the lock file, relative to the repository's root; false for "
                    "none (default: the app's requirements.lock, else requirements.txt)",
                },
            },
        },
        "environments": {
            "type": ["array", "null"],
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["name"],
                "properties": {
                    "name": {"type": "string"},
                    "smoke": {"type": "string"},
                    "smoke_timeout": _SECONDS,
                    "approval": {
                        "type": ["string", "object"],
                        "description": "a policy inline, or the name of one in the users file",
                        "if": {"type": "object"},
                        "then": POLICY_SHAPE,
                    },
                    "description": {"type": "string"},
                },
            },
        },
        "on_failure": {
            "enum": list(ON_FAILURE),
            "description": "after CI, what a failure does: suspend (park for a decision, the "
            "default) or rollback",
        },
    },
}
SHAPE_VALIDATOR = Draft202012Validator(PIPELINE_SHAPE)


# -- the typed form ------------------------------------------------------------------------------


@dataclass(frozen=True)
class PolicyRef:
    """An approval named by the pipeline and defined in the users file."""

    name: str


@dataclass(frozen=True)
class Step:
    """A CI step (or a smoke test): a bash script run in a process group of its own."""

    name: str
    run: str
    timeout: float = DEFAULT_STEP_TIMEOUT
    env: Mapping[str, str] = field(default_factory=dict)
    working_directory: str = "."  # relative to the repository's root
    description: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "env", MappingProxyType(dict(self.env)))

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "run": self.run,
            "timeout": self.timeout,
            "env": dict(self.env),
            "working_directory": self.working_directory,
        }


@dataclass(frozen=True)
class Triggers:
    branches: tuple[str, ...] | None = None  # None: the project's branch
    ci_branches: tuple[str, ...] = ("**",)
    pull_requests: bool = True

    def deploy_branches(self, default_branch: str) -> tuple[str, ...]:
        return self.branches if self.branches is not None else (default_branch,)


@dataclass(frozen=True)
class Build:
    include: tuple[str, ...] = ("**",)
    exclude: tuple[str, ...] = ()
    lock: str | Literal[False] | None = None  # None: the app's requirements.lock/.txt if any


@dataclass(frozen=True)
class Environment:
    name: str
    smoke: str | None = None
    smoke_timeout: float = DEFAULT_SMOKE_TIMEOUT
    approval: ApprovalPolicy | PolicyRef | None = None
    description: str | None = None

    def smoke_step(self) -> Step | None:
        if self.smoke is None:
            return None
        return Step(f"smoke-{self.name}", self.smoke, self.smoke_timeout)

    def policy(self, directory: Directory | None) -> ApprovalPolicy | None:
        """The approval policy of this environment's gate (None: no gate). A named policy is
        looked up in ``directory``; :class:`UnknownPolicy` if it is not there."""
        if not isinstance(self.approval, PolicyRef):
            return self.approval
        found = directory.policy(self.approval.name) if directory is not None else None
        if found is None:
            raise UnknownPolicy(self.name, self.approval.name)
        return found


@dataclass(frozen=True)
class Pipeline:
    app: str = "."
    triggers: Triggers = field(default_factory=Triggers)
    ci: tuple[Step, ...] = ()
    build: Build = field(default_factory=Build)
    environments: tuple[Environment, ...] = ()
    on_failure: Literal["suspend", "rollback"] = "suspend"

    def environment(self, name: str) -> Environment | None:
        return next((e for e in self.environments if e.name == name), None)

    def to_dict(self) -> dict[str, Any]:
        def approval(e: Environment) -> Any:
            if isinstance(e.approval, PolicyRef):
                return {"policy": e.approval.name}
            return e.approval.to_dict() if e.approval is not None else None

        return {
            "app": self.app,
            "triggers": {
                "branches": list(self.triggers.branches)
                if self.triggers.branches is not None
                else None,
                "ci_branches": list(self.triggers.ci_branches),
                "pull_requests": self.triggers.pull_requests,
            },
            "ci": [s.to_dict() for s in self.ci],
            "build": {
                "include": list(self.build.include),
                "exclude": list(self.build.exclude),
                "lock": self.build.lock,
            },
            "environments": [
                {
                    "name": e.name,
                    "smoke": e.smoke,
                    "smoke_timeout": e.smoke_timeout,
                    "approval": approval(e),
                }
                for e in self.environments
            ],
            "on_failure": self.on_failure,
        }


class UnknownPolicy(LookupError):
    def __init__(self, environment: str, name: str) -> None:
        self.environment, self.name = environment, name
        super().__init__(
            f"environment {environment!r}: approval {name!r} names no policy of the users file"
        )
