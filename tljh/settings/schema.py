"""The one schema of config.yaml: validation (cross-field rules included), defaults and key lookup.

Values are read from the command line by tljh.settings.values, authenticators resolved by
tljh.settings.authenticators; the docs reference is rendered from this schema by docs/_ext/config_reference.py.

`get_schema()` returns a JSON Schema (draft 2020-12) validated with the `jsonschema` library. A few extension
keywords (all starting with ``x-tljh-``) carry what JSON Schema cannot say by itself; the validator
below implements them:

- ``x-tljh-memory``: a memory size ("4G", "512M", a bare number means megabytes).
- ``x-tljh-duration``: seconds as an integer, or "90s", "10m", "2h", "1d".
- ``x-tljh-authenticator-class``: an importable JupyterHub Authenticator (entry-point name or dotted path).
- ``x-tljh-authenticator-traits``: the mapping below ``auth.<Class>``, checked (by `_validate_auth`, since
  the check needs the key the mapping sits under) against the class's real traitlets: the trait must exist
  and be ``config=True``, and the value is validated by the trait itself.
- ``x-tljh-ip-address``: an IP address, or empty for all addresses.
- ``x-tljh-requirement``: a pip requirement string (``pandas>=2``), a path or a URL.
- ``x-tljh-placeholder``: how the reference writes the free part of a key (``environments.<name>``).
- ``x-tljh-finite``: a number that is not infinite or NaN (YAML has ``.inf`` and ``.nan``; JSON Schema's bounds
  let NaN through).
- ``x-tljh-unprivileged-group``: a Unix group name that gives no root-equivalent rights (not sudo, docker,
  shadow, jupyterhub-admins, ...: tljh.system.users.PRIVILEGED_GROUPS).
- ``x-tljh-ignored``: a section kept for compatibility with TLJH and ignored (with a warning).
- ``x-tljh-reload``: which component applies the key (``hub``, ``proxy`` or ``installer``); documentation and
  CLI hints.
- ``x-tljh-list-allowed``: an unknown key below this mapping is told the allowed keys (profile overrides).
- ``x-tljh-expect``: what a valid value looks like, for messages.
- ``x-tljh-message``: the whole message of a cross-field rule (JSON Schema ``if``/``then``) when it fails.

``profiles`` has checks no JSON Schema keyword expresses (unique generated slugs, known environments):
tljh.settings.profiles.check_profiles, called by `validate_config`.

Nothing here mutates module-level data: every public function returns fresh objects.
"""

from __future__ import annotations

import copy
import functools
import re
from dataclasses import dataclass, field
from typing import Any

from tljh.system import paths

from . import authenticators, builds, environments, profiles
from .authenticators import DEFAULT_AUTHENTICATOR
from .config_file import to_plain
from .errors import ConfigError, UnknownKeyError, ValueParseError, did_you_mean
from .values import describe_duration, describe_memory, normalize_base_url, normalize_memory

MASK = "********"
LETSENCRYPT_EMAIL_REQUIRED = "https.letsencrypt.email is required for Let's Encrypt certificates"
_SECRET_NAME = re.compile(r"(^|_)(secret|password|passwd|token|api_key|apikey)$", re.IGNORECASE)

_IDENT = "^(?!type$)[A-Za-z_][A-Za-z0-9_]*$"  # auth.<Class>: any identifier except "type"
_GROUP_NAME = "^[a-z_][a-z0-9_-]{0,31}$"


