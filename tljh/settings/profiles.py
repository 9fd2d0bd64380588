"""The ``profiles`` key of config.yaml: KubeSpawner's ``profile_list`` for servers on this machine.

Three things live here, and only here: the JSON Schema of a profile (validation, defaults, docs reference), the
checks JSON Schema cannot express (unique slugs, one default, known environments, ...), and
`effective_profiles`, the one place where a profile's implicit values (generated slug, default profile, default
choice, ``kubespawner_override`` as ``spawner_override``) are worked out. The hub applies the result
(tljh/hub/profiles.py); nothing else reads ``profiles`` raw.
"""

from __future__ import annotations

import copy
import re

from .builds import REPOSITORY_PROFILE, offers_repositories, ref_problem, repository_profile
from .environments import REPOSITORY_PATTERN

# A slug, option key or choice key is part of form field names ("profile-option-<slug>--<option>") and of
# HTML ids: letters, digits, '.', '_' and '-', without "--" (which separates the parts of a field name).
NAME_PATTERN = r"^(?!.*--)[A-Za-z0-9][A-Za-z0-9._-]{0,62}$"
NAME_EXPECT = "a name of letters, digits, '.', '_' or '-' (no '--', at most 63 characters)"
UNLISTED_VALUE = "unlisted-choice"  # the value of an option whose "Other" choice is taken (KubeSpawner's)
OVERRIDE_NAMES = ("spawner_override", "kubespawner_override")
RESERVED_ENV_PREFIX = "JUPYTERHUB_"  # set by the hub for the server; overriding them breaks it

_MEMORY = re.compile(r"^(\d+(?:\.\d+)?)([KMGT])$")
_UNITS = {"K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}


def memory_bytes(value) -> int:
    """KubeSpawner's and JupyterHub's reading of mem_limit: an int is bytes, "1.5G" uses K/M/G/T (powers of 1024)."""
    if isinstance(value, bool):
        raise ValueError(f"expected a memory size like 512M or 2G, got {value!r}")
    if isinstance(value, int):
        if value < 2**20:
            # 4096 meant as megabytes (limits.memory's reading) would be 4 KB here: say so instead.
            raise ValueError(f"a bare number is bytes here (as in KubeSpawner): write {value}M if you mean megabytes")
        return value
    m = _MEMORY.match(str(value).strip())
    if not m:
        raise ValueError(f"expected a memory size like 512M or 2G (K, M, G or T), got {value!r}")
    return int(float(m.group(1)) * _UNITS[m.group(2)])


def override_schemas() -> dict:
    """The keys a profile, a choice or an unlisted choice may override, each with its schema.

    Only what is meaningful and safe on this machine. The hub has one applier per key
    (tljh/hub/profiles.py APPLIERS; a test keeps the two in step). A feature adds a key in both places.
    """
    return {
        "user_environment": {
            "type": "string",
            "minLength": 1,
            "description": "The environment the server and its kernels run in: `default` (/opt/tljh/user) or "
            "the name of an entry under `environments`.",
        },
        "mem_limit": {
            "type": ["string", "integer"],
            "description": "Memory limit of the server and everything it starts, enforced by systemd (MemoryMax): "
            "e.g. 512M, 2G (K, M, G, T are powers of 1024); a bare number is bytes, as in KubeSpawner.",
        },
        "cpu_limit": {
            "type": "number",
            "description": "CPU limit in cores, enforced by systemd (CPUQuota): 0.5 is half a core, 2 is two.",
        },
        "default_url": {
            "type": "string",
            "description": "What the server opens: /lab (JupyterLab), /tree (Classic Notebook), or another path "
            "the server serves.",
        },
        "session_installs": {
            "type": "boolean",
            "description": "Whether what the user installs with pip or uv in this server lasts until it stops "
            "(true: into the server's session packages) or is refused (false); overrides "
            "`user_environment.session_installs`.",
        },
        "environment": {
            "type": "object",
            "additionalProperties": {"type": ["string", "number", "boolean", "null"]},
            "description": "Extra environment variables of the server, merged with those already set; a null "
            "value removes a variable.",
        },
        "repository": {
            "type": "string",
            "minLength": 1,
            "description": "The server runs in an environment built from this git repository (at "
            "`repository_ref`, else its default branch), each commit built once and shared by everyone who "
            "starts it. In an unlisted choice (`{value}`: what the user typed) the URL must be on a host of "
            "`builds.allowed_hosts`; overrides `user_environment`.",
        },
        "repository_ref": {
            "type": "string",
            "minLength": 1,
            "description": "The branch, tag or commit of `repository` to build (default: its default branch).",
        },
    }


def _override_node() -> dict:
    return {
        "type": "object",
        "additionalProperties": False,
        "x-tljh-list-allowed": True,
        "properties": override_schemas(),
        "description": "What this profile or choice changes for the server it starts (see the override keys).",
    }


def _choice_schema() -> dict:
    override = _override_node()
    return {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "display_name": {"type": "string", "description": "What the picker shows for this choice."},
            "description": {"type": "string", "description": "A line under the choice's name."},
            "default": {"type": "boolean", "description": "Preselected (the first choice if none is)."},
            "spawner_override": override,
            "kubespawner_override": {**override, "description": "The same as spawner_override (KubeSpawner's name)."},
        },
    }


