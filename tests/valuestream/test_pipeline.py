"""The pipeline file: the issue's example loads into typed values; defaults; each kind of bad
input reported at its line (all of them at once); approval policies inline or by name, checked
against the users file when there is one; checks against a checkout; the JSON Schema."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator

from switchback.identity import ApprovalPolicy, Directory, Group, User
from switchback.valuestream import (
    PIPELINE_FILE,
    PIPELINE_SHAPE,
    Environment,
    PipelineError,
    PolicyRef,
    Step,
    UnknownPolicy,
    lint_pipeline,
    lint_pipeline_text,
    load_pipeline,
    load_pipeline_text,
)
from switchback.valuestream.globs import BadPattern, compile_glob, glob_match, matches_any

from .conftest import PIPELINE

ROOT = Path(__file__).resolve().parents[2]


def org() -> Directory:
    return Directory(
        users=[
            User("alice", roles={"approver"}),
            User("bob", roles={"viewer"}, groups=["release-managers"]),
            User("dave", roles={"viewer"}),
        ],
        groups=[Group("release-managers", roles={"approver"})],
        policies=[ApprovalPolicy(["alice", "group:release-managers"], name="production")],
    )


def test_the_issue_s_example() -> None:
    p = load_pipeline_text(PIPELINE)
    assert p.triggers.branches == ("main",) and p.triggers.pull_requests
    assert p.ci == (Step("unit", "python -m pytest -q", 600.0),)
    assert [e.name for e in p.environments] == ["staging", "test", "production"]
    staging, test, production = p.environments
    assert (
        staging.smoke == "curl -fsS $SWITCHBACK_STANDBY_URL/healthz" and staging.smoke_timeout == 60
    )
    smoke = staging.smoke_step()
    assert smoke is not None and smoke.run == staging.smoke and smoke.timeout == 60
    assert test.approval is None and test.smoke_step() is None
    policy = production.approval
    assert isinstance(policy, ApprovalPolicy)
    assert policy.approvers == ("alice", "group:release-managers") and policy.required == 1
    assert (policy.timeout, policy.on_timeout, policy.allow_self_approval) == (
        86400,
        "reject",
        False,
    )
    assert production.policy(None) is policy
    assert p.on_failure == "rollback"
    assert p.to_dict()["environments"][2]["approval"]["approvers"] == [
        "alice",
        "group:release-managers",
    ]


def test_defaults() -> None:
    p = load_pipeline_text("ci:\n  - {name: t, run: 'true'}\n")
    assert p.app == "." and p.on_failure == "suspend" and p.environments == ()
    assert p.triggers.branches is None and p.triggers.deploy_branches("trunk") == ("trunk",)
    assert p.triggers.ci_branches == ("**",)
    assert p.ci[0].timeout == 600 and p.ci[0].working_directory == "." and dict(p.ci[0].env) == {}
    assert (p.build.include, p.build.exclude, p.build.lock) == (("**",), (), None)


def test_every_key_users_would_expect() -> None:
    p = load_pipeline_text(
        """
        version: 1
        app: examples/provision/
        triggers: {branches: [main, "release/*"], ci_branches: ["feature/**"], pull_requests: false}
        ci:
          - name: unit
            run: |
              pip install -r requirements.lock
              python -m pytest -q
            timeout: 120.5
            env: {PYTHONHASHSEED: 0, VERBOSE: true, NAME: x}
            working_directory: ./examples/provision
        build: {include: ["**/*.py", "scenarios/**"], exclude: ["tests/**"], lock: requirements.lock}
        environments:
          - {name: staging, smoke: "true", smoke_timeout: 5}
          - {name: production, approval: production}
        """.replace("\n        ", "\n")
    )
    assert p.app == "examples/provision"
    assert p.triggers.ci_branches == ("feature/**",) and not p.triggers.pull_requests
    assert dict(p.ci[0].env) == {"PYTHONHASHSEED": "0", "VERBOSE": "true", "NAME": "x"}
    assert p.ci[0].working_directory == "examples/provision" and p.ci[0].timeout == 120.5
    assert p.build.lock == "requirements.lock" and p.build.exclude == ("tests/**",)
    assert p.environments[1].approval == PolicyRef("production")


def problems(text: str, *, directory: Directory | None = None) -> list[str]:
    result = lint_pipeline_text(textwrap.dedent(text), "pipeline.yaml", directory=directory)
    assert (result.pipeline is None) == bool(result.problems)
    if result.problems:
        with pytest.raises(PipelineError):
            load_pipeline_text(textwrap.dedent(text), directory=directory)
    return [str(p) for p in result.problems]


GOOD_ENV = "environments:\n  - {name: staging}\n"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("ci: [\n", "pipeline.yaml:2: invalid YAML"),
        ("", "pipeline.yaml: empty file"),
        (
            "on_failure: rollback\n",
            "pipeline.yaml:1: the pipeline has neither 'ci' steps nor 'environments'",
        ),
        (GOOD_ENV + "colour: blue\n", "pipeline.yaml:3: unknown key 'colour' in pipeline"),
        (
            "ci:\n  - name: t\n    run: x\n    retries: 3\n",
            "pipeline.yaml:4: unknown key 'retries' in ci[0]",
        ),
        (
            "environments:\n  - name: p\n    approval:\n      approvers: [alice]\n      quorum: 2\n",
            "pipeline.yaml:5: unknown key 'quorum' in environments[0].approval",
        ),
        ("ci:\n  - {name: t}\n", "pipeline.yaml:2: ci[0]: 'run' is a required property"),
        (
            "ci:\n  - {name: t, run: x, timeout: ten}\n",
            "pipeline.yaml:2: ci[0].timeout: 'ten' is not of type 'number'",
        ),
        (
            GOOD_ENV + "on_failure: explode\n",
            "pipeline.yaml:3: on_failure: 'explode' is not one of",
        ),
        (GOOD_ENV + "version: 2\n", "pipeline.yaml:3: version: 1 was expected"),
        (
            "ci:\n  - {name: t, run: x, timeout: 0}\n",
            "pipeline.yaml:2: ci[0].timeout: 0 is not a positive number of seconds",
        ),
        (
            "ci:\n  - {name: t, run: x, timeout: -5}\n",
            "pipeline.yaml:2: ci[0].timeout: -5 is not a positive",
        ),
        (
            "ci:\n  - {name: t, run: x, timeout: .inf}\n",
            "pipeline.yaml:2: ci[0].timeout: must be a finite",
        ),
        (
            "environments:\n  - {name: s, smoke: x, smoke_timeout: 0}\n",
            "pipeline.yaml:2: environments[0].smoke_timeout: 0 is not a positive",
        ),
        (
            "ci:\n  - name: t\n    run: '   '\n",
            "pipeline.yaml:3: ci[0] (t): 'run' is empty: nothing to run",
        ),
        (
            "environments:\n  - {name: s, smoke: ''}\n",
            "pipeline.yaml:2: environment 's': 'smoke' is empty",
        ),
        (
            "ci:\n  - {name: 'unit tests', run: x}\n",
            "pipeline.yaml:2: ci[0].name: 'unit tests' is not a step name",
        ),
        (
            "environments:\n  - {name: Prod!}\n",
            "pipeline.yaml:2: environments[0].name: 'Prod!' is not an environment name",
        ),
        (
            "ci:\n  - name: t\n    run: x\n    env: {1X: a}\n",
            "pipeline.yaml:4: ci[0].env: '1X' is not an environment variable name",
        ),
        (
            "ci:\n  - name: t\n    run: x\n    env: {SWITCHBACK_COMMIT: a}\n",
            "pipeline.yaml:4: ci[0].env: 'SWITCHBACK_COMMIT' is reserved",
        ),
        (
            "ci:\n  - name: t\n    run: x\n    working_directory: ../up\n",
            "pipeline.yaml:4: ci[0].working_directory: '../up' is not a path inside",
        ),
        (
            GOOD_ENV + "app: /srv/app\n",
            "pipeline.yaml:3: app: '/srv/app' is not a path inside the repository",
        ),
        (
            GOOD_ENV + "build: {lock: true}\n",
            "pipeline.yaml:3: build.lock: give the lock file's path, or false",
        ),
        (
            GOOD_ENV + "build: {exclude: ['[abc']}\n",
            "pipeline.yaml:3: build.exclude[0]: '[abc': '[' without a closing ']'",
        ),
        (
            GOOD_ENV + "triggers: {branches: [refs/heads/main]}\n",
            "pipeline.yaml:3: triggers.branches[0]: 'refs/heads/main': give branch names, not refs ('main')",
        ),
        (
            GOOD_ENV + "triggers: {branches: ['']}\n",
            "pipeline.yaml:3: triggers.branches[0]: an empty pattern matches nothing",
        ),
        (
            "environments:\n  - {name: staging}\n  - {name: test}\n  - {name: staging}\n",
            "pipeline.yaml:4: environments[2]: environment 'staging' given twice (first at line 2)",
        ),
        (
            "ci:\n  - {name: unit, run: a}\n  - {name: unit, run: b}\n",
            "pipeline.yaml:3: ci[1]: step 'unit' given twice (first at line 2)",
        ),
        (
            "environments:\n  - name: p\n    approval: {approvers: [alice], on_timeout: approve}\n",
            "pipeline.yaml:3: environment 'p' approval: on_timeout: 'approve' is not allowed",
        ),
        (
            "environments:\n  - name: p\n    approval:\n      approvers: [alice]\n      required: 0\n",
            "pipeline.yaml:5: environment 'p' approval: required: must be at least 1",
        ),
        (
            "environments:\n  - name: p\n    approval:\n      approvers: []\n",
            "pipeline.yaml:4: environment 'p' approval: approvers: no approver",
        ),
        (
            "environments:\n  - name: p\n    approval:\n      approvers: [alice]\n      timeout: 0\n",
            "pipeline.yaml:5: environment 'p' approval: timeout: 0 is not a positive number of seconds",
        ),
        (
            "environments:\n  - {name: p, approval: ''}\n",
            "pipeline.yaml:2: environment 'p' approval: an empty name names no policy",
        ),
    ],
)
def test_each_problem_at_its_line(text: str, expected: str) -> None:
    found = problems(text)
    assert any(f.startswith(expected) for f in found), found


def test_every_problem_at_once_in_line_order() -> None:
    found = problems(
        """\
        ci:
          - {name: unit, run: "", timeout: 0}
          - {name: unit, run: x}
        environments:
          - {name: staging, smoke_timeout: -1}
          - {name: staging}
        """
    )
    assert [f.split(":")[1] for f in found] == ["2", "2", "3", "5", "6"]


def test_an_approval_naming_nothing() -> None:
    text = "environments:\n  - name: production\n    approval: prod\n"
    found = problems(text, directory=org())
    assert found == [
        "pipeline.yaml:3: environment 'production' approval: 'prod' names no policy of the users "
        "file (its policies: production)"
    ]
    # without a users file the name cannot be checked: a note, and the pipeline loads
    result = lint_pipeline_text(text, "pipeline.yaml")
    assert result.ok and result.pipeline is not None
    assert [str(n) for n in result.notes] == [
        "pipeline.yaml:3: environment 'production' approval: 'prod' names a policy of the users "
        "file; not checked (no users file: set SWITCHBACK_USERS or pass --users)"
    ]
    with pytest.raises(UnknownPolicy, match="'prod' names no policy"):
        result.pipeline.environments[0].policy(org())


def test_a_named_policy_is_the_users_file_s() -> None:
    p = load_pipeline_text(
        "environments:\n  - {name: production, approval: production}\n", directory=org()
    )
    env = p.environments[0]
    assert env.approval == PolicyRef("production")
    assert env.policy(org()) == org().policy("production")
    assert Environment("x").policy(org()) is None


def test_an_inline_policy_is_checked_against_the_users_file() -> None:
    text = """\
    environments:
      - name: production
        approval:
          approvers:
            - alice
            - erin
            - dave
            - group:nobody
    """
    assert problems(text, directory=org()) == [
        "pipeline.yaml:6: environment 'production' approval: approvers[1]: unknown user 'erin'",
        "pipeline.yaml:7: environment 'production' approval: approvers[2]: 'dave' could never vote: "
        "voting takes the approver or admin role (dave has viewer)",
        "pipeline.yaml:8: environment 'production' approval: approvers[3]: unknown group 'nobody'",
    ]
    assert problems(text) == []  # without a users file only the policy's own rules apply


def test_lint_against_a_checkout(tmp_path: Path) -> None:
    (tmp_path / ".switchback").mkdir()
    (tmp_path / PIPELINE_FILE).write_text(
        "app: service\n"
        "build: {lock: locks/requirements.lock}\n"
        "ci:\n  - {name: t, run: x, working_directory: tools}\n"
    )
    found = [str(p) for p in lint_pipeline(tmp_path, shown_as="p.yaml").problems]
    assert found == [
        "p.yaml:1: app: no folder 'service' in the repository",
        "p.yaml:2: build.lock: no file 'locks/requirements.lock'",
        "p.yaml:4: ci[0].working_directory: no folder 'tools'",
    ]
    for folder in ("service", "locks", "tools"):
        (tmp_path / folder).mkdir()
    (tmp_path / "locks" / "requirements.lock").write_text("")
    assert load_pipeline(tmp_path).app == "service"
    assert load_pipeline(tmp_path / PIPELINE_FILE).app == "service"  # the file itself


def test_a_repository_without_a_pipeline_file(tmp_path: Path) -> None:
    [problem] = lint_pipeline(tmp_path).problems
    assert "no pipeline file: .switchback/pipeline.yaml is missing" in str(problem)


def test_the_schema_is_a_valid_json_schema_and_accepts_the_example() -> None:
    Draft202012Validator.check_schema(PIPELINE_SHAPE)
    import yaml

    assert list(Draft202012Validator(PIPELINE_SHAPE).iter_errors(yaml.safe_load(PIPELINE))) == []


def test_docs_example_lints_clean_and_names_every_key() -> None:
    doc = (ROOT / "docs" / "pipeline.md").read_text()
    start = doc.index("```yaml\n# .switchback/pipeline.yaml") + len("```yaml\n")
    example = doc[start : doc.index("```", start)]
    result = lint_pipeline_text(example, "docs/pipeline.md")
    assert result.ok, result.problems
    keys = set(PIPELINE_SHAPE["properties"])
    for section in ("triggers", "build"):
        keys |= set(PIPELINE_SHAPE["properties"][section]["properties"])
    keys |= set(PIPELINE_SHAPE["properties"]["ci"]["items"]["properties"])
    keys |= set(PIPELINE_SHAPE["properties"]["environments"]["items"]["properties"])

    def explained(key: str) -> bool:  # a path in backquotes naming it: `ci[].timeout`
        return re.search(rf"`(?:[^`\s]*[.\]])?{key}(?:[.\[][^`\s]*)?`", doc) is not None

    missing = sorted(k for k in keys if not explained(k))
    assert missing == [], f"docs/pipeline.md does not explain {missing}"


# -- globs ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "yes", "no"),
    [
        ("main", ["main"], ["mainline", "x/main"]),
        ("release/*", ["release/1", "release/"], ["release/1/hotfix", "release"]),
        ("feature/**", ["feature/a", "feature/a/b"], ["feature", "features/a"]),
        ("**", ["a", "a/b/c"], []),
        ("a/**/b", ["a/b", "a/x/b", "a/x/y/b"], ["a/xb", "b"]),
        ("**/*.pyc", ["x.pyc", "a/b/x.pyc"], ["x.py"]),
        ("v?", ["v1"], ["v10", "v/"]),
        ("[ab]*", ["alpha", "beta"], ["gamma"]),
        ("[!ab]*", ["gamma"], ["alpha"]),
        ("a.b+c", ["a.b+c"], ["aXb+c", "a.bbc"]),
    ],
)
def test_glob_patterns(pattern: str, yes: list[str], no: list[str]) -> None:
    assert all(glob_match(pattern, n) for n in yes), [n for n in yes if not glob_match(pattern, n)]
    assert not any(glob_match(pattern, n) for n in no), [n for n in no if glob_match(pattern, n)]


def test_the_last_matching_pattern_decides() -> None:
    patterns = ["release/*", "!release/old", "release/old"]
    assert matches_any(patterns[:2], "release/new") and not matches_any(patterns[:2], "release/old")
    assert matches_any(patterns, "release/old")
    assert not matches_any([], "main")


@pytest.mark.parametrize("bad", ["", "[abc"])
def test_bad_patterns(bad: str) -> None:
    with pytest.raises(BadPattern):
        compile_glob(bad)
