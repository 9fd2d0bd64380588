"""Caddy JSON built by tljh.proxy.caddy_config: pure functions, compared as dicts. That Caddy accepts and
serves them is checked in tests/test_caddy_proxy.py."""

import shutil
import tempfile
from pathlib import Path

import pytest

from tljh.proxy import caddy_config as cc
from tljh.proxy import route_table

HUB = "http://127.0.0.1:15001"
HUB_DIAL = "127.0.0.1:15001"
TRANSPORT = {"protocol": "http", "dial_timeout": "5s", "keep_alive": {"max_idle_conns_per_host": 1024}}


def rp(dial, **extra):
    return {"handler": "reverse_proxy", "upstreams": [{"dial": dial}],
            "headers": {"request": {"set": {"X-Forwarded-For": ["{tljh.client_ip}"]}}},
            "stream_close_delay": "24h", "transport": TRANSPORT, **extra}


WAIT = {"load_balancing": {"try_duration": "10s", "try_interval": "100ms"}}


def test_reverse_proxy_options():
    assert cc.reverse_proxy("unix//x.sock") == rp("unix//x.sock")
    assert cc.reverse_proxy(HUB_DIAL, wait=True) == rp(HUB_DIAL, **WAIT)
    assert cc.reverse_proxy(HUB_DIAL, status_code=503)["handle_response"] == [
        {"routes": [{"handle": [{"handler": "copy_response", "status_code": 503}]}]}
    ]


def test_table_route():
    route = cc.table_route("/run/tljh/routes", 3, HUB_DIAL)
    assert route["match"] == [{"file": {"root": "/run/tljh/routes", "try_files": route_table.candidates(3),
                                        "try_policy": "first_exist"}}]
    tcp, unix = route["handle"][0]["routes"]
    # "@tcp=<address>" entries: the address comes from the entry's name; the hub's waits while it restarts
    assert tcp["match"] == [{"vars_regexp": {"{http.matchers.file.relative}": {
        "name": "tcp", "pattern": "/@tcp=([^/]+)$"}}}]
    hub, other = tcp["handle"][0]["routes"]
    assert hub == {"match": [{"vars": {"{http.regexp.tcp.1}": [HUB_DIAL]}}],
                   "handle": [rp(HUB_DIAL, **WAIT)], "terminal": True}
    assert other == {"handle": [rp("{http.regexp.tcp.1}")]}
    # "@" entries: the socket is the link next to it
    assert unix == {"handle": [rp("unix/{http.matchers.file.absolute}.sock")]}
    assert route["terminal"] is True


def test_error_routes():
    hub_down, server_down = cc.error_routes(HUB_DIAL, "/jh/")
    assert hub_down["match"] == [{"vars": {"{http.reverse_proxy.upstream.hostport}": [HUB_DIAL]}}]
    assert hub_down["handle"][0]["status_code"] == 503
    assert "JupyterHub is restarting" in hub_down["handle"][0]["body"]
    assert server_down["handle"] == [
        {"handler": "rewrite", "method": "GET", "uri": "/jh/hub/error/503"},
        rp(HUB_DIAL, handle_response=[{"routes": [{"handle": [{"handler": "copy_response", "status_code": 503}]}]}]),
    ]


def test_proxy_config_http():
    c = cc.proxy_config({}, hub_url=HUB, base_url="/")
    assert c["admin"] == {"listen": "fd/3", "config": {"persist": False}}
    assert c["storage"] == {"module": "file_system", "root": "/var/lib/tljh-proxy"}
    assert set(c["apps"]) == {"http"}
    server = c["apps"]["http"]["servers"]["tljh_http"]
    assert server == {
        "listen": [":80"],
        "routes": [{"handle": [cc.client_ip_handler()]}, cc.table_route("/run/tljh/routes", 3, HUB_DIAL),
                   {"handle": [rp(HUB_DIAL, **WAIT)]}],
        "read_header_timeout": "30s",
        "idle_timeout": "5m",
        "automatic_https": {"disable": True},
        "errors": {"routes": cc.error_routes(HUB_DIAL, "/")},
    }


