"""TLJH's public module name for turning config.yaml into JupyterHub settings (tljh.hub.configurer)."""

from tljh.hub.configurer import apply_config, load_config  # noqa: F401 - TLJH's public names
