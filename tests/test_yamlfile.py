"""The YAML-with-lines helpers every loader shares (scenarios, the users file)."""

from __future__ import annotations

from pathlib import Path

from jsonschema import Draft202012Validator

from switchback.yamlfile import (
    Problem,
    YamlDocument,
    parse_yaml,
    path_text,
    read_yaml,
    shape_problems,
)

TEXT = """\
name: s
blocks:
  - name: a
    retry: {attempts: 0}
  - name: b
    colour: blue
"""
SHAPE = Draft202012Validator(
    {
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "blocks": {
                "type": "array",
                "items": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "name": {"type": "string"},
                        "retry": {"type": "object", "properties": {"attempts": {"minimum": 1}}},
                    },
                },
            },
        },
    }
)


def doc() -> YamlDocument:
    parsed = parse_yaml(TEXT, "s.yaml")
    assert isinstance(parsed, YamlDocument)
    return parsed


def test_every_path_has_its_line() -> None:
    d = doc()
    assert d.data["blocks"][1] == {"name": "b", "colour": "blue"}
    assert d.line("name") == 1
    assert d.line("blocks", 0) == 3
    assert d.line("blocks", 0, "retry", "attempts") == 4
    assert d.line("blocks", 1, "colour") == 6
    assert d.line("blocks", 1, "nothing", "here") == 5, "the nearest ancestor's line"


def test_path_text() -> None:
    assert path_text(("blocks", 2, "retry", "attempts")) == "blocks[2].retry.attempts"
    assert path_text(()) == ""


def test_shape_problems_are_at_their_lines_in_path_order() -> None:
    assert [str(p) for p in shape_problems(SHAPE, doc(), "s.yaml", "scenario")] == [
        "s.yaml:4: blocks[0].retry.attempts: 0 is less than the minimum of 1",
        "s.yaml:6: unknown key 'colour' in blocks[1] (allowed: name, retry)",
    ]


def test_bad_yaml_is_a_problem_never_an_exception(tmp_path: Path) -> None:
    assert str(parse_yaml("a: [1\n", "f.yaml")).startswith("f.yaml:2: invalid YAML: expected ','")
    assert str(parse_yaml("a:\n  b: 2025-02-30\n", "f.yaml")) == (
        "f.yaml:2: invalid YAML: '2025-02-30' is not a valid value (day is out of range for month)"
    )
    unreadable = read_yaml(tmp_path, "dir.yaml")
    assert isinstance(unreadable, Problem) and str(unreadable).startswith("dir.yaml: cannot read:")
    empty = parse_yaml("# nothing\n", "f.yaml")
    assert isinstance(empty, YamlDocument) and empty.data is None