def _unlisted_schema() -> dict:
    # Values of an unlisted choice's override may hold "{value}": they are checked once the typed text is in.
    loose = {"type": "object", "additionalProperties": False, "x-tljh-list-allowed": True,
             "properties": {k: {} for k in override_schemas()},
             "description": "Overrides with {value} replaced by what the user typed."}
    return {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "enabled": {"type": "boolean", "description": "Offer a choice where the user types a value."},
            "display_name": {"type": "string", "description": "Label of the text field."},
            "display_name_in_choices": {"type": "string", "description": "Name of the choice (default: Other...)."},
            "validation_regex": {
                "type": "string",
                "description": "A regular expression the whole typed value must match (checked by the browser "
                "and by the hub).",
            },
            "validation_message": {"type": "string", "description": "Says in words what validation_regex accepts."},
            "spawner_override": loose,
            "kubespawner_override": {**loose, "description": "The same as spawner_override (KubeSpawner's name)."},
        },
    }


def _profile_schema() -> dict:
    override = _override_node()
    return {
        "type": "object",
        "additionalProperties": False,
        "required": ["display_name"],
        "properties": {
            "display_name": {"type": "string", "minLength": 1, "description": "The profile's name in the picker."},
            "description": {"type": "string", "description": "What the profile offers (environment, resources, ...)."},
            "slug": {
                "type": "string",
                "pattern": NAME_PATTERN,
                "x-tljh-expect": NAME_EXPECT,
                "description": "The profile's id in forms, the REST API and logs; made from display_name if absent.",
            },
            "default": {"type": "boolean", "description": "Preselected (the first profile if none is)."},
            "allowed_groups": {
                "type": "array",
                "items": {"type": "string", "minLength": 1},
                "description": "Only members of these JupyterHub groups (or of users.extra_user_groups.<group>) see "
                "and start this profile; admins see every profile. Empty: everyone.",
            },
            "spawner_override": override,
            "kubespawner_override": {**override, "description": "The same as spawner_override (KubeSpawner's name)."},
            "profile_options": {
                "type": "object",
                "propertyNames": {"pattern": NAME_PATTERN, "x-tljh-expect": NAME_EXPECT},
                "additionalProperties": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "display_name": {"type": "string", "description": "The option's label."},
                        "choices": {
                            "type": "object",
                            "description": "The choices offered, by key (the value the form and the REST API send).",
                            "propertyNames": {"pattern": NAME_PATTERN, "x-tljh-expect": NAME_EXPECT},
                            "additionalProperties": _choice_schema(),
                        },
                        "unlisted_choice": {**_unlisted_schema(),
                                            "description": "A choice where the user types the value (\"Other\")."},
                    },
                },
                "description": "Further choices inside the profile, e.g. memory sizes.",
            },
        },
    }


def profiles_schema() -> dict:
    """The schema of the ``profiles`` key (a list, or KubeSpawner's dict form: any key -> profile)."""
    profile = _profile_schema()
    return {
        "type": ["array", "object"],
        "default": [],
        "items": profile,
        "additionalProperties": profile,
        "description": "Server profiles offered at /hub/spawn, in KubeSpawner's profile_list format. "
        "Empty: no picker, every server starts with the hub-wide settings.",
    }


# ---------------------------------------------------------------------------------------------- checks


def _as_list(profiles):
    if isinstance(profiles, dict):
        return [(f"profiles.{k}", p) for k, p in profiles.items()]
    return [(f"profiles[{i}]", p) for i, p in enumerate(profiles or [])]


def _override_of(node: dict):
    """(value, problem): spawner_override, or kubespawner_override; both at once is a problem."""
    if "spawner_override" in node and "kubespawner_override" in node:
        return node["spawner_override"], "give spawner_override or kubespawner_override, not both"
    return node.get("spawner_override", node.get("kubespawner_override")) or {}, None


