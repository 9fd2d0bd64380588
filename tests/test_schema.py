"""The schema: every key of the compatibility contract, defaults, validation messages, value parsing."""

import copy

import jsonschema
import pytest

from tljh.settings import authenticators, schema, values

# TLJH's documented keys and defaults (DESIGN.md "Compatibility contract").
CONTRACT_DEFAULTS = {
    "base_url": "/",
    "auth.type": "firstuseauthenticator.FirstUseAuthenticator",
    "users.admin": [],
    "users.allowed": [],
    "users.banned": [],
    "users.extra_user_groups": {},
    "limits.memory": None,
    "limits.cpu": None,
    "user_environment.default_app": "jupyterlab",
    "http.address": "",
    "http.port": 80,
    "https.enabled": False,
    "https.address": "",
    "https.port": 443,
    "https.tls.cert": "",
    "https.tls.key": "",
    "https.letsencrypt.email": "",
    "https.letsencrypt.domains": [],
    "https.letsencrypt.staging": False,
    "services.cull.enabled": True,
    "services.cull.timeout": 600,
    "services.cull.every": 60,
    "services.cull.concurrency": 5,
    "services.cull.users": False,
    "services.cull.max_age": 0,
    "services.cull.remove_named_servers": False,
    # beyond TLJH
    "auth.FirstUseAuthenticator.create_users": False,
    "https.acme.directory": "",
    "https.acme.trusted_roots": [],
    "conda.channel_alias": "https://conda.anaconda.org/",
    "profiles": [],
    "allow_named_servers": False,
    "named_server_limit_per_user": 0,
    "backup.daily": False,
    "backup.directory": "/var/backups/tljh",
    "backup.keep": 7,
    "backup.homes": False,
    "hub.concurrent_starts": None,
    "network.allow_cloud_metadata": False,
    "network.allow_kernel_debugger": False,
    "network.allow_connections_between_users": False,
    "hub_database.keep_backups": 5,
}


def _get(d, key):
    for part in key.split("."):
        d = d[part]
    return d


