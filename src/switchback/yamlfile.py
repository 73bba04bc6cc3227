"""YAML files checked with jsonschema, every problem reported with its file and line.

Shared by every loader of a user-written file (scenarios in ``model``, the users file in
``identity``, the pipeline file in ``valuestream``) so that they all report problems the same
way. PyYAML's ``safe_load`` drops the line numbers, so the file is composed into nodes and turned
into Python data here, remembering the line of every path; a jsonschema error's ``absolute_path``
is then mapped back to the nearest line.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft202012Validator

_SCALARS = yaml.SafeLoader("")


@dataclass(frozen=True)
class Problem:
    file: str
    line: int | None
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.message}"


@dataclass
class YamlDocument:
    """A parsed YAML file: the data (as ``yaml.safe_load`` gives it) and the line of each path."""

    data: Any
    lines: dict[tuple[Any, ...], int] = field(default_factory=dict)

    def line(self, *path: Any) -> int | None:
        return line_of(self.lines, path)


def to_python(node: yaml.Node, path: tuple[Any, ...], lines: dict[tuple[Any, ...], int]) -> Any:
    """Turn a composed YAML node into Python data, remembering the line of every path."""
    lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = to_python(key_node, (*path, "<key>"), {})
            lines[(*path, key)] = key_node.start_mark.line + 1
            out[key] = to_python(value_node, (*path, key), lines)
            lines[(*path, key)] = key_node.start_mark.line + 1
        return out
    if isinstance(node, yaml.SequenceNode):
        return [to_python(v, (*path, i), lines) for i, v in enumerate(node.value)]
    try:
        return _SCALARS.construct_object(node, deep=True)  # a scalar, typed as safe_load would
    except ValueError as exc:  # a scalar that matches a YAML type but cannot be one: 2025-13-45
        raise yaml.constructor.ConstructorError(
            None, None, f"{node.value!r} is not a valid value ({exc})", node.start_mark
        ) from None


def line_of(lines: dict[tuple[Any, ...], int], path: tuple[Any, ...]) -> int | None:
    """The line of ``path``, or of its nearest ancestor that has one."""
    while path not in lines and path:
        path = path[:-1]
    return lines.get(path)


def path_text(path: tuple[Any, ...]) -> str:
    """``("blocks", 2, "do")`` → ``blocks[2].do``."""
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


def read_yaml(file: Path, shown_as: str | Path | None = None) -> YamlDocument | Problem:
    """Read and parse one YAML file; a :class:`Problem` (never an exception) if it cannot be read
    or is not YAML. An empty file gives a document whose data is None."""
    where = str(shown_as if shown_as is not None else file)
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return Problem(where, None, f"cannot read: {exc}")
    return parse_yaml(text, where)


def parse_yaml(text: str, where: str) -> YamlDocument | Problem:
    """Parse YAML text (``where`` names it in problems); see :func:`read_yaml`."""
    doc = YamlDocument(None)
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        if node is not None:
            doc.data = to_python(node, (), doc.lines)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        return Problem(where, mark.line + 1 if mark else None, f"invalid YAML: {exc.problem}")
    except yaml.YAMLError as exc:
        return Problem(where, None, f"cannot read: {exc}")
    return doc


def shape_problems(
    validator: Draft202012Validator, doc: YamlDocument, where: str, root: str
) -> list[Problem]:
    """Every deviation of ``doc`` from the validator's schema, at its line, in path order.
    ``root`` names the whole document in messages (e.g. "scenario")."""
    problems: list[Problem] = []
    errors = validator.iter_errors(doc.data)
    for err in sorted(errors, key=lambda e: list(map(str, e.absolute_path))):
        path = tuple(err.absolute_path)
        if err.validator == "additionalProperties" and isinstance(err.instance, dict):
            allowed = set(err.schema.get("properties", {}))
            for key in sorted(set(err.instance) - allowed, key=str):
                problems.append(
                    Problem(
                        where,
                        doc.line(*path, key),
                        f"unknown key {key!r} in {path_text(path) or root} "
                        f"(allowed: {', '.join(sorted(allowed))})",
                    )
                )
            continue
        problems.append(
            Problem(where, doc.line(*path), f"{path_text(path) or root}: {err.message}")
        )
    return problems
