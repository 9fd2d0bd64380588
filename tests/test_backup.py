"""tljh backup / restore on a fake installation tree (accounts and services are the integration tests' part)."""

import dbm
import gzip
import hashlib
import io
import json
import os
import shutil
import sqlite3
import tarfile
import tempfile
import types

import pytest
from jupyterhub import orm

from tljh.install import backup, restore
from tljh.system import paths, unix_accounts

CONFIG = """\
users:
  admin: [alice]
https:
  enabled: true
  tls:
    cert: {cert}
    key: {key}
"""


def tree_digest(root, skip_locks=True):
    """Every path under root with its type, mode and content hash: equal digests = an untouched tree."""
    items = []
    for base, dirs, names in os.walk(root):
        dirs.sort()
        for name in sorted(dirs + names):
            path = os.path.join(base, name)
            if skip_locks and name.endswith(".lock"):  # filelock leaves its (empty) lock files: not state
                continue
            st = os.lstat(path)
            content = b""
            if os.path.isfile(path) and not os.path.islink(path):
                with open(path, "rb") as f:
                    content = f.read()
            items.append((os.path.relpath(path, root), st.st_mode, hashlib.sha256(content).hexdigest()))
    return items


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """A fake /opt/tljh with config, a snippet, secrets, a real hub database, passwords, a manual cert, ACME data."""
    prefix = tmp_path / "opt-tljh"
    state, config_dir = prefix / "state", prefix / "config"
    for d in (state, config_dir / "jupyterhub_config.d", state / "caddy" / "data" / "certificates"):
        d.mkdir(parents=True)
    tls = tmp_path / "etc-ssl"
    tls.mkdir()
    (tls / "hub.pem").write_text("CERT\n")
    (tls / "hub.key").write_text("KEY\n")
    os.chmod(tls / "hub.key", 0o600)
    for name, value in {
        "INSTALL_PREFIX": prefix,
        "STATE_DIR": state,
        "CONFIG_DIR": config_dir,
        "CONFIG_FILE": config_dir / "config.yaml",
        "JUPYTERHUB_CONFIG_D": config_dir / "jupyterhub_config.d",
        "COOKIE_SECRET_FILE": state / "jupyterhub_cookie_secret",
        "HUB_DATABASE": state / "jupyterhub.sqlite",
        "UNIX_ACCOUNTS_DB": state / "unix-accounts.sqlite",
        "FIRSTUSE_PASSWORDS": state / "passwords.dbm",
        "PROXY_DATA_DIR": state / "caddy" / "data",
        "BACKUP_LOCK": tmp_path / "lock" / "tljh-backup.lock",
        "LAST_BACKUP_FILE": state / "last-backup.json",
        "DEFAULT_BACKUP_DIR": tmp_path / "backups",
        "RESTORE_STAGING_PREFIX": state / "restore-",
    }.items():
        monkeypatch.setattr(paths, name, str(value))
    (config_dir / "config.yaml").write_text(CONFIG.format(cert=tls / "hub.pem", key=tls / "hub.key"))
    os.chmod(config_dir / "config.yaml", 0o600)  # as the installer makes it
    os.chmod(config_dir / "jupyterhub_config.d", 0o700)  # as the installer makes it
    (config_dir / "jupyterhub_config.d" / "extra.py").write_text("c.JupyterHub.shutdown_on_logout = True\n")
    (state / "jupyterhub_cookie_secret").write_bytes(os.urandom(32))
    (state / "caddy" / "data" / "certificates" / "acme.crt").write_text("ACME CERT\n")
    session = orm.new_session_factory(f"sqlite:///{paths.HUB_DATABASE}")()
    session.add_all([orm.User(name="alice"), orm.User(name="bob")])
    session.commit()
    session.close()
    restore.write_firstuse_passwords({"alice": "$2b$12$alicehash", "bob": "$2b$12$bobhash"})
    table = unix_accounts.AccountTable(account_exists=lambda name: False)
    table.claim("alice")
    table.assign("josé", "jupyter-jose")  # an admin's decision: not what the rule would give
    table.close()
    monkeypatch.setattr(backup, "hub_accounts", lambda: [])
    monkeypatch.setattr(backup, "environment_states", lambda config: {"default": backup.EnvironmentState(None, "numpy==2.0.0\n")})
    monkeypatch.setattr(backup, "installed_plugins", lambda: {})
    return {"prefix": prefix, "tls": tls, "tmp": tmp_path}


def members(archive):
    with tarfile.open(archive) as tar:
        return [m.name for m in tar]


def test_backup_holds_everything_root_only(hub):
    archive = str(hub["tmp"] / "b.tar.gz")
    result = backup.create(archive)
    assert os.stat(archive).st_mode & 0o777 == 0o600
    names = members(archive)
    assert names[0] == backup.MANIFEST and names[-1] == backup.CHECKSUMS
    for member in (
        backup.CONFIG_YAML,
        backup.CONFIG_D + "/extra.py",
        backup.COOKIE_SECRET,
        backup.HUB_DATABASE,
        backup.UNIX_ACCOUNTS,
        backup.FIRSTUSE_PASSWORDS,
        backup.TLS_FILES + "/0",
        backup.TLS_FILES + "/1",
        backup.ACME_STORAGE + "/certificates/acme.crt",
        "environments/default.txt",
    ):
        assert member in names
    assert result["hub_database_revision"]
    assert not [n for n in os.listdir(hub["tmp"]) if n.endswith(".partial")]


