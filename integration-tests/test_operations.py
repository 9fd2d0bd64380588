"""Issue 16: operating the hub. Backup on one machine and restore on a fresh one; users in bulk from a CSV file;
the way out to Zero to JupyterHub; tljh status as the admin's first stop and the daily backup timer.

Everything as an admin does it: sudo tljh ..., tljh-config, logins through the public port.
"""

import asyncio
import base64
import concurrent.futures
import difflib
import hashlib
import io
import json
import os
import ssl
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest
from hubclient import HubClient, HubError
from installed import installed_machine
from machine import Machine
from ruamel.yaml import YAML

ADMIN = ("admin", "admin-password-1")
DOMAIN = "hub.test"
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
import z2jh_chart  # noqa: E402  (the chart's value paths and types, checked against its schema: see the rules' header)

CHART_RULES = z2jh_chart.CHART_RULES


def read_file(m, path) -> bytes:
    return subprocess.run(m.nsenter_prefix() + ["cat", path], capture_output=True, check=True).stdout


def write_file(m, path, data: bytes, mode=0o600):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo(Path(path).name)
        info.size, info.mode = len(data), mode
        tar.addfile(info, io.BytesIO(data))
    m.copy_tar(buf.getvalue(), str(Path(path).parent))


async def _logins(base_url, people, *, resolve=None, ssl_context=True, concurrency=6):
    """Log each (name, password) in through the login form; returns {name: error or None}."""
    limit = asyncio.Semaphore(concurrency)
    results = {}

    async def one(name, password):
        async with limit, HubClient(base_url, resolve=resolve, ssl=ssl_context) as client:
            try:
                await client.login(name, password)
                results[name] = None
            except HubError as e:
                results[name] = str(e)

    await asyncio.gather(*(one(n, p) for n, p in people))
    return results


def logins(m, people, **kw):
    return asyncio.run(_logins(m.url(), people, **kw))


# --------------------------------------------------------------------------------------------
# Backup on A, restore on a fresh B


def state_digest(m):
    """Everything a restore may change on B, except the live hub database (the hub writes it while it runs)."""
    return m.run(
        "find /opt/tljh/config /opt/tljh/state /home /var/backups /etc/ssl/hub -xdev \\( -type f -o -type l \\) "
        "! -name 'jupyterhub.sqlite*' -print0 2>/dev/null | sort -z | xargs -0 sha256sum; getent passwd; getent group",
        check=False,
    ).stdout


def assert_unchanged(m, before):
    """state_digest(m) is still ``before``; the message lists only the lines that differ."""
    after = state_digest(m)
    changed = [line for line in difflib.unified_diff(before.splitlines(), after.splitlines(), lineterm="", n=0)
               if line[:1] in "+-" and line[:3] not in ("+++", "---")]
    assert not changed, "\n".join(changed)


def _install(m, admin):
    result = m.install_tljh("--admin", admin, check=False)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


@pytest.fixture(scope="module")
def two_machines(os_name):
    """A and B, both freshly installed (in parallel: two installs cost about one on the wall clock)."""
    with Machine.boot(os_name) as a, Machine.boot(os_name) as b:
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            for f in [pool.submit(_install, a, ":".join(ADMIN)), pool.submit(_install, b, "other:other-password-1")]:
                f.result()
        yield a, b


def _tls_context(cert_pem: bytes):
    context = ssl.create_default_context(cadata=cert_pem.decode())
    return context


def served_certificate(m):
    """The certificate B's port 443 serves for hub.test (PEM), fetched from the host like a browser would."""
    der = None
    import socket

    with socket.create_connection((m.address, 443), timeout=10) as sock:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        with context.wrap_socket(sock, server_hostname=DOMAIN) as tls:
            der = tls.getpeercert(binary_form=True)
    return ssl.DER_cert_to_PEM_cert(der)


