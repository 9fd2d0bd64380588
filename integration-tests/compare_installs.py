"""Do two commits install the same server? Fresh installs of each, same flags and config, compared file by file.

    sudo .venv-test/bin/python integration-tests/compare_installs.py OLD_COMMIT [NEW_COMMIT] [--os debian-12]

For each commit: boot a fresh machine, install that commit (``git archive``) with the real bootstrap, and take a
snapshot of the whole file system outside the two Python environments (/opt/tljh/hub, /opt/tljh/user) and
outside what every boot changes (/proc, /run, logs, caches): every path's type, mode, owner, group, and its
content hash (or link target). Snapshots are taken at three moments:

1. ``fresh``: right after ``bootstrap --admin admin:...``;
2. ``configured``: after ``tljh-config`` changes (base_url, limits, culler, allowed users, http.address),
   ``reload``, ``reload proxy``, and a rerun of bootstrap;
3. ``spawned``: after the admin logged in under /jhub/, started a server and ran 1 + 1 in a kernel.

Files whose content differs by nature between two installs (random secrets, databases, timestamps, the hub
fingerprint that hashes the installed code) are compared by type, mode and owner only: VOLATILE lists them,
each with its reason. Exit status 0 when every snapshot is identical, 1 otherwise (the differences are printed).
"""

import argparse
import asyncio
import fnmatch
import json
import os
import subprocess
import sys
import time

from hubclient import HubClient
from machine import REPO_ROOT, Machine, log

ADMIN, PASSWORD = "admin", "admin-password-1"
CONFIG_COMMANDS = [
    "tljh-config set base_url /jhub/",
    "tljh-config set limits.memory 1G",
    "tljh-config set limits.cpu 1.5",
    "tljh-config set services.cull.timeout 1200",
    "tljh-config add-item users.allowed dave",
    "tljh-config set http.address 0.0.0.0",
    "tljh-config reload",
    "tljh-config reload proxy",
]

# Trees not compared at all: pseudo file systems, what every boot or apt run rewrites, the environments
# (package installs, compared by the suite's own tests) and the source copy we put there.
SKIP_TREES = [
    "/proc", "/sys", "/dev", "/run", "/tmp", "/var/tmp", "/var/log", "/var/cache", "/var/lib/systemd",
    "/var/lib/apt", "/var/lib/dpkg", "/opt/tljh/hub", "/opt/tljh/user", "/srv/tljh-src", "/root/.cache",
    "/usr/local/share/ca-certificates", "/etc/ssl/certs", "/usr/share/ca-certificates",
]
# Compared by type, mode and owner only (content differs between any two installs).
VOLATILE = {
    "/etc/machine-id": "a new id per machine",
    "/etc/hostname": "the test machine's name",
    "/etc/hosts": "the test machine's name",
    "/etc/shadow": "password-change dates of the accounts the hub creates",
    "/etc/shadow-": "backup useradd keeps",
    "/etc/gshadow-": "backup groupadd keeps",
    "/etc/group-": "backup groupadd keeps",
    "/etc/passwd-": "backup useradd keeps",
    "/etc/subuid-": "backup useradd keeps",
    "/etc/subgid-": "backup useradd keeps",
    "/opt/tljh/installer.log": "timestamps and durations",
    "/opt/tljh/state/jupyterhub.sqlite": "the hub database (tokens, timestamps)",
    "/opt/tljh/state/jupyterhub_cookie_secret": "random secret",
    "/opt/tljh/state/passwords.dbm*": "bcrypt hashes with random salts",
    "/opt/tljh/state/hub.fingerprint": "hashes the installed tljh code itself, which is what changed",
    "/opt/tljh/state/caddy/router-config/caddy/autosave.json": "holds the user server's route (a random port)",
    "/opt/tljh/state/caddy/data/*": "Caddy's instance id and locks",
    "/opt/tljh/state/caddy/edge-config/*": "Caddy's instance id",
    "/opt/tljh/state/caddy/router-data/*": "Caddy's instance id",
    "/var/lib/tljh-proxy/*": "Caddy's instance id and locks",
    "/home/jupyter-admin/*": "the user's own files (JupyterLab workspaces, kernel connection files)",
    "/var/lib/sss/*": "caches",
}

# Paths this change renames on purpose (old commit's path -> new commit's): compared with each other.
RENAMED = {
    # issue 11: the config lock is TLJH's (filelock on config.yaml.lock), so TLJH's tools and tljh-config
    # serialise; the last-good copy's lock follows the same naming.
    "/opt/tljh/config/.config.yaml.lock": "/opt/tljh/config/config.yaml.lock",
    "/opt/tljh/state/.config.last-good.yaml.lock": "/opt/tljh/state/config.last-good.yaml.lock",
}

