"""The ``builds`` section of config.yaml: what users may build themselves, and (for every build) its limits.

Pure (no I/O). The schema includes :func:`schema_section`; the profiles use :func:`user_repository_problem` to
check a repository URL a user typed, and :func:`repository_profile` is the picker's "build from a repository"
profile that the effective config adds when ``builds.allowed_hosts`` names a host.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from .environments import REF_PATTERN

# What a user may type: a URL the builder can fetch without credentials (ssh:// needs keys, file:// and paths
# read this server's disk). No user:password@ part: it would end up in logs and build records.
_USER_URL = re.compile(r"^(https?|git)://[^\s/@?#]+(?:/[^\s?#]*)?$", re.IGNORECASE)
_HOST = r"^(?=.{1,253}(:\d{1,5})?$)[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*(:\d{1,5})?$"
# environments.<name>.ref's rule (REF_PATTERN) in a form browsers accept as an HTML pattern too (see url_regex).
BROWSER_REF_PATTERN = r"[A-Za-z0-9_][A-Za-z0-9._\/\-]*"
# The slug of the profile added for users' builds (a profile of the admin's with this slug wins).
REPOSITORY_PROFILE = "build-from-a-repository"
# The override keys a "build from a repository" choice sets (tljh.settings.profiles.override_schemas).
REPOSITORY_KEYS = ("repository", "repository_ref")


def schema_section() -> dict:
    """JSON Schema of ``builds`` (included by tljh/settings/schema.py)."""
    return {
        "type": "object",
        "additionalProperties": False,
        "x-tljh-reload": "hub",
        "description": (
            "Environments users build themselves from a repository, in the profile picker; and what every "
            "environment build may use (`tljh env build`, the installer, users' builds)."
        ),
        "properties": {
            "allowed_hosts": {
                "type": "array",
                "items": {"type": "string", "pattern": _HOST, "x-tljh-expect": "a host name, optionally with :port"},
                "default": [],
                "description": (
                    "Hosts users may build an environment from (`github.com`, `gitlab.example.org:8443`): the "
                    "picker then offers \"Other: build from a repository\", where a user types the URL of a "
                    "public git repository on one of these hosts (https://, http:// or git://) and starts a "
                    "server in the environment it describes. Each commit is built once and shared by everyone "
                    "who asks for it. Empty: only admins build (environments.<name>.repository)."
                ),
            },
            "allow_unsupported": {
                "type": "boolean",
                "default": False,
                "description": (
                    "A user's repository that asks for what cannot be built here (a Dockerfile, apt.txt, Julia, "
                    "...): true builds the rest and lists what was left out in the build log; false refuses "
                    "it with that list. OS packages (apt.txt) are never installed for users' builds."
                ),
            },
            "memory_limit": {
                "x-tljh-reload": "none",  # read by each build
                "type": ["string", "number", "null"],
                "default": "4G",
                "x-tljh-memory": True,
                "description": (
                    "Memory each command of a build (git, uv, a repository's postBuild) may use, without swap; "
                    "past it the build fails with \"ran out of memory\" and the last good build keeps serving. "
                    "Same units as limits.memory (4G, 512M; a bare number is megabytes). none = no limit."
                ),
            },
            "time_limit": {
                "x-tljh-reload": "none",  # read by each build
                "type": ["integer", "null"],
                "minimum": 1,
                "default": 3600,
                "x-tljh-duration": True,
                "description": (
                    "Seconds a whole build may take, from fetching the repository to its postBuild (also 30m, "
                    "2h); past it the build is stopped, fails with \"timed out\" and the last good build keeps "
                    "serving. OS packages (apt) installed as root are not stopped. none = no limit."
                ),
            },
            "disk_budget": {
                "x-tljh-reload": "none",  # read by each build
                "type": ["string", "number", "null"],
                "default": "10G",
                "x-tljh-memory": True,
                "description": (
                    "Disk space for everything under /opt/tljh/envs (builds and their package cache). After "
                    "each build, builds nobody uses — not the current build of an environment in config.yaml, "
                    "not used by a running server — are removed while the total is above it, least recently "
                    "used first: users' builds from a repository, builds of environments taken out of "
                    "config.yaml. Same units as limits.memory. none = keep every build."
                ),
            },
        },
    }


def normalize_url(url: str) -> str:
    """The URL as a build is keyed on: trimmed, scheme and host lower-case, no trailing slash."""
    url = url.strip()
    parts = urlsplit(url)
    if not parts.scheme or not parts.netloc:
        return url
    return f"{parts.scheme.lower()}://{parts.netloc.lower()}{parts.path.rstrip('/')}"


def host_of(url: str) -> str:
    """``host`` or ``host:port`` (lower-case) of a URL."""
    return urlsplit(url.strip()).netloc.lower()


def user_repository_problem(url, allowed_hosts) -> str | None:
    """Why a user may not build from ``url``, or None. ``allowed_hosts``: builds.allowed_hosts."""
    if not isinstance(url, str) or not _USER_URL.match(url.strip()):
        return (f"expected the URL of a public git repository (https://, http:// or git://, without a login), "
                f"got {url!r}")
    host = host_of(url)
    allowed = {h.lower() for h in allowed_hosts or ()}
    if not allowed:
        return "users cannot build from repositories on this hub (an admin enables it with builds.allowed_hosts)"
    if host not in allowed and host.split(":")[0] not in allowed:
        return f"{host} is not a host you may build from; allowed: {', '.join(sorted(allowed))}"
    return None


def ref_problem(ref) -> str | None:
    if ref in (None, ""):
        return None
    if not isinstance(ref, str) or not re.match(REF_PATTERN, ref):
        return f"expected a branch, a tag or a commit id, got {ref!r}"
    return None


def url_regex(allowed_hosts) -> str:
    """The picker's validation regex for the URL field: the browser refuses other hosts before the hub does."""
    # Written for both Python's re and the browser's (an HTML pattern is compiled with the v flag, where a '-'
    # or '/' in a class, or an escaped '-' outside one, is a syntax error and the pattern is ignored).
    hosts = "|".join(h.lower().replace(".", r"\.") + ("" if ":" in h else r"(?::\d+)?") for h in sorted(allowed_hosts))
    return rf"(?:https?|git)://(?:{hosts})(?:/[^\s?#]*)?"


