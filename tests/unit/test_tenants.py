"""The tenants file: keys stored hashed and checked in constant time, limits and guardrails per tenant,
reloaded when it changes (a bad change keeps the last good reading)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest

from salon.actors import GuardrailSettings
from salon.engine.tenants import Limits, TenantRegistry, hash_key, key_entry_toml, key_id_of, new_key, parse_tenants
from salon.storage import InvalidArgument


def _file(path: Path, tenants: dict[str, list[str]], extra: str = "") -> None:
    body = []
    for tenant, entries in tenants.items():
        body.append(f"[tenants.{tenant}]\nkeys = [\n" + "\n".join(entries) + "\n]")
    path.write_text("\n".join(body) + "\n" + extra)


def test_a_new_key_verifies_and_names_its_tenant_without_its_secret(tmp_path: Path) -> None:
    key, key_id, digest = new_key()
    assert key_id_of(key) == key_id and digest == hash_key(key)
    assert len(key) > 50 and key_id not in key.split("_", 2)[2]
    path = tmp_path / "tenants.toml"
    _file(path, {"acme": [key_entry_toml("acme", key_id, digest)]})
    registry = TenantRegistry(path, Limits())
    registry.load()
    identity = registry.verify_key(key)
    assert identity is not None and identity.tenant_id == "acme"
    assert identity.credential == f"key:{key_id}" and key.split("_", 2)[2] not in identity.credential
    assert not identity.admin


@pytest.mark.parametrize("bad", ["", "salon_", "nonsense", "salon_zzzzzzzzzzzz_abc", "Bearer x", "é" * 40])
def test_malformed_keys_are_refused(tmp_path: Path, bad: str) -> None:
    _, key_id, digest = new_key()
    path = tmp_path / "tenants.toml"
    _file(path, {"acme": [key_entry_toml("acme", key_id, digest)]})
    registry = TenantRegistry(path, Limits())
    registry.load()
    assert registry.verify_key(bad) is None


def test_a_wrong_secret_with_a_known_id_is_refused(tmp_path: Path) -> None:
    key, key_id, digest = new_key()
    path = tmp_path / "tenants.toml"
    _file(path, {"acme": [key_entry_toml("acme", key_id, digest)]})
    registry = TenantRegistry(path, Limits())
    registry.load()
    assert registry.verify_key(key[:-1] + ("A" if key[-1] != "A" else "B")) is None


def test_limits_and_guardrails_per_tenant_over_defaults(tmp_path: Path) -> None:
    path = tmp_path / "tenants.toml"
    path.write_text(
        '[tenants.acme.limits]\nturns_per_minute = 5\n[tenants.acme.guardrails]\ninjection = "block"\n[tenants.beta]\n'
    )
    registry = TenantRegistry(path, Limits(turns_per_minute=60, max_sessions=7))
    registry.load()
    acme = registry.policy("acme")
    assert acme.limits == Limits(turns_per_minute=5, max_sessions=7)
    assert registry.guardrails_for("acme").injection == "block"
    assert registry.guardrails_for("beta") == GuardrailSettings()
    assert registry.policy("unlisted").limits == Limits(turns_per_minute=60, max_sessions=7)
    assert registry.tenant_ids() == ["acme", "beta"]


@pytest.mark.parametrize(
    "text",
    [
        '[tenants.acme]\nkeys = [{ id = "nothex", sha256 = "00" }]\n',
        '[tenants.acme]\nkeys = [{ id = "0123456789ab", sha256 = "00" }]\n',
        "[tenants.acme]\ncolour = 1\n",
        "[tenants.acme.limits]\nturns_per_minute = -1\n",
        "[tenants.acme.limits]\nturns_per_hour = 1\n",
        '[tenants.acme.guardrails]\ninjection = "maybe"\n',
        '[tenants."bad.id"]\n',
        '[tenants.acme.mcp_servers.crm]\ncommand = ["x"]\nurl = "https://crm.example/mcp"\n',
        "[other]\n",
        "not toml at all [",
    ],
)
def test_a_bad_file_is_refused_with_invalid_config(tmp_path: Path, text: str) -> None:
    path = tmp_path / "tenants.toml"
    path.write_text(text)
    with pytest.raises(InvalidArgument) as info:
        TenantRegistry(path, Limits()).load()
    assert info.value.reason == "INVALID_CONFIG"


def test_a_tenant_may_have_its_own_mcp_servers(tmp_path: Path) -> None:
    path = tmp_path / "tenants.toml"
    path.write_text('[tenants.acme.mcp_servers.crm]\nurl = "https://crm.example/mcp"\nrequires_approval = true\n')
    registry = TenantRegistry(path, Limits())
    registry.load()
    [crm] = registry.mcp_servers_for("acme").values()
    assert (crm.name, crm.url, crm.requires_approval) == ("crm", "https://crm.example/mcp", True)
    assert registry.mcp_servers_for("beta") == {}
    assert list(registry.all_mcp_servers()) == ["acme"]


def test_the_same_key_id_twice_is_refused() -> None:
    _, key_id, digest = new_key()
    entry = {"id": key_id, "sha256": digest}
    with pytest.raises(InvalidArgument):
        parse_tenants({"tenants": {"a": {"keys": [entry]}, "b": {"keys": [entry]}}}, Limits())


async def _until(condition: Callable[[], bool]) -> None:
    async def holds() -> bool:
        await asyncio.sleep(0.01)  # wait-ok: polls the watcher with a deadline
        return condition()

    async with asyncio.timeout(10):
        while not await holds():
            pass


async def test_the_file_is_watched_rotation_takes_effect_and_bad_edits_are_ignored(tmp_path: Path) -> None:
    old, old_id, old_digest = new_key()
    new, new_id, new_digest = new_key()
    path = tmp_path / "tenants.toml"
    _file(path, {"acme": [key_entry_toml("acme", old_id, old_digest)]})
    registry = TenantRegistry(path, Limits(), reload_interval_s=0.01)
    registry.load()
    registry.start()
    try:
        generation = registry.generation
        _file(path, {"acme": [key_entry_toml("acme", new_id, new_digest)]})
        await _until(lambda: registry.generation != generation)
        assert registry.verify_key(new) is not None
        assert registry.verify_key(old) is None, "a key removed from the file is revoked"

        path.write_text("broken [")
        await _until(lambda: registry.rejected > 0)
        assert registry.verify_key(new) is not None, "a broken edit keeps the last good reading"
    finally:
        await registry.close()
