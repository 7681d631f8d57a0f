import pytest

from broker.config import Settings, load_settings
from broker.core.errors import ConfigError

REDIS = "[cluster]\nenabled = true\nengine = 'redis'\n"


def test_shipped_config_toml_matches_the_defaults():
    assert load_settings("config.toml") == Settings()


def test_environment_and_flags_override_the_file(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("[server]\nport = 9000\n[stream]\nheartbeat_seconds = 5\n")
    settings = load_settings(
        path,
        environ={
            "BROKER_STREAM_HEARTBEAT_SECONDS": "2.5",
            "BROKER_SERVER_PORT": "9001",
            "HOME": "/",
        },
        overrides={"server": {"port": 9002}},
    )
    assert settings.stream.heartbeat_seconds == 2.5
    assert settings.server.port == 9002


@pytest.mark.parametrize(
    ("text", "environ", "message"),
    [
        ("[server]\nport = 70000\n", {}, r"\[server\] port"),
        ("[server]\nport = 'x'\n", {}, r"\[server\] port"),
        ("[stream]\nheartbeat_seconds = -1\n", {}, r"\[stream\] heartbeat_seconds"),
        ("[stream]\nbogus = 1\n", {}, r"\[stream\] bogus"),
        ("[nope]\n", {}, r"\[nope\]"),
        ("[log]\nlevel = 'loud'\n", {}, r"\[log\] level"),
        ("port = \n", {}, "invalid TOML"),
        ("", {"BROKER_SERVER_PORT": "abc"}, "BROKER_SERVER_PORT"),
        ("", {"BROKER_SERVER_COLOUR": "1"}, "BROKER_SERVER_COLOUR"),
        ("[limits]\nmax_body_bytes = 4000000\n", {}, "queue_bytes"),
        (REDIS + "redis_tls_ca_file = 'ca.pem'\n", {}, "need a TLS redis_url"),
        (REDIS + "redis_url = 'rediss://h'\nredis_tls_cert_file = 'c'\n", {}, "go together"),
        (
            REDIS + "redis_url = 'rediss://h'\nredis_tls_ca_file = '/nonexistent.pem'\n",
            {},
            r"\[cluster\] redis_tls_ca_file '/nonexistent.pem' not found",
        ),
    ],
)
def test_bad_values_name_the_key(tmp_path, text, environ, message):
    path = tmp_path / "c.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_settings(path, environ=environ)


def test_missing_file():
    with pytest.raises(ConfigError, match="no such file"):
        load_settings("/nonexistent.toml")
