"""Tests of the test harness itself: if these fail, no other integration result can be trusted."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path

import pytest

from machine import NFT_TABLE, STATE_DIR, Machine, MachineCommandError, _network_lock, destroy_orphans

HERE = Path(__file__).resolve().parent
OS_RELEASE = {
    "debian-12": ("debian", "12"),
    "debian-13": ("debian", "13"),
    "ubuntu-22.04": ("ubuntu", "22.04"),
    "ubuntu-24.04": ("ubuntu", "24.04"),
}


def http_get(url, timeout=30):
    """GET url from the host, retrying until it answers; returns the body."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                return r.read().decode()
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


# Records, in each xdist worker, the node ids its collection ends with (what the worker reports to the
# scheduler), then runs nothing.
NODE_IDS_PLUGIN = """
import os, pytest
@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items):
    with open(os.path.join(os.environ["NODE_IDS_DIR"], str(os.getpid())), "w") as f:
        f.writelines(f"{item.module.__name__}\\t{item.nodeid}\\n" for item in items)
    items[:] = []
"""


def test_tests_sharing_a_machine_run_in_one_worker(os_name, tmp_path):
    """Parallel runs (`-n N --dist loadgroup`): the node ids workers report put every test of a module with a
    module-scoped machine into that module's group, and no other test into a group. (Nothing fails when this
    breaks: the tests are spread over workers, each booting its own copy of the module's machine.)"""
    from xdist.scheduler.loadgroup import LoadGroupScheduling

    (tmp_path / "node_ids_plugin.py").write_text(NODE_IDS_PLUGIN)
    out = tmp_path / "out"
    out.mkdir()
    r = subprocess.run([sys.executable, "-m", "pytest", str(HERE), "--os", os_name, "-q", "-p", "no:cacheprovider",
                        "-p", "node_ids_plugin", "-n", "2", "--dist", "loadgroup"],
                       capture_output=True, text=True, cwd=HERE.parent,
                       env={**os.environ, "PYTHONPATH": str(tmp_path), "NODE_IDS_DIR": str(out)})
    reports = [f.read_text() for f in out.iterdir()]
    assert len(reports) == 2, r.stdout + r.stderr
    groups = {}
    for line in reports[0].splitlines():
        module, nodeid = line.split("\t")
        groups.setdefault(module, set()).add(LoadGroupScheduling._split_scope(None, nodeid))
    assert groups["test_install"] == {f"test_install-{os_name}"}, groups["test_install"]
    assert groups["test_config"] == {f"test_config-{os_name}"}, groups["test_config"]
    assert len(groups["test_harness"]) == len(reports[0].split("test_harness.py::")) - 1  # one scope per test


def test_boot(machine, os_name):
    assert machine.run("systemctl is-system-running", check=False).stdout.strip() in ("running", "degraded")
    assert machine.run("cat /proc/1/comm").stdout.strip() == "systemd"
    release = dict(
        line.split("=", 1) for line in machine.run("cat /etc/os-release").stdout.splitlines() if "=" in line
    )
    assert (release["ID"], release["VERSION_ID"].strip('"')) == OS_RELEASE[os_name]
    # a new server: its own machine id, and the host's CA (an HTTPS proxy here) trusted by the system bundle
    assert len(machine.run("cat /etc/machine-id").stdout.strip()) == 32
    for crt in Path("/usr/local/share/ca-certificates").glob("*.crt"):
        line = crt.read_text().splitlines()[1]
        assert line in machine.run("cat /etc/ssl/certs/ca-certificates.crt").stdout


def test_exit_codes_and_output(machine):
    r = machine.run("echo out; echo err >&2; exit 3", check=False)
    assert (r.returncode, r.stdout, r.stderr) == (3, "out\n", "err\n")

    with pytest.raises(MachineCommandError) as e:
        machine.run("echo visible-in-error; exit 7")
    assert e.value.returncode == 7
    assert "visible-in-error" in str(e.value) and "7" in str(e.value)

    # a unit that does not exist is not "active": a wrong assertion in a test turns it red
    with pytest.raises(MachineCommandError):
        machine.run("systemctl is-active no-such-service.service")

    assert machine.run(["printf", "%s|", "a b", "c"]).stdout == "a b|c|"
    assert machine.run("cat", input="from stdin\n").stdout == "from stdin\n"
    assert machine.run("echo $GREETING", env={"GREETING": "hello there"}).stdout == "hello there\n"
    assert machine.run("pwd", cwd="/tmp").stdout == "/tmp\n"
    assert machine.run("pwd").stdout == "/root\n"
    assert machine.run("id -u").stdout == "0\n"


