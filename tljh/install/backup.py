"""One archive that brings a hub back on another server: ``sudo tljh backup FILE [--homes]`` and the daily timer.

What a backup holds is decided here, in :func:`create`; :mod:`tljh.install.restore` reads it back. The archive is
a gzip'd tar, root-only (0600), written to a temporary name and renamed when complete. Its first member,
``tljh-backup.json`` (the manifest), says what it is and what it holds; its last, ``tljh-backup.sha256``, lists
every member with the SHA-256 of its content, so a restore can tell a complete archive from a damaged or
truncated one before it changes anything.

Secrets are in it (cookie secret, password hashes, TLS keys, API tokens in the hub database): it is made 0600
and its directory 0700, and the docs say to keep it like the server's own /opt/tljh/state.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import grp
import hashlib
import io
import json
import os
import pwd
import re
import socket
import sqlite3
import stat
import tarfile
import tempfile
import time

import filelock

from tljh.settings.config_file import ConfigFileError
from tljh.settings.effective import effective_settings, load_settings
from tljh.system import files, paths, users, venvs

FORMAT = "tljh-backup"
# 2: environments are entries (lock, packages, build, python) instead of a package list's member name.
VERSION = 2
MANIFEST = "tljh-backup.json"
CHECKSUMS = "tljh-backup.sha256"
# Where each part lives inside the archive.
CONFIG_YAML = "config/config.yaml"
CONFIG_D = "config/jupyterhub_config.d"
COOKIE_SECRET = "state/jupyterhub_cookie_secret"
HUB_DATABASE = "state/jupyterhub.sqlite"
UNIX_ACCOUNTS = "state/unix-accounts.sqlite"
FIRSTUSE_PASSWORDS = "state/firstuse-passwords.json"
ACME_STORAGE = "certificates/acme"
TLS_FILES = "certificates/files"
ENVIRONMENTS = "environments"
REQUIREMENT_FILES = "environments/files"
HOMES = "homes"
# Scheduled backups are named tljh-backup-<UTC time>.tar.gz; retention only ever deletes names of this form.
SCHEDULED_NAME = re.compile(r"^tljh-backup-\d{8}T\d{6}Z\.tar\.gz$")
# gzip level 6: the CPU cost of 9 for a few percent less size is not worth it on a busy hub.
COMPRESSLEVEL = 6


class BackupError(Exception):
    """A backup could not be made; the message is one line for the admin."""


@dataclasses.dataclass
class Account:
    """A hub user's Unix account, as a restore recreates it (uid kept when free there, else a new one)."""

    name: str
    uid: int
    gid: int
    group: str  # primary group's name
    groups: list  # supplementary groups' names
    home: str
    shell: str
    gecos: str = ""


# --------------------------------------------------------------------------------------------
# What is on this server


def hub_accounts() -> list[Account]:
    """The hub users' Unix accounts: every member of jupyterhub-users (the spawner adds each account it makes)."""
    try:
        members = set(grp.getgrnam(users.USERS_GROUP).gr_mem)
    except KeyError:
        return []
    groups_of: dict[str, list] = {}
    for group in grp.getgrall():
        for member in group.gr_mem:
            groups_of.setdefault(member, []).append(group.gr_name)
    accounts = []
    for name in sorted(members):
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            continue
        try:
            primary = grp.getgrgid(entry.pw_gid).gr_name
        except KeyError:
            primary = str(entry.pw_gid)
        accounts.append(
            Account(
                name=name,
                uid=entry.pw_uid,
                gid=entry.pw_gid,
                group=primary,
                groups=sorted(g for g in groups_of.get(name, []) if g != primary),
                home=entry.pw_dir,
                shell=entry.pw_shell,
                gecos=entry.pw_gecos,
            )
        )
    return accounts


def group_ids(accounts) -> dict[str, int]:
    """gid of every group the accounts use (primary and supplementary): a restore keeps them where it can."""
    ids = {}
    for account in accounts:
        for name in [account.group, *account.groups]:
            with contextlib.suppress(KeyError):
                ids[name] = grp.getgrnam(name).gr_gid
    return dict(sorted(ids.items()))


def tls_files(config) -> list[str]:
    """The manual certificate and key config.yaml names (absolute paths), when set."""
    tls = config["https"]["tls"]
    return [path for path in (tls.get("cert"), tls.get("key")) if path]