def _https_section() -> dict:
    """The https.* keys. ACME names live here only, so renaming them is a one-place change."""
    return {
        "type": "object",
        "additionalProperties": False,
        "x-tljh-reload": "proxy",
        "description": "HTTPS: a certificate from an ACME CA (Let's Encrypt by default) or your own.",
        "properties": {
            "enabled": {"type": "boolean", "default": False, "description": "Serve HTTPS (and redirect HTTP to it)."},
            "address": {
                "type": "string",
                "default": "",
                "description": "IP address to listen on for HTTPS; empty means all addresses.",
                "x-tljh-ip-address": True,
            },
            "port": {
                "type": "integer",
                "minimum": 1,
                "maximum": 65535,
                "default": 443,
                "description": "Port to listen on for HTTPS.",
            },
            "tls": {
                "type": "object",
                "additionalProperties": False,
                "description": "Your own certificate (used instead of ACME when both are set).",
                "properties": {
                    "cert": {
                        "type": "string",
                        "default": "",
                        "description": "Path to the PEM certificate (full chain).",
                        "pattern": "^(/.*)?$",
                        "x-tljh-expect": "an absolute path (or empty)",
                    },
                    "key": {
                        "type": "string",
                        "default": "",
                        "pattern": "^(/.*)?$",
                        "x-tljh-expect": "an absolute path (or empty)",
                        "description": "Path to the PEM private key.",
                    },
                },
            },
            "letsencrypt": {
                "type": "object",
                "additionalProperties": False,
                "description": "Automatic certificates from Let's Encrypt (or the CA in https.acme.directory).",
                "properties": {
                    "email": {
                        "type": "string",
                        "default": "",
                        "description": "Contact email given to the CA (expiry notices).",
                        "pattern": r"^([^@\s]+@[^@\s]+\.[^@\s]+)?$",
                        "x-tljh-expect": "an email address (or empty)",
                    },
                    "domains": {
                        "type": "array",
                        "items": {
                            "type": "string",
                            "pattern": r"^[A-Za-z0-9*]([A-Za-z0-9.-]*[A-Za-z0-9])?$",
                            "x-tljh-expect": "a domain name",
                        },
                        "default": [],
                        "description": "Domain names to get certificates for; they must point at this server.",
                    },
                    "staging": {
                        "type": "boolean",
                        "default": False,
                        "description": "Use Let's Encrypt's staging CA (untrusted certificates, generous rate limits).",
                    },
                },
            },
            "acme": {
                "type": "object",
                "additionalProperties": False,
                "description": "Another ACME CA than Let's Encrypt (e.g. a campus CA or a test CA).",
                "properties": {
                    "directory": {
                        "type": "string",
                        "default": "",
                        "pattern": r"^(https?://\S+)?$",
                        "x-tljh-expect": "an http(s):// URL of an ACME directory, or empty",
                        "description": "ACME directory URL; empty means Let's Encrypt.",
                    },
                    "trusted_roots": {
                        "type": "array",
                        "items": {"type": "string", "pattern": "^/", "x-tljh-expect": "an absolute path"},
                        "default": [],
                        "description": "PEM files of root certificates to trust when talking to the ACME directory.",
                    },
                },
            },
        },
        # Cross-field rule: an ACME account at Let's Encrypt needs a contact email (another CA, in
        # https.acme.directory, may not). Only when HTTPS is on, with domains and no own certificate: the
        # order TLJH's docs set these keys in (enabled, email, domains) is accepted at every step.
        "if": {
            "properties": {
                "enabled": {"const": True},
                "letsencrypt": {"properties": {"domains": {"minItems": 1}}, "required": ["domains"]},
                "tls": {"properties": {"cert": {"maxLength": 0}, "key": {"maxLength": 0}}},
                "acme": {"properties": {"directory": {"maxLength": 0}}},
            },
            "required": ["enabled", "letsencrypt"],
        },
        "then": {
            "properties": {
                "letsencrypt": {
                    "required": ["email"],
                    "properties": {"email": {"minLength": 1, "x-tljh-message": LETSENCRYPT_EMAIL_REQUIRED}},
                    "x-tljh-message": LETSENCRYPT_EMAIL_REQUIRED,
                }
            }
        },
    }


def _cull_section() -> dict:
    return {
        "type": "object",
        "additionalProperties": False,
        "description": "The idle culler (jupyterhub-idle-culler) stops servers nobody uses.",
        "properties": {
            "enabled": {"type": "boolean", "default": True, "description": "Stop idle servers."},
            "timeout": {
                "type": "integer",
                "minimum": 1,
                "default": 600,
                "x-tljh-duration": True,
                "description": "Seconds without activity after which a server is stopped (also 10m, 1h).",
            },
            "every": {
                "type": "integer",
                "minimum": 1,
                "default": 60,
                "x-tljh-duration": True,
                "description": "Seconds between two checks for idle servers.",
            },
            "concurrency": {
                "type": "integer",
                "minimum": 1,
                "default": 5,
                "description": "How many requests the culler makes to the hub at the same time.",
            },
            "users": {
                "type": "boolean",
                "default": False,
                "description": "Also delete the hub's record of users whose server was culled.",
            },
            "max_age": {
                "type": "integer",
                "minimum": 0,
                "default": 0,
                "x-tljh-duration": True,
                "description": "Stop servers older than this many seconds even if active; 0 means never.",
            },
            "remove_named_servers": {
                "type": "boolean",
                "default": False,
                "description": "Delete named servers instead of only stopping them.",
            },
        },
    }


