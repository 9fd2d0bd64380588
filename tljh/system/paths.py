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
# Which Unix account belongs to which hub user, and what the hub did to accounts and groups (SQLite, 0600).
UNIX_ACCOUNTS_DB = os.path.join(STATE_DIR, "unix-accounts.sqlite")
# Copy of the last configuration the hub started with (root, 0600). Restored when a reload fails.
LAST_GOOD_FILE = os.path.join(STATE_DIR, "config.last-good.yaml")

# What the installer last (re)started or checked each part with; a rerun restarts only what differs.
HUB_FINGERPRINT = os.path.join(STATE_DIR, "hub.fingerprint")
HUB_DATABASE_FINGERPRINT = os.path.join(STATE_DIR, "hub-database.fingerprint")
PROXY_CONFIG_FINGERPRINT = os.path.join(STATE_DIR, "proxy-config.fingerprint")
PROXY_UNIT_FINGERPRINT = os.path.join(STATE_DIR, "caddy.service.fingerprint")

# The proxy: one Caddy process (caddy.service) running as its own system user, in its own group.
PROXY_USER = "tljh-proxy"
PROXY_GROUP = "tljh-proxy"
# Its config, generated from config.yaml; root-only (it may hold a manual TLS key): systemd hands it over.
CADDY_STATE_DIR = os.path.join(STATE_DIR, "caddy")
PROXY_CONFIG_FILE = os.path.join(CADDY_STATE_DIR, "caddy.json")
# Certificates, ACME account keys and OCSP staples (Caddy's "storage"): the proxy's own StateDirectory=.
PROXY_STATE_DIRECTORY = "tljh-proxy"
PROXY_DATA_DIR = os.path.join("/var/lib", PROXY_STATE_DIRECTORY)
# Made at run time (tmpfs: a reboot empties it, as it stops users' servers).
RUNTIME_DIR = "/run/tljh"
# The route table: written by the hub (root), read by the proxy on every request (tljh.proxy.route_table).
ROUTES_DIR = os.path.join(RUNTIME_DIR, "routes")
# Users' servers listen on unix sockets in <SERVERS_DIR>/<unix name>/ (tljh.hub.server_sockets).
SERVERS_DIR = os.path.join(RUNTIME_DIR, "servers")
# The hub's own hard link to each server's socket, made once it checked the socket is its owner's; the hub
# and the proxy connect only through it (a user may replace what is in their own directory afterwards).
SERVER_LINKS_DIR = os.path.join(RUNTIME_DIR, "server-links")
# The proxy's admin API: made by systemd (caddy-admin.socket, root-only) and handed to Caddy as its first
# file descriptor; anyone who can connect to it controls the proxy.
PROXY_ADMIN_SOCKET = os.path.join(RUNTIME_DIR, "proxy-admin.sock")
PROXY_ADMIN_LISTEN = "fd/3"

# Left by earlier releases, which ran two Caddy processes (an edge and a router); the installer removes them.
OLD_ROUTER_UNIT = "caddy-router.service"
OLD_PROXY_STATE = tuple(
    os.path.join(CADDY_STATE_DIR, name)
    for name in ("edge.json", "router.json", "edge-config", "router-config", "router-data")
)
OLD_PROXY_DATA_DIR = os.path.join(CADDY_STATE_DIR, "data")
OLD_PROXY_FINGERPRINTS = tuple(
    os.path.join(STATE_DIR, name)
    for name in ("caddy.fingerprint", "caddy-router.service.fingerprint", "edge-config.fingerprint")
)

# Where the hub listens; only the proxy talks to it.
HUB_HOST = "127.0.0.1"
HUB_PORT = 15001

# The hub's nftables table (family and name): users' ports answer only their owner (tljh.system.port_rules).
PORT_RULES_TABLE = "inet tljh"

# Conda packages plugins ask for (tljh_extra_user_conda_packages) that are not PyPI projects: a prefix of their
# own, installed with py-rattler; their programs are linked into the user environment's bin/.
CONDA_PREFIX = os.path.join(INSTALL_PREFIX, "conda")
# What the last installer run could not install of those (root-only); `tljh status` reports it.
CONDA_REQUESTS_STATE = os.path.join(STATE_DIR, "conda-requests.json")

# systemd units the installer writes (from tljh/systemd-units/) and enables.
UNIT_DIR = "/etc/systemd/system"
HUB_UNIT = "jupyterhub.service"
PROXY_UNIT = "caddy.service"
PROXY_ADMIN_UNIT = "caddy-admin.socket"
# The proxy's units: their memory and CPU are the proxy's (`tljh status`, `tljh loadtest`).
PROXY_UNITS = (PROXY_UNIT,)
# Users' servers run as units named after their Unix account (jupyter-<name>, tljh.system.users;
# named servers "jupyter-<name>:<server>"): what `tljh status` and `tljh loadtest` count as servers.
USER_SERVER_UNITS = "jupyter-*.service"