def test_run_as_user(machine):
    machine.run("useradd --create-home --shell /bin/bash alice")
    assert machine.run("whoami", user="alice").stdout == "alice\n"
    assert machine.run("pwd; echo $HOME", user="alice").stdout == "/home/alice\n/home/alice\n"
    # users cannot do root things
    r = machine.run("touch /etc/forbidden", user="alice", check=False)
    assert r.returncode != 0 and "Permission denied" in r.stderr


def test_copy_in_and_checkout(machine, tmp_path):
    (tmp_path / "file.txt").write_text("one file\n")
    (tmp_path / "dir" / "sub").mkdir(parents=True)
    (tmp_path / "dir" / "sub" / "x.sh").write_text("echo x\n")
    (tmp_path / "dir" / "sub" / "x.sh").chmod(0o755)
    machine.copy_in(tmp_path / "file.txt", "/etc/harness/renamed.txt")
    machine.copy_in(tmp_path / "dir", "/opt/copied")
    assert machine.run("cat /etc/harness/renamed.txt").stdout == "one file\n"
    assert machine.run("/opt/copied/sub/x.sh").stdout == "x\n"
    assert machine.run("stat -c %U /opt/copied/sub/x.sh").stdout == "root\n"

    machine.copy_checkout()
    repo = HERE.parent
    expected = subprocess.run(["git", "-C", str(repo), "ls-files", "-co", "--exclude-standard"],
                              capture_output=True, text=True, check=True).stdout.split()
    copied = machine.run("cd /srv/tljh-src && find . -type f -o -type l | cut -c3- | sort").stdout.split()
    assert sorted(f for f in expected if (repo / f).exists()) == copied
    assert "integration-tests/machine.py" in copied
    assert not any(f.startswith((".git/", ".venv")) for f in copied)


def _start_http_server(machine, token, *, enable=False):
    machine.run(f"mkdir -p /srv/www && echo {token} > /srv/www/token.txt")
    unit = textwrap.dedent("""\
        [Unit]
        Description=harness test web server
        [Service]
        WorkingDirectory=/srv/www
        ExecStart=/usr/bin/python3 -m http.server 18080
        [Install]
        WantedBy=multi-user.target
    """)
    machine.run("cat > /etc/systemd/system/harness-http.service", input=unit)
    machine.run(f"systemctl daemon-reload && systemctl {'enable --now' if enable else 'start'} harness-http")


def test_service_reachable_from_host(machine):
    token = os.urandom(8).hex()
    machine.run("mkdir -p /srv/www && echo $TOKEN > /srv/www/token.txt", env={"TOKEN": token})
    machine.run(
        "systemd-run --unit=harness-transient-http -p WorkingDirectory=/srv/www"
        " python3 -m http.server 18080"
    )
    assert http_get(machine.url("/token.txt", port=18080)).strip() == token


def test_machines_have_separate_networks(boot_machine):
    """Two machines at once, each with a server on the same port: the host reaches each at its own address,
    and neither machine reaches the other (they are separate servers)."""
    a, b = boot_machine(), boot_machine()
    assert a.address != b.address
    tokens = {}
    for m in (a, b):
        tokens[m.name] = os.urandom(8).hex()
        m.run(f"mkdir -p /srv/www && echo {tokens[m.name]} > /srv/www/token.txt")
        m.run("systemd-run --unit=harness-http -p WorkingDirectory=/srv/www python3 -m http.server 18080")
    for m in (a, b):
        assert http_get(m.url("/token.txt", port=18080)).strip() == tokens[m.name]
        assert m.run("ip -4 -o addr show dev eth0").stdout.split()[3] == f"{m.address}/30"
    r = a.run(f"curl -s --max-time 3 {b.url('/token.txt', port=18080)}", check=False)
    assert r.returncode != 0 and tokens[b.name] not in r.stdout


def test_units_have_cgroups_in_their_own_machine(machine):
    """A machine's units live in its own cgroup2 directory. nspawn puts them in payload/ below its own cgroup;
    machines started from the same cgroup shared payload/system.slice/<unit>, and a running unit in one machine
    kept a stopped unit of the same name loaded in another ("already loaded" at its next start)."""
    machine.run("systemd-run --unit=harness-probe sleep 300")
    try:
        assert os.path.isdir(os.path.join(machine.cgroups["unified"], "payload/system.slice/harness-probe.service"))
    finally:
        machine.run("systemctl stop harness-probe")