def test_backup_refuses_to_overwrite(hub):
    archive = hub["tmp"] / "b.tar.gz"
    archive.write_text("precious")
    with pytest.raises(backup.BackupError, match="exists"):
        backup.create(str(archive))
    assert archive.read_text() == "precious"


def test_database_copy_is_consistent_while_written(hub, tmp_path):
    """The copy is made with SQLite's backup API while another connection holds a write transaction open."""
    writer = sqlite3.connect(paths.HUB_DATABASE)
    writer.execute("BEGIN IMMEDIATE")
    writer.execute("INSERT INTO users (name, admin, cookie_id) VALUES ('carol', 0, 'cookie')")
    copy = str(tmp_path / "copy.sqlite")
    backup.database_copy(paths.HUB_DATABASE, copy)
    writer.rollback()
    writer.close()
    with sqlite3.connect(copy) as db:
        assert [r[0] for r in db.execute("SELECT name FROM users ORDER BY name")] == ["alice", "bob"]


@pytest.fixture
def restored_hub(hub, monkeypatch):
    calls = []
    monkeypatch.setattr(restore, "stop_hub_and_servers", lambda say, undo: calls.append("stop"))
    monkeypatch.setattr(restore, "rebuild_environments", lambda unpacked, say, undo: calls.append("environments"))
    hub["calls"] = calls
    hub["installer"] = lambda: calls.append("installer")
    return hub


def test_restore_brings_back_what_changed(restored_hub):
    hub = restored_hub
    archive = str(hub["tmp"] / "b.tar.gz")
    backup.create(archive)
    before = tree_digest(hub["prefix"] / "config") + tree_digest(hub["tls"])
    secret = open(paths.COOKIE_SECRET_FILE, "rb").read()
    # The server moves on (or it is a new server): every part differs from the archive.
    open(paths.CONFIG_FILE, "w").write("base_url: /other/\n")
    os.unlink(os.path.join(paths.JUPYTERHUB_CONFIG_D, "extra.py"))
    open(paths.COOKIE_SECRET_FILE, "wb").write(b"new")
    (hub["tls"] / "hub.pem").write_text("OTHER\n")
    restore.write_firstuse_passwords({"mallory": "x"})
    with sqlite3.connect(paths.HUB_DATABASE) as db:
        db.execute("DELETE FROM users")
    _unix_names_changed()
    lines = []
    restore.restore(archive, say=lines.append, installer=hub["installer"])
    assert tree_digest(hub["prefix"] / "config") + tree_digest(hub["tls"]) == before
    assert open(paths.COOKIE_SECRET_FILE, "rb").read() == secret
    assert backup.firstuse_passwords() == {"alice": "$2b$12$alicehash", "bob": "$2b$12$bobhash"}
    with sqlite3.connect(paths.HUB_DATABASE) as db:
        assert [r[0] for r in db.execute("SELECT name FROM users ORDER BY name")] == ["alice", "bob"]
    table = unix_accounts.AccountTable(account_exists=lambda name: False)
    assert [(e.hub_name, e.unix_name, e.origin) for e in table.entries()] == [
        ("alice", "jupyter-alice", "rule"), ("josé", "jupyter-jose", "admin")]
    table.close()
    assert hub["calls"] == ["stop", "environments", "installer"]
    saved = [n for n in os.listdir(paths.DEFAULT_BACKUP_DIR) if n.startswith("before-restore-")]
    assert len(saved) == 1 and any(saved[0] in line for line in lines)
    assert not [n for n in os.listdir(paths.STATE_DIR) if n.startswith("restore-")]


@pytest.mark.parametrize("broken", ["unreadable config.yaml", "missing certificate"])
def test_restore_repairs_a_broken_server(restored_hub, broken):
    """Restoring is how a broken server is repaired: an unreadable config.yaml, or a certificate it names that is
    gone, does not stop it. The saved previous state holds what was there, as it was; a plain backup refuses."""
    hub = restored_hub
    archive = str(hub["tmp"] / "b.tar.gz")
    backup.create(archive)
    good = open(paths.CONFIG_FILE).read()
    if broken == "unreadable config.yaml":
        open(paths.CONFIG_FILE, "w").write("users: [unclosed\n")
    os.unlink(hub["tls"] / "hub.pem")
    with pytest.raises(backup.BackupError, match="cannot be read" if broken == "unreadable config.yaml" else "does not exist"):
        backup.create(str(hub["tmp"] / "plain.tar.gz"))
    lines = []
    restore.restore(archive, say=lines.append, installer=hub["installer"])
    assert open(paths.CONFIG_FILE).read() == good and (hub["tls"] / "hub.pem").read_text() == "CERT\n"
    expected = "config.yaml cannot be read" if broken == "unreadable config.yaml" else "hub.pem, which does not exist: not saved"
    assert any("note on the saved state: " in line and expected in line for line in lines), lines
    [saved] = [n for n in os.listdir(paths.DEFAULT_BACKUP_DIR) if n.startswith("before-restore-")]
    with tarfile.open(os.path.join(paths.DEFAULT_BACKUP_DIR, saved)) as tar:
        kept = tar.extractfile(backup.CONFIG_YAML).read().decode()
        tls_saved = [info["path"] for info in json.load(tar.extractfile(backup.MANIFEST))["tls_files"].values()]
    assert kept == ("users: [unclosed\n" if broken == "unreadable config.yaml" else good)
    # Unreadable: no certificate is known; missing: the key is saved, the certificate that was gone is not.
    assert tls_saved == ([] if broken == "unreadable config.yaml" else [str(hub["tls"] / "hub.key")])


