"""`tljh-config`: change config.yaml safely and apply it.

    sudo tljh-config show [KEY] [--effective] [--show-secrets]
    sudo tljh-config set KEY VALUE
    sudo tljh-config unset KEY
    sudo tljh-config add-item KEY VALUE
    sudo tljh-config remove-item KEY VALUE
    sudo tljh-config reload [hub|proxy] [--timeout SECONDS]

Exit codes: 0 done; 1 a reload failed (the last good configuration is back and serving);
2 refused (nothing changed: unknown key, wrong type, missing value, malformed file, not root);
3 a reload failed and the hub could not be brought back.

Environment: TLJH_RELOAD_TIMEOUT (seconds `reload` waits for the hub or the proxy's certificates, default 60);
TLJH_CONFIG_SKIP_ROOT_CHECK=1 (tests only: skip the root check). Without root, tljh-config still edits a
file given with --config-path that is not the system config.yaml (reload always needs root).

The path constants TLJH plugins import from here (INSTALL_PREFIX, CONFIG_FILE, ...) are re-exported
from tljh.system.paths.
"""

from __future__ import annotations

import argparse
import importlib
import io
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request

from ruamel.yaml.comments import CommentedMap, CommentedSeq

from tljh.settings import schema
from tljh.settings.config_file import (
    ConfigFileError,
    append_item,
    dump_document,
    load_config,
    load_document,
    locked,
    parse_document,
    read_text,
    record_last_good,
    set_key,
    to_plain,
    update_document,
    write_atomic,
)
from tljh.system.paths import (  # noqa: F401 - re-exported for TLJH plugins
    CONFIG_DIR,
    CONFIG_FILE,
    HUB_ENV_PREFIX,
    HUB_HOST,
    HUB_PORT,
    INSTALL_PREFIX,
    LAST_GOOD_FILE,
    STATE_DIR,
    USER_ENV_PREFIX,
)

EXIT_OK = 0
EXIT_RELOAD_FAILED = 1
EXIT_REFUSED = 2
EXIT_HUB_DOWN = 3

DEFAULT_RELOAD_TIMEOUT = 60
# Below this, users' servers risk being killed before they answer (measured: ~135 MB after start).
MIN_SENSIBLE_MEMORY = 256 * 2**20
HUB_UNIT = "jupyterhub"

ConfigError = schema.ConfigError


class Refused(Exception):
    """A refusal for the command line: one line, nothing changed."""


class ReloadError(Exception):
    """A reload failed. `code` is the exit code, `details` extra lines (journal excerpt...)."""

    def __init__(self, message, code=EXIT_RELOAD_FAILED, details=()):
        super().__init__(message)
        self.code = code
        self.details = list(details)


def _say(*lines, file=None):
    for line in lines:
        print(line, file=file or sys.stdout)


def _warn(message):
    print(f"warning: {message}", file=sys.stderr)


# --------------------------------------------------------------------------------------------
# Editing


def _auth_type(doc) -> str | None:
    auth = doc.get("auth") if isinstance(doc, dict) else None
    if isinstance(auth, dict) and isinstance(auth.get("type"), str):
        return auth["type"]
    return None


def _get(doc, parts):
    """(found, value) of a dotted path in a (round-trip) mapping."""
    node = doc
    for part in parts:
        if not isinstance(node, dict) or part not in node:
            return False, None
        node = node[part]
    return True, node


def _parent_for_write(doc, info):
    node = doc
    for i, part in enumerate(info.parts[:-1]):
        if part not in node or node[part] is None:
            set_key(node, part, CommentedMap())
        elif not isinstance(node[part], dict):
            where = ".".join(info.parts[: i + 1])
            raise Refused(f"cannot set {info.key}: {where} holds a value in the file, not a section of keys")
        node = node[part]
    return node


def _refusal_names_key(parse):
    """Make a value parser's refusals start with the key, so the one line says what was wrong where."""

    def wrapped(info, raw):
        try:
            return parse(info, raw)
        except schema.ValueParseError as e:
            raise Refused(f"{info.key}: {e}") from None

    return wrapped