def acme_storage_dirs() -> list[str]:
    """Where Caddy keeps certificates it obtained (ACME) and its account keys (the proxy's own state directory;
    a restore keeps the owner of the tree it replaces, the proxy's account)."""
    return [paths.PROXY_DATA_DIR]


@dataclasses.dataclass
class EnvironmentState:
    """What brings an environment back on another server."""

    lock: str | None  # its build's lock (what `tljh env show` ends with); None: a venv from before environments
    packages: str  # name==version of everything installed: packages installed by hand are not in the lock
    build: str | None = None
    python: str | None = None  # X.Y the lock was resolved for
    jupyterhub: str | None = None  # the hub version it was built for (the lock pins it)
    repository: str | None = None  # built from a repository: a lock does not rebuild it, the repository does

    def manifest_entry(self, name) -> dict:
        entry = {k: v for k, v in dataclasses.asdict(self).items() if k not in ("lock", "packages")}
        entry["lock"] = f"{ENVIRONMENTS}/{name}.lock" if self.lock else None
        entry["packages"] = f"{ENVIRONMENTS}/{name}.txt"
        return entry


def environment_states(config) -> dict[str, EnvironmentState]:
    """Every environment config.yaml declares that has a build here, ``default`` first."""
    from tljh.environments import store
    from tljh.settings.environments import environment_names

    found = {}
    for name in environment_names(config):
        prefix = paths.environment_prefix(name)
        build = store.current(name)
        if build is None and not os.path.exists(os.path.join(prefix, "pyvenv.cfg")):
            continue  # declared, never built: its spec (in config.yaml) is all there is
        packages = "".join(f"{line}\n" for line in venvs.requirements_of(prefix).values())
        if build is None:  # TLJH's /opt/tljh/user, not rebuilt since: no lock yet
            found[name] = EnvironmentState(None, packages)
            continue
        found[name] = EnvironmentState(
            lock=build.lock() or None,
            packages=packages,
            build=build.build,
            python=build.python,
            jupyterhub=build.record.get("hub_version"),
            repository=((build.record.get("spec") or {}).get("repository") or {}).get("url"),
        )
    return found


def requirement_files(config) -> tuple[list[str], list[str]]:
    """(paths, notes): the requirements files environments name (`environments.NAME.requirements`) and the files
    those include, part of the environments' spec; a note for each that cannot be read (not saved)."""
    from tljh.environments.spec import read_requirement_files

    found, notes = [], []
    for name, entry in sorted((config.get("environments") or {}).items()):
        path = (entry or {}).get("requirements")
        if not path or (entry or {}).get("repository"):
            continue
        try:
            found += [p for p, _ in read_requirement_files(path) if p not in found]
        except OSError as e:
            notes.append(f"environments.{name}.requirements: {e.filename} cannot be read ({e.strerror}): not saved")
    return found, notes


def installed_plugins() -> dict[str, str]:
    """{distribution: version} of the TLJH plugins installed in the hub environment."""
    from importlib.metadata import entry_points

    found = {}
    for ep in entry_points(group="tljh"):
        if ep.dist is not None:
            found[ep.dist.name] = ep.dist.version
    return dict(sorted(found.items()))


def _versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for name in ("the-littlest-jupyterhub", "jupyterhub"):
        with contextlib.suppress(PackageNotFoundError):
            found[name] = version(name)
    return found


def _os_name() -> str:
    with contextlib.suppress(OSError):
        with open("/etc/os-release") as f:
            for line in f:
                if line.startswith("PRETTY_NAME="):
                    return line.split("=", 1)[1].strip().strip('"')
    return "unknown"


def database_copy(db_file, target):
    """A consistent copy of a SQLite database that may be in use (SQLite's online backup API)."""
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.close(fd)
    with contextlib.closing(sqlite3.connect(f"file:{db_file}?mode=ro", uri=True)) as source:
        with contextlib.closing(sqlite3.connect(target)) as copy:
            source.backup(copy)


def firstuse_passwords(path=None) -> dict[str, str] | None:
    """FirstUseAuthenticator's stored password hashes {name: bcrypt hash}, None if it never stored any.

    Kept as JSON so a restore writes them with its own Python's dbm, whatever flavour made the file here."""
    import dbm

    path = path or paths.FIRSTUSE_PASSWORDS
    if not dbm.whichdb(path):
        return None
    with dbm.open(path, "r") as db:
        return {key.decode(): db[key].decode() for key in sorted(db.keys())}


# --------------------------------------------------------------------------------------------
# Writing the archive