def _backup_section() -> dict:
    return {
        "type": "object",
        "additionalProperties": False,
        "x-tljh-reload": "none",
        "description": (
            "Scheduled backups: `tljh-backup.timer` runs every day at 03:00 (or at the next boot if the server was "
            "off) and makes a backup when `backup.daily` is true. Read at that time: no reload needed."
        ),
        "properties": {
            "daily": {"type": "boolean", "default": False, "description": "Make a backup every day."},
            "directory": {
                "type": "string",
                "default": paths.DEFAULT_BACKUP_DIR,
                "pattern": r"^/",
                "x-tljh-expect": "an absolute path",
                "description": "Where scheduled backups go (created root-only, 0700).",
            },
            "keep": {
                "type": "integer",
                "minimum": 1,
                "default": 7,
                "description": "How many scheduled backups to keep; older ones in `backup.directory` are deleted.",
            },
            "homes": {
                "type": "boolean",
                "default": False,
                "description": "Include users' home directories in scheduled backups (`tljh backup --homes`).",
            },
        },
    }


def _build_schema() -> dict:
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "The Littlest JupyterHub config.yaml",
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "base_url": {
                "type": "string",
                "default": "/",
                "pattern": r"^/[^\s?#]*$",
                "x-tljh-expect": "a URL path starting with / (e.g. /jhub/)",
                "description": "URL prefix the hub is served under, e.g. /jhub/.",
            },
            "auth": {
                "type": "object",
                "description": "Who can log in: the authenticator and its settings.",
                "properties": {
                    "type": {
                        "type": "string",
                        "default": DEFAULT_AUTHENTICATOR,
                        "x-tljh-authenticator-class": True,
                        "description": (
                            "Authenticator class: a short name (firstuse, dummy, pam, native, github, google, "
                            "generic-oauth, ldap, tmp, ...) or a dotted class name "
                            "(e.g. oauthenticator.github.GitHubOAuthenticator)."
                        ),
                    },
                    "FirstUseAuthenticator": {
                        "type": "object",
                        "x-tljh-authenticator-traits": "FirstUseAuthenticator",
                        "properties": {
                            "create_users": {
                                "type": "boolean",
                                "default": False,
                                "description": (
                                    "Let anyone create an account by logging in. Off by default: only users "
                                    "in users.admin / users.allowed or added in the admin panel can log in."
                                ),
                            }
                        },
                    },
                },
                "patternProperties": {
                    _IDENT: {
                        "type": "object",
                        "x-tljh-authenticator-traits": True,
                        "description": "Traits of an authenticator class: auth.<Class>.<trait>.",
                    }
                },
            },
            "users": {
                "type": "object",
                "additionalProperties": False,
                "description": "Who is admin, allowed, banned, and extra Unix groups.",
                "properties": {
                    "admin": {
                        "type": "array",
                        "items": {"type": "string", "minLength": 1},
                        "default": [],
                        "description": "Hub admins (admin panel, member of jupyterhub-admins: passwordless sudo).",
                    },
                    "allowed": {
                        "type": "array",
                        "items": {"type": "string", "minLength": 1},
                        "default": [],
                        "description": "Users allowed to log in; empty means the authenticator's own default.",
                    },
                    "banned": {
                        "type": "array",
                        "items": {"type": "string", "minLength": 1},
                        "default": [],
                        "description": "Users who can never log in.",
                    },
                    "extra_user_groups": {
                        "type": "object",
                        "default": {},
                        "propertyNames": {
                            "pattern": _GROUP_NAME,
                            "x-tljh-expect": "a Unix group name",
                            "x-tljh-unprivileged-group": True,
                        },
                        "additionalProperties": {"type": "array", "items": {"type": "string", "minLength": 1}},
                        "description": (
                            "Extra Unix groups: `users.extra_user_groups.<group>` is a list of users. Membership "
                            "follows this list at each login and server start (users taken off the list leave "
                            "the group). Groups that give root-equivalent rights (sudo, docker, shadow, "
                            "jupyterhub-admins, ...) are refused: make someone an admin with users.admin."
                        ),
                    },
                },
            },
            "hub": {
                "type": "object",
                "additionalProperties": False,
                "description": "How the hub handles many people at once (defaults measured with tljh loadtest).",
                "properties": {
                    "concurrent_starts": {
                        "type": ["integer", "null"],
                        "minimum": 1,
                        "default": None,
                        "description": (
                            "How many servers start at the same time; the others wait their turn in line and "
                            "see their place on the spawn page. none = the number of CPUs."
                        ),
                    },
                },
            },
            "limits": {
                "type": "object",
                "additionalProperties": False,
                "description": "Per-user server limits (enforced by systemd).",
                "properties": {
                    "memory": {
                        "type": ["string", "number", "null"],
                        "default": None,
                        "x-tljh-memory": True,
                        "description": (
                            "Memory per user server: 4G, 512M, 1.5G (binary units: 1G = 1024M). "
                            "A bare number means megabytes. none = no limit."
                        ),
                    },
                    "cpu": {
                        "type": ["number", "null"],
                        "exclusiveMinimum": 0,
                        "maximum": 1024,
                        "x-tljh-finite": True,
                        "default": None,
                        "description": "CPUs per user server, e.g. 0.5 or 2. none = no limit.",
                    },
                },
            },
            "user_environment": {
                "type": "object",
                "additionalProperties": False,
                "description": "What users see.",
                "properties": {
                    "default_app": {
                        "type": "string",
                        "enum": ["jupyterlab", "classic"],
                        "default": "jupyterlab",
                        "description": "Interface opened after login: jupyterlab (/lab) or classic (/tree).",
                    },
                    "session_installs": {
                        "type": "boolean",
                        "default": True,
                        "description": (
                            "What users install with pip or uv in a server lasts until the server stops: it goes "
                            "into the server's session packages, wins over the shared environment's version for "
                            "that user's kernels, and leaves nothing in the home. false: users' installs are "
                            "refused (the shared environment is read-only for them)."
                        ),
                    },
                    "language_servers": {
                        "type": "boolean",
                        "default": False,
                        "description": (
                            "Load jupyter-lsp in users' servers, so that JupyterLab's code intelligence "
                            "(completion, hover, diagnostics) can use a language server installed in their "
                            "environment (such as python-lsp-server). false: jupyter-lsp is not loaded, which "
                            "makes every server start cheaper; environments have no language server unless you "
                            "install one."
                        ),
                    },
                },
            },
            "environments": environments.schema_section(),
            "builds": builds.schema_section(),
            "services": {
                "type": "object",
                "additionalProperties": False,
                "description": "Hub services.",
                "properties": {"cull": _cull_section()},
            },
            "hub_database": {
                "type": "object",
                "additionalProperties": False,
                "description": "The hub's database (/opt/tljh/state/jupyterhub.sqlite).",
                "properties": {
                    "keep_backups": {
                        "type": "integer",
                        "minimum": 1,
                        "maximum": 1000,
                        "default": 5,
                        "description": (
                            "How many backups of the hub database to keep in /opt/tljh/state/backups (the "
                            "installer makes one before each schema upgrade; older ones are deleted)."
                        ),
                    }
                },
            },
            "network": {
                "type": "object",
                "additionalProperties": False,
                "description": "What users' servers (notebooks, terminals, kernels) may reach on the network.",
                "properties": {
                    "allow_cloud_metadata": {
                        "type": "boolean",
                        "default": False,
                        "description": (
                            "Let users' servers reach the cloud provider's instance metadata service "
                            "(169.254.169.254 and its IPv6/Alibaba equivalents), which hands out the machine's "
                            "cloud credentials to any process that asks. Off: blocked by systemd (IPAddressDeny=)."
                        ),
                    },
                    "allow_connections_between_users": {
                        "type": "boolean",
                        "default": False,
                        "description": (
                            "Let users connect to TCP and UDP ports that other users' servers listen on (a Dash "
                            "app, a database, a kernel's output pipe). Off: only the port's owner and root get "
                            "in; anyone else's connection is refused (an nftables table the hub keeps; needs "
                            "nftables and Linux 5.13+). Connections to other machines and to the hub are not "
                            "affected. Takes effect at the reload."
                        ),
                    },
                    "allow_kernel_debugger": {
                        "type": "boolean",
                        "default": False,
                        "description": (
                            "Let kernels offer JupyterLab's debugger. Its adapter (debugpy) listens on a TCP port "
                            "on 127.0.0.1 without authentication: once a user has detached from it, any other "
                            "local user who can connect can run code as that user. Users' ports answer only their "
                            "owner where `tljh status` says so (network.allow_connections_between_users off, "
                            "enforced); elsewhere turn it on only when every user may act as every other. Takes "
                            "effect for servers started after the reload."
                        ),
                    },
                },
            },
            "http": {
                "type": "object",
                "additionalProperties": False,
                "x-tljh-reload": "proxy",
                "description": "Plain HTTP listener.",
                "properties": {
                    "address": {
                        "type": "string",
                        "default": "",
                        "description": "IP address to listen on for HTTP; empty means all addresses.",
                        "x-tljh-ip-address": True,
                    },
                    "port": {
                        "type": "integer",
                        "minimum": 1,
                        "maximum": 65535,
                        "default": 80,
                        "description": "Port to listen on for HTTP.",
                    },
                },
            },
            "https": _https_section(),
            "profiles": profiles.profiles_schema(),
            "allow_named_servers": {
                "type": "boolean",
                "default": False,
                "description": "Let users run several servers at once, each named and with its own profile "
                "(JupyterHub's allow_named_servers).",
            },
            "named_server_limit_per_user": {
                "type": "integer",
                "minimum": 0,
                "default": 0,
                "description": "How many named servers a user may have; 0 means no limit.",
            },
            "conda": {
                "type": "object",
                "additionalProperties": False,
                "x-tljh-reload": "installer",
                "description": (
                    "Where conda packages that plugins ask for (tljh_extra_user_conda_packages) come from. "
                    "See the plugins how-to for what happens to such requests."
                ),
                "properties": {
                    "channel_alias": {
                        "type": "string",
                        "default": "https://conda.anaconda.org/",
                        "pattern": "^(https?|file)://",
                        "x-tljh-expect": "an http(s):// or file:// URL",
                        "description": (
                            "URL under which channel names resolve, as conda's channel_alias: with the default, "
                            "plugin channel bioconda is https://conda.anaconda.org/bioconda. Point it at a mirror "
                            "when the public channels are not reachable."
                        ),
                    }
                },
            },
            "backup": _backup_section(),
            "traefik_api": {
                "type": "object",
                "x-tljh-ignored": "traefik_api.* is ignored: this hub uses Caddy, not traefik",
                "description": "Accepted for compatibility with TLJH and ignored (the proxy is Caddy).",
                "properties": {
                    "ip": {"type": "string", "description": "Ignored."},
                    "port": {"type": "integer", "description": "Ignored."},
                    "username": {"type": "string", "description": "Ignored."},
                    "password": {"type": "string", "description": "Ignored."},
                },
            },
        },
    }


