"""Python environments built with uv: the hub venv and the shared user environment."""

import contextlib
import dataclasses
import glob
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from importlib import metadata

from .paths import HUB_ENV_PREFIX, UV_CACHE_DIR

UV = os.path.join(HUB_ENV_PREFIX, "bin", "uv")

# Packages kept out of both environments. rfc3987-syntax (pulled in by jupyter-events through
# jsonschema[format-nongpl]) builds a parser grammar on every import: a full second of every user
# server's start and of every hub start, for IRI format checks that nothing here uses. A marker that is
# never true is uv's documented way to drop a dependency. bootstrap.py keeps the same list (it cannot
# import this module).
EXCLUDED = ["rfc3987-syntax"]


def uv_binary():
    """uv from the hub venv; fall back to the one next to the running interpreter (tests, dev)."""
    if os.path.exists(UV):
        return UV
    return os.path.join(os.path.dirname(sys.executable), "uv")


def uv_env():
    env = dict(os.environ)
    # Trust the system CA store, so servers behind a TLS-inspecting proxy work like apt and curl do.
    env.setdefault("UV_SYSTEM_CERTS", "1")
    env.setdefault("UV_CACHE_DIR", UV_CACHE_DIR)
    env.pop("VIRTUAL_ENV", None)
    return env


def run_uv(*args):
    """Run uv; raise with uv's own error message (its last lines) when it fails."""
    env = uv_env()
    if env["UV_CACHE_DIR"] == UV_CACHE_DIR:
        # uv makes the lock files in its cache world-writable (0666): keep the whole cache root-only.
        os.makedirs(UV_CACHE_DIR, mode=0o700, exist_ok=True)
        os.chmod(UV_CACHE_DIR, 0o700)
    result = subprocess.run([uv_binary(), *args], env=env, capture_output=True, text=True)
    if result.returncode != 0:
        tail = "\n".join(result.stderr.strip().splitlines()[-15:])
        raise RuntimeError(f"uv {' '.join(args[:2])} failed:\n{tail}")
    return result


def python_of(prefix):
    return os.path.join(prefix, "bin", "python")


