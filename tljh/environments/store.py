"""Builds of environments on disk: which build is current, switching a finished build in atomically, and
removing replaced builds once no running server has them pinned.

    /opt/tljh/user                            default's current build (a real directory, as in TLJH)
    /opt/tljh/envs/<name>                     other environments' current builds
    /opt/tljh/envs/.builder/<name>            a build in progress (never served); .builder/uv-cache
    /opt/tljh/envs/.retired/<name>.<build>    replaced or removed builds, until no server has them pinned

A build is complete once its record (RECORD_FILE) exists: it is written last. Switching in is one
renameat2(RENAME_EXCHANGE) of the finished build and the current one, so the stable path always holds a
complete build and never disappears.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import json
import os
import secrets
import shutil
import subprocess
import time
from dataclasses import dataclass

from ..system import files, namespaces, paths, sandbox

RECORD_FILE = "tljh-environment.json"
LOCK_FILE = "tljh-lock.txt"
LEGACY_BUILD = "0-legacy"  # what a venv from before environments (e.g. TLJH's /opt/tljh/user) is called


@dataclass(frozen=True)
class Build:
    path: str
    record: dict

    @property
    def name(self) -> str:
        return self.record["name"]

    @property
    def build(self) -> str:
        return self.record["build"]

    @property
    def fingerprint(self) -> str | None:
        return self.record.get("fingerprint")

    @property
    def python(self) -> str | None:
        return self.record.get("python")

    def lock(self) -> str:
        return files.read_bytes(os.path.join(self.path, LOCK_FILE)).decode()

    def works(self) -> bool:
        """Its interpreter is there and is the version it was built with (an OS upgrade can remove or
        replace the system Python under a venv). Read from links, no subprocess: this is the no-change path."""
        from ..system import pythons

        python = os.path.join(self.path, "bin", "python")
        return os.path.exists(python) and (self.python is None or pythons.version_of(python) == self.python)


def read(path) -> Build | None:
    """The complete build at ``path``, or None (absent, or a build that never finished)."""
    try:
        with open(os.path.join(path, RECORD_FILE)) as f:
            return Build(path, json.load(f))
    except (OSError, ValueError):
        return None


def current(name) -> Build | None:
    return read(paths.environment_prefix(name))


def staging_path(name) -> str:
    return os.path.join(paths.BUILDER_DIR, name)


def work_path(name) -> str:
    """Scratch files of a build (resolver input and output), next to its staging directory."""
    return os.path.join(paths.BUILDER_DIR, name + ".work")


def new_build_id() -> str:
    return time.strftime("%Y%m%dT%H%M%S") + "-" + secrets.token_hex(2)


def built_names() -> list[str]:
    """Environments with a current build on disk (``default`` first); names never hold a dot, unlike
    ``.builder``, ``.retired`` and old builds kept after a Python change (``<name>.before-<time>``)."""
    names = ["default"] if os.path.isdir(paths.USER_ENV_PREFIX) else []
    with contextlib.suppress(FileNotFoundError):
        names += sorted(n for n in os.listdir(paths.ENVIRONMENTS_DIR) if "." not in n and n != "default")
    return names


def adopt_legacy(name) -> None:
    """Give a venv made before environments existed (TLJH's /opt/tljh/user) a record, so it is switched out,
    retired and pinned like any build. Its fingerprint is unknown: it will be rebuilt."""
    prefix = paths.environment_prefix(name)
    if os.path.isdir(prefix) and read(prefix) is None and os.path.exists(os.path.join(prefix, "pyvenv.cfg")):
        files.write_json(os.path.join(prefix, RECORD_FILE), {"name": name, "build": LEGACY_BUILD}, mode=0o644)


def prepare_directories() -> None:
    """envs/ readable by all; .builder/ (builds in progress, the builds' uv cache) the builder user's;
    .retired/ root's only."""
    os.makedirs(paths.ENVIRONMENTS_DIR, mode=0o755, exist_ok=True)
    os.makedirs(paths.BUILDER_DIR, mode=0o755, exist_ok=True)
    os.makedirs(paths.ENVIRONMENTS_UV_CACHE_DIR, mode=0o755, exist_ok=True)
    os.makedirs(paths.RETIRED_DIR, mode=0o700, exist_ok=True)
    os.chmod(paths.ENVIRONMENTS_DIR, 0o755)
    os.chmod(paths.RETIRED_DIR, 0o700)
    if os.geteuid() == 0:
        uid, gid = sandbox.owner_ids()
        os.chown(paths.BUILDER_DIR, uid, gid)
        os.chown(paths.ENVIRONMENTS_UV_CACHE_DIR, uid, gid)


def switch_in(name) -> str | None:
    """Make the finished build in staging_path(name) current; return where the previous one went, if any."""
    staging, prefix = staging_path(name), paths.environment_prefix(name)
    if read(staging) is None:
        raise RuntimeError(f"{staging} is not a complete build")
    flush(staging)  # everything the build wrote is on disk before it is served
    if not os.path.lexists(prefix):
        os.rename(staging, prefix)
        return None
    old = read(prefix)
    try:
        _exchange(staging, prefix)
    except OSError as e:
        if e.errno not in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
            raise
        # A filesystem without RENAME_EXCHANGE: two renames; recover() finishes them after a crash.
        retired = _retired_path(name, old)
        os.rename(prefix, retired)
        os.rename(staging, prefix)
        return retired
    retired = _retired_path(name, old)
    os.rename(staging, retired)
    return retired


def retire(name) -> str | None:
    """Take ``name``'s current build out of service (the environment is removed); servers keep it pinned."""
    prefix = paths.environment_prefix(name)
    if not os.path.lexists(prefix):
        return None
    adopt_legacy(name)
    retired = _retired_path(name, read(prefix))
    os.rename(prefix, retired)
    return retired


def copy_current(name, target) -> bool:
    """A copy of ``name``'s current build at ``target`` (same filesystem), made of hard links: cheap, and it
    stays as it is whatever a rebuild does, because builds only ever replace files, never write them in place.
    Nothing collects it: whoever made it puts it back (reinstate) or removes it. False if there is no build."""
    prefix = paths.environment_prefix(name)
    if not os.path.isdir(prefix):
        return False
    subprocess.run(["cp", "-a", "--link", prefix, target], check=True, capture_output=True)
    return True


def reinstate(name, copy: str | None) -> None:
    """Make ``copy`` (from copy_current) ``name``'s current build again; None: ``name`` had no build, so its
    build now is taken out of service. The build it replaces is retired like any other."""
    prefix = paths.environment_prefix(name)
    if copy is None:
        retire(name)
        return
    if not os.path.lexists(prefix):
        os.rename(copy, prefix)
        return
    try:
        _exchange(copy, prefix)
    except OSError as e:
        if e.errno not in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
            raise
        os.rename(prefix, _retired_path(name, read(prefix)))
        os.rename(copy, prefix)
        return
    os.rename(copy, _retired_path(name, read(copy)))  # after the exchange, the replaced build is at ``copy``


def recover(name, wanted_fingerprint) -> str | None:
    """Tidy what a killed or crashed run left in staging_path(name); say what was done, if anything."""
    staging, prefix = staging_path(name), paths.environment_prefix(name)
    shutil.rmtree(work_path(name), ignore_errors=True)
    left = read(staging)
    note = None
    if not os.path.lexists(prefix) and left is None:
        # A crash between the two renames of the fallback switch: put the newest build back in service.
        newest = sorted(_retired_of(name), reverse=True)
        if newest:
            os.rename(os.path.join(paths.RETIRED_DIR, newest[0][1]), prefix)
            note = "restored the build that was current before an interrupted switch"
    if not os.path.lexists(staging):
        return note
    current = read(prefix)
    if left is None or (current is not None and left.build == current.build):
        shutil.rmtree(staging)  # unfinished, or a copy of the current build that was being changed
        return "removed an unfinished build of an earlier run"
    if current is not None and left.build < current.build:
        os.rename(staging, _retired_path(name, left))  # an exchange happened; the retire rename did not
        return None
    if left.fingerprint == wanted_fingerprint or current is None:
        switch_in(name)
        return "switched in the build an earlier run had finished"
    shutil.rmtree(staging)
    return "removed a finished build of an earlier run that is no longer wanted"


def _retired_path(name, build: Build | None) -> str:
    label = build.build if build else LEGACY_BUILD
    path = os.path.join(paths.RETIRED_DIR, f"{name}.{label}")
    return path if not os.path.lexists(path) else f"{path}-{secrets.token_hex(2)}"


def _retired_of(name):
    """[(build id, directory name)] of ``name``'s retired builds."""
    with contextlib.suppress(FileNotFoundError):
        return [
            (d[len(name) + 1 :], d) for d in os.listdir(paths.RETIRED_DIR) if d.startswith(name + ".")
        ]
    return []


def retired() -> list[str]:
    with contextlib.suppress(FileNotFoundError):
        return sorted(os.listdir(paths.RETIRED_DIR))
    return []


def pinned() -> set[str]:
    """Retired builds (directory names) that a running server still has mounted."""
    marker = "/" + os.path.basename(paths.RETIRED_DIR) + "/"
    found = set()
    for root in namespaces.mount_roots():
        if marker in root:
            found.add(root.split(marker, 1)[1].split("/", 1)[0])
    return found


def collect() -> tuple[list[str], list[str]]:
    """Delete retired builds no server has pinned. Returns (removed, kept) directory names."""
    candidates = retired()
    if not candidates:
        return [], []
    in_use = pinned()
    removed, kept = [], []
    for name in candidates:
        if name in in_use:
            kept.append(name)
        else:
            shutil.rmtree(os.path.join(paths.RETIRED_DIR, name), ignore_errors=True)
            removed.append(name)
    return removed, kept


@contextlib.contextmanager
def environments_lock(wait=True):
    """One build, removal or collection at a time (installer, `tljh env`, the hub after a server stops).
    Yields False without waiting if ``wait`` is false and someone else holds it."""
    os.makedirs(os.path.dirname(paths.ENVIRONMENTS_LOCK), mode=0o700, exist_ok=True)
    with open(paths.ENVIRONMENTS_LOCK, "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        yield True


def flush(path: str) -> None:
    """Write the dirty data of the filesystem holding ``path`` to disk (syncfs: that filesystem only), so a
    power cut after the switch cannot leave a served build with files the disk never got."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        syncfs = getattr(ctypes.CDLL(None, use_errno=True), "syncfs", None)
        if syncfs is None or syncfs(fd) != 0:
            os.sync()
    finally:
        os.close(fd)


_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


def _exchange(a: str, b: str) -> None:
    """Atomically swap the directories at ``a`` and ``b`` (renameat2 RENAME_EXCHANGE, Linux >= 3.15)."""
    libc = ctypes.CDLL(None, use_errno=True)
    renameat2 = getattr(libc, "renameat2", None)
    if renameat2 is None:
        raise OSError(errno.ENOSYS, "renameat2 is not available")
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code), a)
