"""The users file: every problem with file:line, SWITCHBACK_ADMIN_TOKENS beside it, and a
directory that follows the file (at most one look a second; a broken version never replaces a
working one)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from switchback.identity import (
    Directory,
    LiveDirectory,
    Role,
    UsersFileError,
    hash_token,
    lint_users,
    load_users,
    open_directory,
    parse_admin_tokens,
)

from .conftest import write

ALICE = "sbt_alice-0000000000000000000000000000000000000"
BOB = "sbt_bob-00000000000000000000000000000000000000000"

GOOD = f"""
users:
  - name: alice
    email: alice@example.com
    roles: [operator]
    groups: [release-managers]
    chat: {{matrix: "@alice:localhost"}}
    tokens:
      - {{name: laptop, hash: "{hash_token(ALICE)}", expires: 2999-01-01}}
  - name: bob
    roles: [viewer]
    tokens:
      - {{name: ci, hash: "{hash_token(BOB)}"}}
groups:
  - name: release-managers
    roles: [approver]
    members: [bob]
policies:
  - name: production
    approvers: [alice, "group:release-managers"]
    required: 2
"""


def test_a_good_file_loads(tmp_path: Path) -> None:
    d = load_users(write(tmp_path / "users.yaml", GOOD))
    alice = d.authenticate(f"Bearer {ALICE}")
    assert alice is not None and alice.roles == {Role.OPERATOR, Role.APPROVER}
    policy = d.policy("production")
    assert policy is not None and policy.required == 2 and policy.on_timeout == "reject"
    assert d.members("release-managers") == {"alice", "bob"}


def test_an_empty_file_is_an_empty_directory(tmp_path: Path) -> None:
    d = load_users(write(tmp_path / "users.yaml", "# nobody yet\n"), {"dev": "dev-token"})
    assert list(d.users) == ["dev"]


def problems(tmp_path: Path, text: str, admin: dict[str, str] | None = None) -> list[str]:
    path = write(tmp_path / "users.yaml", text)
    directory, found = lint_users(path, admin, shown_as="users.yaml")
    assert (directory is None) == bool(found)
    with pytest.raises(UsersFileError):
        load_users(path, admin)
    return [str(p) for p in found]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("users: [\n", "users.yaml:2: invalid YAML"),
        ("users:\n  - name: a\n    tokens:\n      - {name: t, hash: x, expires: 2025-13-01}\n",
         "users.yaml:4: invalid YAML: '2025-13-01' is not a valid value"),
        ("colour: blue\n", "users.yaml:1: unknown key 'colour' in users file (allowed: groups, policies, users)"),
        ("users:\n  - name: a\n    role: [admin]\n", "users.yaml:3: unknown key 'role' in users[0]"),
        ("users:\n  - name: a\n    roles: [root]\n", "users.yaml:3: users[0].roles[0]: 'root' is not one of ['viewer', 'operator', 'approver', 'admin']"),
        ("users:\n  - email: a@b\n", "users.yaml:2: users[0]: 'name' is a required property"),
        ("users:\n  - name: a b\n", "users.yaml:2: user 'a b': 'a b' is not a valid user name"),
        ("users:\n  - name: a\n    email: nope\n", "users.yaml:3: user 'a' email: 'nope' is not an email address"),
        ("users:\n  - name: a\n    chat:\n      matrix: alice\n", "users.yaml:4: user 'a' chat.matrix: 'alice' is not a Matrix user id"),
        ("users:\n  - name: a\n    chat: {teams: x}\n", "users.yaml:3: user 'a' chat.teams: unknown chat network 'teams' (matrix, slack)"),
        ("users:\n  - name: a\n    groups: [ops]\n", "users.yaml:3: user 'a' groups[0]: unknown group 'ops'"),
        ("users:\n  - name: a\n  - name: a\n", "users.yaml:3: user 'a': duplicate user name 'a' (first at line 2)"),
        ("groups:\n  - name: g\n    members: [zed]\n", "users.yaml:3: group 'g' members[0]: unknown user 'zed'"),
        ("users:\n  - name: a\n    tokens:\n      - {name: t, hash: 'sha256:abc'}\n",
         "users.yaml:4: user 'a' tokens[0].hash: not a token hash: expected sha256: and 64 lowercase hex digits"),
        (f"users:\n  - name: a\n    tokens:\n      - {{name: t, hash: {ALICE}}}\n",
         "users.yaml:4: user 'a' tokens[0].hash: this is a token, not its hash"),
        ("users:\n  - name: a\n    tokens:\n      - {name: t, hash: x, expires: 90d}\n",
         "users.yaml:4: user 'a' tokens[0].expires: '90d' is not an expiry"),
        (f"users:\n  - name: a\n    tokens:\n      - {{name: t, hash: '{hash_token(ALICE)}'}}\n"
         f"  - name: b\n    tokens:\n      - {{name: u, hash: '{hash_token(ALICE)}'}}\n",
         "users.yaml:7: user 'b' tokens[0].hash: the same token as a's token 't' (first at line 4)"),
        ("users:\n  - {name: a, roles: [approver]}\npolicies:\n  - name: p\n    approvers: [a]\n    required: 0\n",
         "users.yaml:6: policy 'p' required: must be at least 1"),
        ("users:\n  - {name: a, roles: [approver]}\npolicies:\n  - name: p\n    approvers: [a]\n    on_timeout: approve\n",
         "users.yaml:6: policy 'p' on_timeout: 'approve' is not allowed"),
        ("users:\n  - {name: a, roles: [approver]}\npolicies:\n  - name: p\n    approvers: [a]\n    required: 2\n",
         "users.yaml:6: policy 'p' required: is 2 but the policy names only 1 approver(s)"),
        ("users:\n  - {name: a, roles: [viewer]}\npolicies:\n  - name: p\n    approvers:\n      - a\n",
         "users.yaml:6: policy 'p' approvers[0]: 'a' could never vote"),
        ("policies:\n  - name: p\n    approvers:\n      - group:nope\n    required: 0\n",
         "users.yaml:4: policy 'p' approvers[0]: unknown group 'nope'"),
        ("policies:\n  - {name: p, approvers: [a]}\n  - {name: p, approvers: [a]}\n",
         "users.yaml:3: policy 'p': duplicate policy name 'p' (first at line 2)"),
        ("policies:\n  - approvers: [a]\n", "users.yaml:2: policies[0]: 'name' is a required property"),
    ],
)  # fmt: skip
def test_each_problem_has_its_own_message_and_line(
    tmp_path: Path, text: str, expected: str
) -> None:
    found = problems(tmp_path, text)
    assert any(p.startswith(expected) for p in found), found
    assert ALICE not in " ".join(found), "a token is never echoed"


def test_all_problems_at_once_in_line_order(tmp_path: Path) -> None:
    text = (
        "users:\n"
        "  - name: a\n"
        "    groups: [nope]\n"
        "    email: bad\n"
        "groups:\n"
        "  - name: g\n"
        "    members: [zed]\n"
    )
    assert problems(tmp_path, text) == [
        "users.yaml:3: user 'a' groups[0]: unknown group 'nope'",
        "users.yaml:4: user 'a' email: 'bad' is not an email address",
        "users.yaml:7: group 'g' members[0]: unknown user 'zed'",
    ]


def test_admin_tokens_join_the_file(tmp_path: Path) -> None:
    d = load_users(write(tmp_path / "users.yaml", GOOD), {"ops": "ops-secret"})
    ops = d.authenticate("Bearer ops-secret")
    assert ops is not None and ops.name == "ops" and ops.roles == {Role.ADMIN}
    assert d.authenticate(f"Bearer {BOB}") is not None


def test_an_admin_token_name_that_is_also_a_user_is_refused(tmp_path: Path) -> None:
    found = problems(tmp_path, GOOD, {"bob": "x"})
    assert found == [
        "SWITCHBACK_ADMIN_TOKENS: entry 'bob': user 'bob' is defined both in the users file and "
        "in SWITCHBACK_ADMIN_TOKENS (first at users.yaml:9)"
    ]


def test_an_admin_token_equal_to_a_file_token_is_refused(tmp_path: Path) -> None:
    found = problems(tmp_path, GOOD, {"ops": BOB})
    assert found == [
        "SWITCHBACK_ADMIN_TOKENS: entry 'ops' tokens[0].hash: the same token as bob's token "
        "'ci' (first at users.yaml:12)"
    ]


def test_parse_admin_tokens_never_echoes_a_token() -> None:
    assert parse_admin_tokens("a=1, b = 2 ,") == ({"a": "1", "b": "2"}, [])
    for bad in ("zz-secret", "=zz-secret", "a=", "a=zz-secret,a=zz-secret"):
        _, found = parse_admin_tokens(bad)
        assert found and all("zz-secret" not in str(p) for p in found)
        assert all(str(p).startswith("SWITCHBACK_ADMIN_TOKENS: ") for p in found)


def test_open_directory_reads_the_environment(tmp_path: Path) -> None:
    path = write(tmp_path / "users.yaml", GOOD)
    live = open_directory(
        {"SWITCHBACK_USERS": str(path), "SWITCHBACK_ADMIN_TOKENS": "dev=dev-token"}
    )
    assert live.actor("Bearer dev-token") == "dev"
    assert live.actor(f"Bearer {ALICE}") == "alice"
    # The gateway already merges its --config tokens with the environment: it passes them.
    live = open_directory({"SWITCHBACK_ADMIN_TOKENS": "dev=dev-token"}, admin_tokens={"x": "y"})
    assert live.actor("Bearer y") == "x" and live.actor("Bearer dev-token") is None
    with pytest.raises(UsersFileError, match="SWITCHBACK_ADMIN_TOKENS: entry 1"):
        open_directory({"SWITCHBACK_ADMIN_TOKENS": "oops"})
    with pytest.raises(UsersFileError, match="cannot read"):
        open_directory({"SWITCHBACK_USERS": str(tmp_path / "missing.yaml")})
    assert open_directory({}).current().users == {}


# -- reload ------------------------------------------------------------------------------------


class Clock:
    """A monotonic clock the test moves by hand: no sleeping, no race with the interval."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def live_directory(tmp_path: Path) -> tuple[LiveDirectory, Path, Clock]:
    path = write(tmp_path / "users.yaml", GOOD)
    clock = Clock()
    return LiveDirectory(path, {"dev": "dev-token"}, clock=clock), path, clock


