"""Caddy's JSON configuration, built by pure functions.

Two Caddy processes serve the hub:

- the EDGE (``caddy.service``) listens on the public ports, terminates TLS and
  reverse-proxies every request to the router over a root-only unix socket,
  opening a fresh connection per request (upstream keep-alive disabled);
- the ROUTER (``caddy-router.service``) holds the route table JupyterHub manages
  through :class:`tljh.proxy.caddy_proxy.CaddyProxy`.

Every Caddy config change reloads the whole process config and closes that
process's idle client keep-alive connections.  The router's only client is the
edge, which never keeps a connection idle, so spawns (router changes) are
invisible to browsers; the edge changes only on ``tljh-config reload proxy``.

Nothing here talks to Caddy: these functions turn our settings into dicts
(unit-tested by comparing dicts); :mod:`tljh.proxy.caddy_admin` sends them.
"""

from urllib.parse import unquote, urlparse

# Sockets and files are system facts (tljh.system.paths); here they are only defaults of the builders.
from tljh.system.paths import EDGE_ADMIN_SOCKET, EDGE_DATA_DIR, ROUTER_ADMIN_SOCKET, ROUTER_HTTP_SOCKET

ROUTER_SERVER = "router"
EDGE_HTTP_SERVER = "tljh_http"
EDGE_HTTPS_SERVER = "tljh_https"

# Key of the vars handler holding a route's JupyterHub metadata.
ROUTE_VARS_KEY = "tljh_route"
# The matched route puts its upstream (host:port) here for the shared reverse_proxy.
UPSTREAM_VAR = "tljh_upstream"
ROUTE_GROUP = "tljh_routes"
CATCH_ALL_ID = "tljh_hub_catch_all"
PROXY_ID = "tljh_proxy"
# Routes after the JupyterHub routes: the catch-all and the shared proxy.
SKELETON_TAIL = 2

# Websockets and other hijacked streams survive config reloads this long.
DEFAULT_STREAM_CLOSE_DELAY = "24h"
DEFAULT_MAX_IDLE_CONNS_PER_HOST = 1024

LETSENCRYPT_DIRECTORY = "https://acme-v02.api.letsencrypt.org/directory"
LETSENCRYPT_STAGING_DIRECTORY = "https://acme-staging-v02.api.letsencrypt.org/directory"

# TLJH's traefik handled TLS with the same intent; timeouts are generous because
# uploads and downloads of notebooks can be slow, and streams are long-lived.
READ_HEADER_TIMEOUT = "30s"
IDLE_TIMEOUT = "5m"
DIAL_TIMEOUT = "5s"
# While the router restarts (systemd, upgrades), requests wait for it instead of failing.
EDGE_TRY_DURATION = "10s"
EDGE_TRY_INTERVAL = "20ms"
EDGE_RETRY_METHODS = ["GET", "HEAD", "OPTIONS", "POST", "PUT", "PATCH", "DELETE"]
EDGE_REQUEST_BUFFER = 65536


class CaddyConfigError(ValueError):
    """Our settings cannot be turned into a Caddy config (one-line reason)."""


def unix_listen(path, mode="0600"):
    """Caddy network address of a unix socket with file permissions."""
    return f"unix/{path}|{mode}"


# ---------------------------------------------------------------- router routes

_REGEX_SPECIAL = set("\\.+*?()|[]{}^$")


def _regex_escape(text):
    """Escape for Go's RE2: only metacharacters, so the pattern stays readable."""
    return "".join("\\" + c if c in _REGEX_SPECIAL else c for c in text)


def check_routespec(routespec):
    """Raise CaddyConfigError unless routespec is a JupyterHub path routespec."""
    if not isinstance(routespec, str) or not routespec.startswith("/"):
        raise CaddyConfigError(
            f"Routespec {routespec!r} is host-based (JupyterHub.subdomain_host): "
            "CaddyProxy supports only path routing; unset JupyterHub.subdomain_host"
        )
    if not routespec.endswith("/"):
        raise CaddyConfigError(f"Routespec {routespec!r} must end with '/'")


