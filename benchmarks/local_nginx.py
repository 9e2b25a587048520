"""nginx on 127.0.0.1 for the benchmarks (`bench.py`, `engines.py`): a test CA and
its server certificate, free ports, and an nginx started and waited for. Imports
nothing of crds-s3-sync, so a script that measures other engines can use it."""

import ipaddress
import socket
import subprocess
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path


@dataclass
class Tls:
    ca: Path  # what the clients trust
    cert: Path  # the server's certificate, for 127.0.0.1 and localhost
    key: Path


def make_tls(where: Path) -> Tls:
    """A test CA and a server certificate it signed, made once and reused while valid.

    RSA 2048 and SHA-256, as S3's own certificates; the CA's key is not kept."""
    tls = Tls(where / "ca.pem", where / "server.pem", where / "server.key")
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.now(UTC)
    if all(p.exists() for p in (tls.ca, tls.cert, tls.key)):
        cert = x509.load_pem_x509_certificate(tls.cert.read_bytes())
        if cert.not_valid_after_utc > now + timedelta(days=1):
            return tls
    where.mkdir(parents=True, exist_ok=True)
    ca_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "crds-s3-sync benchmarks CA")])
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())

    def certificate(subject: x509.Name, public_key, extensions: list) -> x509.Certificate:
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(ca_name)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(hours=1))
            .not_valid_after(now + timedelta(days=3650))
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), False
            )
        )
        for extension, critical in extensions:
            builder = builder.add_extension(extension, critical)
        return builder.sign(ca_key, hashes.SHA256())

    usage = dict.fromkeys(
        (
            "digital_signature",
            "content_commitment",
            "key_encipherment",
            "data_encipherment",
            "key_agreement",
            "key_cert_sign",
            "crl_sign",
            "encipher_only",
            "decipher_only",
        ),
        False,
    )
    ca = certificate(
        ca_name,
        ca_key.public_key(),
        [
            (x509.BasicConstraints(ca=True, path_length=0), True),
            (x509.KeyUsage(**usage | {"key_cert_sign": True, "crl_sign": True}), True),
        ],
    )
    server = certificate(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]),
        key.public_key(),
        [
            (x509.BasicConstraints(ca=False, path_length=None), True),
            (x509.KeyUsage(**usage | {"digital_signature": True, "key_encipherment": True}), True),
            (x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False),
            (
                x509.SubjectAlternativeName(
                    [
                        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                        x509.DNSName("localhost"),
                    ]
                ),
                False,
            ),
        ],
    )
    pem = serialization.Encoding.PEM
    tls.key.unlink(missing_ok=True)
    tls.key.touch(mode=0o600)
    tls.key.write_bytes(
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    tls.cert.write_bytes(server.public_bytes(pem))
    tls.ca.write_bytes(ca.public_bytes(pem))
    return tls


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_nginx(prefix: Path, conf: Path, ports: list[int]) -> subprocess.Popen:
    """nginx with `conf` (paths relative to `prefix`), once it accepts on every port."""
    server = subprocess.Popen(["nginx", "-p", str(prefix), "-c", str(conf)])
    for port in ports:
        for _ in range(100):
            if server.poll() is not None:
                raise SystemExit(f"nginx exited ({server.returncode}); its configuration: {conf}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
                break
            except OSError:
                time.sleep(0.05)
    return server
