"""The nftables table that keeps each user's ports to their owner: its text, where cgroups are, the level probe.

What the rules do to real connections is tested in a machine as other users (integration-tests/test_isolation.py);
here, the table is checked as text (and by nft itself, without loading it, where nft and root are at hand).
"""

import os
import shutil
import subprocess
import types

import pytest

from tljh.system import port_rules
from tljh.system.port_rules import Server


def lines(text):
    return [line.strip() for line in text.splitlines()]


def test_only_the_owner_and_root_are_allowed_into_a_servers_ports():
    text = port_rules.ruleset([
        Server("system.slice/jupyter-alice.service", 2, 1001),
        Server("system.slice/jupyter-alice:lab.service", 2, 1001),
        Server("system.slice/jupyter-bob.service", 2, 1002),
    ])
    # replaced whole, in one transaction, also when it is not there yet
    assert text.startswith("table inet tljh {}\ndelete table inet tljh\ntable inet tljh {\n")
    found = lines(text)
    assert "map senders { type uid : mark; elements = { 0 : 1, 1001 : 1002, 1002 : 1003 } }" in found
    assert ('set servers_2 { type cgroupsv2; elements = { "system.slice/jupyter-alice.service", '
            '"system.slice/jupyter-alice:lab.service", "system.slice/jupyter-bob.service" } }') in found
    allowed = next(line for line in found if line.startswith("set allowed_2"))
    pairs = set(allowed.split("elements = { ")[1].rstrip(" }").split(", "))
    assert pairs == {
        '"system.slice/jupyter-alice.service" . 1', '"system.slice/jupyter-alice.service" . 1002',
        '"system.slice/jupyter-alice:lab.service" . 1', '"system.slice/jupyter-alice:lab.service" . 1002',
        '"system.slice/jupyter-bob.service" . 1', '"system.slice/jupyter-bob.service" . 1003',
    }
    # senders are marked on the way out (anyone unknown: 0), checked on the way in against the receiving socket
    assert found.index("oif lo ct state new ct mark set 0") < found.index(
        "oif lo ct state new ct mark set meta skuid map @senders")
    # every packet, both ways (not only a connection's first): a connection that got past the first check (a SYN
    # that met a TIME_WAIT socket, which nft cannot match to a cgroup) still carries nothing
    for hook in ("iif", "oif"):
        match = f"{hook} lo socket cgroupv2 level 2 @servers_2 socket cgroupv2 level 2 . ct mark != @allowed_2"
        assert f"{match} meta l4proto tcp counter reject with tcp reset" in found
        assert f"{match} meta l4proto udp counter reject" in found


def test_owners_of_servers_about_to_start_are_marked_too():
    """A connection keeps the mark it got when it opened: the owner of a server that is starting is in the map
    before the server is in the table (its connection to the hub, opened while it starts, must stay usable)."""
    found = lines(port_rules.ruleset([Server("system.slice/jupyter-alice.service", 2, 1001)], senders=(1005,)))
    assert "map senders { type uid : mark; elements = { 0 : 1, 1001 : 1002, 1005 : 1006 } }" in found
    allowed = next(line for line in found if line.startswith("set allowed_2"))
    assert "1006" not in allowed  # marked, not let in anywhere


def test_the_proxy_is_let_in_like_root():
    """A server an older version started listens on TCP; the proxy (its own uid) reaches it until its next start."""
    found = lines(port_rules.ruleset([Server("system.slice/jupyter-alice.service", 2, 1001)], trusted=(0, 998)))
    assert "map senders { type uid : mark; elements = { 0 : 1, 998 : 999, 1001 : 1002 } }" in found
    allowed = next(line for line in found if line.startswith("set allowed_2"))
    assert set(allowed.split("elements = { ")[1].rstrip(" }").split(", ")) == {
        '"system.slice/jupyter-alice.service" . 1', '"system.slice/jupyter-alice.service" . 999',
        '"system.slice/jupyter-alice.service" . 1002'}


def test_trusted_uids_are_root_and_the_proxy(monkeypatch):
    monkeypatch.setattr(port_rules.pwd, "getpwnam", lambda name: types.SimpleNamespace(pw_uid={"tljh-proxy": 998}[name]))
    assert port_rules.trusted_uids() == (0, 998)
    monkeypatch.setattr(port_rules.pwd, "getpwnam", lambda name: (_ for _ in ()).throw(KeyError(name)))
    assert port_rules.trusted_uids() == (0,)


def test_servers_at_different_depths_get_rules_of_their_own():
    text = port_rules.ruleset([Server("a/b", 2, 1001), Server("unified/x/payload/system.slice/c", 5, 1002)])
    found = lines(text)
    assert sum(line.startswith(("iif lo", "oif lo socket")) for line in found) == 8
    assert 'set servers_5 { type cgroupsv2; elements = { "unified/x/payload/system.slice/c" } }' in found
    assert 'set allowed_2 { type cgroupsv2 . mark; elements = { "a/b" . 1, "a/b" . 1002 } }' in found


