"""Users in bulk: ``sudo tljh users import FILE.csv`` and what ``tljh users list`` shows.

A CSV line is ``name,admin,groups,password``: the hub name; admin yes/no; groups separated by spaces or ";"
(``users.extra_user_groups.<group>``: TLJH's groups, which profiles' ``allowed_groups`` also read); an initial
password for FirstUseAuthenticator or NativeAuthenticator. Every line is judged on its own against the config it
would change and the authenticator that will see the name, so a bad line is named with its reason. Then either
nothing is applied (a bad line, by default) or the good lines are applied at once: password hashes first, then
config.yaml in one atomic write under TLJH's lock (the passwords just added are taken back if that write fails).
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import io

from tljh.settings import authenticators, config_file, schema
from tljh.settings.effective import effective_settings
from tljh.settings.errors import ConfigError
from tljh.system import paths

COLUMNS = ("name", "admin", "groups", "password")
TRUE = {"yes", "y", "true", "1", "admin"}
FALSE = {"no", "n", "false", "0", ""}
# Authenticators whose passwords this hub stores, and so can be given an initial one.
PASSWORD_AUTHENTICATORS = ("FirstUseAuthenticator", "NativeAuthenticator")


class ImportRefused(Exception):
    """The file as a whole cannot be read (not CSV, unknown column): one line."""


@dataclasses.dataclass
class Line:
    number: int
    name: str = ""
    admin: bool = False
    groups: list = dataclasses.field(default_factory=list)
    password: str | None = None
    problem: str | None = None
    done: list = dataclasses.field(default_factory=list)  # what applying it did, in words


def parse(text: str) -> list[Line]:
    """The file's lines (blank and #-comment lines skipped), each with its fields or the reason it is bad."""
    rows = list(csv.reader(io.StringIO(text)))
    numbered = [(i + 1, row) for i, row in enumerate(rows) if any(c.strip() for c in row) and not row[0].lstrip().startswith("#")]
    if not numbered:
        raise ImportRefused("the file has no users")
    columns = list(COLUMNS)
    first = [c.strip().lower() for c in numbered[0][1]]
    if first and first[0] == "name":
        unknown = [c for c in first if c not in COLUMNS]
        if unknown:
            raise ImportRefused(f"line {numbered[0][0]}: unknown column {unknown[0]!r} (columns: {', '.join(COLUMNS)})")
        columns = first
        numbered = numbered[1:]
    lines = []
    for number, row in numbered:
        line = Line(number)
        lines.append(line)
        if len(row) > len(columns):
            line.problem = f"{len(row)} fields, expected at most {len(columns)} ({', '.join(columns)})"
            continue
        fields = dict(zip(columns, (c.strip() for c in row)))
        line.name = fields.get("name", "")
        admin = fields.get("admin", "").lower()
        line.groups = [g for g in fields.get("groups", "").replace(";", " ").split() if g]
        password = row[columns.index("password")] if "password" in columns and len(row) > columns.index("password") else ""
        line.password = password or None
        if not line.name:
            line.problem = "no name"
        elif admin not in TRUE | FALSE:
            line.problem = f"admin must be yes or no, not {admin!r}"
        else:
            line.admin = admin in TRUE
    return lines


def _with_line(doc: dict, line: Line) -> dict:
    """``doc`` (plain config) with ``line`` applied."""
    users = doc.setdefault("users", {})
    allowed = users.setdefault("allowed", [])
    if line.name not in allowed:
        allowed.append(line.name)
    if line.admin:
        admins = users.setdefault("admin", [])
        if line.name not in admins:
            admins.append(line.name)
    for group in line.groups:
        members = users.setdefault("extra_user_groups", {}).setdefault(group, [])
        if line.name not in members:
            members.append(line.name)
    return doc


def judge(lines: list[Line], raw: dict, name_problem) -> None:
    """Set ``problem`` on each bad line. ``name_problem(name)`` says why the hub would refuse a name (or None)."""
    import copy

    config = effective_settings(raw).config
    auth_class = authenticators.class_name_of(config["auth"]["type"])
    known_problems = {str(p) for p in schema.errors_only(schema.validate_config(raw))}
    seen = {}
    for line in lines:
        if line.problem:
            continue
        if line.name in seen:
            line.problem = f"{line.name} is also on line {seen[line.name]}"
            continue
        seen[line.name] = line.number
        if line.name in config["users"]["banned"]:
            line.problem = f"{line.name} is in users.banned"
            continue
        problem = name_problem(line.name)
        if problem:
            line.problem = problem
            continue
        if line.password is not None:
            if auth_class not in PASSWORD_AUTHENTICATORS:
                line.problem = f"a password is only for {' or '.join(PASSWORD_AUTHENTICATORS)}; this hub uses {auth_class}"
                continue
            minimum = minimum_password_length(config)
            if len(line.password) < minimum:
                line.problem = f"the password is shorter than {minimum} characters"
                continue
        trial = _with_line(copy.deepcopy(raw), line)
        new = [p for p in schema.errors_only(schema.validate_config(trial)) if str(p) not in known_problems]
        if new:
            line.problem = str(new[0])


