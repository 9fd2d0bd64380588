"""Issue 5: HTTPS through Caddy, end to end and offline.

A local ACME server stands in for Let's Encrypt: Debian's pebble, with pebble-challtestsrv as its DNS
server resolving the test domain to this machine. The admin only uses tljh-config, as the docs say.
"""

import asyncio
import ssl
import subprocess
import time

import pytest
from hubclient import HubClient
from installed import installed_machine

ADMIN_PASSWORD = "admin-password-1"
PEBBLE_DIR = "/etc/pebble-test"

PEBBLE_CONFIG = """{
  "pebble": {
    "listenAddress": "0.0.0.0:14000",
    "managementListenAddress": "0.0.0.0:15000",
    "certificate": "/etc/pebble-test/localhost.pem",
    "privateKey": "/etc/pebble-test/localhost.key",
    "httpPort": 80,
    "tlsPort": 443,
    "ocspResponderURL": "",
    "externalAccountBindingRequired": false
  }
}
"""


def start_pebble(m):
    m.run("apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq pebble openssl >/dev/null", timeout=300)
    # Pebble's own HTTPS endpoint needs a certificate: a throwaway CA and a localhost certificate.
    m.run(
        f"""set -e
        mkdir -p {PEBBLE_DIR} && cd {PEBBLE_DIR}
        openssl req -x509 -newkey rsa:2048 -nodes -days 7 -subj /CN=pebble-test-ca -keyout ca.key -out ca.pem 2>/dev/null
        openssl req -newkey rsa:2048 -nodes -subj /CN=localhost -keyout localhost.key -out localhost.csr 2>/dev/null
        printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\\n' > san.ext
        openssl x509 -req -in localhost.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 7 -extfile san.ext -out localhost.pem 2>/dev/null
        cat > config.json <<'EOF'
{PEBBLE_CONFIG}
EOF
        """
    )
    # DNS: every name resolves to this machine (IPv4 only: pebble would otherwise try ::1 first).
    m.run(
        "systemd-run --unit=challtestsrv pebble-challtestsrv -defaultIPv4 127.0.0.1 -defaultIPv6 '' "
        "-dns01 127.0.0.1:8053 -http01 '' -https01 '' -tlsalpn01 '' -management 127.0.0.1:8055"
    )
    m.run(
        "systemd-run --unit=pebble -E PEBBLE_VA_NOSLEEP=1 -E PEBBLE_WFE_NONCEREJECT=0 "
        f"pebble -config {PEBBLE_DIR}/config.json -dnsserver 127.0.0.1:8053"
    )
    wait_for(m, f"curl -sf --cacert {PEBBLE_DIR}/ca.pem https://127.0.0.1:14000/dir", 30)


def wait_for(m, command, timeout):
    deadline = time.monotonic() + timeout
    while True:
        result = m.run(command, check=False)
        if result.returncode == 0:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"{command!r} still failing after {timeout} s: {result.stdout} {result.stderr}")
        time.sleep(0.5)


@pytest.fixture(scope="module")
def hub(os_name):
    with installed_machine(os_name, "--admin", f"admin:{ADMIN_PASSWORD}") as m:
        start_pebble(m)
        yield m


def https_get(m, host, cafile, path="/hub/login"):
    return m.run(
        f"curl -s -o /dev/null -w '%{{http_code}}' --resolve {host}:443:127.0.0.1 --cacert {cafile} https://{host}{path}",
        check=False,
    )


