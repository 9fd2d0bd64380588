"""JupyterHub's proxy API for this project's Caddy proxy.

Enable with ``c.JupyterHub.proxy_class = "tljh.proxy.caddy_proxy.CaddyProxy"``.

systemd runs the proxy (``caddy.service``); Caddy finds each request's route in a directory this class
writes (:mod:`tljh.proxy.route_table`). A route change never touches the Caddy process: nothing is
reloaded, no connection or websocket is closed, and a change costs a few file operations whatever the
size of the table. The directory belongs to the hub side, so routes survive restarts of the proxy and
of the hub; a reboot empties it (``/run``), together with users' servers.
"""

import asyncio
import grp

from jupyterhub.proxy import Proxy
from traitlets import Bool, Integer, Unicode, default

from tljh.system.paths import PROXY_GROUP, ROUTES_DIR

from .route_table import RouteError, RouteTable, default_depth


class CaddyProxy(Proxy):
    """JupyterHub proxy implemented by a Caddy process (run by systemd) and a route table directory."""

    should_start = Bool(
        False,
        help="""Whether the hub starts the proxy.

        False: systemd runs it (caddy.service); the hub only writes the route table.
        """,
    ).tag(config=True)

    routes_dir = Unicode(
        ROUTES_DIR,
        help="""Directory holding the route table, read by the proxy on every request.

        Must match the ``root`` of the file matcher in the proxy's config (tljh-config reload proxy
        writes both from the same constant).
        """,
    ).tag(config=True)

    proxy_group = Unicode(
        PROXY_GROUP,
        help="""Unix group of the proxy process: it may read the route table, nobody else.

        Empty: leave the group of the table's directories as it is (tests).
        """,
    ).tag(config=True)

    route_depth = Integer(
        help="""How many path segments the route table looks at.

        Default: the segments of base_url plus 3, enough for every route JupyterHub makes
        (``/user/<name>/<server>/``). The proxy's config uses the same rule; a deeper route is refused
        with a clear error.
        """,
    ).tag(config=True)

    @default("route_depth")
    def _default_route_depth(self):
        return default_depth(getattr(self.app, "base_url", None) or "/")

    _table = None

    @property
    def table(self):
        if self._table is None:
            gid = grp.getgrnam(self.proxy_group).gr_gid if self.proxy_group else None
            self._table = RouteTable(self.routes_dir, self.route_depth, gid)
        return self._table

    # A change is a handful of file operations on tmpfs (well under a millisecond): done in the event
    # loop, so changes apply in the order JupyterHub makes them. Listing the table walks it: a thread.

    async def add_route(self, routespec, target, data):
        routespec = self.validate_routespec(routespec)
        try:
            self.table.add(routespec, target, data or {})
        except RouteError as e:
            self.log.error("Proxy route %s -> %s refused: %s", routespec, target, e)
            raise
        self.log.info("Proxy route %s -> %s", routespec, target)

    async def delete_route(self, routespec):
        routespec = self.validate_routespec(routespec)
        if self.table.delete(routespec):
            self.log.info("Removed proxy route %s", routespec)

    async def get_all_routes(self):
        return await asyncio.to_thread(self.table.routes)
