"""Tests for the offline preview engine's media core."""

from __future__ import annotations

import io
import struct
import zlib
from concurrent.futures import ThreadPoolExecutor

import av
import pytest
from PIL import Image, ImageChops, ImageDraw, ImageStat

from imagine.providers.media import (
    MediaError,
    animate_image,
    render_image,
    render_video,
    sniff_content_type,
    upscale_image,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------


def open_png(data: bytes) -> Image.Image:
    assert data.startswith(PNG_MAGIC)
    image = Image.open(io.BytesIO(data))
    assert image.format == "PNG"
    image.load()
    return image


def mean_difference(a: Image.Image, b: Image.Image) -> float:
    """Mean absolute per-channel difference, 0..255."""
    diff = ImageChops.difference(a.convert("RGB"), b.convert("RGB"))
    return sum(ImageStat.Stat(diff).mean) / 3


def encode(image: Image.Image, fmt: str, **params: object) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **params)
    return buf.getvalue()


def busy_picture(size: tuple[int, int]) -> Image.Image:
    """A photo stand-in with structure everywhere, so any zoom or pan changes the pixels."""
    w, h = size
    image = Image.linear_gradient("L").resize(size).convert("RGB")
    draw = ImageDraw.Draw(image)
    for i in range(0, w + h, 12):
        draw.line((i, 0, i - h, h), fill=(200, 40 + i % 200, 90), width=3)
    draw.ellipse((w // 4, h // 4, 3 * w // 4, 3 * h // 4), outline=(20, 220, 240), width=6)
    return image


def top_level_boxes(mp4: bytes) -> list[bytes]:
    kinds: list[bytes] = []
    pos = 0
    while pos + 8 <= len(mp4):
        size, kind = struct.unpack_from(">I4s", mp4, pos)
        if size == 1:
            (size,) = struct.unpack_from(">Q", mp4, pos + 8)
        elif size == 0:
            size = len(mp4) - pos
        assert size >= 8
        kinds.append(kind)
        pos += size
    assert pos == len(mp4), "boxes must tile the whole file"
    return kinds


class DecodedVideo:
    def __init__(self, data: bytes) -> None:
        with av.open(io.BytesIO(data), mode="r") as container:
            assert len(container.streams.video) == 1
            stream = container.streams.video[0]
            self.codec = stream.codec_context.name
            self.pix_fmt = stream.codec_context.pix_fmt
            self.rate = stream.average_rate
            self.width = stream.codec_context.width
            self.height = stream.codec_context.height
            # to_image is unannotated in PyAV's stubs.
            self.frames: list[Image.Image] = [
                frame.to_image()  # type: ignore[no-untyped-call]
                for frame in container.decode(stream)
            ]


# ---------------------------------------------------------------------------------------------
# render_image
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("aspect_ratio", "size"),
    [
        ("1:1", (768, 768)),
        ("2:3", (512, 768)),
        ("3:2", (768, 512)),
        ("16:9", (768, 432)),
        ("9:16", (432, 768)),
    ],
)
def test_render_image_size_per_aspect_ratio(aspect_ratio: str, size: tuple[int, int]) -> None:
    image = open_png(render_image("a lighthouse at dusk", aspect_ratio=aspect_ratio))
    assert image.size == size
    assert image.mode == "RGB"


def test_render_image_default_is_square_768() -> None:
    assert open_png(render_image("anything")).size == (768, 768)


@pytest.mark.parametrize("long_side", [64, 255, 501, 1023])
def test_render_image_dimensions_are_even(long_side: int) -> None:
    for aspect_ratio in ("1:1", "2:3", "3:2", "16:9", "9:16"):
        w, h = open_png(render_image("even", aspect_ratio=aspect_ratio, long_side=long_side)).size
        assert w % 2 == 0
        assert h % 2 == 0
        assert max(w, h) in (long_side, long_side - 1)


def test_render_image_is_deterministic() -> None:
    first = render_image("a red fox in the snow", aspect_ratio="3:2", long_side=400)
    second = render_image("a red fox in the snow", aspect_ratio="3:2", long_side=400)
    assert first == second


def test_render_image_differs_between_prompts() -> None:
    a = render_image("a red fox in the snow")
    b = render_image("a bowl of ramen")
    assert a != b
    # The artwork itself must differ, not just the caption: compare the area above the band.
    top = (0, 0, 768, 500)
    assert mean_difference(open_png(a).crop(top), open_png(b).crop(top)) > 10


def test_render_image_is_not_flat() -> None:
    image = open_png(render_image("colourful"))
    colours = image.getcolors(maxcolors=1_000_000)
    assert colours is not None
    assert len(colours) > 1000
    assert max(ImageStat.Stat(image).stddev) > 10


def test_render_image_handles_odd_prompts() -> None:
    for prompt in ("", "   ", "line\nbreak\ttab\x00nul", "猫" * 500, "x" * 5000, "🦊 emoji"):
        assert open_png(render_image(prompt, long_side=256)).size == (256, 256)


def test_render_image_is_thread_safe() -> None:
    prompts = [f"prompt number {i}" for i in range(8)]
    serial = [render_image(p, long_side=256) for p in prompts]
    with ThreadPoolExecutor(max_workers=4) as pool:
        parallel = list(pool.map(lambda p: render_image(p, long_side=256), prompts))
    assert parallel == serial


@pytest.mark.parametrize("aspect_ratio", ["4:3", "1:2", "", "16x9", "square"])
def test_render_image_rejects_unsupported_aspect_ratio(aspect_ratio: str) -> None:
    with pytest.raises(MediaError, match="aspect ratio"):
        render_image("x", aspect_ratio=aspect_ratio)


@pytest.mark.parametrize("long_side", [0, 63, 5000])
def test_render_image_rejects_bad_long_side(long_side: int) -> None:
    with pytest.raises(MediaError, match="long_side"):
        render_image("x", long_side=long_side)


def test_media_error_is_a_value_error() -> None:
    assert issubclass(MediaError, ValueError)


# ---------------------------------------------------------------------------------------------
# render_video
# ---------------------------------------------------------------------------------------------


def test_render_video_defaults() -> None:
    data = render_video("a paper boat on a river")
    assert sniff_content_type(data) == "video/mp4"
    video = DecodedVideo(data)
    assert video.codec == "h264"
    assert video.pix_fmt == "yuv420p"
    assert (video.width, video.height) == (320, 480)
    assert video.rate == 12
    assert len(video.frames) == 36
    assert all(frame.size == (320, 480) for frame in video.frames)


def test_render_video_is_faststart() -> None:
    boxes = top_level_boxes(render_video("index first", seconds=1.0, long_side=128))
    assert boxes[0] == b"ftyp"
    assert boxes.index(b"moov") < boxes.index(b"mdat")


@pytest.mark.parametrize(
    ("seconds", "fps", "aspect_ratio", "long_side", "size", "count"),
    [
        (1.0, 8, "16:9", 256, (256, 144), 8),
        (2.5, 10, "1:1", 200, (200, 200), 25),
        (0.5, 24, "9:16", 321, (180, 320), 12),
    ],
)
def test_render_video_length_and_size(
    seconds: float,
    fps: int,
    aspect_ratio: str,
    long_side: int,
    size: tuple[int, int],
    count: int,
) -> None:
    video = DecodedVideo(
        render_video(
            "a comet", seconds=seconds, fps=fps, aspect_ratio=aspect_ratio, long_side=long_side
        )
    )
    assert (video.width, video.height) == size
    assert len(video.frames) == count
    assert video.rate == fps


def test_render_video_is_animated() -> None:
    frames = DecodedVideo(render_video("moving shapes", long_side=240)).frames
    assert mean_difference(frames[0], frames[len(frames) // 2]) > 2


def test_render_video_content_is_deterministic() -> None:
    a = DecodedVideo(render_video("same", seconds=1.0, long_side=160)).frames
    b = DecodedVideo(render_video("same", seconds=1.0, long_side=160)).frames
    other = DecodedVideo(render_video("different", seconds=1.0, long_side=160)).frames
    assert len(a) == len(b) == len(other) == 12
    # Only the pictures are promised to repeat, not the encoder's bytes: allow codec noise.
    assert all(mean_difference(x, y) < 3.0 for x, y in zip(a, b, strict=True))
    assert all(mean_difference(x, y) > 20.0 for x, y in zip(a, other, strict=True))


def test_render_video_matches_the_prompt_artwork() -> None:
    still = open_png(render_image("a harbour", aspect_ratio="2:3", long_side=480))
    first = DecodedVideo(render_video("a harbour", seconds=1.0)).frames[0]
    other = open_png(render_image("a desert", aspect_ratio="2:3", long_side=480))
    # Same scene at t=0, only H.264/yuv420p loss apart; a different prompt is much further.
    assert mean_difference(still, first) < 6
    assert mean_difference(other, first) > 3 * mean_difference(still, first)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"seconds": 0.0}, "seconds"),
        ({"seconds": -1.0}, "seconds"),
        ({"seconds": float("nan")}, "seconds"),
        ({"seconds": 3600.0}, "seconds"),
        ({"fps": 0}, "fps"),
        ({"fps": 1000}, "fps"),
        ({"aspect_ratio": "4:3"}, "aspect ratio"),
        ({"long_side": 4096}, "long_side"),
    ],
)
def test_render_video_rejects_bad_arguments(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(MediaError, match=match):
        render_video("x", **kwargs)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------
# animate_image
# ---------------------------------------------------------------------------------------------


def test_animate_generated_png_keeps_aspect_ratio() -> None:
    png = render_image("a castle", aspect_ratio="16:9")
    video = DecodedVideo(animate_image(png))
    assert video.codec == "h264"
    assert (video.width, video.height) == (480, 270)
    assert len(video.frames) == 36
    assert mean_difference(video.frames[0], video.frames[-1]) > 2


def test_animate_jpeg_moves_over_time() -> None:
    jpeg = encode(busy_picture((300, 200)), "JPEG", quality=90)
    assert sniff_content_type(jpeg) == "image/jpeg"
    video = DecodedVideo(animate_image(jpeg, seconds=2.0, fps=10, long_side=240))
    assert (video.width, video.height) == (240, 160)
    assert len(video.frames) == 20
    first, middle, last = video.frames[0], video.frames[10], video.frames[-1]
    assert mean_difference(first, last) > 5
    assert mean_difference(first, middle) > 1


def test_animate_starts_or_ends_on_the_whole_source() -> None:
    png = render_image("source", aspect_ratio="3:2", long_side=480)
    source = open_png(png)
    video = DecodedVideo(animate_image(png))
    assert (video.width, video.height) == source.size
    near, far = sorted(mean_difference(source, f) for f in (video.frames[0], video.frames[-1]))
    # One end of the move is the whole picture (zooming out to it or in from it), within codec
    # loss; the other end is a zoomed, panned crop and clearly different.
    assert near < 5
    assert far > 2 * near


def test_animate_webp_and_transparent_png() -> None:
    webp = encode(busy_picture((200, 300)), "WEBP", quality=80)
    assert (DecodedVideo(animate_image(webp, seconds=1.0)).width, 320) == (320, 320)

    rgba = Image.new("RGBA", (128, 128), (0, 0, 0, 0))
    ImageDraw.Draw(rgba).ellipse((20, 20, 108, 108), fill=(255, 0, 0, 255))
    video = DecodedVideo(animate_image(encode(rgba, "PNG"), seconds=1.0, long_side=128))
    assert (video.width, video.height) == (128, 128)


def test_animate_honours_exif_orientation() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # stored landscape, displayed rotated 90° i.e. portrait
    jpeg = encode(busy_picture((300, 200)), "JPEG", exif=exif.tobytes())
    video = DecodedVideo(animate_image(jpeg, seconds=1.0, long_side=240))
    assert (video.width, video.height) == (160, 240)


def test_animate_tiny_and_extreme_sources_get_even_dimensions() -> None:
    for size in ((1, 1), (3, 5), (1000, 7)):
        video = DecodedVideo(animate_image(encode(busy_picture(size), "PNG"), seconds=0.5))
        assert video.width % 2 == 0
        assert video.height % 2 == 0
        assert max(video.width, video.height) == 480


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"not an image at all",
        PNG_MAGIC + b"\x00" * 64,
        b"\xff\xd8\xff\xe0" + b"garbage" * 10,
        bytes(range(256)) * 4,
    ],
)
def test_animate_rejects_garbage(data: bytes) -> None:
    with pytest.raises(MediaError, match="not an image"):
        animate_image(data)


