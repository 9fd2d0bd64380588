"""`tljh status`: is everything up, what is the config's state, which certificates are served."""

import json
import time
import urllib.error
import urllib.request

from tljh.install import conda_requests
from tljh.install.installer import EDGE_UNIT, HUB_UNIT, ROUTER_UNIT
from tljh.proxy import caddy_config, certificates
from tljh.proxy.caddy_admin import CaddyAdmin, CaddyAdminError
from tljh.settings import config_file, schema
from tljh.system import paths, systemd


def hub_version(base_url):
    url = f"http://{paths.HUB_HOST}:{paths.HUB_PORT}{base_url}hub/api"
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return json.load(r).get("version")
    except (urllib.error.URLError, OSError, ValueError):
        return None


def router_routes():
    try:
        routes, _ = CaddyAdmin(caddy_config.ROUTER_ADMIN_SOCKET).get("/config/apps/http/servers/router/routes")
    except (CaddyAdminError, OSError):
        return None
    return [r for r in (routes or []) if caddy_config.route_info(r)]


def report():
    """(lines, healthy) for the whole installation."""
    lines, healthy = [], True
    try:
        raw = config_file.load_config(paths.CONFIG_FILE)
    except config_file.ConfigFileError as e:
        return [f"config: {e}"], False
    problems = schema.validate_config(raw)
    errors = schema.errors_only(problems)
    config = schema.effective_config(raw)
    lines.append(
        f"config: {paths.CONFIG_FILE} "
        + ("valid" if not errors else "INVALID: " + "; ".join(map(str, errors)))
        + "".join(f" (warning: {p})" for p in problems if p.severity == "warning")
    )
    healthy &= not errors

    for unit in (HUB_UNIT, ROUTER_UNIT, EDGE_UNIT):
        active = systemd.is_active(unit)
        healthy &= active
        lines.append(f"{unit}: {'active' if active else 'NOT RUNNING (journalctl -u ' + unit + ')'}")

    base_url = config["base_url"] if config["base_url"].endswith("/") else config["base_url"] + "/"
    version = hub_version(base_url)
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
        certs += certificates.managed_certificates(caddy_config.EDGE_DATA_DIR)
        lines.append(f"https: enabled on port {https['port']}; " + (f"{len(certs)} certificate(s)" if certs else "no certificate yet"))
        lines += [f"  {c.describe()}" for c in certs]
        # ACME domains the edge serves no certificate for, with the CA's last word on each (a day of log).
        from tljh.proxy import edge as proxy_service

        missing = proxy_service.missing_certificates(config, since=time.time() - 86400, timeout=0)
        lines += [f"  {line}" for line in missing]
        healthy &= not missing
    return lines, healthy
