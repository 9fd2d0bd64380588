"""apply_config: config.yaml -> JupyterHub traitlets, without a hub."""

import copy
import sys

import pytest
from traitlets.config import Config

from tljh.hub import configurer
from tljh.settings import authenticators, schema
from tljh.hub.configurer import apply_config


def applied(config):
    c = Config()
    configurer.apply_config(config, c)
    return c


def test_defaults():
    c = applied({})
    assert c.JupyterHub.authenticator_class == "firstuseauthenticator.FirstUseAuthenticator"
    assert c.FirstUseAuthenticator.create_users is False
    assert c.FirstUseAuthenticator.allow_all is True
    assert c.JupyterHub.base_url == "/"
    assert c.Authenticator.admin_users == set()
    assert c.Authenticator.allowed_users == set()
    assert c.Authenticator.blocked_users == set()
    assert c.UserCreatingSpawner.user_groups == {}
    assert c.Spawner.mem_limit is None
    assert c.Spawner.cpu_limit is None
    assert c.Spawner.default_url == "/lab"
    assert [s["name"] for s in c.JupyterHub.services] == ["cull-idle"]


def test_does_not_mutate_input():
    config = {"users": {"admin": ["a"]}, "auth": {"type": "dummy"}}
    before = copy.deepcopy(config)
    applied(config)
    assert config == before


def test_users():
    c = applied(
        {
            "users": {
                "admin": ["a"],
                "allowed": ["b", "c"],
                "banned": ["m"],
                "extra_user_groups": {"research": ["a", "b"], "empty": []},
            }
        }
    )
    assert c.Authenticator.admin_users == {"a"}
    assert c.Authenticator.allowed_users == {"b", "c"}
    assert c.Authenticator.blocked_users == {"m"}
    assert c.UserCreatingSpawner.user_groups == {"research": ["a", "b"], "empty": []}
    # an allowed list turns off FirstUse's allow-everyone default
    assert "allow_all" not in c.FirstUseAuthenticator


@pytest.mark.parametrize(
    "memory,nbytes",
    [
        ("1G", 1024**3),
        ("4096M", 4 * 1024**3),
        (4096, 4 * 1024**3),
        ("100M", 100 * 1024**2),
        ("1.5G", int(1.5 * 1024**3)),
    ],
)
def test_memory_limit_in_bytes(memory, nbytes):
    assert applied({"limits": {"memory": memory}}).Spawner.mem_limit == nbytes


def test_cloud_metadata_is_denied_unless_allowed():
    assert "denied_addresses" not in applied({}).UserCreatingSpawner  # the spawner's default: denied
    assert applied({"network": {"allow_cloud_metadata": True}}).UserCreatingSpawner.denied_addresses == []


def test_kernel_debugger_is_off_unless_allowed():
    assert applied({}).UserCreatingSpawner.kernel_debugger is False
    assert applied({"network": {"allow_kernel_debugger": True}}).UserCreatingSpawner.kernel_debugger is True


def test_users_ports_are_private_unless_allowed():
    assert applied({}).UserCreatingSpawner.private_ports is True
    assert applied({"network": {"allow_connections_between_users": True}}).UserCreatingSpawner.private_ports is False


def test_cpu_limit():
    assert applied({"limits": {"cpu": 1.5}}).Spawner.cpu_limit == 1.5
    assert applied({"limits": {"cpu": 2}}).Spawner.cpu_limit == 2.0


def test_limits_are_valid_spawner_values():
    from jupyterhub.spawner import Spawner

    c = applied({"limits": {"memory": "512M", "cpu": 0.5}})
    s = Spawner(config=c)
    assert s.mem_limit == 512 * 1024**2
    assert s.cpu_limit == 0.5


@pytest.mark.parametrize("app,url", [("jupyterlab", "/lab"), ("classic", "/tree")])
def test_default_app(app, url):
    assert applied({"user_environment": {"default_app": app}}).Spawner.default_url == url


def test_session_installs_on_by_default():
    assert applied({}).UserCreatingSpawner.session_installs is True
    assert applied({"user_environment": {"session_installs": False}}).UserCreatingSpawner.session_installs is False


@pytest.mark.parametrize("base_url,expected", [("/", "/"), ("/jhub/", "/jhub/"), ("/jhub", "/jhub/")])
def test_base_url(base_url, expected):
    assert applied({"base_url": base_url}).JupyterHub.base_url == expected


