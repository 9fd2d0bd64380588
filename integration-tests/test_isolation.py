"""Issue 19: users kept apart — one Unix account per hub name, no reach into each other's kernels, groups and
admin rights that follow the hub, closed accounts for banned and deleted users, safe inputs.

One machine, installed with the real bootstrap; every test acts as the people involved: hub users through the
login page, the REST API and their kernels' websockets (code in a kernel runs in the user's server unit, with
exactly what their terminal has), the admin through tljh-config and sudo.
"""

import asyncio
import json
import re
import subprocess
import threading
import time
import uuid

import aiohttp
import pytest
from hubclient import HubClient, HubError
from installed import installed_machine

ADMIN_PASSWORD = "admin-password-19"
TEACHER_PASSWORD = "teacher-password-19"
PASSWORD = "user-password-19"


def run(coro):
    return asyncio.run(coro)


def _watch_processes(m, stop, seen):
    """Until stop is set: every command line of the installer process that contains the admin's password."""
    while not stop.is_set():
        r = m.run("ps -eo args=", check=False, timeout=30)
        seen.extend(line for line in r.stdout.splitlines() if "tljh.installer" in line and ADMIN_PASSWORD in line)
        time.sleep(0.5)


@pytest.fixture(scope="module")
def hub(os_name):
    from machine import Machine

    # The old form for one admin (accepted, with a warning), a root-only file for the other.
    with Machine.boot(os_name) as m:
        m.run(f"umask 077 && printf 'teacher:{TEACHER_PASSWORD}\\n' > /root/admin-passwords")
        m.copy_checkout()
        stop, seen = threading.Event(), []
        watcher = threading.Thread(target=_watch_processes, args=(m, stop, seen), daemon=True)
        watcher.start()
        started = time.monotonic()
        try:
            result = m.install_tljh("--admin", f"admin:{ADMIN_PASSWORD}", "--admin", "teacher",
                                    "--admin-password-file", "/root/admin-passwords", check=False)
        finally:
            stop.set()
            watcher.join()
        assert result.returncode == 0, f"bootstrap failed:\n{result.stdout}\n{result.stderr}"
        print(f"install took {time.monotonic() - started:.1f} s")
        m.install_output = result.stdout + result.stderr
        m.password_seen_in = seen
        yield m


async def _admin(m):
    admin = HubClient(m.url())
    await admin.__aenter__()
    await admin.login("admin", ADMIN_PASSWORD)
    return admin


async def _login_page(m, name, password):
    """Post the login form like a browser; (status, the page's error text)."""
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
        async with session.get(m.url("/hub/login")) as r:
            xsrf = re.search(r'name="_xsrf" value="([^"]+)"', await r.text()).group(1)
        async with session.post(m.url("/hub/login"), data={"username": name, "password": password, "_xsrf": xsrf},
                                allow_redirects=False) as r:
            text = await r.text()
            error = re.search(r'<p class="login_error">\s*(.*?)\s*</p>', text, re.S)
            return r.status, (error.group(1) if error else "")


async def _user(m, name, start=True):
    client = HubClient(m.url())
    await client.__aenter__()
    await client.login(name, PASSWORD)
    if start:
        await client.start_server()
    return client


def test_admin_passwords_stay_off_the_installers_command_line(hub):
    """The old form still works (with a warning); the installer process never shows the password."""
    assert "shows the password to every user of this server (ps)" in hub.install_output
    assert hub.password_seen_in == []

    async def check():
        for name, password in (("admin", ADMIN_PASSWORD), ("teacher", TEACHER_PASSWORD)):
            async with HubClient(hub.url()) as person:
                await person.login(name, password)
                assert (await person.api("GET", f"hub/api/users/{name}"))["admin"] is True

    run(check())


def test_names_that_would_share_an_account_are_refused_at_login(hub):
    async def check():
        admin = await _admin(hub)
        await admin.create_users("josé", "jos--4745b", "lab.service")
        jose = await _user(hub, "josé")
        await jose.__aexit__(None, None, None)
        assert hub.run("id -un jupyter-jos--4745b").stdout.strip() == "jupyter-jos--4745b"
        status, error = await _login_page(hub, "jos--4745b", PASSWORD)
        assert status == 403
        assert "cannot be used on this hub: it is too similar to an existing user&#39;s name" in error
        status, error = await _login_page(hub, "lab.service", PASSWORD)
        assert status == 403 and "ending in .service cannot be used" in error
        await admin.__aexit__(None, None, None)

    run(check())
    journal = hub.run("journalctl -u jupyterhub --no-pager -o cat").stdout
    assert "Refused login of hub user 'jos--4745b': hub name 'jos--4745b' -> Unix account jupyter-jos--4745b, " \
           "which belongs to hub user 'josé'" in journal
    listing = hub.run("tljh unix-names").stdout
    assert re.search(r"josé\s+jupyter-jos--4745b\s+named by the hub", listing)
    assert "jos--4745b " not in listing.replace("jupyter-jos--4745b", "")


