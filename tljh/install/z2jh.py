"""The way out to Kubernetes: ``tljh export z2jh`` and back: ``tljh import z2jh values.yaml``.

One table of what maps (config.yaml key <-> Zero to JupyterHub chart value), used in both directions, so an export
imported again exports the same values. Whatever does not map is said on standard error, one line each, never
dropped in silence: settings of this server that a chart has no place for, and chart values this hub has no
setting for. Environments become image placeholders (``REPLACE-ME/tljh-env-<name>:lock-<hash of its lock>``) with
a comment naming the environment and where its lock is: images are built elsewhere, from that lock.
"""

from __future__ import annotations

import copy
import hashlib
import os
import re
import sys

from ruamel.yaml.comments import CommentedMap

from tljh.settings import authenticators, config_file, schema
from tljh.settings.effective import effective_settings
from tljh.settings.errors import ConfigError
from tljh.settings.values import memory_to_bytes, normalize_memory
from tljh.system import files, paths

LETSENCRYPT_STAGING = "https://acme-staging-v02.api.letsencrypt.org/directory"
LETSENCRYPT_PRODUCTION = "https://acme-v02.api.letsencrypt.org/directory"
PLACEHOLDER = re.compile(r"^REPLACE-ME/tljh-env-(?P<name>[a-z][a-z0-9_-]*)(?::(?P<tag>[^:]+))?$")
# config.yaml's default app <-> the chart's singleuser.defaultUrl.
DEFAULT_URLS = {"jupyterlab": "/lab", "classic": "/tree"}
# services.cull.<key> <-> cull.<value>
CULL_KEYS = {
    "enabled": "enabled",
    "timeout": "timeout",
    "every": "every",
    "concurrency": "concurrency",
    "users": "users",
    "max_age": "maxAge",
    "remove_named_servers": "removeNamedServers",
}
# Authenticators the hub lets everyone into when users.allowed is empty (tljh.hub.configurer.OPEN_BY_DEFAULT):
# on the chart that has to be said (allow_all), or nobody could log in.
OPEN_BY_DEFAULT = ("FirstUseAuthenticator", "DummyAuthenticator", "TmpAuthenticator")
# Profile override keys that are KubeSpawner traits of the same name and meaning.
SAME_OVERRIDES = ("mem_limit", "cpu_limit", "default_url", "environment")
PROFILE_KEYS = ("display_name", "description", "slug", "default")
# The chart's singleuser.memory.guarantee default (values.yaml: 1G).
CHART_MEMORY_GUARANTEE = 1024**3


def _lock_tag(lock: str | None) -> str:
    return "lock-" + hashlib.sha256(lock.encode()).hexdigest()[:12] if lock else "unbuilt"


def placeholder_image(name: str, lock: str | None) -> tuple[str, str]:
    """(image name, tag) standing for environment ``name``; the tag changes exactly when its lock does."""
    return f"REPLACE-ME/tljh-env-{name}", _lock_tag(lock)


def _image_comment(name, where):
    return f"environment {name!r}: build an image from its lock ({where}), then put its name here"


# --------------------------------------------------------------------------------------------
# Export


def _convert_override(override: dict, where: str, notes: list, lock_of) -> CommentedMap:
    out = CommentedMap()
    for key, value in (override or {}).items():
        if key == "user_environment":
            lock, lock_where = lock_of(value)
            image, tag = placeholder_image(value, lock)
            out["image"] = f"{image}:{tag}"
            out.yaml_add_eol_comment(_image_comment(value, lock_where), "image")
        elif key in SAME_OVERRIDES:
            out[key] = copy.deepcopy(value)
        else:
            notes.append(f"{where}.{key}: no KubeSpawner equivalent; left out")
    return out


