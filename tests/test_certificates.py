import datetime

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tljh.proxy.certificates import managed_certificates, read_certificate


def make_cert(path, domains, issuer="Test CA", days=90):
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, domains[0])]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(d) for d in domains]), critical=False)
        .sign(key, hashes.SHA256())
    )
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert


def test_read_certificate(tmp_path):
    make_cert(tmp_path / "a.crt", ["hub.example.org", "www.hub.example.org"], issuer="Pebble Intermediate CA", days=30)
    info = read_certificate(str(tmp_path / "a.crt"))
    assert info.issuer == "Pebble Intermediate CA"
    assert info.domains == ["hub.example.org", "www.hub.example.org"]
    assert info.days_left() in (29, 30)
    assert info.describe().startswith("hub.example.org, www.hub.example.org: issued by Pebble Intermediate CA, expires ")


def test_managed_certificates_layout(tmp_path):
    d = tmp_path / "certificates" / "acme-v02.api.letsencrypt.org-directory" / "hub.example.org"
    d.mkdir(parents=True)
    make_cert(d / "hub.example.org.crt", ["hub.example.org"])
    (d / "hub.example.org.key").write_text("not a cert")
    found = managed_certificates(str(tmp_path))
    assert [c.domains for c in found] == [["hub.example.org"]]
    assert managed_certificates(str(tmp_path / "nothing")) == []


# What Caddy (certmagic) logs when the CA's validation fails: JSON lines, the RFC 8555 problem type inside.
CADDY_LOG = "\n".join([
    '{"level":"info","ts":1764400000.1,"logger":"tls.obtain","msg":"acquiring lock","identifier":"hub.example.org"}',
    '{"level":"error","ts":1764400001.2,"logger":"tls.issuance.acme.acme_client","msg":"challenge failed",'
    '"identifier":"blocked.example.org","challenge_type":"http-01","problem":{"type":'
    '"urn:ietf:params:acme:error:connection","title":"","detail":"198.51.100.7: Fetching '
    'http://blocked.example.org/.well-known/acme-challenge/x: Timeout during connect (likely firewall problem)"}}',
    '{"level":"error","ts":1764400002.3,"logger":"tls.obtain","msg":"could not get certificate from issuer",'
    '"identifier":"nodns.example.org","issuer":"acme-v02.api.letsencrypt.org-directory","error":'
    '"HTTP 400 urn:ietf:params:acme:error:dns - DNS problem: NXDOMAIN looking up A for nodns.example.org"}',
    "not json at all urn:ietf:params:acme:error:connection",
])


def test_acme_problems_are_read_from_caddys_log():
    from tljh.proxy.certificates import acme_problems

    problems = acme_problems(CADDY_LOG)
    assert problems == {
        "blocked.example.org": ("connection", "198.51.100.7: Fetching http://blocked.example.org/.well-known/"
                                "acme-challenge/x: Timeout during connect (likely firewall problem)"),
        "nodns.example.org": ("dns", "DNS problem: NXDOMAIN looking up A for nodns.example.org"),
    }


def test_missing_certificate_lines_name_the_fix():
    from tljh.proxy.certificates import explain_missing

    line = explain_missing("blocked.example.org", ("connection", "Timeout during connect"), 30)
    assert line.startswith("no certificate for blocked.example.org: the CA could not connect to "
                           "blocked.example.org on port 80/443: a firewall")
    assert "open TCP 80 and 443" in line and "(CA: connection: Timeout during connect)" in line
    assert "DNS A/AAAA record" in explain_missing("x.org", ("dns", "NXDOMAIN"), 30)
    assert "no answer from the CA yet" in explain_missing("x.org", None, 30)
    assert "the CA refused" in explain_missing("x.org", ("badCSR", "odd"), 30)
    # pebble says "unauthorized" for a connection that failed; Let's Encrypt says "connection".
    pebble = explain_missing("x.org", ("unauthorized", "Failed to connect to 198.51.100.7:443 for the tls-alpn-01 challenge"), 30)
    assert "the CA could not connect to x.org on port 80/443: a firewall" in pebble
    wrong_server = explain_missing("x.org", ("unauthorized", "Invalid response from http://x.org/.well-known: 404"), 30)
    assert "another server answers there" in wrong_server
    assert "\n" not in line


def test_covers_exact_and_wildcard(tmp_path):
    from tljh.proxy.certificates import covers

    make_cert(tmp_path / "w.crt", ["*.example.org", "example.org"])
    info = read_certificate(str(tmp_path / "w.crt"))
    assert covers(info, "hub.example.org") and covers(info, "example.org") and covers(info, "EXAMPLE.org.")
    assert not covers(info, "a.b.example.org") and not covers(info, "example.com")


def test_missing_certificates_waits_then_explains(tmp_path):
    from tljh.proxy.certificates import from_der
    from tljh.proxy.edge import missing_certificates

    cert = make_cert(tmp_path / "h.crt", ["hub.example.org"])
    served = {"hub.example.org": from_der(cert.public_bytes(serialization.Encoding.DER))}
    config = {"https": {"enabled": True, "port": 443,
                        "letsencrypt": {"domains": ["hub.example.org", "blocked.example.org"]}}}
    lines = missing_certificates(config, since=0, timeout=0.2, poll=0.05,
                                 served=lambda d, port: served.get(d), log_since=lambda since: CADDY_LOG)
    assert len(lines) == 1 and lines[0].startswith("no certificate for blocked.example.org: the CA could not connect")
    served["blocked.example.org"] = read_certificate(str(tmp_path / "h.crt"))  # a certificate for another name
    assert len(missing_certificates(config, 0, 0, served=lambda d, port: served.get(d), log_since=lambda s: "")) == 1
    # Manual certificates and plain HTTP: nothing to wait for.
    assert missing_certificates({"https": {"enabled": False}}, 0, 5) == []
    manual = {"https": {"enabled": True, "tls": {"cert": "/x.pem"}, "letsencrypt": {"domains": ["a.org"]}}}
    assert missing_certificates(manual, 0, 5) == []