# Runs in bob's kernel: everything he might try against alice, each answered with what happened.
PROBE = r"""
import glob, json, os, socket
alice = {alice_uid}
result = {{}}
def connect_unix(path):
    s = socket.socket(socket.AF_UNIX)
    try:
        s.connect(path); return "connected"
    except OSError as e:
        return type(e).__name__
    finally:
        s.close()
result["kernel_sockets"] = {{p: connect_unix(p) for p in {kernel_sockets}}}
result["alice_runtime_dirs"] = [os.access(d, os.R_OK) or os.access(d, os.X_OK) for d in {runtime_dirs}]
result["proxy_sockets"] = {{p: connect_unix(p) for p in {proxy_sockets}}}
def listeners(uid):
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in open(table).read().splitlines()[1:]:
            f = line.split()
            if f[3] == "0A" and int(f[7]) == uid:
                found.append(int(f[1].split(":")[1], 16))
    return sorted(set(found))
result["alice_tcp_listeners"] = listeners(alice)
result["alice_processes_visible"] = [p for p in os.listdir("/proc") if p.isdigit() and os.stat("/proc/" + p).st_uid == alice]
def readable(path):
    try:
        open(path, "rb").read(1); return True
    except OSError:
        return False
result["secrets_readable"] = {{p: readable(p) for p in ("/opt/tljh/state/unix-accounts.sqlite",
    "/opt/tljh/state/jupyterhub_cookie_secret", "/opt/tljh/config/config.yaml", "/home/jupyter-alice/secret.txt")}}
print(json.dumps(result))
"""


def test_bob_cannot_reach_alices_kernels_and_alices_notebook_still_works(hub):
    async def check():
        admin = await _admin(hub)
        await admin.create_users("alice", "bob")
        alice = await _user(hub, "alice")
        kernel_id = await alice.start_kernel()
        kernel = await alice.open_kernel(kernel_id)
        assert await kernel.execute("open('/home/jupyter-alice/secret.txt', 'w').write('x') and 6*7") == "42"
        runtime_dir = _kernel_runtime_dir(hub, "jupyter-alice")
        connection = json.loads(hub.run(f"cat {runtime_dir}/kernel-{kernel_id}.json").stdout)
        assert connection["transport"] == "ipc"
        kernel_sockets = [f"{connection['ip']}-{connection[p]}" for p in
                          ("shell_port", "iopub_port", "stdin_port", "control_port", "hb_port")]
        # as root: they exist, so bob failing to reach them means something
        hub.run(f"test -S {kernel_sockets[0]}")
        proxy_sockets = [p for p in hub.run("ls /run/tljh*/*.sock /run/tljh*/*/*.sock /run/tljh*/*/*/*.sock 2>/dev/null",
                                            check=False).stdout.split() if "jupyter-bob" not in p]
        server_socket = "/run/tljh/servers/jupyter-alice/server.sock"
        assert server_socket in proxy_sockets, proxy_sockets
        alice_uid = int(hub.run("id -u jupyter-alice").stdout)
        assert len(hub.run(f"ps -o pid= -u {alice_uid}").stdout.split()) >= 2  # her server and kernel

        bob = await _user(hub, "bob")
        bobs = await bob.open_kernel()
        report = json.loads(await bobs.execute(PROBE.format(
            alice_uid=alice_uid, kernel_sockets=kernel_sockets, proxy_sockets=proxy_sockets,
            runtime_dirs=["/run/jupyter-alice", runtime_dir])))
        assert set(report["kernel_sockets"].values()) == {"PermissionError"}, report
        assert report["alice_runtime_dirs"] == [False, False]
        assert set(report["proxy_sockets"].values()) <= {"PermissionError", "FileNotFoundError"}, report
        assert report["alice_processes_visible"] == []
        assert not any(report["secrets_readable"].values()), report
        # her server's socket, which the proxy reaches: refused to bob at its directory
        assert report["proxy_sockets"][server_socket] == "PermissionError", report
        # alice's TCP listeners: none for her server (a unix socket) nor her kernel's channels (IPC). What
        # remains is ipykernel's subprocess output pipe (one per kernel, needs a random token): at most 1
        # here, where a server on a port with TCP kernels had 7.
        assert len(report["alice_tcp_listeners"]) <= 1, report

        # alice's notebook still works: code, a kernel restart, a terminal
        assert await kernel.execute("1+1") == "2"
        await alice.api("POST", f"user/alice/api/kernels/{kernel_id}/restart", expect=(200,))
        await kernel.close()
        kernel = await alice.open_kernel(kernel_id)
        assert await kernel.execute("'x' in dir(), 2*3") == "(False, 6)"
        await kernel.close()
        assert await _terminal_says(alice, "echo TERM-$((6*7)) $(id -un)") == "TERM-42 jupyter-alice"
        for person in (bob, alice, admin):
            await person.__aexit__(None, None, None)

    run(check())


