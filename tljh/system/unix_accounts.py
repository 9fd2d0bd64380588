"""Which Unix account belongs to which hub user: a persistent, root-only table, one account per hub name.

Also what the hub did to accounts and groups, so it can undo exactly that (locks, groups it manages or made).

A hub user runs as ``jupyter-<name>``. Names are turned into Unix names by one rule, the same as The Littlest
JupyterHub's for every name made of ``[a-z0-9_.@-]`` (``jupyter-<name>`` unchanged below 26 characters, else the
first 26 characters and 5 hex digits of a hash), with other characters replaced by ``-``. A rule that shortens
and replaces cannot be one-to-one: ``josé`` and ``jos--4745b`` both become ``jupyter-jos--4745b``. So the rule
only *proposes* a name; this table decides. The first hub name to claim an account keeps it; a later name that
lands on a taken account, or on a Unix account the table does not hold, is refused instead of sharing it.
The table is SQLite: "one account, one hub name" is a UNIQUE constraint, not a convention.
"""

from __future__ import annotations

import hashlib
import os
import re
import sqlite3
import threading
from dataclasses import dataclass

from . import paths, users

PREFIX = "jupyter-"
UNCHANGED_BELOW = 26  # TLJH: names shorter than this are used as they are
HASH_CHARS = 5
# A systemd unit name is the Unix name; a name ending like this would be taken for another kind of unit.
UNIT_SUFFIXES = (
    ".service", ".socket", ".device", ".mount", ".automount", ".swap", ".target", ".path", ".timer",
    ".slice", ".scope",
)
_REPLACED = re.compile(r"[^a-z0-9_.@-]")
# What the rule can produce: at most 32 characters (useradd's limit), characters valid in user names, unit
# names and paths everywhere (useradd on Debian/Ubuntu, systemd's User= and unit names, sudoers, cron).
VALID = re.compile(r"jupyter-[a-z0-9_.@-]{1,24}")
# The tail the hash rules (TLJH's and this project's before the table) add; a plain name ending like this is
# ambiguous: it may be another name's hashed account.
_HASHED_TAIL = re.compile(r"-[0-9a-f]{5}$")

REFUSAL_HELP = "Please ask an administrator of this hub."


class NameRefused(Exception):
    """A hub name that gets no Unix account. ``str()`` is the sentence for the person; ``detail`` for the log."""

    def __init__(self, message, detail=None):
        super().__init__(message)
        self.detail = detail or message


def _hash(full_name):
    return hashlib.sha256(full_name.encode("utf-8", "surrogatepass")).hexdigest()[:HASH_CHARS]


def proposed_name(hub_name: str) -> str:
    """The Unix name the rule gives ``hub_name`` (the table may still refuse it). Raises NameRefused."""
    if not hub_name:
        raise NameRefused("An empty user name cannot have an account. " + REFUSAL_HELP)
    lowered = hub_name.lower()
    for suffix in UNIT_SUFFIXES:
        if lowered.endswith(suffix):
            raise NameRefused(
                f"User names ending in {suffix} cannot be used on this hub (a server would be confused with a "
                f"system service). {REFUSAL_HELP}",
                f"hub name {hub_name!r} ends in the systemd unit suffix {suffix}",
            )
    full = PREFIX + hub_name
    safe = _REPLACED.sub("-", full.lower())
    if safe == full and len(full) < UNCHANGED_BELOW:
        return full
    return f"{safe[:UNCHANGED_BELOW]}-{_hash(full)}"


def tljh_name(hub_name: str) -> str:
    """The Littlest JupyterHub's name for ``hub_name`` (its tljh/normalize.py): no character is replaced."""
    full = PREFIX + hub_name
    if len(full) < UNCHANGED_BELOW:
        return full
    return f"{full[:UNCHANGED_BELOW]}-{_hash(full)}"


def previous_name(hub_name: str) -> str:
    """This project's name for ``hub_name`` before the table: like the rule, but '@' was replaced too."""
    full = PREFIX + hub_name
    if len(full) < UNCHANGED_BELOW and re.fullmatch(r"[a-z_][a-z0-9_.-]*", full):
        return full
    return f"{re.sub(r'[^a-z0-9_.-]', '-', full.lower())[:UNCHANGED_BELOW]}-{_hash(full)}"


def is_valid(unix_name: str) -> bool:
    """Whether ``unix_name`` is one the rule may hand out (see VALID)."""
    return bool(VALID.fullmatch(unix_name)) and not unix_name.endswith(UNIT_SUFFIXES)


@dataclass
class Entry:
    hub_name: str
    unix_name: str
    origin: str  # 'rule': given by the rule; 'adopted': the account existed before the table; 'admin': assigned
    created: bool  # this hub ran useradd for it


@dataclass
class Adoption:
    adopted: list  # [(hub name, unix name)]
    ambiguous: list  # [(unix name, [hub names])]: left unassigned, see `tljh unix-names`