def _convert_profile(profile: dict, index: int, notes: list, lock_of) -> CommentedMap:
    where = f"profiles[{index}]"
    out = CommentedMap()
    for key in PROFILE_KEYS:
        if key in profile and profile[key] is not None:
            out[key] = profile[key]
    if profile.get("allowed_groups"):
        notes.append(
            f"{where}.allowed_groups {profile['allowed_groups']}: KubeSpawner's profile_list has no group "
            "restriction in the chart's values; this profile is open to everyone there"
        )
    override = profile.get("spawner_override") or profile.get("kubespawner_override")
    if override:
        out["kubespawner_override"] = _convert_override(override, f"{where}.spawner_override", notes, lock_of)
    if profile.get("profile_options"):
        options = CommentedMap()
        for option_name, option in profile["profile_options"].items():
            converted = CommentedMap((k, v) for k, v in option.items() if k not in ("choices", "unlisted_choice"))
            if option.get("choices"):
                choices = CommentedMap()
                for choice_name, choice in option["choices"].items():
                    c = CommentedMap((k, v) for k, v in choice.items() if k not in ("spawner_override", "kubespawner_override"))
                    o = choice.get("spawner_override") or choice.get("kubespawner_override")
                    if o:
                        c["kubespawner_override"] = _convert_override(
                            o, f"{where}.profile_options.{option_name}.choices.{choice_name}", notes, lock_of
                        )
                    choices[choice_name] = c
                converted["choices"] = choices
            if option.get("unlisted_choice"):
                u = option["unlisted_choice"]
                c = CommentedMap((k, v) for k, v in u.items() if k not in ("spawner_override", "kubespawner_override"))
                o = u.get("spawner_override") or u.get("kubespawner_override")
                if o:
                    c["kubespawner_override"] = _convert_override(
                        o, f"{where}.profile_options.{option_name}.unlisted_choice", notes, lock_of
                    )
                converted["unlisted_choice"] = c
            options[option_name] = converted
        out["profile_options"] = options
    for key in profile:
        if key not in (*PROFILE_KEYS, "allowed_groups", "spawner_override", "kubespawner_override", "profile_options"):
            notes.append(f"{where}.{key}: no KubeSpawner equivalent; left out")
    return out


def _profiles_of(config) -> list:
    profiles = config.get("profiles") or []
    return list(profiles.values()) if isinstance(profiles, dict) else list(profiles)