def slugify(display_name: str) -> str:
    from slugify import slugify as _slugify  # python-slugify: KubeSpawner's own slug maker

    return _slugify(display_name)


def check_override_value(key: str, value) -> str | None:
    """Why `value` is not valid for override `key` (after {value} substitution), or None.

    JSON Schema covers configured values; this covers values built from typed text at spawn time too.
    """
    if key == "mem_limit":
        try:
            memory_bytes(value)
        except ValueError as e:
            return str(e)
        return None
    if key == "cpu_limit":
        try:
            ok = float(value) > 0
        except (TypeError, ValueError):
            ok = False
        return None if ok else f"expected a number of cores above 0, got {value!r}"
    if key == "default_url":
        return None if isinstance(value, str) and re.fullmatch(r"/\S*", value) else (
            f"expected a URL path starting with /, got {value!r}")
    if key == "user_environment":
        return None if isinstance(value, str) and value else f"expected an environment name, got {value!r}"
    if key == "repository":
        ok = isinstance(value, str) and re.match(REPOSITORY_PATTERN, value)
        return None if ok else f"expected a git URL (https://, git://, ...) or an absolute path, got {value!r}"
    if key == "repository_ref":
        return ref_problem(value)
    if key == "environment":
        if not isinstance(value, dict):
            return f"expected a mapping of variable names to values, got {value!r}"
        for name in value:
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", str(name)) or str(name).startswith(RESERVED_ENV_PREFIX):
                return f"{name!r} is not an environment variable name you may set"
    return None


def check_profiles(config: dict, environment_names) -> list[tuple[str, str]]:
    """(key, message) for what the schema cannot see. `environment_names`: the names user_environment may take."""
    profiles = config.get("profiles")
    if not isinstance(profiles, (list, dict)):
        return []  # the schema reports the type
    problems = []
    slugs = {}
    defaults = []
    envs = sorted(environment_names)
    for key, p in _as_list(profiles):
        if not isinstance(p, dict) or not isinstance(p.get("display_name"), str):
            continue
        slug = p.get("slug") if isinstance(p.get("slug"), str) else slugify(p["display_name"])
        if "slug" not in p and not re.match(NAME_PATTERN, slug or ""):
            problems.append((key, f"cannot make a slug from display_name {p['display_name']!r}: give it a slug"))
        if slug in slugs:
            problems.append((key, f"slug {slug!r} is also {slugs[slug]}'s; slugs must be unique"))
        slugs.setdefault(slug, key)
        if p.get("default") is True:
            defaults.append(key)
        overrides = []
        value, problem = _override_of(p)
        if problem:
            problems.append((key, problem))
        overrides.append((key, value, False))
        options = p.get("profile_options")
        for okey, option in (options.items() if isinstance(options, dict) else []):
            if not isinstance(option, dict):
                continue
            where = f"{key}.profile_options.{okey}"
            choices = option.get("choices") if isinstance(option.get("choices"), dict) else {}
            unlisted = option.get("unlisted_choice") if isinstance(option.get("unlisted_choice"), dict) else {}
            if not choices and not unlisted.get("enabled"):
                problems.append((where, "has no choices: give choices or enable unlisted_choice"))
            chosen = [c for c, v in choices.items() if isinstance(v, dict) and v.get("default") is True]
            if len(chosen) > 1:
                problems.append((where, f"choices {', '.join(chosen)} are all default; one at most"))
            for ckey, choice in choices.items():
                if isinstance(choice, dict):
                    value, problem = _override_of(choice)
                    if problem:
                        problems.append((f"{where}.choices.{ckey}", problem))
                    overrides.append((f"{where}.choices.{ckey}", value, False))
            if unlisted:
                regex = unlisted.get("validation_regex")
                if isinstance(regex, str):
                    try:
                        re.compile(regex)
                    except re.error as e:
                        problems.append((f"{where}.unlisted_choice.validation_regex", f"not a regular expression: {e}"))
                value, problem = _override_of(unlisted)
                if problem:
                    problems.append((f"{where}.unlisted_choice", problem))
                overrides.append((f"{where}.unlisted_choice", value, True))
        for where, value, typed in overrides:
            if not isinstance(value, dict):
                continue
            env = value.get("user_environment")
            if isinstance(env, str) and env not in environment_names and not (typed and "{value}" in env):
                problems.append((f"{where}.spawner_override.user_environment",
                                 f"no environment {env!r}; environments: {', '.join(envs)}"))
            schemas = override_schemas()
            for k, v in value.items():
                if k in schemas and _type_ok(schemas[k], v) and not (typed and _has_placeholder(v)):
                    why = check_override_value(k, v)
                    if why:
                        problems.append((f"{where}.spawner_override.{k}", why))
    if len(defaults) > 1:
        problems.append(("profiles", f"{', '.join(defaults)} are all default; one at most"))
    return problems


