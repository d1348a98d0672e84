"""Media core of the offline preview engine.

The preview engine lets the generation server run anywhere, with no model and no network: every
"generation" produces a real, valid file (PNG or H.264 MP4) drawn deterministically from the
prompt, so clients, storage, billing and task plumbing can all be exercised end to end.

Everything here is pure, synchronous and CPU bound; callers are expected to run it in a thread
pool. Only Pillow and PyAV are used. No object is shared between calls (fonts included), because
FreeType faces are not safe to use from several threads at once.
"""

from __future__ import annotations

import colorsys
import hashlib
import io
import math
import random
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from typing import TypeAlias

import av
from PIL import Image, ImageDraw, ImageFilter, ImageFont, ImageOps

__all__ = [
    "MediaError",
    "animate_image",
    "render_image",
    "render_video",
    "sniff_content_type",
    "upscale_image",
]

RGB: TypeAlias = tuple[int, int, int]
Font: TypeAlias = ImageFont.FreeTypeFont | ImageFont.ImageFont

ASPECT_RATIOS: dict[str, tuple[int, int]] = {
    "1:1": (1, 1),
    "2:3": (2, 3),
    "3:2": (3, 2),
    "16:9": (16, 9),
    "9:16": (9, 16),
}

# Pillow only warns between 89 and 179 megapixels; a server wants a firm, lower limit so that
# one upload cannot pin gigabytes of memory in a worker thread.
MAX_SOURCE_PIXELS = 40_000_000
MAX_OUTPUT_SIDE = 8192
MIN_SIDE = 16
MAX_IMAGE_LONG_SIDE = 4096
MAX_VIDEO_LONG_SIDE = 1920
MAX_VIDEO_SECONDS = 60.0
MAX_FPS = 60

# Each Pillow decoder is attack surface; only the formats the API documents are accepted.
_SOURCE_FORMATS = ("PNG", "JPEG", "WEBP")
# ISO BMFF is also the container of HEIF/AVIF stills and M4A audio; those must not pass as video.
_NON_VIDEO_BRANDS = frozenset({b"avif", b"heic", b"heix", b"mif1", b"msf1", b"M4A ", b"M4B "})
_CAPTION_CHARS = 1000
_TOO_LARGE = (
    f"the source image is too large (the limit is {MAX_SOURCE_PIXELS // 1_000_000} megapixels)"
)
_NOT_AN_IMAGE = "the source is not an image this server reads (PNG, JPEG, WebP)"

# Crisp shapes are drawn at this multiple of the output size and box-reduced, which is the
# cheapest way to anti-alias ImageDraw primitives (they have no anti-aliasing of their own).
_SUPERSAMPLE = 2
# The soft background is painted this many times smaller than the output and upscaled: the blur
# hides the low resolution, and painting it small is what keeps a 768 px render in milliseconds.
_BACKGROUND_DIVISOR = 8


class MediaError(ValueError):
    """An input (or argument) that cannot be turned into media; the message is user-facing."""


# --------------------------------------------------------------------------------------------
# Scene: everything random about an artwork, derived once from the prompt.
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Blob:
    x: float
    y: float
    radius: float
    color: RGB
    alpha: int
    drift: float
    phase: float


@dataclass(frozen=True, slots=True)
class _Shape:
    kind: str
    x: float
    y: float
    size: float
    color: RGB
    alpha: int
    sides: int
    rotation: float
    spin: float
    drift_x: float
    drift_y: float
    phase: float


@dataclass(frozen=True, slots=True)
class _Scene:
    corners: tuple[RGB, RGB, RGB, RGB]
    blobs: tuple[_Blob, ...]
    shapes: tuple[_Shape, ...]


def _hsv(h: float, s: float, v: float) -> RGB:
    r, g, b = colorsys.hsv_to_rgb(h % 1.0, min(max(s, 0.0), 1.0), min(max(v, 0.0), 1.0))
    return round(r * 255), round(g * 255), round(b * 255)


