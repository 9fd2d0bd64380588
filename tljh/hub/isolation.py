"""What keeps one user's server away from other users and from the machine: systemd properties and server flags.

Pure functions of the spawner's settings (unit-tested as dicts); the spawner adds them to each server's unit.
What each one is for, and what is not isolated, is docs/explanation/security.md.
"""

import hashlib

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


def kernel_runtime_directory(unit_name: str) -> str:
    """The server's private runtime directory under /run, where kernels' connection files and IPC sockets go.

    One of the unit's RuntimeDirectory= entries (mode 0700, owned by the user, removed when the server
    stops). Named for a hash of the unit name because it must be short: a unix socket path is at most 107
    bytes, and /run/<unit>/kernel-<36-char id>-ipc-N leaves too little for a 32-character account name plus a
    named server's name. 64 bits of SHA-256 keep two units of one machine apart.
    """
    return "tljh-kernels/" + hashlib.sha256(unit_name.encode()).hexdigest()[:16]


def server_environment(unit_name: str, kernel_debugger: bool) -> dict:
    """Environment variables of a user's server (its kernels inherit them)."""
    return {
        "JUPYTER_RUNTIME_DIR": "/run/" + kernel_runtime_directory(unit_name),
        KERNEL_DEBUGGER_VARIABLE: "on" if kernel_debugger else "off",
    }


def runtime_directories(unit_name: str) -> dict:
    """Unit properties for the runtime directories: systemdspawner's own (/run/<unit>, first: it keeps the
    server's environment file there) and the kernels' short one."""
    return {"RuntimeDirectory": f"{unit_name} {kernel_runtime_directory(unit_name)}"}


# The kernel debugger. JupyterLab's debugger makes a kernel start debugpy's adapter, which listens on a TCP port
# on 127.0.0.1 with no authentication (debugpy has no unix-socket mode). Once the owner has detached, any other
# local user who connects to that port can attach and run code as the owner (verified with JupyterLab 4,
# ipykernel 7, debugpy 1.8). Address rules cannot tell the owner's loopback connections from another user's;
# the hub's port rules (tljh.system.port_rules) can, but not on every machine (tljh status says where they
# are not enforced), so the debugger is off unless the admin allows it (network.allow_kernel_debugger): the
# spawner tells each server's kernels with this variable, and KERNEL_CONFIG, which IPython kernels of every
# environment read from a system config directory, acts on it.
KERNEL_DEBUGGER_VARIABLE = "TLJH_KERNEL_DEBUGGER"

# How the installer knows the file is its own (and may rewrite or remove it).
KERNEL_CONFIG_MARKER = "# Managed by The Littlest JupyterHub (tljh)"
KERNEL_CONFIG = f"""\
{KERNEL_CONFIG_MARKER}: its installer rewrites this file, `tljh uninstall` removes it.
#
# In users' servers, IPython kernels have no debugger unless the hub's admin allows it with
#     sudo tljh-config set network.allow_kernel_debugger true && sudo tljh-config reload
# The debugger's adapter (debugpy) listens on a TCP port on 127.0.0.1 without authentication: another local user
# who connects to it can run code as the kernel's owner. The hub's spawner sets {KERNEL_DEBUGGER_VARIABLE} in every
# server; kernels started outside the hub (no such variable) are left as they are.
import os

if os.environ.get("{KERNEL_DEBUGGER_VARIABLE}") == "off":
    import importlib
    import sys

    # ipykernel 7 imports its debugger module, and with it debugpy (about 0.1 s of CPU, a third of a kernel's
    # start), only when it creates the kernel, after reading this file. Imported here while debugpy cannot be
    # found, the module records that there is no debugpy, and the kernel never loads it. debugpy stays
    # importable for the user's own code. (ipykernel 6 has imported it already: nothing to save there.)
    if "ipykernel.debugger" not in sys.modules:
        _loaded = {{name: sys.modules.pop(name) for name in list(sys.modules) if name.partition(".")[0] == "debugpy"}}
        sys.modules["debugpy"] = None  # makes `import debugpy...` fail with ImportError
        try:
            importlib.import_module("ipykernel.debugger")
        except ImportError:  # no ipykernel: another kernel
            pass
        finally:
            del sys.modules["debugpy"]
            sys.modules.update(_loaded)

    # ipykernel creates the debugger, and tells JupyterLab it has one (kernel_info), only when this flag is true;
    # ipykernel 7 reads it from ipykernel.debugger when needed, ipykernel 6 from copies in the other two modules.
    for _module in ("ipykernel.debugger", "ipykernel.ipkernel", "ipykernel.kernelbase"):
        try:
            _module = importlib.import_module(_module)
        except ImportError:  # no debugpy, or another kernel: nothing to turn off
            continue
        if hasattr(_module, "_is_debugpy_available"):
            _module._is_debugpy_available = False
"""
