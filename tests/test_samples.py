"""samples/documents/ is what samples/make_documents.py writes: real one-page PDFs."""

from __future__ import annotations

import re
from pathlib import Path
from types import ModuleType

from tests.helpers import load_file_module

SAMPLES = Path(__file__).resolve().parents[1] / "samples"


def _generator() -> ModuleType:
    return load_file_module(SAMPLES / "make_documents.py")


def test_the_samples_are_the_generators_output() -> None:
    generator = _generator()
    written = sorted(p.name for p in (SAMPLES / "documents").iterdir())
    assert written == sorted(f"{order}.pdf" for order in generator.ORDERS)
    for order, (title, material, revision) in generator.ORDERS.items():
        expected = generator.drawing(order, title, material, revision)
        assert (SAMPLES / "documents" / f"{order}.pdf").read_bytes() == expected, order


def test_each_sample_is_a_well_formed_pdf() -> None:
    for path in (SAMPLES / "documents").glob("*.pdf"):
        data = path.read_bytes()
        assert data.startswith(b"%PDF-1.4\n")
        assert data.endswith(b"%%EOF\n")
        # The cross-reference table points at each object exactly.
        found = re.search(rb"startxref\n(\d+)\n", data)
        assert found is not None
        xref = int(found.group(1))
        assert data[xref:].startswith(b"xref\n")
        offsets = [int(m) for m in re.findall(rb"(\d{10}) 00000 n ", data)]
        assert len(offsets) == 6
        for number, offset in enumerate(offsets, start=1):
            assert data[offset:].startswith(b"%d 0 obj\n" % number), (path.name, number)
        assert b"/Type /Page " in data
        assert path.stem.encode() in data  # the drawing names its order
