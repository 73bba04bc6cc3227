"""A Dockerfile for an app build: the app folder and its locked dependencies on a slim Python
base, run by a non-root user, ``switchback serve`` as the entrypoint.

The image is built elsewhere (``docker build``, ``buildah``, a CI builder): no container engine
runs here. The Deployments that ``switchback k8s render`` writes expect what this file makes:
the app in ``/app``, ``switchback`` on the PATH, user 10001.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from switchback import __version__
from switchback.kubernetes.manifests import APP_DIR_IN_IMAGE, APP_UID, ManifestError

LOCK_FILES = ("requirements.lock", "requirements.txt")
_PYTHON = re.compile(r"3\.(1[1-9]|[2-9][0-9])")
_SWITCHBACK_PIN = re.compile(r"^\s*switchback\s*(==|@|\[)", re.IGNORECASE | re.MULTILINE)

DOCKERIGNORE = """\
# written by `switchback k8s dockerfile`
.git
.venv
.switchback
**/__pycache__
**/*.pyc
Dockerfile
.dockerignore
"""


@dataclass(frozen=True)
class DockerfilePlan:
    lock: str  # the lock file's name, in the app folder
    hashes: bool  # every requirement pinned with --hash: install with --require-hashes
    text: str


def find_lock(app_dir: Path) -> Path:
    for name in LOCK_FILES:
        if (app_dir / name).is_file():
            return app_dir / name
    raise ManifestError(
        f"{app_dir} has no {' or '.join(LOCK_FILES)}: the image installs the app's locked "
        "dependencies, switchback included (e.g. `pip-compile --generate-hashes -o "
        "requirements.lock requirements.in`, or `pip freeze > requirements.lock` in a clean venv)"
    )


def plan(app_dir: Path, *, python: str = "3.11") -> DockerfilePlan:
    if not _PYTHON.fullmatch(python):
        raise ManifestError(f"python {python!r}: expected 3.11 or newer, as 3.X")
    lock = find_lock(app_dir)
    text = lock.read_text(encoding="utf-8")
    if not _SWITCHBACK_PIN.search(text):
        raise ManifestError(
            f"{lock.name} does not pin switchback (a line `switchback==VERSION`, or "
            "`switchback @ URL` for a wheel of your own): the image runs `switchback serve`"
        )
    requirements = [
        line
        for line in (raw.strip() for raw in text.splitlines())
        if line and not line.startswith(("#", "-", "\\"))
    ]
    hashes = bool(requirements) and "--hash=" in text
    return DockerfilePlan(lock.name, hashes, render(lock.name, python=python, hashes=hashes))


def render(lock: str, *, python: str = "3.11", hashes: bool = False) -> str:
    require = " --require-hashes" if hashes else ""
    return f"""\
# syntax=docker/dockerfile:1
# Written by `switchback k8s dockerfile` (switchback {__version__}). Build with the app folder as
# the context, e.g. `docker build -t REGISTRY/APP:VERSION .`; pin the base image by digest
# (python:{python}-slim@sha256:...) for reproducible builds.

FROM python:{python}-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
COPY {lock} /tmp/{lock}
RUN /opt/venv/bin/pip install --no-deps{require} -r /tmp/{lock}

FROM python:{python}-slim
RUN useradd --uid {APP_UID} --user-group --no-create-home --shell /usr/sbin/nologin switchback
COPY --from=build /opt/venv /opt/venv
COPY . {APP_DIR_IN_IMAGE}
ENV PATH=/opt/venv/bin:$PATH PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
WORKDIR {APP_DIR_IN_IMAGE}
# Numeric, so that Kubernetes can check runAsNonRoot without reading /etc/passwd.
USER {APP_UID}:{APP_UID}
EXPOSE 8080
ENTRYPOINT ["switchback", "serve", "{APP_DIR_IN_IMAGE}"]
CMD ["--role", "all", "--host", "0.0.0.0", "--port", "8080"]
"""
