"""Caddy JSON built by tljh.caddy_config: pure functions, compared as dicts."""

import re

import pytest

from tljh.proxy import caddy_config as cc

HUB = "http://127.0.0.1:15001"


def proxy_handler(dial, delay="24h", idle=1024):
    return {
        "handler": "reverse_proxy",
        "upstreams": [{"dial": dial}],
        "flush_interval": -1,
        "stream_close_delay": delay,
        "transport": {
            "protocol": "http",
            "dial_timeout": "5s",
            "keep_alive": {"max_idle_conns_per_host": idle},
        },
    }


EDGE_PROXY = {
    "handler": "reverse_proxy",
    "upstreams": [{"dial": "unix//run/tljh-router/http.sock"}],
    "load_balancing": {"try_duration": "10s", "try_interval": "20ms", "retry_match": [
        {"method": ["GET", "HEAD", "OPTIONS", "POST", "PUT", "PATCH", "DELETE"]}]},
    "request_buffers": 65536,
    "headers": {"request": {"set": {"X-Forwarded-For": ["{tljh.client_ip}"]}}},
    "flush_interval": -1,
    "stream_close_delay": "24h",
    "transport": {"protocol": "http", "dial_timeout": "5s", "keep_alive": {"enabled": False}},
}

CLIENT_IP = {
    "handler": "map",
    "source": "{http.request.remote.host}",
    "destinations": ["{tljh.client_ip}"],
    "mappings": [{"input": "::1", "outputs": ["127.0.0.1"]}],
    "defaults": ["{http.request.remote.host}"],
}


def test_route():
    data = {"user": "alice", "server_name": ""}
    assert cc.route("/user/alice/", "http://127.0.0.1:40001", data) == {
        "group": "tljh_routes",
        "match": [{"path_regexp": {"pattern": "^/user/alice(?:/|$)"}}],
        "handle": [
            {
                "handler": "vars",
                "tljh_route": {
                    "routespec": "/user/alice/",
                    "target": "http://127.0.0.1:40001",
                    "data": data,
                },
                "tljh_upstream": "127.0.0.1:40001",
            },
        ],
    }


def test_route_target_path_and_ipv6():
    r = cc.route("/services/x/", "http://[::1]:9000/prefix/", {})
    assert r["handle"][0]["tljh_upstream"] == "[::1]:9000"
    assert r["handle"][1:] == [{"handler": "rewrite", "uri": "/prefix{http.request.uri}"}]


def test_proxy_route_options():
    assert cc.proxy_route(stream_close_delay="1h", max_idle_conns_per_host=7) == {
        "@id": "tljh_proxy",
        "handle": [proxy_handler("{http.vars.tljh_upstream}", delay="1h", idle=7)],
        "terminal": True,
    }


def test_root_route_has_no_matcher():
    r = cc.route("/", HUB, {"hub": True})
    assert "match" not in r
    assert cc.route_info(r) == {"routespec": "/", "target": HUB, "data": {"hub": True}}


@pytest.mark.parametrize(
    "routespec, matches, rejects",
    [
        ("/user/alice/", ["/user/alice", "/user/alice/", "/user/alice/lab/x"],
         ["/user/alicex", "/user/Alice/", "/user/ALICE", "/user/bob/alice/"]),
        ("/user/Alice/", ["/user/Alice/tree"], ["/user/alice/tree"]),
        # Caddy matches the unescaped path: unescape the routespec too
        ("/user/a%20b/", ["/user/a b/x"], ["/user/a%20b/x", "/user/ab/"]),
        # regex metacharacters are literal
        ("/user/a.b+c/", ["/user/a.b+c/"], ["/user/aXb+c/", "/user/a.bbc/"]),
    ],
)
def test_path_pattern(routespec, matches, rejects):
    # Go's RE2 and Python's re agree on this subset (anchors, literals, (?:...|$)).
    pattern = re.compile(cc.path_pattern(routespec))
    for path in matches:
        assert pattern.match(path), path
    for path in rejects:
        assert not pattern.match(path), path


