"""The ``tljh`` command: operations on the installation as a whole (``tljh-config`` edits its settings)."""

import argparse
import os
import sys

from tljh.system.namespaces import reexec_in_host_mount_namespace

# Exit codes shared by the verbs: 0 done, 1 failed or unhealthy, 2 refused (usage, bad input; nothing changed).
EXIT_FAILED = 1
EXIT_REFUSED = 2


def build_parser():
    parser = argparse.ArgumentParser(prog="tljh", description="Manage The Littlest JupyterHub installation.")
    verbs = parser.add_subparsers(dest="verb", metavar="VERB", required=True)
    remove = verbs.add_parser(
        "uninstall",
        help="remove the hub from this server",
        description="Stop and remove the hub, the proxy, the environments, the sudoers drop-in and the CLI links. "
        "Users' Unix accounts and homes are kept, and config + state are saved to /var/backups/tljh-<time>.tar.gz, "
        "unless --purge.",
    )
    remove.add_argument("--purge", action="store_true", help="also remove users' accounts, homes and groups; keep no backup")
    remove.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    env = verbs.add_parser(
        "env",
        help="list, show, build and remove the environments users' servers run from",
        description="Environments are declared under `environments` in config.yaml (`default` is /opt/tljh/user). "
        "A build goes into a copy and is switched in when complete; running servers keep the build they "
        "started with.",
    )
    env_verbs = env.add_subparsers(dest="env_verb", metavar="ENV_VERB", required=True)
    env_verbs.add_parser("list", help="every environment: up to date or not, its Python, build and description")
    show = env_verbs.add_parser(
        "show", help="print an environment's lock (exact versions), itself a valid requirements file"
    )
    show.add_argument("name", help="environment name")
    build = env_verbs.add_parser("build", help="build the environments whose declaration changed (or NAME)")
    build.add_argument("name", nargs="?", help="only this environment")
    build.add_argument("--force", action="store_true", help="build even if nothing changed")
    build.add_argument(
        "--from-lock", metavar="FILE", help="install exactly the versions of FILE (a lock from `tljh env show`)"
    )
    env_remove = env_verbs.add_parser(
        "remove", help="remove an environment from config.yaml and from service (running servers keep it)"
    )
    env_remove.add_argument("name", help="environment name (not default)")
    status = verbs.add_parser(
        "status",
        help="the admin's first stop: services, versions, certificates, disk, memory, users, backups, problems",
        description="Exit status 0 when nothing is wrong, 1 when something is (each problem is one line with the "
        "command that fixes it).",
    )
    loadtest = verbs.add_parser(
        "loadtest",
        help="simulated people log in, start servers, run code and stop, all at once or spread out; report the numbers",
        description="Simulated people use this hub the way a class does (login form, profile picker, JupyterLab, "
        "a kernel over its websocket, stop), and the hub's latencies, memory and CPU are reported, with a JSON "
        "report and a PNG timeline. For test hubs: it refuses a hub with real users unless --allow-real-users. "
        "Exit code 0 when every person got through every phase.",
    )
    from tljh.loadtest.options import add_arguments

    add_arguments(loadtest)
    status.add_argument("--json", action="store_true", help="print the report as JSON (for monitoring)")

    save = verbs.add_parser(
        "backup",
        help="write everything the hub needs to come back into one archive",
        description="Write config.yaml, jupyterhub_config.d, secrets (cookie secret, passwords, certificates), a "
        "consistent copy of the hub database, users' Unix accounts and the environments' package lists into FILE "
        "(a .tar.gz readable by root only). `tljh restore FILE` brings it back, on this server or a new one.",
    )
    save.add_argument("file", nargs="?", metavar="FILE", help="the archive to write (must not exist)")
    save.add_argument("--homes", action="store_true", help="also archive users' home directories")
    save.add_argument(
        "--scheduled",
        action="store_true",
        help="what tljh-backup.timer runs daily: if backup.daily is true, back up to backup.directory (with "
        "homes if backup.homes) and keep the newest backup.keep",
    )

    load = verbs.add_parser(
        "restore",
        help="bring back a hub from a `tljh backup` archive (after the install command on a new server)",
        description="Check FILE completely, then replace this hub's configuration, secrets, database, passwords, "
        "certificates, users' accounts (and homes, if archived) with the archive's, rebuild environments and start "
        "the hub. A damaged or foreign archive is refused and nothing changes (exit 2); this server's previous state "
        "is saved first, and a failure after the checks takes every change back (exit 1).",
    )
    load.add_argument("file", metavar="FILE")
    load.add_argument("--yes", action="store_true", help="do not ask for confirmation")

    people = verbs.add_parser("users", help="list users, or add many from a CSV file")
    people_verbs = people.add_subparsers(dest="users_verb", metavar="ACTION", required=True)
    listing = people_verbs.add_parser(
        "list", help="hub name, Unix name, admin, groups, last activity and server state of every user"
    )
    listing.add_argument("--json", action="store_true", help="print JSON")
    bulk = people_verbs.add_parser(
        "import",
        help="add the users of a CSV file (name,admin,groups,password) to the allow list and groups",
        description="Each line: name, admin (yes/no), groups (separated by spaces or ';'), and an optional initial "
        "password (FirstUseAuthenticator and NativeAuthenticator). A header line naming the columns is allowed. "
        "Every line is checked first; if one is bad nothing is applied, unless --skip-bad.",
    )
    bulk.add_argument("file", metavar="FILE.csv")
    bulk.add_argument("--skip-bad", action="store_true", help="apply the good lines and list the bad ones")
    bulk.add_argument("--no-reload", action="store_true", help="change config.yaml but do not restart the hub")

    out = verbs.add_parser("export", help="write this hub's settings in another tool's format")
    out.add_argument("target", choices=["z2jh"], help="z2jh: Zero to JupyterHub Helm chart values (YAML, on stdout)")
    into = verbs.add_parser("import", help="take settings from another tool's format into config.yaml")
    into.add_argument("target", choices=["z2jh"], help="z2jh: Zero to JupyterHub Helm chart values")
    into.add_argument("file", metavar="values.yaml")
    into.add_argument("--dry-run", action="store_true", help="print the resulting config.yaml, change nothing")
    migrate = verbs.add_parser(
        "migrate",
        help="what the migration from TLJH carried over and what it could not; --cleanup removes the old environment",
        description="Show what the installer carried over from The Littlest JupyterHub's conda environment and what "
        "it could not, with how to get it back. The old environment is kept until `tljh migrate --cleanup`.",
    )
    migrate.add_argument("--cleanup", action="store_true", help="remove TLJH's old conda environment")
    migrate.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    verbs.add_parser(
        "local-packages",
        help="list users whose ~/.local holds Python packages (from before: never imported here); deletes nothing",
        description="Users of an upgraded TLJH hub may have packages from `pip install --user` in "
        "~/.local/lib/pythonX.Y/site-packages. Servers here never import them (environments are virtual "
        "environments; users' installs last one session). Lists each such user with the size and the packages; "
        "changes nothing.",
    )
    names = verbs.add_parser(
        "unix-names",
        help="list which Unix account each hub user has; assign or release one",
        description="Each hub user runs as their own Unix account. A login whose account would be another user's, "
        "or an existing account the hub did not make, is refused; settle it here.",
    )
    names_actions = names.add_subparsers(dest="action", metavar="ACTION")
    names_actions.add_parser("list", help="hub user -> Unix account (the default)")
    assign = names_actions.add_parser("assign", help="make HUB_NAME run as UNIX_NAME (an existing account, or a new name)")
    assign.add_argument("hub_name", metavar="HUB_NAME")
    assign.add_argument("unix_name", metavar="UNIX_NAME")
    release = names_actions.add_parser("release", help="forget HUB_NAME's account (the account and files stay)")
    release.add_argument("hub_name", metavar="HUB_NAME")
    return parser


