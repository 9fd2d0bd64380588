"""Hub users' Unix accounts, as the hub keeps them: one account per hub name, groups that follow the hub's
view of the user at every login, and accounts that close when their user is banned or deleted.

The account table is :mod:`tljh.system.unix_accounts`; the OS primitives are :mod:`tljh.system.users`.
This module holds the policy and is used by the login hook (below), the spawner and the hub's start.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
import logging
import os
import pwd

from tornado import web

from tljh.system import paths, systemd, unix_accounts, users
from tljh.system.unix_accounts import NameRefused

log = logging.getLogger("tljh.accounts")


def _table():
    return unix_accounts.AccountTable()


def _with_table(method, *args):
    table = _table()
    try:
        return getattr(table, method)(*args)
    finally:
        table.close()


async def unix_name(hub_name: str) -> str:
    """The account name of ``hub_name``, claimed in the table on first use. Raises NameRefused."""
    return await asyncio.to_thread(_with_table, "claim", hub_name)


def known_unix_name(hub_name: str) -> str:
    """The account name of ``hub_name`` without claiming it: the table's, else what a claim would give.
    Synchronous (a traitlets default needs it); one indexed read."""
    if os.path.exists(paths.UNIX_ACCOUNTS_DB):
        known = _with_table("get", hub_name)
        if known:
            return known
    try:
        return unix_accounts.proposed_name(hub_name)
    except NameRefused:  # it never gets an account, so it never had a server to find
        return unix_accounts.previous_name(hub_name)


def desired_groups(hub_name: str, admin: bool, user_groups: dict) -> set[str]:
    groups = {users.USERS_GROUP}
    if admin:
        groups.add(users.ADMINS_GROUP)
    groups.update(group for group, members in user_groups.items() if hub_name in (members or ()))
    return groups


async def sync_groups(unix: str, hub_name: str, admin: bool, user_groups: dict) -> tuple[list, list]:
    """Make ``unix``'s membership in the groups the hub manages exactly what the hub says. (added, removed)

    Managed groups: jupyterhub-users, jupyterhub-admins, every group of users.extra_user_groups, and every
    group the hub ever put a member in. Privileged system groups are never joined, whatever the config says.
    """
    wanted = desired_groups(hub_name, admin, user_groups)
    refused = {g for g in wanted if users.is_privileged_group(g)} - {users.USERS_GROUP, users.ADMINS_GROUP}
    for group in sorted(refused):
        log.warning("Not adding %s to the privileged group %s (users.extra_user_groups)", unix, group)
    wanted -= refused
    table = _table()
    try:
        managed = set(table.managed_groups()) | wanted | {users.ADMINS_GROUP}
        added, removed = [], []
        current = users.groups_of(unix)
        for group in sorted(wanted - current):
            if await users.ensure_group_async(group):
                table.record_group(group, created=True)
            await users.ensure_user_group(unix, group)
            table.record_group(group)
            added.append(group)
        for group in sorted((managed - wanted) & current):
            await users.remove_user_group(unix, group)
            removed.append(group)
    finally:
        table.close()
    return added, removed


async def ensure_account(hub_name: str, on_create=None) -> str:
    """Claim the name, create the account if needed (private home) and reopen it if the hub had closed it."""
    unix = await unix_name(hub_name)
    if await users.ensure_user(unix):
        await asyncio.to_thread(_with_table, "mark_created", hub_name)
        log.info("Created Unix user %s for hub user %s", unix, hub_name)
        if on_create:
            on_create(unix)
    await reopen(hub_name, unix)
    return unix


async def reopen(hub_name: str, unix: str) -> None:
    if await asyncio.to_thread(_with_table, "is_locked", hub_name):
        await users.unlock_account(unix)
        await asyncio.to_thread(_with_table, "set_locked", hub_name, False)
        log.info("Reopened the Unix account %s of hub user %s", unix, hub_name)


async def close(hub_name: str, why: str) -> str | None:
    """Lock ``hub_name``'s account (no password, key or cron login), end its sessions, stop its servers."""
    unix = await asyncio.to_thread(_with_table, "get", hub_name)
    if not unix or not users.user_exists(unix):
        return None
    await users.lock_account(unix)
    await asyncio.to_thread(_with_table, "set_locked", hub_name, True)
    log.warning("Locked the Unix account %s of hub user %s (%s)", unix, hub_name, why)
    return unix


async def remove(hub_name: str) -> str | None:
    """Delete ``hub_name``'s account and home and forget it (`tljh loadtest` removes its simulated people)."""
    unix = await asyncio.to_thread(_with_table, "get", hub_name)
    if unix:
        await users.remove_user(unix)
        await asyncio.to_thread(_with_table, "release", hub_name)
    return unix


def close_banned(banned) -> list[str]:
    """At hub start: close the accounts of users.banned and stop their servers (from jupyterhub_config.py).

    JupyterHub loads its config inside its running event loop: the work runs on a loop of its own, in a thread,
    and the hub starts once it is done.
    """

    async def close_all():
        closed = [unix for name in sorted(banned) if (unix := await close(name, "banned"))]
        for unix in closed:
            await stop_servers_of(unix)
        return closed

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, close_all()).result()