def test_schema_is_valid_draft_2020_12():
    s = schema.get_schema()
    assert s["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(s)


@pytest.mark.parametrize("key,default", sorted(CONTRACT_DEFAULTS.items()))
def test_contract_defaults(key, default):
    assert _get(schema.effective_config({}), key) == default


def test_every_schema_key_is_in_the_contract_or_known_extra():
    documented = set(schema.all_keys())
    expected = {k for k in CONTRACT_DEFAULTS if k != "users.extra_user_groups"} | {
        "users.extra_user_groups.<group>",
        "auth.<Class>.<trait>",
        "traefik_api.ip",
        "traefik_api.port",
        "traefik_api.username",
        "traefik_api.password",
        # Beyond TLJH's keys:
        "user_environment.session_installs",
        "user_environment.language_servers",
        "builds.allowed_hosts",
        "builds.allow_unsupported",
    } | {f"environments.<name>.{k}" for k in ("description", "packages", "requirements", "apt", "python", "r", "offer_kernel",
                                                     "repository", "ref", "allow_unsupported", "allow_apt")} | {
        f"builds.{k}" for k in ("memory_limit", "time_limit", "disk_budget")
    }
    assert documented == expected


def test_effective_config_does_not_mutate_input_or_share_defaults():
    raw = {"users": {"admin": ["alice"]}}
    before = copy.deepcopy(raw)
    eff = schema.effective_config(raw)
    assert raw == before
    eff["users"]["allowed"].append("mallory")
    eff["https"]["letsencrypt"]["domains"].append("evil.example")
    fresh = schema.effective_config({})
    assert fresh["users"]["allowed"] == []
    assert fresh["https"]["letsencrypt"]["domains"] == []
    assert schema.get_schema() == schema.get_schema()


def test_effective_config_keeps_values_and_auth_classes():
    eff = schema.effective_config(
        {"limits": {"memory": "2G"}, "auth": {"type": "github", "GitHubOAuthenticator": {"client_id": "x"}}}
    )
    assert eff["limits"] == {"memory": "2G", "cpu": None}
    assert eff["auth"]["GitHubOAuthenticator"] == {"client_id": "x"}
    assert eff["auth"]["FirstUseAuthenticator"] == {"create_users": False}


def test_traefik_api_is_dropped_from_effective_and_warned():
    problems = schema.validate_config({"traefik_api": {"port": 8099}})
    assert [(p.severity, p.key) for p in problems] == [("warning", "traefik_api")]
    assert "traefik_api" not in schema.effective_config({"traefik_api": {"port": 8099}})


def test_valid_full_config_has_no_problems():
    config = {
        "base_url": "/jhub/",
        "auth": {
            "type": "oauthenticator.github.GitHubOAuthenticator",
            "GitHubOAuthenticator": {
                "client_id": "abc",
                "client_secret": "s",
                "oauth_callback_url": "https://hub.example/hub/oauth_callback",
                "allowed_organizations": ["org"],
            },
        },
        "users": {"admin": ["a"], "allowed": ["b"], "banned": ["c"], "extra_user_groups": {"research": ["a"]}},
        "limits": {"memory": "4G", "cpu": 1.5},
        "user_environment": {"default_app": "classic"},
        "services": {
            "cull": {
                "enabled": False,
                "timeout": 60,
                "every": 10,
                "concurrency": 1,
                "users": True,
                "max_age": 3600,
                "remove_named_servers": True,
            }
        },
        "http": {"address": "", "port": 8080},
        "https": {
            "enabled": True,
            "address": "",
            "port": 8443,
            "tls": {"cert": "/c.pem", "key": "/k.pem"},
            "letsencrypt": {"email": "a@b.c", "domains": ["hub.example"], "staging": True},
            "acme": {"directory": "https://127.0.0.1:14000/dir", "trusted_roots": ["/etc/ca.pem"]},
        },
    }
    assert schema.validate_config(config) == []


@pytest.mark.parametrize(
    "config,expected",
    [
        ({"foo": 1}, "foo: unknown key"),
        ({"limts": {}}, "limts: unknown key (did you mean limits?)"),
        ({"users": {"admn": []}}, "users.admn: unknown key (did you mean admin?)"),
        ({"users": {"admin": "alice"}}, "users.admin: expected a list, got 'alice'"),
        ({"limits": {"cpu": "two"}}, "limits.cpu: expected a number or none, got 'two'"),
        ({"limits": {"cpu": 0}}, "limits.cpu: must be more than 0, got 0"),
        ({"limits": {"memory": "4X"}}, "limits.memory: expected a memory size"),
        ({"limits": {"memory": 0}}, "limits.memory: memory limit must be more than 0"),
        ({"http": {"port": 70000}}, "http.port: must be at most 65535"),
        ({"https": {"enabled": "yes"}}, "https.enabled: expected true or false, got 'yes'"),
        ({"base_url": "jhub"}, "base_url: expected a URL path starting with /"),
        (
            {"user_environment": {"default_app": "lab"}},
            "user_environment.default_app: must be one of jupyterlab, classic",
        ),
        ({"services": {"cull": {"timeout": 0}}}, "services.cull.timeout: must be at least 1"),
        ({"services": {"cull": {"every": "10"}}}, "services.cull.every: expected a whole number"),
        ({"users": {"extra_user_groups": {"Bad Group": []}}}, "is not a Unix group name"),
        ({"users": {"extra_user_groups": {"g": "alice"}}}, "users.extra_user_groups.g: expected a list"),
        ({"https": {"acme": {"directory": "ftp://x"}}}, "https.acme.directory: expected an http(s):// URL"),
        ({"auth": {"type": "dummyy"}}, "auth.type: unknown authenticator 'dummyy' (did you mean dummy?)"),
        ({"auth": {"type": "nosuchmodule.Auth"}}, "cannot import authenticator module 'nosuchmodule'"),
        ({"auth": {"type": "jupyterhub.spawner.Spawner"}}, "is not a JupyterHub Authenticator class"),
        ({"auth": {"tpye": "dummy"}}, "unknown key auth.tpye (did you mean type?)"),
        ({"auth": {"GitHubOAuthenticator": {"client_idd": "x"}}}, "client_idd (did you mean client_id?)"),
        (
            {"auth": {"GitHubOAuthenticator": {"client_secret": 3}}},
            "auth.GitHubOAuthenticator.client_secret: expected a unicode string",
        ),
        (
            {"auth": {"FirstUseAuthenticator": {"create_users": "maybe"}}},
            "auth.FirstUseAuthenticator.create_users: expected",
        ),
        ({"auth": {"GitHubOAuthentcator": {}}}, "did you mean GitHubOAuthenticator?"),
        ({"auth": {"SystemdSpawner": {"mem_limit": 1}}}, "unknown key auth.SystemdSpawner"),
        ([1, 2], "must be a mapping"),
        ({"http": {"address": "nope"}}, "http.address: expected an IP address"),
        (
            {"https": {"letsencrypt": {"domains": ["ok.example", "a b"]}}},
            "https.letsencrypt.domains[1]: expected a domain name",
        ),
        ({"https": {"letsencrypt": {"email": "x"}}}, "https.letsencrypt.email: expected an email address"),
        ({"https": {"tls": {"key": "rel.pem"}}}, "https.tls.key: expected an absolute path"),
        ({"users": {"admin": [""]}}, "users.admin[0]: must not be empty"),
    ],
)
def test_refusals(config, expected):
    problems = schema.errors_only(schema.validate_config(config))
    assert problems, f"no problem found in {config}"
    assert any(expected in str(p) for p in problems), [str(p) for p in problems]
    for p in problems:
        assert "\n" not in str(p)


AUTH_TYPES = [
    "firstuseauthenticator.FirstUseAuthenticator",
    "oauthenticator.github.GitHubOAuthenticator",
    "oauthenticator.GitHubOAuthenticator",
    "oauthenticator.google.GoogleOAuthenticator",
    "oauthenticator.generic.GenericOAuthenticator",
    "ldapauthenticator.LDAPAuthenticator",
    "nativeauthenticator.NativeAuthenticator",
    "tmpauthenticator.TmpAuthenticator",
    "jupyterhub.auth.DummyAuthenticator",
    "jupyterhub.auth.PAMAuthenticator",
    "dummy",
    "pam",
    "firstuse",
    "native",
    "github",
    "google",
    "generic-oauth",
    "ldap",
    "tmp",
]


@pytest.mark.parametrize("auth_type", AUTH_TYPES)
def test_auth_types_accepted(auth_type):
    assert schema.validate_config({"auth": {"type": auth_type}}) == []
    from jupyterhub.auth import Authenticator

    assert issubclass(authenticators.resolve_authenticator(auth_type), Authenticator)


@pytest.mark.parametrize(
    "class_name,trait,value",
    [
        ("FirstUseAuthenticator", "min_password_length", 10),
        ("DummyAuthenticator", "password", "x"),
        ("PAMAuthenticator", "open_sessions", False),
        ("NativeAuthenticator", "open_signup", True),
        ("GitHubOAuthenticator", "allowed_organizations", ["a", "b"]),
        ("GoogleOAuthenticator", "hosted_domain", ["example.org"]),
        ("GenericOAuthenticator", "token_url", "https://idp/token"),
        ("LDAPAuthenticator", "server_address", "ldap.example"),
        ("LDAPAuthenticator", "bind_dn_template", ["uid={username},ou=people,dc=example"]),
        ("TmpAuthenticator", "login_service", "a guest account"),
        ("Authenticator", "admin_users", ["a"]),
        ("OAuthenticator", "client_id", "x"),
    ],
)
def test_real_traits_accepted(class_name, trait, value):
    assert schema.validate_config({"auth": {class_name: {trait: value}}}) == []


def test_trait_none_means_unset():
    assert schema.validate_config({"auth": {"GitHubOAuthenticator": {"client_id": None}}}) == []


def test_non_config_trait_refused():
    from jupyterhub.auth import Authenticator

    hidden = [n for n in Authenticator.class_traits() if n not in Authenticator.class_traits(config=True)]
    assert hidden
    problems = schema.validate_config({"auth": {"Authenticator": {hidden[0]: "x"}}})
    assert any("not configurable" in str(p) for p in problems)


def test_auth_class_of_custom_auth_type_resolves_from_mro():
    # auth.type names a subclass; its parents' names are valid sections too
    assert (
        schema.validate_config(
            {
                "auth": {
                    "type": "oauthenticator.github.LocalGitHubOAuthenticator",
                    "LocalGitHubOAuthenticator": {"create_system_users": True},
                }
            }
        )
        == []
    )


# ---------------------------------------------------------------------------- value parsing


@pytest.mark.parametrize(
    "raw,normalized,nbytes",
    [
        ("4G", "4G", 4 * 1024**3),
        ("4g", "4G", 4 * 1024**3),
        ("4GB", "4G", 4 * 1024**3),
        ("4GiB", "4G", 4 * 1024**3),
        ("4096M", "4096M", 4 * 1024**3),
        ("4096", "4096M", 4 * 1024**3),  # a bare number means megabytes, never bytes
        (4096, "4096M", 4 * 1024**3),
        ("1.5G", "1.5G", int(1.5 * 1024**3)),
        ("100M", "100M", 100 * 1024**2),
        ("512 MiB", "512M", 512 * 1024**2),
        ("1T", "1T", 1024**4),
        ("2048K", "2048K", 2048 * 1024),
    ],
)
def test_memory(raw, normalized, nbytes):
    assert values.normalize_memory(raw) == normalized
    assert values.memory_to_bytes(raw) == nbytes


@pytest.mark.parametrize("raw", ["0", "-1G", "4X", "G", "four", "4 G B", True, "1e3"])
def test_memory_refused(raw):
    with pytest.raises(values.ValueParseError):
        values.normalize_memory(raw)


def test_memory_said_back():
    assert schema.describe_value("limits.memory", "4096M") == "limits.memory = 4096M (4.0 GiB)"
    assert schema.describe_value("limits.memory", "100M") == "limits.memory = 100M (100 MiB)"
    assert schema.describe_value("limits.memory", None) == "limits.memory = none (no limit)"
    assert schema.describe_value("limits.cpu", 1.5) == "limits.cpu = 1.5 (1.5 CPUs)"
    assert schema.describe_value("services.cull.timeout", 3600) == "services.cull.timeout = 3600 (1h)"
    assert schema.describe_value("auth.type", "dummy") == "auth.type = dummy (jupyterhub.auth.DummyAuthenticator)"
    assert schema.describe_value("auth.GitHubOAuthenticator.client_secret", "s") == (
        "auth.GitHubOAuthenticator.client_secret = ********"
    )


@pytest.mark.parametrize(
    "raw,value",
    [("true", True), ("yes", True), ("On", True), ("false", False), ("no", False), ("OFF", False), ("0", False)],
)
def test_bool(raw, value):
    assert values.parse_scalar({"type": "boolean"}, raw) is value


def test_parse_scalar_types():
    assert values.parse_scalar({"type": ["number", "null"]}, "1.5") == 1.5
    assert values.parse_scalar({"type": ["number", "null"]}, "2") == 2
    assert values.parse_scalar({"type": ["number", "null"]}, "none") is None
    assert values.parse_scalar({"type": ["number", "null"]}, "NULL") is None
    assert values.parse_scalar({"type": "integer"}, "443") == 443
    assert values.parse_scalar({"type": "array", "items": {"type": "string"}}, "a, b") == ["a", "b"]
    assert values.parse_scalar({"type": "array", "items": {"type": "string"}}, "[a, b]") == ["a", "b"]
    assert values.parse_scalar({"type": "array", "items": {"type": "string"}}, '["a"]') == ["a"]
    assert values.parse_scalar({"type": "string"}, '"none"') == "none"
    assert values.parse_scalar({"type": "integer", "x-tljh-duration": True}, "10m") == 600
    with pytest.raises(values.ValueParseError, match="expected a whole number"):
        values.parse_scalar({"type": "integer"}, "1.5")
    with pytest.raises(values.ValueParseError, match="cannot be none"):
        values.parse_scalar({"type": "boolean"}, "none")
    with pytest.raises(values.ValueParseError, match="expected true or false"):
        values.parse_scalar({"type": "boolean"}, "maybe")


# ---------------------------------------------------------------------------- keys


@pytest.mark.parametrize(
    "key,message",
    [
        ("limits.memroy", "unknown key limits.memroy (did you mean limits.memory?)"),
        ("lmits.memory", "(did you mean limits.memory?)"),
        ("services.cull.timout", "(did you mean services.cull.timeout?)"),
        ("http.port.x", "http.port is a value, not a section"),
        ("users..admin", "not a valid key"),
        ("auth.GitHubOAuthenticator.client_idd", "did you mean client_id?"),
        ("auth.GitHubOAuthenticator.a.b", "auth.<Class>.<trait>"),
        ("users.extra_user_groups.Bad Group", "is not a Unix group name"),
    ],
)
def test_lookup_unknown_keys(key, message):
    with pytest.raises(schema.UnknownKeyError) as e:
        schema.lookup_key(key)
    assert message in str(e.value)


def test_lookup_kinds():
    assert schema.lookup_key("users").kind == "section"
    assert schema.lookup_key("users.admin").is_list
    assert schema.lookup_key("users.extra_user_groups.research").is_list
    assert schema.lookup_key("https.enabled").reload == "proxy"
    assert schema.lookup_key("limits.memory").reload == "hub"
    t = schema.lookup_key("auth.GitHubOAuthenticator.allowed_organizations")
    assert t.kind == "trait" and t.is_list
    assert schema.lookup_key("traefik_api.password").kind == "ignored"


def test_secret_masking():
    masked = schema.mask_secrets(
        {
            "auth": {
                "GitHubOAuthenticator": {"client_secret": "s", "client_id": "id", "token_url": "https://t"},
                "LDAPAuthenticator": {"lookup_dn_search_password": "p", "bind_password": ""},
                "NativeAuthenticator": {"check_common_password": True},
            },
            "traefik_api": {"password": "x"},
        }
    )
    gh = masked["auth"]["GitHubOAuthenticator"]
    assert gh == {"client_secret": schema.MASK, "client_id": "id", "token_url": "https://t"}
    assert masked["auth"]["LDAPAuthenticator"] == {"lookup_dn_search_password": schema.MASK, "bind_password": ""}
    assert masked["auth"]["NativeAuthenticator"]["check_common_password"] is True
    assert masked["traefik_api"]["password"] == schema.MASK


# ---------------------------------------------------------------------------- docs reference


EMAIL_REQUIRED = "https.letsencrypt.email is required for Let's Encrypt certificates"


@pytest.mark.parametrize(
    "https,refused",
    [
        ({"enabled": True, "letsencrypt": {"domains": ["hub.example.org"]}}, True),
        ({"enabled": True, "letsencrypt": {"domains": ["hub.example.org"], "email": ""}}, True),
        ({"enabled": True, "letsencrypt": {"domains": ["hub.example.org"], "email": "a@example.org"}}, False),
        # another CA (its own rules), an own certificate, HTTPS off, no domain yet: no email needed
        ({"enabled": True, "letsencrypt": {"domains": ["hub.example.org"]}, "acme": {"directory": "https://ca/dir"}},
         False),
        ({"enabled": True, "letsencrypt": {"domains": ["hub.example.org"]}, "tls": {"cert": "/c.pem"}}, False),
        ({"enabled": False, "letsencrypt": {"domains": ["hub.example.org"]}}, False),
        ({"enabled": True}, False),
    ],
)
def test_letsencrypt_needs_an_email(https, refused):
    """A cross-field rule of the schema: refused with one line by validation, as the proxy used to refuse it."""
    messages = [str(p) for p in schema.validate_config({"https": https})]
    assert messages == ([EMAIL_REQUIRED] if refused else [])
