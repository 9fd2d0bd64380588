"""Bringing a hub back from a backup: ``sudo tljh restore FILE`` on a server where the install command ran.

Two phases. First the whole archive is read into a root-only staging directory and checked: it must be a
tljh backup of a format this version reads, every member must match the checksum the archive lists, no member
may point outside its place, and what it holds must work here (config.yaml valid for this installation, the hub
database not from a newer JupyterHub). Anything wrong: one line, and this server is exactly as it was.

Then this server's own state is saved (a backup without homes, named in the output), the hub and any users'
servers stop, and the archive's content takes its place: Unix groups and accounts (uids and gids kept where they
are free here, else new ones; files in restored homes belong to the account of the same name), config,
secrets, hub database, passwords, certificates, homes, environments (built from their locks: the same versions).
The installer then runs, as on an upgrade:
it applies the configuration and starts the proxy and the hub.
"""

from __future__ import annotations

import contextlib
import dataclasses
import grp
import hashlib
import json
import os
import posixpath
import pwd
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import zlib

from tljh.install import backup
from tljh.settings import config_file
from tljh.settings.effective import effective_settings
from tljh.settings.errors import ConfigError
from tljh.system import files, paths, systemd, venvs
from tljh.system.paths import HUB_UNIT

# Members outside these are not ours: a foreign or damaged archive.
_PLACES = (
    backup.CONFIG_YAML,
    backup.CONFIG_D,
    backup.COOKIE_SECRET,
    backup.HUB_DATABASE,
    backup.UNIX_ACCOUNTS,
    backup.FIRSTUSE_PASSWORDS,
    backup.ACME_STORAGE,
    backup.TLS_FILES,
    backup.ENVIRONMENTS,
    backup.HOMES,
)
# Symlinks are data in homes and Caddy's storage; anywhere else they would only be a way out of the staging tree.
_LINKS_ALLOWED = (backup.HOMES, backup.ACME_STORAGE, backup.CONFIG_D)
MANIFEST_LIMIT = 16 * 1024 * 1024


class RestoreError(Exception):
    """Refused or failed; one line for the admin."""


@dataclasses.dataclass
class Owner:
    uname: str
    gname: str
    uid: int
    gid: int


@dataclasses.dataclass
class Unpacked:
    staging: str
    manifest: dict
    owners: dict  # staged path (relative) -> Owner, for homes
    members: int
    size: int
    environments: list = dataclasses.field(default_factory=list)  # EnvironmentPlan, decided by check_fits

    def path(self, member):
        return os.path.join(self.staging, member)

    def has(self, member):
        return os.path.lexists(self.path(member))


class Undo:
    """Every change phase 2 makes, with how to take it back: a restore that fails part-way leaves the server as
    it was. Old files and directories are kept aside (copies in ``directory``, or renamed next to themselves)
    until :meth:`commit` drops them; :meth:`rollback` puts them back, newest change first."""

    def __init__(self, directory):
        self.directory = directory
        os.makedirs(directory, mode=0o700, exist_ok=True)
        self.actions: list = []  # (what, callable) to take a change back
        self.cleanups: list = []  # what commit removes (the kept-aside old versions)

    def add(self, what, action):
        self.actions.append((what, action))

    def save_file(self, path):
        """Before ``path`` is replaced or removed: keep a copy (with mode and owner) to put back."""
        if not os.path.lexists(path):
            self.add(f"remove {path}", lambda: _unlink(path))
            return
        copy = os.path.join(self.directory, f"{len(self.actions)}-{os.path.basename(path)}")
        shutil.copy2(path, copy, follow_symlinks=False)
        st = os.lstat(path)

        def put_back():
            tmp = f"{path}.tljh-undo"
            shutil.copy2(copy, tmp, follow_symlinks=False)
            os.lchown(tmp, st.st_uid, st.st_gid)
            os.replace(tmp, path)

        self.add(f"put back {path}", put_back)

    def set_aside(self, path) -> str | None:
        """Rename ``path`` (file or tree) out of the way; rollback renames it back, commit removes it."""
        if not os.path.lexists(path):
            self.add(f"remove {path}", lambda: _remove(path))
            return None
        # A fresh directory beside it (same filesystem: a rename), so no name of the admin's or a user's is reused.
        holder = tempfile.mkdtemp(prefix=f".{os.path.basename(path)}.before-restore-", dir=os.path.dirname(path))
        aside = os.path.join(holder, os.path.basename(path))
        os.rename(path, aside)

        def put_back():
            _remove(path)
            os.rename(aside, path)
            os.rmdir(holder)

        self.add(f"put back {path}", put_back)
        self.cleanups.append(holder)
        return aside

    def keep_build(self, name) -> bool:
        """Before environment ``name`` is rebuilt: keep its current build (a hard-link copy beside it) for
        rollback to put back in service; with no build, rollback takes the new one out. True if one was kept."""
        from tljh.environments import store

        prefix = paths.environment_prefix(name)
        with store.environments_lock():
            if not os.path.isdir(prefix):
                self.add(f"take environment {name} out of service", lambda: _reinstate(name, None, None))
                return False
            holder = tempfile.mkdtemp(prefix=f".{os.path.basename(prefix)}.before-restore-", dir=os.path.dirname(prefix))
            copy = os.path.join(holder, os.path.basename(prefix))
            store.copy_current(name, copy)
        self.add(f"put back the previous build of environment {name}", lambda: _reinstate(name, copy, holder))
        self.cleanups.append(holder)
        return True

    def make_dirs(self, directory, mode=0o700):
        """``os.makedirs``; rollback removes what it created."""
        top = None
        probe = os.path.abspath(directory)
        while not os.path.lexists(probe):
            top, probe = probe, os.path.dirname(probe)
        os.makedirs(directory, mode=mode, exist_ok=True)
        if top is not None:
            self.add(f"remove {top}", lambda: _remove(top))

    def commit(self):
        for path in self.cleanups:
            _remove(path)
        self.actions, self.cleanups = [], []

    def rollback(self) -> list[str]:
        """Take every change back; returns what could not be (one line each)."""
        failed = []
        for what, action in reversed(self.actions):
            try:
                action()
            except Exception as e:  # keep going: every other change still goes back
                failed.append(f"{what}: {e}")
        self.actions, self.cleanups = [], []
        return failed


