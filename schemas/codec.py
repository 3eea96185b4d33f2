"""Encoding and decoding of stream entries; every decoder is built once, at import."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec

from schemas.entries import ENTRY_TYPES, SCHEMA_VERSION, Entry
from schemas.errors import InvalidEntryError, PoisonEntryError
from schemas.events import EVENT_TYPES, Event

_encoder = msgspec.json.Encoder()
_any_decoder = msgspec.json.Decoder()
_entry_decoders = {name: msgspec.json.Decoder(cls) for name, cls in ENTRY_TYPES.items()}
_event_decoders = {name: msgspec.json.Decoder(cls) for name, cls in EVENT_TYPES.items()}
_entry_names = {cls: name for name, cls in ENTRY_TYPES.items()}
_event_names = {cls: name for name, cls in EVENT_TYPES.items()}
_VERSION = str(SCHEMA_VERSION).encode()

TYPE_FIELD, VERSION_FIELD, DATA_FIELD = "type", "v", "data"
"""The envelope every stream entry has (SPEC 6); the commit script is given these names."""
_TYPE, _V, _DATA = TYPE_FIELD.encode(), VERSION_FIELD.encode(), DATA_FIELD.encode()


def encode(value: Any) -> bytes:
    """JSON-encode a struct (or any msgspec-encodable value)."""
    return _encoder.encode(value)


def decode_json(data: bytes | str) -> Any:
    """Decode JSON into plain Python values."""
    return _any_decoder.decode(data)


def entry_fields(entry: Entry) -> dict[str, bytes]:
    """Stream fields (`type`, `v`, `data`) for an entry struct."""
    return {
        TYPE_FIELD: _entry_names[type(entry)].encode(),
        VERSION_FIELD: _VERSION,
        DATA_FIELD: encode(entry),
    }


def event_fields(event: Event) -> dict[str, bytes]:
    """Stream fields (`type`, `v`, `data`) for an event struct."""
    return {
        TYPE_FIELD: _event_names[type(event)].encode(),
        VERSION_FIELD: _VERSION,
        DATA_FIELD: encode(event),
    }


def event_type(event: Event) -> str:
    return _event_names[type(event)]


def _envelope(fields: Mapping[bytes, bytes]) -> tuple[str, bytes]:
    kind = fields.get(_TYPE)
    version = fields.get(_V)
    data = fields.get(_DATA)
    if kind is None or version is None or data is None:
        envelope = (TYPE_FIELD, VERSION_FIELD, DATA_FIELD)
        missing = [name for name in envelope if name.encode() not in fields]
        msg = f"entry lacks field(s) {', '.join(missing)}"
        raise PoisonEntryError(msg)
    if version != _VERSION:
        msg = f"entry version {version!r} is not supported (expected {SCHEMA_VERSION})"
        raise PoisonEntryError(msg)
    return kind.decode(errors="replace"), data


def decode_entry(fields: Mapping[bytes, bytes]) -> Entry:
    """Decode a `rd:triggers` entry.

    Raises:
        PoisonEntryError: unknown type or version, or data that is not a JSON object.
        InvalidEntryError: a known type whose data breaks the schema (with the raw object).
    """
    kind, data = _envelope(fields)
    decoder = _entry_decoders.get(kind)
    if decoder is None:
        msg = f"unknown entry type {kind!r}"
        raise PoisonEntryError(msg)
    try:
        return decoder.decode(data)
    except msgspec.ValidationError as exc:
        raw = _raw_object(data)
        msg = f"{kind} entry is invalid: {exc}"
        raise InvalidEntryError(msg, raw=raw) from exc
    except msgspec.DecodeError as exc:
        msg = f"{kind} entry data is not JSON: {exc}"
        raise PoisonEntryError(msg) from exc


def decode_event(fields: Mapping[bytes, bytes]) -> Event:
    """Decode a `rd:events` entry (raises PoisonEntryError for anything unexpected)."""
    kind, data = _envelope(fields)
    decoder = _event_decoders.get(kind)
    if decoder is None:
        msg = f"unknown event type {kind!r}"
        raise PoisonEntryError(msg)
    try:
        return decoder.decode(data)
    except msgspec.DecodeError as exc:
        msg = f"{kind} event is invalid: {exc}"
        raise PoisonEntryError(msg) from exc


def _raw_object(data: bytes) -> dict[str, object]:
    try:
        value = _any_decoder.decode(data)
    except msgspec.DecodeError as exc:
        msg = f"entry data is not JSON: {exc}"
        raise PoisonEntryError(msg) from exc
    if not isinstance(value, dict):
        msg = f"entry data is a JSON {type(value).__name__}, not an object"
        raise PoisonEntryError(msg)
    return value
