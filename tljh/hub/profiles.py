"""Profiles on the hub: who sees which profile, the picker page, what a choice changes on the spawner.

The profiles come from config.yaml, made explicit by tljh.settings.profiles.effective_profiles. A choice arrives
as KubeSpawner's ``user_options`` — from the picker's form fields (``profile``, ``profile-option-<slug>--<option>``,
``...--unlisted-choice``) or from the REST API — and is checked in full (`choose`) before anything is applied:
a refusal is an HTTP 400/403 with one line saying what is accepted, and the server does not start.
"""

from __future__ import annotations

import copy
import os
import re
from dataclasses import dataclass, field

import jinja2
from tornado import web

from tljh.settings.builds import user_repository_problem
from tljh.settings.profiles import UNLISTED_VALUE, check_override_value, memory_bytes

FIELD_PREFIX = "profile-option-"
UNLISTED_SUFFIX = "--unlisted-choice"
# jupyterhub-fancy-profiles posts this value for its "Other" choice; KubeSpawner's form posts UNLISTED_VALUE.
UNLISTED_VALUES = {UNLISTED_VALUE, "unlisted_choice"}
TEMPLATES = os.path.join(os.path.dirname(__file__), "templates")


def _refuse(status: int, message: str):
    return web.HTTPError(status, message.replace("%", "%%"))


@dataclass
class Choice:
    """A checked choice: the profile (None when no profiles are configured) and its merged overrides."""

    profile: dict | None
    overrides: dict = field(default_factory=dict)


def groups_of(user, extra_user_groups: dict) -> set[str]:
    """The user's JupyterHub groups plus the users.extra_user_groups.<group> lists naming them."""
    groups = {g.name for g in user.groups}
    groups.update(g for g, members in (extra_user_groups or {}).items() if user.name in (members or []))
    return groups


def visible(profiles: list[dict], groups: set[str], admin: bool) -> list[dict]:
    """The profiles this user may see and start, in config order (admins: all)."""
    return [p for p in profiles if admin or not p["allowed_groups"] or groups & set(p["allowed_groups"])]


def default_of(profiles: list[dict]) -> dict:
    """The profile a request without one gets: the configured default if visible, else the first visible."""
    return next((p for p in profiles if p["default"]), profiles[0])


def needs_picker(profiles: list[dict]) -> bool:
    """One visible profile without options is started at once; anything more is a choice to make."""
    return len(profiles) > 1 or any(p["profile_options"] for p in profiles)


def parse_form(formdata: dict) -> dict:
    """Form fields -> user_options, as KubeSpawner reads them (only the chosen profile's fields)."""
    slug = (formdata.get("profile") or [""])[0]
    if not slug:
        return {}
    prefix = f"{FIELD_PREFIX}{slug}--"
    options = {"profile": slug}
    for name, values in formdata.items():
        if name.startswith(prefix) and values:
            options[name[len(prefix):]] = values[0]
    return options


def _merge(base: dict, update: dict) -> dict:
    """KubeSpawner's precedence: mappings merge key by key (recursively); anything else replaces."""
    for k, v in update.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            _merge(base[k], v)
        else:
            base[k] = copy.deepcopy(v)
    return base


def _substitute(value, typed: str):
    if isinstance(value, str):
        return value.replace("{value}", typed)
    if isinstance(value, dict):
        return {k: _substitute(v, typed) for k, v in value.items()}
    return value


