"""`switchback pipeline lint|schema` as a user runs them: a good file summarised, every problem at
its file and line with exit 1 and no traceback, named policies checked with --users, JSON."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from switchback.cli.main import app
from switchback.valuestream import PIPELINE_FILE, PIPELINE_SHAPE

from .conftest import PIPELINE

runner = CliRunner()
CLEAN = {"SWITCHBACK_USERS": None, "SWITCHBACK_ADMIN_TOKENS": None}


def repo(tmp_path: Path, text: str) -> Path:
    (tmp_path / ".switchback").mkdir(exist_ok=True)
    (tmp_path / PIPELINE_FILE).write_text(text)
    return tmp_path


def lint(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, ["pipeline", "lint", *args], env=CLEAN, prog_name="switchback")  # type: ignore[arg-type]
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.stdout, result.stderr


def flat(text: str) -> str:
    return " ".join(text.split())


def test_a_good_pipeline_is_summarised(tmp_path: Path) -> None:
    code, out, _ = lint(str(repo(tmp_path, PIPELINE)))
    assert code == 0
    text = flat(out)
    assert text.startswith(f"ok {tmp_path}")
    assert "a push to main runs the pipeline" in text
    assert "CI: unit (600 s)" in text
    assert (
        "environments: staging, smoke test → test → production, approval: 1 of alice, "
        "group:release-managers" in text
    )
    assert "on failure: rollback" in text


def test_problems_exit_1_with_file_and_line(tmp_path: Path) -> None:
    path = repo(
        tmp_path,
        "ci:\n  - {name: unit, run: '', timeout: 0}\nenvironments:\n  - {name: x, bogus: 1}\n",
    )
    code, _, err = lint(str(path))
    assert code == 1
    assert f"{path / PIPELINE_FILE}:4: unknown key 'bogus' in environments[0]" in flat(err)
    assert "Traceback" not in err


def test_a_missing_file_and_bad_yaml(tmp_path: Path) -> None:
    code, _, err = lint(str(tmp_path))
    assert code == 1 and "no pipeline file" in flat(err)
    code, _, err = lint(str(repo(tmp_path, "ci: [\n")))
    assert code == 1 and f"{PIPELINE_FILE}:2: invalid YAML" in flat(err)


def test_named_policies_with_a_users_file(tmp_path: Path) -> None:
    path = repo(tmp_path, "environments:\n  - {name: production, approval: prod}\n")
    code, out, err = lint(str(path))
    assert code == 0 and "note:" in err and "not checked" in flat(err)
    assert "approval: policy prod" in flat(out)
    users = tmp_path / "users.yaml"
    users.write_text(
        "users:\n  - {name: alice, roles: [approver]}\npolicies:\n  - {name: production, approvers: [alice]}\n"
    )
    code, _, err = lint(str(path), "--users", str(users))
    assert code == 1
    assert "'prod' names no policy of the users file (its policies: production)" in flat(err)
    users.write_text("users:\n  - {name: alice, roles: [nobody]}\n")
    code, _, err = lint(str(path), "--users", str(users))
    assert code == 1 and "the users file has 1 problem(s)" in flat(err)


def test_json(tmp_path: Path) -> None:
    code, out, _ = lint(str(repo(tmp_path, "ci:\n  - {name: t, run: x, timeout: -1}\n")), "--json")
    body = json.loads(out)
    assert code == 1 and body["ok"] is False and body["pipeline"] is None
    assert body["problems"] == [
        {
            "file": str(tmp_path / PIPELINE_FILE),
            "line": 2,
            "message": "ci[0].timeout: -1 is not a positive number of seconds",
        }
    ]
    code, out, _ = lint(str(repo(tmp_path, PIPELINE)), "--json")
    assert code == 0 and json.loads(out)["pipeline"]["on_failure"] == "rollback"


def test_schema_prints_the_json_schema() -> None:
    result = runner.invoke(app, ["pipeline", "schema"], prog_name="switchback")
    assert result.exit_code == 0 and json.loads(result.stdout) == PIPELINE_SHAPE


def test_as_a_real_process(tmp_path: Path) -> None:
    path = repo(tmp_path, "environments:\n  - {name: staging}\n  - {name: staging}\n")
    done = subprocess.run(
        [sys.executable, "-m", "switchback.cli", "pipeline", "lint", str(path)],
        env={k: v for k, v in os.environ.items() if not k.startswith("SWITCHBACK_")},
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 1
    assert "environment 'staging' given twice (first at line 2)" in flat(done.stderr)
    assert "Traceback" not in done.stderr