def test_auth_type_and_traits():
    c = applied(
        {
            "auth": {
                "type": "oauthenticator.github.GitHubOAuthenticator",
                "GitHubOAuthenticator": {
                    "client_id": "id",
                    "client_secret": "s",
                    "scope": None,
                    "allowed_organizations": ["org"],
                },
            }
        }
    )
    assert c.JupyterHub.authenticator_class == "oauthenticator.github.GitHubOAuthenticator"
    assert c.GitHubOAuthenticator.client_id == "id"
    assert c.GitHubOAuthenticator.allowed_organizations == ["org"]
    assert "scope" not in c.GitHubOAuthenticator  # None means "not set"
    assert "allow_all" not in c.FirstUseAuthenticator


@pytest.mark.parametrize("short", ["dummy", "pam", "github", "ldap", "native", "tmp", "firstuse"])
def test_short_auth_names_load_in_jupyterhub(short):
    """JupyterHub itself resolves the value we give it to the right class."""
    from jupyterhub.app import JupyterHub

    c = applied({"auth": {"type": short}})
    hub = JupyterHub(config=c)
    assert hub.authenticator_class is authenticators.resolve_authenticator(short)


def test_firstuse_short_name_allows_all_without_allowed_users():
    assert applied({"auth": {"type": "firstuse"}}).FirstUseAuthenticator.allow_all is True
    c = applied({"auth": {"type": "firstuse", "FirstUseAuthenticator": {"allow_all": False}}})
    assert c.FirstUseAuthenticator.allow_all is False


def test_dummy_allows_any_login_by_itself():
    from jupyterhub.auth import DummyAuthenticator

    a = DummyAuthenticator(config=applied({"auth": {"type": "dummy"}}))
    assert a.allow_all is True


def test_culler_service_and_role():
    c = applied(
        {
            "services": {
                "cull": {
                    "timeout": 60,
                    "every": 10,
                    "concurrency": 2,
                    "max_age": 7200,
                    "users": True,
                    "remove_named_servers": True,
                }
            }
        }
    )
    (service,) = c.JupyterHub.services
    assert service["name"] == "cull-idle"
    assert service["command"] == [
        sys.executable,
        "-m",
        "jupyterhub_idle_culler",
        "--timeout=60",
        "--cull-every=10",
        "--concurrency=2",
        "--max-age=7200",
        "--cull-users=true",
        "--remove-named-servers=true",
    ]
    (role,) = c.JupyterHub.load_roles
    assert role["services"] == ["cull-idle"]
    assert set(role["scopes"]) == {"list:users", "read:users:activity", "read:servers", "delete:servers", "admin:users"}


def test_culler_without_user_culling_has_no_admin_scope():
    (role,) = applied({}).JupyterHub.load_roles
    assert "admin:users" not in role["scopes"]


def test_culler_command_is_accepted_by_the_culler():
    from jupyterhub_idle_culler import IdleCuller

    cmd = configurer.culler_command(
        schema.effective_config({"services": {"cull": {"timeout": 61, "users": True}}})["services"]["cull"]
    )
    app = IdleCuller()
    app.parse_command_line(cmd[3:])
    assert (app.timeout, app.cull_every, app.concurrency, app.cull_users, app.remove_named_servers) == (
        61,
        60,
        5,
        True,
        False,
    )


def test_culler_disabled():
    c = applied({"services": {"cull": {"enabled": False}}})
    assert c.JupyterHub.services == []
    assert c.JupyterHub.load_roles == []


def test_culler_keeps_other_services_and_roles_and_is_idempotent():
    c = Config()
    c.JupyterHub.services = [{"name": "other", "url": "http://127.0.0.1:9999"}]
    c.JupyterHub.load_roles = [{"name": "other-role", "scopes": ["read:users"], "services": ["other"]}]
    configurer.apply_config({}, c)
    configurer.apply_config({"services": {"cull": {"timeout": 30}}}, c)
    assert [s["name"] for s in c.JupyterHub.services] == ["other", "cull-idle"]
    assert [r["name"] for r in c.JupyterHub.load_roles] == ["other-role", "tljh-idle-culler"]
    assert "--timeout=30" in c.JupyterHub.services[1]["command"]


def test_load_config_fills_defaults(tmp_path):
    p = tmp_path / "config.yaml"
    p.write_text("limits:\n  memory: 2G\n")
    config = configurer.load_config(str(p))
    assert config["limits"]["memory"] == "2G"
    assert config["services"]["cull"]["timeout"] == 600
    assert configurer.load_config(str(tmp_path / "missing.yaml")) == schema.effective_config({})


