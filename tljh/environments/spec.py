"""What goes into an environment: its entry in config.yaml plus what every server needs, and the
fingerprint that says whether a build is still what was asked for."""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from importlib import metadata

from ..plugins import collect_list
from ..settings.environments import DEFAULT, environment_names
from ..system import paths, venvs

# What a user's server runs on, in every environment. Ranges, not pins: the lock records what was resolved.
# jupyterhub is added at exactly the hub's version (jupyterhub-singleuser must speak the hub's protocol).
SERVER_PACKAGES = (
    "pip",
    "uv",  # `%uv pip install` in a notebook runs `python -m uv` (session packages)
    "jupyterlab>=4.4,<5",
    "notebook>=7.4,<8",
    "ipykernel>=6.29",
    "jupyter-resource-usage>=1.1,<2",
    "nbgitpuller>=1.2,<2",
    "ipywidgets>=8.1,<9",
)
# OS packages for `r: true`: R and its Jupyter kernel, from the OS archive.
R_PACKAGES = ("r-base", "r-cran-irkernel")
# Bump when what a build contains changes for the same spec (every environment is rebuilt once).
BUILD_FORMAT = 1

_INCLUDE = re.compile(r"^\s*(?:-r|--requirement|-c|--constraint)[\s=]+(\S+)")


@dataclass(frozen=True)
class EnvironmentSpec:
    name: str
    description: str = ""
    packages: tuple[str, ...] = ()
    # The requirements files read for this build, each with its content: the declared one, every file it
    # includes with -r/-c, and for `default` the file given to bootstrap with --user-requirements-txt-url.
    requirements_files: tuple[tuple[str, str], ...] = ()
    apt: tuple[str, ...] = ()
    python: str | None = None
    r: bool = False
    offer_kernel: bool = True
    server_packages: tuple[str, ...] = field(default=SERVER_PACKAGES)
    # From a repository (tljh.environments.repository): what config.yaml says ...
    repository: str | None = None
    ref: str | None = None
    allow_unsupported: bool = False
    allow_apt: tuple[str, ...] = ()
    # ... and, once fetched, what the repository at one commit asks for.
    commit: str | None = None
    checkout: str | None = None
    declared_fingerprint: str | None = None  # the fingerprint of the config entry alone (no fetch needed)
    post_build: str | None = None
    post_build_text: str = ""
    start_text: str = ""  # the repository's start script: wraps the server's command (repo2docker's `start`)
    installs_itself: bool = False  # setup.py / pyproject.toml at the root: the checkout is one of the requirements
    unsupported: tuple[str, ...] = ()

    @property
    def prefix(self) -> str:
        return paths.environment_prefix(self.name)

    def requirements(self) -> list[str]:
        """Requirement strings (the files come separately, as paths)."""
        itself = [f"file://{self.checkout}"] if self.installs_itself and self.checkout else []
        return [*self.server_packages, *self.packages, *itself]

    def top_requirement_files(self) -> list[str]:
        included = {inc for path, text in self.requirements_files for inc in _includes_of(path, text)}
        return [path for path, _ in self.requirements_files if path not in included]

    def os_packages(self) -> list[str]:
        return [*self.apt, *(R_PACKAGES if self.r else ())]

    def fingerprint(self, python_version: str) -> str:
        """Changes exactly when a build of this spec would differ (description and offer_kernel do not count)."""
        data = {
            "format": BUILD_FORMAT,
            "python": python_version,
            "requirements": self.requirements(),
            "files": [[p, hashlib.sha256(t.encode()).hexdigest()] for p, t in self.requirements_files],
            "os": self.os_packages(),
            "excluded": venvs.EXCLUDED,
        }
        if self.repository:
            data["repository"] = {
                "url": self.repository,
                "ref": self.ref,
                "commit": self.commit,
                "allow_apt": sorted(self.allow_apt),
                "allow_unsupported": self.allow_unsupported,
                "post_build": hashlib.sha256(self.post_build_text.encode()).hexdigest(),
                "start": hashlib.sha256(self.start_text.encode()).hexdigest(),
            }
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:32]

    def summary(self) -> dict:
        """What the build record keeps of the spec (tljh env show, backups, export)."""
        return {
            "description": self.description,
            "packages": list(self.packages),
            "requirements": [os.path.relpath(p, self.checkout) if self.checkout else p for p, _ in self.requirements_files],
            "apt": list(self.apt),
            "python": self.python,
            "r": self.r,
            "server_packages": list(self.server_packages),
            **({"repository": self.repository_summary()} if self.repository else {}),
        }

    def repository_summary(self) -> dict:
        return {
            "url": self.repository,
            "ref": self.ref,
            "commit": self.commit,
            "declared_fingerprint": self.declared_fingerprint,
            "post_build": bool(self.post_build),
            "start": bool(self.start_text),
            "installs_itself": self.installs_itself,
            "unsupported": list(self.unsupported),
        }


def hub_version() -> str:
    return metadata.version("jupyterhub")


def server_packages(pm=None) -> tuple[str, ...]:
    """SERVER_PACKAGES, jupyterhub at the hub's version, and plugins' tljh_extra_user_pip_packages (server
    extensions must be in every environment a server runs from)."""
    extra = collect_list(pm.hook.tljh_extra_user_pip_packages()) if pm is not None else []
    return (*SERVER_PACKAGES, f"jupyterhub=={hub_version()}", *extra)


def specs(config: dict, pm=None) -> dict[str, EnvironmentSpec]:
    """{name: spec} of every declared environment (``default`` always), from the effective config."""
    declared = config.get("environments") or {}
    packages = server_packages(pm)
    result = {}
    for name in environment_names(config):
        entry = declared.get(name) or {}
        files = []
        if entry.get("requirements"):
            files += read_requirement_files(entry["requirements"])
        if name == DEFAULT:
            for extra in (paths.BOOTSTRAP_REQUIREMENTS_FILE, paths.PLUGIN_CONDA_REQUIREMENTS_FILE):
                if os.path.exists(extra):
                    files += read_requirement_files(extra)
        result[name] = EnvironmentSpec(
            name=name,
            description=entry.get("description") or "",
            packages=tuple(entry.get("packages") or ()),
            requirements_files=tuple(files),
            apt=tuple(entry.get("apt") or ()),
            python=str(entry["python"]) if entry.get("python") else None,
            r=bool(entry.get("r")),
            offer_kernel=entry.get("offer_kernel", True) is not False,
            server_packages=packages,
            repository=entry.get("repository") or None,
            ref=str(entry["ref"]) if entry.get("ref") else None,
            allow_unsupported=entry.get("allow_unsupported") is True,
            allow_apt=tuple(entry.get("allow_apt") or ()),
        )
    return result


def read_requirement_files(path: str, _seen=None) -> list[tuple[str, str]]:
    """[(path, content)] of a requirements file and, recursively, the files it includes with -r/-c.

    Raises OSError (with the path) if one cannot be read.
    """
    seen = _seen if _seen is not None else set()
    path = os.path.abspath(path)
    if path in seen:
        return []
    seen.add(path)
    with open(path) as f:
        text = f.read()
    found = [(path, text)]
    for included in _includes_of(path, text):
        found += read_requirement_files(included, seen)
    return found


def _includes_of(path: str, text: str) -> list[str]:
    base = os.path.dirname(path)
    return [os.path.abspath(os.path.join(base, m.group(1))) for m in map(_INCLUDE.match, text.splitlines()) if m]
