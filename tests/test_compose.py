"""compose.yaml, the Dockerfile and .dockerignore, checked as files: CI has no Docker engine.

What `docker compose up` depends on and a typo would break silently: the service wiring (Redis
and Jaeger host names and ports, OTLP protocol), health-gated start order, secrets that must come
from the environment, the image's base, user and entry point, and what reaches the build context.
"""

from __future__ import annotations

import asyncio
import json
import re
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from aiohttp import web

from tests.helpers import free_port

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("services", "streams", "schemas", "observability")
OUR_SERVICES = ("edge", "worker")
# The one service without a healthcheck, and why: a worker has no port to probe and nothing
# waits on it; when it fails it exits, `restart` starts it again and the other workers reclaim
# its pending entries meanwhile.
NO_HEALTHCHECK = {"worker"}
SECRET_NAME = re.compile(r"SECRET|TOKEN|PASSWORD|PASSWD|CREDENTIAL|API_KEY|PRIVATE")
REQUIRED_FROM_ENV = re.compile(r"\$\{(?P<name>[A-Z_][A-Z0-9_]*):\?[^}]+\}")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded = yaml.safe_load((ROOT / "compose.yaml").read_text())
    assert isinstance(loaded, dict)
    return loaded


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = compose["services"]
    return found


def environment(service: dict[str, Any]) -> dict[str, str]:
    """A service's environment, from the mapping or the list form, values as text."""
    raw = service.get("environment", {})
    if isinstance(raw, list):
        pairs = (item.split("=", 1) for item in raw)
        return {name: value for name, value in pairs}
    return {name: "" if value is None else str(value) for name, value in raw.items()}


def published(service: dict[str, Any]) -> dict[int, int]:
    """Container port → host port, from the short (`[IP:]HOST:CONTAINER`) or long form."""
    ports: dict[int, int] = {}
    for entry in service.get("ports", []):
        if isinstance(entry, dict):
            ports[int(entry["target"])] = int(entry["published"])
            continue
        spec = str(entry).split("/", 1)[0]
        *_, host, container = spec.rsplit(":", 2)
        ports[int(container)] = int(host)
    return ports


def command_line(service: dict[str, Any]) -> list[str]:
    test = service["healthcheck"]["test"]
    return [test] if isinstance(test, str) else [str(part) for part in test]


# compose.yaml


def test_the_six_services(services: dict[str, dict[str, Any]]) -> None:
    assert set(services) == {"redis", "jaeger", "prometheus", "grafana", "edge", "worker"}


def test_prometheus_runs_the_shipped_rules_against_the_edge(
    services: dict[str, dict[str, Any]],
) -> None:
    prometheus = services["prometheus"]
    assert "./deploy/prometheus:/etc/prometheus:ro" in prometheus["volumes"]
    [config_flag] = [c for c in prometheus["command"] if c.startswith("--config.file=")]
    config_path = ROOT / "deploy" / "prometheus" / Path(config_flag.split("=", 1)[1]).name
    config = yaml.safe_load(config_path.read_text())
    assert config["rule_files"] == ["rules.yml"]
    [job] = config["scrape_configs"]
    edge_port = environment(services["edge"])["SOCKET_IO_PORT"]
    assert job["static_configs"] == [{"targets": [f"edge:{edge_port}"]}]
    assert published(prometheus) == {9090: 9090}
    assert all(str(p).startswith("127.0.0.1:") for p in prometheus["ports"])  # no auth


