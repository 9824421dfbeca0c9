"""A hostile-image corpus for the HTTP API's `input_image`, generated (nothing binary is kept).

Each `Case` is the text a client sends (base64 or a data URL) and what `imaging.decode_base64`
then `imaging.load_image` must make of it: an RGB image of a given size, or an `ImageError` whose
message contains a given phrase. Categories: decompression bombs in every format the decoder
sees, truncations, polyglots, colour modes, animations, extreme sizes, EXIF orientations,
data URLs, malformed base64, and empty or random input.

    python tests/hostile_images.py OUTDIR

writes every case to OUTDIR/<category>/ (the encoded bytes, or the text when the case is about
the text itself) with OUTDIR/manifest.json of expected outcomes, to replay against a server.
"""

from __future__ import annotations

import base64
import functools
import io
import json
import struct
import sys
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image, PngImagePlugin

from openkontext.imaging import DEFAULT_LIMITS

RED, BLUE, GREEN, BLACK, WHITE = (220, 30, 30), (30, 60, 220), (40, 170, 60), (0,) * 3, (255,) * 3
SIDE = DEFAULT_LIMITS.max_side
TOO_BIG = f"over the {SIDE} px per side limit"
BOMB = "decompression bomb"  # Pillow's own guard, past twice its 89 Mpx warning size
UNSUPPORTED = "unsupported input"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
Size, RGB = tuple[int, int], tuple[int, int, int]


@dataclass(frozen=True)
class Case:
    """One input, and what decoding it must give."""

    name: str  # "category/what", unique
    text: str  # what a client sends as input_image
    data: bytes | None = None  # the encoded image `text` carries; None when the text is the point
    refused: str | None = None  # a phrase of the ImageError's message; None: accepted
    size: Size | None = None  # (width, height) once decoded, when accepted
    corner: RGB | None = None  # RGB at (0, 0) once decoded, when accepted
    header_only: bool = False  # refused from the header alone: no pixel may be decoded

    @property
    def category(self) -> str:
        return self.name.split("/")[0]


def accepted(name: str, data: bytes, size: Size, corner: RGB | None = None) -> Case:
    return Case(name, b64(data), data, size=size, corner=corner)


def refused(name: str, data: bytes, phrase: str, header_only: bool = False) -> Case:
    return Case(name, b64(data), data, refused=phrase, header_only=header_only)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


# --- Building blocks --------------------------------------------------------------------------


def encode(img: Image.Image, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kwargs)
    return buf.getvalue()


def picture(size: Size = (48, 32)) -> Image.Image:
    """Blue with a red top-left quarter: (0, 0) tells whether a rotation was applied."""
    img = Image.new("RGB", size, BLUE)
    img.paste(RED, (0, 0, size[0] // 2, size[1] // 2))
    return img


def noise(size: Size = (48, 32), seed: int = 0) -> Image.Image:
    """Incompressible content, so a truncation always cuts into pixel data."""
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


def chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png(width: int, height: int, idat: bytes = b"", extra: bytes = b"", depth: int = 8) -> bytes:
    """An RGB PNG built by hand: it may declare any size, whatever its pixel data `idat` holds
    (by default, 64 zero bytes). `extra` is chunks to put before the pixel data."""
    ihdr = chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, depth, 2, 0, 0, 0))
    idat = chunk(b"IDAT", idat or zlib.compress(bytes(64)))
    return PNG_SIGNATURE + ihdr + extra + idat + chunk(b"IEND", b"")


def zeros_deflated(n: int) -> bytes:
    """n zero bytes, deflated without ever holding them: about 1 KB per MB."""
    z, block = zlib.compressobj(9), bytes(1 << 20)
    out = [z.compress(block[: min(len(block), n - i)]) for i in range(0, n, len(block))]
    return b"".join(out) + z.flush()


def gif(screen: Size, frame: Size) -> bytes:
    """A GIF built by hand: one frame whose LZW data paints one red pixel."""
    head = b"GIF89a" + struct.pack("<HHBBB", *screen, 0x80, 0, 0) + bytes(RED + BLUE)
    return head + b"," + struct.pack("<HHHHB", 0, 0, *frame, 0) + b"\x02\x02\x44\x01\x00;"


