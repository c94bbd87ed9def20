"""A machine's TLS identity: an EC P-256 key and a self-signed certificate, made on first start.

Peers are pinned by the SHA-256 fingerprint of the certificate (DER), not by a CA: there is
no CA on a home network, and pinning after a code-authenticated pairing is what makes a
self-signed certificate trustworthy.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import re
import secrets
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from engine.trust.files import folder_lock, write_private

log = logging.getLogger(__name__)

# Every Orchard certificate carries this DNS name; clients override the TLS target name to it
# and pin the certificate itself, so host names and IP addresses never need to match.
CERT_NAME = "orchard.peer"
KEY_FILE = "key.pem"
CERT_FILE = "cert.pem"
_FINGERPRINT = re.compile(r"^[0-9a-f]{64}$")


class IdentityError(ValueError):
    """A key or certificate file that cannot be used (named in the message)."""


@dataclass(frozen=True)
class Identity:
    key_pem: bytes
    cert_pem: bytes
    fingerprint: str  # sha256 of the certificate DER, 64 lowercase hex digits
    folder: Path


def fingerprint_of_pem(cert_pem: bytes) -> str:
    cert = x509.load_pem_x509_certificate(cert_pem)
    return fingerprint_of_der(cert.public_bytes(serialization.Encoding.DER))


def fingerprint_of_der(cert_der: bytes) -> str:
    return hashlib.sha256(cert_der).hexdigest()


def is_fingerprint(text: str) -> bool:
    return bool(_FINGERPRINT.match(text))


def load_or_create_identity(folder: str | Path, common_name: str = "orchard") -> Identity:
    """Load ``folder/key.pem`` + ``cert.pem``, or make them (0600) when neither exists."""
    folder = Path(folder)
    key_path, cert_path = folder / KEY_FILE, folder / CERT_FILE
    with folder_lock(folder):  # two first uses at once make one identity, not a mixed pair
        if key_path.exists() != cert_path.exists():
            missing = cert_path if key_path.exists() else key_path
            raise IdentityError(
                f"{missing}: missing while its pair exists; remove both to make a new identity"
            )
        if not key_path.exists():
            key_pem, cert_pem = _generate(common_name)
            write_private(key_path, key_pem)
            write_private(cert_path, cert_pem)
            log.info("made a new TLS identity in %s", folder)
        key_pem, cert_pem = key_path.read_bytes(), cert_path.read_bytes()
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
        cert = x509.load_pem_x509_certificate(cert_pem)
    except ValueError as e:
        raise IdentityError(f"{folder}: unreadable key or certificate ({e})") from None
    if key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ) != cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ):
        raise IdentityError(f"{cert_path}: certificate does not match {key_path}")
    return Identity(key_pem, cert_pem, fingerprint_of_pem(cert_pem), folder)


def _generate(common_name: str) -> tuple[bytes, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name[:64] or "orchard")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=365 * 20))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(CERT_NAME)]), critical=False)
        # A self-signed certificate used as its own trust anchor must be allowed to sign.
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=True,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return key_pem, cert.public_bytes(serialization.Encoding.PEM)


def load_or_create_machine_id(folder: str | Path) -> str:
    """A stable id for this machine (16 hex digits), made once and kept in ``folder/id``."""
    path = Path(folder) / "id"
    with folder_lock(path.parent):  # two first uses at once agree on one id
        if path.exists():
            text = path.read_text(encoding="utf-8").strip()
            if re.fullmatch(r"[0-9a-f]{16}", text):
                return text
            log.warning("%s: not a machine id; making a new one", path)
        new_id = secrets.token_hex(8)
        write_private(path, new_id.encode())
        return new_id
