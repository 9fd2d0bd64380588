"""`tljh-config`: every verb, every key, every refusal (exit 2, one line, file unchanged)."""

import os
import subprocess
import sys
import types

import pytest

from tljh.cli import tljh_config as cli
from tljh.settings import reload, schema
from tljh.settings.config_file import load_raw

INITIAL = (
    "# Hub config, edited by hand\n"
    "users:\n"
    "  admin:\n"
    "    - alice  # the teacher\n"
    "limits:\n"
    "  cpu: 2\n"
    "auth:\n"
    "  type: firstuseauthenticator.FirstUseAuthenticator\n"
    "  GitHubOAuthenticator:\n"
    "    client_id: my-id\n"
    "    client_secret: s3cr3t-value\n"
)


@pytest.fixture
def cfg(tmp_path):
    p = tmp_path / "config.yaml"
    p.write_text(INITIAL)
    return p


def run(capsys, path, *args):
    """Run tljh-config in-process: (exit code, stdout, stderr)."""
    code = cli.main(["--config-path", str(path), *args])
    out, err = capsys.readouterr()
    return code, out, err


def raw(path):
    return load_raw(path)


# ---------------------------------------------------------------------------- set: every key


SET_CASES = [
    ("base_url", "/jhub/", "/jhub/"),
    ("base_url", "jhub", "/jhub/"),
    ("auth.type", "dummy", "dummy"),
    ("auth.type", "oauthenticator.github.GitHubOAuthenticator", "oauthenticator.github.GitHubOAuthenticator"),
    ("auth.type", "ldapauthenticator.LDAPAuthenticator", "ldapauthenticator.LDAPAuthenticator"),
    ("auth.FirstUseAuthenticator.create_users", "yes", True),
    ("auth.FirstUseAuthenticator.min_password_length", "12", 12),
    ("auth.GitHubOAuthenticator.client_id", "abc", "abc"),
    ("auth.GitHubOAuthenticator.allowed_organizations", "org1,org2", ["org1", "org2"]),
    ("auth.GoogleOAuthenticator.hosted_domain", "[example.org]", ["example.org"]),
    ("auth.GenericOAuthenticator.token_url", "https://idp/token", "https://idp/token"),
    ("auth.LDAPAuthenticator.server_address", "ldap.example", "ldap.example"),
    ("auth.LDAPAuthenticator.server_port", "636", 636),
    ("auth.LDAPAuthenticator.bind_dn_template", "uid={username},dc=x", "uid={username},dc=x"),
    ("auth.LDAPAuthenticator.bind_dn_template", "['uid={username},dc=x']", ["uid={username},dc=x"]),
    ("auth.NativeAuthenticator.open_signup", "true", True),
    ("auth.DummyAuthenticator.password", "pw", "pw"),
    ("auth.PAMAuthenticator.open_sessions", "false", False),
    ("auth.TmpAuthenticator.login_service", "guest", "guest"),
    ("users.admin", "bob,carol", ["bob", "carol"]),
    ("users.allowed", "[x, y]", ["x", "y"]),
    ("users.banned", "mallory", ["mallory"]),
    ("users.extra_user_groups.research", "alice,bob", ["alice", "bob"]),
    ("limits.memory", "4G", "4G"),
    ("limits.memory", "4096", "4096M"),
    ("limits.memory", "4096M", "4096M"),
    ("limits.memory", "1.5g", "1.5G"),
    ("limits.memory", "none", None),
    ("limits.cpu", "1.5", 1.5),
    ("limits.cpu", "2", 2),
    ("limits.cpu", "null", None),
    ("network.allow_cloud_metadata", "true", True),
    ("network.allow_kernel_debugger", "true", True),
    ("network.allow_connections_between_users", "true", True),
    ("hub_database.keep_backups", "3", 3),
    ("user_environment.default_app", "classic", "classic"),
    ("user_environment.default_app", "jupyterlab", "jupyterlab"),
    ("user_environment.session_installs", "false", False),
    ("user_environment.session_installs", "yes", True),
    ("user_environment.language_servers", "true", True),
    ("services.cull.enabled", "no", False),
    ("services.cull.timeout", "60", 60),
    ("services.cull.timeout", "10m", 600),
    ("services.cull.every", "10", 10),
    ("services.cull.concurrency", "3", 3),
    ("services.cull.users", "true", True),
    ("services.cull.max_age", "1d", 86400),
    ("services.cull.remove_named_servers", "on", True),
    ("http.address", "10.0.0.1", "10.0.0.1"),
    ("http.port", "8080", 8080),
    ("https.enabled", "true", True),
    ("https.address", "0.0.0.0", "0.0.0.0"),
    ("https.port", "8443", 8443),
    ("https.tls.cert", "/etc/ssl/hub.pem", "/etc/ssl/hub.pem"),
    ("https.tls.key", "/etc/ssl/hub.key", "/etc/ssl/hub.key"),
    ("https.letsencrypt.email", "admin@example.org", "admin@example.org"),
    ("https.letsencrypt.domains", "hub.example.org", ["hub.example.org"]),
    ("https.letsencrypt.staging", "yes", True),
    ("https.acme.directory", "https://127.0.0.1:14000/dir", "https://127.0.0.1:14000/dir"),
    ("https.acme.trusted_roots", "/etc/pebble/ca.pem", ["/etc/pebble/ca.pem"]),
    ("conda.channel_alias", "https://conda-mirror.example.org/", "https://conda-mirror.example.org/"),
    ("allow_named_servers", "true", True),
    ("named_server_limit_per_user", "3", 3),
    ("backup.daily", "true", True),
    ("backup.directory", "/srv/backups", "/srv/backups"),
    ("backup.keep", "14", 14),
    ("backup.homes", "yes", True),
    ("hub.concurrent_starts", "4", 4),
    ("environments.data.description", "Pandas for the stats course", "Pandas for the stats course"),
    ("environments.data.packages", "pandas,numpy>=2", ["pandas", "numpy>=2"]),
    ("environments.data.requirements", "/srv/course/requirements.txt", "/srv/course/requirements.txt"),
    ("environments.data.apt", "libxml2-dev", ["libxml2-dev"]),
    ("environments.data.python", "3.12", "3.12"),
    ("environments.data.r", "true", True),
    ("environments.data.offer_kernel", "no", False),
    ("environments.data.repository", "https://git.example.org/course.git", "https://git.example.org/course.git"),
    ("environments.data.ref", "v1.0", "v1.0"),
    ("environments.data.allow_unsupported", "yes", True),
    ("environments.data.allow_apt", "libgdal-dev", ["libgdal-dev"]),
    ("builds.allowed_hosts", "github.com,gitlab.example.org:8443", ["github.com", "gitlab.example.org:8443"]),
    ("builds.allow_unsupported", "yes", True),
    ("builds.memory_limit", "2g", "2G"),
    ("builds.memory_limit", "none", None),
    ("builds.time_limit", "30m", 1800),
    ("builds.disk_budget", "50G", "50G"),
]


