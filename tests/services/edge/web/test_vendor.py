"""The browser libraries the edge serves are the npm registry's files at the locked versions."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import aiohttp
import pytest

from services.edge.web.pages import load_assets
from services.edge.web.vendor import (
    VENDOR_DIR,
    WEB_DIR,
    expected,
    installed_versions,
    locked_versions,
    refresh,
)
from tests.edge_helpers import RunningEdge


@pytest.fixture(scope="module")
def node_modules(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The lockfile's packages, installed afresh (`npm ci`) into a folder of the test's own."""
    npm = shutil.which("npm")
    if npm is None:
        pytest.skip("checking the vendored files needs npm on PATH")
    work = tmp_path_factory.mktemp("npm")
    for name in ("package.json", "package-lock.json"):
        shutil.copyfile(WEB_DIR / name, work / name)
    done = subprocess.run(
        [npm, "ci", "--no-audit", "--no-fund", "--ignore-scripts"],
        cwd=work,
        capture_output=True,
        text=True,
        timeout=100,
        check=False,
    )
    assert done.returncode == 0, f"npm ci failed:\n{done.stdout}\n{done.stderr}"
    return work / "node_modules"


def test_the_lock_pins_what_package_json_asks_for() -> None:
    wanted = json.loads((WEB_DIR / "package.json").read_text())["dependencies"]
    locked = locked_versions()
    assert {name: locked[name] for name in wanted} == wanted


def test_the_vendored_files_are_the_locked_packages_files(node_modules: Path) -> None:
    assert installed_versions(node_modules) == locked_versions()
    vendored = {p.relative_to(VENDOR_DIR).as_posix() for p in VENDOR_DIR.rglob("*") if p.is_file()}
    files = expected(node_modules)
    assert vendored == set(files)
    assert {"pdfjs/wasm/openjpeg.wasm", "pdfjs/cmaps/UniJIS-UCS2-H.bcmap"} <= vendored
    for target, source in files.items():
        assert (VENDOR_DIR / target).read_bytes() == source.read_bytes(), (
            f"{target} differs from {source}: run `make vendor`"
        )


def test_refresh_writes_exactly_the_listed_files(node_modules: Path, tmp_path: Path) -> None:
    out = tmp_path / "vendor"
    (out / "stale").mkdir(parents=True)
    (out / "stale" / "old.js").write_text("old")
    refresh(node_modules, out)
    written = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    assert written == set(expected(node_modules))


async def test_the_edge_serves_the_vendored_bytes(http_site: RunningEdge) -> None:
    build, _assets = load_assets()
    async with aiohttp.ClientSession() as http:
        for target in ("socket.io.esm.min.js", "pdfjs/pdf.min.mjs", "pdfjs/pdf.worker.min.mjs"):
            async with http.get(f"{http_site.url}/assets/{build}/vendor/{target}") as response:
                assert response.status == 200
                assert await response.read() == (VENDOR_DIR / target).read_bytes()
