import datetime

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tljh.certificates import managed_certificates, read_certificate


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
