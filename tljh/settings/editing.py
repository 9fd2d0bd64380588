"""Editing config.yaml: what `tljh-config set / unset / add-item / remove-item` do to the file.

Every edit runs under the config lock, keeps the admin's comments, is validated as a whole (an edit that adds
a problem is refused with one line and nothing is written; problems that were there already are warned
about) and is written atomically. ``check(before, after)``, if given, may refuse an edit for reasons only the
system can tell (the CLI passes the environments' check: packages must resolve). These are also TLJH's public functions (tljh.config re-exports them).
"""

from __future__ import annotations

from ruamel.yaml.comments import CommentedMap, CommentedSeq

from . import authenticators, schema, values
from .config_file import (
    ConfigFileError,
    append_item,
    dump_document,
    parse_document,
    set_key,
    to_plain,
    update_document,
)
from .errors import ConfigError, ValueParseError, warn


def _auth_type(doc) -> str | None:
    auth = doc.get("auth") if isinstance(doc, dict) else None
    if isinstance(auth, dict) and isinstance(auth.get("type"), str):
        return auth["type"]
    return None


def value_at(doc, parts):
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
            raise ConfigError(f"cannot set {info.key}: {where} holds a value in the file, not a section of keys")
        node = node[part]
    return node


def _refusal_names_key(parse):
    """Make a value parser's refusals start with the key, so the one line says what was wrong where."""

    def wrapped(info, raw):
        try:
            return parse(info, raw)
        except ValueParseError as e:
            raise ConfigError(f"{info.key}: {e}") from None

    return wrapped


@_refusal_names_key
def _parse_for_key(info, raw):
    """A command-line string (or a Python value from the API) -> the value to store for `info`."""
    if info.kind == "section":
        subkeys = ", ".join(sorted(info.node.get("properties", {}))) or "its keys"
        raise ConfigError(f"{info.key} is a section, not a value; set one of its keys ({subkeys})")
    if info.kind == "trait":
        cls, class_name, trait = info.auth_class, info.parts[1], info.parts[2]
        value = authenticators.parse_trait_value(cls, class_name, trait, raw) if isinstance(raw, str) else raw
        authenticators.check_trait_value(cls, class_name, trait, value)
        return value
    if info.kind == "ignored":
        return values.parse_scalar(info.node or {"type": ["integer", "string"]}, raw) if isinstance(raw, str) else raw
    node = info.node
    if not isinstance(raw, str):
        if node.get("x-tljh-memory"):
            return values.normalize_memory(raw)
        return raw
    value = values.parse_scalar(node, raw)
    if info.key == "base_url" and isinstance(value, str):
        value = values.normalize_base_url(value)
    return value


def _check_new_problems(before_doc, after_doc, key):
    """Refuse when the edit introduces a validation error; warn about problems that were there already."""
    before = {str(p) for p in schema.errors_only(schema.validate_config(to_plain(before_doc)))}
    after = schema.validate_config(to_plain(after_doc))
    new_errors = [p for p in schema.errors_only(after) if str(p) not in before]
    if new_errors:
        more = f" (and {len(new_errors) - 1} more problems)" if len(new_errors) > 1 else ""
        raise ConfigError(f"{new_errors[0]}{more}")
    old_errors = [p for p in schema.errors_only(after) if str(p) in before]
    if old_errors:
        warn(
            f"config.yaml has other problems, left as they were: {old_errors[0]}"
            + (f" (and {len(old_errors) - 1} more)" if len(old_errors) > 1 else "")
        )
    for p in after:
        if p.severity == "warning" and (key.startswith(p.key + ".") or key == p.key):
            warn(p.message)


def _snapshot(doc):
    return parse_document(dump_document(doc))


def _edit(config_path, key, change, check=None):
    """Run change(doc, info) under the lock; validate the result; write atomically. Returns change()'s result."""
    result = {}

    def mutate(doc):
        before = _snapshot(doc)
        result["value"] = change(doc)
        _check_new_problems(before, doc, key)
        if check is not None:  # a check that needs the system (e.g. environments: do the packages resolve?)
            check(to_plain(before), to_plain(doc))

    try:
        update_document(config_path, mutate)
    except (ConfigError, ConfigFileError) as e:
        raise ConfigError(str(e)) from None
    return result.get("value")


def key_info(doc, key):
    """What `key` refers to, for the authenticator `doc` configures; refused (did you mean) if unknown."""
    try:
        return schema.lookup_key(key, _auth_type(doc))
    except ConfigError as e:
        raise ConfigError(str(e)) from None


def set_config_value(config_path, key_path, value, check=None):
    """Set KEY to VALUE (a command-line string, or a Python value). Returns the stored value."""

    def change(doc):
        info = key_info(doc, key_path)
        parsed = _parse_for_key(info, value)
        parent = _parent_for_write(doc, info)
        if isinstance(parsed, list):
            parsed = CommentedSeq(parsed)
        set_key(parent, info.parts[-1], parsed)
        return parsed

    stored = _edit(config_path, key_path, change, check)
    return to_plain(stored)


def unset_config_value(config_path, key_path, check=None):
    """Remove KEY (a value or a whole section) so its default applies. Returns False if it was not set."""

    def change(doc):
        found, _ = value_at(doc, key_path.split("."))
        if not found:
            key_info(doc, key_path)  # unknown key -> refusal with did-you-mean
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

    return _edit(config_path, key_path, change, check)


def _list_at(doc, info, create):
    found, current = value_at(doc, info.parts)
    if not found or current is None:
        if not create:
            return None
        parent = _parent_for_write(doc, info)
        current = CommentedSeq()
        set_key(parent, info.parts[-1], current)
    if not isinstance(current, list):
        raise ConfigError(f"{info.key} holds {current!r} in the file, not a list; use `tljh-config set`")
    return current


@_refusal_names_key
def _item_value(info, raw):
    if not info.is_list:
        raise ConfigError(f"{info.key} is not a list; use `tljh-config set {info.key} VALUE`")
    if not isinstance(raw, str):
        return raw
    if info.kind == "trait":
        literal = values.unquote(raw)
        return literal if literal is not None else raw
    items = info.node.get("items", {"type": "string"})
    return values.parse_scalar(items, raw)


def add_config_value(config_path, key_path, value, check=None):
    """Append VALUE to the list at KEY. Returns False when it was already there (nothing changed)."""

    def change(doc):
        info = key_info(doc, key_path)
        item = _item_value(info, value)
        current = _list_at(doc, info, create=True)
        if item in current:
            return False
        append_item(current, item)
        return True

    return _edit(config_path, key_path, change, check)


def remove_config_value(config_path, key_path, value, check=None):
    """Remove VALUE from the list at KEY. Refuses when it is not there."""

    def change(doc):
        info = key_info(doc, key_path)
        item = _item_value(info, value)
        current = _list_at(doc, info, create=False)
        if current is None or item not in current:
            raise ConfigError(f"{item} is not in {key_path}")
        current.remove(item)
        return True

    return _edit(config_path, key_path, change, check)
