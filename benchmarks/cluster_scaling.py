"""Throughput on a Valkey cluster (issue 15): 1, 2 and 3 masters, 1 to 4 workers, one edge,
STREAM_PARTITIONS=12, against one plain Valkey with STREAM_PARTITIONS=1 as the baseline.

Each cell is `rdisplay edge` + W `rdisplay worker`s on a fresh cluster of its own (no
replicas: this measures the partitioned pipeline, not replication), loaded by `rdisplay
bench`'s library and swept upward to the max sustained rate (p99 ≤ 250 ms, < 1 % errors,
nothing lost). Every process of every cell shares this machine's cores, so the table says what
one machine shows, not what N machines would: `docs/operations.md` projects from it.

    python -m benchmarks.cluster_scaling [--masters 1,2,3] [--workers 1,2,4]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from benchmarks.cluster import LocalCluster
from benchmarks.compare import REFRESH, SECRET, Target, _processes, _wait_http, load_generator
from benchmarks.pipeline import ROOT, free_port, order_api, redis_server
from services.bench.generator import RunReport, summary_line, sweep

RDISPLAY = str(Path(sys.executable).parent / "rdisplay")
PARTITIONS = 12
RESULTS = ROOT / "benchmarks" / "RESULTS-cluster.md"


@dataclass
class Cell:
    store: str
    workers: int
    at_500: RunReport | None
    max_sustained: float | None


@contextlib.contextmanager
def _system(url: str, order_url: str, workers: int, partitions: int) -> Iterator[Target]:
    prefix = f"rdscale-{uuid.uuid4().hex[:8]}"
    port = free_port()
    with tempfile.TemporaryDirectory() as data_dir:
        env = {
            **os.environ,
            "REDIS_URL": url,
            "SOCKET_IO_PORT": str(port),
            "JWT_SECRET": SECRET,
            "JWT_REFRESH_SECRET": REFRESH,
            "DATA_DIR": data_dir,
            "STREAM_PREFIX": prefix,
            "STREAM_PARTITIONS": str(partitions),
            "ORDER_API_URL": order_url,
            "RATE_LIMIT_MAX_REQUESTS": "1000000",
            "LOG_LEVEL": "warning",
        }
        commands: list[tuple[list[str], dict[str, str], str | None]] = [
            ([RDISPLAY, "edge"], env, None),
            *(([RDISPLAY, "worker"], env, None) for _ in range(workers)),
        ]
        with _processes(commands):
            _wait_http(f"http://127.0.0.1:{port}/health")
            time.sleep(1.5)  # the workers join their groups
            yield Target(f"http://127.0.0.1:{port}", "rdisplay", prefix)


def measure(
    target: Target, url: str, args: argparse.Namespace, label: str
) -> tuple[RunReport | None, float | None]:
    def show(report: RunReport) -> None:
        print(f"  {label:<22} {summary_line(report)}", file=sys.stderr, flush=True)

    with load_generator(target, url, args) as generator:
        runs, best = sweep(
            generator,
            start=args.sweep_step,
            step=args.sweep_step,
            maximum=args.sweep_max,
            duration=args.duration,
            warmup=args.warmup,
            on_run=show,
        )
    at_500 = next((run for run in runs if run.rate == 500), None)
    return at_500, best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--masters", default="1,2,3")
    parser.add_argument("--workers", default="1,2,4")
    parser.add_argument("--controllers", type=int, default=100)
    parser.add_argument("--screens", type=int, default=100)
    parser.add_argument("--procs", type=int, default=2)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--sweep-step", type=float, default=250.0)
    parser.add_argument("--sweep-max", type=float, default=4000.0)
    args = parser.parse_args()
    masters = [int(m) for m in args.masters.split(",")]
    workers = [int(w) for w in args.workers.split(",")]
    cells: list[Cell] = []
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    with order_api() as order_url, tempfile.TemporaryDirectory() as scratch:
        with redis_server(None) as single:
            for count in workers:
                with _system(single, order_url, count, 1) as target:
                    fixed, best = measure(target, single, args, f"single x{count}w")
                cells.append(Cell("one Valkey, 1 partition", count, fixed, best))
        for count in masters:
            for worker_count in workers:
                directory = Path(scratch) / f"m{count}-w{worker_count}"
                with (
                    LocalCluster(directory, masters=count, replicas=0) as nodes,
                    _system(nodes.url, order_url, worker_count, PARTITIONS) as target,
                ):
                    label = f"{count} masters x{worker_count}w"
                    fixed, best = measure(target, nodes.url, args, label)
                cells.append(Cell(f"cluster, {count} master(s)", worker_count, fixed, best))
    RESULTS.write_text(render(cells, args, started))
    print(RESULTS.read_text())


def _p(report: RunReport | None, name: str) -> str:
    if report is None or report.ack_ms is None:
        return "—"
    return f"{getattr(report.ack_ms, name):.1f}"


def render(cells: list[Cell], args: argparse.Namespace, started: str) -> str:
    lines = [
        "# Throughput on a cluster (issue 15)",
        "",
        f"`python -m benchmarks.cluster_scaling`, started {started}, on {platform.node()} "
        f"({os.cpu_count()} CPUs, {platform.machine()}): one `rdisplay edge`, W `rdisplay "
        f"worker`, {args.controllers} controllers + {args.screens} screens over {args.procs} "
        f"generator processes, STREAM_PARTITIONS={PARTITIONS} on the clusters (no replicas), "
        f"{args.duration:.0f} s runs. Everything shares this machine.",
        "",
        "| store | workers | ack p50 / p95 / p99 at 500/s (ms) | max sustained |",
        "|---|---|---|---|",
    ]
    for cell in cells:
        at = cell.at_500
        latency = " / ".join(_p(at, n) for n in ("p50", "p95", "p99"))
        best = "—" if cell.max_sustained is None else f"{cell.max_sustained:,.0f}/s"
        lines.append(f"| {cell.store} | {cell.workers} | {latency} | {best} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
