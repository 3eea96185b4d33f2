"""Every setting of SPEC section 3, read in one place: `load_settings(environ)`."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Literal, TypeVar
from urllib.parse import urlsplit

import msgspec

from observability.config import MetricsExporter, OtlpProtocol, TelemetryConfig, TracesExporter
from schemas.errors import ConfigError
from streams.partitions import MAX_PARTITIONS

LogLevel = Literal["debug", "info", "warning", "error"]
LogFormat = Literal["json", "console"]
AppEnv = Literal["development", "production", "test"]

_T = TypeVar("_T")

MIN_SECRET_BYTES = 32


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    """The service's configuration, validated; build it with `load_settings`."""

    host: str = "127.0.0.1"
    port: int = 3001
    redis_url: str | None = None
    data_dir: Path = Path("./var")
    app_env: AppEnv = "development"
    jwt_secret: str | None = None
    jwt_refresh_secret: str | None = None
    allowed_origins: tuple[str, ...] = ("http://localhost:3000", "http://localhost:3001")
    rate_limit_window_ms: int = 60_000
    rate_limit_max_requests: int = 100
    ack_timeout_ms: int = 5_000
    max_deliveries: int = 5
    retry_base_ms: int = 1_000
    retry_max_ms: int = 32_000
    order_api_url: str | None = None
    order_api_token: str | None = None
    order_api_timeout_ms: int = 2_000
    orders_file: Path | None = None
    document_url_template: str = "/documents/{orderId}.pdf"
    documents_dir: Path | None = None
    """When set, the edge serves its files read-only at /documents/ (SPEC 3, 10)."""
    document_origins: tuple[str, ...] = ()
    """Origins beyond the edge's own that pages may load or frame documents from (CSP)."""
    stream_prefix: str = "rd"
    stream_maxlen: int = 1_000_000
    stream_partitions: int = 1
    """Partitions of the streams (SPEC 11): a screen's triggers live in one of them."""
    redis_wait_replicas: int = 0
    """Replicas a write must reach (`WAIT`) before a client is told of it (SPEC 11)."""
    redis_cluster: bool | None = None
    """Whether REDIS_URL names a cluster node: detected at start (`services.config.store`),
    not configured; None until then, which the edge takes as a single store."""
    log_level: LogLevel = "info"
    log_format: LogFormat = "json"
    traces_exporter: TracesExporter = "none"
    """`otlp` when OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT is set, else `none`; OTEL_TRACES_EXPORTER
    overrides. The SDK reads every other standard OTEL_* variable itself."""
    otlp_traces_endpoint: str | None = None
    otlp_protocol: OtlpProtocol = "http/protobuf"
    service_name: str | None = None
    metrics_exporter: MetricsExporter = "none"
    """`otlp` when an OTLP endpoint is set (unless OTEL_METRICS_EXPORTER=none); /metrics is
    always served by the edge."""
    otlp_metrics_endpoint: str | None = None
    metrics_dir: Path | None = None
    """PROMETHEUS_MULTIPROC_DIR: set by `rdisplay serve` for its processes, whose metrics the
    edge's /metrics then adds up (prometheus_client's own variable)."""

    @property
    def production(self) -> bool:
        return self.app_env == "production"

    @property
    def telemetry(self) -> TelemetryConfig:
        """What observability/ needs, without the rest."""
        return TelemetryConfig(
            service_name=self.service_name,
            traces_exporter=self.traces_exporter,
            otlp_traces_endpoint=self.otlp_traces_endpoint,
            otlp_protocol=self.otlp_protocol,
            metrics_exporter=self.metrics_exporter,
            otlp_metrics_endpoint=self.otlp_metrics_endpoint,
            metrics_dir=self.metrics_dir,
        )


def _int(name: str, low: int, high: int | None = None) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        try:
            value = int(raw.strip())
        except ValueError:
            msg = f"{name} `{raw}` is not a whole number"
            raise ConfigError(msg) from None
        if value < low or (high is not None and value > high):
            bound = f"from {low} to {high}" if high is not None else f"at least {low}"
            msg = f"{name} `{raw}` is out of range: use a whole number {bound}"
            raise ConfigError(msg)
        return value

    return parse


def _choice(name: str, choices: tuple[str, ...]) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        value = raw.strip().lower()
        if value not in choices:
            msg = f"{name} `{raw}` is not one of {', '.join(choices)}"
            raise ConfigError(msg)
        return value

    return parse


def _redis_url(raw: str) -> str:
    scheme = urlsplit(raw.strip()).scheme
    if scheme not in ("redis", "rediss", "unix"):
        msg = f"REDIS_URL `{raw}` is not a redis://, rediss:// or unix:// URL"
        raise ConfigError(msg)
    return raw.strip()


