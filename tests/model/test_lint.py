"""Lint: each broken definition gives its own clear message with file and line; a bad definition
never crashes the loader."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from switchback.model import AppLoadError, RetryPolicy, lint_app, load_app, scenario

GOOD_BLOCKS = """
def do_it(ctx):
    return {"ok": True}

def undo_it(ctx):
    return None

not_callable = 42
"""


def make_app(tmp_path: Path, files: dict[str, str], module: str = GOOD_BLOCKS) -> Path:
    root = tmp_path / "app"
    (root / "scenarios").mkdir(parents=True)
    (root / "lintblocks.py").write_text(module)
    for name, text in files.items():
        (root / "scenarios" / name).write_text(textwrap.dedent(text).lstrip())
    return root


def messages(root: Path) -> list[str]:
    _, problems = lint_app(root)
    return [str(p) for p in problems]


GOOD = """
name: good
path: /good
request: {type: object, properties: {device: {type: string}}}
transaction: {lock_keys: ["device:{device}"]}
blocks:
  - name: one
    do: lintblocks:do_it
    undo: lintblocks:undo_it
"""


def test_good_app_has_no_problems(tmp_path: Path) -> None:
    root = make_app(tmp_path, {"good.yaml": GOOD})
    app, problems = lint_app(root)
    assert problems == []
    sc = app.scenarios["good"]
    assert sc.blocks[0].do is not None and sc.blocks[0].undo is not None
    assert sc.transaction.lock_keys == ["device:{device}"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "name: s\nblocks:\n  - name: a\n    do: lintblocks:nope\n",
            "s.yaml:4: block 'a': do 'lintblocks:nope': module 'lintblocks' has no attribute 'nope'",
        ),
        (
            "name: s\nblocks:\n  - name: a\n    do: missing_mod:f\n",
            "s.yaml:4: block 'a': do 'missing_mod:f': cannot import module 'missing_mod' (ModuleNotFoundError",
        ),
        (
            "name: s\nblocks:\n  - name: a\n    do: lintblocks:not_callable\n",
            "s.yaml:4: block 'a': do 'lintblocks:not_callable' is not callable",
        ),
        (
            "name: s\nrequest:\n  type: objekt\nblocks:\n  - {name: a, do: 'lintblocks:do_it'}\n",
            "s.yaml:3: invalid JSON Schema at request.type",
        ),
        (
            "name: s\nblocks:\n  - {name: a, do: 'lintblocks:do_it'}\n  - {name: a, do: 'lintblocks:do_it'}\n",
            "s.yaml:4: duplicate block name 'a' (first at line 3)",
        ),
        (
            "name: s\ncolour: blue\nblocks:\n  - {name: a, do: 'lintblocks:do_it'}\n",
            "s.yaml:2: unknown key 'colour' in scenario",
        ),
        (
            "name: s\nblocks:\n  - name: a\n    do: lintblocks:do_it\n    retries: 3\n",
            "s.yaml:5: unknown key 'retries' in blocks[0]",
        ),
        (
            "name: s\nblocks:\n  - name: a\n    do: lintblocks:do_it\n    retry: {attempts: 0}\n",
            "s.yaml:5: blocks[0].retry.attempts: 0 is less than the minimum of 1",
        ),
        ("name: s\nblocks: [\n", "s.yaml:3: invalid YAML"),
        ("name: s\n", "s.yaml:1: scenario: 'blocks' is a required property"),
        (
            "name: s\nblocks:\n  - name: a\n",
            "s.yaml:3: block 'a' needs exactly one of 'do' (a callable) or 'wait' (a signal name)",
        ),
        (
            "name: s\nblocks:\n  - name: a\n    do: not-a-ref\n",
            "s.yaml:4: blocks[0].do: 'not-a-ref' does not match",
        ),
        (
            "name: s\nresult: zzz\nblocks:\n  - {name: a, do: 'lintblocks:do_it'}\n",
            "s.yaml:2: result names unknown block 'zzz'",
        ),
        (
            "name: s\nrequest: {type: object, properties: {a: {type: string}}}\n"
            "transaction: {lock_keys: ['dev:{device}']}\nblocks:\n  - {name: a, do: 'lintblocks:do_it'}\n",
            "s.yaml:3: lock key 'dev:{device}' uses {device}, which is not a property of the request schema",
        ),
        ("", "s.yaml: empty file"),
        (
            "name: s\ndescription: 2025-13-45\nblocks:\n  - {name: a, do: 'lintblocks:do_it'}\n",
            "s.yaml:2: invalid YAML: '2025-13-45' is not a valid value (month must be in 1..12)",
        ),
        (
            "name: s\nblocks:\n  - name: a\n    wait: __pause__\n",
            "s.yaml:4: block 'a': signal names starting with '__' are reserved",
        ),
    ],
)
def test_each_broken_definition_has_its_own_message(
    tmp_path: Path, text: str, expected: str
) -> None:
    root = make_app(tmp_path, {"s.yaml": text})
    found = messages(root)
    assert any(expected in m for m in found), found
    with pytest.raises(AppLoadError):
        load_app(root)


def test_duplicate_endpoint_across_files(tmp_path: Path) -> None:
    other = GOOD.replace("name: good", "name: other")
    root = make_app(tmp_path, {"a.yaml": GOOD, "b.yaml": other})
    found = messages(root)
    assert any("duplicate endpoint POST /good (also scenario 'good')" in m for m in found), found


def test_all_problems_reported_at_once(tmp_path: Path) -> None:
    text = "name: s\nfoo: 1\nblocks:\n  - {name: a, do: 'lintblocks:nope'}\n  - {name: b, do: 'x:y', bar: 2}\n"
    found = messages(make_app(tmp_path, {"s.yaml": text}))
    assert len(found) == 2  # both unknown keys (shape errors stop before imports are tried)
    text2 = "name: s\nblocks:\n  - {name: a, do: 'lintblocks:nope'}\n  - {name: b, do: 'lintblocks:zip'}\n"
    assert len(messages(make_app(tmp_path / "2", {"s.yaml": text2}))) == 2


def test_module_that_raises_on_import_is_a_problem_not_a_crash(tmp_path: Path) -> None:
    root = make_app(tmp_path, {"s.yaml": GOOD}, module="raise RuntimeError('boom at import')\n")
    found = messages(root)
    assert any(
        "cannot import module 'lintblocks' (RuntimeError: boom at import)" in m for m in found
    ), found


def test_python_scenario_file_with_syntax_error(tmp_path: Path) -> None:
    root = make_app(tmp_path, {"bad.py": "def broken(:\n"})
    found = messages(root)
    assert any("bad.py:1: cannot load: SyntaxError" in m for m in found), found


def test_missing_scenarios_folder(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    assert any("no scenarios/ folder" in m for m in messages(tmp_path / "empty"))


def test_python_and_yaml_forms_build_the_same_objects(tmp_path: Path) -> None:
    py = """
