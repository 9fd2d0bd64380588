"""The ``environments`` section of config.yaml: its schema, the environments' names and their rules.

Pure (no I/O): the schema includes :func:`schema_section`, the profiles validate ``user_environment`` with
:func:`environment_names`. What is built from these entries is tljh.environments'.
"""

from __future__ import annotations

import re

DEFAULT = "default"
NAME_PATTERN = r"^[a-z][a-z0-9_-]{0,31}$"
# An environment's name is also the name of the kernel it offers in every server: these are taken.
RESERVED_NAMES = ("python", "python3", "ir")
_APT_NAME = r"^[a-z0-9][a-z0-9+.-]+$"
_REPOSITORY = r"^(https?://|git://|ssh://|file:///|/)[^\s]+$"
_REF = r"^[A-Za-z0-9_][A-Za-z0-9._/-]*$"
# The forms of environments.<name>.repository and .ref (the profiles' repository overrides use them too).
REPOSITORY_PATTERN, REF_PATTERN = _REPOSITORY, _REF
FROM_REPOSITORY = "an environment with a repository takes {key} from the repository's {file}: remove {key}"


def environment_names(config: dict) -> list[str]:
    """``default`` (always: it is /opt/tljh/user), then the other declared environments, sorted."""
    declared = config.get("environments") if isinstance(config, dict) else None
    # Called by the schema's checks before the schema has been satisfied: anything but a mapping names nothing.
    others = sorted(n for n in declared if n != DEFAULT) if isinstance(declared, dict) else []
    return [DEFAULT, *others]


def offered_kernels(config: dict) -> list[str]:
    """The environments every server offers as kernels: with more than one environment, each whose
    ``offer_kernel`` is not false (a hub with only ``default`` looks exactly like TLJH)."""
    names = environment_names(config)
    if len(names) < 2:
        return []
    declared = (config or {}).get("environments") or {}
    return [n for n in names if (declared.get(n) or {}).get("offer_kernel", True) is not False]


def requirement_problem(text) -> str | None:
    """Why ``text`` is not a pip requirement string (``pandas>=2``, ``name @ url``, a path), or None."""
    if not isinstance(text, str):
        return None  # the schema's type check says it
    if text.startswith(("/", "./", "git+", "https://", "http://", "file:")):
        return None
    from packaging.requirements import InvalidRequirement, Requirement

    try:
        Requirement(text)
    except InvalidRequirement as e:
        return f"{text!r} is not a pip requirement ({e})"
    return None


