"""Photos people upload: prove an upload is a real JPEG or PNG, strip everything but the pixels, thumbnail it.

Every module that takes a photo uses this (feedback's report and answer photos, transit's proofs of a
rider category). Those files are shown to other people, so nothing of the uploaded file is passed on
except its decoded pixels:

- The type comes from the magic bytes and a successful decode, never from Content-Type or the file name.
- Every output file is re-encoded from pixels with empty metadata: no EXIF (GPS, camera, time), no XMP,
  no JPEG comments or MPF extra images, no PNG text/eXIf/private chunks, nothing appended after the image.
- ICC profiles are dropped after converting the pixels into sRGB (so iPhone Display P3 photos keep
  their colours); an unreadable or mismatched profile is just dropped. The profile is attacker-chosen
  bytes that would reach other people's viewers, and its header can name the device.
- JPEG stays JPEG (quality 85). PNG stays PNG: uploads in PNG are mostly screenshots of app screens or
  documents, and JPEG would blur their text.
- Animated PNG (APNG) is accepted as its first frame, which is also what viewers without APNG support
  show; the result is a still PNG. JPEG with extra MPF images (some phones) keeps only the main image.
- EXIF orientation is applied to the pixels and the longest side is capped at MAX_SIDE.

process_photo is CPU-bound and synchronous: call it via asyncio.to_thread. It keeps no module state and
changes no Pillow or warnings settings, so concurrent calls are safe. Pillow's own decompression-bomb
limit (Image.MAX_IMAGE_PIXELS, process-wide) still applies on top of max_pixels.
"""

from __future__ import annotations

import hashlib
import io
import math
from collections.abc import Callable
from dataclasses import dataclass

from PIL import Image, ImageCms, ImageOps

from app.errors import Unprocessable

THUMBNAIL_SIDE = 320
MAX_SIDE = 4096  # larger images are scaled down to this longest side
JPEG_QUALITY = 85
THUMBNAIL_QUALITY = 80

_MIB = 1024 * 1024
_JPEG_MAGIC = b"\xff\xd8\xff"
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# Only the plugin matching the magic may open the file, so Pillow never tries its other formats.
_PILLOW_FORMAT = {"image/jpeg": "JPEG", "image/png": "PNG"}
_ALPHA_MODES = {"RGBA", "LA", "PA", "RGBa", "La"}


@dataclass(frozen=True)
class ProcessedPhoto:
    content_type: str  # "image/jpeg" or "image/png" (of the cleaned image)
    data: bytes  # the re-encoded image, no metadata, orientation applied
    width: int
    height: int
    thumbnail: bytes  # JPEG, longest side <= THUMBNAIL_SIDE
    sha256: str  # hex of `data`


def sniff(raw: bytes) -> str | None:
    """The content type ("image/jpeg" or "image/png") from the magic bytes, else None; a decode must confirm it."""
    if raw.startswith(_JPEG_MAGIC):
        return "image/jpeg"
    if raw.startswith(_PNG_MAGIC):
        return "image/png"
    return None


def process_photo(
    raw: bytes,
    *,
    max_bytes: int = 10 * 1024 * 1024,
    max_pixels: int = 40_000_000,
    field: str = "photo",
) -> ProcessedPhoto:
    """Check, clean and thumbnail one uploaded photo; raises Unprocessable (422) naming `field` if it is refused.

    A 422, not a 400: the request has the document's form (bytes, or base64 text), and only its content (what
    image, if any, those bytes are) is refused, which no schema can state."""

    def invalid(message: str) -> Unprocessable:
        return Unprocessable.field(field, message)

    if not raw:
        raise invalid("the photo is empty")
    if len(raw) > max_bytes:
        limit = _size(max_bytes, math.floor)
        size = _size(len(raw), round)
        if size == limit:  # just over: round up so it does not read "10 MB; at most 10 MB"
            size = _size(len(raw), math.ceil)
        raise invalid(f"the photo is {size}; at most {limit}")
    content_type = sniff(raw)
    if content_type is None:
        raise invalid("not a JPEG or PNG image")

    image = _decode(raw, content_type, max_pixels, invalid)
    image = _clean_pixels(_upright(image))
    if max(image.size) > MAX_SIDE:
        image = image.resize(_fit(image.size, MAX_SIDE), Image.Resampling.LANCZOS, reducing_gap=3.0)

    data = _encode(image, content_type)
    return ProcessedPhoto(
        content_type=content_type,
        data=data,
        width=image.width,
        height=image.height,
        thumbnail=_thumbnail(image),
        sha256=hashlib.sha256(data).hexdigest(),
    )


