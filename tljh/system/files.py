"""Writing files so that a crash leaves the old content or the new one, never half of either.

Every file the hub's tools write (config.yaml, state, fingerprints, Caddy configs, unit files, the sudoers
drop-in) goes through :func:`write_atomic`: a temporary file in the same directory with the final mode,
fsync, an optional check of the temporary file, rename over the target, fsync of the directory.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile


def write_atomic(path, content: str | bytes, mode: int = 0o600, check=None) -> None:
    """Replace ``path`` with ``content`` (mode ``mode``); its directory is created 0700 if missing.

    ``check(tmp_path)``, if given, runs on the complete temporary file before it replaces ``path``; it
    raises to refuse, and then ``path`` is left as it was.
    """
    path = os.path.abspath(path)
    directory = os.path.dirname(path)
    os.makedirs(directory, mode=0o700, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(content.encode("utf-8") if isinstance(content, str) else content)
            f.flush()
            os.fsync(f.fileno())
        if check is not None:
            check(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    dfd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def write_json(path, value, mode: int = 0o600) -> None:
    """write_atomic of ``value`` as indented JSON with sorted keys (stable bytes for stable values)."""
    write_atomic(path, json.dumps(value, indent=2, sort_keys=True) + "\n", mode)


def read_bytes(path) -> bytes:
    """The file's bytes; b"" if it does not exist."""
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        return b""