# Runs in a kernel (or as a plain process): try each (host, port); what happened, by error type.
CONNECT = r"""
import json, socket
def attempt(host, port):
    try:
        socket.create_connection((host, port), timeout=10).close()
        return "connected"
    except OSError as e:
        return type(e).__name__
print(json.dumps({{f"{{host}} {{port}}": attempt(host, port) for host, port in {targets}}}))
"""

# alice's "Dash app": a web server her kernel starts on every address (IPv4 and IPv6), left running.
ALICES_APP = (
    "import subprocess, sys\n"
    "app = subprocess.Popen([sys.executable, '-m', 'http.server', '8050', '--bind', '::'], start_new_session=True,"
    " stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)\n"
    "app.pid > 0"
)

# Output of a forked child reaches the notebook through ipykernel's output pipe (a TCP port of the kernel on
# 127.0.0.1, which alice's own process must still reach); a shell command's (`!printf`) through the kernel's own
# pipes.
SUBPROCESS_OUTPUT = (
    "import os, time\n"
    "pid = os.fork()\n"
    "if pid == 0:\n"
    "    print('FORKED-' + str(6 * 7), flush=True)\n"
    "    time.sleep(1)  # the pipe's sender is asynchronous: let it send before the child exits\n"
    "    os._exit(0)\n"
    "os.waitpid(pid, 0)\n"
    "time.sleep(1)\n"
    "!printf 'SHELL-%d\\n' 42\n"
)


def _connect(targets):
    return CONNECT.format(targets=repr([tuple(t) for t in targets]))


def test_a_servers_own_connection_to_the_hub_is_never_refused(hub):
    """A server opens its connection to the hub's API while it starts, before the port rules cover it, and a
    connection keeps the mark its sender got when it opened. dave, who runs no other server (so his uid was in no
    rule yet), starts one and asks it something with his token as soon as it is ready: the server checks the
    token with the hub over that connection. None of its packets may be refused — before the fix every one was,
    once the rules covered the server, and that first request waited ~26 s of TCP retries (found by
    benchmarks/profiles.py: 26.5 s for each first request to a user's only server)."""

    async def check():
        admin = await _admin(hub)
        await admin.create_users("dave", "erin")
        await admin.__aexit__(None, None, None)
        # A hub that has run a server before (its table and the kernel's connection tracking are there; on a
        # hub's very first server a connection from before the table is picked up as new, and marked then).
        erin = await _user(hub, "erin")
        await erin.stop_server()
        await erin.__aexit__(None, None, None)
        dave = HubClient(hub.url())
        await dave.__aenter__()
        await dave.login("dave", PASSWORD)
        # ready -> at once GET api/status with dave's token, which the server checks with the hub
        await dave.start_server(timeout=120, follow_progress=True)
        table = hub.run("nft list table inet tljh").stdout
        await dave.stop_server()
        await dave.__aexit__(None, None, None)
        return table

    table = run(check())
    refused = re.findall(r"counter packets (\d+) bytes \d+ reject", table)
    assert refused, table  # the rules are there, with their counters
    assert set(refused) == {"0"}, table


