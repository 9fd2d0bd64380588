"""tljh export z2jh / import z2jh: values checked against the Zero to JupyterHub chart's value paths and types
(tests/data/z2jh-value-rules.yaml, checked against the chart's schema: see its header), export -> import -> export
stable, and nothing dropped without a line."""

import copy
import io

import pytest
from ruamel.yaml import YAML

from z2jh_chart import chart_errors, load_chart

from tljh.install import z2jh
from tljh.settings import config_file
from tljh.settings.effective import effective_settings

CERT = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
KEY = "-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----\n"

# Every config.yaml key the export maps, set to a non-default value.
EVERY_KEY = {
    "base_url": "/jhub/",
    "auth": {
        "type": "oauthenticator.github.GitHubOAuthenticator",
        "GitHubOAuthenticator": {"client_id": "abc", "client_secret": "s3cret", "allowed_organizations": ["lab"]},
    },
    "users": {
        "admin": ["teacher"],
        "allowed": ["alice", "bob"],
        "banned": ["mallory"],
        "extra_user_groups": {"stats101": ["alice"], "teachers": ["teacher"]},
    },
    "limits": {"memory": "2G", "cpu": 1.5},
    "user_environment": {"default_app": "classic"},
    "services": {
        "cull": {"enabled": True, "timeout": 1200, "every": 120, "concurrency": 3, "users": True, "max_age": 86400, "remove_named_servers": True}
    },
    "https": {"enabled": True, "letsencrypt": {"email": "admin@example.org", "domains": ["hub.example.org"], "staging": True}},
}
# Profiles as config.yaml holds them (the profiles engineer's format: KubeSpawner's, spawner_override).
PROFILES = [
    {
        "display_name": "Data science",
        "description": "pandas and friends",
        "slug": "data",
        "default": True,
        "spawner_override": {"user_environment": "data", "mem_limit": "4G", "cpu_limit": 2.0, "default_url": "/lab"},
        "profile_options": {
            "memory": {
                "display_name": "Memory",
                "choices": {
                    "small": {"display_name": "1 GB", "default": True, "spawner_override": {"mem_limit": "1G"}},
                    "large": {"display_name": "8 GB", "spawner_override": {"mem_limit": "8G"}},
                },
                "unlisted_choice": {
                    "enabled": True,
                    "display_name": "Other (GB)",
                    "validation_regex": "^[1-8]$",
                    "spawner_override": {"mem_limit": "{value}G"},
                },
            }
        },
    },
    {
        "display_name": "Classic notebook",
        "slug": "classic",
        "spawner_override": {"default_url": "/tree", "environment": {"COURSE": "stats101"}},
    },
]
LOCKS = {"default": "jupyterlab==4.6.0\nnumpy==2.3.0\n", "data": "pandas==2.3.0\n"}


def lock_of(name):
    return LOCKS.get(name), f"sudo tljh env show {name}"


def full_config(raw=EVERY_KEY, profiles=PROFILES):
    config = effective_settings(copy.deepcopy(raw)).config
    assert not effective_settings(copy.deepcopy(raw)).errors
    if profiles:
        config["profiles"] = copy.deepcopy(profiles)
        config["allow_named_servers"] = True
        config["named_server_limit_per_user"] = 3
        config["environments"] = {"data": {"packages": ["pandas"]}}
    return config


def export(config, **kw):
    values, notes = z2jh.export_values(config, read_text={"/etc/hub.pem": CERT, "/etc/hub.key": KEY}.get, lock_of=lock_of, **kw)
    return values, notes


def plain(values):
    yaml = YAML(typ="safe")
    return yaml.load(z2jh.dump(values))


@pytest.fixture(scope="module")
def chart():
    return load_chart()


def test_chart_rules_catch_bad_values(chart):
    """The rules are in force: wrong types, unknown keys and a guarantee above the limit are errors (so the tests
    below can fail), and the chart's own defaults pass."""
    assert chart_errors(chart, {}) == []
    assert chart_errors(chart, {"cull": {"timeout": "ten minutes"}})
    assert chart_errors(chart, {"singleuser": {"memory": {"limit_typo": "1G"}}})
    assert chart_errors(chart, {"proxy": {"https": {"type": "selfsigned"}}})
    assert chart_errors(chart, {"hub": {"config": {"jupyterHub": {}}}})
    assert chart_errors(chart, {"hub": {"baseUrl": None}})  # null removes it; the chart requires it
    assert chart_errors(chart, {"singleuser": {"profileList": [{"display_name": "x", "spawner_override": {}}]}})
    assert chart_errors(chart, {"singleuser": {"memory": {"limit": "512M"}}})


@pytest.mark.parametrize(
    "raw",
    [
        EVERY_KEY,
        {},  # a fresh install: FirstUse, no limits
        {"https": {"enabled": True, "tls": {"cert": "/etc/hub.pem", "key": "/etc/hub.key"}}, "limits": {"memory": "512M"}},
    ],
    ids=["every-key", "defaults", "manual-https"],
)
def test_export_validates_against_chart_schema(chart, raw):
    values, _ = export(full_config(raw))
    assert chart_errors(chart, plain(values)) == []