def test_internet_and_dns_from_inside(machine):
    """Outbound through the host's NAT, names resolved, HTTPS trusted (with the host's CA when it has one)."""
    assert machine.run("getent hosts pypi.org", check=False).returncode == 0
    r = machine.run("curl -sS -o /dev/null -w '%{http_code}' --max-time 30 https://pypi.org/simple/six/", check=False)
    assert r.stdout == "200", r.stdout + r.stderr
    assert machine.run("ip route show default").stdout.split()[2] == machine.host_address


def test_reboot_brings_enabled_service_back(machine):
    token = os.urandom(8).hex()
    _start_http_server(machine, token, enable=True)
    assert http_get(machine.url("/token.txt", port=18080)).strip() == token
    machine.run("touch /run/gone-after-reboot /var/tmp/kept-after-reboot")
    old_pid1 = machine._guest_pid1()

    t0 = time.monotonic()
    machine.reboot()
    print(f"reboot took {time.monotonic() - t0:.1f} s")

    assert machine._guest_pid1() != old_pid1
    assert machine.run("test -e /run/gone-after-reboot", check=False).returncode == 1
    machine.run("test -e /var/tmp/kept-after-reboot")
    machine.run("systemctl is-active harness-http")
    assert http_get(machine.url("/token.txt", port=18080)).strip() == token
    # resource control still enforced after the reboot
    _assert_memory_max_kills(machine)


ALLOC = "import sys; b = b'x' * ({mb} * 1024 * 1024); print('allocated', len(b) >> 20, 'MB')"


def _assert_memory_max_kills(machine):
    r = machine.run(
        f"systemd-run --quiet --wait --pipe -p MemoryMax=50M -p MemorySwapMax=0 python3 -c \"{ALLOC.format(mb=200)}\"",
        check=False,
    )
    assert r.returncode != 0, f"200 MB allocated under MemoryMax=50M: {r.stdout} {r.stderr}"
    assert "allocated" not in r.stdout


def test_memory_max_is_enforced(machine):
    _assert_memory_max_kills(machine)
    r = machine.run(
        f"systemd-run --quiet --wait --pipe -p MemoryMax=300M python3 -c \"{ALLOC.format(mb=100)}\"",
        check=False,
    )
    assert (r.returncode, r.stdout) == (0, "allocated 100 MB\n"), r.stderr


def test_machine_memory_cap(boot_machine):
    """Machine.boot(memory_max=...) caps the whole machine (TLJH's 1 GB VM promise is tested with 900M)."""
    m = boot_machine(memory_max="400M")
    assert Path(m.cgroups["memory"], "memory.limit_in_bytes").read_text().strip() == str(400 << 20)
    r = m.run(f"python3 -c \"{ALLOC.format(mb=600)}\"", check=False)
    assert r.returncode != 0 and "allocated" not in r.stdout
    r = m.run(f"python3 -c \"{ALLOC.format(mb=100)}\"")
    assert r.stdout == "allocated 100 MB\n"


CPU_BURN = """
import time
t = time.monotonic()
while time.monotonic() - t < 2:
    pass
cg = [l.split(":")[2] for l in open("/proc/self/cgroup").read().splitlines() if l.split(":")[1] == "cpu"][0]
stat = dict(l.split() for l in open(f"/sys/fs/cgroup/cpu{cg}/cpu.stat"))
quota = open(f"/sys/fs/cgroup/cpu{cg}/cpu.cfs_quota_us").read().strip()
print(time.process_time(), quota, stat["nr_throttled"])
"""


def test_cpu_quota_and_tasks_max(machine):
    machine.run("cat > /root/burn.py", input=CPU_BURN)
    free, free_quota, _ = machine.run("systemd-run --quiet --wait --pipe python3 /root/burn.py").stdout.split()
    # 5 %, not more: on a host busy with other machines the burner may get little more than that share, and
    # it is throttled only when it wants more than its quota
    capped, quota, throttled = machine.run(
        "systemd-run --quiet --wait --pipe -p CPUQuota=5% python3 /root/burn.py").stdout.split()
    print(f"CPU seconds in 2 s wall: unlimited {free}, CPUQuota=5% {capped} (throttled {throttled} times)")
    assert free_quota == "-1"
    assert quota == "5000"  # 5 % of the 100 ms period
    assert int(throttled) > 0, f"never throttled: the unlimited burner got {free} CPU s in 2 s"
    assert float(capped) < 0.3, f"CPUQuota=5% not enforced: {capped} CPU s in 2 s"

    threads = "import threading, time\nfor i in range(30): threading.Thread(target=time.sleep, args=(2,)).start()\nprint('ok')"
    machine.run("cat > /root/threads.py", input=threads)
    assert machine.run("systemd-run --quiet --wait --pipe python3 /root/threads.py").stdout == "ok\n"
    r = machine.run("systemd-run --quiet --wait --pipe -p TasksMax=10 python3 /root/threads.py", check=False)
    assert r.returncode != 0 and "ok" not in r.stdout


