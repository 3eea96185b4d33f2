"""The garbage collector of a long-running service process, tuned for latency.

CPython's cyclic collector stops the event loop while it runs. With the default thresholds
(700, 10, 10) an edge under load (hundreds of sockets, every trigger traced) ran a full
collection every few seconds: 75-125 ms of stalled loop each, most of it walking the ~75,000
objects that importing the stack creates and that never die (issue 13: ack p99 at 300/s went
from ~15 ms to ~150 ms with tracing on, and came back with this).

So, once the process has started: collect, then `gc.freeze()` what is alive (modules,
classes, settings: the collector never walks them again), and raise the thresholds so the
young generations are collected less often (each collection is still short: they hold only
what was allocated since). Reference counting frees almost everything a request allocates;
the collector is only for cycles, and it still runs.
"""

from __future__ import annotations

import gc
import logging

logger = logging.getLogger(__name__)

# Collect generation 0 after 10,000 net allocations (default 700), generation 1 after 50
# of those (default 10), generation 2 as CPython decides (also only when the objects that
# survived into it grew by 25 %).
THRESHOLDS = (10_000, 50, 100)


def settle() -> None:
    """Freeze what the process's start left alive and raise the collector's thresholds."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*THRESHOLDS)
    logger.debug("heap settled", extra={"frozen": gc.get_freeze_count()})
