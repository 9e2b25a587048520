"""A test CA and a server certificate it signed, valid for S3's real host names.

Why: the CLI under test verifies TLS as it does against AWS, with no switch turned
off. The S3 stand-in therefore presents a certificate for ``*.s3.amazonaws.com``
and the regional names botocore may pick, issued by a CA the client is told to
trust (``AWS_CA_BUNDLE``), so a client that skipped verification or trusted the
wrong bundle fails here as it would on a user's machine.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import threading
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["REGIONS", "Certificates", "make_certificates", "s3_host_names"]

REGIONS = ("us-east-1", "us-west-2", "eu-west-1")
CRDS_SERVERS = ("jwst-crds.stsci.edu", "hst-crds.stsci.edu")  # the CRDS stand-in's names
"""Regions whose endpoints the server certificate covers (and the stand-in parses)."""


@dataclass(frozen=True)
class Certificates:
    """PEM files: the test CA (what clients are told to trust) and the server's pair."""

    ca: Path
    cert: Path
    key: Path


def s3_host_names() -> list[str]:
    """The DNS names the server certificate must cover: every S3 endpoint form botocore
    may choose for REGIONS (global, regional, dual-stack, FIPS), bare and with a
    bucket label in front (virtual-hosted style)."""
    names = ["s3.amazonaws.com", "*.s3.amazonaws.com"]
    for region in REGIONS:
        for base in (f"s3.{region}", f"s3.dualstack.{region}", f"s3-fips.{region}"):
            names += [f"{base}.amazonaws.com", f"*.{base}.amazonaws.com"]
    return names


_certificates: dict[Path, Certificates] = {}
_certificates_lock = threading.Lock()


def make_certificates(directory: Path) -> Certificates:
    """A test CA and a server certificate it signed, written under `directory`.

    Made once per directory and process (a session fixture calls this once; later
    calls return the same files). EC P-256 keys keep it fast. The extensions are
    the ones strict verifiers insist on (Python's ``VERIFY_X509_STRICT``, OpenSSL 3):
    a CA with BasicConstraints ca=True and keyCertSign, a leaf with ca=False,
    serverAuth and subject/authority key identifiers linking the two.
    """
    directory = Path(directory).resolve()
    with _certificates_lock:
        made = _certificates.get(directory)
        if made is None or not all(p.is_file() for p in (made.ca, made.cert, made.key)):
            made = _certificates[directory] = _write_certificates(directory)
        return made


def _write_certificates(directory: Path) -> Certificates:
    directory.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)
    # A day back tolerates a client whose clock (or a test's skew) runs behind.
    not_before, not_after = now - dt.timedelta(days=1), now + dt.timedelta(days=30)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "crds-s3-sync tests"),
            x509.NameAttribute(NameOID.COMMON_NAME, "crds-s3-sync test CA"),
        ]
    )
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(digital_signature=True, key_cert_sign=True, crl_sign=True), True)
        .add_extension(ca_ski, critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )

    key = ec.generate_private_key(ec.SECP256R1())
    dns = [*s3_host_names(), *CRDS_SERVERS, "localhost"]
    names: list[x509.GeneralName] = [x509.DNSName(name) for name in dns]
    names.append(x509.IPAddress(ipaddress.ip_address("127.0.0.1")))
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "s3.amazonaws.com")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(digital_signature=True), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )

    made = Certificates(
        ca=directory / "ca.pem", cert=directory / "server.pem", key=directory / "server-key.pem"
    )
    made.ca.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    made.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    made.key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    made.key.chmod(0o600)
    return made


def _key_usage(
    *, digital_signature: bool = False, key_cert_sign: bool = False, crl_sign: bool = False
) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=digital_signature,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=key_cert_sign,
        crl_sign=crl_sign,
        encipher_only=False,
        decipher_only=False,
    )
