"""The hub's nftables table: a TCP or UDP port that a user's server opened answers only that user and root.

Ports opened on 127.0.0.1 (a Dash app, a database, ipykernel's output pipe) are otherwise open to every local
user, and addresses alone cannot tell whose process connects (systemd's IPAddressDeny= cannot help). Netfilter
can, on the loopback interface:

- a new connection, on its way out, takes its sender's uid into conntrack (as ``ct mark`` = uid + 1, through a
  map of the uids that may be let in somewhere; any other sender gets 0, which no server lets in). A
  connection keeps the mark it got when it opened, so a server's owner is in the map before the server starts:
  its own connection to the hub, opened while it starts, would otherwise carry 0 and be refused, packet by
  packet, once the table protects the server (nft cannot cast a uid to a mark, so the map is the only way);
- on the way in, ``socket cgroupv2`` finds the socket a packet is for and its cgroup. When that is the cgroup
  of a user's server unit (a set), the pair (cgroup, mark) must be in a set of allowed pairs: the server's
  owner and root. Anything else is refused at once (TCP reset, ICMP port unreachable for UDP);
- on the way out, the same for the socket a packet comes from. Both, for every packet rather than a
  connection's first: nft cannot tell the cgroup of a TIME_WAIT socket, and a SYN that meets one may still
  reach the listener; such a connection then carries nothing either way.

Unix sockets (the servers themselves, kernels over IPC) are not network traffic: file permissions keep them.
The hub writes the whole table from the servers that run, in one nft transaction (:mod:`tljh.hub.port_isolation`).

nft's ``socket cgroupv2 level N`` counts N from the global cgroup root on some kernels and from the cgroup
namespace root of the process that loads the rules on others (newer ones adjust it), while a process in a
container sees its cgroups from its own namespace's root (systemd-nspawn, LXC). So the offset between what we
see and what the kernel counts is measured once with a probe (:func:`find_level_offset`), not guessed: on this
project's test host (Linux 6.18, in an nspawn guest or a cgroup namespace of its own) it is 0. nft names a
cgroup by its path below /sys/fs/cgroup and resolves it to the cgroup's id when it reads the rules: the cgroup
must exist then.
"""

from __future__ import annotations

import dataclasses
import os
import pwd
import re
import socket
import subprocess

from . import paths

NFT = "nft"
TABLE = paths.PORT_RULES_TABLE
# A throwaway table for the level probe, never left behind by a probe that finishes.
PROBE_TABLE = TABLE + "_probe"
CGROUP_FS = "/sys/fs/cgroup"  # where nft looks up cgroup paths
# How far below our cgroup namespace's root the global root may be. Containers nest a few levels deep; the probe
# looks this far and reports the machine unsupported beyond.
MAX_NAMESPACE_DEPTH = 32
NFT_TIMEOUT = 30

ROOT_UID = 0


class Unsupported(Exception):
    """This machine cannot enforce the rules; the message says why, in one line."""


@dataclasses.dataclass(frozen=True)
class Server:
    """A running server unit, as the rules see it."""

    cgroup: str  # nft's name of the unit's cgroup: its path below /sys/fs/cgroup
    level: int  # its depth below the global cgroup root
    uid: int  # the owner's uid


def sender_mark(uid: int) -> int:
    """The conntrack mark of a connection sent by ``uid``. 0 stays free for "a sender no server lets in" (and
    for connections this table never marked)."""
    return uid + 1


def _elements(values) -> str:
    return f"elements = {{ {', '.join(values)} }}" if values else ""


def trusted_uids() -> tuple[int, ...]:
    """Who may connect to every server's ports besides its owner: root (the hub) and the proxy, which connects
    only where the hub's routes send it — a server an older version started still listens on a TCP port and is
    reached through the proxy until its next start (CI's upgrade test: 503 from the proxy after the upgrade)."""
    try:
        return (ROOT_UID, pwd.getpwnam(paths.PROXY_USER).pw_uid)
    except KeyError:
        return (ROOT_UID,)


