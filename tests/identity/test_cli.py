"""`switchback users ...` through typer's CliRunner: a token made by `token new` works once its
line is pasted into the file; `check` and `whoami` explain every refusal, exit 1, no traceback."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner, Result

from switchback.cli.identity import app, roles_markdown
from switchback.identity import hash_token, load_users

from .conftest import write

runner = CliRunner()
CLEAN_ENV = {"SWITCHBACK_USERS": None, "SWITCHBACK_ADMIN_TOKENS": None, "SWITCHBACK_TOKEN": None}
USERS = """
users:
  - name: alice
    display_name: Alice Liddell
    email: alice@example.com
    roles: [operator]
    groups: [release-managers]
    chat: {matrix: "@alice:localhost"}
    tokens:
groups:
  - name: release-managers
    roles: [approver]
"""


def invoke(args: list[str], env: dict[str, str | None] | None = None, **kw: object) -> Result:
    result = runner.invoke(app, args, env={**CLEAN_ENV, **(env or {})}, **kw)  # type: ignore[arg-type]
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result


def words(text: str | list[str]) -> str:
    """Text as one line: rich wraps a long error message at the terminal's width."""
    return " ".join((text if isinstance(text, str) else " ".join(text)).split())


def test_help_has_examples() -> None:
    result = invoke(["--help"])
    assert result.exit_code == 0
    assert "switchback users token new alice" in result.output
    assert "whoami" in result.output and "check" in result.output


def test_a_new_token_works_once_its_line_is_in_the_file(tmp_path: Path) -> None:
    result = invoke(["token", "new", "alice", "--name", "laptop", "--expires", "30d"])
    assert result.exit_code == 0, result.output
    token = re.search(r"^  (sbt_\S+)$", result.stdout, re.M)
    line = re.search(r"^      (- \{.*\})$", result.stdout, re.M)
    assert token and line, result.stdout
    assert hash_token(token.group(1)) in line.group(1)
    assert token.group(1) not in line.group(1)
    # Paste the line where the output says, and the token authenticates.
    path = write(
        tmp_path / "users.yaml",
        USERS.replace("    tokens:\n", f"    tokens:\n      {line.group(1)}\n"),
    )
    alice = load_users(path).authenticate(f"Bearer {token.group(1)}")
    assert alice is not None and alice.token == "laptop"
    who = invoke(["whoami", "--file", str(path)], env={"SWITCHBACK_TOKEN": token.group(1)})
    assert who.exit_code == 0, who.output
    assert "Alice Liddell (alice) <alice@example.com>" in who.stdout
    assert "token:  laptop (expires " in who.stdout
    assert "roles:  operator (own), approver (group:release-managers)" in who.stdout
    assert "transactions.decide" in who.stdout and "approvals.vote" in who.stdout
    assert token.group(1) not in who.output


def test_token_new_json_and_its_choices() -> None:
    result = invoke(["token", "new", "bob", "--expires", "never", "--json"])
    assert result.exit_code == 0, result.output
    body = json.loads(result.stdout)
    assert body["user"] == "bob" and body["name"].startswith("token-")
    assert body["hash"] == hash_token(body["token"]) and "expires" not in body
    for bad, message in (("soon", "is not an expiry"), ("2001-01-01", "in the past")):
        refused = invoke(["token", "new", "bob", "--expires", bad])
        assert refused.exit_code == 1 and message in words(refused.output)


def test_token_new_warns_about_an_unknown_user(tmp_path: Path) -> None:
    path = write(tmp_path / "users.yaml", USERS)
    result = invoke(["token", "new", "alcie"], env={"SWITCHBACK_USERS": str(path)})
    assert result.exit_code == 0
    assert f"warning: {path} has no user 'alcie'" in result.stderr


def test_token_hash_reads_stdin() -> None:
    result = invoke(["token", "hash"], input="sbt_abc\n")
    assert result.exit_code == 0 and result.stdout.strip() == hash_token("sbt_abc")
    assert invoke(["token", "hash", "sbt_abc"]).stdout.strip() == hash_token("sbt_abc")
    assert invoke(["token", "hash", "-"], input="\n").exit_code == 1


def test_check_a_good_file(tmp_path: Path) -> None:
    path = write(tmp_path / "users.yaml", USERS)
    result = invoke(["check", str(path)])
    assert result.exit_code == 0, result.output
    assert f"ok {path}: 1 user, 1 group, 0 tokens, 0 policies" in result.stdout
    by_env = invoke(["check"], env={"SWITCHBACK_USERS": str(path)})
    assert by_env.exit_code == 0 and "ok" in by_env.stdout