def jpeg_segments(data: bytes) -> list[bytes]:
    """JPEG -> its segments after SOI, each from its marker; a scan keeps its entropy data."""
    segments, i = [], 2
    while i < len(data) and data[i + 1] != 0xD9:
        end = i + 2 + int.from_bytes(data[i + 2 : i + 4], "big")
        if data[i + 1] == 0xDA:  # entropy data runs to the next marker that is not 0xff00/RSTn
            while not (data[end] == 0xFF and data[end + 1] not in (0, *range(0xD0, 0xD8))):
                end += 1
        segments.append(data[i:end])
        i = end
    return segments


def jpeg_declaring(width: int, height: int) -> bytes:
    """A small baseline JPEG whose frame header (SOF0) is rewritten to declare another size."""
    segments = jpeg_segments(encode(picture((16, 16)), "JPEG"))
    sof = next(i for i, s in enumerate(segments) if s[1] == 0xC0)
    s = segments[sof]
    segments[sof] = s[:5] + struct.pack(">HH", height, width) + s[9:]
    return b"\xff\xd8" + b"".join(segments) + b"\xff\xd9"


def jpeg_with_scans(extra: int) -> bytes:
    """A progressive JPEG with its last scan repeated `extra` more times (each a few bytes)."""
    segments = jpeg_segments(encode(Image.new("L", (64, 64), 128), "JPEG", progressive=True))
    return b"\xff\xd8" + b"".join(segments) + segments[-1] * extra + b"\xff\xd9"