def with_extra_package(archive: bytes, member_name: str, requirement: str) -> bytes:
    """The archive with one more line in an environment's lock or package list, its checksum list updated: a
    well-formed backup whose restore fails at the environment step."""
    out = io.BytesIO()
    with tarfile.open(fileobj=io.BytesIO(archive)) as src, tarfile.open(fileobj=out, mode="w:gz") as dst:
        checksums = None
        for member in src:
            data = src.extractfile(member).read() if member.isreg() else None
            if member.name == member_name:
                data += f"{requirement}\n".encode()
                checksums_change = hashlib.sha256(data).hexdigest()
            if member.name == "tljh-backup.sha256":
                checksums = json.loads(data)
                checksums[member_name] = checksums_change
                data = json.dumps(checksums).encode()
            if data is not None:
                member.size = len(data)
            dst.addfile(member, io.BytesIO(data) if data is not None else None)
    assert checksums is not None
    return out.getvalue()


# The extra environment's one package, from a package index served in the machine: A's index has 1.0 only, B's
# also 2.0, so B building `data` from its spec would get 2.0; from the archive's lock it gets 1.0.
PROBE = "tljh-restore-probe"
INDEX_PORT = 18090
INDEX = f"UV_EXTRA_INDEX_URL=http://127.0.0.1:{INDEX_PORT}/"


def probe_wheel(version) -> tuple[str, bytes]:
    """A pure-Python wheel of PROBE (written here: no build tools or network needed)."""
    module, dist = PROBE.replace("-", "_"), f"{PROBE.replace('-', '_')}-{version}"
    contents = {
        f"{module}/__init__.py": f"VERSION = {version!r}\n",
        f"{dist}.dist-info/METADATA": f"Metadata-Version: 2.1\nName: {PROBE}\nVersion: {version}\n",
        f"{dist}.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: tljh-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = []
    for path, text in contents.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(text.encode())}")
    contents[f"{dist}.dist-info/RECORD"] = "\n".join(record + [f"{dist}.dist-info/RECORD,,"]) + "\n"
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as wheel:
        for path, text in contents.items():
            wheel.writestr(path, text)
    return f"{dist}-py3-none-any.whl", out.getvalue()


def serve_index(m, versions):
    """A simple package index (a directory listing per project, as PEP 503 allows) on the machine's loopback."""
    for version in versions:
        name, data = probe_wheel(version)
        write_file(m, f"/srv/index/{PROBE}/{name}", data, mode=0o644)
    m.run(f"systemd-run --unit=local-index -p WorkingDirectory=/srv/index python3 -m http.server {INDEX_PORT} --bind 127.0.0.1")
    m.run(f"for i in $(seq 50); do curl -sf http://127.0.0.1:{INDEX_PORT}/{PROBE}/ >/dev/null && exit 0; sleep 0.2; done; exit 1")


def probe_version(m):
    return m.run(f"/opt/tljh/envs/data/bin/python -c 'import importlib.metadata as m; print(m.version(\"{PROBE}\"))'").stdout.strip()


