"""`tljh-config`: change config.yaml safely and apply it.

    sudo tljh-config show [KEY] [--effective] [--show-secrets]
    sudo tljh-config set KEY VALUE
    sudo tljh-config unset KEY
    sudo tljh-config add-item KEY VALUE
    sudo tljh-config remove-item KEY VALUE
    sudo tljh-config reload [hub|proxy] [--timeout SECONDS]

Exit codes: 0 done; 1 a reload failed (the last good configuration is back and serving);
2 refused (nothing changed: unknown key, wrong type, missing value, malformed file, not root);
3 a reload failed and the hub could not be brought back;
4 config.yaml could not be written (disk full, read-only file system): it is unchanged.

Environment: TLJH_RELOAD_TIMEOUT (seconds `reload` waits for the hub or the proxy's certificates, default 60);
TLJH_CONFIG_SKIP_ROOT_CHECK=1 (tests only: skip the root check). Without root, tljh-config still edits a
file given with --config-path that is not the system config.yaml (reload always needs root).

What the verbs do to the file is tljh.settings.editing; applying it is tljh.settings.reload; this module is
the command line (TLJH's public names live in tljh.config).
"""

from __future__ import annotations

import argparse
import io
import os
import sys

from tljh.settings import reload, schema
from tljh.settings.config_file import ConfigFileError, dump_document, load_document, to_plain
from tljh.settings.editing import (  # noqa: F401 - TLJH's public names, re-exported by tljh.config
    add_config_value,
    key_info,
    remove_config_value,
    set_config_value,
    unset_config_value,
    value_at,
)
from tljh.settings.errors import ConfigError, warn
from tljh.settings.reload import ReloadError
from tljh.settings.values import memory_to_bytes
from tljh.system.paths import CONFIG_FILE, HUB_ENV_PREFIX

EXIT_OK = 0
EXIT_RELOAD_FAILED = reload.RELOAD_FAILED
EXIT_REFUSED = 2
EXIT_HUB_DOWN = reload.HUB_DOWN
EXIT_WRITE_FAILED = 4

# Below this, users' servers risk being killed before they answer (measured: ~135 MB after start).
MIN_SENSIBLE_MEMORY = 256 * 2**20


def _say(*lines, file=None):
    for line in lines:
        print(line, file=file or sys.stdout)


# --------------------------------------------------------------------------------------------
# Showing


def _mask_in_place(node, name=""):
    if isinstance(node, dict):
        for k in list(node):
            v = node[k]
            if isinstance(v, (dict, list)):
                _mask_in_place(v, str(k))
            elif isinstance(v, str) and v and schema.is_secret_name(str(k)):
                node[k] = schema.MASK
    elif isinstance(node, list):
        for v in node:
            _mask_in_place(v, name)


def _dump_plain(value, top_level_list=False) -> str:
    from ruamel.yaml import YAML

    yaml = YAML(typ="rt")
    if top_level_list:
        yaml.indent(mapping=2, sequence=2, offset=0)
    else:
        yaml.indent(mapping=2, sequence=4, offset=2)
    buf = io.StringIO()
    yaml.dump(value, buf)
    return buf.getvalue()


def show_config(config_path=CONFIG_FILE, key=None, effective=False, show_secrets=False, out=None):
    """Print config.yaml (or the effective configuration) with secrets masked unless asked."""
    out = out or sys.stdout
    try:
        doc = load_document(config_path)
    except ConfigFileError as e:
        raise ConfigError(str(e)) from None
    if effective:
        for p in schema.errors_only(schema.validate_config(to_plain(doc))):
            warn(f"{p} (shown as written; the hub would refuse it)")
        doc = schema.effective_config(to_plain(doc))
    if not show_secrets:
        if effective:
            doc = schema.mask_secrets(doc)
        else:
            _mask_in_place(doc)
    if key:
        found, value = value_at(doc, key.split("."))
        if not found:
            key_info(doc, key)
            eff = schema.effective_config(to_plain(load_document(config_path)))
            found, value = value_at(eff, key.split("."))
            if not show_secrets:
                value = schema.mask_secrets({key.split(".")[-1]: value})[key.split(".")[-1]]
            out.write(f"# {key} is not set in {config_path}; default:\n")
        if isinstance(value, (dict, list)):
            out.write(_dump_plain(to_plain(value), top_level_list=isinstance(value, list)))
        else:
            out.write(f"{'none' if value is None else value}\n")
        return
    if not doc and not effective:
        out.write(f"# {config_path} is empty: every key has its default (tljh-config show --effective)\n")
        return
    out.write(_dump_plain(doc) if effective else dump_document(doc))