from switchback.model import scenario
from lintblocks import do_it, undo_it

good = scenario("good", path="/good", request={"type": "object", "properties": {"device": {"type": "string"}}},
                lock_keys=["device:{device}"])
good.block("one")(do_it).undo(undo_it)
"""
    yaml_app = load_app(make_app(tmp_path / "y", {"good.yaml": GOOD}))
    py_app = load_app(make_app(tmp_path / "p", {"good.py": py}))
    a, b = yaml_app.scenarios["good"], py_app.scenarios["good"]
    assert (a.name, a.method, a.path, a.request, a.transaction) == (
        b.name,
        b.method,
        b.path,
        b.request,
        b.transaction,
    )
    assert [(x.name, x.do_ref, x.undo_ref, x.retry, x.idempotent) for x in a.blocks] == [
        (x.name, "lintblocks:do_it", "lintblocks:undo_it", RetryPolicy(), False) for x in b.blocks
    ]


def test_builder_api() -> None:
    sc = scenario("b", path="/b")

    @sc.block(retry={"attempts": 3, "backoff": 0.5}, idempotent=True)
    def first(ctx: object) -> int:
        return 1

    @first.undo
    def first_undo(ctx: object) -> None:
        return None

    sc.wait("approval", timeout=60)
    assert [b.name for b in sc.blocks] == ["first", "approval"]
    assert sc.blocks[0].undo is first_undo and sc.blocks[0].retry.attempts == 3
    assert sc.blocks[1].is_wait and sc.blocks[1].timeout == 60
    assert first(None) == 1  # the decorated function is still callable


def test_lint_cli_exit_status(tmp_path: Path) -> None:
    good = make_app(tmp_path / "g", {"good.yaml": GOOD})
    bad = make_app(tmp_path / "b", {"s.yaml": "name: s\nblocks: 3\n"})
    ok = subprocess.run(
        [sys.executable, "-m", "switchback.cli", "lint", str(good)], capture_output=True, text=True
    )
    assert ok.returncode == 0 and "ok good" in ok.stdout
    ko = subprocess.run(
        [sys.executable, "-m", "switchback.cli", "lint", str(bad)], capture_output=True, text=True
    )
    assert ko.returncode == 1
    assert "s.yaml:2: blocks: 3 is not of type 'array'" in ko.stderr
    assert "Traceback" not in ko.stderr


CHECKED = """
name: checked
path: /checked
request: {type: object, required: [device], properties: {device: {type: string}}}
request_check: lintblocks:known
blocks:
  - name: one
    do: lintblocks:do_it
