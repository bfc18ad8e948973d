"""Line charts as PNG with the standard library alone (zlib, struct): the soak's plot. No
plotting library is installed with pgpulse, and a few panels of lines with their labels
need no more than a pixel canvas, a line drawer and a 5x7 font."""

from __future__ import annotations

import math
import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field

Color = tuple[int, int, int]
WHITE: Color = (255, 255, 255)
BLACK: Color = (0, 0, 0)
GRID: Color = (225, 225, 225)
SHADE: Color = (255, 236, 214)  # the open-transaction phase
SERIES_COLORS: tuple[Color, ...] = ((31, 100, 200), (220, 80, 40), (40, 150, 70), (140, 60, 170))

# 5x7 glyphs, rows top to bottom, '#' lit. Letters are drawn upper case.
_GLYPHS = {
    "0": ".###. #...# #..## #.#.# ##..# #...# .###.",
    "1": "..#.. .##.. ..#.. ..#.. ..#.. ..#.. .###.",
    "2": ".###. #...# ....# ...#. ..#.. .#... #####",
    "3": "####. ....# ....# .###. ....# ....# ####.",
    "4": "...#. ..##. .#.#. #..#. ##### ...#. ...#.",
    "5": "##### #.... ####. ....# ....# #...# .###.",
    "6": ".###. #.... #.... ####. #...# #...# .###.",
    "7": "##### ....# ...#. ..#.. .#... .#... .#...",
    "8": ".###. #...# #...# .###. #...# #...# .###.",
    "9": ".###. #...# #...# .#### ....# ....# .###.",
    "A": ".###. #...# #...# ##### #...# #...# #...#",
    "B": "####. #...# #...# ####. #...# #...# ####.",
    "C": ".###. #...# #.... #.... #.... #...# .###.",
    "D": "####. #...# #...# #...# #...# #...# ####.",
    "E": "##### #.... #.... ####. #.... #.... #####",
    "F": "##### #.... #.... ####. #.... #.... #....",
    "G": ".###. #...# #.... #.### #...# #...# .####",
    "H": "#...# #...# #...# ##### #...# #...# #...#",
    "I": ".###. ..#.. ..#.. ..#.. ..#.. ..#.. .###.",
    "J": "..### ...#. ...#. ...#. ...#. #..#. .##..",
    "K": "#...# #..#. #.#.. ##... #.#.. #..#. #...#",
    "L": "#.... #.... #.... #.... #.... #.... #####",
    "M": "#...# ##.## #.#.# #.#.# #...# #...# #...#",
    "N": "#...# ##..# #.#.# #..## #...# #...# #...#",
    "O": ".###. #...# #...# #...# #...# #...# .###.",
    "P": "####. #...# #...# ####. #.... #.... #....",
    "Q": ".###. #...# #...# #...# #.#.# #..#. .##.#",
    "R": "####. #...# #...# ####. #.#.. #..#. #...#",
    "S": ".#### #.... #.... .###. ....# ....# ####.",
    "T": "##### ..#.. ..#.. ..#.. ..#.. ..#.. ..#..",
    "U": "#...# #...# #...# #...# #...# #...# .###.",
    "V": "#...# #...# #...# #...# #...# .#.#. ..#..",
    "W": "#...# #...# #...# #.#.# #.#.# #.#.# .#.#.",
    "X": "#...# #...# .#.#. ..#.. .#.#. #...# #...#",
    "Y": "#...# #...# .#.#. ..#.. ..#.. ..#.. ..#..",
    "Z": "##### ....# ...#. ..#.. .#... #.... #####",
    " ": "..... ..... ..... ..... ..... ..... .....",
    ".": "..... ..... ..... ..... ..... .##.. .##..",
    ",": "..... ..... ..... ..... .##.. ..#.. .#...",
    ":": "..... .##.. .##.. ..... .##.. .##.. .....",
    "-": "..... ..... ..... .###. ..... ..... .....",
    "+": "..... ..#.. ..#.. ##### ..#.. ..#.. .....",
    "=": "..... ..... ##### ..... ##### ..... .....",
    "/": "....# ....# ...#. ..#.. .#... #.... #....",
    "%": "##..# ##..# ...#. ..#.. .#... #..## #..##",
    "(": "...#. ..#.. .#... .#... .#... ..#.. ...#.",
    ")": ".#... ..#.. ...#. ...#. ...#. ..#.. .#...",
    "_": "..... ..... ..... ..... ..... ..... #####",
    "<": "...#. ..#.. .#... #.... .#... ..#.. ...#.",
    ">": ".#... ..#.. ...#. ....# ...#. ..#.. .#...",
    "?": ".###. #...# ....# ...#. ..#.. ..... ..#..",
}
_FONT = {
    char: [[cell == "#" for cell in row] for row in rows.split()] for char, rows in _GLYPHS.items()
}
GLYPH_W, GLYPH_H = 6, 8  # a 5x7 glyph and one pixel of space


