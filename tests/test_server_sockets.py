"""The hub's links to users' server sockets (tljh.hub.server_sockets.link_socket).

A user owns the directory their server's socket is in, so they can put anything under the socket's name;
the proxy (which may connect to every server) and the hub (root) must only ever reach the server that
user's own processes bound. Real sockets on this machine's filesystem; root needed for the ownership cases.
"""

import os
import shutil
import socket
import stat
import tempfile
import types
from pathlib import Path

import pytest
from systemdspawner import SystemdSpawner
from traitlets.config import Config

from tljh.hub.server_sockets import link_socket, remove_socket, socket_path, unlink_socket
from tljh.hub.spawner import UserCreatingSpawner
from tljh.hub.unit_states import UnitStates
from tljh.system import paths, systemd

OTHER_UID = 54321


@pytest.fixture
def dirs():
    # short: unix socket paths are limited to 107 bytes
    base = Path(tempfile.mkdtemp(prefix="tljh-s-", dir="/tmp"))
    servers, links = base / "servers", base / "links"
    (servers / "jupyter-alice").mkdir(parents=True)
    (servers / "jupyter-bob").mkdir(parents=True)
    yield servers, links
    shutil.rmtree(base)


def serve(path):
    """A listening unix socket bound at path."""
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(path))
    s.listen()
    s.setblocking(False)
    return s


def who_answers(path, servers):
    """The name (in the dict `servers` of listening sockets) of the one a connection to path reaches."""
    c = socket.socket(socket.AF_UNIX)
    c.connect(str(path))
    c.close()
    for name, s in servers.items():
        try:
            conn, _ = s.accept()
        except BlockingIOError:
            continue
        conn.close()
        return name
    return None


def link(servers, links, unix_name="jupyter-alice", server_name="", uid=None):
    return link_socket(str(servers), str(links), unix_name, server_name, os.getuid() if uid is None else uid,
                       proxy_group="")


def test_the_link_reaches_the_server_that_bound_the_socket(dirs):
    servers, links = dirs
    alice = serve(servers / "jupyter-alice" / "server.sock")
    assert link(servers, links)
    linked = Path(socket_path(str(links), "jupyter-alice"))
    assert stat.S_ISSOCK(os.lstat(linked).st_mode)
    assert who_answers(linked, {"alice": alice}) == "alice"
    # root's directories, the proxy's group may pass (here: this process's group)
    for d in (links, links / "jupyter-alice"):
        info = os.lstat(d)
        assert (info.st_uid, stat.S_IMODE(info.st_mode)) == (0, 0o750)
    alice.close()


def test_named_servers_have_links_of_their_own(dirs):
    servers, links = dirs
    default = serve(servers / "jupyter-alice" / "server.sock")
    named = serve(servers / "jupyter-alice" / "server-gpu.sock")
    assert link(servers, links) and link(servers, links, server_name="gpu")
    assert who_answers(socket_path(str(links), "jupyter-alice", "gpu"), {"default": default, "gpu": named}) == "gpu"
    assert who_answers(socket_path(str(links), "jupyter-alice"), {"default": default, "gpu": named}) == "default"
    default.close()
    named.close()


def test_a_symlink_in_place_of_the_socket_is_not_linked(dirs):
    """alice points her socket's name at bob's server (which the proxy may reach and she may not)."""
    servers, links = dirs
    bob = serve(servers / "jupyter-bob" / "server.sock")
    (servers / "jupyter-alice" / "server.sock").symlink_to(servers / "jupyter-bob" / "server.sock")
    assert not link(servers, links)
    assert not os.path.lexists(socket_path(str(links), "jupyter-alice"))
    assert os.listdir(links / "jupyter-alice") == []  # no temporary name left behind either
    bob.close()


def test_a_socket_of_another_account_is_not_linked(dirs):
    servers, links = dirs
    path = servers / "jupyter-alice" / "server.sock"
    other = serve(path)
    os.chown(path, OTHER_UID, -1)
    assert not link(servers, links)
    assert link(servers, links, uid=OTHER_UID)
    other.close()


def test_a_regular_file_or_nothing_is_not_linked(dirs):
    servers, links = dirs
    assert not link(servers, links)  # not bound yet
    assert not link(servers, links, unix_name="jupyter-nobody-here")
    (servers / "jupyter-alice" / "server.sock").write_text("not a socket")
    assert not link(servers, links)