def _type_ok(schema: dict, value) -> bool:
    """Whether `value` has the JSON type `schema` asks for (a wrong type is the schema's to report)."""
    kinds = {"string": str, "integer": int, "number": (int, float), "object": dict, "boolean": bool}
    types = schema.get("type", [])
    types = [types] if isinstance(types, str) else types
    if isinstance(value, bool) and "boolean" not in types:
        return False
    return any(isinstance(value, kinds[t]) for t in types)


def _has_placeholder(value) -> bool:
    if isinstance(value, str):
        return "{value}" in value
    if isinstance(value, dict):
        return any(_has_placeholder(v) for v in value.values())
    return False


# ---------------------------------------------------------------------------------------------- effective


def _known(override) -> dict:
    # An unknown key is reported (and skipped) by validation; the hub starts without it rather than not at all.
    if not isinstance(override, dict):
        return {}
    return {k: v for k, v in override.items() if k in override_schemas()}


def effective_profiles(profiles) -> list[dict]:
    """A new list of the profiles with every implicit value made explicit (KubeSpawner's initialisation).

    Each profile gets ``slug``, ``default``, ``allowed_groups``, ``spawner_override`` (kubespawner_override under
    our name, unknown keys left out) and ``profile_options``; each option gets ``display_name``, ``choices`` (one of
    them default) and ``unlisted_choice`` (``enabled``, ``display_name_in_choices``, ``spawner_override``).
    Idempotent. Parts that are not valid are passed through untouched: validation reports them.
    """
    if profiles is None:
        return []
    if not isinstance(profiles, (list, dict)):
        return copy.deepcopy(profiles)
    out = []
    for _, p in _as_list(copy.deepcopy(profiles)):
        if not isinstance(p, dict) or not isinstance(p.get("display_name"), str):
            out.append(p)
            continue
        p["slug"] = p.get("slug") or slugify(p["display_name"])
        p["default"] = p.get("default") is True
        p["allowed_groups"] = list(p.get("allowed_groups") or [])
        p["spawner_override"] = _known(_override_of(p)[0])
        p.pop("kubespawner_override", None)
        options = p.get("profile_options") if isinstance(p.get("profile_options"), dict) else {}
        p["profile_options"] = options
        for option in options.values():
            if not isinstance(option, dict):
                continue
            option.setdefault("display_name", "")
            choices = option.get("choices") if isinstance(option.get("choices"), dict) else {}
            option["choices"] = choices
            for choice in choices.values():
                if isinstance(choice, dict):
                    choice["spawner_override"] = _known(_override_of(choice)[0])
                    choice.pop("kubespawner_override", None)
                    choice["default"] = choice.get("default") is True
            valid = [c for c in choices.values() if isinstance(c, dict)]
            if valid and not any(c["default"] for c in valid):
                valid[0]["default"] = True
            unlisted = option.get("unlisted_choice") if isinstance(option.get("unlisted_choice"), dict) else {}
            option["unlisted_choice"] = unlisted
            unlisted["enabled"] = unlisted.get("enabled") is True
            unlisted.setdefault("display_name_in_choices", "Other...")
            unlisted["spawner_override"] = _known(_override_of(unlisted)[0])
            unlisted.pop("kubespawner_override", None)
        out.append(p)
    valid = [p for p in out if isinstance(p, dict) and "slug" in p]
    if valid and not any(p["default"] for p in valid):
        valid[0]["default"] = True
    return out


def with_repository_profile(profiles: list[dict], allowed_hosts) -> list[dict]:
    """Effective ``profiles`` with the picker's "build from a repository" profile at the end, for users to build
    from ``builds.allowed_hosts`` — unless a profile of the admin's already lets users type a repository (or
    takes its slug). With no profiles configured, the hub-wide settings come first as the default profile."""
    if offers_repositories(profiles) or any(isinstance(p, dict) and p.get("slug") == REPOSITORY_PROFILE
                                            for p in profiles):
        return profiles
    base = profiles or [{"display_name": "Default", "slug": "default", "description": "The hub's shared environment."}]
    # One pass over both: the default stays where it was (the first profile when none was configured).
    return effective_profiles([*base, repository_profile(allowed_hosts)])
