"""A minimal PDF writer for the one-page screening report.

Why not a library: the report is a title, some lines of text, a table as text lines and one
photograph. PDF 1.4 with the standard Helvetica fonts and a JPEG stored as-is (DCTDecode) needs
about a hundred lines and no new dependency on a device that must be installed offline; ReportLab
or fpdf2 would add a package (and, for ReportLab, C extensions) for features the report never uses.
Text is encoded as Latin-1 (WinAnsi); characters outside it are replaced by ``?``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

logger = logging.getLogger(__name__)

A4_PT = (595.0, 842.0)
MARGIN_PT = 50.0


def _escape(text: str) -> bytes:
    raw = text.encode("latin-1", errors="replace")
    return raw.replace(b"\\", b"\\\\").replace(b"(", b"\\(").replace(b")", b"\\)")


@dataclass
class PdfReport:
    """Collects lines (and one optional JPEG) and lays them out top to bottom on A4 pages."""

    items: list[tuple[str, object]] = field(default_factory=list)

    def heading(self, text: str) -> None:
        """Add a bold line in a larger size."""
        self.items.append(("h", text))

    def line(self, text: str, bold: bool = False) -> None:
        """Add a line of 10 pt text (long lines wrap at about 95 characters)."""
        while len(text) > 95:
            cut = text.rfind(" ", 0, 95)
            cut = 95 if cut <= 0 else cut
            self.items.append(("b" if bold else "t", text[:cut]))
            text = text[cut:].lstrip()
        self.items.append(("b" if bold else "t", text))

    def gap(self) -> None:
        """Add vertical space."""
        self.items.append(("g", ""))

    def image(self, jpeg: bytes, width_px: int, height_px: int, max_height_pt: float = 300.0) -> None:
        """Add a JPEG (baseline, RGB) scaled to the text width and at most ``max_height_pt``."""
        self.items.append(("i", (jpeg, width_px, height_px, max_height_pt)))

    def build(self) -> bytes:
        """Return the PDF file's bytes."""
        pages: list[list[bytes]] = [[]]
        images: list[tuple[bytes, int, int]] = []
        y = A4_PT[1] - MARGIN_PT
        width = A4_PT[0] - 2 * MARGIN_PT
        for kind, value in self.items:
            if kind == "i":
                jpeg, w, h, max_h = value  # type: ignore[misc]
                scale = min(width / w, max_h / h)
                dw, dh = w * scale, h * scale
                if y - dh < MARGIN_PT:
                    pages.append([])
                    y = A4_PT[1] - MARGIN_PT
                images.append((jpeg, w, h))
                name = f"Im{len(images)}"
                pages[-1].append(f"q {dw:.1f} 0 0 {dh:.1f} {MARGIN_PT:.1f} {y - dh:.1f} cm /{name} Do Q".encode())
                y -= dh + 8
                continue
            size = {"h": 15.0, "g": 6.0}.get(kind, 10.0)
            if y - size < MARGIN_PT:
                pages.append([])
                y = A4_PT[1] - MARGIN_PT
            y -= size + 4
            if kind == "g":
                continue
            font = "F2" if kind in ("h", "b") else "F1"
            pages[-1].append(b"BT /" + font.encode() + f" {size:.0f} Tf {MARGIN_PT:.1f} {y:.1f} Td (".encode()
                             + _escape(str(value)) + b") Tj ET")
        return self._assemble(pages, images)

    @staticmethod
    def _assemble(pages: list[list[bytes]], images: list[tuple[bytes, int, int]]) -> bytes:
        objects: list[bytes] = []

        def add(body: bytes) -> int:
            objects.append(body)
            return len(objects)

        catalog = add(b"")  # placeholder, filled below
        pages_id = add(b"")
        f1 = add(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>")
        f2 = add(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica-Bold /Encoding /WinAnsiEncoding >>")
        xobjects = []
        for jpeg, w, h in images:
            head = (f"<< /Type /XObject /Subtype /Image /Width {w} /Height {h} /ColorSpace /DeviceRGB"
                    f" /BitsPerComponent 8 /Filter /DCTDecode /Length {len(jpeg)} >>\nstream\n").encode()
            xobjects.append(add(head + jpeg + b"\nendstream"))
        xo = b" ".join(f"/Im{i + 1} {oid} 0 R".encode() for i, oid in enumerate(xobjects))
        resources = f"<< /Font << /F1 {f1} 0 R /F2 {f2} 0 R >> /XObject << ".encode() + xo + b" >> >>"
        kids = []
        for ops in pages:
            content = b"\n".join(ops)
            cid = add(f"<< /Length {len(content)} >>\nstream\n".encode() + content + b"\nendstream")
            kids.append(add(f"<< /Type /Page /Parent {pages_id} 0 R /MediaBox [0 0 {A4_PT[0]:.0f} {A4_PT[1]:.0f}]"
                            f" /Contents {cid} 0 R /Resources ".encode() + resources + b" >>"))
        objects[catalog - 1] = f"<< /Type /Catalog /Pages {pages_id} 0 R >>".encode()
        objects[pages_id - 1] = (f"<< /Type /Pages /Count {len(kids)} /Kids ["
                                 + " ".join(f"{k} 0 R" for k in kids) + "] >>").encode()
        out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
        offsets = []
        for i, body in enumerate(objects, start=1):
            offsets.append(len(out))
            out += f"{i} 0 obj\n".encode() + body + b"\nendobj\n"
        xref = len(out)
        out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
        for off in offsets:
            out += f"{off:010d} 00000 n \n".encode()
        out += f"trailer\n<< /Size {len(objects) + 1} /Root {catalog} 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
        return bytes(out)