def _leftovers(info):
    """Everything a destroyed machine could leave behind, as a list of strings (empty = clean)."""
    left = []
    for pid in info["pids"]:
        try:
            os.kill(pid, 0)
            stat = Path(f"/proc/{pid}/stat").read_text()
            if stat.rsplit(")", 1)[1].split()[0] != "Z":
                left.append(f"process {pid} ({stat.split()[1]})")
        except (ProcessLookupError, FileNotFoundError):
            pass
    left += [f"cgroup {d}" for d in info["cgroups"] if os.path.exists(d)]
    if os.path.exists(f"/run/netns/{info['netns']}"):
        left.append(f"netns {info['netns']}")
    if os.path.exists(f"/sys/class/net/{info['host_if']}"):
        left.append(f"interface {info['host_if']}")
    with _network_lock():  # other runs may be booting machines: look at a consistent moment
        networks = [json.loads(f.read_text()).get("net") for f in STATE_DIR.glob("*.json")]
        nat = subprocess.run(["nft", "list", "table", "ip", NFT_TABLE], capture_output=True).returncode == 0
    if nat and not any(networks):
        left.append(f"nftables table {NFT_TABLE} with no machine left")
    mdir = info["machine_dir"]
    left += [f"mount {line.split()[1]}" for line in Path("/proc/mounts").read_text().splitlines()
             if line.split()[1].startswith(mdir)]
    if os.path.exists(mdir):
        left.append(f"machine dir {mdir}")
    if (STATE_DIR / f"{info['name']}.json").exists():
        left.append("state file")
    return left


def _info(m):
    return {
        "name": m.name, "machine_dir": str(m.machine_dir), "cgroups": list(m.cgroups.values()),
        "pids": [m.wrapper_pid, m._nspawn_pid(), m._guest_pid1()], "netns": m.netns, "host_if": f"tljh-h{m.net}",
    }


def test_teardown_leaves_nothing(os_name):
    with Machine.boot(os_name) as m:
        m.run("systemd-run --unit=leftover -p KillMode=none sleep 1000; useradd bob")
        m.run("sleep 1000 &", user="bob", check=False)
        info = _info(m)
        assert all(info["pids"]) and all(os.path.isdir(d) for d in info["cgroups"])
        assert info["cgroups"], "no per-machine cgroups were created"
        assert os.path.exists(f"/run/netns/{info['netns']}") and os.path.exists(f"/sys/class/net/{info['host_if']}")
    assert _leftovers(info) == []
    m.destroy()  # twice is fine
    with pytest.raises(Exception):
        m.run("true")


def test_teardown_on_error(os_name):
    with pytest.raises(ZeroDivisionError):
        with Machine.boot(os_name) as m:
            info = _info(m)
            1 / 0
    assert _leftovers(info) == []


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL], ids=["ctrl-c", "sigterm", "sigkill"])
def test_teardown_on_signal(os_name, sig):
    """A test run interrupted with Ctrl-C (or killed with SIGTERM) still tears its machine down; after a
    SIGKILL, the next test session's destroy_orphans() does."""
    script = textwrap.dedent(f"""
        import json, signal, sys, time
        signal.signal(signal.SIGINT, signal.default_int_handler)  # even if this run was started with it ignored
        sys.path.insert(0, {str(HERE)!r})
        from machine import Machine
        m = Machine.boot({os_name!r})
        print(json.dumps({{"name": m.name, "machine_dir": str(m.machine_dir), "cgroups": list(m.cgroups.values()),
                          "pids": [m.wrapper_pid, m._nspawn_pid(), m._guest_pid1()], "netns": m.netns,
                          "host_if": f"tljh-h{{m.net}}"}}), flush=True)
        time.sleep(600)
    """)
    p = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        info = json.loads(p.stdout.readline())
        p.send_signal(sig)
        p.wait(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode != 0
    if sig == signal.SIGKILL:
        assert _leftovers(info) != []
        # another test session starting now (parallel runs) may collect it first; either way it must go
        assert info["name"] in destroy_orphans() or not (STATE_DIR / f"{info['name']}.json").exists()
    assert _leftovers(info) == []
