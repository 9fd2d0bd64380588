"""Sphinx extension: the reference pages are generated from the code at every build.

A page listed in ``GENERATED`` holds a marker line (a MyST comment)::

    % tljh-generated: configuration

When Sphinx reads that page, the marker is replaced by Markdown produced from the code:

- ``configuration``: ``config_reference.render_reference()`` (every config.yaml key, type, default, from
  ``tljh.settings.schema``);
- ``tljh-config``: the argparse parser of ``tljh-config`` (``tljh.cli.tljh_config.build_parser()``);
- ``install-flags``: bootstrap's ``USAGE`` text and the installer's argparse parser and steps;
- ``files``: ``tljh.system.paths``, the installer's sudoers text, the unit files themselves.

Nothing is copied by hand, so the reference cannot drift from the code. When the code the reference
needs is missing (a module, a function), the build stops with an error that says what is missing,
instead of producing an empty page. The generated pages are re-read on every build.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import re
import sys
from pathlib import Path

from sphinx.errors import ExtensionError

REPO_ROOT = Path(__file__).resolve().parents[2]
MARKER = re.compile(r"^% tljh-generated: ([a-z-]+)\s*$", re.MULTILINE)
DEFAULT_PREFIX = "/opt/tljh"

# Environment variables that change what the code reports; the docs describe an installed server with the
# product's defaults, never a test run's prefix or this machine's settings. Removed when Sphinx loads us.
MACHINE_ENV = ("TLJH_INSTALL_PREFIX", "TLJH_RELOAD_TIMEOUT")


def _fail(what, fix):
    raise ExtensionError(f"tljh reference: {what}. {fix}")


def _import(module_name, needed_for):
    try:
        return importlib.import_module(module_name)
    except Exception as e:  # noqa: BLE001 - any import failure must stop the build with its reason
        _fail(
            f"cannot import {module_name} ({type(e).__name__}: {e}), needed for {needed_for}",
            "Build the docs in an environment where the package is installed (pip install -e . -r docs/requirements.txt)",
        )


def _check_prefix():
    paths = _import("tljh.system.paths", "the files reference")
    if paths.INSTALL_PREFIX != DEFAULT_PREFIX:
        _fail(
            f"tljh.system.paths.INSTALL_PREFIX is {paths.INSTALL_PREFIX!r}, not {DEFAULT_PREFIX!r}",
            "Unset TLJH_INSTALL_PREFIX before importing tljh in the docs build",
        )
    return paths


# --------------------------------------------------------------------------------------------- markdown


def md_escape(text):
    """Escape text for a Markdown table cell or paragraph, keeping `code spans` as they are."""
    parts = re.split(r"(`[^`]*`)", " ".join(str(text).split()))
    out = []
    for part in parts:
        if part.startswith("`") and part.endswith("`") and len(part) > 1:
            out.append(part.replace("|", "\\|"))
        else:
            out.append(re.sub(r"([\\*_\[\]<>|{}$])", r"\\\1", part))
    return "".join(out)


def code(text):
    text = str(text)
    fence = "``" if "`" in text else "`"
    pad = " " if "`" in text else ""
    return f"{fence}{pad}{text}{pad}{fence}".replace("|", "\\|")


def escape_raw_html(markdown):
    """Generated text is Markdown without HTML: a `<group>` outside code must show, not vanish as a tag."""
    out = []
    in_fence = False
    for line in markdown.splitlines():
        if line.startswith(("```", "~~~")):
            in_fence = not in_fence
        elif not in_fence:
            parts = re.split(r"(`[^`]*`)", line)
            line = "".join(p if p.startswith("`") else re.sub(r"(?<!\\)<", r"\\<", p) for p in parts)
        out.append(line)
    return "\n".join(out)


def shift_headings(markdown, top_level):
    """Shift ATX headings (outside code fences) so the highest one is at ``top_level``."""
    lines = markdown.splitlines()
    in_fence = False
    levels = []
    for line in lines:
        if line.startswith(("```", "~~~")):
            in_fence = not in_fence
        elif not in_fence and re.match(r"^#{1,6} ", line):
            levels.append(len(line) - len(line.lstrip("#")))
    if not levels:
        return markdown
    delta = top_level - min(levels)
    out = []
    in_fence = False
    for line in lines:
        if line.startswith(("```", "~~~")):
            in_fence = not in_fence
        elif not in_fence and re.match(r"^#{1,6} ", line):
            level = len(line) - len(line.lstrip("#"))
            line = "#" * min(6, max(1, level + delta)) + line[level:]
        out.append(line)
    return "\n".join(out)


# --------------------------------------------------------------------------------------------- argparse


def _help_text(action, prog):
    if not action.help or action.help == argparse.SUPPRESS:
        return ""
    params = dict(vars(action), prog=prog)
    for name, value in list(params.items()):
        if hasattr(value, "__name__"):
            params[name] = value.__name__
    if params.get("choices") is not None:
        params["choices"] = ", ".join(str(c) for c in params["choices"])
    try:
        return action.help % params
    except (KeyError, TypeError, ValueError):
        return action.help


def _argument_name(action):
    if action.option_strings:
        names = ", ".join(action.option_strings)
        if action.nargs == 0:
            return names
        metavar = action.metavar or action.dest.upper()
        if isinstance(metavar, tuple):
            metavar = " ".join(metavar)
        return f"{names} {metavar}"
    metavar = action.metavar or action.dest
    if isinstance(metavar, tuple):
        metavar = " ".join(metavar)
    return metavar


def _default_text(action):
    if action.option_strings and action.nargs == 0:
        return ""
    if action.default in (None, argparse.SUPPRESS, [], ""):
        return ""
    return code(action.default)


def arguments_table(parser, prog):
    rows = []
    for action in parser._actions:
        if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
            continue
        if action.help == argparse.SUPPRESS:
            continue
        required = "yes" if (action.required or not action.option_strings) and action.nargs not in ("?", "*") else ""
        text = md_escape(_help_text(action, prog))
        if action.choices:
            text = (text + " " if text else "") + "One of: " + ", ".join(code(c) for c in action.choices) + "."
        rows.append(
            f"| {code(_argument_name(action))} | {text} | "
            f"{_default_text(action)} | {required} |"
        )
    if not rows:
        return ["Takes no arguments (other than `-h`, `--help`).", ""]
    return ["| Argument | What it does | Default | Required |", "|---|---|---|---|", *rows, ""]


def subcommands(parser):
    """[(name, help, subparser)] of the parser's sub-commands, in the parser's order."""
    result = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help for a in action._choices_actions}
            seen = set()
            for name, sub in action.choices.items():
                if id(sub) in seen:  # aliases
                    continue
                seen.add(id(sub))
                result.append((name, helps.get(name) or "", sub))
    return result


def _usage(parser):
    text = parser.format_usage().strip()
    return text[len("usage: "):] if text.startswith("usage: ") else text


# --------------------------------------------------------------------------------------------- pages


def render_configuration():
    renderer = _import("config_reference", "the configuration reference")
    text = renderer.render_reference()
    if not isinstance(text, str) or "|" not in text:
        _fail("config_reference.render_reference() returned no reference table", "It must return MyST Markdown")
    return escape_raw_html(shift_headings(text, 1))


def module_parser(module_name, names=("build_parser",)):
    """The argparse parser a command's module builds (its first function in ``names`` that exists)."""
    module = _import(module_name, f"the {module_name} command reference")
    for name in names:
        build = getattr(module, name, None)
        if callable(build):
            break
    else:
        _fail(
            f"{module_name} has no {names[0]}() function",
            f"The command reference needs `{module_name}.{names[0]}() -> argparse.ArgumentParser` "
            "(the parser main() uses, with one sub-parser per verb)",
        )
    parser = build()
    if not isinstance(parser, argparse.ArgumentParser):
        _fail(f"{module_name}.{name}() did not return an argparse.ArgumentParser", "Return the parser itself")
    return parser