def test_animate_rejects_truncated_image() -> None:
    png = encode(busy_picture((200, 200)), "PNG")
    with pytest.raises(MediaError, match="not an image"):
        animate_image(png[: len(png) // 2])


def test_animate_rejects_formats_outside_the_allow_list() -> None:
    gif = encode(busy_picture((64, 64)), "GIF")
    assert sniff_content_type(gif) == "image/gif"
    with pytest.raises(MediaError, match="PNG, JPEG, WebP"):
        animate_image(gif)


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares a size but has no pixel data: what a decompression bomb looks like
    before it is decoded."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        crc = zlib.crc32(kind + payload)
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return PNG_MAGIC + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


@pytest.mark.parametrize(
    "size",
    [
        (8000, 6000),  # over our 40 MP cap, under Pillow's warning threshold
        (10000, 9000),  # Pillow warns (an error under this test suite's filterwarnings)
        (20000, 20000),  # Pillow raises DecompressionBombError
    ],
)
def test_decompression_bombs_are_refused(size: tuple[int, int]) -> None:
    bomb = png_header_only(*size)
    with pytest.raises(MediaError, match="too large"):
        animate_image(bomb)
    with pytest.raises(MediaError, match="too large"):
        upscale_image(bomb)


def test_real_oversized_image_is_refused() -> None:
    # 48 megapixels of 1-bit pixels compresses to a few kB; it must be refused before decoding.
    bomb = encode(Image.new("1", (8000, 6000)), "PNG")
    assert len(bomb) < 100_000
    with pytest.raises(MediaError, match="too large"):
        upscale_image(bomb)


def test_header_only_png_is_garbage_when_small() -> None:
    with pytest.raises(MediaError, match="not an image"):
        upscale_image(png_header_only(64, 64))


def test_animate_rejects_bad_arguments() -> None:
    png = encode(busy_picture((64, 64)), "PNG")
    with pytest.raises(MediaError, match="seconds"):
        animate_image(png, seconds=0)
    with pytest.raises(MediaError, match="long_side"):
        animate_image(png, long_side=10)


# ---------------------------------------------------------------------------------------------
# upscale_image
# ---------------------------------------------------------------------------------------------


def test_upscale_doubles_exactly_and_returns_png() -> None:
    data = upscale_image(render_image("upscale me", aspect_ratio="16:9"))
    assert sniff_content_type(data) == "image/png"
    assert open_png(data).size == (1536, 864)


def test_upscale_is_a_real_lanczos_resample() -> None:
    source = busy_picture((101, 77))
    result = open_png(upscale_image(encode(source, "PNG"), factor=3))
    assert result.size == (303, 231)
    expected = source.resize((303, 231), Image.Resampling.LANCZOS)
    assert result.tobytes() == expected.tobytes()


@pytest.mark.parametrize(
    ("image", "params", "mode"),
    [
        (Image.new("RGBA", (40, 30), (10, 200, 30, 128)), {}, "RGBA"),
        (Image.new("L", (40, 30), 128), {}, "L"),
        (busy_picture((40, 30)).convert("P"), {}, "RGB"),
        (Image.new("P", (40, 30), 0), {"transparency": 0}, "RGBA"),
        (Image.new("RGB", (40, 30), (1, 2, 3)), {"transparency": (1, 2, 3)}, "RGBA"),
        (Image.new("1", (40, 30), 1), {}, "RGB"),
    ],
)
def test_upscale_handles_modes(image: Image.Image, params: dict[str, object], mode: str) -> None:
    result = open_png(upscale_image(encode(image, "PNG", **params)))
    assert result.size == (80, 60)
    assert result.mode == mode


def test_upscale_jpeg_source_becomes_png() -> None:
    jpeg = encode(busy_picture((64, 48)), "JPEG")
    data = upscale_image(jpeg, factor=4)
    assert open_png(data).size == (256, 192)


@pytest.mark.parametrize("data", [b"", b"garbage bytes", b"GIF89a" + b"\x00" * 20])
def test_upscale_rejects_garbage(data: bytes) -> None:
    with pytest.raises(MediaError, match="not an image"):
        upscale_image(data)


def test_upscale_refuses_results_over_8192() -> None:
    wide = encode(Image.new("RGB", (4097, 8)), "PNG")
    with pytest.raises(MediaError, match="8192"):
        upscale_image(wide)
    # Exactly at the limit is allowed.
    assert open_png(upscale_image(encode(Image.new("RGB", (4096, 2)), "PNG"))).size == (8192, 4)


@pytest.mark.parametrize("factor", [0, -2, 9])
def test_upscale_rejects_bad_factor(factor: int) -> None:
    with pytest.raises(MediaError, match="factor"):
        upscale_image(encode(Image.new("RGB", (8, 8)), "PNG"), factor=factor)


# ---------------------------------------------------------------------------------------------
# sniff_content_type
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "expected"),
    [
        ("PNG", "image/png"),
        ("JPEG", "image/jpeg"),
        ("WEBP", "image/webp"),
        ("GIF", "image/gif"),
    ],
)
def test_sniff_images(fmt: str, expected: str) -> None:
    assert sniff_content_type(encode(busy_picture((16, 16)), fmt)) == expected


def test_sniff_generated_media() -> None:
    assert sniff_content_type(render_image("x", long_side=64)) == "image/png"
    assert sniff_content_type(render_video("x", seconds=0.5, long_side=64)) == "video/mp4"
    assert sniff_content_type(b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00") == "video/mp4"


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x89PN",
        b"hello world, this is text",
        b"RIFF\x00\x00\x00\x00WAVEfmt ",
        b"\x00\x00\x00\x1cftypavif\x00\x00\x00\x00",
        b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00",
        b"GIF90a",
        bytes(64),
    ],
)
def test_sniff_unknown(data: bytes) -> None:
    assert sniff_content_type(data) is None