def _unlink(path):
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def _remove(path):
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    else:
        _unlink(path)


def _reinstate(name, copy, holder):
    from tljh.environments import store

    with store.environments_lock():
        store.reinstate(name, copy)
        store.collect()  # the build that replaced it: no server can use it (the hub is stopped)
    if holder:
        os.rmdir(holder)


# --------------------------------------------------------------------------------------------
# Phase 1: read and check everything, change nothing


def _refuse_member(archive, name, why):
    raise RestoreError(f"{archive} is damaged or not a tljh backup: member {name!r} {why}; nothing was changed")


def _check_name(archive, name, accounts):
    if name.startswith("/") or "\\" in name or name != posixpath.normpath(name) or ".." in name.split("/"):
        _refuse_member(archive, name, "has an unsafe path")
    if not any(name == place or name.startswith(place + "/") for place in _PLACES):
        _refuse_member(archive, name, "is not part of a backup")
    parts = name.split("/")
    if parts[0] == backup.HOMES and len(parts) > 1 and parts[1] not in accounts:
        _refuse_member(archive, name, "is a home of an account the manifest does not list")


def unpack(archive, staging) -> Unpacked:
    """Read the whole archive into ``staging`` (an empty root-only directory), checking every member.

    Raises RestoreError naming what is wrong; the caller removes ``staging``."""
    try:
        tar = tarfile.open(archive, mode="r:gz")
    except FileNotFoundError:
        raise RestoreError(f"{archive} does not exist") from None
    except (tarfile.ReadError, OSError, EOFError, zlib.error) as e:
        raise RestoreError(f"{archive} is not a tljh backup (not a gzip'd tar archive: {e}); nothing was changed") from None
    entries: dict[str, str] = {}
    owners: dict[str, Owner] = {}
    links: set[str] = set()
    manifest = None
    checksums = None
    total = 0
    try:
        with tar:
            for member in tar:
                name = member.name
                if checksums is not None:
                    _refuse_member(archive, name, "follows the checksum list")
                if manifest is None:
                    if name != backup.MANIFEST or not member.isreg() or member.size > MANIFEST_LIMIT:
                        raise RestoreError(
                            f"{archive} is not a tljh backup (it does not start with {backup.MANIFEST}); nothing was changed"
                        )
                    data = tar.extractfile(member).read()
                    manifest = _parse_manifest(archive, data)
                    entries[name] = hashlib.sha256(data).hexdigest()
                    accounts = {a["name"] for a in manifest.get("accounts", [])}
                    continue
                if name == backup.CHECKSUMS:
                    if not member.isreg() or member.size > MANIFEST_LIMIT:
                        _refuse_member(archive, name, "is not a checksum list")
                    try:
                        checksums = json.loads(tar.extractfile(member).read())
                    except ValueError:
                        _refuse_member(archive, name, "is not a checksum list")
                    continue
                _check_name(archive, name, accounts)
                if name in entries:
                    _refuse_member(archive, name, "appears twice")
                parent = name
                while "/" in parent:
                    parent = parent.rsplit("/", 1)[0]
                    if parent in links:
                        _refuse_member(archive, name, "lies under a symbolic link")
                target = os.path.join(staging, name)
                os.makedirs(os.path.dirname(target), mode=0o700, exist_ok=True)
                if member.isdir():
                    os.makedirs(target, mode=0o700, exist_ok=True)
                    entries[name] = "dir"
                elif member.issym():
                    if not name.startswith(_LINKS_ALLOWED):
                        _refuse_member(archive, name, "is a symbolic link where none belongs")
                    os.symlink(member.linkname, target)
                    links.add(name)
                    entries[name] = f"link:{member.linkname}"
                elif member.isreg():
                    digest = hashlib.sha256()
                    source = tar.extractfile(member)
                    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
                    with os.fdopen(fd, "wb") as out:
                        while chunk := source.read(1 << 20):
                            digest.update(chunk)
                            out.write(chunk)
                    entries[name] = digest.hexdigest()
                    total += member.size
                else:
                    _refuse_member(archive, name, "is a device, pipe or hard link")
                if not member.issym():
                    # Setuid/setgid bits never come back from an archive.
                    os.chmod(target, member.mode & 0o1777)
                if name.startswith(backup.HOMES + "/"):
                    owners[name] = Owner(member.uname, member.gname, member.uid, member.gid)
                with contextlib.suppress(OSError):
                    os.utime(target, (member.mtime, member.mtime), follow_symlinks=False)
            # tarfile stops at the end-of-archive blocks; reading the compressed stream to its end checks gzip's
            # own length and CRC, so an archive cut in its last bytes is caught too.
            while tar.fileobj.read(1 << 20):
                pass
    except (tarfile.ReadError, EOFError, zlib.error) as e:
        raise RestoreError(f"{archive} is damaged or truncated ({e}); nothing was changed") from None
    except OSError as e:
        if "end-of-stream" in str(e) or "ended before" in str(e):
            raise RestoreError(f"{archive} is truncated (it ends early: {e}); nothing was changed") from None
        raise RestoreError(f"{archive} could not be unpacked into {staging}: {e}; nothing was changed") from None
    if manifest is None:
        raise RestoreError(f"{archive} is empty: not a tljh backup; nothing was changed")
    if checksums is None:
        raise RestoreError(f"{archive} is truncated (its checksum list, the last member, is missing); nothing was changed")
    if checksums != entries:
        bad = sorted(set(checksums) ^ set(entries)) or sorted(k for k in entries if entries[k] != checksums.get(k))
        raise RestoreError(f"{archive} is damaged: {bad[0]!r} does not match its checksum; nothing was changed")
    return Unpacked(staging, manifest, owners, len(entries), total)