def get_schema() -> dict:
    """A fresh copy of the JSON Schema of config.yaml."""
    return _build_schema()


# --------------------------------------------------------------------------------------------
# Validation


def _ext_memory(validator, enabled, instance, schema):
    if enabled and instance is not None:
        try:
            normalize_memory(instance)
        except ValueParseError as e:
            yield _validation_error(str(e))


def _ext_ip_address(validator, enabled, instance, schema):
    if enabled and isinstance(instance, str) and instance:
        import ipaddress

        try:
            ipaddress.ip_address(instance)
        except ValueError:
            yield _validation_error(f"expected an IP address (or empty for all addresses), got {instance!r}")


def _ext_authenticator_class(validator, enabled, instance, schema):
    if enabled and isinstance(instance, str):
        try:
            authenticators.resolve_authenticator(instance)
        except ConfigError as e:
            yield _validation_error(str(e))


def _ext_requirement(validator, enabled, instance, schema):
    problem = environments.requirement_problem(instance) if enabled else None
    if problem:
        yield _validation_error(problem)


def _ext_finite(validator, enabled, instance, schema):
    import math

    if enabled and isinstance(instance, float) and not math.isfinite(instance):
        yield _validation_error(f"expected a finite number, got {instance!r}")


def _ext_unprivileged_group(validator, enabled, instance, schema):
    from tljh.system.users import is_privileged_group

    if enabled and isinstance(instance, str) and is_privileged_group(instance):
        yield _validation_error(
            f"{instance!r} gives root-equivalent rights and cannot be handed to hub users "
            "(admins are users.admin: passwordless sudo through jupyterhub-admins)"
        )


