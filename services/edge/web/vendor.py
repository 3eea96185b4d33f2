"""The npm libraries the pages use, copied from `node_modules` into `static/vendor/`.

`package.json` and `package-lock.json` beside this module pin them; `make vendor` runs
`npm ci` here and then `python -m services.edge.web.vendor`, which copies exactly the files of
`FILES` and `TREES` (the browser builds, pdf.js's worker, fonts, maps and decoders, licences).
`tests/services/edge/test_vendor.py` installs the locked versions again and checks that the
edge serves these very bytes.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

WEB_DIR = Path(__file__).resolve().parent
VENDOR_DIR = WEB_DIR / "static" / "vendor"
NODE_MODULES = WEB_DIR / "node_modules"

# vendor path → (package, path inside the package): single files ...
FILES: dict[str, tuple[str, str]] = {
    "socket.io.esm.min.js": ("socket.io-client", "dist/socket.io.esm.min.js"),
    "socket.io-client.LICENSE": ("socket.io-client", "LICENSE"),
    "pdfjs/pdf.min.mjs": ("pdfjs-dist", "build/pdf.min.mjs"),
    "pdfjs/pdf.worker.min.mjs": ("pdfjs-dist", "build/pdf.worker.min.mjs"),
    "pdfjs/LICENSE": ("pdfjs-dist", "LICENSE"),
    "uplot/uPlot.esm.js": ("uplot", "dist/uPlot.esm.js"),
    "uplot/uPlot.min.css": ("uplot", "dist/uPlot.min.css"),
    "uplot/LICENSE": ("uplot", "LICENSE"),
}
# ... and whole folders: the fonts a PDF names without embedding them, the character maps of
# CJK text, the image decoders of scanned drawings (JPEG 2000, JBIG2) and colour profiles.
TREES: dict[str, tuple[str, str]] = {
    "pdfjs/standard_fonts": ("pdfjs-dist", "standard_fonts"),
    "pdfjs/cmaps": ("pdfjs-dist", "cmaps"),
    "pdfjs/wasm": ("pdfjs-dist", "wasm"),
    "pdfjs/iccs": ("pdfjs-dist", "iccs"),
}
PACKAGES = sorted({package for package, _path in (*FILES.values(), *TREES.values())})


def expected(node_modules: Path = NODE_MODULES) -> dict[str, Path]:
    """Every vendored file (its path under static/vendor) and the file of node_modules it is."""
    files = {target: node_modules / package / path for target, (package, path) in FILES.items()}
    for target, (package, path) in TREES.items():
        root = node_modules / package / path
        for source in sorted(p for p in root.rglob("*") if p.is_file()):
            files[f"{target}/{source.relative_to(root).as_posix()}"] = source
    return files


def locked_versions(lock: Path = WEB_DIR / "package-lock.json") -> dict[str, str]:
    """The version package-lock.json pins for each package FILES copies from."""
    packages = json.loads(lock.read_text())["packages"]
    return {name: packages[f"node_modules/{name}"]["version"] for name, _path in FILES.values()}


def installed_versions(node_modules: Path = NODE_MODULES) -> dict[str, str]:
    return {
        name: json.loads((node_modules / name / "package.json").read_text())["version"]
        for name in PACKAGES
    }


def refresh(node_modules: Path = NODE_MODULES, vendor: Path = VENDOR_DIR) -> None:
    """Replace `vendor` with the FILES of `node_modules`, which must hold the locked versions."""
    locked, installed = locked_versions(), installed_versions(node_modules)
    if locked != installed:
        msg = f"node_modules holds {installed}, the lock {locked}: run `npm ci` first"
        raise SystemExit(msg)
    if vendor.exists():
        shutil.rmtree(vendor)
    for target, source in expected(node_modules).items():
        destination = vendor / target
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, destination)


if __name__ == "__main__":
    refresh()
    versions = ", ".join(f"{name} {version}" for name, version in locked_versions().items())
    sys.stdout.write(f"static/vendor refreshed from {versions}\n")
