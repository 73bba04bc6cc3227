"""Authentication per request: the identity directory (one SHA-256, one dict lookup by hash)
next to the gateway's TokenSet (one SHA-256, then a constant-time compare against every token),
both measured in the same run, for growing numbers of tokens.

    .venv/bin/python bench/identity.py [--tokens 1,10,100,1000] [--calls 100000]

Rows: TokenSet.actor (today's gateway), Directory.authenticate (a fixed directory) and
LiveDirectory.authenticate (backed by a users file, with the once-a-second look at it), each for
a known token (the last one defined: TokenSet's worst case is every case) and an unknown one.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from switchback.gateway.auth import TokenSet
from switchback.identity import Directory, LiveDirectory, Token, User, hash_token, new_token


def per_call(fn: Callable[[str], object], header: str, calls: int) -> float:
    """Nanoseconds per call, best of five rounds (the machine may be shared)."""
    best = float("inf")
    for _ in range(5):
        began = time.perf_counter_ns()
        for _ in range(calls):
            fn(header)
        best = min(best, (time.perf_counter_ns() - began) / calls)
    return best


def users_file(folder: Path, tokens: dict[str, str]) -> Path:
    lines = ["users:"]
    for name, token in tokens.items():
        lines += [f"  - name: {name}", "    roles: [admin]", "    tokens:"]
        lines.append(f'      - {{name: t, hash: "{hash_token(token)}"}}')
    path = folder / "users.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", default="1,10,100,1000")
    parser.add_argument("--calls", type=int, default=100_000)
    args = parser.parse_args()
    print(f"ns per call, best of 5 x {args.calls} calls")
    print(f"{'tokens':>7} {'TokenSet':>10} {'Directory':>10} {'Live':>10}"
          f" {'TokenSet miss':>14} {'Directory miss':>15}")  # fmt: skip
    for n in (int(x) for x in args.tokens.split(",")):
        tokens = {f"user{i}": new_token() for i in range(n)}
        last = f"Bearer {tokens[f'user{n - 1}']}"
        miss = f"Bearer {new_token()}"
        token_set = TokenSet(tokens)
        directory = Directory(
            [
                User(u, roles={"admin"}, tokens=[Token("t", hash_token(t))])
                for u, t in tokens.items()
            ]
        )
        with tempfile.TemporaryDirectory(prefix="sb-bench-identity-") as tmp:
            live = LiveDirectory(users_file(Path(tmp), tokens))
            assert token_set.actor(last) == directory.actor(last) == live.actor(last)
            row = [
                per_call(token_set.actor, last, args.calls),
                per_call(directory.authenticate, last, args.calls),
                per_call(live.authenticate, last, args.calls),
                per_call(token_set.actor, miss, args.calls),
                per_call(directory.authenticate, miss, args.calls),
            ]
        print(
            f"{n:>7} {row[0]:>10.0f} {row[1]:>10.0f} {row[2]:>10.0f} {row[3]:>14.0f} {row[4]:>15.0f}"
        )


if __name__ == "__main__":
    main()
