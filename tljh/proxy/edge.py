"""The proxy on this server (caddy.service): its config on disk and in the running process, and HTTPS
diagnostics.

- :func:`write_proxy_config` writes caddy.json (root-only; systemd hands it to the proxy when it starts).
- :func:`reload_proxy` applies config.yaml to the running proxy (``tljh-config reload proxy``) through its
  root-only admin socket: Caddy rolls back a config it cannot load, so on any failure the previous config
  keeps serving and caddy.json is unchanged. Routes are not in this config (tljh.proxy.route_table).
- :func:`https_preflight` and :func:`missing_certificates`: what keeps (or kept) the CA from issuing a
  certificate, said in one line each.

The settings come as :class:`tljh.settings.effective.Settings` (``.config``, ``.base_url``, ``.hub_url``).
"""

import json
import os
import re

from tljh.system import files, paths, systemd
from tljh.system.paths import PROXY_ADMIN_SOCKET, PROXY_CONFIG_FILE

from . import caddy_config
from .caddy_admin import CaddyAdmin, CaddyAdminError, CaddyNotRunning


class ProxyReloadError(Exception):
    """The proxy config was not applied; the message is a one-line reason."""


class ProxyNotRunningError(ProxyReloadError):
    """The proxy does not answer on its admin socket."""


_DOMAIN = re.compile(r"^(?=.{1,253}$)(?!-)[a-z0-9-]{1,63}(?<!-)(\.(?!-)[a-z0-9-]{1,63}(?<!-))*$", re.I)


def check_edge_settings(config):
    """Problems Caddy would only report later (or less clearly); raises ProxyReloadError.

    Values are checked by the schema already (config.yaml is valid); these are facts of this machine (files)
    and what Let's Encrypt accepts beyond the schema's syntax.
    """
    https = config.get("https") or {}
    if not https.get("enabled"):
        return
    tls = https.get("tls") or {}
    for key in ("cert", "key"):
        path = tls.get(key)
        if path and not os.path.isfile(path):
            raise ProxyReloadError(f"https.tls.{key}: {path} does not exist or is not a file")
        if path and not os.access(path, os.R_OK):
            raise ProxyReloadError(f"https.tls.{key}: {path} is not readable")
    le = https.get("letsencrypt") or {}
    if not (tls.get("cert") or tls.get("key")):
        for domain in le.get("domains") or []:
            if not isinstance(domain, str) or not _DOMAIN.match(domain):
                raise ProxyReloadError(f"https.letsencrypt.domains: {domain!r} is not a valid domain name")
    acme = https.get("acme") or {}
    roots = acme.get("trusted_roots") or []
    for root in [roots] if isinstance(roots, str) else roots:
        if not os.path.isfile(root):
            raise ProxyReloadError(f"https.acme.trusted_roots: {root} does not exist or is not a file")
        if not _public(root):
            raise ProxyReloadError(
                f"https.acme.trusted_roots: {root} is not readable by everyone, and the proxy ({paths.PROXY_USER}) "
                "reads it: a CA certificate is public, make it and its directories readable (e.g. chmod 644) "
                "outside homes and /opt/tljh"
            )


# Directories the proxy's sandbox hides whatever their permissions (caddy.service: ProtectHome=,
# InaccessiblePaths=).
_HIDDEN_FROM_PROXY = ("/home", "/root", "/run/user", paths.CONFIG_DIR, paths.STATE_DIR)


def _public(path):
    """Can any account read ``path``: o+r on it, o+x on each directory above, not in a hidden tree?"""
    path = os.path.realpath(path)
    if any(path == d or path.startswith(d.rstrip("/") + "/") for d in _HIDDEN_FROM_PROXY):
        return False
    if not os.stat(path).st_mode & 0o004:
        return False
    directory = os.path.dirname(path)
    while True:
        if not os.stat(directory).st_mode & 0o001:
            return False
        if directory == "/":
            return True
        directory = os.path.dirname(directory)


def _manual_pem(config):
    """(certificate, key) PEM text of https.tls.cert/key, read here (root): the proxy cannot read them."""
    tls = (config.get("https") or {}).get("tls") or {}
    if not (config.get("https") or {}).get("enabled") or not (tls.get("cert") and tls.get("key")):
        return None
    try:
        with open(tls["cert"]) as c, open(tls["key"]) as k:
            return c.read(), k.read()
    except (OSError, UnicodeDecodeError) as e:
        raise ProxyReloadError(f"https.tls: cannot read {e.filename}: {e.strerror or e}") from e


def build_proxy_config(settings, **kwargs):
    """caddy_config.proxy_config() for these settings, our errors turned into ProxyReloadError."""
    config = settings.config
    check_edge_settings(config)
    try:
        return caddy_config.proxy_config(config, hub_url=settings.hub_url, base_url=settings.base_url,
                                         manual_pem=_manual_pem(config), **kwargs)
    except caddy_config.CaddyConfigError as e:
        raise ProxyReloadError(str(e)) from e


def write_proxy_config(settings, path=PROXY_CONFIG_FILE, **kwargs):
    """Write caddy.json (0600, root) for these settings; returns the path."""
    files.write_json(path, build_proxy_config(settings, **kwargs))
    return path