# The commands' parsers: each module's build_parser() returns the parser its main() uses.
CLI_PARSERS = {
    "tljh-config": ("tljh.cli.tljh_config", ("build_parser",)),
    "tljh": ("tljh.cli.tljh", ("build_parser",)),
}


def cli_parser(prog="tljh-config"):
    module_name, names = CLI_PARSERS[prog]
    return module_parser(module_name, names)


def _norm(text):
    return " ".join(text.lower().rstrip(".").split())


def render_command(prog, intro):
    parser = cli_parser(prog)
    verbs = subcommands(parser)
    if not verbs:
        _fail(f"the {prog} parser has no sub-commands", "Each verb must be a sub-parser")
    lines = [f"# `{prog}` reference", "", intro, "", "```text", _usage(parser).replace(parser.prog, prog, 1), "```", ""]
    if parser.description:
        lines += [md_escape(parser.description), ""]
    if parser.epilog:
        lines += [md_escape(parser.epilog), ""]
    lines += ["## Options for every verb", "", *arguments_table(parser, prog)]
    lines += ["The command and every verb print their help with `-h` or `--help`.", ""]
    lines += ["## Verbs", "", "| Verb | What it does |", "|---|---|"]
    anchor = re.sub(r"[^a-z0-9]+", "-", prog)
    for name, help_text, _sub in verbs:
        lines.append(f"| [{code(name)}](#{anchor}-{name}) | {md_escape(help_text)} |")
    lines.append("")
    for name, help_text, sub in verbs:
        lines += [f"({anchor}-{name})=", f"### `{prog} {name}`", ""]
        if help_text:
            lines += [md_escape(help_text[:1].upper() + help_text[1:]) + ("" if help_text.endswith(".") else "."), ""]
        if sub.description and _norm(sub.description) not in _norm(help_text):
            lines += [md_escape(sub.description), ""]
        lines += ["```text", _usage(sub), "```", "", *arguments_table(sub, f"{prog} {name}")]
        if sub.epilog:
            lines += [md_escape(sub.epilog), ""]
        # A verb with verbs of its own (tljh users list|import): each one its own section below it.
        for inner, inner_help, inner_sub in subcommands(sub):
            lines += [f"({anchor}-{name}-{inner})=", f"#### `{prog} {name} {inner}`", ""]
            if inner_help:
                lines += [md_escape(inner_help[:1].upper() + inner_help[1:]) + ("" if inner_help.endswith(".") else "."), ""]
            if inner_sub.description and _norm(inner_sub.description) not in _norm(inner_help):
                lines += [md_escape(inner_sub.description), ""]
            lines += ["```text", _usage(inner_sub), "```", "", *arguments_table(inner_sub, f"{prog} {name} {inner}")]
    return "\n".join(lines)