@pytest.mark.parametrize("routespec", ["example.com/user/x/", "user/x/"])
def test_host_routespec_refused(routespec):
    with pytest.raises(cc.CaddyConfigError, match="host-based"):
        cc.route(routespec, HUB, {})


@pytest.mark.parametrize("target", ["https://127.0.0.1:1/", "unix:///x", "http://", "http://h:1/?q=1"])
def test_bad_targets_refused(target):
    with pytest.raises(cc.CaddyConfigError):
        cc.route("/x/", target, {})


def test_router_routes_sorted_catch_all_last():
    routes = [cc.route(spec, "http://127.0.0.1:1", {}) for spec in
              ["/", "/user/alice/", "/user/alice/foo/", "/hub/", "/user/b/"]]
    out = cc.router_routes(HUB, routes)
    specs = [cc.route_info(r)["routespec"] for r in out[:-2]]
    assert specs == ["/user/alice/foo/", "/user/alice/", "/user/b/", "/hub/", "/"]
    assert out[-2:] == [
        {"@id": "tljh_hub_catch_all", "group": "tljh_routes",
         "handle": [{"handler": "vars", "tljh_upstream": "127.0.0.1:15001"}]},
        {"@id": "tljh_proxy", "handle": [proxy_handler("{http.vars.tljh_upstream}")], "terminal": True},
    ]
    assert cc.is_catch_all(out[-2])
    assert cc.has_skeleton_tail(out)
    assert cc.has_skeleton_tail(out, HUB)
    assert not cc.has_skeleton_tail(out, "http://127.0.0.1:1")
    assert not cc.has_skeleton_tail(out[:-1])
    assert not cc.has_skeleton_tail([])


def test_sort_uses_unescaped_length():
    # %20 is one character on the wire Caddy matches: "/user/a%20bc/" unescapes shorter
    keys = sorted(["/user/a%20b/", "/user/abcd/"], key=cc.route_sort_key)
    assert keys == ["/user/abcd/", "/user/a%20b/"]


def test_router_config():
    r = cc.route("/user/a/", "http://127.0.0.1:2", {})
    assert cc.router_config(HUB, "/jh/", [r], admin_socket="/s/admin.sock", http_socket="/s/http.sock") == {
        "admin": {"listen": "unix//s/admin.sock|0600", "config": {"persist": True}},
        "apps": {
            "http": {
                "servers": {
                    "router": {
                        "listen": ["unix//s/http.sock|0600"],
                        "trusted_proxies_unix": True,
                        "automatic_https": {"disable": True},
                        "routes": [r, cc.catch_all_route(HUB), cc.proxy_route()],
                        "errors": {
                            "routes": [
                                {
                                    "handle": [
                                        {"handler": "rewrite", "method": "GET",
                                         "uri": "/jh/hub/error/{http.error.status_code}"},
                                        proxy_handler("127.0.0.1:15001"),
                                    ]
                                }
                            ]
                        },
                    }
                }
            }
        },
    }


def test_router_config_defaults_and_bad_base_url():
    c = cc.router_config(HUB, "/")
    assert c["admin"]["listen"] == "unix//run/tljh-router/admin.sock|0600"
    assert c["apps"]["http"]["servers"]["router"]["listen"] == ["unix//run/tljh-router/http.sock|0600"]
    assert c["apps"]["http"]["servers"]["router"]["routes"] == [cc.catch_all_route(HUB), cc.proxy_route()]
    with pytest.raises(cc.CaddyConfigError):
        cc.router_config(HUB, "jh")


def test_edge_http_default():
    assert cc.edge_config({}) == {
        "admin": {"listen": "unix//run/tljh-edge/admin.sock|0600", "config": {"persist": False}},
        "storage": {"module": "file_system", "root": "/opt/tljh/state/caddy/data"},
        "apps": {
            "http": {
                "http_port": 80,
                "https_port": 443,
                "servers": {
                    "tljh_http": {
                        "listen": [":80"],
                        "routes": [{"handle": [CLIENT_IP, EDGE_PROXY]}],
                        "read_header_timeout": "30s",
                        "idle_timeout": "5m",
                        "automatic_https": {"disable": True},
                        "errors": {"routes": [cc.router_down_route()]},
                    }
                },
            }
        },
    }


