"""Loading an app folder (``scenarios/*.yaml`` and ``scenarios/*.py``) and linting it.

Loading never raises on a bad definition: every problem is collected as a :class:`Problem` with
the file and, where YAML gives one, the line. ``load_app`` returns the scenarios that loaded
cleanly together with the problems of the others.
"""

from __future__ import annotations

import importlib
import importlib.util
import re
import sys
import traceback
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator

from switchback.model.definitions import (
    METHODS,
    App,
    Block,
    RetryPolicy,
    Scenario,
    TransactionOptions,
)
from switchback.yamlfile import Problem, read_yaml, shape_problems
from switchback.yamlfile import line_of as _line
from switchback.yamlfile import path_text as _path_text


class AppLoadError(Exception):
    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


# The shape of a scenario file. Checked with jsonschema so that every deviation is reported at
# once, with its path (which we map back to a YAML line).
_NAME = {"type": "string", "pattern": r"^[A-Za-z_][A-Za-z0-9_.-]*$"}
_REF = {"type": "string", "pattern": r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$"}
SCENARIO_SHAPE: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["name", "blocks"],
    "properties": {
        "name": _NAME,
        "description": {"type": "string"},
        "method": {"enum": list(METHODS) + [m.lower() for m in METHODS]},
        "path": {"type": "string", "pattern": r"^/"},
        "request": {"type": ["object", "boolean"]},
        "request_check": _REF,
        "result": {"type": "string"},
        "transaction": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "on_failure": {"enum": ["suspend", "rollback"]},
                "timeout": {"type": ["number", "null"], "exclusiveMinimum": 0},
                "async": {"type": "boolean"},
                "lock_keys": {"type": "array", "items": {"type": "string", "minLength": 1}},
                "lock_timeout": {"type": "number", "minimum": 0},
            },
        },
        "blocks": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["name"],
                "properties": {
                    "name": _NAME,
                    "description": {"type": "string"},
                    "do": _REF,
                    "undo": _REF,
                    "wait": {"type": "string", "minLength": 1},
                    "retry": {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {
                            "attempts": {"type": "integer", "minimum": 1},
                            "backoff": {"type": "number", "minimum": 0},
                            "max_backoff": {"type": "number", "minimum": 0},
                        },
                    },
                    "timeout": {"type": "number", "exclusiveMinimum": 0},
                    "idempotent": {"type": "boolean"},
                    "undo_idempotent": {"type": "boolean"},
                    "partial_effects": {"type": "boolean"},
                },
            },
        },
    },
}
_SHAPE = Draft202012Validator(SCENARIO_SHAPE)
_META = Draft202012Validator(Draft202012Validator.META_SCHEMA)


