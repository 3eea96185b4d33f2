"""Structured logs: one JSON object per line (LOG_FORMAT=json) or readable lines (console).

Under LOG_FORMAT=json a service's stderr holds nothing but JSON lines (SPEC section 7), however
a library logs: every record goes through the root handler; handlers that libraries attached
to their own loggers are removed; uncaught exceptions (main thread, other threads, `Exception
ignored in ...`) become records; and whatever is still written to `sys.stderr` directly (a
`print`, a handler created later with a stream of its own) is wrapped line by line as a JSON
object by `JsonLinesStream`.
"""

from __future__ import annotations

import atexit
import io
import logging
import sys
import threading
import time
from types import TracebackType
from typing import Any, TextIO

import msgspec
from opentelemetry import trace

_encoder = msgspec.json.Encoder(enc_hook=str)

# Attributes every LogRecord has; anything else came from `extra=` and is logged as a field.
# uvicorn's `color_message` repeats the message with ANSI colours: not a field.
_STANDARD = set(logging.makeLogRecord({}).__dict__) | {
    "message",
    "asctime",
    "taskName",
    "color_message",
}
_REDACTED_FIELDS = frozenset({"token", "accesstoken", "refreshtoken", "authorization", "secret"})


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in record.__dict__.items():
        if key in _STANDARD or key.startswith("_"):
            continue
        if key.lower().replace("_", "") in _REDACTED_FIELDS:
            value = "[redacted]"
        out[key] = value
    return out


def _timestamp(seconds: float) -> str:
    """ISO-8601 UTC with milliseconds: `2026-12-01T23:19:25.186Z`."""
    whole = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
    return f"{whole}.{int(seconds * 1000) % 1000:03d}Z"


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": _timestamp(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update(_fields(record))
        context = trace.get_current_span().get_span_context()
        if context.is_valid:
            entry["trace_id"] = format(context.trace_id, "032x")
            entry["span_id"] = format(context.span_id, "016x")
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return _encoder.encode(entry).decode(errors="replace")


class ConsoleFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        extras = " ".join(f"{k}={v}" for k, v in _fields(record).items())
        line = f"{self.formatTime(record, '%H:%M:%S')} {record.levelname:<7} {record.name}: "
        line += record.getMessage() + (f"  {extras}" if extras else "")
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


LEVEL_FLOORS: dict[str, int] = {
    # engine.io and python-socketio log every packet at INFO (the CONNECT packet's token
    # included) and a warning per refused connection: errors only, whatever LOG_LEVEL says.
    # A level set here also stops them adding a plain-text handler of their own, which they
    # do to a logger whose level is unset.
    "engineio.server": logging.ERROR,
    "engineio.client": logging.ERROR,
    "socketio.server": logging.ERROR,
    "socketio.client": logging.ERROR,
}


def library_logger(name: str) -> logging.Logger:
    """The logger to hand a library (python-socketio's `logger=`, `engineio_logger=`).

    A library given `False` makes a logger of its own with a plain-text stderr handler; given
    this one, it logs through the root handler, at no lower level than `LEVEL_FLOORS` says.
    """
    logger = logging.getLogger(name)
    floor = LEVEL_FLOORS.get(name)
    if floor is not None and logger.level < floor:
        logger.setLevel(floor)
    return logger


class JsonLinesStream(io.TextIOBase):
    """A text stream that writes each line it is given as one JSON log object.

    Installed as `sys.stderr` under LOG_FORMAT=json, so text that bypasses logging (a library's
    `print`, a `StreamHandler` it made for itself, the interpreter's own messages) still reaches
    the log as JSON. A line is written once its newline arrives; a partial one at `close`.
    """

    def __init__(self, target: TextIO, *, logger: str = "stderr") -> None:
        super().__init__()
        self._target = target
        self._logger = logger
        self._partial = ""
        self._lock = threading.Lock()

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        with self._lock:
            lines = (self._partial + text).split("\n")
            self._partial = lines.pop()
            for line in lines:
                self._emit(line)
        return len(text)

    def flush(self) -> None:
        self._target.flush()

    def close(self) -> None:
        with self._lock:
            if self._partial:
                self._emit(self._partial)
                self._partial = ""
        self.flush()

    def fileno(self) -> int:
        return self._target.fileno()

    @property
    def encoding(self) -> str:  # type: ignore[override]  # TextIOBase declares it read-only
        return getattr(self._target, "encoding", "utf-8")

    def _emit(self, line: str) -> None:
        line = line.rstrip("\r")
        if not line.strip():
            return
        entry = {
            "time": _timestamp(time.time()),
            "level": "warning",
            "logger": self._logger,
            "message": line,
        }
        self._target.write(_encoder.encode(entry).decode(errors="replace") + "\n")
        self._target.flush()


def _log_uncaught(
    kind: type[BaseException] | None,
    value: BaseException | None,
    traceback: TracebackType | None,
    *,
    message: str,
    **fields: Any,
) -> None:
    if kind is None or value is None:
        return
    logging.getLogger("rdisplay.uncaught").error(
        message, exc_info=(kind, value, traceback), extra=fields
    )


def _install_exception_hooks() -> None:
    """Uncaught exceptions, in any thread, and unraisable ones become error records."""

    def main_thread(
        kind: type[BaseException], value: BaseException, traceback: TracebackType | None
    ) -> None:
        if issubclass(kind, KeyboardInterrupt):
            sys.__excepthook__(kind, value, traceback)
            return
        _log_uncaught(kind, value, traceback, message="uncaught exception")

    def other_thread(args: threading.ExceptHookArgs) -> None:
        if args.exc_type is SystemExit:
            return
        thread = args.thread.name if args.thread is not None else None
        _log_uncaught(
            args.exc_type,
            args.exc_value,
            args.exc_traceback,
            message="uncaught exception in a thread",
            thread_name=thread,
        )

    def unraisable(args: Any) -> None:
        where = args.err_msg or "Exception ignored in"
        _log_uncaught(
            args.exc_type,
            args.exc_value,
            args.exc_traceback,
            message=f"{where}: {args.object!r}"[:500],
        )

    sys.excepthook = main_thread
    threading.excepthook = other_thread
    sys.unraisablehook = unraisable


def _remove_library_stream_handlers() -> None:
    """Handlers a library put on its own logger write to stderr in their own format."""
    for logger in list(logging.Logger.manager.loggerDict.values()):
        if not isinstance(logger, logging.Logger):
            continue
        plain = [h for h in logger.handlers if type(h) is logging.StreamHandler]
        for handler in plain:  # not file handlers, not subclasses such as pytest's
            logger.removeHandler(handler)
        if plain:
            logger.propagate = True  # its records now reach the root handler instead


def configure_logging(level: str = "info", fmt: str = "json", *, service: bool = False) -> None:
    """Send every log record (library ones included) to stderr in one format.

    With `service` (the long-running commands) and `fmt="json"`, stderr itself becomes a
    `JsonLinesStream` and uncaught exceptions are logged, so every stderr line is JSON.
    """
    stream: TextIO = sys.stderr
    if isinstance(stream, JsonLinesStream):  # configured before, in this process
        stream = stream._target
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter() if fmt == "json" else ConsoleFormatter())
    _remove_library_stream_handlers()
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name, floor in LEVEL_FLOORS.items():
        logging.getLogger(name).setLevel(max(floor, root.level))
    logging.captureWarnings(True)
    if service:
        _install_exception_hooks()
        if fmt == "json":
            lines = JsonLinesStream(stream)
            sys.stderr = lines
            atexit.register(lines.close)  # a last line without its newline
