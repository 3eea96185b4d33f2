"""Where the 2 cores go: CPU per process role while a system runs at fixed rates.

For each system (`floor`, `serve`, `split`, `seed`, as in `benchmarks/compare.py`) and each
rate, runs `rdisplay bench`'s generator for a counted window and reads every process's
utime + stime from /proc before and after, plus the machine's busy/idle split from /proc/stat.
Reports CPU % of one core per role (system under test, Redis/Valkey, order stub, load
generator) and CPU ms per trigger, so a throughput ceiling can be read as a budget: at rate R
the roles need R x (ms per trigger) of the 2 cores.

    python -m benchmarks.cpu_budget --systems split seed --rates 500 1000 1500

Writes `benchmarks/RESULTS-cpu.md` (or `--out`).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import sys
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from benchmarks.compare import (
    NOTES_MARKER,
    SYSTEMS,
    Target,
    load_generator,
    seed_install,
    start_system,
)
from benchmarks.pipeline import ROOT, order_api, redis_server
from services.bench.generator import LoadGenerator, RunReport, summary_line

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Sample:
    rate: float
    report: RunReport
    roles: dict[str, float]  # role -> CPU seconds per second (1.0 = one core)
    machine_busy: float  # share of all cores, 0..1
    machine_softirq: float


def _cpu_times() -> dict[int, tuple[int, float]]:
    """pid -> (parent pid, CPU seconds) for every process readable now."""
    out: dict[int, tuple[int, float]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{name}/stat").read_text().rsplit(")", 1)[1].split()
            out[int(name)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / CLOCK_TICKS)
    return out


def _machine() -> list[int]:
    return [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]


def _role(pid: int, parent: int, me: int, order_dir: str) -> str:
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        cwd = os.readlink(f"/proc/{pid}/cwd")
    except OSError:
        return "other"
    if parent == me and "multiprocessing" in cmd:
        return "load generator"
    for service in ("serve", "edge", "worker"):
        # `serve` runs its edge and worker as `python -m services.cli.main edge|worker`
        if f"rdisplay {service}" in cmd or f"services.cli.main {service}" in cmd:
            return f"rdisplay {service}"
    if "otlp_sink" in cmd:
        return "otlp sink"
    if "floor_server" in cmd:
        return "floor"
    if "valkey-server" in cmd or "redis-server" in cmd:
        return "redis/valkey"
    if "node" in cmd and "server.js" in cmd:
        return "order stub" if cwd == order_dir else "seed-node"
    return "other"


@contextlib.contextmanager
def _cwd_of_order_stub() -> Iterator[tuple[str, str]]:
    with order_api() as url:
        port = url.rsplit(":", 1)[1]
        directory = ""
        for pid, _ in _cpu_times().items():
            with contextlib.suppress(OSError):
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
                environ = Path(f"/proc/{pid}/environ").read_bytes()
                if b"server.js" in cmd and f"PORT={port}".encode() in environ.split(b"\0"):
                    directory = os.readlink(f"/proc/{pid}/cwd")
        yield url, directory


def measure(generator: LoadGenerator, rate: float, duration: float, order_dir: str) -> Sample:
    generator.run(rate, 2.0, 0.5)  # settle at this rate first
    me = os.getpid()
    before, machine_before, started = _cpu_times(), _machine(), time.monotonic()
    report = generator.run(rate, duration, 0.5)
    after, machine_after = _cpu_times(), _machine()
    elapsed = time.monotonic() - started
    roles: dict[str, float] = defaultdict(float)
    named = {pid: _role(pid, parent, me, order_dir) for pid, (parent, _s) in after.items()}
    for pid, (parent, seconds) in after.items():
        if pid in before:
            role = named[pid]
            if role == "other" and named.get(parent, "").startswith("rdisplay "):
                role = "span exporter"  # the OTLP exporter process of an edge or worker
            if role != "other":
                roles[role] += (seconds - before[pid][1]) / elapsed
    delta = [b - a for a, b in zip(machine_before, machine_after, strict=True)]
    total = sum(delta) or 1
    idle = delta[3] + delta[4]
    return Sample(rate, report, dict(roles), 1 - idle / total, delta[6] / total)


def _now() -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())


def render(results: dict[str, list[Sample]], args: argparse.Namespace) -> str:
    lines = [
        "# CPU budget per trigger",
        "",
        f"Written by `python -m benchmarks.cpu_budget` on {_now()}"
        f" ({os.cpu_count()} CPUs, {platform.processor() or platform.machine()},"
        f" Python {platform.python_version()}). {args.controllers} controllers"
        f" (+ {args.screens} screens acking displays for ours), {args.procs} generator processes,"
        f" {args.duration:g} s counted per rate, embedded Valkey unless `--redis-url`.",
        "",
        "CPU is % of one core (utime + stime from /proc, so the kernel's work inside each"
        " process's system calls is included; softirq network work is in the machine column)."
        " CPU ms/trigger divides by the offered rate: where the run is not sustained the"
        " system fell behind and the figure is a lower bound.",
        "",
        "| system | rate/s | ack p50/p95/p99 ms | sustained | role | CPU % | CPU ms/trigger |",
        "|---|---|---|---|---|---|---|",
    ]
    for system, samples in results.items():
        for sample in samples:
            ack = sample.report.ack_ms
            latency = f"{ack.p50:.1f} / {ack.p95:.1f} / {ack.p99:.1f}" if ack else "-"
            sustained = "yes" if sample.report.sustained else "no"
            head = f"| {system} | {sample.rate:g} | {latency} | {sustained}"
            for role, share in sorted(sample.roles.items(), key=lambda kv: -kv[1]):
                per = 1000 * share / sample.rate
                lines.append(f"{head} | {role} | {100 * share:.0f} | {per:.3f} |")
                head = "| | | |"
            lines.append(
                f"{head} | **machine busy** (of all cores; softirq"
                f" {100 * sample.machine_softirq:.0f} %) | {100 * sample.machine_busy:.0f} % | - |"
            )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--systems", nargs="+", choices=SYSTEMS, default=["split", "seed"])
    parser.add_argument("--rates", nargs="+", type=float, default=[500, 1000, 1500])
    parser.add_argument("--duration", type=float, default=8.0)
    parser.add_argument("--controllers", type=int, default=200)
    parser.add_argument("--screens", type=int, default=200)
    parser.add_argument("--procs", type=int, default=2)
    parser.add_argument("--redis-url", default=None, help="default: an embedded Valkey")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "RESULTS-cpu.md")
    args = parser.parse_args()
    results: dict[str, list[Sample]] = {}
    seed = (
        seed_install() if "seed" in args.systems else contextlib.nullcontext(Path("/nonexistent"))
    )
    with (
        redis_server(args.redis_url) as redis_url,
        _cwd_of_order_stub() as (order_url, order_dir),
        seed as seed_dir,
    ):
        for system in args.systems:
            with start_system(system, redis_url, order_url, seed_dir) as target:
                results[system] = _run_system(system, target, redis_url, order_dir, args)
            time.sleep(2)
    notes = NOTES_MARKER + "\n"
    if args.out.exists() and NOTES_MARKER in (old := args.out.read_text()):
        notes = old[old.index(NOTES_MARKER) :]
    args.out.write_text(render(results, args) + "\n" + notes)
    print(f"wrote {args.out}", file=sys.stderr)


def _run_system(
    system: str, target: Target, redis_url: str, order_dir: str, args: argparse.Namespace
) -> list[Sample]:
    samples = []
    with load_generator(target, redis_url, args) as generator:
        for rate in args.rates:
            sample = measure(generator, rate, args.duration, order_dir)
            samples.append(sample)
            shares = ", ".join(f"{k} {100 * v:.0f}%" for k, v in sorted(sample.roles.items()))
            print(
                f"  {system:<6} {summary_line(sample.report)}\n         CPU: {shares};"
                f" machine busy {100 * sample.machine_busy:.0f}%",
                file=sys.stderr,
                flush=True,
            )
            time.sleep(1)
    return samples


if __name__ == "__main__":
    main()