def _decode(raw: bytes, content_type: str, max_pixels: int, invalid: Callable[[str], Unprocessable]) -> Image.Image:
    limit = f"at most {max_pixels / 1_000_000:g} megapixels"
    undecodable = "the image is damaged or incomplete and cannot be read"
    try:
        # open() reads only the headers; pixel data is decoded by load() below.
        image = Image.open(io.BytesIO(raw), formats=[_PILLOW_FORMAT[content_type]])
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        # Pillow's own process-wide limit fired first (the warning is only raised if filters say so).
        raise invalid(f"the image has too many pixels; {limit}") from exc
    except Exception as exc:  # any failure to parse untrusted bytes means "not a usable image", not a 500
        raise invalid(undecodable) from exc

    width, height = image.size
    if width * height > max_pixels:
        raise invalid(f"the image is {width}x{height} pixels; {limit}")
    try:
        image.load()  # first frame only for APNG/MPO
    except Exception as exc:
        raise invalid(undecodable) from exc
    return image


def _upright(image: Image.Image) -> Image.Image:
    try:
        ImageOps.exif_transpose(image, in_place=True)  # in place: no second full-size copy
    except Exception:
        pass  # broken EXIF: keep the pixels as stored; the EXIF is dropped on re-encoding anyway
    return image


def _clean_pixels(image: Image.Image) -> Image.Image:
    """Convert to L, RGB or RGBA in sRGB; returns an image whose info (metadata) is empty."""
    icc = image.info.get("icc_profile")
    alpha = image.mode in _ALPHA_MODES or "transparency" in image.info  # tRNS chunk of a P/L/RGB PNG

    if image.mode in ("I", "F") or image.mode.startswith("I;16"):
        # 16-bit grey PNG: scale to 8 bits (a plain convert would clip everything above 255 to white)
        image = image.convert("I").point(lambda value: value * (1 / 257)).convert("L")
    elif image.mode in ("1", "L") and not alpha:
        image = image.convert("L") if image.mode != "L" else image
    else:
        target = "RGBA" if alpha else "RGB"
        if image.mode not in (target, "CMYK"):
            image = image.convert(target)  # P/LA/PA/YCbCr...; convert applies a palette's transparency
        image = _to_srgb(image, icc, target)

    # Pillow re-emits some info entries when saving (a PNG's icc_profile, a JPEG's comment): start empty.
    image.info = {}
    return image


def _to_srgb(image: Image.Image, icc: bytes | None, target: str) -> Image.Image:
    if icc:
        try:
            source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
            converted = ImageCms.profileToProfile(image, source, ImageCms.createProfile("sRGB"), outputMode=target)
            if converted is not None:
                return converted
        except (ImageCms.PyCMSError, OSError, ValueError, TypeError):
            pass  # unreadable profile or one for another colour space: fall back to a plain conversion
    return image.convert(target) if image.mode != target else image


def _encode(image: Image.Image, content_type: str) -> bytes:
    buffer = io.BytesIO()
    if content_type == "image/jpeg":
        image.save(buffer, "JPEG", quality=JPEG_QUALITY, optimize=True)
    else:
        image.save(buffer, "PNG")
    return buffer.getvalue()


def _thumbnail(image: Image.Image) -> bytes:
    small = image
    if max(image.size) > THUMBNAIL_SIDE:
        small = image.resize(_fit(image.size, THUMBNAIL_SIDE), Image.Resampling.LANCZOS, reducing_gap=3.0)
    if small.mode == "RGBA":
        flat = Image.new("RGB", small.size, (255, 255, 255))
        flat.paste(small, mask=small.getchannel("A"))  # JPEG has no alpha: flatten onto white
        small = flat
    elif small.mode != "RGB":
        small = small.convert("RGB")
    buffer = io.BytesIO()
    small.save(buffer, "JPEG", quality=THUMBNAIL_QUALITY, optimize=True)
    return buffer.getvalue()


def _fit(size: tuple[int, int], side: int) -> tuple[int, int]:
    width, height = size
    scale = side / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def _size(count: int, rounding: Callable[[float], int]) -> str:
    for unit, scale in (("MB", _MIB), ("KB", 1024)):
        if count >= scale:
            return f"{rounding(count / scale * 10) / 10:g} {unit}"
    return f"{count} bytes"