def minimum_password_length(config) -> int:
    """The authenticator's own minimum (its trait default, or what auth.<Class> sets)."""
    auth_type = config["auth"]["type"]
    cls = authenticators.resolve_authenticator(auth_type)
    trait = "min_password_length" if "min_password_length" in cls.class_traits() else "minimum_password_length"
    configured = config["auth"].get(cls.__name__, {}).get(trait)
    if configured is not None:
        return int(configured)
    return int(cls.class_traits()[trait].default_value) if trait in cls.class_traits() else 1


# --------------------------------------------------------------------------------------------
# Applying


def set_passwords(lines: list[Line], auth_class: str) -> list[str]:
    """Store the lines' initial passwords; a user who has one already keeps it. Returns the names set."""
    import bcrypt

    wanted = {line.name: line for line in lines if line.password is not None}
    if not wanted:
        return []
    if auth_class == "NativeAuthenticator":
        return _set_native_passwords(wanted)
    import dbm

    done = []
    with dbm.open(paths.FIRSTUSE_PASSWORDS, "c", 0o600) as db:
        for name, line in wanted.items():
            if name.encode() in db:
                line.done.append("password kept (already set)")
                continue
            db[name.encode()] = bcrypt.hashpw(line.password.encode(), bcrypt.gensalt())
            line.done.append("password set")
            done.append(name)
    return done


def _native_session():
    from nativeauthenticator.orm import UserInfo
    from sqlalchemy import create_engine
    from sqlalchemy.orm import sessionmaker

    engine = create_engine(f"sqlite:///{paths.HUB_DATABASE}")
    UserInfo.__table__.create(engine, checkfirst=True)
    return sessionmaker(bind=engine)(), UserInfo


def _set_native_passwords(wanted) -> list[str]:
    import bcrypt

    session, UserInfo = _native_session()
    done = []
    with contextlib.closing(session):
        for name, line in wanted.items():
            if session.query(UserInfo).filter_by(username=name).first() is not None:
                line.done.append("password kept (already signed up)")
                continue
            session.add(UserInfo(username=name, password=bcrypt.hashpw(line.password.encode(), bcrypt.gensalt()), is_authorized=True))
            line.done.append("password set")
            done.append(name)
        session.commit()
    return done


def take_back_passwords(names, auth_class) -> None:
    if not names:
        return
    if auth_class == "NativeAuthenticator":
        session, UserInfo = _native_session()
        with contextlib.closing(session):
            session.query(UserInfo).filter(UserInfo.username.in_(names)).delete(synchronize_session=False)
            session.commit()
        return
    import dbm

    with dbm.open(paths.FIRSTUSE_PASSWORDS, "w") as db:
        for name in names:
            with contextlib.suppress(KeyError):
                del db[name.encode()]


def apply(lines: list[Line], config_path=None, check=None) -> dict:
    """Apply the good lines: passwords, then config.yaml (one write). Returns {"opened": bool} (see below).

    ``opened``: users.allowed was empty before, so the authenticator's own rule decided who may log in; from now
    on only the listed users (and admins) may. ``check(raw_config)`` (the hub's preflight) may refuse the result
    by raising ConfigError: then nothing is written."""
    config_path = config_path or paths.CONFIG_FILE
    good = [line for line in lines if not line.problem]
    raw = config_file.load_raw(config_path)
    config = effective_settings(raw).config
    auth_class = authenticators.class_name_of(config["auth"]["type"])
    result = {"opened": not config["users"]["allowed"] and bool(good)}
    for line in good:
        users = config["users"]
        if line.name in users["allowed"]:
            line.done.append("already allowed")
        else:
            line.done.append("allowed")
        if line.admin:
            line.done.append("already admin" if line.name in users["admin"] else "admin")
        elif line.name in users["admin"]:
            line.done.append("stays admin (import never removes)")
        new_groups = [g for g in line.groups if line.name not in users["extra_user_groups"].get(g, [])]
        if new_groups:
            line.done.append("groups " + " ".join(new_groups))
    added = set_passwords(good, auth_class)

    def mutate(doc):
        for line in good:
            users = doc.setdefault("users", {})
            allowed = users.setdefault("allowed", [])
            if line.name not in allowed:
                config_file.append_item(allowed, line.name)
            if line.admin:
                admins = users.setdefault("admin", [])
                if line.name not in admins:
                    config_file.append_item(admins, line.name)
            for group in line.groups:
                groups = users.setdefault("extra_user_groups", {})
                members = groups.setdefault(group, [])
                if line.name not in members:
                    config_file.append_item(members, line.name)
        plain = config_file.to_plain(doc)
        problems = schema.errors_only(schema.validate_config(plain))
        if problems:
            raise ConfigError(f"config.yaml would be invalid: {problems[0]}")
        if check is not None:
            check(plain)

    try:
        config_file.update_document(config_path, mutate)
    except BaseException:
        take_back_passwords(added, auth_class)
        raise
    return result


def read_file(path) -> str:
    try:
        with open(path, encoding="utf-8-sig") as f:
            return f.read()
    except UnicodeDecodeError as e:
        raise ImportRefused(f"{path} is not UTF-8 text ({e.reason} at byte {e.start})") from None
    except OSError as e:
        raise ImportRefused(f"{path}: {e.strerror}") from None


def name_problem_checker(raw: dict):
    """name -> why the hub would refuse it (or None), judged by the configured authenticator."""
    from tljh.hub import preflight

    return preflight.username_checker(raw)