def test_bob_cannot_connect_to_a_port_alices_server_opened(hub):
    """alice runs an app on port 8050 from her notebook: she reaches it from her kernel and her terminal, root
    does, and bob does not — on any of the machine's addresses, from his kernel or from a login of his own —
    nor her kernel's output pipe. The hub's API stays reachable (by design: servers call it), and so does the
    outside world (test_session_installs installs from PyPI)."""
    address = hub.run("ip -4 -o addr show dev eth0 | awk '{print $4}' | cut -d/ -f1").stdout.strip()
    app = [("127.0.0.1", 8050), ("::1", 8050), (address, 8050)]

    async def check():
        admin = await _admin(hub)
        await admin.create_users("alice", "bob")
        await admin.__aexit__(None, None, None)
        alice = await _user(hub, "alice")
        kernel = await alice.open_kernel()
        assert await kernel.execute(ALICES_APP) == "True"
        hub.run("for i in $(seq 100); do curl -sf -o /dev/null http://127.0.0.1:8050/ && exit 0; sleep 0.1; done; "
                "exit 1")  # root gets in (the loop waits for the app)
        alice_uid = int(hub.run("id -u jupyter-alice").stdout)
        listeners = sorted({int(line.split()[1].split(":")[1], 16) for table in ("tcp", "tcp6") for line in
                            hub.run(f"tail -n +2 /proc/net/{table}").stdout.splitlines()
                            if line.split()[3] == "0A" and int(line.split()[7]) == alice_uid})
        pipes = [port for port in listeners if port != 8050]  # her kernels' output pipes
        assert 8050 in listeners, listeners
        print("alice's TCP listeners:", listeners)
        ports = app + [("127.0.0.1", port) for port in pipes]

        mine = json.loads(await kernel.execute(_connect(app)))
        assert set(mine.values()) == {"connected"}, mine
        assert await _terminal_says(alice, "curl -s -o /dev/null -w 'TERM-%{http_code}\\n' http://localhost:8050/") \
            == "TERM-200"
        output = await kernel.execute(SUBPROCESS_OUTPUT)
        assert "FORKED-42" in output and "SHELL-42" in output, output

        bob = await _user(hub, "bob")
        bobs = await bob.open_kernel()
        from_kernel = json.loads(await bobs.execute(_connect(ports + [("127.0.0.1", 15001)])))
        assert from_kernel.pop("127.0.0.1 15001") == "connected"  # the hub's API
        assert set(from_kernel.values()) == {"ConnectionRefusedError"}, from_kernel
        for k in (bobs, kernel):
            await k.close()
        for person in (alice, bob):
            await person.__aexit__(None, None, None)
        return ports

    ports = run(check())
    # bob outside his server (a login, cron, ssh: a process of his uid anywhere) gets the same
    from_login = json.loads(hub.run(["python3", "-c", _connect(ports)], user="jupyter-bob").stdout)
    assert set(from_login.values()) == {"ConnectionRefusedError"}, from_login
    assert "users' ports: kept to their owner (nftables table inet tljh)" in hub.run("tljh status", check=False).stdout

    async def alice_stops():
        async with HubClient(hub.url()) as alice:
            await alice.login("alice", PASSWORD)
            await alice.stop_server()

    assert "jupyter-alice.service" in hub.run("nft list table inet tljh").stdout
    run(alice_stops())
    assert "jupyter-alice.service" not in hub.run("nft list table inet tljh").stdout


def test_the_rules_follow_systemd_across_a_hub_restart_and_a_server_stopped_behind_its_back(hub):
    """Between writes the hub remembers a server's owner and cgroup only while the server's main process stays
    in that cgroup. A new hub process writes the table from every server systemd runs; a server stopped behind
    the hub's back leaves the table at the hub's next poll, and started again it is back in it."""

    def table():
        return hub.run("nft list table inet tljh", check=False).stdout

    def wait_until(condition, seconds):
        deadline = time.monotonic() + seconds
        while not condition():
            assert time.monotonic() < deadline, table()
            time.sleep(1)

    async def start(*names):
        admin = await _admin(hub)
        await admin.create_users(*names)
        await admin.__aexit__(None, None, None)
        for name in names:
            person = await _user(hub, name)
            await person.__aexit__(None, None, None)

    run(start("frank", "grace"))
    assert "jupyter-frank.service" in table() and "jupyter-grace.service" in table()
    hub.run("systemctl stop jupyterhub && nft delete table inet tljh && systemctl start jupyterhub")
    # the new hub process polls its servers at once; its first poll writes the table
    wait_until(lambda: "jupyter-frank.service" in table() and "jupyter-grace.service" in table(), 120)
    hub.run("systemctl stop jupyter-grace")  # behind the hub's back
    wait_until(lambda: "jupyter-grace.service" not in table(), 120)  # JupyterHub polls every 30 s
    assert "jupyter-frank.service" in table()

    async def hub_knows_grace_stopped():
        admin = await _admin(hub)
        try:
            for _ in range(60):
                if not (await admin.api("GET", "hub/api/users/grace")).get("servers"):
                    return
                await asyncio.sleep(1)
        finally:
            await admin.__aexit__(None, None, None)

    run(hub_knows_grace_stopped())
    run(start("grace"))  # a new run of the unit: its new main process is asked about
    assert "jupyter-grace.service" in table() and "jupyter-frank.service" in table()


def _kernel_runtime_dir(hub, unit):
    """Where the unit's kernels keep connection files and sockets: its second RuntimeDirectory= (the spawner
    gives kernels a short one; the first is systemdspawner's)."""
    directories = hub.run(f"systemctl show -p RuntimeDirectory --value {unit}").stdout.split()
    assert len(directories) == 2, directories
    return "/run/" + directories[1]


async def _kernel_request(kernel, msg_type, content, channel, timeout=60):
    """Send one Jupyter message on the kernel's websocket (as JupyterLab does); return the reply's content, or
    None if no reply came."""
    msg_id = uuid.uuid4().hex
    await kernel.ws.send_str(json.dumps({
        "header": {"msg_id": msg_id, "username": "test", "session": kernel.session_id, "msg_type": msg_type,
                   "version": "5.3", "date": ""},
        "parent_header": {}, "metadata": {}, "content": content, "channel": channel, "buffers": [],
    }))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            frame = await kernel.ws.receive(timeout=deadline - time.monotonic())
        except asyncio.TimeoutError:
            return None
        if frame.type != aiohttp.WSMsgType.TEXT:
            raise HubError(f"kernel websocket closed: {frame.type}")
        reply = json.loads(frame.data)
        if reply.get("parent_header", {}).get("msg_id") == msg_id and reply["msg_type"].endswith("_reply"):
            return reply["content"]
    return None


