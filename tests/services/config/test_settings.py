"""`load_settings`: SPEC section 3 defaults, one-line errors, production rules, `.env`."""

from __future__ import annotations

from pathlib import Path

import pytest

from schemas.errors import ConfigError
from services.config.settings import Settings, load_settings

STRONG = "s" * 32
STRONG_REFRESH = "r" * 32


def load(env: dict[str, str]) -> Settings:
    return load_settings(env, dotenv=None)


def test_defaults_match_spec() -> None:
    settings = load({})

    assert settings.host == "127.0.0.1"
    assert settings.port == 3001
    assert settings.redis_url is None
    assert settings.data_dir == Path("./var")
    assert settings.app_env == "development"
    assert not settings.production
    assert settings.jwt_secret is None
    assert settings.jwt_refresh_secret is None
    assert settings.allowed_origins == ("http://localhost:3000", "http://localhost:3001")
    assert settings.rate_limit_window_ms == 60_000
    assert settings.rate_limit_max_requests == 100
    assert settings.ack_timeout_ms == 5_000
    assert settings.max_deliveries == 5
    assert settings.retry_base_ms == 1_000
    assert settings.retry_max_ms == 32_000
    assert settings.order_api_url is None
    assert settings.order_api_token is None
    assert settings.order_api_timeout_ms == 2_000
    assert settings.orders_file is None
    assert settings.document_url_template == "/documents/{orderId}.pdf"
    assert settings.stream_prefix == "rd"
    assert settings.stream_maxlen == 1_000_000
    assert settings.log_level == "info"
    assert settings.log_format == "json"


def test_empty_value_counts_as_unset() -> None:
    assert load({"SOCKET_IO_PORT": "", "LOG_LEVEL": ""}) == load({})


def test_values_are_parsed_and_normalized(tmp_path: Path) -> None:
    orders = tmp_path / "orders.csv"
    orders.write_text("A-1,/a.pdf\n")

    settings = load(
        {
            "SOCKET_IO_HOST": "0.0.0.0",
            "SOCKET_IO_PORT": " 8080 ",
            "REDIS_URL": "rediss://cache:6380/2",
            "DATA_DIR": str(tmp_path / "data"),
            "ALLOWED_ORIGINS": "https://a.example/, http://b.example:8080,,*",
            "ACK_TIMEOUT_MS": "250",
            "MAX_DELIVERIES": "9",
            "RETRY_BASE_MS": "10",
            "RETRY_MAX_MS": "10",
            "ORDERS_FILE": str(orders),
            "DOCUMENTS_DIR": str(tmp_path),
            "DOCUMENT_ORIGINS": "https://docs.example/, http://cdn.example:8080",
            "DOCUMENT_URL_TEMPLATE": "https://docs.example/{orderId}/{orderId}.pdf",
            "STREAM_PREFIX": "prod-1",
            "STREAM_MAXLEN": "100",
            "LOG_LEVEL": "DEBUG",
            "LOG_FORMAT": "Console",
            "APP_ENV": "test",
        }
    )

    assert settings.host == "0.0.0.0"
    assert settings.port == 8080
    assert settings.redis_url == "rediss://cache:6380/2"
    assert settings.data_dir == tmp_path / "data"
    assert settings.allowed_origins == ("https://a.example", "http://b.example:8080", "*")
    assert settings.ack_timeout_ms == 250
    assert settings.max_deliveries == 9
    assert (settings.retry_base_ms, settings.retry_max_ms) == (10, 10)
    assert settings.orders_file == orders
    assert settings.documents_dir == tmp_path.resolve()
    assert settings.document_origins == ("https://docs.example", "http://cdn.example:8080")
    assert settings.document_url_template == "https://docs.example/{orderId}/{orderId}.pdf"
    assert settings.stream_prefix == "prod-1"
    assert settings.stream_maxlen == 100
    assert (settings.log_level, settings.log_format, settings.app_env) == (
        "debug",
        "console",
        "test",
    )


def test_order_api_url_loses_its_trailing_slash() -> None:
    settings = load({"ORDER_API_URL": "http://orders.local:8000/", "ORDER_API_TOKEN": "t"})
    assert settings.order_api_url == "http://orders.local:8000"
    assert settings.order_api_token == "t"


def test_settings_are_frozen() -> None:
    settings = load({})
    with pytest.raises(AttributeError):
        settings.port = 1


