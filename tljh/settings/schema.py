"""The one schema of config.yaml: validation, defaults, value parsing and the docs reference.

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
- ``x-tljh-ignored``: a section kept for compatibility with TLJH and ignored (with a warning).
- ``x-tljh-reload``: which component applies the key (``hub``, ``proxy`` or ``installer``); documentation and
  CLI hints.
- ``x-tljh-list-allowed``: an unknown key below this mapping is told the allowed keys (profile overrides).

``profiles`` has checks no JSON Schema keyword expresses (unique generated slugs, known environments):
tljh.settings.profiles.check_profiles, called by `validate_config`.

Nothing here mutates module-level data: every public function returns fresh objects.
"""

from __future__ import annotations

import copy
import difflib
import functools
import importlib
import json
import re
from dataclasses import dataclass, field
from typing import Any

from . import profiles
from .config_file import to_plain
from .environments import environment_names

DEFAULT_AUTHENTICATOR = "firstuseauthenticator.FirstUseAuthenticator"

# Authenticators installed with the hub: (short name for auth.type, class name, docs URL).
BUNDLED_AUTHENTICATORS = [
    ("firstuse", "FirstUseAuthenticator", "https://github.com/jupyterhub/firstuseauthenticator"),
    ("dummy", "DummyAuthenticator", "https://jupyterhub.readthedocs.io/en/stable/reference/api/auth.html"),
    ("pam", "PAMAuthenticator", "https://jupyterhub.readthedocs.io/en/stable/reference/api/auth.html"),
    ("native", "NativeAuthenticator", "https://native-authenticator.readthedocs.io"),
    ("github", "GitHubOAuthenticator", "https://oauthenticator.readthedocs.io"),
    ("google", "GoogleOAuthenticator", "https://oauthenticator.readthedocs.io"),
    ("generic-oauth", "GenericOAuthenticator", "https://oauthenticator.readthedocs.io"),
    ("ldap", "LDAPAuthenticator", "https://github.com/jupyterhub/ldapauthenticator"),
    ("tmp", "TmpAuthenticator", "https://github.com/jupyterhub/tmpauthenticator"),
]
# Base classes whose traits may be set too (auth.Authenticator.*, auth.OAuthenticator.*, ...).
BASE_AUTHENTICATORS = {
    "Authenticator": "jupyterhub.auth:Authenticator",
    "LocalAuthenticator": "jupyterhub.auth:LocalAuthenticator",
    "OAuthenticator": "oauthenticator.oauth2:OAuthenticator",
}