def _http_url(raw: str) -> str:
    parts = urlsplit(raw.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        msg = f"ORDER_API_URL `{raw}` is not an http:// or https:// URL"
        raise ConfigError(msg)
    return raw.strip().rstrip("/")


def _origins(raw: str) -> tuple[str, ...]:
    origins = tuple(o.strip().rstrip("/") for o in raw.split(",") if o.strip())
    for origin in origins:
        parts = urlsplit(origin)
        if origin != "*" and (parts.scheme not in ("http", "https") or not parts.netloc):
            msg = f"ALLOWED_ORIGINS entry `{origin}` is not an origin like https://host:port"
            raise ConfigError(msg)
    return origins


def _template(raw: str) -> str:
    if "{orderId}" not in raw:
        msg = f"DOCUMENT_URL_TEMPLATE `{raw}` must contain {{orderId}}"
        raise ConfigError(msg)
    # The resolver substitutes the literal `{orderId}` (str.replace, not str.format), so any
    # other brace, such as `{orderId.x}`, `{orderId:>5}` or `{other}`, would reach the URL as is.
    rest = raw.replace("{orderId}", "")
    if "{" in rest or "}" in rest:
        msg = f"DOCUMENT_URL_TEMPLATE `{raw}` may use no placeholder but {{orderId}}"
        raise ConfigError(msg)
    return raw


def _documents_dir(raw: str) -> Path:
    path = Path(raw)
    if not path.is_dir():
        msg = f"DOCUMENTS_DIR `{raw}` is not a readable directory"
        raise ConfigError(msg)
    return path.resolve()


def _document_origins(raw: str) -> tuple[str, ...]:
    origins = tuple(o.strip().rstrip("/") for o in raw.split(",") if o.strip())
    for origin in origins:
        parts = urlsplit(origin)
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.path:
            msg = f"DOCUMENT_ORIGINS entry `{origin}` is not an origin like https://host:port"
            raise ConfigError(msg)
    return origins


def _prefix(raw: str) -> str:
    value = raw.strip()
    if not value or any(c.isspace() or c in "{}*?[]" for c in value):
        msg = f"STREAM_PREFIX `{raw}` must be non-empty, without spaces, braces or glob characters"
        raise ConfigError(msg)
    return value


def _nonempty(name: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        if not raw.strip():
            msg = f"{name} is set but empty: unset it or give a value"
            raise ConfigError(msg)
        return raw

    return parse


def _orders_file(raw: str) -> Path:
    path = Path(raw)
    if not path.is_file():
        msg = f"ORDERS_FILE `{raw}` is not a readable file"
        raise ConfigError(msg)
    if path.suffix.lower() not in (".json", ".csv"):
        msg = f"ORDERS_FILE `{raw}` must be a .json or .csv file"
        raise ConfigError(msg)
    return path


def _read_dotenv(path: Path) -> dict[str, str]:
    from dotenv import dotenv_values  # local: only when a .env file exists

    return {k: v for k, v in dotenv_values(path).items() if v is not None}


def load_settings(
    environ: Mapping[str, str] | None = None, *, dotenv: Path | None = Path(".env")
) -> Settings:
    """Read and validate the configuration.

    `environ` defaults to the process environment; a `.env` file (when present) fills in
    variables that the environment does not set. Raises ConfigError with a one-line message.
    """
    env: dict[str, str] = {}
    if dotenv is not None and dotenv.is_file():
        env.update(_read_dotenv(dotenv))
    env.update(os.environ if environ is None else environ)

    def get(name: str, parse: Callable[[str], _T]) -> _T | None:
        raw = env.get(name)
        if raw is None or raw == "":
            return None
        return parse(raw)

    values: dict[str, object] = {}

    def put(key: str, name: str, parse: Callable[[str], object]) -> None:
        value = get(name, parse)
        if value is not None:
            values[key] = value

    put("host", "SOCKET_IO_HOST", _nonempty("SOCKET_IO_HOST"))
    put("port", "SOCKET_IO_PORT", _int("SOCKET_IO_PORT", 0, 65535))
    put("redis_url", "REDIS_URL", _redis_url)
    put("data_dir", "DATA_DIR", lambda raw: Path(raw))
    put("app_env", "APP_ENV", _choice("APP_ENV", ("development", "production", "test")))
    put("jwt_secret", "JWT_SECRET", str)
    put("jwt_refresh_secret", "JWT_REFRESH_SECRET", str)
    put("allowed_origins", "ALLOWED_ORIGINS", _origins)
    put("rate_limit_window_ms", "RATE_LIMIT_WINDOW", _int("RATE_LIMIT_WINDOW", 1))
    put("rate_limit_max_requests", "RATE_LIMIT_MAX_REQUESTS", _int("RATE_LIMIT_MAX_REQUESTS", 1))
    put("ack_timeout_ms", "ACK_TIMEOUT_MS", _int("ACK_TIMEOUT_MS", 1, 600_000))
    put("max_deliveries", "MAX_DELIVERIES", _int("MAX_DELIVERIES", 1, 1000))
    put("retry_base_ms", "RETRY_BASE_MS", _int("RETRY_BASE_MS", 1, 3_600_000))
    put("retry_max_ms", "RETRY_MAX_MS", _int("RETRY_MAX_MS", 1, 86_400_000))
    put("order_api_url", "ORDER_API_URL", _http_url)
    put("order_api_token", "ORDER_API_TOKEN", _nonempty("ORDER_API_TOKEN"))
    put("order_api_timeout_ms", "ORDER_API_TIMEOUT_MS", _int("ORDER_API_TIMEOUT_MS", 1, 600_000))
    put("orders_file", "ORDERS_FILE", _orders_file)
    put("document_url_template", "DOCUMENT_URL_TEMPLATE", _template)
    put("documents_dir", "DOCUMENTS_DIR", _documents_dir)
    put("document_origins", "DOCUMENT_ORIGINS", _document_origins)
    put("stream_prefix", "STREAM_PREFIX", _prefix)
    put("stream_maxlen", "STREAM_MAXLEN", _int("STREAM_MAXLEN", 100))
    put("stream_partitions", "STREAM_PARTITIONS", _int("STREAM_PARTITIONS", 1, MAX_PARTITIONS))
    put("redis_wait_replicas", "REDIS_WAIT_REPLICAS", _int("REDIS_WAIT_REPLICAS", 0, 16))
    put("log_level", "LOG_LEVEL", _choice("LOG_LEVEL", ("debug", "info", "warning", "error")))
    put("log_format", "LOG_FORMAT", _choice("LOG_FORMAT", ("json", "console")))
    put("metrics_dir", "PROMETHEUS_MULTIPROC_DIR", lambda raw: Path(raw))

    _put_telemetry(env, values)
    settings = msgspec.convert(values, Settings)
    _check_consistency(settings)
    return settings


def _put_telemetry(env: Mapping[str, str], values: dict[str, object]) -> None:
    traces_endpoint = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "").strip()
    endpoint = env.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip()
    for name, url in (
        ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", traces_endpoint),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint),
    ):
        if url and urlsplit(url).scheme not in ("http", "https"):
            msg = f"{name} `{url}` is not an http:// or https:// URL"
            raise ConfigError(msg)
    protocol = (
        env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        or env.get("OTEL_EXPORTER_OTLP_PROTOCOL")
        or ""
    ).strip()
    if protocol:
        values["otlp_protocol"] = _choice("OTEL_EXPORTER_OTLP_PROTOCOL", ("grpc", "http/protobuf"))(
            protocol
        )
    exporter = env.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if not exporter:
        exporter = "otlp" if (traces_endpoint or endpoint) else "none"
    values["traces_exporter"] = _choice("OTEL_TRACES_EXPORTER", ("otlp", "console", "none"))(
        exporter
    )
    if traces_endpoint:
        values["otlp_traces_endpoint"] = traces_endpoint
    elif endpoint:
        # The per-signal path is added to the generic endpoint, as the SDK does.
        grpc = values.get("otlp_protocol") == "grpc"
        values["otlp_traces_endpoint"] = endpoint if grpc else endpoint.rstrip("/") + "/v1/traces"
    metrics_endpoint = env.get("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "").strip()
    metrics = env.get("OTEL_METRICS_EXPORTER", "").strip().lower()
    if not metrics:
        metrics = "otlp" if (metrics_endpoint or endpoint) else "none"
    values["metrics_exporter"] = _choice("OTEL_METRICS_EXPORTER", ("otlp", "none"))(metrics)
    if metrics_endpoint:
        values["otlp_metrics_endpoint"] = metrics_endpoint
    elif endpoint:
        grpc = values.get("otlp_protocol") == "grpc"
        values["otlp_metrics_endpoint"] = endpoint if grpc else endpoint.rstrip("/") + "/v1/metrics"
    service = env.get("OTEL_SERVICE_NAME", "").strip()
    if service:
        values["service_name"] = service


def _check_consistency(settings: Settings) -> None:
    if settings.retry_max_ms < settings.retry_base_ms:
        msg = (
            f"RETRY_MAX_MS `{settings.retry_max_ms}` is below RETRY_BASE_MS "
            f"`{settings.retry_base_ms}`: the cap must be at least the base"
        )
        raise ConfigError(msg)
    if settings.orders_file is not None and settings.order_api_url is not None:
        msg = "ORDERS_FILE and ORDER_API_URL are both set: choose one order source"
        raise ConfigError(msg)
    if not settings.production:
        return
    if settings.redis_url is None:
        msg = "APP_ENV=production needs REDIS_URL: the embedded Valkey is for development only"
        raise ConfigError(msg)
    for name, secret in (
        ("JWT_SECRET", settings.jwt_secret),
        ("JWT_REFRESH_SECRET", settings.jwt_refresh_secret),
    ):
        if secret is None:
            msg = f"APP_ENV=production needs {name} (at least {MIN_SECRET_BYTES} random bytes)"
            raise ConfigError(msg)
        if len(secret.encode()) < MIN_SECRET_BYTES:
            msg = f"{name} is too short for production: use at least {MIN_SECRET_BYTES} bytes"
            raise ConfigError(msg)
    if settings.jwt_secret == settings.jwt_refresh_secret:
        msg = "JWT_SECRET and JWT_REFRESH_SECRET are equal: production needs two different keys"
        raise ConfigError(msg)