def test_grafana_is_provisioned_with_the_dashboard(services: dict[str, dict[str, Any]]) -> None:
    grafana = services["grafana"]
    mounts = {m.split(":")[1]: m.split(":")[0] for m in grafana["volumes"]}
    provisioning = ROOT / mounts["/etc/grafana/provisioning"]
    [source] = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())[
        "datasources"
    ]
    assert source["url"] == "http://prometheus:9090"
    [provider] = yaml.safe_load((provisioning / "dashboards" / "rdisplay.yml").read_text())[
        "providers"
    ]
    dashboards = ROOT / mounts[provider["options"]["path"]]
    dashboard = json.loads((dashboards / "rdisplay.json").read_text())
    uids = {
        target["datasource"]["uid"] for panel in dashboard["panels"] for target in panel["targets"]
    }
    assert uids == {source["uid"]}
    home = environment(grafana)["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home == f"{provider['options']['path']}/rdisplay.json"
    assert all(str(p).startswith("127.0.0.1:") for p in grafana["ports"])


def test_redis_persists_with_aof_every_second(services: dict[str, dict[str, Any]]) -> None:
    redis = services["redis"]
    assert re.fullmatch(r"redis:7(\.\d+)*-alpine", redis["image"])
    command = " ".join(redis["command"])
    assert "--appendonly yes" in command
    assert "--appendfsync everysec" in command
    volumes = [str(v) for v in redis["volumes"]]
    assert any(v.endswith(":/data") and not v.startswith((".", "/")) for v in volumes), (
        "Redis needs a named volume on /data, or its AOF dies with the container"
    )


def test_jaeger_receives_otlp_and_serves_its_ui(services: dict[str, dict[str, Any]]) -> None:
    jaeger = services["jaeger"]
    image, _, tag = jaeger["image"].partition(":")
    assert image == "jaegertracing/all-in-one"
    assert re.fullmatch(r"1\.\d+\.\d+", tag), f"pin a 1.x release, not {tag!r}"
    assert environment(jaeger)["COLLECTOR_OTLP_ENABLED"] == "true"
    assert published(jaeger) == {16686: 16686, 4317: 4317, 4318: 4318}


@pytest.mark.parametrize("name", OUR_SERVICES)
def test_edge_and_worker_run_our_image(name: str, services: dict[str, dict[str, Any]]) -> None:
    service = services[name]
    build = service["build"]
    context = build if isinstance(build, str) else build.get("context", ".")
    dockerfile = "Dockerfile" if isinstance(build, str) else build.get("dockerfile", "Dockerfile")
    assert context in (".", "./")
    assert (ROOT / dockerfile).is_file()
    assert service["command"] == [name]


def test_env_wiring_points_at_the_other_services(services: dict[str, dict[str, Any]]) -> None:
    names = []
    for name in OUR_SERVICES:
        env = environment(services[name])
        redis = urlsplit(env["REDIS_URL"])
        assert (redis.scheme, redis.hostname, redis.port or 6379) == ("redis", "redis", 6379)
        assert redis.hostname in services

        otlp = urlsplit(env["OTEL_EXPORTER_OTLP_ENDPOINT"])
        assert (otlp.scheme, otlp.hostname, otlp.port) == ("http", "jaeger", 4318)
        assert otlp.path in ("", "/"), "the SDK appends /v1/traces to the generic endpoint"
        assert otlp.hostname in services
        assert env["OTEL_EXPORTER_OTLP_PROTOCOL"] == "http/protobuf"
        assert env["LOG_FORMAT"] == "json"
        names.append(env["OTEL_SERVICE_NAME"])
    assert names == ["rdisplay-edge", "rdisplay-worker"]


def test_edge_listens_publishes_and_probes_one_port(services: dict[str, dict[str, Any]]) -> None:
    edge = services["edge"]
    env = environment(edge)
    port = int(env["SOCKET_IO_PORT"])
    assert env["SOCKET_IO_HOST"] == "0.0.0.0"  # reachable from outside its container
    assert port in published(edge)
    assert f"http://127.0.0.1:{port}/health" in " ".join(command_line(edge))


def test_edge_needs_real_secrets(services: dict[str, dict[str, Any]]) -> None:
    env = environment(services["edge"])
    # production refuses missing, short or equal keys, instead of generating development keys
    # into a DATA_DIR that no volume keeps.
    assert env["APP_ENV"] == "production"
    for name in ("JWT_SECRET", "JWT_REFRESH_SECRET"):
        match = REQUIRED_FROM_ENV.fullmatch(env[name])
        assert match, f"{name} must be `${{{name}:?message}}`, not {env[name]!r}"
        assert match["name"] == name


def test_worker_scales(services: dict[str, dict[str, Any]]) -> None:
    worker = services["worker"]
    assert "container_name" not in worker
    assert "ports" not in worker
    assert worker["stop_grace_period"] == "15s"  # SPEC: exits within 10 s of SIGTERM


def test_every_service_but_the_worker_has_a_healthcheck(
    services: dict[str, dict[str, Any]],
) -> None:
    for name, service in services.items():
        if name in NO_HEALTHCHECK:
            assert "healthcheck" not in service
            continue
        check = service["healthcheck"]
        assert not check.get("disable", False)
        assert command_line(service)[0] in ("CMD", "CMD-SHELL")
    assert "redis-cli ping" in " ".join(command_line(services["redis"]))
    # The Jaeger image is Alpine-based: BusyBox wget, no curl; 14269 is its admin port.
    assert command_line(services["jaeger"])[1:3] == ["wget", "-q"]
    assert "http://127.0.0.1:14269/" in command_line(services["jaeger"])
    # Our image has python and no curl.
    assert command_line(services["edge"])[1:3] == ["python", "-c"]


def test_start_order_waits_for_health(services: dict[str, dict[str, Any]]) -> None:
    expected = {
        "edge": {"redis", "jaeger"},
        "worker": {"redis", "jaeger"},
        "grafana": {"prometheus"},
    }
    for name, service in services.items():
        depends = service.get("depends_on", {})
        assert isinstance(depends, dict), f"{name}: depends_on needs the long form (conditions)"
        assert set(depends) == expected.get(name, set())
        for dependency, rule in depends.items():
            if "healthcheck" in services[dependency]:
                assert rule["condition"] == "service_healthy", f"{name} → {dependency}"


def test_interpolation_is_only_required_variables() -> None:
    """No `${VAR:-default}` secret, no stray `$` that compose would interpolate by surprise."""
    text = (ROOT / "compose.yaml").read_text()
    for match in re.finditer(r"\$(\$|\{[^}]*\}|\w*)", text):
        assert REQUIRED_FROM_ENV.fullmatch(match[0]), f"unexpected interpolation {match[0]!r}"


def test_no_literal_secret(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        for variable, value in environment(service).items():
            if SECRET_NAME.search(variable):
                assert REQUIRED_FROM_ENV.fullmatch(value), f"{name}: {variable} is a literal"


# SPEC section 3's variables as of this checkout. The contract lives beside the project
# (../shared/SPEC.md), which a CI checkout elsewhere may not have: there the test checks against
# this copy instead of skipping, and wherever the contract is found the copy must equal it.
SPEC_SECTION_3 = frozenset(
    {
        "ACK_TIMEOUT_MS",
        "ALLOWED_ORIGINS",
        "APP_ENV",
        "DATA_DIR",
        "DOCUMENTS_DIR",
        "DOCUMENT_ORIGINS",
        "DOCUMENT_URL_TEMPLATE",
        "JWT_REFRESH_SECRET",
        "JWT_SECRET",
        "LOG_FORMAT",
        "LOG_LEVEL",
        "MAX_DELIVERIES",
        "ORDERS_FILE",
        "ORDER_API_TIMEOUT_MS",
        "ORDER_API_TOKEN",
        "ORDER_API_URL",
        "RATE_LIMIT_MAX_REQUESTS",
        "RATE_LIMIT_WINDOW",
        "REDIS_URL",
        "REDIS_WAIT_REPLICAS",
        "RETRY_BASE_MS",
        "RETRY_MAX_MS",
        "SOCKET_IO_HOST",
        "SOCKET_IO_PORT",
        "STREAM_MAXLEN",
        "STREAM_PARTITIONS",
        "STREAM_PREFIX",
    }
)


def _contract() -> Path | None:
    """SPEC.md in a `shared/` beside the checkout or beside one of its parents."""
    for folder in (ROOT, *ROOT.parents):
        candidate = folder.parent / "shared" / "SPEC.md"
        if candidate.is_file():
            return candidate
    return None


def _spec_variables() -> set[str]:
    spec = _contract()
    if spec is None:
        return set(SPEC_SECTION_3)
    section = spec.read_text().split("\n## 3.", 1)[1].split("\n## ", 1)[0]
    names = set()
    for line in section.splitlines():
        if line.startswith("| `"):
            first_column = line.split("|")[1]
            names.update(re.findall(r"`([A-Z][A-Z0-9_]*)`", first_column))
    assert names == SPEC_SECTION_3, (
        f"{spec} section 3 changed: update SPEC_SECTION_3 here "
        f"(added {sorted(names - SPEC_SECTION_3)}, gone {sorted(SPEC_SECTION_3 - names)})"
    )
    return names


def test_our_variables_are_the_specs(services: dict[str, dict[str, Any]]) -> None:
    documented = _spec_variables()
    assert {"REDIS_URL", "JWT_SECRET", "SOCKET_IO_PORT"} <= documented  # the table was parsed
    for name in OUR_SERVICES:
        unknown = {
            variable
            for variable in environment(services[name])
            if variable not in documented and not variable.startswith("OTEL_")
        }
        assert not unknown, f"{name} sets variables SPEC section 3 does not name: {unknown}"


@pytest.mark.parametrize(("status", "exit_code"), [(200, 0), (503, 1)])
async def test_edge_healthcheck_command_follows_health_status(
    services: dict[str, dict[str, Any]], status: int, exit_code: int
) -> None:
    """The healthcheck's python runs for real, against a /health on another port."""
    test = command_line(services["edge"])
    assert test[:3] == ["CMD", "python", "-c"]
    port = free_port()
    code = test[3].replace(":3001/", f":{port}/")
    assert code != test[3]

    async def health(_: web.Request) -> web.Response:
        return web.json_response(
            {"status": "ok" if status == 200 else "unavailable"}, status=status
        )

    app = web.Application()
    app.router.add_get("/health", health)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", port).start()
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            code,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        assert await asyncio.wait_for(process.wait(), 10) == exit_code
    finally:
        await runner.cleanup()


# Dockerfile


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    lines: list[str] = []
    pending = ""
    for raw in (ROOT / "Dockerfile").read_text().splitlines():
        stripped = raw.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        lines.append(pending + stripped)
        pending = ""
    pairs = []
    for line in lines:
        instruction, _, arguments = line.partition(" ")
        pairs.append((instruction.upper(), arguments.strip()))
    return pairs


def test_dockerfile_builds_a_non_root_rdisplay_image() -> None:
    instructions = dockerfile_instructions()
    bases = [args.split()[0] for op, args in instructions if op == "FROM"]
    assert bases
    for base in bases:
        assert re.fullmatch(r"python:3\.11(\.\d+)?(-[a-z0-9.-]+)?(@sha256:[0-9a-f]{64})?", base)

    copied: set[str] = set()
    for op, args in instructions:
        if op == "COPY":
            words = [w for w in args.split() if not w.startswith("--")]
            copied.update(w.rstrip("/").removeprefix("./") for w in words[:-1])
    assert {"pyproject.toml", "README.md", *PACKAGES} <= copied

    runs = [args for op, args in instructions if op == "RUN"]
    assert any(re.search(r"\bpip install\b.*\s\.(\s|$)", run) for run in runs)

    users = [args for op, args in instructions if op == "USER"]
    assert users
    assert users[-1].split(":")[0] not in ("root", "0")
    assert ("ENTRYPOINT", '["rdisplay"]') in instructions
    assert not any(op == "HEALTHCHECK" for op, _ in instructions), (
        "the image also runs the worker, which has no /health: compose probes the edge"
    )


# .dockerignore


def _pattern(glob: str) -> re.Pattern[str]:
    """A .dockerignore pattern (Go filepath.Match plus `**`) as a regular expression."""
    out, i = [], 0
    while i < len(glob):
        if glob.startswith("**/", i):
            out.append("(.*/)?")
            i += 3
        elif glob.startswith("**", i):
            out.append(".*")
            i += 2
        elif glob[i] == "*":
            out.append("[^/]*")
            i += 1
        elif glob[i] == "?":
            out.append("[^/]")
            i += 1
        elif glob[i] == "[" and "]" in glob[i:]:
            end = glob.index("]", i)
            out.append(glob[i : end + 1])
            i = end + 1
        else:
            out.append(re.escape(glob[i]))
            i += 1
    return re.compile("".join(out))


def _ignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parents decides."""
    parts = path.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    ignored = False
    for pattern in patterns:
        negated = pattern.startswith("!")
        regex = _pattern(pattern.removeprefix("!").strip("/"))
        if any(regex.fullmatch(candidate) for candidate in candidates):
            ignored = not negated
    return ignored


@pytest.mark.parametrize(
    ("path", "ignored"),
    [
        pytest.param("pyproject.toml", False, id="pyproject"),
        pytest.param("README.md", False, id="readme"),
        *(pytest.param(f"{p}/__init__.py", False, id=p) for p in PACKAGES),
        pytest.param("streams/reclaim.lua", False, id="lua-script"),
        pytest.param(".env", True, id="dotenv"),
        pytest.param("var/secrets.json", True, id="dev-secrets"),
        pytest.param(".venv/bin/python", True, id="venv"),
        pytest.param(".git/config", True, id="git"),
        pytest.param("tests/conftest.py", True, id="tests"),
        pytest.param("services/__pycache__/cli.cpython-311.pyc", True, id="pycache"),
    ],
)
def test_build_context_holds_what_the_image_needs_and_no_secret(path: str, ignored: bool) -> None:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    patterns = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    assert _ignored(path, patterns) is ignored
