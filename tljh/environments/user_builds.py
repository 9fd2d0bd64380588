"""Environments users build from a repository in the profile picker: one build per (repository, commit).

A user's build is an ordinary environment build (tljh.environments.builder: fetched and built as the builder
user in its sandbox, switched in when complete, pinned by the servers that run in it) under a name made from
its key, so every path and rule of environments applies to it unchanged:

    /opt/tljh/envs/repo-<40 hex>          the build (hex: sha256 of "<url>\\n<commit>")
    /opt/tljh/state/environments/repository-builds/repo-<40 hex>.json
                                          its usage record: URL, commit, how often it was built, who asked
                                          first, last use (also the file's mtime)

Admins' environment names have at most 32 characters, so no admin environment can take such a name. The hub
resolves the branch to a commit first (``git ls-remote``, as the builder, seconds): a commit that is already
built starts at once, without a fetch or the builds' lock. See /work/notes/repobuilds-interface.md for what
the removal of unused builds (disk budget) reads.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import time

from ..settings.builds import normalize_url
from ..system import files, paths, sandbox
from . import repository, store
from .spec import EnvironmentSpec

PREFIX = "repo-"
_NAME = re.compile(r"^repo-[0-9a-f]{40}$")
_SHA = re.compile(r"^[0-9a-f]{40}$")
# git's words when a repository wants a login (or hides that it exists): said in words a user understands.
_NEEDS_LOGIN = re.compile(
    r"could not read (Username|Password)|Authentication failed|terminal prompts disabled|access denied|"
    r"not exported|HTTP 40[13]|Repository not found",
    re.IGNORECASE,
)


def build_name(url: str, commit: str) -> str:
    """The environment name of the build of ``url`` at ``commit``."""
    return PREFIX + hashlib.sha256(f"{normalize_url(url)}\n{commit}".encode()).hexdigest()[:40]


def is_build_name(name: str) -> bool:
    return bool(_NAME.match(name or ""))


def spec_for(url: str, commit: str, server_packages, allow_unsupported=False) -> EnvironmentSpec:
    """What the builder builds for users asking for ``url`` at ``commit``: the repository pinned to the commit,
    no OS packages (they are machine-wide: only admins decide those)."""
    url = normalize_url(url)
    return EnvironmentSpec(
        name=build_name(url, commit),
        description=f"{url} @ {commit}",
        offer_kernel=False,
        server_packages=tuple(server_packages),
        repository=url,
        ref=commit,
        allow_unsupported=allow_unsupported,
    )


class ConfinedSandbox(sandbox.Sandbox):
    """A build sandbox that writes only its build's own directories, not the rest of .builder/: each is made
    (by root, for the builder) just before a command that names it, and is writable only if it exists."""

    def run(self, argv, on_line=None, cwd="/", **kwargs):
        for directory in self.writable:
            named = cwd == directory or any(a == directory or a.startswith(directory + "/") for a in argv)
            if named and not os.path.exists(directory):
                os.makedirs(directory, mode=0o755)
                os.chown(directory, *sandbox.owner_ids())
        return super().run(argv, on_line, cwd, **kwargs)

    def command(self, argv, *args, **kwargs) -> list[str]:
        # '-': a directory this command does not use may not exist yet (systemd refuses a missing one otherwise).
        writable = "--property=ReadWritePaths=" + " ".join("-" + p for p in self.writable)
        cmd = super().command(argv, *args, **kwargs)
        return [writable if c.startswith("--property=ReadWritePaths=") else c for c in cmd]


def confined(name):
    """The Builder's ``make_sandbox`` for a user's build ``name``.

    A user's repository is untrusted code: its packages' build backends run in the builder's sandbox, which for
    admins' builds may write all of .builder/ (the builds in progress and the shared uv cache). There a user's
    build could change the cache, and through it what the next build of any environment installs (the default
    environment, another user's build), or leave a forged "finished build" where the next build of another
    environment would switch it in. So a user's build writes only its own staging, work and checkout
    directories, with a uv cache of its own in its work directory (deleted with it; nothing is shared between
    users' builds, at the cost of downloading every package for each new commit)."""
    own = [store.staging_path(name), store.work_path(name), repository.checkout_path(name)]

    def make(unit, writable, readable=(), env=None, **options):  # options: whatever else the builder passes
        if os.path.abspath(paths.BUILDER_DIR) not in [os.path.abspath(w) for w in writable]:
            return sandbox.sandbox(unit, writable, readable, env, **options)  # postBuild's: its build and checkout
        env = {**(env or {}), **NO_REDIRECTS}
        env["UV_CACHE_DIR"] = os.path.join(store.work_path(name), "uv-cache")
        env["UV_LINK_MODE"] = "copy"  # the cache and the build are separate mounts: no hard links between them
        box = sandbox.sandbox(unit, own, readable, env, **options)
        if isinstance(box, sandbox.Unsandboxed):
            return box
        confined_box = ConfinedSandbox.__new__(ConfinedSandbox)
        confined_box.__dict__.update(box.__dict__)  # whatever else the factory set (limits) stays
        return confined_box

    return make


def prepare(config: dict) -> None:
    """What the hub needs before users may build (``tljh-config`` runs it when builds.allowed_hosts changes, as
    root): git, from the OS archive. The hub cannot install it itself (its unit keeps /usr read-only).
    Raises ConfigError if it cannot be installed."""
    from ..settings.errors import ConfigError
    from ..system import apt

    if not ((config or {}).get("builds") or {}).get("allowed_hosts"):
        return
    try:
        repository.ensure_git(out=lambda line: None)
    except apt.AptError as e:
        raise ConfigError(f"builds.allowed_hosts: users' builds need git, which could not be installed: {e}") from None


# git follows an http(s) server's redirect of its first request by default: an allowed host could send a user's
# build to any other. git >= 2.31 reads configuration from these variables.
NO_REDIRECTS = {"GIT_CONFIG_COUNT": "1", "GIT_CONFIG_KEY_0": "http.followRedirects", "GIT_CONFIG_VALUE_0": "false"}


def lookup_sandbox():
    """Where the hub asks a repository for its branches: as the builder, with network, writing nothing."""
    return sandbox.sandbox("tljh-env-lookup", [], env={**repository.sandbox_env(), **NO_REDIRECTS})


def resolve(url: str, ref: str | None, box) -> str:
    """The commit ``ref`` (a branch, a tag, a commit id; the default branch if None) of ``url`` names now.
    Reads the repository's refs only. Raises RepositoryError with a sentence for the person who asked."""
    url = normalize_url(url)
    if shutil.which("git") is None:
        # The hub's unit keeps /usr read-only: tljh-config installs git when builds.allowed_hosts is set.
        raise repository.RepositoryError("git is not installed on this server: an admin runs sudo apt install git")
    if ref and _SHA.match(ref):
        return ref  # a commit id: only a fetch can check it (the build's)
    result = box.run(["git", "ls-remote", "--", url])
    if result.returncode != 0:
        text = "\n".join(result.lines)
        if _NEEDS_LOGIN.search(text):
            raise repository.RepositoryError(
                f"{url} cannot be read without a login, or does not exist: only public repositories can be built"
            )
        raise repository.RepositoryError(f"cannot reach {url}: {repository._git_reason(result.lines)}")
    refs = {}
    for line in result.lines:
        sha, _, name = line.strip().partition("\t")
        if _SHA.match(sha) and name:
            refs[name] = sha
    if not ref:
        if "HEAD" not in refs:
            raise repository.RepositoryError(f"{url} has no commits")
        return refs["HEAD"]
    # An annotated tag's commit is its peeled entry (^{}).
    for candidate in (f"refs/heads/{ref}", f"refs/tags/{ref}^{{}}", f"refs/tags/{ref}"):
        if candidate in refs:
            return refs[candidate]
    raise repository.RepositoryError(f"{url} has no branch or tag {ref!r}")


# ---------------------------------------------------------------------------------------------- usage records

def usage_path(name: str) -> str:
    return os.path.join(paths.REPOSITORY_BUILDS_STATE_DIR, name + ".json")


def log_path(name: str) -> str:
    """The log of the hub's last build of ``name`` (root-only, for admins)."""
    return os.path.join(paths.REPOSITORY_BUILDS_STATE_DIR, name + ".log")


def usage(name: str) -> dict | None:
    try:
        return json.loads(files.read_bytes(usage_path(name)) or b"null")
    except ValueError:
        return None


def record_use(name: str, user: str, *, url: str | None = None, commit: str | None = None, built=False) -> dict:
    """Note that ``user`` starts or stops a server in build ``name`` (``built``: the hub has just built it for
    them). Written atomically; the file's mtime is the build's last use."""
    os.makedirs(paths.REPOSITORY_BUILDS_STATE_DIR, mode=0o700, exist_ok=True)
    record = usage(name) or {"url": url, "commit": commit, "builds": 0, "first_user": user}
    record["builds"] = int(record.get("builds") or 0) + (1 if built else 0)
    record["last_used"] = round(time.time(), 3)
    record["last_user"] = user
    files.write_json(usage_path(name), record)
    return record
