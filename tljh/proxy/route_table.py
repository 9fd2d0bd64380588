"""JupyterHub's route table as a directory that Caddy reads on every request.

A route change is a few file operations here; the proxy process is never reloaded, so a server
starting or stopping cannot close anyone's connections or websockets, and costs well under a
millisecond whatever the size of the table.

Layout under the table's root (``/run/tljh/routes`` on a server):

- one directory per path segment of a routespec, named ``_`` + the unescaped segment: ``/user/alice/``
  is ``_user/_alice/``. The prefix keeps segment directories apart from entries and makes ``.`` and
  ``..`` ordinary names;
- in a routespec's directory, its entry, holding JupyterHub's metadata (routespec, target, data) as
  JSON (the proxy's group may read it: Caddy's file matcher opens what it looks for):

  - ``@`` plus ``@.sock``, a symlink to the server's unix socket, for ``http+unix://`` targets
    (Caddy's file matcher does not match sockets, nor symlinks to them: hence two names);
  - ``@tcp=<host>:<port>`` for ``http://host:port`` targets: the address is in the name.

Caddy tries the request path's directories longest first (:func:`candidates`), so the longest routespec
that is a prefix of the path (by whole segments, like configurable-http-proxy) wins; nothing found means
the request goes to the hub. :mod:`tljh.proxy.caddy_config` builds the Caddy side from the same names.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from urllib.parse import unquote, urlparse

ENTRY = "@"
SOCKET_LINK = "@.sock"
TCP_PREFIX = "@tcp="
SEGMENT_PREFIX = "_"
# JupyterHub's own routes are at most 3 segments below base_url (/user/<name>/<server>/).
ROUTE_DEPTH_BELOW_BASE_URL = 3
_NAME_MAX = 255


class RouteError(ValueError):
    """A route this table cannot hold (one-line reason, shown to whoever asked for it)."""


def default_depth(base_url: str) -> int:
    """How many path segments the table looks at: enough for every route JupyterHub makes."""
    return len([s for s in base_url.split("/") if s]) + ROUTE_DEPTH_BELOW_BASE_URL


def candidates(depth: int) -> list[str]:
    """Caddy ``try_files`` patterns: the request path's first ``depth`` segments, longest first, then ``/``.

    Caddy escapes glob characters in placeholder values, and a missing segment is empty (a ``_``
    directory that never exists), so only the trailing ``@*`` is a glob.
    """
    patterns = []
    for n in range(depth, 0, -1):
        dirs = "/".join(SEGMENT_PREFIX + "{http.request.uri.path.%d}" % i for i in range(n))
        patterns.append(f"/{dirs}/{ENTRY}*")
    patterns.append(f"/{ENTRY}*")
    return patterns


def segments(routespec: str, depth: int) -> list[str]:
    """The directory names of a path routespec (``/user/alice/`` -> ``["_user", "_alice"]``)."""
    if not routespec.startswith("/"):
        raise RouteError(
            f"Routespec {routespec!r} is host-based (JupyterHub.subdomain_host): "
            "this proxy routes by path only; unset JupyterHub.subdomain_host"
        )
    if not routespec.endswith("/"):
        raise RouteError(f"Routespec {routespec!r} must end with '/'")
    parts = [unquote(s) for s in routespec[1:-1].split("/")] if routespec != "/" else []
    for part in parts:
        if not part or "/" in part or "\0" in part or len(part.encode()) >= _NAME_MAX:
            raise RouteError(f"Routespec {routespec!r} has a path segment the proxy cannot route: {part!r}")
    if len(parts) > depth:
        raise RouteError(
            f"Routespec {routespec!r} is {len(parts)} segments deep; the proxy looks at {depth} "
            "(CaddyProxy.route_depth, set it in the hub and the proxy config alike)"
        )
    return [SEGMENT_PREFIX + p for p in parts]


def parse_target(target: str) -> tuple[str, str]:
    """("unix", socket path) or ("tcp", "host:port") for a JupyterHub target URL."""
    url = urlparse(target)
    if url.path not in ("", "/") or url.query or url.fragment:
        raise RouteError(f"Target {target!r}: targets with a path are not supported")
    if url.scheme == "http+unix":
        netloc = url.netloc
        # JupyterHub appends the port it assumes (":80") to the quoted socket path.
        host, _, port = netloc.rpartition(":")
        path = unquote(host if port.isdigit() else netloc)
        if not path.startswith("/"):
            raise RouteError(f"Target {target!r}: the socket path must be absolute")
        return "unix", path
    if url.scheme == "http":
        if not url.hostname:
            raise RouteError(f"Target {target!r} is not a URL like http://host:port")
        host = f"[{url.hostname}]" if ":" in url.hostname else url.hostname
        return "tcp", f"{host}:{url.port or 80}"
    raise RouteError(
        f"Target {target!r}: the proxy forwards to http:// and http+unix:// targets only "
        "(JupyterHub.internal_ssl is not supported)"
    )


class RouteTable:
    """The table's files. One writer (the hub); every change is atomic for the reader (Caddy).

    ``group``: the gid allowed to read the table (the proxy's group), or None in tests. Files are
    written by this process (root on a server): directories ``02750`` and files ``0640``, group ``group``
    (inherited through the setgid directories); nobody else may look.
    """

    def __init__(self, root: str, depth: int, group: int | None = None):
        self.root = root
        self.depth = depth
        self.group = group

    _root_checked = False

    def _mkdir(self, path, repair=False):
        try:
            os.mkdir(path)
        except FileExistsError:
            if not repair:
                return
        # mkdir's mode is filtered by the hub's umask (0077); the proxy needs r-x.
        if self.group is not None:
            os.chown(path, -1, self.group)
        os.chmod(path, 0o2750)

    def _directory(self, routespec, create):
        path = self.root
        if create and not self._root_checked:
            os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
            self._mkdir(path, repair=True)  # owner and mode checked once per process
            self._root_checked = True
        for name in segments(routespec, self.depth):
            path = os.path.join(path, name)
            if create:
                self._mkdir(path)
        return path

    def add(self, routespec: str, target: str, data: dict) -> None:
        """Point routespec at target. Requests see the old target or the new one, never neither."""
        kind, address = parse_target(target)
        directory = self._directory(routespec, create=True)
        tmp = os.path.join(directory, f".new-{secrets.token_hex(4)}")
        meta = json.dumps({"routespec": routespec, "target": target, "data": data})
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
        os.fchmod(fd, 0o640)  # past the hub's umask
        with os.fdopen(fd, "w") as f:
            f.write(meta)
        if kind == "unix":
            link = tmp + ".sock"
            os.symlink(address, link)
            os.replace(link, os.path.join(directory, SOCKET_LINK))
            name = ENTRY
        else:
            name = TCP_PREFIX + address
        os.replace(tmp, os.path.join(directory, name))
        # "@" sorts before "@tcp=...", so the unix entry is what Caddy finds while both exist; the old
        # entry goes only now, the "@" before its link: Caddy never finds an entry whose link is gone.
        keep = {name, SOCKET_LINK} if kind == "unix" else {name}
        stale = [n for n in os.listdir(directory) if n.startswith(ENTRY) and n not in keep]
        for n in sorted(stale, key=lambda n: n == SOCKET_LINK):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(directory, n))

    def delete(self, routespec: str) -> bool:
        """Remove routespec's entry (and directories left empty). False if there was none."""
        directory = self._directory(routespec, create=False)
        try:
            names = [n for n in os.listdir(directory) if n.startswith(ENTRY)]
        except FileNotFoundError:
            return False
        # The entry before the socket link, so Caddy never finds an entry without its link.
        for n in sorted(names, key=lambda n: n == SOCKET_LINK):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(directory, n))
        while directory != self.root:
            try:
                os.rmdir(directory)
            except OSError:  # not empty: a deeper route lives below
                break
            directory = os.path.dirname(directory)
        return any(n != SOCKET_LINK for n in names)

    def routes(self) -> dict[str, dict]:
        """{routespec: {"routespec", "target", "data"}} of every entry."""
        found = {}
        for directory, _, files in os.walk(self.root):
            for n in files:
                if n == ENTRY or n.startswith(TCP_PREFIX):
                    with contextlib.suppress(FileNotFoundError, ValueError, KeyError):
                        with open(os.path.join(directory, n)) as f:
                            info = json.load(f)
                        found[info["routespec"]] = {
                            "routespec": info["routespec"],
                            "target": info["target"],
                            "data": info.get("data") or {},
                        }
        return found