@pytest.fixture(autouse=True)
def no_system_checks(monkeypatch):
    """Edits of environments are also checked against the system (Python versions, apt, PyPI): that is
    tested in test_environments_*; here only what tljh-config itself does."""
    monkeypatch.setattr(cli, "_system_check", lambda key: None)


@pytest.mark.parametrize("key,value,stored", SET_CASES)
def test_set_every_key(capsys, cfg, key, value, stored):
    code, out, err = run(capsys, cfg, "set", key, value)
    assert code == 0, err
    got = raw(cfg)
    for part in key.split("."):
        got = got[part]
    assert got == stored
    assert type(got) is type(stored)
    assert out.splitlines()[0].startswith(f"{key} = ")
    assert schema.errors_only(schema.validate_config(raw(cfg))) == []
    # the admin's comments survive
    assert cfg.read_text().startswith("# Hub config, edited by hand\n")
    if key != "users.admin":
        assert "- alice  # the teacher" in cfg.read_text()


def test_installer_keys_say_how_to_apply(capsys, cfg):
    code, out, err = run(capsys, cfg, "set", "conda.channel_alias", "https://conda-mirror.example.org/")
    assert code == 0
    assert "Run `sudo /opt/tljh/hub/bin/python -m tljh.installer` to apply." in out + err


def test_set_covers_every_documented_key():
    covered = {k for k, _, _ in SET_CASES}
    for key in schema.all_keys():
        if key.startswith("traefik_api") or key == "auth.<Class>.<trait>" or key == "profiles":
            continue  # profiles: a list of mappings, written in config.yaml (see test_set_profiles_points_to_the_file)
        key = key.replace("<group>", "research").replace("<name>", "data")
        assert key in covered, key


