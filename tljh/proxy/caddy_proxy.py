"""JupyterHub's proxy API on top of Caddy (the router process).

Enable with ``c.JupyterHub.proxy_class = "tljh.proxy.caddy_proxy.CaddyProxy"``.

systemd runs two Caddy processes (see :mod:`tljh.proxy.caddy_config`); this class
edits the ROUTER's route table through its root-only admin socket.  The route
table logic (format, ordering, metadata) lives in :mod:`tljh.proxy.caddy_config`;
this class holds the policy: one change at a time, guarded by Caddy's Etag,
no reload when nothing changes, the hub catch-all and error pages always in
place.
"""

import asyncio
import random

from jupyterhub.proxy import Proxy
from traitlets import Bool, Integer, Unicode, default

from tljh.system import paths

from . import caddy_config
from .caddy_admin import AsyncCaddyAdmin, CaddyAdminError, CaddyConfigChanged, CaddyNotRunning


class CaddyProxy(Proxy):
    """JupyterHub proxy implemented by a Caddy "router" process run by systemd."""

    should_start = Bool(
        False,
        help="""Whether the hub starts the proxy.

        False: systemd runs the router (caddy-router.service) and the edge
        (caddy.service); the hub only edits the router's routes.
        """,
    ).tag(config=True)

    admin_socket = Unicode(
        paths.ROUTER_ADMIN_SOCKET,
        help="""Unix socket of the router's Caddy admin API.

        Must be root-only: anyone who can connect to it controls the proxy.
        """,
    ).tag(config=True)

    http_socket = Unicode(
        paths.ROUTER_HTTP_SOCKET,
        help="""Unix socket the router serves HTTP on; the edge proxies to it.

        Used when CaddyProxy (re)writes the router's server definition.
        """,
    ).tag(config=True)

    server_name = Unicode(
        caddy_config.ROUTER_SERVER,
        help="Name of the server in the router's Caddy config (apps.http.servers.<name>).",
    ).tag(config=True)

    hub_url = Unicode(
        help="""Where requests no route matches go (and the hub's error pages).

        Defaults to the hub's own URL, e.g. http://127.0.0.1:15001.
        """,
    ).tag(config=True)

    @default("hub_url")
    def _default_hub_url(self):
        hub = self.hub or getattr(self.app, "hub", None)
        if hub is None:
            raise ValueError("CaddyProxy.hub_url is not set and no hub is known")
        return hub.host

    base_url = Unicode(
        help="JupyterHub's base URL (error pages live at <base_url>hub/error/<code>). Default: the hub's base_url.",
    ).tag(config=True)

    @default("base_url")
    def _default_base_url(self):
        return getattr(self.app, "base_url", None) or "/"

    stream_close_delay = Unicode(
        caddy_config.DEFAULT_STREAM_CLOSE_DELAY,
        help="""How long websockets and other streams survive a route change.

        Caddy reloads its whole config on every route change and would
        otherwise close every proxied websocket (every user's kernels).
        A Go duration, e.g. "24h".
        """,
    ).tag(config=True)

    max_idle_conns_per_host = Integer(
        caddy_config.DEFAULT_MAX_IDLE_CONNS_PER_HOST,
        help="""Idle keep-alive connections the router keeps to each user server.

        Caddy's default (32) costs throughput with many concurrent clients.
        """,
    ).tag(config=True)

    max_retries = Integer(
        20,
        help="How often a route change is retried when the config changed underneath (HTTP 412).",
    ).tag(config=True)

    admin_timeout = Integer(
        30,
        help="Seconds to wait for one request to the router's admin API.",
    ).tag(config=True)

    _skeleton_checked = False

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._lock = asyncio.Lock()

    @property
    def admin(self):
        return AsyncCaddyAdmin(self.admin_socket, timeout=self.admin_timeout)

    @property
    def _routes_path(self):
        return f"/config/apps/http/servers/{self.server_name}/routes"

    def _proxy_options(self):
        return {
            "stream_close_delay": self.stream_close_delay,
            "max_idle_conns_per_host": self.max_idle_conns_per_host,
        }

    def _desired_config(self, managed_routes):
        return caddy_config.router_config(
            self.hub_url,
            self.base_url,
            managed_routes,
            admin_socket=self.admin_socket,
            http_socket=self.http_socket,
            **self._proxy_options(),
        )

    # ------------------------------------------------------------ skeleton

    async def reconcile(self):
        """Make the router's config exactly the skeleton plus today's JupyterHub routes.

        Keeps every JupyterHub route (routes survive hub restarts and
        ``--resume`` restarts of the router), rebuilds them in today's format,
        re-sorts them, and restores the hub catch-all and error routes.  No
        reload when nothing differs.  Runs once per process before the first
        route operation, and again if the skeleton goes missing.
        """
        if self.host_routing:
            raise caddy_config.CaddyConfigError(
                "CaddyProxy supports only path routing: unset JupyterHub.subdomain_host"
            )
        async with self._lock:
            for attempt in range(self.max_retries):
                current, etag = await self.admin.get("/config/")
                routes = []
                if current:
                    server = (
                        current.get("apps", {}).get("http", {}).get("servers", {}).get(self.server_name, {})
                    )
                    routes = server.get("routes") or []
                # rebuilt from their metadata: routes written by an older version get today's shape
                infos = [caddy_config.route_info(r) for r in routes]
                desired = self._desired_config(
                    [caddy_config.route(i["routespec"], i["target"], i["data"]) for i in infos if i is not None]
                )
                if current == desired:
                    self._skeleton_checked = True
                    return False
                self.log.info("Writing the Caddy router's base config (hub catch-all, error pages)")
                try:
                    if current:
                        await self.admin.patch("/config/", desired, etag=etag)
                    else:
                        await self.admin.load(desired)
                except CaddyConfigChanged:
                    await self._backoff(attempt)
                    continue
                self._skeleton_checked = True
                return True
            raise RuntimeError("Caddy router config kept changing; gave up reconciling")

    async def _ensure_skeleton(self):
        if not self._skeleton_checked:
            await self.reconcile()

    async def _backoff(self, attempt):
        await asyncio.sleep(random.uniform(0, 0.01 * (attempt + 1)))

    async def _get_routes(self):
        """(routes array or None if the router has no such server, Etag)."""
        try:
            return await self.admin.get(self._routes_path)
        except CaddyNotRunning:
            raise
        except CaddyAdminError as e:
            if e.status in (400, 404):
                return None, None
            raise

    async def _read_routes(self):
        """(routes array, Etag), or (None, None) if the skeleton tail is missing (then reconcile)."""
        routes, etag = await self._get_routes()
        if not caddy_config.has_skeleton_tail(routes):
            return None, None
        return routes, etag

    # ------------------------------------------------------------ Proxy API

    async def _change(self, routespec, compute):
        """Apply one route change under the lock, retrying on 412.

        compute(routes, index) -> (method, index, value) or None for no change,
        where index is the position of routespec in routes (or None).
        """
        await self._ensure_skeleton()
        for attempt in range(self.max_retries):
            async with self._lock:
                routes, etag = await self._read_routes()
                if routes is None:
                    self._skeleton_checked = False
                else:
                    op = compute(routes, caddy_config.route_index(routes, routespec))
                    if op is None:
                        return False
                    method, position, value = op
                    path = f"{self._routes_path}/{position}"
                    try:
                        if method == "PUT":
                            await self.admin.put(path, value, etag=etag)
                        elif method == "PATCH":
                            await self.admin.patch(path, value, etag=etag)
                        else:
                            await self.admin.delete(path, etag=etag)
                        return True
                    except CaddyConfigChanged:
                        self.log.debug("Caddy config changed underneath; retrying %s", routespec)
            if routes is None:
                self.log.warning("Caddy router lost its base config; restoring it")
                await self.reconcile()
            else:
                await self._backoff(attempt)
        raise RuntimeError(f"Could not change Caddy route {routespec}: config kept changing")

    async def add_route(self, routespec, target, data):
        routespec = self.validate_routespec(routespec)
        new = caddy_config.route(routespec, target, data or {})

        def compute(routes, index):
            if index is not None:
                if routes[index] == new:
                    return None
                return ("PATCH", index, new)
            return ("PUT", caddy_config.insert_position(routes, routespec), new)

        if await self._change(routespec, compute):
            self.log.info("Caddy route %s -> %s", routespec, target)
        else:
            self.log.debug("Caddy route %s -> %s unchanged", routespec, target)

    async def delete_route(self, routespec):
        routespec = self.validate_routespec(routespec)

        def compute(routes, index):
            if index is None:
                return None
            return ("DELETE", index, None)

        if await self._change(routespec, compute):
            self.log.info("Removed Caddy route %s", routespec)

    async def get_all_routes(self):
        await self._ensure_skeleton()
        routes, _ = await self._get_routes()
        result = {}
        for r in routes or []:
            info = caddy_config.route_info(r)
            if info is not None:
                result[info["routespec"]] = info
        return result