def _parse_manifest(archive, data) -> dict:
    try:
        manifest = json.loads(data)
    except ValueError:
        manifest = None
    if not isinstance(manifest, dict) or manifest.get("format") != backup.FORMAT:
        raise RestoreError(f"{archive} is not a tljh backup (its manifest is not one); nothing was changed")
    version = manifest.get("version")
    if not isinstance(version, int) or version > backup.VERSION:
        raise RestoreError(
            f"{archive} was made by a newer tljh (backup format {version}; this one reads up to {backup.VERSION}): "
            "upgrade this server first (rerun the install command); nothing was changed"
        )
    return manifest


def check_fits(unpacked: Unpacked, preflight=None) -> list[str]:
    """Refuse what would not work on this server; return notes (plugins missing here, ...)."""
    manifest = unpacked.manifest
    raw = config_file.load_raw(unpacked.path(backup.CONFIG_YAML))
    settings = effective_settings(raw)
    if settings.errors:
        raise RestoreError(f"the archive's config.yaml is not valid here: {settings.errors[0]}; nothing was changed")
    # Certificate files go back where the archive's config.yaml says they are, and nowhere else.
    expected = set(backup.tls_files(settings.config))
    named = {info.get("path") for info in manifest.get("tls_files", {}).values()}
    if named != expected or any(not unpacked.has(member) for member in manifest.get("tls_files", {})):
        raise RestoreError("the archive's certificate files do not match its https.tls settings; nothing was changed")
    for member, info in manifest.get("requirement_files", {}).items():
        path = info.get("path") if isinstance(info, dict) else None
        if (not member.startswith(backup.REQUIREMENT_FILES + "/") or not unpacked.has(member) or not isinstance(path, str)
                or not os.path.isabs(path) or os.path.normpath(path) != path):
            raise RestoreError(f"the archive's requirements file {member!r} is not one it can restore; nothing was changed")
    if preflight is not None:
        try:
            preflight(raw)
        except ConfigError as e:
            raise RestoreError(f"the archive's config.yaml would not start the hub here: {e}; nothing was changed") from None
    revision = manifest.get("hub_database_revision")
    if unpacked.has(backup.HUB_DATABASE):
        from tljh.install import hub_database

        if not hub_database.known_revision(revision):
            made_with = manifest.get("versions", {}).get("jupyterhub", "a newer version")
            raise RestoreError(
                f"the archive's hub database is from JupyterHub {made_with}, newer than this server's: "
                "upgrade this server first (rerun the install command); nothing was changed"
            )
    unpacked.environments, notes = environment_plans(unpacked, settings.config)
    here = backup.installed_plugins()
    missing = [name for name in manifest.get("plugins", {}) if name not in here]
    if missing:
        notes.append(
            f"the backed-up hub had plugins not installed here: {', '.join(missing)} "
            "(install them with the install command's --plugin)"
        )
    return notes