_EXTENSIONS = {
    "x-tljh-requirement": _ext_requirement,
    "x-tljh-finite": _ext_finite,
    "x-tljh-unprivileged-group": _ext_unprivileged_group,
    "x-tljh-memory": _ext_memory,
    "x-tljh-ip-address": _ext_ip_address,
    "x-tljh-authenticator-class": _ext_authenticator_class,
}


def _validation_error(message):
    from jsonschema.exceptions import ValidationError

    return ValidationError(message)


@functools.lru_cache(maxsize=None)
def _validator_class():
    """Draft 2020-12 plus our x-tljh-* keywords (jsonschema is imported on first use: it is slow)."""
    import jsonschema

    return jsonschema.validators.extend(jsonschema.Draft202012Validator, _EXTENSIONS)


@dataclass
class Problem:
    key: str
    message: str
    severity: str = "error"  # or "warning"
    unknown_key: bool = False  # a key the schema does not know (typo, or left over from elsewhere)

    def __str__(self):
        return f"{self.key}: {self.message}" if self.key else self.message


def _type_words(types) -> str:
    words = {
        "string": "a string",
        "integer": "a whole number",
        "number": "a number",
        "boolean": "true or false",
        "array": "a list",
        "object": "a mapping",
        "null": "none",
    }
    if isinstance(types, str):
        types = [types]
    return " or ".join(words.get(t, t) for t in types)