async def stop_servers_of(unix: str) -> list[str]:
    """Stop every server unit that runs as ``unix`` (default and named servers)."""
    stopped = []
    owner = {unix, str(pwd.getpwnam(unix).pw_uid)}  # systemdspawner sets User= to the uid
    for unit in await asyncio.to_thread(systemd.list_units, f"{unix}*"):
        if (await systemd.properties(unit, "User")).get("User") in owner:
            await asyncio.to_thread(systemd.stop, unit, False)
            stopped.append(unit)
    return stopped


def record_config_admins(admin_users) -> None:
    """At hub start: remember who config.yaml makes admin, so that taking a name out demotes them at login."""
    _with_table("set_config_admins", sorted(admin_users))


def configured_groups(config) -> dict:
    """users.extra_user_groups as the spawner has it (UserCreatingSpawner.user_groups) in a traitlets Config."""
    return dict(config.get("UserCreatingSpawner", {}).get("user_groups", {}))


def install(c) -> None:
    """Wire the account policy into a loaded JupyterHub config ``c`` (the last thing jupyterhub_config.py does).

    The login hook goes on the configured authenticator's class and on Authenticator, after any hook a snippet
    or plugin set (that one still runs, first). At hub start: config.yaml's admins are recorded (someone taken
    out is demoted at their next login) and banned users' accounts are closed and their servers stopped.
    """
    from tljh.settings.authenticators import class_name_of

    authenticator = c.JupyterHub.get("authenticator_class", "")
    sections = ["Authenticator"]
    if isinstance(authenticator, str) and authenticator:
        sections.append(class_name_of(authenticator))
    elif isinstance(authenticator, type):
        sections.append(authenticator.__name__)
    general = c.Authenticator.get("post_auth_hook")
    for section in sections:
        chained = c[section].get("post_auth_hook") or general
        if not getattr(chained, "tljh_accounts", False):
            c[section].post_auth_hook = make_post_auth_hook(chained)
    show_login_errors_with_firstuse()
    record_config_admins(c.Authenticator.get("admin_users", set()))
    banned = set(c.Authenticator.get("blocked_users", set()))
    for closed in close_banned(banned):
        log.warning("Banned: Unix account %s locked and its servers stopped", closed)


def show_login_errors_with_firstuse() -> None:
    """FirstUseAuthenticator 1.1.1's login handler overrides ``_render`` without JupyterHub 6's keyword
    arguments: any error raised during a login (the refusal above included) ended in a TypeError and a blank
    403 page instead of the login form with the message. Its ``_render`` gets the keywords it dropped."""
    try:
        from firstuseauthenticator.firstuseauthenticator import CustomLoginHandler
    except ImportError:
        return
    original = CustomLoginHandler._render
    if getattr(original, "tljh_accepts_keywords", False):
        return
    parameters = inspect.signature(original).parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return  # a fixed FirstUseAuthenticator

    from jupyterhub.handlers.login import LoginHandler

    def _render(self, login_error=None, username=None, **kwargs):
        # FirstUse's own rule (its more specific message wins), then JupyterHub's with every keyword
        return LoginHandler._render(self, self.custom_login_error or login_error, username, **kwargs)

    _render.tljh_accepts_keywords = True
    CustomLoginHandler._render = _render


def make_post_auth_hook(chained=None):
    """Authenticator.post_auth_hook: refuse names that get no account; demote; sync groups of existing accounts."""

    async def post_auth_hook(authenticator, handler, authentication):
        if chained is not None:
            result = chained(authenticator, handler, authentication)
            authentication = (await result) if asyncio.iscoroutine(result) else result
        if not authentication:
            return authentication
        name = authentication["name"]
        try:
            unix = await unix_name(name)
        except NameRefused as e:
            authenticator.log.warning("Refused login of hub user %r: %s", name, e.detail)
            raise web.HTTPError(403, "%s", str(e)) from None
        if await asyncio.to_thread(_with_table, "take_demotion", name):
            authenticator.log.warning("Hub user %s is no longer in users.admin: no longer an admin", name)
            authentication["admin"] = False
        if users.user_exists(unix):
            await reopen(name, unix)
            user = handler.find_user(name)
            admin = authentication["admin"] if authentication.get("admin") is not None else bool(user and user.admin)
            _, removed = await sync_groups(unix, name, admin, configured_groups(authenticator.config))
            if removed and user is not None:
                # Running processes keep the groups they started with: restart them under the new ones.
                authenticator.log.warning("Hub user %s left %s: stopping their servers and sessions", name, removed)
                for server_name, spawner in list(user.spawners.items()):
                    if spawner.active:
                        await handler.stop_single_user(user, server_name)
                await users.end_sessions(unix)
        return authentication

    post_auth_hook.tljh_accounts = True
    return post_auth_hook