# --------------------------------------------------------------------------------------------
# Phase 2: put it in place


def _free(table_lookup, number):
    try:
        table_lookup(number)
    except KeyError:
        return True
    return False


def _run(*cmd):
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        raise RestoreError(f"{' '.join(cmd)} failed: {result.stderr.strip()}")


def ensure_groups(manifest, say, undo: Undo) -> None:
    """Every group the accounts use, with its old gid when that is free here.

    Groups that keep their gid are made first: a new gid chosen for another group could otherwise take one of
    theirs."""
    missing = {}
    for name, gid in manifest.get("groups", {}).items():
        try:
            grp.getgrnam(name)
        except KeyError:
            missing[name] = gid
    keeping = {name for name, gid in missing.items() if _free(grp.getgrgid, gid)}
    for name in sorted(keeping) + sorted(set(missing) - keeping):
        _run("groupadd", *(["--gid", str(missing[name])] if name in keeping else []), name)
        # userdel (taking back the account) deletes the account's own group itself: only what is left goes.
        undo.add(f"delete group {name}", lambda name=name: None if _free(grp.getgrnam, name) else _run("groupdel", name))


def ensure_accounts(manifest, say, undo: Undo) -> dict[int, int]:
    """Create the archive's accounts that do not exist here. Returns {old uid: uid here}."""
    uid_map = {}
    kept = moved = existing = 0
    accounts = [backup.Account(**a) for a in manifest.get("accounts", [])]
    # Accounts that keep their uid are made first: a new uid chosen for another could otherwise take theirs.
    keeping = {a.name for a in accounts if _free(pwd.getpwuid, a.uid)}
    for account in sorted(accounts, key=lambda a: (a.name not in keeping, a.name)):
        try:
            uid_map[account.uid] = pwd.getpwnam(account.name).pw_uid
            existing += 1
        except KeyError:
            args = ["useradd", "--no-create-home", "--home-dir", account.home, "--shell", account.shell or "/bin/bash"]
            args += ["--gid", account.group]
            if account.gecos:
                args += ["--comment", account.gecos]
            if account.name in keeping:
                args += ["--uid", str(account.uid)]
                kept += 1
            else:
                moved += 1
            _run(*args, account.name)
            undo.add(f"delete account {account.name}", lambda name=account.name: _run("userdel", name))
            uid_map[account.uid] = pwd.getpwnam(account.name).pw_uid
        for group in account.groups:
            if account.name not in grp.getgrnam(group).gr_mem:
                _run("gpasswd", "--add", account.name, group)
                undo.add(
                    f"take {account.name} out of {group}",
                    lambda name=account.name, group=group: _run("gpasswd", "--delete", name, group),
                )
    say(f"  accounts: {kept} created with their uid, {moved} with a new uid (files follow), {existing} already here")
    return uid_map


def _owner_ids(owner: Owner, uid_map, gid_map):
    try:
        uid = pwd.getpwnam(owner.uname).pw_uid
    except KeyError:
        uid = uid_map.get(owner.uid, 0)
    try:
        gid = grp.getgrnam(owner.gname).gr_gid
    except KeyError:
        gid = gid_map.get(owner.gid, 0)
    return uid, gid


def place_homes(unpacked: Unpacked, uid_map, gid_map, say, undo: Undo) -> int:
    """Move each restored home into place, owned by the account of the same name; returns how many."""
    homes_dir = unpacked.path(backup.HOMES)
    if not os.path.isdir(homes_dir):
        return 0
    by_name = {a["name"]: a for a in unpacked.manifest["accounts"]}
    for member, owner in unpacked.owners.items():
        uid, gid = _owner_ids(owner, uid_map, gid_map)
        os.lchown(unpacked.path(member), uid, gid)
    count = 0
    for name in sorted(os.listdir(homes_dir)):
        source = os.path.join(homes_dir, name)
        home = pwd.getpwnam(name).pw_dir if name in by_name else None
        if not home:
            continue
        if os.path.isdir(home):
            # Already here (an account this server had): the archive's files win, others stay.
            old = os.lstat(home)
            undo.add(f"owner and mode of {home}", lambda home=home, old=old: _set_owner_mode(home, old))
            for entry in os.listdir(source):
                target = os.path.join(home, entry)
                undo.set_aside(target)
                shutil.move(os.path.join(source, entry), target)
            st = os.lstat(source)
            _set_owner_mode(home, st)
        else:
            undo.make_dirs(os.path.dirname(home), mode=0o755)
            undo.add(f"remove {home}", lambda home=home: _remove(home))
            shutil.move(source, home)
        count += 1
    return count


