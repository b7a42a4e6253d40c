"""Draw the Teams app icons once: `python -m teams_app.make_icons` rewrites color.png and outline.png.

The "D" is drawn as shapes, not with a font, so the icons come out the same on every machine. It is
drawn four times larger and scaled down, which smooths its edges. The outline icon is white
everywhere and only its alpha varies, because Teams accepts only white on transparent there.
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw

HERE = Path(__file__).resolve().parent
BACKGROUND = (29, 53, 87)  # #1D3557, the manifest's accentColor
OVERSAMPLE = 4


def d_mask(size: int, box: tuple[float, float, float, float], stroke: float) -> Image.Image:
    """An L-mode mask, `size` square, with a "D" of the given stroke filling `box` (fractions of size)."""
    big = size * OVERSAMPLE
    x0, y0, x1, y1 = (v * big for v in box)
    t = stroke * big
    mask = Image.new("L", (big, big), 0)
    draw = ImageDraw.Draw(mask)
    for value, inset in ((255, 0.0), (0, t)):
        left, top, right, bottom = x0 + inset, y0 + inset, x1 - inset, y1 - inset
        bow = left + (right - left) * 0.4  # where the straight top and bottom turn into the bow
        draw.rectangle((left, top, bow, bottom), fill=value)
        draw.pieslice((2 * bow - right, top, right, bottom), -90, 90, fill=value)
    return mask.resize((size, size), Image.Resampling.LANCZOS)


def color_icon() -> Image.Image:
    """192x192, full colour: a white D on the accent colour, inside Teams' central safe area."""
    icon = Image.new("RGB", (192, 192), BACKGROUND)
    icon.paste((255, 255, 255), (0, 0), d_mask(192, (0.31, 0.27, 0.71, 0.73), 0.085))
    return icon


def outline_icon() -> Image.Image:
    """32x32, white on transparent only."""
    icon = Image.new("RGBA", (32, 32), (255, 255, 255, 0))
    icon.putalpha(d_mask(32, (0.19, 0.12, 0.84, 0.88), 0.14))
    return icon


def main() -> None:
    color_icon().save(HERE / "color.png", optimize=True)
    outline_icon().save(HERE / "outline.png", optimize=True)


if __name__ == "__main__":
    main()