def test_archive_without_account_table_takes_this_servers_away(restored_hub):
    """A backup from before the table existed: the server's own table (which knows none of the restored accounts)
    is removed for the installer to adopt them again; a failed restore puts it back."""
    hub = restored_hub
    os.unlink(paths.UNIX_ACCOUNTS_DB)
    archive = str(hub["tmp"] / "b.tar.gz")
    backup.create(archive)
    assert backup.UNIX_ACCOUNTS not in members(archive)
    _unix_names_changed()  # this server's table
    table = open(paths.UNIX_ACCOUNTS_DB, "rb").read()
    runs = []

    def installer():  # the restored state's run fails; the rollback's run (previous state) works
        runs.append(os.path.exists(paths.UNIX_ACCOUNTS_DB))
        if len(runs) == 1:
            raise restore.RestoreError("the hub did not start")

    with pytest.raises(restore.RestoreError, match="every change was taken back"):
        restore.restore(archive, say=lambda line: None, installer=installer)
    assert runs == [False, True]  # the installer ran without the table, the rollback's with it back
    assert open(paths.UNIX_ACCOUNTS_DB, "rb").read() == table
    restore.restore(archive, say=lambda line: None, installer=lambda: None)
    assert not os.path.exists(paths.UNIX_ACCOUNTS_DB)


def _unix_names_changed():
    """The account table moves on: a name released, another claimed."""
    table = unix_accounts.AccountTable(account_exists=lambda name: False)
    table.release("josé")
    table.claim("mallory")
    table.close()


def _server_changed_since_backup(hub):
    """Make every part of the fake server differ from the archive; returns the digest of this new state."""
    open(paths.CONFIG_FILE, "w").write("base_url: /other/\n")
    os.unlink(os.path.join(paths.JUPYTERHUB_CONFIG_D, "extra.py"))
    open(paths.COOKIE_SECRET_FILE, "wb").write(b"new")
    (hub["tls"] / "hub.pem").write_text("OTHER\n")
    os.unlink(hub["tls"] / "hub.key")  # a file the restore creates
    restore.write_firstuse_passwords({"mallory": "x"})
    with dbm.open(paths.FIRSTUSE_PASSWORDS, "w") as db:  # as a live store: bytes a fresh write would not repeat
        db[b"trudy"] = b"y" * 5000
        del db[b"trudy"]
    with sqlite3.connect(paths.HUB_DATABASE) as db:
        db.execute("DELETE FROM users")
    _unix_names_changed()
    return tree_digest(hub["prefix"], skip_locks=False) + tree_digest(hub["tls"])


@pytest.mark.parametrize("failing", ["environments", "installer"])
def test_restore_failing_part_way_takes_every_change_back(restored_hub, monkeypatch, failing):
    """A package that does not install, or a hub that does not start with the restored config: the server is
    as it was before the restore (files, modes, contents), and the previous hub is started again."""
    hub = restored_hub
    archive = str(hub["tmp"] / "b.tar.gz")
    backup.create(archive)
    before = _server_changed_since_backup(hub)
    passwords = backup.firstuse_passwords()

    def environments(unpacked, say, undo):
        hub["calls"].append("environments")
        if failing == "environments":
            raise restore.RestoreError("environment default: no-such-package==1.0 was not found in the package registry")

    def installer():
        hub["calls"].append("installer")
        # The first run (restored config) fails; the rollback's run (previous config) works.
        if failing == "installer" and hub["calls"].count("installer") == 1:
            assert open(paths.CONFIG_FILE).read() != "base_url: /other/\n"  # it ran with the archive's config
            raise restore.RestoreError("the installer failed after the restore (exit 1)")
        assert open(paths.CONFIG_FILE).read() == "base_url: /other/\n"

    monkeypatch.setattr(restore, "rebuild_environments", environments)
    lines = []
    with pytest.raises(restore.RestoreError, match="every change was taken back: this server is as it was"):
        restore.restore(archive, say=lines.append, installer=installer)
    assert tree_digest(hub["prefix"], skip_locks=False) + tree_digest(hub["tls"]) == before
    assert backup.firstuse_passwords() == passwords
    assert hub["calls"] == (["stop", "environments"] if failing == "environments" else ["stop", "environments", "installer", "installer"])
    assert not os.path.exists(paths.DEFAULT_BACKUP_DIR) or os.listdir(paths.DEFAULT_BACKUP_DIR) == []
    assert not [n for n in os.listdir(paths.STATE_DIR) if n.startswith("restore-")]
    assert not [n for n in os.listdir(hub["tmp"] / "opt-tljh" / "config") if "before-restore" in n]