def venv_works(prefix):
    """True if the venv's interpreter runs and is the system python3's version.

    An OS upgrade can replace the system Python under a venv (its symlinked interpreter then breaks or
    changes version); such a venv must be rebuilt, not patched.
    """
    py = python_of(prefix)
    if not os.path.exists(py):
        return False
    probe = "import sys; print('%d.%d' % sys.version_info[:2])"
    try:
        mine = subprocess.run([py, "-c", probe], capture_output=True, text=True, timeout=60)
        system = subprocess.run(["/usr/bin/python3", "-c", probe], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return mine.returncode == 0 and mine.stdout == system.stdout


def site_packages(prefix):
    return sorted(glob.glob(os.path.join(prefix, "lib", "python3*", "site-packages")))


def installed_packages(prefix):
    """{name: version} of what is installed in the venv at ``prefix``.

    Read from the dist-info files, without running the venv's interpreter: this must work on a venv whose
    system Python an OS upgrade removed, to rebuild it with the same packages.
    """
    return {canonical(d.metadata["Name"]): d.version for d in distributions(prefix)}


def distributions(prefix):
    """The installed distributions of the venv at ``prefix`` (read from its files)."""
    # A dist-info without metadata is what a killed install leaves half-written: nothing to reinstall from it.
    return [d for d in metadata.distributions(path=site_packages(prefix)) if d.metadata and d.metadata["Name"]]


def canonical(name):
    """A distribution name as packaging normalizes it (PEP 503): ``Jupyter_Server`` -> ``jupyter-server``."""
    return re.sub(r"[-_.]+", "-", name).lower()


def requirements_of(prefix):
    """{canonical name: requirement string} reinstalling what the venv at ``prefix`` holds: ``name==version``,
    or ``name @ url`` for packages installed from a path or a git URL (plugins), if that path still exists."""
    requirements = {}
    for dist in distributions(prefix):
        name = dist.metadata["Name"]
        origin = json.loads(dist.read_text("direct_url.json") or "null")
        if origin and "url" in origin:
            url = origin["url"]
            if url.startswith("file://") and not os.path.exists(url[len("file://") :]):
                continue
            if "vcs_info" in origin:
                url = f"{origin['vcs_info']['vcs']}+{url}@{origin['vcs_info']['commit_id']}"
            requirements[canonical(name)] = f"{name} @ {url}"
        else:
            requirements[canonical(name)] = f"{name}=={dist.version}"
    return dict(sorted(requirements.items()))


def moved_aside(prefix):
    """Where a venv that no longer runs waits while its replacement is built (see rebuild_from)."""
    return prefix.rstrip("/") + ".previous"


def rebuild_from(prefix, *, create=True):
    """Rebuild the venv at ``prefix`` with what it held, after an OS upgrade changed the system Python.

    The old venv is first renamed to ``moved_aside(prefix)``, so an interrupted rebuild resumes from it on the
    next run. Its packages are reinstalled, and its kernelspecs and the configuration files no package owns
    (``etc/jupyter``, JupyterLab settings) are copied. It is deleted only when everything came over; otherwise
    it is kept at ``kept_path(prefix)`` and the result says what did not. With ``create=False`` the new venv
    already exists (bootstrap made the hub venv). Returns a :class:`Rebuilt`.
    """
    from . import env_contents

    old = moved_aside(prefix)
    if not os.path.isdir(old):
        if not os.path.isdir(prefix):
            return Rebuilt([], [], [], {}, [], None)
        os.rename(prefix, old)
        create = True
    if create:
        create_venv(prefix)
    present = installed_packages(prefix)
    requirements = requirements_of(old)
    wanted = [r for name, r in requirements.items() if name not in present]
    # Installed from a local path that is gone: nothing to reinstall from, so it is reported, never dropped.
    failed = [f"{name}=={version} (installed from a path that no longer exists)"
              for name, version in installed_packages(old).items() if name not in requirements and name not in present]
    if wanted:
        try:
            pip_install(prefix, wanted)
        except RuntimeError:
            # One unavailable package must not cost the others: retry one by one, report the rest.
            for requirement in wanted:
                try:
                    pip_install(prefix, [requirement])
                except RuntimeError:
                    failed.append(requirement)
    kernels, refused, files = env_contents.carry_configuration(old, prefix)
    kept = None
    if failed or refused:
        kept = kept_path(prefix)
        os.rename(old, kept)
    else:
        shutil.rmtree(old)
    return Rebuilt([r for r in wanted if r not in failed], failed, kernels, refused, files, kept)


@dataclasses.dataclass
class Rebuilt:
    restored: list  # requirements reinstalled
    failed: list  # requirements that would not install
    kernels: list  # kernelspecs copied
    kernels_refused: dict  # kernelspec -> why it was not copied
    files: list  # configuration files copied
    kept: str  # where the old environment is kept (None: deleted, everything came over)


def kept_path(prefix):
    """Where an old environment that could not be carried over completely stays (a new name each time)."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return f"{prefix.rstrip('/')}.before-{stamp}"


def lock_file(prefix):
    """uv's lock for the venv at ``prefix``."""
    return os.path.join(prefix, ".lock")


def close_lock(prefix):
    """uv's lock in a shared environment: writable by root only."""
    # uv creates <venv>/.lock with mode 0666 on purpose (any user who runs uv next may take it) and keeps the
    # mode of a lock that exists: in a shared environment only root writes, so one chmod after uv suffices.
    with contextlib.suppress(FileNotFoundError):
        os.chmod(lock_file(prefix), 0o644)


def create_venv(prefix):
    """(Re)create the venv at ``prefix`` with the system python3, keeping nothing from a broken one."""
    run_uv("venv", "--clear", "--python", "/usr/bin/python3", prefix)
    close_lock(prefix)


def pip_install(prefix, requirements, upgrade_packages=(), requirements_files=()):
    """Install requirement strings (and requirements files) into the venv at ``prefix``.

    Bytecode is compiled at install time so first imports are fast and need no write access.
    Only ``upgrade_packages`` are moved to newer versions; everything else an admin installed stays.
    """
    with tempfile.NamedTemporaryFile("w", suffix=".txt") as overrides:
        overrides.write("".join(f'{name}; sys_platform == "never"\n' for name in EXCLUDED))
        overrides.flush()
        args = ["pip", "install", "--python", python_of(prefix), "--compile-bytecode", "--overrides", overrides.name]
        for name in upgrade_packages:
            args += ["--upgrade-package", name]
        for path in requirements_files:
            args += ["--requirement", path]
        result = run_uv(*args, *requirements)
    # Environments made before the exclusion still hold them.
    present = [name for name in EXCLUDED if name in installed_packages(prefix)]
    if present:
        run_uv("pip", "uninstall", "--python", python_of(prefix), *present)
    close_lock(prefix)
    return result


def dist_versions(prefix, names):
    """{canonical name: version} of those of ``names`` installed in the venv at ``prefix``, read from the
    dist-info directory names alone (``jupyter_server-2.21.1.dist-info``): cheap enough for every server start."""
    wanted = {canonical(n) for n in names}
    found = {}
    for site in site_packages(prefix):
        for entry in os.listdir(site):
            if entry.endswith(".dist-info"):
                name, _, version = entry[: -len(".dist-info")].partition("-")
                if canonical(name) in wanted:
                    found[canonical(name)] = version
    return found


def revert_packages(prefix, before: dict):
    """Make the venv's packages ``before`` ({name: version}, from installed_packages) again: packages installed
    since are removed, changed versions go back."""
    now = installed_packages(prefix)
    added = sorted(set(now) - set(before))
    changed = [f"{name}=={version}" for name, version in before.items() if now.get(name) != version]
    if added:
        run_uv("pip", "uninstall", "--python", python_of(prefix), *added)
    if changed:
        pip_install(prefix, changed)
    close_lock(prefix)
