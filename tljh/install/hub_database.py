"""The hub's SQLite database across JupyterHub upgrades: detect an old schema, back it up, upgrade it.

A JupyterHub whose database schema is older than its own refuses to start ("run jupyterhub upgrade-db").
The installer upgrades the schema itself, after a consistent backup it names, so an upgrade that
brings a new JupyterHub never leaves a hub that cannot start, and can always be rolled back.
"""

import os
import sqlite3
import tempfile
import time

from tljh.system import paths



class UpgradeError(Exception):
    pass


def _alembic_config(db_url, directory):
    import alembic.config
    from jupyterhub import dbutil

    ini = os.path.join(directory, "alembic.ini")
    dbutil.write_alembic_ini(ini, db_url)
    return alembic.config.Config(ini)


def stamped_revision(db_file):
    """The schema revision stamped in the database, read with sqlite3 alone (cheap: no alembic import).

    None if the database has no alembic_version table (empty, or older than JupyterHub 0.8: JupyterHub
    stamps or guesses it at start); "" if the table is there but empty.
    """
    with sqlite3.connect(f"file:{db_file}?mode=ro", uri=True) as db:
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if "alembic_version" not in tables:
            return None
        row = db.execute("SELECT version_num FROM alembic_version").fetchone()
    return row[0] if row else ""


def user_names(db_file):
    """Names of the hub's users, oldest first ([] without a database)."""
    if not os.path.exists(db_file):
        return []
    with sqlite3.connect(f"file:{db_file}?mode=ro", uri=True) as db:
        if not db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'users'").fetchone():
            return []
        return [row[0] for row in db.execute("SELECT name FROM users ORDER BY id")]


def revisions(db_file):
    """(the database's schema revision, the installed JupyterHub's) — None for an empty alembic_version table."""
    from alembic.script import ScriptDirectory

    with tempfile.TemporaryDirectory() as tmp:
        head = ScriptDirectory.from_config(_alembic_config(f"sqlite:///{db_file}", tmp)).get_current_head()
    current = stamped_revision(db_file)
    if current is None:
        return head, head
    return (current or None), head


def backup(db_file, directory=None, now=None):
    """Copy the database with SQLite's online backup (consistent even if something holds it open)."""
    directory = directory or paths.HUB_DATABASE_BACKUP_DIR
    os.makedirs(directory, mode=0o700, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(now))
    target = os.path.join(directory, f"{os.path.basename(db_file)}.{stamp}")
    suffix = 1
    while os.path.exists(target):
        suffix += 1
        target = os.path.join(directory, f"{os.path.basename(db_file)}.{stamp}.{suffix}")
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.close(fd)
    with sqlite3.connect(f"file:{db_file}?mode=ro", uri=True) as source, sqlite3.connect(target) as copy:
        source.backup(copy)
    return target


def prune_backups(db_file, keep, directory=None):
    """Delete all but the ``keep`` newest backups of ``db_file``. Returns the deleted paths."""
    directory = directory or paths.HUB_DATABASE_BACKUP_DIR
    prefix = os.path.basename(db_file) + "."
    try:
        names = [n for n in os.listdir(directory) if n.startswith(prefix)]
    except FileNotFoundError:
        return []
    by_age = sorted(names, key=lambda n: (os.stat(os.path.join(directory, n)).st_mtime_ns, n), reverse=True)
    doomed = [os.path.join(directory, n) for n in by_age[keep:]]
    for path in doomed:
        os.remove(path)
    return doomed


def upgrade(db_file, keep_backups):
    """Back up, then upgrade the schema to the installed JupyterHub's; returns the backup's path.

    If the migration fails, the backup is put back so the database is exactly what the old hub used.
    Only the ``keep_backups`` newest backups are kept (hub_database.keep_backups).
    """
    import alembic.command

    saved = backup(db_file)
    prune_backups(db_file, keep_backups)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            alembic.command.upgrade(_alembic_config(f"sqlite:///{db_file}", tmp), "head")
    except Exception as e:  # noqa: BLE001 - any migration failure: restore, then report it
        with sqlite3.connect(saved) as source, sqlite3.connect(db_file) as db:
            source.backup(db)
        raise UpgradeError(
            f"upgrading the hub database schema failed ({type(e).__name__}: {e}); {db_file} was restored from "
            f"{saved}. The new JupyterHub cannot start with the old schema: reinstall the previous version "
            "with --version, or report this error."
        ) from e
    return saved


def known_revision(revision) -> bool:
    """Whether the installed JupyterHub knows this schema revision (a database from a newer JupyterHub: no)."""
    if not revision:
        return True
    from alembic.script import ScriptDirectory
    from alembic.util import CommandError

    with tempfile.TemporaryDirectory() as tmp:
        script = ScriptDirectory.from_config(_alembic_config("sqlite://", tmp))
        try:
            return script.get_revision(revision) is not None
        except CommandError:
            return False
