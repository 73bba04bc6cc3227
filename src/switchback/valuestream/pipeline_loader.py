"""Reading the pipeline file and linting it: every problem at its file and line, never a
traceback.

Two passes, as for scenarios (``model.loader``) and the users file (``identity.loader``): the
shape (``pipeline.PIPELINE_SHAPE`` with jsonschema: unknown keys, wrong types, missing names),
then the values, whose rules read better as sentences than as schema keywords (timeouts > 0, a
``run`` that is not empty, names given twice, a policy naming nobody, a glob that cannot be
read). A file with problems gives no :class:`Pipeline`, so a run never starts from half a file.

A named approval can be checked only against a directory (the users file): without one it is
kept as a ``PolicyRef`` and lint adds a *note* saying it was not checked — a note never stops a
run; the controller, which has the directory, checks it again before a run starts.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from switchback.identity import ApprovalPolicy, InvalidIdentityData, validate_policy
from switchback.valuestream.globs import pattern_problem
from switchback.valuestream.pipeline import (
    DEFAULT_SMOKE_TIMEOUT,
    DEFAULT_STEP_TIMEOUT,
    ENV_NAME,
    ENV_VAR,
    PIPELINE_FILE,
    RESERVED_PREFIX,
    SHAPE_VALIDATOR,
    STEP_NAME,
    Build,
    Environment,
    Pipeline,
    PolicyRef,
    Step,
    Triggers,
)
from switchback.yamlfile import (
    Problem,
    YamlDocument,
    parse_yaml,
    path_text,
    read_yaml,
    shape_problems,
)

if TYPE_CHECKING:
    from switchback.identity import Directory


class PipelineError(Exception):
    """The pipeline file has problems; ``problems`` lists every one (file:line: message)."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