@pytest.mark.parametrize(
    "args,said",
    [
        (("set", "limits.memory", "4096"), "limits.memory = 4096M (4.0 GiB)"),
        (("set", "limits.memory", "4G"), "limits.memory = 4G (4.0 GiB)"),
        (("set", "limits.cpu", "1.5"), "limits.cpu = 1.5 (1.5 CPUs)"),
        (("set", "auth.type", "github"), "auth.type = github (oauthenticator.github.GitHubOAuthenticator)"),
        (("set", "https.enabled", "yes"), "https.enabled = true"),
        (
            ("set", "auth.GitHubOAuthenticator.client_secret", "new"),
            "auth.GitHubOAuthenticator.client_secret = ********",
        ),
    ],
)
def test_set_says_value_back(capsys, cfg, args, said):
    code, out, err = run(capsys, cfg, *args)
    assert code == 0
    assert out.splitlines()[0] == said


def test_set_hints_which_reload(capsys, cfg):
    assert "`sudo tljh-config reload proxy`" in run(capsys, cfg, "set", "https.enabled", "true")[1]
    out = run(capsys, cfg, "set", "limits.cpu", "1")[1]
    assert "`sudo tljh-config reload`" in out and "proxy" not in out


def test_set_creates_file_0600(capsys, tmp_path):
    p = tmp_path / "sub" / "config.yaml"
    code, _, _ = run(capsys, p, "set", "users.admin", "alice")
    assert code == 0
    assert raw(p) == {"users": {"admin": ["alice"]}}
    assert oct(os.stat(p).st_mode & 0o777) == "0o600"


def test_traefik_api_accepted_with_warning(capsys, cfg):
    code, out, err = run(capsys, cfg, "set", "traefik_api.port", "8099")
    assert code == 0
    assert "traefik_api.* is ignored" in err
    assert raw(cfg)["traefik_api"] == {"port": 8099}


# ---------------------------------------------------------------------------- refusals


REFUSALS = [
    (("set", "limits.memroy", "4G"), "unknown key limits.memroy (did you mean limits.memory?)"),
    (("set", "lmits.memory", "4G"), "did you mean limits.memory?"),
    (("set", "services.cull.timout", "60"), "did you mean services.cull.timeout?"),
    (("set", "limits.cpu", "two"), "expected a number, got 'two'"),
    (("set", "limits.cpu", "0"), "limits.cpu: must be more than 0"),
    # issue 19: inf and nan passed validation and then every spawn failed
    (("set", "limits.cpu", "inf"), "limits.cpu: must be at most 1024, got inf"),
    (("set", "limits.cpu", "nan"), "limits.cpu: expected a finite number, got nan"),
    (("set", "limits.cpu", "100000"), "limits.cpu: must be at most 1024"),
    (("set", "limits.memory", "5000T"), "memory limit must be at most 1024T"),
    (("set", "hub_database.keep_backups", "0"), "hub_database.keep_backups: must be at least 1"),
    # issue 19: groups that give root (or its equivalent) to hub users
    (("set", "users.extra_user_groups.sudo", "alice"), "'sudo' gives root-equivalent rights"),
    (("add-item", "users.extra_user_groups.docker", "alice"), "'docker' gives root-equivalent rights"),
    (("set", "users.extra_user_groups.jupyterhub-admins", "bob"), "'jupyterhub-admins' gives root-equivalent"),
    (("set", "users.extra_user_groups.shadow", "bob"), "'shadow' gives root-equivalent rights"),
    (("set", "limits.memory", "lots"), "expected a memory size like 4G, 512M or 4096 (megabytes)"),
    (("set", "limits.memory", "0"), "memory limit must be more than 0"),
    (("set", "http.port", "eighty"), "expected a whole number, got 'eighty'"),
    (("set", "http.port", "99999"), "http.port: must be at most 65535"),
    (("set", "https.enabled", "maybe"), "expected true or false (or yes/no), got 'maybe'"),
    (("set", "https.enabled", "none"), "cannot be none"),
    (("set", "user_environment.default_app", "lab"), "must be one of jupyterlab, classic"),
    (("set", "services.cull.every", "0"), "services.cull.every: must be at least 1"),
    (("set", "users", "alice"), "users is a section, not a value"),
    (("set", "limits.cpu.x", "1"), "limits.cpu is a value, not a section"),
    (("set", "auth.type", "dummyy"), "unknown authenticator 'dummyy' (did you mean dummy?)"),
    (("set", "auth.type", "nosuch.Authenticator"), "cannot import authenticator module 'nosuch'"),
    (("set", "auth.type", "jupyterhub.spawner.LocalProcessSpawner"), "is not a JupyterHub Authenticator class"),
    (("set", "auth.GitHubOAuthenticator.client_idd", "x"), "did you mean client_id?"),
    (("set", "auth.GitHubOAuthentcator.client_id", "x"), "did you mean GitHubOAuthenticator?"),
    (("set", "auth.FirstUseAuthenticator.min_password_length", "long"), "expected a whole number"),
    (("set", "auth.LDAPAuthenticator.server_port", "x"), "expected a whole number"),
    (("set", "auth.SystemdSpawner.mem_limit", "1G"), "unknown key auth.SystemdSpawner"),
    (("set", "users.extra_user_groups.Bad Group", "alice"), "is not a Unix group name"),
    (("set", "https.acme.directory", "ftp://x"), "expected an http(s):// URL"),
    (("set", "conda.channel_alias", "conda-forge"), "expected an http(s):// or file:// URL"),
    (("set", "https.address", "everywhere"), "https.address: expected an IP address"),
    (("set", "https.letsencrypt.email", "admin"), "expected an email address"),
    (("add-item", "https.letsencrypt.domains", "not a domain"), "https.letsencrypt.domains[0]: expected a domain name"),
    (("set", "limits.cpu"), "the following arguments are required: VALUE"),
    (("set",), "the following arguments are required: KEY, VALUE"),
    (("add-item", "users.admin"), "the following arguments are required: VALUE"),
    (("add-item", "limits.cpu", "1"), "limits.cpu is not a list"),
    (("add-item", "users.admn", "x"), "did you mean users.admin?"),
    (("add-item", "auth.GitHubOAuthenticator.client_id", "x"), "is not a list"),
    (("remove-item", "users.admin", "nobody"), "nobody is not in users.admin"),
    (("remove-item", "users.banned", "nobody"), "nobody is not in users.banned"),
    (("unset", "limits.cpux"), "did you mean limits.cpu?"),
    (("unset",), "the following arguments are required: KEY"),
    (("reload", "everything"), "invalid choice: 'everything'"),
    (("frobnicate",), "invalid choice: 'frobnicate'"),
    (("show", "limits.memroy"), "did you mean limits.memory?"),
]