@_refusal_names_key
def _parse_for_key(info, raw):
    """A command-line string (or a Python value from the API) -> the value to store for `info`."""
    if info.kind == "section":
        subkeys = ", ".join(sorted(info.node.get("properties", {}))) or "its keys"
        raise Refused(f"{info.key} is a section, not a value; set one of its keys ({subkeys})")
    if info.kind == "trait":
        cls, class_name, trait = info.auth_class, info.parts[1], info.parts[2]
        value = schema.parse_trait_value(cls, class_name, trait, raw) if isinstance(raw, str) else raw
        schema.check_trait_value(cls, class_name, trait, value)
        return value
    if info.kind == "ignored":
        return schema.parse_scalar(info.node or {"type": ["integer", "string"]}, raw) if isinstance(raw, str) else raw
    node = info.node
    if not isinstance(raw, str):
        if node.get("x-tljh-memory"):
            return schema.normalize_memory(raw)
        return raw
    value = schema.parse_scalar(node, raw)
    if info.key == "base_url" and isinstance(value, str):
        value = "/" + value.strip("/") + "/" if value.strip("/") else "/"
    return value


def _check_new_problems(before_doc, after_doc, key):
    """Refuse when the edit introduces a validation error; warn about problems that were there already."""
    before = {str(p) for p in schema.errors_only(schema.validate_config(to_plain(before_doc)))}
    after = schema.validate_config(to_plain(after_doc))
    new_errors = [p for p in schema.errors_only(after) if str(p) not in before]
    if new_errors:
        more = f" (and {len(new_errors) - 1} more problems)" if len(new_errors) > 1 else ""
        raise Refused(f"{new_errors[0]}{more}")
    old_errors = [p for p in schema.errors_only(after) if str(p) in before]
    if old_errors:
        _warn(
            f"config.yaml has other problems, left as they were: {old_errors[0]}"
            + (f" (and {len(old_errors) - 1} more)" if len(old_errors) > 1 else "")
        )
    for p in after:
        if p.severity == "warning" and (key.startswith(p.key + ".") or key == p.key):
            _warn(p.message)


def _snapshot(doc):
    return parse_document(dump_document(doc))


def _edit(config_path, key, change):
    """Run change(doc, info) under the lock; validate the result; write atomically. Returns change()'s result."""
    result = {}

    def mutate(doc):
        before = _snapshot(doc)
        result["value"] = change(doc)
        _check_new_problems(before, doc, key)

    try:
        update_document(config_path, mutate)
    except (ConfigError, ConfigFileError) as e:
        raise Refused(str(e)) from None
    return result.get("value")


def _lookup(doc, key):
    try:
        return schema.lookup_key(key, _auth_type(doc))
    except ConfigError as e:
        raise Refused(str(e)) from None


def set_config_value(config_path, key_path, value):
    """Set KEY to VALUE (a command-line string, or a Python value). Returns the stored value."""

    def change(doc):
        info = _lookup(doc, key_path)
        parsed = _parse_for_key(info, value)
        parent = _parent_for_write(doc, info)
        if isinstance(parsed, list):
            parsed = CommentedSeq(parsed)
        set_key(parent, info.parts[-1], parsed)
        return parsed

    stored = _edit(config_path, key_path, change)
    return to_plain(stored)


def unset_config_value(config_path, key_path):
    """Remove KEY (a value or a whole section) so its default applies. Returns False if it was not set."""

    def change(doc):
        found, _ = _get(doc, key_path.split("."))
        if not found:
            _lookup(doc, key_path)  # unknown key -> refusal with did-you-mean
            return False
        parts = key_path.split(".")
        chain = [doc]
        for part in parts[:-1]:
            chain.append(chain[-1][part])
        del chain[-1][parts[-1]]
        # drop sections the removal left empty
        for depth in range(len(parts) - 1, 0, -1):
            if isinstance(chain[depth], dict) and not chain[depth]:
                del chain[depth - 1][parts[depth - 1]]
            else:
                break
        return True

    return _edit(config_path, key_path, change)