@dataclass(frozen=True)
class LintResult:
    """``pipeline`` is None when there is any problem; ``notes`` never stop a run (a named
    policy that could not be checked for want of a users file)."""

    pipeline: Pipeline | None
    problems: list[Problem]
    notes: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def _seconds_problem(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        return f"{value!r} is not a positive number of seconds"
    if value == float("inf"):
        return "must be a finite number of seconds"
    return None


def _relative_path_problem(value: str) -> str | None:
    p = PurePosixPath(value)
    if not value.strip() or p.is_absolute() or ".." in p.parts or "\\" in value:
        return f"{value!r} is not a path inside the repository (relative, no '..')"
    return None


def _normal(value: str) -> str:
    return str(PurePosixPath(value)) or "."


class _Reader:
    def __init__(self, doc: YamlDocument, where: str, directory: Directory | None) -> None:
        self.doc, self.where, self.directory = doc, where, directory
        self.problems: list[Problem] = []
        self.notes: list[Problem] = []

    def add(self, path: tuple[Any, ...], message: str) -> None:
        self.problems.append(Problem(self.where, self.doc.line(*path), message))

    def seconds(
        self, data: Mapping[str, Any], path: tuple[Any, ...], key: str, default: float
    ) -> float:
        if key not in data:
            return default
        why = _seconds_problem(data[key])
        if why:
            self.add((*path, key), f"{_label(path, key)}: {why}")
            return default
        return float(data[key])

    def patterns(self, values: list[str], path: tuple[Any, ...]) -> tuple[str, ...]:
        for j, p in enumerate(values):
            why = pattern_problem(p)
            if why:
                self.add((*path, j), f"{_label(path, j)}: {why}")
        return tuple(values)

    def unique(self, items: list[dict[str, Any]], section: str, what: str) -> None:
        first: dict[str, int] = {}
        for i, item in enumerate(items):
            name = item["name"]
            if name in first:
                self.add(
                    (section, i, "name"),
                    f"{section}[{i}]: {what} {name!r} given twice "
                    f"(first at line {self.doc.line(section, first[name], 'name')})",
                )
            first.setdefault(name, i)

    def step(self, s: dict[str, Any], i: int) -> Step:
        path = ("ci", i)
        if not STEP_NAME.match(s["name"]):
            self.add(
                (*path, "name"),
                f"ci[{i}].name: {s['name']!r} is not a step name (letters, digits, '_', '.', "
                "'-'; at most 64)",
            )
        if not s["run"].strip():
            self.add((*path, "run"), f"ci[{i}] ({s['name']}): 'run' is empty: nothing to run")
        env: dict[str, str] = {}
        for key, value in (s.get("env") or {}).items():
            where = (*path, "env", key)
            if not ENV_VAR.match(str(key)):
                self.add(where, f"ci[{i}].env: {key!r} is not an environment variable name")
            elif str(key).startswith(RESERVED_PREFIX):
                self.add(
                    where,
                    f"ci[{i}].env: {key!r} is reserved: the runner sets {RESERVED_PREFIX}* "
                    "variables (commit, ref, work dir)",
                )
            env[str(key)] = str(value).lower() if isinstance(value, bool) else str(value)
        wd = s.get("working_directory", ".")
        why = _relative_path_problem(wd)
        if why:
            self.add((*path, "working_directory"), f"ci[{i}].working_directory: {why}")
        return Step(
            name=s["name"],
            run=s["run"],
            timeout=self.seconds(s, path, "timeout", DEFAULT_STEP_TIMEOUT),
            env=env,
            working_directory=_normal(wd) if not why else ".",
            description=s.get("description"),
        )

    def approval(self, e: dict[str, Any], i: int) -> ApprovalPolicy | PolicyRef | None:
        path = ("environments", i, "approval")
        value = e.get("approval")
        label = f"environment {e['name']!r} approval"
        if value is None:
            return None
        if isinstance(value, str):
            if not value.strip():
                self.add(path, f"{label}: an empty name names no policy")
                return None
            if self.directory is None:
                self.notes.append(
                    Problem(
                        self.where,
                        self.doc.line(*path),
                        f"{label}: {value!r} names a policy of the users file; not checked "
                        "(no users file: set SWITCHBACK_USERS or pass --users)",
                    )
                )
                return PolicyRef(value)
            policy = self.directory.policy(value)
            if policy is None:
                known = ", ".join(sorted(self.directory.policies)) or "none"
                self.add(
                    path,
                    f"{label}: {value!r} names no policy of the users file (its policies: {known})",
                )
                return None
            return PolicyRef(value)
        try:
            policy = ApprovalPolicy.from_mapping(value, name=f"{e['name']} (inline)")
        except InvalidIdentityData as exc:
            for issue in exc.issues:
                self.add((*path, *issue.path), f"{label}: {issue}")
            return None
        if self.directory is not None:
            for issue in validate_policy(policy, self.directory):
                self.add((*path, *issue.path), f"{label}: {issue}")
        return policy

    def environment(self, e: dict[str, Any], i: int) -> Environment:
        path = ("environments", i)
        if not ENV_NAME.match(e["name"]):
            self.add(
                (*path, "name"),
                f"environments[{i}].name: {e['name']!r} is not an environment name (lower-case "
                "letters, digits and '-', starting with a letter; at most 40)",
            )
        smoke = e.get("smoke")
        if smoke is not None and not smoke.strip():
            self.add((*path, "smoke"), f"environment {e['name']!r}: 'smoke' is empty")
        return Environment(
            name=e["name"],
            smoke=smoke,
            smoke_timeout=self.seconds(e, path, "smoke_timeout", DEFAULT_SMOKE_TIMEOUT),
            approval=self.approval(e, i),
            description=e.get("description"),
        )

    def pipeline(self) -> Pipeline:
        data: dict[str, Any] = self.doc.data
        if not data.get("ci") and not data.get("environments"):
            self.add((), "the pipeline has neither 'ci' steps nor 'environments': nothing to run")
        app = data.get("app", ".")
        why = _relative_path_problem(app)
        if why:
            self.add(("app",), f"app: {why}")
        t = data.get("triggers") or {}
        branches = t.get("branches")
        for j, b in enumerate(branches or []):
            if b.startswith("refs/"):
                self.add(
                    ("triggers", "branches", j),
                    f"triggers.branches[{j}]: {b!r}: give branch names, not refs "
                    f"({b.removeprefix('refs/heads/')!r})",
                )
        triggers = Triggers(
            branches=self.patterns(branches, ("triggers", "branches"))
            if branches is not None
            else None,
            ci_branches=self.patterns(t.get("ci_branches", ["**"]), ("triggers", "ci_branches")),
            pull_requests=t.get("pull_requests", True),
        )
        steps = data.get("ci") or []
        self.unique(steps, "ci", "step")
        envs = data.get("environments") or []
        self.unique(envs, "environments", "environment")
        b = data.get("build") or {}
        lock = b.get("lock")
        if lock is True:
            self.add(("build", "lock"), "build.lock: give the lock file's path, or false for none")
            lock = None
        elif isinstance(lock, str):
            why = _relative_path_problem(lock)
            if why:
                self.add(("build", "lock"), f"build.lock: {why}")
            lock = _normal(lock)
        build = Build(
            include=self.patterns(b.get("include", ["**"]), ("build", "include")),
            exclude=self.patterns(b.get("exclude", []), ("build", "exclude")),
            lock=lock,
        )
        return Pipeline(
            app=_normal(app) if not why else ".",
            triggers=triggers,
            ci=tuple(self.step(s, i) for i, s in enumerate(steps)),
            build=build,
            environments=tuple(self.environment(e, i) for i, e in enumerate(envs)),
            on_failure=data.get("on_failure", "suspend"),
        )


def _label(path: tuple[Any, ...], key: Any) -> str:
    return path_text((*path, key))


def lint_pipeline_text(
    text: str,
    where: str = PIPELINE_FILE,
    *,
    directory: Directory | None = None,
    checkout: Path | None = None,
) -> LintResult:
    """Check a pipeline file's text (``where`` names it in problems, e.g. ``PATH@commit``).
    With ``directory``, named and inline policies are checked against the users file; with
    ``checkout`` (the repository's files), that the app folder and the lock file exist."""
    doc = parse_yaml(text, where)
    return _lint(doc, where, directory, checkout)


def lint_pipeline(
    path: Path | str, *, directory: Directory | None = None, shown_as: str | None = None
) -> LintResult:
    """Check the pipeline of a checkout (``path`` is the repository's folder, or the file)."""
    path = Path(path)
    if path.is_dir():
        root, file = path, path / PIPELINE_FILE
        if not file.is_file():
            where = shown_as or str(file)
            return LintResult(
                None,
                [Problem(where, None, f"no pipeline file: {PIPELINE_FILE} is missing in {path}")],
            )
    else:
        file = path
        root = path.parent.parent if path.parent.name == ".switchback" else None
    where = shown_as or str(file)
    doc = read_yaml(file, where)
    return _lint(doc, where, directory, root)


def _lint(
    doc: YamlDocument | Problem, where: str, directory: Directory | None, checkout: Path | None
) -> LintResult:
    if isinstance(doc, Problem):
        return LintResult(None, [doc])
    if doc.data is None:
        message = "empty file: a pipeline needs 'ci' steps or 'environments'"
        return LintResult(None, [Problem(where, None, message)])
    shape = shape_problems(SHAPE_VALIDATOR, doc, where, "pipeline")
    if shape:
        return LintResult(None, shape)
    reader = _Reader(doc, where, directory)
    pipeline = reader.pipeline()
    if checkout is not None:
        _check_checkout(reader, pipeline, checkout)
    problems = sorted(reader.problems, key=lambda p: p.line or 0)
    return LintResult(None if problems else pipeline, problems, reader.notes)


def _check_checkout(reader: _Reader, pipeline: Pipeline, root: Path) -> None:
    if not (root / pipeline.app).is_dir():
        reader.add(("app",), f"app: no folder {pipeline.app!r} in the repository")
    if isinstance(pipeline.build.lock, str) and not (root / pipeline.build.lock).is_file():
        reader.add(("build", "lock"), f"build.lock: no file {pipeline.build.lock!r}")
    for i, step in enumerate(pipeline.ci):
        if not (root / step.working_directory).is_dir():
            reader.add(
                ("ci", i, "working_directory"),
                f"ci[{i}].working_directory: no folder {step.working_directory!r}",
            )


def load_pipeline_text(
    text: str, where: str = PIPELINE_FILE, *, directory: Directory | None = None
) -> Pipeline:
    """Like :func:`lint_pipeline_text`, raising :class:`PipelineError` on any problem."""
    result = lint_pipeline_text(text, where, directory=directory)
    if result.pipeline is None:
        raise PipelineError(result.problems)
    return result.pipeline


def load_pipeline(path: Path | str, *, directory: Directory | None = None) -> Pipeline:
    result = lint_pipeline(path, directory=directory)
    if result.pipeline is None:
        raise PipelineError(result.problems)
    return result.pipeline
