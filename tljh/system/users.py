"""Unix users and groups: the OS primitives behind the spawner and the installer.

Which account belongs to which hub user is decided by :mod:`tljh.system.unix_accounts`; the policy (groups
at login, locking) is :mod:`tljh.hub.accounts`.
"""

import asyncio
import grp
import os
import pwd
import subprocess

USERS_GROUP = "jupyterhub-users"
ADMINS_GROUP = "jupyterhub-admins"

# Groups whose members get root or its equivalent (sudo, the docker/lxd daemons, raw disks, password hashes,
# the journal, ...), on Debian and Ubuntu. Hub users are never put in these through users.extra_user_groups;
# admin rights come from users.admin (jupyterhub-admins) only.
PRIVILEGED_GROUPS = frozenset({
    "root", "sudo", "admin", "wheel", "adm", "shadow", "disk", "kmem", "mem", "tty", "utmp", "staff", "src",
    "sys", "bin", "daemon", "operator", "docker", "lxd", "incus", "incus-admin", "libvirt", "libvirt-qemu", "kvm",
    "systemd-journal", "systemd-network", "netdev", "lpadmin", "sambashare", "backup", "proxy", "www-data",
    "input", "uucp", "dialout", "plugdev", "microk8s", "podman", "ssl-cert", "_ssh",
    ADMINS_GROUP,
})

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


def is_privileged_group(group):
    """A group that must not be handed out to hub users (see PRIVILEGED_GROUPS): listed, or root's (gid 0)."""
    if group in PRIVILEGED_GROUPS:
        return True
    try:
        return grp.getgrnam(group).gr_gid == 0
    except KeyError:
        return False


def groups_of(username):
    """Supplementary groups ``username`` is listed in (/etc/group)."""
    return {g.gr_name for g in grp.getgrall() if username in g.gr_mem}


async def ensure_group_async(group):
    """Create ``group`` (a system group) if missing. Returns True if it was created."""
    if group_exists(group):
        return False
    await _run("groupadd", "--system", group)
    return True


async def lock_account(username):
    """No more logins of any kind: an expired account fails PAM's account check (password, ssh keys, su,
    cron, at), and sshd refuses expired accounts itself. Running sessions and lingering user managers end.
    Reversible (unlock_account): the password, keys and crontab are kept."""
    await _run("usermod", "--expiredate", "1", username)
    await end_sessions(username)
    await _run_quiet("loginctl", "disable-linger", username)


async def unlock_account(username):
    await _run("usermod", "--expiredate", "", username)


async def end_sessions(username):
    """End every login session of ``username`` (ssh, su, cron jobs) and its systemd user manager."""
    await _run_quiet("loginctl", "terminate-user", username)


async def _run_quiet(*cmd):
    """A command whose failure means there was nothing to do (no session, no logind)."""
    proc = await asyncio.create_subprocess_exec(*cmd, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
    await proc.wait()


def members_of(group):
    """Accounts listed in ``group`` (/etc/group); [] if there is no such group."""
    try:
        return list(grp.getgrnam(group).gr_mem)
    except KeyError:
        return []
