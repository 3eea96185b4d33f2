"""deploy/prometheus: the shipped config and rules pass promtool (syntax and the rules' own unit
tests), and Debian's prometheus, run with that config pointed at a real `rdisplay serve`,
scrapes the triggers it was sent and the presence of its processes and screens."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import yaml

from streams.keys import Keyspace
from tests.edge_helpers import ACCESS_SECRET, REFRESH_SECRET, connect, mint, trigger_payload
from tests.helpers import free_port, wait_for_port, wait_until

ROOT = Path(__file__).parents[1]
DEPLOY = ROOT / "deploy" / "prometheus"
RDISPLAY = str(Path(sys.executable).parent / "rdisplay")


def _tool(name: str) -> str:
    found = shutil.which(name)
    assert found, f"{name} is missing: `make prometheus` installs Debian's prometheus"
    return found


@pytest.mark.parametrize(
    "args",
    [
        ["check", "config", "prometheus.yml"],
        ["check", "config", "compose.yml"],
        ["check", "rules", "rules.yml"],
        ["test", "rules", "rules.test.yml"],
    ],
    ids=" ".join,
)
def test_promtool_accepts_the_shipped_files(args: list[str]) -> None:
    done = subprocess.run(
        [_tool("promtool"), *args], cwd=DEPLOY, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr


def _dashboard_queries() -> list[str]:
    dashboard = json.loads(
        (ROOT / "deploy" / "grafana" / "dashboards" / "rdisplay.json").read_text()
    )
    return [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]


def _query(port: int, expr: str) -> list[dict[str, object]]:
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(url, timeout=5) as response:  # loopback http
        body = json.load(response)
    result: list[dict[str, object]] = body["data"]["result"]
    return result


def _value(port: int, expr: str) -> float | None:
    try:
        result = _query(port, expr)
    except OSError:
        return None
    if not result:
        return None
    value = result[0]["value"]
    assert isinstance(value, list)
    return float(value[1])


@pytest.mark.slow
async def test_prometheus_scrapes_a_real_serve(
    redis_url: str, keyspace: Keyspace, tmp_path: Path
) -> None:
    edge_port, prom_port = free_port(), free_port()
    env = {
        **os.environ,
        "REDIS_URL": redis_url,
        "STREAM_PREFIX": keyspace.prefix,
        "SOCKET_IO_PORT": str(edge_port),
        "DATA_DIR": str(tmp_path / "var"),
        "JWT_SECRET": ACCESS_SECRET,
        "JWT_REFRESH_SECRET": REFRESH_SECRET,
        "DOCUMENT_URL_TEMPLATE": "/documents/{orderId}.pdf",
        "LOG_LEVEL": "warning",
    }
    serve = await asyncio.create_subprocess_exec(RDISPLAY, "serve", env=env, cwd=tmp_path)
    config = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    config["global"]["scrape_interval"] = "1s"
    config["global"]["evaluation_interval"] = "1s"
    config["scrape_configs"][0]["static_configs"] = [{"targets": [f"127.0.0.1:{edge_port}"]}]
    config["rule_files"] = [str(DEPLOY / "rules.yml")]
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    prometheus = await asyncio.create_subprocess_exec(
        _tool("prometheus"),
        f"--config.file={tmp_path / 'prometheus.yml'}",
        f"--storage.tsdb.path={tmp_path / 'tsdb'}",
        f"--web.listen-address=127.0.0.1:{prom_port}",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        await wait_for_port(edge_port, timeout=30)
        url = f"http://127.0.0.1:{edge_port}"
        screen = await connect(url, mint("kiosk-p", "screen-p", "screen"))
        controller = await connect(url, mint("user-p", "screen-p"))
        try:
            for n in range(5):
                ack = await controller.emit("trigger", trigger_payload(f"P-{n}"))
                assert ack["success"] is True, ack

            async def value(expr: str) -> float | None:
                return await asyncio.to_thread(_value, prom_port, expr)

            async def scraped() -> bool:
                sent = await value('sum(rd_triggers_total{outcome="projected"})')
                unseen = await value('rdisplay:screen_unseen_seconds{screen="screen-p"}')
                # A rate needs two scrapes of the counter, then one evaluation of the rule.
                rate = await value("sum(rdisplay:triggers:rate1m)")
                return sent == 5 and unseen is not None and rate is not None

            await wait_until(scraped, timeout=40, interval=0.5)
            assert await value('max(rd_alive{kind="workers"})') == 1
            assert await value('max(rd_alive{kind="edges"})') == 1
            assert await value("max(rd_screens_online)") == 1
            unseen = await value('rdisplay:screen_unseen_seconds{screen="screen-p"}')
            assert unseen is not None
            assert 0 <= unseen < 15  # beaten every 5 s
            # Every query of the Grafana dashboard is valid PromQL (a bad one answers HTTP 400).
            for expr in _dashboard_queries():
                await asyncio.to_thread(_query, prom_port, expr)
            assert "rdisplay:triggers:rate1m" in _dashboard_queries()
        finally:
            for client in (screen, controller):
                await client.sio.disconnect()
    finally:
        for process in (prometheus, serve):
            process.terminate()
        for process in (prometheus, serve):
            try:
                await asyncio.wait_for(process.wait(), 15)
            except TimeoutError:
                process.kill()
                await process.wait()
