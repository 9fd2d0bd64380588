"""``tljh users list`` and ``tljh users import``: the report and the per-line account of an import."""

from __future__ import annotations

import datetime
import json
import os
import sys

from tljh.install import bulk_users
from tljh.settings import config_file
from tljh.settings.effective import load_settings
from tljh.settings.errors import ConfigError
from tljh.system import paths, unix_accounts, users as unix_users

EXIT_FAILED, EXIT_REFUSED = 1, 2


def unix_name(hub_name: str) -> str | None:
    """The Unix account of a hub user, if it has one yet (the hub's account table says whose it is)."""
    if not os.path.exists(paths.UNIX_ACCOUNTS_DB):
        return None
    table = unix_accounts.AccountTable()
    try:
        name = table.get(hub_name)
    finally:
        table.close()
    return name if name and unix_users.user_exists(name) else None


def hub_database_users(db_file=None) -> dict:
    """{name: {admin, groups, last_activity, servers: {server name: state}, profiles: {server name: profile slug}}}
    as the hub's database holds them.

    Read-only (SQLite opened with mode=ro) through JupyterHub's own ORM, so it works while the hub runs."""
    db_file = db_file or paths.HUB_DATABASE
    if not os.path.exists(db_file):
        return {}
    from jupyterhub import orm
    from sqlalchemy import create_engine
    from sqlalchemy.orm import sessionmaker

    engine = create_engine(f"sqlite:///file:{db_file}?mode=ro&uri=true")
    session = sessionmaker(bind=engine)()
    found = {}
    try:
        for user in session.query(orm.User).order_by(orm.User.name):
            servers, profiles = {}, {}
            for spawner in user._orm_spawners:
                if spawner.server is not None:
                    servers[spawner.name or ""] = "running"
                    # The picker's choice, as KubeSpawner names it (tljh.hub.profiles): what the server runs.
                    chosen = (spawner.user_options or {}).get("profile")
                    if isinstance(chosen, str) and chosen:
                        profiles[spawner.name or ""] = chosen
            found[user.name] = {
                "admin": bool(user.admin),
                "groups": sorted(g.name for g in user.groups),
                "last_activity": user.last_activity.replace(tzinfo=datetime.timezone.utc).isoformat() if user.last_activity else None,
                "servers": servers,
                "profiles": profiles,
            }
    finally:
        session.close()
        engine.dispose()
    return found


def rows(config: dict, in_database: dict) -> list[dict]:
    """One row per user the hub knows (database) or config.yaml names (allowed, admin, groups)."""
    people = config["users"]
    names = set(in_database) | set(people["allowed"]) | set(people["admin"])
    for members in people["extra_user_groups"].values():
        names |= set(members)
    table = []
    for name in sorted(names):
        db = in_database.get(name, {})
        groups = set(db.get("groups", []))
        groups |= {g for g, members in people["extra_user_groups"].items() if name in (members or [])}
        table.append(
            {
                "name": name,
                "unix_name": unix_name(name),
                "admin": db.get("admin", False) or name in people["admin"],
                "groups": sorted(groups),
                "last_activity": db.get("last_activity"),
                "servers": db.get("servers", {}),
                "profiles": db.get("profiles", {}),
                "banned": name in people["banned"],
            }
        )
    return table


def _when(iso):
    if not iso:
        return "never"
    moment = datetime.datetime.fromisoformat(iso)
    ago = (datetime.datetime.now(datetime.timezone.utc) - moment).total_seconds()
    for unit, seconds in (("d", 86400), ("h", 3600), ("m", 60)):
        if ago >= seconds:
            return f"{int(ago // seconds)}{unit} ago"
    return "just now"


def _server_words(servers, profiles):
    if not servers:
        return "stopped"

    def with_profile(name, shown):
        return f"{shown} (profile {profiles[name]})" if name in profiles else shown

    if list(servers) == [""]:
        return with_profile("", "running")
    return "running: " + ", ".join(with_profile(n, n or "default") for n in servers)


def list_users(as_json=False, out=sys.stdout) -> int:
    settings = load_settings(paths.CONFIG_FILE)
    table = rows(settings.config, hub_database_users())
    if as_json:
        out.write(json.dumps(table, indent=2) + "\n")
        return 0
    header = ("NAME", "UNIX NAME", "ADMIN", "GROUPS", "LAST ACTIVITY", "SERVER")
    lines = [
        (
            r["name"] + (" (banned)" if r["banned"] else ""),
            r["unix_name"] or "-",
            "yes" if r["admin"] else "no",
            ",".join(r["groups"]) or "-",
            _when(r["last_activity"]),
            _server_words(r["servers"], r["profiles"]),
        )
        for r in table
    ]
    widths = [max(len(str(x)) for x in column) for column in zip(header, *lines)]
    for line in [header, *lines]:
        out.write("  ".join(str(x).ljust(w) for x, w in zip(line, widths)).rstrip() + "\n")
    running = sum(1 for r in table if r["servers"])
    out.write(f"{len(table)} users, {running} with a running server\n")
    return 0


def import_csv(path, *, skip_bad=False, reload=True, out=sys.stdout, err=sys.stderr) -> int:
    try:
        lines = bulk_users.parse(bulk_users.read_file(path))
        raw = config_file.load_raw(paths.CONFIG_FILE)
        bulk_users.judge(lines, raw, bulk_users.name_problem_checker(raw))
    except (bulk_users.ImportRefused, config_file.ConfigFileError) as e:
        err.write(f"tljh users import: {e}; nothing was changed\n")
        return EXIT_REFUSED
    bad = [line for line in lines if line.problem]
    good = [line for line in lines if not line.problem]
    if bad and not skip_bad:
        for line in bad:
            err.write(f"line {line.number}: {line.name or '-'}: {line.problem}\n")
        err.write(
            f"tljh users import: {len(bad)} of {len(lines)} lines are bad; nothing was changed "
            "(fix them, or add --skip-bad to apply the other lines)\n"
        )
        return EXIT_REFUSED
    if not good:
        err.write("tljh users import: no good line; nothing was changed\n")
        for line in bad:
            err.write(f"line {line.number}: {line.name or '-'}: {line.problem}\n")
        return EXIT_REFUSED
    from tljh.hub import preflight

    try:
        result = bulk_users.apply(good, check=preflight.check)
    except (ConfigError, config_file.ConfigFileError, OSError) as e:
        err.write(f"tljh users import: {e}; nothing was changed\n")
        return EXIT_FAILED
    for line in lines:
        if line.problem:
            out.write(f"line {line.number}: {line.name or '-'}: SKIPPED: {line.problem}\n")
        else:
            out.write(f"line {line.number}: {line.name}: {', '.join(line.done)}\n")
    if result["opened"]:
        out.write(
            "note: users.allowed was empty, so the authenticator decided who could log in; "
            "now only allowed users and admins can\n"
        )
    out.write(f"imported {len(good)} user(s)" + (f"; skipped {len(bad)} bad line(s)" if bad else "") + "\n")
    if reload:
        from tljh.settings import reload as reloading

        try:
            out.write(reloading.reload_hub(paths.CONFIG_FILE, preflight=preflight.check) + "\n")
        except (ConfigError, reloading.ReloadError) as e:
            err.write(f"tljh users import: config.yaml was changed but the hub did not reload: {e}\n")
            return EXIT_FAILED
    else:
        out.write("Run `sudo tljh-config reload` to apply.\n")
    return EXIT_FAILED if bad else 0