@pytest.mark.parametrize("args,message", REFUSALS)
def test_refusals_exit_2_one_line_file_unchanged(capsys, cfg, args, message):
    before = cfg.read_bytes()
    mtime = os.stat(cfg).st_mtime_ns
    code, out, err = run_catching_exit(capsys, cfg, *args)
    assert code == 2
    assert err.count("\n") == 1, err
    assert message in err, err
    assert cfg.read_bytes() == before
    assert os.stat(cfg).st_mtime_ns == mtime
    assert sorted(os.listdir(cfg.parent)) in (["config.yaml"], ["config.yaml", "config.yaml.lock"])


@pytest.mark.parametrize("args", [("set", "limits.cpu", "3"), ("add-item", "users.admin", "carol"), ("unset", "users")])
def test_full_disk_one_line_exit_4_file_intact(capsys, cfg, monkeypatch, args):
    """issue 19: a full disk while writing gave a traceback. (The real full disk: integration-tests/test_isolation.py)"""
    import errno

    from tljh.system import files

    real_fsync = os.fsync

    def full(fd):
        if os.path.basename(os.readlink(f"/proc/self/fd/{fd}")).startswith(".config.yaml."):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_fsync(fd)

    monkeypatch.setattr(files.os, "fsync", full)
    before = cfg.read_bytes()
    code, out, err = run_catching_exit(capsys, cfg, *args)
    assert code == 4
    assert err == f"error: could not write {cfg}: No space left on device; nothing changed\n"
    assert cfg.read_bytes() == before
    assert sorted(os.listdir(cfg.parent)) == ["config.yaml", "config.yaml.lock"]  # no temporary file left


def run_catching_exit(capsys, path, *args):
    try:
        code = cli.main(["--config-path", str(path), *args])
    except SystemExit as e:  # argparse usage errors
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


MALFORMED = "users:\n  admin: [alice\nlimits:\n  cpu: 2\n"