MASK = "********"
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
                        "propertyNames": {"pattern": _GROUP_NAME, "x-tljh-expect": "a Unix group name"},
                        "additionalProperties": {"type": "array", "items": {"type": "string", "minLength": 1}},
                        "description": "Extra Unix groups: `users.extra_user_groups.<group>` is a list of users.",
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
                    }
                },
            },
            "services": {
                "type": "object",
                "additionalProperties": False,
                "description": "Hub services.",
                "properties": {"cull": _cull_section()},
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
# Errors


class ConfigError(Exception):
    """A refusal: the message is one line meant for the admin."""


class UnknownKeyError(ConfigError):
    pass


class ValueParseError(ConfigError):
    pass


def did_you_mean(word: str, candidates) -> str:
    """' (did you mean X?)' or ''."""
    matches = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    if not matches:
        lowered = {c.lower(): c for c in candidates}
        if word.lower() in lowered:
            matches = [lowered[word.lower()]]
    return f" (did you mean {matches[0]}?)" if matches else ""


# --------------------------------------------------------------------------------------------
# Person-friendly values

_MEMORY_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(?:([KMGT])(?:I?B)?)?\s*$", re.IGNORECASE)
_MEMORY_UNITS = {"K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}
_DURATION_RE = re.compile(r"^\s*(\d+)\s*([smhd]?)\s*$", re.IGNORECASE)
_DURATION_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def _num_str(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(float(x))


def normalize_memory(value) -> str | None:
    """'4g' -> '4G', '4096' / 4096 -> '4096M' (a bare number means megabytes), None -> None.

    Raises ValueParseError for anything else. Units are binary, like JupyterHub's: 1G = 1024M.
    """
    if value is None:
        return None
    if isinstance(value, bool):
        raise ValueParseError(f"expected a memory size like 4G or 512M, got {value!r}")
    if isinstance(value, (int, float)):
        number, unit = float(value), "M"
    else:
        m = _MEMORY_RE.match(str(value))
        if not m:
            raise ValueParseError(f"expected a memory size like 4G, 512M or 4096 (megabytes), got {value!r}")
        number, unit = float(m.group(1)), (m.group(2) or "M").upper()
    if number <= 0:
        raise ValueParseError("memory limit must be more than 0 (use none for no limit)")
    return f"{_num_str(number)}{unit}"


def memory_to_bytes(value) -> int | None:
    """A memory size as config.yaml holds it -> bytes (None stays None)."""
    norm = normalize_memory(value)
    if norm is None:
        return None
    return int(float(norm[:-1]) * _MEMORY_UNITS[norm[-1]])


def describe_memory(value) -> str:
    norm = normalize_memory(value)
    if norm is None:
        return "no limit"
    nbytes = memory_to_bytes(norm)
    if nbytes >= 1024**3:
        return f"{nbytes / 1024**3:.1f} GiB"
    return f"{nbytes / 1024**2:.0f} MiB"


def parse_duration(value) -> int:
    if isinstance(value, bool):
        raise ValueParseError(f"expected seconds (or 10m, 1h), got {value!r}")
    if isinstance(value, int):
        return value
    m = _DURATION_RE.match(str(value))
    if not m:
        raise ValueParseError(f"expected a whole number of seconds (or 90s, 10m, 1h, 1d), got {value!r}")
    return int(m.group(1)) * _DURATION_UNITS[m.group(2).lower()]


def describe_duration(seconds: int) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


_TRUE = {"true", "yes", "on", "1", "y"}
_FALSE = {"false", "no", "off", "0", "n"}
_NONE = {"none", "null", "~"}


def parse_bool(raw: str) -> bool:
    low = raw.strip().lower()
    if low in _TRUE:
        return True
    if low in _FALSE:
        return False
    raise ValueParseError(f"expected true or false (or yes/no), got {raw!r}")


def _unquote(raw: str) -> str | None:
    if len(raw) >= 2 and raw[0] == raw[-1] and raw[0] in "'\"":
        return raw[1:-1]
    return None


def _parse_list(raw: str) -> list:
    text = raw.strip()
    if text.startswith("["):
        try:
            value = json.loads(text)
        except ValueError:
            from ruamel.yaml import YAML

            try:
                value = YAML(typ="safe", pure=True).load(text)
            except Exception as e:  # noqa: BLE001 - any YAML problem is the admin's input
                raise ValueParseError(f"expected a list like [a, b], got {raw!r} ({e.__class__.__name__})") from None
        if not isinstance(value, list):
            raise ValueParseError(f"expected a list like [a, b], got {raw!r}")
        return value
    if text == "":
        return []
    return [part.strip() for part in text.split(",") if part.strip()]


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


def parse_scalar(node: dict, raw: str):
    """Parse a command-line string into a value of the type `node` (a schema leaf) declares."""
    literal = _unquote(raw)
    types = node.get("type", "string")
    types = [types] if isinstance(types, str) else list(types)
    if raw.strip().lower() in _NONE and literal is None:
        if "null" in types:
            return None
        raise ValueParseError("cannot be none (use `tljh-config unset` to go back to the default)")
    if node.get("x-tljh-memory"):
        return normalize_memory(literal if literal is not None else raw)
    if node.get("x-tljh-duration"):
        return parse_duration(raw)
    if "array" in types:
        items = node.get("items", {"type": "string"})
        return [parse_scalar(items, str(v)) if not isinstance(v, (int, float, bool)) else v for v in _parse_list(raw)]
    if literal is not None and "string" in types:
        return literal
    if "boolean" in types:
        return parse_bool(raw)
    if "integer" in types:
        try:
            return int(raw.strip())
        except ValueError:
            raise ValueParseError(f"expected a whole number, got {raw!r}") from None
    if "number" in types:
        try:
            number = float(raw.strip())
        except ValueError:
            raise ValueParseError(f"expected a number, got {raw!r}") from None
        return int(number) if number.is_integer() and "." not in raw else number
    return raw


# --------------------------------------------------------------------------------------------
# Authenticators and their traits


@functools.lru_cache(maxsize=None)
def _authenticator_entry_points() -> dict:
    """{entry-point name: 'module:Class'} for the jupyterhub.authenticators group."""
    from importlib.metadata import entry_points

    return {ep.name: ep.value for ep in entry_points(group="jupyterhub.authenticators")}


def _known_class_paths() -> dict:
    """{class name: 'module:Class'} for every installed authenticator and the base classes."""
    paths = dict(BASE_AUTHENTICATORS)
    for value in _authenticator_entry_points().values():
        paths.setdefault(value.split(":")[-1], value)
    return paths


def _split(path: str):
    if ":" in path:
        module, name = path.split(":", 1)
    else:
        module, _, name = path.rpartition(".")
    return module, None, name


@functools.lru_cache(maxsize=None)
def resolve_authenticator(name: str):
    """auth.type value -> Authenticator subclass. Raises ConfigError (one line) when it would not load."""
    from jupyterhub.auth import Authenticator

    eps = _authenticator_entry_points()
    if name in eps:
        path = eps[name]
    elif "." in name or ":" in name:
        path = name
    else:
        raise ConfigError(
            f"unknown authenticator {name!r}{did_you_mean(name, eps)}; use a short name "
            f"({', '.join(n for n, _, _ in BUNDLED_AUTHENTICATORS)}) or a dotted class name"
        )
    module, _, cls_name = _split(path)
    if not module:
        raise ConfigError(f"{name!r} is not a module.Class name")
    try:
        mod = importlib.import_module(module)
    except Exception as e:  # noqa: BLE001 - report any import failure as a refusal
        raise ConfigError(f"cannot import authenticator module {module!r}: {e.__class__.__name__}: {e}") from None
    cls = getattr(mod, cls_name, None)
    if cls is None:
        names = [n for n in dir(mod) if n.endswith("Authenticator")]
        raise ConfigError(f"module {module!r} has no class {cls_name!r}{did_you_mean(cls_name, names)}")
    if not (isinstance(cls, type) and issubclass(cls, Authenticator)):
        raise ConfigError(f"{name!r} is not a JupyterHub Authenticator class")
    return cls


def authenticator_class_names() -> list[str]:
    return sorted(_known_class_paths())


def _class_for_section(class_name: str, auth_type: str | None):
    """The class configured by auth.<class_name>; ConfigError if it is not a known authenticator."""
    if auth_type:
        try:
            cls = resolve_authenticator(auth_type)
        except ConfigError:
            cls = None
        if cls is not None:
            for klass in cls.__mro__:
                if klass.__name__ == class_name:
                    return klass
    paths = _known_class_paths()
    if class_name not in paths:
        raise UnknownKeyError(
            f"unknown key auth.{class_name}{did_you_mean(class_name, ['type', *paths])}: "
            "auth.<Class> must name an authenticator class"
        )
    module, _, name = _split(paths[class_name])
    try:
        return getattr(importlib.import_module(module), name)
    except Exception as e:  # noqa: BLE001
        raise ConfigError(f"cannot import {paths[class_name]}: {e.__class__.__name__}: {e}") from None


def config_traits(cls) -> dict:
    return cls.class_traits(config=True)


def _trait_or_error(cls, class_name: str, trait_name: str):
    traits = config_traits(cls)
    if trait_name not in traits:
        all_traits = cls.class_traits()
        if trait_name in all_traits:
            raise UnknownKeyError(f"auth.{class_name}.{trait_name} is not configurable (not a config=True trait)")
        raise UnknownKeyError(
            f"unknown key auth.{class_name}.{trait_name}{did_you_mean(trait_name, traits)}: "
            f"{class_name} has no such setting"
        )
    return traits[trait_name]


def _validation_dummy(cls):
    """An instance good enough for trait validation, without running the class's __init__."""
    obj = cls.__new__(cls)
    obj._cross_validation_lock = True  # type checks only; no cross-validators with side effects
    return obj


def check_trait_value(cls, class_name: str, trait_name: str, value):
    """Validate `value` with the real trait. Returns nothing; raises ConfigError (one line)."""
    from traitlets import TraitError

    trait = _trait_or_error(cls, class_name, trait_name)
    if value is None:
        return  # None means "not set": the class default applies (TLJH does the same)
    try:
        trait._validate(_validation_dummy(cls), _to_trait_input(trait, value))
    except TraitError as e:
        first = " ".join(str(e).split())
        raise ConfigError(
            f"auth.{class_name}.{trait_name}: expected {trait.info()}, got {value!r} ({first[:200]})"
        ) from None


def _to_trait_input(trait, value):
    from traitlets import Set, Tuple

    if isinstance(trait, (Set, Tuple)) and isinstance(value, list):
        return set(value) if isinstance(trait, Set) else tuple(value)
    return value


def parse_trait_value(cls, class_name: str, trait_name: str, raw: str):
    """Parse a command-line string for auth.<Class>.<trait> by the trait's type."""
    from traitlets import Bool, CFloat, CInt, Container, Dict, Float, Integer, Unicode

    trait = _trait_or_error(cls, class_name, trait_name)
    literal = _unquote(raw)
    if literal is not None:
        return literal
    if raw.strip().lower() in _NONE:
        return None
    if isinstance(trait, Bool):
        return parse_bool(raw)
    if isinstance(trait, (Integer, CInt)):
        return parse_scalar({"type": "integer"}, raw)
    if isinstance(trait, (Float, CFloat)):
        return parse_scalar({"type": "number"}, raw)
    if isinstance(trait, Container):
        return _parse_list(raw)
    if isinstance(trait, Dict):
        from ruamel.yaml import YAML

        try:
            value = YAML(typ="safe", pure=True).load(raw)
        except Exception:  # noqa: BLE001
            value = None
        if not isinstance(value, dict):
            raise ValueParseError(f"expected a mapping like {{key: value}}, got {raw!r}")
        return value
    if isinstance(trait, Unicode):
        return raw
    # Union, Any, Callable ...: read it as YAML so numbers and booleans get their type.
    from ruamel.yaml import YAML

    try:
        return YAML(typ="safe", pure=True).load(raw)
    except Exception:  # noqa: BLE001
        return raw


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
            resolve_authenticator(instance)
        except ConfigError as e:
            yield _validation_error(str(e))


_EXTENSIONS = {
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
            cls = _class_for_section(str(class_name), auth_type)
        except ConfigError as e:
            problems.append(Problem(f"auth.{class_name}", str(e), unknown_key=isinstance(e, UnknownKeyError)))
            continue
        if not isinstance(section, dict):
            continue  # reported by the schema ("expected a mapping")
        for trait_name, value in section.items():
            try:
                check_trait_value(cls, class_name, str(trait_name), value)
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
    problems.extend(Problem(k, m) for k, m in profiles.check_profiles(config, environment_names(config)))
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
    """The configuration the hub runs with: `config` (raw, from config.yaml) with every default filled in.

    Returns a new plain dict; `config` is not modified. Ignored sections (traefik_api) are dropped.
    """
    result = _fill_defaults(_build_schema(), to_plain(config or {}))
    result["profiles"] = profiles.effective_profiles(result.get("profiles"))
    return result


def defaults() -> dict:
    return effective_config({})


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

            return isinstance(config_traits(self.auth_class)[self.parts[-1]], Container)
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
            cls = _class_for_section(part, auth_type)
            if len(parts) == 2:
                return KeyInfo(key, parts, {"type": "object"}, "section", reload=reload)
            if len(parts) > 3:
                raise UnknownKeyError(f"unknown key {key}: authenticator settings are auth.<Class>.<trait>")
            _trait_or_error(cls, part, parts[2])
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
                keys.append(f"{key}.<group>")
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
            cls = resolve_authenticator(value)
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


# --------------------------------------------------------------------------------------------
# Docs reference


def _fmt_default(node: dict) -> str:
    if "default" not in node:
        return ""
    d = node["default"]
    if d is None:
        return "`none`"
    if isinstance(d, bool):
        return "`true`" if d else "`false`"
    if d == "":
        return '`""`'
    return f"`{json.dumps(d)}`" if not isinstance(d, str) else f"`{d}`"


def _fmt_type(node: dict) -> str:
    if node.get("x-tljh-memory"):
        return "memory size"
    if node.get("x-tljh-duration"):
        return "seconds"
    if "enum" in node:
        return " \\| ".join(f"`{e}`" for e in node["enum"])
    t = node.get("type", "")
    if isinstance(t, list):
        return " or ".join("none" if x == "null" else x for x in t)
    if t == "array":
        return f"list of {node.get('items', {}).get('type', 'string')}"
    if t == "object" and isinstance(node.get("additionalProperties"), dict):
        return "mapping of lists"
    return t


def render_reference(include_authenticator_traits: bool = False) -> str:
    """A Markdown (MyST) reference of every config.yaml key, generated from the schema."""
    schema = _build_schema()
    lines = [
        "# Configuration reference",
        "",
        "Generated from `tljh/schema.py`; every key is set with `sudo tljh-config set KEY VALUE`",
        "and applied with `sudo tljh-config reload` (hub) or `sudo tljh-config reload proxy` (http, https).",
        "",
        "Values are read the way a person means them: memory sizes `4G`, `512M` (binary units, "
        "`1G` = `1024M`; a bare number such as `4096` means megabytes); durations in seconds or "
        "`90s`, `10m`, `1h`, `1d`; booleans `true`/`false`/`yes`/`no`; lists `a,b` or `[a, b]`; "
        "`none` clears a value that may be empty.",
        "",
    ]

    def section(node, prefix, depth):
        rows = []
        subsections = []
        for name, sub in node.get("properties", {}).items():
            key = f"{prefix}{name}"
            if sub.get("type") == "object" and "properties" in sub and not sub.get("x-tljh-authenticator-traits"):
                subsections.append((key, sub))
            elif sub.get("x-tljh-authenticator-traits"):
                for t, tnode in sub.get("properties", {}).items():
                    rows.append((f"{key}.{t}", tnode))
            elif sub.get("type") == "object" and isinstance(sub.get("additionalProperties"), dict):
                rows.append(
                    (
                        f"{key}.<group>",
                        {**sub, "type": "array", "items": sub["additionalProperties"]["items"], "default": []},
                    )
                )
            else:
                rows.append((key, sub))
        if rows:
            lines.append("| Key | Type | Default | Description |")
            lines.append("|-----|------|---------|-------------|")
            for key, sub in rows:
                desc = sub.get("description", "").replace("|", "\\|")
                lines.append(f"| `{key}` | {_fmt_type(sub)} | {_fmt_default(sub)} | {desc} |")
            lines.append("")
        for key, sub in subsections:
            lines.append(f"{'#' * min(depth + 1, 6)} `{key}`")
            lines.append("")
            if sub.get("description"):
                lines.append(sub["description"])
                lines.append("")
            if sub.get("x-tljh-ignored"):
                lines.append(f"Ignored: {sub['x-tljh-ignored']}.")
                lines.append("")
            if sub.get("x-tljh-reload") == "proxy":
                lines.append("Applied with `sudo tljh-config reload proxy`.")
                lines.append("")
            if sub.get("x-tljh-reload") == "installer":
                lines.append(
                    "Applied by the next installer run: `sudo /opt/tljh/hub/bin/python -m tljh.installer` "
                    "(or the bootstrap command again)."
                )
                lines.append("")
            section(sub, key + ".", depth + 1)
            if key == "auth":
                lines.append(
                    "`auth.<Class>.<trait>` sets any configurable trait of an authenticator class "
                    "(`c.<Class>.<trait>` in JupyterHub); the trait must exist and the value is checked "
                    "by the trait itself. Bundled authenticators:"
                )
                lines.append("")
                lines.append("| `auth.type` short name | Class (`auth.<Class>.*`) | Documentation |")
                lines.append("|---|---|---|")
                for short, cls, url in BUNDLED_AUTHENTICATORS:
                    lines.append(f"| `{short}` | `{cls}` | {url} |")
                lines.append("")

    section(schema, "", 1)
    lines.extend(_profile_keys(schema["properties"]["profiles"]))
    if include_authenticator_traits:
        lines.append(render_authenticator_reference())
    return "\n".join(lines).rstrip() + "\n"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _profile_keys(node: dict) -> list[str]:
    """The keys inside one entry of `profiles` (KubeSpawner's profile_list), as rows under their paths."""
    rows = []

    def walk(node, path):
        for name, sub in node.get("properties", {}).items():
            if name == "kubespawner_override":
                continue  # the same as spawner_override, said in its description
            key = f"{path}.{name}"
            if name == "spawner_override":
                rows.append((key, {"type": "mapping", "description": sub["description"]}))
                continue
            rows.append((key, sub))
            if "properties" in sub:
                walk(sub, key)
            elif isinstance(sub.get("additionalProperties"), dict):
                inner = "<option>" if name == "profile_options" else "<choice>"
                walk(sub["additionalProperties"], f"{key}.{inner}")

    walk(node["items"], "profiles[]")
    out = ["### Keys of a profile", "",
           "Each entry of `profiles` (KubeSpawner's `profile_list` format; see the how-to on profiles):", "",
           "| Key | Type | Description |", "|-----|------|-------------|"]
    kinds = {"profile_options": "mapping of options", "choices": "mapping of choices", "unlisted_choice": "mapping"}
    for key, sub in rows:
        kind = kinds.get(key.rsplit(".", 1)[-1], _fmt_type(sub))
        out.append(f"| `{key}` | {kind} | {_cell(sub.get('description', ''))} |")
    out += ["", "### Override keys", "",
            "What `spawner_override` (or `kubespawner_override`) may set, in a profile, a choice or an unlisted "
            "choice; other keys are refused with this list:", "",
            "| Key | Type | Description |", "|-----|------|-------------|"]
    for key, sub in node["items"]["properties"]["spawner_override"]["properties"].items():
        kind = "mapping of strings" if key == "environment" else _fmt_type(sub)
        out.append(f"| `{key}` | {kind} | {_cell(sub['description'])} |")
    return out + [""]


def render_authenticator_reference() -> str:
    """Markdown tables of the configurable traits of each bundled authenticator (imports them)."""
    lines = ["## Authenticator settings", ""]
    eps = _authenticator_entry_points()
    for short, cls_name, _url in BUNDLED_AUTHENTICATORS:
        cls = resolve_authenticator(short) if short in eps else None
        if cls is None:
            continue
        lines.append(f"### `auth.{cls_name}`")
        lines.append("")
        lines.append("| Trait | Type | Default | Help |")
        lines.append("|---|---|---|---|")
        for name, trait in sorted(config_traits(cls).items()):
            if name not in cls.__dict__ and not any(
                name in k.__dict__
                for k in cls.__mro__
                if k.__name__ not in ("Authenticator", "LocalAuthenticator")
                and k.__module__.split(".")[0] != "traitlets"
            ):
                continue
            help_line = " ".join((trait.help or "").split())[:160].replace("|", "\\|")
            default = trait.default_value_repr() if hasattr(trait, "default_value_repr") else ""
            lines.append(f"| `{name}` | {trait.__class__.__name__} | `{default}` | {help_line} |")
        lines.append("")
    return "\n".join(lines)
