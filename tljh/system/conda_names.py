"""Conda package names that are exactly a PyPI project: one map, for plugins' conda requests
(tljh.install.conda_requests) and for a repository's environment.yml (tljh.environments.repository).
There is no conda here: a conda name is installed from PyPI only when it is on this list, never guessed.
"""

from __future__ import annotations

import re

# conda package name -> PyPI project, for conda-forge packages that are built from that PyPI project's own
# release (the feedstock's source is the project's sdist or wheel) and install the same importable package.
# Deliberately short: a missing name is still installed (with rattler, as a program); a wrong one would put a
# different package into every user's environment. Not here on purpose: metapackages that pull more than the
# PyPI project (conda-forge's ``matplotlib`` adds Qt, ``dask`` adds distributed and bokeh, ``seaborn`` adds
# statsmodels) — their ``-base``/``-core`` packages are listed instead.
PYPI_PROJECTS = {
    "beautifulsoup4": "beautifulsoup4",
    "bokeh": "bokeh",
    "dask-core": "dask",
    "ipywidgets": "ipywidgets",
    "matplotlib-base": "matplotlib",
    "nbgitpuller": "nbgitpuller",
    "networkx": "networkx",
    "numpy": "numpy",
    "pandas": "pandas",
    "plotly": "plotly",
    "pyyaml": "PyYAML",
    "requests": "requests",
    "scikit-learn": "scikit-learn",
    "scipy": "scipy",
    "seaborn-base": "seaborn",
    "sympy": "sympy",
    "tqdm": "tqdm",
    "xarray": "xarray",
}

# Channels whose packages of the names above are those PyPI projects (TLJH always adds conda-forge).
PYPI_CHANNELS = {"conda-forge", "defaults", "anaconda", "main", "pkgs/main"}

_NAME = r"[A-Za-z0-9][A-Za-z0-9._-]*"
_VERSION = r"[0-9][0-9A-Za-z.!+*]*"
_CONSTRAINT = rf"(?:==|!=|>=|<=|>|<|~=)\s*{_VERSION}"


def conda_name(spec):
    """The package name of a conda match spec: ``conda-forge::tqdm>=4`` -> ``tqdm``."""
    spec = spec.split("::", 1)[-1].strip()
    match = re.match(_NAME, spec)
    return match.group(0).lower() if match else spec


def pypi_requirement(spec):
    """The PEP 508 requirement installing conda spec ``spec`` from PyPI, or None when it is not a PyPI project.

    Only plain specs translate: ``tqdm``, ``tqdm>=4.60,<5``, ``tqdm==4.66.1``, ``tqdm=4.66`` (conda's "4.66.*").
    A build string, a channel other than the PyPI_CHANNELS, brackets or alternatives (``|``) mean a particular
    conda build was wanted: that goes to rattler, not PyPI.
    """
    channel, _, rest = spec.strip().rpartition("::")
    if channel and channel not in PYPI_CHANNELS:
        return None
    match = re.fullmatch(rf"({_NAME})\s*(.*)", rest.strip())
    if not match:
        return None
    name, constraint = match.group(1).lower(), match.group(2).replace(" ", "")
    project = PYPI_PROJECTS.get(name)
    if project is None:
        return None
    if not constraint:
        return project
    single = re.fullmatch(rf"={_VERSION}", constraint)
    if single:  # conda's fuzzy "=1.2" is "1.2.*"
        version = constraint[1:]
        return f"{project}=={version if version.endswith('*') else version + '.*'}"
    if all(re.fullmatch(_CONSTRAINT, part) for part in constraint.split(",")):
        return project + constraint
    return None