class _PaddedReader:
    """Reads exactly ``size`` bytes from a file that may change while it is archived (a user writing it):
    what is missing at the end is zeros. The archive stays well-formed; the file is reported as changed."""

    def __init__(self, f, size, digest):
        self.f, self.left, self.digest, self.changed = f, size, digest, False

    def read(self, n=-1):
        n = self.left if n is None or n < 0 else min(n, self.left)
        data = self.f.read(n)
        if len(data) < n:
            self.changed = True
            data += b"\0" * (n - len(data))
        self.left -= len(data)
        self.digest.update(data)
        return data


class ArchiveWriter:
    """A tar.gz written to a temporary name next to ``target``; renamed to ``target`` by :meth:`finish`."""

    def __init__(self, target):
        self.target = os.path.abspath(target)
        directory = os.path.dirname(self.target)
        fd, self.tmp = tempfile.mkstemp(prefix=f".{os.path.basename(target)}.", suffix=".partial", dir=directory)
        os.fchmod(fd, 0o600)
        self.raw = os.fdopen(fd, "wb")
        self.tar = tarfile.open(fileobj=self.raw, mode="w:gz", compresslevel=COMPRESSLEVEL, format=tarfile.PAX_FORMAT)
        self.entries: dict[str, str] = {}  # member -> sha256 of content, "dir" or "link:<target>"
        self.changed: list[str] = []  # files that changed while they were read
        self.skipped: list[str] = []  # sockets, fifos, devices: nothing a restore could bring back

    def _info(self, name, st=None, kind=tarfile.REGTYPE, size=0):
        info = tarfile.TarInfo(name)
        info.type = kind
        info.size = size
        if st is not None:
            info.mode = stat.S_IMODE(st.st_mode)
            info.mtime = int(st.st_mtime)
            info.uid, info.gid = st.st_uid, st.st_gid
            with contextlib.suppress(KeyError):
                info.uname = pwd.getpwuid(st.st_uid).pw_name
            with contextlib.suppress(KeyError):
                info.gname = grp.getgrgid(st.st_gid).gr_name
        else:
            info.mode, info.mtime, info.uname, info.gname = 0o600, int(time.time()), "root", "root"
        return info

    def add_bytes(self, name, data: bytes, mode=0o600):
        info = self._info(name, size=len(data))
        info.mode = mode
        self.tar.addfile(info, io.BytesIO(data))
        self.entries[name] = hashlib.sha256(data).hexdigest()

    def add_path(self, name, path):
        """A file, symlink or directory tree (not following symlinks), under member ``name``."""
        st = os.lstat(path)
        if stat.S_ISDIR(st.st_mode):
            self.tar.addfile(self._info(name, st, tarfile.DIRTYPE))
            self.entries[name] = "dir"
            for child in sorted(os.listdir(path)):
                self.add_path(f"{name}/{child}", os.path.join(path, child))
        elif stat.S_ISLNK(st.st_mode):
            info = self._info(name, st, tarfile.SYMTYPE)
            info.linkname = os.readlink(path)
            self.tar.addfile(info)
            self.entries[name] = f"link:{info.linkname}"
        elif stat.S_ISREG(st.st_mode):
            try:
                f = open(path, "rb")
            except FileNotFoundError:  # deleted since it was listed
                return
            with f:
                st = os.fstat(f.fileno())
                digest = hashlib.sha256()
                reader = _PaddedReader(f, st.st_size, digest)
                self.tar.addfile(self._info(name, st, size=st.st_size), reader)
            self.entries[name] = digest.hexdigest()
            if reader.changed:
                self.changed.append(path)
        else:
            self.skipped.append(path)

    def finish(self):
        """Write the checksums member, flush to disk, and put the archive at its final name (atomically)."""
        listing = json.dumps(self.entries, indent=0, sort_keys=True).encode()
        info = self._info(CHECKSUMS, size=len(listing))
        self.tar.addfile(info, io.BytesIO(listing))
        self.tar.close()
        self.raw.flush()
        os.fsync(self.raw.fileno())
        self.raw.close()
        os.rename(self.tmp, self.target)

    def abort(self):
        with contextlib.suppress(Exception):
            self.tar.close()
        with contextlib.suppress(Exception):
            self.raw.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.tmp)


@contextlib.contextmanager
def exclusive(timeout=0):
    """One backup or restore at a time."""
    os.makedirs(os.path.dirname(paths.BACKUP_LOCK), mode=0o755, exist_ok=True)
    try:
        with filelock.FileLock(paths.BACKUP_LOCK, timeout=timeout, mode=0o600):
            yield
    except filelock.Timeout:
        raise BackupError("another backup or restore is running (tljh status shows it); try again when it ends") from None


