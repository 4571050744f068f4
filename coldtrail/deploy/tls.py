"""A private certificate authority and a server certificate for the broker's TLS listener.

For a site without its own PKI. Gateways trust ``ca.crt`` (``COLDTRAIL_MQTT_CA_FILE``); the
CA's key stays with the operator, off the broker, so a stolen broker can't mint certificates.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass(frozen=True)
class TlsFiles:
    ca_cert: Path
    ca_key: Path
    server_cert: Path
    server_key: Path


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "ColdTrail"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _san(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def self_signed(
    out_dir: Path, hosts: Sequence[str], *, ca_dir: Path | None = None, days: int = 825
) -> TlsFiles:
    """Write ca.crt, server.crt, server.key into ``out_dir`` and ca.key into ``ca_dir`` (by
    default ``out_dir``'s sibling ``<name>-ca``; keys mode 0600, that folder 0700).

    The broker mounts ``out_dir``: the CA's key stays out of it, or whoever can read the
    broker's files could issue certificates every client trusts. ``hosts`` are the names and
    addresses clients connect to; the first is the common name.
    """
    if not hosts:
        raise ValueError("give at least one host name or address for the server certificate")
    ca_dir = ca_dir if ca_dir is not None else out_dir.parent / f"{out_dir.name}-ca"
    if ca_dir.resolve() == out_dir.resolve():
        raise ValueError(
            "the CA's key must not go into the folder the broker reads: give another --ca-out"
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    ca_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    ca_dir.chmod(0o700)
    now = datetime.now(UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name("ColdTrail private CA")
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=days + 365))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(hosts[0]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName([_san(h) for h in hosts]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    files = TlsFiles(
        out_dir / "ca.crt", ca_dir / "ca.key", out_dir / "server.crt", out_dir / "server.key"
    )
    files.ca_cert.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    files.server_cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    for path, k in ((files.ca_key, ca_key), (files.server_key, key)):
        path.touch(mode=0o600)
        path.chmod(0o600)
        path.write_bytes(_pem_key(k))
    return files
