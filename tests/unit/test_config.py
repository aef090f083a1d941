"""Configuration: defaults, SALON_* environment, TOML file, precedence and error messages."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from salon.engine.config import Config, describe, env_name
from salon.storage.errors import InvalidArgument

CANARY = "CANARYq9z"


def _toml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "salon.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_load_with_an_empty_environment() -> None:
    config = Config.load(env={})
    assert config == Config()
    assert config.grpc_port == 50051
    assert config.num_hosts == 2
    assert config.num_shards == 16
    assert config.model_provider == "offline"
    assert config.turn_timeout_s == 300.0
    assert config.namespace == "salon"


def test_env_overrides_with_types() -> None:
    config = Config.load(
        env={
            "SALON_GRPC_PORT": "6000",
            "SALON_NUM_SHARDS": "32",
            "SALON_TURN_TIMEOUT_S": "12.5",
            "SALON_MODEL_PROVIDER": "scripted",
            "SALON_LOG_LEVEL": "DEBUG",
            "UNRELATED": "x",
        }
    )
    assert config.grpc_port == 6000
    assert type(config.grpc_port) is int
    assert config.num_shards == 32
    assert config.turn_timeout_s == 12.5
    assert type(config.turn_timeout_s) is float
    assert config.model_provider == "scripted"
    assert config.log_level == "DEBUG"
    assert config.num_hosts == 2  # untouched


def test_float_setting_accepts_an_integer_string() -> None:
    config = Config.load(env={"SALON_SESSION_IDLE_S": "5"})
    assert config.session_idle_s == 5.0
    assert type(config.session_idle_s) is float


def test_ray_address_alias_and_salon_variable_wins() -> None:
    assert Config.load(env={"RAY_ADDRESS": "ray://a:1"}).ray_address == "ray://a:1"
    both = {"RAY_ADDRESS": "ray://a:1", "SALON_RAY_ADDRESS": "ray://b:2"}
    assert Config.load(env=both).ray_address == "ray://b:2"


def test_toml_file_values(tmp_path: Path) -> None:
    path = _toml(tmp_path, 'grpc_port = 7000\nturn_timeout_s = 3\nnamespace = "dev"\nmax_tokens = 99\n')
    config = Config.load(path, env={})
    assert config.grpc_port == 7000
    assert config.turn_timeout_s == 3.0
    assert type(config.turn_timeout_s) is float
    assert config.namespace == "dev"
    assert config.max_tokens == 99


def test_env_takes_precedence_over_file(tmp_path: Path) -> None:
    path = _toml(tmp_path, "grpc_port = 7000\nnum_shards = 8\n")
    config = Config.load(path, env={"SALON_GRPC_PORT": "8000"})
    assert config.grpc_port == 8000  # env wins
    assert config.num_shards == 8  # file value kept where env is silent


def test_salon_config_variable_names_the_file(tmp_path: Path) -> None:
    path = _toml(tmp_path, "num_hosts = 4\n")
    assert Config.load(env={"SALON_CONFIG": str(path)}).num_hosts == 4


def test_unknown_toml_key_is_named(tmp_path: Path) -> None:
    path = _toml(tmp_path, f'grpc_prot = 1\nnum_shards = 8\nlog_level = "{CANARY}"\n')
    with pytest.raises(InvalidArgument) as info:
        Config.load(path, env={})
    assert info.value.reason == "INVALID_CONFIG"
    assert "grpc_prot" in str(info.value)
    assert CANARY not in str(info.value)


def test_bad_toml_value_names_the_setting_not_the_value(tmp_path: Path) -> None:
    path = _toml(tmp_path, f'grpc_port = "{CANARY}"\n')
    with pytest.raises(InvalidArgument) as info:
        Config.load(path, env={})
    assert info.value.reason == "INVALID_CONFIG"
    assert "grpc_port" in str(info.value)
    assert CANARY not in str(info.value)


@pytest.mark.parametrize(
    ("variable", "raw"),
    [("SALON_GRPC_PORT", f"{CANARY}"), ("SALON_TURN_TIMEOUT_S", f"1.5{CANARY}"), ("SALON_NUM_HOSTS", "2.5")],
)
def test_bad_env_value_names_the_variable_not_the_value(variable: str, raw: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        Config.load(env={variable: raw})
    assert info.value.reason == "INVALID_CONFIG"
    assert variable in str(info.value)
    assert raw not in str(info.value)


@pytest.mark.parametrize(
    ("env", "setting", "raw"),
    [
        ({"SALON_NUM_HOSTS": "0"}, "num_hosts", None),
        ({"SALON_NUM_HOSTS": "4", "SALON_NUM_SHARDS": "3"}, "num_shards", None),
        ({"SALON_GRPC_PORT": "70000"}, "grpc_port", "70000"),
        ({"SALON_DEFAULT_TENANT": f"{CANARY}.x"}, "default_tenant", CANARY),
        ({"SALON_NAMESPACE": f"{CANARY}-x"}, "namespace", CANARY),
        ({"SALON_MAX_TEXT_BYTES": "0"}, "max_text_bytes", None),
        ({"SALON_TOOL_WAIT_TIMEOUT_S": "0"}, "tool_wait_timeout_s", None),
        ({"SALON_TOOL_WAIT_TIMEOUT_S": "999999"}, "tool_wait_timeout_s", None),
        ({"SALON_TOOL_MAX_MODEL_ROUNDS": "65"}, "tool_max_model_rounds", None),
        ({"SALON_TOOL_MAX_RESULT_BYTES": "99999999"}, "tool_max_result_bytes", None),
        ({"SALON_RAY_RESOURCES": f"salon={CANARY}"}, "ray_resources", CANARY),
        ({"SALON_RAY_RESOURCES": "CPU=1"}, "ray_resources", None),
        ({"SALON_RAY_RESOURCES": "salon=0"}, "ray_resources", None),
        ({"SALON_RAY_RESOURCES": "salon=nan"}, "ray_resources", None),
        ({"SALON_RAY_RESOURCES": "salon"}, "ray_resources", None),
    ],
)
def test_invalid_values_are_rejected(env: dict[str, str], setting: str, raw: str | None) -> None:
    with pytest.raises(InvalidArgument) as info:
        Config.load(env=env)
    assert info.value.reason == "INVALID_CONFIG"
    assert setting in str(info.value)
    if raw is not None:
        assert raw not in str(info.value)


def test_ray_resources_are_read_as_amounts() -> None:
    config = Config.load(env={"SALON_RAY_RESOURCES": "salon=1, fast_disk=0.5"})
    assert config.ray_actor_resources() == {"salon": 1.0, "fast_disk": 0.5}
    assert Config().ray_actor_resources() == {}


def test_replace_validates_again() -> None:
    config = Config()
    assert config.replace(num_hosts=4).num_hosts == 4
    with pytest.raises(InvalidArgument):
        config.replace(num_hosts=0)


def test_provider_spec_follows_the_config() -> None:
    config = Config.load(
        env={"SALON_MODEL_PROVIDER": "scripted", "SALON_SCRIPTED_TOKENS": "3", "SALON_SCRIPTED_TOKEN_DELAY_S": "0.5"}
    )
    spec = config.provider_spec()
    assert (spec.kind, spec.scripted_tokens, spec.scripted_token_delay_s) == ("scripted", 3, 0.5)


def test_describe_covers_every_field() -> None:
    rows = describe()
    fields = dataclasses.fields(Config)
    assert len(rows) == len(fields)
    for (names, default, meaning), f in zip(rows, fields, strict=True):
        assert names.startswith(env_name(f))
        assert meaning
        assert default == (repr(f.default) if f.default != "" else '""')
    by_name = {row[0]: row for row in rows}
    assert by_name["SALON_GRPC_PORT"][1] == "50051"
    assert by_name["SALON_RAY_ADDRESS or RAY_ADDRESS"][1] == '""'


@pytest.mark.parametrize("toml_value", ["2.9", "true"])
def test_non_integer_toml_value_for_an_int_setting_is_rejected(tmp_path: Path, toml_value: str) -> None:
    path = _toml(tmp_path, f"num_hosts = {toml_value}\n")
    with pytest.raises(InvalidArgument) as info:
        Config.load(path, env={})
    assert "num_hosts" in str(info.value)


def test_long_term_memory_off_leaves_the_writer_without_a_memory_indexer() -> None:
    from salon.engine.ray_runtime import WriterHandle

    assert WriterHandle(Config(), "nats://127.0.0.1:1")._spec.embedding_model == "default"
    assert WriterHandle(Config(long_term_memory=False), "nats://127.0.0.1:1")._spec.embedding_model == ""


def test_tool_settings_and_the_mcp_servers_file(tmp_path: Path) -> None:
    servers = tmp_path / "mcp.toml"
    servers.write_text(
        '[servers.docs]\ncommand = ["docs-server", "--stdio"]\n[servers.crm]\nurl = "https://crm.example/mcp"\n'
    )
    config = Config.load(
        env={
            "SALON_MCP_SERVERS_FILE": str(servers),
            "SALON_TOOL_WAIT_TIMEOUT_S": "60",
            "SALON_TOOL_MAX_MODEL_ROUNDS": "3",
        }
    )
    assert (config.tool_policy().wait_timeout_s, config.tool_policy().max_model_rounds) == (60.0, 3)
    assert sorted(config.mcp_servers()) == ["crm", "docs"]
    assert Config().mcp_servers() == {}
    servers.write_text('[servers.docs]\ncommand = ["x"]\nurl = "https://also.example"\n')
    with pytest.raises(InvalidArgument) as info:
        config.mcp_servers()
    assert info.value.reason == "INVALID_CONFIG" and "servers.docs" in info.value.message