def test_undo_puts_back_files_trees_and_new_directories(tmp_path):
    (tmp_path / "file").write_text("old")
    os.chmod(tmp_path / "file", 0o640)
    (tmp_path / "tree").mkdir()
    (tmp_path / "tree" / "a").write_text("a")
    (tmp_path / "tree.before-restore").write_text("a user's file with this name")
    before = tree_digest(tmp_path)
    undo = restore.Undo(str(tmp_path / ".undo"))
    undo.save_file(str(tmp_path / "file"))
    (tmp_path / "file").write_text("new")
    undo.save_file(str(tmp_path / "created"))
    (tmp_path / "created").write_text("new")
    undo.set_aside(str(tmp_path / "tree"))
    (tmp_path / "tree").mkdir()
    undo.make_dirs(str(tmp_path / "x" / "y" / "z"))
    assert undo.rollback() == []
    shutil.rmtree(tmp_path / ".undo")  # the copies; in a restore it lies in the staging directory
    assert tree_digest(tmp_path) == before

    undo = restore.Undo(str(tmp_path / ".undo"))
    undo.set_aside(str(tmp_path / "tree"))
    (tmp_path / "tree").mkdir()
    undo.commit()
    shutil.rmtree(tmp_path / ".undo")  # the copies; in a restore it lies in the staging directory
    assert sorted(os.listdir(tmp_path)) == ["file", "tree", "tree.before-restore"]
    assert os.listdir(tmp_path / "tree") == []


def _refused_and_untouched(hub, archive, match):
    before = tree_digest(hub["prefix"]) + tree_digest(hub["tls"])
    with pytest.raises(restore.RestoreError, match=match) as e:
        restore.restore(str(archive), say=lambda line: None, installer=hub["installer"])
    assert "nothing was changed" in str(e.value)
    assert tree_digest(hub["prefix"]) + tree_digest(hub["tls"]) == before
    assert hub["calls"] == []
    assert not os.path.exists(paths.DEFAULT_BACKUP_DIR)


@pytest.mark.parametrize("keep", [0.5, 0.9, -200, -30, -1])
def test_truncated_archive_is_refused(restored_hub, keep):
    hub = restored_hub
    archive = hub["tmp"] / "b.tar.gz"
    backup.create(str(archive))
    data = archive.read_bytes()
    cut = int(len(data) * keep) if isinstance(keep, float) else len(data) + keep
    archive.write_bytes(data[:cut])
    _refused_and_untouched(hub, archive, "truncated|damaged")


def _rewrite(archive, change):
    """Recompress the archive's members after ``change(name, data) -> data | None`` (None drops the member)."""
    out = io.BytesIO()
    with tarfile.open(archive) as src, tarfile.open(fileobj=out, mode="w:gz") as dst:
        for member in src:
            data = src.extractfile(member).read() if member.isreg() else None
            if data is not None:
                data = change(member.name, data)
                if data is None:
                    continue
                member.size = len(data)
            dst.addfile(member, io.BytesIO(data) if data is not None else None)
    archive.write_bytes(out.getvalue())


def test_altered_member_is_refused(restored_hub):
    hub = restored_hub
    archive = hub["tmp"] / "b.tar.gz"
    backup.create(str(archive))
    _rewrite(archive, lambda name, data: data.replace(b"alice", b"eve__") if name == backup.CONFIG_YAML else data)
    _refused_and_untouched(hub, archive, "does not match its checksum")


def test_missing_checksums_is_refused(restored_hub):
    hub = restored_hub
    archive = hub["tmp"] / "b.tar.gz"
    backup.create(str(archive))
    _rewrite(archive, lambda name, data: None if name == backup.CHECKSUMS else data)
    _refused_and_untouched(hub, archive, "truncated")


def test_foreign_archives_are_refused(restored_hub):
    hub = restored_hub
    other = hub["tmp"] / "other.tar.gz"
    with tarfile.open(other, "w:gz") as tar:
        tar.add(paths.CONFIG_FILE, arcname="config.yaml")
    _refused_and_untouched(hub, other, "not a tljh backup")
    plain = hub["tmp"] / "notes.txt"
    plain.write_text("hello\n")
    _refused_and_untouched(hub, plain, "not a tljh backup")
    newer = hub["tmp"] / "newer.tar.gz"
    manifest = json.dumps({"format": backup.FORMAT, "version": backup.VERSION + 1}).encode()
    with tarfile.open(newer, "w:gz") as tar:
        info = tarfile.TarInfo(backup.MANIFEST)
        info.size = len(manifest)
        tar.addfile(info, io.BytesIO(manifest))
    _refused_and_untouched(hub, newer, "newer tljh")


