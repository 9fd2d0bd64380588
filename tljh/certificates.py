"""What certificates the edge proxy holds: issuer, domains, expiry, for `tljh status`.

Caddy keeps managed certificates under its storage root as
``certificates/<issuer>/<domain>/<domain>.crt``; manual ones are wherever ``https.tls.cert`` points.
"""

import datetime
import glob
import os
from dataclasses import dataclass

from cryptography import x509
from cryptography.x509.oid import ExtensionOID, NameOID


@dataclass
class CertificateInfo:
    path: str
    issuer: str
    domains: list
    not_after: datetime.datetime

    def days_left(self, now=None):
        now = now or datetime.datetime.now(datetime.timezone.utc)
        return (self.not_after - now).days

    def describe(self, now=None):
        return (
            f"{', '.join(self.domains) or '(no names)'}: issued by {self.issuer}, "
            f"expires {self.not_after:%Y-%m-%d %H:%M} UTC ({self.days_left(now)} days left)"
        )


def read_certificate(path):
    """The first (leaf) certificate of a PEM file."""
    with open(path, "rb") as f:
        cert = x509.load_pem_x509_certificates(f.read())[0]
    issuer = cert.issuer.get_attributes_for_oid(NameOID.COMMON_NAME) or cert.issuer.get_attributes_for_oid(
        NameOID.ORGANIZATION_NAME
    )
    try:
        names = cert.extensions.get_extension_for_oid(ExtensionOID.SUBJECT_ALTERNATIVE_NAME).value
        domains = [str(n) for n in names.get_values_for_type(x509.DNSName)]
        domains += [str(ip) for ip in names.get_values_for_type(x509.IPAddress)]
    except x509.ExtensionNotFound:
        domains = [a.value for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    return CertificateInfo(
        path=path,
        issuer=issuer[0].value if issuer else cert.issuer.rfc4514_string(),
        domains=domains,
        not_after=cert.not_valid_after_utc,
    )


def managed_certificates(storage_root):
    """Certificates Caddy obtained (ACME) and stores under ``storage_root``."""
    pattern = os.path.join(storage_root, "certificates", "*", "*", "*.crt")
    return [read_certificate(p) for p in sorted(glob.glob(pattern))]
