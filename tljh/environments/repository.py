"""Environments declared from a git repository: fetch it at one commit (as the builder, never root), and read
what it asks for the way repo2docker does (``binder/`` or ``.binder/`` before the root).

What can be honoured here becomes an ordinary :class:`EnvironmentSpec` (requirements files, Python version, OS
packages the admin allowed, a postBuild script); what cannot is named, never silently ignored, and fails the
build unless the environment's ``allow_unsupported`` is true.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
import shutil

from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from ..system import apt, paths, pythons
from ..system.conda_names import PYPI_PROJECTS, conda_name, pypi_requirement
from .spec import EnvironmentSpec

# Files repo2docker reads that are not honoured here (yet), with why, in the words the admin will see.
UNSUPPORTED = {
    "Dockerfile": "a Dockerfile (no Docker here)",
    "Project.toml": "Julia (Project.toml)",
    "REQUIRE": "Julia (REQUIRE)",
    "Manifest.toml": "Julia (Manifest.toml)",
    "default.nix": "Nix (default.nix)",
    "install.R": "R packages (install.R)",
    "DESCRIPTION": "an R package (DESCRIPTION)",
    "Pipfile": "Pipfile",
    "Pipfile.lock": "Pipfile.lock",
    # In the root it is the repository's own package, installed (PROJECT_FILES); repo2docker would install the
    # root for one in binder/ too.
    "pyproject.toml": "pyproject.toml in the binder directory (installing the repository's root from it)",
}
# The docs page that lists what is and is not honoured.
DOCS = "docs/howto/repository-environments"
_RUNTIME_PYTHON = re.compile(r"^python-(3\.[0-9]+)(?:\.[0-9]+)?$")
_APT_LINE = re.compile(r"^[a-z0-9][a-z0-9+.-]*$")
_INCLUDE = re.compile(r"^\s*(?:-r|--requirement|-c|--constraint)[\s=]+(\S+)")
_SHA = re.compile(r"^[0-9a-f]{40}$")
PROJECT_FILES = ("setup.py", "pyproject.toml")
# `repository` naming a file with one of these suffixes is an archive of the repository's files.
ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz", ".zip")
# A pyproject.toml that describes a package (not only tools' settings).
_PYPROJECT_PACKAGE = re.compile(r"^\[(?:project|build-system)\]\s*(?:#.*)?$", re.MULTILINE)
# environment.yml's Python: ``python``, ``python=3.11``, ``python==3.11.4``, ``python 3.11``, ``python=3.11.*``.
_CONDA_PYTHON = re.compile(r"^(?:=?=|\s)\s*(3\.[0-9]+)(?:\.(?:[0-9]+|\*))?$")


class RepositoryError(Exception):
    """The repository cannot be fetched or asks for something not honoured here; the message says which."""


def checkout_path(name: str) -> str:
    """Where the builder checks the repository out (next to the build; names hold no '.')."""
    return os.path.join(paths.BUILDER_DIR, name + ".src")


def ensure_git(out=print) -> None:
    """git from the OS archive, the first time a repository is used (root installs; the builder runs it)."""
    if shutil.which("git") is None:
        apt.install(["git"], no_recommends=True, out=out)


def _git(*args) -> list[str]:
    # No prompt for a password (a private repository fails at once); a repository path owned by someone else
    # is what the admin named, so git's ownership check would only refuse it.
    return ["git", "-c", "safe.directory=*", "-c", "advice.detachedHead=false", *args]


# The repository's side of a fetch from a path on this server is a second git program, upload-pack, started with
# git's per-repository variables scrubbed: the `-c safe.directory` of _git does not reach it, and since git
# 2.39.4/2.45.1 it refuses a repository owned by someone else (root, a teacher) as "dubious ownership" — seen by
# the builder as "Could not read from remote repository". So it gets the setting on its own command line.
_UPLOAD_PACK = "git -c safe.directory='*' upload-pack"


def _source_options(url: str) -> list[str]:
    """Options of `git clone` / `git ls-remote` for reading ``url``."""
    return [f"--upload-pack={_UPLOAD_PACK}"] if local_path(url) else []


def sandbox_env() -> dict[str, str]:
    return {"GIT_TERMINAL_PROMPT": "0", "GIT_ASKPASS": "/bin/false", "SSH_ASKPASS": "/bin/false"}


def local_path(url: str) -> str | None:
    """The path of a repository or archive on this server's disk, None for a remote one."""
    local = url[len("file://"):] if url.startswith("file://") else url
    return local if local.startswith("/") else None


