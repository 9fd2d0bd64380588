"""The route table directory (tljh.proxy.route_table): format, atomic changes, refusals. No Caddy here:
tests/test_caddy_proxy.py checks that Caddy routes by what these files say."""

import os
import stat

import pytest

from tljh.proxy import route_table
from tljh.proxy.route_table import RouteError, RouteTable

ALICE = "http+unix://%2Frun%2Ftljh%2Fservers%2Fjupyter-alice%2Fserver.sock:80"
HUB = "http://127.0.0.1:15001"


@pytest.fixture
def table(tmp_path):
    return RouteTable(str(tmp_path / "routes"), depth=3, group=os.getgid())


def entries(table, routespec):
    return sorted(os.listdir(os.path.join(table.root, *route_table.segments(routespec, table.depth))))


def test_add_list_delete(table):
    table.add("/", HUB, {"hub": True})
    table.add("/user/alice/", ALICE, {"user": "alice", "server_name": ""})
    table.add("/services/cull/", "http://127.0.0.1:10101", {"service": "cull"})
    assert table.routes() == {
        "/": {"routespec": "/", "target": HUB, "data": {"hub": True}},
        "/user/alice/": {"routespec": "/user/alice/", "target": ALICE, "data": {"user": "alice", "server_name": ""}},
        "/services/cull/": {"routespec": "/services/cull/", "target": "http://127.0.0.1:10101",
                            "data": {"service": "cull"}},
    }
    assert entries(table, "/user/alice/") == ["@", "@.sock"]
    assert os.readlink(os.path.join(table.root, "_user", "_alice", "@.sock")) == "/run/tljh/servers/jupyter-alice/server.sock"
    assert entries(table, "/services/cull/") == ["@tcp=127.0.0.1:10101"]
    assert "@tcp=127.0.0.1:15001" in os.listdir(table.root)

    assert table.delete("/user/alice/") is True
    assert table.delete("/user/alice/") is False
    assert "/user/alice/" not in table.routes()
    # directories left empty are gone; the others stay
    assert sorted(os.listdir(table.root)) == ["@tcp=127.0.0.1:15001", "_services"]


def test_a_new_table_object_reads_what_is_there(table):
    """What the hub finds after a restart: the table is files, not the hub's memory."""
    table.add("/user/alice/", ALICE, {"user": "alice"})
    assert set(RouteTable(table.root, depth=3).routes()) == {"/user/alice/"}


def test_nested_routes_are_independent(table):
    table.add("/user/alice/", ALICE, {})
    table.add("/user/alice/gpu/", ALICE.replace("server.sock", "server-gpu.sock"), {})
    table.delete("/user/alice/")
    assert set(table.routes()) == {"/user/alice/gpu/"}
    assert entries(table, "/user/alice/") == ["_gpu"]
    table.delete("/user/alice/gpu/")
    assert os.listdir(table.root) == []


@pytest.mark.parametrize("first, second", [(ALICE, "http://127.0.0.1:9000"), ("http://127.0.0.1:9000", ALICE),
                                           ("http://127.0.0.1:9000", "http://[::1]:9001")])
def test_changing_the_target_leaves_one_entry(table, first, second):
    table.add("/user/alice/", first, {"n": 1})
    table.add("/user/alice/", second, {"n": 2})
    assert table.routes()["/user/alice/"] == {"routespec": "/user/alice/", "target": second, "data": {"n": 2}}
    expected = ["@", "@.sock"] if second == ALICE else ["@tcp=[::1]:9001" if "::1" in second else "@tcp=127.0.0.1:9000"]
    assert entries(table, "/user/alice/") == expected


def test_segments_are_unescaped_and_prefixed(table):
    table.add("/user/jos%C3%A9/", ALICE, {})
    table.add("/user/../", ALICE, {})
    assert sorted(os.listdir(os.path.join(table.root, "_user"))) == ["_..", "_josé"]


def test_permissions(table):
    """Directories 02750 and entries 0640 in the proxy's group: the proxy reads, nobody else looks."""
    table.add("/user/alice/", ALICE, {})
    for path in (table.root, os.path.join(table.root, "_user"), os.path.join(table.root, "_user", "_alice")):
        st = os.stat(path)
        assert (stat.S_IMODE(st.st_mode), st.st_gid) == (0o2750, os.getgid()), path
    entry = os.stat(os.path.join(table.root, "_user", "_alice", "@"))
    assert stat.S_IMODE(entry.st_mode) == 0o640


def test_existing_root_is_repaired(tmp_path):
    root = tmp_path / "routes"
    root.mkdir(mode=0o777)
    os.chmod(root, 0o777)
    RouteTable(str(root), depth=3, group=os.getgid()).add("/", HUB, {})
    assert stat.S_IMODE(os.stat(root).st_mode) == 0o2750


def test_unreadable_entries_are_skipped(table):
    table.add("/user/alice/", ALICE, {})
    with open(os.path.join(table.root, "_user", "_alice", "@"), "w") as f:
        f.write("{not json")
    assert table.routes() == {}


@pytest.mark.parametrize("routespec, target, message", [
    ("example.org/user/a/", ALICE, "host-based"),
    ("/user/a", ALICE, "must end with '/'"),
    ("/user//a/", ALICE, "path segment"),
    ("/user/a%2Fb/", ALICE, "path segment"),
    ("/a/b/c/d/", ALICE, "4 segments deep"),
    ("/user/a/", "https://127.0.0.1:8000", "http:// and http\\+unix://"),
    ("/user/a/", "http://127.0.0.1:8000/prefix", "with a path"),
    ("/user/a/", "http+unix://relative.sock", "absolute"),
])
def test_refusals(table, routespec, target, message):
    with pytest.raises(RouteError, match=message):
        table.add(routespec, target, {})
    assert not os.path.exists(table.root) or table.routes() == {}


def test_candidates_and_depth():
    assert route_table.default_depth("/") == 3
    assert route_table.default_depth("/jupyter/lab/") == 5
    assert route_table.candidates(2) == [
        "/_{http.request.uri.path.0}/_{http.request.uri.path.1}/@*",
        "/_{http.request.uri.path.0}/@*",
        "/@*",
    ]


@pytest.mark.parametrize("target, expected", [
    (ALICE, ("unix", "/run/tljh/servers/jupyter-alice/server.sock")),
    ("http+unix://%2Ftmp%2Fx.sock", ("unix", "/tmp/x.sock")),
    ("http://127.0.0.1:15001", ("tcp", "127.0.0.1:15001")),
    ("http://localhost", ("tcp", "localhost:80")),
    ("http://[::1]:8000/", ("tcp", "[::1]:8000")),
])
def test_parse_target(target, expected):
    assert route_table.parse_target(target) == expected
