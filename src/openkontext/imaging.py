"""Image bytes <-> tensors, validation, output encoding and the invisible watermark.

The one module that touches image files. Inputs (bytes, a path, a PIL image, base64 or a data URL)
become an 8-bit RGB PIL image: EXIF orientation applied, alpha flattened onto white, grayscale,
CMYK and 16-bit converted, embedded ICC profiles converted to sRGB. Every way an input can be bad
raises `ImageError` (a ValueError) with a message saying what was found and what was allowed;
metadata that cannot be read (EXIF, ICC) is ignored rather than refusing the pixels.
Outputs are encoded deterministically with AI-provenance metadata. Nothing happens at import time.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from xml.sax.saxutils import escape

import numpy as np
import torch
from PIL import ExifTags, Image, ImageCms, PngImagePlugin

from openkontext import __version__

INPUT_FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "AVIF")  # camera MPO files open as JPEG
OUTPUT_MIME = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}
WHITE = (255, 255, 255)
SOFTWARE = f"openkontext {__version__}"
AI_NOTICE = "AI-generated image, made with openkontext"
# IPTC digital source type for media created by a trained model: the standard "AI-generated" tag.
IPTC_AI_SOURCE = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"
# EXIF orientation -> the transpose that turns the stored pixels upright (1, upright, is absent).
_UPRIGHT = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
            4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE,
            6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
            8: Image.Transpose.ROTATE_90}

# Magic numbers, so error messages can name what was found (PIL decides what is decodable).
_SIGNATURES = ((b"\x89PNG\r\n\x1a\n", "PNG"), (b"\xff\xd8\xff", "JPEG"), (b"GIF8", "GIF"),
               (b"BM", "BMP"), (b"II*\x00", "TIFF"), (b"MM\x00*", "TIFF"), (b"8BPS", "PSD"),
               (b"%PDF", "PDF"), (b"\x00\x00\x01\x00", "ICO"), (b"qoif", "QOI"),
               (b"\xff\x0a", "JPEG XL"), (b"\x00\x00\x00\x0cJXL ", "JPEG XL"),
               (b"<svg", "SVG"), (b"<?xml", "XML"))


class ImageError(ValueError):
    """An input image that cannot be accepted; the message says why."""


@dataclass(frozen=True)
class ImageLimits:
    """What an input may be. Sizes are checked from the header, before any pixel is decoded."""

    max_bytes: int = 10 * 1024 * 1024  # encoded size (10 MiB)
    max_side: int = 1920  # pixels, per side
    max_pixels: int = 1920 * 1920  # width * height; guards against decompression bombs
    # Each scan of a progressive JPEG walks every block of the image: 20,000 near-empty scans
    # (14 bytes each) of a 1920x1920 image took 40 s of CPU from a 300 KB file. Encoders write
    # about 10. Counted as SOS markers, before decoding.
    max_jpeg_scans: int = 100

    def __post_init__(self) -> None:
        for name in ("max_bytes", "max_side", "max_pixels", "max_jpeg_scans"):
            if getattr(self, name) < 1:
                raise ValueError(f"ImageLimits.{name} must be positive, got {getattr(self, name)}")


DEFAULT_LIMITS = ImageLimits()


# --- Decoding and validation ----------------------------------------------------------------------


def load_image(source: bytes | bytearray | memoryview | str | os.PathLike | Image.Image,
               limits: ImageLimits = DEFAULT_LIMITS) -> Image.Image:
    """Validate and decode an input into an 8-bit RGB image with no metadata attached.

    `source` is encoded bytes, a file path, or an already opened PIL image (whose size is still
    checked; its format is not, as it may have been made in memory).
    """
    if isinstance(source, Image.Image):
        _check_size(source.width, source.height, limits)
        try:
            return _to_rgb(source)
        except Exception as e:  # e.g. a mode with no conversion to RGB
            raise ImageError(f"cannot convert a {source.mode} image to RGB: {e}") from None
    if isinstance(source, (str, os.PathLike)):
        return _decode(_read_file(source, limits), limits)
    if isinstance(source, (bytes, bytearray, memoryview)):
        return _decode(bytes(source), limits)
    raise TypeError(f"expected bytes, a path or a PIL image, got {type(source).__name__}")


def _decode(data: bytes, limits: ImageLimits) -> Image.Image:
    """Encoded bytes -> RGB image. Raises ImageError for anything but a sound, in-limits input."""
    # 1. Byte-level checks, before PIL sees anything.
    if len(data) == 0:
        raise ImageError("empty input: 0 bytes")
    if len(data) > limits.max_bytes:
        raise ImageError(f"input is {len(data):,} bytes, over the {limits.max_bytes:,} byte limit")
    # 2. Parse the header only. PIL's global bomb guard is left alone as an outer bound (past
    #    2x its limit it raises; between 1x and 2x it only warns and our own check below refuses).
    try:
        img = Image.open(io.BytesIO(data), formats=INPUT_FORMATS)
    except Image.UnidentifiedImageError:
        kind = _sniff(data)
        if kind in INPUT_FORMATS:
            raise ImageError(f"could not read the {kind} image: corrupt or truncated") from None
        raise ImageError(f"unsupported input: {kind}; accepted formats are PNG, JPEG, WebP, GIF "
                         "and AVIF") from None
    except Image.DecompressionBombError as e:
        raise ImageError(f"refusing a possible decompression bomb: {e}") from None
    except Exception as e:  # any parser failure on untrusted bytes is a bad input
        raise ImageError(f"could not read the {_sniff(data)} image: {e}") from None
    # 3. Size checks from the header, then the (bounded) decode of the first frame.
    fmt = "JPEG" if img.format == "MPO" else img.format
    _check_size(img.width, img.height, limits)
    # An upper bound on the scans: b"\xff\xda" can also occur inside metadata, never inside
    # entropy-coded data (where every 0xff byte is followed by 0x00 or a restart marker).
    scans = data.count(b"\xff\xda") if fmt == "JPEG" else 0
    if scans > limits.max_jpeg_scans:
        raise ImageError(f"JPEG has {scans:,} scans, over the {limits.max_jpeg_scans} scan limit")
    try:
        img.seek(0)
        img.load()
        return _to_rgb(img)
    except Exception as e:  # truncated or corrupt pixel data, broken EXIF/ICC, ...
        raise ImageError(f"could not decode the {fmt} image: {e}") from None


def decode_base64(text: str | bytes, limits: ImageLimits = DEFAULT_LIMITS) -> bytes:
    """Raw base64 (standard or URL-safe, padding optional) or a `data:image/...;base64,` URL.

    Both are ASCII by definition: any other character is refused by name, before decoding.
    """
    if isinstance(text, bytes):
        try:
            text = text.decode("ascii")
        except UnicodeDecodeError as e:
            raise ImageError(f"base64 input contains a non-ASCII byte 0x{text[e.start]:02x} at "
                             f"offset {e.start}") from None
    if not text.isascii():
        i, char = next((i, c) for i, c in enumerate(text) if not c.isascii())
        raise ImageError(f"base64 input contains a non-ASCII character {char!r} "
                         f"(U+{ord(char):04X}) at offset {i}")
    text = text.strip()
    if text[:5].lower() == "data:":
        header, comma, text = text.partition(",")
        if not comma:
            raise ImageError("data URL has no ',' separating its header from its data")
        mime, *params = header[5:].split(";")
        if mime and not mime.lower().startswith("image/"):
            raise ImageError(f"data URL media type is {mime!r}, expected image/*")
        if "base64" not in (p.strip().lower() for p in params):
            raise ImageError("data URL is not base64-encoded (missing ';base64')")
    text = re.sub(r"\s+", "", text)
    if not text:
        raise ImageError("empty input: no base64 data")
    if len(text) * 3 // 4 > limits.max_bytes + 2:
        raise ImageError(f"base64 input decodes to about {len(text) * 3 // 4:,} bytes, over the "
                         f"{limits.max_bytes:,} byte limit")
    digits = text.rstrip("=").replace("-", "+").replace("_", "/")  # URL-safe -> standard
    if bad := re.search(r"[^A-Za-z0-9+/]", digits):
        raise ImageError(f"invalid base64: character {bad.group()!r}")
    if len(digits) % 4 == 1:
        raise ImageError(f"invalid base64: length {len(digits)} cannot be a valid encoding")
    padding, needed = len(text) - len(digits), -len(digits) % 4
    if padding not in (0, needed):
        belong = f"{needed} or none" if needed else "none"
        raise ImageError(f"invalid base64: {padding} '=' of padding after {len(digits)} "
                         f"characters, where {belong} belong")
    try:
        return base64.b64decode(digits + "=" * needed, validate=True)
    except binascii.Error as e:  # not expected past the checks above, but still a bad input
        raise ImageError(f"invalid base64: {e}") from None


def load_image_base64(text: str | bytes, limits: ImageLimits = DEFAULT_LIMITS) -> Image.Image:
    """What the HTTP API receives (base64 or data URL) -> validated RGB image."""
    return _decode(decode_base64(text, limits), limits)


def image_to_array(img: Image.Image) -> np.ndarray:
    """RGB image -> uint8 array (H, W, 3)."""
    return np.asarray(img.convert("RGB"), dtype=np.uint8).copy()


def _read_file(path: str | os.PathLike, limits: ImageLimits) -> bytes:
    try:
        size = os.path.getsize(path)
        if size > limits.max_bytes:
            raise ImageError(f"{os.fspath(path)} is {size:,} bytes, over the "
                             f"{limits.max_bytes:,} byte limit")
        with open(path, "rb") as f:
            return f.read(limits.max_bytes + 1)
    except OSError as e:
        raise ImageError(f"cannot read {os.fspath(path)}: {e.strerror or e}") from None


def _check_size(width: int, height: int, limits: ImageLimits) -> None:
    if width < 1 or height < 1:
        raise ImageError(f"image is {width}x{height} px, which has no pixels")
    if max(width, height) > limits.max_side:
        raise ImageError(f"image is {width}x{height} px, over the {limits.max_side} px per "
                         "side limit")
    if width * height > limits.max_pixels:
        raise ImageError(f"image is {width}x{height} = {width * height:,} px, over the "
                         f"{limits.max_pixels:,} pixel limit")


def _sniff(data: bytes) -> str:
    """Name what the bytes look like, for error messages only."""
    for magic, name in _SIGNATURES:
        if data.startswith(magic):
            return name
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    if data[4:8] == b"ftyp":
        return "AVIF" if data[8:12] in (b"avif", b"avis") else "HEIF"
    if data[:15].lower().startswith((b"<!doctype html", b"<html")):
        return "HTML"
    if all(32 <= b < 127 or b in b"\t\r\n" for b in data[:256]):
        return f"text, not an image (starts {data[:24].decode('ascii')!r})"
    return f"unrecognised data (starts {data[:8].hex(' ')})"


def _upright(img: Image.Image) -> Image.Image:
    """Apply the EXIF orientation (or XMP tiff:Orientation, which Pillow folds into the EXIF).
    An unreadable EXIF block or an orientation outside 1..8 leaves the pixels as stored."""
    try:
        orientation = img.getexif().get(ExifTags.Base.Orientation, 1)
    except Exception:  # malformed EXIF: SyntaxError, struct.error, ValueError, ... from Pillow
        return img
    method = _UPRIGHT.get(orientation) if isinstance(orientation, int) else None
    return img if method is None else img.transpose(method)


def _to_rgb(img: Image.Image) -> Image.Image:
    """Orientation, colour management and mode conversion; the result carries no metadata."""
    img = _upright(img)
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):  # 16-bit grayscale: scale, don't clip
        a = np.asarray(img, dtype=np.float64)
        a = a / 257.0 if img.mode.startswith("I;16") or (img.mode == "I" and a.max() > 255) else a
        img = Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8), "L")
    elif img.mode == "P" or "transparency" in img.info:
        img = img.convert("RGBA")
    icc = img.info.get("icc_profile")
    if icc and img.mode in ("RGB", "RGBA", "CMYK", "L"):
        try:
            src = ImageCms.ImageCmsProfile(io.BytesIO(icc))
            out_mode = "RGBA" if img.mode == "RGBA" else "RGB"
            img = ImageCms.profileToProfile(img, src, ImageCms.createProfile("sRGB"),
                                            outputMode=out_mode)
        except (ImageCms.PyCMSError, OSError, ValueError):
            pass  # unusable profile: treat the pixels as sRGB
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        flat = Image.new("RGB", rgba.size, WHITE)
        flat.paste(rgba, mask=rgba.getchannel("A"))
        img = flat
    return Image.fromarray(np.asarray(img.convert("RGB"), dtype=np.uint8).copy(), "RGB")


# --- Tensors and resizing -------------------------------------------------------------------------


def image_to_tensor(images: Image.Image | np.ndarray | Sequence[Image.Image | np.ndarray],
                    dtype: torch.dtype = torch.float32,
                    device: torch.device | str | None = None) -> torch.Tensor:
    """RGB image(s) or uint8 (H, W, 3) array(s) -> (B, 3, H, W) in [-1, 1]; all the same size."""
    if isinstance(images, (Image.Image, np.ndarray)):
        images = [images]
    arrays = [image_to_array(x) if isinstance(x, Image.Image) else np.asarray(x) for x in images]
    if not arrays:
        raise ValueError("no images given")
    for a in arrays:
        if a.dtype != np.uint8 or a.ndim != 3 or a.shape[2] != 3:
            raise ValueError(f"expected uint8 arrays of shape (H, W, 3), got {a.dtype} {a.shape}")
        if a.shape != arrays[0].shape:
            raise ValueError(f"images differ in size: {arrays[0].shape} vs {a.shape}")
    x = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2)  # (B, 3, H, W) uint8
    return (x.to(torch.float32) / 127.5 - 1.0).to(device=device, dtype=dtype)


def tensor_to_uint8(x: torch.Tensor) -> np.ndarray:
    """(B, 3, H, W) or (3, H, W) in [-1, 1] -> uint8 (B, H, W, 3), rounded and clamped."""
    if x.ndim == 3:
        x = x.unsqueeze(0)
    if x.ndim != 4 or x.shape[1] != 3:
        raise ValueError(f"expected a (B, 3, H, W) tensor, got shape {tuple(x.shape)}")
    u8 = ((x.detach().float().cpu() + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8)
    return u8.permute(0, 2, 3, 1).contiguous().numpy()


def tensor_to_images(x: torch.Tensor) -> list[Image.Image]:
    """(B, 3, H, W) in [-1, 1] -> B RGB images."""
    return [Image.fromarray(a, "RGB") for a in tensor_to_uint8(x)]


def resize_image(img: Image.Image, size: tuple[int, int]) -> Image.Image:
    """Resize to exactly (width, height) with Lanczos, whose support widens when downscaling."""
    w, h = size
    if w < 1 or h < 1:
        raise ValueError(f"size must be positive, got {w}x{h}")
    if img.size == (w, h):
        return img.copy()
    return img.convert("RGB").resize((w, h), Image.Resampling.LANCZOS)


# --- Encoding outputs with provenance metadata ----------------------------------------------------


@dataclass(frozen=True)
class OutputMetadata:
    """Provenance written into every output: AI-generated, by which model, from which seed."""

    model: str
    seed: int | None = None
    prompt: str | None = None
    include_prompt: bool = True

    def fields(self) -> dict[str, str]:
        out = {"ai_generated": "true", "software": SOFTWARE, "model": self.model}
        if self.seed is not None:
            out["seed"] = str(self.seed)
        if self.include_prompt and self.prompt is not None:
            out["prompt"] = self.prompt
        return out


def encode_image(img: Image.Image, fmt: str = "png", metadata: OutputMetadata | None = None, *,
                 quality: int = 95, progressive: bool = False, lossless: bool = False) -> bytes:
    """RGB image -> PNG, JPEG or WebP bytes. The same inputs always give the same bytes.

    `quality` (1..100) applies to JPEG and lossy WebP; `progressive` to JPEG; `lossless` to WebP.
    Metadata: PNG text chunks (Software, Description, Source = model, Model, Seed, Prompt);
    JPEG/WebP EXIF (Software, ImageDescription, UserComment = JSON of all fields); all three carry
    XMP with the IPTC "trainedAlgorithmicMedia" digital source type.
    """
    fmt = fmt.lower().replace("jpg", "jpeg")
    if fmt not in OUTPUT_MIME:
        raise ValueError(f"output format must be one of {sorted(OUTPUT_MIME)}, got {fmt!r}")
    if not 1 <= quality <= 100:
        raise ValueError(f"quality must be in 1..100, got {quality}")
    clean = Image.fromarray(image_to_array(img), "RGB")  # drops any metadata the input carried
    kwargs: dict = {}
    if metadata is not None:
        fields, xmp = metadata.fields(), _xmp(metadata)
        if fmt == "png":
            info = PngImagePlugin.PngInfo()
            info.add_text("Software", SOFTWARE)
            info.add_text("Description", AI_NOTICE)
            info.add_text("Source", metadata.model)
            for key in ("model", "seed", "prompt"):
                if key in fields:
                    info.add_text(key.capitalize(), fields[key])
            info.add_itxt("XML:com.adobe.xmp", xmp)
            kwargs["pnginfo"] = info
        else:
            kwargs["exif"] = _exif(fields).tobytes()
            kwargs["xmp"] = xmp.encode("utf-8")
    buf = io.BytesIO()
    if fmt == "png":
        clean.save(buf, "PNG", compress_level=6, **kwargs)
    elif fmt == "jpeg":
        clean.save(buf, "JPEG", quality=quality, progressive=progressive, optimize=True,
                   subsampling="4:4:4" if quality >= 90 else "4:2:0", **kwargs)
    else:
        clean.save(buf, "WEBP", quality=quality, lossless=lossless, method=4, exact=True, **kwargs)
    return buf.getvalue()


def to_data_url(data: bytes, fmt: str) -> str:
    """Encoded bytes -> `data:image/<fmt>;base64,...`."""
    mime = OUTPUT_MIME[fmt.lower().replace("jpg", "jpeg")]
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def _exif(fields: dict[str, str]) -> Image.Exif:
    exif = Image.Exif()
    exif[0x0131] = SOFTWARE  # Software
    exif[0x010E] = AI_NOTICE + f" (model {fields['model'].encode('ascii', 'replace').decode()})"
    # UserComment: 8-byte charset prefix, then ASCII-only JSON (\u-escapes keep any prompt intact).
    comment = json.dumps(fields, sort_keys=True, ensure_ascii=True)
    exif.get_ifd(0x8769)[0x9286] = b"ASCII\x00\x00\x00" + comment.encode("ascii")
    return exif


def _xmp(meta: OutputMetadata) -> str:
    desc = meta.prompt if meta.include_prompt and meta.prompt is not None else AI_NOTICE
    return ('<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF '
            'xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
            '<rdf:Description rdf:about="" xmlns:xmp="http://ns.adobe.com/xap/1.0/" '
            'xmlns:dc="http://purl.org/dc/elements/1.1/" '
            'xmlns:Iptc4xmpExt="http://iptc.org/std/Iptc4xmpExt/2008-02-29/">'
            f"<Iptc4xmpExt:DigitalSourceType>{IPTC_AI_SOURCE}</Iptc4xmpExt:DigitalSourceType>"
            f"<xmp:CreatorTool>{escape(SOFTWARE)} ({escape(meta.model)})</xmp:CreatorTool>"
            f'<dc:description><rdf:Alt><rdf:li xml:lang="x-default">{escape(desc)}</rdf:li>'
            "</rdf:Alt></dc:description></rdf:Description></rdf:RDF></x:xmpmeta>")


# --- Invisible watermark --------------------------------------------------------------------------
# Scheme: a keyed pseudo-random pattern on a 64x64 tile, band-limited to spatial frequencies of
# 4..16 cycles per tile (periods of 4 to 16 px), scaled to an RMS of `strength` grey levels, is
# tiled over the image and added equally to R, G and B (a luminance-only change, so chroma
# subsampling leaves it alone). To detect, the grey image is band-passed, clipped (edges are
# large, the mark is small), folded onto one tile (tiles summed: the mark adds up coherently,
# image content does not), whitened, and cross-correlated with the pattern at all 64x64 circular
# shifts through the FFT, so a crop anywhere still aligns. The score is the best normalised
# correlation times sqrt(band size): about N(0, 1) per shift for unmarked content, whose maximum
# over the shifts stays near 3-5. Survives: lossless saves, JPEG down to quality ~75 (50 on textured
# images), lossy WebP on textured images, cropping, mild noise. Does not survive: resizing,
# rotation, lossy WebP on flat synthetic scenes; below ~128 px per side the score is marginal.

WATERMARK_TILE = 64
WATERMARK_BAND = (4.0, 16.0)  # cycles per tile
WATERMARK_THRESHOLD = 6.0
WATERMARK_CLIP = 4.0  # grey levels; band-passed values beyond this are edges, not mark


def _band_mask() -> np.ndarray:
    f = np.fft.fftfreq(WATERMARK_TILE) * WATERMARK_TILE  # cycles per tile
    r = np.hypot(f[:, None], f[None, :])
    return (r >= WATERMARK_BAND[0]) & (r <= WATERMARK_BAND[1])


def _pattern(key: str | int) -> np.ndarray:
    """(64, 64) zero-mean, unit-RMS, band-limited pattern derived from the key."""
    seed = int.from_bytes(hashlib.sha256(f"openkontext-wm:{key}".encode()).digest()[:8], "big")
    noise = np.random.default_rng(seed).standard_normal((WATERMARK_TILE, WATERMARK_TILE))
    p = np.fft.ifft2(np.fft.fft2(noise) * _band_mask()).real
    return p / np.sqrt(np.mean(p**2))


def embed_watermark(img: Image.Image, key: str | int, strength: float = 1.5) -> Image.Image:
    """Add the keyed pattern at `strength` grey levels RMS (about 44 dB PSNR at 1.5)."""
    rgb = image_to_array(img).astype(np.float64)
    h, w = rgb.shape[:2]
    reps = (-(-h // WATERMARK_TILE), -(-w // WATERMARK_TILE))
    mark = np.tile(_pattern(key), reps)[:h, :w] * strength
    return Image.fromarray(np.clip(np.rint(rgb + mark[..., None]), 0, 255).astype(np.uint8))


def watermark_score(img: Image.Image, key: str | int) -> float:
    """Detection statistic: below ~5 for unmarked images, above `WATERMARK_THRESHOLD` if marked."""
    # 1. Grey image -> its component in the mark's band, clipped so strong edges cannot swamp
    #    the faint mark (flat synthetic scenes are mostly edges in this band).
    grey = image_to_array(img).astype(np.float64).mean(axis=2)
    h, w, t = grey.shape[0], grey.shape[1], WATERMARK_TILE
    radius = np.hypot(np.fft.fftfreq(h)[:, None], np.fft.rfftfreq(w)[None, :]) * t
    in_band = (radius >= WATERMARK_BAND[0]) & (radius <= WATERMARK_BAND[1])
    band = np.fft.irfft2(np.fft.rfft2(grey) * in_band, s=(h, w))
    band = np.clip(band, -WATERMARK_CLIP, WATERMARK_CLIP)
    # 2. Fold onto one tile: (H, W) -> (64, 64), zero-padding the last partial tiles.
    band = np.pad(band, ((0, -h % t), (0, -w % t)))
    folded = band.reshape(band.shape[0] // t, t, band.shape[1] // t, t).sum(axis=(0, 2))
    # 3. Whiten (keep the phase of each in-band frequency, drop its magnitude, so no single
    #    strong image frequency dominates), then correlate with the pattern at every circular
    #    shift via the FFT; normalised, each shift's value is about N(0, 1) without the mark.
    spec = np.fft.fft2(folded) * _band_mask()
    mag = np.abs(spec)
    live = mag > 1e-6  # below this it is rounding noise (flat images)
    if not live.any():
        return 0.0
    spec = np.divide(spec, mag, out=np.zeros_like(spec), where=live)
    pat = np.fft.fft2(_pattern(key))
    energy = np.sum(np.abs(spec) ** 2) * np.sum(np.abs(pat) ** 2)
    xcorr = np.fft.ifft2(spec * np.conj(pat)).real * t * t  # Parseval: spatial inner products
    return float(xcorr.max() / np.sqrt(energy) * np.sqrt(live.sum()))


def detect_watermark(img: Image.Image, key: str | int,
                     threshold: float = WATERMARK_THRESHOLD) -> bool:
    """True when the keyed watermark is present (see `watermark_score`)."""
    return watermark_score(img, key) >= threshold