def _crafted(path, members):
    """A tar.gz with a valid manifest first and the given (TarInfo, data) members."""
    manifest = json.dumps({"format": backup.FORMAT, "version": backup.VERSION, "accounts": [{"name": "jupyter-a"}]}).encode()
    with tarfile.open(path, "w:gz") as tar:
        info = tarfile.TarInfo(backup.MANIFEST)
        info.size = len(manifest)
        tar.addfile(info, io.BytesIO(manifest))
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)


def _file(name, data=b"x"):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


def _link(name, target, kind=tarfile.SYMTYPE):
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    return info, None


@pytest.mark.parametrize(
    "crafted, match",
    [
        ([_file("homes/jupyter-a/../../../etc/passwd")], "unsafe path"),
        ([_file("/etc/passwd")], "unsafe path"),
        ([_file("etc/passwd")], "not part of a backup"),
        ([_file("homes/jupyter-b/notes")], "does not list"),
        ([_link("homes/jupyter-a/out", "/etc"), _file("homes/jupyter-a/out/passwd")], "under a symbolic link"),
        ([_link("config/config.yaml", "/etc/shadow")], "symbolic link where none belongs"),
        ([_link("homes/jupyter-a/h", "/etc/shadow", tarfile.LNKTYPE)], "hard link"),
        ([_file("config/config.yaml"), _file("config/config.yaml")], "appears twice"),
    ],
)
def test_unsafe_members_are_refused(restored_hub, crafted, match):
    hub = restored_hub
    archive = hub["tmp"] / "crafted.tar.gz"
    _crafted(archive, crafted)
    _refused_and_untouched(hub, archive, match)
    assert not os.path.exists(hub["tmp"] / "etc")


def test_archive_config_must_work_here(restored_hub):
    hub = restored_hub
    archive = hub["tmp"] / "b.tar.gz"
    backup.create(str(archive))
    _rewrite(archive, lambda name, data: b"limits:\n  memory: lots\n" if name == backup.CONFIG_YAML else data)
    # The checksum list still names the old content: re-sign it as a backup of that config would be.
    def resign(name, data):
        if name != backup.CHECKSUMS:
            return data
        sums = json.loads(data)
        sums[backup.CONFIG_YAML] = hashlib.sha256(b"limits:\n  memory: lots\n").hexdigest()
        return json.dumps(sums).encode()

    _rewrite(archive, resign)
    _refused_and_untouched(hub, archive, "config.yaml is not valid here")


def test_prune_keeps_newest_scheduled_only(tmp_path):
    for stamp in ("20260101T030000Z", "20260102T030000Z", "20260103T030000Z", "20260104T030000Z"):
        (tmp_path / f"tljh-backup-{stamp}.tar.gz").write_text(stamp)
    (tmp_path / "my-own.tar.gz").write_text("keep me")
    removed = backup.prune(str(tmp_path), keep=2)
    assert removed == ["tljh-backup-20260101T030000Z.tar.gz", "tljh-backup-20260102T030000Z.tar.gz"]
    assert sorted(os.listdir(tmp_path)) == [
        "my-own.tar.gz",
        "tljh-backup-20260103T030000Z.tar.gz",
        "tljh-backup-20260104T030000Z.tar.gz",
    ]


def test_scheduled_backup_follows_config(hub):
    lines = []
    assert backup.run_scheduled(say=lines.append) == 0
    assert "backup.daily is false" in lines[0] and not os.path.exists(paths.DEFAULT_BACKUP_DIR)
    target = hub["tmp"] / "scheduled"
    with open(paths.CONFIG_FILE, "a") as f:
        f.write(f"backup:\n  daily: true\n  keep: 1\n  directory: {target}\n")
    backup.run_scheduled(say=lines.append)
    first = os.listdir(target)
    assert len(first) == 1 and backup.SCHEDULED_NAME.match(first[0])
    assert os.stat(target).st_mode & 0o777 == 0o700
    assert backup.last_backup()["file"] == str(target / first[0])
    os.rename(target / first[0], target / "tljh-backup-20200101T000000Z.tar.gz")
    backup.run_scheduled(say=lines.append)
    assert len(os.listdir(target)) == 1 and "20200101" not in os.listdir(target)[0]


def test_file_changing_while_read_keeps_archive_valid(tmp_path, monkeypatch):
    """A file that shrinks while it is archived is padded: the archive stays readable and its checksum true."""
    source = tmp_path / "big"
    source.write_bytes(b"a" * 100000)
    writer = backup.ArchiveWriter(str(tmp_path / "a.tar.gz"))
    start_reading = backup._PaddedReader.__init__

    def shrink_once_open(self, f, size, digest):
        start_reading(self, f, size, digest)
        os.truncate(source, 10)  # a user truncates the file after its size was taken

    monkeypatch.setattr(backup._PaddedReader, "__init__", shrink_once_open)
    writer.add_path("homes/x/big", str(source))
    writer.finish()
    assert writer.changed == [str(source)]
    with tarfile.open(tmp_path / "a.tar.gz") as tar:
        data = tar.extractfile("homes/x/big").read()
        sums = json.loads(tar.extractfile(backup.CHECKSUMS).read())
    assert data == b"a" * 10 + b"\0" * 99990
    assert hashlib.sha256(data).hexdigest() == sums["homes/x/big"]
    assert gzip.open(tmp_path / "a.tar.gz").read()  # the gzip stream is complete