def archive_path(spec: EnvironmentSpec) -> str | None:
    """The path of the archive the environment is built from, if ``repository`` names one (by its suffix)."""
    local = local_path(spec.repository or "")
    return local if local and local.lower().endswith(ARCHIVE_SUFFIXES) else None


def readable_paths(spec: EnvironmentSpec) -> list[str]:
    """A repository or archive on this server's disk is read by the builder, even under /home."""
    local = local_path(spec.repository or "")
    return [local] if local and os.path.exists(local) else []


def fetch(spec: EnvironmentSpec, box, out=print) -> EnvironmentSpec:
    """Check ``spec.repository`` out at ``spec.ref`` (its HEAD if none), or unpack the archive it names, as the
    sandbox's user and return the spec of what it asks for. Raises RepositoryError."""
    target = checkout_path(spec.name)
    shutil.rmtree(target, ignore_errors=True)
    if archive_path(spec):
        return unpack(spec, box, target, out)
    where = f"{spec.repository}" + (f" @ {spec.ref}" if spec.ref else "")
    out(f"{spec.name}: fetching {where}")
    result = box.run(
        _git("clone", "--quiet", "--no-checkout", *_source_options(spec.repository), "--", spec.repository, target)
    )
    if result.returncode != 0:
        raise RepositoryError(f"cannot fetch {spec.repository}: {_git_reason(result.lines)}")
    commit = resolve(box, target, spec.ref)
    if commit is None:
        raise RepositoryError(f"{spec.repository} has no branch, tag or commit {spec.ref!r}")
    result = box.run(_git("-C", target, "checkout", "--quiet", "--detach", commit))
    if result.returncode != 0:
        raise RepositoryError(f"cannot check out {commit} of {spec.repository}: {_git_reason(result.lines)}")
    out(f"{spec.name}: commit {commit}")
    return read(spec, target, commit)


def unpack(spec: EnvironmentSpec, box, target: str, out=print) -> EnvironmentSpec:
    """Unpack the archive as the sandbox's user (tar or Python's zipfile: neither writes outside ``target``);
    its content is identified by its sha256, which plays the commit's part. An archive holding one directory
    (as a forge's download does) is read from inside it."""
    path = archive_path(spec)
    if spec.ref:
        raise RepositoryError(f"{path} is an archive: it has no branch or tag (remove environments.{spec.name}.ref)")
    out(f"{spec.name}: unpacking {path}")
    try:
        sha = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                sha.update(block)
        digest = "sha256:" + sha.hexdigest()
    except OSError as e:
        raise RepositoryError(f"cannot read {path}: {e.strerror}") from None
    result = box.run(["mkdir", "-p", "--", target])
    if result.returncode == 0:
        if path.lower().endswith(".zip"):
            result = box.run(["python3", "-m", "zipfile", "--extract", path, target])
        else:
            result = box.run(["tar", "--extract", "--no-same-owner", "--no-same-permissions", "--file", path,
                              "--directory", target])
    if result.returncode != 0:
        lines = [l.strip() for l in result.lines if l.strip()]
        raise RepositoryError(f"cannot unpack {path}: {lines[-1] if lines else 'unpacking failed'}")
    entries = os.listdir(target)
    root = os.path.join(target, entries[0]) if len(entries) == 1 else target
    root = root if os.path.isdir(root) and not os.path.islink(root) else target
    out(f"{spec.name}: archive {digest}")
    return read(spec, root, digest)


def resolve(box, checkout: str, ref: str | None) -> str | None:
    """The commit ``ref`` names in a clone: a branch (the remote's), a tag, or a commit; HEAD if None."""
    candidates = ["HEAD"] if not ref else [f"refs/remotes/origin/{ref}", f"refs/tags/{ref}"]
    if ref and _SHA.match(ref):
        candidates = [ref]
    for candidate in candidates:
        result = box.run(_git("-C", checkout, "rev-parse", "--verify", "--quiet", f"{candidate}^{{commit}}"))
        if result.returncode == 0 and result.lines and _SHA.match(result.lines[-1].strip()):
            return result.lines[-1].strip()
    return None


def check_reachable(spec: EnvironmentSpec, box) -> None:
    """Raise RepositoryError unless the repository answers and has ``spec.ref`` (a commit id cannot be checked
    without fetching: only the repository is). Reads refs only: seconds, even for a large repository."""
    path = archive_path(spec)
    if path:
        if spec.ref:
            raise RepositoryError(f"{path} is an archive: it has no branch or tag")
        if box.run(["test", "-f", path, "-a", "-r", path]).returncode != 0:
            raise RepositoryError(f"cannot read the archive {path} (as the builder user)")
        return
    result = box.run(_git("ls-remote", *_source_options(spec.repository), "--", spec.repository))
    if result.returncode != 0:
        raise RepositoryError(f"cannot reach {spec.repository}: {_git_reason(result.lines)}")
    if not spec.ref or _SHA.match(spec.ref):
        return
    refs = {line.split("\t", 1)[1] for line in result.lines if "\t" in line}
    if not refs & {f"refs/heads/{spec.ref}", f"refs/tags/{spec.ref}"}:
        raise RepositoryError(f"{spec.repository} has no branch or tag {spec.ref!r}")


