"""A throwaway local certificate authority for the mock's HTTPS: a CA, a server certificate for the
loopback names, and one for the package index's host (the runner's version lookup, answered
locally by :mod:`cancel_sandbox.devops.index`).

Kept in a folder the user names (``--tls-dir``) and reused while valid, so the environment a vendor
pasted keeps working across restarts; regenerated when a file is missing, unreadable, expired
within a day, or does not cover the listening host. Private keys are written 0600. Nothing here is
meant to be trusted beyond the runner's process: the CA signs certificates for any name asked of it.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["LocalPki", "local_pki", "INDEX_HOST"]

INDEX_HOST = "pypi.org"  # where connect-extension-runner asks for its latest release
VALID_DAYS = 30
_NAMES = ("ca.pem", "ca.key", "server.pem", "server.key", "index.pem", "index.key")


@dataclass(frozen=True)
class LocalPki:
    ca: Path  # what SSL_CERT_FILE and REQUESTS_CA_BUNDLE name
    server_cert: Path
    server_key: Path
    index_cert: Path
    index_key: Path


def local_pki(folder: str | Path, hosts: tuple[str, ...] = ("127.0.0.1", "localhost")) -> LocalPki:
    """The PKI in ``folder``: reused when complete, valid and covering ``hosts``, else made anew."""
    root = Path(folder)
    root.mkdir(parents=True, exist_ok=True)
    paths = [root / name for name in _NAMES]
    pki = LocalPki(paths[0], paths[2], paths[3], paths[4], paths[5])
    if not _usable(pki, hosts):
        _make(root, hosts)
    return pki


def _usable(pki: LocalPki, hosts: tuple[str, ...]) -> bool:
    try:
        server = x509.load_pem_x509_certificate(pki.server_cert.read_bytes())
        ca = x509.load_pem_x509_certificate(pki.ca.read_bytes())
        index = x509.load_pem_x509_certificate(pki.index_cert.read_bytes())
        for key in (pki.server_key, pki.index_key):
            serialization.load_pem_private_key(key.read_bytes(), password=None)
        names = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (OSError, ValueError, x509.ExtensionNotFound):
        return False
    soon = dt.datetime.now(dt.UTC) + dt.timedelta(days=1)
    covered = {str(n) for n in names.get_values_for_type(x509.IPAddress)} | set(
        names.get_values_for_type(x509.DNSName)
    )
    return (
        all(c.not_valid_after_utc > soon for c in (server, ca, index))
        and server.issuer == ca.subject
        and index.issuer == ca.subject
        and set(hosts) <= covered
    )


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    data = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    os.chmod(path, 0o600)  # an existing file keeps its old mode through O_CREAT


def _make(root: Path, hosts: tuple[str, ...]) -> None:
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("cancel-processor local CA"))
        .issuer_name(_name("cancel-processor local CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=VALID_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    _write_key(root / "ca.key", ca_key)
    (root / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    for stem, names in (("server", hosts), ("index", (INDEX_HOST,))):
        key = ec.generate_private_key(ec.SECP256R1())
        alt: list[x509.GeneralName] = []
        for host in names:
            try:
                alt.append(x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                alt.append(x509.DNSName(host))
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(names[0]))
            .issuer_name(ca.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=VALID_DAYS))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.SubjectAlternativeName(alt), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
            )
            .sign(ca_key, hashes.SHA256())
        )
        _write_key(root / f"{stem}.key", key)
        (root / f"{stem}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
