"""The npm libraries the pages use, copied from `node_modules` into `static/vendor/`.

`package.json` and `package-lock.json` beside this module pin them; `make vendor` runs
`npm ci` here and then `python -m services.edge.web.vendor`, which copies exactly the files of
`FILES` (the browser builds, pdf.js's worker and its standard fonts, their licences).
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

# vendor path → (package, path inside the package)
FILES: dict[str, tuple[str, str]] = {
    "socket.io.esm.min.js": ("socket.io-client", "dist/socket.io.esm.min.js"),
    "socket.io-client.LICENSE": ("socket.io-client", "LICENSE"),
    "pdfjs/pdf.min.mjs": ("pdfjs-dist", "build/pdf.min.mjs"),
    "pdfjs/pdf.worker.min.mjs": ("pdfjs-dist", "build/pdf.worker.min.mjs"),
    "pdfjs/LICENSE": ("pdfjs-dist", "LICENSE"),
    **{
        f"pdfjs/standard_fonts/{name}": ("pdfjs-dist", f"standard_fonts/{name}")
        for name in (
            "FoxitDingbats.pfb",
            "FoxitFixed.pfb",
            "FoxitFixedBold.pfb",
            "FoxitFixedBoldItalic.pfb",
            "FoxitFixedItalic.pfb",
            "FoxitSerif.pfb",
            "FoxitSerifBold.pfb",
            "FoxitSerifBoldItalic.pfb",
            "FoxitSerifItalic.pfb",
            "FoxitSymbol.pfb",
            "LiberationSans-Bold.ttf",
            "LiberationSans-BoldItalic.ttf",
            "LiberationSans-Italic.ttf",
            "LiberationSans-Regular.ttf",
            "LICENSE_FOXIT",
            "LICENSE_LIBERATION",
        )
    },
}


def locked_versions(lock: Path = WEB_DIR / "package-lock.json") -> dict[str, str]:
    """The version package-lock.json pins for each package FILES copies from."""
    packages = json.loads(lock.read_text())["packages"]
    return {name: packages[f"node_modules/{name}"]["version"] for name, _path in FILES.values()}


def installed_versions(node_modules: Path = NODE_MODULES) -> dict[str, str]:
    return {
        name: json.loads((node_modules / name / "package.json").read_text())["version"]
        for name, _path in FILES.values()
    }


def refresh(node_modules: Path = NODE_MODULES, vendor: Path = VENDOR_DIR) -> None:
    """Replace `vendor` with the FILES of `node_modules`, which must hold the locked versions."""
    locked, installed = locked_versions(), installed_versions(node_modules)
    if locked != installed:
        msg = f"node_modules holds {installed}, the lock {locked}: run `npm ci` first"
        raise SystemExit(msg)
    if vendor.exists():
        shutil.rmtree(vendor)
    for target, (package, path) in FILES.items():
        destination = vendor / target
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(node_modules / package / path, destination)


if __name__ == "__main__":
    refresh()
    versions = ", ".join(f"{name} {version}" for name, version in locked_versions().items())
    sys.stdout.write(f"static/vendor refreshed from {versions}\n")
