"""The disk budget of environment builds (config.yaml's ``builds.disk_budget``): past it, builds nobody uses are
removed, least recently used first.

What counts is everything the builds occupy: /opt/tljh/user and /opt/tljh/envs, the builds' uv cache included.
Builds share files with that cache and with each other (uv installs hard links; a rebuild starts from a
hard-linked copy), so sizes are of distinct files, and what removing a build frees is the size of the files
only it holds — often much less than the build looks.

Never removed: the current build of an environment declared in config.yaml (``default`` included), a build
some running server has mounted, a build used in the last few minutes (a server may be about to start from
it), the build just made. Removable: users' builds from a repository (per resolved commit, recorded by the hub
in paths.REPOSITORY_BUILDS_STATE_DIR) and current builds of environments no longer in config.yaml. Replaced
builds (.retired) are deleted as soon as no server uses them, budget or not (store.collect); builds kept after
a Python change (``<name>.before-<time>``) are the admin's to delete.
"""

from __future__ import annotations

import contextlib
import os
import stat
import time
from dataclasses import dataclass

from ..system import namespaces, paths
from . import store
from .units import PREFIX as UNIT_PREFIX, stop_units

# A build chosen for a server is mounted only once its unit starts; its usage record is written before.
RECENT_USE_SECONDS = 600


@dataclass
class Candidate:
    name: str
    path: str
    last_used: float  # epoch seconds
    label: str  # what the admin reads: the repository and commit, or the environment's name


def usage_record(name: str) -> str:
    """The hub's record of a user's repository build (its mtime is the build's last use)."""
    return os.path.join(paths.REPOSITORY_BUILDS_STATE_DIR, name + ".json")


def distinct_size(roots) -> int:
    """Bytes on disk of the files under ``roots``, each file counted once however many links it has."""
    seen, total = set(), 0
    for root in roots:
        for st in _stats(root):
            if st.st_nlink > 1 and not stat.S_ISDIR(st.st_mode):
                if (st.st_dev, st.st_ino) in seen:
                    continue
                seen.add((st.st_dev, st.st_ino))
            total += st.st_blocks * 512
    return total


def freed_by_removing(root: str) -> int:
    """Bytes removing ``root`` would free: the files all of whose links are inside it."""
    freed, inside, files_ = 0, {}, {}
    for st in _stats(root):
        if stat.S_ISDIR(st.st_mode) or st.st_nlink <= 1:
            freed += st.st_blocks * 512
            continue
        key = (st.st_dev, st.st_ino)
        inside[key] = inside.get(key, 0) + 1
        files_[key] = (st.st_nlink, st.st_blocks * 512)
    return freed + sum(size for key, (nlink, size) in files_.items() if inside[key] >= nlink)


def used() -> int:
    return distinct_size([paths.USER_ENV_PREFIX, paths.ENVIRONMENTS_DIR])


def mounted_builds() -> set[str]:
    """Names of current builds (envs/<name>) that a running server has mounted."""
    marker = "/" + os.path.basename(paths.ENVIRONMENTS_DIR) + "/"
    # A build's own sandboxed commands (its bytecode, compiled in the background after the switch) mount it too:
    # they are not a server using it.
    roots = namespaces.mount_roots(skip_cgroups=["/" + UNIT_PREFIX])
    return {root.split(marker, 1)[1].split("/", 1)[0] for root in roots if marker in root}


def candidates(declared, keep=()) -> list[Candidate]:
    """Builds the budget may remove, least recently used first."""
    protected = set(declared) | set(keep) | {"default"}
    in_use = mounted_builds()
    now = time.time()
    found = []
    for name in store.built_names():
        if name in protected or name in in_use:
            continue
        path = paths.environment_prefix(name)
        build = store.read(path)
        last_used = _mtime(usage_record(name)) or _mtime(os.path.join(path, store.RECORD_FILE)) or 0.0
        if now - last_used < RECENT_USE_SECONDS:
            continue
        found.append(Candidate(name, path, last_used, _label(name, build)))
    return sorted(found, key=lambda c: (c.last_used, c.name))


def enforce(budget: int | None, declared, keep=(), out=print) -> list[str]:
    """Remove unused builds, least recently used first, while the builds occupy more than ``budget`` bytes.
    One line through ``out`` per removed build and how much it freed. Returns the names removed. Call with
    store.environments_lock() held."""
    if budget is None:
        return []
    total = used()
    if total <= budget:
        return []
    removed = []
    for candidate in candidates(declared, keep):
        if total <= budget:
            break
        freed = freed_by_removing(candidate.path)
        # Its bytecode may still be compiling in the background (it writes through the build's path).
        stop_units(candidate.name)
        retired = store.retire(candidate.name)
        gone, _ = store.collect()  # a server that mounted it since the check keeps it: collected after it stops
        if retired and os.path.basename(retired) not in gone:
            freed = 0
        leftovers = [usage_record(candidate.name), os.path.join(paths.REPOSITORY_BUILDS_STATE_DIR, candidate.name + ".log"),
                     os.path.join(paths.ENVIRONMENT_STATE_DIR, candidate.name + ".failed")]
        for leftover in leftovers:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(leftover)
        total -= freed
        removed.append(candidate.name)
        out(
            f"disk budget: removed {candidate.label} (last used {_when(candidate.last_used)}): {_size(freed)} freed; "
            f"builds now use {_size(total)} of {_size(budget)}"
        )
    if total > budget:
        out(
            f"disk budget: builds use {_size(total)}, more than builds.disk_budget ({_size(budget)}); the rest is in "
            "use or declared in config.yaml (the package cache is /opt/tljh/envs/.builder/uv-cache)"
        )
    return removed


def _label(name: str, build: store.Build | None) -> str:
    origin = ((build.record if build else {}).get("spec") or {}).get("repository") or {}
    if name.startswith("repo-") and origin.get("url"):
        return f"the build of {origin['url']} at {str(origin.get('commit', ''))[:12]} ({name})"
    return f"environment {name} (not in config.yaml)"


def _stats(root):
    """lstat of ``root`` and of everything below it (links are not followed)."""
    paths_ = [root] if os.path.lexists(root) else []
    for directory, dirs, names in os.walk(root):
        paths_ += [os.path.join(directory, entry) for entry in (*dirs, *names)]
    for path in paths_:
        with contextlib.suppress(OSError):
            yield os.lstat(path)


def _mtime(path) -> float | None:
    try:
        return os.stat(path).st_mtime
    except OSError:
        return None


def _when(epoch: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(epoch)) if epoch else "never"


def _size(nbytes: int) -> str:
    for unit, size in (("GB", 2**30), ("MB", 2**20)):
        if nbytes >= size:
            return f"{nbytes / size:.1f} {unit}"
    return f"{nbytes // 1024} KB"
