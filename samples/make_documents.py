"""Writes the demo's sample documents into samples/documents/ (`python samples/make_documents.py`).

One-page PDFs that look like a work-order drawing, so the default DOCUMENT_URL_TEMPLATE
(`/documents/{orderId}.pdf`) resolves for the demo and the README's first scan. Plain PDF
syntax, standard fonts: no dependency, byte-identical on every run.
"""

from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).parent / "documents"
ORDERS = {
    "ORDER-1001": ("Bracket, left", "Steel S235, 4 mm", "A"),
    "ORDER-1002": ("Bracket, right", "Steel S235, 4 mm", "B"),
    "ORDER-1003": ("Cover plate", "Aluminium 5754, 2 mm", "A"),
    "DEMO-1": ("Demo part", "Sample drawing served by remote-display", "A"),
}


def _text(x: int, y: int, size: int, text: str, font: str = "F1") -> str:
    escaped = text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")
    return f"BT /{font} {size} Tf {x} {y} Td ({escaped}) Tj ET"


def drawing(order_id: str, title: str, material: str, revision: str) -> bytes:
    width, height = 842, 595  # A4 landscape, points
    ops = [
        "2 w 20 20 802 555 re S",  # frame
        "1 w 20 95 m 822 95 l S",
        "0.9 0.9 0.9 rg 120 200 420 260 re f 0 0 0 rg",  # the part
        "3 w 120 200 420 260 re S",
        "1 w 180 260 m 180 400 l S 480 260 m 480 400 l S",
        "0.5 w 120 170 m 540 170 l S 120 165 m 120 175 l S 540 165 m 540 175 l S",
        _text(300, 150, 14, "420"),
        "0.5 w 570 200 m 570 460 l S 565 200 m 575 200 l S 565 460 m 575 460 l S",
        _text(580, 325, 14, "260"),
        "2 w 165 315 30 30 re S 465 315 30 30 re S",  # two holes
        _text(40, 60, 28, order_id, "F2"),
        _text(40, 32, 12, f"{title}  |  {material}  |  rev. {revision}"),
        _text(640, 60, 12, "remote-display sample"),
        _text(640, 40, 10, "scale 1:2  |  mm"),
    ]
    content = "\n".join(ops).encode()
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        (
            f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 {width} {height}] "
            "/Resources << /Font << /F1 4 0 R /F2 5 0 R >> >> /Contents 6 0 R >>"
        ).encode(),
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica-Bold >>",
        b"<< /Length %d >>\nstream\n" % len(content) + content + b"\nendstream",
    ]
    return assemble(objects)


def assemble(objects: list[bytes]) -> bytes:
    """A PDF of these objects (numbered from 1; the first is the catalog), with its xref."""
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    for offset in offsets:
        out += b"%010d 00000 n \n" % offset
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1,
        xref,
    )
    return bytes(out)


def main() -> None:
    HERE.mkdir(parents=True, exist_ok=True)
    for order_id, (title, material, revision) in ORDERS.items():
        (HERE / f"{order_id}.pdf").write_bytes(drawing(order_id, title, material, revision))


if __name__ == "__main__":
    main()
