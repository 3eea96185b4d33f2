"""Fault drills at full scale (issue 6): the drills of `tests/drills`, bigger and longer.

- worker-kills: 2 workers, one SIGKILLed and replaced every 2 s, 300 triggers/s for 30 s;
- edge-kill: the edge every client is on SIGKILLed twice under 300 triggers/s, back on its port;
- redis-restart: a Valkey of the drill's own (AOF, `appendfsync always`) stopped with SIGTERM
  under 300 triggers/s and started again on the same port and data directory;
- order-outage: the order service answers 503 for 30 s under 300 triggers/s; the workers'
  circuits open, and they recover by themselves through the HALF_OPEN probe 30 s later.

Each prints a summary (sent, acked, lost, duplicates, pending after drain, screens correct); the
exit code is 1 when any invariant was violated. `python -m benchmarks.drills --help`.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path

from benchmarks.drill_harness import (
    Report,
    Scale,
    Setup,
    edge_kill,
    order_service_outage,
    redis_restart,
    serving_orders,
    worker_kills,
)
from benchmarks.order_fake import OrderService
from benchmarks.pipeline import redis_server
from streams.keys import Keyspace

FULL = Scale(
    rate=300,
    duration_s=30,
    controllers=100,
    screens=50,
    kill_every_s=2.0,
    outage_s=30.0,
    deadline_s=120.0,
    ack_timeout_s=2.0,
    drain_s=60.0,
)

Drill = Callable[[Setup], Awaitable[Report]]


async def _outage(setup: Setup) -> Report:
    # 60 s of load, the outage from 10 s to 40 s: the circuits open at ~10 s and probe at ~40 s.
    # Controllers wait longer per send so that ~9,000 waiting triggers do not flood the edge.
    setup.scale = replace(setup.scale, duration_s=60.0, ack_timeout_s=10.0)
    return await order_service_outage(setup, fresh_worker_after=False, outage_at_s=10.0)


DRILLS: dict[str, Drill] = {
    "worker-kills": worker_kills,
    "edge-kill": edge_kill,
    "redis-restart": redis_restart,
    "order-outage": _outage,
}


async def run(names: list[str], scale: Scale, redis_url: str) -> list[Report]:
    reports = []
    for name in names:
        with tempfile.TemporaryDirectory(prefix=f"drill-{name}-") as tmp:
            async with serving_orders(OrderService()) as orders:
                setup = Setup(
                    redis_url,
                    Keyspace(f"rddrill-{uuid.uuid4().hex[:8]}"),
                    Path(tmp),
                    orders,
                    scale,
                )
                report = await DRILLS[name](setup)
        print(report.summary(), flush=True)
        reports.append(report)
    return reports


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("drills", nargs="*", help=f"any of {', '.join(DRILLS)} (default: all)")
    parser.add_argument("--rate", type=float, default=FULL.rate, help="triggers/s")
    parser.add_argument("--duration", type=float, default=FULL.duration_s, help="seconds of load")
    parser.add_argument("--kill-every", type=float, default=FULL.kill_every_s)
    parser.add_argument("--outage", type=float, default=FULL.outage_s, help="order-service s")
    parser.add_argument(
        "--redis-url",
        help="default: a Valkey of its own (the Redis restart drill always uses its own)",
    )
    args = parser.parse_args()
    unknown = [name for name in args.drills if name not in DRILLS]
    if unknown:
        parser.error(f"unknown drills {unknown}: choose from {', '.join(DRILLS)}")
    scale = replace(
        FULL,
        rate=args.rate,
        duration_s=args.duration,
        kill_every_s=args.kill_every,
        outage_s=args.outage,
    )
    with redis_server(args.redis_url) as url:
        reports = asyncio.run(run(args.drills or list(DRILLS), scale, url))
    failed = [r.drill for r in reports if not r.ok]
    print(
        f"{len(reports) - len(failed)}/{len(reports)} drills held"
        + (f"; violated: {failed}" if failed else "")
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
