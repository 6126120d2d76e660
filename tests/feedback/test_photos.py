"""app.images, as feedback and transit use it: only real JPEG/PNG get through, no metadata, bounded, thumbnailed."""

from __future__ import annotations

import hashlib
import io
import struct
import zlib
from concurrent.futures import ThreadPoolExecutor

import pytest
from PIL import Image, ImageCms, ImageDraw, PngImagePlugin

from app.errors import Unprocessable
from app.images import MAX_SIDE, THUMBNAIL_SIDE, ProcessedPhoto, process_photo, sniff

GPS_IFD = 0x8825
ORIENTATION = 0x0112
# Hoan Kiem lake, as a phone writes it: degrees, minutes, seconds
HANOI_GPS = {1: "N", 2: (21.0, 1.0, 43.0), 3: "E", 4: (105.0, 51.0, 9.0)}


def encode(image: Image.Image, fmt: str, **params: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **params)
    return buffer.getvalue()


def picture(size: tuple[int, int] = (120, 80), mode: str = "RGB") -> Image.Image:
    """An image with detail in it, so JPEG files are not trivially small and truncation really bites."""
    image = Image.new(mode, size, "white")
    draw = ImageDraw.Draw(image)
    for x in range(0, size[0], 7):
        draw.line([(x, 0), (size[0] - x, size[1])], fill=(x * 13 % 256, x * 7 % 256, 90) if mode != "L" else x % 256)
    return image


def gps_exif(orientation: int | None = None) -> Image.Exif:
    exif = Image.Exif()
    exif[0x010F] = "PhoneMaker"  # Make
    exif[0x0110] = "Model X"  # Model
    if orientation:
        exif[ORIENTATION] = orientation
    exif.get_ifd(GPS_IFD).update(HANOI_GPS)
    return exif


def jpeg_markers(data: bytes) -> list[int]:
    """The marker bytes of the JPEG header segments, up to the start of scan."""
    assert data[:2] == b"\xff\xd8"
    markers, pos = [], 2
    while pos < len(data):
        assert data[pos] == 0xFF
        marker = data[pos + 1]
        markers.append(marker)
        if marker == 0xDA:  # SOS: entropy-coded data follows
            break
        (length,) = struct.unpack(">H", data[pos + 2 : pos + 4])
        pos += 2 + length
    return markers