def path_pattern(routespec):
    """RE2 pattern matching the request paths a routespec covers.

    Caddy's ``path`` matcher is case-insensitive, so /user/Alice/ would catch
    /user/alice/; ``path_regexp`` is case-sensitive.  Caddy matches it against
    the unescaped, cleaned path, so the routespec is unescaped too.
    ``/user/alice/`` covers ``/user/alice`` and ``/user/alice/...``, not
    ``/user/alicex``.
    """
    check_routespec(routespec)
    prefix = unquote(routespec)[:-1]
    return "^" + _regex_escape(prefix) + "(?:/|$)"


def route_sort_key(routespec):
    """Longest routespec first (Caddy uses the first match), "/" last."""
    return (-len(unquote(routespec)), routespec)


def reverse_proxy_handler(dial, *, stream_close_delay=DEFAULT_STREAM_CLOSE_DELAY,
                          max_idle_conns_per_host=DEFAULT_MAX_IDLE_CONNS_PER_HOST):
    """A reverse_proxy handler for the router (keep-alive to upstreams).

    ``dial`` may be a placeholder: Caddy then pools connections per actual address.
    """
    return {
        "handler": "reverse_proxy",
        "upstreams": [{"dial": dial}],
        # Responses (event streams, progress) reach the browser as they come.
        "flush_interval": -1,
        # Config reloads must not close websockets (kernels).
        "stream_close_delay": stream_close_delay,
        "transport": {
            "protocol": "http",
            "dial_timeout": DIAL_TIMEOUT,
            "keep_alive": {"max_idle_conns_per_host": max_idle_conns_per_host},
        },
    }


def target_dial(target):
    """(dial address, path prefix) of a JupyterHub target URL like http://127.0.0.1:8888."""
    url = urlparse(target)
    if url.scheme != "http":
        raise CaddyConfigError(
            f"Target {target!r}: CaddyProxy supports http:// targets only "
            "(internal_ssl is not supported)"
        )
    if not url.hostname or url.query or url.fragment:
        raise CaddyConfigError(f"Target {target!r} is not a URL like http://host:port")
    port = url.port or 80
    host = url.hostname
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    return f"{host}:{port}", url.path.rstrip("/")


def route(routespec, target, data):
    """The router's Caddy route for a JupyterHub route.

    A route only selects the upstream: it sets ``{http.vars.tljh_upstream}``;
    one shared reverse_proxy (proxy_route) after the group forwards.  Caddy
    provisions every handler on every change, and one reverse_proxy per route
    made a change cost ~2-3x more at 500 routes.  All routes share a Caddy
    route group, so only the first match (longest routespec) runs.

    The JupyterHub metadata (routespec, target, data) lives in the same
    ``vars`` handler: Caddy rejects unknown fields anywhere else.
    """
    check_routespec(routespec)
    dial, target_path = target_dial(target)
    handle = [
        {
            "handler": "vars",
            ROUTE_VARS_KEY: {"routespec": routespec, "target": target, "data": data},
            UPSTREAM_VAR: dial,
        }
    ]
    if target_path:
        # like configurable-http-proxy: the target's path is prepended
        handle.append({"handler": "rewrite", "uri": target_path + "{http.request.uri}"})
    result = {"group": ROUTE_GROUP}
    if unquote(routespec) != "/":
        result["match"] = [{"path_regexp": {"pattern": path_pattern(routespec)}}]
    result["handle"] = handle
    return result


def route_info(caddy_route):
    """{routespec, target, data} stored in a route by route(), or None."""
    for handler in caddy_route.get("handle", []):
        if handler.get("handler") == "vars" and ROUTE_VARS_KEY in handler:
            info = handler[ROUTE_VARS_KEY]
            return {
                "routespec": info["routespec"],
                "target": info["target"],
                "data": info.get("data") or {},
            }
    return None


def catch_all_route(hub_url):
    """Last of the group: nothing else matched, so the hub (Caddy would answer 200, empty)."""
    dial, _ = target_dial(hub_url)
    return {"@id": CATCH_ALL_ID, "group": ROUTE_GROUP, "handle": [{"handler": "vars", UPSTREAM_VAR: dial}]}