def test_edge_http_address_port_and_paths():
    c = cc.edge_config({"http": {"address": "::1", "port": 8080}}, admin_socket="/a.sock",
                       router_socket="/r.sock", data_dir="/d")
    assert c["admin"]["listen"] == "unix//a.sock|0600"
    assert c["storage"]["root"] == "/d"
    server = c["apps"]["http"]["servers"]["tljh_http"]
    assert server["listen"] == ["[::1]:8080"]
    assert server["routes"][0]["handle"][1]["upstreams"] == [{"dial": "unix//r.sock"}]


@pytest.mark.parametrize("port", [0, 70000, "80", True])
def test_edge_bad_port(port):
    with pytest.raises(cc.CaddyConfigError, match="port"):
        cc.edge_config({"http": {"port": port}})


def test_edge_https_manual_cert():
    c = cc.edge_config({"https": {"enabled": True, "tls": {"cert": "/c.pem", "key": "/k.pem"}}})
    servers = c["apps"]["http"]["servers"]
    assert servers["tljh_http"]["routes"] == [
        {"handle": [{"handler": "static_response", "status_code": 308,
                     "headers": {"Location": ["https://{http.request.host}{http.request.uri}"]}}]}
    ]
    assert servers["tljh_https"] == {
        "listen": [":443"],
        "routes": [{"handle": [CLIENT_IP, EDGE_PROXY]}],
        "tls_connection_policies": [{"certificate_selection": {"any_tag": ["tljh_manual"]}}],
        "protocols": ["h1", "h2"],
        "read_header_timeout": "30s",
        "idle_timeout": "5m",
        "automatic_https": {"disable": True},
        "errors": {"routes": [cc.router_down_route()]},
    }
    assert c["apps"]["tls"] == {
        "certificates": {"load_files": [{"certificate": "/c.pem", "key": "/k.pem", "tags": ["tljh_manual"]}]}
    }


def test_edge_https_letsencrypt():
    c = cc.edge_config({"https": {"enabled": True, "letsencrypt": {
        "email": "a@example.org", "domains": ["hub.example.org"]}}})
    assert c["apps"]["tls"] == {
        "certificates": {"automate": ["hub.example.org"]},
        "automation": {"policies": [{
            "subjects": ["hub.example.org"],
            "issuers": [{"module": "acme", "ca": "https://acme-v02.api.letsencrypt.org/directory",
                         "email": "a@example.org"}],
        }]},
    }
    assert c["apps"]["http"]["servers"]["tljh_https"]["tls_connection_policies"] == [{}]


def test_edge_https_staging_and_custom_ca_ports():
    config = {
        "http": {"port": 5002},
        "https": {"enabled": True, "port": 5001,
                  "letsencrypt": {"email": "a@b.org", "domains": ["x.test"], "staging": True}},
    }
    issuer = cc.edge_config(config)["apps"]["tls"]["automation"]["policies"][0]["issuers"][0]
    assert issuer["ca"] == "https://acme-staging-v02.api.letsencrypt.org/directory"
    assert issuer["challenges"] == {"http": {"alternate_port": 5002}, "tls-alpn": {"alternate_port": 5001}}
    config["https"]["acme"] = {"directory": "https://127.0.0.1:14000/dir", "trusted_roots": "/ca.pem"}
    issuer = cc.edge_config(config)["apps"]["tls"]["automation"]["policies"][0]["issuers"][0]
    assert issuer["ca"] == "https://127.0.0.1:14000/dir"
    assert issuer["trusted_roots_pem_files"] == ["/ca.pem"]
    redirect = cc.edge_config(config)["apps"]["http"]["servers"]["tljh_http"]["routes"][0]
    assert redirect["handle"][0]["headers"]["Location"] == ["https://{http.request.host}:5001{http.request.uri}"]


@pytest.mark.parametrize(
    "https, message",
    [
        ({"enabled": True}, "neither"),
        ({"enabled": True, "tls": {"cert": "/c.pem"}}, "together"),
    ],
)
def test_edge_https_incomplete(https, message):
    with pytest.raises(cc.CaddyConfigError, match=message):
        cc.edge_config({"https": https})


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
