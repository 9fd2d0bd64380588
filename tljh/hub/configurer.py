"""Turn config.yaml into JupyterHub traitlets.

`apply_config(config, c)` is a pure function of the configuration: it only sets values on the traitlets
Config `c`, so it can be unit-tested without a hub and called any number of times. Defaults come from
the schema (tljh/settings/schema.py); nothing here keeps or mutates module-level defaults.

Where a key is declared and checked: tljh/settings/schema.py; applied to the hub: here.
"""

from __future__ import annotations

import logging
import sys

from tljh.settings import authenticators, schema
from tljh.settings.effective import load_settings
from tljh.settings.environments import offered_kernels
from tljh.settings.errors import ConfigError
from tljh.settings.values import memory_to_bytes
from tljh.system.paths import CONFIG_FILE

OPEN_BY_DEFAULT = ("FirstUseAuthenticator", "DummyAuthenticator", "TmpAuthenticator")
CULLER_SERVICE = "cull-idle"  # TLJH's service name
CULLER_ROLE = "tljh-idle-culler"


def load_config(config_file: str = CONFIG_FILE) -> dict:
    """The effective configuration (defaults filled in) of config_file. TLJH's function of the same name.

    Raises tljh.settings.config_file.ConfigFileError (file, line, problem) when the YAML is malformed.
    """
    return load_settings(config_file).config


def check_config(config: dict, log=None) -> None:
    """Raise ConfigError (one line, every problem) if the hub must not start with `config`.

    Unknown keys (a typo, or a key some other tool left in a hand-edited file) are logged and skipped
    rather than keeping the hub down; `tljh-config` refuses to write them and `reload` refuses them.
    """
    log = log or logging.getLogger("tljh")
    problems = schema.validate_config(config)
    for p in problems:
        if p.severity == "warning" or p.unknown_key:
            log.warning("config.yaml: %s (ignored)", p)
    errors = [p for p in schema.errors_only(problems) if not p.unknown_key]
    if errors:
        raise ConfigError("config.yaml: " + "; ".join(str(p) for p in errors))


def apply_config(config: dict, c, log=None) -> None:
    """Set JupyterHub traitlets on `c` from `config` (raw or effective; defaults are filled in here).

    Raises ConfigError naming every invalid value; see check_config.
    """
    check_config(config, log)
    config = schema.effective_config(config)
    _apply_base_url(config, c)
    _apply_auth(config, c)
    _apply_users(config, c)
    _apply_limits(config, c)
    _apply_hub(config, c)
    _apply_network(config, c)
    _apply_user_environment(config, c)
    _apply_profiles(config, c)
    _apply_services(config, c)


def _apply_base_url(config, c):
    c.JupyterHub.base_url = config["base_url"]  # normalised ("/x/") by the effective config


def _apply_auth(config, c):
    auth = config["auth"]
    auth_type = auth["type"]
    # JupyterHub accepts both entry-point names and dotted paths, as auth.type does
    c.JupyterHub.authenticator_class = auth_type
    for class_name, traits in auth.items():
        if class_name == "type" or not isinstance(traits, dict):
            continue
        try:
            known = authenticators.config_traits(authenticators.class_for_section(class_name, auth_type))
        except ConfigError:
            continue  # unknown class: check_config logged it
        section = c[class_name]
        for trait, value in traits.items():
            if trait in known and value is not None:  # None means "not set": the class default applies
                section[trait] = value
    # Authenticators whose whole point is letting people in (FirstUse: limited by create_users; Dummy and
    # Tmp: test and demo hubs) admit everyone unless users.allowed says otherwise. Others (OAuth, LDAP,
    # PAM, Native) keep JupyterHub's safe default: nobody until allowed users or allow_all are set.
    name = authenticators.class_name_of(auth_type)
    if name in OPEN_BY_DEFAULT and not config["users"]["allowed"]:
        if auth.get(name, {}).get("allow_all") is None:
            c[name].allow_all = True


def _apply_users(config, c):
    users = config["users"]
    c.Authenticator.admin_users = set(users["admin"])
    c.Authenticator.allowed_users = set(users["allowed"])
    c.Authenticator.blocked_users = set(users["banned"])
    # tljh.hub.spawner.UserCreatingSpawner.user_groups (TLJH's trait name): group -> users, created on spawn
    c.UserCreatingSpawner.user_groups = {
        group: list(members or []) for group, members in users["extra_user_groups"].items()
    }