def export_values(config: dict, *, read_text, lock_of, snippets=(), plugins=()) -> tuple[CommentedMap, list[str]]:
    """Chart values for the effective ``config``, and the notes (what did not carry over).

    ``read_text(path)`` reads a certificate file; ``lock_of(name)`` gives (lock text or None, where it is) of an
    environment; ``snippets`` are jupyterhub_config.d files and ``plugins`` installed TLJH plugins (both listed)."""
    notes: list[str] = []
    values = CommentedMap()
    hub = values["hub"] = CommentedMap()
    hub["baseUrl"] = config["base_url"]
    hub_config = hub["config"] = CommentedMap()
    auth = config["auth"]
    auth_class = authenticators.class_name_of(auth["type"])
    hub_config["JupyterHub"] = CommentedMap(authenticator_class=auth["type"])
    defaults = schema.effective_config({})["auth"]
    for section, traits in auth.items():
        if section == "type" or not isinstance(traits, dict):
            continue
        set_traits = {k: copy.deepcopy(v) for k, v in traits.items() if v is not None}
        if section == auth_class and set_traits:
            hub_config[section] = CommentedMap(set_traits)
        elif section != auth_class and traits != defaults.get(section):
            notes.append(f"auth.{section}: settings of an authenticator this hub does not use; left out")
    people = config["users"]
    if auth_class in OPEN_BY_DEFAULT and not people["allowed"] and auth.get(auth_class, {}).get("allow_all") is None:
        hub_config.setdefault(auth_class, CommentedMap())["allow_all"] = True
    if auth_class == "FirstUseAuthenticator":
        notes.append(
            "FirstUseAuthenticator passwords live in a file on this server, not in values: users set a password "
            "again at their first login on the new hub"
        )
    if auth_class == "NativeAuthenticator":
        notes.append("NativeAuthenticator accounts live in the hub database, not in values: users sign up again")
    lists = {"admin": "admin_users", "allowed": "allowed_users", "banned": "blocked_users"}
    for key, trait in lists.items():
        if people[key]:
            hub_config.setdefault("Authenticator", CommentedMap())[trait] = list(people[key])
    groups = {g: {"users": list(m or [])} for g, m in people["extra_user_groups"].items()}
    if groups:
        hub_config["JupyterHub"]["load_groups"] = groups
        notes.append(
            "users.extra_user_groups: exported as JupyterHub groups (hub.config.JupyterHub.load_groups); they are "
            "not Unix groups on Kubernetes, so group file permissions do not carry over"
        )
    if "allow_named_servers" in config:
        hub["allowNamedServers"] = bool(config["allow_named_servers"])
        hub["namedServerLimitPerUser"] = int(config.get("named_server_limit_per_user") or 0)

    single = values["singleuser"] = CommentedMap()
    lock, where = lock_of("default")
    name, tag = placeholder_image("default", lock)
    single["image"] = CommentedMap(name=name, tag=tag)
    single.yaml_set_comment_before_after_key("image", before=_image_comment("default", where), indent=2)
    limits = config["limits"]
    if limits["memory"] is not None:
        single["memory"] = CommentedMap(limit=limits["memory"])
        if memory_to_bytes(limits["memory"]) < CHART_MEMORY_GUARANTEE:
            # The chart reserves 1G per user unless told otherwise; a guarantee above the limit is refused.
            single["memory"]["guarantee"] = limits["memory"]
    if limits["cpu"] is not None:
        single["cpu"] = CommentedMap(limit=limits["cpu"])
    single["defaultUrl"] = DEFAULT_URLS[config["user_environment"]["default_app"]]
    profiles = _profiles_of(config)
    if profiles:
        single["profileList"] = [_convert_profile(p, i, notes, lock_of) for i, p in enumerate(profiles)]
    for name in sorted(set((config.get("environments") or {})) - {"default"} - _environments_in_profiles(profiles)):
        notes.append(f"environments.{name}: no profile uses it, so no image stands for it")
    notes += _environment_notes(config.get("environments") or {}, {"default", *_environments_in_profiles(profiles)})

    cull = config["services"]["cull"]
    values["cull"] = CommentedMap((CULL_KEYS[k], cull[k]) for k in CULL_KEYS)

    https = config["https"]
    proxy_https = CommentedMap(enabled=bool(https["enabled"]))
    if https["enabled"]:
        if https["letsencrypt"]["domains"]:
            proxy_https["type"] = "letsencrypt"
            proxy_https["hosts"] = list(https["letsencrypt"]["domains"])
            le = proxy_https["letsencrypt"] = CommentedMap(contactEmail=https["letsencrypt"]["email"])
            directory = (https.get("acme") or {}).get("directory")
            if directory:
                le["acmeServer"] = directory
            elif https["letsencrypt"]["staging"]:
                le["acmeServer"] = LETSENCRYPT_STAGING
            if (https.get("acme") or {}).get("trusted_roots"):
                notes.append("https.acme.trusted_roots: the chart has no setting for a private ACME CA's roots")
        elif https["tls"]["cert"]:
            proxy_https["type"] = "manual"
            proxy_https["manual"] = CommentedMap(
                key=read_text(https["tls"]["key"]), cert=read_text(https["tls"]["cert"])
            )
            notes.append("proxy.https.manual.key holds the TLS private key: keep values.yaml as secret as the key")
    values["proxy"] = CommentedMap(https=proxy_https)
    for section, default_port in (("http", 80), ("https", 443)):
        if config[section]["port"] != default_port:
            notes.append(f"{section}.port {config[section]['port']}: the chart's proxy service listens on {default_port}")
        if config[section]["address"]:
            notes.append(f"{section}.address {config[section]['address']}: the chart has no listen address")
    backup = config.get("backup") or {}
    if backup.get("daily"):
        notes.append("backup.daily: scheduled backups are this server's; on Kubernetes back up the hub's volume")
    for snippet in snippets:
        notes.append(f"{snippet}: Python configuration; copy what still applies into hub.extraConfig by hand")
    for plugin in plugins:
        notes.append(f"plugin {plugin}: TLJH plugins do not run on the chart; add what it does by hand")
    return values, notes