def _list_at(doc, info, create):
    found, current = _get(doc, info.parts)
    if not found or current is None:
        if not create:
            return None
        parent = _parent_for_write(doc, info)
        current = CommentedSeq()
        set_key(parent, info.parts[-1], current)
    if not isinstance(current, list):
        raise Refused(f"{info.key} holds {current!r} in the file, not a list; use `tljh-config set`")
    return current


@_refusal_names_key
def _item_value(info, raw):
    if not info.is_list:
        raise Refused(f"{info.key} is not a list; use `tljh-config set {info.key} VALUE`")
    if not isinstance(raw, str):
        return raw
    if info.kind == "trait":
        literal = schema._unquote(raw)
        return literal if literal is not None else raw
    items = info.node.get("items", {"type": "string"})
    return schema.parse_scalar(items, raw)


def add_config_value(config_path, key_path, value):
    """Append VALUE to the list at KEY. Returns False when it was already there (nothing changed)."""

    def change(doc):
        info = _lookup(doc, key_path)
        item = _item_value(info, value)
        current = _list_at(doc, info, create=True)
        if item in current:
            return False
        append_item(current, item)
        return True

    return _edit(config_path, key_path, change)


def remove_config_value(config_path, key_path, value):
    """Remove VALUE from the list at KEY. Refuses when it is not there."""

    def change(doc):
        info = _lookup(doc, key_path)
        item = _item_value(info, value)
        current = _list_at(doc, info, create=False)
        if current is None or item not in current:
            raise Refused(f"{item} is not in {key_path}")
        current.remove(item)
        return True

    return _edit(config_path, key_path, change)


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
        raise Refused(str(e)) from None
    if effective:
        for p in schema.errors_only(schema.validate_config(to_plain(doc))):
            _warn(f"{p} (shown as written; the hub would refuse it)")
        doc = schema.effective_config(to_plain(doc))
    if not show_secrets:
        if effective:
            doc = schema.mask_secrets(doc)
        else:
            _mask_in_place(doc)
    if key:
        found, value = _get(doc, key.split("."))
        if not found:
            _lookup(doc, key)
            eff = schema.effective_config(to_plain(load_document(config_path)))
            found, value = _get(eff, key.split("."))
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