# JupyterLab's first debugger request: with the debugger on, the kernel starts debugpy's adapter, which listens on
# a TCP port of 127.0.0.1.
DEBUG_INITIALIZE = {"type": "request", "seq": 1, "command": "initialize", "arguments": {
    "clientID": "jupyterlab", "clientName": "JupyterLab", "adapterID": "python", "pathFormat": "path",
    "linesStartAt1": True, "columnsStartAt1": True, "supportsVariableType": True, "supportsVariablePaging": True,
    "supportsRunInTerminalRequest": True, "locale": "en-us"}}

# Runs in bob's kernel: each TCP port alice's processes listen on, and whether a Debug Adapter Protocol server
# answers there (debugpy's adapter does, to anyone: a DAP reply starts with a Content-Length header).
DAP_PROBE = r"""
import json, socket
alice = {alice_uid}
ports = set()
for table in ("/proc/net/tcp", "/proc/net/tcp6"):
    for line in open(table).read().splitlines()[1:]:
        f = line.split()
        if f[3] == "0A" and int(f[7]) == alice:
            ports.add(int(f[1].split(":")[1], 16))
request = json.dumps({{"seq": 1, "type": "request", "command": "initialize",
                      "arguments": {{"adapterID": "bob", "clientID": "bob"}}}}).encode()
answers = {{}}
for port in sorted(ports):
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        s.sendall(b"Content-Length: %d\r\n\r\n" % len(request) + request)
        s.settimeout(5)
        answers[port] = s.recv(200).decode("latin-1")
        s.close()
    except OSError as e:
        answers[port] = type(e).__name__
print(json.dumps({{"listeners": sorted(ports), "dap": [p for p, a in answers.items() if a.startswith("Content-Length")],
                  "answers": {{str(p): a for p, a in answers.items()}}}}))
"""


async def _debugger_as_alice_and_bob(hub):
    """alice starts a kernel and asks it for the debugger as JupyterLab would; then bob looks for a debug adapter
    among alice's TCP listeners. Returns (alice's kernel advertises a debugger, bob's probe before, after, alice's
    probe, (alice's kernel had loaded debugpy, what importing it gave))."""
    admin = await _admin(hub)
    await admin.create_users("alice", "bob")
    await admin.__aexit__(None, None, None)
    alice = await _user(hub, "alice", start=False)
    await alice.start_server()
    kernel = await alice.open_kernel()
    info = await _kernel_request(kernel, "kernel_info_request", {}, "shell")
    advertised = "debugger" in info.get("supported_features", []) or bool(info.get("debugger"))
    # Whether the kernel loaded debugpy (~0.1 s of CPU at its start), and whether alice's own code can import it
    # (debugpy.listen for an editor's debugger).
    debugpy = (await kernel.execute("'debugpy' in __import__('sys').modules"),
               await kernel.execute("import debugpy.server.api; debugpy.server.api.__name__"))
    alice_uid = int(hub.run("id -u jupyter-alice").stdout)
    bob = await _user(hub, "bob")
    bobs = await bob.open_kernel()
    before = json.loads(await bobs.execute(DAP_PROBE.format(alice_uid=alice_uid)))
    await _kernel_request(kernel, "debug_request", DEBUG_INITIALIZE, "control")
    after = json.loads(await bobs.execute(DAP_PROBE.format(alice_uid=alice_uid)))
    alices_other = await alice.open_kernel()
    alices_own = json.loads(await alices_other.execute(DAP_PROBE.format(alice_uid=alice_uid)))
    for k in (kernel, alices_other, bobs):
        await k.close()
    for person in (alice, bob):
        await person.stop_server()
        await person.__aexit__(None, None, None)
    return advertised, before, after, alices_own, debugpy