def test_backup_on_a_restore_on_fresh_b(two_machines):
    a, b = two_machines
    # --- A: HTTPS with a manual certificate, two users with FirstUse passwords, files in their homes, a package
    # installed by hand in the user environment.
    a.run(
        f"mkdir -p /etc/ssl/hub && cd /etc/ssl/hub && openssl req -x509 -newkey rsa:2048 -nodes -days 30 "
        f"-subj /CN={DOMAIN} -addext subjectAltName=DNS:{DOMAIN} -keyout hub.key -out hub.pem 2>/dev/null && chmod 600 hub.key"
    )
    cert = read_file(a, "/etc/ssl/hub/hub.pem")
    for command in (
        "set https.tls.cert /etc/ssl/hub/hub.pem",
        "set https.tls.key /etc/ssl/hub/hub.key",
        "set https.enabled true",
        "reload proxy",
    ):
        a.run(f"tljh-config {command}")
    write_file(a, "/root/two.csv", b"name,admin,groups,password\nalice,no,lab,alice-password-1\nbob,no,,bob-password-1\n")
    a.run("tljh users import /root/two.csv")
    a.run("/opt/tljh/user/bin/pip install --quiet pyjokes==0.8.3", timeout=300)
    # An extra environment, `data`, with one package from the local index (1.0, the only version A's index has).
    serve_index(a, ["1.0"])
    a.run(f"{INDEX} tljh-config add-item environments.data.packages {PROBE}", timeout=300)
    a.run(f"{INDEX} tljh env build data", timeout=1200)
    a.run("tljh-config reload hub")
    assert probe_version(a) == "1.0"
    https = {"resolve": {DOMAIN: a.address}, "ssl_context": _tls_context(cert)}

    async def on_a():
        for name, password in (("alice", "alice-password-1"), ("bob", "bob-password-1")):
            async with HubClient(f"https://{DOMAIN}/", resolve=https["resolve"], ssl=https["ssl_context"]) as c:
                await c.login(name, password)
                await c.start_server()
                await c.api("PUT", f"user/{name}/api/contents/notes.txt", expect=(200, 201),
                            json={"type": "file", "format": "text", "content": f"{name}'s notes"})
                await c.stop_server()

    asyncio.run(on_a())
    uid_on_a = a.run("id -u jupyter-alice").stdout.strip()
    result = a.run("tljh backup /root/hub.tar.gz --homes")
    assert "backed up 2 account(s)" in result.stdout, result.stdout
    assert "2 environment(s) (2 with a lock: default, data)" in result.stdout, result.stdout
    print(result.stdout, os.getloadavg())  # the size and time, for the report (pytest -rP shows it)
    assert a.run("stat -c %a /root/hub.tar.gz").stdout.strip() == "600"
    archive = read_file(a, "/root/hub.tar.gz")

    # --- B: a fresh install; alice's uid is taken there, so she gets another one and her files follow.
    b.run(f"useradd --uid {uid_on_a} squatter")
    serve_index(b, ["1.0", "2.0"])
    write_file(b, "/root/hub.tar.gz", archive)
    write_file(b, "/root/cut.tar.gz", archive[: len(archive) * 2 // 3])
    write_file(b, "/root/other.tar.gz", subprocess.run(["tar", "czf", "-", "-C", str(CHART_RULES.parent), CHART_RULES.name], capture_output=True, check=True).stdout)
    # B's admin has logged in once: a first login records the account in the hub's account table, part of
    # the state compared below (later logins change nothing there).
    assert logins(b, [("other", "other-password-1")]) == {"other": None}
    before = state_digest(b)
    for bad, words in (("/root/cut.tar.gz", "truncated"), ("/root/other.tar.gz", "not a tljh backup")):
        refused = b.run(f"tljh restore --yes {bad}", check=False)
        assert refused.returncode == 2, refused.stdout + refused.stderr
        assert words in refused.stderr and "nothing was changed" in refused.stderr, refused.stderr
        assert_unchanged(b, before)
    assert logins(b, [("other", "other-password-1")]) == {"other": None}  # B's own hub still works

    # A restore that fails part-way (accounts, config, homes already placed, default environment as the lock has
    # it; then `data`'s lock names a package the index does not have) takes every change back, the environments
    # too, and B's own hub runs again.
    default_build = read_file(b, "/opt/tljh/user/tljh-environment.json")
    write_file(b, "/root/unbuildable.tar.gz",
               with_extra_package(archive, "environments/data.lock", "tljh-no-such-package-16==1.0.0"))
    failed = b.run(f"{INDEX} tljh restore --yes /root/unbuildable.tar.gz", check=False, timeout=1200)
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert "accounts: 1 created with their uid, 1 with a new uid" in failed.stdout, failed.stdout
    assert "data: building from the archive's lock" in failed.stdout, failed.stdout
    assert "tljh-no-such-package-16" in failed.stderr and "every change was taken back" in failed.stderr, failed.stderr
    assert_unchanged(b, before)
    assert read_file(b, "/opt/tljh/user/tljh-environment.json") == default_build
    assert b.run("test -e /opt/tljh/envs/data", check=False).returncode == 1
    assert b.run("ls -a /opt/tljh /opt/tljh/envs | grep -c before-restore", check=False).stdout.strip() == "0"
    assert logins(b, [("other", "other-password-1")]) == {"other": None}

    # Restoring is also how a broken server is repaired: B's config.yaml no longer parses.
    b.run("echo 'users: [unclosed' >> /opt/tljh/config/config.yaml")
    restored = b.run(f"{INDEX} tljh restore --yes /root/hub.tar.gz", check=False, timeout=1200)
    assert restored.returncode == 0, restored.stdout[-3000:] + restored.stderr[-3000:]
    assert "note on the saved state: config.yaml cannot be read" in restored.stdout, restored.stdout
    assert "1 created with their uid, 1 with a new uid" in restored.stdout, restored.stdout
    print(restored.stdout[-600:], os.getloadavg())
    uid_on_b = b.run("id -u jupyter-alice").stdout.strip()
    assert uid_on_b != uid_on_a
    assert b.run("stat -c %U:%G /home/jupyter-alice/notes.txt /home/jupyter-bob/notes.txt").stdout.split() == [
        "jupyter-alice:jupyter-alice", "jupyter-bob:jupyter-bob"]
    assert b.run("/opt/tljh/user/bin/python -c 'import importlib.metadata as m; print(m.version(\"pyjokes\"))'").stdout.strip() == "0.8.3"
    # The extra environment is there, from A's lock: 1.0, although B's index offers 2.0; and the installer that
    # ran after the restore found it up to date (it did not rebuild it from its spec).
    assert "2/2 data: building from the archive's lock" in restored.stdout, restored.stdout
    assert probe_version(b) == "1.0"
    listed = b.run("tljh env list").stdout
    assert any(line.split()[:4] == ["data", "up", "to", "date"] for line in listed.splitlines()), listed
    [built] = [line.split()[2] for line in restored.stdout.splitlines() if line.strip().startswith("data: build ")]
    assert f"# build {built}:" in b.run("tljh env show data").stdout  # the lock's build still serves
    # The manual certificate is served by B, and people log in with their passwords and see their files.
    assert ssl.PEM_cert_to_DER_cert(served_certificate(b)) == ssl.PEM_cert_to_DER_cert(cert.decode())
    https_b = {"resolve": {DOMAIN: b.address}, "ssl_context": _tls_context(cert)}

    async def on_b():
        for name, password in (("alice", "alice-password-1"), ("bob", "bob-password-1")):
            async with HubClient(f"https://{DOMAIN}/", resolve=https_b["resolve"], ssl=https_b["ssl_context"]) as c:
                await c.login(name, password)
                await c.start_server()
                model = await c.api("GET", f"user/{name}/api/contents/notes.txt")
                assert model["content"] == f"{name}'s notes"
                kernels = await c.api("GET", f"user/{name}/api/kernelspecs")
                assert "data" in kernels["kernelspecs"], kernels["kernelspecs"].keys()
                await c.stop_server()
        async with HubClient(f"https://{DOMAIN}/", resolve=https_b["resolve"], ssl=https_b["ssl_context"]) as c:
            with pytest.raises(HubError, match="403"):
                await c.login("alice", "a-wrong-password")

    asyncio.run(on_b())
    status = b.run("tljh status", check=False)
    assert status.returncode == 0, status.stdout
    assert f"certificate: {DOMAIN}: issued by {DOMAIN}" in status.stdout
    # B's state before the restore was saved, and can itself be restored.
    assert b.run("ls /var/backups/tljh").stdout.startswith("before-restore-")


# --------------------------------------------------------------------------------------------
# One installed hub for the tests below (they change different things and put back what they change)


@pytest.fixture(scope="module")
def hub(os_name):
    with installed_machine(os_name, "--admin", ":".join(ADMIN)) as m:
        yield m


BAD_LINES = [
    "Upper-Case,no,,pass-word-58",  # the hub would log in as upper-case
    "shorty,no,,short",  # FirstUse's minimum is 7 characters
    "maybe,perhaps,,pass-word-60",  # admin must be yes or no
]


def class_csv():
    lines = ["name,admin,groups,password"]
    for i in range(57):
        groups = "stats101" + (";lab" if i % 2 else "")
        lines.append(f"student{i:02d},{'yes' if i == 0 else 'no'},{groups},pass-word-{i:02d}")
    return "\n".join(lines + BAD_LINES) + "\n"


def test_csv_of_60_users(hub):
    write_file(hub, "/root/class.csv", class_csv().encode())
    watched = "/opt/tljh/config/config.yaml /opt/tljh/state/passwords.dbm*"
    before = hub.run(f"sha256sum {watched}", check=False).stdout

    refused = hub.run("tljh users import /root/class.csv", check=False)
    assert refused.returncode == 2
    for number, line in zip((59, 60, 61), BAD_LINES):
        assert f"line {number}: {line.split(',')[0]}: " in refused.stderr, refused.stderr
    assert "3 of 60 lines are bad; nothing was changed" in refused.stderr
    assert hub.run(f"sha256sum {watched}", check=False).stdout == before

    applied = hub.run("tljh users import --skip-bad /root/class.csv", check=False, timeout=900)
    assert applied.returncode == 1, applied.stdout + applied.stderr  # applied, but not everything
    out = applied.stdout
    assert out.count("SKIPPED") == 3 and "imported 57 user(s); skipped 3 bad line(s)" in out
    assert "line 2: student00: allowed, admin, groups stats101, password set" in out
    assert "line 3: student01: allowed, groups stats101 lab, password set" in out
    assert "hub reloaded" in out

    people = [(f"student{i:02d}", f"pass-word-{i:02d}") for i in range(57)]
    assert logins(hub, people) == {name: None for name, _ in people}
    refused = logins(hub, [("shorty", "pass-word-59"), ("student01", "not-her-password")])
    assert all(error and "403" in error for error in refused.values()), refused

    listing = hub.run("tljh users list --json").stdout
    rows = {row["name"]: row for row in json.loads(listing)}
    assert len([n for n in rows if n.startswith("student")]) == 57
    assert rows["student00"]["admin"] and rows["student01"]["groups"] == ["lab", "stats101"]
    assert rows["student05"]["last_activity"] is not None  # logged in just now
    text = hub.run("tljh users list").stdout
    assert text.splitlines()[0].split() == ["NAME", "UNIX", "NAME", "ADMIN", "GROUPS", "LAST", "ACTIVITY", "SERVER"]


TWO_PROFILES = """profiles:
  - display_name: Default environment, 1 GB
    slug: small
    default: true
    spawner_override: {user_environment: default, mem_limit: 1G}
  - display_name: Classic notebook
    slug: classic
    spawner_override: {default_url: /tree}
"""


def test_export_to_z2jh_and_back(hub):
    """Every exportable key set: the values validate against the chart's schema; export -> import -> export is stable."""
    saved = read_file(hub, "/opt/tljh/config/config.yaml")
    try:
        for command in (
            "set base_url /jhub/",
            "set auth.type github",
            "set auth.GitHubOAuthenticator.client_id abc",
            "set auth.GitHubOAuthenticator.client_secret s3cret",
            "add-item auth.GitHubOAuthenticator.allowed_organizations lab",
            "add-item users.banned mallory",
            "add-item users.extra_user_groups.teachers admin",
            "set limits.memory 2G",
            "set limits.cpu 1.5",
            "set user_environment.default_app classic",
            "set services.cull.timeout 20m",
            "set services.cull.max_age 1d",
            "set services.cull.users true",
            "set https.enabled true",
            "set https.letsencrypt.email admin@example.org",
            "add-item https.letsencrypt.domains hub.example.org",
            "set https.letsencrypt.staging true",
            "set http.port 8080",
            "set backup.daily true",
        ):
            hub.run(f"tljh-config {command}")
        hub.run("echo 'c.JupyterHub.shutdown_on_logout = True' > /opt/tljh/config/jupyterhub_config.d/logout.py")
        write_file(hub, "/opt/tljh/config/config.yaml", read_file(hub, "/opt/tljh/config/config.yaml") + TWO_PROFILES.encode())
        assert hub.run("tljh-config show").returncode == 0
        exported = hub.run("tljh export z2jh > /root/values.yaml", check=False)
        assert exported.returncode == 0, exported.stderr
        notes = exported.stderr
        for expected in ("http.port 8080", "backup.daily", "jupyterhub_config.d/logout.py", "extra_user_groups"):
            assert expected in notes, notes
        values_text = read_file(hub, "/root/values.yaml").decode()
        yaml = YAML(typ="safe")
        values = yaml.load(values_text)
        assert z2jh_chart.chart_errors(z2jh_chart.load_chart(), values) == []
        assert values["hub"]["baseUrl"] == "/jhub/" and values["cull"]["timeout"] == 1200
        assert values["proxy"]["https"]["hosts"] == ["hub.example.org"]
        assert "environment 'default': build an image from its lock" in values_text
        profiles = values["singleuser"]["profileList"]
        assert [p["slug"] for p in profiles] == ["small", "classic"]
        assert profiles[0]["kubespawner_override"]["mem_limit"] == "1G" and profiles[0]["kubespawner_override"]["image"].startswith("REPLACE-ME/tljh-env-default:")
        assert profiles[1]["kubespawner_override"] == {"default_url": "/tree"}

        # Into an empty config.yaml, then out again: the same values.
        hub.run("mv /opt/tljh/config/config.yaml /root/config.before-import && touch /opt/tljh/config/config.yaml")
        imported = hub.run("tljh import z2jh /root/values.yaml", check=False)
        assert imported.returncode == 0, imported.stderr
        assert imported.stderr == "", imported.stderr  # everything export wrote maps back
        again = hub.run("tljh export z2jh", check=False).stdout
        assert again == values_text
        refused = hub.run("echo 'cull: {timeout: -1}' > /root/bad.yaml && tljh import z2jh /root/bad.yaml", check=False)
        assert refused.returncode == 2 and "nothing was changed" in refused.stderr
    finally:
        write_file(hub, "/opt/tljh/config/config.yaml", saved)
        hub.run("rm -f /opt/tljh/config/jupyterhub_config.d/logout.py")


def test_status_and_daily_backups(hub):
    healthy = hub.run("tljh status", check=False)
    assert healthy.returncode == 0, healthy.stdout
    for line in ("jupyterhub.service: active for", "versions: tljh ", "hub: JupyterHub 6.1", "disk: /: ", "memory: ",
                 "users: ", "backup: never backed up; no scheduled backups"):
        assert line in healthy.stdout, healthy.stdout
    report = json.loads(hub.run("tljh status --json").stdout)
    assert report["healthy"] is True and report["problems"] == []

    hub.run("tljh-config set backup.daily true && tljh-config set backup.keep 2")
    try:
        due = hub.run("tljh status", check=False)
        assert due.returncode == 1
        assert ("  backup.daily is on but no backup was made in the last 36 hours -> sudo systemctl start "
                "tljh-backup.service") in due.stdout, due.stdout
        assert hub.run("systemctl is-enabled tljh-backup.timer").stdout.strip() == "enabled"
        for _ in range(3):
            hub.run("systemctl start tljh-backup.service", timeout=300)
        kept = hub.run("ls /var/backups/tljh").stdout.split()
        assert len(kept) == 2 and all(name.startswith("tljh-backup-") for name in kept), kept
        assert hub.run("stat -c %a /var/backups/tljh").stdout.strip() == "700"
        fine = hub.run("tljh status", check=False)
        assert fine.returncode == 0 and "backup: last " in fine.stdout, fine.stdout
    finally:
        hub.run("tljh-config unset backup.daily && tljh-config unset backup.keep")