def _say(line):
    print(line, flush=True)


def _status(args):
    from .status import report

    result = report()
    if args.json:
        import json

        print(json.dumps(result.as_dict(), indent=2, sort_keys=True))
    else:
        print("\n".join(result.lines()))
    return 0 if result.healthy else EXIT_FAILED


def _backup(args):
    from tljh.install import backup

    try:
        if args.scheduled:
            return backup.run_scheduled(say=_say)
        if not args.file:
            print("tljh backup: give the archive to write: sudo tljh backup FILE [--homes]", file=sys.stderr)
            return EXIT_REFUSED
        with backup.exclusive():
            try:
                result = backup.create(args.file, homes=args.homes, say=_say)
            except OSError as e:
                backup.record_last(None, error=str(e))
                raise
        backup.record_last(result)
    except backup.BackupError as e:
        print(f"tljh backup: {e}", file=sys.stderr)
        return EXIT_REFUSED
    except OSError as e:
        print(f"tljh backup: failed: {e}; no archive was written", file=sys.stderr)
        return EXIT_FAILED
    homes = " with homes" if result["homes"] else " (no homes: add --homes to include them)"
    _say(
        f"backed up {len(result['accounts'])} account(s), config, secrets, hub database and "
        f"{len(result['environments'])} environment(s){homes} to {result['file']} "
        f"({backup.human_size(result['size'])}, {result['seconds']} s). Keep it as safe as the server: it holds secrets."
    )
    return 0


