"""`tljh status`: is everything up, what is the config's state, which certificates are served."""

import os
import time

import requests

from tljh.install import conda_requests, migrate_tljh
from tljh.proxy import certificates
from tljh.proxy.route_table import RouteTable, default_depth
from tljh.settings.config_file import ConfigFileError
from tljh.settings.effective import load_settings
from tljh.settings.values import memory_to_bytes
from tljh.system import paths, systemd
from tljh.system.paths import HUB_UNIT, PROXY_ADMIN_UNIT, PROXY_UNIT


def hub_version(api_url):
    try:
        response = requests.get(api_url, timeout=5)
        response.raise_for_status()
        return response.json().get("version")
    except (requests.RequestException, ValueError):
        return None


def proxy_routes(base_url):
    """The routes the hub gave the proxy (the route table), or None if there is no table yet."""
    try:
        return RouteTable(paths.ROUTES_DIR, default_depth(base_url)).routes() if os.path.isdir(paths.ROUTES_DIR) else None
    except OSError:
        return None


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

    for unit in (HUB_UNIT, PROXY_ADMIN_UNIT, PROXY_UNIT):
        active = systemd.is_active(unit)
        healthy &= active
        lines.append(f"{unit}: {'active' if active else 'NOT RUNNING (journalctl -u ' + unit + ')'}")

    version = hub_version(settings.hub_api_url)
    healthy &= version is not None
    lines.append("hub: " + (f"JupyterHub {version} answering on {paths.HUB_HOST}:{paths.HUB_PORT}" if version else "not answering"))

    routes = proxy_routes(settings.base_url)
    lines.append("routes: " + ("no route table yet (the hub writes it)" if routes is None
                               else f"{len(routes)} in {paths.ROUTES_DIR}"))
    healthy &= routes is not None

    from tljh.cli import capacity

    lines.append("capacity: " + capacity.measure(limit=memory_to_bytes(config["limits"]["memory"])).describe())

    line, conda_ok = conda_requests.status_line()
    if line:
        lines.append(line)
    healthy &= conda_ok

    line = migrate_tljh.status_line()
    if line:
        lines.append(line)

    https = config["https"]
    if not https["enabled"]:
        lines.append(f"https: disabled; serving http on port {config['http']['port']}")
    else:
        certs = []
        if https["tls"]["cert"]:
            certs.append(certificates.read_certificate(https["tls"]["cert"]))
        certs += certificates.managed_certificates(paths.PROXY_DATA_DIR)
        lines.append(f"https: enabled on port {https['port']}; " + (f"{len(certs)} certificate(s)" if certs else "no certificate yet"))
        lines += [f"  {c.describe()}" for c in certs]
        # ACME domains the proxy serves no certificate for, with the CA's last word on each (a day of log).
        from tljh.proxy import edge

        missing = edge.missing_certificates(config, since=time.time() - 86400, timeout=0)
        lines += [f"  {line}" for line in missing]
        healthy &= not missing
    return lines, healthy