class Canvas:
    """RGB pixels, drawn on with lines, rectangles and text; written out as PNG."""

    def __init__(self, width: int, height: int, background: Color = WHITE) -> None:
        self.width, self.height = width, height
        self.pixels = bytearray(bytes(background) * (width * height))

    def dot(self, x: int, y: int, color: Color) -> None:
        if 0 <= x < self.width and 0 <= y < self.height:
            i = 3 * (y * self.width + x)
            self.pixels[i : i + 3] = bytes(color)

    def fill(self, x0: int, y0: int, x1: int, y1: int, color: Color) -> None:
        x0, x1 = max(0, min(x0, x1)), min(self.width - 1, max(x0, x1))
        y0, y1 = max(0, min(y0, y1)), min(self.height - 1, max(y0, y1))
        row = bytes(color) * (x1 - x0 + 1)
        for y in range(y0, y1 + 1):
            i = 3 * (y * self.width + x0)
            self.pixels[i : i + len(row)] = row

    def line(self, x0: int, y0: int, x1: int, y1: int, color: Color, width: int = 1) -> None:
        """Bresenham's line; width > 1 draws it as a square brush."""
        dx, dy = abs(x1 - x0), -abs(y1 - y0)
        sx, sy = (1 if x0 < x1 else -1), (1 if y0 < y1 else -1)
        err = dx + dy
        half = width // 2
        while True:
            if width == 1:
                self.dot(x0, y0, color)
            else:
                self.fill(x0 - half, y0 - half, x0 + half, y0 + half, color)
            if x0 == x1 and y0 == y1:
                return
            e2 = 2 * err
            if e2 >= dy:
                err += dy
                x0 += sx
            if e2 <= dx:
                err += dx
                y0 += sy

    def box(self, x0: int, y0: int, x1: int, y1: int, color: Color) -> None:
        for a, b, c, d in ((x0, y0, x1, y0), (x0, y1, x1, y1), (x0, y0, x0, y1), (x1, y0, x1, y1)):
            self.line(a, b, c, d, color)

    def text(self, x: int, y: int, text: str, color: Color = BLACK, scale: int = 1) -> int:
        """Draws text with its top left at (x, y); returns the x after it. Unknown
        characters are drawn as '?'."""
        for char in text.upper():
            rows = _FONT.get(char, _FONT["?"])
            for r, row in enumerate(rows):
                for c, lit in enumerate(row):
                    if lit:
                        self.fill(
                            x + c * scale,
                            y + r * scale,
                            x + (c + 1) * scale - 1,
                            y + (r + 1) * scale - 1,
                            color,
                        )
            x += GLYPH_W * scale
        return x

    def png(self) -> bytes:
        def chunk(kind: bytes, data: bytes) -> bytes:
            body = kind + data
            return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

        stride = 3 * self.width
        raw = b"".join(
            b"\x00" + bytes(self.pixels[y * stride : (y + 1) * stride]) for y in range(self.height)
        )  # filter type 0 (none) before every row
        header = struct.pack(">IIBBBBB", self.width, self.height, 8, 2, 0, 0, 0)  # 8-bit RGB
        return (
            b"\x89PNG\r\n\x1a\n"
            + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(raw, 9))
            + chunk(b"IEND", b"")
        )


@dataclass
class Panel:
    """One chart: a title, series of (name, values) over x, the y unit."""

    title: str
    x: Sequence[float]
    series: list[tuple[str, Sequence[float | None]]]
    unit: str = ""
    floor_zero: bool = True
    bounds: list[float] = field(default_factory=list)  # horizontal lines (limits)


def _label(value: float) -> str:
    if value == 0:
        return "0"
    if abs(value) >= 1e6:
        return f"{value / 1e6:.3g}M"
    if abs(value) >= 1e3:
        return f"{value / 1e3:.3g}K"
    return f"{value:.3g}"