def _set_owner_mode(path, st):
    os.chown(path, st.st_uid, st.st_gid)
    os.chmod(path, st.st_mode & 0o7777)


def create_missing_homes(manifest, undo: Undo) -> None:
    """Accounts whose home was not in the archive get a fresh private one (as the spawner would make)."""
    for a in manifest.get("accounts", []):
        entry = pwd.getpwnam(a["name"])
        if not os.path.isdir(entry.pw_dir):
            undo.make_dirs(os.path.dirname(entry.pw_dir), mode=0o755)
            undo.add(f"remove {entry.pw_dir}", lambda home=entry.pw_dir: _remove(home))
            shutil.copytree("/etc/skel", entry.pw_dir, symlinks=True)
            for root, dirs, names in os.walk(entry.pw_dir):
                for n in [root, *(os.path.join(root, x) for x in dirs + names)]:
                    os.lchown(n, entry.pw_uid, entry.pw_gid)
            os.chmod(entry.pw_dir, 0o700)


def _replace_tree(source, target, undo: Undo, mode=0o700):
    """Put the directory ``source`` at ``target``; the old one is set aside until the restore has succeeded.

    The new tree belongs to the old one's owner (root when there was none): a service's own state directory
    stays that service's."""
    undo.make_dirs(os.path.dirname(target))
    owner = (os.lstat(target).st_uid, os.lstat(target).st_gid) if os.path.isdir(target) else (0, 0)
    undo.set_aside(target)
    shutil.move(source, target)
    os.chmod(target, mode)
    for root, dirs, names in os.walk(target):
        for n in [root, *(os.path.join(root, x) for x in dirs + names)]:
            os.lchown(n, *owner)


def _replace_file(source, target, undo: Undo, mode=0o600):
    undo.make_dirs(os.path.dirname(target))
    undo.save_file(target)
    files.write_atomic(target, files.read_bytes(source), mode=mode)


def _replace_database(source, target, undo: Undo):
    """Put the SQLite file ``source`` at ``target`` (``source`` None: no database there, as in the archive)."""
    # The hub is stopped: no journal of the old database may be replayed into the new one.
    for suffix in ("-journal", "-wal", "-shm"):
        if os.path.lexists(target + suffix):
            undo.save_file(target + suffix)
            os.unlink(target + suffix)
    if source is not None:
        _replace_file(source, target, undo)
    elif os.path.lexists(target):
        undo.save_file(target)
        os.unlink(target)


def place_state(unpacked: Unpacked, say, undo: Undo) -> None:
    """config.yaml, jupyterhub_config.d, secrets, hub database, passwords, certificates."""
    manifest = unpacked.manifest
    undo.save_file(config_file.lock_path(paths.CONFIG_FILE))  # filelock leaves the lock file it creates
    with config_file.locked(paths.CONFIG_FILE):
        _replace_file(unpacked.path(backup.CONFIG_YAML), paths.CONFIG_FILE, undo)
    if unpacked.has(backup.CONFIG_D):
        _replace_tree(unpacked.path(backup.CONFIG_D), paths.JUPYTERHUB_CONFIG_D, undo)
    if unpacked.has(backup.COOKIE_SECRET):
        _replace_file(unpacked.path(backup.COOKIE_SECRET), paths.COOKIE_SECRET_FILE, undo)
    if unpacked.has(backup.HUB_DATABASE):
        _replace_database(unpacked.path(backup.HUB_DATABASE), paths.HUB_DATABASE, undo)
    # The account table goes with the hub database it describes. A hub backed up before it had a table gets
    # none: this server's table knows none of the restored accounts, and a table whose adoption of existing
    # accounts already ran would refuse them; without one, the installer's run at the end adopts them again.
    has_table = unpacked.has(backup.UNIX_ACCOUNTS)
    _replace_database(unpacked.path(backup.UNIX_ACCOUNTS) if has_table else None, paths.UNIX_ACCOUNTS_DB, undo)
    if unpacked.has(backup.FIRSTUSE_PASSWORDS):
        # The store's files byte for byte (a rewrite with the same content is not the same file).
        old = firstuse_files()
        for path in old:
            undo.save_file(path)
        write_firstuse_passwords(json.loads(files.read_bytes(unpacked.path(backup.FIRSTUSE_PASSWORDS))))
        for path in firstuse_files():
            if path not in old:
                undo.add(f"remove {path}", lambda path=path: _unlink(path))
    for member, info in manifest.get("tls_files", {}).items():
        _replace_file(unpacked.path(member), info["path"], undo, mode=info.get("mode", 0o600) & 0o777)
    if unpacked.has(backup.ACME_STORAGE):
        _replace_tree(unpacked.path(backup.ACME_STORAGE), backup.acme_storage_dirs()[0], undo)
    for member, info in manifest.get("requirement_files", {}).items():
        _replace_file(unpacked.path(member), info["path"], undo, mode=info.get("mode", 0o644) & 0o777)


