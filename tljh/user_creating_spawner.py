"""TLJH's public module name for the spawner (tljh.hub.spawner); plugins' jupyterhub_config.d snippets import it."""

from tljh.hub.spawner import UserCreatingSpawner  # noqa: F401 - TLJH's public name