def reload_proxy(settings, admin_socket=PROXY_ADMIN_SOCKET, path=PROXY_CONFIG_FILE, **kwargs):
    """Apply the settings to the running proxy, then save them as caddy.json.

    Raises ProxyReloadError (ProxyNotRunningError if the proxy is down) with a one-line reason; then the
    running proxy and caddy.json are unchanged. Open websockets are kept (Caddy's stream_close_delay).
    """
    caddy = build_proxy_config(settings, **kwargs)
    try:
        CaddyAdmin(admin_socket).load(caddy)
    except CaddyNotRunning as e:
        raise ProxyNotRunningError(
            f"the proxy is not running ({e}); start it with: systemctl start {paths.PROXY_UNIT}"
        ) from e
    except CaddyAdminError as e:
        raise ProxyReloadError(f"Caddy refused the new config, previous config kept: {e}") from e
    files.write_json(path, caddy)


# ---------------------------------------------------------------- HTTPS pre-flight
# (what certificates the proxy holds: tljh.proxy.certificates)


def _port_owner(port):
    """Name of the process listening on TCP port (None: free; "?": unknown), from `ss`."""
    import subprocess

    try:
        out = subprocess.run(["ss", "-Hltnp", f"sport = :{port}"], capture_output=True, text=True,
                             timeout=5).stdout
    except (OSError, subprocess.SubprocessError):
        return "?"
    if not out.strip():
        return None
    match = re.search(r'users:\(\("([^"]+)"', out)
    return match.group(1) if match else "?"


def _local_addresses():
    import subprocess

    try:
        out = subprocess.run(["ip", "-j", "addr"], capture_output=True, text=True, timeout=5).stdout
        return {a["local"] for iface in json.loads(out) for a in iface.get("addr_info", [])}
    except (OSError, ValueError, subprocess.SubprocessError):
        return set()


def https_preflight(config, resolve=None, port_owner=_port_owner, local_addresses=_local_addresses):
    """What would stop Let's Encrypt from issuing, one line each ([] = nothing found).

    Checks that each domain resolves, whether it resolves to an address of this
    machine (not an error behind NAT or port forwarding), and that no program
    other than Caddy holds http.port / https.port.  A firewall blocking the CA
    cannot be seen from inside; the HTTPS how-to covers it.
    """
    import socket

    resolve = resolve or (lambda name: {ai[4][0] for ai in socket.getaddrinfo(name, None)})
    problems = []
    https = config.get("https") or {}
    ports = [("http.port", (config.get("http") or {}).get("port", 80))]
    if https.get("enabled"):
        ports.append(("https.port", https.get("port", 443)))
    for key, port in ports:
        owner = port_owner(port)
        if owner and owner != "caddy":
            problems.append(f"{key} {port} is in use by another program ({owner}); stop it or choose another port")
    le = https.get("letsencrypt") or {}
    if https.get("enabled") and not (https.get("tls") or {}).get("cert"):
        local = local_addresses()
        for domain in le.get("domains") or []:
            try:
                addresses = resolve(domain)
            except OSError as e:
                problems.append(f"{domain} does not resolve ({e}); add a DNS A/AAAA record pointing to this machine")
                continue
            if local and not addresses & local:
                problems.append(
                    f"{domain} resolves to {', '.join(sorted(addresses))}, not an address of this machine "
                    "(fine only if that address forwards ports 80/443 here)"
                )
    return problems


def served_certificate(domain, port, host="127.0.0.1", timeout=3):
    """The certificate the proxy serves to a browser asking for ``domain`` (SNI); None if it serves none."""
    import socket
    import ssl

    from . import certificates  # imported when needed: cryptography is slow to import

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # what is served is the question, not whether we trust it yet
    try:
        with socket.create_connection((host, port), timeout=timeout) as raw:
            with context.wrap_socket(raw, server_hostname=domain) as tls:
                der = tls.getpeercert(binary_form=True)
    except (OSError, ssl.SSLError):
        return None
    return certificates.from_der(der) if der else None


def _caddy_log_since(since):
    return systemd.journal_since(paths.PROXY_UNIT, since)


def missing_certificates(config, since, timeout, served=served_certificate, log_since=_caddy_log_since, poll=0.5):
    """After a reload: wait up to ``timeout`` s until the proxy serves a certificate for every ACME domain.

    Returns one line per domain still without one, with the CA's reason from Caddy's log (logged since
    ``since``, a time.time()): the CA is the only one that sees whether this server is reachable from
    the internet, so a firewall shows up here, not in the pre-flight.
    """
    import time

    from . import certificates

    https = config.get("https") or {}
    if not https.get("enabled") or (https.get("tls") or {}).get("cert"):
        return []
    domains = list((https.get("letsencrypt") or {}).get("domains") or [])
    port = https.get("port", 443)
    started = time.monotonic()
    while True:
        missing = [d for d in domains if not ((cert := served(d, port)) and certificates.covers(cert, d))]
        if not missing or time.monotonic() - started >= timeout:
            break
        time.sleep(poll)
    if not missing:
        return []
    problems = certificates.acme_problems(log_since(since))
    return [certificates.explain_missing(d, problems.get(d), timeout) for d in missing]