def _systemctl(*args):
    """Run systemctl; returns CompletedProcess (tests replace this)."""
    try:
        return subprocess.run(["systemctl", *args], capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as e:
        return subprocess.CompletedProcess(["systemctl", *args], 127, "", str(e))


def _hub_answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def _journal(since: float) -> list[str]:
    """The hub's journal lines since `since` (epoch seconds)."""
    try:
        p = subprocess.run(
            ["journalctl", "-u", HUB_UNIT, "--since", f"@{int(since)}", "--no-pager", "-o", "cat", "-n", "300"],
            capture_output=True,
            text=True,
            timeout=15,
        )
    except (OSError, subprocess.TimeoutExpired):
        return []
    return p.stdout.splitlines()


def relevant_journal_lines(lines, limit=8) -> list[str]:
    """The lines of a failed start that explain it: errors and the end of a traceback, else the last lines."""
    keys = ("Traceback", "Error", "error", "[E ", "[C ", "CRITICAL", "Exception", "failed", "Failed")
    picked = [line for line in lines if any(k in line for k in keys)]
    return (picked or lines)[-limit:]


def hub_api_url(config: dict) -> str:
    base_url = config.get("base_url") or "/"
    if not base_url.endswith("/"):
        base_url += "/"
    return f"http://{HUB_HOST}:{HUB_PORT}{base_url}hub/api"


def _wait_for_hub(url, timeout) -> str | None:
    """None when the hub answers within `timeout`; else why not."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _hub_answers(url):
            return None
        state = _systemctl("is-active", HUB_UNIT).stdout.strip()
        if state == "failed":
            return f"{HUB_UNIT}.service failed"
        time.sleep(0.5)
    return f"no answer from {url} within {timeout:g} s"


def preflight(config: dict):
    """Refuse a configuration the hub would not start with (beyond the schema)."""
    from traitlets.config import Config

    from tljh.hub.configurer import apply_config

    problems = schema.errors_only(schema.validate_config(config))
    if problems:
        more = f" (and {len(problems) - 1} more problems)" if len(problems) > 1 else ""
        raise Refused(f"{problems[0]}{more}")
    effective = schema.effective_config(config)
    c = Config()
    try:
        apply_config(effective, c)
        cls = schema.resolve_authenticator(effective["auth"]["type"])
    except Exception as e:  # noqa: BLE001 - anything here would also break the hub
        raise Refused(f"the hub would not start: {e.__class__.__name__}: {e}") from None
    # Instantiate the authenticator with this configuration, as the hub will: a trait error here (a
    # cross-validator refusing a combination of values) would stop the hub. Other exceptions come from
    # needing the running hub (its database...) and say nothing about the configuration.
    from traitlets import TraitError

    try:
        authenticator = cls(config=c)
    except TraitError as e:
        first = " ".join(str(e).split())[:300]
        raise Refused(f"the hub would not start: {cls.__name__}: {first}") from None
    except Exception:  # noqa: BLE001
        return
    # JupyterHub refuses to start when an admin or allowed user name is not valid for the authenticator.
    for key in ("admin", "allowed"):
        for name in effective["users"][key]:
            try:
                valid = authenticator.validate_username(authenticator.normalize_username(name))
            except Exception:  # noqa: BLE001
                valid = True  # needs the running hub; let it decide
            if not valid:
                raise Refused(
                    f"users.{key}: {name!r} is not a valid username for {cls.__name__}; the hub would not start"
                )


def _restart_and_wait(config, timeout):
    since = time.time()
    p = _systemctl("restart", HUB_UNIT)
    if p.returncode != 0:
        why = " ".join((p.stderr or p.stdout or "").split()) or f"systemctl exited {p.returncode}"
        return since, f"systemctl restart {HUB_UNIT} failed: {why}"
    return since, _wait_for_hub(hub_api_url(config), timeout)


def _proxy_note(effective, last_good):
    """A reminder when http/https changed since the last good configuration (the hub does not apply them)."""
    try:
        before = schema.effective_config(load_config(last_good)) if os.path.exists(last_good) else None
    except ConfigFileError:
        return ""
    if before and any(before[k] != effective[k] for k in ("http", "https")):
        return "\nhttp/https settings changed: run `sudo tljh-config reload proxy` to apply them"
    return ""


def reload_hub(config_path=CONFIG_FILE, timeout=DEFAULT_RELOAD_TIMEOUT, last_good=None):
    """Validate, restart the hub, wait until it answers; on failure restore the last good config.

    Two reloads at once run one after the other (a lock next to the last good copy).
    """
    last_good = last_good or LAST_GOOD_FILE
    with locked(last_good):
        return _reload_hub(str(config_path), timeout, last_good)


def _reload_hub(config_path, timeout, last_good):
    try:
        text = read_text(config_path)
        config = to_plain(parse_document(text, config_path))
    except ConfigFileError as e:
        raise Refused(str(e)) from None
    preflight(config)
    effective = schema.effective_config(config)
    since, failure = _restart_and_wait(effective, timeout)
    if failure is None:
        note = _proxy_note(effective, last_good)
        write_atomic(last_good, text, mode=0o600)
        return f"hub reloaded: answering at {hub_api_url(effective)}" + note

    details = [f"  {line}" for line in relevant_journal_lines(_journal(since))]
    if not os.path.exists(last_good):
        raise ReloadError(
            f"the hub did not start with this configuration ({failure}) and there is no last good "
            "configuration to go back to",
            EXIT_HUB_DOWN,
            details,
        )
    rejected = config_path + ".rejected"
    good_text = read_text(last_good)
    with locked(config_path):
        if read_text(config_path) == text:
            write_atomic(rejected, text)
            write_atomic(config_path, good_text)
    good = schema.effective_config(load_config(last_good))
    _, failure_again = _restart_and_wait(good, timeout)
    if failure_again is None:
        raise ReloadError(
            f"the hub did not start with this configuration ({failure}); restored the last good "
            f"configuration, the hub is back up; your rejected file is in {rejected}",
            EXIT_RELOAD_FAILED,
            details,
        )
    raise ReloadError(
        f"the hub did not start ({failure}) and not with the last good configuration either ({failure_again})",
        EXIT_HUB_DOWN,
        details,
    )


def reload_proxy(config_path=CONFIG_FILE, timeout=DEFAULT_RELOAD_TIMEOUT):
    try:
        config = load_config(config_path)
    except ConfigFileError as e:
        raise Refused(str(e)) from None
    problems = schema.errors_only(schema.validate_config(config))
    if problems:
        raise Refused(str(problems[0]))
    try:
        proxy_service = importlib.import_module("tljh.proxy.edge")  # imported late: tests replace it
    except ImportError as e:
        raise ReloadError(f"the proxy cannot be reloaded: {e}") from None
    effective = schema.effective_config(config)
    # What would keep the CA from issuing is said now, not found later in Caddy's log.
    for problem in proxy_service.https_preflight(effective):
        _warn(problem)
    started = time.time()
    try:
        proxy_service.reload_proxy(effective)
    except proxy_service.ProxyReloadError as e:
        raise ReloadError(f"proxy reload failed, the previous proxy configuration keeps serving: {e}") from None
    # The proxy is reloaded either way; a certificate the CA did not issue is said, with its reason.
    missing = proxy_service.missing_certificates(effective, since=started, timeout=timeout)
    for line in missing:
        _warn(line)
    return "proxy reloaded" + ("; HTTPS certificates still missing (see above), HTTP keeps serving" if missing else "")


def reload_component(component, config_path=CONFIG_FILE, timeout=DEFAULT_RELOAD_TIMEOUT):
    """TLJH's name: reload 'hub' or 'proxy'. Returns a message; raises Refused or ReloadError."""
    if component == "proxy":
        return reload_proxy(config_path, timeout)
    return reload_hub(config_path, timeout)


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
        "2 refused (nothing changed), 3 reload failed and the hub is down.",
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
        default=float(os.environ.get("TLJH_RELOAD_TIMEOUT", DEFAULT_RELOAD_TIMEOUT)),
        help="seconds to wait for the hub to answer, or for the proxy's HTTPS certificates (default %(default)g)",
    )
    return p