def repository_profile(allowed_hosts) -> dict:
    """The picker's "build from a repository" profile (KubeSpawner's format, unlisted choices only)."""
    hosts = ", ".join(sorted(allowed_hosts))
    return {
        "display_name": "Build from a repository",
        "slug": REPOSITORY_PROFILE,
        "default": False,
        "description": (
            f"An environment built from a public git repository on {hosts} that describes it the way "
            "mybinder.org reads it (requirements.txt, environment.yml, postBuild, ...). The first start of a "
            "commit builds it (the log shows here); later starts of that commit, by anyone, start at once."
        ),
        "profile_options": {
            "repository": {
                "display_name": "Repository",
                "unlisted_choice": {
                    "enabled": True,
                    "display_name": "Repository URL, e.g. https://" + sorted(allowed_hosts)[0].split(":")[0] + "/owner/project",
                    "display_name_in_choices": "Other: build from a repository",
                    "validation_regex": url_regex(allowed_hosts),
                    "validation_message": f"the URL of a git repository on {hosts}",
                    "spawner_override": {"repository": "{value}"},
                },
            },
            "ref": {
                "display_name": "Branch, tag or commit",
                "choices": {"default": {"display_name": "The repository's default branch", "default": True}},
                "unlisted_choice": {
                    "enabled": True,
                    "display_name": "A branch, tag or commit id",
                    "display_name_in_choices": "Another branch, tag or commit",
                    "validation_regex": BROWSER_REF_PATTERN,
                    "validation_message": "a branch, a tag or a commit id",
                    "spawner_override": {"repository_ref": "{value}"},
                },
            },
        },
    }


def offers_repositories(profiles) -> bool:
    """Whether a configured profile already lets users type a repository (then none is added)."""
    def mentions(node) -> bool:
        if isinstance(node, dict):
            return any(k in REPOSITORY_KEYS or mentions(v) for k, v in node.items())
        if isinstance(node, list):
            return any(mentions(v) for v in node)
        return False

    return mentions(profiles)
