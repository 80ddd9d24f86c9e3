"""The model's input: image bytes to RGB pixels, and pixels to the model's size.

One decoder and one resize for every path that feeds the network: the worker
decodes each frame off the line here (`worker.decode`), and training,
calibration, the release gate, evaluation and sweeps read image files here
(`load_image`), so a model learns from and is measured on exactly the pixels it
will judge on the line (no train/serve skew, e.g. from an EXIF orientation tag
that `cv2.imread` would apply and the worker ignores).

The decoder refuses anything that could hurt a worker or fool the model.
Cameras and networks fail in ordinary ways: empty records, a wrong content
type, a file cut short, a corrupt stream. A hostile or broken producer can also
send a tiny PNG that declares 100 000 x 100 000 pixels (a decompression bomb).
Every such image becomes a `DecodeError` with a precise reason (a dead-letter
code), not an exception that stops the line or a half-grey image judged as a
part. So the checks run cheapest first, and the size check reads the image
header *before* any pixel is decoded.

`decode_image` is pure and thread-safe; OpenCV releases the GIL while
decoding, so a thread pool decodes frames in parallel.
"""

from __future__ import annotations

import struct
from pathlib import Path

import cv2
import numpy as np

from schemas.deadletters import DeadLetterReason
from schemas.frames import content_type_for_path

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
JPEG_SOI = b"\xff\xd8\xff"
PNG_IEND = b"\x00\x00\x00\x00IEND\xaeB`\x82"
JPEG_EOI = b"\xff\xd9"

SUPPORTED_CONTENT_TYPES = ("image/jpeg", "image/png")

#: The pixel limit for files read off the line; the worker's default `max_image_pixels`.
DEFAULT_MAX_PIXELS = 40_000_000

# Start-of-frame markers carry the image size; C4 (DHT), C8 (JPG) and CC (DAC) do not.
_JPEG_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
# Markers without a length field.
_JPEG_STANDALONE = frozenset({0x01, *range(0xD0, 0xD8)})
# Some encoders pad after the end marker; look for it this far from the end. Only
# the tail is searched: the marker bytes can occur by chance inside PNG data.
_TAIL_WINDOW = 64

# IMREAD_IGNORE_ORIENTATION: judge the pixels as the sensor saw them, so the
# declared size matches the decoded one and no EXIF tag can rotate a part.
_IMREAD_FLAGS = cv2.IMREAD_COLOR_RGB | cv2.IMREAD_IGNORE_ORIENTATION


class DecodeError(ValueError):
    """A frame that cannot be judged; `reason` is the dead-letter code, `detail` says why."""

    def __init__(self, reason: DeadLetterReason, detail: str):
        super().__init__(f"{reason.value}: {detail}")
        self.reason = reason
        self.detail = detail


def sniff_content_type(data: bytes) -> str | None:
    """The content type the magic bytes show, or None if neither JPEG nor PNG."""
    if data.startswith(PNG_SIGNATURE):
        return "image/png"
    if data.startswith(JPEG_SOI):
        return "image/jpeg"
    return None


def declared_size(data: bytes, content_type: str) -> tuple[int, int]:
    """(width, height) as the image header declares them, without decoding any pixels.

    Raises DecodeError (corrupt or truncated) when the header cannot be read.
    """
    if content_type == "image/png":
        return _png_size(data)
    return _jpeg_size(data)


def decode_image(data: bytes, content_type: str, max_pixels: int) -> np.ndarray:
    """Decode JPEG or PNG bytes to a C-contiguous RGB uint8 array of shape (H, W, 3).

    `content_type` is a bare media type (`image/png`, lower case). Grayscale and
    16-bit images become 8-bit RGB; an alpha channel is dropped. Raises
    DecodeError with the dead-letter reason for every kind of bad image.
    """
    if not data:
        raise DecodeError(DeadLetterReason.EMPTY_PAYLOAD, "the frame has no bytes")
    if content_type not in SUPPORTED_CONTENT_TYPES:
        raise DecodeError(
            DeadLetterReason.UNSUPPORTED_CONTENT_TYPE,
            f"content type {content_type!r} is not one of {', '.join(SUPPORTED_CONTENT_TYPES)}",
        )
    actual = sniff_content_type(data)
    if actual is None:
        raise DecodeError(
            DeadLetterReason.CORRUPT_IMAGE,
            f"declared {content_type} but the bytes start with {data[:8].hex()}, "
            "neither JPEG nor PNG",
        )
    if actual != content_type:
        # A valid image with a wrong label: the camera's headers are what is broken.
        raise DecodeError(
            DeadLetterReason.INVALID_HEADERS,
            f"declared {content_type} but the bytes are {actual}",
        )

    width, height = declared_size(data, content_type)
    if width * height > max_pixels:
        raise DecodeError(
            DeadLetterReason.IMAGE_TOO_LARGE,
            f"declares {width}x{height} = {width * height} pixels, limit {max_pixels}",
        )
    _check_complete(data, content_type)

    image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), _IMREAD_FLAGS)
    if image is None:
        raise DecodeError(DeadLetterReason.CORRUPT_IMAGE, f"OpenCV could not decode the {actual}")
    if image.shape[:2] != (height, width):
        raise DecodeError(
            DeadLetterReason.CORRUPT_IMAGE,
            f"header declares {width}x{height}, decoded {image.shape[1]}x{image.shape[0]}",
        )
    if image.ndim == 2:  # defensive: IMREAD_COLOR_RGB already returns 3 channels
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    return np.ascontiguousarray(image)