def _key_of(path) -> str:
    key = ""
    for p in path:
        key += f"[{p}]" if isinstance(p, int) else (f".{p}" if key else str(p))
    return key


def _node_at(schema: dict, path) -> dict:
    node = schema
    for part in path:
        if isinstance(part, int):
            node = node.get("items", {})
            continue
        props = node.get("properties", {})
        if part in props:
            node = props[part]
        elif node.get("patternProperties"):
            node = next(iter(node["patternProperties"].values()))
        elif isinstance(node.get("additionalProperties"), dict):
            node = node["additionalProperties"]
        else:
            return {}
    return node


def _message(error, schema: dict) -> Problem:
    path = list(error.absolute_path)
    key = _key_of(path)
    node = _node_at(schema, path)
    v = error.validator
    if error.schema.get("x-tljh-message"):  # a cross-field rule says what is wrong as a whole
        return Problem("", error.schema["x-tljh-message"])
    if v == "additionalProperties":
        parent = node.get("properties", {})
        extra = [k for k in error.instance if k not in parent] if isinstance(error.instance, dict) else []
        bad = extra[0] if extra else "?"
        full = f"{key}.{bad}" if key else bad
        if node.get("x-tljh-list-allowed"):
            return Problem(full, f"not allowed here; allowed keys: {', '.join(sorted(parent))}", unknown_key=True)
        return Problem(full, f"unknown key{did_you_mean(bad, parent)}", unknown_key=True)
    if v == "type":
        return Problem(
            key, f"expected {node.get('x-tljh-expect') or _type_words(error.validator_value)}, got {error.instance!r}"
        )
    if v == "enum":
        choices = ", ".join(str(c) for c in error.validator_value)
        hint = did_you_mean(str(error.instance), [str(c) for c in error.validator_value])
        return Problem(key, f"must be one of {choices}, got {error.instance!r}{hint}")
    if "propertyNames" in error.schema_path and v.startswith("x-tljh-"):
        return Problem(f"{key}.{error.instance}", error.message)
    if "propertyNames" in error.schema_path:
        expect = node.get("propertyNames", {}).get("x-tljh-expect", "a valid name")
        return Problem(f"{key}.{error.instance}", f"{error.instance!r} is not {expect}")
    if v in ("pattern", "propertyNames"):
        expect = node.get("x-tljh-expect") or (node.get("propertyNames", {}).get("x-tljh-expect"))
        if v == "propertyNames":
            return Problem(key, f"{error.instance!r} is not {expect or 'a valid name'}")
        return Problem(key, f"expected {expect or 'a value matching ' + error.validator_value}, got {error.instance!r}")
    if v in ("minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum"):
        words = {
            "minimum": "at least",
            "exclusiveMinimum": "more than",
            "maximum": "at most",
            "exclusiveMaximum": "less than",
        }[v]
        return Problem(key, f"must be {words} {error.validator_value}, got {error.instance!r}")
    if v == "minLength":
        return Problem(key, "must not be empty")
    return Problem(key, error.message)


def _validate_auth(config: dict) -> list[Problem]:
    problems = []
    auth = config.get("auth")
    if not isinstance(auth, dict):
        return problems
    auth_type = auth.get("type") if isinstance(auth.get("type"), str) else DEFAULT_AUTHENTICATOR
    for class_name, section in auth.items():
        if class_name == "type":
            continue
        try:
            cls = authenticators.class_for_section(str(class_name), auth_type)
        except ConfigError as e:
            problems.append(Problem(f"auth.{class_name}", str(e), unknown_key=isinstance(e, UnknownKeyError)))
            continue
        if not isinstance(section, dict):
            continue  # reported by the schema ("expected a mapping")
        for trait_name, value in section.items():
            try:
                authenticators.check_trait_value(cls, class_name, str(trait_name), value)
            except ConfigError as e:
                problems.append(Problem("", str(e), unknown_key=isinstance(e, UnknownKeyError)))
    return problems