def test_bob_cannot_reach_alices_kernel_debugger(hub):
    """The debugger is off by default: alice's kernel offers none, her debug request opens no port, and bob finds
    no debug adapter on any of her ports, and her kernel has not even loaded debugpy (her own code can import
    it). With network.allow_kernel_debugger (the admin's choice), the same
    request opens debugpy's adapter: alice reaches it from another kernel of hers, bob is refused (her ports
    answer only her: test_bob_cannot_connect_to_a_port_alices_server_opened)."""
    assert "kernel debugger: off in users' servers" in hub.run("tljh status", check=False).stdout
    advertised, before, after, _, debugpy = run(_debugger_as_alice_and_bob(hub))
    assert not advertised
    assert debugpy == ("False", "'debugpy.server.api'"), debugpy
    assert after["dap"] == [] and after["listeners"] == before["listeners"], (before, after)

    hub.run("tljh-config set network.allow_kernel_debugger true && tljh-config reload hub")
    try:
        advertised, before, after, alices_own, debugpy = run(_debugger_as_alice_and_bob(hub))
    finally:
        hub.run("tljh-config set network.allow_kernel_debugger false && tljh-config reload hub")
    assert advertised
    assert debugpy == ("True", "'debugpy.server.api'"), debugpy
    adapters = set(alices_own["dap"]) - set(before["listeners"])
    assert adapters, (before, alices_own)
    assert {after["answers"][str(port)] for port in adapters} == {"ConnectionRefusedError"}, after


# A kernel spec of alice's own, the way docs/explanation/security.md tells users to turn the debugger on for
# their own kernels ("python" is the server's own interpreter, as in the environment's spec).
OWN_DEBUGGER_KERNELSPEC = json.dumps({
    "argv": ["python", "-m", "ipykernel_launcher", "-f", "{connection_file}"], "display_name": "Python 3 (debugger)",
    "language": "python", "env": {"TLJH_KERNEL_DEBUGGER": "on"}})


def test_a_user_turns_the_debugger_on_for_her_own_kernels(hub):
    """With the debugger off for the hub, alice's kernel spec whose env says "on" gives her kernels that offer
    it (and load debugpy), beside her ordinary kernels that do not."""
    spec_dir = "~/.local/share/jupyter/kernels/with-debugger"

    async def kernels():
        admin = await _admin(hub)
        await admin.create_users("alice")
        await admin.__aexit__(None, None, None)
        alice = await _user(hub, "alice")  # her server's start made her account
        await asyncio.to_thread(hub.run, f"mkdir -p {spec_dir} && cat > {spec_dir}/kernel.json",
                                user="jupyter-alice", input=OWN_DEBUGGER_KERNELSPEC)
        seen = {}
        for spec in ("python3", "with-debugger"):
            kernel = await alice.open_kernel(await alice.start_kernel(spec))
            info = await _kernel_request(kernel, "kernel_info_request", {}, "shell")
            seen[spec] = ("debugger" in info.get("supported_features", []) or bool(info.get("debugger")),
                          await kernel.execute("'debugpy' in __import__('sys').modules"))
            await kernel.close()
        await alice.stop_server()
        await alice.__aexit__(None, None, None)
        return seen

    try:
        assert run(kernels()) == {"python3": (False, "False"), "with-debugger": (True, "True")}
    finally:
        hub.run(f"rm -rf {spec_dir}", user="jupyter-alice")


async def _terminal_says(client, command, timeout=30):
    """Open a JupyterLab terminal, type ``command``, return the line it printed (a marker-bearing line)."""
    name = (await client.api("POST", f"user/{client.username}/api/terminals", expect=(200,)))["name"]
    url = client.url(f"user/{client.username}/terminals/websocket/{name}").replace("http", "ws", 1)
    async with client.session.ws_connect(url, headers=client._auth()) as ws:
        await ws.send_str(json.dumps(["stdin", command + "\r"]))
        buffer, deadline = "", time.monotonic() + timeout
        while time.monotonic() < deadline:
            frame = await ws.receive(timeout=deadline - time.monotonic())
            if frame.type != aiohttp.WSMsgType.TEXT:
                break
            kind, *data = json.loads(frame.data)
            if kind == "stdout":
                buffer += data[0]
                complete = buffer.replace("\r", "\n").split("\n")[:-1]  # the last piece may still be growing
                lines = [line.strip() for line in complete if line.startswith("TERM-")]
                if lines:
                    return lines[0]
    raise HubError(f"the terminal did not answer: {buffer[-300:]!r}")


CONNECT_METADATA = (
    "import socket\n"
    "try:\n"
    "    socket.create_connection(('169.254.169.254', 80), timeout=3).close(); print('connected')\n"
    "except OSError as e:\n"
    "    print(type(e).__name__)\n"
)


def test_cloud_metadata_is_out_of_reach_unless_allowed(hub):
    # A stand-in metadata service inside this machine's own network namespace (the guest has no CAP_NET_ADMIN
    # on it: the address is added from the host).
    subprocess.run(["ip", "-n", hub.netns, "addr", "add", "169.254.169.254/32", "dev", "lo"], check=True)
    hub.run("systemd-run --unit=fake-metadata python3 -m http.server 80 --bind 169.254.169.254")
    hub.run("for i in $(seq 50); do curl -s -o /dev/null http://169.254.169.254/ && exit 0; sleep 0.1; done; exit 1")
    assert "users' network rules: enforced" in hub.run("tljh status", check=False).stdout

    async def from_bobs_kernel():
        bob = await _user(hub, "bob")
        kernel = await bob.open_kernel()
        answer = (await kernel.execute(CONNECT_METADATA, timeout=20)).strip()
        await kernel.close()
        await bob.stop_server()
        await bob.__aexit__(None, None, None)
        return answer

    assert run(from_bobs_kernel()) != "connected"
    hub.run("tljh-config set network.allow_cloud_metadata true && tljh-config reload hub")
    try:
        assert run(from_bobs_kernel()) == "connected"
    finally:
        hub.run("tljh-config set network.allow_cloud_metadata false && tljh-config reload hub")
        hub.run("systemctl stop fake-metadata", check=False)
        subprocess.run(["ip", "-n", hub.netns, "addr", "del", "169.254.169.254/32", "dev", "lo"], check=False)


