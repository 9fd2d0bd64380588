"""Users' servers listen on unix sockets that only their owner and the proxy can open.

Each Unix account gets a directory ``/run/tljh/servers/<unix name>/``: owner the account, group the
proxy's, mode ``02710``. The owner creates sockets in it; the proxy's group may only pass through it
(and, setgid, owns the sockets made in it); everyone else is refused at the directory. jupyter-server
binds ``server.sock`` (``server-<name>.sock`` for a named server) with mode ``0660``. So no other user
can connect to anyone's server, whatever they know about it, and servers have no TCP port at all.

The owner may put anything in their own directory, a symlink to another user's socket included, and the
proxy may connect to every server. So neither the hub nor the proxy ever connects through that directory:
once the server has bound its socket, the hub (root) makes a hard link to it in
``/run/tljh/server-links/<unix name>/`` (root's, ``0750``, group the proxy's) — only after checking that
what it linked is a socket owned by the server's account — and JupyterHub reaches the server at
``http+unix://<quoted link path>`` (readiness check, API calls, and the proxy's route target). A link
names the socket itself, not a path, so what the user does in their directory later changes nothing.
"""

import asyncio
import grp
import os
import pwd
import secrets
import stat
import time
from urllib.parse import quote

from traitlets import Float, Unicode
from traitlets.config import LoggingConfigurable

from tljh.system.paths import PROXY_GROUP, SERVER_LINKS_DIR, SERVERS_DIR

SOCKET_MODE = "0660"

# While a server starts, how often to ask systemd whether its unit died (each ask is a systemctl process;
# asking at every readiness probe cost the hub ~10 % of its CPU per start, measured with py-spy).
UNIT_CHECK_INTERVAL = 1.0


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


def _group_id(proxy_group):
    return grp.getgrnam(proxy_group).gr_gid if proxy_group else os.getgid()


def prepare_directory(servers_dir, unix_name, proxy_group=PROXY_GROUP):
    """Create or repair the socket directory of a Unix account (root only)."""
    os.makedirs(os.path.dirname(servers_dir), mode=0o755, exist_ok=True)
    # Everyone passes through to their own directory; nobody lists who has one.
    _ensure_directory(servers_dir, 0, 0, 0o711)
    gid = _group_id(proxy_group)
    _ensure_directory(os.path.join(servers_dir, unix_name), pwd.getpwnam(unix_name).pw_uid, gid, 0o2710)