def _environment_notes(environments: dict, imaged: set) -> list[str]:
    """What an image standing for an environment needs beyond its lock (which holds Python packages only), and
    what environments do here that images do not."""
    notes = []
    for name in sorted(imaged):
        entry = environments.get(name) or {}
        if entry.get("repository"):
            notes.append(f"environments.{name}: comes from {entry['repository']}; build its image from that repository "
                         "(repo2docker reads the same files)")
            continue
        needs = []
        if entry.get("python"):
            needs.append(f"Python {entry['python']}")
        if entry.get("apt"):
            needs.append(f"the OS packages {' '.join(entry['apt'])}")
        if entry.get("r"):
            needs.append("R and IRkernel")
        if needs:
            notes.append(f"environments.{name}: its image needs {', '.join(needs)} too (the lock holds Python packages only)")
    offered = [n for n, e in environments.items() if n != "default" and (e or {}).get("offer_kernel", True) is not False]
    if offered:
        notes.append(
            "environments: every server here offers a kernel of each environment; a server on the chart has the "
            "kernels of its own image only"
        )
    return notes


def _environments_in_profiles(profiles) -> set:
    found = set()

    def walk(value):
        if isinstance(value, dict):
            for k, v in value.items():
                if k == "user_environment" and isinstance(v, str):
                    found.add(v)
                else:
                    walk(v)
        elif isinstance(value, list):
            for v in value:
                walk(v)

    walk(profiles)
    return found


# --------------------------------------------------------------------------------------------
# Import


def _leaves(value, prefix=""):
    """Dotted paths of the leaves of a values tree (lists are leaves)."""
    if isinstance(value, dict) and value:
        for k, v in value.items():
            yield from _leaves(v, f"{prefix}.{k}" if prefix else str(k))
    else:
        yield prefix


def _get(values, dotted, default=None):
    node = values
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return default
        node = node[part]
    return node