@pytest.mark.parametrize(
    "args",
    [
        ("show",),
        ("show", "--effective"),
        ("set", "limits.cpu", "1"),
        ("unset", "limits.cpu"),
        ("add-item", "users.admin", "bob"),
        ("remove-item", "users.admin", "alice"),
        ("reload", "proxy"),
        ("reload", "hub"),
    ],
)
def test_malformed_file_refused_and_never_overwritten(capsys, tmp_path, monkeypatch, args):
    p = tmp_path / "config.yaml"
    p.write_text(MALFORMED)
    monkeypatch.setattr(reload, "systemd", None)  # any systemctl or journalctl call would fail the test
    code, out, err = run_catching_exit(capsys, p, *args)
    assert code == 2
    assert err.count("\n") == 1, err
    assert f"{p}: line 3: " in err
    assert p.read_text() == MALFORMED


def test_not_root_refused(capsys, monkeypatch, tmp_path):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    monkeypatch.delenv("TLJH_CONFIG_SKIP_ROOT_CHECK", raising=False)
    code = cli.main(["show"])  # the system config file
    _, err = capsys.readouterr()
    assert code == 2
    assert err == "error: tljh-config needs root: run `sudo tljh-config show ...`\n"
    code = cli.main(["--config-path", str(tmp_path / "c.yaml"), "reload"])
    assert code == 2
    assert "needs root" in capsys.readouterr().err


def test_not_root_allowed_on_own_file(capsys, monkeypatch, cfg):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert run(capsys, cfg, "set", "limits.cpu", "1")[0] == 0


@pytest.mark.parametrize("verb", ["show", "set", "unset", "add-item", "remove-item", "reload"])
def test_help_for_each_verb(capsys, verb):
    with pytest.raises(SystemExit) as e:
        cli.main([verb, "--help"])
    assert e.value.code == 0
    assert f"tljh-config {verb}" in capsys.readouterr().out


def test_no_verb_prints_help(capsys):
    assert cli.main([]) == 2
    assert "COMMAND" in capsys.readouterr().out


# ---------------------------------------------------------------------------- list verbs, unset


def test_add_and_remove_item(capsys, cfg):
    assert run(capsys, cfg, "add-item", "users.admin", "bob")[0] == 0
    code, out, _ = run(capsys, cfg, "add-item", "users.admin", "bob")
    assert code == 0 and "already in users.admin" in out
    assert raw(cfg)["users"]["admin"] == ["alice", "bob"]
    assert run(capsys, cfg, "add-item", "users.extra_user_groups.research", "alice")[0] == 0
    assert raw(cfg)["users"]["extra_user_groups"] == {"research": ["alice"]}
    assert run(capsys, cfg, "add-item", "auth.GitHubOAuthenticator.allowed_organizations", "org")[0] == 0
    assert raw(cfg)["auth"]["GitHubOAuthenticator"]["allowed_organizations"] == ["org"]
    assert run(capsys, cfg, "add-item", "https.letsencrypt.domains", "hub.example.org")[0] == 0
    assert run(capsys, cfg, "remove-item", "users.admin", "alice")[0] == 0
    assert raw(cfg)["users"]["admin"] == ["bob"]
    assert run(capsys, cfg, "remove-item", "users.admin", "bob")[0] == 0
    assert raw(cfg)["users"]["admin"] == []


def test_unset(capsys, cfg):
    code, out, _ = run(capsys, cfg, "unset", "limits.cpu")
    assert code == 0 and "default applies" in out
    assert "limits" not in raw(cfg)  # the emptied section goes too
    code, out, _ = run(capsys, cfg, "unset", "limits.cpu")
    assert code == 0 and "was not set; nothing changed" in out
    assert run(capsys, cfg, "unset", "auth.GitHubOAuthenticator")[0] == 0
    assert raw(cfg)["auth"] == {"type": "firstuseauthenticator.FirstUseAuthenticator"}


def test_unset_removes_an_unknown_key_written_by_hand(capsys, cfg):
    cfg.write_text(INITIAL + "colour: blue\n")
    code, _, err = run(capsys, cfg, "set", "limits.cpu", "1")
    assert code == 0
    assert "config.yaml has other problems, left as they were: colour: unknown key" in err
    assert run(capsys, cfg, "unset", "colour")[0] == 0
    assert "colour" not in raw(cfg)


# ---------------------------------------------------------------------------- show


def test_show_prints_file_with_secrets_masked(capsys, cfg):
    code, out, _ = run(capsys, cfg, "show")
    assert code == 0
    assert "s3cr3t-value" not in out
    assert "client_secret: '********'" in out
    assert "client_id: my-id" in out
    assert "# Hub config, edited by hand" in out
    assert cfg.read_text() == INITIAL


