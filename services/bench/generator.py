"""The load generator's parent: starts K agent processes, hands each run's schedule out, merges
what comes back into a `RunReport`, and sweeps rates.

Open loop: send times are fixed before the run starts and every latency is measured from the
scheduled time, so a stall of the system (or of the generator) shows up instead of being hidden
by a sender that waits. `sendLagMs` says how late the generator itself sent: when its p99 is
large the generator, not the system, is the bottleneck.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from types import TracebackType
from typing import Any, TextIO

import msgspec

from services.bench.agent import agent_main
from services.bench.plan import AgentReport, BenchConfig, BenchError, Displays, RunSpec

_START_SLACK_S = 0.3
_DISPLAY_SETTLE_S = 1.0


class Percentiles(msgspec.Struct, frozen=True):
    p50: float
    p95: float
    p99: float
    max: float


class RunReport(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """One rate's outcome. `acked` counts final answers by code (`OK` or an error code);
    `pending` the triggers first answered `PENDING`; `lost` those never finally answered;
    `duplicates` extra `trigger.projected` events (null when not checked); `displays` triggers
    whose `display` reached a screen (null for the seed protocol, which has no screens)."""

    rate: float
    duration_s: float
    warmup_s: float
    sent: int
    acked: dict[str, int]
    pending: int
    lost: int
    errors: int
    error_rate: float
    duplicates: int | None
    achieved_rate: float
    ack_ms: Percentiles | None
    display_ms: Percentiles | None
    displays: int | None
    send_lag_ms: Percentiles | None
    sustained: bool


def percentiles(values: list[float]) -> Percentiles | None:
    """Nearest-rank percentiles of `values` (ms), or None when there are none."""
    if not values:
        return None
    ordered = sorted(values)

    def rank(q: float) -> float:
        return round(
            ordered[min(max(int(q * len(ordered) + 0.999999) - 1, 0), len(ordered) - 1)], 3
        )

    return Percentiles(rank(0.50), rank(0.95), rank(0.99), round(ordered[-1], 3))


DuplicateCounter = Callable[[set[str], int], int]
"""Given trigger ids and the run's start (epoch ms), how many extra `trigger.projected`."""


class LoadGenerator:
    """K agent processes with their clients connected; `run(rate, ...)` as often as wanted.

    Use as a context manager: entering connects every client (or raises BenchError), leaving
    disconnects them and ends the processes.
    """

    def __init__(
        self,
        config: BenchConfig,
        *,
        p99_bound_ms: float = 250.0,
        duplicates: DuplicateCounter | None = None,
        progress: TextIO | None = None,
    ) -> None:
        self.config = config
        self.p99_bound_ms = p99_bound_ms
        self._duplicates = duplicates
        self._progress_out = progress
        self._context = multiprocessing.get_context("spawn")
        self._progress = self._context.Array("q", 2 * config.procs, lock=False)
        self._agents: list[tuple[BaseProcess, Connection]] = []

    def __enter__(self) -> LoadGenerator:
        try:
            for index in range(self.config.procs):
                parent, child = self._context.Pipe()
                process = self._context.Process(
                    target=agent_main,
                    args=(index, self.config, child, self._progress),
                    name=f"bench-agent-{index}",
                    daemon=True,
                )
                process.start()
                child.close()
                self._agents.append((process, parent))
            deadline = time.monotonic() + self.config.connect_timeout_s + 30
            for _process, conn in self._agents:
                self._expect(conn, "ready", deadline)
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        _type: type[BaseException] | None,
        _value: BaseException | None,
        _tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        for _process, conn in self._agents:
            with contextlib.suppress(OSError):
                conn.send(("stop", None))
        for process, conn in self._agents:
            process.join(15)
            if process.is_alive():
                process.terminate()
                process.join(5)
            conn.close()
        self._agents.clear()

    def _expect(self, conn: Connection, verb: str, deadline: float) -> Any:
        while not conn.poll(0.25):
            if time.monotonic() > deadline:
                msg = f"a bench agent gave no `{verb}` in time"
                raise BenchError(msg)
            if any(not p.is_alive() for p, _c in self._agents):
                msg = "a bench agent process died"
                raise BenchError(msg)
            self._show_progress()
        try:
            got, value = conn.recv()
        except EOFError:
            msg = "a bench agent process died"
            raise BenchError(msg) from None
        if got == "error":
            raise BenchError(str(value))
        if got != verb:
            msg = f"a bench agent answered `{got}`, expected `{verb}`"
            raise BenchError(msg)
        return value

    def run(self, rate: float, duration: float, warmup: float) -> RunReport:
        """One open-loop run at `rate` triggers/s for `warmup` + `duration` seconds."""
        if rate <= 0 or duration <= 0 or warmup < 0:
            msg = f"rate {rate}, duration {duration}, warmup {warmup}: all must be positive"
            raise BenchError(msg)
        spec = RunSpec(
            rate=rate,
            start=time.monotonic() + _START_SLACK_S,
            warmup=round(rate * warmup),
            count=round(rate * duration),
        )
        started_ms = int(time.time() * 1000)
        for i in range(len(self._progress)):
            self._progress[i] = 0
        self._label = f"{rate:g}/s"
        self._total = spec.warmup + spec.count
        self._t0 = spec.start
        for _process, conn in self._agents:
            conn.send(("run", spec))
        deadline = spec.due(self._total) + self.config.ack_timeout_s + self.config.drain_s + 60
        reports: list[AgentReport] = [self._expect(c, "report", deadline) for _p, c in self._agents]
        if self.config.protocol == "rdisplay" and self.config.screens:
            time.sleep(_DISPLAY_SETTLE_S)
        arrivals: dict[str, float] = {}
        for _process, conn in self._agents:
            conn.send(("collect", None))
        for _process, conn in self._agents:
            displays: Displays = self._expect(conn, "displays", time.monotonic() + 30)
            for trigger_id, at in displays.arrivals.items():
                arrivals[trigger_id] = min(at, arrivals.get(trigger_id, at))
        self._clear_progress()
        return self._report(spec, duration, warmup, reports, arrivals, started_ms)

    def _report(
        self,
        spec: RunSpec,
        duration: float,
        warmup: float,
        reports: list[AgentReport],
        arrivals: dict[str, float],
        started_ms: int,
    ) -> RunReport:
        records = [r for report in reports for r in report.records]
        codes = Counter(r.code for r in records if r.answered_at is not None)
        lost = sum(1 for r in records if r.answered_at is None)
        errors = len(records) - codes.get("OK", 0)
        ack = [(r.answered_at - r.scheduled) * 1000 for r in records if r.answered_at is not None]
        lag = [(r.sent_at - r.scheduled) * 1000 for r in records]
        ids = {r.trigger_id for r in records}
        shown = [
            (arrivals[r.trigger_id] - r.scheduled) * 1000
            for r in records
            if r.trigger_id in arrivals
        ]
        last = max((r.answered_at for r in records if r.answered_at is not None), default=None)
        first = spec.due(spec.warmup)
        elapsed = max((last - first) if last is not None else duration, duration)
        duplicates = None
        if self._duplicates is not None and self.config.protocol == "rdisplay":
            duplicates = self._duplicates(ids, started_ms)
        ack_p = percentiles(ack)
        error_rate = errors / len(records) if records else 0.0
        return RunReport(
            rate=spec.rate,
            duration_s=duration,
            warmup_s=warmup,
            sent=len(records),
            acked=dict(sorted(codes.items())),
            pending=sum(1 for r in records if r.first_code == "PENDING"),
            lost=lost,
            errors=errors,
            error_rate=round(error_rate, 5),
            duplicates=duplicates,
            achieved_rate=round(codes.get("OK", 0) / elapsed, 1),
            ack_ms=ack_p,
            display_ms=percentiles(shown) if self.config.protocol == "rdisplay" else None,
            displays=len(shown) if self.config.protocol == "rdisplay" else None,
            send_lag_ms=percentiles(lag),
            sustained=ack_p is not None
            and ack_p.p99 <= self.p99_bound_ms
            and error_rate < 0.01
            and lost == 0
            and not duplicates,
        )

    def _show_progress(self) -> None:
        out = self._progress_out
        if out is None or not hasattr(self, "_label"):
            return
        sent = sum(self._progress[0::2])
        answered = sum(self._progress[1::2])
        elapsed = max(time.monotonic() - self._t0, 0)
        out.write(
            f"\r{self._label:>9}  {elapsed:6.1f} s  sent {sent:>7}/{self._total}"
            f"  answered {answered:>7}\x1b[K"
        )
        out.flush()

    def _clear_progress(self) -> None:
        if self._progress_out is not None:
            self._progress_out.write("\r\x1b[K")
            self._progress_out.flush()