SNAPSHOT = r"""
import hashlib, json, os, stat, sys
skip, out = json.loads(sys.argv[1]), {}
def visit(path):
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    kind = "l" if stat.S_ISLNK(st.st_mode) else "d" if stat.S_ISDIR(st.st_mode) else "f" if stat.S_ISREG(st.st_mode) else "o"
    entry = [kind, oct(stat.S_IMODE(st.st_mode)), st.st_uid, st.st_gid, None]
    if kind == "l":
        entry[4] = os.readlink(path)
    elif kind == "f":
        with open(path, "rb") as f:
            entry[4] = hashlib.sha256(f.read()).hexdigest()[:16]
    out[path] = entry
    if kind == "d":
        for name in sorted(os.listdir(path)):
            child = os.path.join(path, name)
            if child not in skip and name != "__pycache__":
                visit(child)
visit("/")
print(json.dumps(out))
"""


def volatile(path):
    return next((why for pattern, why in VOLATILE.items() if fnmatch.fnmatch(path, pattern)), None)


def snapshot(machine):
    result = machine.run(["python3", "-c", SNAPSHOT, json.dumps(SKIP_TREES)], timeout=600)
    return json.loads(result.stdout)


def install_commit(machine, commit):
    archive = subprocess.run(["git", "-C", str(REPO_ROOT), "archive", "--format=tar", "--prefix=tljh-src/", commit],
                             capture_output=True, check=True)
    machine.run(["rm", "-rf", "/srv/tljh-src"])
    machine.copy_tar(archive.stdout, "/srv")
    started = time.monotonic()
    machine.run(["python3", "/srv/tljh-src/bootstrap/bootstrap.py", "--admin", f"{ADMIN}:{PASSWORD}"],
                env={"TLJH_BOOTSTRAP_PIP_SPEC": "/srv/tljh-src"}, timeout=1800)
    return time.monotonic() - started


async def spawn_and_run_code(machine):
    async with HubClient(machine.url("/jhub/")) as admin:
        await admin.login(ADMIN, PASSWORD)
        await admin.check_one_plus_one()  # starts the server, runs 1 + 1 in a kernel, stops the server


def snapshots_of(commit, os_name):
    shots = {}
    with Machine.boot(os_name) as m:
        seconds = install_commit(m, commit)
        log(f"{commit}: installed in {seconds:.0f} s")
        shots["fresh"] = snapshot(m)
        for command in CONFIG_COMMANDS:
            m.run(command, timeout=300)
        install_commit(m, commit)
        shots["configured"] = snapshot(m)
        asyncio.run(spawn_and_run_code(m))
        shots["spawned"] = snapshot(m)
    return shots


def compare(old, new, renamed=None):
    """Lines describing every difference that counts. ``renamed``: old path -> new path, compared together."""
    renamed = RENAMED if renamed is None else renamed
    lines = []
    for path in sorted(set(old) | set(new)):
        if path in renamed.values():
            continue  # compared under its old name
        a, b = old.get(path), new.get(renamed.get(path, path))
        if a is None or b is None:
            lines.append(f"{'only in new' if a is None else 'only in old'}: {path} {a or b}")
            continue
        if volatile(path):
            a, b = a[:4], b[:4]
        if a != b:
            lines.append(f"differs: {path}: old {a} new {b}")
    return lines


def resolve(commit):
    return subprocess.run(["git", "-C", str(REPO_ROOT), "rev-parse", "--short", commit], capture_output=True,
                          text=True, check=True).stdout.strip()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("old")
    parser.add_argument("new", nargs="?", default="HEAD")
    parser.add_argument("--os", default="debian-12")
    parser.add_argument("--save", help="write both snapshots to this JSON file")
    parser.add_argument("--load", help="compare the snapshots saved in this file instead of installing")
    args = parser.parse_args(argv)
    old, new = resolve(args.old), resolve(args.new)
    started = time.monotonic()
    if args.load:
        with open(args.load) as f:
            shots = json.load(f)
    else:
        shots = {old: snapshots_of(old, args.os), new: snapshots_of(new, args.os)}
    if args.save:
        with open(args.save, "w") as f:
            json.dump(shots, f)
    identical = True
    for phase in ("fresh", "configured", "spawned"):
        a, b = shots[old][phase], shots[new][phase]
        differences = compare(a, b)
        counted = sum(1 for p in a if not volatile(p))
        print(f"{phase}: {len(a)} paths ({counted} compared by content, {len(a) - counted} volatile by metadata): "
              + ("identical" if not differences else f"{len(differences)} differences"))
        for line in differences:
            print(f"  {line}")
        identical &= not differences
    for before, after in RENAMED.items():
        print(f"renamed on purpose (compared with each other above): {before} -> {after}")
    print(f"{old} vs {new} on {args.os}: {'IDENTICAL' if identical else 'DIFFERENT'} "
          f"({time.monotonic() - started:.0f} s)")
    return 0 if identical else 1


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    sys.exit(main())
