"""The installer's hub database upgrade, on a real JupyterHub 6 SQLite database taken one schema back."""

import os
import sqlite3
import tempfile

import alembic.command
import pytest
from jupyterhub import orm

from tljh.install import hub_database
from tljh.system import paths


def alembic_downgrade(db_file, revision):
    with tempfile.TemporaryDirectory() as tmp:
        alembic.command.downgrade(hub_database._alembic_config(f"sqlite:///{db_file}", tmp), revision)


def user_names(db_file):
    with sqlite3.connect(db_file) as db:
        return [row[0] for row in db.execute("SELECT name FROM users ORDER BY name")]


@pytest.fixture
def old_database(tmp_path, monkeypatch):
    """A hub database with two users, stamped and shaped like the previous JupyterHub schema."""
    monkeypatch.setattr(paths, "HUB_DATABASE_BACKUP_DIR", str(tmp_path / "backups"))
    db_file = str(tmp_path / "jupyterhub.sqlite")
    session = orm.new_session_factory(f"sqlite:///{db_file}")()
    session.add_all([orm.User(name="alice"), orm.User(name="bob")])
    session.commit()
    session.close()
    _, head = hub_database.revisions(db_file)
    alembic_downgrade(db_file, "-1")
    return db_file, head


def test_current_database_needs_nothing(tmp_path):
    db_file = str(tmp_path / "jupyterhub.sqlite")
    orm.new_session_factory(f"sqlite:///{db_file}")().close()
    current, head = hub_database.revisions(db_file)
    assert current == head


def test_old_schema_is_backed_up_then_upgraded(old_database):
    db_file, head = old_database
    old, _ = hub_database.revisions(db_file)
    assert old != head
    saved = hub_database.upgrade(db_file, keep_backups=5)
    assert hub_database.revisions(db_file) == (head, head)
    assert os.path.dirname(saved) == paths.HUB_DATABASE_BACKUP_DIR
    assert oct(os.stat(saved).st_mode & 0o777) == "0o600"
    assert hub_database.revisions(saved)[0] == old  # the backup is the database before the upgrade
    assert user_names(db_file) == user_names(saved) == ["alice", "bob"]


def test_failed_migration_restores_the_database(old_database):
    db_file, head = old_database
    old, _ = hub_database.revisions(db_file)
    # Make the next migration impossible: it will create/alter something that now already exists.
    with sqlite3.connect(db_file) as db:
        db.execute("DROP TABLE alembic_version")
        db.execute("CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL)")
        db.execute("INSERT INTO alembic_version VALUES ('19c0846f6344')")  # JupyterHub 0.5's base revision
    with sqlite3.connect(db_file) as db:
        before = list(db.iterdump())
    with pytest.raises(hub_database.UpgradeError, match="was restored from .*backups"):
        hub_database.upgrade(db_file, keep_backups=5)
    with sqlite3.connect(db_file) as db:
        assert list(db.iterdump()) == before


def test_backups_never_overwrite_each_other(old_database):
    db_file, _ = old_database
    first = hub_database.backup(db_file, now=0)
    second = hub_database.backup(db_file, now=0)
    assert first != second and os.path.exists(first) and os.path.exists(second)


def test_only_the_newest_backups_are_kept(old_database):
    """issue 19: backups were never pruned (one per upgrade, forever)."""
    db_file, head = old_database
    older = [hub_database.backup(db_file, now=n * 86400) for n in range(4)]
    for n, path in enumerate(older):
        os.utime(path, (n * 86400, n * 86400))
    other = os.path.join(paths.HUB_DATABASE_BACKUP_DIR, "something-else")
    open(other, "w").close()
    saved = hub_database.upgrade(db_file, keep_backups=2)
    assert sorted(os.listdir(paths.HUB_DATABASE_BACKUP_DIR)) == sorted(
        [os.path.basename(older[-1]), os.path.basename(saved), "something-else"]
    )


def test_stamped_revision_is_read_without_alembic(old_database, tmp_path):
    db_file, head = old_database
    assert hub_database.stamped_revision(db_file) == hub_database.revisions(db_file)[0] != head
    empty = str(tmp_path / "empty.sqlite")
    sqlite3.connect(empty).close()
    assert hub_database.stamped_revision(empty) is None
    with sqlite3.connect(db_file) as db:
        db.execute("DELETE FROM alembic_version")
    assert hub_database.stamped_revision(db_file) == "" and hub_database.revisions(db_file) == (None, head)