def _restore(args):
    from tljh.hub import preflight
    from tljh.install import backup, restore

    if not args.yes:
        if not sys.stdin.isatty():
            print("tljh restore: this replaces the hub's configuration, users and data; rerun with --yes to confirm", file=sys.stderr)
            return EXIT_REFUSED
        if input("Replace this hub's configuration, users and data with the archive's? [y/N] ").strip().lower() not in ("y", "yes"):
            print("nothing changed")
            return EXIT_FAILED
    try:
        summary = restore.restore(args.file, say=_say, preflight=preflight.check)
    except (restore.RestoreError, backup.BackupError) as e:
        print(f"tljh restore: {e}", file=sys.stderr)
        return EXIT_REFUSED if "nothing was changed" in str(e) or isinstance(e, backup.BackupError) else EXIT_FAILED
    _say(f"restored in {summary['seconds']} s; the hub is running")
    return 0


def _users(args):
    from . import users

    if args.users_verb == "list":
        return users.list_users(as_json=args.json)
    return users.import_csv(args.file, skip_bad=args.skip_bad, reload=not args.no_reload)


def _export(args):
    from tljh.install import z2jh

    return z2jh.export_command(sys.stdout, sys.stderr)


def _import(args):
    from tljh.install import z2jh

    return z2jh.import_command(args.file, dry_run=args.dry_run, out=sys.stdout, err=sys.stderr)


def _loadtest(args):
    from tljh.loadtest.run import main as loadtest

    return loadtest(args)


def _migrate(args):
    from tljh.install import migrate_tljh

    if not args.cleanup:
        print("\n".join(migrate_tljh.report()))
        return 0
    old = migrate_tljh.recorded().get("old_env")
    if not old:
        print("tljh: no migration from TLJH happened here: nothing to clean up", file=sys.stderr)
        return EXIT_REFUSED
    if not args.yes:
        lost = migrate_tljh.not_carried_lines()
        question = f"Remove {old}" + (f" (it holds what was not carried over: {'; '.join(lost)})" if lost else "")
        if not sys.stdin.isatty():
            print(f"tljh: {question}? rerun with --yes to confirm", file=sys.stderr)
            return EXIT_REFUSED
        if input(f"{question}? [y/N] ").strip().lower() not in ("y", "yes"):
            print("nothing removed")
            return EXIT_FAILED
    try:
        removed = migrate_tljh.cleanup()
    except migrate_tljh.MigrationError as e:
        print(f"tljh: {e}", file=sys.stderr)
        return EXIT_REFUSED
    print(f"removed {removed}" if removed else f"{old} was already removed")
    return 0


def _local_packages(args):
    from .local_packages import find, report

    print("\n".join(report(find())))
    return 0


def _unix_names(args):
    from .unix_names import run

    return run(args.action or "list", getattr(args, "hub_name", None), getattr(args, "unix_name", None))


def _env(args):
    from tljh.environments import commands

    return commands.main(args)


def _uninstall(args):
    from tljh.install.uninstall import uninstall

    if not args.yes:
        what = "everything, including users' homes" if args.purge else "the hub (users' homes are kept)"
        if not sys.stdin.isatty():
            print(f"tljh: uninstall removes {what}; rerun with --yes to confirm", file=sys.stderr)
            return EXIT_REFUSED
        if input(f"Remove {what}? [y/N] ").strip().lower() not in ("y", "yes"):
            print("nothing removed")
            return EXIT_FAILED
    uninstall(purge=args.purge)
    print("uninstalled")
    return 0


VERBS = {
    "env": _env,
    "status": _status,
    "backup": _backup,
    "restore": _restore,
    "users": _users,
    "export": _export,
    "import": _import,
    "loadtest": _loadtest,
    "migrate": _migrate,
    "local-packages": _local_packages,
    "unix-names": _unix_names,
    "uninstall": _uninstall,
}


def main(argv=None):
    args = build_parser().parse_args(argv)
    if os.geteuid() != 0:
        print("tljh: must run as root: sudo tljh " + " ".join(argv or sys.argv[1:]), file=sys.stderr)
        return EXIT_REFUSED
    # From an admin's terminal in a user's server, act on the host's /opt/tljh, not the server's view of it
    # (where each environment is the build the server started with).
    reexec_in_host_mount_namespace()
    return VERBS[args.verb](args)


if __name__ == "__main__":
    sys.exit(main())