def validate_config(config: dict) -> list[Problem]:
    """Every problem of a raw config (as read from config.yaml). Empty list: the config is valid.

    Warnings (severity "warning") are for keys that are accepted and ignored.
    """
    schema = _build_schema()
    if config is None:
        config = {}
    if not isinstance(config, dict):
        return [Problem("", f"config.yaml must be a mapping of keys, got {type(config).__name__}")]
    problems = []
    validator = _validator_class()(schema)
    for error in sorted(validator.iter_errors(config), key=lambda e: list(map(str, e.absolute_path))):
        problems.append(_message(error, schema))
    # Errors on non-dict auth class sections are reported by "type: object" already.
    auth_problems = _validate_auth(config)
    unknown_sections = {p.key for p in auth_problems if p.key}
    # an unknown auth.<name> is better explained by "unknown key ... did you mean" than by its type
    problems = [p for p in problems if p.key not in unknown_sections]
    problems.extend(Problem("", p.message, p.severity, p.unknown_key) for p in auth_problems)
    problems.extend(Problem(k, m) for k, m in profiles.check_profiles(config, environments.environment_names(config)))
    for name, node in schema["properties"].items():
        if node.get("x-tljh-ignored") and name in config:
            problems.append(Problem(name, node["x-tljh-ignored"], "warning"))
    # drop duplicate messages, keep order
    seen, unique = set(), []
    for p in problems:
        if str(p) not in seen:
            seen.add(str(p))
            unique.append(p)
    return unique


def errors_only(problems) -> list[Problem]:
    return [p for p in problems if p.severity == "error"]


# --------------------------------------------------------------------------------------------
# Defaults


def _fill_defaults(node: dict, value):
    if node.get("type") == "object" and "properties" in node and isinstance(value, dict):
        result = {}
        for key, sub in node["properties"].items():
            if sub.get("x-tljh-ignored"):
                continue
            if key in value:
                result[key] = _fill_defaults(sub, value[key])
            elif "default" in sub:
                result[key] = copy.deepcopy(sub["default"])
            elif sub.get("type") == "object" and "properties" in sub:
                result[key] = _fill_defaults(sub, {})
        for key, item in value.items():
            if key not in node["properties"]:
                result[key] = copy.deepcopy(item)
        return result
    return copy.deepcopy(value)


def effective_config(config: dict | None) -> dict:
    """The configuration the hub runs with: `config` (raw, from config.yaml) with every default filled in and
    values in the one form every consumer reads (``base_url`` starts and ends with "/").

    Returns a new plain dict; `config` is not modified. Ignored sections (traefik_api) are dropped.
    To read config.yaml, use tljh.settings.effective.load_settings(), which adds the derived values.
    """
    result = _fill_defaults(_build_schema(), to_plain(config or {}))
    result["profiles"] = profiles.effective_profiles(result.get("profiles"))
    hosts = (result.get("builds") or {}).get("allowed_hosts")
    if isinstance(hosts, list) and hosts and isinstance(result["profiles"], list):
        result["profiles"] = profiles.with_repository_profile(result["profiles"], hosts)
    if isinstance(result.get("base_url"), str):
        result["base_url"] = normalize_base_url(result["base_url"])
    return result


# --------------------------------------------------------------------------------------------
# Keys


@dataclass
class KeyInfo:
    """What a dotted key (as typed on the command line) refers to."""

    key: str
    parts: list[str]
    node: dict = field(default_factory=dict)  # schema leaf or section
    kind: str = "value"  # "value" | "section" | "trait" | "ignored"
    auth_class: Any = None  # for kind == "trait"
    reload: str = "hub"

    @property
    def is_list(self) -> bool:
        if self.kind == "trait":
            from traitlets import Container

            return isinstance(authenticators.config_traits(self.auth_class)[self.parts[-1]], Container)
        types = self.node.get("type")
        return types == "array" or (isinstance(types, list) and "array" in types)


