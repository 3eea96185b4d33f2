"""Side by side, one go, one machine (issue 6): the floor, `rdisplay serve`, `rdisplay edge` +
`rdisplay worker`, and the seed's design rebuilt in Node (`../shared/anchors/seed-node`).

All four share one Valkey and the Node order stub (`../shared/anchors/order-api`) as their
order service. Each system is measured by `services.bench` (`rdisplay bench`'s library) at 200,
500 and 1,000 triggers/s, then swept upward to its max sustained rate (p99 ≤ 250 ms, < 1 %
errors, nothing lost). The machine is noisy, so the systems alternate and the whole thing
repeats (`--rounds`); `benchmarks/RESULTS.md` gets every round and the medians.
Takes ~15 minutes: `python -m benchmarks.compare`.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import redis

from benchmarks.pipeline import ROOT, free_port, order_api, redis_server
from services.bench.effects import projected_duplicates
from services.bench.generator import LoadGenerator, RunReport, summary_line, sweep
from services.bench.plan import BenchConfig, Protocol

SEED_NODE = ROOT.parent / "shared" / "anchors" / "seed-node"
RDISPLAY = str(Path(sys.executable).parent / "rdisplay")
SECRET = "compare-access-secret-0123456789abcdef0123456789"
REFRESH = "compare-refresh-secret-0123456789abcdef01234567"
RATES = (200, 500, 1000)
SYSTEMS = ("floor", "serve", "serve-traced", "split", "split-traced", "split2", "seed")
NOTES_MARKER = "<!-- notes: kept when compare.py rewrites this file -->"


@dataclass
class Measurement:
    system: str
    round: int
    fixed: dict[int, RunReport] = field(default_factory=dict)
    sweep: list[RunReport] = field(default_factory=list)
    max_sustained: float | None = None


@dataclass(frozen=True)
class Target:
    url: str
    protocol: Protocol
    prefix: str | None


def _wait_http(url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=1):
            return
        time.sleep(0.1)
    msg = f"{url} did not answer within {timeout} s"
    raise RuntimeError(msg)


def _wait_port(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
            return
        time.sleep(0.1)
    msg = f"port {port} did not open within {timeout} s"
    raise RuntimeError(msg)


@contextlib.contextmanager
def _processes(commands: list[tuple[list[str], dict[str, str], str | None]]) -> Iterator[None]:
    started = [
        subprocess.Popen(cmd, env=env, cwd=cwd, stdout=subprocess.DEVNULL)
        for cmd, env, cwd in commands
    ]
    try:
        yield
    finally:
        for process in started:
            process.terminate()
        for process in started:
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)


@contextlib.contextmanager
def seed_install() -> Iterator[Path]:
    """seed-node copied to a scratch folder (../shared is read-only), `npm ci` there."""
    with tempfile.TemporaryDirectory(prefix="seed-node-") as tmp:
        target = Path(tmp) / "seed-node"
        shutil.copytree(SEED_NODE, target, ignore=shutil.ignore_patterns("node_modules"))
        for path in [target, *target.rglob("*")]:
            path.chmod(path.stat().st_mode | 0o200)
        subprocess.run(
            ["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=target, check=True
        )
        yield target


@contextlib.contextmanager
def start_system(system: str, redis_url: str, order_url: str, seed_dir: Path) -> Iterator[Target]:
    port = free_port()
    base = {**os.environ, "LOG_LEVEL": "warning"}
    if system == "floor":
        cmd = [sys.executable, "-m", "benchmarks.floor_server", "--port", str(port)]
        with _processes([(cmd, base, str(ROOT))]):
            _wait_port(port)
            yield Target(f"http://127.0.0.1:{port}", "seed", None)
        return
    if system == "seed":
        env = {
            **base,
            "PORT": str(port),
            "REDIS_URL": redis_url.rsplit("/", 1)[0] + "/15",
            "JWT_SECRET": SECRET,
            "ORDER_API_URL": order_url,
            "LOG_LEVEL": "warn",
        }
        with _processes([(["node", "server.js"], env, str(seed_dir))]):
            _wait_http(f"http://127.0.0.1:{port}/health")
            yield Target(f"http://127.0.0.1:{port}", "seed", None)
        return
    prefix = f"cmp-{system}-{uuid.uuid4().hex[:6]}"
    traced = system.endswith("-traced")
    system = system.removesuffix("-traced")
    with contextlib.ExitStack() as stack:
        if traced:  # every trigger sampled, OTLP/HTTP to a local sink process
            sink_port = free_port()
            stack.enter_context(
                _processes(
                    [
                        (
                            [
                                sys.executable,
                                "-m",
                                "benchmarks.otlp_sink",
                                "--port",
                                str(sink_port),
                            ],
                            base,
                            str(ROOT),
                        )
                    ]
                )
            )
            _wait_port(sink_port)
            base = {**base, "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{sink_port}"}
        with _ours(system, base, redis_url, order_url, prefix, port) as target:
            yield target


@contextlib.contextmanager
def _ours(
    system: str, base: dict[str, str], redis_url: str, order_url: str, prefix: str, port: int
) -> Iterator[Target]:
    with tempfile.TemporaryDirectory() as data_dir:
        env = {
            **base,
            "REDIS_URL": redis_url,
            "SOCKET_IO_PORT": str(port),
            "JWT_SECRET": SECRET,
            "JWT_REFRESH_SECRET": REFRESH,
            "DATA_DIR": data_dir,
            "STREAM_PREFIX": prefix,
            "ORDER_API_URL": order_url,
            "RATE_LIMIT_MAX_REQUESTS": "1000000",
        }
        env.pop("ORDERS_FILE", None)
        env.pop("DOCUMENT_URL_TEMPLATE", None)
        commands: list[tuple[list[str], dict[str, str], str | None]] = [
            ([RDISPLAY, "serve" if system == "serve" else "edge"], env, None)
        ]
        ports = [port]
        if system == "split2":  # a second edge on its own port; the bench spreads clients
            ports.append(free_port())
            commands.append(([RDISPLAY, "edge"], {**env, "SOCKET_IO_PORT": str(ports[1])}, None))
        if system != "serve":
            commands.append(([RDISPLAY, "worker"], env, None))
        with _processes(commands):
            for p in ports:
                _wait_http(f"http://127.0.0.1:{p}/health")
            time.sleep(1)  # the worker joins its group
            url = ",".join(f"http://127.0.0.1:{p}" for p in ports)
            yield Target(url, "rdisplay", prefix)
        _drop_prefix(redis_url, prefix)


def _drop_prefix(redis_url: str, prefix: str) -> None:
    client = redis.Redis.from_url(redis_url)
    try:
        keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
        for i in range(0, len(keys), 1000):
            client.delete(*keys[i : i + 1000])
    finally:
        client.close()


@contextlib.contextmanager
def load_generator(
    target: Target, redis_url: str, args: argparse.Namespace
) -> Iterator[LoadGenerator]:
    """`rdisplay bench`'s generator for one system (screens only for ours), with the
    duplicated-effects check where the system keeps our event log."""
    config = BenchConfig(
        url=target.url,
        protocol=target.protocol,
        controllers=args.controllers,
        screens=args.screens if target.protocol == "rdisplay" else 0,
        procs=args.procs,
        secret=SECRET,
        tag=uuid.uuid4().hex[:8],
        drain_s=3.0,
    )
    duplicates = projected_duplicates(redis_url, target.prefix) if target.prefix else None
    with LoadGenerator(config, duplicates=duplicates) as generator:
        yield generator


def measure(
    system: str, round_: int, target: Target, redis_url: str, args: argparse.Namespace
) -> Measurement:
    result = Measurement(system, round_)

    def show(report: RunReport) -> None:
        print(f"  {system:<6} r{round_} {summary_line(report)}", file=sys.stderr, flush=True)

    with load_generator(target, redis_url, args) as generator:
        for rate in RATES:
            report = generator.run(rate, args.duration, args.warmup)
            result.fixed[rate] = report
            show(report)
            time.sleep(1)
        # From just above the highest fixed rate when all passed, else from the bottom.
        top_passed = result.fixed[RATES[-1]].sustained
        result.sweep, best = sweep(
            generator,
            start=RATES[-1] + args.sweep_step if top_passed else args.sweep_step,
            step=args.sweep_step,
            maximum=args.sweep_max,
            duration=args.duration,
            warmup=args.warmup,
            on_run=show,
        )
        result.max_sustained = best if best is not None else (RATES[-1] if top_passed else None)
    return result


def machine(redis_url: str) -> dict[str, str]:
    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    node = subprocess.run(["node", "--version"], capture_output=True, text=True, check=False)
    client = redis.Redis.from_url(redis_url)
    try:
        info = client.info("server")
    finally:
        client.close()
    server = (
        f"Valkey {info['valkey_version']}"
        if "valkey_version" in info
        else f"Redis {info.get('redis_version')}"
    )
    return {
        "CPUs": str(os.cpu_count()),
        "CPU model": model,
        "OS": platform.platform(),
        "Python": platform.python_version(),
        "Node": node.stdout.strip(),
        "Redis server": server,
    }


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _median(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def _p(report: RunReport | None, name: str) -> float | None:
    if report is None or report.ack_ms is None:
        return None
    value: float = getattr(report.ack_ms, name)
    return value


def render(
    measurements: list[Measurement], facts: dict[str, str], args: argparse.Namespace, took: float
) -> str:
    systems = [s for s in SYSTEMS if any(m.system == s for m in measurements)]
    by = {s: [m for m in measurements if m.system == s] for s in systems}
    lines = [
        "# remote-display vs the seed's design: side by side",
        "",
        f"Written by `python -m benchmarks.compare` on {time.strftime('%Y-%m-%d %H:%M %Z')}"
        f" in {took / 60:.1f} min. Each system alone on the machine with the load generator"
        f" (`rdisplay bench`'s library: {args.procs} processes, {args.controllers} controllers;"
        f" {args.screens} screens acking every display for ours; the seed and the floor have"
        f" no screens). Open loop, {args.warmup:g} s warm-up + {args.duration:g} s counted per"
        f" rate; latency from the scheduled send time to the ack. {args.rounds} rounds, the"
        " systems alternating order each round; the tables give the median over rounds.",
        "",
        "## Machine",
        "",
        *(f"- {k}: {v}" for k, v in facts.items()),
        "",
        "Systems: **floor** = bare python-socketio echo-with-ack on uvicorn (uvloop, httptools,"
        " websockets; `benchmarks/floor_server.py`); **serve** = `rdisplay serve` (since issue"
        " 13 the edge and one worker as processes of their own, supervised);"
        " **split** = `rdisplay edge` + `rdisplay worker` started separately;"
        " **X-traced** = X with every trigger traced, OTLP/HTTP to a local sink process;"
        " **split2** (with `--systems`) = two `rdisplay edge` processes on two ports + one"
        " worker, the bench's clients spread over both edges;"
        " **seed** = `../shared/anchors/seed-node` (Node, Socket.IO 4, node-redis, fetch). All"
        " use the same Valkey; ours and the seed use `../shared/anchors/order-api` as order"
        " service (ORDER_API_URL).",
        "",
        "## Ack latency (ms, median of rounds) and max sustained rate",
        "",
        "Max sustained = highest rate (steps of"
        f" {args.sweep_step:g}/s) with ack p99 ≤ 250 ms, < 1 % errors, nothing lost.",
        "",
        "| system | " + " | ".join(f"{r}/s p50 / p95 / p99" for r in RATES) + " | max sustained |",
        "|---|" + "---|" * (len(RATES) + 1),
    ]
    medians: dict[str, dict[str, float | None]] = {}
    for system in systems:
        cells = []
        medians[system] = {}
        for rate in RATES:
            values = {}
            for name in ("p50", "p95", "p99"):
                values[name] = _median([_p(m.fixed.get(rate), name) for m in by[system]])
                medians[system][f"{rate}-{name}"] = values[name]
            cells.append(" / ".join(_fmt(values[n]) for n in ("p50", "p95", "p99")))
        best = _median([m.max_sustained for m in by[system]])
        medians[system]["max"] = best
        lines.append(f"| {system} | " + " | ".join(cells) + f" | {_fmt(best)}/s |")
    lines += [
        "",
        "## Ratios (SPEC 9's bars; median values, < 1 is better for latency)",
        "",
        "Ours / seed: max sustained ≥ 1.2x, ack p95 at 200/s and 500/s ≤ 1.0x. Tracing on /"
        " off: max sustained ≥ 0.75x, ack p95 at 200/s ≤ 1.5x.",
        "",
        "| system | vs | p95 @ 200/s | p95 @ 500/s | p99 @ 1000/s | max sustained |",
        "|---|---|---|---|---|---|",
    ]
    keys = ("200-p95", "500-p95", "1000-p99", "max")

    def ratios(system: str, base: str) -> str:
        cells = []
        for key in keys:
            ours, theirs = medians[system][key], medians[base][key]
            cells.append("-" if not ours or not theirs else f"{ours / theirs:.2f}x")
        return f"| {system} | {base} | " + " | ".join(cells) + " |"

    for system in systems:
        if system in ("seed", "floor"):
            continue
        if "seed" in medians:
            lines.append(ratios(system, "seed"))
        untraced = system.removesuffix("-traced")
        if system != untraced and untraced in medians:
            lines.append(ratios(system, untraced))
    lines += ["", "## Every run", ""]
    lines += [
        "| system | round | rate/s | sent | OK | errors | lost | dup | ack p50/p95/p99/max ms"
        " | display p99 ms | generator send lag p99 ms | sustained |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for m in measurements:
        for report in [*m.fixed.values(), *m.sweep]:
            ack = report.ack_ms
            acks = (
                "-" if ack is None else f"{ack.p50:.1f}/{ack.p95:.1f}/{ack.p99:.1f}/{ack.max:.0f}"
            )
            display = "-" if report.display_ms is None else f"{report.display_ms.p99:.1f}"
            lag = "-" if report.send_lag_ms is None else f"{report.send_lag_ms.p99:.1f}"
            dup = "-" if report.duplicates is None else str(report.duplicates)
            lines.append(
                f"| {m.system} | {m.round} | {report.rate:g} | {report.sent}"
                f" | {report.acked.get('OK', 0)} | {report.errors} | {report.lost} | {dup}"
                f" | {acks} | {display} | {lag} | {'yes' if report.sustained else 'no'} |"
            )
    lines += [
        "",
        "Max sustained per round: "
        + "; ".join(f"{m.system} r{m.round} {_fmt(m.max_sustained)}/s" for m in measurements)
        + ".",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--systems", nargs="+", choices=SYSTEMS, default=["floor", "serve", "split", "seed"]
    )
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--duration", type=float, default=8.0)
    parser.add_argument("--warmup", type=float, default=1.5)
    parser.add_argument("--controllers", type=int, default=200)
    parser.add_argument("--screens", type=int, default=200)
    parser.add_argument("--procs", type=int, default=2)
    parser.add_argument("--sweep-step", type=float, default=250.0)
    parser.add_argument("--sweep-max", type=float, default=6000.0)
    parser.add_argument("--redis-url", default=None, help="default: an embedded Valkey")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "RESULTS.md")
    args = parser.parse_args()
    began = time.monotonic()
    measurements: list[Measurement] = []
    with (
        redis_server(args.redis_url) as redis_url,
        order_api() as order_url,
        seed_install() as seed_dir,
    ):
        facts = machine(redis_url)
        for round_ in range(1, args.rounds + 1):
            order = args.systems if round_ % 2 else list(reversed(args.systems))
            for system in order:
                print(f"round {round_}: {system}", file=sys.stderr, flush=True)
                with start_system(system, redis_url, order_url, seed_dir) as target:
                    measurements.append(measure(system, round_, target, redis_url, args))
                time.sleep(2)
    text = render(measurements, facts, args, time.monotonic() - began)
    notes = ""
    if args.out.exists():
        old = args.out.read_text()
        if NOTES_MARKER in old:
            notes = old[old.index(NOTES_MARKER) :]
    args.out.write_text(text + "\n" + (notes or NOTES_MARKER + "\n"))
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
