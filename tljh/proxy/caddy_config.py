"""Caddy's JSON configuration for the one proxy process, built by pure functions.

One Caddy process (``caddy.service``) listens on the public ports, terminates TLS and sends each
request straight to where it belongs: a user's server (a unix socket), a service, or the hub. Which one
is decided per request from the route table directory (:mod:`tljh.proxy.route_table`), which the hub
changes without touching Caddy: this config changes only on ``tljh-config reload proxy``.

Nothing here talks to Caddy: these functions turn our settings into dicts (unit-tested by comparing
dicts); :mod:`tljh.proxy.edge` writes and applies them.
"""

from tljh.system.paths import PROXY_ADMIN_LISTEN, PROXY_DATA_DIR, ROUTES_DIR

from . import route_table

HTTP_SERVER = "tljh_http"
HTTPS_SERVER = "tljh_https"
TLS_MANUAL_TAG = "tljh_manual"

# Websockets and other hijacked streams survive `reload proxy` this long.
STREAM_CLOSE_DELAY = "24h"
# Caddy keeps 32 idle connections per upstream by default; many browsers on one server need more.
MAX_IDLE_CONNS_PER_HOST = 1024

LETSENCRYPT_DIRECTORY = "https://acme-v02.api.letsencrypt.org/directory"
LETSENCRYPT_STAGING_DIRECTORY = "https://acme-staging-v02.api.letsencrypt.org/directory"

# TLJH's traefik handled TLS with the same intent; timeouts are generous because
# uploads and downloads of notebooks can be slow, and streams are long-lived.
READ_HEADER_TIMEOUT = "30s"
IDLE_TIMEOUT = "5m"
DIAL_TIMEOUT = "5s"
# While the hub restarts (systemd, upgrades), requests for it wait instead of failing. Only failed
# dials are retried: the request was never sent, so any method is safe to send again.
HUB_TRY_DURATION = "10s"
HUB_TRY_INTERVAL = "100ms"

HUB_DOWN_PAGE = (
    "<!DOCTYPE html><html><head><meta charset=utf-8><title>JupyterHub is restarting</title></head>"
    "<body><h1>JupyterHub is restarting</h1><p>Please reload this page in a few seconds.</p></body></html>\n"
)


# The client address the hub sees (X-Forwarded-For). JupyterHub binds the login form's xsrf token to it: a
# client on this server that fetched the form over ::1 and posts it on a new connection over 127.0.0.1 (a
# script resolving "localhost" to both) was refused. Both are this machine: loopback clients are one address.
CLIENT_IP = "{tljh.client_ip}"


class CaddyConfigError(ValueError):
    """Our settings cannot be turned into a Caddy config (one-line reason)."""


def unix_listen(path, mode="0600"):
    """A Caddy listen address for a unix socket Caddy makes itself (tests; on a server systemd makes it)."""
    return f"unix/{path}|{mode}"


def reverse_proxy(dial, *, wait=False, status_code=None):
    """A reverse_proxy handler to one upstream (``dial`` may hold per-request placeholders).

    Keep-alive connections are pooled per actual address. ``wait``: retry a failed dial for
    HUB_TRY_DURATION. ``status_code``: answer with the upstream's body under this status.
    """
    handler = {
        "handler": "reverse_proxy",
        "upstreams": [{"dial": dial}],
        # Replaces what Caddy would send (the connection's address; a client's own header is never trusted).
        "headers": {"request": {"set": {"X-Forwarded-For": [CLIENT_IP]}}},
        # `reload proxy` must not close websockets (kernels).
        "stream_close_delay": STREAM_CLOSE_DELAY,
        "transport": {
            "protocol": "http",
            "dial_timeout": DIAL_TIMEOUT,
            "keep_alive": {"max_idle_conns_per_host": MAX_IDLE_CONNS_PER_HOST},
        },
    }
    if wait:
        handler["load_balancing"] = {"try_duration": HUB_TRY_DURATION, "try_interval": HUB_TRY_INTERVAL}
    if status_code:
        handler["handle_response"] = [
            {"routes": [{"handle": [{"handler": "copy_response", "status_code": status_code}]}]}
        ]
    return handler


def client_ip_handler():
    """Sets CLIENT_IP from the connection's address: IPv6 loopback becomes 127.0.0.1, the rest is unchanged."""
    return {
        "handler": "map",
        "source": "{http.request.remote.host}",
        "destinations": [CLIENT_IP],
        "mappings": [{"input": "::1", "outputs": ["127.0.0.1"]}],
        "defaults": ["{http.request.remote.host}"],
    }


def hub_dial(hub_url):
    """host:port of the hub (http://127.0.0.1:15001 -> 127.0.0.1:15001)."""
    kind, address = route_table.parse_target(hub_url)
    if kind != "tcp":
        raise CaddyConfigError(f"hub URL {hub_url!r}: the proxy reaches the hub over TCP")
    return address


