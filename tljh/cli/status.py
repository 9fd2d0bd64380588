"""`tljh status`: is everything up, what is the config's state, which certificates are served."""

import time

import requests

from tljh.install import conda_requests
from tljh.proxy import caddy_config, certificates
from tljh.proxy.caddy_admin import CaddyAdmin, CaddyAdminError
from tljh.settings.config_file import ConfigFileError
from tljh.settings.effective import load_settings
from tljh.system import paths, systemd
from tljh.system.paths import EDGE_UNIT, HUB_UNIT, ROUTER_UNIT


def hub_version(api_url):
    try:
        response = requests.get(api_url, timeout=5)
        response.raise_for_status()
        return response.json().get("version")
    except (requests.RequestException, ValueError):
        return None


def router_routes():
    try:
        routes, _ = CaddyAdmin(paths.ROUTER_ADMIN_SOCKET).get("/config/apps/http/servers/router/routes")
    except (CaddyAdminError, OSError):
        return None
    return [r for r in (routes or []) if caddy_config.route_info(r)]


def report():
    """(lines, healthy) for the whole installation."""
    lines, healthy = [], True
    try:
        settings = load_settings()
    except ConfigFileError as e:
        return [f"config: {e}"], False
    config = settings.config
    lines.append(
        f"config: {paths.CONFIG_FILE} "
        + ("valid" if not settings.errors else "INVALID: " + "; ".join(map(str, settings.errors)))
        + "".join(f" (warning: {p})" for p in settings.problems if p.severity == "warning")
    )
    healthy &= not settings.errors

    for unit in (HUB_UNIT, ROUTER_UNIT, EDGE_UNIT):
        active = systemd.is_active(unit)
        healthy &= active
        lines.append(f"{unit}: {'active' if active else 'NOT RUNNING (journalctl -u ' + unit + ')'}")

    version = hub_version(settings.hub_api_url)
    healthy &= version is not None
    lines.append("hub: " + (f"JupyterHub {version} answering on {paths.HUB_HOST}:{paths.HUB_PORT}" if version else "not answering"))

    routes = router_routes()
    lines.append("routes: " + ("router not answering" if routes is None else f"{len(routes)} in the router"))
    healthy &= routes is not None

    line, conda_ok = conda_requests.status_line()
    if line:
        lines.append(line)
    healthy &= conda_ok

    https = config["https"]
    if not https["enabled"]:
        lines.append(f"https: disabled; serving http on port {config['http']['port']}")
    else:
        certs = []
        if https["tls"]["cert"]:
            certs.append(certificates.read_certificate(https["tls"]["cert"]))
        certs += certificates.managed_certificates(paths.EDGE_DATA_DIR)
        lines.append(f"https: enabled on port {https['port']}; " + (f"{len(certs)} certificate(s)" if certs else "no certificate yet"))
        lines += [f"  {c.describe()}" for c in certs]
        # ACME domains the edge serves no certificate for, with the CA's last word on each (a day of log).
        from tljh.proxy import edge

        missing = edge.missing_certificates(config, since=time.time() - 86400, timeout=0)
        lines += [f"  {line}" for line in missing]
        healthy &= not missing
    return lines, healthy