@pytest.mark.parametrize(
    ("env", "names", "value"),
    [
        pytest.param({"SOCKET_IO_PORT": "abc"}, ["SOCKET_IO_PORT"], "abc", id="port-not-int"),
        pytest.param({"SOCKET_IO_PORT": "30.5"}, ["SOCKET_IO_PORT"], "30.5", id="port-fraction"),
        pytest.param(
            {"SOCKET_IO_PORT": "65536"}, ["SOCKET_IO_PORT"], "65536", id="port-above-range"
        ),
        pytest.param({"SOCKET_IO_PORT": "-1"}, ["SOCKET_IO_PORT"], "-1", id="port-negative"),
        pytest.param({"SOCKET_IO_HOST": "   "}, ["SOCKET_IO_HOST"], None, id="host-blank"),
        pytest.param({"ACK_TIMEOUT_MS": "soon"}, ["ACK_TIMEOUT_MS"], "soon", id="ack-not-int"),
        pytest.param({"ACK_TIMEOUT_MS": "0"}, ["ACK_TIMEOUT_MS"], "0", id="ack-zero"),
        pytest.param(
            {"ACK_TIMEOUT_MS": "600001"}, ["ACK_TIMEOUT_MS"], "600001", id="ack-above-range"
        ),
        pytest.param({"MAX_DELIVERIES": "0"}, ["MAX_DELIVERIES"], "0", id="deliveries-zero"),
        pytest.param(
            {"MAX_DELIVERIES": "1001"}, ["MAX_DELIVERIES"], "1001", id="deliveries-above-range"
        ),
        pytest.param({"RETRY_BASE_MS": "1e3"}, ["RETRY_BASE_MS"], "1e3", id="retry-base-not-int"),
        pytest.param({"STREAM_MAXLEN": "99"}, ["STREAM_MAXLEN"], "99", id="maxlen-below-range"),
        pytest.param({"RATE_LIMIT_WINDOW": "0"}, ["RATE_LIMIT_WINDOW"], "0", id="rate-window-zero"),
        pytest.param(
            {"RATE_LIMIT_MAX_REQUESTS": "many"},
            ["RATE_LIMIT_MAX_REQUESTS"],
            "many",
            id="rate-max-not-int",
        ),
        pytest.param(
            {"ORDER_API_TIMEOUT_MS": "-5"}, ["ORDER_API_TIMEOUT_MS"], "-5", id="order-timeout-neg"
        ),
        pytest.param({"REDIS_URL": "http://x"}, ["REDIS_URL"], "http://x", id="redis-url-http"),
        pytest.param(
            {"REDIS_URL": "localhost:6379"}, ["REDIS_URL"], "localhost:6379", id="redis-no-scheme"
        ),
        pytest.param(
            {"ORDER_API_URL": "ftp://x"}, ["ORDER_API_URL"], "ftp://x", id="order-api-url-ftp"
        ),
        pytest.param(
            {"ORDER_API_URL": "http://"}, ["ORDER_API_URL"], "http://", id="order-api-url-no-host"
        ),
        pytest.param({"ORDER_API_TOKEN": " "}, ["ORDER_API_TOKEN"], None, id="order-token-blank"),
        pytest.param({"LOG_LEVEL": "verbose"}, ["LOG_LEVEL"], "verbose", id="log-level"),
        pytest.param({"LOG_FORMAT": "xml"}, ["LOG_FORMAT"], "xml", id="log-format"),
        pytest.param({"APP_ENV": "staging"}, ["APP_ENV"], "staging", id="app-env"),
        pytest.param(
            {"DOCUMENT_URL_TEMPLATE": "/documents/{id}.pdf"},
            ["DOCUMENT_URL_TEMPLATE"],
            "/documents/{id}.pdf",
            id="template-without-order-id",
        ),
        pytest.param(
            {"DOCUMENT_URL_TEMPLATE": "/docs/{orderId}/{page}.pdf"},
            ["DOCUMENT_URL_TEMPLATE"],
            "/docs/{orderId}/{page}.pdf",
            id="template-other-placeholder",
        ),
        pytest.param(
            {"DOCUMENT_URL_TEMPLATE": "/docs/{orderId}/{}.pdf"},
            ["DOCUMENT_URL_TEMPLATE"],
            "/docs/{orderId}/{}.pdf",
            id="template-positional-placeholder",
        ),
        pytest.param(
            {"DOCUMENT_URL_TEMPLATE": "/docs/{orderId}/{"},
            ["DOCUMENT_URL_TEMPLATE"],
            "/docs/{orderId}/{",
            id="template-lone-brace",
        ),
        pytest.param(
            {"DOCUMENT_URL_TEMPLATE": "/docs/{orderId}/{orderId.upper}"},
            ["DOCUMENT_URL_TEMPLATE"],
            "/docs/{orderId}/{orderId.upper}",
            id="template-attribute",
        ),
        pytest.param(
            {"DOCUMENT_URL_TEMPLATE": "/docs/{orderId}/{orderId[a]}"},
            ["DOCUMENT_URL_TEMPLATE"],
            "/docs/{orderId}/{orderId[a]}",
            id="template-index",
        ),
        pytest.param(
            {"DOCUMENT_URL_TEMPLATE": "/docs/{orderId:>9}.pdf"},
            ["DOCUMENT_URL_TEMPLATE"],
            "/docs/{orderId:>9}.pdf",
            id="template-format-spec",
        ),
        pytest.param(
            {"DOCUMENTS_DIR": "/no/such/dir"}, ["DOCUMENTS_DIR"], "/no/such/dir", id="docs-dir"
        ),
        pytest.param(
            {"DOCUMENT_ORIGINS": "https://a.example/path"},
            ["DOCUMENT_ORIGINS"],
            "https://a.example/path",
            id="doc-origin-with-path",
        ),
        pytest.param(
            {"DOCUMENT_ORIGINS": "*"}, ["DOCUMENT_ORIGINS"], "*", id="doc-origin-wildcard"
        ),
        pytest.param(
            {"ALLOWED_ORIGINS": "http://localhost:3000,not-an-origin"},
            ["ALLOWED_ORIGINS"],
            "not-an-origin",
            id="origins-bad-entry",
        ),
        pytest.param(
            {"ALLOWED_ORIGINS": "ftp://files.example"},
            ["ALLOWED_ORIGINS"],
            "ftp://files.example",
            id="origins-bad-scheme",
        ),
        pytest.param(
            {"STREAM_PREFIX": "my prefix"}, ["STREAM_PREFIX"], "my prefix", id="prefix-space"
        ),
        pytest.param({"STREAM_PREFIX": "rd*"}, ["STREAM_PREFIX"], "rd*", id="prefix-glob"),
        pytest.param({"STREAM_PREFIX": "{rd}"}, ["STREAM_PREFIX"], "{rd}", id="prefix-braces"),
        pytest.param({"STREAM_PREFIX": "   "}, ["STREAM_PREFIX"], None, id="prefix-blank"),
        pytest.param(
            {"RETRY_BASE_MS": "5000", "RETRY_MAX_MS": "4000"},
            ["RETRY_MAX_MS", "RETRY_BASE_MS"],
            "4000",
            id="retry-max-below-base",
        ),
        pytest.param(
            {"RETRY_MAX_MS": "999"},
            ["RETRY_MAX_MS", "RETRY_BASE_MS"],
            "999",
            id="retry-max-below-default-base",
        ),
    ],
)
def test_bad_value_is_a_one_line_error(
    env: dict[str, str], names: list[str], value: str | None
) -> None:
    with pytest.raises(ConfigError) as info:
        load(env)

    message = str(info.value)
    assert "\n" not in message
    assert message.strip() == message != ""
    for name in names:
        assert name in message
    if value is not None:
        assert value in message