def schema_section() -> dict:
    """JSON Schema of ``environments`` (included by tljh/settings/schema.py)."""
    entry = {
        "type": "object",
        "additionalProperties": False,
        "description": "One environment; `default` is /opt/tljh/user.",
        "properties": {
            "description": {
                "type": "string",
                "default": "",
                "description": "What the environment is for, shown by `tljh env list` (and profiles may show it).",
            },
            "packages": {
                "type": "array",
                "items": {"type": "string", "minLength": 1, "x-tljh-requirement": True},
                "default": [],
                "description": (
                    "Python packages as pip requirement strings (`pandas`, `numpy>=2`). They are resolved "
                    "before config.yaml is written: a name that does not exist is refused."
                ),
            },
            "requirements": {
                "type": ["string", "null"],
                "pattern": "^/",
                "x-tljh-expect": "an absolute path to a requirements file",
                "default": None,
                "description": "A requirements.txt (absolute path; `-r` includes are followed), read at every build.",
            },
            "apt": {
                "type": "array",
                "items": {"type": "string", "pattern": _APT_NAME, "x-tljh-expect": "a Debian package name"},
                "default": [],
                "description": "OS packages installed with apt for this environment (machine-wide; never removed).",
            },
            "python": {
                "type": ["string", "null"],
                "pattern": r"^3\.[0-9]+$",
                "x-tljh-expect": "a Python version such as 3.12",
                "default": None,
                "description": (
                    "Python version: one the system has or its package archive provides (`python3.X`). "
                    "none = the system's python3."
                ),
            },
            "r": {
                "type": "boolean",
                "default": False,
                "description": "Add R and its Jupyter kernel from the OS archive (r-base, r-cran-irkernel).",
            },
            "repository": {
                "type": ["string", "null"],
                "pattern": _REPOSITORY,
                "x-tljh-expect": (
                    "a git URL (https://, http://, git://, ssh://, file://) or an absolute path (a git repository "
                    "or a .tar[.gz|.bz2|.xz] / .zip archive)"
                ),
                "default": None,
                "description": (
                    "Build this environment from a git repository (or an archive of one's files on this server), "
                    "the way mybinder.org reads it: `binder/` or "
                    "`.binder/` before the root; requirements.txt, runtime.txt (python-3.X), environment.yml (its pip "
                    "section and conda packages that are exactly a PyPI project), the root's setup.py/pyproject.toml "
                    "(the repository's own package), apt.txt (names in `allow_apt`), postBuild (run without root) "
                    "and start (runs every server of the environment). Anything else it asks for is named and fails the build unless `allow_unsupported` "
                    "is true. Fetched again at every `tljh env build`; a new commit (an archive's new content) "
                    "is a new build."
                ),
            },
            "ref": {
                "type": ["string", "null"],
                "pattern": _REF,
                "x-tljh-expect": "a branch, a tag or a full commit id",
                "default": None,
                "description": "Branch, tag or full commit of `repository` to build; none = the repository's HEAD.",
            },
            "allow_unsupported": {
                "type": "boolean",
                "default": False,
                "description": (
                    "Build a `repository` that also asks for what is not supported here (a Dockerfile, conda "
                    "packages with no PyPI equivalent, Julia, ...) from what is; the rest is listed by the build and `tljh env show`."
                ),
            },
            "allow_apt": {
                "type": "array",
                "items": {"type": "string", "pattern": _APT_NAME, "x-tljh-expect": "a Debian package name"},
                "default": [],
                "description": (
                    "The `apt.txt` lines of `repository` that may be installed (OS packages are machine-wide and "
                    "installed as root, so the admin names them); others are not supported."
                ),
            },
            "offer_kernel": {
                "type": "boolean",
                "default": True,
                "description": "Offer this environment as a kernel in every server (when there are two or more).",
            },
        },
    }
    # What a repository provides cannot also come from config.yaml.
    entry["if"] = {"required": ["repository"], "properties": {"repository": {"type": "string"}}}
    entry["then"] = {
        "properties": {
            key: {"type": "null", "x-tljh-message": FROM_REPOSITORY.format(key=key, file=file)}
            for key, file in (("requirements", "requirements.txt or environment.yml"), ("python", "runtime.txt or environment.yml"))
        }
    }
    return {
        "type": "object",
        "default": {},
        "x-tljh-placeholder": "<name>",
        "propertyNames": {
            "pattern": NAME_PATTERN,
            "not": {"enum": list(RESERVED_NAMES)},
            "x-tljh-expect": (
                "an environment name (a lowercase letter, then lowercase letters, digits, - or _; "
                f"not {', '.join(RESERVED_NAMES)})"
            ),
        },
        "additionalProperties": entry,
        "description": (
            "Python environments users' servers run from, built with `sudo tljh env build`; "
            "`environments.default` adds to /opt/tljh/user."
        ),
    }


def name_problem(name: str) -> str | None:
    """Why ``name`` cannot name an environment, or None."""
    if not isinstance(name, str) or not re.match(NAME_PATTERN, name):
        return (
            f"environment name {name!r} must start with a lowercase letter and hold only lowercase letters, "
            "digits, - and _ (at most 32)"
        )
    if name in RESERVED_NAMES:
        return f"environment name {name!r} is taken by a kernel of that name; choose another"
    return None
