"""TLJH's public module name for systemd (tljh.system.systemd), with TLJH's function names and arguments.

Plugins install and run their own units with these (``install_unit``, ``reload_daemon``,
``restart_service``, ``enable_service``, ``check_service_active``). Failures raise
``subprocess.CalledProcessError``, as TLJH's do.
"""

import os

from tljh.system.systemd import (  # noqa: F401 - this project's names, also public
    daemon_reload,
    enable,
    is_active,
    is_enabled,
    restart,
    stop,
    systemctl,
    write_unit,
)
from tljh.system.paths import UNIT_DIR


def reload_daemon():
    daemon_reload()


def install_unit(name, unit, path=UNIT_DIR):
    """Write the unit file ``name`` with content ``unit`` into ``path``."""
    write_unit(name, unit, unit_dir=path)


def uninstall_unit(name, path=UNIT_DIR):
    os.remove(os.path.join(path, name))


def start_service(name):
    systemctl("start", name)


def stop_service(name):
    stop(name)


def restart_service(name):
    restart(name)


def enable_service(name):
    enable(name)


def disable_service(name):
    systemctl("disable", name)


def check_service_active(name):
    return is_active(name)


def check_service_enabled(name):
    return is_enabled(name)
