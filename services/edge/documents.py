"""`GET /documents/...`: the files of DOCUMENTS_DIR, read-only (SPEC 3, 10).

No listing, nothing outside the directory (`..`, absolute paths, symlinks out of it, hidden
files: 404, the same answer as a file that does not exist), the content type from the file's
extension, and revalidation on every use (`Cache-Control: no-cache` with ETag and
Last-Modified): a drawing replaced under the same name must never be shown stale. A document
is someone else's content on the edge's origin, so it is sandboxed (no script of an HTML
document runs with the pages' tokens at hand).
"""

from __future__ import annotations

import mimetypes
import os
from pathlib import Path
from stat import S_ISREG

from starlette.requests import Request
from starlette.responses import FileResponse, PlainTextResponse, Response
from starlette.routing import Route

# Types a shop's documents have that not every platform's mime table knows.
_TYPES = {
    ".pdf": "application/pdf",
    ".svg": "image/svg+xml",
    ".webp": "image/webp",
    ".avif": "image/avif",
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".gif": "image/gif",
    ".html": "text/html; charset=utf-8",
    ".htm": "text/html; charset=utf-8",
    ".txt": "text/plain; charset=utf-8",
}
DOCUMENT_HEADERS = {
    "Cache-Control": "no-cache",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "sandbox",
}


def content_type(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix in _TYPES:
        return _TYPES[suffix]
    guessed, _encoding = mimetypes.guess_type(path.name)
    return guessed or "application/octet-stream"


class Documents:
    def __init__(self, root: Path) -> None:
        self._root = root.resolve()

    def route(self) -> Route:
        return Route("/documents/{path:path}", self.serve, methods=["GET", "HEAD"])

    def find(self, relative: str) -> tuple[Path, os.stat_result] | None:
        """The file `relative` names inside the root and its stat, or None (missing, outside,
        hidden, not a regular file)."""
        parts = relative.split("/")
        if not relative or any(p in ("", ".", "..") or p.startswith(".") for p in parts):
            return None
        if "\\" in relative or "\0" in relative:
            return None
        try:
            path = self._root.joinpath(*parts).resolve(strict=True)
            stat = path.stat()
        except (OSError, RuntimeError):  # missing, or a symlink loop
            return None
        if not path.is_relative_to(self._root) or not S_ISREG(stat.st_mode):
            return None
        return path, stat

    async def serve(self, request: Request) -> Response:
        found = self.find(request.path_params["path"])
        if found is None:
            return PlainTextResponse(
                "document not found\n", status_code=404, headers=dict(DOCUMENT_HEADERS)
            )
        path, stat = found
        response = FileResponse(
            path, media_type=content_type(path), headers=dict(DOCUMENT_HEADERS), stat_result=stat
        )
        etag = response.headers["etag"]
        tags = _tags(request.headers.get("if-none-match", ""))
        if etag in tags or "*" in tags:
            # Revalidation of an unchanged document: no body (Starlette's FileResponse
            # does not answer conditional requests itself).
            keep = ("etag", "last-modified", *(name.lower() for name in DOCUMENT_HEADERS))
            return Response(
                status_code=304, headers={k: v for k, v in response.headers.items() if k in keep}
            )
        return response


def _tags(header: str) -> set[str]:
    """The entity tags an If-None-Match names (weak ones compare as strong: RFC 9110)."""
    return {tag.strip().removeprefix("W/") for tag in header.split(",") if tag.strip()}