def test_check_a_bad_file_lists_every_problem_and_exits_1(tmp_path: Path) -> None:
    path = write(tmp_path / "users.yaml", USERS + "  - name: ops\n    members: [zed]\n")
    path.write_text(path.read_text().replace("[operator]", "[operator, root]"))
    result = invoke(["check", str(path)])
    assert result.exit_code == 1
    assert result.stderr.splitlines()[0] == (
        f"{path}:5: users[0].roles[1]: 'root' is not one of "
        "['viewer', 'operator', 'approver', 'admin']"
    )
    assert words(result.stderr.splitlines()[1:]) == f"error: {path}: 1 problem"
    path.write_text(USERS + "  - name: ops\n    members: [zed]\n")
    result = invoke(["check", str(path)])
    assert result.exit_code == 1
    assert f"{path}:14: group 'ops' members[0]: unknown user 'zed'" in result.stderr
    assert "Traceback" not in result.output


def test_check_warns_but_passes(tmp_path: Path) -> None:
    path = write(tmp_path / "users.yaml", "users:\n  - name: idle\n")
    result = invoke(["check", str(path)])
    assert result.exit_code == 0
    assert f"warning: {path}: users[0]: idle has no role: it can do nothing" in result.stderr


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["check"], {}, "no users file: give one or set SWITCHBACK_USERS"),
        (["check", "/nonexistent/users.yaml"], {}, "/nonexistent/users.yaml: cannot read"),
        (["whoami"], {}, "no token: pass --token"),
        (["whoami", "--token", "sbt_x"], {}, "unknown token (looked in SWITCHBACK_ADMIN_TOKENS)"),
        (
            ["whoami", "--token", "x"],
            {"SWITCHBACK_ADMIN_TOKENS": "bad"},
            "SWITCHBACK_ADMIN_TOKENS: entry 1 is not of the form name=token",
        ),
    ],
)
def test_refusals_are_one_clear_line(args: list[str], env: dict[str, str], message: str) -> None:
    result = invoke(args, env)
    assert result.exit_code == 1
    assert message in words(result.stderr), result.stderr
    assert "Traceback" not in result.output


def test_whoami_explains_an_expired_token(tmp_path: Path) -> None:
    text = USERS.replace(
        "    tokens:\n",
        f"    tokens:\n      - {{name: old, hash: '{hash_token('sbt_old')}', expires: 2001-01-01}}\n",
    )
    path = write(tmp_path / "users.yaml", text)
    result = invoke(["whoami", "--token", "-", "--file", str(path)], input="sbt_old\n")
    assert result.exit_code == 1
    assert words(result.stderr) == (
        f"error: token 'old' of alice expired at 2001-01-01T00:00:00Z (looked in {path} and "
        "SWITCHBACK_ADMIN_TOKENS)"
    )


def test_whoami_for_an_admin_token_as_json() -> None:
    result = invoke(
        ["whoami", "--json"],
        env={"SWITCHBACK_ADMIN_TOKENS": "dev=dev-token", "SWITCHBACK_TOKEN": "dev-token"},
    )
    assert result.exit_code == 0, result.output
    body = json.loads(result.stdout)
    assert body["name"] == "dev" and body["roles"] == {"admin": ["own"]}
    assert body["origin"] == "SWITCHBACK_ADMIN_TOKENS" and "system.admin" in body["may"]


def test_list(tmp_path: Path) -> None:
    path = write(tmp_path / "users.yaml", USERS)
    result = invoke(
        ["list", "--json", "--file", str(path)], env={"SWITCHBACK_ADMIN_TOKENS": "dev=x"}
    )
    assert result.exit_code == 0, result.output
    rows = {r["name"]: r for r in json.loads(result.stdout)}
    assert rows["alice"]["roles"] == ["operator", "approver"]
    assert rows["dev"]["origin"] == "SWITCHBACK_ADMIN_TOKENS"
    assert "alice" in invoke(["list", "--file", str(path)]).stdout


def test_roles_prints_the_table() -> None:
    result = invoke(["roles"])
    assert result.exit_code == 0
    assert "approver: votes on approvals whose policy names them" in result.stdout
    md = invoke(["roles", "--markdown"])
    assert md.stdout.strip() == roles_markdown()


def test_the_cli_is_registered_as_switchback_users() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "switchback.cli", "users", "roles", "--markdown"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == roles_markdown()


def test_docs_show_the_table_and_an_example_that_loads(tmp_path: Path) -> None:
    docs = (Path(__file__).parents[2] / "docs" / "identity.md").read_text(encoding="utf-8")
    assert roles_markdown() in docs, "docs/identity.md: paste `switchback users roles --markdown`"
    example = re.search(r"```yaml\n(# users\.yaml.*?)```", docs, re.S)
    assert example, "docs/identity.md has its full example"
    path = tmp_path / "users.yaml"
    path.write_text(example.group(1))
    d = load_users(path)
    assert set(d.users) == {"alice", "bob", "carol", "deploy-bot"}
    assert d.policy("production") is not None
    assert yaml.safe_load(example.group(1))["groups"][0]["name"] == "release-managers"
    assert d.warnings() == []
