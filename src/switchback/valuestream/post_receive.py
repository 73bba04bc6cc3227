"""switchback's post-receive hook: a plain `git push` starts a pipeline run.

Installed into a bare repository by ``switchback.valuestream.git.install_hook`` (do not edit the
copy in ``hooks/``: installing again overwrites it); its settings (URL, project, secret, timeout)
are in ``hooks/switchback.json`` beside it, readable by the repository's owner only.

For each ref the push updated it posts a ``push`` event in the Gitea/GitHub webhook format to
``POST <url>/hooks/git/<project>``, signed with HMAC-SHA256 of the body (``X-Hub-Signature-256:
sha256=<hex>`` and Gitea's ``X-Gitea-Signature: <hex>``) and carrying a fresh delivery id
(``X-GitHub-Delivery``, ``X-Gitea-Delivery``), then prints the answer to the pusher (git shows it
as ``remote: switchback: ...``).

Why Python and only its standard library: the hook runs on the git server, which has git and,
on every common distribution, python3 — but not switchback or any package. Python gives JSON
encoding of arbitrary commit messages and names (a shell script building JSON with printf would
break on the first quote), HMAC, and timeouts, with nothing to install; curl + openssl would need
both present and hand-written escaping. Python 3.6 syntax, nothing newer.

It never holds a push up for long: the whole hook has ``timeout`` seconds (10 by default), each
request what is left of them; an unreachable or slow server is reported and the push stays (a
post-receive hook cannot undo a push anyway; it exits 0).
"""

import hashlib
import hmac
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid

MARK = "switchback post-receive hook"  # how install_hook recognises its own hook
ZERO = "0" * 40
MAX_COMMITS = 20  # as GitHub: the payload lists at most 20 commits
CONFIG = "switchback.json"


def say(text):
    sys.stdout.write("switchback: " + text + "\n")
    sys.stdout.flush()


def git(*args):
    done = subprocess.run(
        ["git", *args], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, timeout=20
    )
    if done.returncode != 0:
        raise RuntimeError(f"git {args[0]} failed")
    return done.stdout.decode("utf-8", "replace")


def commit(sha):
    fields = git("show", "--no-patch", "--format=%H%x00%an%x00%ae%x00%aI%x00%cn%x00%ce%x00%B", sha)
    f = fields.split("\x00", 6)
    return {
        "id": f[0],
        "message": f[6].rstrip("\n"),
        "timestamp": f[3],
        "author": {"name": f[1], "email": f[2]},
        "committer": {"name": f[4], "email": f[5]},
    }


def commits(old, new, ref):
    """The commits this push brought to ``ref``, oldest first (at most MAX_COMMITS)."""
    if old == ZERO:  # a new branch: what no other branch or tag had
        own = ref[len("refs/heads/") :] if ref.startswith("refs/heads/") else ref
        spec = [new, "--not", "--exclude=" + own, "--branches", "--tags"]
    else:
        spec = [new, "^" + old]
    try:
        shas = git("rev-list", f"--max-count={MAX_COMMITS}", *spec).split()
    except (RuntimeError, subprocess.SubprocessError):
        shas = [new]
    return [commit(s) for s in reversed(shas)]


def forced(old, new):
    if old == ZERO or new == ZERO:
        return False
    done = subprocess.run(
        ["git", "merge-base", "--is-ancestor", old, new],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        timeout=20,
    )
    return done.returncode == 1


def pusher():
    # Git servers name the pusher in their own variable; a plain ssh host has only the account.
    for var in ("GITEA_PUSHER_NAME", "GL_USERNAME", "SWITCHBACK_PUSHER", "REMOTE_USER", "USER"):
        if os.environ.get(var):
            return os.environ[var]
    return "unknown"


def event(config, old, new, ref):
    deleted = new == ZERO
    listed = [] if deleted else commits(old, new, ref)
    who = pusher()
    email = os.environ.get("GITEA_PUSHER_EMAIL") or os.environ.get("SWITCHBACK_PUSHER_EMAIL", "")
    repo = os.path.abspath(os.environ.get("GIT_DIR", "."))
    return {
        "ref": ref,
        "before": old,
        "after": new,
        "created": old == ZERO,
        "deleted": deleted,
        "forced": forced(old, new),
        "compare": "",
        "commits": listed,
        "total_commits": len(listed),
        "head_commit": None if deleted else (listed[-1] if listed else commit(new)),
        "repository": {
            "name": config["project"],
            "full_name": config["project"],
            "clone_url": repo,
            "default_branch": "",
        },
        "pusher": {"name": who, "login": who, "username": who, "email": email},
        "sender": {"login": who, "username": who},
    }


def post(config, body, seconds):
    secret = config["secret"].encode()
    digest = hmac.new(secret, body, hashlib.sha256).hexdigest()
    delivery = str(uuid.uuid4())
    url = config["url"].rstrip("/") + "/hooks/git/" + urllib.parse.quote(config["project"], "")
    request = urllib.request.Request(
        url,
        data=body,
        method="POST",
        headers={
            "Content-Type": "application/json",
            "User-Agent": "switchback-post-receive/1",
            "X-GitHub-Event": "push",
            "X-Gitea-Event": "push",
            "X-GitHub-Delivery": delivery,
            "X-Gitea-Delivery": delivery,
            "X-Hub-Signature-256": "sha256=" + digest,
            "X-Gitea-Signature": digest,
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=seconds) as answer:
            return answer.status, answer.read(65536)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(65536)


def explain(status, raw):
    try:
        data = json.loads(raw.decode("utf-8", "replace"))
    except ValueError:
        data = None
    if isinstance(data, dict):
        for key in ("message", "reason", "detail", "title"):
            if isinstance(data.get(key), str) and data[key]:
                return data[key]
    text = raw.decode("utf-8", "replace").strip().splitlines()
    return text[0][:200] if text else f"HTTP {status}"


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        with open(os.path.join(here, CONFIG)) as f:
            config = json.load(f)
    except (OSError, ValueError) as exc:
        say(f"hook not configured ({exc}): no run started")
        return 0
    budget = float(config.get("timeout", 10))
    deadline = time.monotonic() + budget
    for line in sys.stdin:
        parts = line.split()
        if len(parts) != 3:
            continue
        old, new, ref = parts
        short = ref.rsplit("/", 1)[-1] if ref.startswith("refs/heads/") else ref
        left = deadline - time.monotonic()
        if left <= 0.05:
            say(f"{short}: not sent: the hook's {budget:g} s are spent; start the run by hand")
            continue
        try:
            body = json.dumps(event(config, old, new, ref)).encode()
            status, raw = post(config, body, left)
        except (OSError, urllib.error.URLError, subprocess.SubprocessError, RuntimeError) as exc:
            reason = getattr(exc, "reason", exc)
            say(
                f"{short}: could not reach {config.get('url')} ({reason}): no run started; "
                "the push itself went through"
            )
            continue
        message = explain(status, raw)
        if 200 <= status < 300:
            say(f"{short}: {message}")
        else:
            say(f"{short}: refused (HTTP {status}): {message}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
