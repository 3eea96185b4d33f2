"""`rdisplay bench`: open-loop load against any edge URL (SPEC section 8).

N controllers and M screens (acking every display) spread over K processes send triggers at a
fixed schedule; the report gives sent, final answers by code, PENDING, lost, duplicated effects,
ack and trigger→display latency percentiles. `--sweep` raises the rate until p99 passes a bound.
It needs no REDIS_URL: only `--redis-url` (with `--prefix`) for the duplicate check.
"""

from __future__ import annotations

import argparse
import sys
import uuid
from pathlib import Path

import msgspec

from schemas.errors import ConfigError
from services.bench.effects import projected_duplicates
from services.bench.generator import LoadGenerator, RunReport, progress_stream, summary_line, sweep
from services.bench.plan import PROTOCOLS, BenchConfig
from services.cli.common import TermFlag
from services.config.settings import Settings

_json = msgspec.json.Encoder()

_DESCRIPTION = """\
Open-loop load: send times are fixed in advance and latency is measured from the scheduled
time, so a stall is not hidden. Controller j targets screen j mod M. A first answer that is not
final (PENDING, or no ack within --ack-timeout) is followed through `trigger:result` and, after
--drain seconds, `trigger:status`; "lost" counts triggers that never got a final answer.

--tokens FILE is JSON {"controllers": [token, ...], "screens": [token, ...]}; without it,
--secret mints tokens (role-less {userId, screenId} ones for --protocol seed).
"""


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "bench",
        help="load generator: N controllers, M screens, a rate → ack/display latency, lost, "
        "duplicated",
        description=_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--url",
        required=True,
        help="the edge, e.g. http://127.0.0.1:3001; several edges of one system comma-separated "
        "(clients spread over them)",
    )
    auth = parser.add_mutually_exclusive_group(required=True)
    auth.add_argument("--secret", help="JWT_SECRET of the system: the bench mints its tokens")
    auth.add_argument("--tokens", type=Path, metavar="FILE", help="pre-issued tokens (JSON)")
    parser.add_argument("--controllers", type=_count, default=200, metavar="N")
    parser.add_argument("--screens", type=_count, default=200, metavar="M")
    parser.add_argument("--rate", type=_number, default=500.0, help="triggers/s (default 500)")
    parser.add_argument("--duration", type=_number, default=10.0, help="counted seconds")
    parser.add_argument("--warmup", type=_number_or_zero, default=2.0, help="uncounted seconds")
    parser.add_argument("--procs", type=_count, default=1, metavar="K", help="load processes")
    parser.add_argument("--ack-timeout", type=_number, default=10.0, metavar="S")
    parser.add_argument("--drain", type=_number_or_zero, default=5.0, metavar="S")
    parser.add_argument("--sweep", action="store_true", help="find the max sustained rate")
    parser.add_argument("--sweep-start", type=_number, default=250.0)
    parser.add_argument("--sweep-step", type=_number, default=250.0)
    parser.add_argument("--sweep-max", type=_number, default=10_000.0)
    parser.add_argument("--p99-bound-ms", type=_number, default=250.0)
    parser.add_argument("--json", action="store_true", help="one JSON document on stdout")
    parser.add_argument("--redis-url", help="the system's Redis: count duplicated effects")
    parser.add_argument("--prefix", help="the system's STREAM_PREFIX (with --redis-url)")
    parser.add_argument("--protocol", choices=PROTOCOLS, default="rdisplay")
    parser.set_defaults(func=cmd_bench)


