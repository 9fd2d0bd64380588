"""``sudo tljh unix-names``: which Unix account each hub user runs as, and the admin's corrections.

The hub refuses a login whose name would share an account, or whose account exists but is not the hub's;
this is where an admin settles such a case (see docs/explanation/security.md).
"""

import sys

from tljh.system import unix_accounts, users


def run(action, hub_name=None, unix_name=None, out=print):
    table = unix_accounts.AccountTable()
    try:
        if action == "list":
            out(f"{'hub user':30} {'Unix account':32} how")
            for e in table.entries():
                how = {"rule": "named by the hub", "adopted": "existed before", "admin": "assigned"}[e.origin]
                flags = [how] + (["locked"] if table.is_locked(e.hub_name) else [])
                if not users.user_exists(e.unix_name):
                    flags.append("not created yet")
                out(f"{e.hub_name:30} {e.unix_name:32} {', '.join(flags)}")
            return 0
        if action == "assign":
            table.assign(hub_name, unix_name)
            out(f"hub user {hub_name!r} runs as {unix_name} from their next server start")
            return 0
        if action == "release":
            old = table.release(hub_name)
            if old is None:
                print(f"tljh unix-names: {hub_name!r} has no account in the table", file=sys.stderr)
                return 1
            out(f"hub user {hub_name!r} no longer owns {old} (the account and its files are kept)")
            return 0
    except unix_accounts.NameRefused as e:
        print(f"tljh unix-names: {e}", file=sys.stderr)
        return 1
    finally:
        table.close()
    raise ValueError(action)
