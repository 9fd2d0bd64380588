"""Which process listens on a TCP port: read from /proc, so an admin can be told what holds a port."""

import dataclasses
import glob
import os


@dataclasses.dataclass(frozen=True)
class Holder:
    pid: int
    command: str  # the process's command line (or its name when it has none)
    unit: str  # the systemd unit it runs in ("" when none)

    def describe(self):
        where = f", unit {self.unit}" if self.unit else ""
        return f"{self.command} (pid {self.pid}{where})"


def _listening_inodes(port):
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                rows = f.read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            # local_address is HEXIP:HEXPORT; state 0A is LISTEN.
            if len(fields) > 9 and fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(fields[9])
    return inodes


def unit_of(pid):
    """The systemd unit (service or scope) process ``pid`` runs in, from its cgroup."""
    try:
        with open(f"/proc/{pid}/cgroup") as f:
            lines = f.read().splitlines()
    except OSError:
        return ""
    # cgroup v2 ("0::/system.slice/x.service") or v1's name=systemd hierarchy.
    for line in sorted(lines, key=lambda l: not (l.startswith("0::") or "name=systemd" in l)):
        for part in reversed(line.split(":", 2)[-1].split("/")):
            if part.endswith((".service", ".scope")):
                return part
    return ""


def holders(port):
    """The processes with a listening TCP socket on ``port`` (any address, IPv4 or IPv6)."""
    inodes = {f"socket:[{inode}]" for inode in _listening_inodes(port)}
    found = []
    if not inodes:
        return found
    for fd_dir in glob.glob("/proc/[0-9]*/fd"):
        pid = int(fd_dir.split("/")[2])
        try:
            fds = os.listdir(fd_dir)
        except OSError:
            continue
        targets = set()
        for fd in fds:
            try:
                targets.add(os.readlink(os.path.join(fd_dir, fd)))
            except OSError:  # closed meanwhile (the listing's own descriptor, for one)
                continue
        if targets & inodes:
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    command = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
                if not command:
                    with open(f"/proc/{pid}/comm") as f:
                        command = f.read().strip()
            except OSError:
                continue
            found.append(Holder(pid, command, unit_of(pid)))
    return sorted(found, key=lambda h: h.pid)
