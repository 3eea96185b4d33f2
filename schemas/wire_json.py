"""A `json` module for python-socketio/engine.io backed by msgspec (several times faster).

Socket.IO encodes and decodes every packet with `json.dumps`/`json.loads`; both are on the
hot path of every trigger, ack and display. Input the standard library would accept but
msgspec refuses (NaN literals, integers beyond 64 bits) makes the packet malformed, which the
edge answers by closing that connection.
"""

from __future__ import annotations

from typing import Any

import msgspec

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder()


def dumps(obj: Any, *_args: Any, **_kwargs: Any) -> str:
    """Compact JSON text (the `separators` Socket.IO asks for are msgspec's own)."""
    return _encoder.encode(obj).decode()


def loads(text: str | bytes, *_args: Any, **_kwargs: Any) -> Any:
    return _decoder.decode(text)
