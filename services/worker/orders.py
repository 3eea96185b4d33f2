"""Where an order's document lives: the HTTP order service, a catalog file, or a template."""

from __future__ import annotations

import csv
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Protocol
from urllib.parse import quote, urlsplit

import aiohttp
import msgspec
from opentelemetry.propagate import inject
from opentelemetry.trace import NoOpTracer, SpanKind, Status, StatusCode, Tracer
from yarl import URL

from observability.metrics import Metrics
from schemas.errors import ConfigError, RemoteDisplayError
from services.config.settings import Settings
from services.worker.circuit import CircuitBreaker, CircuitOpenError, CircuitState

logger = logging.getLogger(__name__)


class OrderNotFoundError(RemoteDisplayError, LookupError):
    """The order service says the order does not exist (final, not retried)."""


class OrderLookupError(RemoteDisplayError):
    """A transient failure (timeout, 5xx, unreachable, circuit open): retried."""


class OrderResolver(Protocol):
    async def resolve(self, order_id: str) -> str:
        """Return the order's document URL, or raise OrderNotFoundError / OrderLookupError."""
        ...

    def paused(self) -> bool:
        """Whether lookups must not be attempted now (a circuit is open)."""
        ...

    async def wait_ready(self) -> None:
        """Return when `paused()` is over."""
        ...

    async def close(self) -> None: ...


class TemplateResolver:
    """Every order exists; its URL is `DOCUMENT_URL_TEMPLATE` with `{orderId}` filled in."""

    def __init__(self, template: str) -> None:
        self._template = template

    async def resolve(self, order_id: str) -> str:
        return self._template.replace("{orderId}", quote(order_id, safe=""))

    def paused(self) -> bool:
        return False

    async def wait_ready(self) -> None:
        return None

    async def close(self) -> None:
        return None


class CatalogResolver:
    """A fixed catalog (`ORDERS_FILE`): JSON `{orderId: url}` or CSV `orderId,documentUrl`."""

    def __init__(self, catalog: Mapping[str, str]) -> None:
        self._catalog = dict(catalog)

    @classmethod
    def from_file(cls, path: Path) -> CatalogResolver:
        return cls(load_catalog(path))

    async def resolve(self, order_id: str) -> str:
        try:
            return self._catalog[order_id]
        except KeyError:
            msg = f"order {order_id!r} is not in the catalog"
            raise OrderNotFoundError(msg) from None

    def paused(self) -> bool:
        return False

    async def wait_ready(self) -> None:
        return None

    async def close(self) -> None:
        return None


