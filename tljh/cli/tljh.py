"""The ``tljh`` command: operations on the installation as a whole (``tljh-config`` edits its settings)."""

import argparse
import os
import sys


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
    verbs.add_parser(
        "status",
        help="show whether the hub and proxy run, the config's state and the served certificates",
        description="Exit code 0 when the config is valid and the hub and the proxy both answer.",
    )
    loadtest = verbs.add_parser(
        "loadtest",
        help="simulated people log in, start servers, run code and stop, all at once or spread out; report the numbers",
        description="Simulated people use this hub the way a class does (login form, profile picker, JupyterLab, "
        "a kernel over its websocket, stop), and the hub's latencies, memory and CPU are reported, with a JSON "
        "report and a PNG timeline. For test hubs: it refuses a hub with real users unless --allow-real-users. "
        "Exit code 0 when every person got through every phase.",
    )
    from tljh.loadtest.run import add_arguments

    add_arguments(loadtest)
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
    return parser


def _migrate(args):
    from tljh.install import migrate_tljh

    if not args.cleanup:
        print("\n".join(migrate_tljh.report()))
        return 0
    old = migrate_tljh.recorded().get("old_env")
    if not old:
        print("tljh: no migration from TLJH happened here: nothing to clean up", file=sys.stderr)
        return 2
    if not args.yes:
        lost = migrate_tljh.not_carried_lines()
        question = f"Remove {old}" + (f" (it holds what was not carried over: {'; '.join(lost)})" if lost else "")
        if not sys.stdin.isatty():
            print(f"tljh: {question}? rerun with --yes to confirm", file=sys.stderr)
            return 2
        if input(f"{question}? [y/N] ").strip().lower() not in ("y", "yes"):
            print("nothing removed")
            return 1
    try:
        removed = migrate_tljh.cleanup()
    except migrate_tljh.MigrationError as e:
        print(f"tljh: {e}", file=sys.stderr)
        return 2
    print(f"removed {removed}" if removed else f"{old} was already removed")
    return 0


def main(argv=None):
    args = build_parser().parse_args(argv)
    if os.geteuid() != 0:
        print("tljh: must run as root: sudo tljh " + " ".join(argv or sys.argv[1:]), file=sys.stderr)
        return 2
    if args.verb == "status":
        from .status import report

        lines, healthy = report()
        print("\n".join(lines))
        return 0 if healthy else 1
    if args.verb == "loadtest":
        from tljh.loadtest.run import main as loadtest

        return loadtest(args)
    if args.verb == "migrate":
        return _migrate(args)
    if args.verb == "local-packages":
        from .local_packages import find, report

        print("\n".join(report(find())))
        return 0
    if args.verb == "uninstall":
        from tljh.install.uninstall import uninstall

        if not args.yes:
            what = "everything, including users' homes" if args.purge else "the hub (users' homes are kept)"
            if not sys.stdin.isatty():
                print(f"tljh: uninstall removes {what}; rerun with --yes to confirm", file=sys.stderr)
                return 2
            if input(f"Remove {what}? [y/N] ").strip().lower() not in ("y", "yes"):
                print("nothing removed")
                return 1
        uninstall(purge=args.purge)
        print("uninstalled")
    return 0


if __name__ == "__main__":
    sys.exit(main())
