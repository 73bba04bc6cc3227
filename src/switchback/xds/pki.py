"""Who may open an ADS stream: a small certificate authority for mutual TLS.

Every Envoy the control plane serves proves its node id with a client certificate issued by
this CA; the id is the certificate's only URI SAN, `spiffe://switchback/node/<node-id>`
(SPIFFE-style, what Istio and a Kubernetes runtime use too). The control plane presents a
server certificate from the same CA whose URI SAN is `spiffe://switchback/control-plane`, and
Envoy accepts no other. The crypto is the `cryptography` package's (we only choose names,
lifetimes and extensions); TLS itself is gRPC's (server) and Envoy's (client).

On disk (the directory is 0700, every file 0600): `ca.key`, `ca.crt` (the signing CA) and, only
during a CA rotation, `trusted.pem` (more CA certificates to trust, see docs/xds.md). Node
credentials go where the node's Envoy reads them (`node.key`, `node.crt`, `ca.crt`: the trust
bundle). The server certificate is issued anew, in memory, at every start.
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import re
from dataclasses import dataclass
from pathlib import Path

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from switchback import datadir

TRUST_DOMAIN = "switchback"
SERVER_IDENTITY = f"spiffe://{TRUST_DOMAIN}/control-plane"
# A DNS name in the server certificate that a client can verify whatever address it dials
# (AdsClient sets it as the TLS target name); Envoy checks the URI SAN instead.
SERVER_NAME = "xds.switchback"
CA_DAYS = 3650
CERT_DAYS = 365
# SPIFFE path segments: letters, digits, '.', '-', '_' (no percent-encoding).
_NODE_ID = re.compile(r"[A-Za-z0-9._-]{1,200}")


class CredentialError(ValueError):
    """A certificate or a request for one that cannot be used."""


def node_identity(node_id: str) -> str:
    """The URI SAN that binds a certificate to a node id."""
    if not _NODE_ID.fullmatch(node_id) or node_id in (".", ".."):
        raise CredentialError(
            f"node id {node_id!r} cannot be put in a certificate: use 1-200 of A-Z a-z 0-9 . - _"
        )
    return f"spiffe://{TRUST_DOMAIN}/node/{node_id}"


def fingerprint(cert_pem: bytes) -> str:
    """SHA-256 of the certificate's DER: what the control plane pins per node."""
    cert = x509.load_pem_x509_certificate(cert_pem)
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def make_csr(node_id: str) -> tuple[bytes, bytes]:
    """A fresh key and a certificate request for `node_id` -> (key PEM, CSR PEM). The key never
    leaves the node; the CA takes only the public key from the request."""
    node_identity(node_id)  # refuse an id no certificate can carry before asking for one
    key = new_key()
    # The subject is left empty: the CA names the node (from the enrolment call), not the request.
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([]))
        .sign(key, hashes.SHA256())
    )
    return _key_pem(key), csr.public_bytes(serialization.Encoding.PEM)


def channel_credentials(cert_pem: bytes, key_pem: bytes, ca_pem: bytes) -> grpc.ChannelCredentials:
    """gRPC client credentials of a node (AdsClient); dial with `CHANNEL_OPTIONS`."""
    return grpc.ssl_channel_credentials(ca_pem, key_pem, cert_pem)


CHANNEL_OPTIONS = (("grpc.ssl_target_name_override", SERVER_NAME),)


@dataclass(frozen=True)
class NodeCredentials:
    """A node's credential files, as its Envoy bootstrap names them."""

    directory: Path
    fingerprint: str

    @property
    def cert(self) -> Path:
        return self.directory / "node.crt"

    @property
    def key(self) -> Path:
        return self.directory / "node.key"

    @property
    def ca(self) -> Path:
        return self.directory / "ca.crt"

    def channel_credentials(self) -> grpc.ChannelCredentials:
        """gRPC client credentials from these files (AdsClient)."""
        return channel_credentials(
            self.cert.read_bytes(), self.key.read_bytes(), self.ca.read_bytes()
        )

    @classmethod
    def read(cls, directory: str | Path) -> NodeCredentials:
        d = Path(directory)
        creds = cls(d, "")
        missing = [p.name for p in (creds.cert, creds.key, creds.ca) if not p.is_file()]
        if missing:
            raise CredentialError(f"{d} lacks {', '.join(missing)} (enroll the node first)")
        return cls(d, fingerprint(creds.cert.read_bytes()))