CAROL = "sbt_carol-00000000000000000000000000000000000000"


def with_carol() -> str:
    return GOOD.replace(
        "groups:\n",
        f"  - name: carol\n    roles: [admin]\n    tokens:\n"
        f'      - {{name: t, hash: "{hash_token(CAROL)}"}}\ngroups:\n',
    )


def test_a_changed_file_is_read_at_the_next_look(tmp_path: Path) -> None:
    live, path, clock = live_directory(tmp_path)
    assert live.authenticate(f"Bearer {CAROL}") is None
    write(path, with_carol())
    # Within the interval the file is not looked at: the hot path costs a clock read.
    clock.now += 0.5
    assert live.authenticate(f"Bearer {CAROL}") is None
    assert live.loads == 1
    clock.now += 0.5
    carol = live.authenticate(f"Bearer {CAROL}")
    assert carol is not None and carol.roles == {Role.ADMIN}
    assert live.loads == 2 and live.problems == []
    # Unchanged: looked at, not re-read.
    clock.now += 5
    live.current()
    assert live.loads == 2


def test_a_removed_token_stops_working_after_the_reload(tmp_path: Path) -> None:
    live, path, clock = live_directory(tmp_path)
    assert live.actor(f"Bearer {BOB}") == "bob"
    write(path, GOOD.replace(f'      - {{name: ci, hash: "{hash_token(BOB)}"}}\n', ""))
    clock.now += 1
    assert live.actor(f"Bearer {BOB}") is None
    assert live.actor(f"Bearer {ALICE}") == "alice"


