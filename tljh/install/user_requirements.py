"""``--user-requirements-txt-url``: a requirements file installed into the user environment, as root.

Whoever can change that file runs code as root on the server (uv builds source packages), so: only https://
(or a local file), an optional ``#sha256=<hex>`` that the downloaded bytes must match, and no option lines
(``--index-url``, ``-e``, ``-r``, ``--find-links``, ...) that would send uv elsewhere or pull in more files.
Requirement lines, with their environment markers and ``--hash`` options, are what the file is for.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

_SHA256 = re.compile(r"sha256=([0-9a-fA-F]{64})")
# A direct reference over a channel anyone on the path can change: `pkg @ http://...`, `git+http://...`.
_INSECURE_REFERENCE = re.compile(r"(^|[\s@])(git\+)?(http|ftp|file)://", re.IGNORECASE)


class RequirementsError(ValueError):
    """One line for the admin: what is wrong and what to do."""


@dataclass(frozen=True)
class Source:
    location: str  # an https:// URL (without the fragment) or an absolute local path
    sha256: str | None = None

    @property
    def is_url(self) -> bool:
        return self.location.startswith("https://")


def parse_source(value: str) -> Source:
    """Check the flag's value (before anything is installed). Raises RequirementsError."""
    location, _, fragment = value.partition("#")
    sha256 = None
    if fragment:
        m = _SHA256.fullmatch(fragment)
        if not m:
            raise RequirementsError(f"expected #sha256=<64 hex digits> after the URL or path, got #{fragment}")
        sha256 = m.group(1).lower()
    scheme = urlsplit(location).scheme.lower()
    if scheme == "https":
        return Source(location, sha256)
    if scheme in ("http", "ftp"):
        raise RequirementsError(
            f"{scheme}:// is not allowed: anyone on the network path could change what is installed as root. "
            "Use an https:// URL or a local file"
        )
    if scheme and scheme != "file":
        raise RequirementsError(f"expected an https:// URL or a local file, got {value!r}")
    path = os.path.abspath(location[len("file://"):] if scheme == "file" else location)
    if not os.path.isfile(path):
        raise RequirementsError(f"no such file: {path}")
    return Source(path, sha256)


def check_content(data: bytes, source: Source) -> None:
    """Raise RequirementsError unless ``data`` matches the sha256 and has only requirement lines."""
    if source.sha256 and hashlib.sha256(data).hexdigest() != source.sha256:
        raise RequirementsError(
            f"{source.location} does not match its #sha256= (got {hashlib.sha256(data).hexdigest()}): not installed"
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise RequirementsError(f"{source.location} is not a UTF-8 text file") from None
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.split(" #", 1)[0].strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.startswith("-"):
            raise RequirementsError(
                f"{source.location} line {number}: option lines ({stripped.split()[0]}) are not allowed; "
                "list packages only"
            )
        if _INSECURE_REFERENCE.search(stripped):
            raise RequirementsError(f"{source.location} line {number}: only https:// package URLs are allowed")


def fetch(source: Source, directory: str, download) -> str:
    """The checked file, saved in ``directory``. ``download(url) -> bytes`` does the network part."""
    if source.is_url:
        data = download(source.location)
    else:
        with open(source.location, "rb") as f:
            data = f.read()
    check_content(data, source)
    target = os.path.join(directory, "requirements.txt")
    with open(target, "wb") as f:
        f.write(data)
    return target