def test_with_no_server_nothing_is_refused():
    found = lines(port_rules.ruleset([]))
    assert "map senders { type uid : mark; elements = { 0 : 1 } }" in found
    assert not [line for line in found if line.startswith(("set ", "iif", "oif lo socket"))]


def test_a_path_nft_cannot_quote_is_refused():
    with pytest.raises(ValueError):
        port_rules.ruleset([Server('system.slice/a"b', 2, 1001)])


def test_nft_itself_accepts_the_table(no_firewall_changes):
    """`nft --check` parses the table and has the kernel validate it, loading nothing (needs root and cgroup v2;
    the cgroup named must exist: this process's own)."""
    mount, own = port_rules.cgroup2_mount(), port_rules.process_cgroup()
    if not (shutil.which(port_rules.NFT) and os.geteuid() == 0 and mount and own):
        pytest.skip("needs root, nft and a cgroup v2 hierarchy")
    name = port_rules.nft_name(own, mount)
    text = port_rules.ruleset([Server(name, port_rules.depth(own), 1001), Server(name, port_rules.depth(own) + 1, 0)])
    result = subprocess.run([port_rules.NFT, "--check", "-f", "-"], input=text, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_a_missing_nft_is_one_line(no_firewall_changes, monkeypatch):
    monkeypatch.setattr(port_rules, "NFT", "/nonexistent/nft")
    with pytest.raises(port_rules.Unsupported, match=r"^nft is not installed \(Debian/Ubuntu package nftables\)$"):
        no_firewall_changes("list", "tables")


MOUNTINFO = {
    "v2": "30 23 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate\n",
    "hybrid": ("35 25 0:30 / /sys/fs/cgroup/memory rw,relatime shared:14 - cgroup cgroup rw,memory\n"
               "41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n"),
    "subtree": "417 408 0:38 /tljh-test-m/payload /sys/fs/cgroup/unified ro,nosuid - cgroup2 cgroup rw\n",
    "v1": "35 25 0:30 / /sys/fs/cgroup/memory rw,relatime shared:14 - cgroup cgroup rw,memory\n",
    "escaped": "30 23 0:26 / /sys/fs/my\\040cgroups rw - cgroup2 cgroup2 rw\n",
}


@pytest.mark.parametrize("kind, expected", [
    ("v2", ("/sys/fs/cgroup", "/")),
    ("hybrid", ("/sys/fs/cgroup/unified", "/")),
    ("subtree", ("/sys/fs/cgroup/unified", "/tljh-test-m/payload")),
    ("v1", None),
    ("escaped", ("/sys/fs/my cgroups", "/")),
])
def test_where_the_cgroup2_hierarchy_is_mounted(tmp_path, kind, expected):
    (tmp_path / "mountinfo").write_text(MOUNTINFO[kind])
    assert port_rules.cgroup2_mount(str(tmp_path / "mountinfo")) == expected


@pytest.mark.parametrize("cgroup, mount, name", [
    ("/system.slice/jupyter-a.service", ("/sys/fs/cgroup", "/"), "system.slice/jupyter-a.service"),
    ("/system.slice/jupyter-a.service", ("/sys/fs/cgroup/unified", "/"), "unified/system.slice/jupyter-a.service"),
    ("/m/payload/system.slice/x.service", ("/sys/fs/cgroup/unified", "/m/payload"), "unified/system.slice/x.service"),
    ("/elsewhere/x.service", ("/sys/fs/cgroup/unified", "/m/payload"), None),  # not in the mounted subtree
    ("/x.service", ("/mnt/cg", "/"), None),  # nft looks under /sys/fs/cgroup only
    ("/x.service", ("/sys/fs/cgroup/unified", "/../.."), None),  # a mount from above our namespace's root
])
def test_the_name_nft_knows_a_cgroup_by(cgroup, mount, name):
    assert port_rules.nft_name(cgroup, mount) == name


def test_a_process_cgroup_and_its_depth(tmp_path):
    (tmp_path / "42").mkdir()
    (tmp_path / "42" / "cgroup").write_text("1:name=systemd:/x\n0::/system.slice/jupyter-a.service\n")
    cgroup = port_rules.process_cgroup(42, proc=str(tmp_path))
    assert cgroup == "/system.slice/jupyter-a.service"
    assert port_rules.depth(cgroup) == 2 and port_rules.depth("/") == 0
    assert port_rules.process_cgroup(43, proc=str(tmp_path)) is None  # gone


# `nft list table` of a probe, as nft 1.0.6 prints it (its JSON leaves the level out).
PROBE_LISTING = """table inet tljh_probe {
	chain input {
		type filter hook input priority filter; policy accept;
		iif "lo" tcp dport 39715 socket cgroupv2 level 2 "unified/a/b" counter packets 0 bytes 0
		iif "lo" tcp dport 39715 socket cgroupv2 level 3 "unified/a/b" counter packets 2 bytes 112
		iif "lo" tcp dport 39715 socket cgroupv2 level 4 "unified/a/b" counter packets 0 bytes 0
	}
}
"""


def fake_probe(monkeypatch, own, listing):
    calls = []

    def nft(*args, input=None):
        calls.append((args, input))
        return listing if args[0] == "list" else ""

    monkeypatch.setattr(port_rules, "nft", nft)
    monkeypatch.setattr(port_rules, "cgroup2_mount", lambda: ("/sys/fs/cgroup/unified", "/"))
    monkeypatch.setattr(port_rules, "process_cgroup", lambda pid="self": own)
    return calls


def test_the_probe_finds_how_deep_our_cgroup_namespace_is(monkeypatch):
    # this process at depth 1 in its namespace; the kernel matched it at level 3: the namespace's root is 2 deep
    calls = fake_probe(monkeypatch, "/a", PROBE_LISTING)
    assert port_rules.find_level_offset() == 2
    written = calls[0][1]
    assert written.startswith("table inet tljh_probe {}\ndelete table inet tljh_probe\n")
    levels = [int(line.split(" level ")[1].split()[0]) for line in written.splitlines() if "level" in line]
    assert levels == list(range(1, 1 + port_rules.MAX_NAMESPACE_DEPTH + 1))
    assert all('"unified/a" counter' in line for line in written.splitlines() if "level" in line)
    assert calls[-1][1] == "table inet tljh_probe {}\ndelete table inet tljh_probe\n"  # nothing left behind


def test_a_kernel_that_matches_no_level_cannot_enforce(monkeypatch):
    calls = fake_probe(monkeypatch, "/a", PROBE_LISTING.replace("packets 2", "packets 0"))
    with pytest.raises(port_rules.Unsupported, match="does not match sockets to their cgroup"):
        port_rules.find_level_offset()
    assert calls[-1][1].startswith("table inet tljh_probe {}\ndelete table")


def test_no_cgroup2_cannot_enforce(monkeypatch):
    monkeypatch.setattr(port_rules, "cgroup2_mount", lambda: None)
    with pytest.raises(port_rules.Unsupported, match="no cgroup v2"):
        port_rules.find_level_offset()


def test_remove_only_what_is_there(monkeypatch):
    calls = []

    def nft(*args, input=None):
        calls.append(args)
        if args[0] == "list" and not present:
            raise port_rules.Unsupported("nft failed: Error: No such file or directory")
        return ""

    monkeypatch.setattr(port_rules, "nft", nft)
    present = False
    assert port_rules.remove() is False and calls == [("list", "table", "inet", "tljh")]
    present = True
    assert port_rules.remove() is True and calls[-1] == ("-f", "-")


@pytest.fixture
def step(monkeypatch):
    """The installer's step, on a pretend machine: what apt installs, what the probe finds."""
    from tljh.install import installer
    from tljh.settings.effective import effective_settings

    machine = types.SimpleNamespace(config={}, installed=[], unsupported=None, apt_error=None)

    def install(names, no_recommends=False, out=print):
        if machine.apt_error:
            raise installer.apt.AptError(machine.apt_error)
        return machine.installed

    def probe():
        if machine.unsupported:
            raise port_rules.Unsupported(machine.unsupported)
        return 0

    monkeypatch.setattr(installer, "load_settings", lambda: effective_settings(machine.config))
    monkeypatch.setattr(installer.apt, "install", install)
    monkeypatch.setattr(port_rules, "find_level_offset", probe)
    ctx = types.SimpleNamespace(warnings=[])
    machine.run = lambda: installer.install_port_rules(ctx)
    machine.ctx = ctx
    return machine


def test_installer_step_installs_nftables_and_says_it_can_enforce(step):
    step.installed = ["nftables"]
    assert step.run() == "installed nftables; enforceable (the hub writes the rules while servers run)"
    step.installed = []  # a rerun: nothing to do
    assert step.run() == "enforceable (the hub writes the rules while servers run)"
    assert step.ctx.warnings == []


def test_installer_step_warns_where_it_cannot_enforce(step):
    step.apt_error = "apt-get install -y -qq nftables failed: E: Unable to locate package nftables"
    step.unsupported = "nft is not installed (Debian/Ubuntu package nftables)"
    assert step.run() == "NOT enforceable here"
    assert step.ctx.warnings == [
        "warning: users' ports are NOT kept from each other on this machine (nft is not installed (Debian/Ubuntu "
        "package nftables)): any local user can connect to a port another user's server opened. See tljh status "
        "and docs: security."]


def test_installer_step_with_ports_open_by_choice(step):
    step.config = {"network": {"allow_connections_between_users": True}}
    step.unsupported = "must not be probed"
    assert step.run() == "not used: users' ports are open to each other (network.allow_connections_between_users)"