def test_export_maps_every_key(chart):
    values, notes = export(full_config())
    v = plain(values)
    assert v["hub"]["baseUrl"] == "/jhub/"
    assert v["hub"]["config"]["JupyterHub"]["authenticator_class"] == "oauthenticator.github.GitHubOAuthenticator"
    assert v["hub"]["config"]["GitHubOAuthenticator"]["allowed_organizations"] == ["lab"]
    assert v["hub"]["config"]["Authenticator"] == {"admin_users": ["teacher"], "allowed_users": ["alice", "bob"], "blocked_users": ["mallory"]}
    assert v["hub"]["config"]["JupyterHub"]["load_groups"] == {"stats101": {"users": ["alice"]}, "teachers": {"users": ["teacher"]}}
    assert (v["hub"]["allowNamedServers"], v["hub"]["namedServerLimitPerUser"]) == (True, 3)
    assert v["singleuser"]["memory"] == {"limit": "2G"} and v["singleuser"]["cpu"] == {"limit": 1.5}
    assert v["singleuser"]["defaultUrl"] == "/tree"
    assert v["cull"] == {"enabled": True, "timeout": 1200, "every": 120, "concurrency": 3, "users": True, "maxAge": 86400, "removeNamedServers": True}
    assert v["proxy"]["https"] == {
        "enabled": True,
        "type": "letsencrypt",
        "hosts": ["hub.example.org"],
        "letsencrypt": {"contactEmail": "admin@example.org", "acmeServer": z2jh.LETSENCRYPT_STAGING},
    }
    data, classic = v["singleuser"]["profileList"]
    assert data["kubespawner_override"]["image"].startswith("REPLACE-ME/tljh-env-data:lock-")
    assert data["kubespawner_override"]["mem_limit"] == "4G"
    assert data["profile_options"]["memory"]["choices"]["large"]["kubespawner_override"] == {"mem_limit": "8G"}
    assert data["profile_options"]["memory"]["unlisted_choice"]["kubespawner_override"] == {"mem_limit": "{value}G"}
    assert classic["kubespawner_override"] == {"default_url": "/tree", "environment": {"COURSE": "stats101"}}
    text = z2jh.dump(values)
    # The placeholders say which environment and where its lock is.
    assert "environment 'data': build an image from its lock (sudo tljh env show data)" in text
    assert "environment 'default': build an image from its lock (sudo tljh env show default)" in text
    assert any("extra_user_groups" in n for n in notes)


def test_lock_change_changes_the_placeholder_tag():
    before, _ = export(full_config())
    LOCKS["data"] = "pandas==2.3.1\n"
    try:
        after, _ = export(full_config())
    finally:
        LOCKS["data"] = "pandas==2.3.0\n"
    image = lambda v: plain(v)["singleuser"]["profileList"][0]["kubespawner_override"]["image"]  # noqa: E731
    assert image(before) != image(after)


def test_unexpressible_settings_are_listed():
    raw = copy.deepcopy(EVERY_KEY)
    raw["http"] = {"port": 8080, "address": "10.0.0.5"}
    raw["https"]["acme"] = {"directory": "https://ca.internal/dir", "trusted_roots": ["/etc/ca.pem"]}
    raw["backup"] = {"daily": True}
    profiles = copy.deepcopy(PROFILES)
    profiles[1]["allowed_groups"] = ["teachers"]
    profiles[1]["spawner_override"]["session_installs"] = True
    _, notes = export(full_config(raw, profiles), snippets=["/opt/tljh/config/jupyterhub_config.d/extra.py"], plugins=["tljh-repo2docker"])
    text = "\n".join(notes)
    for expected in (
        "http.port 8080",
        "http.address 10.0.0.5",
        "https.acme.trusted_roots",
        "backup.daily",
        "profiles[1].allowed_groups ['teachers']",
        "profiles[1].spawner_override.session_installs",
        "jupyterhub_config.d/extra.py",
        "plugin tljh-repo2docker",
    ):
        assert expected in text


def test_what_images_need_beyond_the_lock_is_listed():
    """The lock holds Python packages; an image for the environment also needs its Python, OS packages and R, or
    is built from the environment's repository. Kernels of every environment in every server do not carry over."""
    config = full_config()
    config["environments"]["data"].update(python="3.12", apt=["libgdal-dev"], r=True)
    config["environments"]["course"] = {"repository": "https://example.org/course.git"}
    config["profiles"][1]["spawner_override"]["user_environment"] = "course"
    _, notes = export(config)
    assert "environments.data: its image needs Python 3.12, the OS packages libgdal-dev, R and IRkernel too" in "\n".join(notes)
    assert any(n.startswith("environments.course: comes from https://example.org/course.git; build its image") for n in notes)
    assert any(n.startswith("environments: every server here offers a kernel of each environment") for n in notes)
    _, notes = export(full_config(profiles=None))
    assert not [n for n in notes if n.startswith("environments")]