def memory_from_chart(value) -> str | None:
    """A chart memory value (bytes as a number, or 1G / 1Gi / 512Mi) as config.yaml writes it; None if not one."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        number = int(value)
        for unit, size in (("T", 1024**4), ("G", 1024**3), ("M", 1024**2), ("K", 1024)):
            if number % size == 0:
                return f"{number // size}{unit}"
        return None
    text = str(value).strip()
    m = re.match(r"^(\d+(?:\.\d+)?)([KMGT])i?$", text)
    if not m:
        return None
    return normalize_memory(f"{m.group(1)}{m.group(2)}")


def _override_back(override: dict, where: str, notes: list, environments: set) -> dict:
    out = {}
    for key, value in (override or {}).items():
        if key == "image":
            m = PLACEHOLDER.match(str(value))
            if m and m.group("name") in environments:
                out["user_environment"] = m.group("name")
            else:
                notes.append(f"{where}.image {value}: this hub runs environments, not images: create one (tljh env) and name it in user_environment")
        elif key in SAME_OVERRIDES:
            out[key] = copy.deepcopy(value)
        else:
            notes.append(f"{where}.{key}: no equivalent on this hub; not imported")
    return out


def _profile_back(profile: dict, index: int, notes: list, environments: set) -> dict:
    where = f"singleuser.profileList[{index}]"
    out = {k: copy.deepcopy(profile[k]) for k in PROFILE_KEYS if k in profile}
    if profile.get("kubespawner_override"):
        out["spawner_override"] = _override_back(profile["kubespawner_override"], f"{where}.kubespawner_override", notes, environments)
    if profile.get("profile_options"):
        options = {}
        for option_name, option in profile["profile_options"].items():
            converted = {k: copy.deepcopy(v) for k, v in option.items() if k not in ("choices", "unlisted_choice")}
            if option.get("choices"):
                converted["choices"] = {}
                for choice_name, choice in option["choices"].items():
                    c = {k: copy.deepcopy(v) for k, v in choice.items() if k != "kubespawner_override"}
                    if choice.get("kubespawner_override"):
                        c["spawner_override"] = _override_back(
                            choice["kubespawner_override"], f"{where}.profile_options.{option_name}.choices.{choice_name}", notes, environments
                        )
                    converted["choices"][choice_name] = c
            if option.get("unlisted_choice"):
                u = option["unlisted_choice"]
                c = {k: copy.deepcopy(v) for k, v in u.items() if k != "kubespawner_override"}
                if u.get("kubespawner_override"):
                    c["spawner_override"] = _override_back(
                        u["kubespawner_override"], f"{where}.profile_options.{option_name}.unlisted_choice", notes, environments
                    )
                converted["unlisted_choice"] = c
            options[option_name] = converted
        out["profile_options"] = options
    for key in profile:
        if key not in (*PROFILE_KEYS, "kubespawner_override", "profile_options"):
            notes.append(f"{where}.{key}: no equivalent on this hub; not imported")
    return out


def import_values(values: dict, raw: dict, *, environments=("default",)) -> tuple[dict, dict, list[str]]:
    """(assignments {dotted config key: value}, certificate files {name: PEM text}, notes) for chart ``values``.

    ``raw`` is this hub's config.yaml (for the authenticator class when the values do not name one)."""
    notes: list[str] = []
    used: set[str] = set()
    out: dict = {}
    pem: dict = {}
    environments = set(environments)

    def take(dotted):
        value = _get(values, dotted)
        if value is not None:
            used.update(p for p in _leaves(value, dotted))
            used.add(dotted)
        return value

    if (base := take("hub.baseUrl")) is not None:
        out["base_url"] = base
    auth_type = take("hub.config.JupyterHub.authenticator_class")
    if auth_type is not None:
        out["auth.type"] = auth_type
    auth_type = auth_type or effective_settings(raw).config["auth"]["type"]
    auth_class = authenticators.class_name_of(auth_type)
    lists = {"admin_users": "users.admin", "allowed_users": "users.allowed", "blocked_users": "users.banned"}
    for trait, key in lists.items():
        if (v := take(f"hub.config.Authenticator.{trait}")) is not None:
            out[key] = list(v)
    if (groups := take("hub.config.JupyterHub.load_groups")) is not None:
        out["users.extra_user_groups"] = {
            g: list(m.get("users", []) if isinstance(m, dict) else m) for g, m in groups.items()
        }
    for section, traits in (_get(values, "hub.config") or {}).items():
        if section in ("JupyterHub",) or not isinstance(traits, dict):
            continue
        for trait, value in traits.items():
            dotted = f"hub.config.{section}.{trait}"
            if dotted in used:
                continue
            target = auth_class if section == "Authenticator" else section
            if target != auth_class:
                continue
            try:
                cls = authenticators.resolve_authenticator(auth_type)
                authenticators.trait_or_error(cls, auth_class, trait)
            except ConfigError:
                continue
            out[f"auth.{auth_class}.{trait}"] = copy.deepcopy(value)
            take(dotted)
    for chart_key, key in (("hub.allowNamedServers", "allow_named_servers"), ("hub.namedServerLimitPerUser", "named_server_limit_per_user")):
        if _get(values, chart_key) is not None and _has_key(key):
            out[key] = take(chart_key)
    if (memory := take("singleuser.memory.limit")) is not None:
        converted = memory_from_chart(memory)
        if converted is None:
            notes.append(f"singleuser.memory.limit {memory!r}: not a memory size this hub understands; not imported")
        else:
            out["limits.memory"] = converted
        guarantee = _get(values, "singleuser.memory.guarantee")
        if guarantee is not None and memory_from_chart(guarantee) == converted:
            take("singleuser.memory.guarantee")  # what export writes for small limits: nothing more to say
    if (cpu := take("singleuser.cpu.limit")) is not None:
        out["limits.cpu"] = float(cpu)
    if (url := take("singleuser.defaultUrl")) is not None:
        apps = {v: k for k, v in DEFAULT_URLS.items()}
        if url in apps:
            out["user_environment.default_app"] = apps[url]
        else:
            notes.append(f"singleuser.defaultUrl {url}: only /lab and /tree have an equivalent (user_environment.default_app)")
    image = _get(values, "singleuser.image.name")
    if image is not None:
        m = PLACEHOLDER.match(str(image))
        if m and m.group("name") == "default":
            take("singleuser.image")
        else:
            notes.append(f"singleuser.image {image}: this hub runs environments, not images: put the image's packages in an environment")
            take("singleuser.image")
    profiles = _get(values, "singleuser.profileList")
    if profiles:
        take("singleuser.profileList")
        if _has_key("profiles"):
            out["profiles"] = [_profile_back(p, i, notes, environments) for i, p in enumerate(profiles)]
        else:
            notes.append("singleuser.profileList: this version of the hub has no profiles; not imported")
    for key, chart in CULL_KEYS.items():
        if (v := take(f"cull.{chart}")) is not None:
            out[f"services.cull.{key}"] = v
    if _get(values, "cull.adminUsers") is False:
        take("cull.adminUsers")
        notes.append("cull.adminUsers false: this hub's culler always includes admins' servers")
    elif _get(values, "cull.adminUsers") is True:
        take("cull.adminUsers")
    https = _get(values, "proxy.https") or {}
    if "enabled" in https:
        out["https.enabled"] = bool(take("proxy.https.enabled"))
    kind = take("proxy.https.type")
    if kind == "letsencrypt":
        out["https.letsencrypt.domains"] = list(take("proxy.https.hosts") or [])
        if (email := take("proxy.https.letsencrypt.contactEmail")) is not None:
            out["https.letsencrypt.email"] = email
        server = take("proxy.https.letsencrypt.acmeServer")
        if server == LETSENCRYPT_STAGING:
            out["https.letsencrypt.staging"] = True
        elif server and server != LETSENCRYPT_PRODUCTION:
            out["https.acme.directory"] = server
    elif kind == "manual":
        pem = {"cert": take("proxy.https.manual.cert") or "", "key": take("proxy.https.manual.key") or ""}
    elif kind:
        notes.append(f"proxy.https.type {kind}: only letsencrypt and manual have an equivalent")
    for leaf in _leaves(values):
        if leaf and not any(leaf == u or leaf.startswith(u + ".") for u in used):
            notes.append(f"{leaf}: no equivalent on this hub; not imported")
    return out, pem, notes


