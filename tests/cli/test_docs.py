"""Every shell command in README.md, docs/*.md and the examples' READMEs runs as written.

Each ```sh block is marked on the line above it:

* ``<!-- doc-test: run (...) -->``: run here, as written, line by line in one bash session, in a
  folder of its own (``examples`` and ``.venv`` linked in), with the expected exit status of a
  line taken from its comment (``# exit 2``, else 0). Whatever it starts is stopped after.
* ``<!-- doc-test: check (why it cannot run here) -->`` (or no mark): bash parses it, and every
  command it names is checked against what exists: `switchback` sub-commands and options (the
  CLI's own definitions, what `--help` shows), `make` targets, files of the repository, the
  options of the scripts it runs (their `--help`), and a `curl` that sends a body says it is
  JSON (the gateway answers 415 otherwise).
"""

from __future__ import annotations

import itertools
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest

from switchback.cli.main import command

ROOT = Path(__file__).resolve().parents[2]
DOCS = [
    ROOT / "README.md",
    *sorted((ROOT / "docs").glob("*.md")),
    ROOT / "examples/provision/README.md",
]
SHELLS = ("sh", "bash", "shell", "console")
MARK = re.compile(r"<!--\s*doc-test:\s*(\w+)")
REPO_PATH = re.compile(r"^(examples|bench|docs|tests|src|scripts)/")


@dataclass
class Block:
    doc: Path
    line: int  # of the opening fence
    mode: str  # run | check
    text: str

    @property
    def id(self) -> str:
        return f"{self.doc.relative_to(ROOT)}:{self.line}"


def blocks() -> list[Block]:
    found = []
    for doc in DOCS:
        lines = doc.read_text().splitlines()
        i = 0
        while i < len(lines):
            fence = lines[i].strip()
            if fence.startswith("```") and fence[3:].strip() in SHELLS:
                end = next(j for j in range(i + 1, len(lines)) if lines[j].strip() == "```")
                indent = len(lines[i]) - len(lines[i].lstrip())
                body = "\n".join(line[indent:] for line in lines[i + 1 : end])
                mark = MARK.search(lines[i - 1]) if i else None
                found.append(Block(doc, i + 1, mark.group(1) if mark else "check", body))
                i = end
            i += 1
    return found


BLOCKS = blocks()


def commands(text: str) -> list[tuple[str, int | None]]:
    """The block's logical lines (continuations joined), with the expected exit status of each
    (``# exit N`` in its comment)."""
    out: list[tuple[str, int | None]] = []
    pending = ""
    for raw in text.splitlines():
        if raw.rstrip().endswith("\\"):
            pending += raw.rstrip()[:-1] + " "
            continue
        line = (pending + raw).strip()
        pending = ""
        if not line or line.startswith("#"):
            continue
        m = re.search(r"#\s*exit (\d+)", line)
        out.append((line, int(m.group(1)) if m else None))
    return out


# ------------------------------------------------------------------------------------- check


def _expand(line: str, variables: dict[str, str]) -> str:
    def sub(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2)
        return variables.get(name, m.group(0))

    return re.sub(r"\$\{(\w+)\}|\$(\w+)", sub, line)


def simple_commands(text: str) -> list[list[str]]:
    """Every simple command of the block as words, with the block's own variables expanded
    (``sb=...; $sb tx list``; command substitutions are taken apart like pipelines)."""
    variables: dict[str, str] = {}
    found: list[list[str]] = []
    for line, _ in commands(text):
        lexer = shlex.shlex(_expand(line, variables), posix=True, punctuation_chars=";&|()<>")
        lexer.whitespace_split = True
        lexer.commenters = "#"
        try:
            tokens = [*lexer, ";"]
        except ValueError:  # unbalanced quotes: `bash -n` says so
            continue
        words: list[str] = []
        for token in tokens:
            if not (token and set(token) <= set(";&|()<>")):
                words.append(token)
                continue
            if words:
                found.append(words)
                # Assignments (a=b c=d, export a=b) hold for the words after them.
                for word in words[1:] if words[0] == "export" else words:
                    name, eq, value = word.partition("=")
                    if not (eq and re.fullmatch(r"[A-Za-z_]\w*", name)):
                        break
                    variables[name] = value
            words = []
    return found


def _program(words: list[str]) -> tuple[str, list[str]]:
    """The program and its arguments, past ``env``, ``VAR=value`` words and ``export``."""
    i = 0
    while i < len(words) and (words[i] == "env" or re.fullmatch(r"[A-Za-z_]\w*=.*", words[i])):
        i += 1
    return (words[i], words[i + 1 :]) if i < len(words) else ("", [])


def check_switchback(args: list[str]) -> list[str]:
    cmd = command()
    path = ["switchback"]
    i = 0
    while getattr(cmd, "commands", None) and i < len(args) and not args[i].startswith("-"):
        if args[i] not in cmd.commands:
            return [f"`{' '.join(path)}` has no command {args[i]!r}"]
        cmd = cmd.commands[args[i]]
        path.append(args[i])
        i += 1
    if getattr(cmd, "commands", None) and "--version" not in args:
        return [f"`{' '.join(path)}` needs a command"]
    ctx = cmd.context_class(cmd)
    known = {o for p in cmd.get_params(ctx) for o in (*p.opts, *p.secondary_opts)}
    return [
        f"`{' '.join(path)}` has no option {a.split('=')[0]!r}"
        for a in args[i:]
        if a.startswith("-") and a != "-" and a.split("=")[0] not in known
    ]