def proxy_route(**proxy_options):
    """The one reverse_proxy, to whatever upstream the matched route chose."""
    return {
        "@id": PROXY_ID,
        "handle": [reverse_proxy_handler("{http.vars." + UPSTREAM_VAR + "}", **proxy_options)],
        "terminal": True,
    }


def is_catch_all(caddy_route):
    return caddy_route.get("@id") == CATCH_ALL_ID


def has_skeleton_tail(caddy_routes, hub_url=None, **proxy_options):
    """Do the routes end with the catch-all and the shared proxy (as router_routes makes them)?"""
    if not caddy_routes or len(caddy_routes) < SKELETON_TAIL:
        return False
    tail = caddy_routes[-SKELETON_TAIL:]
    if hub_url is None:
        return is_catch_all(tail[0]) and tail[1].get("@id") == PROXY_ID
    return tail == [catch_all_route(hub_url), proxy_route(**proxy_options)]


def sort_routes(caddy_routes):
    """JupyterHub routes only, longest routespec first."""
    managed = [r for r in caddy_routes if route_info(r) is not None]
    managed.sort(key=lambda r: route_sort_key(route_info(r)["routespec"]))
    return managed


def route_index(caddy_routes, routespec):
    """Position of routespec's route in a routes array, or None."""
    for i, r in enumerate(caddy_routes):
        info = route_info(r)
        if info is not None and info["routespec"] == routespec:
            return i
    return None


def insert_position(caddy_routes, routespec):
    """Where a new route for routespec goes in a router routes array (as router_routes makes it) so that it
    stays in route_sort_key order: before the first route that sorts after it, else before the skeleton tail."""
    key = route_sort_key(routespec)
    for i, r in enumerate(caddy_routes[:-SKELETON_TAIL]):
        info = route_info(r)
        if info is not None and route_sort_key(info["routespec"]) > key:
            return i
    return len(caddy_routes) - SKELETON_TAIL


def router_routes(hub_url, routes, **proxy_options):
    """The router's routes array: JupyterHub routes sorted, hub catch-all, shared proxy.

    ``routes`` is an iterable of Caddy routes made by route().
    """
    return sort_routes(list(routes)) + [catch_all_route(hub_url), proxy_route(**proxy_options)]


def error_routes(hub_url, base_url):
    """A failed upstream (502, 504...) shows the hub's error page, like CHP's error_target."""
    dial, _ = target_dial(hub_url)
    return [
        {
            "handle": [
                {
                    "handler": "rewrite",
                    "method": "GET",
                    "uri": base_url.rstrip("/") + "/hub/error/{http.error.status_code}",
                },
                reverse_proxy_handler(dial),
            ]
        }
    ]


def router_server(hub_url, base_url, routes, *, http_socket=ROUTER_HTTP_SOCKET, **proxy_options):
    return {
        "listen": [unix_listen(http_socket)],
        # The only peer is the edge, over a root-only socket: keep its
        # X-Forwarded-For/Proto/Host so the hub and servers see the real client and https.
        "trusted_proxies_unix": True,
        "automatic_https": {"disable": True},
        "routes": router_routes(hub_url, routes, **proxy_options),
        "errors": {"routes": error_routes(hub_url, base_url)},
    }


def router_config(hub_url, base_url, routes=(), *, admin_socket=ROUTER_ADMIN_SOCKET,
                  http_socket=ROUTER_HTTP_SOCKET, **proxy_options):
    """The router's whole config: admin socket, one server on a unix socket.

    ``routes`` are Caddy routes made by route() (kept, sorted).  The router is
    started with ``--resume``: Caddy persists every change (autosave) and
    restores it after a restart, so users stay reachable before the hub re-adds
    their routes.
    """
    if not base_url.startswith("/") or not base_url.endswith("/"):
        raise CaddyConfigError(f"base_url {base_url!r} must start and end with '/'")
    return {
        "admin": {"listen": unix_listen(admin_socket), "config": {"persist": True}},
        "apps": {
            "http": {
                "servers": {
                    ROUTER_SERVER: router_server(
                        hub_url, base_url, routes, http_socket=http_socket, **proxy_options
                    )
                }
            }
        },
    }