class _AppLoader:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.problems: list[Problem] = []

    def problem(self, file: Path | str, line: int | None, message: str) -> None:
        self.problems.append(Problem(str(file), line, message))

    # -- callables ---------------------------------------------------------------------------

    def resolve(self, ref: str, file: Path, line: int | None, what: str) -> Any:
        module_name, _, attr = ref.partition(":")
        try:
            module = importlib.import_module(module_name)
        except Exception as exc:  # any error in user code is a lint problem, not a crash
            detail = f"{type(exc).__name__}: {exc}"
            self.problem(
                file, line, f"{what} {ref!r}: cannot import module {module_name!r} ({detail})"
            )
            return None
        obj: Any = module
        for part in attr.split("."):
            obj = getattr(obj, part, None)
            if obj is None:
                self.problem(
                    file, line, f"{what} {ref!r}: module {module_name!r} has no attribute {attr!r}"
                )
                return None
        if not callable(obj):
            self.problem(file, line, f"{what} {ref!r} is not callable")
            return None
        return obj

    # -- YAML scenarios ------------------------------------------------------------------------

    def load_yaml(self, file: Path) -> Scenario | None:
        rel = file.relative_to(self.root.parent) if file.is_relative_to(self.root.parent) else file
        doc = read_yaml(file, rel)
        if isinstance(doc, Problem):
            self.problems.append(doc)
            return None
        if doc.data is None:
            self.problem(rel, None, "empty file: a scenario needs at least 'name' and 'blocks'")
            return None
        data, lines = doc.data, doc.lines
        before = len(self.problems)
        self.problems.extend(shape_problems(_SHAPE, doc, str(rel), "scenario"))
        if len(self.problems) > before:
            return None
        return self.build(data, rel, lines)

    def build(
        self, data: dict[str, Any], rel: Path, lines: dict[tuple[Any, ...], int]
    ) -> Scenario | None:
        before = len(self.problems)
        request = data.get("request", True)
        if isinstance(request, dict):
            for err in _META.iter_errors(request):
                path = ("request", *err.absolute_path)
                self.problem(
                    rel,
                    _line(lines, path),
                    f"invalid JSON Schema at {_path_text(path)}: {err.message}",
                )
        tx = data.get("transaction", {})
        blocks: list[Block] = []
        seen: dict[str, int] = {}
        for i, b in enumerate(data["blocks"]):
            bl = _line(lines, ("blocks", i))
            if b["name"] in seen:
                self.problem(
                    rel, bl, f"duplicate block name {b['name']!r} (first at line {seen[b['name']]})"
                )
            seen.setdefault(b["name"], bl or 0)
            if ("do" in b) == ("wait" in b):
                self.problem(
                    rel,
                    bl,
                    f"block {b['name']!r} needs exactly one of 'do' (a callable) or 'wait' (a signal name)",
                )
                continue
            if "wait" in b and str(b["wait"]).startswith("__"):
                self.problem(
                    rel,
                    _line(lines, ("blocks", i, "wait")),
                    f"block {b['name']!r}: signal names starting with '__' are reserved "
                    "(a pause request is the signal __pause__)",
                )
            if "wait" in b and "undo" in b:
                self.problem(
                    rel,
                    _line(lines, ("blocks", i, "undo")),
                    f"block {b['name']!r}: a wait block has no undo",
                )
            do = undo = None
            if "do" in b:
                do = self.resolve(
                    b["do"], rel, _line(lines, ("blocks", i, "do")), f"block {b['name']!r}: do"
                )
            if "undo" in b:
                undo = self.resolve(
                    b["undo"],
                    rel,
                    _line(lines, ("blocks", i, "undo")),
                    f"block {b['name']!r}: undo",
                )
            retry = b.get("retry", {})
            blocks.append(
                Block(
                    name=b["name"],
                    do=do,
                    undo=undo,
                    do_ref=b.get("do"),
                    undo_ref=b.get("undo"),
                    retry=RetryPolicy(
                        attempts=retry.get("attempts", 1),
                        backoff=float(retry.get("backoff", 0.0)),
                        max_backoff=float(retry.get("max_backoff", 30.0)),
                    ),
                    timeout=b.get("timeout"),
                    idempotent=b.get("idempotent", "wait" in b),
                    undo_idempotent=b.get("undo_idempotent"),
                    partial_effects=b.get("partial_effects", True),
                    wait=b.get("wait"),
                    description=b.get("description"),
                    line=bl,
                )
            )
        result = data.get("result")
        if result is not None and result not in seen:
            self.problem(rel, _line(lines, ("result",)), f"result names unknown block {result!r}")
        props = request.get("properties", {}) if isinstance(request, dict) else {}
        for j, key in enumerate(tx.get("lock_keys", [])):
            for field_name in re.findall(r"{([^{}]+)}", key):
                if isinstance(request, dict) and field_name not in props:
                    self.problem(
                        rel,
                        _line(lines, ("transaction", "lock_keys", j)),
                        f"lock key {key!r} uses {{{field_name}}}, which is not a property of the request schema",
                    )
        check = None
        if "request_check" in data:
            check = self.resolve(
                data["request_check"], rel, _line(lines, ("request_check",)), "request_check"
            )
        if len(self.problems) > before:
            return None
        return Scenario(
            name=data["name"],
            blocks=blocks,
            method=str(data.get("method", "POST")).upper(),
            path=data.get("path"),
            request=request,
            transaction=TransactionOptions(
                on_failure=tx.get("on_failure", "suspend"),
                timeout=tx.get("timeout", 3600.0),
                async_=tx.get("async", False),
                lock_keys=list(tx.get("lock_keys", [])),
                lock_timeout=float(tx.get("lock_timeout", 10.0)),
            ),
            result=result,
            description=data.get("description"),
            source=f"{rel}:{_line(lines, ()) or 1}",
            request_check=check,
            request_check_ref=data.get("request_check"),
        )

    # -- Python scenarios ----------------------------------------------------------------------

    def load_python(self, file: Path) -> list[Scenario]:
        rel = file.relative_to(self.root.parent) if file.is_relative_to(self.root.parent) else file
        mod_name = f"_switchback_scenarios_{abs(hash(str(file)))}_{file.stem}"
        try:
            spec = importlib.util.spec_from_file_location(mod_name, file)
            assert spec and spec.loader
            module = importlib.util.module_from_spec(spec)
            sys.modules[mod_name] = module
            spec.loader.exec_module(module)
        except Exception as exc:
            tb = traceback.extract_tb(exc.__traceback__)
            line = next((f.lineno for f in reversed(tb) if f.filename == str(file)), None)
            if isinstance(exc, SyntaxError):
                line = exc.lineno
            self.problem(rel, line, f"cannot load: {type(exc).__name__}: {exc}")
            return []
        found = [v for v in vars(module).values() if isinstance(v, Scenario)]
        for sc in found:
            sc.source = str(rel)
            self.check(sc, rel)
        return found

    def check(self, sc: Scenario, rel: Path) -> None:
        """Checks for scenarios built in Python (YAML ones are checked while being built)."""
        if isinstance(sc.request, dict):
            for err in _META.iter_errors(sc.request):
                self.problem(rel, None, f"scenario {sc.name!r}: invalid JSON Schema: {err.message}")
        names = [b.name for b in sc.blocks]
        for n in sorted({n for n in names if names.count(n) > 1}):
            self.problem(rel, None, f"scenario {sc.name!r}: duplicate block name {n!r}")
        if not sc.blocks:
            self.problem(rel, None, f"scenario {sc.name!r} has no blocks")

    # -- the app -------------------------------------------------------------------------------

    def load(self) -> App:
        app = App(root=str(self.root))
        sdir = self.root / "scenarios"
        if not self.root.is_dir():
            self.problem(self.root, None, "app folder does not exist")
            return app
        if not sdir.is_dir():
            self.problem(self.root, None, "no scenarios/ folder in the app")
            return app
        self._prepare_imports()
        found: list[Scenario] = []
        for file in sorted(sdir.iterdir()):
            if file.suffix in (".yaml", ".yml"):
                sc = self.load_yaml(file)
                if sc:
                    found.append(sc)
            elif file.suffix == ".py" and not file.name.startswith("_"):
                found.extend(self.load_python(file))
        routes: dict[tuple[str, str], str] = {}
        for sc in found:
            where, _, line = (sc.source or "").partition(":")
            lineno = int(line) if line.isdigit() else None
            if sc.name in app.scenarios:
                self.problem(
                    where,
                    lineno,
                    f"duplicate scenario name {sc.name!r} (also in {app.scenarios[sc.name].source})",
                )
                continue
            if sc.path:
                route = (sc.method, sc.path)
                if route in routes:
                    self.problem(
                        where,
                        lineno,
                        f"duplicate endpoint {sc.method} {sc.path} (also scenario {routes[route]!r})",
                    )
                    continue
                routes[route] = sc.name
            app.scenarios[sc.name] = sc
        if not found and not self.problems:
            self.problem(sdir, None, "no scenarios found (*.yaml or *.py)")
        return app

    def _prepare_imports(self) -> None:
        # The app folder goes first on the import path. Modules of the same name imported from
        # another folder (another app in the same process) are dropped, so that ours load.
        root = str(self.root)
        if root in sys.path:
            sys.path.remove(root)
        sys.path.insert(0, root)
        importlib.invalidate_caches()
        for name, mod in list(sys.modules.items()):
            file = getattr(mod, "__file__", None)
            if not file or name.startswith("_switchback_scenarios_"):
                continue
            top = name.split(".")[0]
            if (self.root / top).exists() or (self.root / f"{top}.py").exists():
                if not Path(file).resolve().is_relative_to(self.root):
                    del sys.modules[name]


def lint_app(root: str | Path) -> tuple[App, list[Problem]]:
    """Load an app and return it with every problem found (an empty list means clean)."""
    loader = _AppLoader(Path(root).resolve())
    app = loader.load()
    return app, loader.problems


def load_app(root: str | Path) -> App:
    """Load an app; raise :class:`AppLoadError` listing every problem if there is any."""
    app, problems = lint_app(root)
    if problems:
        raise AppLoadError(problems)
    return app