def _groups(hub, account):
    return set(hub.run(f"id -nG {account}").stdout.split())


def test_groups_and_admin_rights_follow_the_config_at_each_login(hub):
    refused = hub.run("tljh-config set users.extra_user_groups.sudo carol", check=False)
    assert refused.returncode == 2 and "'sudo' gives root-equivalent rights" in refused.stderr
    hub.run("tljh-config add-item users.extra_user_groups.class-a carol && tljh-config add-item users.admin carol"
            " && tljh-config reload hub")

    async def login_carol():
        carol = await _user(hub, "carol")
        model = await carol.api("GET", "hub/api/users/carol")
        await carol.__aexit__(None, None, None)
        return model

    async def create_carol():
        admin = await _admin(hub)
        await admin.create_users("carol")
        await admin.__aexit__(None, None, None)

    run(create_carol())
    assert run(login_carol())["admin"] is True
    assert {"jupyterhub-users", "jupyterhub-admins", "class-a"} <= _groups(hub, "jupyter-carol")
    assert hub.run("sudo -l -U jupyter-carol", check=False).stdout.count("NOPASSWD") == 1
    # Taken out of both: at her next login she is no admin, leaves the groups, and her server (which carried
    # the old groups) has been stopped.
    hub.run("tljh-config remove-item users.extra_user_groups.class-a carol && tljh-config remove-item users.admin carol"
            " && tljh-config reload hub")

    async def login_again():
        async with HubClient(hub.url()) as carol:
            await carol.login("carol", PASSWORD)
            return await carol.api("GET", "hub/api/users/carol")

    model = run(login_again())
    assert model["admin"] is False
    assert model["servers"] == {}
    assert _groups(hub, "jupyter-carol") == {"jupyter-carol", "jupyterhub-users"}
    assert "NOPASSWD" not in hub.run("sudo -l -U jupyter-carol", check=False).stdout


def _can_login(hub, account):
    """su as root still runs PAM's account stage (like sshd and cron do): an expired account fails it."""
    return hub.run(f"su - {account} -s /bin/sh -c 'echo in'", check=False).stdout.strip() == "in"


def test_banned_and_deleted_users_accounts_are_closed(hub):
    hub.run("apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssh-server cron >/dev/null",
            timeout=600)
    hub.run("systemctl start ssh cron")

    async def create_and_spawn():
        admin = await _admin(hub)
        await admin.create_users("dave", "erin")
        await admin.__aexit__(None, None, None)
        for name in ("dave", "erin"):
            person = await _user(hub, name)
            await person.__aexit__(None, None, None)

    run(create_and_spawn())
    # dave keeps ways in outside the hub: an ssh key and a cron job
    hub.run("ssh-keygen -q -t ed25519 -N '' -f /root/dave-key && install -d -m 700 -o jupyter-dave "
            "/home/jupyter-dave/.ssh && install -m 600 -o jupyter-dave /root/dave-key.pub "
            "/home/jupyter-dave/.ssh/authorized_keys")
    hub.run("echo '* * * * * date +\\%s >> /home/jupyter-dave/cron.log' | crontab -u jupyter-dave -")
    ssh = "ssh -i /root/dave-key -o StrictHostKeyChecking=no -o BatchMode=yes jupyter-dave@127.0.0.1 echo in"
    assert hub.run(ssh, check=False).stdout.strip() == "in"
    assert _can_login(hub, "jupyter-dave")

    hub.run("tljh-config add-item users.banned dave && tljh-config reload hub")
    hub.banned_at = time.time()
    assert hub.run(ssh, check=False).stdout.strip() != "in"
    assert not _can_login(hub, "jupyter-dave")
    assert hub.run("systemctl is-active jupyter-dave", check=False).stdout.strip() != "active"
    assert hub.run("test -f /home/jupyter-dave/.ssh/authorized_keys", check=False).returncode == 0  # kept, unused
    assert re.search(r"dave\s+jupyter-dave\s+named by the hub, locked", hub.run("tljh unix-names").stdout)

    # erin is deleted in the admin panel (through the REST API it uses): her account closes too
    assert _can_login(hub, "jupyter-erin")
    run(_stop_and_delete(hub, "erin"))
    assert not _can_login(hub, "jupyter-erin")