def test_acme_certificate_and_websocket_survives(hub):
    async def scenario():
        # Trusts pebble's issuing root once it is known (below); hub.test is this machine, as for a browser
        # whose DNS points the domain at the server.
        trust = ssl.create_default_context()
        async with HubClient(hub.url(), resolve={"hub.test": hub.address}, ssl=trust) as admin:
            await admin.login("admin", ADMIN_PASSWORD)
            await admin.start_server()
            kernel = await admin.open_kernel()
            assert await kernel.execute("z = 3; z") == "3"

            for command in (
                "tljh-config set https.enabled true",
                "tljh-config set https.letsencrypt.email admin@hub.test",
                "tljh-config add-item https.letsencrypt.domains hub.test",
                "tljh-config set https.acme.directory https://127.0.0.1:14000/dir",
                f"tljh-config add-item https.acme.trusted_roots {PEBBLE_DIR}/ca.pem",
            ):
                hub.run(command)
            started = time.monotonic()
            reload = await asyncio.to_thread(hub.run, "tljh-config reload proxy", check=False)
            assert reload.returncode == 0, reload.stdout + reload.stderr

            # The certificate comes from pebble, whose issuing root is only known at run time.
            await asyncio.to_thread(
                wait_for, hub, f"curl -sf --cacert {PEBBLE_DIR}/ca.pem https://127.0.0.1:15000/roots/0 -o {PEBBLE_DIR}/issuer-root.pem", 10
            )
            await asyncio.to_thread(
                wait_for, hub, f"test \"$(curl -s -o /dev/null -w '%{{http_code}}' --resolve hub.test:443:127.0.0.1 "
                f"--cacert {PEBBLE_DIR}/issuer-root.pem https://hub.test/hub/login)\" = 200", 60
            )
            print(f"certificate served {time.monotonic() - started:.1f} s after reload")

            # The websocket opened over plain HTTP before the change is still the same live kernel.
            assert await kernel.execute("z * 14") == "42"
            await kernel.close()
            # Plain HTTP now redirects to https://hub.test: carry on there, as the browser would.
            trust.load_verify_locations(cadata=hub.run(f"cat {PEBBLE_DIR}/issuer-root.pem").stdout)
            admin.base_url = "https://hub.test/"
            await admin.stop_server()

    asyncio.run(scenario())

    redirect = hub.run(
        "curl -s -o /dev/null -w '%{http_code} %{redirect_url}' --resolve hub.test:80:127.0.0.1 http://hub.test/hub/login"
    ).stdout
    assert redirect.split()[0] in ("301", "302", "307", "308"), redirect
    assert redirect.split()[1] == "https://hub.test/hub/login", redirect

    status = hub.run("tljh status", check=False).stdout
    assert "https: enabled on port 443" in status
    assert "hub.test: issued by Pebble Intermediate CA" in status, status


def test_certificate_state_is_the_proxys_only(hub):
    """The proxy (its own account) keeps its certificates; nobody else reads them. Its config is root's."""
    assert hub.run("stat -c '%a %U' /opt/tljh/state/caddy").stdout.split() == ["700", "root"]
    assert hub.run("stat -c '%a %U %G' /var/lib/tljh-proxy").stdout.split() == ["700", "tljh-proxy", "tljh-proxy"]
    keys = hub.run("find /var/lib/tljh-proxy -name '*.key'").stdout.split()
    assert keys, "no private key in the proxy's storage"
    found = hub.run("find /var/lib/tljh-proxy -name '*.key' -perm /044").stdout.strip()
    assert found == "", f"private keys readable by others: {found}"
    assert hub.run("find /var/lib/tljh-proxy ! -user tljh-proxy").stdout.strip() == ""


