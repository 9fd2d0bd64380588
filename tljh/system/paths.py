"""Where everything lives on an installed server.

These paths are part of the public interface shared with The Littlest JupyterHub (TLJH):
admins, docs and plugins rely on them. TLJH_INSTALL_PREFIX moves the whole tree (tests use it).
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
# Copy of the last configuration the hub started with (root, 0600). Restored when a reload fails.
LAST_GOOD_FILE = os.path.join(STATE_DIR, "config.last-good.yaml")

# Caddy: certificates, ACME account and the generated configs are state (root-only).
CADDY_STATE_DIR = os.path.join(STATE_DIR, "caddy")

# Where the hub listens; only the proxy talks to it.
HUB_HOST = "127.0.0.1"
HUB_PORT = 15001

# Conda packages plugins ask for (tljh_extra_user_conda_packages) that are not PyPI projects: a prefix of their
# own, installed with py-rattler; their programs are linked into the user environment's bin/.
CONDA_PREFIX = os.path.join(INSTALL_PREFIX, "conda")
# What the last installer run could not install of those (root-only); `tljh status` reports it.
CONDA_REQUESTS_STATE = os.path.join(STATE_DIR, "conda-requests.json")
# uv's and rattler's download caches: root-only (both make world-writable lock files inside).
UV_CACHE_DIR = "/var/cache/tljh/uv"
RATTLER_CACHE_DIR = "/var/cache/tljh/rattler"