def remove_socket(servers_dir, unix_name, server_name=""):
    """Remove whatever is under the server's socket name in the account's directory (root only).

    jupyter-server leaves its socket file behind when it stops, and replaces it when it binds again: linked
    before the new server binds, that old socket would be the link, and nothing listens on it. Unlinking a
    name never follows a symlink, and the directory is opened without following one either.
    """
    try:
        fd = os.open(os.path.join(servers_dir, unix_name), os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return
    try:
        os.unlink(os.path.basename(socket_path("", unix_name, server_name)), dir_fd=fd)
    except FileNotFoundError:
        pass
    finally:
        os.close(fd)


def link_socket(servers_dir, links_dir, unix_name, server_name, uid, proxy_group=PROXY_GROUP):
    """Hard-link the server's socket into links_dir if it is a socket owned by uid (root only).

    Returns True once the link is in place; False while there is no such socket (not bound yet, or
    something else under its name). The check is made on the link itself, so swapping names in the user's
    directory between a look and the link cannot slip anything else in. Only the owner of a socket or
    root may hard-link it (fs.protected_hardlinks), so a socket owned by uid is one uid's processes bound.
    """
    name = os.path.basename(socket_path("", unix_name, server_name))
    try:
        src = os.open(os.path.join(servers_dir, unix_name), os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return False
    try:
        gid = _group_id(proxy_group)
        os.makedirs(os.path.dirname(links_dir), mode=0o755, exist_ok=True)
        _ensure_directory(links_dir, 0, gid, 0o750)
        _ensure_directory(os.path.join(links_dir, unix_name), 0, gid, 0o750)
        dst = os.open(os.path.join(links_dir, unix_name), os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        try:
            tmp = f".new-{secrets.token_hex(4)}"
            try:
                # follow_symlinks=False: a symlink is linked as itself (and refused below), never followed.
                os.link(name, tmp, src_dir_fd=src, dst_dir_fd=dst, follow_symlinks=False)
            except FileNotFoundError:
                return False
            info = os.stat(tmp, dir_fd=dst, follow_symlinks=False)
            if not stat.S_ISSOCK(info.st_mode) or info.st_uid != uid:
                os.unlink(tmp, dir_fd=dst)
                return False
            os.replace(tmp, name, src_dir_fd=dst, dst_dir_fd=dst)
            return True
        finally:
            os.close(dst)
    finally:
        os.close(src)


def unlink_socket(links_dir, unix_name, server_name):
    try:
        os.unlink(socket_path(links_dir, unix_name, server_name))
    except FileNotFoundError:
        pass


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

    Put it before SystemdSpawner in the bases. ``start()`` returns once the server has bound its socket
    and the hub has linked it (:func:`link_socket`), with the link's ``http+unix`` URL.
    (Configurable so that its traits are traits of the spawner class.)
    """

    servers_dir = Unicode(
        SERVERS_DIR,
        config=True,
        help="Directory of the per-account directories holding users' server sockets.",
    )

    server_links_dir = Unicode(
        SERVER_LINKS_DIR,
        config=True,
        help="""
        Directory of the hub's own links to users' server sockets (root's; the proxy's group may enter).

        The hub and the proxy connect to a server only through its link here, made once the hub has checked
        that the socket belongs to the server's account.
        """,
    )

    proxy_group = Unicode(
        PROXY_GROUP,
        config=True,
        help="Unix group of the proxy: the only group that may connect to users' servers.",
    )

    ready_poll_interval = Float(
        0.05,
        config=True,
        help="""
        Seconds between checks that a starting server answers HTTP.

        JupyterHub's own readiness check backs off exponentially and typically notices a started server
        up to a second late; the spawner checks often and returns once the server answers, so users
        wait for their server and not for the poll.
        """,
    )

    @property
    def _unix_name(self):
        return self._expand_user_vars(self.username_template)

    @property
    def socket_path(self):
        """Where the server binds its socket (in its owner's directory)."""
        return socket_path(self.servers_dir, self._unix_name, self.name)

    @property
    def link_path(self):
        """The hub's link to that socket: what the hub and the proxy connect to."""
        return socket_path(self.server_links_dir, self._unix_name, self.name)

    def get_env(self):
        env = super().get_env()
        if self.server:
            # jupyter-server refuses --sock with any port but its default, and the singleuser
            # extension takes the port from this URL: it must be the socket's, without a port.
            env["JUPYTERHUB_SERVICE_URL"] = socket_url(self.socket_path) + self.server.base_url
        return env

    def get_args(self):
        return super().get_args() + [f"--sock={self.socket_path}", f"--ServerApp.sock_mode={SOCKET_MODE}"]

    async def stopped_while_starting(self):
        """The sentence shown on the spawn page when the server exits before binding its socket."""
        return "Your server stopped while starting."

    async def wait_starting(self, ready):
        """Wait until ``await ready()`` is true, asking every ``ready_poll_interval`` seconds; False after
        ``http_timeout`` seconds. Whether the server stopped is asked only once a second (:meth:`poll`), and
        one that stopped raises :meth:`stopped_while_starting`'s sentence."""
        deadline = time.monotonic() + self.http_timeout
        next_unit_check = time.monotonic() + UNIT_CHECK_INTERVAL
        while not await ready():
            now = time.monotonic()
            if now >= deadline:
                return False
            if now >= next_unit_check:
                if await self.poll() is not None:
                    raise RuntimeError(await self.stopped_while_starting())
                next_unit_check = time.monotonic() + UNIT_CHECK_INTERVAL
            await asyncio.sleep(self.ready_poll_interval)
        return True

    async def start(self):
        unix_name = self._unix_name
        await asyncio.to_thread(unlink_socket, self.server_links_dir, unix_name, self.name)
        await asyncio.to_thread(prepare_directory, self.servers_dir, unix_name, self.proxy_group)
        await asyncio.to_thread(remove_socket, self.servers_dir, unix_name, self.name)
        await super().start()
        uid = pwd.getpwnam(unix_name).pw_uid

        def linked():
            return asyncio.to_thread(
                link_socket, self.servers_dir, self.server_links_dir, unix_name, self.name, uid, self.proxy_group
            )

        if not await self.wait_starting(linked):
            raise TimeoutError(
                f"Your server did not open its socket {self.socket_path} within {self.http_timeout} seconds."
            )
        return socket_url(self.link_path)

    async def remove_link(self):
        """Remove the hub's link to this server's socket (the server has stopped)."""
        await asyncio.to_thread(unlink_socket, self.server_links_dir, self._unix_name, self.name)

    async def stop(self, now=False):
        await super().stop(now=now)
        await self.remove_link()
