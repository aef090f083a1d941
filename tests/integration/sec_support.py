"""Helpers of the security tests: tenants files with fresh keys, a test certificate authority, calls with
credentials, and every RPC of the API called with the same arguments (for the probing and fuzz tests)."""

from __future__ import annotations

import datetime
import ipaddress
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from salon.engine import Config
from salon.engine.tenants import key_entry_toml, new_key


@dataclass
class TenantsFile:
    """A tenants file on disk; ``keys[tenant]`` holds each tenant's keys in clear (for the test's calls)."""

    path: Path
    keys: dict[str, list[str]] = field(default_factory=dict)
    admin: set[str] = field(default_factory=set)
    limits: dict[str, dict[str, int]] = field(default_factory=dict)
    listed: set[str] = field(default_factory=set)
    _entries: dict[str, list[str]] = field(default_factory=dict)

    def add_key(self, tenant: str, *, admin: bool = False) -> str:
        """A new key for ``tenant`` (written out at once)."""
        key, key_id, digest = new_key()
        self.keys.setdefault(tenant, []).append(key)
        self._entries.setdefault(tenant, []).append(key_entry_toml(tenant, key_id, digest, admin=admin))
        self.write()
        return key

    def revoke(self, tenant: str, key: str) -> None:
        """Drop a key from the file."""
        index = self.keys[tenant].index(key)
        del self.keys[tenant][index]
        del self._entries[tenant][index]
        self.write()

    def write(self) -> None:
        """Write the file (atomically, as an operator's tooling would)."""
        lines: list[str] = []
        for tenant in sorted({*self._entries, *self.limits, *self.listed}):
            lines.append(f"[tenants.{tenant}]")
            lines.append("keys = [\n" + "\n".join(f"  {e}" for e in self._entries.get(tenant, [])) + "\n]")
            if tenant in self.limits:
                lines.append(f"[tenants.{tenant}.limits]")
                lines += [f"{name} = {value}" for name, value in self.limits[tenant].items()]
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text("\n".join(lines) + "\n")
        tmp.replace(self.path)


def bearer(key: str) -> tuple[tuple[str, str], ...]:
    """Call metadata carrying ``key``."""
    return (("authorization", f"Bearer {key}"),)


@dataclass
class Pki:
    """A test CA with a server certificate for 127.0.0.1 and a way to issue client certificates."""

    directory: Path
    ca_key: Any = None
    ca_cert: Any = None

    def __post_init__(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.ca_key, self.ca_cert = _self_signed("salon test CA")
        (self.directory / "ca.pem").write_bytes(_pem(self.ca_cert))
        key, cert = self.issue("localhost", ip="127.0.0.1", server=True)
        (self.directory / "server.pem").write_bytes(cert)
        (self.directory / "server.key").write_bytes(key)

    @property
    def ca_pem(self) -> bytes:
        """The CA certificate (PEM)."""
        return _pem(self.ca_cert)

    def issue(self, common_name: str, *, uri: str = "", ip: str = "", server: bool = False) -> tuple[bytes, bytes]:
        """A key and certificate signed by this CA: ``(key PEM, certificate PEM)``."""
        key = ec.generate_private_key(ec.SECP256R1())
        names: list[x509.GeneralName] = [x509.DNSName(common_name)] if server else []
        if uri:
            names.append(x509.UniformResourceIdentifier(uri))
        if ip:
            names.append(x509.IPAddress(ipaddress.ip_address(ip)))
        now = datetime.datetime.now(datetime.UTC)
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
            .issuer_name(self.ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        )
        if names:
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        cert = builder.sign(self.ca_key, hashes.SHA256())
        key_pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        return key_pem, _pem(cert)

    def server_settings(self) -> Mapping[str, Any]:
        """Engine settings for TLS with client certificates required and verified by this CA."""
        return {
            "tls_cert_file": str(self.directory / "server.pem"),
            "tls_key_file": str(self.directory / "server.key"),
            "tls_client_ca_file": str(self.directory / "ca.pem"),
        }


def _self_signed(name: str) -> tuple[Any, Any]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def _pem(cert: Any) -> bytes:
    return bytes(cert.public_bytes(serialization.Encoding.PEM))


def tls_channel(target: str, ca: bytes, key: bytes | None = None, cert: bytes | None = None) -> grpc.aio.Channel:
    """A TLS channel to the engine (presenting a client certificate when given)."""
    credentials = grpc.ssl_channel_credentials(root_certificates=ca, private_key=key, certificate_chain=cert)
    return grpc.aio.secure_channel(target, credentials)


def engine_config(nats_url: str, data_dir: Path, **overrides: Any) -> Config:
    """An engine in its own namespace on the shared NATS, with auth on."""
    settings: dict[str, Any] = {
        "data_dir": str(data_dir),
        "grpc_port": 0,
        "nats_url": nats_url,
        "namespace": f"sec{uuid.uuid4().hex[:10]}",
        "num_hosts": 1,
        "num_shards": 2,
        "model_provider": "scripted",
        "scripted_tokens": 4,
        "shutdown_grace_s": 1.0,
        "auth": "on",
        "tenants_reload_s": 0.05,
    }
    settings.update(overrides)
    return Config(**settings)