def _scene(prompt: str) -> _Scene:
    # Seeded only by the prompt (not the size) so one prompt keeps its look across aspect ratios.
    digest = hashlib.sha256(prompt.encode("utf-8")).digest()
    rng = random.Random(int.from_bytes(digest, "big"))

    base = rng.random()
    offsets = rng.choice(
        [
            (0.0, 0.08, -0.08, 0.16),  # analogous
            (0.0, 0.5, 0.04, 0.54),  # complementary
            (0.0, 1 / 3, 2 / 3, 0.05),  # triadic
            (0.0, 0.42, 0.58, -0.06),  # split complementary
        ]
    )
    hues = [base + o for o in offsets]
    dark = rng.random() < 0.6
    if dark:
        corners = tuple(_hsv(h, rng.uniform(0.55, 0.85), rng.uniform(0.18, 0.42)) for h in hues)
    else:
        corners = tuple(_hsv(h, rng.uniform(0.25, 0.5), rng.uniform(0.82, 0.97)) for h in hues)

    def vivid() -> RGB:
        return _hsv(rng.choice(hues) + rng.uniform(-0.03, 0.03), rng.uniform(0.5, 0.9), 0.95)

    blobs = tuple(
        _Blob(
            x=rng.uniform(0.0, 1.0),
            y=rng.uniform(0.0, 1.0),
            radius=rng.uniform(0.22, 0.45),
            color=vivid(),
            alpha=rng.randint(110, 190),
            drift=rng.uniform(0.04, 0.1),
            phase=rng.random(),
        )
        for _ in range(rng.randint(3, 5))
    )
    shapes = tuple(
        _Shape(
            kind=rng.choice(("disc", "disc", "ring", "polygon", "polygon", "bars")),
            x=rng.uniform(0.1, 0.9),
            y=rng.uniform(0.08, 0.72),
            size=rng.uniform(0.05, 0.2),
            color=vivid() if dark else _hsv(rng.choice(hues), rng.uniform(0.6, 0.9), 0.7),
            alpha=rng.randint(110, 215),
            sides=rng.randint(3, 6),
            rotation=rng.uniform(0.0, 360.0),
            spin=rng.choice((-1.0, 1.0)) * rng.uniform(20.0, 90.0),
            drift_x=rng.uniform(-0.06, 0.06),
            drift_y=rng.uniform(-0.05, 0.05),
            phase=rng.random(),
        )
        for _ in range(rng.randint(5, 8))
    )
    return _Scene(
        corners=(corners[0], corners[1], corners[2], corners[3]),
        blobs=blobs,
        shapes=shapes,
    )


# --------------------------------------------------------------------------------------------
# Drawing
# --------------------------------------------------------------------------------------------


def _frame_size(aspect_ratio: str, long_side: int, max_long_side: int) -> tuple[int, int]:
    ratio = ASPECT_RATIOS.get(aspect_ratio)
    if ratio is None:
        supported = ", ".join(ASPECT_RATIOS)
        raise MediaError(f"unsupported aspect ratio {aspect_ratio!r} (use one of {supported})")
    if not 64 <= long_side <= max_long_side:
        raise MediaError(f"long_side must be between 64 and {max_long_side}, got {long_side}")
    long_even = long_side - long_side % 2
    w, h = ratio
    short = max(MIN_SIDE, 2 * round(long_even * min(w, h) / max(w, h) / 2))
    return (long_even, short) if w >= h else (short, long_even)