def test_manual_certificate(hub):
    hub.run(
        f"""set -e; cd {PEBBLE_DIR}
        openssl req -x509 -newkey rsa:2048 -nodes -days 7 -subj /CN=manual.test -addext subjectAltName=DNS:manual.test \
            -keyout manual.key -out manual.pem 2>/dev/null"""
    )
    hub.run(f"tljh-config set https.tls.cert {PEBBLE_DIR}/manual.pem")
    hub.run(f"tljh-config set https.tls.key {PEBBLE_DIR}/manual.key")
    result = hub.run("tljh-config reload proxy", check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert wait_for(hub, f"test $(curl -s -o /dev/null -w '%{{http_code}}' --resolve manual.test:443:127.0.0.1 --cacert {PEBBLE_DIR}/manual.pem https://manual.test/hub/login) = 200", 20)


@pytest.mark.parametrize(
    "commands, message",
    [
        (["tljh-config set https.tls.cert /etc/pebble-test/missing.pem"], "missing.pem"),
        (["tljh-config set https.tls.key /etc/pebble-test/ca.key"], "key"),
    ],
)
def test_bad_certificate_inputs_keep_serving(hub, commands, message):
    before = hub.run("cat /opt/tljh/config/config.yaml").stdout
    failed = False
    for command in commands:
        result = hub.run(command, check=False)
        if result.returncode != 0:
            failed = True
            break
    if not failed:
        result = hub.run("tljh-config reload proxy", check=False)
    assert result.returncode != 0, "a bad certificate was accepted"
    assert message in (result.stdout + result.stderr)
    # The previous certificate keeps serving.
    assert https_get(hub, "manual.test", f"{PEBBLE_DIR}/manual.pem").stdout == "200"
    hub.run(f"cat > /opt/tljh/config/config.yaml <<'EOF'\n{before}EOF")


@pytest.mark.parametrize(
    "command",
    [
        "tljh-config add-item https.letsencrypt.domains 'not a domain!'",
        "tljh-config set https.letsencrypt.email not-an-email",
    ],
)
def test_invalid_domain_or_email_refused(hub, command):
    before = hub.run("cat /opt/tljh/config/config.yaml").stdout
    result = hub.run(command, check=False)
    if result.returncode == 0:
        result = hub.run("tljh-config reload proxy", check=False)
    assert result.returncode != 0
    assert https_get(hub, "manual.test", f"{PEBBLE_DIR}/manual.pem").stdout == "200"
    hub.run(f"cat > /opt/tljh/config/config.yaml <<'EOF'\n{before}EOF")


def test_preflight_names_dns_problems(hub):
    before = hub.run("cat /opt/tljh/config/config.yaml").stdout
    try:
        hub.run("tljh-config unset https.tls")
        hub.run("tljh-config add-item https.letsencrypt.domains nowhere.invalid")
        result = hub.run("tljh-config reload proxy --timeout 5", check=False)
        assert "warning: nowhere.invalid does not resolve" in result.stderr, result.stderr
        assert "add a DNS A/AAAA record pointing to this machine" in result.stderr
    finally:
        hub.run(f"cat > /opt/tljh/config/config.yaml <<'EOF'\n{before}EOF")
        hub.run("tljh-config reload proxy")


UNREACHABLE = "198.51.100.7"  # TEST-NET-2: no machine has it


def test_firewalled_domain_is_explained_after_the_ca_tried(hub):
    """A firewall between the CA and this server: only the CA can see it. `reload proxy` waits for the
    certificate and, when the CA could not connect, says so in one line naming the firewall; HTTP and the
    other domain's certificate keep serving."""
    before = hub.run("cat /opt/tljh/config/config.yaml").stdout
    # pebble resolves blocked.test to an address that no packet reaches: a route in the machine's own network.
    hub.run(f"""curl -sf -X POST -d '{{"host":"blocked.test.","addresses":["{UNREACHABLE}"]}}' http://127.0.0.1:8055/add-a""")
    subprocess.run(["ip", "-n", hub.netns, "route", "replace", "unreachable", f"{UNREACHABLE}/32"], check=True)
    try:
        hub.run("tljh-config unset https.tls")
        hub.run("tljh-config add-item https.letsencrypt.domains blocked.test")
        result = hub.run("tljh-config reload proxy --timeout 30", check=False)
        assert result.returncode == 0, result.stdout + result.stderr
        print(result.stderr)
        problems = [line for line in result.stderr.splitlines() if line.startswith("warning: no certificate")]
        assert len(problems) == 1, result.stderr  # hub.test has its certificate
        assert problems[0].startswith(
            "warning: no certificate for blocked.test: the CA could not connect to blocked.test on port 80/443: "
            "a firewall"
        ), problems[0]
        assert "(CA: " in problems[0] and UNREACHABLE in problems[0]  # the CA's own words, as evidence
        assert "HTTPS certificates still missing" in result.stdout
        assert https_get(hub, "hub.test", f"{PEBBLE_DIR}/issuer-root.pem").stdout == "200"
        status = hub.run("tljh status", check=False)
        assert status.returncode == 1, status.stdout
        assert "  no certificate for blocked.test: the CA could not connect" in status.stdout, status.stdout
    finally:
        subprocess.run(["ip", "-n", hub.netns, "route", "del", "unreachable", f"{UNREACHABLE}/32"], check=False)
        hub.run(f"cat > /opt/tljh/config/config.yaml <<'EOF'\n{before}EOF")
        hub.run("tljh-config reload proxy")