def binder_directory(checkout: str) -> str:
    """``binder/`` or ``.binder/`` if the repository has one, else its root (repo2docker's rule)."""
    found = [d for d in ("binder", ".binder") if os.path.isdir(os.path.join(checkout, d))]
    if len(found) == 2:
        raise RepositoryError("the repository has both binder/ and .binder/: keep one")
    return os.path.join(checkout, found[0]) if found else checkout


def read(spec: EnvironmentSpec, checkout: str, commit: str) -> EnvironmentSpec:
    """The spec of the checked-out repository (``spec`` is the environment's entry in config.yaml)."""
    directory = binder_directory(checkout)
    present = set(os.listdir(directory))
    in_root = directory == checkout
    unsupported = [UNSUPPORTED[f] for f in UNSUPPORTED if f in present and not (in_root and f in PROJECT_FILES)]
    # repo2docker installs the root's setup.py only without a binder directory, and neither with environment.yml.
    itself = in_root and "environment.yml" not in present and describes_a_package(checkout, present)

    os_packages = list(spec.apt)
    if "apt.txt" in present:
        text = _read_inside(checkout, os.path.join(directory, "apt.txt"))
        for line in text.splitlines():
            name = line.split("#", 1)[0].strip()
            if not name:
                continue
            if not _APT_LINE.match(name):
                raise RepositoryError(f"apt.txt: {name!r} is not a Debian package name")
            if name not in spec.allow_apt:
                unsupported.append(f"apt.txt package {name} (not in environments.{spec.name}.allow_apt)")
            elif name not in os_packages:
                os_packages.append(name)

    python, requirements, python_file = None, [], None
    if "environment.yml" in present:
        # repo2docker's precedence: with environment.yml, requirements.txt and runtime.txt are not read
        # (its pip section can include requirements.txt with -r).
        python_file = os.path.join(directory, "environment.yml")
        python, requirements, conda_unsupported = read_environment_yml(checkout, python_file)
        unsupported += conda_unsupported
    else:
        if "runtime.txt" in present:
            runtime = _read_inside(checkout, os.path.join(directory, "runtime.txt")).strip()
            match = _RUNTIME_PYTHON.match(runtime)
            if match:
                python, python_file = match.group(1), os.path.join(directory, "runtime.txt")
            else:
                unsupported.append(f"runtime.txt {runtime!r} (only python-3.X)")
        if "requirements.txt" in present:
            requirements = read_requirement_files(checkout, os.path.join(directory, "requirements.txt"))

    post_build = os.path.join(directory, "postBuild") if "postBuild" in present else None
    if post_build:
        _read_inside(checkout, post_build)  # a link out of the repository is refused like any other file

    if unsupported and not spec.allow_unsupported:
        raise RepositoryError(
            f"the repository asks for what is not supported here: {'; '.join(unsupported)} "
            f"(set environments.{spec.name}.allow_unsupported true to build the rest; see {DOCS})"
        )
    if python:
        require_python(python, os.path.relpath(python_file, checkout))
    return dataclasses.replace(
        spec,
        commit=commit,
        checkout=checkout,
        declared_fingerprint=spec.fingerprint(""),
        requirements_files=tuple(requirements),
        python=python,
        apt=tuple(os_packages),
        post_build=post_build,
        post_build_text=_read_inside(checkout, post_build) if post_build else "",
        start_text=_read_inside(checkout, os.path.join(directory, "start")) if "start" in present else "",
        unsupported=tuple(unsupported),
        installs_itself=itself,
    )


def require_python(version: str, asked_by: str) -> None:
    """Raise RepositoryError unless this system has Python ``version`` installed. A repository's Python is not
    installed for it: users' builds cannot install OS packages (the hub's unit keeps /usr read-only), so such a
    build is refused here, before anything is installed (apt.txt's packages included), for admins' builds
    alike. An admin who wants that Python installs it from the OS archive, once, for every environment."""
    present = pythons.installed()
    if version not in present:
        raise RepositoryError(
            f"{asked_by} asks for Python {version}, which this system does not have: it has Python "
            f"{', '.join(present) or 'none'} (an administrator can add python{version} from the OS archive, if "
            f"it provides it)"
        )


