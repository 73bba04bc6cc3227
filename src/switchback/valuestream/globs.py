"""Glob patterns over ``/``-separated names: branch names in ``triggers``, paths in ``build``.

The same rules as GitHub Actions' branch filters and ``.gitignore``-style paths: ``*`` matches
within one segment (not ``/``), ``**`` across any number of segments, ``?`` one character other
than ``/``, ``[abc]`` a character class. Written here because :mod:`fnmatch` lets ``*`` cross
``/`` (``release/*`` would match ``release/1/hotfix``) and ``glob.translate`` arrives only with
Python 3.13.

A list of patterns is read in order and the last one that matches decides; a pattern starting
with ``!`` excludes (``[main, "release/*", "!release/old"]``), as GitHub does.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import lru_cache


class BadPattern(ValueError):
    """A pattern that cannot be read; the message says why."""


@lru_cache(maxsize=512)
def compile_glob(pattern: str) -> re.Pattern[str]:
    """The regular expression matching exactly what ``pattern`` matches."""
    if not pattern:
        raise BadPattern("an empty pattern matches nothing")
    out: list[str] = []
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        if c == "*":
            if pattern.startswith("**", i):
                i += 2
                if pattern.startswith("/", i):  # `a/**/b` also matches `a/b`
                    out.append("(?:.*/)?")
                    i += 1
                else:
                    out.append(".*")
                continue
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            end = pattern.find("]", i + 2 if pattern.startswith(("[!", "[^"), i) else i + 1)
            if end < 0:
                raise BadPattern(f"{pattern!r}: '[' without a closing ']'")
            body = pattern[i + 1 : end]
            if body.startswith("!"):
                body = "^" + body[1:]
            out.append(f"[{body.replace(chr(92), chr(92) * 2)}]")
            i = end
        else:
            out.append(re.escape(c))
        i += 1
    try:
        return re.compile("".join(out) + r"\Z")
    except re.error as exc:
        raise BadPattern(f"{pattern!r}: {exc}") from None


def glob_match(pattern: str, name: str) -> bool:
    return compile_glob(pattern).match(name) is not None


def matches_any(patterns: Iterable[str], name: str) -> bool:
    """Whether ``name`` is selected by ``patterns``: the last matching pattern decides, ``!``
    patterns exclude; no matching pattern → not selected."""
    selected = False
    for p in patterns:
        negated = p.startswith("!")
        if glob_match(p[1:] if negated else p, name):
            selected = not negated
    return selected


def pattern_problem(pattern: str) -> str | None:
    """Why ``pattern`` cannot be used, or None."""
    try:
        compile_glob(pattern[1:] if pattern.startswith("!") else pattern)
    except BadPattern as exc:
        return str(exc)
    return None
