"""Tests for openkontext.imaging: real files made with Pillow, no mocks."""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import io
import json
import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image, ImageCms, ImageDraw, ImageFilter

from openkontext import imaging
from openkontext.imaging import (
    DEFAULT_LIMITS,
    ImageError,
    ImageLimits,
    OutputMetadata,
    decode_base64,
    detect_watermark,
    embed_watermark,
    encode_image,
    image_to_array,
    image_to_tensor,
    load_image,
    load_image_base64,
    resize_image,
    tensor_to_images,
    tensor_to_uint8,
    to_data_url,
    watermark_score,
)

RED, BLUE, GREEN, YELLOW, CYAN, BLACK = ((220, 40, 40), (40, 80, 220), (50, 170, 70),
                                         (240, 210, 50), (40, 190, 210), (25, 25, 25))
WHITE, GREY = (255, 255, 255), (127, 127, 127)


def encoded(img: Image.Image, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kwargs)
    return buf.getvalue()


def blocks() -> Image.Image:
    """48x32 image of six 16x16 colour blocks (3 across, 2 down): asymmetric under any flip."""
    img = Image.new("RGB", (48, 32))
    draw = ImageDraw.Draw(img)
    for i, colour in enumerate((RED, BLUE, GREEN, YELLOW, CYAN, BLACK)):
        x, y = (i % 3) * 16, (i // 3) * 16
        draw.rectangle([x, y, x + 15, y + 15], fill=colour)
    return img


def block_centres(arr: np.ndarray) -> np.ndarray:
    return arr[8::16, 8::16].astype(int)


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_header_only(width: int, height: int) -> bytes:
    """A tiny, valid-looking PNG that declares a (possibly enormous) size."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr)
            + png_chunk(b"IDAT", zlib.compress(b"\0" * 64)) + png_chunk(b"IEND", b""))


def half(data: bytes) -> bytes:
    return data[: len(data) // 2]


def texture(size: int, seed: int = 0) -> Image.Image:
    """Photo-like content: noise blurred at several scales plus gradients."""
    rng = np.random.default_rng(seed)
    acc = np.zeros((size, size))
    for radius in (2, 8, 32):
        noise = Image.fromarray(rng.integers(0, 256, (size, size), dtype=np.uint8))
        acc += np.asarray(noise.filter(ImageFilter.GaussianBlur(radius)), float) - 128
    ramp = np.linspace(0, 60, size)
    rgb = np.stack([acc + 120 + ramp[None, :], acc + 110 + ramp[:, None], acc * 0.7 + 100], -1)
    return Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8))


def scene(size: int) -> Image.Image:
    """A Shapes World-like flat scene."""
    img = Image.new("RGB", (size, size), YELLOW)
    draw = ImageDraw.Draw(img)
    draw.ellipse([size // 10, size // 10, size // 2, size // 2], fill=RED)
    draw.rectangle([size * 6 // 10, size * 5 // 10, size * 9 // 10, size * 9 // 10], fill=BLUE)
    return img


def psnr(a: Image.Image, b: Image.Image) -> float:
    mse = np.mean((image_to_array(a).astype(float) - image_to_array(b).astype(float)) ** 2)
    return float(10 * np.log10(255**2 / mse))


# --- decoding ---------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP", "GIF", "AVIF"])
def test_each_input_format_decodes_from_a_file(tmp_path, fmt):
    path = tmp_path / f"in.{fmt.lower()}"
    blocks().save(path, fmt, **({"quality": 95} if fmt in ("JPEG", "WEBP", "AVIF") else {}))
    img = load_image(path)
    assert img.mode == "RGB" and img.size == (48, 32) and img.info == {}
    expected = block_centres(np.asarray(blocks()))
    assert np.abs(block_centres(image_to_array(img)) - expected).max() <= 6


def test_every_kind_of_source_gives_the_same_pixels(tmp_path):
    data = encoded(blocks(), "PNG")
    (tmp_path / "a.png").write_bytes(data)
    sources = [data, bytearray(data), memoryview(data), tmp_path / "a.png", str(tmp_path / "a.png"),
               Image.open(io.BytesIO(data)), blocks()]
    for source in sources:
        assert np.array_equal(image_to_array(load_image(source)), np.asarray(blocks()))
    with pytest.raises(TypeError, match="expected bytes"):
        load_image(12345)


@pytest.mark.parametrize("fmt", ["GIF", "WEBP"])
def test_animations_give_their_first_frame(fmt):
    frames = [Image.new("RGB", (20, 20), c) for c in (RED, BLUE, GREEN)]
    extra = {"lossless": True} if fmt == "WEBP" else {}
    data = encoded(frames[0], fmt, save_all=True, append_images=frames[1:], duration=100, **extra)
    assert Image.open(io.BytesIO(data)).n_frames == 3
    assert load_image(data).getpixel((10, 10)) == RED


# Where row 0 and column 0 of the stored pixels lie in the displayed image, per the EXIF
# standard, written as the numpy transform that makes the stored pixels from the displayed ones.
STORED_FROM_DISPLAYED = {
    1: lambda d: d,
    2: lambda d: d[:, ::-1],  # row 0 top, column 0 right
    3: lambda d: d[::-1, ::-1],  # row 0 bottom, column 0 right
    4: lambda d: d[::-1, :],  # row 0 bottom, column 0 left
    5: lambda d: d.transpose(1, 0, 2),  # row 0 left, column 0 top
    6: lambda d: np.rot90(d, 1),  # row 0 right, column 0 top
    7: lambda d: np.rot90(d, 1)[:, ::-1],  # row 0 right, column 0 bottom
    8: lambda d: np.rot90(d, -1),  # row 0 left, column 0 bottom
}


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP"])
def test_exif_orientation_is_applied(orientation, fmt):
    displayed = np.asarray(blocks())
    stored = Image.fromarray(np.ascontiguousarray(STORED_FROM_DISPLAYED[orientation](displayed)))
    exif = Image.Exif()
    exif[0x0112] = orientation
    lossy = {"quality": 95} if fmt != "PNG" else {}
    out = image_to_array(load_image(encoded(stored, fmt, exif=exif.tobytes(), **lossy)))
    assert out.shape == displayed.shape
    if fmt == "PNG":
        assert np.array_equal(out, displayed)
    else:
        assert np.abs(block_centres(out) - block_centres(displayed)).max() <= 6


def test_alpha_is_flattened_onto_white():
    rgba = Image.new("RGBA", (3, 1))
    rgba.putdata([(0, 0, 0, 0), (0, 0, 0, 255), (0, 0, 0, 128)])
    for fmt, extra in (("PNG", {}), ("WEBP", {"lossless": True})):
        out = load_image(encoded(rgba, fmt, **extra))
        assert [out.getpixel((x, 0)) for x in range(3)] == [WHITE, (0, 0, 0), GREY]
    assert load_image(encoded(Image.new("LA", (2, 2), (0, 64)), "PNG")).getpixel((0, 0)) == \
        (191, 191, 191)
    assert load_image(encoded(rgba, "AVIF", quality=100)).getpixel((0, 0)) == WHITE
    assert load_image(rgba).getpixel((2, 0)) == GREY


@pytest.mark.parametrize("fmt", ["PNG", "GIF"])
def test_palette_transparency_is_flattened_onto_white(fmt):
    pal = Image.new("P", (4, 4), 0)
    pal.putpalette(list(RED) + list(BLUE) + [0] * 762)
    pal.putpixel((1, 1), 1)
    out = load_image(encoded(pal, fmt, transparency=0))
    assert out.getpixel((0, 0)) == (255, 255, 255) and out.getpixel((1, 1)) == BLUE


def test_trns_transparency_in_grey_and_rgb_pngs():
    grey = encoded(Image.new("L", (2, 2), 77), "PNG", transparency=77)
    rgb = encoded(Image.new("RGB", (2, 2), (1, 2, 3)), "PNG", transparency=(1, 2, 3))
    assert load_image(grey).getpixel((0, 0)) == (255, 255, 255)
    assert load_image(rgb).getpixel((0, 0)) == (255, 255, 255)


def test_grey_bilevel_16bit_and_cmyk_become_8bit_rgb():
    assert load_image(encoded(Image.new("L", (2, 2), 77), "PNG")).getpixel((0, 0)) == (77,) * 3
    assert load_image(encoded(Image.new("1", (2, 2), 1), "PNG")).getpixel((0, 0)) == (255,) * 3
    # 16-bit grey is scaled (65535 -> 255), not clipped.
    grey16 = Image.fromarray(np.array([[0, 25700, 32768, 65535]], dtype=np.uint16))
    data = encoded(grey16, "PNG")
    assert Image.open(io.BytesIO(data)).mode == "I;16"
    assert image_to_array(load_image(data))[0, :, 0].tolist() == [0, 100, 128, 255]
    # 16-bit RGB, written by hand since Pillow does not save it.
    row = b"\0" + struct.pack(">HHH", 65535, 32768, 0) * 2
    ihdr = struct.pack(">IIBBBBB", 2, 2, 16, 2, 0, 0, 0)
    rgb16 = (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr)
             + png_chunk(b"IDAT", zlib.compress(row * 2)) + png_chunk(b"IEND", b""))
    assert load_image(rgb16).getpixel((1, 1)) == (255, 128, 0)
    cmyk = encoded(Image.new("CMYK", (8, 8), (0, 255, 255, 0)), "JPEG", quality=95)
    assert np.abs(np.subtract(load_image(cmyk).getpixel((4, 4)), (255, 0, 0))).max() <= 3


@pytest.mark.filterwarnings("ignore:Corrupt EXIF data:UserWarning")
def test_unreadable_exif_is_ignored_and_the_pixels_kept_as_stored():
    for exif in (b"Exif\0\0\x01\x02\x03", b"Exif\0\0MM\0*\0\0\0\x08\0\x05"):
        for fmt in ("PNG", "WEBP"):
            out = load_image(encoded(blocks(), fmt, exif=exif, lossless=True))
            assert np.array_equal(image_to_array(out), np.asarray(blocks())), fmt


def test_icc_profiles_are_applied_or_ignored_when_broken():
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    with_icc = load_image(encoded(blocks(), "PNG", icc_profile=srgb))
    assert np.abs(image_to_array(with_icc).astype(int) - np.asarray(blocks())).max() <= 2
    broken = load_image(encoded(blocks(), "PNG", icc_profile=b"not a profile at all"))
    assert np.array_equal(image_to_array(broken), np.asarray(blocks()))


def test_decoded_images_carry_no_input_metadata():
    exif = Image.Exif()
    exif[0x013B] = "Jane Doe"  # Artist
    img = load_image(encoded(blocks(), "JPEG", exif=exif.tobytes(), comment=b"private"))
    assert img.info == {} and len(img.getexif()) == 0
    out = Image.open(io.BytesIO(encode_image(img, "jpeg")))
    assert 0x013B not in out.getexif() and "comment" not in out.info


# --- validation -------------------------------------------------------------------------------

BAD_INPUTS = {
    "empty": (lambda: b"", "empty input: 0 bytes"),
    "text": (lambda: b"hello, this is not an image\n", "text, not an image"),
    "binary noise": (lambda: bytes(range(200)), "unrecognised data"),
    "bmp": (lambda: encoded(blocks(), "BMP"), "unsupported input: BMP"),
    "tiff": (lambda: encoded(blocks(), "TIFF"), "unsupported input: TIFF"),
    "bomb": (lambda: png_header_only(30000, 30000), "decompression bomb"),
    "declared side": (lambda: png_header_only(4000, 100), "4000x100 px, over the 1920 px per side"),
    "truncated png": (lambda: half(encoded(texture(64), "PNG")), "could not decode the PNG"),
    "truncated jpeg": (lambda: half(encoded(texture(64), "JPEG")), "JPEG image: "),
    "truncated gif": (lambda: encoded(texture(64), "GIF")[:8], "could not read the GIF image"),
    "truncated webp": (lambda: half(encoded(texture(64), "WEBP")), "WEBP image"),
    "truncated avif": (lambda: half(encoded(texture(64), "AVIF")), "AVIF image"),
    "too many bytes": (lambda: b"\x89PNG" + bytes(DEFAULT_LIMITS.max_bytes), "byte limit"),
    "too wide": (lambda: encoded(Image.new("RGB", (2000, 8)), "PNG"), "2000x8 px, over the 1920"),
    "corrupt pixels": (lambda: encoded(texture(64), "PNG")[:200] + b"\xff" * 20000, "PNG"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_each_bad_input_raises_one_error_with_a_clear_message(case):
    make, message = BAD_INPUTS[case]
    with pytest.raises(ImageError) as info:
        load_image(make())
    assert message in str(info.value), str(info.value)
    assert isinstance(info.value, ValueError) and info.value.__cause__ is None


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_sizes_in_pils_warning_range_are_refused_by_our_own_check():
    with pytest.raises(ImageError, match="10000x10000 px, over the 1920 px per side"):
        load_image(png_header_only(10000, 10000))


def test_pixel_limit_is_checked_from_the_header_before_decoding():
    limits = ImageLimits(max_pixels=1_000_000)
    with pytest.raises(ImageError, match=r"1500x1000 = 1,500,000 px, over the 1,000,000 pixel"):
        load_image(png_header_only(1500, 1000), limits)


def test_random_corruption_never_leaks_a_pil_exception():
    rng = np.random.default_rng(0)
    for fmt in ("PNG", "JPEG", "GIF", "WEBP"):
        data = bytearray(encoded(texture(32, seed=1), fmt))
        for _ in range(15):
            broken = bytearray(data)
            for pos in rng.integers(0, len(data), 4):
                broken[pos] = int(rng.integers(0, 256))
            with contextlib.suppress(ImageError):
                assert load_image(bytes(broken)).mode == "RGB"


def test_limits_are_frozen_validated_and_configurable(tmp_path):
    assert (DEFAULT_LIMITS.max_bytes, DEFAULT_LIMITS.max_side) == (10 * 1024 * 1024, 1920)
    with pytest.raises(dataclasses.FrozenInstanceError):
        DEFAULT_LIMITS.max_side = 4096
    with pytest.raises(ValueError, match="max_side must be positive"):
        ImageLimits(max_side=0)
    with pytest.raises(ValueError, match="max_jpeg_scans must be positive"):
        ImageLimits(max_jpeg_scans=0)
    wide = encoded(Image.new("RGB", (2000, 8)), "PNG")
    assert load_image(wide, ImageLimits(max_side=2048)).size == (2000, 8)
    with pytest.raises(ImageError, match="over the 1,000 byte limit"):
        load_image(encoded(texture(64), "PNG"), ImageLimits(max_bytes=1000))
    path = tmp_path / "big.png"
    path.write_bytes(encoded(texture(64), "PNG"))
    with pytest.raises(ImageError, match="big.png is .* bytes, over the 1,000 byte limit"):
        load_image(path, ImageLimits(max_bytes=1000))
    with pytest.raises(ImageError, match="cannot read"):
        load_image(tmp_path / "missing.png")
    with pytest.raises(ImageError, match="40x40 px, over the 32 px per side"):
        load_image(Image.new("RGB", (40, 40)), ImageLimits(max_side=32))


def test_jpeg_scans_are_counted_before_decoding():
    progressive = encoded(texture(32), "JPEG", progressive=True)  # libjpeg writes 10 scans
    assert load_image(progressive).size == (32, 32)
    with pytest.raises(ImageError, match="JPEG has 10 scans, over the 9 scan limit"):
        load_image(progressive, ImageLimits(max_jpeg_scans=9))


# --- base64 and data URLs ---------------------------------------------------------------------


def test_base64_and_data_urls_decode():
    data = encoded(blocks(), "PNG")
    b64 = base64.b64encode(data).decode()
    wrapped = "\n".join(b64[i:i + 76] for i in range(0, len(b64), 76))
    variants = [b64, b64.encode(), wrapped, b64.rstrip("="), f"data:image/png;base64,{b64}",
                f"  DATA:image/webp;charset=utf-8;base64,{wrapped}\n", f"data:;base64,{b64}",
                base64.urlsafe_b64encode(data).decode().rstrip("=")]
    for text in variants:
        assert decode_base64(text) == data
    assert np.array_equal(image_to_array(load_image_base64(variants[4])), np.asarray(blocks()))
    assert load_image_base64(to_data_url(encode_image(blocks(), "webp", lossless=True),
                                         "webp")).size == (48, 32)


@pytest.mark.parametrize(("text", "message"), [
    ("aGVsbG8gd29ybGQ!", "invalid base64: character '!'"),
    ("aGVs=G8=", "invalid base64: character '='"),
    ("aGVsbG8gd", "invalid base64: length 9"),
    ("aGk===", "invalid base64: 3 '=' of padding after 3 characters, where 1 or none belong"),
    ("AAA\u00e9", "non-ASCII character 'é' (U+00E9) at offset 3"),  # was a bare ValueError
    ("data:image/png;base64,aGk=\u200b", "non-ASCII character '\\u200b' (U+200B) at offset 26"),
    ("", "empty input: no base64 data"),
    ("data:image/png;base64,", "empty input"),
    ("data:text/plain;base64,aGk=", "media type is 'text/plain'"),
    ("data:image/png,%89PNG", "not base64-encoded"),
    ("data:image/png;base64", "no ','"),
    (b"data:image/png;base64,aGk=\xff", "non-ASCII byte 0xff at offset 26"),
])
def test_bad_base64_is_reported(text, message):
    with pytest.raises(ImageError) as info:
        decode_base64(text)
    assert message in str(info.value), str(info.value)


def test_oversized_base64_is_refused_before_decoding():
    with pytest.raises(ImageError, match="over the 100 byte limit"):
        decode_base64("A" * 400, ImageLimits(max_bytes=100))
    with pytest.raises(ImageError, match="text, not an image"):
        load_image_base64(base64.b64encode(b"just some words"))


# --- tensors and resizing ---------------------------------------------------------------------


def test_tensor_round_trip_is_exact_for_every_uint8_value():
    arr = np.arange(256 * 3, dtype=np.int64).reshape(16, 16, 3) % 256
    arr = arr.astype(np.uint8)
    x = image_to_tensor([arr, Image.fromarray(255 - arr)])
    assert x.shape == (2, 3, 16, 16) and x.dtype == torch.float32
    assert x.min().item() == -1.0 and x.max().item() == 1.0
    assert torch.equal(x[0, :, 0, 0], torch.tensor([0, 1, 2]) / 127.5 - 1)
    back = tensor_to_uint8(x)
    assert back.dtype == np.uint8 and np.array_equal(back[0], arr)
    assert np.array_equal(back[1], 255 - arr)
    assert np.array_equal(image_to_array(tensor_to_images(x)[1]), 255 - arr)
    half = image_to_tensor(Image.fromarray(arr), dtype=torch.bfloat16)
    assert half.dtype == torch.bfloat16 and half.shape == (1, 3, 16, 16)


def test_tensor_to_uint8_rounds_and_clamps():
    values = torch.tensor([-3.0, -1.0, 100.4 / 127.5 - 1, 100.6 / 127.5 - 1, 1.0, 7.0])
    x = values.view(1, 1, 1, 6).expand(1, 3, 1, 6)
    assert tensor_to_uint8(x)[0, 0, :, 0].tolist() == [0, 0, 100, 101, 255, 255]
    assert tensor_to_uint8(x[0]).shape == (1, 1, 6, 3)
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        tensor_to_uint8(torch.zeros(1, 4, 2, 2))


def test_tensor_input_errors():
    with pytest.raises(ValueError, match="differ in size"):
        image_to_tensor([blocks(), Image.new("RGB", (8, 8))])
    with pytest.raises(ValueError, match="uint8 arrays"):
        image_to_tensor(np.zeros((4, 4, 3), dtype=np.float32))
    with pytest.raises(ValueError, match="no images"):
        image_to_tensor([])


def test_resize_gives_the_exact_size_with_a_clean_filter():
    flat = Image.new("RGB", (300, 200), (10, 120, 240))
    for size in ((64, 48), (17, 333), (600, 400)):
        out = resize_image(flat, size)
        assert out.size == size and (image_to_array(out) == (10, 120, 240)).all()
    columns = np.tile(np.array([0, 255], np.uint8), 32)  # one-pixel black and white stripes
    stripes = Image.fromarray(np.broadcast_to(columns[None, :, None], (64, 64, 3)).copy())
    small = image_to_array(resize_image(stripes, (16, 16))).astype(int)
    assert np.abs(small[:, 2:-2] - 128).max() <= 1  # averaged, not aliased (edges ring a little)
    with pytest.raises(ValueError, match="positive"):
        resize_image(flat, (0, 10))


# --- encoding ---------------------------------------------------------------------------------

META = OutputMetadata(model="mini", seed=1234, prompt="make the circle blue — über ✓")


def exif_fields(img: Image.Image) -> dict:
    comment = img.getexif().get_ifd(0x8769)[0x9286]
    assert comment.startswith(b"ASCII\0\0\0")
    return json.loads(comment[8:].decode("ascii"))


def test_png_carries_text_chunks_and_xmp():
    out = Image.open(io.BytesIO(encode_image(blocks(), "png", META)))
    assert out.text["Software"] == imaging.SOFTWARE and "AI-generated" in out.text["Description"]
    assert (out.text["Model"], out.text["Seed"], out.text["Prompt"]) == ("mini", "1234",
                                                                         META.prompt)
    assert imaging.IPTC_AI_SOURCE in out.text["XML:com.adobe.xmp"]
    assert np.array_equal(image_to_array(out), np.asarray(blocks()))


@pytest.mark.parametrize("fmt", ["jpeg", "webp"])
def test_jpeg_and_webp_carry_exif_and_xmp(fmt):
    out = Image.open(io.BytesIO(encode_image(blocks(), fmt, META)))
    exif = out.getexif()
    assert exif[0x0131] == imaging.SOFTWARE and "AI-generated" in exif[0x010E]
    assert exif_fields(out) == {"ai_generated": "true", "software": imaging.SOFTWARE,
                                "model": "mini", "seed": "1234", "prompt": META.prompt}
    xmp = out.info["xmp"].decode("utf-8")
    assert imaging.IPTC_AI_SOURCE in xmp and META.prompt in xmp


@pytest.mark.parametrize("fmt", ["png", "jpeg", "webp"])
def test_prompt_can_be_left_out(fmt):
    meta = dataclasses.replace(META, include_prompt=False)
    data = encode_image(blocks(), fmt, meta)
    assert b"circle" not in data
    out = Image.open(io.BytesIO(data))
    if fmt == "png":
        assert "Prompt" not in out.text and out.text["Seed"] == "1234"
    else:
        assert exif_fields(out) == {"ai_generated": "true", "software": imaging.SOFTWARE,
                                    "model": "mini", "seed": "1234"}


@pytest.mark.parametrize("fmt", ["png", "jpeg", "webp"])
def test_encoding_is_deterministic(fmt):
    img = texture(64)
    first = encode_image(img, fmt, META, quality=80)
    again = encode_image(Image.fromarray(image_to_array(img).copy()), fmt, META, quality=80)
    assert first == again
    assert first != encode_image(img, fmt, dataclasses.replace(META, seed=1235), quality=80)


def test_jpeg_progressive_flag_and_quality():
    img = texture(64)
    progressive = Image.open(io.BytesIO(encode_image(img, "jpg", progressive=True)))
    baseline = Image.open(io.BytesIO(encode_image(img, "jpeg")))
    assert progressive.info.get("progressive") == 1 and "progressive" not in baseline.info
    assert len(encode_image(img, "jpeg", quality=30)) < len(encode_image(img, "jpeg", quality=95))
    with pytest.raises(ValueError, match="quality"):
        encode_image(img, "jpeg", quality=0)
    with pytest.raises(ValueError, match="output format"):
        encode_image(img, "bmp")


def test_webp_lossless_is_exact_and_lossy_is_close():
    img = texture(64)
    lossless = load_image(encode_image(img, "webp", lossless=True))
    assert np.array_equal(image_to_array(lossless), image_to_array(img))
    assert psnr(img, load_image(encode_image(img, "webp", quality=90))) > 30


def test_input_colour_profile_does_not_leak_into_outputs():
    img = blocks()
    img.info["icc_profile"] = b"stale"
    assert b"iCCP" not in encode_image(img, "png")


# --- watermark --------------------------------------------------------------------------------


@pytest.mark.parametrize("make", [lambda: texture(256), lambda: scene(128)])
def test_watermark_is_detected_only_when_present(make):
    img = make()
    marked = embed_watermark(img, "secret")
    assert psnr(img, marked) > 43
    assert embed_watermark(img, "secret") == marked
    assert watermark_score(marked, "secret") > 2 * imaging.WATERMARK_THRESHOLD
    assert detect_watermark(marked, "secret")
    assert not detect_watermark(img, "secret")
    assert not detect_watermark(marked, "another key")


def test_watermark_survives_png_jpeg_and_cropping_but_not_resizing():
    marked = embed_watermark(texture(256), 7)
    assert detect_watermark(load_image(encode_image(marked, "png", META)), 7)
    assert detect_watermark(load_image(encode_image(marked, "jpeg", quality=75)), 7)
    assert detect_watermark(marked.crop((13, 29, 250, 240)), 7)
    assert not detect_watermark(resize_image(marked, (230, 230)), 7)


def test_watermark_score_is_zero_on_flat_images():
    assert watermark_score(Image.new("RGB", (100, 70), (40, 40, 40)), "k") == 0.0