def test_firstuse_and_manual_cert_notes(chart):
    raw = {"https": {"enabled": True, "tls": {"cert": "/etc/hub.pem", "key": "/etc/hub.key"}}}
    values, notes = export(full_config(raw, None))
    v = plain(values)
    assert v["proxy"]["https"] == {"enabled": True, "type": "manual", "manual": {"key": KEY, "cert": CERT}}
    assert v["hub"]["config"]["FirstUseAuthenticator"]["allow_all"] is True  # open by default here: said there
    assert any("FirstUseAuthenticator passwords" in n for n in notes)
    assert any("private key" in n for n in notes)


def roundtrip(config, monkeypatch):
    """export -> import into an empty config.yaml -> export; returns (first values, second values, import notes)."""
    monkeypatch.setattr(z2jh, "_has_key", lambda key: True)  # profiles' schema keys (branch `profiles`)
    first, _ = export(config)
    assignments, pem, notes = z2jh.import_values(plain(first), {}, environments={"default", "data"})
    doc = config_file.parse_document("")
    z2jh.apply_assignments(doc, assignments)
    raw = config_file.to_plain(doc)
    if pem:
        raw.setdefault("https", {})["tls"] = {"cert": "/etc/hub.pem", "key": "/etc/hub.key"}
        assert pem == {"cert": CERT, "key": KEY}
    profiles = raw.pop("profiles", None)
    named = {k: raw.pop(k) for k in ("allow_named_servers", "named_server_limit_per_user") if k in raw}
    config2 = effective_settings(raw).config
    assert not effective_settings(raw).errors
    if profiles is not None:
        config2.update(profiles=profiles, environments={"data": {}}, **named)
    second, _ = export(config2)
    return first, second, notes


@pytest.mark.parametrize("raw", [EVERY_KEY, {}, {"https": {"enabled": True, "tls": {"cert": "/etc/hub.pem", "key": "/etc/hub.key"}}}])
def test_export_import_export_is_stable(raw, monkeypatch):
    first, second, notes = roundtrip(full_config(raw), monkeypatch)
    assert z2jh.dump(second) == z2jh.dump(first)
    assert notes == []  # what export writes, import takes back entirely


def test_import_lists_what_does_not_map():
    values = {
        "hub": {"config": {"KubeSpawner": {"start_timeout": 600}, "JupyterHub": {"admin_access": True}}},
        "proxy": {"service": {"type": "LoadBalancer"}, "https": {"enabled": True, "type": "offload"}},
        "singleuser": {"storage": {"capacity": "10Gi"}, "image": {"name": "jupyter/datascience-notebook", "tag": "x"}, "defaultUrl": "/rstudio", "memory": {"limit": "1.5Gi"}},
        "cull": {"adminUsers": False},
        "scheduling": {"userScheduler": {"enabled": False}},
    }
    assignments, _, notes = z2jh.import_values(values, {})
    text = "\n".join(notes)
    for expected in (
        "hub.config.KubeSpawner.start_timeout",
        "hub.config.JupyterHub.admin_access",
        "proxy.service.type",
        "proxy.https.type offload",
        "singleuser.storage.capacity",
        "singleuser.image jupyter/datascience-notebook",
        "singleuser.defaultUrl /rstudio",
        "cull.adminUsers false",
        "scheduling.userScheduler.enabled",
    ):
        assert expected in text
    assert assignments["limits.memory"] == "1.5G" and assignments["https.enabled"] is True


@pytest.mark.parametrize("value, expected", [(1073741824, "1G"), (536870912, "512M"), ("2Gi", "2G"), ("512M", "512M"), ("1.5G", "1.5G"), (1000, None), ("lots", None)])
def test_chart_memory_values(value, expected):
    assert z2jh.memory_from_chart(value) == expected


def test_import_command_dry_run_and_refusal(tmp_path, monkeypatch):
    from tljh.system import paths

    config = tmp_path / "config.yaml"
    config.write_text("# my hub\nusers:\n  admin: [teacher]\n")
    monkeypatch.setattr(paths, "CONFIG_FILE", str(config))
    values = tmp_path / "values.yaml"
    values.write_text("cull:\n  timeout: 900\nhub:\n  baseUrl: /jh/\n")
    out, err = io.StringIO(), io.StringIO()
    assert z2jh.import_command(str(values), dry_run=True, out=out, err=err) == 0
    assert "timeout: 900" in out.getvalue() and "# my hub" in out.getvalue()
    assert config.read_text() == "# my hub\nusers:\n  admin: [teacher]\n"
    assert z2jh.import_command(str(values), out=io.StringIO(), err=io.StringIO()) == 0
    assert config_file.load_raw(str(config))["services"]["cull"]["timeout"] == 900
    before = config.read_text()
    values.write_text("cull:\n  timeout: -5\n")
    err = io.StringIO()
    assert z2jh.import_command(str(values), out=io.StringIO(), err=err) == 2
    assert "nothing was changed" in err.getvalue() and config.read_text() == before
