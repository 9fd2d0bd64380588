"""Checks of an edit to ``environments`` that need the system: run by tljh-config before it writes, so a value
that could not be built is refused and config.yaml stays as it was."""

from __future__ import annotations

import re

from ..settings.errors import ConfigError
from ..settings.environments import DEFAULT
from ..system import apt, pythons, sandbox
from . import repository
from . import spec as specs_module
from .builder import Builder, BuildError, unit

# Changing these needs a new resolve; a description or offer_kernel does not.
_BUILD_KEYS = ("packages", "requirements", "python")


def check_change(before: dict, after: dict, pm=None) -> None:
    """Raise ConfigError naming the first environment value of ``after`` (changed since ``before``) that
    cannot be built: an unavailable Python, an unknown OS package, an unreadable requirements file, or
    packages that do not resolve (uv's reason, which names the package)."""
    old = (before or {}).get("environments") or {}
    new = (after or {}).get("environments") or {}
    for name, entry in new.items():
        entry = entry or {}
        previous = old.get(name) or {}
        if entry == previous:
            continue
        key = f"environments.{name}"
        if entry.get("repository"):
            check_repository(name, entry, previous, after, pm)
        if entry.get("python") and entry.get("python") != previous.get("python"):
            try:
                pythons.interpreter(str(entry["python"]))
            except pythons.PythonNotAvailable as e:
                raise ConfigError(f"{key}.python: {e}") from None
        wanted_os = list(entry.get("apt") or []) + (list(specs_module.R_PACKAGES) if entry.get("r") else [])
        if wanted_os != list(previous.get("apt") or []) + (list(specs_module.R_PACKAGES) if previous.get("r") else []):
            unknown = apt.unknown(wanted_os)
            if unknown:
                raise ConfigError(f"{key}.apt: not in this system's package archive: {', '.join(unknown)}")
        if any(entry.get(k) != previous.get(k) for k in _BUILD_KEYS) or name not in old:
            try:
                spec = specs_module.specs(after, pm)[name]
            except OSError as e:
                raise ConfigError(f"{key}.requirements: cannot read {e.filename}: {e.strerror}") from None
            try:
                Builder(out=lambda line: None).check_resolves(spec)
            except (BuildError, pythons.PythonNotAvailable) as e:
                raise ConfigError(f"{key}: {one_line(str(e))}") from None


def check_repository(name, entry, previous, config, pm=None) -> None:
    """The repository answers and has the ref (read as the builder, like the build will)."""
    key = f"environments.{name}.repository"
    if name == DEFAULT:
        raise ConfigError(f"{key}: the default environment (/opt/tljh/user) cannot come from a repository")
    if (entry.get("repository"), entry.get("ref")) == (previous.get("repository"), previous.get("ref")):
        return
    spec = specs_module.specs(config, pm)[name]
    try:
        if not repository.archive_path(spec):
            repository.ensure_git(out=lambda line: None)
        box = sandbox.sandbox(
            unit("check", name), [], readable=repository.readable_paths(spec), env=repository.sandbox_env()
        )
        repository.check_reachable(spec, box)
    except (repository.RepositoryError, apt.AptError) as e:
        raise ConfigError(f"{key}: {e}") from None


def one_line(message: str) -> str:
    """uv's reason in one line, naming the package: 'Because X was not found ...' becomes 'no package X on
    the package index'; other reasons are uv's 'Because ...' sentence."""
    lines = [re.sub(r"^[\s│├╰─▶×]*(?:(?:error|cause|hint):\s*)?", "", line).strip() for line in message.splitlines()]
    lines = [line for line in lines if line]
    for line in lines:
        missing = re.match(r"Because (\S+) was not found in the package registry", line)
        if missing:
            return f"no package {missing.group(1)} on the package index (check its name)"
    reasons = [line for line in lines if line.startswith("Because")]
    return reasons[0] if reasons else (lines[-1] if lines else message)
