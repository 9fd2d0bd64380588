"""What a Python environment holds, read from its files: a venv of ours or a conda installation (TLJH's
user environment). Used to rebuild an environment without losing anything silently: its Python
distributions, its conda packages, and the files no package owns (kernelspecs, ``etc/jupyter``) that an
admin put there.

Nothing here runs the environment's interpreter: the environment being read may be one whose Python no
longer runs (an OS upgrade replaced it, or it was moved aside and its hard-coded prefix is gone).
"""

import ast
import dataclasses
import glob
import json
import os
import re
import shutil
from importlib import metadata

# Conda packages that make a conda installation work and mean nothing in a venv: never reported as lost.
CONDA_MACHINERY = {
    "python", "pip", "conda", "mamba", "micromamba", "conda-libmamba-solver", "libmambapy", "libmamba",
    "conda-package-handling", "conda-package-streaming", "menuinst", "miniforge_console_shortcut", "setuptools",
    "wheel",
}


# Paths under an environment whose files no package owns are configuration someone wrote: carried over.
CONFIG_TREES = ("etc/jupyter", "share/jupyter/lab/settings")


def canonical(name):
    """A distribution name as packaging normalizes it (PEP 503): ``Jupyter_Server`` -> ``jupyter-server``."""
    return re.sub(r"[-_.]+", "-", name).lower()


def is_conda(prefix):
    """A conda installation (TLJH's user environment is one) rather than a venv."""
    return os.path.isdir(os.path.join(prefix, "conda-meta"))


def site_packages(prefix):
    return sorted(glob.glob(os.path.join(prefix, "lib", "python3*", "site-packages")))


def python_version(prefix):
    """``"3.11"`` for the interpreter of ``prefix`` (from its lib/python3.X directory), or None."""
    found = [os.path.basename(os.path.dirname(p))[len("python"):] for p in site_packages(prefix)]
    return found[-1] if found else None


@dataclasses.dataclass(frozen=True)
class Distribution:
    """A Python distribution pip sees in an environment."""

    name: str
    version: str
    installer: str  # "pip", "uv", "conda", ... (the dist-info INSTALLER file; "" when absent)
    requirement: str  # what installs it again: "name==version", or "name @ url" for a local path / VCS install

    @property
    def key(self):
        return canonical(self.name)


def distributions(prefix):
    """Every Python distribution pip would list in ``prefix``, sorted by name.

    A distribution installed from a local path that no longer exists (conda packages record their build
    directory) is reinstalled by name and version, from the package index.
    """
    found = {}
    for dist in metadata.distributions(path=site_packages(prefix)):
        # A dist-info without metadata is what a killed install leaves half-written.
        if not dist.metadata or not dist.metadata["Name"]:
            continue
        name = dist.metadata["Name"]
        requirement = f"{name}=={dist.version}"
        origin = json.loads(dist.read_text("direct_url.json") or "null") or {}
        url = origin.get("url", "")
        if "vcs_info" in origin:
            requirement = f"{name} @ {origin['vcs_info']['vcs']}+{url}@{origin['vcs_info']['commit_id']}"
        elif url.startswith("file://") and os.path.exists(url[len("file://"):]) and "archive_info" not in origin:
            requirement = f"{name} @ {url}"
        installer = (dist.read_text("INSTALLER") or "").strip()
        found.setdefault(canonical(name), Distribution(name, dist.version, installer, requirement))
    return [found[k] for k in sorted(found)]


def _dist_files(prefix):
    """Paths (relative to ``prefix``) that Python distributions own, from their RECORD files."""
    owned = set()
    for sp in site_packages(prefix):
        for dist in metadata.distributions(path=[sp]):
            for entry in dist.files or ():
                full = os.path.normpath(os.path.join(sp, str(entry)))
                owned.add(os.path.relpath(full, prefix))
    return owned


@dataclasses.dataclass(frozen=True)
class CondaPackage:
    name: str
    version: str
    files: tuple  # relative to the prefix


def conda_packages(prefix):
    """The conda packages of a conda installation (its ``conda-meta/*.json`` records), sorted by name."""
    packages = []
    for path in sorted(glob.glob(os.path.join(prefix, "conda-meta", "*.json"))):
        try:
            with open(path) as f:
                record = json.load(f)
            packages.append(CondaPackage(record["name"], str(record.get("version", "")), tuple(record.get("files", ()))))
        except (OSError, ValueError, KeyError):
            continue
    return sorted(packages, key=lambda p: p.name)


def _spec_name(spec):
    """``conda-forge::r-base>=4`` -> ``r-base``."""
    match = re.match(r"[A-Za-z0-9_.+-]+", spec.split("::", 1)[-1].strip())
    return match.group(0).lower().rstrip(".") if match else ""