def draw_panel(
    canvas: Canvas,
    panel: Panel,
    box: tuple[int, int, int, int],
    shade: tuple[float, float] | None = None,
) -> None:
    """Draws one panel into box (left, top, right, bottom); shade: an x range to tint."""
    left, top, right, bottom = box
    x = panel.x
    lx = canvas.text(left, top, panel.title + (f" ({panel.unit})" if panel.unit else "")) + 16
    for i, (name, _) in enumerate(panel.series):
        color = SERIES_COLORS[i % len(SERIES_COLORS)]
        canvas.fill(lx, top + 2, lx + 10, top + 5, color)
        lx = canvas.text(lx + 14, top, name) + 10
    # the plot area below the title, room for y labels on the left and x labels below
    px0, py0, px1, py1 = left + 8 * GLYPH_W, top + 2 * GLYPH_H, right - 4, bottom - 2 * GLYPH_H
    values = [v for _, ys in panel.series for v in ys if v is not None and math.isfinite(v)]
    values += panel.bounds
    lo = min(values, default=0.0)
    hi = max(values, default=1.0)
    if panel.floor_zero:
        lo = min(lo, 0.0)
    if hi - lo < 1e-12:
        hi = lo + (abs(lo) or 1.0)
    hi += (hi - lo) * 0.05
    x_lo, x_hi = (min(x), max(x)) if x else (0.0, 1.0)
    if x_hi - x_lo < 1e-12:
        x_hi = x_lo + 1

    def to_px(xv: float, yv: float) -> tuple[int, int]:
        return (
            round(px0 + (xv - x_lo) / (x_hi - x_lo) * (px1 - px0)),
            round(py1 - (yv - lo) / (hi - lo) * (py1 - py0)),
        )

    if shade:
        sx0, _ = to_px(max(shade[0], x_lo), lo)
        sx1, _ = to_px(min(shade[1], x_hi), lo)
        if sx1 > sx0:
            canvas.fill(sx0, py0, sx1, py1, SHADE)
    for k in range(5):  # horizontal grid lines and their labels
        yv = lo + (hi - lo) * k / 4
        _, py = to_px(x_lo, yv)
        canvas.line(px0, py, px1, py, GRID)
        text = _label(yv)
        canvas.text(px0 - 4 - GLYPH_W * len(text), py - 3, text)
    for bound in panel.bounds:
        _, py = to_px(x_lo, bound)
        for bx in range(px0, px1, 6):
            canvas.line(bx, py, min(bx + 2, px1), py, (200, 0, 0))
    canvas.box(px0, py0, px1, py1, BLACK)
    for k in range(5):  # x labels at the ends and three between
        xv = x_lo + (x_hi - x_lo) * k / 4
        text = _label(xv)
        xp, _ = to_px(xv, lo)
        canvas.line(xp, py1, xp, py1 + 2, BLACK)
        canvas.text(max(left, min(xp - GLYPH_W * len(text) // 2, right - GLYPH_W * len(text))),
                    py1 + 4, text)  # fmt: skip
    for i, (_, ys) in enumerate(panel.series):
        color = SERIES_COLORS[i % len(SERIES_COLORS)]
        previous = None
        for xv, value in zip(x, ys):
            if value is None or not math.isfinite(value):
                previous = None
                continue
            point = to_px(xv, value)
            if previous is not None:
                canvas.line(*previous, *point, color, width=2)
            else:
                canvas.fill(point[0] - 1, point[1] - 1, point[0] + 1, point[1] + 1, color)
            previous = point


def chart(
    title: str,
    panels: list[Panel],
    *,
    columns: int = 2,
    panel_size: tuple[int, int] = (600, 230),
    shade: tuple[float, float] | None = None,
    x_label: str = "",
) -> bytes:
    """Panels in a grid under a title, as PNG bytes."""
    rows = math.ceil(len(panels) / columns)
    width, height = columns * panel_size[0], rows * panel_size[1] + 3 * GLYPH_H * 2
    canvas = Canvas(width, height)
    canvas.text(10, 8, title, scale=2)
    if x_label:
        canvas.text(width - 10 - GLYPH_W * len(x_label), 12, x_label)
    for i, panel in enumerate(panels):
        col, row = i % columns, i // columns
        left = col * panel_size[0] + 10
        top = 3 * GLYPH_H * 2 + row * panel_size[1]
        draw_panel(
            canvas,
            panel,
            (left, top, left + panel_size[0] - 20, top + panel_size[1] - 12),
            shade,
        )
    return canvas.png()
