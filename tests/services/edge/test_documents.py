"""GET /documents/...: DOCUMENTS_DIR read-only over real HTTP (SPEC 3, 10)."""

from __future__ import annotations

import os
from pathlib import Path

import aiohttp
import pytest
from multidict import CIMultiDict
from yarl import URL

from tests.conftest import SettingsFactory
from tests.edge_helpers import running_edge

SAMPLES = Path(__file__).resolve().parents[3] / "samples" / "documents"


@pytest.fixture
def documents(tmp_path: Path) -> Path:
    root = tmp_path / "documents"
    (root / "drawings").mkdir(parents=True)
    (root / "ORDER-1.pdf").write_bytes((SAMPLES / "ORDER-1001.pdf").read_bytes())
    (root / "drawings" / "part.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 32)
    (root / "note.html").write_text("<script>alert(1)</script>")
    (root / ".env").write_text("JWT_SECRET=do-not-serve")
    (tmp_path / "secret.txt").write_text("outside")
    os.symlink(tmp_path / "secret.txt", root / "link-out.txt")
    os.symlink(root / "ORDER-1.pdf", root / "link-in.pdf")
    return root


async def _get(url: str, **headers: str) -> tuple[int, CIMultiDict[str], bytes]:
    # encoded=True: the path reaches the edge exactly as written (no client-side `..` folding).
    async with (
        aiohttp.ClientSession() as http,
        http.get(URL(url, encoded=True), headers=headers, allow_redirects=False) as response,
    ):
        return response.status, response.headers.copy(), await response.read()


async def test_files_are_served_with_their_type_and_revalidated(
    make_settings: SettingsFactory, documents: Path
) -> None:
    async with running_edge(make_settings(DOCUMENTS_DIR=str(documents))) as edge:
        status, headers, body = await _get(f"{edge.url}/documents/ORDER-1.pdf")
        assert status == 200
        assert body == (documents / "ORDER-1.pdf").read_bytes()
        assert headers["Content-Type"] == "application/pdf"
        assert headers["Cache-Control"] == "no-cache"  # a replaced drawing is never stale
        assert headers["X-Content-Type-Options"] == "nosniff"
        assert headers["Content-Security-Policy"] == "sandbox"
        # Revalidation costs no body.
        status, _, body = await _get(
            f"{edge.url}/documents/ORDER-1.pdf", **{"If-None-Match": headers["ETag"]}
        )
        assert (status, body) == (304, b"")

        status, headers, _ = await _get(f"{edge.url}/documents/drawings/part.png")
        assert (status, headers["Content-Type"]) == (200, "image/png")
        # An HTML document is sandboxed: its script never runs with the pages' origin.
        status, headers, _ = await _get(f"{edge.url}/documents/note.html")
        assert status == 200
        assert headers["Content-Security-Policy"] == "sandbox"
        # A symlink that stays inside is a file of the directory.
        status, _, _ = await _get(f"{edge.url}/documents/link-in.pdf")
        assert status == 200


@pytest.mark.parametrize(
    "path",
    [
        "",  # no listing
        "drawings",
        "drawings/",
        "missing.pdf",
        ".env",  # hidden files
        "link-out.txt",  # a symlink out of the directory
        "..%2Fsecret.txt",
        "%2E%2E/secret.txt",
        "../secret.txt",
        "drawings/../../secret.txt",
        "drawings/..%2F..%2Fsecret.txt",
        "%2Fetc%2Fpasswd",
        "drawings%5C..%5C..%5Csecret.txt",
        "ORDER-1.pdf%00.png",
    ],
)
async def test_nothing_but_its_files_is_reachable(
    make_settings: SettingsFactory, documents: Path, path: str
) -> None:
    async with running_edge(make_settings(DOCUMENTS_DIR=str(documents))) as edge:
        status, headers, body = await _get(f"{edge.url}/documents/{path}")
        assert status == 404, (path, body)
        assert b"outside" not in body
        assert b"JWT_SECRET" not in body
        assert headers["X-Content-Type-Options"] == "nosniff"


async def test_read_only_and_off_when_unset(
    make_settings: SettingsFactory, documents: Path
) -> None:
    async with (
        running_edge(make_settings(DOCUMENTS_DIR=str(documents))) as edge,
        aiohttp.ClientSession() as http,
    ):
        for method in ("POST", "PUT", "DELETE"):
            async with http.request(method, f"{edge.url}/documents/ORDER-1.pdf") as response:
                assert response.status == 405, method
    assert (documents / "ORDER-1.pdf").read_bytes() == (SAMPLES / "ORDER-1001.pdf").read_bytes()
    async with running_edge(make_settings()) as edge:
        status, _, _ = await _get(f"{edge.url}/documents/ORDER-1.pdf")
        assert status == 404