def choose(profiles: list[dict], user_options: dict, groups: set[str], admin: bool,
           environment_names=frozenset({"default"}), repository_hosts=()) -> Choice:
    """Check `user_options` against the profiles this user may start; the Choice, or an HTTPError to send back.

    A repository a user typed must be on one of ``repository_hosts`` (builds.allowed_hosts); one the admin
    wrote in a profile is the admin's choice."""
    if not profiles:
        return Choice(None)
    options = dict(user_options or {})
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in options.items()):
        raise _refuse(400, "user_options must map names to strings, e.g. {\"profile\": \"<slug>\"}")
    mine = visible(profiles, groups, admin)
    slug = options.pop("profile", "")
    if slug:
        profile = next((p for p in profiles if p["slug"] == slug), None)
        if profile is None:
            raise _refuse(400, f"There is no profile {slug!r}; yours: {', '.join(p['slug'] for p in mine) or 'none'}")
        if profile not in mine:
            raise _refuse(403, f"Profile {slug!r} is only for members of {', '.join(profile['allowed_groups'])}")
    elif mine:
        profile = default_of(mine)
    else:
        raise _refuse(403, "No profile is open to you: an admin can add you to a group that has one")
    opts = profile["profile_options"]
    known = set(opts) | {o + UNLISTED_SUFFIX for o in opts}
    unknown = sorted(set(options) - known)
    if unknown:
        raise _refuse(400, f"Profile {profile['slug']!r} has no option {unknown[0]!r}; "
                           f"its options: {', '.join(opts) or 'none'}")
    overrides = _merge({}, profile["spawner_override"])
    for name, option in opts.items():
        label = option["display_name"] or name
        typed = options.get(name + UNLISTED_SUFFIX, "").strip()
        picked = options.get(name, "")
        unlisted = option["unlisted_choice"]
        if typed or picked in UNLISTED_VALUES:
            if not unlisted["enabled"]:
                raise _refuse(400, f"{label}: this option takes one of: {', '.join(option['choices'])}")
            regex = unlisted.get("validation_regex")
            if not typed or (regex and not re.fullmatch(regex, typed)):
                rule = unlisted.get("validation_message") or (f"must match {regex}" if regex else "type a value")
                raise _refuse(400, f"{label}: {typed!r} is not accepted ({rule})")
            chosen = _substitute(unlisted["spawner_override"], typed)
            for key, value in chosen.items():
                why = check_override_value(key, value)
                if why is None and key == "user_environment" and value not in environment_names:
                    why = f"no environment {value!r}"
                if why is None and key == "repository":
                    why = user_repository_problem(value, repository_hosts)
                if why:
                    raise _refuse(400, f"{label}: {typed!r} is not accepted ({why})")
            _merge(overrides, chosen)
            continue
        if not picked:
            if not option["choices"]:
                raise _refuse(400, f"{label}: type a value")
            picked = next(k for k, c in option["choices"].items() if c["default"])
        if picked not in option["choices"]:
            raise _refuse(400, f"{label}: {picked!r} is not offered; choices: {', '.join(option['choices'])}")
        _merge(overrides, option["choices"][picked]["spawner_override"])
    return Choice(profile, overrides)


# ---------------------------------------------------------------------------------------------- applying

def _set_environment(spawner, value):
    env = dict(spawner.environment)
    for name, v in value.items():
        if v is None:
            env.pop(name, None)
        else:
            env[name] = v if isinstance(v, str) else str(v).lower() if isinstance(v, bool) else str(v)
    spawner.environment = env


# key -> (the spawner attributes it changes, how). tljh.settings.profiles.override_schemas() declares the same keys.
APPLIERS = {
    "user_environment": (("user_environment",), lambda s, v: setattr(s, "user_environment", v)),
    "mem_limit": (("mem_limit",), lambda s, v: setattr(s, "mem_limit", memory_bytes(v))),
    "cpu_limit": (("cpu_limit",), lambda s, v: setattr(s, "cpu_limit", float(v))),
    "default_url": (("default_url",), lambda s, v: setattr(s, "default_url", v)),
    "session_installs": (("session_installs",), lambda s, v: setattr(s, "session_installs", bool(v))),
    "environment": (("environment",), _set_environment),
    "repository": (("repository",), lambda s, v: setattr(s, "repository", v)),
    "repository_ref": (("repository_ref",), lambda s, v: setattr(s, "repository_ref", v)),
}


