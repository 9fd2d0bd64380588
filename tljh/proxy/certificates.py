"""What certificates the edge proxy holds: issuer, domains, expiry, for `tljh status`.

Caddy keeps managed certificates under its storage root as
``certificates/<issuer>/<domain>/<domain>.crt``; manual ones are wherever ``https.tls.cert`` points.
"""

import datetime
import glob
import json
import os
import re
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
        return _info(x509.load_pem_x509_certificates(f.read())[0], path)


def _info(cert, path):
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


def from_der(der):
    """CertificateInfo of a DER certificate (as a TLS handshake returns it)."""
    return _info(x509.load_der_x509_certificate(der), path="")


def covers(info, domain):
    """True if the certificate is valid for ``domain`` (exact name or a matching wildcard)."""
    domain = domain.lower().rstrip(".")
    for name in (n.lower() for n in info.domains):
        if name == domain or (name.startswith("*.") and domain.split(".", 1)[-1] == name[2:]):
            return True
    return False


# --- why a certificate did not come: the CA's own verdict, from Caddy's log ---------------------------

# RFC 8555 problem types (urn:ietf:params:acme:error:<type>) -> what the admin should do. Every ACME CA
# (Let's Encrypt, ZeroSSL, step-ca, pebble) reports validation failures with these types.
ACME_HINTS = {
    "connection": "the CA could not connect to {domain} on port 80/443: a firewall (the cloud provider's or "
    "this server's) blocks it, or the ports are not forwarded here; open TCP 80 and 443 to the internet",
    "dns": "the CA could not resolve {domain}: add or fix its DNS A/AAAA record",
    "unauthorized": "the CA reached {domain} but not this hub: its DNS record points to another machine, or "
    "another server answers there on port 80",
    "rateLimited": "the CA's rate limit for {domain} was hit: wait, and test with https.letsencrypt.staging",
    "caa": "a CAA DNS record of {domain} does not allow this CA to issue for it",
    "rejectedIdentifier": "the CA does not issue certificates for {domain}",
    "tls": "the CA's TLS connection to {domain} failed: check that port 443 reaches this server",
}

_ACME_TYPE = re.compile(r"urn:ietf:params:acme:error:([A-Za-z]+)")
_CONNECT_FAILURE = re.compile(r"fail\w* to connect|timeout during connect|connection refused|no route to host|"
                              r"network is unreachable|i/o timeout", re.I)


def acme_problems(log_text):
    """{domain: (problem type, detail)}: the last ACME failure Caddy logged for each domain."""
    problems = {}
    for line in log_text.splitlines():
        match = _ACME_TYPE.search(line)
        if not match:
            continue
        try:
            entry = json.loads(line[line.index("{") :])
        except ValueError:
            continue
        domain = entry.get("identifier") or (entry.get("identifiers") or [None])[0]
        if not domain:
            continue
        problem = entry.get("problem") if isinstance(entry.get("problem"), dict) else {}
        detail = problem.get("detail") or str(entry.get("error", "")).split(match.group(0), 1)[-1].lstrip(" -:")
        problems[domain] = (match.group(1), detail.strip()[:300])
    return problems


def explain_missing(domain, problem, waited):
    """One line saying why ``domain`` has no certificate yet and what to do."""
    tail = "Caddy keeps retrying; `sudo tljh status` shows the certificate once it is issued"
    if problem is None:
        return (f"no certificate for {domain} after {waited:g} s and no answer from the CA yet; {tail} "
                "(details: `sudo journalctl -u caddy`)")
    kind, detail = problem
    hint_kind = kind
    if kind in ("unauthorized", "tls") and _CONNECT_FAILURE.search(detail):
        # Some CAs (pebble, step-ca) report a connection that never happened as "unauthorized".
        hint_kind = "connection"
    hint = ACME_HINTS.get(hint_kind, "the CA refused").format(domain=domain)
    return f"no certificate for {domain}: {hint} (CA: {kind}: {detail}). {tail}"