def firstuse_files(path=None) -> list[str]:
    """The files of FirstUseAuthenticator's dbm store (one or several, by dbm flavour)."""
    path = path or paths.FIRSTUSE_PASSWORDS
    directory, base = os.path.dirname(path), os.path.basename(path)
    if not os.path.isdir(directory):
        return []
    return [
        os.path.join(directory, name)
        for name in sorted(os.listdir(directory))
        if name == base or (name.startswith(base + ".") and name.rsplit(".", 1)[-1] in ("db", "dir", "dat", "bak", "pag"))
    ]


def write_firstuse_passwords(passwords: dict, path=None) -> None:
    """Replace FirstUseAuthenticator's password store with ``passwords`` {name: bcrypt hash}."""
    import dbm

    path = path or paths.FIRSTUSE_PASSWORDS
    for old in firstuse_files(path):
        os.unlink(old)
    with dbm.open(path, "n", 0o600) as db:
        for name, hashed in passwords.items():
            db[name.encode()] = hashed.encode()


@dataclasses.dataclass
class EnvironmentPlan:
    """How one environment of the archive comes back here."""

    name: str
    lock: str | None  # staged lock to build from (`tljh env build NAME --from-lock`); None: not from a lock
    packages: str | None  # staged list of what was installed: what the lock lacks was installed by hand
    locked: int = 0  # packages the lock pins
    in_lock: frozenset = frozenset()  # names the archive's lock installs (used or not): not installed by hand


def _environment_entries(archive_manifest) -> dict[str, dict]:
    """{name: manifest entry}; a format 1 archive named only the default environment's package list."""
    entries = archive_manifest.get("environments") or {}
    if not isinstance(entries, dict) or not all(isinstance(e, (str, dict)) for e in entries.values()):
        raise RestoreError("the archive's manifest is damaged (its environments are not a mapping); nothing was changed")
    return {name: {"lock": None, "packages": e} if isinstance(e, str) else dict(e) for name, e in entries.items()}


def environment_plans(unpacked: Unpacked, config) -> tuple[list[EnvironmentPlan], list[str]]:
    """Each environment is rebuilt from its lock (the versions the backed-up server had) when the lock fits this
    server; otherwise the installer builds it from its spec in config.yaml at the newest versions, and a note
    says why. Refuses (nothing changed yet) what could not be built at all."""
    from tljh.environments import builder
    from tljh.environments.spec import hub_version
    from tljh.settings.environments import environment_names
    from tljh.system import pythons

    declared = {name: (config.get("environments") or {}).get(name) or {} for name in environment_names(config)}
    restored = {info["path"] for info in unpacked.manifest.get("requirement_files", {}).values()}
    for name, entry in declared.items():
        path = entry.get("requirements")
        if path and not entry.get("repository") and not os.path.exists(path) and path not in restored:
            raise RestoreError(
                f"environment {name} needs its requirements file {path}, which neither this server nor the archive "
                "has: put it there, then restore again; nothing was changed"
            )
    plans, notes = [], []
    entries = _environment_entries(unpacked.manifest)
    for name, entry in sorted(entries.items(), key=lambda item: (item[0] != "default", item[0])):
        lock, packages = entry.get("lock"), entry.get("packages")
        for member, suffix in ((lock, "lock"), (packages, "txt")):
            if member is not None and (member != f"{backup.ENVIRONMENTS}/{name}.{suffix}" or not unpacked.has(member)):
                raise RestoreError(f"the archive's manifest names {member!r}, which it does not hold; nothing was changed")
        if name not in declared:
            notes.append(f"environment {name} is not in the archive's config.yaml: not rebuilt")
            continue
        spec = declared[name]
        text = files.read_bytes(unpacked.path(lock)).decode() if lock else ""
        pinned = builder.pins(text)
        plan = EnvironmentPlan(
            name, None, unpacked.path(packages) if packages else None, in_lock=frozenset(builder.locked_names(text))
        )
        plans.append(plan)
        python_here = str(spec["python"]) if spec.get("python") else pythons.system_version()
        why = None
        if spec.get("repository"):
            why = f"it comes from {spec['repository']}: the installer builds it from there"
        elif not lock:
            why = "the archive has no lock of it (its server had not rebuilt it since TLJH)"
        elif pinned.get("jupyterhub") != hub_version():
            why = f"its lock pins jupyterhub {pinned.get('jupyterhub')}, this hub runs {hub_version()}"
        elif entry.get("python") and entry["python"] != python_here:
            why = f"its lock is for Python {entry['python']}, here it gets Python {python_here}"
        if why:
            if lock or name != "default":
                notes.append(f"environment {name} is built from its spec (newest versions), not its lock: {why}")
            if lock and packages and not os.path.isdir(paths.environment_prefix(name)):
                had = files.read_bytes(unpacked.path(packages)).decode()
                by_hand = sorted(set(builder.pins(had)) - builder.locked_names(text))
                if by_hand:
                    notes.append(f"environment {name}: installed by hand there, install again: {', '.join(by_hand)}")
            continue
        plan.lock, plan.locked = unpacked.path(lock), len(pinned)
    return plans, notes