def test_authenticator_class_name():
    assert authenticators.class_name_of("github") == "GitHubOAuthenticator"
    assert authenticators.class_name_of("oauthenticator.github.GitHubOAuthenticator") == "GitHubOAuthenticator"
    assert authenticators.class_name_of("mod:Cls") == "Cls"


def test_invalid_values_stop_the_hub_with_one_clear_line():
    with pytest.raises(schema.ConfigError) as e:
        applied({"limits": {"memory": "lots", "cpu": "two"}, "user_environment": {"default_app": "nteract"}})
    msg = str(e.value)
    assert "\n" not in msg
    assert msg.startswith("config.yaml: ")
    for part in (
        "limits.memory: expected a memory size",
        "limits.cpu: expected a number",
        "user_environment.default_app: must be one of",
    ):
        assert part in msg


def test_unknown_keys_are_logged_not_fatal(caplog):
    import logging

    with caplog.at_level(logging.WARNING, logger="tljh"):
        c = applied(
            {
                "limts": {"memory": "1G"},
                "traefik_api": {"port": 8099},
                "auth": {"GitHubOAuthenticator": {"client_idd": "x"}},
            }
        )
    assert c.Spawner.mem_limit is None
    text = caplog.text
    assert "limts: unknown key (did you mean limits?) (ignored)" in text
    assert "traefik_api.* is ignored" in text
    assert "client_idd (did you mean client_id?)" in text
    assert "client_idd" not in c.GitHubOAuthenticator


def test_every_trait_set_exists_on_the_hubs_classes():
    """A misspelled trait is only a log warning in JupyterHub: catch it here."""
    from jupyterhub.app import JupyterHub
    from jupyterhub.auth import Authenticator
    from oauthenticator.github import GitHubOAuthenticator

    from tljh.hub.spawner import UserCreatingSpawner

    c = applied(
        {
            "base_url": "/jhub/",
            "auth": {"type": "github", "GitHubOAuthenticator": {"client_id": "x"}},
            "users": {"admin": ["a"], "allowed": ["b"], "banned": ["c"], "extra_user_groups": {"g": ["a"]}},
            "limits": {"memory": "1G", "cpu": 1},
            "user_environment": {"default_app": "classic"},
            "services": {"cull": {"users": True}},
        }
    )
    classes = {cls.__name__: cls for cls in UserCreatingSpawner.__mro__ if hasattr(cls, "class_traits")}
    classes.update(
        {"JupyterHub": JupyterHub, "Authenticator": Authenticator, "GitHubOAuthenticator": GitHubOAuthenticator}
    )
    from firstuseauthenticator import FirstUseAuthenticator

    classes["FirstUseAuthenticator"] = FirstUseAuthenticator
    unknown = [
        f"c.{section}.{name}"
        for section, values in c.items()
        for name in values
        if name not in classes[section].class_traits(config=True)
    ]
    assert unknown == []


@pytest.mark.parametrize("timeout, interval", [(60, 30), (600, 300), (3600, 300), (15, 10)])
def test_activity_reported_often_enough_for_the_culler(timeout, interval):
    c = Config()
    apply_config({"services": {"cull": {"timeout": timeout}}}, c)
    assert c.Spawner.environment["JUPYTERHUB_ACTIVITY_INTERVAL"] == str(interval)


def test_no_activity_interval_without_culler():
    c = Config()
    apply_config({"services": {"cull": {"enabled": False}}}, c)
    assert "environment" not in c.Spawner


@pytest.mark.parametrize("auth_type, section", [("dummy", "DummyAuthenticator"), ("tmpauthenticator.TmpAuthenticator", "TmpAuthenticator")])
def test_open_authenticators_admit_everyone_unless_allowed_users(auth_type, section):
    c = Config()
    apply_config({"auth": {"type": auth_type}}, c)
    assert c[section].allow_all is True
    c = Config()
    apply_config({"auth": {"type": auth_type}, "users": {"allowed": ["ann"]}}, c)
    assert "allow_all" not in c[section]


def test_oauth_stays_closed_by_default():
    c = Config()
    apply_config({"auth": {"type": "github"}}, c)
    assert "allow_all" not in c.GitHubOAuthenticator


def test_concurrent_starts_setting():
    c = Config()
    configurer.apply_config({"hub": {"concurrent_starts": 4}}, c)
    assert c.UserCreatingSpawner.concurrent_starts == 4
    c = Config()
    configurer.apply_config({}, c)
    assert "concurrent_starts" not in c.UserCreatingSpawner  # the spawner's own default: one per CPU
