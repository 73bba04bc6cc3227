"""The value stream: a commit's way from ``git push`` to production.

The parts, one module each, every one usable and tested on its own (the pipeline run that
assembles them is a scenario on the engine, like a release):

* ``pipeline`` / ``pipeline_loader`` — the pipeline file ``.switchback/pipeline.yaml``: typed
  (:class:`Pipeline`), its JSON Schema, and lint with every problem at its file and line.
* ``git`` — the ``git`` program, async: a project's :class:`Mirror` (fetch, resolve a ref, read a
  commit or a file at a commit, a clean checkout of an exact commit and its removal), typed errors.
* ``hook`` / ``post_receive`` — the ``post-receive`` hook that makes a plain ``git push`` post a
  signed ``push`` event, and its installer.
* ``webhooks`` — GitHub and Gitea ``push`` / ``pull_request`` events: signature check (constant
  time), one :class:`GitEvent`, and what it triggers under the pipeline's triggers.
* ``ci`` — a step as a bash script in its own process group, timeout killing the whole group,
  output appended to the run's log and readable while it runs.
* ``artifacts`` — build once: a deterministic, content-addressed archive of the app at a commit
  with its lock file, stored atomically, verified before it is unpacked.
* ``metrics`` — DORA's four keys as pure functions over deployment records.
* ``globs`` — the ``*`` / ``**`` patterns of branch and path filters.

Approval policies and voting are the identity package's (``switchback.identity``): a pipeline
names or writes a policy; it never decides who may vote. ``docs/pipeline.md`` is the guide.
"""

from switchback.valuestream.artifacts import (
    ArtifactError,
    ArtifactNotFound,
    ArtifactStore,
    Dependencies,
    Dependency,
    Freight,
    Manifest,
    TamperedArtifact,
    UnsafeArtifact,
    build_from_commit,
    build_from_directory,
)
from switchback.valuestream.ci import (
    LogChunk,
    RunContext,
    StepResult,
    read_log,
    run_step,
    run_steps,
)
from switchback.valuestream.git import (
    CommitInfo,
    FileNotInCommit,
    GitError,
    GitTimeout,
    Mirror,
    NoPipelineFile,
    RepoUnavailable,
    UnknownRef,
    WorkDirError,
    ls_remote,
    resolve_remote,
)
from switchback.valuestream.hook import HookConflict, InstalledHook, install_hook
from switchback.valuestream.metrics import (
    Change,
    Deployment,
    Dora,
    Window,
    change_failure_rate,
    deployment_frequency,
    dora,
    lead_time,
    time_to_restore,
)
from switchback.valuestream.pipeline import (
    PIPELINE_FILE,
    PIPELINE_SHAPE,
    Build,
    Environment,
    Pipeline,
    PolicyRef,
    Step,
    Triggers,
    UnknownPolicy,
)
from switchback.valuestream.pipeline_loader import (
    LintResult,
    PipelineError,
    lint_pipeline,
    lint_pipeline_text,
    load_pipeline,
    load_pipeline_text,
)
from switchback.valuestream.webhooks import (
    GitEvent,
    InvalidEvent,
    SignatureError,
    Trigger,
    WebhookError,
    decide,
    new_secret,
    parse_event,
    receive,
    verify_signature,
)

__all__ = [
    "PIPELINE_FILE",
    "PIPELINE_SHAPE",
    "ArtifactError",
    "ArtifactNotFound",
    "ArtifactStore",
    "Build",
    "Change",
    "CommitInfo",
    "Dependencies",
    "Dependency",
    "Deployment",
    "Dora",
    "Environment",
    "FileNotInCommit",
    "Freight",
    "GitError",
    "GitEvent",
    "GitTimeout",
    "HookConflict",
    "InstalledHook",
    "InvalidEvent",
    "LintResult",
    "LogChunk",
    "Manifest",
    "Mirror",
    "NoPipelineFile",
    "Pipeline",
    "PipelineError",
    "PolicyRef",
    "RepoUnavailable",
    "RunContext",
    "SignatureError",
    "Step",
    "StepResult",
    "TamperedArtifact",
    "Trigger",
    "Triggers",
    "UnknownPolicy",
    "UnknownRef",
    "UnsafeArtifact",
    "WebhookError",
    "Window",
    "WorkDirError",
    "build_from_commit",
    "build_from_directory",
    "change_failure_rate",
    "decide",
    "deployment_frequency",
    "dora",
    "install_hook",
    "lead_time",
    "lint_pipeline",
    "lint_pipeline_text",
    "load_pipeline",
    "load_pipeline_text",
    "ls_remote",
    "new_secret",
    "parse_event",
    "read_log",
    "receive",
    "resolve_remote",
    "run_step",
    "run_steps",
    "time_to_restore",
    "verify_signature",
]