def rebuild_environments(unpacked: Unpacked, say, undo: Undo) -> None:
    """Every environment the archive holds a lock of is built from that lock (`tljh env build NAME --from-lock`);
    what was installed by hand on top is installed again. Environments without a usable lock are left to the
    installer, which builds what config.yaml declares. A build that fails fails the restore."""
    from tljh.plugins import get_plugin_manager
    from tljh.settings.effective import load_settings
    from tljh.settings.environments import environment_names

    config = load_settings(paths.CONFIG_FILE).config  # the archive's, in place now
    # Every environment this restore or the installer after it may build: rollback puts back the builds
    # that served before, and takes out those that did not exist.
    for name in environment_names(config):
        undo.keep_build(name)
    pm = get_plugin_manager()
    for number, plan in enumerate(unpacked.environments, 1):
        if plan.lock:
            _build_from_lock(plan, f"{number}/{len(unpacked.environments)}", config, pm, say, undo)
        if plan.packages and os.path.isdir(paths.environment_prefix(plan.name)):
            _install_missing(plan, say)


def _build_from_lock(plan: EnvironmentPlan, progress, config, pm, say, undo: Undo) -> None:
    """Build ``plan.name`` from its lock, unless its build here has exactly those versions already."""
    from tljh.environments import builder, checks, commands, store

    name, lock = plan.name, files.read_bytes(plan.lock).decode()
    current = store.current(name)
    if current is not None and current.works() and _same_versions(current.lock(), lock):
        say(f"  environment {progress} {name}: its build here has the archive's versions already")
        return
    say(f"  environment {progress} {name}: building from the archive's lock ({plan.locked} packages)")
    undo.save_file(builder.failure_file(name))  # a failed build records why; a rollback takes that back too
    [outcome] = commands.build(config, pm, [name], from_lock=plan.lock, out=lambda line: say(f"    {line}"))
    if outcome.state == "failed":
        raise RestoreError(f"environment {name} could not be built from its lock: {checks.one_line(outcome.message)}")


def _same_versions(lock_a: str, lock_b: str) -> bool:
    from tljh.environments.builder import locked_names, pins

    return pins(lock_a) == pins(lock_b) and locked_names(lock_a) == locked_names(lock_b)


def _install_missing(plan: EnvironmentPlan, say) -> None:
    """Packages the environment had on the backed-up server that it lacks here: installed by hand there (the
    lock does not hold them), or everything for a TLJH-era environment without a lock."""
    from tljh.environments.checks import one_line

    name, prefix = plan.name, paths.environment_prefix(plan.name)
    installed = set(venvs.installed_packages(prefix))
    wanted, unreachable = [], []
    for line in files.read_bytes(plan.packages).decode().splitlines():
        if not line.strip():
            continue
        project = venvs.canonical(line.split("==")[0].split(" @ ")[0].strip())
        if project in installed or project in plan.in_lock:  # a spec build installs the lock's at its versions
            continue
        (unreachable if " @ file://" in line else wanted).append(line)
    if wanted:
        say(f"  environment {name}: installing {len(wanted)} package(s) it had beyond its lock: {', '.join(wanted)}")
        try:  # rollback puts back the whole build (Undo.keep_build)
            venvs.pip_install(prefix, wanted)
        except RuntimeError as e:  # uv's own words; the last line says which package
            raise RestoreError(f"environment {name}: {one_line(str(e))}") from None
    for line in unreachable:
        say(f"  environment {name}: {line} was installed from a local path; install it again by hand")