def test_what_alice_does_in_her_directory_later_changes_nothing(dirs):
    """The link names the socket itself: renaming it away and putting a symlink to bob's in its place
    leaves the link on alice's server."""
    servers, links = dirs
    own = servers / "jupyter-alice" / "server.sock"
    alice = serve(own)
    bob = serve(servers / "jupyter-bob" / "server.sock")
    assert link(servers, links)
    os.rename(own, servers / "jupyter-alice" / "moved.sock")
    own.symlink_to(servers / "jupyter-bob" / "server.sock")
    assert who_answers(socket_path(str(links), "jupyter-alice"), {"alice": alice, "bob": bob}) == "alice"
    # and a new link (the next start) refuses the symlink, leaving the old link as it was
    assert not link(servers, links)
    assert who_answers(socket_path(str(links), "jupyter-alice"), {"alice": alice, "bob": bob}) == "alice"
    unlink_socket(str(links), "jupyter-alice", "")
    assert not os.path.lexists(socket_path(str(links), "jupyter-alice"))
    unlink_socket(str(links), "jupyter-alice", "")  # twice is fine
    alice.close()
    bob.close()


def test_the_socket_a_stopped_server_left_is_removed_before_the_next_start(dirs):
    """jupyter-server leaves its socket file when it stops and replaces it when it binds again: linked in
    between, the old one would be the link, with nothing listening."""
    servers, links = dirs
    path = servers / "jupyter-alice" / "server.sock"
    serve(path).close()  # the previous run of alice's server
    assert os.path.lexists(path)
    remove_socket(str(servers), "jupyter-alice")
    assert not link(servers, links)  # nothing to link until the new server binds
    again = serve(path)
    assert link(servers, links)
    assert who_answers(socket_path(str(links), "jupyter-alice"), {"again": again}) == "again"
    again.close()
    # a symlink under the name goes, not what it points to; nothing there, or no directory at all, is fine
    path.unlink()
    bob = servers / "jupyter-bob" / "server.sock"
    serve(bob).close()
    path.symlink_to(bob)
    remove_socket(str(servers), "jupyter-alice")
    assert not os.path.lexists(path) and os.path.lexists(bob)
    remove_socket(str(servers), "jupyter-alice")
    remove_socket(str(servers), "jupyter-nobody-here", "gpu")


# ------------------------------------------------------------------------ the spawner removes its link


@pytest.fixture
def unit(monkeypatch):
    """systemdspawner under the hub's spawner: a unit that runs until stopped (no systemd here)."""
    state = types.SimpleNamespace(running=True)

    async def running(self, unit):
        return state.running

    async def stop(self, now=False):
        state.running = False

    async def properties(unit, *names):
        return {"ActiveState": "active" if state.running else "inactive", "Result": "success",
                "ExecMainStatus": "0"}

    monkeypatch.setattr(UnitStates, "running", running)
    monkeypatch.setattr(SystemdSpawner, "stop", stop)
    monkeypatch.setattr(systemd, "properties", properties)
    return state


@pytest.fixture
def running(dirs, tmp_path, monkeypatch):
    """alice's server as a freshly restarted hub finds it: socket linked, session layer present, and a
    spawner whose start() never ran in this process (only its saved state loaded)."""
    servers, links = dirs
    monkeypatch.setattr(paths, "SESSIONS_DIR", str(tmp_path / "sessions"))
    layer = tmp_path / "sessions" / "jupyter-alice"
    layer.mkdir(parents=True)
    server = serve(servers / "jupyter-alice" / "server.sock")
    assert link(servers, links)
    spawner = UserCreatingSpawner(config=Config(), user=types.SimpleNamespace(name="alice", admin=False, id=1))
    spawner.servers_dir, spawner.server_links_dir = str(servers), str(links)
    spawner.load_state({"unit_name": "jupyter-alice"})
    yield spawner, Path(socket_path(str(links), "jupyter-alice")), layer
    server.close()


@pytest.mark.asyncio
async def test_stop_removes_the_link_and_the_session_layer_also_after_a_hub_restart(unit, running):
    spawner, linked, layer = running
    await spawner.stop()
    assert not unit.running
    assert not os.path.lexists(linked) and not layer.exists()


@pytest.mark.asyncio
async def test_a_server_gone_behind_the_hubs_back_loses_its_link_and_layer_at_the_next_poll(unit, running):
    """JupyterHub calls stop() only for a server that still runs: poll is the only place to clean up."""
    spawner, linked, layer = running
    assert await spawner.poll() is None
    assert os.path.lexists(linked) and layer.exists()
    unit.running = False  # systemctl stop, a crash
    spawner._spawn_pending = True  # a start in progress keeps what it is making
    assert await spawner.poll() == 1
    assert os.path.lexists(linked) and layer.exists()
    spawner._spawn_pending = False
    assert await spawner.poll() == 1
    assert not os.path.lexists(linked) and not layer.exists()