def _background(scene: _Scene, size: tuple[int, int], t: float) -> Image.Image:
    bw = max(8, size[0] // _BACKGROUND_DIVISOR)
    bh = max(8, size[1] // _BACKGROUND_DIVISOR)
    c = scene.corners
    # linear_gradient is a native 256x256 ramp; compositing solid colours through it gives a
    # four-corner gradient without any per-pixel Python.
    gradient = Image.linear_gradient("L")
    ramp = gradient.resize((bw, bh), Image.Resampling.BILINEAR)
    across = gradient.transpose(Image.Transpose.ROTATE_90).resize((bw, bh))
    top = Image.composite(
        Image.new("RGB", (bw, bh), c[0]), Image.new("RGB", (bw, bh), c[1]), across
    )
    bottom = Image.composite(
        Image.new("RGB", (bw, bh), c[2]), Image.new("RGB", (bw, bh), c[3]), across
    )
    bg = Image.composite(bottom, top, ramp)

    draw = ImageDraw.Draw(bg, "RGBA")
    unit = min(bw, bh)
    for blob in scene.blobs:
        angle = 2 * math.pi * (t + blob.phase)
        cx = (blob.x + blob.drift * math.cos(angle)) * bw
        cy = (blob.y + blob.drift * math.sin(angle)) * bh
        r = blob.radius * unit
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=(*blob.color, blob.alpha))
    return bg.filter(ImageFilter.GaussianBlur(max(1.0, unit * 0.14)))


def _shapes(draw: ImageDraw.ImageDraw, scene: _Scene, size: tuple[int, int], t: float) -> None:
    w, h = size
    unit = min(w, h)
    for s in scene.shapes:
        # Motion is periodic in t so a video of the scene loops seamlessly.
        angle = 2 * math.pi * (t + s.phase)
        cx = (s.x + s.drift_x * math.sin(angle)) * w
        cy = (s.y + s.drift_y * math.cos(angle)) * h
        r = s.size * unit
        rotation = s.rotation + s.spin * t
        fill = (*s.color, s.alpha)
        if s.kind == "disc":
            draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
        elif s.kind == "ring":
            width = max(2, round(r * 0.18))
            draw.ellipse((cx - r, cy - r, cx + r, cy + r), outline=fill, width=width)
        elif s.kind == "polygon":
            draw.regular_polygon((cx, cy, r), s.sides, rotation=rotation, fill=fill)
        else:
            # A few parallel strokes at an angle read as "motion lines" and break up the circles.
            dx = math.cos(math.radians(rotation)) * r
            dy = math.sin(math.radians(rotation)) * r
            gap = r * 0.32
            width = max(2, round(r * 0.12))
            for k in range(-2, 3):
                ox, oy = -dy / r * gap * k, dx / r * gap * k
                line = (cx - dx + ox, cy - dy + oy, cx + dx + ox, cy + dy + oy)
                draw.line(line, fill=fill, width=width)


def _font(size: int) -> Font:
    try:
        return ImageFont.load_default(size=size)
    except (ImportError, OSError, AttributeError):
        # Pillow without FreeType: the fixed bitmap font is small but still legible.
        return ImageFont.load_default()


def _longest_fitting_prefix(text: str, font: Font, max_width: float) -> int:
    lo, hi = 1, len(text)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if font.getlength(text[:mid]) <= max_width:
            lo = mid
        else:
            hi = mid - 1
    return lo


def _wrap(text: str, font: Font, max_width: float, max_lines: int) -> list[str]:
    # Prompts can be arbitrarily long; only what can possibly show in the band is measured.
    clipped = len(text) > _CAPTION_CHARS
    words = text[:_CAPTION_CHARS].split()
    lines: list[str] = []
    current = ""
    for word in words:
        candidate = f"{current} {word}" if current else word
        if font.getlength(candidate) <= max_width:
            current = candidate
            continue
        if current:
            lines.append(current)
        # A single unbreakable run (a URL, CJK text) is hard-split rather than overflowing.
        while len(lines) <= max_lines and len(word) > 1 and font.getlength(word) > max_width:
            cut = _longest_fitting_prefix(word, font, max_width)
            lines.append(word[:cut])
            word = word[cut:]
        current = word
        if len(lines) > max_lines:
            break
    if current:
        lines.append(current)
    if len(lines) > max_lines or clipped:
        lines = lines[:max_lines]
        last = lines[-1]
        while last and font.getlength(last + "…") > max_width:
            last = last[:-1].rstrip()
        lines[-1] = last + "…"
    return lines


def _overlay(prompt: str, size: tuple[int, int]) -> Image.Image:
    """The caption band and "preview" badge, drawn once and pasted on every frame."""
    w, h = size
    layer = Image.new("RGBA", size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    unit = min(w, h)
    margin = max(6, round(unit * 0.04))
    pad = max(4, round(unit * 0.028))

    text = " ".join("".join(ch if ch.isprintable() else " " for ch in prompt).split())
    text = text or "untitled"
    font_size = max(11, round(math.sqrt(w * h) / 27))
    font = _font(font_size)
    lines = _wrap(text, font, w - 2 * margin - 2 * pad, max_lines=3)
    line_height = round(font_size * 1.3)
    band_top = h - margin - 2 * pad - line_height * len(lines)
    draw.rounded_rectangle(
        (margin, band_top, w - margin, h - margin), radius=pad, fill=(12, 12, 16, 150)
    )
    for i, line in enumerate(lines):
        y = band_top + pad + i * line_height
        draw.text((margin + pad, y), line, font=font, fill=(245, 245, 245, 255))

    badge_font_size = max(9, round(font_size * 0.62))
    badge_font = _font(badge_font_size)
    label = "PREVIEW"
    label_w = badge_font.getlength(label)
    bpad = max(3, badge_font_size // 2)
    badge = (margin, margin, margin + label_w + 2 * bpad, margin + badge_font_size + 2 * bpad)
    draw.rounded_rectangle(badge, radius=bpad, fill=(12, 12, 16, 170))
    draw.text((margin + bpad, margin + bpad), label, font=badge_font, fill=(255, 255, 255, 235))
    return layer


class _Painter:
    """Renders frames of one prompt at one size; the caption overlay is built only once."""

    def __init__(self, prompt: str, size: tuple[int, int]) -> None:
        self.size = size
        self.scene = _scene(prompt)
        overlay = _overlay(prompt, size)
        box = overlay.getbbox()
        # Pasting only the painted region is much cheaper than compositing a full-frame layer.
        self.overlay_box = box if box is not None else (0, 0, 1, 1)
        self.overlay = overlay.crop(self.overlay_box)

    def frame(self, t: float) -> Image.Image:
        w, h = self.size
        big = (w * _SUPERSAMPLE, h * _SUPERSAMPLE)
        background = _background(self.scene, self.size, t).resize(
            self.size, Image.Resampling.BICUBIC
        )
        # Nearest-neighbour doubling is undone exactly by the box reduce below, so the
        # background keeps its bicubic smoothness at a quarter of the cost of a 2x bicubic.
        canvas = background.resize(big, Image.Resampling.NEAREST)
        _shapes(ImageDraw.Draw(canvas, "RGBA"), self.scene, big, t)
        image = canvas.reduce(_SUPERSAMPLE)
        image.paste(self.overlay, self.overlay_box[:2], self.overlay)
        return image


# --------------------------------------------------------------------------------------------
# Encoding / decoding helpers
# --------------------------------------------------------------------------------------------


def _png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    # No metadata is written, which keeps the bytes a pure function of the pixels. Level 3 is
    # about twice as fast as the default 6 for ~25% larger files: the right trade for previews.
    image.save(buf, format="PNG", compress_level=3)
    return buf.getvalue()


def _frame_count(seconds: float, fps: int) -> int:
    if not math.isfinite(seconds) or not 0 < seconds <= MAX_VIDEO_SECONDS:
        raise MediaError(f"seconds must be > 0 and <= {MAX_VIDEO_SECONDS:g}, got {seconds}")
    if not 1 <= fps <= MAX_FPS:
        raise MediaError(f"fps must be between 1 and {MAX_FPS}, got {fps}")
    return max(1, round(seconds * fps))


def _encode_mp4(frames: Iterable[Image.Image], size: tuple[int, int], fps: int) -> bytes:
    buf = io.BytesIO()
    try:
        with av.open(buf, mode="w", format="mp4") as container:
            # One encoder thread: requests are already parallelised by the caller's thread pool,
            # and x264's frame threads would make the bytes depend on scheduling. The bytes are
            # still not guaranteed to repeat: x264's AVX-512 code paths made them vary with heap
            # contents in testing (the pictures do repeat, within codec noise).
            options = {"preset": "veryfast", "crf": "26", "threads": "1"}
            stream = container.add_stream("libx264", rate=fps, options=options)
            stream.width, stream.height = size
            stream.pix_fmt = "yuv420p"
            stream.time_base = Fraction(1, fps)
            for index, image in enumerate(frames):
                # from_image is unannotated in PyAV's stubs; it is the copy that needs no numpy.
                frame: av.VideoFrame = av.VideoFrame.from_image(image)  # type: ignore[no-untyped-call]
                frame.pts = index
                frame.time_base = Fraction(1, fps)
                container.mux(stream.encode(frame))
            container.mux(stream.encode(None))
    except av.FFmpegError as exc:
        raise MediaError(f"could not encode the video: {exc}") from exc
    return _faststart(buf.getvalue())


# Boxes on the path from moov to the chunk offset tables; nothing else needs to be entered.
_PATH_TO_CHUNK_OFFSETS = frozenset({b"moov", b"trak", b"mdia", b"minf", b"stbl"})


def _boxes(data: bytes | bytearray, start: int, end: int) -> Iterator[tuple[bytes, int, int, int]]:
    """ISO BMFF boxes in ``data[start:end]`` as (type, box start, payload start, box end)."""
    pos = start
    while pos + 8 <= end:
        size, kind = struct.unpack_from(">I4s", data, pos)
        header = 8
        if size == 1:
            if pos + 16 > end:
                break
            (size,) = struct.unpack_from(">Q", data, pos + 8)
            header = 16
        elif size == 0:
            size = end - pos
        if size < header or pos + size > end:
            raise MediaError("could not encode the video: malformed MP4 box")
        yield kind, pos, pos + header, pos + size
        pos += size


def _shift_chunk_offsets(moov: bytearray, start: int, end: int, delta: int) -> None:
    for kind, _, payload, box_end in _boxes(moov, start, end):
        if kind in _PATH_TO_CHUNK_OFFSETS:
            _shift_chunk_offsets(moov, payload, box_end, delta)
        elif kind in (b"stco", b"co64"):
            fmt, width = (">I", 4) if kind == b"stco" else (">Q", 8)
            (count,) = struct.unpack_from(">I", moov, payload + 4)
            if payload + 8 + count * width > box_end:
                raise MediaError("could not encode the video: malformed chunk offset table")
            for i in range(count):
                at = payload + 8 + i * width
                (offset,) = struct.unpack_from(fmt, moov, at)
                if offset + delta >= 1 << (8 * width):
                    raise MediaError("could not encode the video: it is too large")
                struct.pack_into(fmt, moov, at, offset + delta)


def _faststart(mp4: bytes) -> bytes:
    """Move the moov index in front of the media data so playback can start while downloading.

    This is what ffmpeg's ``movflags=faststart`` does, but ffmpeg implements it by reopening the
    output by file name, which fails for an in-memory PyAV output; so it is redone here.
    """
    top = list(_boxes(mp4, 0, len(mp4)))
    kinds = [kind for kind, *_ in top]
    if b"moov" not in kinds or b"mdat" not in kinds:
        return mp4
    moov_index, mdat_index = kinds.index(b"moov"), kinds.index(b"mdat")
    if moov_index < mdat_index:
        return mp4
    _, moov_start, _, moov_end = top[moov_index]
    moov = bytearray(mp4[moov_start:moov_end])
    # Everything the chunk offsets point at (inside mdat) moves down by exactly the moov size.
    _shift_chunk_offsets(moov, 0, len(moov), len(moov))
    insert_at = top[1][1] if kinds[0] == b"ftyp" else 0
    return mp4[:insert_at] + bytes(moov) + mp4[insert_at:moov_start] + mp4[moov_end:]


def _decode_image(data: bytes) -> Image.Image:
    if not data:
        raise MediaError(_NOT_AN_IMAGE)
    try:
        opened = Image.open(io.BytesIO(data), formats=_SOURCE_FORMATS)
        # Checked before load(): only the header has been parsed so far, so a bomb costs nothing.
        if opened.width * opened.height > MAX_SOURCE_PIXELS:
            raise MediaError(_TOO_LARGE)
        opened.load()
        # Phone photos store rotation in EXIF; honouring it keeps the visible aspect ratio.
        image = ImageOps.exif_transpose(opened)
    except MediaError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        # Pillow's own, higher limits trip inside open(); the warning only arrives as an
        # exception where warnings are errors, otherwise our own check above catches the image.
        raise MediaError(_TOO_LARGE) from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise MediaError(_NOT_AN_IMAGE) from exc
    if image.width < 1 or image.height < 1:
        raise MediaError(_NOT_AN_IMAGE)
    return image


def _flatten(image: Image.Image) -> Image.Image:
    """RGB for video: transparency is laid over a neutral dark grey rather than dropped."""
    if image.mode == "RGB" and "transparency" not in image.info:
        return image
    rgba = image.convert("RGBA")
    base = Image.new("RGBA", rgba.size, (24, 24, 28, 255))
    base.alpha_composite(rgba)
    return base.convert("RGB")


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------


def render_image(prompt: str, *, aspect_ratio: str = "1:1", long_side: int = 768) -> bytes:
    """A deterministic PNG artwork drawn from ``prompt``, captioned and badged "PREVIEW"."""
    size = _frame_size(aspect_ratio, long_side, MAX_IMAGE_LONG_SIDE)
    return _png(_Painter(prompt, size).frame(0.0))


def render_video(
    prompt: str,
    *,
    seconds: float = 3.0,
    fps: int = 12,
    aspect_ratio: str = "2:3",
    long_side: int = 480,
) -> bytes:
    """An H.264 MP4 of the prompt's artwork with drifting, spinning shapes (a seamless loop)."""
    size = _frame_size(aspect_ratio, long_side, MAX_VIDEO_LONG_SIDE)
    count = _frame_count(seconds, fps)
    painter = _Painter(prompt, size)
    return _encode_mp4((painter.frame(i / count) for i in range(count)), size, fps)


def _ken_burns(
    image: Image.Image, size: tuple[int, int], count: int, seed: bytes
) -> Iterator[Image.Image]:
    w, h = size
    zoom = 1.18
    # Sized so the deepest zoom samples it 1:1: full detail there, and per-frame cost no longer
    # depends on how large the source is.
    work_w, work_h = round(w * zoom), round(h * zoom)
    work = image.resize((work_w, work_h), Image.Resampling.LANCZOS, reducing_gap=3.0)

    zoom_in = seed[0] % 2 == 0
    heading = 2 * math.pi * seed[1] / 256
    # Pan as far as the zoomed-in crop allows, in a direction chosen by the image itself.
    reach_x = (work_w - work_w / zoom) / 2 * math.cos(heading)
    reach_y = (work_h - work_h / zoom) / 2 * math.sin(heading)
    for index in range(count):
        t = index / (count - 1) if count > 1 else 0.0
        eased = t * t * (3 - 2 * t)
        progress = eased if zoom_in else 1 - eased
        z = 1 + (zoom - 1) * progress
        crop_w, crop_h = work_w / z, work_h / z
        cx = work_w / 2 + reach_x * progress
        cy = work_h / 2 + reach_y * progress
        x0 = min(max(cx - crop_w / 2, 0.0), work_w - crop_w)
        y0 = min(max(cy - crop_h / 2, 0.0), work_h - crop_h)
        box = (x0, y0, x0 + crop_w, y0 + crop_h)
        yield work.resize(size, Image.Resampling.BICUBIC, box=box)


def animate_image(
    image: bytes,
    *,
    seconds: float = 3.0,
    fps: int = 12,
    long_side: int = 480,
    short_side: int | None = None,
) -> bytes:
    """An H.264 MP4 slowly zooming and panning across ``image``, keeping its aspect ratio:
    ``long_side`` pixels on its long side, or ``short_side`` on its short one if given
    (the long side still at most MAX_VIDEO_LONG_SIDE)."""
    if not 64 <= long_side <= MAX_VIDEO_LONG_SIDE:
        raise MediaError(f"long_side must be between 64 and {MAX_VIDEO_LONG_SIDE}, got {long_side}")
    if short_side is not None and not 16 <= short_side <= MAX_VIDEO_LONG_SIDE:
        raise MediaError(
            f"short_side must be between 16 and {MAX_VIDEO_LONG_SIDE}, got {short_side}"
        )
    count = _frame_count(seconds, fps)
    source = _flatten(_decode_image(image))
    if short_side is not None:
        long_side = min(
            MAX_VIDEO_LONG_SIDE, round(short_side * max(source.size) / min(source.size))
        )
    scale = (long_side - long_side % 2) / max(source.size)
    size = (
        max(MIN_SIDE, 2 * round(source.width * scale / 2)),
        max(MIN_SIDE, 2 * round(source.height * scale / 2)),
    )
    seed = hashlib.sha256(image).digest()
    return _encode_mp4(_ken_burns(source, size, count, seed), size, fps)


def upscale_image(image: bytes, *, factor: int = 2) -> bytes:
    """``image`` resampled with Lanczos to exactly ``factor`` times its size, as PNG."""
    if not 1 <= factor <= 8:
        raise MediaError(f"factor must be between 1 and 8, got {factor}")
    source = _decode_image(image)
    target = (source.width * factor, source.height * factor)
    if max(target) > MAX_OUTPUT_SIDE:
        raise MediaError(
            f"the upscaled image would be {target[0]}x{target[1]}; "
            f"the limit is {MAX_OUTPUT_SIDE} px on a side"
        )
    if "transparency" in source.info:
        # A transparent colour key would not survive resampling (edge pixels blend into other
        # colours), so it becomes a real alpha channel first.
        source = source.convert("RGBA")
    elif source.mode not in ("RGB", "RGBA", "L", "LA"):
        # Palette and 1-bit images cannot be Lanczos-resampled; CMYK cannot be PNG.
        source = source.convert("RGBA" if "A" in source.getbands() else "RGB")
    return _png(source.resize(target, Image.Resampling.LANCZOS))


def image_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) of an image, from its header alone; None when it can't be read."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            return image.size
    except Exception:
        # Only a figure kept beside the result: an image Pillow can't read has none.
        return None


def sniff_content_type(data: bytes) -> str | None:
    """The media type announced by ``data``'s magic bytes, for the formats this server handles."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    if data[4:8] == b"ftyp" and data[8:12] not in _NON_VIDEO_BRANDS:
        return "video/mp4"
    return None