def webp_declaring(width: int, height: int, kind: str) -> bytes:
    """A 16x16 WebP whose header is rewritten: the VP8X canvas of an animation, or the frame
    size of a lossless (VP8L) or lossy (VP8) still."""
    frames = [Image.new("RGB", (16, 16), c) for c in (RED, BLUE)]
    if kind == "VP8X":
        d = bytearray(
            encode(frames[0], "WEBP", save_all=True, append_images=frames[1:], lossless=True)
        )
        d[24:30] = (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little")
    elif kind == "VP8L":
        d = bytearray(encode(frames[0], "WEBP", lossless=True))
        flags = int.from_bytes(d[21:25], "little") >> 28 << 28  # 14 + 14 bits of size - 1
        d[21:25] = (flags | (width - 1) | (height - 1) << 14).to_bytes(4, "little")
    else:
        d = bytearray(encode(frames[0], "WEBP", quality=80))
        assert d[23:26] == b"\x9d\x01\x2a", "not a simple lossy WebP"
        d[26:30] = struct.pack("<HH", width, height)
    assert d[12:16] == kind.encode().ljust(4), f"Pillow wrote {d[12:16]!r}, not {kind}"
    return bytes(d)


def avif_declaring(width: int, height: int) -> bytes:
    """A 16x16 AVIF whose image spatial extents box (ispe) declares another size."""
    d = bytearray(encode(picture((16, 16)), "AVIF", quality=60))
    i = d.index(b"ispe")
    d[i + 8 : i + 16] = struct.pack(">II", width, height)
    return bytes(d)


def exif_block(orientation: int, tag_type: int = 3) -> bytes:
    """A big-endian EXIF block holding only the orientation tag, of any TIFF type."""
    value = struct.pack(">HH", orientation, 0) if tag_type == 3 else struct.pack(">I", orientation)
    entry = struct.pack(">HHI", 0x0112, tag_type, 1) + value
    return b"Exif\0\0MM\0*\0\0\0\x08\0\x01" + entry + b"\0\0\0\0"


def stored_for(orientation: int, img: Image.Image) -> Image.Image:
    """The pixels a camera stores for an upright `img` when it tags them `orientation`."""
    t = Image.Transpose
    undo = {
        2: t.FLIP_LEFT_RIGHT,
        3: t.ROTATE_180,
        4: t.FLIP_TOP_BOTTOM,
        5: t.TRANSPOSE,
        6: t.ROTATE_90,
        7: t.TRANSVERSE,
        8: t.ROTATE_270,
    }
    return img.transpose(undo[orientation]) if orientation in undo else img.copy()


# --- The corpus, by category ------------------------------------------------------------------


def refusals(category: str, rows: dict[str, tuple[bytes, str]], header_only=False) -> list[Case]:
    """{name: (data, phrase)} -> cases refused with that phrase."""
    return [refused(f"{category}/{k}", d, p, header_only) for k, (d, p) in rows.items()]


def texts(category: str, good: dict[str, str], bad: dict[str, tuple[str, str]]) -> list[Case]:
    """Cases about the text itself: {name: text} carries `picture()`; {name: (text, phrase)} is
    refused with that phrase."""
    accept = [Case(f"{category}/{k}", t, size=(48, 32), corner=RED) for k, t in good.items()]
    return accept + [Case(f"{category}/{k}", t, refused=p) for k, (t, p) in bad.items()]


def bombs() -> list[Case]:
    """Huge declared sizes over tiny data in every format, and compressed metadata: refused from
    the header, before any pixel is decoded. Two bombs within the limits are accepted."""
    text = zeros_deflated(16 << 20)  # 16 MB of text in 16 KB; Pillow stops at 1 MB
    pixels = zlib.compress(bytes(8 * (1 + 8 * 3)))  # an 8x8 RGB image
    large = "Decompressed data too large"
    bmp = b"BM" + struct.pack("<IHHIIiiHH", 54, 0, 0, 54, 40, 100_000, 100_000, 1, 24) + bytes(24)
    tiff_tags = struct.pack("<HHIIHHII", 256, 4, 1, 100_000, 257, 4, 1, 100_000)  # width, length
    tiff = b"II*\0\x08\0\0\0\x02\0" + tiff_tags + bytes(4)
    rows = {
        "png 100000x100000": (png(100_000, 100_000), BOMB),
        "png 2^31x1": (png(1 << 31, 1), BOMB),
        "png 10000x10000 (Pillow only warns)": (png(10_000, 10_000), TOO_BIG),
        "png one px over the side": (png(SIDE + 1, SIDE + 1), TOO_BIG),
        "png zTXt": (png(8, 8, pixels, chunk(b"zTXt", b"k\0\0" + text)), large),
        "png iTXt": (png(8, 8, pixels, chunk(b"iTXt", b"k\0\1\0\0\0" + text)), large),
        "png iCCP": (png(8, 8, pixels, chunk(b"iCCP", b"p\0\0" + text)), large),
        "gif screen 65535x65535": (gif((65535, 65535), (1, 1)), BOMB),
        "gif frame 65535x65535": (gif((1, 1), (65535, 65535)), BOMB),
        "gif screen 4000x4000": (gif((4000, 4000), (1, 1)), TOO_BIG),
        "jpeg 65500x65500": (jpeg_declaring(65500, 65500), BOMB),
        "jpeg 5000x5000": (jpeg_declaring(5000, 5000), TOO_BIG),
        "jpeg 1000 empty progressive scans": (jpeg_with_scans(1000), "scan limit"),
        "webp animation canvas 16384x16384": (webp_declaring(16384, 16384, "VP8X"), BOMB),
        "webp animation canvas 2^24x2^24": (webp_declaring(1 << 24, 1 << 24, "VP8X"), BOMB),
        "webp animation canvas 5000x5000": (webp_declaring(5000, 5000, "VP8X"), TOO_BIG),
        "webp lossless 16384x16384": (webp_declaring(16384, 16384, "VP8L"), BOMB),
        "webp lossy 16383x16383": (webp_declaring(16383, 16383, "VP8"), BOMB),
        "avif 16384x16384": (avif_declaring(16384, 16384), BOMB),
        "avif 5000x5000": (avif_declaring(5000, 5000), TOO_BIG),
        "avif 100000x100000": (avif_declaring(100_000, 100_000), "could not read the AVIF"),
        "bmp 100000x100000": (bmp, f"{UNSUPPORTED}: BMP"),
        "tiff 100000x100000": (tiff, f"{UNSUPPORTED}: TIFF"),
        "over the byte limit": (PNG_SIGNATURE + bytes(DEFAULT_LIMITS.max_bytes), "byte limit"),
    }
    over = "A" * (DEFAULT_LIMITS.max_bytes * 4 // 3 + 16)
    return [
        *refusals("bomb", rows, header_only=True),
        Case("bomb/base64 over the byte limit", over, refused="byte limit", header_only=True),
        accepted(
            "bomb/png of 11 MB of pixels in 11 KB, within limits",
            png(SIDE, SIDE, zeros_deflated(SIDE * (1 + 3 * SIDE))),
            (SIDE, SIDE),
            BLACK,
        ),
        accepted("bomb/jpeg with 50 empty scans, within limits", jpeg_with_scans(50), (64, 64)),
    ]


def truncations() -> list[Case]:
    """Valid files cut short at several offsets: refused, naming the format. Files missing only
    what follows the pixels are accepted."""
    img = noise()
    files = {
        "png": encode(img, "PNG"),
        "jpeg": encode(img, "JPEG", quality=90),
        "jpeg progressive": encode(img, "JPEG", progressive=True),
        "gif": encode(img, "GIF"),
        "webp lossy": encode(img, "WEBP", quality=90),
        "webp lossless": encode(img, "WEBP", lossless=True),
        "avif": encode(img, "AVIF", quality=90),
    }
    cases = []
    for name, data in files.items():
        n, fmt = len(data), name.split()[0].upper()
        for cut in (16, 40, n // 4, n // 2, 3 * n // 4, n - 40):
            cases.append(refused(f"truncated/{name} at {cut} of {n}", data[:cut], f"{fmt} image"))
    rows = {
        "png signature only": (files["png"][:8], "PNG image"),
        "half a png signature": (files["png"][:4], UNSUPPORTED),
        "jpeg without EOI": (files["jpeg"][:-2], "JPEG image"),
    }
    return [
        *cases,
        *refusals("truncated", rows),
        accepted("truncated/png without IEND", files["png"][:-12], img.size),
        # The pixels are all there: the zlib checksum is not needed to decode them.
        accepted("truncated/png without zlib checksum, CRC, IEND", files["png"][:-20], img.size),
        accepted("truncated/gif without its trailer", files["gif"][:-1], img.size),
    ]


def polyglots() -> list[Case]:
    """Files that are two things at once. Data after an image is ignored; before it, refused."""
    pic, jpg = encode(picture(), "PNG"), encode(picture(), "JPEG", quality=95)
    zip_file = b"PK\x03\x04" + bytes(26) + b"PK\x05\x06" + bytes(18)
    html = b"<html><script>alert(document.domain)</script></html>"
    info = PngImagePlugin.PngInfo()
    info.add_text("Comment", html.decode())
    images = {
        "png then zip": pic + zip_file,
        "png then html": pic + html,
        "jpeg then zip": jpg + zip_file,
        "png with html in a text chunk": encode(picture(), "PNG", pnginfo=info),
        "jpeg with html in a comment": encode(picture(), "JPEG", quality=95, comment=html),
    }
    svg = b'<svg xmlns="http://www.w3.org/2000/svg"><image href="data:image/png;base64,'
    rows = {
        "html then png": (html + pic, f"{UNSUPPORTED}: HTML"),
        "zip then png": (zip_file + pic, "unrecognised data (starts 50 4b 03 04"),
        "pdf then jpeg": (b"%PDF-1.4\n" + jpg, f"{UNSUPPORTED}: PDF"),
        "svg with a png inside": (svg + pic[:64] + b'"/></svg>', f"{UNSUPPORTED}: SVG"),
        # GIF89a/*...*/=1;: JavaScript whose first bytes are a GIF header. The GIF then
        # declares a 10799 px wide screen ("/*" read as a little-endian width).
        "gif header that is javascript": (gif((0x2A2F, 10), (1, 1)) + b"*/=1;", "10799x10 px"),
    }
    ok = [accepted(f"polyglot/{k}", d, (48, 32), RED) for k, d in images.items()]
    return ok + refusals("polyglot", rows)


def modes() -> list[Case]:
    """Every colour mode the formats can carry becomes 8-bit RGB, transparency onto white."""
    palette = Image.new("P", (8, 8), 0)
    palette.putpalette(list(RED) + list(BLUE))
    rgba = Image.new("RGBA", (8, 8), (*BLUE, 0))
    grey16 = Image.fromarray(np.full((8, 8), 65535, np.uint16))
    rgb16 = png(8, 8, zlib.compress((b"\0" + struct.pack(">HHH", 65535, 0, 0) * 8) * 8), depth=16)
    cmyk = Image.new("CMYK", (8, 8), (0, 255, 255, 0))
    rows = {
        "jpeg cmyk": (encode(cmyk, "JPEG", quality=95), (255, 0, 0)),
        "jpeg grey": (encode(Image.new("L", (8, 8), 77), "JPEG"), (77, 77, 77)),
        "png 16-bit grey (I;16)": (encode(grey16, "PNG"), WHITE),
        "png 16-bit rgb": (rgb16, (255, 0, 0)),
        "png 1-bit": (encode(Image.new("1", (8, 8), 1), "PNG"), WHITE),
        "png palette": (encode(palette, "PNG"), RED),
        "png palette, index 0 transparent": (encode(palette, "PNG", transparency=0), WHITE),
        "gif palette, index 0 transparent": (encode(palette, "GIF", transparency=0), WHITE),
        "png grey + alpha (LA)": (encode(Image.new("LA", (8, 8), (0, 0)), "PNG"), WHITE),
        "png rgba, transparent": (encode(rgba, "PNG"), WHITE),
        "webp rgba, transparent": (encode(rgba, "WEBP", lossless=True), WHITE),
        "png with a broken ICC profile": (encode(rgba, "PNG", icc_profile=b"not ICC"), WHITE),
    }
    return [accepted(f"mode/{k}", d, (8, 8), c) for k, (d, c) in rows.items()]


def animations() -> list[Case]:
    """Only the first frame is decoded."""
    frames = [Image.new("RGB", (20, 20), c) for c in (RED, BLUE, GREEN)]
    anim = {"save_all": True, "append_images": frames[1:], "duration": 100}
    rows = {
        "gif": encode(frames[0], "GIF", **anim),
        "webp": encode(frames[0], "WEBP", lossless=True, **anim),
        "apng": encode(frames[0], "PNG", **anim),
        "mpo": encode(frames[0], "MPO", **anim),
    }
    return [accepted(f"animation/{k}", d, (20, 20), RED) for k, d in rows.items()]


def sizes() -> list[Case]:
    """The smallest images, and the thinnest on either side of the side limit."""

    def flat(size: Size, fmt: str = "PNG") -> bytes:
        return encode(Image.new("RGB", size, RED), fmt)

    rows = {
        f"png {SIDE + 1}x1": (flat((SIDE + 1, 1)), TOO_BIG),
        "png 10000x1": (flat((10_000, 1)), "10000x1 px, " + TOO_BIG),
        "png 1x10000": (flat((1, 10_000)), "1x10000 px, " + TOO_BIG),
        "jpeg 10000x1": (flat((10_000, 1), "JPEG"), "10000x1 px"),
        "gif 1x10000": (gif((1, 10_000), (1, 10_000)), "1x10000 px"),
        "png 0x0": (png(0, 0), "PNG image"),
    }
    return [
        accepted("size/png 1x1", flat((1, 1)), (1, 1), RED),
        accepted("size/gif 1x1", gif((1, 1), (1, 1)), (1, 1), RED),
        accepted("size/webp 1x1", flat((1, 1), "WEBP"), (1, 1)),
        accepted("size/jpeg 1x1", flat((1, 1), "JPEG"), (1, 1)),
        accepted(f"size/png {SIDE}x1", flat((SIDE, 1)), (SIDE, 1), RED),
        accepted(f"size/png 1x{SIDE}", flat((1, SIDE)), (1, SIDE), RED),
        *refusals("size", rows, header_only=True),
    ]


def orientations() -> list[Case]:
    """EXIF orientations 1-8 are applied (5-8 swap width and height), as is XMP's; orientation
    metadata out of range, of the wrong type or unreadable is ignored."""
    upright = picture()
    cases = []
    for fmt in ("png", "jpeg", "webp"):
        for o in range(1, 9):
            data = encode(stored_for(o, upright), fmt, exif=exif_block(o), quality=95)
            cases.append(accepted(f"exif/{fmt} orientation {o}", data, upright.size, RED))
    sideways = stored_for(6, upright)  # (32, 48); upright only if the tag is read
    xmp = b'<x:xmpmeta><rdf:Description tiff:Orientation="6"/></x:xmpmeta>'
    info = PngImagePlugin.PngInfo()
    info.add_itxt("XML:com.adobe.xmp", xmp.decode())
    for fmt, data in (
        ("png", encode(sideways, "PNG", pnginfo=info)),
        ("jpeg", encode(sideways, "JPEG", quality=95, xmp=xmp)),
    ):
        cases.append(accepted(f"exif/{fmt} xmp orientation 6", data, upright.size, RED))
    ignored = {
        "orientation 0": exif_block(0),
        "orientation 9": exif_block(9),
        "orientation 65535": exif_block(65535),
        "orientation as a rational": exif_block(6, tag_type=5),
        "unreadable exif": b"Exif\0\0\x01\x02\x03",
        "exif cut mid-entry": exif_block(6)[:20],
    }
    for label, exif in ignored.items():
        for fmt in ("png", "jpeg", "webp"):
            data = encode(sideways, fmt, exif=exif, quality=95)
            cases.append(accepted(f"exif/{fmt} {label}", data, sideways.size))
    return cases


def data_urls() -> list[Case]:
    """The media type must be image/* (or left out) and the encoding base64; the bytes decide
    the format, not the media type."""
    body = b64(encode(picture(), "PNG"))
    images = {
        "image/png": f"data:image/png;base64,{body}",
        "upper case": f"DATA:IMAGE/PNG;BASE64,{body}",
        "with a charset": f"data:image/png;charset=utf-8;base64,{body}",
        "no media type": f"data:;base64,{body}",
        "image/png holding a jpeg": f"data:image/png;base64,{b64(encode(picture(), 'JPEG'))}",
    }
    rows = {
        "text/html": (f"data:text/html;base64,{body}", "'text/html', expected image/*"),
        "octet-stream": (f"data:application/octet-stream;base64,{body}", "expected image/*"),
        "without ;base64": (f"data:image/png,{body}", "not base64-encoded"),
        "percent-encoded": ("data:image/png,%89PNG%0D%0A", "not base64-encoded"),
        "no comma": (f"data:image/png;base64{body}", "no ','"),
        "empty data": ("data:image/png;base64,", "empty input"),
        "svg": (f"data:image/svg+xml;base64,{b64(b'<svg></svg>')}", f"{UNSUPPORTED}: SVG"),
        "non-ASCII media type": (f"data:image/pñg;base64,{body}", "non-ASCII character 'ñ'"),
    }
    return texts("data-url", images, rows)


def bad_base64() -> list[Case]:
    """Base64 is ASCII: any other character is named. Whitespace, missing padding and the
    URL-safe alphabet (even mixed with the standard one) are accepted."""
    pic = encode(picture(), "PNG")
    body, urlsafe = b64(pic), base64.urlsafe_b64encode(pic).decode()
    mid = len(body) // 2
    images = {
        "wrapped at 76 with CRLF": "\r\n".join(body[i : i + 76] for i in range(0, len(body), 76)),
        "tabs, spaces and newlines around": f"\t \n{body}\n\n ",
        "no padding": body.rstrip("="),
        "url-safe alphabet": urlsafe,
        "url-safe and standard mixed": "".join(
            u if i % 2 else s for i, (s, u) in enumerate(zip(body, urlsafe, strict=True))
        ),
    }
    rows = {
        "non-ASCII letter": ("AAA\u00e9", "non-ASCII character 'é' (U+00E9) at offset 3"),
        "non-ASCII in an image": (f"{body[:mid]}é{body[mid:]}", f"(U+00E9) at offset {mid}"),
        "fullwidth letters": ("ＡＡＡＡ", "non-ASCII character 'Ａ' (U+FF21)"),
        "zero-width space": (f"{body[:mid]}\u200b{body[mid:]}", "(U+200B)"),
        "no-break space": (f"{body[:mid]}\u00a0{body[mid:]}", "(U+00A0)"),
        "emoji": ("🙂" * 4, "(U+1F642)"),
        "NUL": (f"{body[:mid]}\0{body[mid:]}", "character '\\x00'"),
        "punctuation": ("aGVsbG8gd29ybGQ!", "character '!'"),
        "percent-encoded": (f"{body[:mid]}%2B{body[mid:]}", "character '%'"),
        "padding in the middle": ("aGVs=G8=", "character '='"),
        "too much padding": ("aGk===", "3 '=' of padding after 3 characters"),
        "padding only": ("====", "4 '=' of padding after 0 characters"),
        "length 4n+1": (body[: mid // 4 * 4] + "A", "invalid base64: length"),
        "one character": ("A", "length 1 cannot be a valid encoding"),
    }
    return texts("base64", images, rows)


def junk() -> list[Case]:
    """Nothing, zeros, random bytes, text, known signatures followed by noise, other formats."""
    rng = np.random.default_rng(1234)
    noise_bytes = {n: rng.integers(0, 256, n, dtype=np.uint8).tobytes() for n in (1, 16, 65536)}
    tail = noise_bytes[65536][:2000]
    rows = {
        "zero bytes": (b"", "empty input"),
        "one NUL byte": (b"\0", "unrecognised data (starts 00)"),
        "4 KB of NUL": (bytes(4096), "unrecognised data (starts 00 00"),
        **{f"{n} random bytes": (data, UNSUPPORTED) for n, data in noise_bytes.items()},
        "text": (b"Hello! This is an ordinary sentence.\n", "text, not an image (starts 'Hello!"),
        "png signature then noise": (PNG_SIGNATURE + tail, "PNG image"),
        "jpeg SOI then noise": (b"\xff\xd8\xff" + tail, "JPEG image"),
        "gif header then noise": (b"GIF89a\x10\0\x10\0" + tail, "GIF image"),
        "webp header then noise": (b"RIFF\xff\xff\0\0WEBPVP8 " + tail, "WEBP image"),
        "avif header then noise": (b"\0\0\0\x1cftypavif" + tail, "AVIF image"),
        "bmp": (encode(picture(), "BMP"), f"{UNSUPPORTED}: BMP"),
        "tiff": (encode(picture(), "TIFF"), f"{UNSUPPORTED}: TIFF"),
        "ico": (encode(picture(), "ICO"), f"{UNSUPPORTED}: ICO"),
        "pdf": (encode(picture(), "PDF"), f"{UNSUPPORTED}: PDF"),
        "heic brand": (b"\0\0\0\x18ftypheic" + bytes(64), f"{UNSUPPORTED}: HEIF"),
        "jpeg xl": (b"\xff\x0a" + tail, f"{UNSUPPORTED}: JPEG XL"),
    }
    return [
        Case("junk/empty string", "", refused="empty input"),
        Case("junk/whitespace only", " \t\r\n ", refused="empty input"),
        *refusals("junk", rows),
    ]


@functools.cache
def corpus() -> tuple[Case, ...]:
    cases = (
        *bombs(),
        *truncations(),
        *polyglots(),
        *modes(),
        *animations(),
        *sizes(),
        *orientations(),
        *data_urls(),
        *bad_base64(),
        *junk(),
    )
    names = [c.name for c in cases]
    assert len(set(names)) == len(names), "case names must be unique"
    return cases


def write(outdir: Path) -> None:
    """Every case as a file under outdir/<category>/, and manifest.json of expected outcomes."""
    manifest = []
    for case in corpus():
        stem = "".join(c if c.isalnum() or c in "-." else "_" for c in case.name.split("/", 1)[1])
        path = Path(case.category) / (f"{stem}.bin" if case.data is not None else f"{stem}.txt")
        (outdir / path).parent.mkdir(parents=True, exist_ok=True)
        if case.data is not None:
            (outdir / path).write_bytes(case.data)
        else:
            (outdir / path).write_bytes(case.text.encode("utf-8"))
        kind = "text" if case.data is None else "bytes"
        expected = {k: v for k, v in asdict(case).items() if k not in ("text", "data")}
        manifest.append({"file": str(path), "as": kind, **expected})
    (outdir / "manifest.json").write_text(json.dumps(manifest, indent=1, ensure_ascii=False))
    print(f"wrote {len(manifest)} cases to {outdir}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python tests/hostile_images.py OUTDIR")
    write(Path(sys.argv[1]))
