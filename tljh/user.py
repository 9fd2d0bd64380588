"""TLJH's public module name for Unix users and groups (tljh.system.users).

TLJH's functions are synchronous and plugins call them from their hooks (``ensure_group("docker")`` in
``tljh_post_install``, ``ensure_user_group(username, "docker")`` in ``tljh_new_user_create``), so these faces
are synchronous too, with TLJH's names and arguments, over this project's (async) primitives.
"""

import asyncio
import concurrent.futures
import subprocess

from tljh.plugins import get_plugin_manager
from tljh.system import users as _users
from tljh.system.users import (  # noqa: F401 - TLJH's public names
    ADMINS_GROUP,
    USERS_GROUP,
    group_exists,
    user_exists,
)


def _wait(coroutine):
    """Run a primitive to completion from synchronous code, also when called inside the hub's event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


def ensure_user(username):
    """Create the Unix account ``username`` with a private home if it is missing, then run plugins'
    ``tljh_new_user_create`` hook for it (as TLJH does)."""
    if _wait(_users.ensure_user(username)):
        get_plugin_manager().hook.tljh_new_user_create(username=username)


def remove_user(username):
    """Remove the Unix account ``username`` (its home stays) if it exists."""
    if user_exists(username):
        subprocess.run(["deluser", "--quiet", username], check=True)


def ensure_group(groupname):
    """Create the group ``groupname`` if it is missing."""
    _users.ensure_group(groupname)


def remove_group(groupname):
    """Remove the group ``groupname`` if it exists."""
    if group_exists(groupname):
        subprocess.run(["delgroup", "--quiet", groupname], check=True)


def ensure_user_group(username, groupname):
    """Make ``username`` a member of ``groupname``."""
    _wait(_users.ensure_user_group(username, groupname))


def remove_user_group(username, groupname):
    """Make sure ``username`` is not a member of ``groupname``."""
    _wait(_users.remove_user_group(username, groupname))