_build_parser = build_parser


def _needs_root(args) -> bool:
    if os.environ.get("TLJH_CONFIG_SKIP_ROOT_CHECK") == "1":
        return False
    if args.action == "reload":
        return True
    return os.path.realpath(args.config_path) == os.path.realpath(CONFIG_FILE)


def _reload_hint(key):
    try:
        info = schema.lookup_key(key)
    except ConfigError:
        return "sudo tljh-config reload"
    if info.reload == "installer":
        return f"sudo {HUB_ENV_PREFIX}/bin/python -m tljh.installer"
    return "sudo tljh-config reload proxy" if info.reload == "proxy" else "sudo tljh-config reload"


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
            value = set_config_value(path, args.key, args.value)
            _say(schema.describe_value(args.key, value), f"Run `{_reload_hint(args.key)}` to apply.")
            if args.key == "limits.memory" and value and schema.memory_to_bytes(value) < MIN_SENSIBLE_MEMORY:
                _warn(
                    f"a JupyterLab server needs about 150 MB before it runs any code: with {value}, "
                    "servers may be stopped as they start. 512M or more is a sensible minimum."
                )
        elif args.action == "unset":
            if unset_config_value(path, args.key):
                _say(f"{args.key} removed; its default applies. Run `{_reload_hint(args.key)}` to apply.")
            else:
                _say(f"{args.key} was not set; nothing changed.")
        elif args.action == "add-item":
            if add_config_value(path, args.key, args.value):
                _say(f"added {args.value} to {args.key}. Run `{_reload_hint(args.key)}` to apply.")
            else:
                _say(f"{args.value} is already in {args.key}; nothing changed.")
        elif args.action == "remove-item":
            remove_config_value(path, args.key, args.value)
            _say(f"removed {args.value} from {args.key}. Run `{_reload_hint(args.key)}` to apply.")
        elif args.action == "reload":
            if args.component == "hub":
                _say(f"validating {path} and restarting the hub (waiting up to {args.timeout:g} s)...")
            _say(reload_component(args.component, path, args.timeout))
    except Refused as e:
        print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
        return EXIT_REFUSED
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
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