def _has_key(key) -> bool:
    return key in schema.get_schema()["properties"]


def apply_assignments(doc, assignments: dict) -> None:
    """Set each dotted key in the round-trip config document (creating sections), keeping everything else."""
    for dotted, value in assignments.items():
        parts = dotted.split(".")
        node = doc
        for part in parts[:-1]:
            if not isinstance(node.get(part), dict):
                config_file.set_key(node, part, CommentedMap())
            node = node[part]
        config_file.set_key(node, parts[-1], value)


# --------------------------------------------------------------------------------------------
# Commands


def _lock_of(name):
    """(lock text, where to read it) of environment ``name`` on this server: its build's lock."""
    from tljh.environments import store

    build = store.current(name)
    if build is None:
        return None, "not built on this server"
    return build.lock(), f"sudo tljh env show {name}"


def _snippets():
    if not os.path.isdir(paths.JUPYTERHUB_CONFIG_D):
        return []
    return [os.path.join(paths.JUPYTERHUB_CONFIG_D, n) for n in sorted(os.listdir(paths.JUPYTERHUB_CONFIG_D)) if n.endswith(".py")]


def dump(values) -> str:
    import io

    from ruamel.yaml import YAML

    yaml = YAML()
    yaml.default_flow_style = False
    yaml.width = 4096
    buf = io.StringIO()
    yaml.dump(values, buf)
    return buf.getvalue()