def requested_conda_names(prefix):
    """The conda packages someone asked for by name (not pulled in as dependencies), in the order asked.

    From ``conda-meta/history`` (what ``conda env export --from-history`` reads): each transaction's
    ``# update specs:`` adds names, ``# remove specs:`` removes them.
    """
    requested = []
    try:
        with open(os.path.join(prefix, "conda-meta", "history")) as f:
            lines = f.read().splitlines()
    except OSError:
        return requested
    for line in lines:
        match = re.match(r"#\s*(update|install|remove|neutered) specs:\s*(\[.*\])\s*$", line)
        if not match:
            continue
        try:
            specs = ast.literal_eval(match.group(2))
        except (ValueError, SyntaxError):
            continue
        for name in filter(None, map(_spec_name, map(str, specs))):
            if match.group(1) == "remove":
                requested = [n for n in requested if n != name]
            elif name not in requested:
                requested.append(name)
    return requested


def conda_only_packages(prefix):
    """(requested, dependencies): conda packages of ``prefix`` that pip does not see (programs, R, C libraries),
    split into those someone asked for by name and those that came as dependencies. The conda machinery
    (python, conda, mamba, ...) is in neither."""
    site_dirs = [os.path.relpath(sp, prefix) + os.sep for sp in site_packages(prefix)]
    requested = set(requested_conda_names(prefix))
    asked, deps = [], []
    for package in conda_packages(prefix):
        if package.name in CONDA_MACHINERY:
            continue
        is_python = any(
            f.startswith(tuple(site_dirs)) and (".dist-info/" in f or ".egg-info" in f) for f in package.files
        )
        if is_python:
            continue
        (asked if package.name in requested else deps).append(package)
    return asked, deps


def conda_package_versions(prefix):
    """{name: version}: conda records for a conda installation, else Python distributions plus ``python``."""
    if is_conda(prefix):
        return {p.name: p.version for p in conda_packages(prefix)}
    versions = {d.key: d.version for d in distributions(prefix)}
    if python_version(prefix):
        versions["python"] = python_version(prefix)
    return versions


def unowned_files(prefix, top):
    """Files under ``prefix/top`` that no conda package and no Python distribution owns (relative paths)."""
    root = os.path.join(prefix, top)
    if not os.path.isdir(root):
        return []
    owned = _dist_files(prefix)
    for package in conda_packages(prefix):
        owned.update(package.files)
    found = []
    for directory, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        for name in sorted(files):
            rel = os.path.relpath(os.path.join(directory, name), prefix)
            if rel not in owned:
                found.append(rel)
    return found


def kernelspecs(prefix):
    """{kernel name: parsed kernel.json} of the kernelspecs in ``prefix/share/jupyter/kernels``."""
    specs = {}
    for path in sorted(glob.glob(os.path.join(prefix, "share", "jupyter", "kernels", "*", "kernel.json"))):
        try:
            with open(path) as f:
                specs[os.path.basename(os.path.dirname(path))] = json.load(f)
        except (OSError, ValueError):
            continue
    return specs


def carry_kernelspecs(old, new, *, served_at=None):
    """Copy the kernelspecs of the environment at ``old`` that ``new`` lacks, when they can run there.

    ``served_at`` is the path the environments are used at (the kernelspecs' ``argv`` name it; ``new`` by
    default): a kernel whose program is inside the environment is carried only if the new environment has
    that program too. Returns (carried names, {name: why not carried}).
    """
    served_at = (served_at or new).rstrip("/")
    present = kernelspecs(new)
    carried, refused = [], {}
    for name, spec in kernelspecs(old).items():
        if name in present:
            continue
        argv = spec.get("argv") or []
        program = argv[0] if argv else ""
        if program.startswith(served_at + "/"):
            if not os.path.exists(os.path.join(new, os.path.relpath(program, served_at))):
                refused[name] = f"its program {program} came from a conda package that was not carried over"
                continue
        elif os.path.isabs(program) and not os.path.exists(program):
            refused[name] = f"its program {program} does not exist"
            continue
        source = os.path.join(old, "share", "jupyter", "kernels", name)
        target = os.path.join(new, "share", "jupyter", "kernels", name)
        tmp = target + ".tmp-carry"
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(source, tmp, symlinks=True)
        os.rename(tmp, target)
        carried.append(name)
    return carried, refused


def carry_files(old, new, top):
    """Copy the files under ``old/top`` that no package owns into ``new`` where ``new`` has no such file.

    Returns (copied, kept) relative paths: ``kept`` are files ``new`` already has (its version wins).
    """
    copied, kept = [], []
    for rel in unowned_files(old, top):
        target = os.path.join(new, rel)
        if os.path.lexists(target):
            kept.append(rel)
            continue
        os.makedirs(os.path.dirname(target), exist_ok=True)
        tmp = target + ".tmp-carry"
        shutil.copy2(os.path.join(old, rel), tmp, follow_symlinks=False)
        os.replace(tmp, target)
        copied.append(rel)
    return copied, kept


def carry_configuration(old, new, *, served_at=None):
    """Kernelspecs and configuration files (:data:`CONFIG_TREES`) of ``old`` that ``new`` lacks.

    Returns (kernels carried, {kernel: why not carried}, files copied).
    """
    kernels, refused = carry_kernelspecs(old, new, served_at=served_at)
    files = []
    for top in CONFIG_TREES:
        files += carry_files(old, new, top)[0]
    return kernels, refused, files
