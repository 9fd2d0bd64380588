"""tljh status: each check's verdict and fix line, the report's text and JSON, the exit status."""

import dataclasses
import datetime
import json
import os
import time
from collections import namedtuple

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tljh.cli import status, tljh as tljh_cli
from tljh.install import backup
from tljh.settings.effective import effective_settings
from tljh.system import paths, systemd

Usage = namedtuple("Usage", "total used free")


def config(raw=None):
    return effective_settings(raw or {}).config


def test_report_text_json_and_health():
    report = status.Report()
    report.add("jupyterhub.service", "active for 2h")
    assert report.healthy and report.lines()[-1] == "no problems"
    report.add("disk", "/: 1 GB free", problem="/ is nearly full", fix="sudo du ...")
    assert not report.healthy
    assert report.lines()[-2:] == ["1 problem(s):", "  / is nearly full -> sudo du ..."]
    data = report.as_dict()
    assert data["healthy"] is False and data["problems"] == [{"section": "disk", "problem": "/ is nearly full", "fix": "sudo du ..."}]
    json.dumps(data)


@pytest.mark.parametrize("seconds, text", [(5, "5s"), (75, "1m15s"), (3600, "1h"), (90061, "1d1h")])
def test_durations(seconds, text):
    assert status.human_duration(seconds) == text


def test_services_down_name_the_fix(monkeypatch):
    monkeypatch.setattr(systemd, "active_seconds", lambda unit: None if unit == "caddy.service" else 7200.0)
    monkeypatch.setattr(systemd, "state", lambda unit: "failed")
    report = status.Report()
    status.check_services(report)
    lines = report.lines()
    assert "jupyterhub.service: active for 2h" in lines
    assert "caddy.service: NOT RUNNING (failed)" in lines
    assert "  caddy.service is failed -> sudo systemctl restart caddy (why it stopped: sudo journalctl -u caddy -n 50)" in lines


def test_disk_headroom(monkeypatch):
    gib = 1024**3
    monkeypatch.setattr(status, "filesystems", lambda: {"/": Usage(100 * gib, 95 * gib, 5 * gib), "/home": Usage(100 * gib, 50 * gib, 50 * gib)})
    report = status.Report()
    status.check_disk(report)
    assert [p.problem for p in report.problems] == ["/ is nearly full (5.0 GB free)"]
    assert "/home: 50.0 GB free of 100.0 GB (50%)" in report.lines()[1]


def test_memory_headroom(monkeypatch):
    monkeypatch.setattr(status, "memory", lambda: (300 * 1024**2, 4 * 1024**3))
    report = status.Report()
    status.check_memory(report, config())
    assert report.problems and "limits.memory" in report.problems[0].fix


def _certificate(path, days):
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "hub.example.org")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=days, hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("hub.example.org")]), critical=False)
        .sign(key, hashes.SHA256())
    )
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


@pytest.mark.parametrize("days, problem", [(90, False), (5, True)])
def test_certificate_expiry(tmp_path, monkeypatch, days, problem):
    _certificate(tmp_path / "hub.pem", days)
    monkeypatch.setattr(paths, "PROXY_DATA_DIR", str(tmp_path / "none"))
    from tljh.proxy import edge

    monkeypatch.setattr(edge, "missing_certificates", lambda *a, **k: [])
    report = status.Report()
    raw = {"https": {"enabled": True, "tls": {"cert": str(tmp_path / "hub.pem"), "key": str(tmp_path / "hub.key")}}}
    status.check_https(report, config(raw))
    assert any("hub.example.org: issued by hub.example.org" in line for line in report.lines())
    if problem:
        assert report.problems[0].problem == "the certificate for hub.example.org expires in 5 days"
        assert "reload proxy" in report.problems[0].fix
    else:
        assert report.healthy


@pytest.fixture
def backups(tmp_path, monkeypatch):
    monkeypatch.setattr(paths, "LAST_BACKUP_FILE", str(tmp_path / "last-backup.json"))
    monkeypatch.setattr(systemd, "is_active", lambda unit: True)


