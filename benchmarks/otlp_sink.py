"""A minimal OTLP/HTTP sink for benchmarks: decodes trace exports and counts their spans;
accepts metric exports (the services push those too when an OTLP endpoint is set)."""

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
    empty = ExportTraceServiceResponse().SerializeToString()

    async def traces(request: web.Request) -> web.Response:
        nonlocal spans
        message = ExportTraceServiceRequest()
        message.ParseFromString(await request.read())
        for resource in message.resource_spans:
            for scope in resource.scope_spans:
                spans += len(scope.spans)
        return web.Response(body=empty, content_type="application/x-protobuf")

    async def report(_app: web.Application) -> None:
        print(f"otlp sink received {spans} spans", file=sys.stderr, flush=True)

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
