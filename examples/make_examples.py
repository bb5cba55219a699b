"""Regenerate the bundled example images (run from anywhere: `python examples/make_examples.py`).

The images are drawn with Pillow from code, so they carry no third-party copyright.
They are abstract patterns: good for checking that the pipeline runs end to end, not
for judging accuracy (GPUNet was trained on photographs).
"""

from __future__ import annotations

import math
from pathlib import Path

from PIL import Image, ImageDraw, ImageFilter

HERE = Path(__file__).resolve().parent


def checkerboard(size: tuple[int, int] = (320, 240), cell: int = 40) -> Image.Image:
    im = Image.new("RGB", size, "white")
    d = ImageDraw.Draw(im)
    for y in range(0, size[1], cell):
        for x in range(0, size[0], cell):
            if (x // cell + y // cell) % 2:
                d.rectangle([x, y, x + cell - 1, y + cell - 1], fill=(20, 20, 20))
    return im


def gradient_disc(size: int = 256) -> Image.Image:
    im = Image.new("RGB", (size, size))
    px = im.load()
    c = size / 2
    for y in range(size):
        for x in range(size):
            r = math.hypot(x - c, y - c) / c
            angle = (math.atan2(y - c, x - c) + math.pi) / (2 * math.pi)
            if r <= 0.9:
                px[x, y] = (int(255 * angle), int(255 * (1 - r)), int(255 * (1 - angle)))
            else:
                px[x, y] = (235, 235, 225)
    return im


def orange_ball(size: int = 224) -> Image.Image:
    """A shaded orange sphere on a wooden-looking background, slightly blurred."""
    im = Image.new("RGB", (size, size))
    px = im.load()
    cx, cy, rad = size * 0.5, size * 0.48, size * 0.32
    for y in range(size):
        for x in range(size):
            dx, dy = (x - cx) / rad, (y - cy) / rad
            if dx * dx + dy * dy <= 1:
                light = max(0.0, -0.5 * dx - 0.6 * dy + 0.6 * math.sqrt(1 - dx * dx - dy * dy))
                px[x, y] = (min(255, int(200 + 55 * light)), int(90 + 80 * light), int(10 + 30 * light))
            else:
                grain = int(20 * math.sin(y / 3.0 + 4 * math.sin(x / 40.0)))
                px[x, y] = (150 + grain, 100 + grain, 60 + grain // 2)
    return im.filter(ImageFilter.GaussianBlur(1.2))


def main() -> None:
    checkerboard().save(HERE / "checkerboard.png", optimize=True)
    gradient_disc().save(HERE / "gradient_disc.jpg", quality=85)
    orange_ball().save(HERE / "orange_ball.jpg", quality=85)
    for p in sorted(HERE.glob("*.*g")):
        print(f"{p.name:20s} {p.stat().st_size:6d} bytes")


if __name__ == "__main__":
    main()