def apply(spawner, overrides: dict) -> None:
    """Set the overrides on the spawner, starting from its configured values each time.

    JupyterHub keeps a spawner object after a failed start: without the reset, a setting of the failed choice
    would stay for the next one.
    """
    baseline = spawner.__dict__.setdefault("_tljh_profile_baseline", {})
    for attrs, _ in APPLIERS.values():
        for attr in attrs:
            if attr not in baseline:
                baseline[attr] = copy.deepcopy(getattr(spawner, attr))
            setattr(spawner, attr, copy.deepcopy(baseline[attr]))
    for key, value in overrides.items():
        APPLIERS[key][1](spawner, value)


# ---------------------------------------------------------------------------------------------- the picker

def _load_template():
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True,
                             trim_blocks=True, lstrip_blocks=True)
    return env.get_template("profiles_form.html")


# Compiled when the hub imports the spawner, not on the first user's page (~0.1 s on a busy 2-core machine).
_TEMPLATE = _load_template()


def _preselected(profiles: list[dict], previous: dict) -> dict:
    """{slug: {option: choice}}, the profile to check, typed values: the user's last choice where still offered."""
    chosen = {p["slug"]: {o: next((k for k, c in opt["choices"].items() if c["default"]), UNLISTED_VALUE)
                          for o, opt in p["profile_options"].items()} for p in profiles}
    typed = {p["slug"]: {} for p in profiles}
    slug = previous.get("profile") if isinstance(previous, dict) else None
    current = next((p for p in profiles if p["slug"] == slug), None) or default_of(profiles)
    if current["slug"] == slug:
        for o, opt in current["profile_options"].items():
            value, text = previous.get(o), previous.get(o + UNLISTED_SUFFIX)
            if isinstance(text, str) and text and opt["unlisted_choice"]["enabled"]:
                chosen[slug][o], typed[slug][o] = UNLISTED_VALUE, text
            elif value in opt["choices"]:
                chosen[slug][o] = value
    return {"profile": current["slug"], "choices": chosen, "typed": typed}


def render_picker(profiles: list[dict], previous: dict | None = None) -> str:
    """The picker's HTML (inside JupyterHub's spawn form, which adds the Start button)."""
    return _TEMPLATE.render(profiles=profiles, selected=_preselected(profiles, previous or {}),
                              field_prefix=FIELD_PREFIX, unlisted_value=UNLISTED_VALUE,
                              unlisted_suffix=UNLISTED_SUFFIX)


# ---------------------------------------------------------------------------------------------- spawner hooks
# UserCreatingSpawner uses these as the defaults of JupyterHub's options_form, options_from_form and
# apply_user_options when profiles are configured (an admin's own hooks in jupyterhub_config.d still win).

def _groups(spawner) -> set[str]:
    return groups_of(spawner.user, getattr(spawner, "user_groups", {}))


def options_form(spawner) -> str:
    """The picker for this user, or "" (start at once) when there is nothing to choose."""
    mine = visible(spawner.profiles, _groups(spawner), spawner.user.admin)
    if not mine or not needs_picker(mine):
        return ""
    return render_picker(mine, spawner.user_options)


def options_from_form(formdata: dict, spawner) -> dict:
    """The picker's fields as user_options, checked now: a refusal re-renders the picker with the reason."""
    user_options = parse_form(formdata)
    choose(spawner.profiles, user_options, _groups(spawner), spawner.user.admin,
           repository_hosts=spawner.repository_hosts)
    return user_options


async def apply_user_options(spawner, user_options: dict) -> None:
    """Check the choice (it may come from the REST API or be the stored last one) and apply it to the spawner."""
    if not spawner.profiles:
        if user_options:
            spawner.log.warning("%s: no profiles are configured; ignoring user_options %s",
                                spawner._log_name, sorted(user_options))
        return
    chosen = choose(spawner.profiles, user_options, _groups(spawner), spawner.user.admin,
                    repository_hosts=spawner.repository_hosts)
    apply(spawner, chosen.overrides)
    spawner.log.info("%s: profile %s %s", spawner._log_name, chosen.profile["slug"],
                     " ".join(f"{k}={v}" for k, v in chosen.overrides.items()) or "(hub-wide settings)")