def test_show_secrets(capsys, cfg):
    assert "client_secret: s3cr3t-value" in run(capsys, cfg, "show", "--show-secrets")[1]
    assert "s3cr3t-value" in run(capsys, cfg, "show", "--effective", "--show-secrets")[1]


def test_show_effective(capsys, cfg):
    code, out, _ = run(capsys, cfg, "show", "--effective")
    assert code == 0
    from ruamel.yaml import YAML

    shown = YAML(typ="safe").load(out)
    expected = schema.mask_secrets(schema.effective_config(raw(cfg)))
    assert shown == expected
    assert shown["services"]["cull"]["timeout"] == 600
    assert shown["auth"]["GitHubOAuthenticator"]["client_secret"] == schema.MASK


def test_show_key(capsys, cfg):
    assert run(capsys, cfg, "show", "limits.cpu")[1] == "2\n"
    out = run(capsys, cfg, "show", "services.cull.timeout")[1]
    assert out.endswith("600\n") and "not set" in out
    assert run(capsys, cfg, "show", "users.admin")[1] == "- alice\n"
    assert run(capsys, cfg, "show", "users.banned")[1].endswith("\n[]\n")
    assert run(capsys, cfg, "show", "auth.GitHubOAuthenticator.client_secret")[1] == "********\n"


def test_show_missing_file(capsys, tmp_path):
    code, out, _ = run(capsys, tmp_path / "none.yaml", "show")
    assert code == 0 and "every key has its default" in out


# ---------------------------------------------------------------------------- concurrency


def test_twenty_concurrent_add_items_lose_nothing(tmp_path):
    p = tmp_path / "config.yaml"
    p.write_text("# shared\nusers:\n  allowed: []\n")
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "tljh.config", "--config-path", str(p), "add-item", "users.allowed", f"u{i}"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for i in range(20)
    ]
    results = [(proc.wait(), proc.stderr.read()) for proc in procs]
    assert all(code == 0 for code, _ in results), results
    allowed = raw(p)["users"]["allowed"]
    assert sorted(allowed) == sorted(f"u{i}" for i in range(20))
    assert p.read_text().startswith("# shared\n")
    assert schema.validate_config(raw(p)) == []


# ---------------------------------------------------------------------------- reload


class FakeSystem:
    """systemd (systemctl, journalctl) and the hub's API, as seen by `tljh-config reload`."""

    def __init__(self, good_configs=None):
        self.calls = []
        self.starts_ok = True
        self.journal = [
            "[I 2026 app] starting",
            "Traceback (most recent call last):",
            "ValueError: bad thing in jupyterhub_config",
            "[E 2026 app] hub failed",
        ]
        self.good_configs = good_configs

    def systemctl(self, *args):
        self.calls.append(args)
        return types.SimpleNamespace(returncode=0, stdout="failed\n" if args[0] == "is-active" else "", stderr="")

    # the part of tljh.system.systemd that reload uses
    def restart(self, unit, check=True):
        return self.systemctl("restart", unit)

    def state(self, unit):
        return self.systemctl("is-active", unit).stdout.strip()

    def journal_since(self, unit, since, lines=None):
        return "\n".join(self.journal)

    def answers(self, url):
        self.calls.append(("GET", url))
        if self.good_configs is not None:
            return self.good_configs()
        return self.starts_ok


@pytest.fixture
def fake(monkeypatch, tmp_path):
    f = FakeSystem()
    monkeypatch.setattr(reload, "systemd", f)
    monkeypatch.setattr(reload, "_hub_answers", f.answers)
    monkeypatch.setattr(reload, "LAST_GOOD_FILE", str(tmp_path / "state" / "config.last-good.yaml"))
    return f


def test_reload_hub_success_records_last_good(capsys, cfg, fake):
    code, out, err = run(capsys, cfg, "reload")
    assert code == 0, err
    assert ("restart", "jupyterhub.service") in fake.calls
    assert ("GET", "http://127.0.0.1:15001/hub/api") in fake.calls
    assert "hub reloaded" in out
    last_good = reload.LAST_GOOD_FILE
    assert open(last_good).read() == INITIAL
    assert oct(os.stat(last_good).st_mode & 0o777) == "0o600"