# --------------------------------------------------------------------------------------------
# Reloading


def _edge():
    """The edge proxy reload_proxy applies the configuration to (imported only for `reload proxy`)."""
    from tljh.proxy import edge

    return edge


def _hub_preflight(raw_config):
    from tljh.hub import preflight

    preflight.check(raw_config)


def reload_component(component, config_path=CONFIG_FILE, timeout=reload.DEFAULT_TIMEOUT):
    """TLJH's name: reload 'hub' or 'proxy'. Returns a message; raises ConfigError (refused) or ReloadError."""
    if component == "proxy":
        return reload.reload_proxy(config_path, timeout, edge=_edge(), warn=warn)
    return reload.reload_hub(config_path, timeout, preflight=_hub_preflight)


# --------------------------------------------------------------------------------------------
# Command line


class _Parser(argparse.ArgumentParser):
    """argparse, but every usage error is one line and exit code 2."""

    def error(self, message):
        usage = " ".join(self.format_usage().split()).replace("usage: ", "")
        self.exit(EXIT_REFUSED, f"error: {message} (usage: {usage})\n")


def build_parser() -> argparse.ArgumentParser:
    """The tljh-config argument parser (the docs reference is generated from it)."""
    p = _Parser(
        prog="tljh-config",
        description="Show and change the hub's configuration (config.yaml), then apply it with reload.",
        epilog="Exit codes: 0 done, 1 reload failed (last good configuration restored), "
        "2 refused (nothing changed), 3 reload failed and the hub is down, 4 could not write (file unchanged).",
    )
    p.add_argument("--config-path", default=CONFIG_FILE, help=f"config file to use (default {CONFIG_FILE})")
    sub = p.add_subparsers(dest="action", metavar="COMMAND", parser_class=_Parser)

    s = sub.add_parser("show", help="print config.yaml (secrets masked)", description="Print config.yaml.")
    s.add_argument("key", nargs="?", help="only this key or section, e.g. users or limits.memory")
    s.add_argument("--effective", action="store_true", help="the configuration with every default filled in")
    s.add_argument("--show-secrets", action="store_true", help="print passwords, client secrets and tokens")

    s = sub.add_parser(
        "set",
        help="set a key",
        description="Set KEY to VALUE. Values as you mean them: 4G or 4096 (megabytes) for memory, 1.5 CPUs, "
        "true/false/yes/no, lists as a,b or [a, b], none to clear.",
    )
    s.add_argument("key", metavar="KEY", help="dotted key, e.g. limits.memory or auth.GitHubOAuthenticator.client_id")
    s.add_argument("value", metavar="VALUE")

    s = sub.add_parser("unset", help="remove a key (its default applies)", description="Remove KEY from config.yaml.")
    s.add_argument("key", metavar="KEY")

    s = sub.add_parser("add-item", help="add a value to a list", description="Add VALUE to the list at KEY.")
    s.add_argument("key", metavar="KEY", help="e.g. users.admin or users.extra_user_groups.GROUP")
    s.add_argument("value", metavar="VALUE")

    s = sub.add_parser(
        "remove-item", help="remove a value from a list", description="Remove VALUE from the list at KEY."
    )
    s.add_argument("key", metavar="KEY")
    s.add_argument("value", metavar="VALUE")

    s = sub.add_parser(
        "reload",
        help="apply the configuration",
        description="Validate config.yaml, then restart the hub (default) or reload the proxy. "
        "If the hub does not come back, the last good configuration is restored.",
    )
    s.add_argument("component", nargs="?", default="hub", choices=("hub", "proxy"))
    s.add_argument(
        "--timeout",
        type=float,
        default=float(os.environ.get("TLJH_RELOAD_TIMEOUT", reload.DEFAULT_TIMEOUT)),
        help="seconds to wait for the hub to answer, or for the proxy's HTTPS certificates (default %(default)g)",
    )
    return p


def _needs_root(args) -> bool:
    if os.environ.get("TLJH_CONFIG_SKIP_ROOT_CHECK") == "1":
        return False
    if args.action == "reload":
        return True
    return os.path.realpath(args.config_path) == os.path.realpath(CONFIG_FILE)