def _count(raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        msg = f"`{raw}` is not a whole number"
        raise argparse.ArgumentTypeError(msg) from None
    if value < 0 or value > 100_000:
        msg = f"`{raw}` is out of range: use 0 to 100000"
        raise argparse.ArgumentTypeError(msg)
    return value


def _number_or_zero(raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        msg = f"`{raw}` is not a number"
        raise argparse.ArgumentTypeError(msg) from None
    if not 0 <= value <= 1e6:
        msg = f"`{raw}` is out of range: use 0 to 1000000"
        raise argparse.ArgumentTypeError(msg)
    return value


def _number(raw: str) -> float:
    value = _number_or_zero(raw)
    if value == 0:
        msg = "must be more than 0"
        raise argparse.ArgumentTypeError(msg)
    return value


class _TokenFile(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    controllers: list[str]
    screens: list[str] = []


def _config(args: argparse.Namespace) -> BenchConfig:
    if args.procs < 1:
        msg = "--procs must be at least 1"
        raise ConfigError(msg)
    if args.controllers < args.procs:
        msg = f"--controllers {args.controllers} is less than --procs {args.procs}"
        raise ConfigError(msg)
    if (args.redis_url is None) != (args.prefix is None):
        msg = "--redis-url and --prefix go together (the duplicate check needs both)"
        raise ConfigError(msg)
    screens = args.screens if args.protocol == "rdisplay" else 0
    if args.protocol == "rdisplay" and screens < 1:
        msg = "--screens must be at least 1 for --protocol rdisplay (controller j targets j mod M)"
        raise ConfigError(msg)
    controllers: tuple[str, ...] = ()
    screen_tokens: tuple[str, ...] = ()
    if args.tokens is not None:
        try:
            tokens = msgspec.json.decode(args.tokens.read_bytes(), type=_TokenFile)
        except (OSError, msgspec.DecodeError, msgspec.ValidationError) as exc:
            msg = f"--tokens `{args.tokens}`: {exc} (expected {{controllers: [..], screens: [..]}})"
            raise ConfigError(msg) from None
        if len(tokens.controllers) < args.controllers or len(tokens.screens) < screens:
            msg = (
                f"--tokens `{args.tokens}` has {len(tokens.controllers)} controller and "
                f"{len(tokens.screens)} screen tokens; {args.controllers} and {screens} are needed"
            )
            raise ConfigError(msg)
        controllers, screen_tokens = tuple(tokens.controllers), tuple(tokens.screens)
    return BenchConfig(
        url=args.url,
        protocol=args.protocol,
        controllers=args.controllers,
        screens=screens,
        procs=args.procs,
        secret=args.secret,
        controller_tokens=controllers,
        screen_tokens=screen_tokens,
        ack_timeout_s=args.ack_timeout,
        drain_s=args.drain,
        tag=uuid.uuid4().hex[:8],
    )


def cmd_bench(_settings: Settings, args: argparse.Namespace, _term: TermFlag) -> int:
    config = _config(args)
    duplicates = None
    if args.redis_url is not None:
        duplicates = projected_duplicates(args.redis_url, args.prefix)
    runs: list[RunReport] = []

    def show(report: RunReport) -> None:
        if not args.json:
            print(summary_line(report), flush=True)

    best: float | None = None
    with LoadGenerator(
        config,
        p99_bound_ms=args.p99_bound_ms,
        duplicates=duplicates,
        progress=progress_stream(True),
    ) as generator:
        if args.sweep:
            runs, best = sweep(
                generator,
                start=args.sweep_start,
                step=args.sweep_step,
                maximum=args.sweep_max,
                duration=args.duration,
                warmup=args.warmup,
                on_run=show,
            )
        else:
            runs = [generator.run(args.rate, args.duration, args.warmup)]
            show(runs[0])
    if args.json:
        document = {
            "url": config.url,
            "protocol": config.protocol,
            "controllers": config.controllers,
            "screens": config.screens,
            "procs": config.procs,
            "p99BoundMs": args.p99_bound_ms,
            "runs": runs,
            "maxSustainedRate": best,
        }
        sys.stdout.buffer.write(_json.encode(document) + b"\n")
        sys.stdout.flush()
    elif args.sweep:
        print(f"max sustained rate: {'none' if best is None else f'{best:g}/s'}", flush=True)
    return 0