def test_restore_stops_the_hub_and_the_servers_of_the_hubs_accounts(monkeypatch):
    """Servers of the accounts in the hub's account table; a jupyter-* unit of another account is not the hub's."""
    from tljh.install import uninstall
    from tljh.system import systemd

    stopped = []
    monkeypatch.setattr(uninstall, "hub_accounts", lambda: (["jupyter-alice"], []))
    monkeypatch.setattr(uninstall.pwd, "getpwnam", lambda name: types.SimpleNamespace(pw_uid=1001))
    monkeypatch.setattr(systemd, "list_units", lambda pattern: ["jupyter-alice.service", "jupyter-other.service"])
    monkeypatch.setattr(systemd, "property_of", lambda unit, name: "1001" if "alice" in unit else "1002")
    monkeypatch.setattr(systemd, "stop", lambda unit, check=True: stopped.append(unit))
    lines = []
    restore.stop_hub_and_servers(lines.append, restore.Undo(tempfile.mkdtemp()))
    assert stopped == [paths.HUB_UNIT, "jupyter-alice.service"]
    assert lines == ["  stopped the hub and 1 user server(s)"]


# --------------------------------------------------------------------------------------------
# Environments: backed up with their locks, rebuilt from them


def _env_build(path, name, build, pins, by_hand=None):
    """A build as store and venvs read it: record, lock, a working interpreter link, dist-info of each package."""
    from environments_testing import fake_build

    from tljh.system import pythons

    python = pythons.system_version()
    fake_build(str(path), name, build, python=python, lock="".join(f"{n}=={v}\n" for n, v in pins.items()))
    record = json.load(open(os.path.join(path, "tljh-environment.json")))
    json.dump(dict(record, hub_version=pins.get("jupyterhub")), open(os.path.join(path, "tljh-environment.json"), "w"))
    os.symlink(os.path.realpath(pythons.SYSTEM_PYTHON), os.path.join(path, "bin", "python"))
    for n, v in {**pins, **(by_hand or {})}.items():
        info = os.path.join(path, "lib", f"python{python}", "site-packages", f"{n}-{v}.dist-info")
        os.makedirs(info)
        with open(os.path.join(info, "METADATA"), "w") as f:
            f.write(f"Metadata-Version: 2.1\nName: {n}\nVersion: {v}\n")
    return path


@pytest.fixture
def env_hub(hub, monkeypatch):
    """The fake server of ``hub`` with environments (no real builds: `tljh env build --from-lock` is played by a
    fake that switches in a build of exactly the lock's pins; installing by hand adds dist-info)."""
    from environments_testing import prefix as _  # noqa: F401  (same paths layout as the environments tests)

    from tljh.environments import builder, commands, store
    from tljh.environments.spec import hub_version
    from tljh.system import venvs

    root = hub["prefix"]
    for name, value in {
        "USER_ENV_PREFIX": root / "user",
        "ENVIRONMENTS_DIR": root / "envs",
        "BUILDER_DIR": root / "envs" / ".builder",
        "RETIRED_DIR": root / "envs" / ".retired",
        "ENVIRONMENTS_UV_CACHE_DIR": root / "envs" / ".builder" / "uv-cache",
        "ENVIRONMENT_STATE_DIR": root / "state" / "environments",
        "ENVIRONMENTS_LOCK": root / "state" / "environments" / "build.lock",
        "BOOTSTRAP_REQUIREMENTS_FILE": root / "state" / "environments" / "bootstrap.txt",
        "PLUGIN_CONDA_REQUIREMENTS_FILE": root / "state" / "environments" / "conda.txt",
    }.items():
        monkeypatch.setattr(paths, name, str(value))
    (root / "state" / "environments").mkdir()
    monkeypatch.setattr(store, "flush", lambda path: None)
    monkeypatch.setattr(store, "prepare_directories", lambda: os.makedirs(paths.RETIRED_DIR, exist_ok=True))
    monkeypatch.setattr(backup, "environment_states", ENVIRONMENT_STATES)
    monkeypatch.setattr(restore, "stop_hub_and_servers", lambda say, undo: None)
    course = hub["tmp"] / "srv-course"  # a requirements file data names, including another
    course.mkdir()
    (course / "requirements.txt").write_text("-r base.txt\n")
    (course / "base.txt").write_text("six\n")
    with open(paths.CONFIG_FILE, "a") as f:
        f.write(f"environments:\n  data:\n    packages: [pyjokes]\n    requirements: {course}/requirements.txt\n")
    calls = {"built": [], "installed": [], "fail": set()}

    def build(config, pm, names, *, from_lock, out):
        [name] = names
        lock = open(from_lock).read()
        calls["built"].append((name, lock))
        if name in calls["fail"]:
            message = ("installing the environment data failed:\n  × No solution found when resolving dependencies:\n"
                       "  ╰─▶ Because tljh-no-such-package-16 was not found in the package registry, we can conclude "
                       f"that your requirements are unsatisfiable.\n({name}: nothing was built)")
            open(builder.failure_file(name), "w").write(message)
            out(f"{name}: build failed: {message}")
            return [builder.Outcome(name, "failed", message)]
        os.makedirs(paths.BUILDER_DIR, exist_ok=True)
        store.prepare_directories()
        _env_build(store.staging_path(name), name, f"restored-{name}", builder.pins(lock))
        store.switch_in(name)
        return [builder.Outcome(name, "built", f"restored-{name}")]

    def pip_install(prefix, requirements):
        calls["installed"].append((prefix, list(requirements)))
        for requirement in requirements:
            n, v = requirement.split("==")
            os.makedirs(os.path.join(venvs.site_packages(prefix)[0], f"{n}-{v}.dist-info"))
            open(os.path.join(venvs.site_packages(prefix)[0], f"{n}-{v}.dist-info", "METADATA"), "w").write(
                f"Metadata-Version: 2.1\nName: {n}\nVersion: {v}\n")

    monkeypatch.setattr(commands, "build", build)
    monkeypatch.setattr(venvs, "pip_install", pip_install)
    hub.update(calls=calls, jupyterhub=hub_version(), root=root, course=course)
    return hub


