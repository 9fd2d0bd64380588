"""TLJH's public module name for systemd primitives (tljh.system.systemd)."""

from tljh.system.systemd import (  # noqa: F401 - TLJH's public names
    daemon_reload,
    enable,
    is_active,
    restart,
    stop,
    systemctl,
    write_unit,
)
