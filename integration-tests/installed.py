"""A fresh machine with this checkout installed by the real bootstrap, for module-scoped fixtures."""

import contextlib
import time

from machine import Machine

# The files the installer manages outside its environments: a rerun with nothing to change leaves them as they are.
MANAGED_FILES = (
    "/etc/systemd/system/jupyterhub.service /etc/systemd/system/caddy.service /etc/systemd/system/caddy-admin.socket "
    "/etc/systemd/system/tljh-backup.service /etc/systemd/system/tljh-backup.timer "
    "/etc/sudoers.d/jupyterhub-admins /etc/profile.d/tljh-user-environment.sh /etc/tmpfiles.d/tljh-sessions.conf "
    "/etc/ipython/ipython_kernel_config.py "
    "/etc/jupyter/jupyter_server_config.py "
    "/opt/tljh/config/config.yaml"
)


@contextlib.contextmanager
def installed_machine(os_name, *bootstrap_args, memory_max=None):
    """Boot ``os_name``, run bootstrap with ``bootstrap_args``; the machine has ``install_seconds``."""
    with Machine.boot(os_name, memory_max=memory_max) as m:
        m.copy_checkout()
        started = time.monotonic()
        result = m.install_tljh(*bootstrap_args, check=False)
        m.install_seconds = time.monotonic() - started
        assert result.returncode == 0, f"bootstrap failed:\n{result.stdout}\n{result.stderr}\n{m.diagnostics()}"
        yield m