def test_a_broken_version_keeps_the_previous_one_serving(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    live, path, clock = live_directory(tmp_path)
    write(path, with_carol().replace("roles: [admin]", "roles: [root]"))
    clock.now += 1
    with caplog.at_level("ERROR", logger="switchback.identity"):
        assert live.actor(f"Bearer {ALICE}") == "alice"  # still the first version
    assert live.actor(f"Bearer {CAROL}") is None
    assert [str(p) for p in live.problems] == [
        f"{path}:14: users[2].roles[0]: 'root' is not one of "
        "['viewer', 'operator', 'approver', 'admin']"
    ]
    assert "users file not reloaded" in caplog.text and f"{path}:14" in caplog.text
    # Fixed: picked up at the next look.
    write(path, with_carol())
    clock.now += 1
    assert live.actor(f"Bearer {CAROL}") == "carol"
    assert live.problems == []


def test_a_deleted_file_keeps_the_last_directory(tmp_path: Path) -> None:
    live, path, clock = live_directory(tmp_path)
    path.unlink()
    clock.now += 1
    assert live.actor(f"Bearer {ALICE}") == "alice"
    assert live.problems and "cannot read" in str(live.problems[0])
    write(path, with_carol())
    clock.now += 1
    assert live.actor(f"Bearer {CAROL}") == "carol"


def test_a_file_replaced_by_rename_is_seen(tmp_path: Path) -> None:
    """Editors and Kubernetes swap files by rename: a new inode, maybe the same size and mtime."""
    live, path, clock = live_directory(tmp_path)
    new = write(tmp_path / "next.yaml", with_carol())
    st = path.stat()
    os.utime(new, ns=(st.st_atime_ns, st.st_mtime_ns))
    os.replace(new, path)
    clock.now += 1
    assert live.actor(f"Bearer {CAROL}") == "carol"


def test_reload_now(tmp_path: Path) -> None:
    live, path, _ = live_directory(tmp_path)
    write(path, with_carol())
    assert live.reload() == []
    assert live.actor(f"Bearer {CAROL}") == "carol"
    write(path, "users: 7\n")
    assert [str(p) for p in live.reload()] == [f"{path}:1: users: 7 is not of type 'array', 'null'"]
    assert live.actor(f"Bearer {CAROL}") == "carol"


def test_a_directory_without_a_file_never_looks(tmp_path: Path) -> None:
    clock = Clock()
    live = LiveDirectory(None, {"dev": "dev-token"}, clock=clock)
    clock.now += 10
    assert live.actor("Bearer dev-token") == "dev" and live.loads == 1
    assert isinstance(live.current(), Directory)
