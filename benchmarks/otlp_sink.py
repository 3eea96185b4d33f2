"""A minimal OTLP/HTTP sink for benchmarks: takes trace and metric exports and answers them.

It shares the measured machine, so it does as little as a receiver can: it reads each body
and answers, and decodes only every 50th trace export to estimate the spans it received.
"""

from __future__ import annotations

import argparse
import sys

from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    spans = 0
    exports = 0
    empty = ExportTraceServiceResponse().SerializeToString()

    async def traces(request: web.Request) -> web.Response:
        nonlocal spans, exports
        body = await request.read()
        exports += 1
        if exports % 50 == 1:
            message = ExportTraceServiceRequest()
            message.ParseFromString(body)
            sampled = sum(len(s.spans) for r in message.resource_spans for s in r.scope_spans)
            spans += sampled * 50
        return web.Response(body=empty, content_type="application/x-protobuf")

    async def report(_app: web.Application) -> None:
        print(
            f"otlp sink received {exports} exports, about {spans} spans",
            file=sys.stderr,
            flush=True,
        )

    async def metrics(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(body=b"", content_type="application/x-protobuf")

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_post("/v1/traces", traces)
    app.router.add_post("/v1/metrics", metrics)
    app.on_shutdown.append(report)
    web.run_app(app, host="127.0.0.1", port=args.port, print=None)


if __name__ == "__main__":
    main()
