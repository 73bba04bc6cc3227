"""Build once: the same commit gives the same digest (twice, and from git or from a checkout),
what goes in and what never does, the lock file in the manifest, atomic and idempotent storage,
and unpacking that refuses a tampered artifact and paths outside the destination."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import tarfile
from pathlib import Path

import pytest

from switchback.valuestream import (
    ArtifactError,
    ArtifactNotFound,
    ArtifactStore,
    Build,
    Freight,
    Mirror,
    TamperedArtifact,
    UnsafeArtifact,
    build_from_commit,
    build_from_directory,
)
from switchback.valuestream.artifacts import EPOCH, Entry, pack, parse_lock

from .conftest import WorkRepo


@pytest.fixture
async def mirror(bare: Path, tmp_path: Path) -> Mirror:
    m = Mirror(bare, tmp_path / "data" / "git" / "app.git")
    await m.fetch()
    return m


@pytest.fixture
def store(tmp_path: Path) -> ArtifactStore:
    return ArtifactStore(tmp_path / "data" / "artifacts")


def names(store: ArtifactStore, digest: str) -> list[str]:
    with tarfile.open(fileobj=io.BytesIO(store.content(digest))) as tar:
        return tar.getnames()


async def test_the_same_commit_gives_the_same_digest(
    work: WorkRepo, mirror: Mirror, store: ArtifactStore, tmp_path: Path
) -> None:
    one = await build_from_commit(store, mirror, "main", "app", Build(), project="shop")
    other_store = ArtifactStore(tmp_path / "elsewhere")
    two = await build_from_commit(other_store, mirror, "main", "app", Build(), project="shop")
    assert one.digest == two.digest and one.digest.startswith("sha256:")
    assert (
        store.archive_path(one.digest).read_bytes()
        == other_store.archive_path(two.digest).read_bytes()
    )
    # a checkout of that commit (as CI sees it) builds the same bytes
    checkout = await mirror.checkout("main", tmp_path / "checkout")
    three = build_from_directory(
        other_store, checkout, "app", Build(), project="shop", commit=work.head()
    )
    assert three.digest == one.digest
    # ... and a change of one byte is another artifact
    work.commit({"app/hello.py": "def a(ctx):\n    return {'ok': False}\n"}, "change")
    work.git("push", "--quiet", "origin", "main")
    await mirror.fetch()
    changed = await build_from_commit(store, mirror, "main", "app", Build(), project="shop")
    assert changed.digest != one.digest


async def test_what_goes_in_and_what_never_does(
    work: WorkRepo, mirror: Mirror, store: ArtifactStore, tmp_path: Path
) -> None:
    work.commit(
        {
            "app/run.sh": "#!/bin/sh\necho hi\n",
            "app/__pycache__/hello.cpython-311.pyc": b"\x00compiled",
            "app/lib/util.pyc": b"\x00compiled",
            "app/docs/notes.md": "notes",
        },
        "more files",
    )
    work.git("update-index", "--chmod=+x", "app/run.sh")
    work.git("commit", "--quiet", "-m", "executable")
    work.git("push", "--quiet", "origin", "main")
    await mirror.fetch()
    m = await build_from_commit(
        store, mirror, "main", "app", Build(exclude=("docs/**",)), project="shop"
    )
    assert names(store, m.digest) == [
        "hello.py", "requirements.lock", "run.sh", "scenarios", "scenarios/hello.yaml",
    ]  # fmt: skip
    assert m.files == 4 and m.app == "app" and m.commit == work.head()
    with tarfile.open(fileobj=io.BytesIO(store.content(m.digest))) as tar:
        for info in tar.getmembers():
            assert (info.mtime, info.uid, info.gid, info.uname, info.gname) == (EPOCH, 0, 0, "", "")
            expected = 0o755 if info.isdir() or info.name == "run.sh" else 0o644
            assert info.mode == expected, info.name
    # a checkout with CI's leftovers in it builds the same: .git, caches and build output are not source
    checkout = await mirror.checkout("main", tmp_path / "co")
    (checkout / "app" / "__pycache__").mkdir(exist_ok=True)
    (checkout / "app" / "__pycache__" / "x.pyc").write_bytes(b"junk")
    again = build_from_directory(
        store, checkout, "app", Build(exclude=("docs/**",)), project="shop", commit=None
    )
    assert again.digest == m.digest


async def test_the_lock_file_is_recorded_in_the_manifest(
    work: WorkRepo, mirror: Mirror, store: ArtifactStore
) -> None:
    m = await build_from_commit(store, mirror, "main", "app", Build(), project="shop")
    deps = m.dependencies
    assert deps.lock == "requirements.lock"
    lock = (work.path / "app" / "requirements.lock").read_bytes()
    assert deps.sha256 == "sha256:" + hashlib.sha256(lock).hexdigest()
    assert [(d.name, d.version) for d in deps.packages] == [("httpx", "0.28.1"), ("rich", "13.7.0")]
    assert deps.packages[0].hashes == ("sha256:" + "a" * 64,)
    stored = json.loads(store.manifest_path(m.digest).read_text())
    assert stored["dependencies"]["unpinned"] == []
    assert (
        stored["digest"] == m.digest and stored["project"] == "shop" and stored["files"] == m.files
    )
    assert store.manifest(m.digest) == m


async def test_a_lock_file_outside_the_app_folder(
    work: WorkRepo, mirror: Mirror, store: ArtifactStore
) -> None:
    work.commit({"requirements.txt": "flask>=2\nrequests==2.31.0\n"}, "a root lock")
    work.git("push", "--quiet", "origin", "main")
    await mirror.fetch()
    m = await build_from_commit(
        store, mirror, "main", "app", Build(lock="requirements.txt"), project="shop"
    )
    assert m.dependencies.lock == "requirements.txt" and "requirements.txt" in names(
        store, m.digest
    )
    assert m.dependencies.unpinned == ["flask>=2"]  # shown, so that an unpinned build is visible
    none = await build_from_commit(store, mirror, "main", "app", Build(lock=False), project="shop")
    assert none.dependencies.lock is None and none.dependencies.packages == ()
    with pytest.raises(ArtifactError, match=r"no file 'nope\.lock'"):
        await build_from_commit(
            store, mirror, "main", "app", Build(lock="nope.lock"), project="shop"
        )


async def test_an_app_folder_that_is_not_there(mirror: Mirror, store: ArtifactStore) -> None:
    with pytest.raises(ArtifactError, match="no app folder 'nope'"):
        await build_from_commit(store, mirror, "main", "nope", Build(), project="shop")
    with pytest.raises(ArtifactError, match="nothing to ship"):
        await build_from_commit(
            store, mirror, "main", "app", Build(include=("*.rs",), lock=False), project="shop"
        )


def test_storing_twice_writes_once(store: ArtifactStore) -> None:
    content = pack([Entry("a.txt", "file", b"a")])
    first = store.put(content, project="p", commit="c1", files=1, now=1.0)
    second = store.put(content, project="p", commit="c2", files=1, now=2.0)
    assert second == first  # the first manifest stays: same bytes, same artifact
    assert [m.digest for m in store.list()] == [first.digest]
    assert not [p for p in store.blobs.iterdir() if p.name.startswith(".")]  # no temporary left


async def test_unpack_gives_back_the_app(
    mirror: Mirror, store: ArtifactStore, tmp_path: Path
) -> None:
    m = await build_from_commit(store, mirror, "main", "app", Build(), project="shop")
    dest = store.unpack(m.digest, tmp_path / "instance" / "v1")
    assert (dest / "hello.py").read_text().startswith("def a(ctx)")
    assert (dest / "scenarios" / "hello.yaml").exists()
    with pytest.raises(ArtifactError, match="not empty"):
        store.unpack(m.digest, dest)


async def test_a_tampered_artifact_is_refused_before_anything_is_written(
    mirror: Mirror, store: ArtifactStore, tmp_path: Path
) -> None:
    m = await build_from_commit(store, mirror, "main", "app", Build(), project="shop")
    path = store.archive_path(m.digest)
    content = gzip.decompress(path.read_bytes())
    evil = content.replace(b"'ok': True", b"'ok': 1337")  # same length: only the digest can tell
    assert evil != content and len(evil) == len(content)
    path.write_bytes(gzip.compress(evil))
    with pytest.raises(TamperedArtifact, match="was changed after it was stored"):
        store.unpack(m.digest, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    path.write_bytes(path.read_bytes()[:40])  # truncated
    with pytest.raises(TamperedArtifact, match="cannot be read"):
        store.verify(m.digest)
    store.manifest_path(m.digest).write_text(
        json.dumps({**m.to_dict(), "digest": "sha256:" + "0" * 64})
    )
    with pytest.raises(TamperedArtifact, match="names another digest"):
        store.manifest(m.digest)


def _stored_tar(store: ArtifactStore, members: list[tuple[tarfile.TarInfo, bytes]]) -> str:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if info.isfile() else None)
    return store.put(buffer.getvalue(), project="evil", commit=None, files=len(members)).digest


def _member(
    name: str, kind: bytes = tarfile.REGTYPE, data: bytes = b"x", link: str = ""
) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, link
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    return info, data


@pytest.mark.parametrize(
    "members",
    [
        [_member("../escaped.txt")],
        [_member("/tmp/absolute.txt")],
        [_member("a/../../escaped.txt")],
        [_member("link", tarfile.SYMTYPE, link="/etc")],
        [_member("link", tarfile.SYMTYPE, link="../.."), _member("link/escaped.txt")],
        [_member("hard", tarfile.LNKTYPE, link="/etc/passwd")],
        [_member("dev", tarfile.CHRTYPE)],
    ],
    ids=[
        "dotdot",
        "absolute",
        "nested-dotdot",
        "symlink-out",
        "through-symlink",
        "hardlink",
        "device",
    ],
)
def test_unpack_refuses_paths_outside_the_destination(
    store: ArtifactStore, tmp_path: Path, members: list[tuple[tarfile.TarInfo, bytes]]
) -> None:
    digest = _stored_tar(store, members)  # stored under its true digest: only the paths are wrong
    dest = tmp_path / "inside" / "dest"
    with pytest.raises(UnsafeArtifact, match=r"refused|outside"):
        store.unpack(digest, dest)
    assert not (tmp_path / "inside" / "escaped.txt").exists()
    assert not (tmp_path / "escaped.txt").exists()


def test_unknown_digests(store: ArtifactStore) -> None:
    with pytest.raises(ArtifactNotFound, match="not an artifact digest"):
        store.manifest("sha256:xyz")
    with pytest.raises(ArtifactNotFound, match="no artifact"):
        store.unpack("sha256:" + "1" * 64, "/nonexistent")
    assert store.list() == []


async def test_freight_is_the_digest_with_its_commit(mirror: Mirror, store: ArtifactStore) -> None:
    m = await build_from_commit(store, mirror, "main", "app", Build(), project="shop")
    f = Freight.of(m, await mirror.commit("main"))
    assert (f.digest, f.commit, f.message) == (m.digest, m.commit, "first commit\n\nwith a body")
    assert f.author == "Alice Liddell <alice@example.com>" and f.committed_at == 1_700_000_000.0
    assert f.short == f"{f.commit[:12]} ({m.digest[:19]})"


def test_parse_lock_reads_what_pip_reads() -> None:
    deps = parse_lock(
        "# a comment\n"
        "--index-url https://pypi.org/simple\n"
        "Django==4.2.7 ; python_version >= '3.8' \\\n"
        "    --hash=sha256:" + "b" * 64 + " \\\n"
        "    --hash=sha256:" + "c" * 64 + "\n"
        "Jinja2[i18n]===3.1.2  # pinned with ===\n"
        "-r other.txt\n"
        "numpy>=1.20,<2\n"
        "zope.interface==6.*\n"
        "this is not a requirement\n"
    )
    by_name = {d.name: d for d in deps}
    assert by_name["django"].version == "4.2.7" and len(by_name["django"].hashes) == 2
    assert by_name["jinja2"].version == "3.1.2"
    assert by_name["numpy"].version is None and by_name["zope-interface"].version is None
    assert "this is not a requirement" in by_name


def test_entries_never_leave_the_app_folder(tmp_path: Path) -> None:
    root = tmp_path / "app"
    root.mkdir()
    (root / "ok.py").write_text("x")
    os.symlink("/etc/passwd", root / "bad-link")
    store = ArtifactStore(tmp_path / "store")
    with pytest.raises(UnsafeArtifact, match="points outside"):
        build_from_directory(store, tmp_path, "app", Build(), project="p", commit=None)