def test_reload_waits_on_base_url(capsys, cfg, fake):
    run(capsys, cfg, "set", "base_url", "/jhub/")
    assert run(capsys, cfg, "reload", "hub")[0] == 0
    assert ("GET", "http://127.0.0.1:15001/jhub/hub/api") in fake.calls


def test_reload_hub_failure_restores_last_good(capsys, cfg, fake):
    assert run(capsys, cfg, "reload")[0] == 0
    good = cfg.read_text()
    run(capsys, cfg, "set", "limits.memory", "1G")
    bad = cfg.read_text()
    fake.calls.clear()
    states = iter([False, True])  # the new config does not come up; the last good one does
    fake.good_configs = lambda: next(states, True)
    code, out, err = run(capsys, cfg, "reload", "--timeout", "2")
    assert code == 1
    assert "restored the last good configuration" in err
    assert "ValueError: bad thing in jupyterhub_config" in err
    assert [c for c in fake.calls if c[0] == "restart"] == [("restart", "jupyterhub.service")] * 2
    assert cfg.read_text() == good
    assert (cfg.parent / "config.yaml.rejected").read_text() == bad


def test_reload_hub_failure_without_last_good_exits_3(capsys, cfg, fake):
    fake.starts_ok = False
    code, out, err = run(capsys, cfg, "reload", "--timeout", "1")
    assert code == 3
    assert "no last good configuration" in err
    assert cfg.read_text() == INITIAL


def test_reload_hub_times_out(capsys, cfg, fake, monkeypatch):
    fake.starts_ok = False
    monkeypatch.setattr(
        fake, "systemctl", lambda *a: types.SimpleNamespace(returncode=0, stdout="activating\n", stderr="")
    )
    code, _, err = run(capsys, cfg, "reload", "--timeout", "1")
    assert code == 3
    assert "no answer from http://127.0.0.1:15001/hub/api within 1 s" in err


@pytest.mark.parametrize(
    "text,message",
    [
        ("auth:\n  type: nosuchpkg.Authenticator\n", "cannot import authenticator module 'nosuchpkg'"),
        ("limits:\n  cpu: lots\n", "limits.cpu: expected a number or none"),
        ("colour: blue\n", "colour: unknown key"),
    ],
)
def test_reload_refuses_what_the_hub_would_not_start_with(capsys, tmp_path, fake, text, message):
    p = tmp_path / "config.yaml"
    p.write_text(text)
    code, _, err = run(capsys, p, "reload")
    assert code == 2
    assert message in err and err.count("\n") == 1
    assert fake.calls == []
    assert p.read_text() == text


def test_reload_proxy(capsys, cfg, monkeypatch):
    seen = []

    class ProxyReloadError(Exception):
        pass

    fake_module = types.SimpleNamespace(
        reload_proxy=seen.append,
        ProxyReloadError=ProxyReloadError,
        https_preflight=lambda config: [],
        missing_certificates=lambda config, since, timeout: [],
    )
    monkeypatch.setattr(cli, "_edge", lambda: fake_module)
    code, out, _ = run(capsys, cfg, "reload", "proxy")
    assert code == 0 and "proxy reloaded" in out
    assert [settings.config for settings in seen] == [schema.effective_config(raw(cfg))]

    def fail(settings):
        raise ProxyReloadError("edge refused the config: bad port")

    fake_module.reload_proxy = fail
    code, _, err = run(capsys, cfg, "reload", "proxy")
    assert code == 1
    assert err == (
        "error: proxy reload failed, the previous proxy configuration keeps serving: "
        "edge refused the config: bad port\n"
    )


def test_reload_proxy_says_preflight_problems_first(capsys, cfg, monkeypatch):
    fake_module = types.SimpleNamespace(
        reload_proxy=lambda settings: None,
        ProxyReloadError=Exception,
        https_preflight=lambda config: ["hub.example.org does not resolve (no such name)"],
        missing_certificates=lambda config, since, timeout: [],
    )
    monkeypatch.setattr(cli, "_edge", lambda: fake_module)
    code, out, err = run(capsys, cfg, "reload", "proxy")
    assert code == 0 and "proxy reloaded" in out
    assert err == "warning: hub.example.org does not resolve (no such name)\n"


