"""decode_frame against real encoded images: the good ones decode, each bad kind gets its reason."""

import struct
import zlib

import cv2
import numpy as np
import pytest

from model.images import DecodeError, declared_size, sniff_content_type
from schemas.deadletters import DeadLetterReason
from worker.decode import decode_frame

LIMIT = 1_000_000


@pytest.fixture(scope="module")
def rgb() -> np.ndarray:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(48, 64, 3), dtype=np.uint8)
    image[:, :8] = (255, 0, 0)  # a pure red band tells RGB from BGR
    return image


def encode(image_rgb: np.ndarray, ext: str) -> bytes:
    bgr = image_rgb[..., ::-1] if image_rgb.ndim == 3 else image_rgb
    ok, data = cv2.imencode(ext, bgr)
    assert ok
    return data.tobytes()


def reason_of(data: bytes, content_type: str, limit: int = LIMIT) -> DeadLetterReason:
    with pytest.raises(DecodeError) as info:
        decode_frame(data, content_type, limit)
    return info.value.reason


def test_png_decodes_losslessly_to_rgb(rgb):
    image = decode_frame(encode(rgb, ".png"), "image/png", LIMIT)
    assert image.shape == (48, 64, 3) and image.dtype == np.uint8
    assert image.flags.c_contiguous
    np.testing.assert_array_equal(image, rgb)


def test_jpeg_decodes_to_rgb(rgb):
    image = decode_frame(encode(rgb, ".jpg"), "image/jpeg", LIMIT)
    assert image.shape == (48, 64, 3)
    red = image[:, 1:6].reshape(-1, 3).mean(axis=0)
    assert red[0] > 200 and red[2] < 60


def test_content_type_parameters_and_case_are_tolerated(rgb):
    assert decode_frame(encode(rgb, ".png"), "Image/PNG; q=1", LIMIT).shape == (48, 64, 3)


@pytest.mark.parametrize("ext", [".png", ".jpg"])
def test_grayscale_becomes_three_channels(ext):
    gray = np.tile(np.arange(64, dtype=np.uint8) * 4, (48, 1))
    image = decode_frame(encode(gray, ext), f"image/{'png' if ext == '.png' else 'jpeg'}", LIMIT)
    assert image.shape == (48, 64, 3)
    np.testing.assert_array_equal(image[..., 0], image[..., 2])


def test_sixteen_bit_png_becomes_eight_bit():
    deep = (np.arange(48 * 64, dtype=np.uint16).reshape(48, 64) * 20).astype(np.uint16)
    image = decode_frame(encode(deep, ".png"), "image/png", LIMIT)
    assert image.dtype == np.uint8 and image.shape == (48, 64, 3)


def test_empty_payload():
    assert reason_of(b"", "image/png") is DeadLetterReason.EMPTY_PAYLOAD


def test_unsupported_content_type_is_refused_before_looking_at_bytes(rgb):
    assert reason_of(encode(rgb, ".png"), "image/gif") is DeadLetterReason.UNSUPPORTED_CONTENT_TYPE
    assert reason_of(encode(rgb, ".bmp"), "image/bmp") is DeadLetterReason.UNSUPPORTED_CONTENT_TYPE


def test_bytes_that_are_no_image_are_corrupt(rgb):
    assert reason_of(b"GIF89a" + b"\0" * 100, "image/png") is DeadLetterReason.CORRUPT_IMAGE
    assert reason_of(encode(rgb, ".bmp"), "image/jpeg") is DeadLetterReason.CORRUPT_IMAGE


def test_mislabelled_image_is_a_header_problem(rgb):
    assert reason_of(encode(rgb, ".png"), "image/jpeg") is DeadLetterReason.INVALID_HEADERS
    assert reason_of(encode(rgb, ".jpg"), "image/png") is DeadLetterReason.INVALID_HEADERS


@pytest.mark.parametrize(("ext", "content_type"), [(".png", "image/png"), (".jpg", "image/jpeg")])
def test_truncated_images(rgb, ext, content_type):
    data = encode(rgb, ext)
    for cut in (len(data) // 2, len(data) - 3):
        assert reason_of(data[:cut], content_type) is DeadLetterReason.TRUNCATED_IMAGE
    # Cut inside the header: the size cannot even be read.
    assert reason_of(data[:20], content_type) is DeadLetterReason.TRUNCATED_IMAGE


def test_corrupt_png_data_with_intact_header_and_end(rgb):
    data = bytearray(encode(rgb, ".png"))
    idat = data.find(b"IDAT")
    data[idat + 20 : idat + 60] = b"\x55" * 40  # garbage inside the compressed stream
    assert reason_of(bytes(data), "image/png") is DeadLetterReason.CORRUPT_IMAGE


def test_jpeg_without_frame_header_is_corrupt():
    assert reason_of(b"\xff\xd8\xff\xda\x00\x02" + b"\0" * 10 + b"\xff\xd9", "image/jpeg") is (
        DeadLetterReason.CORRUPT_IMAGE
    )


def test_real_decompression_bomb_is_refused_before_decoding():
    # A real, valid PNG: 2000 x 2000 zeros compress to a few kB yet decode to 12 MB.
    bomb = encode(np.zeros((2000, 2000), dtype=np.uint8), ".png")
    assert len(bomb) < 50_000
    assert declared_size(bomb, "image/png") == (2000, 2000)
    assert reason_of(bomb, "image/png", limit=1_000_000) is DeadLetterReason.IMAGE_TOO_LARGE
    assert decode_frame(bomb, "image/png", 4_000_000).shape == (2000, 2000, 3)


def png_declaring(width: int, height: int) -> bytes:
    """A tiny PNG whose IHDR claims a huge size: must be refused without allocating it."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    idat = b"IDAT" + zlib.compress(b"\0" * 64)
    return (
        b"\x89PNG\r\n\x1a\n"
        + struct.pack(">I", len(ihdr)) + chunk + struct.pack(">I", zlib.crc32(chunk))
        + struct.pack(">I", len(idat) - 4) + idat + struct.pack(">I", zlib.crc32(idat))
        + b"\x00\x00\x00\x00IEND\xaeB`\x82"
    )  # fmt: skip


def test_declared_png_bomb_is_refused_at_the_default_limit():
    bomb = png_declaring(100_000, 100_000)
    assert len(bomb) < 200
    assert reason_of(bomb, "image/png", limit=40_000_000) is DeadLetterReason.IMAGE_TOO_LARGE


def test_declared_jpeg_bomb_is_refused(rgb):
    data = bytearray(encode(rgb, ".jpg"))
    assert declared_size(bytes(data), "image/jpeg") == (64, 48)
    # Find the SOF0 segment and patch its height and width to 65535.
    sof = data.find(b"\xff\xc0")
    data[sof + 5 : sof + 9] = b"\xff\xff\xff\xff"
    assert declared_size(bytes(data), "image/jpeg") == (65535, 65535)
    assert reason_of(bytes(data), "image/jpeg", limit=40_000_000) is (
        DeadLetterReason.IMAGE_TOO_LARGE
    )


def test_sniff_content_type(rgb):
    assert sniff_content_type(encode(rgb, ".png")) == "image/png"
    assert sniff_content_type(encode(rgb, ".jpg")) == "image/jpeg"
    assert sniff_content_type(b"BM....") is None


def test_decode_error_carries_reason_and_detail():
    error = DecodeError(DeadLetterReason.CORRUPT_IMAGE, "broken")
    assert error.reason is DeadLetterReason.CORRUPT_IMAGE
    assert error.detail == "broken"
    assert "corrupt_image" in str(error)
