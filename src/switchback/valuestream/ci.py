"""Running CI steps and smoke tests: each a bash script in a process group of its own, bounded
by its timeout, its output appended to the run's log as it is produced.

* **Process group.** A step is started with ``start_new_session=True``: it and everything it
  starts (a test server, a ``sleep`` in the background, ``make``'s children) share one process
  group. At the timeout the whole group gets SIGTERM, and SIGKILL ``grace`` seconds later if
  anything is left; a step that ended still leaves nothing behind (its background processes are
  ended the same way). Only a process that makes a session of its own (``setsid``) escapes — as
  from any CI runner that is not a container.
* **Shell.** ``bash --noprofile --norc -e -o pipefail -c RUN``: a multi-line ``run`` stops at its
  first failing line, as GitHub Actions' ``shell: bash`` does.
* **Environment.** Not the platform's: it holds tokens and database URLs that a commit must not
  be able to print. A step sees ``PATH``, ``HOME``, locale and temp-dir variables, ``CI=true``,
  its own ``env``, then ``SWITCHBACK_COMMIT``, ``SWITCHBACK_REF``, ``SWITCHBACK_WORKDIR``,
  ``SWITCHBACK_STEP``, ``SWITCHBACK_RUN`` and what the caller adds (``SWITCHBACK_STANDBY_URL``
  for a smoke test), which a step cannot override.
* **Log.** stdout and stderr go straight to the log file (opened for appending; no pipe that a
  step's forgotten child could hold open), framed by a line before and after each step, so the
  file is readable while the step runs: :func:`read_log` reads it from an offset, whole
  characters only (a live page asks again from ``next_offset``). A step's result carries the
  tail of its own part.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import os
import signal
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from switchback.valuestream.pipeline import Step

DEFAULT_GRACE = 5.0  # seconds between SIGTERM and SIGKILL
TAIL_BYTES = 4096
READ_LIMIT = 1 << 16
SHELL = ("bash", "--noprofile", "--norc", "-e", "-o", "pipefail", "-c")
# What a step inherits from the platform's environment; nothing else (see the module's doc).
INHERITED = (
    "PATH",
    "HOME",
    "LANG",
    "LANGUAGE",
    "LC_ALL",
    "LC_CTYPE",
    "TZ",
    "TMPDIR",
    "USER",
    "LOGNAME",
)


@dataclass(frozen=True)
class RunContext:
    """What a step is told about the run it belongs to."""

    workdir: Path  # the checkout's root
    commit: str
    ref: str | None = None
    run_id: str | None = None
    extra: Mapping[str, str] = field(default_factory=dict)  # SWITCHBACK_STANDBY_URL, ...


@dataclass(frozen=True)
class StepResult:
    name: str
    exit_code: int | None  # None: killed at its timeout, or could not start
    duration: float
    timed_out: bool
    log: Path
    log_start: int  # the step's part of the log: [log_start, log_end)
    log_end: int
    tail: str
    error: str | None = None  # why it could not start (no such working directory, ...)

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.timed_out

    def summary(self) -> str:
        if self.error:
            return f"{self.name}: could not start: {self.error}"
        if self.timed_out:
            return f"{self.name}: killed after its timeout ({self.duration:.1f} s)"
        return f"{self.name}: exit {self.exit_code} in {self.duration:.1f} s"


def step_env(step: Step, ctx: RunContext, base: Mapping[str, str] | None = None) -> dict[str, str]:
    base = os.environ if base is None else base
    env = {k: base[k] for k in INHERITED if k in base}
    env["CI"] = "true"
    env.update(step.env)
    env.update(ctx.extra)
    env.update(
        SWITCHBACK_COMMIT=ctx.commit,
        SWITCHBACK_REF=ctx.ref or "",
        SWITCHBACK_WORKDIR=str(ctx.workdir),
        SWITCHBACK_STEP=step.name,
        SWITCHBACK_RUN=ctx.run_id or "",
    )
    return env


def _stamp() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _group_alive(pgid: int) -> bool:
    """Whether a process of the group is still running. A zombie does not count: under a PID 1
    that does not reap (the controller itself, in a container) orphans stay zombies, and a
    kill(0) would say they are alive forever."""
    if not os.path.isdir("/proc"):
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as f:
                stat = f.read()
        except OSError:  # it ended while we looked
            continue
        fields = stat[stat.rfind(b")") + 2 :].split()  # after "pid (comm) "
        if len(fields) > 2 and int(fields[2]) == pgid and fields[0] not in (b"Z", b"X"):
            return True
    return False


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


async def end_group(pgid: int, grace: float) -> None:
    """SIGTERM to the group, SIGKILL after ``grace`` seconds to whatever is left."""
    if not _group_alive(pgid):
        return
    _signal_group(pgid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    # Grandchildren are not our children: nothing signals their end, so look again and again.
    while _group_alive(pgid) and time.monotonic() < deadline:  # noqa: ASYNC110 (no event to await)
        await asyncio.sleep(0.05)
    _signal_group(pgid, signal.SIGKILL)


async def run_step(
    step: Step,
    ctx: RunContext,
    log: Path,
    *,
    grace: float = DEFAULT_GRACE,
    tail_bytes: int = TAIL_BYTES,
    base_env: Mapping[str, str] | None = None,
) -> StepResult:
    """Run one step to its end or its timeout; see the module's doc. Cancelling the task ends
    the step's process group too."""
    _open_log_dir(log)
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        start = os.fstat(fd).st_size
        cwd = ctx.workdir / step.working_directory
        os.write(
            fd,
            f"--- {step.name}: {_stamp()} in {step.working_directory} (timeout {step.timeout:g} s)\n".encode(),
        )
        started = time.monotonic()
        try:
            proc = await asyncio.create_subprocess_exec(
                *SHELL,
                step.run,
                cwd=cwd,
                env=step_env(step, ctx, base_env),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=fd,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,
            )
        except OSError as exc:
            message = f"{exc.strerror or exc}: {exc.filename or cwd}"
            os.write(fd, f"--- {step.name}: could not start: {message}\n".encode())
            end = os.fstat(fd).st_size
            return StepResult(
                step.name,
                None,
                0.0,
                False,
                log,
                start,
                end,
                _tail(log, start, end, tail_bytes),
                message,
            )
        timed_out = False
        try:
            await asyncio.wait_for(proc.wait(), step.timeout)
        except TimeoutError:
            timed_out = True
            await end_group(proc.pid, grace)
            await proc.wait()
        except asyncio.CancelledError:
            await end_group(proc.pid, min(grace, 1.0))
            await proc.wait()
            os.write(fd, f"--- {step.name}: cancelled\n".encode())
            raise
        duration = time.monotonic() - started
        await end_group(proc.pid, grace)  # what the step left running in the background
        code = None if timed_out else proc.returncode
        if timed_out:
            footer = f"--- {step.name}: killed: timed out after {step.timeout:g} s\n"
        else:
            footer = f"--- {step.name}: exit {code} in {duration:.1f} s\n"
        os.write(fd, footer.encode())
        end = os.fstat(fd).st_size
    finally:
        os.close(fd)
    return StepResult(
        step.name, code, duration, timed_out, log, start, end, _tail(log, start, end, tail_bytes)
    )


