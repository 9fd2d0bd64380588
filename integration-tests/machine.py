#!/usr/bin/env python3
"""Fresh systemd servers for integration tests, booted with systemd-nspawn.

A library (``Machine.boot(...)`` for pytest fixtures) and a command for people::

    python3 integration-tests/machine.py build debian-12     # build or reuse the cached image
    python3 integration-tests/machine.py boot debian-12      # boot one, print how to get a shell
    python3 integration-tests/machine.py try debian-12       # boot, install this checkout, wait for Ctrl-C
    python3 integration-tests/machine.py list                # machines, their OS and owner
    python3 integration-tests/machine.py shell NAME          # root shell inside (works from any terminal)
    python3 integration-tests/machine.py run NAME -- CMD...  # run a command inside
    python3 integration-tests/machine.py destroy NAME|all    # tear down
    python3 integration-tests/machine.py gc                  # tear down machines (and networks) of killed runs

Root is required. Python 3.10+ standard library only. The recipe (and why each step is needed) is in
TEST-MACHINES.md: debootstrap images cached as zstd tarballs, one fresh unpacked copy per machine, booted with
``systemd-nspawn --boot`` inside per-machine cgroup-v1 directories so MemoryMax=/CPUQuota=/TasksMax= are enforced.
"""

from __future__ import annotations

import argparse
import atexit
import fcntl
import hashlib
import io
import json
import os
import re
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
import uuid
from pathlib import Path

RECIPE_VERSION = 1
CACHE_DIR = Path(os.environ.get("TLJH_TEST_IMAGE_DIR", "/var/tmp/tljh-test-images"))
MACHINES_DIR = Path(os.environ.get("TLJH_TEST_MACHINE_DIR", "/var/tmp/tljh-test-machines"))
STATE_DIR = Path("/run/tljh-test-machines")
REPO_ROOT = Path(__file__).resolve().parent.parent
GUEST_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
HOST_CA_DIR = Path("/usr/local/share/ca-certificates")

PACKAGES = [
    "systemd", "systemd-sysv", "dbus", "libpam-systemd", "python3", "python3-venv", "sudo",
    "ca-certificates", "curl", "iproute2", "procps", "adduser",
]
DEBIAN_MIRROR = "http://deb.debian.org/debian"
UBUNTU_MIRROR = "http://archive.ubuntu.com/ubuntu"
UBUNTU_KEYRING = CACHE_DIR / "ubuntu-archive-keyring.gpg"

OSES = {
    "debian-12": {"suite": "bookworm", "distro": "debian"},
    "debian-13": {"suite": "trixie", "distro": "debian"},
    "ubuntu-22.04": {"suite": "jammy", "distro": "ubuntu"},
    # this debootstrap has no noble script; gutsy's is the generic modern-Ubuntu script
    "ubuntu-24.04": {"suite": "noble", "distro": "ubuntu", "script": "gutsy"},
}

# cgroup-v1 controllers the guest's systemd needs writable to enforce MemoryMax=, CPUQuota=, TasksMax=, IO*=.
CGROUP_CONTROLLERS = ["memory", "cpu", "cpuacct", "pids", "blkio", "systemd"]


class MachineError(Exception):
    pass


class MachineCommandError(MachineError):
    def __init__(self, cmd, returncode, stdout, stderr):
        self.cmd, self.returncode, self.stdout, self.stderr = cmd, returncode, stdout, stderr
        super().__init__(
            f"command {cmd!r} exited with {returncode}\n--- stdout ---\n{_tail(stdout)}\n--- stderr ---\n{_tail(stderr)}"
        )


def _tail(text, n=4000):
    text = text or ""
    return text if len(text) <= n else "[...]\n" + text[-n:]