def _apply_hint(key):
    """How the change to ``key`` takes effect, as a sentence."""
    try:
        info = schema.lookup_key(key)
    except ConfigError:
        info = None
    if info is not None and info.reload == "none":
        return "It takes effect the next time it is read; no reload needed."
    if info is not None and info.reload == "installer":
        command = f"sudo {HUB_ENV_PREFIX}/bin/python -m tljh.installer"
    elif info is not None and info.reload == "proxy":
        command = "sudo tljh-config reload proxy"
    else:
        command = "sudo tljh-config reload"
    return f"Run `{command}` to apply."


def _system_check(key):
    """The check an edit of ``key`` needs beyond the schema, or None: environments must be buildable (their
    Python available, OS packages known, packages resolving), so a value that is not is refused unwritten;
    users' builds need git on the server."""
    if key in ("builds", "builds.allowed_hosts"):
        from tljh.environments.user_builds import prepare

        return lambda before, after: prepare(after)
    if key != "environments" and not key.startswith("environments."):
        return None
    from tljh.environments.checks import check_change
    from tljh.plugins import get_plugin_manager

    return lambda before, after: check_change(before, after, get_plugin_manager())


def _import_jsonschema_quickly():
    """Import jsonschema without its optional rfc3987_syntax ("iri" formats, which we never use).

    rfc3987_syntax builds a grammar at import: ~1.5 s of every tljh-config run. Only the CLI does this;
    the hub process imports jsonschema normally.
    """
    if "jsonschema" in sys.modules or "rfc3987_syntax" in sys.modules:
        return
    sys.modules["rfc3987_syntax"] = None  # makes its import fail; jsonschema skips those formats
    try:
        import jsonschema  # noqa: F401
    finally:
        del sys.modules["rfc3987_syntax"]


def main(argv=None) -> int:
    _import_jsonschema_quickly()
    parser = build_parser()
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if not args.action:
        parser.print_help()
        return EXIT_REFUSED
    if os.geteuid() != 0 and _needs_root(args):
        print(f"error: tljh-config needs root: run `sudo tljh-config {args.action} ...`", file=sys.stderr)
        return EXIT_REFUSED
    path = args.config_path
    try:
        if args.action == "show":
            show_config(path, args.key, args.effective, args.show_secrets)
        elif args.action == "set":
            value = set_config_value(path, args.key, args.value, check=_system_check(args.key))
            _say(schema.describe_value(args.key, value), f"{_apply_hint(args.key)}")
            if args.key == "limits.memory" and value and memory_to_bytes(value) < MIN_SENSIBLE_MEMORY:
                warn(
                    f"a JupyterLab server needs about 150 MB before it runs any code: with {value}, "
                    "servers may be stopped as they start. 512M or more is a sensible minimum."
                )
        elif args.action == "unset":
            if unset_config_value(path, args.key, check=_system_check(args.key)):
                _say(f"{args.key} removed; its default applies. {_apply_hint(args.key)}")
            else:
                _say(f"{args.key} was not set; nothing changed.")
        elif args.action == "add-item":
            if add_config_value(path, args.key, args.value, check=_system_check(args.key)):
                _say(f"added {args.value} to {args.key}. {_apply_hint(args.key)}")
            else:
                _say(f"{args.value} is already in {args.key}; nothing changed.")
        elif args.action == "remove-item":
            remove_config_value(path, args.key, args.value, check=_system_check(args.key))
            _say(f"removed {args.value} from {args.key}. {_apply_hint(args.key)}")
        elif args.action == "reload":
            if args.component == "hub":
                _say(f"validating {path} and restarting the hub (waiting up to {args.timeout:g} s)...")
            _say(reload_component(args.component, path, args.timeout))
    except (ConfigError, ConfigFileError) as e:
        print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
        return EXIT_REFUSED
    except ReloadError as e:
        print(f"error: {e}", file=sys.stderr)
        if e.details:
            print("journalctl -u jupyterhub says:", file=sys.stderr)
            for line in e.details:
                print(line, file=sys.stderr)
        return e.code
    except PermissionError as e:
        print(f"error: {e.strerror}: {e.filename} (run with sudo)", file=sys.stderr)
        return EXIT_REFUSED
    except OSError as e:
        # The file is written to a temporary file first and renamed over: it is still the old one.
        print(f"error: could not write {path}: {e.strerror or e}; nothing changed", file=sys.stderr)
        return EXIT_WRITE_FAILED
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
