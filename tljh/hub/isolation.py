"""What keeps one user's server away from other users and from the machine: systemd properties and server flags.

Pure functions of the spawner's settings (unit-tested as dicts); the spawner adds them to each server's unit.
What each one is for, and what is not isolated, is docs/explanation/security.md.
"""

# Cloud providers' instance metadata services (AWS, GCP, Azure, DigitalOcean, Oracle: 169.254.169.254; AWS over
# IPv6: fd00:ec2::254; Alibaba: 100.100.100.200). They hand out the machine's cloud credentials to any process
# that asks.
CLOUD_METADATA_ADDRESSES = ("169.254.169.254", "fd00:ec2::254", "100.100.100.200")

# For every user's server. None of these takes anything a notebook, a terminal, pip or a kernel needs, and
# none implies no_new_privs (below).
_ALL_SERVERS = {
    "ProtectProc": "invisible",  # other users' processes are not even listed
    "ProtectControlGroups": "yes",
    "KeyringMode": "private",
}

# For servers of users who are not hub admins. An admin's terminal runs `sudo -E pip install`, `sudo apt
# install` and `sudo tljh-config`: sudo needs set-uid to work, and systemd sets no_new_privs (which disables
# set-uid) for a unit with User= and any seccomp-based setting — PrivateDevices= (systemdspawner's
# isolate_devices), SystemCallFilter=/Architectures=, RestrictAddressFamilies=, RestrictRealtime=,
# LockPersonality=, ProtectKernelModules=/Logs=/Tunables=, ProtectClock=, ProtectHostname= (each checked on
# Debian 12: sudo refuses with "no new privileges"). So admins' servers get none of them.
_NON_ADMIN_SERVERS = {
    "NoNewPrivileges": "yes",
    "CapabilityBoundingSet": "",
    "RestrictSUIDSGID": "yes",
    "ProtectSystem": "full",
    "ProtectKernelTunables": "yes",
    "ProtectKernelModules": "yes",
    "ProtectKernelLogs": "yes",
    "ProtectClock": "yes",
    "ProtectHostname": "yes",
    "LockPersonality": "yes",
    "RestrictRealtime": "yes",
    "SystemCallArchitectures": "native",
    "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6 AF_NETLINK",
    # Not @debug (py-spy, gdb and debuggers trace the user's own processes), nor @privileged/@resources
    # (chown of one's own files, setrlimit), which ordinary programs use.
    "SystemCallFilter": "~@clock @cpu-emulation @module @mount @obsolete @raw-io @reboot @swap",
    "SystemCallErrorNumber": "EPERM",
}
_ADMIN_SERVERS = {"PrivateDevices": "no"}  # overrides systemdspawner's isolate_devices, see above


def unit_properties(admin: bool, denied_addresses) -> dict:
    """systemd properties of a user's server unit."""
    properties = dict(_ALL_SERVERS)
    properties.update(_ADMIN_SERVERS if admin else _NON_ADMIN_SERVERS)
    if denied_addresses:
        properties["IPAddressDeny"] = " ".join(denied_addresses)
    return properties


def server_args(kernel_transport: str) -> list[str]:
    """Extra jupyter-server flags. With "ipc", kernels talk to the server over unix sockets in the server's
    private runtime directory instead of TCP ports on 127.0.0.1 that every local user can connect to."""
    return [f"--KernelManager.transport={kernel_transport}"]


def server_environment(unit_name: str) -> dict:
    """The server's runtime directory: /run/<unit>, which systemdspawner makes the unit's RuntimeDirectory=
    (mode 0700, owned by the user, removed when the server stops). Kernels' connection files and IPC sockets
    go there. It must be short: a unix socket path is at most 107 bytes, and a 32-character account name
    plus a kernel id does not fit under the home directory."""
    return {"JUPYTER_RUNTIME_DIR": f"/run/{unit_name}"}
