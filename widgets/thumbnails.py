"""Example images as an HTML grid of small inline PNGs (Pillow's encoder), with a caption under each."""

import base64
import html
import io

import numpy as np
from PIL import Image

MIN_SIDE = 48  # pixels: 8x8 digits are upscaled 6x so they can be read


def png_bytes(pixels: np.ndarray) -> bytes:
    """A PNG file of uint8 `pixels`, [H, W] (grey) or [H, W, 3] (RGB)."""
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(pixels, dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def to_pixels(image, min_side: int = MIN_SIDE) -> np.ndarray:
    """One [C, H, W] image (uint8, or normalised floats) as uint8 [H, W] or [H, W, 3], upscaled by
    an integer factor (nearest neighbour) to at least `min_side` pixels."""
    x = np.asarray(image)
    if x.dtype != np.uint8:  # normalised floats: stretch this image to 0..255
        lo, hi = float(x.min()), float(x.max())
        x = np.zeros(x.shape, np.uint8) if hi <= lo else np.round((x - lo) / (hi - lo) * 255).astype(np.uint8)
    x = x[0] if x.shape[0] == 1 else np.moveaxis(x[:3], 0, -1)
    factor = max(1, -(-min_side // x.shape[0]))
    return x.repeat(factor, axis=0).repeat(factor, axis=1)


def data_url(image) -> str:
    return "data:image/png;base64," + base64.b64encode(png_bytes(to_pixels(image))).decode()


def _picture(image) -> str:
    size = f"width:{MIN_SIDE}px;height:{MIN_SIDE}px"
    if image is None:  # no pixels to show: keep the grid's shape
        return f'<div style="{size};background:#eee"></div>'
    return f'<img src="{data_url(image)}" style="image-rendering:pixelated;{size}">'


def grid_html(title: str, images, captions: list[str]) -> str:
    """A titled, wrapping grid of images ([C, H, W] each, or None for a blank) with a caption
    (HTML) under each."""
    cells = "".join(
        f'<figure style="margin:0;width:{MIN_SIDE + 8}px;text-align:center">{_picture(img)}'
        f'<figcaption style="font-size:10px;line-height:1.2">{caption}</figcaption></figure>'
        for img, caption in zip(images, captions)
    )
    return (
        f'<div style="margin:4px 0"><div style="font-weight:600;margin-bottom:4px">{html.escape(title)}</div>'
        f'<div style="display:flex;flex-wrap:wrap;gap:4px">{cells}</div></div>'
    )