async def _stop_and_delete(hub, name):
    admin = await _admin(hub)
    await admin.api("DELETE", f"hub/api/users/{name}/server", expect=(202, 204))
    for _ in range(100):
        if not (await admin.api("GET", f"hub/api/users/{name}"))["servers"]:
            break
        await asyncio.sleep(0.2)
    await admin.api("DELETE", f"hub/api/users/{name}", expect=(204,))
    await admin.__aexit__(None, None, None)


def test_full_disk_during_tljh_config_set(hub):
    hub.run("mkdir -p /mnt/full && mount -t tmpfs -o size=64k tmpfs /mnt/full && cp /opt/tljh/config/config.yaml /mnt/full/"
            " && (dd if=/dev/zero of=/mnt/full/filler bs=4k 2>/dev/null; true)")
    try:
        before = hub.run("sha256sum /mnt/full/config.yaml").stdout
        r = hub.run("tljh-config --config-path /mnt/full/config.yaml set limits.cpu 1.5", check=False)
        assert r.returncode == 4, r
        assert r.stderr == "error: could not write /mnt/full/config.yaml: No space left on device; nothing changed\n"
        assert hub.run("sha256sum /mnt/full/config.yaml").stdout == before
        assert hub.run("ls -A /mnt/full").stdout.split() == ["config.yaml", "config.yaml.lock", "filler"]
    finally:
        hub.run("umount /mnt/full", check=False)


# systemd-analyze security "exposure" (0 = locked down, 10 = exposed) of every unit the installer writes and of
# users' server units. Measured on Debian 12 (systemd 252); the bounds keep the hardening from eroding.
EXPOSURE_AT_MOST = {
    "jupyterhub.service": 5.5,
    "caddy.service": 2.0,  # the proxy, as its own account
    "jupyter-alice.service": 3.0,  # a user's server
    "jupyter-teacher.service": 9.0,  # an admin's server: sudo must keep working in its terminal
}


def test_systemd_exposure_of_the_units(hub):
    async def start_teacher():
        async with HubClient(hub.url()) as teacher:
            await teacher.login("teacher", TEACHER_PASSWORD)
            await teacher.start_server()
            assert await _terminal_says(teacher, "echo TERM-$(sudo -n id -un)") == "TERM-root"

    async def start_alice():
        alice = await _user(hub, "alice")
        await alice.__aexit__(None, None, None)

    run(start_teacher())
    run(start_alice())
    units = sorted(set(EXPOSURE_AT_MOST) | set(hub.run(
        "systemctl list-unit-files --no-legend 'caddy*.service' | cut -d' ' -f1").stdout.split()))
    scores = {}
    for unit in units:
        line = hub.run(f"systemd-analyze security {unit} --no-pager | tail -1").stdout
        scores[unit] = float(re.search(r"level for \S+: (\d+\.\d+)", line).group(1))
    print("systemd-analyze security:", scores)
    for unit, bound in EXPOSURE_AT_MOST.items():
        assert scores[unit] <= bound, (unit, scores[unit])


def test_banned_users_cron_jobs_stopped(hub):
    """Late in the module so that cron has ticked since dave was banned (cron runs jobs once a minute)."""
    banned_at = getattr(hub, "banned_at", None)
    assert banned_at is not None, "test_banned_and_deleted_users_accounts_are_closed must run first"
    wait = banned_at + 65 - time.time()
    if wait > 0:
        time.sleep(wait)
    runs = [int(t) for t in hub.run("cat /home/jupyter-dave/cron.log", check=False).stdout.split()]
    assert [t for t in runs if t > banned_at + 1] == []
    # cron did try dave's job after the ban, and PAM's account stage refused it. Searched in the whole journal, by
    # cron's syslog identifier: the refusal comes from a short-lived child of cron, and journald often cannot tell
    # such a process's unit once it has exited, so `journalctl -u cron` misses it (CI on a224062 found it empty).
    refusals = hub.run("journalctl --no-pager -o short --since=@%d" % int(banned_at)).stdout
    assert re.search(r"(?i)cron\S*: .*jupyter-dave.*expired", refusals), refusals[-2000:]


def test_uninstall_purge_removes_only_what_the_hub_made(hub):
    hub.run("useradd -m jupyter-someone && groupadd students")
    hub.run("tljh uninstall --purge --yes")
    left = hub.run("getent passwd | cut -d: -f1").stdout.split()
    assert "jupyter-someone" in left
    assert not [a for a in left if a in ("jupyter-alice", "jupyter-bob", "jupyter-jos--4745b", "jupyter-carol")]
    assert hub.run("getent group students", check=False).returncode == 0
    assert hub.run("getent group jupyterhub-users", check=False).returncode != 0
