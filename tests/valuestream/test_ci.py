"""CI steps as real subprocesses: exit codes, the log as it is written, the environment a step
sees (and does not), and a hanging step whose timeout ends its whole process group — the step,
its children and a `sleep` grandchild."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from switchback.valuestream import RunContext, Step, read_log, run_step, run_steps
from tests.eventually import eventually, eventually_async


def running(pid: int) -> bool:
    """Whether ``pid`` is a process that has not ended (a zombie has ended)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            state = f.read().rsplit(b")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in (b"Z", b"X")


@pytest.fixture
def ctx(tmp_path: Path) -> RunContext:
    work = tmp_path / "src"
    (work / "app").mkdir(parents=True)
    return RunContext(workdir=work, commit="c" * 40, ref="refs/heads/main", run_id="run-1")


async def test_a_step_that_passes_and_one_that_fails(ctx: RunContext, tmp_path: Path) -> None:
    log = tmp_path / "run.log"
    ok = await run_step(Step("unit", "echo hello; echo to-stderr >&2"), ctx, log)
    assert ok.ok and ok.exit_code == 0 and not ok.timed_out
    assert "hello" in ok.tail and "to-stderr" in ok.tail
    assert ok.summary().startswith("unit: exit 0 in")
    bad = await run_step(Step("lint", "echo checking\nfalse\necho never printed"), ctx, log)
    assert not bad.ok and bad.exit_code == 1  # bash -e: stops at the first failing line
    assert "never printed" not in bad.tail
    text = log.read_text()
    assert text.index("hello") < text.index("checking")  # one log, appended in order
    assert "--- unit: exit 0" in text and "--- lint: exit 1" in text
    assert bad.log_start == ok.log_end  # each step knows its part of the log


async def test_a_pipeline_fails_on_a_failing_part(ctx: RunContext, tmp_path: Path) -> None:
    result = await run_step(Step("pipe", "false | cat"), ctx, tmp_path / "log")
    assert result.exit_code == 1  # -o pipefail


async def test_steps_stop_at_the_first_failure(ctx: RunContext, tmp_path: Path) -> None:
    steps = [Step("a", "true"), Step("b", "exit 3"), Step("c", "touch ran-c")]
    results = await run_steps(steps, ctx, tmp_path / "log")
    assert [(r.name, r.exit_code) for r in results] == [("a", 0), ("b", 3)]
    assert not (ctx.workdir / "ran-c").exists()


async def test_the_environment_a_step_sees(
    ctx: RunContext, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SWITCHBACK_ADMIN_TOKENS", "admin=sbt_secret")
    monkeypatch.setenv("DATABASE_URL", "postgresql://secret@db/prod")
    step = Step(
        "env",
        "env | sort > env.txt; pwd > pwd.txt",
        env={"GREETING": "hi", "SWITCHBACK_COMMIT": "forged"},
        working_directory="app",
    )
    extra = RunContext(
        ctx.workdir, ctx.commit, ctx.ref, ctx.run_id, {"SWITCHBACK_STANDBY_URL": "http://x"}
    )
    assert (await run_step(step, extra, tmp_path / "log")).ok
    env = dict(
        line.split("=", 1) for line in (ctx.workdir / "app" / "env.txt").read_text().splitlines()
    )
    assert env["GREETING"] == "hi" and env["CI"] == "true"
    assert env["SWITCHBACK_COMMIT"] == "c" * 40  # the runner's, never the step's
    assert env["SWITCHBACK_REF"] == "refs/heads/main"
    assert env["SWITCHBACK_WORKDIR"] == str(ctx.workdir)
    assert (env["SWITCHBACK_STEP"], env["SWITCHBACK_RUN"]) == ("env", "run-1")
    assert env["SWITCHBACK_STANDBY_URL"] == "http://x"
    assert env["PATH"] == os.environ["PATH"]
    assert "SWITCHBACK_ADMIN_TOKENS" not in env and "DATABASE_URL" not in env  # no secrets
    assert (ctx.workdir / "app" / "pwd.txt").read_text().strip() == str(ctx.workdir / "app")


async def test_a_hanging_step_and_all_it_started_are_gone_after_its_timeout(
    ctx: RunContext, tmp_path: Path
) -> None:
    # A child that ignores SIGTERM, with a `sleep` grandchild of its own; the step hangs too.
    script = (
        "bash -c 'trap \"\" TERM; sleep 300 & echo $! > grandchild.pid; wait' &\n"
        "echo $! > child.pid\n"
        "echo $$ > step.pid\n"
        "sleep 300\n"
    )
    result = await run_step(Step("hang", script, timeout=1), ctx, tmp_path / "log", grace=0.5)
    assert result.timed_out and result.exit_code is None and not result.ok
    assert "killed: timed out after 1 s" in result.tail
    pids = [int((ctx.workdir / f"{n}.pid").read_text()) for n in ("step", "child", "grandchild")]
    # SIGKILL is delivered at once but a process is reaped by its parent: give that a moment.
    gone = eventually(
        lambda: not any(running(p) for p in pids), timeout=10, what="every process of the step gone"
    )
    assert gone


async def test_a_step_leaves_nothing_running_behind_it(ctx: RunContext, tmp_path: Path) -> None:
    result = await run_step(
        Step("bg", "sleep 300 & echo $! > bg.pid; echo done"), ctx, tmp_path / "log", grace=0.5
    )
    assert result.ok
    pid = int((ctx.workdir / "bg.pid").read_text())
    eventually(lambda: not running(pid), timeout=10, what="the background sleep ended")


async def test_a_cancelled_step_ends_its_process_group(ctx: RunContext, tmp_path: Path) -> None:
    log = tmp_path / "log"
    task = asyncio.create_task(
        run_step(Step("long", "echo $$ > step.pid; sleep 300"), ctx, log, grace=0.5)
    )
    pid_file = ctx.workdir / "step.pid"
    await eventually_async(
        lambda: pid_file.exists() and pid_file.read_text().strip(), what="started"
    )
    pid = int(pid_file.read_text())
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await eventually_async(lambda: not running(pid), what="the step ended with its task")
    assert "--- long: cancelled" in log.read_text()


async def test_the_log_is_readable_while_the_step_runs(ctx: RunContext, tmp_path: Path) -> None:
    log = tmp_path / "log"
    go = ctx.workdir / "go"
    script = f"echo first line; while [ ! -e {go} ]; do sleep 0.02; done; echo second line"
    task = asyncio.create_task(run_step(Step("live", script, timeout=60), ctx, log))
    chunk = await eventually_async(
        lambda: "first line" in read_log(log).text and read_log(log),
        what="the first line in the log",
    )
    assert "second line" not in chunk.text and not task.done()
    go.touch()
    result = await task
    rest = read_log(log, chunk.next_offset)
    assert "second line" in rest.text and "first line" not in rest.text
    assert rest.next_offset == result.log_end == log.stat().st_size


def test_read_log_returns_whole_characters(tmp_path: Path) -> None:
    log = tmp_path / "log"
    log.write_bytes("é".encode() + b"\xe2\x82")  # "é" and the first two bytes of "€"
    chunk = read_log(log)
    assert chunk.text == "é" and chunk.next_offset == 2  # the partial "€" waits for its end
    with log.open("ab") as f:
        f.write(b"\xac!")
    assert read_log(log, chunk.next_offset).text == "€!"
    assert read_log(log, 0, limit=1).text == ""  # half an "é": nothing yet, not U+FFFD
    assert read_log(tmp_path / "missing").text == ""  # a log not written yet reads as empty


async def test_a_step_that_cannot_start(ctx: RunContext, tmp_path: Path) -> None:
    result = await run_step(
        Step("x", "true", working_directory="no/such/dir"), ctx, tmp_path / "log"
    )
    assert not result.ok and result.error is not None and "no/such/dir" in result.error
    assert "could not start" in (tmp_path / "log").read_text()