def load_catalog(path: Path) -> dict[str, str]:
    """Read an order catalog; raises ConfigError naming the file and what is wrong."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        msg = f"ORDERS_FILE `{path}` cannot be read: {exc.strerror}"
        raise ConfigError(msg) from None
    if path.suffix.lower() == ".csv":
        rows = list(csv.DictReader(text.splitlines()))
        if rows and not {"orderId", "documentUrl"} <= set(rows[0]):
            msg = f"ORDERS_FILE `{path}` needs the CSV header orderId,documentUrl"
            raise ConfigError(msg)
        return {r["orderId"]: r["documentUrl"] for r in rows if r["orderId"]}
    try:
        return msgspec.json.decode(text, type=dict[str, str])
    except msgspec.DecodeError as exc:
        msg = f"ORDERS_FILE `{path}` is not a JSON object of orderId to URL strings: {exc}"
        raise ConfigError(msg) from None


class _OrderBody(msgspec.Struct):
    documentPath: str  # the order service's field name


_order_decoder = msgspec.json.Decoder(_OrderBody)


class HttpOrderResolver:
    """`GET {ORDER_API_URL}/orders/{orderId}` with a timeout and a circuit breaker."""

    def __init__(
        self,
        *,
        base_url: str,
        token: str | None,
        timeout_s: float,
        breaker: CircuitBreaker,
        max_connections: int = 64,
        tracer: Tracer | None = None,
    ) -> None:
        self._base_url = base_url.rstrip("/")
        self._tracer = tracer or NoOpTracer()
        self._tracing = tracer is not None and not isinstance(tracer, NoOpTracer)
        parts = urlsplit(self._base_url)
        self._server: dict[str, str | int] = {
            "server.address": parts.hostname or "",
            "server.port": parts.port or 80,
        }
        self._headers = {"Accept": "application/json"}
        if token:
            self._headers["Authorization"] = f"Bearer {token}"
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None
        self.breaker = breaker

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._max_connections, ttl_dns_cache=300),
                timeout=self._timeout,
                headers=self._headers,
            )
        return self._session

    async def resolve(self, order_id: str) -> str:
        if not self._tracing:
            return await self._resolve(order_id, None)
        url = f"{self._base_url}/orders/{quote(order_id, safe='')}"
        attributes: dict[str, str | int] = {
            "http.request.method": "GET",
            "url.full": url,
            **self._server,
        }
        with self._tracer.start_as_current_span(
            "GET", kind=SpanKind.CLIENT, attributes=attributes
        ) as span:
            headers: dict[str, str] = {}
            inject(headers)
            try:
                return await self._resolve(order_id, headers)
            except OrderNotFoundError:
                span.set_attribute("http.response.status_code", 404)
                raise
            except OrderLookupError as exc:
                span.set_status(Status(StatusCode.ERROR, str(exc)))
                span.set_attribute("error.type", type(exc).__name__)
                raise

    async def _resolve(self, order_id: str, headers: dict[str, str] | None) -> str:
        try:
            self.breaker.check()
        except CircuitOpenError as exc:
            raise OrderLookupError(str(exc)) from None
        # SPEC 6: orderId percent-encoded as one path segment. encoded=True: yarl would
        # otherwise decode what a path may hold (`=`, `@`, `!`) before sending.
        url = URL(f"{self._base_url}/orders/{quote(order_id, safe='')}", encoded=True)
        try:
            async with self._client().get(url, headers=headers) as response:
                body = await response.read()
                status = response.status
        except TimeoutError:
            self.breaker.record_failure()
            msg = f"order service timed out after {self._timeout.total} s"
            raise OrderLookupError(msg) from None
        except aiohttp.ClientError as exc:
            self.breaker.record_failure()
            msg = f"order service unreachable: {exc}"
            raise OrderLookupError(msg) from None
        if status == 404:
            self.breaker.record_success()  # the service answered; the order does not exist
            msg = f"order {order_id!r} not found"
            raise OrderNotFoundError(msg)
        if status != 200:
            self.breaker.record_failure()
            msg = f"order service answered HTTP {status}"
            raise OrderLookupError(msg)
        try:
            document = _order_decoder.decode(body).documentPath
        except msgspec.DecodeError as exc:
            self.breaker.record_failure()
            msg = f"order service answered 200 without a documentPath string: {exc}"
            raise OrderLookupError(msg) from None
        self.breaker.record_success()
        return document

    def paused(self) -> bool:
        return self.breaker.state is CircuitState.OPEN

    async def wait_ready(self) -> None:
        await self.breaker.wait_closed_or_half_open()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def build_resolver(
    settings: Settings, *, tracer: Tracer | None = None, metrics: Metrics | None = None
) -> OrderResolver:
    """The order source the settings choose: HTTP service, catalog file, or template."""
    if settings.order_api_url:
        breaker = CircuitBreaker("order-api")
        if metrics is not None:
            gauge = metrics.circuit_state.labels("order-api")
            gauge.set(int(breaker.state))
            breaker.on_change = lambda state: gauge.set(int(state))
        return HttpOrderResolver(
            base_url=settings.order_api_url,
            token=settings.order_api_token,
            timeout_s=settings.order_api_timeout_ms / 1000,
            breaker=breaker,
            tracer=tracer,
        )
    if settings.orders_file is not None:
        return CatalogResolver.from_file(settings.orders_file)
    return TemplateResolver(settings.document_url_template)
