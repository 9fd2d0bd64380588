"""Users' servers listen on unix sockets that only their owner and the proxy can open.

Each Unix account gets a directory ``/run/tljh/servers/<unix name>/``: owner the account, group the
proxy's, mode ``02710``. The owner creates sockets in it; the proxy's group may only pass through it
(and, setgid, owns the sockets made in it); everyone else is refused at the directory. jupyter-server
binds ``server.sock`` (``server-<name>.sock`` for a named server) with mode ``0660``. So no other user
can connect to anyone's server, whatever they know about it, and servers have no TCP port at all.

JupyterHub then reaches the server at ``http+unix://<quoted socket path>`` (its readiness check and API
calls go over the socket), and the proxy gets that target for the server's route.
"""

import asyncio
import grp
import os
import pwd
import stat
from urllib.parse import quote

from traitlets import Unicode
from traitlets.config import LoggingConfigurable

from tljh.system.paths import PROXY_GROUP, SERVERS_DIR

SOCKET_MODE = "0660"


def socket_path(servers_dir, unix_name, server_name=""):
    name = f"server-{server_name}.sock" if server_name else "server.sock"
    return os.path.join(servers_dir, unix_name, name)


def socket_url(path):
    """JupyterHub's URL for a server on a unix socket."""
    return "http+unix://" + quote(path, safe="")


def _ensure_directory(path, uid, gid, mode):
    """Make path a real directory (not a symlink) with exactly this owner and mode."""
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        info = os.fstat(fd)
        if (info.st_uid, info.st_gid) != (uid, gid):
            os.fchown(fd, uid, gid)
        if stat.S_IMODE(info.st_mode) != mode:
            os.fchmod(fd, mode)
    finally:
        os.close(fd)


def prepare_directory(servers_dir, unix_name, proxy_group=PROXY_GROUP):
    """Create or repair the socket directory of a Unix account (root only)."""
    os.makedirs(os.path.dirname(servers_dir), mode=0o755, exist_ok=True)
    # Everyone passes through to their own directory; nobody lists who has one.
    _ensure_directory(servers_dir, 0, 0, 0o711)
    gid = grp.getgrnam(proxy_group).gr_gid if proxy_group else os.getgid()
    _ensure_directory(os.path.join(servers_dir, unix_name), pwd.getpwnam(unix_name).pw_uid, gid, 0o2710)


async def answers_http(path, http_path, timeout=5):
    """Does an HTTP server answer on the unix socket at path?"""
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_unix_connection(path), timeout)
    except (OSError, asyncio.TimeoutError):
        return False
    try:
        writer.write(f"GET {http_path} HTTP/1.0\r\nHost: localhost\r\n\r\n".encode())
        await writer.drain()
        status = await asyncio.wait_for(reader.readline(), timeout)
        return status.startswith(b"HTTP/")
    except (OSError, asyncio.TimeoutError):
        return False
    finally:
        writer.close()


class UnixSocketServer(LoggingConfigurable):
    """Spawner mixin (for systemdspawner subclasses): the server listens on its socket, not on a port.

    Put it before SystemdSpawner in the bases. ``start()`` returns the server's ``http+unix`` URL.
    (Configurable so that its traits are traits of the spawner class.)
    """

    servers_dir = Unicode(
        SERVERS_DIR,
        config=True,
        help="Directory of the per-account directories holding users' server sockets.",
    )

    proxy_group = Unicode(
        PROXY_GROUP,
        config=True,
        help="Unix group of the proxy: the only group that may connect to users' servers.",
    )

    @property
    def socket_path(self):
        return socket_path(self.servers_dir, self._expand_user_vars(self.username_template), self.name)

    def get_env(self):
        env = super().get_env()
        if self.server:
            # jupyter-server refuses --sock with any port but its default, and the singleuser
            # extension takes the port from this URL: it must be the socket's, without a port.
            env["JUPYTERHUB_SERVICE_URL"] = socket_url(self.socket_path) + self.server.base_url
        return env

    def get_args(self):
        return super().get_args() + [f"--sock={self.socket_path}", f"--ServerApp.sock_mode={SOCKET_MODE}"]

    async def start(self):
        await asyncio.to_thread(
            prepare_directory, self.servers_dir, self._expand_user_vars(self.username_template), self.proxy_group
        )
        await super().start()
        return socket_url(self.socket_path)
