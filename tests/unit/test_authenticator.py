"""Who is calling: bearer keys, client certificates, auth off on loopback only."""

from __future__ import annotations

from pathlib import Path

import pytest

from salon.engine.auth import Authenticator, bearer_token, tenant_from_certificate
from salon.engine.config import Config, is_loopback
from salon.engine.tenants import Limits, TenantRegistry, key_entry_toml, new_key
from salon.storage import InvalidArgument, Unauthenticated

SSL = {"transport_security_type": [b"ssl"]}


def _registry(tmp_path: Path) -> tuple[TenantRegistry, str]:
    key, key_id, digest = new_key()
    path = tmp_path / "tenants.toml"
    path.write_text(f"[tenants.acme]\nkeys = [{key_entry_toml('acme', key_id, digest, admin=True)}]\n[tenants.beta]\n")
    registry = TenantRegistry(path, Limits())
    registry.load()
    return registry, key


@pytest.mark.parametrize(
    ("metadata", "token"),
    [
        ((), None),
        ((("authorization", "Bearer abc"),), "abc"),
        ((("Authorization", "bearer  abc "),), "abc"),
        ((("authorization", "Basic abc"),), ""),
        ((("authorization", "Bearer"),), ""),
        ((("authorization-bin", b"x"),), None),
    ],
)
def test_bearer_token(metadata: tuple[tuple[str, str | bytes], ...], token: str | None) -> None:
    assert bearer_token(metadata) == token


def test_tenant_from_certificate_prefers_the_uri_name_then_the_common_name() -> None:
    both = {**SSL, "x509_subject_alternative_name": [b"salon://tenant/acme"], "x509_common_name": [b"other"]}
    assert tenant_from_certificate(both) == "acme"
    assert tenant_from_certificate({**SSL, "x509_common_name": [b"beta"]}) == "beta"
    assert tenant_from_certificate({**SSL, "x509_common_name": [b"not a tenant id"]}) is None
    assert tenant_from_certificate({**SSL, "peer_uri": [b"salon://tenant/a.b"]}) is None
    assert tenant_from_certificate({"x509_common_name": [b"beta"]}) is None, "not over TLS: no certificate"


def test_auth_on_needs_a_valid_key_or_a_listed_certificate(tmp_path: Path) -> None:
    registry, key = _registry(tmp_path)
    auth = Authenticator(registry, required=True, default_tenant="default")
    identity = auth.identify((("authorization", f"Bearer {key}"),), {})
    assert identity.tenant_id == "acme" and identity.admin
    assert auth.identify((), {**SSL, "x509_common_name": [b"beta"]}).tenant_id == "beta"
    refusals = [
        ((), {}),
        ((("authorization", "Bearer nope"),), {}),
        ((("authorization", "Basic x"),), {**SSL, "x509_common_name": [b"beta"]}),  # a bad key is never ignored
        ((), {**SSL, "x509_common_name": [b"unlisted"]}),
    ]
    messages = set()
    for metadata, context in refusals:
        with pytest.raises(Unauthenticated) as info:
            auth.identify(metadata, context)
        messages.add(info.value.message)
    assert len(messages) == 1, "one message whatever was wrong"


def test_auth_off_makes_every_caller_the_default_tenant(tmp_path: Path) -> None:
    registry, key = _registry(tmp_path)
    auth = Authenticator(registry, required=False, default_tenant="default")
    assert auth.identify((("authorization", f"Bearer {key}"),), {}).tenant_id == "default"
    assert auth.identify((), {}).tenant_id == "default"


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("::1", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("10.1.2.3", False),
        ("example.org", False),
    ],
)
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_auth_off_is_refused_beyond_loopback_and_auth_on_needs_a_credential_source() -> None:
    with pytest.raises(InvalidArgument, match="loopback"):
        Config(grpc_host="0.0.0.0")
    with pytest.raises(InvalidArgument, match="tenants_file"):
        Config(grpc_host="0.0.0.0", auth="on")
    assert Config(grpc_host="0.0.0.0", auth="on", tenants_file="t.toml").auth == "on"
    with pytest.raises(InvalidArgument, match="tls_key_file"):
        Config(tls_cert_file="c.pem")


def test_client_credential_options(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import argparse

    from salon.client.chat import add_credential_arguments, credentials_from

    parser = argparse.ArgumentParser()
    add_credential_arguments(parser)
    (tmp_path / "ca.pem").write_bytes(b"CA")
    monkeypatch.setenv("SALON_API_KEY", "from-env")
    assert credentials_from(parser.parse_args([])) == {"api_key": "from-env"}
    found = credentials_from(parser.parse_args(["--api-key", "k", "--tls-ca", str(tmp_path / "ca.pem")]))
    assert found == {"api_key": "k", "root_certificates": b"CA"}
    with pytest.raises(SystemExit):
        credentials_from(parser.parse_args(["--tls-cert", str(tmp_path / "ca.pem")]))


async def test_the_client_sends_its_key_on_every_call() -> None:
    from salon.client import SalonClient

    client = SalonClient("127.0.0.1:1", api_key="k1", metadata=(("x-other", "1"),))
    try:
        assert ("authorization", "Bearer k1") in client._metadata and ("x-other", "1") in client._metadata
    finally:
        await client.close()