# ---------------------------------------------------------------- edge


def _get(config, dotted, default=None):
    value = config
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            return default
        value = value[part]
    return default if value is None else value


def _listen_address(address, port):
    if not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536:
        raise CaddyConfigError(f"Port {port!r} is not a TCP port number (1-65535)")
    address = address or ""
    if ":" in address and not address.startswith("["):
        address = f"[{address}]"  # IPv6 literal
    return f"{address}:{port}"


# The client address the hub sees (X-Forwarded-For). JupyterHub binds the login form's xsrf token to it: a
# client on this server that fetched the form over ::1 and posts it on a new connection over 127.0.0.1 (a
# script resolving "localhost" to both) was refused. Both are this machine: loopback clients are one address.
CLIENT_IP = "{tljh.client_ip}"


def client_ip_handler():
    """Sets CLIENT_IP from the connection's address: IPv6 loopback becomes 127.0.0.1, the rest is unchanged."""
    return {
        "handler": "map",
        "source": "{http.request.remote.host}",
        "destinations": [CLIENT_IP],
        "mappings": [{"input": "::1", "outputs": ["127.0.0.1"]}],
        "defaults": ["{http.request.remote.host}"],
    }


def edge_proxy_handler(router_socket=ROUTER_HTTP_SOCKET, stream_close_delay=DEFAULT_STREAM_CLOSE_DELAY):
    """Forward everything to the router, one fresh unix-socket connection per request.

    A router reload closes connections whose request it has not read yet
    (measured: a connection accepted by the outgoing config just before a
    route change gets EOF, no response).  The router never saw such a request,
    so the edge retries it, whatever the method: request bodies up to
    EDGE_REQUEST_BUFFER bytes are buffered so they can be sent again (larger
    ones cannot be replayed; Go then refuses the retry rather than send a
    short body).  While the router is down (restart), requests wait up to
    EDGE_TRY_DURATION for it; after that the edge answers 502 with a short page.
    """
    return {
        "handler": "reverse_proxy",
        "upstreams": [{"dial": f"unix/{router_socket}"}],
        "load_balancing": {
            "try_duration": EDGE_TRY_DURATION,
            "try_interval": EDGE_TRY_INTERVAL,
            "retry_match": [{"method": EDGE_RETRY_METHODS}],
        },
        "request_buffers": EDGE_REQUEST_BUFFER,
        # Replaces what Caddy would send (the connection's address; a client's own header is never trusted).
        "headers": {"request": {"set": {"X-Forwarded-For": [CLIENT_IP]}}},
        "flush_interval": -1,
        "stream_close_delay": stream_close_delay,
        "transport": {
            "protocol": "http",
            "dial_timeout": DIAL_TIMEOUT,
            # No idle connections to the router: a router reload can never race one.
            "keep_alive": {"enabled": False},
        },
    }


ROUTER_DOWN_PAGE = (
    "<!DOCTYPE html><html><head><meta charset=utf-8><title>JupyterHub is restarting</title></head>"
    "<body><h1>JupyterHub is restarting</h1><p>Please reload this page in a few seconds.</p></body></html>\n"
)


def router_down_route():
    """The edge's answer when the router does not answer (its error page, not Caddy's empty 502)."""
    return {
        "handle": [
            {
                "handler": "static_response",
                "status_code": "{http.error.status_code}",
                "headers": {"Content-Type": ["text/html; charset=utf-8"], "Retry-After": ["5"]},
                "body": ROUTER_DOWN_PAGE,
            }
        ]
    }


def redirect_to_https_route(https_port):
    host = "{http.request.host}" if https_port == 443 else "{http.request.host}:" + str(https_port)
    return {
        "handle": [
            {
                "handler": "static_response",
                "status_code": 308,
                "headers": {"Location": ["https://" + host + "{http.request.uri}"]},
            }
        ]
    }