def create(target, *, homes=False, say=print, as_found=False) -> dict:
    """Write the backup archive ``target``. Returns what the manifest says, plus ``size``, ``seconds`` and ``notes``.

    Refuses (BackupError) when ``target`` exists or config.yaml cannot be read. ``as_found`` (a restore saving
    the state it replaces, which may be broken: that is often why one restores) saves an unreadable config.yaml
    as it is and leaves out certificate files it names that are missing, with a note for each."""
    started = time.monotonic()
    target = os.path.abspath(target)
    if os.path.lexists(target):
        raise BackupError(f"{target} exists: give a new file name (a backup never overwrites a file)")
    if not os.path.isdir(os.path.dirname(target)):
        raise BackupError(f"{os.path.dirname(target)} is not a directory")
    notes = []
    try:
        config = load_settings(paths.CONFIG_FILE).config
    except ConfigFileError as e:
        if not as_found:
            raise BackupError(f"config.yaml cannot be read ({e}): fix it first; a backup of it would not restore") from None
        notes.append(f"config.yaml cannot be read ({e}): saved as it is; fix it in the archive before restoring that")
        config = effective_settings({}).config
    accounts = hub_accounts()
    passwords = firstuse_passwords()
    environments = environment_states(config)
    requirements, unreadable = requirement_files(config)
    notes += unreadable
    tls = tls_files(config)
    missing_tls = [p for p in tls if not os.path.isfile(p)]
    if missing_tls and not as_found:
        raise BackupError(f"https.tls names {missing_tls[0]}, which does not exist: fix https.tls first")
    notes += [f"https.tls names {p}, which does not exist: not saved" for p in missing_tls]
    tls = [p for p in tls if p not in missing_tls]
    acme = [d for d in acme_storage_dirs() if os.path.isdir(d)]
    manifest = {
        "format": FORMAT,
        "version": VERSION,
        "created": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "host": socket.gethostname(),
        "os": _os_name(),
        "versions": _versions(),
        "homes": homes,
        "accounts": [dataclasses.asdict(a) for a in accounts],
        "groups": group_ids(accounts),
        "tls_files": {f"{TLS_FILES}/{i}": {"path": p, "mode": stat.S_IMODE(os.stat(p).st_mode)} for i, p in enumerate(tls)},
        "environments": {name: state.manifest_entry(name) for name, state in environments.items()},
        "requirement_files": {
            f"{REQUIREMENT_FILES}/{i}": {"path": p, "mode": stat.S_IMODE(os.stat(p).st_mode)} for i, p in enumerate(requirements)
        },
        "plugins": installed_plugins(),
        "hub_database_revision": None,
    }
    writer = ArchiveWriter(target)
    try:
        with tempfile.TemporaryDirectory(dir=paths.STATE_DIR, prefix="backup-") as tmp:
            db_copy = None
            if os.path.exists(paths.HUB_DATABASE):
                db_copy = os.path.join(tmp, "jupyterhub.sqlite")
                database_copy(paths.HUB_DATABASE, db_copy)
                from tljh.install import hub_database

                manifest["hub_database_revision"] = hub_database.stamped_revision(db_copy)
            say(f"writing {target}")
            writer.add_bytes(MANIFEST, json.dumps(manifest, indent=2, sort_keys=True).encode() + b"\n")
            if os.path.exists(paths.CONFIG_FILE) or not as_found:
                writer.add_bytes(CONFIG_YAML, files.read_bytes(paths.CONFIG_FILE))
            else:
                notes.append(f"{paths.CONFIG_FILE} does not exist: not saved")
            if os.path.isdir(paths.JUPYTERHUB_CONFIG_D):
                writer.add_path(CONFIG_D, paths.JUPYTERHUB_CONFIG_D)
            if os.path.exists(paths.COOKIE_SECRET_FILE):
                writer.add_path(COOKIE_SECRET, paths.COOKIE_SECRET_FILE)
            if db_copy:
                say(f"  hub database: a consistent copy ({human_size(os.path.getsize(db_copy))})")
                writer.add_path(HUB_DATABASE, db_copy)
            if os.path.exists(paths.UNIX_ACCOUNTS_DB):
                # Hub name -> Unix name is the table's decision, not the rule's (hashed and adopted names): a
                # restore without it would give people other accounts, or refuse them.
                accounts_copy = os.path.join(tmp, "unix-accounts.sqlite")
                database_copy(paths.UNIX_ACCOUNTS_DB, accounts_copy)
                writer.add_path(UNIX_ACCOUNTS, accounts_copy)
            if passwords is not None:
                writer.add_bytes(FIRSTUSE_PASSWORDS, json.dumps(passwords, indent=1).encode())
            for member, info in manifest["tls_files"].items():
                writer.add_path(member, info["path"])
            for directory in acme:
                writer.add_path(ACME_STORAGE, directory)
            for member, info in manifest["requirement_files"].items():
                # Its content, never a link: a restore writes it back as a plain file.
                writer.add_bytes(member, files.read_bytes(info["path"]), mode=info["mode"])
            for name, state in environments.items():
                entry = manifest["environments"][name]
                if state.lock:
                    writer.add_bytes(entry["lock"], state.lock.encode(), mode=0o644)
                writer.add_bytes(entry["packages"], state.packages.encode(), mode=0o644)
            locked = [name for name, state in environments.items() if state.lock]
            say(
                f"  config, secrets, {len(manifest['tls_files'])} certificate file(s), {len(accounts)} account(s), "
                f"{len(environments)} environment(s) ({len(locked)} with a lock: {', '.join(locked) or 'none'})"
            )
            if homes:
                for number, account in enumerate(accounts, 1):
                    if os.path.isdir(account.home):
                        say(f"  home {number}/{len(accounts)}: {account.home}")
                        writer.add_path(f"{HOMES}/{account.name}", account.home)
        writer.finish()
    except BaseException:
        writer.abort()
        raise
    result = dict(manifest, file=target, size=os.path.getsize(target), seconds=round(time.monotonic() - started, 1), notes=notes)
    for note in unreadable:
        say(f"note: {note}")
    for path in writer.changed:
        say(f"warning: {path} changed while it was read; the archive holds it as it was then, padded to its first size")
    if writer.skipped:
        say(f"note: {len(writer.skipped)} sockets, pipes or device files in homes were not archived")
    return result


