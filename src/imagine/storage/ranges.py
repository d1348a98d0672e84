"""The `Range` header of a file request (RFC 9110 section 14), for files we serve ourselves."""

from __future__ import annotations

from dataclasses import dataclass


class MalformedRange(Exception):
    """A Range header that can't be read: 400."""


class UnsatisfiableRange(Exception):
    """A range that starts past the end of the file: 416."""


@dataclass(frozen=True, slots=True)
class ByteRange:
    start: int
    end: int
    """Exclusive."""

    def content_range(self, size: int) -> str:
        return f"bytes {self.start}-{self.end - 1}/{size}"


def parse_range(header: str, size: int) -> ByteRange | None:
    """The one range asked for, or None to send the whole file.

    Several ranges get the whole file: RFC 9110 lets a server ignore Range, and a
    multipart answer is more work for both sides than the file itself (our files are
    single results, and players ask for one range at a time)."""
    unit, equals, spec = header.partition("=")
    if not equals or unit.strip().lower() != "bytes":
        raise MalformedRange("only bytes ranges are served")
    parts = [part.strip() for part in spec.split(",") if part.strip()]
    if not parts:
        raise MalformedRange("the Range header names no range")
    ranges = [_one(part, size) for part in parts]
    if len(ranges) > 1:
        return None
    return ranges[0]


def _one(part: str, size: int) -> ByteRange:
    first, dash, last = part.partition("-")
    first, last = first.strip(), last.strip()
    if not dash or not (first or last) or not _digits(first) or not _digits(last):
        raise MalformedRange(f"{part!r} is not START-END, START- or -LENGTH")
    if not first:
        length = int(last)
        if length == 0 or size == 0:
            raise UnsatisfiableRange
        return ByteRange(max(0, size - length), size)
    start = int(first)
    end = size if not last else int(last) + 1
    if last and end <= start:
        raise MalformedRange(f"{part!r} ends before it starts")
    if start >= size:
        raise UnsatisfiableRange
    return ByteRange(start, min(end, size))


def _digits(text: str) -> bool:
    return not text or (text.isascii() and text.isdigit())
