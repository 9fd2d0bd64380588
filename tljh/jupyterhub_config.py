"""The configuration JupyterHub loads on an installed server (``jupyterhub -f <this file>``).

Order matters and is part of the contract: our defaults, then config.yaml, then plugins'
``tljh_custom_jupyterhub_config`` hooks, then ``/opt/tljh/config/jupyterhub_config.d/*.py`` last.
"""

import os
from glob import glob

from tljh.hub import accounts, configurer, database
from tljh.settings.config_file import load_raw
from tljh.system import paths
from tljh.plugins import get_plugin_manager

c = get_config()  # noqa: F821 - provided by traitlets when JupyterHub loads this file

c.JupyterHub.spawner_class = "tljh.hub.spawner.UserCreatingSpawner"
c.JupyterHub.proxy_class = "tljh.proxy.caddy_proxy.CaddyProxy"
# Users' servers are systemd units: they keep running while the hub restarts or upgrades.
c.JupyterHub.cleanup_servers = False
c.JupyterHub.hub_bind_url = f"http://{paths.HUB_HOST}:{paths.HUB_PORT}"
c.JupyterHub.db_url = "sqlite:///" + paths.HUB_DATABASE
c.JupyterHub.cookie_secret_file = paths.COOKIE_SECRET_FILE
c.FirstUseAuthenticator.dbm_path = paths.FIRSTUSE_PASSWORDS
database.tune_sqlite()
# Starts are paced by the spawner's line (hub.concurrent_starts), which keeps every pending start cheap:
# JupyterHub's own limit (100) would turn people away with "Too many users trying to log in" instead.
c.JupyterHub.concurrent_spawn_limit = 0

c.SystemdSpawner.extra_paths = [os.path.join(paths.USER_ENV_PREFIX, "bin")]
c.SystemdSpawner.default_shell = "/bin/bash"
c.SystemdSpawner.isolate_tmp = True
c.SystemdSpawner.isolate_devices = True
c.Spawner.cmd = [os.path.join(paths.USER_ENV_PREFIX, "bin", "jupyterhub-singleuser")]

configurer.apply_config(load_raw(paths.CONFIG_FILE), c)

get_plugin_manager().hook.tljh_custom_jupyterhub_config(c=c)

for snippet in sorted(glob(os.path.join(paths.JUPYTERHUB_CONFIG_D, "*.py"))):
    load_subconfig(snippet)  # noqa: F821 - provided by traitlets

# Last: it wraps whatever login hook the snippets set, and acts on the final admin and banned lists.
accounts.install(c)
