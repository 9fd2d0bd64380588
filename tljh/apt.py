"""TLJH's public module name for apt (``install_packages``, ``add_source``, ``trust_gpg_key``)."""

import os
import subprocess

from tljh.utils import run_subprocess

_SOURCES_DIR = "/etc/apt/sources.list.d"


def _noninteractive():
    return dict(os.environ, DEBIAN_FRONTEND="noninteractive")


def install_packages(packages):
    """apt-get install ``packages`` without questions (after an apt-get update if the lists are empty)."""
    if not os.listdir("/var/lib/apt/lists"):
        run_subprocess(["apt-get", "update", "--yes"], env=_noninteractive())
    run_subprocess(["apt-get", "install", "--yes", *packages], env=_noninteractive())


def add_source(name, source_url, section):
    """Add the apt source ``deb <source_url> <this release's codename> <section>`` as ``<name>.list``."""
    codename = subprocess.run(
        ["/bin/sh", "-c", ". /etc/os-release && echo $VERSION_CODENAME"], capture_output=True, text=True, check=True
    ).stdout.strip()
    line = f"deb {source_url} {codename} {section}\n"
    path = os.path.join(_SOURCES_DIR, name + ".list")
    try:
        with open(path) as f:
            if line in f.read():
                return
    except FileNotFoundError:
        pass
    with open(path, "a") as f:
        f.write(line)
    run_subprocess(["apt-get", "update", "--yes"], env=_noninteractive())


def trust_gpg_key(key):
    """Trust the GPG public key ``key`` (bytes) for apt sources: a keyring file in /etc/apt/trusted.gpg.d.

    TLJH used ``apt-key add``, which current Debian and Ubuntu no longer ship.
    """
    import hashlib

    name = "tljh-" + hashlib.sha256(key).hexdigest()[:12]
    armored = key.lstrip().startswith(b"-----BEGIN")
    path = os.path.join("/etc/apt/trusted.gpg.d", name + (".asc" if armored else ".gpg"))
    with open(path, "wb") as f:
        f.write(key)
    os.chmod(path, 0o644)
