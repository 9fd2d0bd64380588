"""What environment builds may use: config.yaml's ``builds`` section (schema in tljh/settings/environments.py),
read here into numbers, once, for the builder, tljh-config's checks and the hub's builds for users."""

from __future__ import annotations

from dataclasses import dataclass

from ..settings.values import memory_to_bytes
from ..system import paths, sandbox


@dataclass(frozen=True)
class BuildLimits:
    memory: int | None = None  # bytes, for each sandboxed command of a build
    seconds: int | None = None  # the whole build
    disk_budget: int | None = None  # bytes, everything under /opt/tljh/envs

    def for_one_build(self) -> sandbox.Limits:
        """The limits of the sandboxed commands of a build starting now (they share its time)."""
        return sandbox.Limits.starting_now(self.memory, self.seconds)


def from_config(config: dict) -> BuildLimits:
    """The limits of an effective config (defaults filled in: tljh.settings.effective)."""
    section = (config or {}).get("builds") or {}
    return BuildLimits(
        memory=memory_to_bytes(section.get("memory_limit")),
        seconds=section.get("time_limit"),
        disk_budget=memory_to_bytes(section.get("disk_budget")),
    )


def configured(config_path=None) -> BuildLimits:
    """The limits config.yaml sets now (for a builder made without them: the hub's, tljh-config's checks).
    A config.yaml that cannot be read (edited by hand into bad YAML) gives the defaults: builds still run."""
    from ..settings.config_file import ConfigFileError
    from ..settings.effective import effective_settings, load_settings

    try:
        return from_config(load_settings(config_path or paths.CONFIG_FILE).config)
    except ConfigFileError:
        return from_config(effective_settings({}).config)
