"""TLJH's public module name for installing into the user environment (TLJH's ``tljh.conda``).

The user environment here is a venv, not a conda installation. These faces keep TLJH's names and arguments:
pip installs go through uv into the venv at ``prefix``; conda package specs that are PyPI projects (see
``tljh.install.conda_requests``) are installed from PyPI; any other conda package has to be asked for
through a plugin's ``tljh_extra_user_conda_packages`` hook, which installs programs with rattler.
"""

import os
import subprocess
import tempfile
import urllib.request

from packaging.requirements import Requirement

from tljh.install import conda_requests
from tljh.system import venvs
from tljh.system.env_contents import conda_package_versions
from tljh.utils import run_subprocess


def get_conda_package_versions(prefix):
    """{name: version} of the packages in ``prefix``: its conda records when it is a conda installation (a
    TLJH environment), else its Python distributions plus ``python``."""
    return conda_package_versions(prefix)


def fix_permissions(prefix):
    """Everything in ``prefix`` owned by this process's user and group, nothing writable by others."""
    run_subprocess(["chown", "-R", f"{os.getuid()}:{os.getgid()}", prefix])
    run_subprocess(["chmod", "-R", "o-w", prefix])


def ensure_pip_packages(prefix, packages, upgrade=False):
    """Install pip requirement strings into the environment at ``prefix``."""
    _pip_install(prefix, list(packages), upgrade=upgrade)


def ensure_pip_requirements(prefix, requirements_path, upgrade=False):
    """Install a requirements file (a path or an http(s) URL) into the environment at ``prefix``."""
    with tempfile.TemporaryDirectory() as tmp:
        if "://" in requirements_path:
            local = os.path.join(tmp, "requirements.txt")
            with urllib.request.urlopen(requirements_path, timeout=60) as response, open(local, "wb") as f:
                f.write(response.read())
            requirements_path = local
        _pip_install(prefix, [], upgrade=upgrade, requirements_files=[requirements_path])


def ensure_conda_packages(prefix, packages, channels=("conda-forge",), force_reinstall=False):
    """Install conda package specs: the ones that are PyPI projects from PyPI into ``prefix``.

    Other conda packages (programs, R, C libraries) cannot be installed into a venv: the call fails naming
    them; return them from a plugin's ``tljh_extra_user_conda_packages`` hook instead.
    """
    plan = conda_requests.plan([conda_requests.Request("tljh.conda", spec) for spec in packages], channels)
    if plan.conda:
        names = ", ".join(r.spec for r in plan.conda)
        raise subprocess.CalledProcessError(
            1, ["ensure_conda_packages", *packages],
            output=f"not PyPI projects: {names}; ask for them in a plugin's tljh_extra_user_conda_packages hook".encode(),
        )
    if plan.pip_requirements:
        _pip_install(prefix, plan.pip_requirements, upgrade=force_reinstall)


def _pip_install(prefix, requirements, upgrade=False, requirements_files=()):
    try:
        venvs.pip_install(
            prefix, requirements, requirements_files=requirements_files,
            upgrade_packages=[Requirement(r).name for r in requirements] if upgrade else (),
        )
    except RuntimeError as e:
        raise subprocess.CalledProcessError(1, ["uv", "pip", "install", *requirements], output=str(e).encode()) from e
