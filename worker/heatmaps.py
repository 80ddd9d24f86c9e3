"""Heatmaps an operator can read at a glance (stored under `schemas.object_layout.heatmap_key`).

An NG verdict alone tells the sorter to reject a part; the operator who
inspects the reject bin wants to see *where* the model saw the defect. So the
anomaly map (model resolution) is stretched over the original frame as a JET
colour overlay and stored as PNG beside a copy of the frame itself.

Keys (`heatmaps/<line>/<date>/<frame id>.png`, the original beside it) depend
only on the frame, never on when the worker ran, so a replayed frame overwrites
its heatmap instead of adding one.
"""

from __future__ import annotations

import cv2
import numpy as np

# zlib level 1, run-length strategy, every row with the "up" filter: measured on 256 px
# MVTec overlays, 2.9 ms and 71 kB, against 5.4 ms and 76 kB with libpng choosing a
# filter per row, and 7.2 ms at level 3; heatmaps are rendered for every NG part, on
# the cores that run the model.
_PNG_PARAMS = [
    cv2.IMWRITE_PNG_COMPRESSION,
    1,
    cv2.IMWRITE_PNG_STRATEGY,
    cv2.IMWRITE_PNG_STRATEGY_RLE,
    cv2.IMWRITE_PNG_FILTER,
    cv2.IMWRITE_PNG_FILTER_UP,
]


def render_overlay(
    frame_rgb: np.ndarray,
    anomaly_map: np.ndarray,
    *,
    vmin: float = 0.0,
    vmax: float | None = None,
    alpha: float = 0.5,
) -> bytes:
    """PNG bytes of `anomaly_map` as a JET overlay on `frame_rgb`, at the frame's size.

    `frame_rgb` is (H, W, 3) uint8; `anomaly_map` is (h, w) float at model
    resolution. Scores map linearly from `vmin` (blue) to `vmax` (red). Pass a
    fixed `vmax` (e.g. twice the product's threshold) so colours mean the same
    on every heatmap; left None, it is the map's own maximum, which always
    shows *something* red, even on a normal part. `alpha` is the overlay's weight.
    """
    if frame_rgb.ndim != 3 or frame_rgb.shape[2] != 3 or frame_rgb.dtype != np.uint8:
        raise ValueError(f"frame must be (H, W, 3) uint8, got {frame_rgb.shape} {frame_rgb.dtype}")
    amap = np.asarray(anomaly_map, dtype=np.float32).squeeze()
    if amap.ndim != 2:
        raise ValueError(f"anomaly map must be 2-D, got shape {anomaly_map.shape}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")

    amap = np.nan_to_num(amap, nan=vmin, posinf=np.finfo(np.float32).max, neginf=vmin)
    top = float(amap.max()) if vmax is None else vmax
    span = top - vmin
    scaled = (amap - vmin) / span if span > 0 else np.zeros_like(amap)
    levels = (np.clip(scaled, 0.0, 1.0) * 255.0).astype(np.uint8)

    height, width = frame_rgb.shape[:2]
    levels = cv2.resize(levels, (width, height), interpolation=cv2.INTER_LINEAR)
    colour_bgr = cv2.applyColorMap(levels, cv2.COLORMAP_JET)
    frame_bgr = cv2.cvtColor(frame_rgb, cv2.COLOR_RGB2BGR)
    blended = cv2.addWeighted(frame_bgr, 1.0 - alpha, colour_bgr, alpha, 0.0)
    ok, png = cv2.imencode(".png", blended, _PNG_PARAMS)
    if not ok:
        raise RuntimeError("OpenCV failed to encode the heatmap as PNG")
    return png.tobytes()