def test_proxy_config_paths_depth_and_base_url():
    c = cc.proxy_config({"http": {"address": "::1", "port": 8080}}, hub_url="http://127.0.0.1:9", base_url="/a/b/",
                        routes_dir="/r", admin_listen="unix//a.sock|0600", data_dir="/d")
    assert c["admin"]["listen"] == "unix//a.sock|0600"
    assert c["storage"]["root"] == "/d"
    server = c["apps"]["http"]["servers"]["tljh_http"]
    assert server["listen"] == ["[::1]:8080"]
    assert server["routes"][1] == cc.table_route("/r", 5, "127.0.0.1:9")
    assert cc.proxy_config({}, hub_url=HUB, base_url="/", depth=7)["apps"]["http"]["servers"]["tljh_http"][
        "routes"][1]["match"][0]["file"]["try_files"] == route_table.candidates(7)


def test_loopback_clients_are_one_address():
    assert cc.client_ip_handler() == {
        "handler": "map", "source": "{http.request.remote.host}", "destinations": ["{tljh.client_ip}"],
        "mappings": [{"input": "::1", "outputs": ["127.0.0.1"]}], "defaults": ["{http.request.remote.host}"],
    }


@pytest.mark.parametrize("port", [0, 70000, "80", True])
def test_bad_port(port):
    with pytest.raises(cc.CaddyConfigError, match="port"):
        cc.proxy_config({"http": {"port": port}}, hub_url=HUB, base_url="/")


@pytest.mark.parametrize("kwargs, message", [
    ({"hub_url": HUB, "base_url": "jh"}, "base_url"),
    ({"hub_url": "http+unix://%2Fhub.sock", "base_url": "/"}, "over TCP"),
])
def test_bad_hub_or_base_url(kwargs, message):
    with pytest.raises((cc.CaddyConfigError, route_table.RouteError), match=message):
        cc.proxy_config({}, **kwargs)


def test_https_manual_cert_is_inlined():
    c = cc.proxy_config({"https": {"enabled": True, "tls": {"cert": "/c.pem", "key": "/k.pem"}}}, hub_url=HUB,
                        base_url="/", manual_pem=("CERT PEM", "KEY PEM"))
    servers = c["apps"]["http"]["servers"]
    assert servers["tljh_http"]["routes"] == [
        {"handle": [{"handler": "static_response", "status_code": 308,
                     "headers": {"Location": ["https://{http.request.host}{http.request.uri}"]}}]}
    ]
    assert servers["tljh_https"] == {
        "listen": [":443"],
        "routes": cc.proxy_routes("/run/tljh/routes", 3, HUB_DIAL),
        "tls_connection_policies": [{"certificate_selection": {"any_tag": ["tljh_manual"]}}],
        "protocols": ["h1", "h2"],
        "read_header_timeout": "30s",
        "idle_timeout": "5m",
        "automatic_https": {"disable": True},
        "errors": {"routes": cc.error_routes(HUB_DIAL, "/")},
    }
    # the proxy never reads the admin's files: their content is in its config
    assert c["apps"]["tls"] == {
        "certificates": {"load_pem": [{"certificate": "CERT PEM", "key": "KEY PEM", "tags": ["tljh_manual"]}]}
    }
    with pytest.raises(cc.CaddyConfigError, match="not read"):
        cc.proxy_config({"https": {"enabled": True, "tls": {"cert": "/c.pem", "key": "/k.pem"}}}, hub_url=HUB,
                        base_url="/")


def test_https_letsencrypt():
    c = cc.proxy_config({"https": {"enabled": True, "letsencrypt": {
        "email": "a@example.org", "domains": ["hub.example.org"]}}}, hub_url=HUB, base_url="/")
    assert c["apps"]["tls"] == {
        "certificates": {"automate": ["hub.example.org"]},
        "automation": {"policies": [{
            "subjects": ["hub.example.org"],
            "issuers": [{"module": "acme", "ca": "https://acme-v02.api.letsencrypt.org/directory",
                         "email": "a@example.org"}],
        }]},
    }
    assert c["apps"]["http"]["servers"]["tljh_https"]["tls_connection_policies"] == [{}]