def png_chunks(data: bytes) -> list[bytes]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    chunks, pos = [], 8
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        chunks.append(data[pos + 4 : pos + 8])
        pos += 12 + length
    return chunks


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_declaring(width: int, height: int) -> bytes:
    """A tiny PNG whose IHDR claims width x height RGB pixels (the data would never fill it)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", ihdr)
        + png_chunk(b"IDAT", zlib.compress(b"\x00" * 1024))
        + png_chunk(b"IEND", b"")
    )


def jpeg_declaring(width: int, height: int) -> bytes:
    """A real small JPEG with its SOF0 frame header patched to claim width x height."""
    data = bytearray(encode(picture((64, 64)), "JPEG"))
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def refused(raw: bytes, field: str = "photo", **limits: int) -> str:
    with pytest.raises(Unprocessable) as caught:
        process_photo(raw, field=field, **limits)
    errors = caught.value.errors
    assert errors is not None and len(errors) == 1
    assert errors[0].field == field
    assert errors[0].source == "body"
    assert errors[0].message == caught.value.detail
    return errors[0].message


def reopen(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


# -- metadata -----------------------------------------------------------------------------------------


def test_jpeg_with_gps_exif_comes_out_without_any_exif():
    raw = encode(picture(), "JPEG", exif=gps_exif())
    assert reopen(raw).getexif().get_ifd(GPS_IFD)  # the fixture really carries a location
    assert b"Exif\x00\x00" in raw

    photo = process_photo(raw)

    assert photo.content_type == "image/jpeg"
    out = reopen(photo.data)
    assert out.format == "JPEG"
    assert len(out.getexif()) == 0
    assert "exif" not in out.info
    assert b"Exif\x00\x00" not in photo.data
    assert b"PhoneMaker" not in photo.data
    assert 0xE1 not in jpeg_markers(photo.data)  # no APP1 segment at all (EXIF or XMP)


def test_jpeg_comment_xmp_and_icc_are_dropped():
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    xmp = b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><exif:GPSLatitude>21,1.7N</exif:GPSLatitude></x:xmpmeta>'
    raw = encode(picture(), "JPEG", comment=b"secret note", xmp=xmp, icc_profile=srgb)
    assert {0xE1, 0xE2, 0xFE} <= set(jpeg_markers(raw))

    photo = process_photo(raw)

    markers = jpeg_markers(photo.data)
    # Only JFIF (APP0) may remain: no APPn metadata segments and no COM.
    assert not {m for m in markers if 0xE1 <= m <= 0xEF or m == 0xFE}
    out = reopen(photo.data)
    for key in ("comment", "xmp", "icc_profile", "exif"):
        assert key not in out.info
    assert b"secret note" not in photo.data and b"GPSLatitude" not in photo.data


def test_jpeg_comment_alone_is_dropped():
    # Pillow copies a JPEG's comment into the saved file unless told otherwise.
    raw = encode(picture(), "JPEG", comment=b"secret note")

    photo = process_photo(raw)

    assert 0xFE not in jpeg_markers(photo.data)
    assert b"secret note" not in photo.data


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_unreadable_icc_profile_is_dropped_not_refused(fmt: str):
    raw = encode(picture(), fmt, icc_profile=b"not really an ICC profile" * 10)
    assert "icc_profile" in reopen(raw).info

    photo = process_photo(raw)

    assert "icc_profile" not in reopen(photo.data).info
    assert b"not really" not in photo.data
    if fmt == "PNG":
        assert b"iCCP" not in png_chunks(photo.data)


def test_bytes_appended_after_the_image_are_dropped():
    raw = encode(picture(), "JPEG") + b"<html><script>alert(1)</script></html>"

    photo = process_photo(raw)

    assert b"<script>" not in photo.data
    assert photo.data.endswith(b"\xff\xd9")


def test_png_text_chunks_and_exif_are_dropped():
    info = PngImagePlugin.PngInfo()
    info.add_text("Comment", "secret text")
    info.add_text("Location", "secret zipped", zip=True)
    info.add_itxt("Description", "secret itxt")
    raw = encode(picture(), "PNG", pnginfo=info, exif=gps_exif())
    assert {b"tEXt", b"zTXt", b"iTXt", b"eXIf"} <= set(png_chunks(raw))

    photo = process_photo(raw)

    assert photo.content_type == "image/png"
    out = reopen(photo.data)
    assert out.format == "PNG"
    assert out.text == {}
    assert len(out.getexif()) == 0
    assert set(png_chunks(photo.data)) <= {b"IHDR", b"IDAT", b"IEND"}
    assert b"secret" not in photo.data


def test_mpo_keeps_only_its_main_image():
    # Some phones write JPEG + extra images (MPF in APP2); the extra images carry their own EXIF.
    first, second = Image.new("RGB", (40, 30), "red"), Image.new("RGB", (40, 30), "blue")
    second.encoderinfo = {"exif": gps_exif()}
    raw = encode(first, "MPO", save_all=True, append_images=[second])
    assert b"MPF\x00" in raw

    photo = process_photo(raw)

    assert photo.content_type == "image/jpeg"
    assert b"MPF\x00" not in photo.data and b"Exif\x00\x00" not in photo.data
    assert photo.data.count(b"\xff\xd8") == 1
    red, green, blue = reopen(photo.data).getpixel((20, 15))
    assert red > 200 and green < 50 and blue < 50


# -- pixels -------------------------------------------------------------------------------------------


def test_exif_orientation_is_applied():
    # Stored 60 wide x 40 high, left half red; orientation 6 = rotate 90 degrees clockwise to display.
    image = Image.new("RGB", (60, 40), "blue")
    image.paste("red", (0, 0, 30, 40))
    raw = encode(image, "JPEG", exif=gps_exif(orientation=6), quality=95)

    photo = process_photo(raw)

    assert (photo.width, photo.height) == (40, 60)
    out = reopen(photo.data)
    assert out.size == (40, 60)
    assert len(out.getexif()) == 0  # orientation is in the pixels now, not in a tag
    top, bottom = out.getpixel((20, 5)), out.getpixel((20, 55))
    assert top[0] > 200 and top[2] < 60  # the left (red) half is now on top
    assert bottom[2] > 200 and bottom[0] < 60


@pytest.mark.filterwarnings("ignore:Corrupt EXIF data")
def test_corrupt_exif_is_dropped_and_the_photo_kept():
    junk = b"Exif\x00\x00MM\x00*\x00\x00\x00\x08\xff\xff" + b"\x01" * 40
    raw = encode(picture(), "JPEG")
    raw = raw[:2] + b"\xff\xe1" + struct.pack(">H", len(junk) + 2) + junk + raw[2:]

    photo = process_photo(raw)

    assert (photo.width, photo.height) == (120, 80)
    assert 0xE1 not in jpeg_markers(photo.data)


def test_big_image_is_scaled_down_to_max_side():
    raw = encode(picture((5000, 2500)), "JPEG")

    photo = process_photo(raw)

    assert (photo.width, photo.height) == (MAX_SIDE, MAX_SIDE // 2)
    assert reopen(photo.data).size == (MAX_SIDE, MAX_SIDE // 2)


def test_image_within_max_side_keeps_its_size():
    photo = process_photo(encode(picture((1000, 700)), "PNG"))

    assert (photo.width, photo.height) == (1000, 700)


def test_cmyk_jpeg_becomes_rgb():
    raw = encode(Image.new("CMYK", (30, 20), (0, 255, 255, 0)), "JPEG")

    photo = process_photo(raw)

    out = reopen(photo.data)
    assert out.mode == "RGB"
    red, green, blue = out.getpixel((10, 10))
    assert red > 200 and green < 50 and blue < 50


def test_palette_png_with_transparency_becomes_rgba():
    image = Image.new("P", (30, 20), 0)
    image.putpalette([255, 0, 0, 0, 255, 0])
    image.paste(1, (15, 0, 30, 20))
    raw = encode(image, "PNG", transparency=0)

    photo = process_photo(raw)

    out = reopen(photo.data)
    assert out.mode == "RGBA"
    assert out.getpixel((5, 5))[3] == 0
    assert out.getpixel((25, 5)) == (0, 255, 0, 255)


def test_sixteen_bit_grey_png_is_scaled_not_clipped():
    raw = encode(Image.new("I;16", (30, 20), 32896), "PNG")  # half of 65535

    photo = process_photo(raw)

    out = reopen(photo.data)
    assert out.mode == "L"
    assert 120 <= out.getpixel((5, 5)) <= 135


def test_animated_png_is_accepted_as_its_first_frame():
    first, second = Image.new("RGB", (20, 20), "red"), Image.new("RGB", (20, 20), "blue")
    raw = encode(first, "PNG", save_all=True, append_images=[second])
    assert b"acTL" in raw

    photo = process_photo(raw)

    assert photo.content_type == "image/png"
    assert not {b"acTL", b"fcTL", b"fdAT"} & set(png_chunks(photo.data))
    assert reopen(photo.data).getpixel((10, 10)) == (255, 0, 0)


# -- thumbnail and hash -------------------------------------------------------------------------------


def test_thumbnail_is_a_jpeg_within_the_side():
    photo = process_photo(encode(picture((1000, 600)), "PNG"))

    thumb = reopen(photo.thumbnail)
    assert thumb.format == "JPEG"
    assert max(thumb.size) <= THUMBNAIL_SIDE
    assert thumb.size == (THUMBNAIL_SIDE, 192)


def test_thumbnail_of_a_portrait_photo_follows_orientation():
    raw = encode(picture((800, 600)), "JPEG", exif=gps_exif(orientation=6))

    photo = process_photo(raw)

    assert reopen(photo.thumbnail).size == (240, THUMBNAIL_SIDE)
    assert b"Exif\x00\x00" not in photo.thumbnail


def test_small_image_thumbnail_is_not_enlarged():
    photo = process_photo(encode(picture((100, 50)), "JPEG"))

    assert reopen(photo.thumbnail).size == (100, 50)


def test_thumbnail_flattens_transparency_onto_white():
    image = Image.new("RGBA", (400, 400), (0, 0, 0, 0))
    image.paste((0, 0, 255, 255), (100, 100, 300, 300))

    photo = process_photo(encode(image, "PNG"))

    assert photo.content_type == "image/png"
    assert reopen(photo.data).mode == "RGBA"  # the full image keeps its alpha
    thumb = reopen(photo.thumbnail)
    assert thumb.format == "JPEG" and thumb.mode == "RGB"
    assert min(thumb.getpixel((5, 5))) > 245  # transparent corner -> white, not black
    red, green, blue = thumb.getpixel((160, 160))
    assert blue > 200 and red < 50 and green < 50


def test_sha256_is_of_the_cleaned_data():
    raw = encode(picture(), "JPEG", exif=gps_exif())

    photo = process_photo(raw)

    assert isinstance(photo, ProcessedPhoto)
    assert photo.sha256 == hashlib.sha256(photo.data).hexdigest()
    assert photo.sha256 != hashlib.sha256(raw).hexdigest()


def test_concurrent_calls_do_not_interfere():
    sizes = [(100 + 37 * i, 60 + 11 * i) for i in range(12)]
    raws = [encode(picture(size), "JPEG" if i % 2 else "PNG") for i, size in enumerate(sizes)]

    with ThreadPoolExecutor(max_workers=6) as pool:
        photos = list(pool.map(process_photo, raws))

    assert [(p.width, p.height) for p in photos] == sizes
    assert [p.content_type for p in photos] == ["image/png", "image/jpeg"] * 6


# -- refusals -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"\xff\xd8\xff\xe0\x00\x10JFIF", "image/jpeg"),
        (b"\x89PNG\r\n\x1a\n\x00\x00", "image/png"),
        (b"GIF89a", None),
        (b"<html>", None),
        (b"\xff\xd8", None),
        (b"", None),
    ],
)
def test_sniff_reads_magic_bytes(raw: bytes, expected: str | None):
    assert sniff(raw) == expected


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(b"Hello, this is a plain text file.\n" * 20, id="text"),
        pytest.param(b"<!DOCTYPE html><html><body><img src=x onerror=alert(1)></body></html>", id="html"),
        pytest.param(encode(picture(), "GIF"), id="gif"),
        pytest.param(encode(picture(), "BMP"), id="bmp"),
        pytest.param(encode(picture(), "WEBP"), id="webp"),
    ],
)
def test_non_jpeg_png_content_is_refused(raw: bytes):
    assert refused(raw) == "not a JPEG or PNG image"


def test_refusal_names_the_callers_field():
    refused(b"just text", field="answer_photos[2]")


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(b"\xff\xd8\xff\xe0" + b"\x00garbage-after-a-jpeg-header" * 40, id="jpeg-magic-garbage"),
        pytest.param(b"\x89PNG\r\n\x1a\n" + b"garbage-after-a-png-signature" * 40, id="png-magic-garbage"),
        pytest.param(encode(picture((200, 200)), "JPEG")[:1500], id="truncated-jpeg"),
        pytest.param(encode(picture((200, 200)), "PNG")[:1500], id="truncated-png"),
        pytest.param(png_declaring(100, 100), id="png-with-too-little-data"),
    ],
)
def test_undecodable_images_are_refused(raw: bytes):
    assert refused(raw) == "the image is damaged or incomplete and cannot be read"


def test_empty_body_is_refused():
    assert refused(b"") == "the photo is empty"


def test_too_many_bytes_is_refused_with_the_size():
    raw = b"\xff\xd8\xff" + b"\x00" * int(12.3 * 1024 * 1024)

    assert refused(raw) == "the photo is 12.3 MB; at most 10 MB"


def test_just_over_the_byte_limit_does_not_read_as_equal():
    raw = encode(picture(), "JPEG")

    message = refused(raw, max_bytes=len(raw) - 1)

    assert message.startswith("the photo is ") and "at most" in message
    size, limit = message.removeprefix("the photo is ").split("; at most ")
    assert size != limit


def test_png_declaring_fifty_thousand_squared_pixels_is_refused():
    # Beyond Pillow's own hard limit: Pillow raises DecompressionBombError inside open(); it must map here.
    raw = png_declaring(50_000, 50_000)
    assert len(raw) < 200

    assert refused(raw) == "the image has too many pixels; at most 40 megapixels"


def test_png_over_max_pixels_is_refused_before_decoding():
    message = refused(png_declaring(7_000, 7_000))  # 49 MP: under Pillow's limit, over ours

    assert message == "the image is 7000x7000 pixels; at most 40 megapixels"


def test_jpeg_over_max_pixels_is_refused_before_decoding():
    message = refused(jpeg_declaring(8_000, 6_000))

    assert message == "the image is 8000x6000 pixels; at most 40 megapixels"


@pytest.mark.filterwarnings("error::PIL.Image.DecompressionBombWarning")
def test_pillow_bomb_warning_raised_as_error_maps_to_invalid_input():
    # 100 MP: between Pillow's warning and error limits; with warnings as errors open() raises the warning.
    assert refused(png_declaring(10_000, 10_000)) == "the image has too many pixels; at most 40 megapixels"


def test_max_pixels_is_the_callers():
    raw = encode(picture((100, 100)), "PNG")

    assert refused(raw, max_pixels=9_999) == "the image is 100x100 pixels; at most 0.009999 megapixels"
    assert process_photo(raw, max_pixels=10_000).width == 100