def export_command(out=sys.stdout, err=sys.stderr) -> int:
    from tljh.install.backup import installed_plugins

    settings = effective_settings(config_file.load_raw(paths.CONFIG_FILE))
    if settings.errors:
        err.write(f"tljh export: config.yaml is not valid: {settings.errors[0]}\n")
        return 2

    def read_text(path):
        return files.read_bytes(path).decode()

    values, notes = export_values(
        settings.config, read_text=read_text, lock_of=_lock_of, snippets=_snippets(), plugins=list(installed_plugins())
    )
    out.write("# Zero to JupyterHub values exported by `tljh export z2jh` (see docs: moving to Zero to JupyterHub)\n")
    out.write(dump(values))
    for note in notes:
        err.write(f"not carried over: {note}\n")
    return 0


def import_command(path, *, dry_run=False, out=sys.stdout, err=sys.stderr) -> int:
    from ruamel.yaml import YAML, YAMLError

    try:
        with open(path) as f:
            values = YAML(typ="safe").load(f) or {}
    except (OSError, YAMLError) as e:
        err.write(f"tljh import: cannot read {path}: {e}; nothing was changed\n")
        return 2
    if not isinstance(values, dict):
        err.write(f"tljh import: {path} is not chart values (a YAML mapping); nothing was changed\n")
        return 2
    raw = config_file.load_raw(paths.CONFIG_FILE)
    environments = set(["default", *(raw.get("environments") or {})])
    assignments, pem, notes = import_values(values, raw, environments=environments)
    if pem:
        assignments["https.tls.cert"] = os.path.join(paths.IMPORTED_TLS_DIR, "imported.crt")
        assignments["https.tls.key"] = os.path.join(paths.IMPORTED_TLS_DIR, "imported.key")

    from tljh.hub import preflight

    new_text = {}

    def mutate(doc):
        apply_assignments(doc, assignments)
        plain = config_file.to_plain(doc)
        problems = schema.errors_only(schema.validate_config(plain))
        if problems:
            raise ConfigError(str(problems[0]))
        preflight.check(plain)
        new_text["doc"] = config_file.dump_document(doc)
        if dry_run:
            raise _DryRun()

    try:
        if pem and not dry_run:
            # Written first (nothing refers to them yet); config.yaml then names them in one atomic write.
            files.write_atomic(assignments["https.tls.cert"], pem["cert"], mode=0o644)
            files.write_atomic(assignments["https.tls.key"], pem["key"], mode=0o600)
        config_file.update_document(paths.CONFIG_FILE, mutate)
    except _DryRun:
        out.write(new_text["doc"])
    except ConfigError as e:
        err.write(f"tljh import: the result would not be a valid config.yaml: {e}; nothing was changed\n")
        return 2
    for note in notes:
        err.write(f"not imported: {note}\n")
    if not dry_run:
        out.write(f"config.yaml: {len(assignments)} setting(s) imported. Run `sudo tljh-config reload` and "
                  "`sudo tljh-config reload proxy` to apply.\n")
    return 0


class _DryRun(Exception):
    pass