def test_reload_proxy_says_why_a_certificate_is_missing(capsys, cfg, monkeypatch):
    waited = []

    def missing_certificates(config, since, timeout):
        waited.append(timeout)
        return ["no certificate for hub.example.org: the CA could not connect ..."]

    fake_module = types.SimpleNamespace(
        reload_proxy=lambda settings: None,
        ProxyReloadError=Exception,
        https_preflight=lambda config: [],
        missing_certificates=missing_certificates,
    )
    monkeypatch.setattr(cli, "_edge", lambda: fake_module)
    code, out, err = run(capsys, cfg, "reload", "proxy", "--timeout", "7")
    assert code == 0  # the proxy did reload; HTTP serves and Caddy keeps asking the CA
    assert "HTTPS certificates still missing" in out
    assert err == "warning: no certificate for hub.example.org: the CA could not connect ...\n"
    assert waited == [7.0]


def test_path_constants_reexported_for_plugins():
    from tljh.system import paths
    from tljh.config import CONFIG_DIR, CONFIG_FILE, HUB_ENV_PREFIX, INSTALL_PREFIX, STATE_DIR, USER_ENV_PREFIX

    assert (INSTALL_PREFIX, HUB_ENV_PREFIX, USER_ENV_PREFIX, STATE_DIR, CONFIG_DIR, CONFIG_FILE) == (
        paths.INSTALL_PREFIX,
        paths.HUB_ENV_PREFIX,
        paths.USER_ENV_PREFIX,
        paths.STATE_DIR,
        paths.CONFIG_DIR,
        paths.CONFIG_FILE,
    )


def test_console_script_entry_point():
    from importlib.metadata import entry_points

    (ep,) = [e for e in entry_points(group="console_scripts") if e.name == "tljh-config"]
    assert ep.value == "tljh.config:main"


def test_reload_hub_reminds_about_proxy_settings(capsys, cfg, fake):
    assert run(capsys, cfg, "reload")[0] == 0
    run(capsys, cfg, "set", "https.enabled", "true")
    code, out, _ = run(capsys, cfg, "reload")
    assert code == 0
    assert "run `sudo tljh-config reload proxy` to apply them" in out
    code, out, _ = run(capsys, cfg, "reload")
    assert "reload proxy" not in out


def test_set_profiles_points_to_the_file(capsys, cfg):
    """profiles is a list of mappings: tljh-config refuses a scalar, leaving the file as it was."""
    before = cfg.read_text()
    code, out, err = run(capsys, cfg, "set", "profiles", "python")
    assert code == 2 and "profiles[0]: expected a mapping" in err
    assert cfg.read_text() == before

# ---------------------------------------------------------------------------- cross-field rules

LETSENCRYPT_WITHOUT_EMAIL = "https:\n  letsencrypt:\n    domains:\n      - hub.example.org\n"
# What `tljh-config reload proxy` said about this file before the rule was the schema's (after its prefix
# "proxy reload failed, the previous proxy configuration keeps serving: ").
EMAIL_REQUIRED = "https.letsencrypt.email is required for Let's Encrypt certificates"


def test_https_with_letsencrypt_domains_but_no_email_refused_by_set(capsys, tmp_path):
    p = tmp_path / "config.yaml"
    p.write_text(LETSENCRYPT_WITHOUT_EMAIL)
    code, out, err = run(capsys, p, "set", "https.enabled", "true")
    assert code == 2
    assert err == f"error: {EMAIL_REQUIRED}\n"
    assert p.read_text() == LETSENCRYPT_WITHOUT_EMAIL
    # TLJH's documented order (enabled, email, domains) is accepted at every step
    q = tmp_path / "tljh-order.yaml"
    for args in (("set", "https.enabled", "true"), ("set", "https.letsencrypt.email", "a@example.org"),
                 ("add-item", "https.letsencrypt.domains", "hub.example.org")):
        assert run(capsys, q, *args)[0] == 0


def test_reload_proxy_refuses_a_hand_written_file_without_email_before_touching_the_proxy(capsys, tmp_path,
                                                                                           monkeypatch):
    p = tmp_path / "config.yaml"
    p.write_text("https:\n  enabled: true\n" + LETSENCRYPT_WITHOUT_EMAIL.split("\n", 1)[1])
    untouched = types.SimpleNamespace(
        ProxyReloadError=Exception,
        **{name: lambda *a, **k: pytest.fail("the proxy must not be asked")
           for name in ("https_preflight", "reload_proxy", "missing_certificates")},
    )
    monkeypatch.setattr(cli, "_edge", lambda: untouched)
    code, _, err = run(capsys, p, "reload", "proxy")
    assert code == 2
    assert err == f"error: {EMAIL_REQUIRED}\n"
