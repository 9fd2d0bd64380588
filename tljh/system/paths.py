"""Every fact about where things live on an installed server, and what they are called: one home for each.

Paths, state files, unit names, sockets, the sudoers drop-in. These are part of the public interface shared
with The Littlest JupyterHub (TLJH): admins, docs and plugins rely on them. TLJH_INSTALL_PREFIX moves the whole
tree under the prefix (tests use it), unit files included (they are templated from it); what lives in system
directories (/etc, /usr/bin, /run, /var) stays where systemd, sudo and the shell look for it.
"""

import os

INSTALL_PREFIX = os.environ.get("TLJH_INSTALL_PREFIX", "/opt/tljh")
HUB_ENV_PREFIX = os.path.join(INSTALL_PREFIX, "hub")
USER_ENV_PREFIX = os.path.join(INSTALL_PREFIX, "user")
STATE_DIR = os.path.join(INSTALL_PREFIX, "state")
CONFIG_DIR = os.path.join(INSTALL_PREFIX, "config")
CONFIG_FILE = os.path.join(CONFIG_DIR, "config.yaml")
JUPYTERHUB_CONFIG_D = os.path.join(CONFIG_DIR, "jupyterhub_config.d")
INSTALLER_LOG = os.path.join(INSTALL_PREFIX, "installer.log")

# The hub's own state (root-only, in STATE_DIR).
HUB_DATABASE = os.path.join(STATE_DIR, "jupyterhub.sqlite")
HUB_DATABASE_BACKUP_DIR = os.path.join(STATE_DIR, "backups")
COOKIE_SECRET_FILE = os.path.join(STATE_DIR, "jupyterhub_cookie_secret")
FIRSTUSE_PASSWORDS = os.path.join(STATE_DIR, "passwords.dbm")
# Copy of the last configuration the hub started with (root, 0600). Restored when a reload fails.
LAST_GOOD_FILE = os.path.join(STATE_DIR, "config.last-good.yaml")

# What the installer last (re)started or checked each part with; a rerun restarts only what differs.
HUB_FINGERPRINT = os.path.join(STATE_DIR, "hub.fingerprint")
HUB_DATABASE_FINGERPRINT = os.path.join(STATE_DIR, "hub-database.fingerprint")
EDGE_CONFIG_FINGERPRINT = os.path.join(STATE_DIR, "edge-config.fingerprint")
EDGE_UNIT_FINGERPRINT = os.path.join(STATE_DIR, "caddy.service.fingerprint")
ROUTER_UNIT_FINGERPRINT = os.path.join(STATE_DIR, "caddy-router.service.fingerprint")
# Earlier releases kept one fingerprint for both proxies; the installer removes it.
OLD_PROXY_FINGERPRINT = os.path.join(STATE_DIR, "caddy.fingerprint")

# Caddy: certificates, ACME account and the generated configs are state (root-only).
CADDY_STATE_DIR = os.path.join(STATE_DIR, "caddy")
EDGE_CONFIG_FILE = os.path.join(CADDY_STATE_DIR, "edge.json")
ROUTER_CONFIG_FILE = os.path.join(CADDY_STATE_DIR, "router.json")
# Certificates, ACME account keys and OCSP staples (Caddy's "storage").
EDGE_DATA_DIR = os.path.join(CADDY_STATE_DIR, "data")
# Where the proxies listen for their admin API and the router for the edge. Both directories are
# systemd RuntimeDirectory= (0700, root); anyone who reaches an admin socket controls that proxy.
EDGE_ADMIN_SOCKET = "/run/tljh-edge/admin.sock"
ROUTER_ADMIN_SOCKET = "/run/tljh-router/admin.sock"
ROUTER_HTTP_SOCKET = "/run/tljh-router/http.sock"

# Where the hub listens; only the proxy talks to it.
HUB_HOST = "127.0.0.1"
HUB_PORT = 15001

# Conda packages plugins ask for (tljh_extra_user_conda_packages) that are not PyPI projects: a prefix of their
# own, installed with py-rattler; their programs are linked into the user environment's bin/.
CONDA_PREFIX = os.path.join(INSTALL_PREFIX, "conda")
# What the last installer run could not install of those (root-only); `tljh status` reports it.
CONDA_REQUESTS_STATE = os.path.join(STATE_DIR, "conda-requests.json")

# systemd units the installer writes (from tljh/systemd-units/) and enables.
UNIT_DIR = "/etc/systemd/system"
HUB_UNIT = "jupyterhub.service"
EDGE_UNIT = "caddy.service"
ROUTER_UNIT = "caddy-router.service"
# The proxy's units: their memory and CPU are the proxy's (`tljh status`, `tljh loadtest`).
PROXY_UNITS = (EDGE_UNIT, ROUTER_UNIT)
# Users' servers run as units named after their Unix account (jupyter-<name>, tljh.system.users;
# named servers "jupyter-<name>:<server>"): what `tljh status` and `tljh loadtest` count as servers.
USER_SERVER_UNITS = "jupyter-*.service"

SUDOERS_FILE = "/etc/sudoers.d/jupyterhub-admins"
# JupyterLab terminals are login shells, and Debian's /etc/profile sets PATH anew (Ubuntu's, which TLJH knew,
# does not): without this, `python`, `pip` and plugins' conda programs are "command not found" in a terminal.
PROFILE_SCRIPT = "/etc/profile.d/tljh-user-environment.sh"
# The commands, linked into the hub environment's bin/.
COMMAND_DIR = "/usr/bin"
COMMANDS = ("tljh-config", "tljh")
# uv's and rattler's download caches: root-only (both make world-writable lock files inside).
CACHE_DIR = "/var/cache/tljh"
UV_CACHE_DIR = os.path.join(CACHE_DIR, "uv")
RATTLER_CACHE_DIR = os.path.join(CACHE_DIR, "rattler")
# `tljh uninstall` saves config and state here first.
UNINSTALL_BACKUP_DIR = "/var/backups"