@pytest.mark.parametrize(
    "daily, last, problem",
    [
        (False, None, None),
        (True, None, "backup.daily is on but no backup was made in the last 36 hours"),
        (True, {"age": 3600, "ok": True}, None),
        (True, {"age": 3 * 86400, "ok": True}, "backup.daily is on but no backup was made in the last 36 hours"),
        (True, {"age": 60, "ok": False}, "the last backup failed: disk full"),
    ],
)
def test_backup_freshness(backups, daily, last, problem):
    if last:
        record = {"time": time.time() - last["age"], "ok": last["ok"], "error": None if last["ok"] else "disk full"}
        if last["ok"]:
            record.update(file="/var/backups/tljh/x.tar.gz", size=2048, homes=False, seconds=1.0)
        with open(paths.LAST_BACKUP_FILE, "w") as f:
            json.dump(record, f)
    report = status.Report()
    status.check_backup(report, config({"backup": {"daily": daily}}))
    assert [p.problem for p in report.problems] == ([problem] if problem else [])
    if problem:
        assert "tljh-backup.service" in report.problems[0].fix


def test_cli_json_and_exit_status(monkeypatch, capsys):
    unhealthy = status.Report()
    unhealthy.add("memory", "low", problem="memory is nearly exhausted", fix="x")
    monkeypatch.setattr(status, "report", lambda: unhealthy)
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    assert tljh_cli.main(["status", "--json"]) == 1
    data = json.loads(capsys.readouterr().out)
    assert data["healthy"] is False and data["problems"][0]["problem"] == "memory is nearly exhausted"
    monkeypatch.setattr(status, "report", lambda: status.Report())
    assert tljh_cli.main(["status"]) == 0


def test_last_backup_is_recorded(tmp_path, monkeypatch):
    monkeypatch.setattr(paths, "LAST_BACKUP_FILE", str(tmp_path / "last.json"))
    backup.record_last({"file": "/b.tar.gz", "size": 10, "homes": True, "seconds": 1.5})
    assert backup.last_backup()["file"] == "/b.tar.gz" and backup.last_backup()["ok"]
    backup.record_last(None, error="No space left on device")
    assert backup.last_backup() == {"time": pytest.approx(time.time(), abs=5), "ok": False, "error": "No space left on device"}


def test_capacity_and_migration_lines(monkeypatch):
    """main's capacity line (tljh.cli.capacity) and TLJH migration line, as sections of the report: information,
    never problems."""
    from tljh.cli import capacity
    from tljh.install import migrate_tljh

    measured = capacity.Capacity(running=2, per_server=200 * capacity.MiB, available=1000 * capacity.MiB, total=None, limit=None)
    monkeypatch.setattr(capacity, "measure", lambda limit=None: dataclasses.replace(measured, limit=limit))
    monkeypatch.setattr(migrate_tljh, "status_line", lambda: "from TLJH: conda-only packages not carried over: hello-tool 2.12")
    report = status.Report()
    status.check_capacity(report, config({"limits": {"memory": "500M"}}))
    status.check_migration(report)
    lines = report.lines()
    assert lines[0] == ("capacity: 2 servers running, 200 MiB each on average (with their kernels); 5 more fit in the "
                        "1000 MiB available; 2 more at limits.memory (500 MiB each)")
    assert lines[1] == "from TLJH: conda-only packages not carried over: hello-tool 2.12"
    assert report.healthy
    assert report.as_dict()["items"][0]["data"]["more"] == 5



@pytest.mark.parametrize("setup, line, healthy", [
    ({"allowed": True}, "users' ports: open to other users (network.allow_connections_between_users)", True),
    ({"unsupported": "nft is not installed (Debian/Ubuntu package nftables)"},
     "users' ports: NOT ENFORCED: nft is not installed (Debian/Ubuntu package nftables); any local user can connect "
     "to another user's ports", True),
    ({"present": True}, "users' ports: kept to their owner (nftables table inet tljh)", True),
    ({"present": False, "running": True}, "users' ports: NOT ENFORCED: the hub has not written its nftables table "
     "inet tljh", False),
    ({"present": False, "running": False}, "users' ports: kept to their owner once servers run (no server runs)", True),
])
def test_users_ports(monkeypatch, setup, line, healthy):
    from tljh.system import port_rules

    def probe():
        if setup.get("unsupported"):
            raise port_rules.Unsupported(setup["unsupported"])
        return 0

    monkeypatch.setattr(port_rules, "find_level_offset", probe)
    monkeypatch.setattr(port_rules, "table_present", lambda: setup.get("present", False))
    monkeypatch.setattr(systemd, "list_units", lambda pattern: ["jupyter-alice.service"])
    monkeypatch.setattr(systemd, "is_active", lambda unit: setup.get("running", False))
    report = status.Report()
    status.check_ports(report, config({"network": {"allow_connections_between_users": setup.get("allowed", False)}}))
    assert report.lines()[0] == line
    assert report.healthy is healthy
