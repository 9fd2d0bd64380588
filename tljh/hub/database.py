"""The hub's SQLite database, set up for many people at once.

JupyterHub commits after nearly every request; with SQLite's defaults (rollback journal, synchronous=FULL)
each commit waits for the disk, and a reader (``tljh status``, a backup) blocks the hub's writes while it
reads. Write-ahead logging with synchronous=NORMAL is SQLite's documented setting for this: readers and the
writer no longer block each other, and a commit waits for the disk only at checkpoints. A crash of the hub
loses nothing; a power cut may lose the last transactions (activity times, mostly), never the database.
"""

from sqlalchemy import event
from sqlalchemy.engine import Engine

PRAGMAS = ("PRAGMA journal_mode=WAL", "PRAGMA synchronous=NORMAL")


def _on_connect(dbapi_connection, _record):
    if type(dbapi_connection).__module__.partition(".")[0] in ("sqlite3", "pysqlite2"):
        cursor = dbapi_connection.cursor()
        for pragma in PRAGMAS:
            cursor.execute(pragma)
        cursor.close()


def tune_sqlite():
    """Apply PRAGMAS to every SQLite connection this process opens (the hub's config calls it once)."""
    if not event.contains(Engine, "connect", _on_connect):
        event.listen(Engine, "connect", _on_connect)