def ruleset(servers, trusted=(ROOT_UID,), senders=()) -> str:
    """nft commands that replace the whole table with the rules for ``servers`` (one atomic transaction: the
    old rules hold until the new ones do), letting each server's owner and the ``trusted`` uids in. ``senders``:
    more uids whose new connections get their mark (owners of servers about to start). A pure function of its
    arguments."""
    servers = sorted(set(servers), key=lambda s: (s.level, s.cgroup, s.uid))
    for s in servers:
        if '"' in s.cgroup or "\n" in s.cgroup:
            raise ValueError(f"cgroup path not expressible in nft: {s.cgroup!r}")
    uids = sorted(set(trusted) | set(senders) | {s.uid for s in servers})
    senders = [f"{uid} : {sender_mark(uid)}" for uid in uids]
    levels = sorted({s.level for s in servers})
    sets, rules = [], {"input": [], "output": []}
    for level in levels:
        here = [s for s in servers if s.level == level]
        cgroups = sorted({f'"{s.cgroup}"' for s in here})
        allowed = sorted({f'"{s.cgroup}" . {sender_mark(u)}' for s in here for u in (s.uid, *trusted)})
        sets.append(f"\tset servers_{level} {{ type cgroupsv2; {_elements(cgroups)} }}")
        sets.append(f"\tset allowed_{level} {{ type cgroupsv2 . mark; {_elements(allowed)} }}")
        # A TCP reset makes the connecting program fail at once (ECONNREFUSED); UDP gets ICMP port unreachable.
        # The counters show an admin (`nft list table inet tljh`) how much was refused since the last write.
        for chain, interface in (("input", "iif"), ("output", "oif")):
            match = (f"{interface} lo socket cgroupv2 level {level} @servers_{level} "
                     f"socket cgroupv2 level {level} . ct mark != @allowed_{level}")
            rules[chain] += [f"\t\t{match} meta l4proto tcp counter reject with tcp reset",
                             f"\t\t{match} meta l4proto udp counter reject"]
    body = "\n".join([
        f"\tmap senders {{ type uid : mark; {_elements(senders)} }}",
        *sets,
        "\tchain output {",
        "\t\ttype filter hook output priority filter; policy accept;",
        # Every new loopback connection is re-marked: a mark left by something else must not pass for a uid.
        "\t\toif lo ct state new ct mark set 0",
        "\t\toif lo ct state new ct mark set meta skuid map @senders",
        *rules["output"],
        "\t}",
        "\tchain input {",
        "\t\ttype filter hook input priority filter; policy accept;",
        *rules["input"],
        "\t}",
    ])
    # Declaring the table first makes the delete succeed when it is not there yet.
    return f"table {TABLE} {{}}\ndelete table {TABLE}\ntable {TABLE} {{\n{body}\n}}\n"


def nft(*args, input=None) -> str:
    """Run nft; its output. Raises Unsupported when nft is missing or refuses (with the first line it says)."""
    try:
        result = subprocess.run([NFT, *args], input=input, capture_output=True, text=True, timeout=NFT_TIMEOUT)
    except FileNotFoundError:
        raise Unsupported("nft is not installed (Debian/Ubuntu package nftables)") from None
    except (OSError, subprocess.TimeoutExpired) as e:
        raise Unsupported(f"nft failed: {e}") from None
    if result.returncode != 0:
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        raise Unsupported(f"nft failed: {lines[0] if lines else 'exit status %d' % result.returncode}")
    return result.stdout


def apply(servers, senders=()) -> None:
    nft("-f", "-", input=ruleset(servers, trusted_uids(), senders))


def remove() -> bool:
    """Delete the table; True if it was there. Raises Unsupported only when nft is there and fails."""
    if not table_present():
        return False
    nft("-f", "-", input=f"table {TABLE} {{}}\ndelete table {TABLE}\n")
    return True


def table_present() -> bool:
    try:
        nft("list", "table", *TABLE.split())
    except Unsupported:
        return False
    return True


# ---- where cgroups are


def cgroup2_mount(mountinfo="/proc/self/mountinfo") -> tuple[str, str] | None:
    """(mount point, root) of the cgroup2 hierarchy: /sys/fs/cgroup on cgroup v2, /sys/fs/cgroup/unified on
    hybrid systems. The root is the mounted directory as our cgroup namespace sees it ("/" unless a subtree was
    bind-mounted). None on cgroup v1 only."""
    try:
        with open(mountinfo) as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    for line in lines:
        left, _, right = line.partition(" - ")
        fields = left.split()
        if right.split()[:1] == ["cgroup2"] and len(fields) >= 5:
            return _unescape(fields[4]), _unescape(fields[3])
    return None