def log(msg):
    print(f"[machine {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _require_root():
    if os.geteuid() != 0:
        raise MachineError("test machines need root (systemd-nspawn, cgroups, nsenter): run with sudo")


def _sh(cmd, **kw):
    kw.setdefault("check", True)
    return subprocess.run(cmd, **kw)


# ---------------------------------------------------------------- images

def image_key(os_name):
    spec = OSES[os_name]
    data = json.dumps([RECIPE_VERSION, spec, PACKAGES], sort_keys=True).encode()
    return hashlib.sha256(data).hexdigest()[:12]


def image_path(os_name):
    return CACHE_DIR / f"{os_name}-{image_key(os_name)}.tar.zst"


def _sources_list(spec):
    s = spec["suite"]
    if spec["distro"] == "debian":
        comp = "main"
        return (f"deb {DEBIAN_MIRROR} {s} {comp}\n"
                f"deb {DEBIAN_MIRROR} {s}-updates {comp}\n"
                f"deb http://security.debian.org/debian-security {s}-security {comp}\n")
    comp = "main universe"
    return (f"deb {UBUNTU_MIRROR} {s} {comp}\n"
            f"deb {UBUNTU_MIRROR} {s}-updates {comp}\n"
            f"deb http://security.ubuntu.com/ubuntu {s}-security {comp}\n")


def build_image(os_name, *, force=False) -> Path:
    """Build (or reuse) the cached image tarball for os_name; returns its path."""
    _require_root()
    if os_name not in OSES:
        raise MachineError(f"unknown OS {os_name!r}; known: {', '.join(OSES)}")
    target = image_path(os_name)
    if target.exists() and not force:
        return target
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    if force:  # do not force-rebuild while machines of this OS run: their overlays use the old base
        shutil.rmtree(target.with_name(target.name.replace(".tar.zst", ".rootfs")), ignore_errors=True)
    with open(CACHE_DIR / f"{os_name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another run may be building the same image: wait for it
        if target.exists() and not force:
            return target
        t0 = time.monotonic()
        log(f"building image {target.name} (once; cached afterwards)")
        spec = OSES[os_name]
        work = Path(tempfile.mkdtemp(prefix=f"build-{os_name}-", dir=CACHE_DIR))
        try:
            root = work / "root"
            cmd = ["debootstrap", "--variant=minbase", "--include=" + ",".join(PACKAGES)]
            if spec["distro"] == "ubuntu":
                cmd.append("--components=main,universe")
                if UBUNTU_KEYRING.exists():
                    cmd.append(f"--keyring={UBUNTU_KEYRING}")
                else:
                    cmd.append("--no-check-gpg")  # first Ubuntu build; its keyring is kept for later builds
            mirror = DEBIAN_MIRROR if spec["distro"] == "debian" else UBUNTU_MIRROR
            cmd += [spec["suite"], str(root), mirror]
            if spec.get("script"):
                cmd.append(f"/usr/share/debootstrap/scripts/{spec['script']}")
            with open(work / "debootstrap.log", "w") as out:
                r = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT)
            if r.returncode != 0:
                raise MachineError(f"debootstrap failed ({r.returncode}); log tail:\n"
                                   + _tail((work / "debootstrap.log").read_text(errors="replace"), 3000))
            keyring = root / "usr/share/keyrings/ubuntu-archive-keyring.gpg"
            if spec["distro"] == "ubuntu" and keyring.exists() and not UBUNTU_KEYRING.exists():
                shutil.copy2(keyring, UBUNTU_KEYRING)
            (root / "etc/apt/sources.list").write_text(_sources_list(spec))
            # bring it to the current point release, like a freshly provisioned server
            upgrade = ("set -e; export DEBIAN_FRONTEND=noninteractive; apt-get update -q;"
                       " apt-get -y -q -o Dpkg::Options::=--force-confold dist-upgrade; apt-get clean")
            with open(work / "upgrade.log", "w") as out:
                r = subprocess.run(
                    ["systemd-nspawn", "--quiet", "--register=no", "--keep-unit", "--directory", str(root),
                     "--resolv-conf=replace-host", "--setenv=PATH=" + GUEST_PATH, "/bin/sh", "-c", upgrade],
                    stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
            if r.returncode != 0:
                raise MachineError("apt-get dist-upgrade in the new image failed; log tail:\n"
                                   + _tail((work / "upgrade.log").read_text(errors="replace"), 3000))
            _clean_rootfs(root)
            tmp = work / "image.tar.zst"
            _sh(["tar", "-C", str(root), "--numeric-owner", "--xattrs", "--xattrs-include=*", "--acls",
                 "-I", "zstd -T0 -6", "-cf", str(tmp), "."])
            os.rename(tmp, target)
            log(f"built {target} ({target.stat().st_size >> 20} MB) in {time.monotonic() - t0:.0f} s")
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return target


def base_rootfs(os_name) -> Path:
    """The image unpacked once (read-only lower layer of every machine's overlay root)."""
    image = build_image(os_name)
    base = image.with_name(image.name.replace(".tar.zst", ".rootfs"))
    if base.is_dir():
        return base
    with open(CACHE_DIR / f"{os_name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if base.is_dir():
            return base
        t0 = time.monotonic()
        tmp = Path(tempfile.mkdtemp(prefix=f"unpack-{os_name}-", dir=CACHE_DIR))
        try:
            _sh(["tar", "-C", str(tmp), "--numeric-owner", "--xattrs", "--xattrs-include=*", "--acls",
                 "-I", "zstd", "-xpf", str(image)])
            os.rename(tmp, base)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        log(f"unpacked {image.name} once into {base} in {time.monotonic() - t0:.0f} s")
    return base


def _use_overlay():
    if os.environ.get("TLJH_TEST_NO_OVERLAY"):
        return False
    return "\toverlay\n" in Path("/proc/filesystems").read_text()


def _clean_rootfs(root: Path):
    """Make the tree look like a never-booted server."""
    (root / "etc/machine-id").write_text("")
    dbus_id = root / "var/lib/dbus/machine-id"
    if dbus_id.exists() and not dbus_id.is_symlink():
        dbus_id.unlink()
    for p in ["etc/resolv.conf", "etc/hostname"]:
        q = root / p
        if q.exists() or q.is_symlink():
            q.unlink()
    lists = root / "var/lib/apt/lists"
    shutil.rmtree(lists, ignore_errors=True)
    (lists / "partial").mkdir(parents=True)
    for d in ["var/cache/apt/archives", "var/log"]:
        for p in (root / d).glob("*"):
            if p.is_file():
                p.unlink()
    for p in (root / "var/cache/apt").glob("*.bin"):
        p.unlink()
    for p in (root / "tmp").glob("*"):
        shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()


# ---------------------------------------------------------------- cgroups

def _own_cgroup(controller):
    key = "name=systemd" if controller == "systemd" else controller
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        hierarchy, ctrls, path = line.split(":", 2)
        if key in ctrls.split(",") or (controller == "unified" and hierarchy == "0"):
            return path
    return "/"


def _cgroup_dirs(name):
    """Per-machine cgroup directories, nested below this process's own cgroup in each hierarchy.

    Also in the cgroup2 ("unified") hierarchy: nspawn puts the guest's units in ``payload/`` below its own
    cgroup there, so machines started from the same cgroup shared ``payload/system.slice/<unit>``: a running
    unit in one machine kept a stopped unit of the same name loaded in another ("already loaded" at its next
    start).
    """
    dirs = {}
    for c in [*CGROUP_CONTROLLERS, "unified"]:
        mount = Path("/sys/fs/cgroup") / c
        if not (mount / "cgroup.procs").exists():
            continue
        dirs[c] = str(mount / _own_cgroup(c).lstrip("/") / f"tljh-test-{name}")
    return dirs


def _parse_size(value):
    if isinstance(value, int):
        return value
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)i?B?\s*", str(value), re.I)
    if not m:
        raise ValueError(f"bad memory size {value!r}")
    return int(float(m.group(1)) * 1024 ** " KMGT".index(m.group(2).upper() or " "))


def _cgroup_pids(path):
    pids = set()
    for dirpath, _dirs, files in os.walk(path):
        if "cgroup.procs" in files:
            try:
                pids.update(int(x) for x in Path(dirpath, "cgroup.procs").read_text().split())
            except OSError:
                pass
    return pids


def _rmdir_tree(path):
    """rmdir a cgroup directory and its children, deepest first (cgroup dirs hold only virtual files)."""
    if not os.path.isdir(path):
        return True
    for dirpath, dirs, _files in os.walk(path, topdown=False):
        try:
            os.rmdir(dirpath)
        except FileNotFoundError:
            pass
        except OSError:
            return False
    return True


# ---------------------------------------------------------------- network

# Every machine gets a network namespace of its own, joined to the host by a veth pair:
#   host side  tljh-h<N>  NET_PREFIX.<N>.1/30      guest side  eth0  NET_PREFIX.<N>.2/30 (default route via .1)
# so machines never share ports and tests reach a guest's services at machine.address. Outbound traffic is
# masqueraded by one nftables table shared by all machines; it exists (and ip_forward is on) while at least
# one machine network exists, and the last teardown removes it and restores ip_forward.
NET_PREFIX = os.environ.get("TLJH_TEST_NET_PREFIX", "10.231")  # a /16 this host does not use
NET_LOCK = STATE_DIR / "network.lock"
NFT_TABLE = "tljh-test"
IP_FORWARD = Path("/proc/sys/net/ipv4/ip_forward")
IP_FORWARD_SAVED = STATE_DIR / "ip_forward.saved"
NETNS_DIR = Path("/run/netns")
NET_INDEXES = range(1, 255)


def _netns_name(index):
    return f"tljh-test-{index}"


def _host_if(index):
    return f"tljh-h{index}"


def _guest_address(index):
    return f"{NET_PREFIX}.{index}.2"


def _host_address(index):
    return f"{NET_PREFIX}.{index}.1"


class _network_lock:
    """Serialises allocating, creating and removing machine networks (and the shared NAT table) across
    processes. Held for milliseconds, never across a boot."""

    def __enter__(self):
        STATE_DIR.mkdir(parents=True, exist_ok=True)
        self.f = open(NET_LOCK, "a")
        fcntl.flock(self.f, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc):
        self.f.close()
        return False


def _ip(*args, check=True):
    r = subprocess.run(["ip", *args], capture_output=True, text=True)
    if check and r.returncode != 0:
        raise MachineError(f"ip {' '.join(args)}: {r.stderr.strip()}")
    return r


def _state_indexes():
    """Network indexes claimed in machines' state files."""
    used = set()
    for f in STATE_DIR.glob("*.json") if STATE_DIR.exists() else []:
        try:
            index = json.loads(f.read_text()).get("net")
        except (OSError, ValueError):
            continue
        if index:
            used.add(index)
    return used


def _existing_indexes():
    found = set()
    for p in list(NETNS_DIR.glob("tljh-test-*")) + list(Path("/sys/class/net").glob("tljh-h*")):
        suffix = p.name.removeprefix("tljh-test-").removeprefix("tljh-h")
        if suffix.isdigit():
            found.add(int(suffix))
    return found


def _nameservers(path):
    try:
        text = Path(path).read_text()
    except OSError:
        return []
    return [line.split()[1] for line in text.splitlines() if line.startswith("nameserver") and len(line.split()) > 1]


def _resolv_conf_option():
    """How nspawn gives the guest DNS: the host's resolv.conf, unless it points at a resolver on the host's
    loopback (systemd-resolved's 127.0.0.53, a local dnsmasq), which the guest's own loopback does not have;
    then systemd-resolved's list of upstream servers."""
    def usable(path):
        servers = _nameservers(path)
        return servers and not all(s.startswith("127.") or s == "::1" for s in servers)
    if usable("/etc/resolv.conf"):
        return "--resolv-conf=replace-host"
    if usable("/run/systemd/resolve/resolv.conf"):
        return "--resolv-conf=replace-uplink"
    log("warning: the host's DNS servers are all on its loopback, which machines cannot reach;"
        " name resolution inside machines will fail")
    return "--resolv-conf=replace-host"


INOTIFY_INSTANCES = Path("/proc/sys/fs/inotify/max_user_instances")
INOTIFY_INSTANCES_NEEDED = 1024


def _ensure_inotify_room():
    """Every guest's systemd, journald and logind take inotify instances from root's host-wide budget
    (128 by default): with a dozen machines booting at once, guests stopped with "Failed to create inotify
    object: Too many open files" and never reached running. Raised, never lowered, and left raised (it is
    a ceiling, not a reservation)."""
    if int(INOTIFY_INSTANCES.read_text()) < INOTIFY_INSTANCES_NEEDED:
        INOTIFY_INSTANCES.write_text(f"{INOTIFY_INSTANCES_NEEDED}\n")


def _ensure_nat():
    """Forwarding and masquerading for every machine network (idempotent; call under _network_lock)."""
    if IP_FORWARD.read_text().strip() != "1":
        if not IP_FORWARD_SAVED.exists():
            IP_FORWARD_SAVED.write_text(IP_FORWARD.read_text())
        IP_FORWARD.write_text("1\n")
    if subprocess.run(["nft", "list", "table", "ip", NFT_TABLE], capture_output=True).returncode == 0:
        return
    net = f"{NET_PREFIX}.0.0/16"
    rules = f"""
table ip {NFT_TABLE} {{
    chain postrouting {{
        type nat hook postrouting priority srcnat; policy accept;
        ip saddr {net} ip daddr != {net} masquerade
    }}
    chain forward {{
        type filter hook forward priority filter; policy accept;
        # machines are separate servers: none reaches another's network
        ip saddr {net} ip daddr {net} drop
    }}
}}
"""
    r = subprocess.run(["nft", "-f", "-"], input=rules, capture_output=True, text=True)
    if r.returncode != 0:
        raise MachineError(f"could not add the nftables table {NFT_TABLE}: {r.stderr.strip()}")


def _drop_nat_if_unused(keep=()):
    """Remove the NAT table and restore ip_forward once no machine network is left (under _network_lock)."""
    if _existing_indexes() - set(keep):
        return
    subprocess.run(["nft", "delete", "table", "ip", NFT_TABLE], capture_output=True)
    if IP_FORWARD_SAVED.exists():
        IP_FORWARD.write_text(IP_FORWARD_SAVED.read_text())
        IP_FORWARD_SAVED.unlink()


def _remove_network(index):
    """Delete a machine network's netns and veth pair (idempotent; call under _network_lock). Returns problems."""
    ns = _netns_name(index)
    if (NETNS_DIR / ns).exists():
        _ip("netns", "delete", ns, check=False)
    if Path("/sys/class/net", _host_if(index)).exists():
        _ip("link", "delete", _host_if(index), check=False)
    problems = []
    deadline = time.monotonic() + 5
    while (NETNS_DIR / ns).exists() or Path("/sys/class/net", _host_if(index)).exists():
        if time.monotonic() > deadline:
            problems.append(f"network {index} ({ns}, {_host_if(index)}) could not be removed")
            break
        time.sleep(0.05)
    return problems


def gc_networks():
    """Remove machine networks no machine's state file claims (left by a run killed mid-boot), then the
    NAT table if nothing uses it. Returns the indexes removed."""
    removed = []
    with _network_lock():
        for index in sorted(_existing_indexes() - _state_indexes()):
            log(f"removing network {index} ({_netns_name(index)}): no machine owns it")
            _remove_network(index)
            removed.append(index)
        _drop_nat_if_unused()
    return removed



# ---------------------------------------------------------------- machines

_live: dict[str, "Machine"] = {}
_handlers_installed = False


def _cleanup_live():
    for m in list(_live.values()):
        try:
            m.destroy()
        except Exception as e:  # noqa: BLE001 - best effort at exit
            log(f"teardown of {m.name} failed: {e}")


def _install_handlers():
    global _handlers_installed
    if _handlers_installed:
        return
    _handlers_installed = True
    atexit.register(_cleanup_live)
    import threading
    if threading.current_thread() is not threading.main_thread():
        return
    for sig in (signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(sig) in (signal.SIG_DFL, None):
            signal.signal(sig, _exit_on_signal)


def _exit_on_signal(signum, _frame):
    # Treated like Ctrl-C: unwinds through context managers, pytest stops the session and tears its fixtures
    # down (a SystemExit would only fail the current test), then atexit destroys anything left.
    raise KeyboardInterrupt(f"signal {signum}")


WRAPPER = r"""#!/bin/bash
# Runs as the machine's supervisor: join the machine's cgroups, then (re)start systemd-nspawn.
# nspawn exits with 133 when the guest reboots: start it again, like a server coming back up.
for f in {cgroup_files}; do echo $$ > "$f" || exit 90; done
while :; do
    [ -e {stop_file} ] && exit 0
    {nspawn} &
    child=$!
    echo $child > {nspawn_pid_file}
    wait $child
    rc=$?
    echo "[wrapper] systemd-nspawn exited with $rc" >&2
    [ $rc -eq 133 ] || exit $rc
done
"""


class Machine:
    """One booted systemd-nspawn machine. Use ``Machine.boot(...)`` (and ``with``), never the constructor."""

    def __init__(self, name, os_name, machine_dir, state_file=None):
        self.name = name
        self.os_name = os_name
        self.machine_dir = Path(machine_dir)  # rootfs (or overlay upper/work + merged root) and nothing else
        self.root = self.machine_dir / "root"
        self.state_file = Path(state_file or STATE_DIR / f"{name}.json")
        self.run_dir = STATE_DIR / name
        self.cgroups: dict[str, str] = {}
        self.wrapper_pid: int | None = None
        self.memory_max = None
        self._destroyed = False
        self._fixed_pid1 = None
        self.net: int | None = None  # index of this machine's network (see "network" above)
        self.owner = None  # (pid, start time) of the process that booted it and tears it down; None = detached

    # ---- network

    @property
    def address(self):
        """The guest's IPv4 address, reachable from the host (services inside listening on all addresses)."""
        return _guest_address(self.net) if self.net else None

    @property
    def host_address(self):
        """The host's address as the guest sees it (its default gateway)."""
        return _host_address(self.net) if self.net else None

    @property
    def netns(self):
        """Name of the machine's network namespace, for `ip -n NETNS ...` or `ip netns exec NETNS ...`."""
        return _netns_name(self.net) if self.net else None

    def url(self, path="/", *, port=None, scheme="http"):
        """URL of path on this machine as the host reaches it, e.g. m.url("/hub/login") -> http://10.231.3.2/hub/login."""
        netloc = self.address if port is None else f"{self.address}:{port}"
        return f"{scheme}://{netloc}/{path.lstrip('/')}"

    def _setup_network(self):
        """Claim a free network index (recorded in the state file before anything exists, so a killed run's
        leftovers are found by gc) and create the netns, veth pair, addresses, route and NAT."""
        with _network_lock():
            free = sorted(set(NET_INDEXES) - _state_indexes() - _existing_indexes())
            if not free:
                raise MachineError(f"all {len(NET_INDEXES)} machine networks are in use (`machine.py list`, `gc`)")
            self.net = free[0]
            self._save_state()
            ns, host_if = self.netns, _host_if(self.net)
            _ip("netns", "add", ns)
            _ip("link", "add", host_if, "type", "veth", "peer", "name", "eth0", "netns", ns)
            _ip("addr", "add", f"{self.host_address}/30", "dev", host_if)
            _ip("link", "set", host_if, "up")
            _ip("-n", ns, "addr", "add", f"{self.address}/30", "dev", "eth0")
            _ip("-n", ns, "link", "set", "eth0", "up")
            _ip("-n", ns, "link", "set", "lo", "up")
            _ip("-n", ns, "route", "add", "default", "via", self.host_address)
            _ensure_nat()
            _ensure_inotify_room()

    # ---- lifecycle

    @classmethod
    def boot(cls, os_name="debian-12", *, memory_max=None, name=None, detach=False) -> "Machine":
        """Unpack a fresh copy of the cached image, boot it and wait until systemd is up.

        detach=True (for the CLI) leaves the machine running when this process exits.
        """
        _require_root()
        name = name or f"tljh-{os_name.replace('.', '')}-{secrets.token_hex(3)}"
        if not re.fullmatch(r"[a-z0-9][a-z0-9-]{0,62}", name):
            raise MachineError(f"bad machine name {name!r}: use lowercase letters, digits and -")
        if (STATE_DIR / f"{name}.json").exists():
            raise MachineError(f"a machine named {name} already exists (destroy it first)")
        t0 = time.monotonic()
        m = cls(name, os_name, MACHINES_DIR / name)
        m.memory_max = memory_max
        if not detach:
            m.owner = [os.getpid(), _proc_start_time(os.getpid())]
            _install_handlers()
            _live[name] = m
        try:
            m._setup_network()
            m._make_root()
            t1 = time.monotonic()
            m._start()
            m._wait_running()
            t2 = time.monotonic()
            m._install_host_ca()
        except BaseException:
            m.destroy()
            raise
        t3 = time.monotonic()
        log(f"{name} ({os_name}) is up at {m.address} in {t3 - t0:.1f} s (root {t1 - t0:.1f} s,"
            f" boot {t2 - t1:.1f} s, CA {t3 - t2:.1f} s)")
        return m

    def _make_root(self):
        """A fresh root: an overlay over the unpacked image (instant), or a full unpacked copy."""
        MACHINES_DIR.mkdir(parents=True, exist_ok=True)
        STATE_DIR.mkdir(parents=True, exist_ok=True)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.machine_dir.mkdir()
        self.root.mkdir()
        self._save_state()
        if _use_overlay():
            base = base_rootfs(self.os_name)
            (self.machine_dir / "upper").mkdir()
            (self.machine_dir / "work").mkdir()
            _sh(["mount", "-t", "overlay", f"tljh-test-{self.name}", "-o",
                 f"lowerdir={base},upperdir={self.machine_dir / 'upper'},workdir={self.machine_dir / 'work'}",
                 str(self.root)])
        else:
            _sh(["tar", "-C", str(self.root), "--numeric-owner", "--xattrs", "--xattrs-include=*", "--acls",
                 "-I", "zstd", "-xpf", str(build_image(self.os_name))])
        (self.root / "etc/machine-id").write_text(uuid.uuid4().hex + "\n")
        (self.root / "etc/hostname").write_text(self.name + "\n")
        hosts = self.root / "etc/hosts"
        text = hosts.read_text() if hosts.exists() else "127.0.0.1\tlocalhost\n"
        hosts.write_text(text + f"127.0.1.1\t{self.name}\n")
        # The host's extra CAs (an HTTPS-intercepting proxy here); update-ca-certificates runs after boot.
        ca_dst = self.root / "usr/local/share/ca-certificates"
        ca_dst.mkdir(parents=True, exist_ok=True)
        for crt in HOST_CA_DIR.glob("*.crt"):
            shutil.copy2(crt, ca_dst / crt.name)

    def _start(self):
        self.cgroups = _cgroup_dirs(self.name)
        for c, d in self.cgroups.items():
            os.makedirs(d, exist_ok=True)
        if self.memory_max:
            limit = str(_parse_size(self.memory_max))
            Path(self.cgroups["memory"], "memory.limit_in_bytes").write_text(limit)
        self._save_state()
        nspawn = [
            "systemd-nspawn", "--boot", f"--directory={self.root}", f"--machine={self.name}",
            "--register=no", "--keep-unit", "--console=read-only", "--link-journal=no",
            f"--network-namespace-path={NETNS_DIR / self.netns}", _resolv_conf_option(),
            "--kill-signal=SIGRTMIN+3",
            # nspawn's seccomp filter blocks bpf(); without it the guest's systemd silently ignores IPAddressDeny=
            # and IP accounting (cgroup BPF), which real servers enforce and the isolation tests check.
            "--system-call-filter=bpf",
            # The hub writes nftables rules (users' ports kept to their owner), as root on a real server can: the
            # machine has a network namespace of its own, so this reaches no further than the machine.
            "--capability=CAP_NET_ADMIN",
        ]
        wrapper = WRAPPER.format(
            cgroup_files=" ".join(shlex.quote(f"{d}/cgroup.procs") for d in self.cgroups.values()),
            stop_file=shlex.quote(str(self.run_dir / "stop")),
            nspawn=shlex.join(nspawn),
            nspawn_pid_file=shlex.quote(str(self.run_dir / "nspawn.pid")),
        )
        wpath = self.run_dir / "wrapper.sh"
        wpath.write_text(wrapper)
        wpath.chmod(0o755)
        logf = open(self.run_dir / "console.log", "ab")
        proc = subprocess.Popen(
            [str(wpath)], stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT,
            start_new_session=True, env={"PATH": os.environ.get("PATH", GUEST_PATH), "LANG": "C.UTF-8"},
        )
        logf.close()
        self._proc = proc  # keeps the Popen object so the wrapper is reaped, not a zombie
        self.wrapper_pid = proc.pid
        self._save_state()

    def _save_state(self):
        STATE_DIR.mkdir(parents=True, exist_ok=True)
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps({
            "name": self.name, "os": self.os_name, "machine_dir": str(self.machine_dir), "cgroups": self.cgroups,
            "wrapper_pid": self.wrapper_pid, "memory_max": self.memory_max, "owner": self.owner, "net": self.net,
            "wrapper_start": _proc_start_time(self.wrapper_pid) if self.wrapper_pid else None,
        }, indent=1))
        os.rename(tmp, self.state_file)

    @classmethod
    def attach(cls, name) -> "Machine":
        """A Machine object for a machine started by another process (from its state file)."""
        state_file = STATE_DIR / f"{name}.json"
        if not state_file.exists():
            raise MachineError(f"no machine named {name} (see `machine.py list`)")
        st = json.loads(state_file.read_text())
        if "machine_dir" in st:
            m = cls(st["name"], st["os"], st["machine_dir"], state_file)
        else:  # written by the first version of this file: an unpacked rootfs, no overlay
            m = cls(st["name"], st["os"], st["root"], state_file)
            m.root = m.machine_dir
        m.cgroups = st.get("cgroups") or {}
        m.memory_max = st.get("memory_max")
        m.owner = st.get("owner")
        m.net = st.get("net")
        wp = st.get("wrapper_pid")
        if wp and _proc_start_time(wp) == st.get("wrapper_start"):
            m.wrapper_pid = wp
        return m

    def _nspawn_pid(self):
        if not self.wrapper_pid or not _alive(self.wrapper_pid):
            return None
        try:
            pid = int((self.run_dir / "nspawn.pid").read_text())
        except (OSError, ValueError):
            return None
        if _alive(pid) and _ppid(pid) == self.wrapper_pid:
            return pid
        return None

    def _guest_pid1(self):
        nspawn = self._nspawn_pid()
        if not nspawn:
            return None
        for child in _children(nspawn):
            try:
                status = Path(f"/proc/{child}/status").read_text()
            except OSError:
                continue
            m = re.search(r"^NSpid:\s*(.*)$", status, re.M)
            # until it execs systemd, the guest's PID 1 is nspawn's inner child still setting up mounts
            if m and m.group(1).split()[-1] == "1" and re.search(r"^Name:\s*systemd$", status, re.M):
                return child
        return None

    def _check_alive(self):
        if self._destroyed:
            raise MachineError(f"machine {self.name} was destroyed")
        if self.wrapper_pid and not _alive(self.wrapper_pid):
            raise MachineError(f"machine {self.name} stopped; console log tail:\n{self.console_log()}")

    def console_log(self, n=3000):
        try:
            return _tail((self.run_dir / "console.log").read_text(errors="replace"), n)
        except OSError:
            return ""

    def _wait_running(self, timeout=120):
        deadline = time.monotonic() + timeout
        state = ""
        while time.monotonic() < deadline:
            self._check_alive()
            pid1 = self._guest_pid1()
            if pid1:
                self._fix_cgroups(pid1)
                r = subprocess.run(["nsenter", "-t", str(pid1), "-a", "--", "env", "-i", "PATH=" + GUEST_PATH,
                                    "systemctl", "is-system-running"],
                                   capture_output=True, text=True, stdin=subprocess.DEVNULL)
                state = r.stdout.strip()
                if state in ("running", "degraded"):
                    return pid1
            time.sleep(0.1)
        raise MachineError(f"{self.name} did not reach running within {timeout} s (state {state!r});"
                           f" console log tail:\n{self.console_log()}")

    @staticmethod
    def _readonly_controllers(pid1):
        return [line.split()[4] for line in Path(f"/proc/{pid1}/mountinfo").read_text().splitlines()
                if line.split()[4].startswith("/sys/fs/cgroup/") and line.split()[4].rsplit("/", 1)[1] in
                CGROUP_CONTROLLERS and "ro" in line.split()[5].split(",")]

    def _fix_cgroups(self, pid1):
        """nspawn mounts the v1 controllers read-only; make them writable so the guest enforces limits."""
        if self._fixed_pid1 == pid1:
            return
        if not self._readonly_controllers(pid1):
            # Already done for this boot (by another Machine object attached to this guest, e.g. a second
            # process): a needless daemon-reexec would cut the guest's bus under commands running right now.
            self._fixed_pid1 = pid1
            return
        script = ("for c in " + " ".join(CGROUP_CONTROLLERS) + "; do"
                  " if mountpoint -q /sys/fs/cgroup/$c; then mount -o remount,bind,rw /sys/fs/cgroup/$c || exit 1; fi;"
                  " done")
        r = subprocess.run(["nsenter", "-t", str(pid1), "-m", "--", "/bin/sh", "-c", script],
                           capture_output=True, text=True)
        if r.returncode != 0:
            raise MachineError(f"could not remount the guest's cgroup controllers rw: {r.stderr.strip()}")
        ro = self._readonly_controllers(pid1)
        if ro:
            raise MachineError(f"the guest's cgroup controllers are still read-only: {ro}")
        # the guest's systemd must re-detect its cgroup setup; wait until it answers on its bus
        deadline = time.monotonic() + 60
        while True:
            r = subprocess.run(["nsenter", "-t", str(pid1), "-a", "--", "env", "-i", "PATH=" + GUEST_PATH,
                                "systemctl", "daemon-reexec"], capture_output=True, text=True,
                               stdin=subprocess.DEVNULL)
            if r.returncode == 0:
                break
            if time.monotonic() > deadline:
                raise MachineError(f"systemctl daemon-reexec in {self.name} failed: {r.stderr.strip()}")
            time.sleep(0.1)
        self._fixed_pid1 = pid1

    def _install_host_ca(self):
        if list(HOST_CA_DIR.glob("*.crt")):
            self.run("update-ca-certificates >/dev/null", timeout=120)

    # ---- commands

    def diagnostics(self):
        """What to look at when a test fails: the guest's network and DNS, failed units, the journal's tail."""
        script = ("ip -br addr; ip route; cat /etc/resolv.conf; getent hosts pypi.org || echo 'DNS: pypi.org does not"
                  " resolve'; systemctl --no-pager --failed; journalctl -b --no-pager -n 200")
        nat = subprocess.run(["nft", "list", "table", "ip", NFT_TABLE], capture_output=True).returncode == 0
        try:
            r = self.run(script, check=False, timeout=60)
            out = r.stdout + r.stderr
        except Exception as e:  # noqa: BLE001 - the machine may be gone
            out = f"could not run commands inside: {e}\n"
        return f"host: NAT table {NFT_TABLE} {'present' if nat else 'MISSING'}\n{out}"

    def nsenter_prefix(self):
        pid1 = self._guest_pid1()
        if not pid1:
            self._check_alive()
            raise MachineError(f"machine {self.name} is not running (rebooting?)")
        self._fix_cgroups(pid1)
        return ["nsenter", "-t", str(pid1), "-a", "--", "env", "-i", "PATH=" + GUEST_PATH, "LANG=C.UTF-8"]

    def run(self, cmd, *, user="root", check=True, timeout=600, env=None, input=None, cwd="/root"):
        """Run cmd inside the machine as user (a str runs through ``bash -c``); returns CompletedProcess (text).

        The command runs as a transient systemd service in the guest (its own cgroup, a clean login-like
        environment with HOME/USER set). For a non-root user the default cwd "/root" means the user's home.
        """
        self._check_alive()
        argv = ["bash", "-c", cmd] if isinstance(cmd, str) else [str(c) for c in cmd]
        unit = f"tljh-run-{secrets.token_hex(6)}"
        workdir = "~" if (user != "root" and cwd == "/root") else cwd
        sr = ["systemd-run", "--quiet", "--wait", "--pipe", "--collect", "--service-type=exec",
              f"--unit={unit}", "-p", f"User={user}", "-p", f"WorkingDirectory={workdir}",
              "-p", f"RuntimeMaxSec={int(timeout) + 5}", "--setenv=LANG=C.UTF-8"]
        for k, v in (env or {}).items():
            sr.append(f"--setenv={k}={v}")
        full = self.nsenter_prefix() + sr + ["--"] + argv
        try:
            r = subprocess.run(full, input=input, capture_output=True, text=True, timeout=timeout,
                               stdin=None if input is not None else subprocess.DEVNULL)
        except subprocess.TimeoutExpired as e:
            subprocess.run(self.nsenter_prefix() + ["systemctl", "kill", "--signal=SIGKILL", unit],
                           capture_output=True)
            raise MachineCommandError(cmd, f"timeout after {timeout} s",
                                      _decode(e.stdout), _decode(e.stderr)) from None
        r.args = cmd
        if "Failed to query unit state" in r.stderr:
            # systemd-run lost the guest's bus (its systemd re-executed) before it read the command's result,
            # and then exits 0 whatever the command did: the exit status is unknown, never "success".
            raise MachineError(f"{cmd!r} in {self.name}: exit status lost (systemd-run: {r.stderr.strip()[-200:]})")
        if check and r.returncode != 0:
            raise MachineCommandError(cmd, r.returncode, r.stdout, r.stderr)
        return r

    def copy_in(self, host_path, guest_path):
        """Copy a host file or directory to guest_path, owned by root (a file is replaced, a directory's
        contents are merged into an existing one; parent directories are created)."""
        host_path = Path(host_path)
        if not host_path.exists():
            raise FileNotFoundError(host_path)
        guest_path = guest_path.rstrip("/") or "/"
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            tar.add(str(host_path), arcname=os.path.basename(guest_path), filter=_root_owned)
        self.copy_tar(buf.getvalue(), os.path.dirname(guest_path) or "/")

    def copy_checkout(self, guest_path="/srv/tljh-src"):
        """Copy this checkout's files (git tracked + untracked-but-not-ignored) to guest_path, replacing it."""
        files = _checkout_files()
        buf = io.BytesIO()
        name = os.path.basename(guest_path.rstrip("/"))
        with tarfile.open(fileobj=buf, mode="w") as tar:
            tar.add(str(REPO_ROOT), arcname=name, recursive=False, filter=_root_owned)
            for rel in files:
                p = REPO_ROOT / rel
                if p.is_file() or p.is_symlink():
                    tar.add(str(p), arcname=f"{name}/{rel}", recursive=False, filter=_root_owned)
        self.run(["rm", "-rf", guest_path])
        self.copy_tar(buf.getvalue(), os.path.dirname(guest_path.rstrip("/")) or "/")

    def copy_tar(self, data, guest_dir):
        """Unpack tar archive bytes into guest_dir (created if missing), as root."""
        r = subprocess.run(self.nsenter_prefix() + ["sh", "-c", 'mkdir -p "$1" && tar -C "$1" -xf -', "sh", guest_dir],
                           input=data, capture_output=True)
        if r.returncode != 0:
            raise MachineError(f"copy into {self.name}:{guest_dir} failed: {r.stderr.decode(errors='replace')}")

    def install_tljh(self, *args, env=None, check=True, timeout=1800):
        """Copy the checkout in and run the real bootstrap script with it, as a user would."""
        self.copy_checkout("/srv/tljh-src")
        e = {"TLJH_BOOTSTRAP_PIP_SPEC": "/srv/tljh-src"}
        e.update(env or {})
        return self.run(["python3", "/srv/tljh-src/bootstrap/bootstrap.py", *args], env=e, check=check,
                        timeout=timeout)

    def reboot(self, timeout=120):
        """Reboot the guest (systemctl reboot; the supervisor restarts nspawn) and wait until it is running."""
        self._check_alive()
        old = self._nspawn_pid()
        subprocess.run(self.nsenter_prefix() + ["systemctl", "reboot"], capture_output=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._check_alive()
            new = self._nspawn_pid()
            if new and new != old:
                self._wait_running(timeout=max(1, deadline - time.monotonic()))
                return
            time.sleep(0.05)
        raise MachineError(f"{self.name} did not come back from reboot within {timeout} s")

    # ---- teardown

    def destroy(self, timeout=5):
        """Stop the machine and remove everything it left (processes, cgroups, rootfs, state). Idempotent.

        The guest gets `timeout` seconds to power off (about 2 s with a hub running) before everything left is
        killed: a throw-away machine needs no clean shutdown, and a run interrupted during a boot (the guest
        ignores the power-off request until it is up) must finish tearing down before pytest-xdist kills its
        worker (10 s)."""
        if self._destroyed:
            return
        t0 = time.monotonic()
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            (self.run_dir / "stop").touch()  # the supervisor must not restart nspawn
        except OSError:
            pass
        nspawn = self._nspawn_pid()
        if nspawn:
            try:
                os.kill(nspawn, signal.SIGTERM)  # nspawn asks the guest's systemd to power off cleanly
            except ProcessLookupError:
                pass
            deadline = time.monotonic() + timeout
            while _alive(nspawn) and time.monotonic() < deadline:
                time.sleep(0.05)
        # whatever is left (nspawn hung, stray guest processes): kill it
        for _ in range(50):
            pids = set()
            for d in self.cgroups.values():
                pids |= _cgroup_pids(d)
            if self.wrapper_pid and _alive(self.wrapper_pid):
                pids.add(self.wrapper_pid)
            pids.discard(os.getpid())
            if not pids:
                break
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.1)
        if getattr(self, "_proc", None) is not None:
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        problems = []
        if self.net:
            with _network_lock():
                problems += _remove_network(self.net)
                _drop_nat_if_unused()
        for c, d in self.cgroups.items():
            for _ in range(50):
                if _rmdir_tree(d):
                    break
                time.sleep(0.1)
            else:
                problems.append(f"cgroup dir {d} could not be removed")
        if self.machine_dir.exists():
            mdir = str(self.machine_dir)
            for _ in range(50):
                mounts = _mounts_under(mdir)
                if not mounts:
                    break
                for mnt in sorted(mounts, key=len, reverse=True):
                    subprocess.run(["umount", mnt], capture_output=True)
                time.sleep(0.1)
            for mnt in sorted(_mounts_under(mdir), key=len, reverse=True):
                problems.append(f"{mnt} was busy: unmounted lazily")
                subprocess.run(["umount", "-l", mnt], capture_output=True)
            subprocess.run(["rm", "-rf", "--one-file-system", mdir], check=False)
            if self.machine_dir.exists():
                problems.append(f"{mdir} could not be removed")
        shutil.rmtree(self.run_dir, ignore_errors=True)
        try:
            self.state_file.unlink()
        except FileNotFoundError:
            pass
        self._destroyed = True
        _live.pop(self.name, None)
        log(f"{self.name} destroyed in {time.monotonic() - t0:.1f} s")
        if problems:
            raise MachineError("; ".join(problems))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.destroy()
        return False

    def __repr__(self):
        return f"<Machine {self.name} {self.os_name}>"

    def shell_command(self):
        pid1 = self._guest_pid1()
        if not pid1:
            raise MachineError(f"machine {self.name} is not running")
        return (f"nsenter -t {pid1} -a -- env -i TERM=${{TERM:-xterm}} PATH={GUEST_PATH} LANG=C.UTF-8"
                f" HOME=/root bash -l")


def _mounts_under(path):
    out = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        mnt = line.split()[4].replace("\\040", " ")
        if mnt == path or mnt.startswith(path + "/"):
            out.append(mnt)
    return out


def _root_owned(ti):
    ti.uid = ti.gid = 0
    ti.uname = ti.gname = "root"
    return ti


def _checkout_files():
    try:
        out = subprocess.run(["git", "-C", str(REPO_ROOT), "ls-files", "-co", "--exclude-standard", "-z"],
                             capture_output=True, check=True).stdout
        return sorted({f for f in out.decode().split("\0") if f})
    except (OSError, subprocess.CalledProcessError):
        skip = {".git", "__pycache__", ".pytest_cache"}
        files = []
        for dirpath, dirs, names in os.walk(REPO_ROOT):
            dirs[:] = [d for d in dirs if d not in skip and not d.startswith(".venv")]
            files += [os.path.relpath(os.path.join(dirpath, n), REPO_ROOT) for n in names]
        return sorted(files)


def _decode(b):
    if b is None:
        return ""
    return b.decode(errors="replace") if isinstance(b, bytes) else b


def _alive(pid):
    try:
        st = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return st.rsplit(")", 1)[1].split()[0] != "Z"


def _ppid(pid):
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def _proc_start_time(pid):
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def _children(pid):
    kids = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            kids += [int(x) for x in (task / "children").read_text().split()]
        except OSError:
            pass
    return kids


def destroy_orphans():
    """Destroy machines whose owning process died without tearing them down (e.g. kill -9 of a test run).
    Machines booted with detach=True (`machine.py boot`) are left alone; so are other processes' machines.
    Then removes networks no machine owns. Returns the names destroyed."""
    gone = []
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    with open(STATE_DIR / "gc.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # concurrent sessions start by collecting garbage: one at a time
        for m in list_machines():
            if m.owner and _proc_start_time(m.owner[0]) != m.owner[1] and m.name not in _live:
                log(f"destroying {m.name}: the process that booted it ({m.owner[0]}) is gone")
                try:
                    m.destroy()
                    gone.append(m.name)
                except MachineError as e:
                    log(f"could not clean up {m.name}: {e}")
        gc_networks()
    return gone


def list_machines():
    if not STATE_DIR.exists():
        return []
    out = []
    for f in sorted(STATE_DIR.glob("*.json")):
        try:
            m = Machine.attach(f.stem)
        except (MachineError, ValueError, OSError):
            continue
        out.append(m)
    return out


# ---------------------------------------------------------------- CLI

def _cli_try(args):
    m = Machine.boot(args.os, memory_max=args.memory_max, name=args.name)
    with m:
        extra = []
        if args.admin:
            extra += ["--admin", args.admin]
        log("installing this checkout with bootstrap/bootstrap.py ...")
        t0 = time.monotonic()
        try:
            r = m.install_tljh(*extra)
            print(r.stdout[-3000:])
            log(f"bootstrap finished in {time.monotonic() - t0:.0f} s")
        except MachineCommandError as e:
            log(f"bootstrap FAILED after {time.monotonic() - t0:.0f} s:\n{e}")
        print(f"\nMachine {m.name} ({m.os_name}) is running.\n"
              f"  hub:    {m.url()}   (from this host; from elsewhere: ssh -L 8080:{m.address}:80 THIS-HOST)\n"
              f"  shell:  sudo python3 {Path(__file__).resolve()} shell {m.name}\n"
              f"     or:  sudo {m.shell_command()}\n"
              f"Press Ctrl-C to tear it down.", flush=True)
        try:
            while True:
                m._check_alive()
                time.sleep(1)
        except KeyboardInterrupt:
            print()
            log("Ctrl-C: tearing down")


def main(argv=None):
    p = argparse.ArgumentParser(prog="machine.py", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="build (or reuse) the cached image of an OS")
    b.add_argument("os", nargs="+", choices=list(OSES) + ["all"])
    b.add_argument("--force", action="store_true", help="rebuild even if cached")
    for cmd, helptext in [("boot", "boot a machine and leave it running"),
                          ("try", "boot, install this checkout with bootstrap, wait for Ctrl-C, tear down")]:
        s = sub.add_parser(cmd, help=helptext)
        s.add_argument("os", nargs="?", default="debian-12", choices=list(OSES))
        s.add_argument("--name")
        s.add_argument("--memory-max", help="e.g. 900M")
        if cmd == "try":
            s.add_argument("--admin", help="admin user name passed to bootstrap")
    sub.add_parser("list", help="list running machines")
    s = sub.add_parser("shell", help="open a root shell in a machine")
    s.add_argument("name")
    s = sub.add_parser("run", help="run a command in a machine")
    s.add_argument("name")
    s.add_argument("--user", default="root")
    s.add_argument("command", nargs=argparse.REMAINDER)
    sub.add_parser("gc", help="destroy machines whose test process died without tearing them down")
    s = sub.add_parser("destroy", help="stop and remove machines")
    s.add_argument("names", nargs="+", help="machine names, or 'all'")
    args = p.parse_args(argv)
    try:
        _require_root()
        if args.cmd == "build":
            for os_name in (list(OSES) if "all" in args.os else args.os):
                t0 = time.monotonic()
                path = build_image(os_name, force=args.force)
                print(f"{os_name}: {path} ({time.monotonic() - t0:.0f} s)")
        elif args.cmd == "boot":
            m = Machine.boot(args.os, memory_max=args.memory_max, name=args.name, detach=True)
            print(f"{m.name} is running ({m.os_name}, rootfs {m.root}).\n"
                  f"  address: {m.address}  (e.g. {m.url()} once a hub is installed)\n"
                  f"  shell:   sudo python3 {Path(__file__).resolve()} shell {m.name}\n"
                  f"     or:   sudo {m.shell_command()}\n"
                  f"  destroy: sudo python3 {Path(__file__).resolve()} destroy {m.name}")
        elif args.cmd == "try":
            _cli_try(args)
        elif args.cmd == "list":
            for m in list_machines():
                state = "running" if m._guest_pid1() else "stopped"
                owner = f"owner pid {m.owner[0]}" if m.owner else "detached"
                print(f"{m.name}\t{m.os_name}\t{m.address}\t{state}\t{owner}\t{m.root}")
        elif args.cmd == "shell":
            m = Machine.attach(args.name)
            os.execvp("sh", ["sh", "-c", m.shell_command()])
        elif args.cmd == "run":
            m = Machine.attach(args.name)
            r = m.run(args.command, user=args.user, check=False)
            sys.stdout.write(r.stdout)
            sys.stderr.write(r.stderr)
            return r.returncode
        elif args.cmd == "gc":
            destroy_orphans()
        elif args.cmd == "destroy":
            names = [m.name for m in list_machines()] if args.names == ["all"] else args.names
            for n in names:
                Machine.attach(n).destroy()
    except MachineError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
