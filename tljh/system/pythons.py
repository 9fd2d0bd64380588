"""The Python interpreters this system has, and the ones its package archive can add.

An environment may ask for a Python version (``environments.<name>.python``). Only what the operating system
provides is offered: an interpreter already in /usr/bin, or a ``python3.X`` package of the configured apt
archive. Nothing is downloaded from elsewhere (uv's own Python downloads come from GitHub, which many
servers cannot reach, and would bypass the OS's security updates).
"""

from __future__ import annotations

import glob
import os
import re

from . import apt

SYSTEM_PYTHON = "/usr/bin/python3"
_VERSIONED = re.compile(r"^python(3\.\d+)$")


class PythonNotAvailable(Exception):
    """The asked version is neither installed nor in the package archive; the message lists what is."""


def version_of(executable: str) -> str | None:
    """``"3.11"`` for /usr/bin/python3 -> python3.11, read from the link's target name (no subprocess)."""
    match = _VERSIONED.match(os.path.basename(os.path.realpath(executable)))
    return match.group(1) if match else None


def system_version() -> str | None:
    return version_of(SYSTEM_PYTHON)


def installed(bin_dir: str = "/usr/bin") -> dict[str, str]:
    """{"3.11": "/usr/bin/python3.11", ...}: the versioned interpreters present and executable."""
    found = {}
    for path in glob.glob(os.path.join(bin_dir, "python3.*")):
        match = _VERSIONED.match(os.path.basename(path))
        if match and os.access(path, os.X_OK):
            found[match.group(1)] = path
    return dict(sorted(found.items(), key=lambda item: _key(item[0])))


def archive_versions() -> list[str]:
    """Versions the configured apt archive can install (``python3.X`` packages with a candidate)."""
    names = [n for n in apt.package_names("python3.") if _VERSIONED.match(n)]
    candidates = apt.candidates(names)
    return sorted((_VERSIONED.match(n).group(1) for n, c in candidates.items() if c), key=_key)


def interpreter(version: str | None) -> tuple[str, str | None]:
    """(interpreter path, apt package to install first or None) for ``version`` (None: the system python3).

    Raises PythonNotAvailable naming the versions installed and the ones the archive provides.
    """
    if version is None:
        return SYSTEM_PYTHON, None
    present = installed()
    if version in present:
        return present[version], None
    offered = archive_versions()
    if version not in offered and not apt.lists_present():
        apt.update()  # a freshly installed server may have empty package lists
        offered = archive_versions()
    if version in offered:
        return f"/usr/bin/python{version}", f"python{version}"
    raise PythonNotAvailable(
        f"Python {version} is not available here: this system has {_listing(present)}"
        f" and its package archive provides {_listing(offered)}"
    )


def _listing(versions) -> str:
    versions = list(versions)
    return ", ".join(versions) if versions else "none"


def _key(version: str):
    return tuple(int(p) for p in version.split("."))
