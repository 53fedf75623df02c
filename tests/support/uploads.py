"""What the upload tests send (issue 7): data URLs, file items and small real documents."""

from __future__ import annotations

import base64
import struct
import zlib

PDF = b"%PDF-1.4\n1 0 obj << >> endobj\nBT (Quarterly revenue grew nicely) Tj ET\n%%EOF\n"


def data_url(media_type: str, data: bytes) -> str:
    """``data:<media_type>;base64,<data>``, as a client sends an image or a file."""
    return f"data:{media_type};base64,{base64.b64encode(data).decode()}"


def file_item(name: str, data: bytes = b"hello", media: str = "text/plain") -> dict[str, str]:
    """One entry of an INPUT's ``files`` list."""
    return {"name": name, "data": data_url(media, data)}


def png(width: int = 3, height: int = 2) -> bytes:
    """A valid RGB PNG of ``width`` x ``height`` black pixels."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    raw = b"".join(b"\x00" + b"\x00\x00\x00" * width for _ in range(height))
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )
