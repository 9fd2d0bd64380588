"""Several Python environments, each one a venv built with uv and switched in atomically when complete.

The interface other parts use (see docs/explanation/environments.md):
:func:`environment_names` (config -> names), :func:`server_environment` (name -> what a server runs from),
:func:`collect_unused` (after a server stops).
"""

from ..settings.environments import environment_names
from .commands import collect_unused
from .serving import EnvironmentNotReady, ServerEnvironment, server_environment

__all__ = ["environment_names", "server_environment", "ServerEnvironment", "EnvironmentNotReady", "collect_unused"]