async def run_steps(
    steps: Sequence[Step],
    ctx: RunContext,
    log: Path,
    *,
    grace: float = DEFAULT_GRACE,
    base_env: Mapping[str, str] | None = None,
) -> list[StepResult]:
    """Run ``steps`` in order, stopping after the first that fails; the results so far."""
    results = []
    for step in steps:
        result = await run_step(step, ctx, log, grace=grace, base_env=base_env)
        results.append(result)
        if not result.ok:
            break
    return results


def _open_log_dir(log: Path) -> None:
    log.parent.mkdir(parents=True, exist_ok=True)


def _tail(log: Path, start: int, end: int, limit: int) -> str:
    begin = max(start, end - limit)
    with open(log, "rb") as f:
        f.seek(begin)
        data = f.read(end - begin)
    text = data.decode("utf-8", "replace")
    if begin > start and "\n" in text:
        text = text.split("\n", 1)[1]  # whole lines only
    return text


@dataclass(frozen=True)
class LogChunk:
    text: str
    offset: int  # where it was read from
    next_offset: int  # where to read from next (a partial character is left for then)
    size: int  # the log's size when read


def read_log(log: Path, offset: int = 0, limit: int = READ_LIMIT) -> LogChunk:
    """Up to ``limit`` bytes of the log from ``offset``, as whole UTF-8 characters (bytes that
    are not UTF-8 are shown as U+FFFD). A log that does not exist yet reads as empty."""
    if offset < 0 or limit <= 0:
        raise ValueError("offset must be ≥ 0 and limit > 0")
    try:
        with open(log, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            f.seek(offset)
            data = f.read(limit)
    except FileNotFoundError:
        return LogChunk("", offset, offset, 0)
    decoder = codecs.getincrementaldecoder("utf-8")("replace")
    text = decoder.decode(data)  # never final: the rest of a character may be on its way
    pending = len(decoder.getstate()[0])
    return LogChunk(text, offset, offset + len(data) - pending, size)
