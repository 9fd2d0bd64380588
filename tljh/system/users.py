"""Unix users and groups: the OS primitives behind the spawner and the installer.

Hub users get a Unix account ``jupyter-<name>`` on first spawn. Names are kept to 32 characters (the
useradd limit) the way The Littlest JupyterHub does it, so accounts made by TLJH are found again.
"""

import asyncio
import grp
import hashlib
import os
import pwd
import re
import subprocess

USERS_GROUP = "jupyterhub-users"
ADMINS_GROUP = "jupyterhub-admins"

_VALID_NAME = re.compile(r"^[a-z_][a-z0-9_.-]*$")


def unix_username(hub_username):
    """The Unix account name for a hub user.

    Short valid names map to ``jupyter-<name>``. Longer ones are cut to 26 characters and suffixed with 5
    characters of a hash of the full name (same as TLJH), so they stay unique and under 32 characters.
    Characters useradd refuses are replaced, and then the hash is always added so that two names differing
    only in such characters do not collide.
    """
    name = "jupyter-" + hub_username
    if len(name) < 26 and _VALID_NAME.match(name):
        return name
    digest = hashlib.sha256(name.encode("utf-8")).hexdigest()[:5]
    safe = re.sub(r"[^a-z0-9_.-]", "-", name.lower())
    return f"{safe[:26]}-{digest}"


def user_exists(username):
    try:
        pwd.getpwnam(username)
    except KeyError:
        return False
    return True


def group_exists(group):
    try:
        grp.getgrnam(group)
    except KeyError:
        return False
    return True


def ensure_group(group):
    """Create ``group`` if missing. Returns True if it was created."""
    if group_exists(group):
        return False
    subprocess.run(["groupadd", "--system", group], check=True, capture_output=True)
    return True


def ensure_system_user(name):
    """Create system account ``name`` in its own group: no home, no login shell, no password.

    For services (the proxy). Returns True if it was created."""
    if user_exists(name):
        return False
    ensure_group(name)
    subprocess.run(["useradd", "--system", "--gid", name, "--no-create-home", "--home-dir", "/nonexistent",
                    "--shell", "/usr/sbin/nologin", name], check=True, capture_output=True)
    return True


async def _run(*cmd):
    proc = await asyncio.create_subprocess_exec(
        *cmd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}): {err.decode().strip()}")
    return out.decode()


async def ensure_user(username):
    """Create the Unix account with a private home (0700). Returns True if it was created."""
    if user_exists(username):
        return False
    await _run("useradd", "--create-home", "--shell", "/bin/bash", username)
    # Debian/Ubuntu defaults leave homes readable by others (0755 or 0750): users must not read each other's files.
    os.chmod(pwd.getpwnam(username).pw_dir, 0o700)
    return True


async def ensure_user_group(username, group):
    if not group_exists(group):
        await _run("groupadd", "--system", group)
    if username in grp.getgrnam(group).gr_mem:
        return False
    await _run("gpasswd", "--add", username, group)
    return True


async def remove_user_group(username, group):
    if not group_exists(group) or username not in grp.getgrnam(group).gr_mem:
        return False
    await _run("gpasswd", "--delete", username, group)
    return True


async def remove_user(username):
    """Delete a Unix account and its home (`tljh loadtest` removes the accounts of its simulated people)."""
    if user_exists(username):
        await _run("userdel", "--remove", username)