def render_cli():
    return render_command(
        "tljh-config",
        "`tljh-config` edits `/opt/tljh/config/config.yaml` and applies it. Run it as root "
        "(`sudo tljh-config ...`). This page is generated from the command's own argument parser; "
        "the keys it accepts are in the [configuration reference](configuration.md).",
    )


def render_tljh_cli():
    return render_command(
        "tljh",
        "`tljh` acts on the installation as a whole (`tljh-config` changes its settings). Run it as root. "
        "This page is generated from the command's own argument parser.",
    )


def load_bootstrap():
    path = REPO_ROOT / "bootstrap" / "bootstrap.py"
    if not path.exists():
        _fail(f"{path} does not exist", "The bootstrap reference is generated from its USAGE text")
    spec = importlib.util.spec_from_file_location("tljh_docs_bootstrap", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not isinstance(getattr(module, "USAGE", None), str):
        _fail("bootstrap/bootstrap.py has no USAGE text", "The bootstrap reference is generated from it")
    return module


def bootstrap_options(usage):
    """[(flag text, description)] from the 'options:' section of bootstrap's USAGE."""
    options = []
    section = None
    for line in usage.splitlines():
        if re.match(r"^\S.*:$", line):
            section = line[:-1]
            continue
        if section not in ("options", "environment"):
            continue
        m = re.match(r"^  (\S.*?)(?:\s{2,}(\S.*))?$", line)
        if m and not line.startswith("    "):
            options.append([section, m.group(1), m.group(2) or ""])
        elif line.strip() and options:
            options[-1][2] = (options[-1][2] + " " + line.strip()).strip()
    return options


def installer_parser():
    """The installer's parser (tljh.install.installer.build_parser())."""
    installer = _import("tljh.install.installer", "the installer flags reference")
    if not callable(getattr(installer, "build_parser", None)):
        _fail("tljh.install.installer has no build_parser()", "The installer reference needs it")
    return installer.build_parser()


def render_install_flags():
    bootstrap = load_bootstrap()
    installer = _import("tljh.install.installer", "the installer reference")
    parser = installer_parser()
    options = bootstrap_options(bootstrap.USAGE)
    lines = [
        "# Bootstrap and installer flags",
        "",
        "Generated from `bootstrap/bootstrap.py` (its `USAGE` text) and from `tljh.install.installer` "
        "(its argument parser and its list of steps).",
        "",
        "## Bootstrap",
        "",
        "The command you run on the server:",
        "",
        "```text",
        bootstrap.USAGE.rstrip(),
        "```",
        "",
        "| Flag or variable | What it does |",
        "|---|---|",
    ]
    for _section, flag, text in options:
        lines.append(f"| {code(flag)} | {md_escape(text)} |")
    lines += [
        "",
        "Bootstrap handles `--version`, `--show-progress-page` and `--help` itself. Every other flag is "
        "passed unchanged to the installer, described next.",
        "",
        "Checks bootstrap makes before it changes anything, in this order (each one stops it with a one-line "
        "message on standard error and exit status 1; where TLJH's bootstrap refuses too, TLJH's own line "
        "comes first on standard output):",
        "",
        "- it runs as root;",
        f"- the operating system is {md_escape(bootstrap.SUPPORTED_TEXT)};",
        f"- the system `python3` is {'.'.join(map(str, bootstrap.MIN_PYTHON))} or newer;",
        "- the machine was booted with systemd;",
        f"- the machine has at least {bootstrap.MIN_MEMORY_MB} MB of memory;",
        f"- the disk holding `{DEFAULT_PREFIX}` has {bootstrap.MIN_FREE_DISK_GB:g} GB free "
        f"({bootstrap.MIN_FREE_DISK_UPGRADE_GB:g} GB for an upgrade);",
        "- when it would install from PyPI (piped from curl, or `--version`), that PyPI has the project "
        "(skipped when uv is configured with another index).",
        "",
        "What it installs as the installer: `TLJH_BOOTSTRAP_PIP_SPEC` when set; else with `--version`, that "
        "release from PyPI; else, when `bootstrap.py` is the `bootstrap/bootstrap.py` of a source tree of this "
        "project (its `pyproject.toml` names the project and its `tljh` package is there), that tree; else the "
        "latest release from PyPI. It prints which, and why.",
        "",
        "## Installer",
        "",
        f"Bootstrap runs `{DEFAULT_PREFIX}/hub/bin/python -m tljh.installer` with the remaining flags.",
        "",
        "```text",
        _usage(parser),
        "```",
        "",
        *arguments_table(parser, "tljh.install.installer"),
        "## Installer steps",
        "",
        "The installer runs these steps in this order, printing each with its duration. Every step "
        "checks what is already there and changes only what differs, so rerunning bootstrap upgrades "
        "in place and an interrupted install completes when you run it again.",
        "",
    ]
    steps = getattr(installer, "STEPS", None)
    if not steps:
        _fail("tljh.install.installer.STEPS is missing or empty", "The list of installer steps is generated from it")
    for index, (name, func) in enumerate(steps, 1):
        lines.append(f"{index}. {md_escape(name)} (`{func.__name__}`)")
    lines.append("")
    return "\n".join(lines)


# What each path is. Every constant of tljh.system.paths must be described here (and nothing else), so a
# new path cannot appear without documentation.
PATH_NOTES = {
    "INSTALL_PREFIX": ("directory", "0755", "Everything the installer manages lives under it."),
    "HUB_ENV_PREFIX": (
        "directory",
        "0755",
        "The hub environment (a Python venv): JupyterHub, the authenticators, Caddy, uv, the installer "
        "and `tljh-config`.",
    ),
    "USER_ENV_PREFIX": (
        "directory",
        "0755",
        "The environment named `default` (a Python venv, TLJH's user environment): JupyterLab, Notebook and "
        "the kernels users run. Its current build; no user can write it.",
    ),
    "ENVIRONMENTS_DIR": (
        "directory",
        "0755",
        "The other environments, one directory each (`<name>`, the current build), plus the two below.",
    ),
    "BUILDER_DIR": (
        "directory",
        "0755",
        "Owned by `tljh-builder`: builds in progress (`<name>`, never served) and the builds' uv cache.",
    ),
    "ENVIRONMENTS_UV_CACHE_DIR": (
        "directory",
        "0755",
        "The builds' own uv cache (hard-linked into builds; never shared with the hub environment's).",
    ),
    "RETIRED_DIR": (
        "directory",
        "0700",
        "Builds replaced or removed (`<name>.<build>`), kept while a running server has them; deleted after.",
    ),
    "ENVIRONMENT_STATE_DIR": ("directory", "0700", "Environments' state: why a build last failed (`<name>.failed`)."),
    "ENVIRONMENTS_LOCK": ("file", "0600", "Held during a build, a removal or a clean-up: one at a time."),
    "REPOSITORY_BUILDS_STATE_DIR": (
        "directory",
        "0700",
        "Users' builds from a repository (`repo-<hex>` in envs/): per build, its usage record (`<build>.json`: "
        "URL, commit, how often built, last use — also its mtime) and the hub's last build log (`<build>.log`).",
    ),
    "BOOTSTRAP_REQUIREMENTS_FILE": (
        "file",
        "0600",
        "The requirements file given to bootstrap with `--user-requirements-txt-url`, part of `default`'s spec.",
    ),
    "PLUGIN_CONDA_REQUIREMENTS_FILE": (
        "file",
        "0600",
        "The PyPI packages of plugins' conda requests (written by the installer), part of `default`'s spec.",
    ),
    "BUILDER_USER": ("user", "", "The system user that resolves and installs environments' packages (never root)."),
    "STATE_DIR": (
        "directory",
        "0700",
        "Private state: the hub database, cookie secret, FirstUse passwords, the proxy's generated config. "
        "The hub runs in this directory.",
    ),
    "CONFIG_DIR": ("directory", "0700", "Configuration, readable by root only."),
    "CONFIG_FILE": ("file", "0600", "The configuration `tljh-config` edits."),
    "JUPYTERHUB_CONFIG_D": (
        "directory",
        "0700",
        "Extra JupyterHub configuration: every `*.py` file here is loaded, in name order, after "
        "`config.yaml` and plugins.",
    ),
    "INSTALLER_LOG": ("file", "0600", "The installer's log (every step, every command's output)."),
    "CADDY_STATE_DIR": ("directory", "0700", "The proxy's generated config."),
    "LAST_GOOD_FILE": (
        "file",
        "0600",
        "The last configuration the hub started with; `tljh-config reload` restores it when a new one fails.",
    ),
    "HUB_DATABASE": ("file", "0600", "The hub database."),
    "HUB_DATABASE_BACKUP_DIR": (
        "directory",
        "0700",
        "Before an upgrade changes the hub database's schema, the installer saves the database here as "
        "`jupyterhub.sqlite.<date>-<time>` (mode `0600`) and prints the path; it keeps the newest "
        "`hub_database.keep_backups`.",
    ),
    "COOKIE_SECRET_FILE": ("file", "0600", "The hub's cookie secret."),
    "FIRSTUSE_PASSWORDS": ("file", "0600", "FirstUseAuthenticator's password hashes (bcrypt)."),
    "UNIX_ACCOUNTS_DB": (
        "file",
        "0600",
        "Which Unix account belongs to which hub user (one account per name; `sudo tljh unix-names` shows it), "
        "which accounts the hub closed, and which groups it manages and created (what `uninstall --purge` "
        "removes). `tljh backup` copies it and `tljh restore` puts it back.",
    ),
    "HUB_FINGERPRINT": (
        "file",
        "0600",
        "What the hub last started with (packages, this project's code, config, snippets). A rerun of the "
        "installer restarts the hub only when it differs. Deleting the `*.fingerprint` files makes the next "
        "rerun restart everything.",
    ),
    "HUB_DATABASE_FINGERPRINT": ("file", "0600", "The hub database's schema revision last checked."),
    "PROXY_CONFIG_FINGERPRINT": ("file", "0600", "The proxy configuration the proxy last loaded."),
    "PROXY_UNIT_FINGERPRINT": ("file", "0600", "The Caddy version and unit files the proxy last started with."),
    "PROXY_USER": ("user", "", "The system account the proxy runs as: no home, no login, no password; it "
                   "cannot read the configuration, the state or anyone's home."),
    "PROXY_GROUP": ("group", "", "The proxy's group: the only group that may read the route table and connect "
                    "to users' servers."),
    "PROXY_CONFIG_FILE": ("file", "0600", "The proxy's config, generated from `config.yaml` (a manual TLS "
                          "certificate and key are copied into it). Root-only: systemd hands it to the proxy "
                          "when it starts (`LoadCredential=`)."),
    "PROXY_STATE_DIRECTORY": ("name", "", "The proxy's `StateDirectory=` (under `/var/lib`)."),
    "PROXY_DATA_DIR": ("directory", "0700", "The proxy's own: certificates, ACME account keys and OCSP staples. "
                       "Owned by the proxy's account; `tljh uninstall` saves it with config and state."),
    "RUNTIME_DIR": ("directory", "0755", "Made at run time; a reboot empties it (and stops users' servers)."),
    "ROUTES_DIR": ("directory", "2750", "The route table: the hub writes one entry per route (owner root, group "
                   "of the proxy), the proxy looks each request up in it. Route changes never reload the proxy."),
    "SERVERS_DIR": ("directory", "0711", "Users' servers listen on unix sockets in `<unix name>/` here (owner "
                    "the user, group of the proxy, mode `2710`): only their owner and the proxy can connect."),
    "SERVER_LINKS_DIR": ("directory", "0750", "The hub's hard links to users' server sockets in `<unix name>/` "
                         "(owner root, group of the proxy), made once the hub has checked that the socket is "
                         "the account's own: the hub and the proxy connect to servers only through them."),
    "PROXY_ADMIN_SOCKET": ("socket", "0600", "The proxy's admin API, made by systemd (root only) and handed to "
                           "the proxy as a file descriptor: whoever can connect to it controls the proxy, and "
                           "the proxy's own account cannot."),
    "PROXY_ADMIN_LISTEN": ("address", "", "Where the proxy serves its admin API: the socket systemd hands it."),
    "OLD_ROUTER_UNIT": ("removed unit", "", "Earlier releases' second Caddy process; the installer removes it with "
                        "its state (`router.json`, `edge.json`, their autosaves) and moves certificates to "
                        "the proxy's directory."),
    "OLD_PROXY_DATA_DIR": ("directory", "", "Earlier releases' certificates; the installer moves them."),
    "HUB_HOST": ("address", "", "Where the hub listens; only the proxy connects to it."),
    "HUB_PORT": ("port", "", "The hub's port on `HUB_HOST`."),
    "PORT_RULES_TABLE": (
        "nftables table",
        "",
        "Written by the hub while users' servers run: a TCP or UDP port a user's server listens on answers only "
        "its owner and root (`network.allow_connections_between_users`; see the security page). `tljh uninstall` "
        "removes it.",
    ),
    "UNIT_DIR": ("directory", "", "Where the installer writes its systemd units (below)."),
    "HUB_UNIT": ("unit", "", "JupyterHub (as root: it creates Unix accounts and starts users' servers)."),
    "PROXY_UNIT": ("unit", "", "The proxy (Caddy, as `tljh-proxy`): public HTTP/HTTPS ports, TLS, and every "
                   "request straight to a user's server, a service or the hub."),
    "PROXY_ADMIN_UNIT": ("unit", "", "The proxy's admin socket (root only)."),
    "SUDOERS_FILE": ("file", "0440", "Passwordless sudo for the admins' group (below), checked with `visudo -c` "
                     "before it is put in place."),
    "COMMAND_DIR": ("directory", "", "Where the installer links the commands `tljh-config` and `tljh` (in the hub "
                    "environment)."),
    "CACHE_DIR": ("directory", "", "Caches; `tljh uninstall` removes it."),
    "UV_CACHE_DIR": (
        "directory",
        "0700",
        "uv's package cache: reinstalls and upgrades reuse downloaded packages. Root only (uv makes its lock "
        "files 0666).",
    ),
    "RATTLER_CACHE_DIR": ("directory", "0700", "py-rattler's repodata and package cache (root only)."),
    "CONDA_PREFIX": (
        "directory",
        "0755",
        "Conda packages plugins ask for that are not PyPI projects, installed with py-rattler; their programs "
        "are linked into the user environment's `bin/`. Only there while a plugin asks; writable by root only.",
    ),
    "CONDA_REQUESTS_STATE": (
        "file",
        "0600",
        "Which requested conda packages the last installer run could not install, and why (`tljh status`).",
    ),
    "PROFILE_SCRIPT": (
        "file",
        "0644",
        "Puts the server's PATH (its session packages' and environment's `bin/`) first again in login shells "
        "inside users' servers (JupyterLab terminals; Debian's `/etc/profile` resets PATH).",
    ),
    "BACKUP_LOCK": ("file", "", "Held while a backup or a restore runs: one at a time."),
    "LAST_BACKUP_FILE": ("file", "0600", "When the last backup ran, its file and size, or why it failed (`tljh status`)."),
    "DEFAULT_BACKUP_DIR": (
        "directory",
        "0700",
        "Scheduled backups (`backup.directory`'s default), and the copy of a server's state `tljh restore` saves "
        "before it replaces it (`before-restore-<time>.tar.gz`).",
    ),
    "RESTORE_STAGING_PREFIX": (
        "directory",
        "0700",
        "`tljh restore` unpacks and checks an archive in `restore-<random>` here before changing anything; "
        "removed when it ends.",
    ),
    "IMPORTED_TLS_DIR": (
        "directory",
        "0700",
        "`tljh import z2jh` writes a manual certificate and key from chart values here (`imported.crt`, "
        "`imported.key` 0600).",
    ),
    "BACKUP_UNIT": ("unit", "", "One scheduled backup: `tljh backup --scheduled` (does nothing unless `backup.daily`)."),
    "BACKUP_TIMER": ("unit", "", "Starts the backup unit every day at 03:00 (or at the next boot if the server was off)."),
    "IPYTHON_KERNEL_CONFIG": (
        "file",
        "0644",
        "IPython kernels of every environment read it: in users' servers it turns the kernel debugger off "
        "unless `network.allow_kernel_debugger` is set (its adapter listens on a TCP port that, where the port "
        "rules are not enforced, any local user can reach; see the security page). An admin's own file at this path is left alone, with a warning.",
    ),
    "JUPYTER_SERVER_CONFIG": (
        "file",
        "0644",
        "Jupyter servers of every environment read it: users' servers freeze their heap on the way out, which "
        "spares them Python's final garbage collection (about half a second of CPU per stop; see the "
        "performance page) unless `UserCreatingSpawner.exit_collection` is set. An admin's own file at this "
        "path is left alone, with a warning.",
    ),
    "UNINSTALL_BACKUP_DIR": (
        "directory",
        "",
        "`tljh uninstall` saves config and state here first, as `tljh-<time>.tar.gz` (mode `0600`).",
    ),
    "USER_SERVER_UNITS": (
        "unit pattern",
        "",
        "Each user's server, started by the hub as a transient unit (systemdspawner), named after the Unix "
        "account. It keeps running while the hub restarts; `tljh status` and `tljh loadtest` measure "
        "servers' memory and CPU by these units.",
    ),
    "TLJH_OLD_USER_ENV": (
        "directory",
        "as it was",
        "Only on a server migrated from TLJH: TLJH's conda user environment, moved aside and kept (its programs "
        "still run from its `bin/`) until `sudo tljh migrate --cleanup`.",
    ),
    "TLJH_MIGRATION_STATE": (
        "file",
        "0600",
        "Only on a server migrated from TLJH: what the migration carried over and what it could not "
        "(`tljh migrate`, `tljh status`).",
    ),
    "TRAEFIK_UNIT": (
        "TLJH's unit",
        "",
        "TLJH's proxy. On a migrated server it is stopped and disabled; its unit file, `traefik.toml`, `rules/`, "
        "`acme.json` and `traefik-api.secret` stay for reference.",
    ),
    "SESSIONS_DIR": (
        "directory",
        "0711",
        "Session packages: one directory per running user server (the user's, 0700), removed when the server "
        "stops and emptied at boot. See [packages for one session](../howto/session-packages.md).",
    ),
    "SESSIONS_TMPFILES": ("file", "0644", "systemd-tmpfiles rule that empties the session packages directory at boot."),
}

# Paths written as literals in the code: (shown as, strings the source must contain, source, kind, mode, what).
# The source is checked at every build, so the build fails when the code changes and this page does not.
LITERAL_PATHS = [
    ("/opt/tljh/hub.previous", ['".previous"'], "tljh/system/venvs.py", "directory", "",
     "Only while the hub environment, which no longer runs with the system's Python (after an OS upgrade), is "
     "rebuilt: the old one, which its packages are reinstalled from. Deleted when the rebuild is complete; a "
     "rerun of an interrupted rebuild resumes from it. (Environments are rebuilt into a copy instead.)"),
    ("/opt/tljh/hub.before-<date>-<time>, /opt/tljh/user.before-<date>-<time>, "
     "/opt/tljh/envs/<name>.before-<date>-<time>", ['.before-{stamp}'],
     "tljh/system/venvs.py", "directory", "",
     "Only after such a rebuild could not bring everything over (a package with no release for the new Python, "
     "one installed from a directory that is gone, a kernel whose program is missing): the old environment, "
     "kept; the installer's warning names what did not come. Delete it once you have reinstalled those."),
]


def _module_constants(module):
    return {
        name: value
        for name, value in vars(module).items()
        if name.isupper() and not name.startswith("_") and isinstance(value, (str, int)) and not isinstance(value, bool)
    }


def render_files():
    paths = _check_prefix()
    installer = _import("tljh.install.installer", "the files reference")
    users = _import("tljh.system.users", "the files reference")
    systemd = _import("tljh.system.systemd", "the files reference")

    constants = _module_constants(paths)
    undocumented = sorted(set(constants) - set(PATH_NOTES))
    stale = sorted(set(PATH_NOTES) - set(constants))
    if undocumented or stale:
        _fail(
            f"tljh.system.paths and docs/_ext/tljh_reference.py PATH_NOTES disagree "
            f"(undocumented: {undocumented}, no longer in tljh.system.paths: {stale})",
            "Describe every tljh.system.paths constant in PATH_NOTES",
        )
    lines = [
        "# Files, units and services",
        "",
        "What the installer creates on the server. Generated from `tljh.system.paths` (every path, unit and "
        "state file has its one definition there), the installer and the unit files it writes; modes are the "
        "ones the installer sets.",
        "",
        "## Paths",
        "",
        "| Path | Mode | What (and where the code names it) |",
        "|---|---|---|",
    ]

    def row(value, kind, mode, note, source):
        return f"| {code(value)} | {code(mode) if mode else ''} | {kind.capitalize()}. {note} ({code(source)}) |"

    for name, value in constants.items():
        kind, mode, note = PATH_NOTES[name]
        if kind not in ("unit", "unit pattern"):
            lines.append(row(value, kind, mode, note, f"tljh.system.paths.{name}"))
    for command in paths.COMMANDS:
        lines.append(row(f"{paths.COMMAND_DIR}/{command}", "symlink", "",
                         f"The `{command}` command (a link into the hub environment).", "tljh.system.paths.COMMANDS"))
    for shown, needles, source, kind, mode, note in LITERAL_PATHS:
        text = (REPO_ROOT / source).read_text()
        missing = [needle for needle in needles if needle not in text]
        if missing:
            _fail(f"{source} no longer contains {missing} (for {shown})",
                  "Update LITERAL_PATHS in docs/_ext/tljh_reference.py")
        lines.append(row(shown, kind, mode, note, source))
    lines += [
        "",
        "## Unix users and groups",
        "",
        "| Name | What |",
        "|---|---|",
        "| `jupyter-<name>` | The Unix account of hub user `<name>`, created when their server first starts, "
        "with a private home (mode `0700`). Names that would be too long for `useradd` are shortened and "
        "end with a short hash. |",
        f"| {code(users.USERS_GROUP)} | Every hub user's account is a member. |",
        f"| {code(users.ADMINS_GROUP)} | Hub admins' accounts; members get passwordless `sudo`. A user who "
        "stops being admin is taken out at their next server start. |",
        f"| {code(paths.PROXY_USER)} | The proxy's system account and group (no home, no login): may bind "
        "ports 80/443, read the route table and connect to users' servers; nothing else. |",
        "",
        f"The admin sudoers drop-in `{paths.SUDOERS_FILE}`:",
        "",
        "```text",
        installer.SUDOERS.rstrip(),
        "```",
        "",
        "## systemd units",
        "",
        f"Written to `{paths.UNIT_DIR}` and enabled at boot. Rerunning the installer rewrites them: put "
        "local changes in a drop-in (`systemctl edit <unit>`), which upgrades keep.",
        "",
        "| Unit | Runs |",
        "|---|---|",
    ]
    units = [name for name, (kind, _, _) in PATH_NOTES.items() if kind == "unit"]
    for const in units:
        lines.append(f"| {code(getattr(paths, const))} | {PATH_NOTES[const][2]} |")
    lines += [
        f"| {code(paths.USER_SERVER_UNITS)} | {PATH_NOTES['USER_SERVER_UNITS'][2]} |",
        "",
    ]
    for const in units:
        unit = getattr(paths, const)
        try:
            content = systemd.unit_content(
                unit, DEFAULT_PREFIX, f"{DEFAULT_PREFIX}/hub/lib/python3.X/site-packages/tljh/jupyterhub_config.py"
            )
        except FileNotFoundError:
            _fail(f"tljh/systemd-units/{unit} does not exist", f"The installer installs {unit}; add its unit file")
        lines += [f"### `{unit}`", "", "```ini", content.rstrip(), "```", ""]
    return "\n".join(lines)


def render_hooks():
    import inspect

    hooks = _import("tljh.hooks", "the plugin hooks reference")
    specs = [(name, func) for name, func in vars(hooks).items()
             if callable(func) and hasattr(func, "tljh_spec")]
    if not specs:
        _fail("tljh.hooks defines no hook specifications", "The plugin hooks reference is generated from them")
    lines = [
        "# Plugin hooks",
        "",
        "Generated from `tljh/hooks.py`. A plugin implements any of these functions, decorated with "
        "`@hookimpl` (`from tljh.hooks import hookimpl`), and registers its module under the `tljh` entry-point "
        "group. The names and arguments are the same as The Littlest JupyterHub's, so its plugins load "
        "unchanged.",
        "",
    ]
    for name, func in specs:
        doc = inspect.getdoc(func) or ""
        lines += [f"## `{name}{inspect.signature(func)}`", "", md_escape_paragraphs(doc), ""]
    return "\n".join(lines)


def md_escape_paragraphs(text):
    return "\n\n".join(md_escape(p) for p in text.split("\n\n"))


GENERATED = {
    "hooks": render_hooks,
    "configuration": render_configuration,
    "tljh-config": render_cli,
    "tljh": render_tljh_cli,
    "install-flags": render_install_flags,
    "files": render_files,
}


def render(name):
    """The Markdown for marker ``name`` (used by the build and by tests)."""
    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))
    return GENERATED[name]()