SUDOERS_FILE = "/etc/sudoers.d/jupyterhub-admins"
# JupyterLab terminals are login shells, and Debian's /etc/profile sets PATH anew (Ubuntu's, which TLJH knew,
# does not): without this, `python`, `pip` and plugins' conda programs are "command not found" in a terminal.
PROFILE_SCRIPT = "/etc/profile.d/tljh-user-environment.sh"
# IPython kernels read it from every environment (a system config dir): it turns the kernel debugger off in users'
# servers unless the admin allows it (tljh.hub.isolation.KERNEL_CONFIG says why).
IPYTHON_KERNEL_CONFIG = "/etc/ipython/ipython_kernel_config.py"
# Jupyter servers of every environment read it (a system config dir): users' servers skip Python's final garbage
# collection when they stop (tljh.hub.server_extensions.SERVER_CONFIG says why).
JUPYTER_SERVER_CONFIG = "/etc/jupyter/jupyter_server_config.py"
# The commands, linked into the hub environment's bin/.
COMMAND_DIR = "/usr/bin"
COMMANDS = ("tljh-config", "tljh")
# uv's and rattler's download caches: root-only (both make world-writable lock files inside).
CACHE_DIR = "/var/cache/tljh"
UV_CACHE_DIR = os.path.join(CACHE_DIR, "uv")
RATTLER_CACHE_DIR = os.path.join(CACHE_DIR, "rattler")

# Environments (tljh/environments): each one's current build is served from a stable path — TLJH's
# USER_ENV_PREFIX for "default", ENVIRONMENTS_DIR/<name> for the others (see environment_prefix).
ENVIRONMENTS_DIR = os.path.join(INSTALL_PREFIX, "envs")
# The builder user's workspace: builds in progress and the builds' own uv cache. One directory, because hard
# links from the cache into a build cannot cross the mount points of the build's sandbox.
BUILDER_DIR = os.path.join(ENVIRONMENTS_DIR, ".builder")
ENVIRONMENTS_UV_CACHE_DIR = os.path.join(BUILDER_DIR, "uv-cache")
# Builds replaced or removed, kept until no running server has them mounted (root only).
RETIRED_DIR = os.path.join(ENVIRONMENTS_DIR, ".retired")
ENVIRONMENT_STATE_DIR = os.path.join(STATE_DIR, "environments")
ENVIRONMENTS_LOCK = os.path.join(ENVIRONMENT_STATE_DIR, "build.lock")
# What --user-requirements-txt-url gave bootstrap: kept, as part of the default environment's spec.
BOOTSTRAP_REQUIREMENTS_FILE = os.path.join(ENVIRONMENT_STATE_DIR, "default-bootstrap-requirements.txt")
# The PyPI packages of plugins' conda requests (tljh.install.conda_requests), part of default's spec too.
PLUGIN_CONDA_REQUIREMENTS_FILE = os.path.join(ENVIRONMENT_STATE_DIR, "default-plugin-conda-requirements.txt")
# Users' builds of repositories (tljh.environments.user_builds): one usage record per build, whose mtime is
# when a server last started or stopped in it (removal of unused builds goes least recently used first).
REPOSITORY_BUILDS_STATE_DIR = os.path.join(ENVIRONMENT_STATE_DIR, "repository-builds")
# The system user that resolves and installs packages for environments (never root).
BUILDER_USER = "tljh-builder"


def environment_prefix(name: str) -> str:
    """Where environment ``name`` is served from: TLJH's /opt/tljh/user for ``default``."""
    return USER_ENV_PREFIX if name == "default" else os.path.join(ENVIRONMENTS_DIR, name)


# `tljh uninstall` saves config and state here first.
UNINSTALL_BACKUP_DIR = "/var/backups"

# Migration from The Littlest JupyterHub (TLJH): its conda user environment is moved here, never deleted
# without `tljh migrate --cleanup`; what was and was not carried over is recorded (root-only).
TLJH_OLD_USER_ENV = os.path.join(INSTALL_PREFIX, "user.tljh-conda")
TLJH_MIGRATION_STATE = os.path.join(STATE_DIR, "tljh-migration.json")
# TLJH's proxy: its unit, and its files in the state directory (kept for reference after the handover).
TRAEFIK_UNIT = "traefik.service"
TRAEFIK_FILES = ("traefik.toml", "rules", "acme.json", "traefik-api.secret")
# Per-session package layers (tljh.hub.session_installs): one directory per running server, removed when it
# stops; systemd-tmpfiles empties the directory at boot (the rule below).
SESSIONS_DIR = os.path.join(INSTALL_PREFIX, "sessions")
SESSIONS_TMPFILES = "/etc/tmpfiles.d/tljh-sessions.conf"
# Backups (`tljh backup` / `tljh restore`, tljh/install/backup.py). One backup or restore at a time (filelock);
# what the last backup did, for `tljh status`; where scheduled backups go unless backup.directory says otherwise.
BACKUP_LOCK = "/run/lock/tljh-backup.lock"
LAST_BACKUP_FILE = os.path.join(STATE_DIR, "last-backup.json")
DEFAULT_BACKUP_DIR = "/var/backups/tljh"
# A restore unpacks and checks the whole archive here (root-only, next to the state it replaces) before changing anything.
RESTORE_STAGING_PREFIX = os.path.join(STATE_DIR, "restore-")
# The daily timer: always installed; the service backs up only when backup.daily is true.
BACKUP_UNIT = "tljh-backup.service"
BACKUP_TIMER = "tljh-backup.timer"
# Where `tljh import z2jh` writes a manual certificate and key taken from chart values (https.tls.cert|key name them).
IMPORTED_TLS_DIR = os.path.join(STATE_DIR, "tls")