def acme_issuer(config):
    """Caddy's ACME issuer from https.letsencrypt.* and https.acme.*.

    Challenges are answered by the edge's own servers on http.port (http-01)
    and https.port (tls-alpn-01); the ACME server must reach those ports.
    """
    email = _get(config, "https.letsencrypt.email", "")
    directory = _get(config, "https.acme.directory", "")
    if not directory:
        directory = (
            LETSENCRYPT_STAGING_DIRECTORY
            if _get(config, "https.letsencrypt.staging", False)
            else LETSENCRYPT_DIRECTORY
        )
    issuer = {"module": "acme", "ca": directory}
    http_port = _get(config, "http.port", 80)
    https_port = _get(config, "https.port", 443)
    challenges = {}
    if http_port != 80:
        challenges["http"] = {"alternate_port": http_port}
    if https_port != 443:
        challenges["tls-alpn"] = {"alternate_port": https_port}
    if challenges:
        issuer["challenges"] = challenges
    if email:
        issuer["email"] = email
    roots = _get(config, "https.acme.trusted_roots", [])
    if isinstance(roots, str):
        roots = [roots]
    if roots:
        issuer["trusted_roots_pem_files"] = list(roots)
    return issuer


def tls_app(config):
    """(tls app, TLS connection policies) for the HTTPS server."""
    cert = _get(config, "https.tls.cert", "")
    key = _get(config, "https.tls.key", "")
    domains = list(_get(config, "https.letsencrypt.domains", []))
    if cert or key:
        if not (cert and key):
            raise CaddyConfigError("https.tls.cert and https.tls.key must be set together")
        app = {"certificates": {"load_files": [{"certificate": cert, "key": key, "tags": ["tljh_manual"]}]}}
        policies = [{"certificate_selection": {"any_tag": ["tljh_manual"]}}]
        return app, policies
    if not domains:
        raise CaddyConfigError(
            "https.enabled is true but neither https.tls.cert/key nor https.letsencrypt.domains is set"
        )
    # The Let's Encrypt contact email is a schema rule (tljh.settings.schema): config.yaml is valid here.
    app = {
        "certificates": {"automate": domains},
        "automation": {"policies": [{"subjects": domains, "issuers": [acme_issuer(config)]}]},
    }
    return app, [{}]


def edge_config(config, *, admin_socket=EDGE_ADMIN_SOCKET, router_socket=ROUTER_HTTP_SOCKET,
                data_dir=EDGE_DATA_DIR):
    """The edge's whole config from the TLJH config dict (config.yaml).

    Keys: http.address/port, https.enabled, https.address/port,
    https.tls.cert/key, https.letsencrypt.email/domains/staging,
    https.acme.directory (any RFC 8555 directory URL, overrides Let's Encrypt)
    and https.acme.trusted_roots (PEM files trusted for that CA).
    """
    http_port = _get(config, "http.port", 80)
    https_port = _get(config, "https.port", 443)
    https = bool(_get(config, "https.enabled", False))
    proxy = edge_proxy_handler(router_socket)
    server_common = {
        "read_header_timeout": READ_HEADER_TIMEOUT,
        "idle_timeout": IDLE_TIMEOUT,
        "automatic_https": {"disable": True},
    }
    server_common["errors"] = {"routes": [router_down_route()]}
    servers = {
        EDGE_HTTP_SERVER: {
            "listen": [_listen_address(_get(config, "http.address", ""), http_port)],
            "routes": [redirect_to_https_route(https_port) if https else {"handle": [client_ip_handler(), proxy]}],
            **server_common,
        }
    }
    http_app = {"http_port": http_port, "https_port": https_port, "servers": servers}
    caddy = {
        "admin": {"listen": unix_listen(admin_socket), "config": {"persist": False}},
        "storage": {"module": "file_system", "root": data_dir},
        "apps": {"http": http_app},
    }
    if https:
        tls, policies = tls_app(config)
        servers[EDGE_HTTPS_SERVER] = {
            "listen": [_listen_address(_get(config, "https.address", ""), https_port)],
            "routes": [{"handle": [client_ip_handler(), proxy]}],
            "tls_connection_policies": policies,
            # h3 would need UDP open in firewalls; h1/h2 are predictable.
            "protocols": ["h1", "h2"],
            **server_common,
        }
        caddy["apps"]["tls"] = tls
    return caddy