"""

CHECK_BLOCKS = (
    GOOD_BLOCKS
    + """
def known(request):
    if request["device"] == "boom":
        raise OSError("inventory unreadable")
    if request["device"] == "odd":
        return ["not a dict"]
    if request["device"] != "leaf1":
        return [{"path": "/device", "message": f"no device {request['device']!r}"}]
"""
)


def test_request_check_runs_after_the_schema_and_reports_like_it(tmp_path: Path) -> None:
    from switchback.model import RequestCheckFailed

    sc = load_app(make_app(tmp_path, {"c.yaml": CHECKED}, CHECK_BLOCKS)).scenarios["checked"]
    assert sc.validate_request({"device": "leaf1"}) == []
    assert sc.validate_request({"device": "leaf9"}) == [
        {"path": "/device", "message": "no device 'leaf9'"}
    ]
    # Schema violations first: the check may rely on the request's shape.
    assert [v["path"] for v in sc.validate_request({})] == ["/"]
    with pytest.raises(RequestCheckFailed, match="lintblocks:known failed: OSError: inventory"):
        sc.validate_request({"device": "boom"})
    with pytest.raises(RequestCheckFailed, match="returned 'not a dict'"):
        sc.validate_request({"device": "odd"})


def test_request_check_that_does_not_resolve_is_a_lint_problem(tmp_path: Path) -> None:
    root = make_app(tmp_path, {"c.yaml": CHECKED.replace("lintblocks:known", "lintblocks:nope")})
    assert messages(root) == [
        "app/scenarios/c.yaml:4: request_check 'lintblocks:nope': module 'lintblocks' has no "
        "attribute 'nope'"
    ]


def test_request_check_in_python() -> None:
    sc = scenario("p", path="/p", request={"type": "object"})

    @sc.check
    def only_a(request: dict[str, object]) -> list[dict[str, str]]:
        return [] if request.get("a") else [{"path": "/a", "message": "a is needed"}]

    assert sc.validate_request({"a": 1}) == []
    assert sc.validate_request({}) == [{"path": "/a", "message": "a is needed"}]
    assert sc.request_check_ref is not None and sc.request_check_ref.endswith("only_a")