# --------------------------------------------------------------------------------------------
# Scheduled backups and what `tljh status` reports


def record_last(result: dict | None, error: str | None = None):
    """Remember the last backup (file, time, size) or why it failed, for `tljh status`."""
    record = {"time": time.time(), "ok": error is None, "error": error}
    if result:
        record.update(file=result["file"], size=result["size"], homes=result["homes"], seconds=result["seconds"])
    files.write_json(paths.LAST_BACKUP_FILE, record)


def last_backup() -> dict | None:
    try:
        with open(paths.LAST_BACKUP_FILE) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def scheduled_name(now=None) -> str:
    return time.strftime("tljh-backup-%Y%m%dT%H%M%SZ.tar.gz", time.gmtime(now))


def prune(directory, keep) -> list[str]:
    """Delete the oldest scheduled backups in ``directory`` beyond the newest ``keep``. Other files are never touched."""
    names = sorted(n for n in os.listdir(directory) if SCHEDULED_NAME.match(n))
    removed = []
    for name in names[: max(0, len(names) - keep)]:
        os.unlink(os.path.join(directory, name))
        removed.append(name)
    return removed


def run_scheduled(say=print) -> int:
    """What tljh-backup.service runs every day: a backup if backup.daily is true, then retention."""
    settings = load_settings(paths.CONFIG_FILE)
    options = settings.config["backup"]
    if not options["daily"]:
        say("backup.daily is false: no scheduled backup (sudo tljh-config set backup.daily true turns it on)")
        return 0
    directory = options["directory"]
    os.makedirs(directory, mode=0o700, exist_ok=True)
    os.chmod(directory, 0o700)
    try:
        with exclusive(timeout=600):
            target = os.path.join(directory, scheduled_name())
            while os.path.exists(target):  # two runs within one second
                time.sleep(1)
                target = os.path.join(directory, scheduled_name())
            result = create(target, homes=options["homes"], say=say)
            removed = prune(directory, options["keep"])
    except (BackupError, OSError) as e:
        record_last(None, error=str(e))
        raise
    record_last(result)
    say(f"backed up to {result['file']} ({human_size(result['size'])}, {result['seconds']} s)")
    if removed:
        say(f"removed {len(removed)} older backup(s) (backup.keep = {options['keep']}): {', '.join(removed)}")
    return 0


def human_size(size: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TB"