def lookup_key(key: str, auth_type: str | None = None) -> KeyInfo:
    """Resolve a dotted key against the schema. Raises UnknownKeyError with a did-you-mean suggestion."""
    parts = key.split(".")
    if not key or any(p == "" for p in parts):
        raise UnknownKeyError(f"{key!r} is not a valid key (use dots between names, e.g. limits.memory)")
    schema = _build_schema()
    node = schema
    reload = "hub"
    for i, part in enumerate(parts):
        so_far = ".".join(parts[: i + 1])
        if node.get("x-tljh-reload"):
            reload = node["x-tljh-reload"]
        if node.get("x-tljh-ignored"):
            return KeyInfo(key, parts, node.get("properties", {}).get(part, {}), "ignored", reload=reload)
        props = node.get("properties", {})
        if i == 1 and parts[0] == "auth" and part != "type":
            cls = authenticators.class_for_section(part, auth_type)
            if len(parts) == 2:
                return KeyInfo(key, parts, {"type": "object"}, "section", reload=reload)
            if len(parts) > 3:
                raise UnknownKeyError(f"unknown key {key}: authenticator settings are auth.<Class>.<trait>")
            authenticators.trait_or_error(cls, part, parts[2])
            named = props.get(part, {}).get("properties", {}).get(parts[2], {})
            return KeyInfo(key, parts, named, "trait", auth_class=cls, reload=reload)
        if part in props:
            node = props[part]
        elif isinstance(node.get("additionalProperties"), dict):
            pattern = node.get("propertyNames", {}).get("pattern")
            if pattern and not re.match(pattern, part):
                expect = node["propertyNames"].get("x-tljh-expect", "a valid name")
                raise UnknownKeyError(f"{so_far}: {part!r} is not {expect}")
            node = node["additionalProperties"]
        else:
            parent = ".".join(parts[:i])
            candidates = [f"{parent}.{p}" if parent else p for p in props]
            leaves = [k for k in all_keys() if k.startswith(parent + ".")] if parent else all_keys()
            hint = did_you_mean(key, leaves) or did_you_mean(so_far, candidates)
            raise UnknownKeyError(f"unknown key {key}{hint}")
        if i < len(parts) - 1 and node.get("type") != "object" and not node.get("x-tljh-ignored"):
            raise UnknownKeyError(f"unknown key {key}: {so_far} is a value, not a section")
    if node.get("x-tljh-ignored"):
        return KeyInfo(key, parts, node, "ignored", reload=reload)
    if node.get("x-tljh-reload"):
        reload = node["x-tljh-reload"]
    kind = "section" if node.get("type") == "object" else "value"
    return KeyInfo(key, parts, node, kind, reload=reload)


def all_keys() -> list[str]:
    """Every documented leaf key (dynamic parts written as <group>, <Class>, <trait>)."""
    keys = []

    def walk(node, prefix):
        for name, sub in node.get("properties", {}).items():
            key = f"{prefix}{name}"
            if sub.get("type") == "object" and "properties" in sub and not sub.get("x-tljh-authenticator-traits"):
                walk(sub, key + ".")
            elif sub.get("type") == "object" and isinstance(sub.get("additionalProperties"), dict):
                named = sub["additionalProperties"]
                placeholder = sub.get("x-tljh-placeholder", "<group>")
                if "properties" in named:
                    walk(named, f"{key}.{placeholder}.")
                else:
                    keys.append(f"{key}.{placeholder}")
            elif sub.get("x-tljh-authenticator-traits"):
                for t in sub.get("properties", {}):
                    keys.append(f"{key}.{t}")
            else:
                keys.append(key)
        if node.get("patternProperties") and prefix == "auth.":
            keys.append("auth.<Class>.<trait>")

    walk(_build_schema(), "")
    return keys


def is_secret_name(name: str) -> bool:
    return bool(_SECRET_NAME.search(name))


def mask_secrets(value, _name: str = ""):
    """A copy of `value` with secret strings (client_secret, password, *_token, ...) masked."""
    if isinstance(value, dict):
        out = type(value)() if type(value) is not dict else {}
        for k, v in value.items():
            out[k] = mask_secrets(v, str(k))
        return out
    if isinstance(value, list):
        return [mask_secrets(v, _name) for v in value]
    if isinstance(value, str) and value and is_secret_name(_name):
        return MASK
    return value


def describe_value(key: str, value) -> str:
    """'limits.memory = 4096M (4.0 GiB)': the value said back the way the hub will read it."""
    info = None
    try:
        info = lookup_key(key)
    except ConfigError:
        pass
    node = info.node if info else {}
    if value is None:
        extra = " (no limit)" if key.startswith("limits.") else " (not set)"
        return f"{key} = none{extra}"
    if node.get("x-tljh-memory"):
        return f"{key} = {value} ({describe_memory(value)})"
    if node.get("x-tljh-duration") and isinstance(value, int):
        return f"{key} = {value} ({describe_duration(value)})" if value >= 60 else f"{key} = {value} (seconds)"
    if key == "auth.type" and isinstance(value, str):
        try:
            cls = authenticators.resolve_authenticator(value)
            full = f"{cls.__module__}.{cls.__name__}"
            return f"{key} = {value}" + (f" ({full})" if full != value else "")
        except ConfigError:
            return f"{key} = {value}"
    if key == "limits.cpu":
        return f"{key} = {value} ({value:g} CPU{'s' if value != 1 else ''})"
    if isinstance(value, bool):
        return f"{key} = {'true' if value else 'false'}"
    if isinstance(value, list):
        return f"{key} = [{', '.join(str(v) for v in value)}]"
    if isinstance(value, str) and is_secret_name(key.rsplit(".", 1)[-1]) and value:
        return f"{key} = {MASK}"
    return f"{key} = {value}"
