"""Python environments built with uv: the hub venv and the shared user environment."""

import os
import subprocess
import sys
import tempfile

from .paths import HUB_ENV_PREFIX

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
    env.setdefault("UV_CACHE_DIR", "/var/cache/tljh/uv")
    env.pop("VIRTUAL_ENV", None)
    return env


def run_uv(*args):
    """Run uv; raise with uv's own error message (its last lines) when it fails."""
    result = subprocess.run([uv_binary(), *args], env=uv_env(), capture_output=True, text=True)
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


def installed_packages(prefix):
    """{name: version} of what is installed in the venv at ``prefix`` (empty if it does not work)."""
    result = subprocess.run(
        [uv_binary(), "pip", "freeze", "--python", python_of(prefix)],
        env=uv_env(),
        capture_output=True,
        text=True,
    )
    packages = {}
    for line in result.stdout.splitlines():
        if "==" in line:
            name, version = line.split("==", 1)
            packages[name.lower()] = version
    return packages


def create_venv(prefix):
    """(Re)create the venv at ``prefix`` with the system python3, keeping nothing from a broken one."""
    run_uv("venv", "--clear", "--python", "/usr/bin/python3", prefix)


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
    return result
