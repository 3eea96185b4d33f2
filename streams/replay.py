"""Reading a stream back by id or time range, page by page, with flat memory.

Generic over the entry envelope every stream here shares (`type`, `v`, `data` as JSON, any
other fields such as `traceparent` or the dead letter's `sourceId`): it knows nothing of
triggers or screens; callers filter on decoded data fields with `where`.

    async for record in read(redis, "rd:events", since="2024-06-01", until="2024-06-02",
                             types={"trigger.projected"}, where={"screenId": "s1"}):
        print(record.id, record.data["orderId"])

Bounds are ISO-8601 times (naive means UTC, a date alone means its midnight), entry ids
(`<ms>-<seq>` or `<ms>`), `now`, or `-<n>s|m|h|d` before now; `since` is inclusive,
`until` exclusive. Needs Redis ≥ 6.2 (exclusive ranges) and a client that returns bytes
(`decode_responses=False`, redis-py's default).
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable, Collection, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple, TypeVar, cast

import msgspec
from redis.asyncio import Redis

from schemas.errors import ReplayRangeError, UsageError
from streams.ids import is_newer
from streams.merge import RawPage, merge_by_id

T = TypeVar("T")

MAX_ID_PART = 2**64 - 1
DEFAULT_PAGE_SIZE = 1000
ENVELOPE = (b"type", b"v", b"data")

_ID = re.compile(r"(\d+)(?:-(\d+))?")
_RELATIVE = re.compile(r"-(\d+)([smhd])")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)
_MAX_ID = f"{MAX_ID_PART}-{MAX_ID_PART}".encode()
_BOUND_HINT = (
    "use an ISO-8601 time (2024-06-01, 2024-06-01T12:00:00Z, 2024-06-01T14:00+02:00), "
    "an entry id (1717243200000-0 or 1717243200000), `now` or `-15m`/`-2h`/`-7d`"
)

_json_any = msgspec.json.Decoder()
_json_raw = msgspec.json.Decoder(msgspec.Raw)
_json_out = msgspec.json.Encoder()


class Record(msgspec.Struct, frozen=True):
    """One stream entry.

    Attributes:
        id: the entry id, `<ms>-<seq>`.
        type: the `type` field (`""` when missing).
        v: the schema version, or None when missing or not an integer.
        data: the decoded `data` JSON (from `read`), or its compact JSON text as
            `msgspec.Raw` (from `read_pages(..., passthrough=True)`); None when undecodable.
        fields: every other field as text: `traceparent`/`tracestate` when tracing is on; in
            the dead letter `sourceId`, `reason`, `error`, `deliveries`, `failedAt`.
        decode_error: why `data` could not be decoded (then `data` is None), else None.
        raw: the stored `data` bytes, as written.
    """

    id: str
    type: str
    v: int | None
    data: Any
    fields: dict[str, str]
    decode_error: str | None = None
    raw: bytes = b""

    @property
    def undecodable(self) -> bool:
        return self.decode_error is not None


def parse_bound(text: str | datetime, *, now: datetime | None = None) -> str:
    """A stream id (`<ms>-<seq>`) for a replay bound.

    Args:
        text: an ISO-8601 time (naive = UTC; a date alone is its midnight), an entry id
            (`<ms>-<seq>`, or `<ms>` meaning `<ms>-0`), `now`, or `-<n>` + `s|m|h|d`
            (that long before now); a `datetime` is taken as a time.
        now: the current time for `now` and relative bounds (default: the clock).

    Raises:
        ReplayRangeError: anything else, with the bad value and the accepted forms.
    """
    if isinstance(text, datetime):
        return _time_id(text, text.isoformat())
    raw = text.strip()
    if match := _ID.fullmatch(raw):
        ms, seq = int(match[1]), int(match[2] or 0)
        if ms > MAX_ID_PART or seq > MAX_ID_PART:
            msg = f"entry id `{text}` is out of range (each part must be below 2^64)"
            raise ReplayRangeError(msg)
        return f"{ms}-{seq}"
    if raw == "now":
        return _time_id(now or datetime.now(UTC), text)
    if match := _RELATIVE.fullmatch(raw):
        ago = timedelta(seconds=int(match[1]) * _UNIT_S[match[2]])
        return _time_id((now or datetime.now(UTC)) - ago, text)
    try:
        when = datetime.fromisoformat(raw)
    except ValueError:
        msg = f"`{text}` is not a time or an entry id: {_BOUND_HINT}"
        raise ReplayRangeError(msg) from None
    return _time_id(when, text)


def _time_id(when: datetime, text: str) -> str:
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    try:
        ms = (when - _EPOCH) // _MS
    except OverflowError:
        ms = -1
    if ms < 0:
        msg = f"time `{text}` is before 1970-01-01T00:00:00Z, where stream ids start"
        raise ReplayRangeError(msg)
    return f"{ms}-0"


def id_before(a: str, b: str) -> bool:
    """Whether stream id `a` sorts before `b`."""
    return is_newer(b, a)


async def pages(
    redis: Redis,
    stream: str | Sequence[str],
    *,
    since: str | datetime | None = None,
    until: str | datetime | None = None,
    page_size: int = DEFAULT_PAGE_SIZE,
) -> AsyncIterator[RawPage]:
    """Raw XRANGE pages `[(id, {field: value})]` of the range, each at most `page_size` long.

    Each page continues after the last id of the one before (an exclusive start), so entries
    appended meanwhile are read once and memory holds one page at a time. Several streams
    (the partitions of one stream, SPEC 11) are merged by entry id, equal ids in the order
    the streams are given; memory holds one page per stream.
    """
    if page_size < 1:
        msg = f"page_size must be at least 1, not {page_size}"
        raise UsageError(msg)
    start = "-" if since is None else parse_bound(since)
    if until is None:
        end = "+"
    else:
        end_id = parse_bound(until)
        if end_id == "0-0":
            return  # nothing sorts before the first possible id (and Redis rejects "(0-0")
        end = "(" + end_id
    if isinstance(stream, str):
        async for page in _stream_pages(redis, stream, start, end, page_size):
            yield page
        return
    async for page in merge_by_id(
        [_stream_pages(redis, one, start, end, page_size) for one in stream], page_size
    ):
        yield page


async def _stream_pages(
    redis: Redis, stream: str, start: str, end: str, page_size: int
) -> AsyncIterator[RawPage]:
    while True:
        reply = await redis.xrange(stream, start, end, count=page_size)
        if not reply:
            return
        if not isinstance(reply[0][0], bytes):
            msg = "replay needs a Redis client that returns bytes (decode_responses=False)"
            raise UsageError(msg)
        page = cast("list[tuple[bytes, dict[bytes, bytes]]]", reply)
        yield page
        last = page[-1][0]
        if len(page) < page_size or last == _MAX_ID:
            return
        start = "(" + last.decode()


class Page(NamedTuple):
    """The records kept from one XRANGE page, and how far the read got."""

    records: list[Record]
    scanned: int
    """Entries the page held before filtering."""
    last_id: str
    undecodable: int = 0
    """Entries of the wanted types whose `data` did not decode, kept or not: a `where` filter
    cannot tell whether they match, so they are left out, and the caller says so."""


async def read(
    redis: Redis,
    stream: str | Sequence[str],
    *,
    since: str | datetime | None = None,
    until: str | datetime | None = None,
    types: Collection[str] | None = None,
    where: Mapping[str, object] | None = None,
    page_size: int = DEFAULT_PAGE_SIZE,
) -> AsyncIterator[Record]:
    """Entries of `stream` in `[since, until)`, oldest first, with `data` decoded.

    Args:
        redis: a client returning bytes.
        stream: the full key (`rd:events`).
        since: inclusive start (see `parse_bound`); None = the oldest retained entry.
        until: exclusive end; None = the newest entry when the read reaches it.
        types: keep only entries whose `type` is one of these.
        where: keep only entries whose decoded `data` is an object with these exact field
            values (`{"screenId": "s1"}`); undecodable entries never match.
        page_size: entries per XRANGE call.

    Raises:
        ReplayRangeError: a bound that `parse_bound` rejects.

    Undecodable `data` does not stop the read: the record has `data=None` and says why in
    `decode_error`.
    """
    async for page in read_pages(
        redis,
        stream,
        since=since,
        until=until,
        types=types,
        where=where,
        page_size=page_size,
    ):
        for record in page.records:
            yield record


async def read_pages(
    redis: Redis,
    stream: str | Sequence[str],
    *,
    since: str | datetime | None = None,
    until: str | datetime | None = None,
    types: Collection[str] | None = None,
    where: Mapping[str, object] | None = None,
    page_size: int = DEFAULT_PAGE_SIZE,
    passthrough: bool = False,
) -> AsyncIterator[Page]:
    """`read`, one page at a time (for writers that flush per page and show progress).

    With `passthrough`, `data` is its validated one-line JSON text (`msgspec.Raw`, which
    `msgspec.json.encode` splices as is) instead of Python objects: the text is checked, not
    decoded, unless `where` needs the values.
    """
    wanted = _wanted(types)
    names: dict[bytes, str] = {}
    versions: dict[bytes, int | None] = {}
    async for page in pages(redis, stream, since=since, until=until, page_size=page_size):
        kept: list[Record] = []
        undecodable = 0
        for entry_id, fields in page:
            kind = fields.get(b"type", b"")
            if wanted is not None and kind not in wanted:
                continue
            raw = fields.get(b"data")
            data: Any = None
            error: str | None = None
            if raw is None:
                error = "entry has no data field"
            elif passthrough and where is None:
                try:
                    data = _compact(raw)
                except msgspec.DecodeError as exc:
                    error = str(exc)
            else:
                try:
                    data = _json_any.decode(raw)
                except msgspec.DecodeError as exc:
                    error = str(exc)
            if error is not None:
                undecodable += 1
            if where is not None:
                if error is not None or not _matches(data, where):
                    continue
                if passthrough:
                    data = _compact_known_good(raw, data)
            name = names.get(kind)
            if name is None:
                name = names[kind] = kind.decode(errors="replace")
            version_text = fields.get(b"v", b"")
            if version_text in versions:
                version = versions[version_text]
            else:
                version = versions[version_text] = _version(version_text)
            only_envelope = len(fields) == len(ENVELOPE) and raw is not None and b"v" in fields
            extra = (
                {}
                if only_envelope and b"type" in fields
                else {
                    key.decode(errors="replace"): value.decode(errors="replace")
                    for key, value in fields.items()
                    if key not in ENVELOPE
                }
            )
            kept.append(
                Record(
                    entry_id.decode(),
                    name,
                    version,
                    data,
                    extra,
                    error,
                    b"" if raw is None else raw,
                )
            )
        yield Page(kept, len(page), page[-1][0].decode(), undecodable)


async def read_decoded(
    redis: Redis,
    stream: str | Sequence[str],
    decode: Callable[[Mapping[bytes, bytes]], T],
    *,
    since: str | datetime | None = None,
    until: str | datetime | None = None,
    types: Collection[str] | None = None,
    page_size: int = DEFAULT_PAGE_SIZE,
    skip_undecodable: bool = False,
) -> AsyncIterator[tuple[str, T]]:
    """`(entry id, decode(fields))` for each entry of the range: typed structs for notebooks.

    `decode` gets the raw field map (e.g. `schemas.codec.decode_event`); a ValueError from it
    stops the read unless `skip_undecodable` is set, then the entry is left out.
    """
    wanted = _wanted(types)
    async for page in pages(redis, stream, since=since, until=until, page_size=page_size):
        for entry_id, fields in page:
            if wanted is not None and fields.get(b"type", b"") not in wanted:
                continue
            try:
                value = decode(fields)
            except ValueError:
                if skip_undecodable:
                    continue
                raise
            yield entry_id.decode(), value


def _wanted(types: Collection[str] | None) -> frozenset[bytes] | None:
    if types is None:
        return None
    if isinstance(types, str):  # one type given as a plain string, not its characters
        types = (types,)
    return frozenset(t.encode() for t in types)


def _matches(data: object, where: Mapping[str, object]) -> bool:
    if not isinstance(data, dict):
        return False
    missing = object()
    return all(data.get(name, missing) == value for name, value in where.items())


def _version(text: bytes) -> int | None:
    try:
        return int(text)
    except ValueError:
        return None


def _compact(raw: bytes) -> msgspec.Raw:
    """`raw` checked as JSON; re-encoded only when it spans lines (a JSONL line must not)."""
    checked = _json_raw.decode(raw)
    if b"\n" in raw or b"\r" in raw:
        return msgspec.Raw(_json_out.encode(_json_any.decode(raw)))
    return checked


def _compact_known_good(raw: bytes | None, data: object) -> msgspec.Raw:
    if raw is None or b"\n" in raw or b"\r" in raw:
        return msgspec.Raw(_json_out.encode(data))
    return msgspec.Raw(raw.strip())
