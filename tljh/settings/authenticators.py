"""Authenticators: what `auth.type` names, and the traits `auth.<Class>.<trait>` may set.

Classes are imported on first use (entry points of the group ``jupyterhub.authenticators``, or dotted paths);
trait values are checked by the traits themselves.
"""

from __future__ import annotations

import functools
import importlib

from .errors import ConfigError, UnknownKeyError, ValueParseError, did_you_mean
from .values import NONE_WORDS, parse_bool, parse_list, parse_scalar, unquote

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

@functools.lru_cache(maxsize=None)
def entry_points() -> dict:
    """{entry-point name: 'module:Class'} for the jupyterhub.authenticators group."""
    from importlib import metadata

    return {ep.name: ep.value for ep in metadata.entry_points(group="jupyterhub.authenticators")}


def _known_class_paths() -> dict:
    """{class name: 'module:Class'} for every installed authenticator and the base classes."""
    known = dict(BASE_AUTHENTICATORS)
    for value in entry_points().values():
        known.setdefault(value.split(":")[-1], value)
    return known


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

    eps = entry_points()
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


def class_for_section(class_name: str, auth_type: str | None):
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


def trait_or_error(cls, class_name: str, trait_name: str):
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

    trait = trait_or_error(cls, class_name, trait_name)
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

    trait = trait_or_error(cls, class_name, trait_name)
    literal = unquote(raw)
    if literal is not None:
        return literal
    if raw.strip().lower() in NONE_WORDS:
        return None
    if isinstance(trait, Bool):
        return parse_bool(raw)
    if isinstance(trait, (Integer, CInt)):
        return parse_scalar({"type": "integer"}, raw)
    if isinstance(trait, (Float, CFloat)):
        return parse_scalar({"type": "number"}, raw)
    if isinstance(trait, Container):
        return parse_list(raw)
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


def class_name_of(auth_type: str) -> str:
    """'github' -> 'GitHubOAuthenticator'; 'oauthenticator.github.GitHubOAuthenticator' -> same last part."""
    eps = entry_points()
    if auth_type in eps:
        return eps[auth_type].split(":")[-1]
    return auth_type.replace(":", ".").rsplit(".", 1)[-1]
