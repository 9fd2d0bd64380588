"""The names of the transient units an environment's builds run their sandboxed commands in (fetch, uv,
postBuild, the bytecode compile): "tljh-env-<kind>-<name>:<id>". One home for them: the builder starts and
stops them, the disk budget stops them and tells their mounts from running servers'."""

from __future__ import annotations

from ..system import sandbox

# The sandboxed commands of an environment's builds, each in units "tljh-env-<kind>-<name>:<id>".
UNIT_KINDS = ("fetch", "build", "postbuild", "bytecode")
PREFIX = "tljh-env-"


def unit(kind: str, name: str) -> str:
    """The base name of the units of ``kind`` (UNIT_KINDS, or "check" for tljh-config's resolve check)."""
    return f"{PREFIX}{kind}-{name}"


def stop_units(name: str) -> None:
    """Stop every sandboxed command of ``name``'s builds (a killed run's, a compile still running)."""
    sandbox.stop([unit(kind, name) for kind in UNIT_KINDS])
