"""The failover drill (SPEC 11): a master of a 3-master, 3-replica Valkey cluster SIGKILLed under
load, its replica promoted, the old master started again (it rejoins as a replica).

    python -m benchmarks.failover --wait-replicas 1   # the promise: nothing acknowledged lost
    python -m benchmarks.failover --wait-replicas 0   # the store's own promise, reported

`rdisplay edge` and two `rdisplay worker` processes on STREAM_PARTITIONS=12, the official
`services.client` controllers and screens, the invariants of `benchmarks.drill_harness.verify`
over every partition. `tests/drills/test_failover.py` runs it at CI scale with k = 1.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import cast

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.crc import key_slot

from benchmarks.cluster import NODE_TIMEOUT_MS, LocalCluster
from benchmarks.drill_harness import (
    Cluster,
    Load,
    Report,
    Scale,
    connected_clients,
    serving_orders,
    verify,
)
from benchmarks.order_fake import OrderService
from benchmarks.pipeline import free_port
from streams.partitions import Partitions

PARTITIONS = 12


async def failover(
    workdir: Path,
    orders: OrderService,
    scale: Scale,
    *,
    wait_replicas: int,
    down_s: float = 2.0,
    replica_lag_s: float = 0.0,
) -> Report:
    """With `replica_lag_s`, the killed master's replica is paused (SIGSTOP) that long before
    the kill and resumed right after it: the master's last writes never reached it, as over a
    slow link, which loopback replication is otherwise too fast to show."""
    started = time.monotonic()
    prefix = f"rdfail-{uuid.uuid4().hex[:8]}"
    layout = Partitions.of(prefix, PARTITIONS)
    # With a lagging replica, its master drops the link once 64 kB wait for it (a slow link's
    # fate): later writes never reach the replica, whatever the kernel's socket buffers hold.
    limit = {"client-output-buffer-limit": "replica 64kb 32kb 1"} if replica_lag_s else {}
    nodes = LocalCluster(workdir / "cluster", masters=3, replicas=1, extra_config=limit)
    await asyncio.to_thread(nodes.start)
    processes = Cluster(
        redis_url=nodes.url,
        prefix=prefix,
        workdir=workdir / "rdisplay",
        ORDER_API_URL=orders.url,
        STREAM_PARTITIONS=str(PARTITIONS),
        REDIS_WAIT_REPLICAS=str(wait_replicas),
        ACK_TIMEOUT_MS=str(int(scale.ack_timeout_s * 750)),
    )
    redis = cast("Redis", RedisCluster.from_url(nodes.url))
    try:
        for _ in range(2):
            await processes.start_worker()
        port = free_port()
        await processes.start_edge(port)
        async with connected_clients(f"http://127.0.0.1:{port}", scale) as clients:
            load = Load(clients, scale)
            sender = asyncio.create_task(load.run())
            try:
                await asyncio.sleep(scale.duration_s / 3)
                slot = key_slot(layout.tags[0].encode())
                victim = nodes.master_of_slot(slot)
                hit = [
                    index
                    for index, tag in enumerate(layout.tags)
                    if nodes.master_of_slot(key_slot(tag.encode())) is victim
                ]
                replica = nodes.replica_of(victim)
                if replica_lag_s:
                    nodes.pause(replica)
                    await asyncio.sleep(replica_lag_s)
                killed_at = time.monotonic()
                await asyncio.to_thread(nodes.kill, victim)
                nodes.resume(replica)
                await asyncio.to_thread(nodes.wait_promoted, slot, victim, 60.0)
                promoted_s = time.monotonic() - killed_at
                await asyncio.sleep(down_s)
                await asyncio.to_thread(nodes.restart, victim)
                await asyncio.to_thread(nodes.wait_ok, 60.0)
                rejoined_s = time.monotonic() - killed_at
            finally:
                await sender
            await load.finish()
            report = await verify(
                f"cluster-failover-k{wait_replicas}",
                redis,
                layout,
                load,
                drain_s=scale.drain_s,
                started=started,
                allowed_final=(),
            )
            resumed = _resumed_after(load, killed_at, hit, layout)
            report.measures.update(
                promoted_s=promoted_s, rejoined_s=rejoined_s, resumed_s=resumed or -1.0
            )
            report.notes.append(
                f"master :{victim.port} (partitions {hit}) SIGKILLed; its replica promoted after "
                f"{promoted_s:.1f} s (cluster-node-timeout {NODE_TIMEOUT_MS} ms), old master "
                f"back as a replica after {rejoined_s:.1f} s; the first success on its "
                f"partitions after the kill came {_seconds(resumed)}; its replica paused "
                f"{replica_lag_s} s before the kill; REDIS_WAIT_REPLICAS={wait_replicas}"
            )
            return report
    finally:
        await processes.close()
        await redis.aclose()
        await asyncio.to_thread(nodes.stop)


def _resumed_after(
    load: Load, killed_at: float, hit: list[int], layout: Partitions
) -> float | None:
    """Seconds from the kill to the first success answered on a partition of the killed master
    (a trigger sent after the kill)."""
    firsts = [
        outcome.answered_at - killed_at
        for outcome in load.outcomes.values()
        if outcome.answered_at is not None
        and outcome.answered_at > killed_at
        and outcome.ack is not None
        and outcome.ack.get("success")
        and layout.index_for(outcome.screen_id) in hit
    ]
    return min(firsts) if firsts else None


def _seconds(value: float | None) -> str:
    return "never" if value is None else f"{value:.1f} s after it"


async def _main(args: argparse.Namespace) -> int:
    scale = Scale(
        rate=args.rate,
        duration_s=args.duration,
        controllers=args.controllers,
        screens=args.screens,
        deadline_s=60.0,
        drain_s=60.0,
    )
    with tempfile.TemporaryDirectory(prefix="rd-failover-") as scratch:
        async with serving_orders(OrderService()) as orders:
            report = await failover(
                Path(scratch),
                orders,
                scale,
                wait_replicas=args.wait_replicas,
                replica_lag_s=args.replica_lag,
            )
    print(report.summary())
    for name, value in sorted(report.measures.items()):
        print(f"  {name}: {value:.2f}")
    return 0 if report.ok else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--wait-replicas", type=int, default=1)
    parser.add_argument(
        "--replica-lag", type=float, default=0.0, help="pause the replica this long first (s)"
    )
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--duration", type=float, default=12.0)
    parser.add_argument("--controllers", type=int, default=40)
    parser.add_argument("--screens", type=int, default=24)
    return asyncio.run(_main(parser.parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