ENVIRONMENT_STATES = backup.environment_states


def _holders(root):
    """Copies a restore kept aside (hard-link copies of builds): none may be left once it ended."""
    return [os.path.join(d, n) for d in (root, root / "envs") if os.path.isdir(d) for n in os.listdir(d) if "before-restore" in n]


def _as_on_a(hub):
    """Server A: default at six 1.16.0; data at pyjokes 0.6.0 plus a package installed by hand."""
    root, jh = hub["root"], hub["jupyterhub"]
    _env_build(root / "user", "default", "a-default", {"jupyterhub": jh, "six": "1.16.0"})
    _env_build(root / "envs" / "data", "data", "a-data", {"jupyterhub": jh, "pyjokes": "0.6.0"}, by_hand={"tljh-hand": "1.0"})


def test_backup_holds_each_environments_lock_and_packages(env_hub):
    _as_on_a(env_hub)
    archive = str(env_hub["tmp"] / "b.tar.gz")
    lines = []
    backup.create(archive, say=lines.append)
    with tarfile.open(archive) as tar:
        manifest = json.load(tar.extractfile(backup.MANIFEST))
        data_lock = tar.extractfile("environments/data.lock").read().decode()
        data_packages = tar.extractfile("environments/data.txt").read().decode()
    assert manifest["version"] == 2
    assert sorted(manifest["environments"]) == ["data", "default"]
    entry = manifest["environments"]["data"]
    assert entry["lock"] == "environments/data.lock" and entry["packages"] == "environments/data.txt"
    assert entry["build"] == "a-data" and entry["jupyterhub"] == env_hub["jupyterhub"] and entry["repository"] is None
    assert data_lock == open(env_hub["root"] / "envs" / "data" / "tljh-lock.txt").read()
    assert "pyjokes==0.6.0" in data_lock and "tljh-hand" not in data_lock
    assert "tljh-hand==1.0" in data_packages.splitlines()
    assert any("2 environment(s) (2 with a lock: default, data)" in line for line in lines), lines
    course = env_hub["course"]
    assert manifest["requirement_files"] == {
        "environments/files/0": {"path": str(course / "requirements.txt"), "mode": 0o644},
        "environments/files/1": {"path": str(course / "base.txt"), "mode": 0o644},
    }


def test_restore_rebuilds_each_environment_from_its_lock(env_hub):
    """On a fresh server (its default environment as the installer built it, no `data`): `data` is built from
    the archive's lock (not its spec's newest versions) and gets what was installed by hand; default, at the
    archive's versions already, is left as it is."""
    hub = env_hub
    _as_on_a(hub)
    archive = str(hub["tmp"] / "b.tar.gz")
    backup.create(archive)
    a_lock = open(hub["root"] / "envs" / "data" / "tljh-lock.txt").read()
    shutil.rmtree(hub["root"] / "envs")
    shutil.rmtree(hub["root"] / "user")
    shutil.rmtree(hub["course"])  # the new server does not have data's requirements files: the archive does
    _env_build(hub["root"] / "user", "default", "b-default", {"jupyterhub": hub["jupyterhub"], "six": "1.16.0"})
    open(paths.CONFIG_FILE, "w").write("base_url: /other/\n")
    lines = []
    restore.restore(archive, say=lines.append, installer=lambda: None)
    assert (hub["course"] / "requirements.txt").read_text() == "-r base.txt\n"
    assert (hub["course"] / "base.txt").read_text() == "six\n"
    from tljh.environments import store

    assert hub["calls"]["built"] == [("data", a_lock)]
    assert store.current("data").lock() == a_lock and store.current("default").build == "b-default"
    assert hub["calls"]["installed"] == [(str(hub["root"] / "envs" / "data"), ["tljh-hand==1.0"])]
    assert "  environment 1/2 default: its build here has the archive's versions already" in lines
    assert "  environment 2/2 data: building from the archive's lock (2 packages)" in lines
    assert "environments:" in open(paths.CONFIG_FILE).read()
    assert _holders(hub["root"]) == []


