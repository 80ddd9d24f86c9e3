"""A frame off the line to RGB pixels: the record's bytes and its declared content type.

The pixels come from the model's one image decoder (`model.images`), the
same one training, the release gate and evaluation read files with, so the
worker judges exactly the pixels a model learned from. What is the frame's own
business is its header: a content type as a camera declares it
(`Image/PNG; q=1`) is reduced to the bare media type before decoding.

`decode_frame` is pure and thread-safe; OpenCV releases the GIL while
decoding, so a thread pool decodes frames in parallel. A bad frame raises
`model.images.DecodeError`, whose reason is the dead-letter code.
"""

from __future__ import annotations

import numpy as np

from model.images import decode_image


def decode_frame(data: bytes, content_type: str, max_pixels: int) -> np.ndarray:
    """Decode a JPEG or PNG frame to a C-contiguous RGB uint8 array of shape (H, W, 3).

    Grayscale and 16-bit images become 8-bit RGB; an alpha channel is dropped.
    Raises DecodeError with the dead-letter reason for every kind of bad frame.
    """
    return decode_image(data, content_type.split(";", 1)[0].strip().lower(), max_pixels)