def _apply_network(config, c):
    if config["network"]["allow_cloud_metadata"]:
        c.UserCreatingSpawner.denied_addresses = []
    c.UserCreatingSpawner.kernel_debugger = config["network"]["allow_kernel_debugger"]
    c.UserCreatingSpawner.private_ports = not config["network"]["allow_connections_between_users"]


def _apply_limits(config, c):
    limits = config["limits"]
    c.Spawner.mem_limit = memory_to_bytes(limits["memory"])
    c.Spawner.cpu_limit = float(limits["cpu"]) if limits["cpu"] is not None else None


def _apply_hub(config, c):
    starts = config["hub"]["concurrent_starts"]
    if starts is not None:
        c.UserCreatingSpawner.concurrent_starts = int(starts)


def _apply_user_environment(config, c):
    app = config["user_environment"]["default_app"]
    c.Spawner.default_url = {"jupyterlab": "/lab", "classic": "/tree"}[app]
    c.UserCreatingSpawner.session_installs = config["user_environment"]["session_installs"]
    c.UserCreatingSpawner.language_servers = config["user_environment"]["language_servers"]
    c.UserCreatingSpawner.environment_kernels = offered_kernels(config)


def _apply_profiles(config, c):
    c.UserCreatingSpawner.profiles = config["profiles"]  # made explicit by the effective config
    c.JupyterHub.allow_named_servers = config["allow_named_servers"]
    c.JupyterHub.named_server_limit_per_user = config["named_server_limit_per_user"]
    # The picker's "build from a repository" profile is in config["profiles"] already (effective config).
    c.UserCreatingSpawner.repository_hosts = list(config["builds"]["allowed_hosts"])
    c.UserCreatingSpawner.repository_allow_unsupported = config["builds"]["allow_unsupported"]


def culler_command(cull: dict) -> list[str]:
    """The idle culler's command line (jupyterhub-idle-culler 2.x flags) from services.cull.*."""
    return [
        sys.executable,
        "-m",
        "jupyterhub_idle_culler",
        f"--timeout={int(cull['timeout'])}",
        f"--cull-every={int(cull['every'])}",
        f"--concurrency={int(cull['concurrency'])}",
        f"--max-age={int(cull['max_age'])}",
        f"--cull-users={'true' if cull['users'] else 'false'}",
        f"--remove-named-servers={'true' if cull['remove_named_servers'] else 'false'}",
    ]


def culler_scopes(cull: dict) -> list[str]:
    scopes = ["list:users", "read:users:activity", "read:servers", "delete:servers"]
    if cull["users"]:
        scopes.append("admin:users")
    return scopes


def _apply_services(config, c):
    """Add (or remove) the idle culler service and its role, keeping other services and roles."""
    cull = config["services"]["cull"]
    services = [s for s in _existing(c.JupyterHub, "services") if s.get("name") != CULLER_SERVICE]
    roles = [r for r in _existing(c.JupyterHub, "load_roles") if r.get("name") != CULLER_ROLE]
    if cull["enabled"]:
        services.append({"name": CULLER_SERVICE, "command": culler_command(cull)})
        roles.append(
            {
                "name": CULLER_ROLE,
                "description": "Stop idle servers (services.cull.* in config.yaml)",
                "scopes": culler_scopes(cull),
                "services": [CULLER_SERVICE],
            }
        )
    c.JupyterHub.services = services
    c.JupyterHub.load_roles = roles
    if cull["enabled"]:
        # The culler judges activity by what servers report to the hub, every 5 minutes by default
        # (this proxy keeps no per-route activity). Report at least twice per timeout, so a server in use
        # is never seen as idle, however short the timeout.
        environment = dict(c.Spawner.environment) if "environment" in c.Spawner else {}
        environment["JUPYTERHUB_ACTIVITY_INTERVAL"] = str(activity_interval(cull))
        c.Spawner.environment = environment


def activity_interval(cull: dict) -> int:
    """Seconds between a server's activity reports to the hub, for services.cull.timeout."""
    return max(10, min(300, int(cull["timeout"]) // 2))


def _existing(section, name) -> list:
    """A copy of a list trait already set on a Config section, or []."""
    if name in section:
        return [dict(item) for item in section[name]]
    return []