def load_image(path: Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """An image file as RGB uint8 (H, W, 3), decoded exactly as the worker decodes a frame.

    Every path that learns from or measures images (training, calibration, the
    release gate, evaluation) reads them here, so a model is trained and gated on
    the pixels it will judge on the line. The content type comes from the
    extension, as a camera reading files would send it: only JPEG and PNG, the
    formats a frame can have (ValueError otherwise). A bad file raises
    DecodeError (a ValueError) with the reason a frame of it would be refused.
    """
    path = Path(path)
    return decode_image(path.read_bytes(), content_type_for_path(path), max_pixels)


def fit_to_size(image: np.ndarray, size: int) -> np.ndarray:
    """An RGB uint8 image resized to (size, size): the one resize of every path.

    The worker prepares frames with it and the trainer prepares training,
    calibration and gate images with it, so both feed the network the same
    pixels. Area averaging when either side shrinks (no aliasing), bilinear when
    both grow.
    """
    if image.shape[:2] == (size, size):
        return image
    shrink = image.shape[0] > size or image.shape[1] > size
    interpolation = cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
    return cv2.resize(image, (size, size), interpolation=interpolation)


def _png_size(data: bytes) -> tuple[int, int]:
    # Signature (8) + IHDR length (4) + type (4) + width (4) + height (4).
    if len(data) < 24:
        raise DecodeError(DeadLetterReason.TRUNCATED_IMAGE, "PNG ends inside its header")
    if data[12:16] != b"IHDR":
        raise DecodeError(DeadLetterReason.CORRUPT_IMAGE, "PNG does not start with IHDR")
    width, height = struct.unpack(">II", data[16:24])
    if width == 0 or height == 0:
        raise DecodeError(DeadLetterReason.CORRUPT_IMAGE, f"PNG declares {width}x{height}")
    return width, height


def _jpeg_size(data: bytes) -> tuple[int, int]:
    """Walk the JPEG marker segments up to the start-of-frame and read its size."""
    n = len(data)
    i = 2  # after SOI
    while i < n:
        if data[i] != 0xFF:
            raise DecodeError(DeadLetterReason.CORRUPT_IMAGE, f"JPEG marker expected at byte {i}")
        while i < n and data[i] == 0xFF:  # fill bytes before a marker
            i += 1
        if i >= n:
            break
        marker = data[i]
        i += 1
        if marker in _JPEG_STANDALONE:
            continue
        if marker in (0xD9, 0xDA):  # EOI or start of scan before any frame header
            raise DecodeError(DeadLetterReason.CORRUPT_IMAGE, "JPEG has no frame header")
        if i + 2 > n:
            break
        (length,) = struct.unpack(">H", data[i : i + 2])
        if length < 2:
            raise DecodeError(DeadLetterReason.CORRUPT_IMAGE, f"JPEG segment length {length}")
        if marker in _JPEG_SOF_MARKERS:
            if i + 7 > n:
                break
            height, width = struct.unpack(">HH", data[i + 3 : i + 7])
            if width == 0 or height == 0:
                # Height 0 defers the size to a DNL marker: too rare to support, and unsafe.
                raise DecodeError(DeadLetterReason.CORRUPT_IMAGE, f"JPEG declares {width}x{height}")
            return width, height
        i += length
    raise DecodeError(DeadLetterReason.TRUNCATED_IMAGE, "JPEG ends before its frame header")


def _check_complete(data: bytes, content_type: str) -> None:
    """Reject files cut short: decoders fill a truncated JPEG with grey instead of failing."""
    if content_type == "image/png":
        if PNG_IEND not in data[-_TAIL_WINDOW:]:
            raise DecodeError(DeadLetterReason.TRUNCATED_IMAGE, "PNG has no IEND chunk")
    elif JPEG_EOI not in data[-_TAIL_WINDOW:]:
        raise DecodeError(DeadLetterReason.TRUNCATED_IMAGE, "JPEG has no end-of-image marker")