def test_a_lock_that_does_not_build_takes_every_build_back(env_hub):
    """default is rebuilt from the archive's lock, then data's lock does not build: the restore fails naming the
    package, default's previous build serves again, data (new) is out of service, no failure is recorded."""
    from tljh.environments import builder, store

    hub = env_hub
    _as_on_a(hub)
    archive = str(hub["tmp"] / "b.tar.gz")
    backup.create(archive)
    shutil.rmtree(hub["root"] / "envs")
    shutil.rmtree(hub["root"] / "user")
    _env_build(hub["root"] / "user", "default", "b-default", {"jupyterhub": hub["jupyterhub"], "six": "1.17.0"})
    b_default = open(hub["root"] / "user" / "tljh-lock.txt").read()
    open(paths.CONFIG_FILE, "w").write("base_url: /other/\n")
    hub["calls"]["fail"].add("data")
    with pytest.raises(restore.RestoreError, match="every change was taken back") as e:
        restore.restore(archive, say=lambda line: None, installer=lambda: None)
    assert "environment data could not be built from its lock: no package tljh-no-such-package-16 on the package index" in str(e.value)
    assert [name for name, _ in hub["calls"]["built"]] == ["default", "data"]
    assert store.current("default").build == "b-default" and store.current("default").lock() == b_default
    assert store.current("data") is None and store.built_names() == ["default"]
    assert not os.path.exists(builder.failure_file("data"))
    assert (hub["course"] / "requirements.txt").read_text() == "-r base.txt\n"  # it was there: put back as it was
    assert open(paths.CONFIG_FILE).read() == "base_url: /other/\n"
    assert _holders(hub["root"]) == []


def test_a_requirements_file_nobody_has_is_refused(env_hub):
    """data names a requirements file that was gone when the backup was made and is not on this server either:
    the backup says so, and the restore refuses before changing anything."""
    os.unlink(env_hub["course"] / "requirements.txt")
    archive = str(env_hub["tmp"] / "b.tar.gz")
    lines = []
    backup.create(archive, say=lines.append)
    assert any("requirements.txt cannot be read (No such file or directory): not saved" in line for line in lines)
    env_hub["installer"] = lambda: None
    env_hub["calls"] = []
    _refused_and_untouched(env_hub, archive, "needs its requirements file .*requirements.txt, which neither this server nor the archive has")


def _plans(tmp_path, environments, members, config_environments):
    """environment_plans of a hand-made staging directory."""
    from tljh.settings.effective import effective_settings

    staging = tmp_path / "staging"
    for member, text in members.items():
        (staging / member).parent.mkdir(parents=True, exist_ok=True)
        (staging / member).write_text(text)
    unpacked = restore.Unpacked(str(staging), {"environments": environments}, {}, 0, 0)
    config = effective_settings({"environments": config_environments}).config
    return restore.environment_plans(unpacked, config)


def test_locks_that_do_not_fit_here_leave_the_environment_to_its_spec(env_hub, tmp_path):
    from tljh.system import pythons

    jh = env_hub["jupyterhub"]
    fits = f"jupyterhub=={jh}\nsix==1.16.0\n"
    plans, notes = _plans(
        tmp_path,
        {
            "default": "environments/default.txt",  # format 1: the installed packages alone
            "old": {"lock": "environments/old.lock", "packages": "environments/old.txt", "python": pythons.system_version()},
            "py": {"lock": "environments/py.lock", "packages": None, "python": "2.7"},
            "ok": {"lock": "environments/ok.lock", "packages": None, "python": pythons.system_version()},
            "gone": {"lock": "environments/gone.lock", "packages": None},
        },
        {
            "environments/default.txt": "six==1.16.0\n",
            "environments/old.lock": "jupyterhub==1.0.0\nsix==1.16.0\n",
            "environments/old.txt": "jupyterhub==1.0.0\nsix==1.16.0\ntljh-hand==1.0\n",
            "environments/py.lock": fits,
            "environments/ok.lock": fits,
            "environments/gone.lock": fits,
        },
        {"old": {}, "py": {}, "ok": {}},
    )
    by_name = {p.name: p for p in plans}
    assert by_name["default"].lock is None and by_name["default"].packages.endswith("environments/default.txt")
    assert by_name["ok"].lock.endswith("environments/ok.lock") and by_name["ok"].locked == 2
    assert by_name["old"].lock is None and by_name["py"].lock is None and "gone" not in by_name
    assert notes == [
        "environment gone is not in the archive's config.yaml: not rebuilt",
        f"environment old is built from its spec (newest versions), not its lock: its lock pins jupyterhub 1.0.0, this hub runs {jh}",
        "environment old: installed by hand there, install again: tljh-hand",
        f"environment py is built from its spec (newest versions), not its lock: its lock is for Python 2.7, here it gets "
        f"Python {pythons.system_version()}",
    ]


def test_a_manifest_naming_a_member_outside_its_place_is_refused(env_hub, tmp_path):
    with pytest.raises(restore.RestoreError, match="does not hold; nothing was changed"):
        _plans(tmp_path, {"data": {"lock": "config/config.yaml", "packages": None}}, {"config/config.yaml": "x"}, {"data": {}})