def stop_hub_and_servers(say, undo: Undo) -> None:
    from tljh.install.uninstall import hub_accounts, user_server_units

    accounts, _ = hub_accounts()  # the account table's: only the hub's servers
    servers = user_server_units(accounts)
    undo.add("start the hub again", lambda: systemd.restart(HUB_UNIT))
    systemd.stop(HUB_UNIT, check=False)
    for unit in servers:
        systemd.stop(unit, check=False)
    say(f"  stopped the hub{f' and {len(servers)} user server(s)' if servers else ''}")


def run_installer(timeout=1800) -> None:
    """The install command's last part, as on an upgrade: apply config.yaml, start the proxy and the hub."""
    result = subprocess.run([sys.executable, "-m", "tljh.installer"], timeout=timeout)
    if result.returncode != 0:
        raise RestoreError(f"the installer failed after the restore (exit {result.returncode}); see {paths.INSTALLER_LOG}")


def restore(archive, *, say=print, preflight=None, installer=run_installer) -> dict:
    """Check ``archive`` completely, then make this server what it holds. Returns a summary.

    A failure after the checks (an account that cannot be made, a disk that fills, a package that does not
    install, a hub that does not start) takes every change back and raises RestoreError."""
    archive = os.path.abspath(archive)
    started = time.monotonic()
    with backup.exclusive():
        os.makedirs(paths.STATE_DIR, mode=0o700, exist_ok=True)
        staging = tempfile.mkdtemp(prefix=os.path.basename(paths.RESTORE_STAGING_PREFIX), dir=paths.STATE_DIR)
        try:
            say(f"reading {archive}")
            unpacked = unpack(archive, staging)
            manifest = unpacked.manifest
            notes = check_fits(unpacked, preflight)
            say(
                f"  backup of {manifest.get('host')} made {manifest.get('created')}: {len(manifest.get('accounts', []))} "
                f"account(s), {unpacked.members} members, {backup.human_size(unpacked.size)}, checksums match"
            )
            for note in notes:
                say(f"  note: {note}")
            os.makedirs(paths.DEFAULT_BACKUP_DIR, mode=0o700, exist_ok=True)
            saved = os.path.join(paths.DEFAULT_BACKUP_DIR, time.strftime("before-restore-%Y%m%dT%H%M%SZ.tar.gz", time.gmtime()))
            previous = backup.create(saved, homes=False, say=lambda line: None, as_found=True)
            say(f"  this server's previous state is saved in {saved} (`tljh restore {saved}` brings it back)")
            for note in previous["notes"]:
                say(f"  note on the saved state: {note}")
            undo = Undo(os.path.join(staging, ".undo"))
            installer_ran = False
            try:
                stop_hub_and_servers(say, undo)
                ensure_groups(manifest, say, undo)
                uid_map = ensure_accounts(manifest, say, undo)
                gid_map = {gid: grp.getgrnam(name).gr_gid for name, gid in manifest.get("groups", {}).items()}
                place_state(unpacked, say, undo)
                homes = place_homes(unpacked, uid_map, gid_map, say, undo)
                create_missing_homes(manifest, undo)
                say(f"  config, secrets, hub database, passwords, certificates in place; {homes} home(s) restored")
                rebuild_environments(unpacked, say, undo)
                say("starting the hub with the restored configuration")
                installer_ran = True
                installer()
            except BaseException as e:
                _roll_back(e, undo, saved, installer if installer_ran else None, say)
                raise  # _roll_back raises RestoreError for errors; this is for KeyboardInterrupt and the like
            undo.commit()
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return {"seconds": round(time.monotonic() - started, 1), "saved": saved, "accounts": len(manifest.get("accounts", []))}


def _roll_back(error, undo: Undo, saved, installer, say):
    """After a failure part-way: every change back, the previous hub running again; then one line saying so."""
    why = str(error).splitlines()[0] if str(error) else type(error).__name__
    say(f"restore failed: {why}")
    say("taking back every change the restore made")
    failed = undo.rollback()
    if installer is not None:
        # The installer may have applied the archive's config to the proxy already: apply the previous one again.
        try:
            installer()
        except BaseException as e:  # noqa: BLE001 - reported in the one line below
            failed.append(f"the installer with the previous configuration: {e}")
    if failed:
        for line in failed:
            say(f"  could not take back: {line}")
        raise RestoreError(
            f"restore failed part-way ({why}) and {len(failed)} change(s) could not be taken back (listed above); "
            f"`tljh restore {saved}` puts the previous configuration and state back"
        ) from error
    _unlink(saved)
    if isinstance(error, Exception):
        raise RestoreError(f"restore failed part-way ({why}); every change was taken back: this server is as it was") from error