def table_route(routes_dir, depth, hub):
    """Find the request's route in the table directory and proxy to its target."""
    tcp_address = "{http.regexp.tcp.1}"
    return {
        "match": [{"file": {"root": routes_dir, "try_files": route_table.candidates(depth),
                            "try_policy": "first_exist"}}],
        "handle": [{
            "handler": "subroute",
            "routes": [
                {
                    "match": [{"vars_regexp": {"{http.matchers.file.relative}": {
                        "name": "tcp", "pattern": "/" + route_table.TCP_PREFIX + "([^/]+)$"}}}],
                    "handle": [{
                        "handler": "subroute",
                        "routes": [
                            {"match": [{"vars": {tcp_address: [hub]}}],
                             "handle": [reverse_proxy(hub, wait=True)], "terminal": True},
                            {"handle": [reverse_proxy(tcp_address)]},
                        ],
                    }],
                    "terminal": True,
                },
                # the entry "@" is next to its socket link "@.sock"
                {"handle": [reverse_proxy("unix/{http.matchers.file.absolute}.sock")]},
            ],
        }],
        "terminal": True,
    }


def error_routes(hub, base_url):
    """What a browser gets when an upstream does not answer.

    The hub itself down (restarting): a short page asking to reload. Anything else (a user's server
    stopped or crashed): the hub's error page with status 503, which says "Your server appears to be
    down" and links to the hub — as JupyterHub's own proxy does.
    """
    return [
        {
            "match": [{"vars": {"{http.reverse_proxy.upstream.hostport}": [hub]}}],
            "handle": [{
                "handler": "static_response",
                "status_code": 503,
                "headers": {"Content-Type": ["text/html; charset=utf-8"], "Retry-After": ["5"]},
                "body": HUB_DOWN_PAGE,
            }],
            "terminal": True,
        },
        {
            "handle": [
                {"handler": "rewrite", "method": "GET", "uri": base_url + "hub/error/503"},
                reverse_proxy(hub, status_code=503),
            ]
        },
    ]


def proxy_routes(routes_dir, depth, hub):
    """The client's address, the route table, then the hub for whatever the table does not hold (as
    JupyterHub's default target)."""
    return [{"handle": [client_ip_handler()]}, table_route(routes_dir, depth, hub),
            {"handle": [reverse_proxy(hub, wait=True)]}]


# ---------------------------------------------------------------- settings -> servers


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

    Challenges are answered by the proxy's own servers on http.port (http-01)
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


def tls_app(config, manual_pem=None):
    """(tls app, TLS connection policies) for the HTTPS server.

    ``manual_pem``: (certificate PEM, key PEM) read from https.tls.cert/key by the caller (root). They are
    put in the config itself, so the proxy never needs to read the admin's files.
    """
    cert = _get(config, "https.tls.cert", "")
    key = _get(config, "https.tls.key", "")
    domains = list(_get(config, "https.letsencrypt.domains", []))
    if cert or key:
        if not (cert and key):
            raise CaddyConfigError("https.tls.cert and https.tls.key must be set together")
        if manual_pem is None:
            raise CaddyConfigError("https.tls.cert/key: the certificate files were not read")
        pem_cert, pem_key = manual_pem
        app = {"certificates": {"load_pem": [{"certificate": pem_cert, "key": pem_key, "tags": [TLS_MANUAL_TAG]}]}}
        policies = [{"certificate_selection": {"any_tag": [TLS_MANUAL_TAG]}}]
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


def proxy_config(config, *, hub_url, base_url, routes_dir=ROUTES_DIR, depth=None,
                 admin_listen=PROXY_ADMIN_LISTEN, data_dir=PROXY_DATA_DIR, manual_pem=None):
    """The proxy's whole config from the TLJH config dict (config.yaml, defaults filled).

    Keys: http.address/port, https.enabled, https.address/port, https.tls.cert/key (their PEM in
    ``manual_pem``), https.letsencrypt.email/domains/staging, https.acme.directory (any RFC 8555
    directory URL, overrides Let's Encrypt) and https.acme.trusted_roots (PEM files trusted for that CA).
    ``depth``: how many path segments the route table holds (default: enough for base_url's routes).
    """
    if not base_url.startswith("/") or not base_url.endswith("/"):
        raise CaddyConfigError(f"base_url {base_url!r} must start and end with '/'")
    hub = hub_dial(hub_url)
    depth = depth or route_table.default_depth(base_url)
    http_port = _get(config, "http.port", 80)
    https_port = _get(config, "https.port", 443)
    https = bool(_get(config, "https.enabled", False))
    server_common = {
        "read_header_timeout": READ_HEADER_TIMEOUT,
        "idle_timeout": IDLE_TIMEOUT,
        "automatic_https": {"disable": True},
        "errors": {"routes": error_routes(hub, base_url)},
    }
    routes = proxy_routes(routes_dir, depth, hub)
    servers = {
        HTTP_SERVER: {
            "listen": [_listen_address(_get(config, "http.address", ""), http_port)],
            "routes": [redirect_to_https_route(https_port)] if https else routes,
            **server_common,
        }
    }
    caddy = {
        # Route changes never reach Caddy; only `reload proxy` does, through this (root-only) socket.
        "admin": {"listen": admin_listen, "config": {"persist": False}},
        "storage": {"module": "file_system", "root": data_dir},
        "apps": {"http": {"http_port": http_port, "https_port": https_port, "servers": servers}},
    }
    if https:
        tls, policies = tls_app(config, manual_pem)
        servers[HTTPS_SERVER] = {
            "listen": [_listen_address(_get(config, "https.address", ""), https_port)],
            "routes": routes,
            "tls_connection_policies": policies,
            # h3 would need UDP open in firewalls; h1/h2 are predictable.
            "protocols": ["h1", "h2"],
            **server_common,
        }
        caddy["apps"]["tls"] = tls
    return caddy