_creating = threading.Lock()


def _create_root_only(path):
    """Create the table's file root-only before SQLite opens it, and never open it otherwise: closing any
    descriptor of a file drops every POSIX lock this process holds on it, so an open+close here while another
    thread's connection is in a transaction let other processes write under it (`tljh loadtest` removing
    people while the hub deleted them: "disk I/O error" on both sides)."""
    with _creating:  # no connection of this process can exist before the file does
        if not os.path.exists(path):
            try:
                os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600))
            except FileExistsError:  # another process made it
                pass


class AccountTable:
    """The table. Every method is one short transaction; concurrent users (hub, installer, CLI) are safe."""

    def __init__(self, path=None, account_exists=None):
        self.path = path or paths.UNIX_ACCOUNTS_DB
        self.account_exists = account_exists or users.user_exists
        os.makedirs(os.path.dirname(self.path), mode=0o700, exist_ok=True)
        _create_root_only(self.path)
        self._db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        self._db.execute(
            """CREATE TABLE IF NOT EXISTS unix_names (
                hub_name TEXT PRIMARY KEY,
                unix_name TEXT NOT NULL UNIQUE,
                origin TEXT NOT NULL,
                created INTEGER NOT NULL DEFAULT 0,
                locked INTEGER NOT NULL DEFAULT 0,
                since TEXT NOT NULL DEFAULT (datetime('now')))"""
        )
        # Groups the hub puts members in (it removes members it should not have) and whether it created them.
        self._db.execute("CREATE TABLE IF NOT EXISTS managed_groups (name TEXT PRIMARY KEY, created INTEGER NOT NULL DEFAULT 0)")
        # Facts about the table itself: "adopted" = when the accounts made before the table were recorded.
        self._db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        # Hub names config.yaml made admin; listed = 0 once taken out (they are demoted at their next login).
        self._db.execute("CREATE TABLE IF NOT EXISTS config_admins (hub_name TEXT PRIMARY KEY, listed INTEGER NOT NULL)")

    def close(self):
        self._db.close()

    def get(self, hub_name: str) -> str | None:
        row = self._db.execute("SELECT unix_name FROM unix_names WHERE hub_name = ?", (hub_name,)).fetchone()
        return row[0] if row else None

    def owner(self, unix_name: str) -> str | None:
        row = self._db.execute("SELECT hub_name FROM unix_names WHERE unix_name = ?", (unix_name,)).fetchone()
        return row[0] if row else None

    def entries(self) -> list[Entry]:
        rows = self._db.execute("SELECT hub_name, unix_name, origin, created FROM unix_names ORDER BY hub_name")
        return [Entry(h, u, o, bool(c)) for h, u, o, c in rows]

    def claim(self, hub_name: str) -> str:
        """The Unix name of ``hub_name``: from the table, or newly given by the rule and recorded.

        Raises NameRefused when the rule's name is another hub name's, or an account the table does not hold.
        """
        known = self.get(hub_name)
        if known:
            return known
        name = proposed_name(hub_name)
        taken_by = self.owner(name)
        if taken_by is None and self.account_exists(name):
            raise NameRefused(
                f"The user name {hub_name!r} cannot be used on this hub: its account name is already in use. "
                + REFUSAL_HELP,
                f"hub name {hub_name!r} -> Unix account {name}, which exists but does not belong to a hub user "
                f"(assign it with: sudo tljh unix-names assign {hub_name!r} {name})",
            )
        if taken_by is None:
            try:
                self._db.execute(
                    "INSERT INTO unix_names (hub_name, unix_name, origin) VALUES (?, ?, 'rule')", (hub_name, name)
                )
                return name
            except sqlite3.IntegrityError:
                known = self.get(hub_name)  # another process claimed it meanwhile, for this name or another
                if known:
                    return known
                taken_by = self.owner(name)
        raise NameRefused(
            f"The user name {hub_name!r} cannot be used on this hub: it is too similar to an existing user's name. "
            + REFUSAL_HELP,
            f"hub name {hub_name!r} -> Unix account {name}, which belongs to hub user {taken_by!r}",
        )

    def mark_created(self, hub_name: str) -> None:
        self._db.execute("UPDATE unix_names SET created = 1 WHERE hub_name = ?", (hub_name,))

    def assign(self, hub_name: str, unix_name: str) -> None:
        """An admin's decision: ``hub_name`` runs as ``unix_name`` (an existing account, or a valid new name)."""
        if not (is_valid(unix_name) or self.account_exists(unix_name)):
            raise NameRefused(f"{unix_name!r} is not a valid account name for a hub user (jupyter-..., at most 32 characters)")
        owner = self.owner(unix_name)
        if owner not in (None, hub_name):
            raise NameRefused(f"{unix_name} belongs to hub user {owner!r}; release it first")
        with self._db:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute("DELETE FROM unix_names WHERE hub_name = ?", (hub_name,))
            self._db.execute(
                "INSERT INTO unix_names (hub_name, unix_name, origin) VALUES (?, ?, 'admin')", (hub_name, unix_name)
            )

    def release(self, hub_name: str) -> str | None:
        """Forget ``hub_name``'s entry (the account itself is kept). Returns the Unix name it had."""
        name = self.get(hub_name)
        self._db.execute("DELETE FROM unix_names WHERE hub_name = ?", (hub_name,))
        return name

    def adopt_existing(self, hub_names, hub_accounts) -> Adoption:
        """Record the accounts that existed before the table, so existing installs keep their mapping.

        ``hub_names``: the hub database's users; ``hub_accounts``: existing Unix accounts made for hub users
        (members of jupyterhub-users). A hub name gets the first of TLJH's and this project's earlier names
        that is one of those accounts. An account that two hub names lead to is given to neither (who made it
        cannot be known); a ``jupyter-X`` account no hub name leads to is X's if X is a plain name (it has no
        hashed tail, so no other name can have produced it). Entries already in the table are kept.
        """
        hub_accounts = set(hub_accounts)
        wanted: dict[str, list[str]] = {}
        for hub_name in hub_names:
            if self.get(hub_name):
                continue
            for candidate in dict.fromkeys((tljh_name(hub_name), previous_name(hub_name))):
                if candidate in hub_accounts and self.owner(candidate) is None:
                    wanted.setdefault(candidate, []).append(hub_name)
                    break
        claimed_names = set(wanted)
        for account in sorted(hub_accounts - claimed_names):
            plain = account[len(PREFIX):]
            if account.startswith(PREFIX) and plain and not _HASHED_TAIL.search(account) and self.owner(account) is None:
                if self.get(plain) is None and tljh_name(plain) == account:
                    wanted.setdefault(account, []).append(plain)
        result = Adoption([], [])
        self._db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('adopted', datetime('now'))")
        for account, names in sorted(wanted.items()):
            if len(names) > 1:
                result.ambiguous.append((account, sorted(names)))
                continue
            self._db.execute(
                "INSERT INTO unix_names (hub_name, unix_name, origin, created) VALUES (?, ?, 'adopted', 0)",
                (names[0], account),
            )
            result.adopted.append((names[0], account))
        return result

    def adopted(self) -> bool:
        """Whether adopt_existing ran on this table (once is enough: later accounts are the table's)."""
        return self._db.execute("SELECT 1 FROM meta WHERE key = 'adopted'").fetchone() is not None

    def is_locked(self, hub_name: str) -> bool:
        row = self._db.execute("SELECT locked FROM unix_names WHERE hub_name = ?", (hub_name,)).fetchone()
        return bool(row and row[0])

    def set_locked(self, hub_name: str, locked: bool) -> None:
        self._db.execute("UPDATE unix_names SET locked = ? WHERE hub_name = ?", (int(locked), hub_name))

    def owned_accounts(self) -> list[str]:
        """Accounts that are the hub's: made by it, or made by a hub before the table (adopted)."""
        rows = self._db.execute("SELECT unix_name FROM unix_names WHERE created = 1 OR origin = 'adopted' ORDER BY 1")
        return [r[0] for r in rows]

    def record_group(self, group: str, created: bool = False) -> None:
        row = self._db.execute("SELECT created FROM managed_groups WHERE name = ?", (group,)).fetchone()
        if row is not None and row[0] >= int(created):
            return  # already recorded: no write (the installer records its groups at every run)
        self._db.execute(
            "INSERT INTO managed_groups (name, created) VALUES (?, ?) "
            "ON CONFLICT(name) DO UPDATE SET created = max(created, excluded.created)",
            (group, int(created)),
        )

    def managed_groups(self) -> list[str]:
        return [r[0] for r in self._db.execute("SELECT name FROM managed_groups ORDER BY name")]

    def created_groups(self) -> list[str]:
        return [r[0] for r in self._db.execute("SELECT name FROM managed_groups WHERE created = 1 ORDER BY name")]

    def set_config_admins(self, names) -> None:
        """config.yaml's users.admin now: anyone listed before and not now is to be demoted (take_demotion)."""
        names = set(names)
        current = dict(self._db.execute("SELECT hub_name, listed FROM config_admins"))
        if current == {n: int(n in names) for n in set(current) | names}:
            return  # no write at all: the hub does this at every start, and the file is part of backups
        with self._db:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute("UPDATE config_admins SET listed = 0")
            self._db.executemany(
                "INSERT INTO config_admins (hub_name, listed) VALUES (?, 1) ON CONFLICT(hub_name) DO UPDATE SET listed = 1",
                [(n,) for n in sorted(names)],
            )

    def take_demotion(self, hub_name: str) -> bool:
        """True once for a hub name that config.yaml stopped listing as an admin."""
        cursor = self._db.execute("DELETE FROM config_admins WHERE hub_name = ? AND listed = 0", (hub_name,))
        return cursor.rowcount > 0
