"""OS packages through apt: what is installed, what the archive offers, installing more.

Only apt's ordinary commands (apt-get, apt-cache, dpkg-query), as root, non-interactively.
"""

from __future__ import annotations

import glob
import os
import subprocess

LISTS_DIR = "/var/lib/apt/lists"
_ENV = {"DEBIAN_FRONTEND": "noninteractive"}


class AptError(Exception):
    """An apt command failed; the message ends with apt's own last line."""


def _run(cmd, check=True):
    result = subprocess.run(cmd, env={**os.environ, **_ENV}, capture_output=True, text=True)
    if check and result.returncode != 0:
        last = (result.stderr.strip() or result.stdout.strip()).splitlines()[-1:]
        raise AptError(f"{' '.join(cmd)} failed: {last[0] if last else 'exit status %d' % result.returncode}")
    return result


def lists_present() -> bool:
    return bool(glob.glob(os.path.join(LISTS_DIR, "*_Packages*")))


def update() -> None:
    _run(["apt-get", "update", "-qq"])


def package_names(prefix: str) -> list[str]:
    """Package names known to apt's lists that start with ``prefix`` (apt-cache pkgnames)."""
    return _run(["apt-cache", "pkgnames", prefix], check=False).stdout.split()


def candidates(names) -> dict[str, str | None]:
    """{name: candidate version or None}: what `apt-get install name` would install (None: nothing)."""
    names = list(names)
    result = {n: None for n in names}
    if not names:
        return result
    current = None
    for line in _run(["apt-cache", "policy", *names], check=False).stdout.splitlines():
        if line and not line[0].isspace() and line.endswith(":"):
            current = line[:-1]
        elif current in result and line.strip().startswith("Candidate:"):
            value = line.split(":", 1)[1].strip()
            result[current] = None if value == "(none)" else value
    return result


def missing(names) -> list[str]:
    """The packages of ``names`` that are not installed (dpkg's 'install ok installed')."""
    names = list(names)
    if not names:
        return []
    out = _run(["dpkg-query", "-W", "-f=${Package} ${Status}\n", *names], check=False).stdout
    present = {line.split()[0] for line in out.splitlines() if line.endswith(" installed")}
    return [n for n in names if n not in present]


def unknown(names) -> list[str]:
    """The packages of ``names`` that neither are installed nor have a candidate in the archive."""
    absent = missing(names)
    if absent and not lists_present():
        update()
    return [n for n, c in candidates(absent).items() if c is None]


def install(names, *, no_recommends=False, out=print) -> list[str]:
    """Install the packages of ``names`` that are missing; return them. Finishes what a killed run left."""
    wanted = missing(names)
    if not wanted:
        return []
    out(f"    apt: installing {' '.join(wanted)}")
    _run(["dpkg", "--configure", "-a"])
    _run(["apt-get", "update", "-qq"])
    extra = ["--no-install-recommends"] if no_recommends else []
    _run(["apt-get", "install", "-y", "-qq", *extra, *wanted])
    return wanted