def describes_a_package(checkout: str, present: set[str]) -> bool:
    """A setup.py, or a pyproject.toml with a [project] or [build-system] table (one with only tools' settings
    is not a package)."""
    if "setup.py" in present:
        return True
    if "pyproject.toml" not in present:
        return False
    return bool(_PYPROJECT_PACKAGE.search(_read_inside(checkout, os.path.join(checkout, "pyproject.toml"))))


def read_environment_yml(checkout: str, path: str) -> tuple[str | None, list[tuple[str, str]], list[str]]:
    """(python, requirements files, unsupported) of a conda environment.yml.

    Its pip section is installed as it is; a conda package is installed from PyPI only when it *is* that PyPI
    project (the installer's exact map, :data:`tljh.system.conda_names.PYPI_PROJECTS`) with a version spec
    that translates; every other conda package is listed as unsupported. The requirements "file" is
    environment.yml's path with the translated lines, so a ``-r`` in the pip section is read relative to it,
    as conda does."""
    try:
        data = YAML(typ="safe", pure=True).load(_read_inside(checkout, path))
    except YAMLError as e:
        raise RepositoryError(f"environment.yml is not valid YAML: {' '.join(str(e).split())}") from None
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise RepositoryError("environment.yml must be a mapping (name, channels, dependencies)")
    dependencies = data.get("dependencies") or []
    if not isinstance(dependencies, list):
        raise RepositoryError("environment.yml: dependencies must be a list")
    python, lines, unsupported = None, ["# from environment.yml"], []
    for dependency in dependencies:
        if isinstance(dependency, dict) and set(dependency) == {"pip"}:
            section = dependency["pip"] or []
            if not isinstance(section, list) or not all(isinstance(line, str) for line in section):
                raise RepositoryError("environment.yml: the pip section must be a list of requirement lines")
            lines += [line.strip() for line in section if line.strip()]
            continue
        if not isinstance(dependency, (str, int, float)) or isinstance(dependency, bool):
            raise RepositoryError(f"environment.yml: {dependency!r} is neither a conda package nor the pip section")
        dependency = str(dependency).strip()
        name = conda_name(dependency)
        rest = dependency.split("::", 1)[-1].strip()[len(name):]
        if name == "python":
            match = _CONDA_PYTHON.match(rest)
            if match:
                python = match.group(1)
            elif rest.strip():
                unsupported.append(f"environment.yml {dependency!r} (only python=3.X)")
        elif name == "pip":
            continue  # every environment has pip
        elif (requirement := pypi_requirement(dependency)) is not None:
            lines.append(requirement)
        elif name in PYPI_PROJECTS:
            unsupported.append(f"conda package {dependency!r} (a conda channel or version spec with no PyPI equivalent)")
        else:
            unsupported.append(f"conda package {dependency!r} (no exact PyPI equivalent)")
    if data.get("variables"):
        unsupported.append("environment.yml variables")
    return python, read_requirement_files(checkout, path, text="\n".join(lines) + "\n"), unsupported


def read_requirement_files(checkout: str, path: str, _seen=None, text=None) -> list[tuple[str, str]]:
    """[(path, content)] of a requirements file of the repository and the files it includes with -r/-c, all of
    which must be inside the repository: root reads them, and a repository must not name /etc/shadow.
    ``text``: the content of ``path`` when it is not the file's (environment.yml's requirements)."""
    seen = _seen if _seen is not None else set()
    if path in seen:
        return []
    seen.add(path)
    if text is None:
        text = _read_inside(checkout, path)
    found = [(path, text)]
    for line in text.splitlines():
        match = _INCLUDE.match(line)
        if match:
            included = os.path.abspath(os.path.join(os.path.dirname(path), match.group(1)))
            found += read_requirement_files(checkout, included, seen)
    return found


def _read_inside(checkout: str, path: str) -> str:
    real, root = os.path.realpath(path), os.path.realpath(checkout)
    relative = os.path.relpath(path, checkout)
    if os.path.commonpath([real, root]) != root:
        raise RepositoryError(f"{relative} points outside the repository")
    try:
        with open(real, encoding="utf-8") as f:
            return f.read()
    except (OSError, UnicodeDecodeError) as e:
        raise RepositoryError(f"cannot read {relative} of the repository: {getattr(e, 'strerror', e)}") from None


def _git_reason(lines) -> str:
    """git's own explanation, one line: its last 'fatal:' line if it has one."""
    lines = [l.strip() for l in lines if l.strip()]
    fatal = [l for l in lines if l.startswith("fatal:")]
    reason = (fatal or lines or ["git failed"])[-1]
    return reason.removeprefix("fatal: ")