class Authority:
    """The CA of one control plane, persisted in `directory` (created 0700, files 0600)."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = datadir.make_dir(directory)
        key_path, cert_path = self.directory / "ca.key", self.directory / "ca.crt"
        if key_path.exists() != cert_path.exists():
            raise CredentialError(
                f"{self.directory} holds only one of ca.key and ca.crt: restore the other, or "
                "remove both to start a new CA (every Envoy then needs new credentials)"
            )
        if key_path.exists():
            key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
            if not isinstance(key, ec.EllipticCurvePrivateKey):
                raise CredentialError(f"{key_path}: not an EC private key")
            self._key = key
            self.cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        else:
            self._key = new_key()
            self.cert = self._self_signed(self._key)
            datadir.write_file(key_path, _key_pem(self._key), secret=True)
            datadir.write_file(cert_path, _pem(self.cert))

    @staticmethod
    def _self_signed(key: ec.EllipticCurvePrivateKey) -> x509.Certificate:
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "switchback xDS CA")])
        now = datetime.datetime.now(datetime.UTC)
        usage = x509.KeyUsage(
            digital_signature=False, content_commitment=False, key_encipherment=False,
            data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
            encipher_only=False, decipher_only=False,
        )  # fmt: skip
        return (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=CA_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(usage, critical=True)
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
            )
            .sign(key, hashes.SHA256())
        )

    # -- trust ---------------------------------------------------------------------------------

    def trust_bundle(self) -> bytes:
        """The CA certificates to trust: ours, plus `trusted.pem` during a CA rotation."""
        extra = self.directory / "trusted.pem"
        bundle = _pem(self.cert)
        if extra.exists():
            bundle += b"\n" + extra.read_bytes().strip() + b"\n"
        return bundle

    # -- issuing -------------------------------------------------------------------------------

    def _issue(
        self,
        public_key: ec.EllipticCurvePublicKey,
        sans: list[x509.GeneralName],
        usage: x509.ObjectIdentifier,
        days: int = CERT_DAYS,
    ) -> x509.Certificate:
        now = datetime.datetime.now(datetime.UTC)
        return (
            x509.CertificateBuilder()
            .subject_name(x509.Name([]))  # the identity is the SAN (critical, as RFC 5280 asks)
            .issuer_name(self.cert.subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.SubjectAlternativeName(sans), critical=True)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()),
                critical=False,
            )
            .sign(self._key, hashes.SHA256())
        )

    def issue_node(self, node_id: str, public_key: ec.EllipticCurvePublicKey) -> bytes:
        """A client certificate (PEM) binding `public_key` to `node_id`."""
        uri = x509.UniformResourceIdentifier(node_identity(node_id))
        return _pem(self._issue(public_key, [uri], ExtendedKeyUsageOID.CLIENT_AUTH))

    def sign_request(self, node_id: str, csr_pem: str | bytes) -> bytes:
        """Sign a node's certificate request. Only its public key is used: the identity is the
        node id the (authenticated) caller named, never what the request says."""
        raw = csr_pem.encode() if isinstance(csr_pem, str) else csr_pem
        try:
            csr = x509.load_pem_x509_csr(raw)
        except ValueError as e:
            raise CredentialError(f"not a PEM certificate request: {e}") from None
        if not csr.is_signature_valid:
            raise CredentialError("the certificate request's signature does not verify")
        key = csr.public_key()
        if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
            raise CredentialError("the certificate request must hold an EC P-256 public key")
        return self.issue_node(node_id, key)

    def enroll_files(self, node_id: str, directory: str | Path) -> NodeCredentials:
        """New credentials for `node_id` written to `directory` (a fresh key every time)."""
        d = datadir.make_dir(directory)
        key = new_key()
        cert = self.issue_node(node_id, key.public_key())
        datadir.write_file(d / "node.key", _key_pem(key), secret=True)
        datadir.write_file(d / "node.crt", cert)
        datadir.write_file(d / "ca.crt", self.trust_bundle())
        return NodeCredentials(d, fingerprint(cert))

    def server_credentials(self, host: str = "127.0.0.1") -> grpc.ServerCredentials:
        """gRPC server credentials that demand a client certificate from this CA."""
        sans: list[x509.GeneralName] = [
            x509.UniformResourceIdentifier(SERVER_IDENTITY),
            x509.DNSName(SERVER_NAME),
            x509.DNSName("localhost"),
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
            x509.IPAddress(ipaddress.ip_address("::1")),
        ]
        try:
            addr = ipaddress.ip_address(host.strip("[]"))
            if not addr.is_unspecified and not addr.is_loopback:
                sans.append(x509.IPAddress(addr))
        except ValueError:
            if host and host != "localhost":
                sans.append(x509.DNSName(host))
        key = new_key()
        cert = self._issue(key.public_key(), sans, ExtendedKeyUsageOID.SERVER_AUTH)
        return grpc.ssl_server_credentials(
            [(_key_pem(key), _pem(cert))],
            root_certificates=self.trust_bundle(),
            require_client_auth=True,
        )