def test_https_staging_and_custom_ca_ports():
    config = {
        "http": {"port": 5002},
        "https": {"enabled": True, "port": 5001,
                  "letsencrypt": {"email": "a@b.org", "domains": ["x.test"], "staging": True}},
    }

    def issuer():
        return cc.proxy_config(config, hub_url=HUB, base_url="/")["apps"]["tls"]["automation"]["policies"][0][
            "issuers"][0]

    assert issuer()["ca"] == "https://acme-staging-v02.api.letsencrypt.org/directory"
    assert issuer()["challenges"] == {"http": {"alternate_port": 5002}, "tls-alpn": {"alternate_port": 5001}}
    config["https"]["acme"] = {"directory": "https://127.0.0.1:14000/dir", "trusted_roots": "/ca.pem"}
    assert issuer()["ca"] == "https://127.0.0.1:14000/dir"
    assert issuer()["trusted_roots_pem_files"] == ["/ca.pem"]
    redirect = cc.proxy_config(config, hub_url=HUB, base_url="/")["apps"]["http"]["servers"]["tljh_http"]["routes"][0]
    assert redirect["handle"][0]["headers"]["Location"] == ["https://{http.request.host}:5001{http.request.uri}"]


@pytest.mark.parametrize(
    "https, message",
    [
        ({"enabled": True}, "neither"),
        ({"enabled": True, "tls": {"cert": "/c.pem"}}, "together"),
    ],
)
def test_https_incomplete(https, message):
    with pytest.raises(cc.CaddyConfigError, match=message):
        cc.proxy_config({"https": https}, hub_url=HUB, base_url="/")


def test_https_preflight():
    from tljh.proxy.edge import https_preflight

    config = {"https": {"enabled": True, "letsencrypt": {"domains": ["ok.test", "nat.test", "missing.test"]}}}
    dns = {"ok.test": {"10.0.0.5"}, "nat.test": {"203.0.113.9"}}

    def resolve(name):
        if name not in dns:
            raise OSError("Name or service not known")
        return dns[name]

    owners = {80: "caddy", 443: "nginx"}
    problems = https_preflight(config, resolve=resolve, port_owner=owners.get, local_addresses=lambda: {"10.0.0.5"})
    assert problems == [
        "https.port 443 is in use by another program (nginx); stop it or choose another port",
        "nat.test resolves to 203.0.113.9, not an address of this machine (fine only if that address forwards ports 80/443 here)",
        "missing.test does not resolve (Name or service not known); add a DNS A/AAAA record pointing to this machine",
    ]
    assert https_preflight({}, port_owner=lambda p: None) == []


@pytest.fixture
def world_readable_dir():
    """A temp dir everyone may enter (pytest's own are root-only all the way up)."""
    path = Path(tempfile.mkdtemp(prefix="tljh-test-", dir="/tmp"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path)


def test_trusted_roots_must_be_readable_by_the_proxy(world_readable_dir):
    """The proxy runs as its own account: a CA file only root can read would fail later, in Caddy's log."""
    from tljh.proxy.edge import ProxyReloadError, check_edge_settings

    tmp_path = world_readable_dir
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    (private / "ca.pem").write_text("x")
    public = tmp_path / "public"
    public.mkdir()
    (public / "ca.pem").write_text("x")
    for p in (tmp_path, public, public / "ca.pem"):
        p.chmod(0o755 if p.is_dir() else 0o644)

    def config(root):
        return {"https": {"enabled": True, "letsencrypt": {"domains": ["a.org"]}, "acme": {"trusted_roots": [root]}}}

    with pytest.raises(ProxyReloadError, match="not readable by everyone"):
        check_edge_settings(config(str(private / "ca.pem")))
    check_edge_settings(config(str(public / "ca.pem")))
    (public / "ca.pem").chmod(0o600)
    with pytest.raises(ProxyReloadError, match="not readable by everyone"):
        check_edge_settings(config(str(public / "ca.pem")))