def sweep(
    generator: LoadGenerator,
    *,
    start: float,
    step: float,
    maximum: float,
    duration: float,
    warmup: float,
    pause_s: float = 1.0,
    on_run: Callable[[RunReport], None] = lambda _r: None,
) -> tuple[list[RunReport], float | None]:
    """Raise the rate by `step` from `start` until a run is not sustained (p99 over the
    generator's bound, ≥ 1 % errors, anything lost or duplicated) or `maximum` is passed.
    Returns the runs and the highest sustained rate (None when even `start` was not)."""
    runs: list[RunReport] = []
    best: float | None = None
    for rate in _rates(start, step, maximum):
        report = generator.run(rate, duration, warmup)
        runs.append(report)
        on_run(report)
        if not report.sustained:
            break
        best = rate
        time.sleep(pause_s)
    return runs, best


def _rates(start: float, step: float, maximum: float) -> Iterator[float]:
    if step <= 0:
        msg = f"sweep step {step} must be positive"
        raise BenchError(msg)
    rate = start
    while rate <= maximum:
        yield rate
        rate += step


def summary_line(report: RunReport) -> str:
    """One line for people: rate, counts, ack and display percentiles."""

    def fmt(p: Percentiles | None) -> str:
        return "-" if p is None else f"{p.p50:.1f}/{p.p95:.1f}/{p.p99:.1f}/{p.max:.1f}"

    codes = " ".join(f"{k}={v}" for k, v in report.acked.items())
    shown = report.displays
    return (
        f"{report.rate:>7g}/s  sent {report.sent}  {codes}  pending {report.pending}"
        f"  lost {report.lost}  dup {'-' if report.duplicates is None else report.duplicates}"
        f"  ack p50/95/99/max {fmt(report.ack_ms)} ms"
        f"  display {fmt(report.display_ms)} ms ({'-' if shown is None else shown})"
        f"  lag p99 {report.send_lag_ms.p99 if report.send_lag_ms else 0:.1f} ms"
        f"  {'sustained' if report.sustained else 'NOT sustained'}"
    )


def progress_stream(enabled: bool) -> TextIO | None:
    """stderr when it is a terminal and progress is wanted."""
    return sys.stderr if enabled and sys.stderr.isatty() else None