# --------------------------------------------------------------------------------------------- sphinx


def _source_read(app, docname, source):
    text = source[0]
    markers = MARKER.findall(text)
    if not markers:
        return
    for name in markers:
        if name not in GENERATED:
            raise ExtensionError(f"tljh reference: {docname} asks for unknown generated page {name!r}")
    app.env.tljh_generated = getattr(app.env, "tljh_generated", set()) | set(markers)
    source[0] = MARKER.sub(lambda m: render(m.group(1)), text)


def _always_reread(app, env, added, changed, removed):
    # Generated pages depend on code, not on their source file: read them again on every build.
    found = []
    for docname in env.found_docs:
        path = env.doc2path(docname)
        try:
            if MARKER.search(Path(path).read_text()):
                found.append(docname)
        except OSError:
            continue
    return found


def _check_all_used(app, env):
    used = getattr(env, "tljh_generated", set())
    missing = sorted(set(GENERATED) - used)
    if missing:
        raise ExtensionError(f"tljh reference: no page holds the marker for {missing} ('% tljh-generated: NAME')")


def _merge(app, env, docnames, other):
    env.tljh_generated = getattr(env, "tljh_generated", set()) | getattr(other, "tljh_generated", set())


def setup(app):
    for name in MACHINE_ENV:
        os.environ.pop(name, None)
    sys.path.insert(0, str(REPO_ROOT))
    app.connect("source-read", _source_read)
    app.connect("env-merge-info", _merge)
    app.connect("env-get-outdated", _always_reread)
    app.connect("env-check-consistency", _check_all_used)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True, "env_version": 1}