@cache
def script_help(*argv: str) -> str:
    done = subprocess.run(
        [sys.executable, *argv, "--help"], capture_output=True, text=True, cwd=ROOT, timeout=60,
        env={**os.environ, "PYTHONPATH": str(ROOT / "examples" / "provision")},
    )  # fmt: skip
    return done.stdout + done.stderr


def problems(block: Block) -> list[str]:
    found = []
    syntax = subprocess.run(["bash", "-n"], input=block.text, capture_output=True, text=True)
    if syntax.returncode != 0:
        found.append(f"bash cannot parse it: {syntax.stderr.strip()}")
    makefile = (ROOT / "Makefile").read_text()
    for words in simple_commands(block.text):
        prog, args = _program(words)
        name = Path(prog).name
        for word in words:
            path = word.partition("=")[2] if re.match(r"[A-Za-z_]\w*=", word) else word
            path = path.lstrip("@")
            if REPO_PATH.match(path) and not (ROOT / path).exists():
                found.append(f"no file {path} in the repository")
        if name == "switchback":
            found += check_switchback(args)
            for opt, value in itertools.pairwise(args):
                if opt == "--smoke":  # a shell command the release runs: the same checks
                    found += problems(Block(block.doc, block.line, "check", value))
        elif name == "make":
            found += [f"no make target {t!r}" for t in args
                      if "=" not in t and not re.search(rf"^{re.escape(t)}:", makefile, re.M)]  # fmt: skip
        elif name == "curl" and any(a in ("-d", "--data", "--data-raw") for a in args):
            if not any("application/json" in a for a in args) and "--json" not in args:
                found.append(f"curl sends a form, not JSON (415): {' '.join(words)}")
        elif name.startswith("python") and args:
            if args[0] == "-m" and args[1] == "provision_app.lab":
                sub = args[2] if len(args) > 2 else None
                if sub and sub not in script_help("-m", "provision_app.lab"):
                    found.append(f"provision_app.lab has no command {sub!r}")
            elif args[0].endswith(".py"):
                text = script_help(args[0])
                found += [f"{args[0]} has no option {a!r}" for a in args[1:]
                          if a.startswith("--") and a not in text]  # fmt: skip
    return found


@pytest.mark.parametrize("block", BLOCKS, ids=[b.id for b in BLOCKS])
def test_every_command_names_what_exists(block: Block) -> None:
    assert block.mode in ("run", "check"), f"{block.id}: unknown doc-test mark {block.mode!r}"
    assert problems(block) == []


def test_the_check_catches_what_went_wrong_before() -> None:
    """The checks themselves: each kind of mistake the docs had, or could have."""
    doc = ROOT / "README.md"
    cases = {
        # docs/release.md's smoke test, as it was:
        "switchback release start --version v2 --app examples/ping --smoke "
        "'curl -sf -XPOST $SWITCHBACK_STANDBY_URL/ping -d \"{}\"'": [
            "curl sends a form, not JSON (415)"
        ],
        "curl -sf -XPOST http://127.0.0.1:1/ping -d '{}'": ["curl sends a form, not JSON (415)"],
        "sb=.venv/bin/switchback\n$sb tx lst": ["has no command 'lst'"],
        "switchback tx show XID --frob": ["has no option '--frob'"],
        "make upp": ["no make target 'upp'"],
        "cat examples/nope.json": ["no file examples/nope.json"],
        "echo 'unterminated": ["bash cannot parse it"],
    }
    for text, expected in cases.items():
        got = problems(Block(doc, 0, "check", text))
        assert len(got) == len(expected), (text, got)
        for g, e in zip(got, expected, strict=True):
            assert e in g, (text, got)


# --------------------------------------------------------------------------------------- run


RUN = [b for b in BLOCKS if b.mode == "run"]


def run_script(block: Block) -> str:
    """The block as a bash script that stops at the first line whose exit status is not the
    expected one, saying which."""
    parts = ["set -o pipefail"]
    for n, (line, expected) in enumerate(commands(block.text)):
        want = expected or 0
        parts.append(line)
        parts.append(
            f'__rc=$?; if [ $__rc -ne {want} ]; then echo "doc-test: line {n + 1} exited '
            f'$__rc, expected {want}: "{shlex.quote(line)} >&2; exit 99; fi'
        )
    return "\n".join(parts) + "\n"


@pytest.mark.parametrize("block", RUN, ids=[b.id for b in RUN])
@pytest.mark.timeout(600)
def test_runnable_blocks_run_as_written(block: Block, tmp_path: Path) -> None:
    for name in ("examples", ".venv"):
        (tmp_path / name).symlink_to(ROOT / name)
    venv_bin = ROOT / ".venv" / "bin"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SWITCHBACK_", "QUICKSTART_"))}
    env["PATH"] = f"{venv_bin}:{env.get('PATH', '')}"
    env["COLUMNS"] = "80"
    try:
        done = subprocess.run(
            ["bash", "-c", run_script(block)],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=540,
        )  # fmt: skip
    finally:
        # Whatever the block started (`switchback up`) is stopped, even if it failed midway.
        if (tmp_path / ".switchback" / "controller.json").exists():
            subprocess.run(
                [str(venv_bin / "switchback"), "down", "--data", str(tmp_path / ".switchback")],
                cwd=tmp_path, env=env, capture_output=True, timeout=180,
            )  # fmt: skip
    assert done.returncode == 0, f"{block.id}\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