def test_orders_file_that_does_not_exist(tmp_path: Path) -> None:
    missing = tmp_path / "nope.json"

    with pytest.raises(ConfigError) as info:
        load({"ORDERS_FILE": str(missing)})

    message = str(info.value)
    assert "\n" not in message
    assert "ORDERS_FILE" in message
    assert str(missing) in message


def test_orders_file_that_is_a_directory(tmp_path: Path) -> None:
    folder = tmp_path / "orders.json"
    folder.mkdir()

    with pytest.raises(ConfigError, match="ORDERS_FILE") as info:
        load({"ORDERS_FILE": str(folder)})

    assert str(folder) in str(info.value)


@pytest.mark.parametrize(
    "name", [pytest.param("orders.txt", id="txt"), pytest.param("orders", id="no-suffix")]
)
def test_orders_file_with_wrong_extension(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_text("{}")

    with pytest.raises(ConfigError) as info:
        load({"ORDERS_FILE": str(path)})

    message = str(info.value)
    assert "\n" not in message
    assert "ORDERS_FILE" in message
    assert str(path) in message


@pytest.mark.parametrize(
    "name", [pytest.param("orders.json", id="json"), pytest.param("ORDERS.CSV", id="csv-upper")]
)
def test_orders_file_accepted(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_text("{}")

    assert load({"ORDERS_FILE": str(path)}).orders_file == path


def test_orders_file_and_order_api_url_exclude_each_other(tmp_path: Path) -> None:
    orders = tmp_path / "orders.json"
    orders.write_text("{}")

    with pytest.raises(ConfigError) as info:
        load({"ORDERS_FILE": str(orders), "ORDER_API_URL": "http://orders.local"})

    message = str(info.value)
    assert "\n" not in message
    assert "ORDERS_FILE" in message
    assert "ORDER_API_URL" in message


# --- production -----------------------------------------------------------------------------


def production(**overrides: str) -> dict[str, str]:
    env = {
        "APP_ENV": "production",
        "REDIS_URL": "redis://redis.internal:6379/0",
        "JWT_SECRET": STRONG,
        "JWT_REFRESH_SECRET": STRONG_REFRESH,
    }
    env.update(overrides)
    return {k: v for k, v in env.items() if v != "<unset>"}


def test_valid_production_config() -> None:
    settings = load(production())

    assert settings.production
    assert settings.redis_url == "redis://redis.internal:6379/0"
    assert settings.jwt_secret == STRONG
    assert settings.jwt_refresh_secret == STRONG_REFRESH


def test_production_secret_length_counts_bytes() -> None:
    # 11 three-byte characters: 11 characters but 33 bytes, strong enough.
    wide = "\u20ac" * 11
    assert load(production(JWT_SECRET=wide)).jwt_secret == wide


@pytest.mark.parametrize(
    ("overrides", "names"),
    [
        pytest.param({"REDIS_URL": "<unset>"}, ["REDIS_URL"], id="no-redis-url"),
        pytest.param({"REDIS_URL": ""}, ["REDIS_URL"], id="empty-redis-url"),
        pytest.param({"JWT_SECRET": "<unset>"}, ["JWT_SECRET"], id="no-jwt-secret"),
        pytest.param(
            {"JWT_REFRESH_SECRET": "<unset>"}, ["JWT_REFRESH_SECRET"], id="no-refresh-secret"
        ),
        pytest.param(
            {"JWT_SECRET": "<unset>", "JWT_REFRESH_SECRET": "<unset>"},
            ["JWT_SECRET"],
            id="no-secrets",
        ),
        pytest.param({"JWT_SECRET": "short-secret"}, ["JWT_SECRET"], id="short-jwt-secret"),
        pytest.param({"JWT_SECRET": "x" * 31}, ["JWT_SECRET"], id="jwt-secret-31-bytes"),
        pytest.param(
            {"JWT_REFRESH_SECRET": "tiny"}, ["JWT_REFRESH_SECRET"], id="short-refresh-secret"
        ),
        pytest.param(
            {"JWT_REFRESH_SECRET": STRONG},
            ["JWT_SECRET", "JWT_REFRESH_SECRET"],
            id="equal-secrets",
        ),
    ],
)
def test_production_refuses_weak_setup(overrides: dict[str, str], names: list[str]) -> None:
    env = production(**overrides)

    with pytest.raises(ConfigError) as info:
        load(env)

    message = str(info.value)
    assert "\n" not in message
    for name in names:
        assert name in message
    for key in ("JWT_SECRET", "JWT_REFRESH_SECRET"):
        secret = env.get(key)
        if secret:
            assert secret not in message


def test_development_accepts_weak_secrets_and_no_redis() -> None:
    settings = load({"JWT_SECRET": "dev", "JWT_REFRESH_SECRET": "dev"})
    assert settings.jwt_secret == "dev"
    assert settings.redis_url is None


# --- .env -----------------------------------------------------------------------------------


def test_dotenv_fills_unset_variables_and_environ_wins(tmp_path: Path) -> None:
    dotenv = tmp_path / ".env"
    dotenv.write_text(
        "# local overrides\n"
        "SOCKET_IO_PORT=4000\n"
        "STREAM_PREFIX=from-dotenv\n"
        'LOG_FORMAT="console"\n'
        "MAX_DELIVERIES=7\n"
    )

    settings = load_settings(
        {"STREAM_PREFIX": "from-environ", "SOCKET_IO_PORT": "5000"}, dotenv=dotenv
    )

    assert settings.port == 5000
    assert settings.stream_prefix == "from-environ"
    assert settings.log_format == "console"
    assert settings.max_deliveries == 7


def test_dotenv_bad_value_is_reported(tmp_path: Path) -> None:
    dotenv = tmp_path / ".env"
    dotenv.write_text("SOCKET_IO_PORT=http\n")

    with pytest.raises(ConfigError, match="SOCKET_IO_PORT `http`"):
        load_settings({}, dotenv=dotenv)


def test_dotenv_bad_value_overridden_by_environ(tmp_path: Path) -> None:
    dotenv = tmp_path / ".env"
    dotenv.write_text("SOCKET_IO_PORT=http\n")

    assert load_settings({"SOCKET_IO_PORT": "3002"}, dotenv=dotenv).port == 3002


def test_missing_dotenv_file_is_ignored(tmp_path: Path) -> None:
    assert load_settings({}, dotenv=tmp_path / ".env") == load({})


def test_dotenv_none_reads_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / ".env").write_text("SOCKET_IO_PORT=4000\n")
    monkeypatch.chdir(tmp_path)

    assert load_settings({}, dotenv=None).port == 3001
    assert load_settings({}).port == 4000  # the default `.env` is relative to the cwd