def _unescape(field: str) -> str:
    """mountinfo writes space, tab, newline and backslash as octal escapes."""
    for code in ("\\040", "\\011", "\\012", "\\134"):
        field = field.replace(code, chr(int(code[1:], 8)))
    return field


def process_cgroup(pid="self", proc="/proc") -> str | None:
    """The cgroup2 path of a process, as our cgroup namespace sees it (``/system.slice/x.service``); None if the
    process is gone."""
    try:
        with open(os.path.join(proc, str(pid), "cgroup")) as f:
            text = f.read()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("0::"):
            return line[3:]
    return None


def depth(cgroup: str) -> int:
    """Levels below our namespace's root: "/" is 0, "/system.slice/x.service" is 2."""
    return len([part for part in cgroup.split("/") if part])


def nft_name(cgroup: str, mount: tuple[str, str], cgroup_fs=CGROUP_FS) -> str | None:
    """The name nft knows ``cgroup`` by: its directory, relative to /sys/fs/cgroup. None when the cgroup lies
    outside the mounted hierarchy."""
    mount_point, root = mount
    if ".." in root.split("/"):
        # mounted from above our cgroup namespace's root: where our cgroups are in it cannot be told
        return None
    relative = os.path.relpath(cgroup, root)
    if relative == ".." or relative.startswith("../"):
        return None
    directory = os.path.normpath(os.path.join(mount_point, relative))
    name = os.path.relpath(directory, cgroup_fs)
    return None if name.startswith("..") else name


# ---- the level of our cgroup namespace's root


def _probe_ruleset(name: str, port: int, levels) -> str:
    rules = "\n".join(f'\t\tiif lo tcp dport {port} socket cgroupv2 level {level} "{name}" counter' for level in levels)
    return (f"table {PROBE_TABLE} {{}}\ndelete table {PROBE_TABLE}\n"
            f"table {PROBE_TABLE} {{\n\tchain input {{\n\t\ttype filter hook input priority filter; policy accept;\n"
            f"{rules}\n\t}}\n}}\n")


def _matched_levels(listing: str) -> list[int]:
    """Levels of the probe rules whose counter saw a packet, from ``nft list table`` (its JSON form leaves the
    level out, nft 1.0.6)."""
    return [int(level) for level, packets in _PROBE_RULE.findall(listing) if int(packets)]


_PROBE_RULE = re.compile(r"socket cgroupv2 level (\d+) .*counter packets (\d+)")


def find_level_offset() -> int:
    """What to add to a cgroup's depth as we see it to get nft's ``level`` of it: 0 on a plain server, and in a
    container on kernels that count from its cgroup namespace's root; the depth of that root in a container
    on kernels that count from the global root.

    Measured, because a container cannot see it: this process listens on a loopback port, and a connection to
    it is matched against its own cgroup at every level it could be at; the rule that counts a packet says
    which. Raises Unsupported (why, in one line) when the kernel or nft cannot match sockets by cgroup here.
    """
    mount = cgroup2_mount()
    if mount is None:
        raise Unsupported("no cgroup v2 hierarchy is mounted")
    own = process_cgroup()
    name = nft_name(own, mount) if own else None
    if name is None:
        raise Unsupported("this process's cgroup v2 directory is not under /sys/fs/cgroup")
    own_depth = depth(own)
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        nft("-f", "-", input=_probe_ruleset(name, port, range(own_depth, own_depth + MAX_NAMESPACE_DEPTH + 1)))
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=5):
                pass
            matched = _matched_levels(nft("list", "table", *PROBE_TABLE.split()))
        finally:
            nft("-f", "-", input=f"table {PROBE_TABLE} {{}}\ndelete table {PROBE_TABLE}\n")
    if len(matched) != 1:
        raise Unsupported("the kernel does not match sockets to their cgroup (nft socket cgroupv2; Linux 5.13+)")
    return matched[0] - own_depth
