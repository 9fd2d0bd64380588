"""TLJH's public module name for turning config.yaml into JupyterHub settings (tljh.hub.configurer).

Plugins import ``load_config``, ``apply_config`` and ``CONFIG_FILE`` from here (tljh-repo2docker, tljh-plasma).
"""

from tljh.hub.configurer import apply_config, load_config  # noqa: F401 - TLJH's public names
from tljh.system.paths import CONFIG_FILE, STATE_DIR  # noqa: F401 - TLJH's configurer imports them too
