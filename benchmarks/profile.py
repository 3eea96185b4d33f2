"""Where one system's time goes at a fixed rate: py-spy per process, Redis commands per trigger.

Starts a system as `benchmarks/compare.py` does (`serve`, `split`, ...), runs `rdisplay bench`'s
generator at `--rate` for `--duration` seconds while `py-spy record` samples every Python
process of the system (subprocesses included), then prints, per process, the share of samples
in each of the top functions (self time) and in each package, and the Redis/Valkey command
counts per trigger (`INFO commandstats` before and after).

    python -m benchmarks.profile --system split --rate 400 --duration 15

Needs py-spy (`pip install py-spy`); writes the raw profiles to `--out` (default
benchmarks/out/profile-<system>-<rate>/).
"""

from __future__ import annotations

import argparse
import collections
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import redis

from benchmarks.compare import load_generator, seed_install, start_system
from benchmarks.pipeline import ROOT, free_port, order_api, redis_server


def _children(pid: int) -> list[int]:
    out = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                stat = Path(f"/proc/{name}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(stat[1]) == pid:
                out.append(int(name))
    return out


def _python_processes(root_pids: list[int]) -> dict[int, str]:
    """The Python processes under `root_pids`, named by their command line."""
    found: dict[int, str] = {}
    todo = list(root_pids)
    while todo:
        pid = todo.pop()
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        text = " ".join(part.decode(errors="replace") for part in cmdline if part)
        if "python" in text or "rdisplay" in text:
            found[pid] = text[-80:]
        todo += _children(pid)
    return found


def _commandstats(client: Any) -> dict[str, int]:
    info = client.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in info.items()}


def _summarize(raw: Path, top: int) -> list[str]:
    """py-spy's raw (collapsed) format: `frame;frame;... count` per line."""
    self_time: collections.Counter[str] = collections.Counter()
    packages: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        total += count
        frames = stack.split(";")
        leaf = frames[-1]
        self_time[leaf] += count
        # the innermost frame's file decides the package
        where = leaf.rsplit("(", 1)[-1]
        if "site-packages/" in where:
            package = where.split("site-packages/", 1)[1].split("/", 1)[0]
        elif "/python3." in where:
            package = "stdlib"
        else:
            package = where.split("/", 1)[0].strip(")") or "?"
        packages[package] += count
    lines = [f"  {total} samples"]
    lines += [f"  {100 * n / total:5.1f} %  {name}" for name, n in packages.most_common(12)]
    lines.append("  top functions (self):")
    lines += [f"  {100 * n / total:5.1f} %  {name[:110]}" for name, n in self_time.most_common(top)]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--system", default="split")
    parser.add_argument("--rate", type=float, default=400)
    parser.add_argument("--duration", type=float, default=15)
    parser.add_argument("--controllers", type=int, default=100)
    parser.add_argument("--screens", type=int, default=100)
    parser.add_argument("--procs", type=int, default=1)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--redis-url", default=None)
    parser.add_argument(
        "--tracing", action="store_true", help="every trigger traced, OTLP/HTTP to a local sink"
    )
    args = parser.parse_args()
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    out = args.out or ROOT / "benchmarks" / "out" / f"profile-{args.system}-{int(args.rate)}"
    out.mkdir(parents=True, exist_ok=True)
    sink = None
    if args.tracing:
        sink_port = free_port()
        sink = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.otlp_sink", "--port", str(sink_port)], cwd=ROOT
        )
        os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"] = f"http://127.0.0.1:{sink_port}"
    try:
        _profile(args, py_spy, out)
    finally:
        if sink is not None:
            sink.terminate()
            sink.wait(10)


def _profile(args: argparse.Namespace, py_spy: str, out: Path) -> None:
    with (
        redis_server(args.redis_url) as redis_url,
        order_api() as order_url,
        seed_install() as seed_dir,
        start_system(args.system, redis_url, order_url, seed_dir) as target,
        load_generator(target, redis_url, args) as generator,
    ):
        generator.run(args.rate, 3, 1)  # warm up: connections, caches, JIT-free but page-hot
        client = redis.Redis.from_url(redis_url)
        pids = _python_processes(_children(os.getpid()))
        generator_pids = set(_python_processes([os.getpid()])) - set(pids)
        system_pids = {p: name for p, name in pids.items() if p not in generator_pids}
        before = _commandstats(client)
        recorders = {
            pid: subprocess.Popen(
                [
                    py_spy,
                    "record",
                    "--pid",
                    str(pid),
                    "--duration",
                    str(int(args.duration)),
                    "--rate",
                    "200",
                    "--format",
                    "raw",
                    "--nonblocking",
                    "--output",
                    str(out / f"{pid}.txt"),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            for pid in system_pids
        }
        report = generator.run(args.rate, args.duration, 0.5)
        for recorder in recorders.values():
            recorder.wait(60)
        after = _commandstats(client)
        client.close()
    triggers = max(report.sent, 1)
    print(f"{args.system} at {args.rate}/s: {report.sent} triggers")
    calls = {k: after.get(k, 0) - before.get(k, 0) for k in after}
    print("Redis commands per trigger:")
    for name, n in sorted(calls.items(), key=lambda kv: -kv[1]):
        if n:
            print(f"  {n / triggers:6.2f}  {name}")
    for pid, name in system_pids.items():
        raw = out / f"{pid}.txt"
        print(f"\nprocess {pid} {name}")
        if raw.exists() and raw.stat().st_size:
            print("\n".join(_summarize(raw, args.top)))
    time.sleep(0.1)


if __name__ == "__main__":
    main()
